//! Faults injected between the worker and each service (issue 13, part 2).
//!
//! A fault proxy from the test-support crate sits between the worker and an
//! emulator: HTTP-aware for Cloud Storage (it answers 500/503/429 itself,
//! cuts uploads mid-body, drops answers after the write happened, holds
//! answers past WRITE_ATTEMPT_TIMEOUT, or closes its port), TCP for Pub/Sub
//! (RST of the StreamingPull connections, or its port closed while the
//! emulator is killed and restarted).
//!
//! Each scenario holds its fault for a window in which nothing can succeed
//! and asserts what a user would see:
//! - no hot loop: the worker's CPU time (/proc/PID/stat utime+stime) over
//!   the window stays under [`CPU_BOUND`] of one core;
//! - the failure in the log: a WARN line naming the service, the endpoint
//!   and the error, then an INFO line when the service answers again;
//! - nothing lost or duplicated: every published message stored exactly
//!   once, byte-exact, and the subscription drained;
//! - a clean SIGTERM afterwards: exit 0 and a consistent summary line.

use rinit_test_support::faultproxy::{Fault, FaultProxy};
use rinit_test_support::procfs::cpu_time;
use rinit_test_support::worker::{mixed_message, n, Flow, TestEnv, TestMessage};
use rinit_test_support::{wait_every, Running};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The most CPU the worker may use while a service is down, as a share of
/// one core: waiting on backoffs and probes costs well under 1%; a retry or
/// reconnect loop without a pause costs a whole core.
const CPU_BOUND: f64 = 0.05;
/// Messages published before the worker starts, in the storage scenarios.
const BACKLOG: u64 = 60;
const TOPIC: &str = "topic-faults";
const SUB: &str = "sub-faults";
const BUCKET: &str = "bucket-faults";

/// The emulators, the topic, subscription and bucket.
fn environment() -> Option<TestEnv> {
    TestEnv::start_with(TOPIC, SUB, BUCKET)
}

/// The worker, with its storage and Pub/Sub endpoints as given.
fn start_worker(env: &TestEnv, pubsub: &str, storage: &str, extra: &[(&str, &str)]) -> Running {
    let mut cmd = env.worker_command(SUB, BUCKET);
    cmd.env("PUBSUB_EMULATOR_HOST", pubsub)
        .env("STORAGE_EMULATOR_HOST", storage)
        .env("CONCURRENCY", "8")
        .env("MAX_OUTSTANDING_MESSAGES", "100");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let w = Running::spawn("worker", cmd);
    w.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("\"worker started\"")
    })
    .expect("the worker did not start");
    w
}

/// The worker's CPU time (all threads, user + system) from a start point.
struct CpuMeter {
    pid: i32,
    before: Duration,
    t0: Instant,
}

impl CpuMeter {
    fn start(w: &Running) -> CpuMeter {
        let pid = w.pid() as i32;
        CpuMeter {
            pid,
            before: cpu_time(pid).expect("worker's /proc/PID/stat"),
            t0: Instant::now(),
        }
    }

    /// The CPU used since the start, as a share of one core; fails above
    /// [`CPU_BOUND`].
    fn assert_idle(&self, what: &str) -> f64 {
        let used = cpu_time(self.pid).expect("worker's /proc/PID/stat") - self.before;
        let wall = self.t0.elapsed();
        let share = used.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "{what}: worker CPU {} ms over {:.1} s = {:.2}% of one core (bound {:.0}%)",
            used.as_millis(),
            wall.as_secs_f64(),
            share * 100.0,
            CPU_BOUND * 100.0
        );
        assert!(
            share < CPU_BOUND,
            "{what}: the worker used {:.1}% of a core while the service was down (bound {:.0}%)",
            share * 100.0,
            CPU_BOUND * 100.0
        );
        share
    }
}

/// Sleeps `window`; returns the worker's CPU over it (see [`CpuMeter`]).
fn assert_no_hot_loop(w: &Running, window: Duration, what: &str) -> f64 {
    let meter = CpuMeter::start(w);
    std::thread::sleep(window);
    meter.assert_idle(what)
}

