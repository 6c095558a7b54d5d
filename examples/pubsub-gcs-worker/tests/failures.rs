//! Failures are visible (issue 10, part 2): when Pub/Sub or Cloud Storage
//! cannot be reached or refuses the worker, a WARN line (ERROR when no retry
//! can help) names the service, the endpoint and the error within 5 s of the
//! first failure, then one line per report period (1 s, 2 s, 4 s ...), not
//! one per retry; an INFO line when the service answers, first or again; and
//! UNAVAILABLE_EXIT_AFTER bounds a Pub/Sub outage with exit 1.
//!
//! Each failure is real: an unresolvable name (asked of a resolver on
//! 127.0.0.1 where none listens, so no query leaves the machine), a closed
//! loopback port, a
//! TCP listener that answers a TLS handshake with plain text, small local
//! HTTP/2 and HTTP/1.1 servers answering 401/403, and a missing subscription
//! and bucket on the emulators. Timings come from the worker's own log
//! timestamps.

use rinit_test_support::worker::{
    n, worker_bin, worker_vars, GcsKind, TestEnv, TestMessage, PROJECT,
};
use rinit_test_support::{black_hole, eventually, free_port, tcp_server, Running, TempDir};
use serde_json::Value;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// A worker with JSON logs, pointed at the given hosts, outside any
/// emulator environment.
fn worker(pubsub_host: &str, storage_host: &str, exit_after: &str) -> Command {
    let mut c = Command::new(worker_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(worker_vars("sub-f", "bucket-f", pubsub_host, storage_host))
        .env("UNAVAILABLE_EXIT_AFTER", exit_after)
        .env("RUST_LOG", "warn,pubsub_gcs_worker=debug");
    c
}

/// Seconds since midnight of a line's RFC 3339 `time` (the tests compare
/// lines a few seconds apart).
fn at(v: &Value) -> f64 {
    let t = v["time"].as_str().expect("time field");
    let clock = &t[t.find('T').expect("RFC 3339") + 1..t.len() - 1];
    let mut parts = clock.split(':');
    let mut field = || {
        parts
            .next()
            .and_then(|p| p.parse::<f64>().ok())
            .expect("hh:mm:ss")
    };
    field() * 3600.0 + field() * 60.0 + field()
}

/// Waits for the first line with `message`.
fn wait_message(w: &Running, message: &str, timeout: Duration) -> Value {
    let mut found = None;
    eventually(timeout, || {
        found = w.messages(message).into_iter().next();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {message:?} line within {timeout:?}"))
}

/// The first health line: within 5 s of start-up (where the first failure
/// happens), naming the endpoint, the kind and the error.
fn assert_first_report(
    w: &Running,
    message: &str,
    severity: &str,
    endpoint: &str,
    error_needle: &str,
) -> Value {
    let report = wait_message(w, message, Duration::from_secs(15));
    let started = wait_message(w, "worker started", Duration::from_secs(1));
    let delay = at(&report) - at(&started);
    assert!(
        (0.0..5.0).contains(&delay),
        "first report {delay:.3}s after start"
    );
    assert_eq!(report["severity"], severity, "{report}");
    assert_eq!(report["endpoint"], endpoint, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.to_lowercase().contains(&error_needle.to_lowercase()),
        "{error_needle:?} not in the error: {report}"
    );
    report
}

/// The worker with Pub/Sub at `host` and Cloud Storage nowhere, giving up
/// after UNAVAILABLE_EXIT_AFTER = `exit_after`.
fn against_pubsub(label: &'static str, host: &str, exit_after: &str) -> Against {
    against(label, worker(host, "127.0.0.1:9", exit_after), host)
}

/// `cmd` (a worker with Pub/Sub at `host`) started.
fn against(label: &'static str, cmd: Command, host: &str) -> Against {
    let endpoint = if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    };
    Against {
        w: Running::spawn(label, cmd),
        endpoint,
    }
}

/// A worker pointed at a failing Pub/Sub, and that endpoint as the worker's
/// lines name it.
struct Against {
    w: Running,
    endpoint: String,
}

impl Against {
    /// The first report: `Pub/Sub unavailable (KIND)` at `severity`, within
    /// 5 s of start, naming the endpoint, with `needle` in its error.
    fn first_report(&self, kind: &str, severity: &str, needle: &str) -> Value {
        assert_first_report(
            &self.w,
            &unavailable(kind),
            severity,
            &self.endpoint,
            needle,
        )
    }

    /// The first report as [`Against::first_report`] says, then, while the
    /// failure lasts, one line per report period (gaps of at least 1 s, 2 s,
    /// 4 s), then exit 1 after UNAVAILABLE_EXIT_AFTER (6 s). The first report.
    fn reports_then_exits_1(self, kind: &str, severity: &str, needle: &str) -> Value {
        let first = self.first_report(kind, severity, needle);
        let mut w = self.w;
        let st = w.wait(Duration::from_secs(30));
        assert_eq!(
            st.code(),
            Some(1),
            "exit status after UNAVAILABLE_EXIT_AFTER"
        );
        let lines = w.json_lines();
        let reports = w.messages(&unavailable(kind));
        let times: Vec<f64> = reports.iter().map(at).collect();
        // 6 s of outage: reports at ~0, 1, 3 s, and the probe at the 6 s bound.
        assert!(
            (3..=5).contains(&reports.len()),
            "{} reports in 6 s: {reports:#?}",
            reports.len()
        );
        for (i, pair) in times.windows(2).enumerate().take(2) {
            let want = f64::from(1u32 << i) - 0.05;
            assert!(
                pair[1] - pair[0] >= want,
                "reports {i} and {} only {:.3}s apart",
                i + 1,
                pair[1] - pair[0]
            );
        }
        let started = at(&w.messages("worker started")[0]);
        let give_up = w.messages(
            "Pub/Sub unusable for longer than UNAVAILABLE_EXIT_AFTER; exiting so that the platform \
             restarts the worker and alerts",
        );
        assert_eq!(give_up.len(), 1, "{lines:#?}");
        assert_eq!(give_up[0]["severity"], "ERROR");
        let after = at(&give_up[0]) - started;
        assert!(
            (6.0..8.0).contains(&after),
            "gave up {after:.3}s after start"
        );
        let s = w.summary();
        assert_eq!(s["reason"], "pubsub unavailable", "{s}");
        assert_eq!(n(&s, "exit_code"), 1, "{s}");
        first
    }
}

/// The worker's report of a Pub/Sub failure of `kind`.
fn unavailable(kind: &str) -> String {
    format!("Pub/Sub unavailable ({kind})")
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    free_port()
}

/// `cmd` in a private mount namespace whose /etc/resolv.conf names only
/// 127.0.0.1, where no DNS server listens: a lookup fails at once, as with
/// a dead resolver, and sends nothing off the machine.
fn with_dead_resolver(mut cmd: Command, dir: &TempDir) -> Command {
    dir.write("resolv.conf", "nameserver 127.0.0.1\noptions attempts:1\n");
    let source = CString::new(dir.file("resolv.conf")).expect("a path without NUL");
    let (none, root, target) = (c"none", c"/", c"/etc/resolv.conf");
    // SAFETY: only unshare and mount, async-signal-safe syscalls, between
    // fork and exec; the strings were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
    cmd
}

/// DNS: the name does not resolve.
#[test]
fn pubsub_dns_failure_is_reported_then_exits_1() {
    let dir = TempDir::new("dns");
    let host = "nonexistent.invalid:1";
    let cmd = with_dead_resolver(worker(host, "127.0.0.1:9", "6s"), &dir);
    let p = against("worker-dns", cmd, host);
    let r = p.reports_then_exits_1("dns", "WARNING", "dns error");
    assert_eq!(r["service"], "Pub/Sub");
    assert_eq!(
        r["resource"],
        format!("projects/{PROJECT}/subscriptions/sub-f")
    );
}

/// Connection refused: a closed loopback port.
#[test]
fn pubsub_connection_refused_is_reported_then_exits_1() {
    let port = closed_port();
    let p = against_pubsub("worker-refused", &format!("127.0.0.1:{port}"), "6s");
    p.reports_then_exits_1("connection_refused", "WARNING", "connection refused");
}

/// No answer at all (the connection is accepted, nothing comes back): the
/// probe's 4 s deadline makes it a WARN `timeout` line within 5 s.
#[test]
fn pubsub_black_hole_is_a_timeout_within_5s() {
    let port = black_hole();
    let p = against_pubsub("worker-black-hole", &format!("127.0.0.1:{port}"), "5m");
    let report = p.first_report("timeout", "WARNING", "");
    // Two clocks can fire first on a loaded machine: the library's deadline
    // or the probe's own 4 s bound. Either way the error says it timed out.
    let error = report["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("deadline") || error.contains("no answer within"),
        "the error names the timeout: {report}"
    );
}

/// A TCP server that answers anything with plain text and hangs up: what a
/// TLS client sees from an endpoint that does not speak TLS.
fn garbage_server() -> u16 {
    tcp_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\r\n");
    })
}

