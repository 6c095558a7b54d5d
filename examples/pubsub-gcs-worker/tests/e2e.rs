//! End-to-end tests of the worker against the real emulators.
//!
//! Each test starts its own emulators (fresh topic, subscription and bucket),
//! so tests are independent and can run in parallel. Waits are bounded by
//! generous timeouts; nothing asserts on speed except "within rinit's grace".

mod common;

use common::{
    assert_summary_consistent, eventually, n, pseudo_random_bytes, GcsKind, Running, TestEnv,
    TestMessage,
};
use rinit_test_support::faultproxy::{Fault, FaultProxy};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
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

/// Checks that the bucket holds exactly one object per message, named by
/// message ID, with the payload bytes and the metadata.
fn assert_objects_match(
    env: &TestEnv,
    bucket: &str,
    ids: &[String],
    msgs: &[TestMessage],
    check_content_type: bool,
) {
    let objects = env.list_objects(bucket);
    let names: BTreeSet<_> = objects.iter().map(|o| o.name.clone()).collect();
    let want: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(objects.len(), ids.len(), "exactly one object per message");
    assert_eq!(names, want);
    let by_name: HashMap<_, _> = objects.iter().map(|o| (o.name.clone(), o)).collect();
    for (id, m) in ids.iter().zip(msgs) {
        let o = by_name[id];
        assert_eq!(o.size, m.data.len() as u64, "size of {id}");
        let bytes = env.read_object(bucket, id);
        assert!(
            bytes == m.data,
            "bytes of object {id} differ from the payload"
        );
        assert_eq!(o.metadata.get("pubsub-message-id"), Some(id), "{o:?}");
        assert!(o.metadata.contains_key("pubsub-publish-time"), "{o:?}");
        for (k, v) in &m.attributes {
            assert_eq!(
                o.metadata.get(&format!("pubsub-attr-{k}")),
                Some(v),
                "{o:?}"
            );
        }
        if check_content_type {
            let want = if std::str::from_utf8(&m.data).is_ok() {
                TEXT
            } else {
                BINARY
            };
            assert_eq!(
                o.content_type.as_deref(),
                Some(want),
                "content type of {id}"
            );
        }
    }
}

fn wait_objects(env: &TestEnv, bucket: &str, count: usize, timeout: Duration) {
    let ok = eventually(timeout, || env.list_objects(bucket).len() >= count);
    let have = env.list_objects(bucket).len();
    assert!(ok, "only {have} of {count} objects after {timeout:?}");
}

fn stop_and_summary(mut w: Running) -> Value {
    w.signal(libc::SIGTERM);
    let st = w.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "worker exit status");
    w.summary()
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
    wait_objects(&env, "bucket-a", ids.len(), Duration::from_secs(120));
    // Let the acks reach the emulator before the stop (not required for
    // correctness: the drain flushes them too).
    std::thread::sleep(Duration::from_millis(500));
    let s = stop_and_summary(w);
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "created"), ids.len() as u64, "{s}");
    assert_objects_match(
        &env,
        "bucket-a",
        &ids,
        &msgs,
        kind == GcsKind::GcpStorageEmulator,
    );
    assert_eq!(env.remaining_message_ids("sub-a"), Vec::<String>::new());
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
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-r", "sub-r", 10);
    env.create_bucket("bucket-r");
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
    wait_objects(&env, "bucket-r", ids.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let s = stop_and_summary(w);
    assert_summary_consistent(&s);
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
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-o", "sub-o", 10);
    env.create_bucket("bucket-o");
    let mut cmd = env.worker_command("sub-o", "bucket-o");
    cmd.env("CONCURRENCY", "4")
        .env("WRITE_ATTEMPTS", "2")
        .env("WRITE_ATTEMPT_TIMEOUT", "3s");
    let w = Running::spawn("worker", cmd);

    let before: Vec<_> = (0..10)
        .map(|i| TestMessage::new(format!("before {i}")))
        .collect();
    let before_ids = env.publish("topic-o", &before);
    wait_objects(&env, "bucket-o", 10, Duration::from_secs(60));

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
    wait_objects(&env, "bucket-o", during_ids.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let s = stop_and_summary(w);
    assert_summary_consistent(&s);
    assert!(n(&s, "nacked_write_failed") >= 10, "{s}");
    assert_eq!(n(&s, "created"), 30, "{s}");
    assert_objects_match(&env, "bucket-o", &during_ids, &during, false);
    assert!(before_ids.iter().all(|id| !during_ids.contains(id)));
    assert_eq!(env.remaining_message_ids("sub-o"), Vec::<String>::new());
}

/// A storage endpoint that accepts connections and never answers: writes
/// hang, so the drain cannot finish.
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind black hole");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        l.set_nonblocking(true).ok();
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, _)) => {
                    let mut buf = [0u8; 1024];
                    s.set_nonblocking(true).ok();
                    let _ = s.read(&mut buf);
                    let _ = s.flush();
                    let _ = s.write(&[]);
                    held.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, h)
}