/// What one scenario measured: a row of `bench/faults`' table.
struct Row {
    what: &'static str,
    injected: String,
    window: Duration,
    cpu: f64,
}

impl Row {
    /// Prints the row, with the figures known at the end (recovery: from
    /// the end of the fault until every message was acked), and appends it
    /// to RINIT_FAULTS_REPORT when set. Lost and extra objects are counted
    /// here, before the exactly-once assertion, so the table shows them.
    fn finish(self, env: &TestEnv, ids: &[String], recovery: Duration, s: &Value) {
        let (lost, extra) = env.lost_and_extra(BUCKET, ids);
        let row = format!(
            "| {} | {} | {:.0} s | {:.2}% | {:.1} s | {} | {lost} | {extra} | {} |\n",
            self.what,
            self.injected,
            self.window.as_secs_f64(),
            self.cpu * 100.0,
            recovery.as_secs_f64(),
            ids.len(),
            n(s, "already_present"),
        );
        eprint!("{row}");
        if let Ok(path) = std::env::var("RINIT_FAULTS_REPORT") {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(row.as_bytes()))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }
}

/// The WARN lines `message` (at least one), each naming `endpoint` and an
/// error that contains `needle`.
fn assert_warned(w: &Running, message: &str, endpoint: &str, needle: &str) -> Vec<Value> {
    let lines = w.messages(message);
    assert!(!lines.is_empty(), "no {message:?} line");
    for l in &lines {
        assert_eq!(l["severity"], "WARNING", "{l}");
        assert_eq!(l["endpoint"], endpoint, "{l}");
        let error = l["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains(&needle.to_lowercase()),
            "{needle:?} not in {l}"
        );
    }
    lines
}