/// TLS: the endpoint does not speak TLS. No retry fixes that: ERROR.
#[test]
fn pubsub_tls_error_is_an_error_line_then_exits_1() {
    let port = garbage_server();
    let p = against_pubsub("worker-tls", &format!("https://127.0.0.1:{port}"), "6s");
    p.reports_then_exits_1("tls", "ERROR", "corrupt message");
}

/// An HTTP/2 server (what gRPC runs on) answering every request with
/// `status`, as a proxy or the Google front end refusing credentials does.
fn h2_refusing_server(status: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        if let Ok(resp) = http::Response::builder().status(status).body(()) {
                            let _ = respond.send_response(resp, true);
                        }
                    }
                });
            }
        });
    });
    port
}

/// 401 and 403 from Pub/Sub: an ERROR line at once, and exit 1 (the
/// stream fails permanently) with the endpoint named.
#[test]
fn pubsub_401_and_403_are_error_lines_and_exit_1() {
    for (status, kind) in [(401, "unauthenticated"), (403, "permission_denied")] {
        let port = h2_refusing_server(status);
        let Against { mut w, endpoint } =
            against_pubsub("worker-refusing", &format!("127.0.0.1:{port}"), "5m");
        let message = format!("Pub/Sub unavailable ({kind})");
        assert_first_report(&w, &message, "ERROR", &endpoint, &status.to_string());
        assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(1));
        let lines = w.json_lines();
        let failed = w.messages("cannot receive messages");
        assert_eq!(failed.len(), 1, "{lines:#?}");
        assert_eq!(failed[0]["endpoint"], endpoint.as_str());
        assert_eq!(w.summary()["reason"], "stream failure");
    }
}