/// TSTP makes the worker quiet (it stops pulling, finishes what it started
/// and stays up; a TERM then exits 0 at once, nothing lost); a stuck write
/// makes the drain time out (exit 3) or a second TERM abort it (exit 4), in
/// both cases leaving the messages unacked so they are redelivered.
#[test]
fn tstp_quiets_and_stuck_writes_are_abandoned_unacked() {
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-d", "sub-d", 10);
    env.create_bucket("bucket-d");

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
    wait_objects(&env, "bucket-d", 5, Duration::from_secs(60));
    w.signal(libc::SIGTSTP);
    assert!(
        w.wait_for_line(Duration::from_secs(10), |l| l.contains("quiet and idle"))
            .is_some(),
        "no 'quiet and idle' line within 10 s of SIGTSTP"
    );
    let stored_when_quiet = env.list_objects("bucket-d").len();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        w.proc.child.try_wait().expect("try_wait").is_none(),
        "the worker exited on SIGTSTP"
    );
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

    // 2. Writes that never finish: drain timeout -> exit 3, nothing acked.
    let (port, _hole) = black_hole();
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
    wait_objects(&env, "bucket-d", ids.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let s = stop_and_summary(w);
    assert_summary_consistent(&s);
    let names: BTreeSet<_> = env
        .list_objects("bucket-d")
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(env.remaining_message_ids("sub-d"), Vec::<String>::new());
}

/// The child processes of `pid` (Linux /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// rinit (PID 1 of a new PID namespace, from `unshare`) around the worker:
/// the `unshare` process, rinit's host pid, and the worker's host pid.
fn rinit_and_worker(w: &Running) -> (u32, u32) {
    let rinit = children(w.pid()).first().copied().expect("rinit process");
    let mut worker = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            worker = children(rinit).first().copied();
            worker.is_some()
        }),
        "rinit has no child"
    );
    (rinit, worker.expect("worker process"))
}

/// The state letter of a process in /proc (R, S, T for stopped, Z, ...).
fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name in parentheses may contain spaces: read after it.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// Sends `sig` to a process this test did not spawn directly.
fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a live descendant of a child we own.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill({pid}, {sig})"
    );
}