/// Waits for the INFO line saying `service` answers again; returns it.
fn assert_recovered(w: &Running, service: &str) -> Value {
    let message = format!("{service} reachable again");
    wait_every(
        &format!("{message:?}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || w.messages(&message).into_iter().next(),
    )
}

/// Waits until the worker has acked every message of `ids` after storing
/// it (its per-message lines; an object in the bucket is not enough: a write
/// whose answer was lost is stored but not yet acked); returns how long it
/// took.
fn wait_acked(w: &Running, ids: &[String], timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    wait_every(
        &format!("{} messages acked", ids.len()),
        timeout,
        Duration::from_millis(250),
        || {
            let mut acked = w.messages("stored and acked");
            acked.extend(w.messages("object already present (redelivery); acked"));
            let got: BTreeSet<String> = acked
                .iter()
                .filter_map(|v| v["message_id"].as_str().map(String::from))
                .collect();
            want.iter().all(|id| got.contains(*id)).then_some(())
        },
    );
    t0.elapsed()
}

/// One storage fault, held for `window` from the worker's first write with
/// a backlog waiting: nothing can be confirmed stored during it; then the
/// proxy passes again and every message is stored exactly once.
struct StorageFault {
    what: &'static str,
    window: Duration,
    /// Starts the fault.
    apply: fn(&FaultProxy),
    /// Worker settings for the scenario.
    env: &'static [(&'static str, &'static str)],
    /// The health line's message and a word of its error.
    warning: &'static str,
    needle: &'static str,
    /// What was injected, from the proxy's counts, for the table.
    injected: fn(&FaultProxy) -> String,
}

/// What a [`StorageFault`] left to check.
struct Outcome {
    summary: Value,
    proxy: FaultProxy,
    /// WARN lines during the fault.
    warnings: usize,
    /// Connections the proxy accepted during the fault.
    connections: u64,
}

/// Runs a [`StorageFault`].
fn storage_fault(f: StorageFault) -> Option<Outcome> {
    let env = environment()?;
    let msgs: Vec<TestMessage> = (0..BACKLOG).map(mixed_message).collect();
    let ids = env.publish(TOPIC, &msgs);
    let proxy = FaultProxy::http(env.gcs_port);
    (f.apply)(&proxy);
    let storage = format!("http://{}", proxy.host());
    let w = start_worker(&env, &env.pubsub_host(), &storage, f.env);
    let cpu = assert_no_hot_loop(&w, f.window, f.what);
    let warned = assert_warned(&w, f.warning, &storage, f.needle);
    eprintln!("{}: {} WARN lines: {}", f.what, warned.len(), warned[0]);
    assert!(
        w.messages("stored and acked").is_empty(),
        "a write was confirmed during the fault"
    );

    let connections = proxy.connections();
    proxy.heal();

    let back = assert_recovered(&w, "Cloud Storage");
    assert_eq!(back["severity"], "INFO", "{back}");
    assert_eq!(back["endpoint"], storage.as_str(), "{back}");
    let recovery = wait_acked(&w, &ids, Duration::from_secs(90));
    eprintln!(
        "{}: every message stored and acked {} ms after the fault ended; {back}",
        f.what,
        recovery.as_millis()
    );
    // Let the library send the last acks before the stop.
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop_clean();
    eprintln!("{}: summary {s}", f.what);
    let row = Row {
        what: f.what,
        injected: (f.injected)(&proxy),
        window: f.window,
        cpu,
    };
    row.finish(&env, &ids, recovery, &s);
    env.assert_stored_exactly_once(BUCKET, SUB, &ids, &msgs);
    assert_eq!(n(&s, "stored"), BACKLOG, "each message confirmed once: {s}");
    Some(Outcome {
        summary: s,
        proxy,
        warnings: warned.len(),
        connections,
    })
}

/// Bursts of 500, 503 and 429 answered by the proxy for 6 s (ten of each in
/// turn; the service never sees those requests), then a healthy service.
#[test]
fn storage_500_503_429_bursts() {
    let Some(Outcome {
        summary: s, proxy, ..
    }) = storage_fault(StorageFault {
        what: "500/503/429 bursts",
        window: Duration::from_secs(6),
        apply: |p| {
            for _ in 0..1000 {
                for code in [500, 503, 429] {
                    p.inject(Fault::Status(code), 10);
                }
            }
        },
        env: &[],
        warning: "Cloud Storage unavailable (unavailable)",
        needle: "HTTP ",
        injected: |p| {
            let [a, b, c] = [500, 503, 429].map(|code| p.applied(Fault::Status(code)));
            format!("{a}× 500, {b}× 503, {c}× 429")
        },
    })
    else {
        return;
    };
    for code in [500, 503, 429] {
        assert!(proxy.applied(Fault::Status(code)) > 0, "no {code} answered");
    }
    // The service saw no write during the fault: each object created once.
    assert_eq!(n(&s, "created"), BACKLOG, "{s}");
}

/// Every upload cut: half of them reset in the middle of the body, the
/// other half reset after the service stored the object (the answer lost).
/// The retries of the second kind find the object (412) and ack it.
#[test]
fn storage_connection_resets_mid_upload() {
    let Some(Outcome {
        summary: s, proxy, ..
    }) = storage_fault(StorageFault {
        what: "resets mid-upload",
        window: Duration::from_secs(6),
        apply: |p| {
            for _ in 0..2000 {
                p.inject(Fault::ResetMidRequest, 1);
                p.inject(Fault::ResetBeforeResponse, 1);
            }
        },
        env: &[],
        warning: "Cloud Storage unavailable (unavailable)",
        needle: "",
        injected: |p| {
            format!(
                "{} uploads reset mid-body, {} reset after the write",
                p.applied(Fault::ResetMidRequest),
                p.applied(Fault::ResetBeforeResponse)
            )
        },
    })
    else {
        return;
    };
    assert!(proxy.applied(Fault::ResetMidRequest) > 0);
    assert!(proxy.applied(Fault::ResetBeforeResponse) > 0);
    assert!(
        n(&s, "already_present") > 0,
        "no retry found its object stored by a lost answer: {s}"
    );
}

/// Answers held 3 s against WRITE_ATTEMPT_TIMEOUT=1s: every attempt times
/// out although the service stored the object; the retries after the fault
/// find the objects (412) and ack them.
#[test]
fn storage_slower_than_write_attempt_timeout() {
    let Some(Outcome {
        summary: s, proxy, ..
    }) = storage_fault(StorageFault {
        what: "answers slower than WRITE_ATTEMPT_TIMEOUT",
        window: Duration::from_secs(6),
        apply: |p| p.set_default(Fault::Delay(Duration::from_secs(3))),
        env: &[("WRITE_ATTEMPT_TIMEOUT", "1s")],
        warning: "Cloud Storage unavailable (timeout)",
        needle: "timed out after 1s",
        injected: |p| {
            format!(
                "{} answers held 3 s (attempt timeout 1 s)",
                p.applied(Fault::Delay(Duration::from_secs(3)))
            )
        },
    })
    else {
        return;
    };
    assert!(proxy.applied(Fault::Delay(Duration::from_secs(3))) > 0);
    assert!(n(&s, "already_present") > 0, "{s}");
}

/// Cloud Storage unreachable for 30 s (the port closed: connection
/// refused), then back. The outage is reported with backing-off lines, not
/// one per retry.
#[test]
fn storage_30s_outage() {
    let Some(outcome) = storage_fault(StorageFault {
        what: "30 s storage outage",
        window: Duration::from_secs(30),
        apply: |p| p.refuse(true),
        env: &[],
        warning: "Cloud Storage unavailable (connection_refused)",
        needle: "connection refused",
        injected: |_| "port closed 30 s (connection refused)".to_string(),
    }) else {
        return;
    };
    let Outcome {
        summary: s,
        warnings,
        connections,
        ..
    } = outcome;
    assert_eq!(connections, 0, "a connection got through during the outage");
    // Reports at about 0, 1, 3, 7, 15 and 31 s into the outage.
    assert!((3..=7).contains(&warnings), "{warnings} WARN lines in 30 s");
    assert_eq!(n(&s, "created"), BACKLOG, "{s}");
}

/// How long Pub/Sub stays unreachable in its scenarios: longer than the
/// probe's healthy period (10 s) plus its timeout, so the probe sees it.
const PUBSUB_OUTAGE: Duration = Duration::from_secs(15);

/// The StreamingPull connection cut (RST, both sides) five times while
/// messages flow and writes are in flight, then refused for
/// [`PUBSUB_OUTAGE`] while the publisher goes on. Acks lost in the cuts
/// and leases that lapse in the outage mean redeliveries: each is found
/// stored (412) and acked, never written twice.
#[test]
fn pubsub_stream_cut_mid_flight() {
    let Some(env) = environment() else {
        return;
    };
    let pubsub = FaultProxy::tcp(env.pubsub_port);
    let storage = FaultProxy::http(env.gcs_port);
    // Each write held 100 ms: writes are in flight when a cut lands.
    storage.set_default(Fault::Delay(Duration::from_millis(100)));
    let flow = Flow {
        backlog: 20,
        per_tick: 4,
        tick: Duration::from_millis(100),
    };
    let ((w, cpu, healed), ids, msgs) = env.while_publishing(TOPIC, flow, || {
        let w = start_worker(
            &env,
            &pubsub.host(),
            &format!("http://{}", storage.host()),
            &[],
        );
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1500));
            // The stream reconnects after each cut; cut it once it has.
            wait_every(
                "a Pub/Sub connection to cut",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || (pubsub.open_sockets() > 0).then_some(()),
            );
            let cut = pubsub.reset_all();
            eprintln!("cut {cut} Pub/Sub sockets");
            assert!(cut > 0, "no open Pub/Sub connection to cut");
        }
        pubsub.refuse(true);
        let cpu = assert_no_hot_loop(&w, PUBSUB_OUTAGE, "Pub/Sub refused after the cuts");
        pubsub.heal();
        let healed = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        (w, cpu, healed)
    });
    eprintln!("published {} messages", ids.len());
    let row = Row {
        what: "Pub/Sub stream cut (RST) mid-flight, then refused",
        injected: format!(
            "5 cuts ({} sockets reset), then port closed {} s",
            pubsub.resets(),
            PUBSUB_OUTAGE.as_secs()
        ),
        window: PUBSUB_OUTAGE,
        cpu,
    };
    assert_pubsub_recovered_exactly_once(&env, &pubsub, (w, &ids, &msgs), row, healed);
}