/// Forwards every connection on `port` (once listening) to `to`.
fn forward_later(port: u16, to: u16, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind the forwarder's port");
        for from in l.incoming().flatten() {
            let Ok(to) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (Ok(from2), Ok(to2)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || pump(from, to));
            std::thread::spawn(move || pump(to2, from2));
        }
    });
}

/// Copies one direction of a connection until it closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(k @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..k]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Pub/Sub unreachable at start, reachable 3 s later: WARN lines, then an
/// INFO line when it answers again, and the worker then does its work.
/// With Pub/Sub up from the start, the INFO line is "Pub/Sub connected".
#[test]
fn pubsub_recovery_and_connection_are_info_lines() {
    let Some(env) = TestEnv::start_with("topic-f", "sub-f", "bucket-f") else {
        return;
    };
    let ids = env.publish("topic-f", &[TestMessage::new("after the outage")]);

    let port = closed_port();
    forward_later(port, env.pubsub_port, Duration::from_secs(3));
    let host = format!("127.0.0.1:{port}");
    let mut cmd = worker(&host, &env.storage_host(), "5m");
    cmd.env("LEASE_EXTENSION", "10s");
    let p = against("worker-recovers", cmd, &host);
    p.first_report("connection_refused", "WARNING", "connection refused");
    let w = p.w;
    let back = wait_message(&w, "Pub/Sub reachable again", Duration::from_secs(15));
    assert_eq!(back["severity"], "INFO");
    assert!(n(&back, "down_ms") >= 2500, "{back}");
    assert!(
        eventually(Duration::from_secs(60), || env
            .list_objects("bucket-f")
            .len()
            == 1),
        "nothing stored after Pub/Sub came back"
    );
    assert_eq!(env.list_objects("bucket-f")[0].name, ids[0]);
    assert!(w.messages("Pub/Sub connected").is_empty());
    drop(w);

    // Up from the start: "connected", at once.
    let w = Running::spawn("worker-connects", env.worker_command("sub-f", "bucket-f"));
    let connected = wait_message(&w, "Pub/Sub connected", Duration::from_secs(15));
    let started = wait_message(&w, "worker started", Duration::from_secs(1));
    assert!(at(&connected) - at(&started) < 5.0, "{connected}");
    assert_eq!(connected["severity"], "INFO");
    assert_eq!(connected["endpoint"], env.pubsub_url());
}