/// The Cloud Run jobs maintenance sequence under rinit as PID 1 (issue 11):
/// TSTP to rinit (forwarded: the worker goes quiet), the worker really
/// stopped (SIGSTOP) for ~10 s, then CONT to rinit (forwarded: the worker
/// pulls again). The worker is still running afterwards, messages published
/// during the pause are processed, and every message is stored exactly once.
#[test]
fn cloud_run_maintenance_under_rinit_pid1_quiets_pauses_and_resumes() {
    let rinit = common::rinit_bin();
    assert!(rinit.is_file(), "rinit is not built at {}", rinit.display());
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-m", "sub-m", 10);
    env.create_bucket("bucket-m");
    // As in the SIGTERM test: enough work that TSTP lands mid-way.
    let msgs: Vec<_> = (0..400u64)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 64 * 1024)).attr("i", &i.to_string()))
        .collect();
    let mut ids = env.publish("topic-m", &msgs);

    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(&rinit)
        .args(["--platform=cloud-run", "--"])
        .arg(common::worker_bin());
    env.worker_env(&mut cmd, "sub-m", "bucket-m");
    cmd.env("CONCURRENCY", "4")
        .env("MAX_OUTSTANDING_MESSAGES", "40");
    let mut w = Running::spawn("rinit+worker", cmd);
    wait_objects(&env, "bucket-m", 20, Duration::from_secs(90));
    let (rinit_pid, worker_pid) = rinit_and_worker(&w);

    // Migration ahead: quiet.
    kill(rinit_pid, libc::SIGTSTP);
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
    kill(worker_pid, libc::SIGSTOP);
    assert!(
        eventually(Duration::from_secs(5), || proc_state(worker_pid) == 'T'),
        "the worker is not stopped: state {}",
        proc_state(worker_pid)
    );
    let more: Vec<_> = (400..450u64)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 16 * 1024)).attr("i", &i.to_string()))
        .collect();
    ids.extend(env.publish("topic-m", &more));
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        proc_state(worker_pid),
        'T',
        "the worker ran during the pause"
    );
    assert_eq!(
        env.list_objects("bucket-m").len(),
        stored_when_quiet,
        "objects were stored while quiet and stopped"
    );

    // Migration over: CONT to rinit, forwarded to the worker.
    let cont_at = Instant::now();
    kill(rinit_pid, libc::SIGCONT);
    assert!(
        w.wait_for_line(Duration::from_secs(5), |l| l
            .contains("resuming: pulling again"))
            .is_some(),
        "the worker did not resume within 5 s of SIGCONT"
    );
    assert_ne!(proc_state(worker_pid), 'T', "the worker is still stopped");
    wait_objects(&env, "bucket-m", ids.len(), Duration::from_secs(120));
    eprintln!("all stored {:?} after SIGCONT", cont_at.elapsed());
    assert!(
        w.proc.child.try_wait().expect("try_wait").is_none(),
        "rinit/worker exited during the maintenance sequence"
    );
    assert!(
        !matches!(proc_state(worker_pid), 'Z' | '?'),
        "the worker is gone"
    );

    std::thread::sleep(Duration::from_millis(500));
    kill(rinit_pid, libc::SIGTERM);
    assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    let s = w.summary();
    assert_summary_consistent(&s);
    // 0 duplicated: every message written once (no 412 on a second write).
    assert_eq!(n(&s, "created"), ids.len() as u64, "{s}");
    assert_eq!(n(&s, "already_present"), 0, "{s}");
    // 0 lost: every message stored byte-exact, nothing left.
    let all: Vec<_> = msgs.iter().chain(&more).cloned().collect();
    assert_objects_match(&env, "bucket-m", &ids, &all, false);
    assert_eq!(env.remaining_message_ids("sub-m"), Vec::<String>::new());
}

/// rinit's `sidekiq` preset (TSTP at once, TERM 2 s later) around the
/// worker under load: TSTP quiets it (it does not exit), the TERM finds it
/// idle and it exits 0 at once, within the grace; a restart stores the
/// rest, each message exactly once.
#[test]
fn sidekiq_preset_under_rinit_pid1_quiets_then_drains() {
    let rinit = common::rinit_bin();
    assert!(rinit.is_file(), "rinit is not built at {}", rinit.display());
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-k", "sub-k", 10);
    env.create_bucket("bucket-k");
    let msgs: Vec<_> = (0..400u64)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 64 * 1024)).attr("i", &i.to_string()))
        .collect();
    let ids = env.publish("topic-k", &msgs);

    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(&rinit)
        .args(["--grace=8s", "--platform=none", "--preset=sidekiq", "--"])
        .arg(common::worker_bin());
    env.worker_env(&mut cmd, "sub-k", "bucket-k");
    cmd.env("CONCURRENCY", "4")
        .env("MAX_OUTSTANDING_MESSAGES", "40");
    let mut w = Running::spawn("rinit+worker", cmd);
    wait_objects(&env, "bucket-k", 20, Duration::from_secs(90));
    let (rinit_pid, _) = rinit_and_worker(&w);

    let t = Instant::now();
    kill(rinit_pid, libc::SIGTERM);
    let st = w.wait(Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(st.code(), Some(0), "rinit/worker exit status");
    // TSTP did not end the worker: rinit's TERM 2 s later did, at once.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "exit took {took:?}; want just after the TERM at 2 s"
    );
    let lines = w.lines();
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let quiet = pos("quiet (SIGTSTP)").expect("no quiet line after TSTP");
    let idle = pos("quiet and idle").expect("not idle before the TERM");
    let draining = pos("stopped pulling; draining").expect("no drain line");
    assert!(quiet < idle && idle < draining, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rinit") && l.contains("escalated=false")),
        "no rinit exit line without escalation"
    );
    let s1 = w.summary();
    assert_summary_consistent(&s1);
    assert_eq!(s1["reason"], "SIGTERM", "{s1}");
    assert_eq!(n(&s1, "in_flight_at_stop"), 0, "{s1}");
    assert!(n(&s1, "drain_ms") < 1000, "{s1}");
    let after_first = env.list_objects("bucket-k").len();
    assert!(
        after_first < ids.len(),
        "everything was stored before the stop: the test did not test a drain"
    );

    let w2 = Running::spawn("worker-restart", env.worker_command("sub-k", "bucket-k"));
    wait_objects(&env, "bucket-k", ids.len(), Duration::from_secs(180));
    std::thread::sleep(Duration::from_millis(500));
    let s2 = stop_and_summary(w2);
    assert_summary_consistent(&s2);
    assert_eq!(
        n(&s1, "created") + n(&s2, "created"),
        ids.len() as u64,
        "each object created exactly once: {s1} {s2}"
    );
    assert_objects_match(&env, "bucket-k", &ids, &msgs, false);
    assert_eq!(env.remaining_message_ids("sub-k"), Vec::<String>::new());
}