/// The Pub/Sub emulator killed (SIGKILL) with 40 messages leased and being
/// written, restarted on the same port, its topic and subscription
/// re-created (the worker's port stays closed until then, as the real
/// service never loses a subscription), and 40 more published. The leased
/// ones are stored although their acks cannot be sent; the new ones are
/// stored after the worker's stream comes back.
#[test]
fn pubsub_emulator_killed_and_restarted() {
    let Some(mut env) = environment() else {
        return;
    };
    let pubsub = FaultProxy::tcp(env.pubsub_port);
    let storage = FaultProxy::http(env.gcs_port);
    // Four writers, each write held 500 ms: the 40 messages are all leased
    // at once and take about 5 s to store.
    storage.set_default(Fault::Delay(Duration::from_millis(500)));
    let first: Vec<TestMessage> = (0..40).map(mixed_message).collect();
    let mut ids = env.publish(TOPIC, &first);
    let w = start_worker(
        &env,
        &pubsub.host(),
        &format!("http://{}", storage.host()),
        &[("CONCURRENCY", "4")],
    );
    wait_acked(&w, &ids[..4], Duration::from_secs(30));

    pubsub.refuse(true);
    env.kill_pubsub();
    let killed = Instant::now();
    let meter = CpuMeter::start(&w);
    env.restart_pubsub();
    let restart = killed.elapsed();
    eprintln!("emulator restarted in {} ms", restart.as_millis());
    env.create_topic_and_subscription(TOPIC, SUB, 10);
    // The restarted emulator numbers messages from 1 again; burn the IDs
    // the first run used, so that new messages get new object names.
    env.create_topic_and_subscription("topic-burn", "sub-burn", 10);
    env.publish("topic-burn", &first);
    std::thread::sleep(PUBSUB_OUTAGE.saturating_sub(killed.elapsed()));
    let cpu = meter.assert_idle("Pub/Sub emulator killed and restarting");
    let down = killed.elapsed();
    pubsub.heal();
    let healed = Instant::now();

    let second: Vec<TestMessage> = (40..80).map(mixed_message).collect();
    let second_ids = env.publish(TOPIC, &second);
    assert!(
        second_ids.iter().all(|id| !ids.contains(id)),
        "the restarted emulator reused message IDs: {second_ids:?}"
    );
    ids.extend(second_ids);
    let msgs: Vec<TestMessage> = first.into_iter().chain(second).collect();
    let row = Row {
        what: "Pub/Sub emulator killed and restarted",
        injected: format!(
            "SIGKILL with 40 leased, restarted in {:.1} s, port closed {:.0} s",
            restart.as_secs_f64(),
            down.as_secs_f64()
        ),
        window: down,
        cpu,
    };
    assert_pubsub_recovered_exactly_once(&env, &pubsub, (w, &ids, &msgs), row, healed);
}