/// A missing subscription: an ERROR line naming it and the endpoint within
/// 5 s, then exit 1 (the stream fails with NOT_FOUND).
#[test]
fn missing_subscription_is_an_error_line_and_exit_1() {
    let Some(env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    let mut w = Running::spawn("worker-nosub", env.worker_command("sub-none", "bucket-f"));
    let r = assert_first_report(
        &w,
        "Pub/Sub unavailable (not_found)",
        "ERROR",
        &env.pubsub_url(),
        "not exist",
    );
    assert_eq!(
        r["resource"],
        format!("projects/{PROJECT}/subscriptions/sub-none")
    );
    assert_eq!(w.wait(Duration::from_secs(60)).code(), Some(1));
}

/// Storage refusing connections (the emulator stopped), then back: a WARN
/// line within 5 s of the first write, then at most one per period while
/// dozens of writes fail (their per-message lines drop to DEBUG), an INFO
/// line when it answers again, and every message stored.
#[test]
fn storage_outage_is_one_line_per_period_then_recovers() {
    let Some(mut env) = TestEnv::start_with("topic-s", "sub-s", "bucket-s") else {
        return;
    };
    env.stop_gcs();
    let msgs: Vec<_> = (0..20).map(|i| TestMessage::new(format!("m{i}"))).collect();
    let ids = env.publish("topic-s", &msgs);
    let mut cmd = env.worker_command("sub-s", "bucket-s");
    cmd.env("CONCURRENCY", "4").env("WRITE_ATTEMPTS", "2");
    let w = Running::spawn("worker-storage", cmd);
    let message = "Cloud Storage unavailable (connection_refused)";
    let first = assert_first_report(&w, message, "WARNING", &env.gcs_url(), "connection refused");
    assert_eq!(first["resource"], "bucket bucket-s");
    std::thread::sleep(Duration::from_secs(6));
    let lines = w.json_lines();
    let reports = w.messages(message);
    let attempts = lines
        .iter()
        .filter(|v| v["message"] == "write attempt failed")
        .count();
    // ~6 s of outage: reports at 0, 1, 3 s (and maybe 7 s).
    assert!(
        (2..=4).contains(&reports.len()),
        "{} reports for {attempts} failed attempts",
        reports.len()
    );
    assert!(attempts >= 10, "only {attempts} failed attempts");
    let failures: u64 = reports.iter().map(|r| n(r, "failures")).sum();
    assert!(
        failures > reports.len() as u64,
        "reports do not count retries"
    );
    let loud = lines
        .iter()
        .filter(|v| v["message"] == "write failed; nacked for redelivery")
        .filter(|v| v["severity"] != "DEBUG")
        .count();
    assert_eq!(loud, 0, "per-message lines repeat the outage report");

    env.restart_gcs();
    let back = wait_message(&w, "Cloud Storage reachable again", Duration::from_secs(60));
    assert_eq!(back["severity"], "INFO");
    assert!(
        eventually(Duration::from_secs(120), || env
            .list_objects("bucket-s")
            .len()
            == ids.len()),
        "not every message stored after the outage"
    );
}

/// An HTTP/1.1 server answering every request with `status` and a JSON
/// error, after reading the request.
fn http_refusing_server(status: u16) -> u16 {
    tcp_server(move |mut s| {
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = [0u8; 64 * 1024];
            while let Ok(1..) = s.read(&mut buf) {}
            let body = format!(r#"{{"error":{{"code":{status},"message":"stub refuses"}}}}"#);
            let _ = write!(
                s,
                "HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    })
}

/// 401/403 from Cloud Storage, and a missing bucket (404 on the emulator):
/// an ERROR line within 5 s of the first write naming the endpoint.
#[test]
fn storage_401_403_and_missing_bucket_are_error_lines() {
    let Some(env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription("topic-r", "sub-r", 10);
    let mut cases: Vec<(String, &str, &str)> = Vec::new();
    for (status, kind, needle) in [
        (401, "unauthenticated", "HTTP 401"),
        (403, "permission_denied", "HTTP 403"),
    ] {
        let port = http_refusing_server(status);
        cases.push((format!("http://127.0.0.1:{port}"), kind, needle));
    }
    cases.push((env.gcs_url(), "not_found", "HTTP 404"));
    for (endpoint, kind, needle) in cases {
        env.publish("topic-r", &[TestMessage::new(format!("for {kind}"))]);
        let mut cmd = env.worker_command("sub-r", "no-such-bucket");
        cmd.env("STORAGE_EMULATOR_HOST", &endpoint);
        let mut w = Running::spawn("worker-storage-refused", cmd);
        let r = assert_first_report(
            &w,
            &format!("Cloud Storage unavailable ({kind})"),
            "ERROR",
            &endpoint,
            needle,
        );
        assert_eq!(r["resource"], "bucket no-such-bucket");
        w.signal(libc::SIGTERM);
        assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
        assert_eq!(n(&w.summary(), "acked"), 0);
    }
}