/// SIGTERM under load with the worker under rinit as PID 1 of a new PID
/// namespace: exit 0 within rinit's grace, consistent summary; after a
/// restart drains the rest, every message is stored exactly once.
#[test]
fn sigterm_under_rinit_pid1_drains_then_restart_completes() {
    let rinit = common::rinit_bin();
    assert!(
        rinit.is_file(),
        "rinit is not built at {} (build the workspace: cargo build --workspace --profile <p>)",
        rinit.display()
    );
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-t", "sub-t", 10);
    env.create_bucket("bucket-t");
    let msgs: Vec<_> = (0..400u64)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 64 * 1024)).attr("i", &i.to_string()))
        .collect();
    let ids = env.publish("topic-t", &msgs);

    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(&rinit)
        .args(["--grace=8s", "--platform=none", "--"])
        .arg(common::worker_bin());
    env.worker_env(&mut cmd, "sub-t", "bucket-t");
    cmd.env("CONCURRENCY", "4")
        .env("MAX_OUTSTANDING_MESSAGES", "40");
    let mut w = Running::spawn("rinit+worker", cmd);
    wait_objects(&env, "bucket-t", 20, Duration::from_secs(90));

    // unshare --fork forks rinit: signal rinit (PID 1 inside), as a
    // container runtime would.
    let rinit_pid = children(w.pid()).first().copied().expect("rinit process");
    let t = Instant::now();
    // SAFETY: kill(2) on a live child of our child.
    assert_eq!(unsafe { libc::kill(rinit_pid as i32, libc::SIGTERM) }, 0);
    let st = w.wait(Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(st.code(), Some(0), "rinit/worker exit status");
    assert!(
        took < Duration::from_secs(8),
        "exit took {took:?}, past rinit's grace"
    );
    // rinit itself never had to escalate (TERM was enough).
    assert!(
        w.lines()
            .iter()
            .any(|l| l.contains("rinit") && l.contains("escalated=false")),
        "no rinit exit line without escalation"
    );
    let s1 = w.summary();
    assert_summary_consistent(&s1);
    assert!(n(&s1, "in_flight_at_stop") <= 4, "{s1}");
    assert!(n(&s1, "drain_ms") < 8000, "{s1}");
    let after_first = env.list_objects("bucket-t").len() as u64;
    assert!(
        after_first < ids.len() as u64,
        "SIGTERM came after everything was stored: the test did not test a drain"
    );

    // Restart: the rest is drained.
    let w2 = Running::spawn("worker-restart", env.worker_command("sub-t", "bucket-t"));
    wait_objects(&env, "bucket-t", ids.len(), Duration::from_secs(180));
    std::thread::sleep(Duration::from_millis(500));
    let s2 = stop_and_summary(w2);
    assert_summary_consistent(&s2);
    assert_eq!(
        n(&s1, "created") + n(&s2, "created"),
        ids.len() as u64,
        "each object created exactly once: {s1} {s2}"
    );
    assert_objects_match(&env, "bucket-t", &ids, &msgs, false);
    assert_eq!(env.remaining_message_ids("sub-t"), Vec::<String>::new());
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
    let mut w = Running::spawn("worker", env.worker_command("sub-u", "no-such-bucket"));
    let unstorable = |w: &Running| {
        w.lines()
            .into_iter()
            .filter(|l| l.contains("message cannot be stored"))
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(30), || unstorable(&w).len() >= 3));
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
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    let s = w.summary();
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "acked"), 0, "{s}");
    assert_eq!(n(&s, "nacked_unstorable"), 3, "{s}");
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

    // Nacked at the drain, so they are deliverable again at once.
    let mut remaining = env.remaining_message_ids("sub-u");
    remaining.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(remaining, want);
}