/// After a Pub/Sub fault that ended at `healed`, with the worker `w` still
/// running on the messages published (`ids[i]` is `msgs[i]`): the outage
/// was reported (connection refused at the proxy) and its end too, every
/// message was acked, the worker stops cleanly, every message is stored
/// exactly once and each object was written once (redeliveries found it
/// stored); `row` gets its figures.
fn assert_pubsub_recovered_exactly_once(
    env: &TestEnv,
    pubsub: &FaultProxy,
    (w, ids, msgs): (Running, &[String], &[TestMessage]),
    row: Row,
    healed: Instant,
) {
    assert_warned(
        &w,
        "Pub/Sub unavailable (connection_refused)",
        &format!("http://{}", pubsub.host()),
        "connection refused",
    );
    let back = assert_recovered(&w, "Pub/Sub");
    eprintln!("Pub/Sub back: {back}");
    wait_acked(&w, ids, Duration::from_secs(90));
    let recovery = healed.elapsed();
    eprintln!(
        "every message acked {} ms after the fault ended",
        recovery.as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop_clean();
    eprintln!("summary {s}");
    row.finish(env, ids, recovery, &s);
    env.assert_stored_exactly_once(BUCKET, SUB, ids, msgs);
    assert_eq!(
        n(&s, "created"),
        ids.len() as u64,
        "each object written once: {s}"
    );
}
