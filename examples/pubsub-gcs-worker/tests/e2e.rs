//! End-to-end tests of the worker against the real emulators.
//!
//! Each test starts its own emulators (fresh topic, subscription and bucket),
//! so tests are independent and can run in parallel. Waits are bounded by
//! generous timeouts; nothing asserts on speed except "within rinit's grace".

use rinit_test_support::faultproxy::{Fault, FaultProxy};
use rinit_test_support::procfs::{children, kill, stat};
use rinit_test_support::worker::{
    assert_summary_consistent, n, pseudo_random_bytes, rinit_bin, worker_bin, GcsKind, TestEnv,
    TestMessage,
};
use rinit_test_support::{black_hole, eventually, wait_every, Running};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// Messages of every shape the worker must handle.
fn mixed_messages(with_large: bool) -> Vec<TestMessage> {
    let mut m = Vec::new();
    for i in 0..30 {
        m.push(TestMessage::new(format!("message {i}")).attr("index", &i.to_string()));
    }
    m.push(TestMessage::new("grüße, 世界 ✓").attr("kind", "unicode"));
    for i in 0..8u64 {
        let mut b = pseudo_random_bytes(i + 1, 1 + (i as usize * 997) % 4096);
        b[0] = 0xff; // never valid UTF-8
        m.push(TestMessage::new(b).attr("kind", "binary"));
    }
    // Pub/Sub rejects a message with neither data nor attributes.
    for i in 0..3 {
        m.push(
            TestMessage::new(Vec::new())
                .attr("kind", "empty")
                .attr("n", &i.to_string()),
        );
    }
    if with_large {
        let mut big = pseudo_random_bytes(99, 5 * 1024 * 1024);
        big[0] = 0xfe;
        m.push(TestMessage::new(big).attr("kind", "large"));
    }
    m
}

/// The content type of each message's object: text for a UTF-8 payload,
/// binary for any other (gcp-storage-emulator keeps it; fake-gcs-server
/// does not).
fn assert_content_types(env: &TestEnv, bucket: &str, ids: &[String], msgs: &[TestMessage]) {
    let objects = env.list_objects(bucket);
    let by_name: HashMap<_, _> = objects.iter().map(|o| (o.name.clone(), o)).collect();
    for (id, m) in ids.iter().zip(msgs) {
        let want = if std::str::from_utf8(&m.data).is_ok() {
            TEXT
        } else {
            BINARY
        };
        assert_eq!(
            by_name[id].content_type.as_deref(),
            Some(want),
            "content type of {id}"
        );
    }
}

fn store_scenario(kind: GcsKind, with_large: bool) {
    let Some(mut env) = TestEnv::start(kind) else {
        return;
    };
    env.create_topic_and_subscription("topic-a", "sub-a", 10);
    env.create_bucket("bucket-a");
    let msgs = mixed_messages(with_large);
    let ids = env.publish("topic-a", &msgs);

    let w = Running::spawn("worker", env.worker_command("sub-a", "bucket-a"));
    env.wait_objects("bucket-a", ids.len(), Duration::from_secs(120));
    // Let the acks reach the emulator before the stop (not required for
    // correctness: the drain flushes them too).
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop_clean();
    assert_eq!(n(&s, "created"), ids.len() as u64, "{s}");
    env.assert_stored_exactly_once("bucket-a", "sub-a", &ids, &msgs);
    if kind == GcsKind::GcpStorageEmulator {
        assert_content_types(&env, "bucket-a", &ids, &msgs);
    }
}

/// fake-gcs-server: bytes, names, metadata, a 5 MB payload; content type is
/// not checked because fake-gcs ignores it on multipart uploads.
#[test]
fn stores_every_message_once_fake_gcs() {
    store_scenario(GcsKind::FakeGcs, true);
}

/// gcp-storage-emulator keeps the content type, so it is checked there.
#[test]
fn stores_every_message_once_with_content_type() {
    store_scenario(GcsKind::GcpStorageEmulator, false);
}

/// Messages delivered twice: some already have their object (a previous
/// delivery stored it but the ack was lost). The worker must not overwrite
/// them (the precondition fails with 412) and must ack them.
#[test]
fn redelivered_messages_do_not_duplicate_or_overwrite() {
    let Some(env) = TestEnv::start_with("topic-r", "sub-r", "bucket-r") else {
        return;
    };
    let msgs: Vec<_> = (0..12)
        .map(|i| TestMessage::new(format!("payload {i}")))
        .collect();
    let ids = env.publish("topic-r", &msgs);

    // First delivery, outside the worker: pull four, store two of them with a
    // sentinel body, then nack all four so they are delivered again.
    let mut pulled = Vec::new();
    assert!(eventually(Duration::from_secs(20), || {
        pulled.extend(env.pull("sub-r", 4 - pulled.len() as u32));
        pulled.len() >= 4
    }));
    let sentinel = b"stored by an earlier delivery".to_vec();
    for p in &pulled[..2] {
        env.upload_object("bucket-r", &p.message_id, &sentinel);
    }
    env.nack(
        "sub-r",
        &pulled.iter().map(|p| p.ack_id.clone()).collect::<Vec<_>>(),
    );

    let w = Running::spawn("worker", env.worker_command("sub-r", "bucket-r"));
    env.wait_objects("bucket-r", ids.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop_clean();
    assert_eq!(n(&s, "already_present"), 2, "{s}");
    assert_eq!(n(&s, "created"), 10, "{s}");

    let objects = env.list_objects("bucket-r");
    assert_eq!(objects.len(), ids.len(), "no duplicates");
    for p in &pulled[..2] {
        assert_eq!(
            env.read_object("bucket-r", &p.message_id),
            sentinel,
            "object {} was overwritten by the redelivery",
            p.message_id
        );
    }
    for (id, m) in ids.iter().zip(&msgs) {
        if pulled[..2].iter().any(|p| &p.message_id == id) {
            continue;
        }
        assert_eq!(env.read_object("bucket-r", id), m.data);
    }
    assert_eq!(env.remaining_message_ids("sub-r"), Vec::<String>::new());
}

/// Storage goes away mid-run: writes fail, messages are nacked (never
/// acked), and once storage is back every message is stored.
#[test]
fn storage_outage_nacks_then_recovers() {
    let Some(mut env) = TestEnv::start_with("topic-o", "sub-o", "bucket-o") else {
        return;
    };
    let mut cmd = env.worker_command("sub-o", "bucket-o");
    cmd.env("CONCURRENCY", "4")
        .env("WRITE_ATTEMPTS", "2")
        .env("WRITE_ATTEMPT_TIMEOUT", "3s");
    let w = Running::spawn("worker", cmd);

    let before: Vec<_> = (0..10)
        .map(|i| TestMessage::new(format!("before {i}")))
        .collect();
    let before_ids = env.publish("topic-o", &before);
    env.wait_objects("bucket-o", 10, Duration::from_secs(60));

    env.stop_gcs();
    let during: Vec<_> = (0..20)
        .map(|i| TestMessage::new(format!("during {i}")))
        .collect();
    let during_ids = env.publish("topic-o", &during);
    let nack_lines = || {
        w.lines()
            .iter()
            .filter(|l| l.contains("write failed; nacked for redelivery"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(60), || nack_lines() >= 10),
        "expected failed writes to be nacked during the outage"
    );
    // No message published during the outage was acked while storage was down.
    let acked_during_outage: Vec<_> = w
        .lines()
        .into_iter()
        .filter(|l| l.contains("stored and acked") || l.contains("already present"))
        .filter(|l| {
            during_ids
                .iter()
                .any(|id| l.contains(&format!("\"message_id\":\"{id}\"")))
        })
        .collect();
    assert!(acked_during_outage.is_empty(), "{acked_during_outage:?}");

    // Back on the same port. The in-memory backend lost the objects written
    // before the outage; those messages were acked then and must not come
    // back, so the bucket ends up holding exactly the outage messages.
    env.restart_gcs();
    env.wait_objects("bucket-o", during_ids.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop_clean();
    assert!(n(&s, "nacked_write_failed") >= 10, "{s}");
    assert_eq!(n(&s, "created"), 30, "{s}");
    env.assert_stored_exactly_once("bucket-o", "sub-o", &during_ids, &during);
    assert!(before_ids.iter().all(|id| !during_ids.contains(id)));
}

/// TSTP makes the worker quiet (it stops pulling, finishes what it started
/// and stays up; a TERM then exits 0 at once, nothing lost); a stuck write
/// makes the drain time out (exit 3) or a second TERM abort it (exit 4), in
/// both cases leaving the messages unacked so they are redelivered.
#[test]
fn tstp_quiets_and_stuck_writes_are_abandoned_unacked() {
    let Some(env) = TestEnv::start_with("topic-d", "sub-d", "bucket-d") else {
        return;
    };

    // 1. TSTP: quiet. Nothing more is stored, the worker stays up; TERM then
    //    exits 0 at once; every message is either stored or still on the
    //    subscription.
    let msgs: Vec<_> = (0..200)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 20_000)))
        .collect();
    let ids = env.publish("topic-d", &msgs);
    // Storage behind a proxy that holds each chunk 25 ms, so a write takes
    // about as long as one to real Cloud Storage and the TSTP below lands
    // mid-way on any machine (the in-memory emulator stores all 200 in well
    // under a second, which once let every write finish before the TSTP).
    let slow = FaultProxy::tcp(env.gcs_port);
    slow.set_default(Fault::Delay(Duration::from_millis(25)));
    let mut cmd = env.worker_command("sub-d", "bucket-d");
    cmd.env("CONCURRENCY", "2")
        .env("MAX_OUTSTANDING_MESSAGES", "10")
        .env("STORAGE_EMULATOR_HOST", format!("http://{}", slow.host()));
    let mut w = Running::spawn("worker-tstp", cmd);
    env.wait_objects("bucket-d", 5, Duration::from_secs(60));
    w.signal(libc::SIGTSTP);
    assert!(
        w.wait_for_line(Duration::from_secs(10), |l| l.contains("quiet and idle"))
            .is_some(),
        "no 'quiet and idle' line within 10 s of SIGTSTP"
    );
    let stored_when_quiet = env.list_objects("bucket-d").len();
    std::thread::sleep(Duration::from_secs(3));
    assert!(w.running(), "the worker exited on SIGTSTP");
    assert_eq!(
        env.list_objects("bucket-d").len(),
        stored_when_quiet,
        "objects were stored while quiet"
    );
    let t = Instant::now();
    w.signal(libc::SIGTERM);
    let st = w.wait(Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(st.code(), Some(0));
    let s = w.summary();
    assert_summary_consistent(&s);
    assert_eq!(s["reason"], "SIGTERM", "{s}");
    // Quiet and idle: nothing left to drain, so TERM exits at once.
    assert_eq!(n(&s, "in_flight_at_stop"), 0, "{s}");
    assert!(n(&s, "drain_ms") < 1000, "{s}");
    assert!(
        took < Duration::from_secs(3),
        "TERM took {took:?} when idle"
    );
    // Every message is either stored or deliverable again. Messages the
    // emulator had already put on the stream but the client had not read
    // when it was cancelled are outstanding on the server until their
    // 10 s ack deadline: allow for that, nothing more.
    let all_ids: BTreeSet<_> = ids.iter().cloned().collect();
    let t = Instant::now();
    let mut stored = BTreeSet::new();
    let mut remaining = BTreeSet::new();
    let complete = eventually(Duration::from_secs(40), || {
        stored = env
            .list_objects("bucket-d")
            .into_iter()
            .map(|o| o.name)
            .collect();
        remaining = env.remaining_message_ids("sub-d").into_iter().collect();
        assert!(
            stored.is_disjoint(&remaining),
            "a stored message is still pending"
        );
        stored.union(&remaining).cloned().collect::<BTreeSet<_>>() == all_ids
    });
    let missing: Vec<_> = all_ids
        .difference(&stored)
        .filter(|i| !remaining.contains(*i))
        .collect();
    assert!(
        complete,
        "messages neither stored nor redeliverable: {missing:?}"
    );
    eprintln!(
        "after TSTP: {} stored, {} redeliverable after {:?}",
        stored.len(),
        remaining.len(),
        t.elapsed()
    );
    assert!(!remaining.is_empty(), "TSTP came too late to test anything");

    // 2. Writes that never finish (storage accepts connections and never
    //    answers): drain timeout -> exit 3, nothing acked.
    let port = black_hole();
    let run_stuck = |second_term: bool| -> (Option<i32>, Value) {
        let mut cmd = env.worker_command("sub-d", "bucket-d");
        cmd.env("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{port}"))
            .env("CONCURRENCY", "2")
            .env("MAX_OUTSTANDING_MESSAGES", "4")
            .env("DRAIN_TIMEOUT", if second_term { "30s" } else { "2s" })
            .env("WRITE_ATTEMPT_TIMEOUT", "60s");
        let mut w = Running::spawn("worker-stuck", cmd);
        assert!(
            w.wait_for_line(Duration::from_secs(30), |l| l.contains("worker started"))
                .is_some(),
            "worker did not start"
        );
        // Give it time to receive messages and start (stuck) writes.
        std::thread::sleep(Duration::from_secs(2));
        let t = Instant::now();
        w.signal(libc::SIGTERM);
        if second_term {
            std::thread::sleep(Duration::from_millis(300));
            w.signal(libc::SIGTERM);
        }
        let st = w.wait(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        (st.code(), w.summary())
    };
    let (code, s) = run_stuck(false);
    assert_eq!(code, Some(3), "drain timeout exit status; summary {s}");
    assert_eq!(n(&s, "acked"), 0, "{s}");
    assert!(n(&s, "abandoned") >= 1, "{s}");
    let (code, s) = run_stuck(true);
    assert_eq!(code, Some(4), "second TERM exit status; summary {s}");
    assert_eq!(n(&s, "acked"), 0, "{s}");

    // The abandoned messages were not acked: they come back once their
    // lease (10 s) runs out, and a healthy worker stores everything.
    let w = Running::spawn("worker-final", env.worker_command("sub-d", "bucket-d"));
    env.wait_objects("bucket-d", ids.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    w.stop_clean();
    let names: BTreeSet<_> = env
        .list_objects("bucket-d")
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(env.remaining_message_ids("sub-d"), Vec::<String>::new());
}

/// Messages `range` of a load: `size` pseudo-random bytes each, attribute
/// `i` their number.
fn load(range: std::ops::Range<u64>, size: usize) -> Vec<TestMessage> {
    range
        .map(|i| TestMessage::new(pseudo_random_bytes(i, size)).attr("i", &i.to_string()))
        .collect()
}

/// The worker under rinit (`rinit_args`, then `--`) as PID 1 of a new PID
/// namespace (`unshare --pid --fork --mount-proc`), four writes at a time,
/// once it has stored 20 objects; with rinit's and the worker's host pids.
fn under_rinit_pid1(env: &TestEnv, (sub, bucket): (&str, &str), rinit_args: &[&str]) -> Pid1 {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(rinit_bin())
        .args(rinit_args)
        .arg("--")
        .arg(worker_bin());
    env.worker_env(&mut cmd, sub, bucket);
    cmd.env("CONCURRENCY", "4")
        .env("MAX_OUTSTANDING_MESSAGES", "40");
    let w = Running::spawn("rinit+worker", cmd);
    env.wait_objects(bucket, 20, Duration::from_secs(90));
    // unshare --fork forks rinit (PID 1 inside), rinit the worker.
    let rinit = children(w.pid() as i32)
        .first()
        .map(|s| s.pid)
        .expect("rinit process");
    let worker = wait_every(
        "rinit's child",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || children(rinit).first().map(|s| s.pid),
    );
    Pid1 { w, rinit, worker }
}

/// A run under rinit as PID 1: the `unshare` process and the host pids of
/// rinit and of the worker.
struct Pid1 {
    w: Running,
    rinit: i32,
    worker: i32,
}

/// The state letter of a process in /proc (R, S, T for stopped, Z, ...).
fn proc_state(pid: i32) -> char {
    stat(pid).map_or('?', |s| s.state)
}

/// A restarted worker stores what the first run (summary `s1`) left: then
/// every message is stored exactly once, each object created once over the
/// two runs.
fn restart_stores_the_rest(
    env: &TestEnv,
    (sub, bucket): (&str, &str),
    ids: &[String],
    msgs: &[TestMessage],
    s1: &Value,
) {
    let w2 = Running::spawn("worker-restart", env.worker_command(sub, bucket));
    env.wait_objects(bucket, ids.len(), Duration::from_secs(180));
    std::thread::sleep(Duration::from_millis(500));
    let s2 = w2.stop_clean();
    assert_eq!(
        n(s1, "created") + n(&s2, "created"),
        ids.len() as u64,
        "each object created exactly once: {s1} {s2}"
    );
    env.assert_stored_exactly_once(bucket, sub, ids, msgs);
}

/// The Cloud Run jobs maintenance sequence under rinit as PID 1 (issue 11):
/// TSTP to rinit (forwarded: the worker goes quiet), the worker really
/// stopped (SIGSTOP) for ~10 s, then CONT to rinit (forwarded: the worker
/// pulls again). The worker is still running afterwards, messages published
/// during the pause are processed, and every message is stored exactly once.
#[test]
fn cloud_run_maintenance_under_rinit_pid1_quiets_pauses_and_resumes() {
    let Some(env) = TestEnv::start_with("topic-m", "sub-m", "bucket-m") else {
        return;
    };
    // As in the SIGTERM test: enough work that TSTP lands mid-way.
    let msgs = load(0..400, 64 * 1024);
    let mut ids = env.publish("topic-m", &msgs);
    let Pid1 {
        mut w,
        rinit,
        worker,
    } = under_rinit_pid1(&env, ("sub-m", "bucket-m"), &["--platform=cloud-run"]);

    // Migration ahead: quiet.
    kill(rinit, libc::SIGTSTP);
    assert!(
        w.wait_for_line(Duration::from_secs(10), |l| l.contains("quiet and idle"))
            .is_some(),
        "the worker did not go quiet within 10 s of SIGTSTP"
    );
    let stored_when_quiet = env.list_objects("bucket-m").len();
    assert!(
        stored_when_quiet < ids.len(),
        "everything was stored before SIGTSTP: nothing left to resume"
    );

    // The migration: the worker is frozen, and more messages arrive.
    kill(worker, libc::SIGSTOP);
    assert!(
        eventually(Duration::from_secs(5), || proc_state(worker) == 'T'),
        "the worker is not stopped: state {}",
        proc_state(worker)
    );
    let more = load(400..450, 16 * 1024);
    ids.extend(env.publish("topic-m", &more));
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(proc_state(worker), 'T', "the worker ran during the pause");
    assert_eq!(
        env.list_objects("bucket-m").len(),
        stored_when_quiet,
        "objects were stored while quiet and stopped"
    );

    // Migration over: CONT to rinit, forwarded to the worker.
    let cont_at = Instant::now();
    kill(rinit, libc::SIGCONT);
    assert!(
        w.wait_for_line(Duration::from_secs(5), |l| l
            .contains("resuming: pulling again"))
            .is_some(),
        "the worker did not resume within 5 s of SIGCONT"
    );
    assert_ne!(proc_state(worker), 'T', "the worker is still stopped");
    env.wait_objects("bucket-m", ids.len(), Duration::from_secs(120));
    eprintln!("all stored {:?} after SIGCONT", cont_at.elapsed());
    assert!(
        w.running(),
        "rinit/worker exited during the maintenance sequence"
    );
    assert!(
        !matches!(proc_state(worker), 'Z' | '?'),
        "the worker is gone"
    );

    std::thread::sleep(Duration::from_millis(500));
    kill(rinit, libc::SIGTERM);
    assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    let s = w.summary();
    assert_summary_consistent(&s);
    // 0 duplicated: every message written once (no 412 on a second write).
    assert_eq!(n(&s, "created"), ids.len() as u64, "{s}");
    assert_eq!(n(&s, "already_present"), 0, "{s}");
    // 0 lost: every message stored byte-exact, nothing left.
    let all: Vec<_> = msgs.iter().chain(&more).cloned().collect();
    env.assert_stored_exactly_once("bucket-m", "sub-m", &ids, &all);
}

/// What a SIGTERM to rinit (PID 1) around the worker showed.
struct Stopped {
    /// From the SIGTERM to rinit's exit.
    took: Duration,
    /// rinit's and the worker's stderr.
    lines: Vec<String>,
    /// The worker's summary line.
    summary: Value,
}

/// The worker under rinit (`rinit_args`) as PID 1, on 400 messages of
/// 64 KiB (`topic-X`, `sub-X`, `bucket-X` for `x` = X): SIGTERM to rinit
/// once 20 are stored, as a container runtime sends it. Checks exit 0,
/// rinit not escalating, a consistent summary, and work left at the stop
/// (else no drain was tested); hands what it saw to `check`; then a
/// restart stores the rest, each object created once.
fn stop_under_rinit_then_restart(x: &str, rinit_args: &[&str], check: impl FnOnce(&Stopped)) {
    let (topic, sub, bucket) = (
        format!("topic-{x}"),
        format!("sub-{x}"),
        format!("bucket-{x}"),
    );
    let Some(env) = TestEnv::start_with(&topic, &sub, &bucket) else {
        return;
    };
    let msgs = load(0..400, 64 * 1024);
    let ids = env.publish(&topic, &msgs);
    let Pid1 { mut w, rinit, .. } = under_rinit_pid1(&env, (&sub, &bucket), rinit_args);
    let t = Instant::now();
    kill(rinit, libc::SIGTERM);
    let st = w.wait(Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(st.code(), Some(0), "rinit/worker exit status");
    // rinit itself never had to escalate (TERM was enough).
    assert!(
        w.lines()
            .iter()
            .any(|l| l.contains("rinit") && l.contains("escalated=false")),
        "no rinit exit line without escalation"
    );
    let summary = w.summary();
    assert_summary_consistent(&summary);
    assert!(
        env.list_objects(&bucket).len() < ids.len(),
        "everything was stored before the stop: the test did not test a drain"
    );
    let stopped = Stopped {
        took,
        lines: w.lines(),
        summary,
    };
    check(&stopped);
    restart_stores_the_rest(&env, (&sub, &bucket), &ids, &msgs, &stopped.summary);
}

/// rinit's `sidekiq` preset (TSTP at once, TERM 2 s later) around the
/// worker under load: TSTP quiets it (it does not exit), the TERM finds it
/// idle and it exits 0 at once, within the grace; a restart stores the
/// rest, each message exactly once.
#[test]
fn sidekiq_preset_under_rinit_pid1_quiets_then_drains() {
    let rinit_args = ["--grace=8s", "--platform=none", "--preset=sidekiq"];
    stop_under_rinit_then_restart("k", &rinit_args, |stopped| {
        // TSTP did not end the worker: rinit's TERM 2 s later did, at once.
        let took = stopped.took;
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "exit took {took:?}; want just after the TERM at 2 s"
        );
        let lines = &stopped.lines;
        let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
        let quiet = pos("quiet (SIGTSTP)").expect("no quiet line after TSTP");
        let idle = pos("quiet and idle").expect("not idle before the TERM");
        let draining = pos("stopped pulling; draining").expect("no drain line");
        assert!(quiet < idle && idle < draining, "{lines:#?}");
        let s1 = &stopped.summary;
        assert_eq!(s1["reason"], "SIGTERM", "{s1}");
        assert_eq!(n(s1, "in_flight_at_stop"), 0, "{s1}");
        assert!(n(s1, "drain_ms") < 1000, "{s1}");
    });
}

/// SIGTERM under load with the worker under rinit as PID 1 of a new PID
/// namespace: exit 0 within rinit's grace, consistent summary; after a
/// restart drains the rest, every message is stored exactly once.
#[test]
fn sigterm_under_rinit_pid1_drains_then_restart_completes() {
    stop_under_rinit_then_restart("t", &["--grace=8s", "--platform=none"], |stopped| {
        let took = stopped.took;
        assert!(
            took < Duration::from_secs(8),
            "exit took {took:?}, past rinit's grace"
        );
        let s1 = &stopped.summary;
        assert!(n(s1, "in_flight_at_stop") <= 4, "{s1}");
        assert!(n(s1, "drain_ms") < 8000, "{s1}");
    });
}

/// A message that can never be stored (here: the bucket does not exist, a
/// 404) is logged with its ID and held for the lease extension, then
/// nacked: one attempt per delivery, no hot loop, nothing acked.
#[test]
fn unstorable_messages_are_held_not_spun() {
    let Some(env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-u", "sub-u", 10);
    let msgs: Vec<_> = (0..3)
        .map(|i| TestMessage::new(format!("nowhere {i}")))
        .collect();
    let ids = env.publish("topic-u", &msgs);
    let w = Running::spawn("worker", env.worker_command("sub-u", "no-such-bucket"));
    let unstorable = |w: &Running| {
        w.lines()
            .into_iter()
            .filter(|l| l.contains("message cannot be stored"))
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(30), || unstorable(&w).len() >= 3));
    // Held from here: leased for LEASE_EXTENSION (10 s) at most.
    let held = std::time::Instant::now();
    // Held for LEASE_EXTENSION (10 s): no further attempt in the meantime.
    std::thread::sleep(Duration::from_secs(4));
    let lines = unstorable(&w);
    assert_eq!(lines.len(), 3, "retried while held: {lines:?}");
    for id in &ids {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"message_id\":\"{id}\""))),
            "{id} not logged: {lines:?}"
        );
    }
    let s = w.stop_clean();
    assert_eq!(n(&s, "acked"), 0, "{s}");
    assert_eq!(n(&s, "nacked_unstorable"), 3, "{s}");

    // Nacked at the drain, so they are deliverable again at once, before
    // their 10 s lease could free them: seen within 9 s of being held (each
    // look nacks what it pulled, so what one look takes the next may not
    // see yet: the IDs are gathered across looks).
    let mut want = ids.clone();
    want.sort();
    let mut seen = std::collections::BTreeSet::new();
    let found = eventually(
        Duration::from_secs(9).saturating_sub(held.elapsed()),
        || {
            seen.extend(env.remaining_message_ids("sub-u"));
            seen.iter().eq(want.iter())
        },
    );
    assert!(
        found && held.elapsed() < Duration::from_secs(10),
        "deliverable again {:?} after {:?}: {seen:?}, want {want:?}",
        found,
        held.elapsed()
    );

    // A subscription that does not exist is a runtime failure: exit 1 with
    // the reason, not a retry loop.
    let mut w = Running::spawn(
        "worker-nosub",
        env.worker_command("no-such-sub", "bucket-u"),
    );
    assert_eq!(w.wait(Duration::from_secs(60)).code(), Some(1));
    assert!(
        w.lines()
            .iter()
            .any(|l| l.contains("cannot receive messages") && l.contains("NOT_FOUND")),
        "no clear error line"
    );
}
