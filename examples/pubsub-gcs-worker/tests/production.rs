//! The worker on its production path, proven hermetically (issue 10, part 1).
//!
//! No emulator variable is set: the worker in the Dockerfile.example image,
//! under rinit, with only PROJECT_ID, SUBSCRIPTION_ID and BUCKET_NAME, talks
//! to `https://pubsub.googleapis.com` (gRPC) and
//! `https://storage.googleapis.com` (JSON API) with Application Default
//! Credentials from `http://metadata.google.internal`, as on Cloud Run.
//! What answers is built here from real parts, all on loopback:
//!
//! - a test CA and a server certificate for both API hosts, made by openssl
//!   at test time; the CA is the image's only CA bundle
//!   (/etc/ssl/certs/ca-certificates.crt);
//! - nginx terminating TLS on 127.A.C.1:443, `grpc_pass` to the Pub/Sub
//!   emulator and `proxy_pass` to fake-gcs-server, refusing (401) every
//!   request whose bearer token the metadata server did not issue or that
//!   has expired, logging every request with its Authorization header;
//! - a metadata server on 127.A.C.2:80 (tests/production/fakes.rs) that
//!   requires `Metadata-Flavor: Google` and hands out a new token per
//!   request, valid for 30 s: the library refreshes a token that close to
//!   its expiry every 10 s, so tokens change several times during the test;
//! - name resolution by the worker's own static glibc binary: through
//!   /etc/hosts (`docker run --add-host`) in one test, through DNS (dnsmasq
//!   on 127.A.C.3:53, the container's /etc/resolv.conf bind-mounted to point
//!   at it) in the other. There every name also has the AAAA record ::1,
//!   where nothing listens, and getaddrinfo lists it first: both clients
//!   must fall back to the IPv4 address.
//!
//! In the hosts-file test the container's resolv.conf names a dnsmasq that
//! knows none of the names and must never be asked (Docker would otherwise
//! copy the machine's resolver into the container, and no query may leave
//! loopback). That test then runs the same image with the machine's CA
//! bundle instead of the test CA: nginx must see failed handshakes and no
//! request at all.
//!
//! Assertions: every published message stored byte-exact, exactly once
//! (bucket listing and contents, the worker's summary, an empty
//! subscription, one successful upload per message in nginx's log); every
//! request nginx saw from the worker carried a token the metadata server
//! issued, made within that token's lifetime; each client (Pub/Sub and
//! Storage keep separate credentials) used at least two tokens, i.e.
//! refreshed; nginx refused nothing the worker sent, before or after a
//! refresh (no 401/403, the token checker refused only the test's four
//! probes); the metadata server saw only requests with
//! `Metadata-Flavor: Google` for paths it serves; no WARN or ERROR line in
//! the container's log; the names were resolved the way the test meant.

use rinit_test_support::docker as docker_support;
#[path = "production/fakes.rs"]
mod fakes;

use docker_support::{build_text, engine, static_base, Container};
use fakes::{Certs, Dnsmasq, MetadataServer, Nginx, Upstreams};
use rinit_test_support::worker::{
    assert_summary_consistent, n, pseudo_random_bytes, while_publishing, worker_image_on, GcsKind,
    TestEnv, TestMessage, PROJECT,
};
use rinit_test_support::{ci, run, wait_every, TempDir};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

const PUBSUB_HOST: &str = "pubsub.googleapis.com";
const STORAGE_HOST: &str = "storage.googleapis.com";
const METADATA_HOST: &str = "metadata.google.internal";
const TOPIC: &str = "topic-production";
const SUB: &str = "sub-production";
const BUCKET: &str = "bucket-production";
/// Lifetime of each token the metadata server issues. Below the library's
/// 240 s refresh slack, so it fetches a new one every 10 s.
const TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// How long messages keep being published after the worker started: long
/// enough for two refreshes (at about 10 s and 20 s).
const PUBLISH_FOR: Duration = Duration::from_secs(24);

/// How the container resolves the Google host names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Names {
    /// `docker run --add-host`: entries in the container's /etc/hosts.
    HostsFile,
    /// dnsmasq on loopback, named by the container's /etc/resolv.conf.
    Dns,
}

/// The programs this test needs (scripts/setup installs them). Missing ones
/// skip the test with one line, or fail it under CI=true.
struct Programs {
    nginx: PathBuf,
    dnsmasq: PathBuf,
    openssl: PathBuf,
    curl: PathBuf,
}

fn programs(test: &str) -> Option<Programs> {
    let find = |n| fakes::program(n).ok_or(n);
    match (
        find("nginx"),
        find("dnsmasq"),
        find("openssl"),
        find("curl"),
    ) {
        (Ok(nginx), Ok(dnsmasq), Ok(openssl), Ok(curl)) => Some(Programs {
            nginx,
            dnsmasq,
            openssl,
            curl,
        }),
        missing => {
            let names: Vec<&str> = [
                missing.0.err(),
                missing.1.err(),
                missing.2.err(),
                missing.3.err(),
            ]
            .into_iter()
            .flatten()
            .collect();
            let why = format!(
                "{} not installed (scripts/setup installs them)",
                names.join(", ")
            );
            if ci() {
                panic!("{test}: CI=true and {why}");
            }
            eprintln!("SKIPPED (not run) {test}: {why}");
            None
        }
    }
}

/// The message published as number `i`: text, binary (up to 20 KB, never
/// valid UTF-8) and empty payloads, each with its number as an attribute.
fn message(i: u64) -> TestMessage {
    let m = match i % 4 {
        0 => TestMessage::new(Vec::new()).attr("kind", "empty"),
        1 => {
            let mut b = pseudo_random_bytes(i, 1 + (i as usize * 7919) % 20_000);
            b[0] = 0xff;
            TestMessage::new(b).attr("kind", "binary")
        }
        _ => TestMessage::new(format!("production message {i} ✓")).attr("kind", "text"),
    };
    m.attr("i", &i.to_string())
}

/// The worker's summary line in its default (text) log format, as JSON, so
/// that the shared invariants check applies: tracing's text format prints
/// `LEVEL target: summary k=v ...`.
fn text_summary(logs: &str) -> Value {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("pubsub_gcs_worker") && l.contains(": summary "))
        .unwrap_or_else(|| panic!("no summary line in docker logs:\n{logs}"));
    let severity = if line.contains(" INFO ") {
        "INFO"
    } else {
        "OTHER"
    };
    let mut v = json!({ "severity": severity, "message": "summary" });
    let fields = &line[line.find(": summary ").expect("summary") + 10..];
    for kv in fields.split_whitespace() {
        if let Some((k, val)) = kv.split_once('=') {
            v[k] = match val.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(val.trim_matches('"')),
            };
        }
    }
    v
}

/// `curl` through nginx to `host` (resolved to `ip` by curl itself, checked
/// against the test CA); returns the HTTP status.
fn curl_status(
    curl: &Path,
    certs: &Certs,
    ip: std::net::Ipv4Addr,
    host: &str,
    headers: &[&str],
) -> u16 {
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--http2"])
        .arg("--noproxy")
        .arg("*")
        .arg("--cacert")
        .arg(&certs.ca)
        .arg("--resolve")
        .arg(format!("{host}:443:{ip}"));
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    // A path no client uses, so the probes are easy to tell apart in the log.
    cmd.arg(format!("https://{host}/rinit-test-probe"));
    let out = run(&mut cmd, Duration::from_secs(30));
    assert!(out.ok(), "curl {host}: {}", out.stderr);
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed {:?}", out.stdout))
}

/// The image: Dockerfile.example from the local stand-in for its distroless
/// base with `ca` as the whole CA bundle (None: the machine's bundle, as
/// the stand-in has), and this run's binaries.
fn worker_image(ca: Option<&Path>) -> String {
    let base = match ca {
        None => static_base(),
        Some(ca) => {
            let base_ctx = TempDir::new("production-base");
            base_ctx.copy_in(ca, "ca-certificates.crt");
            build_text(
                "rinit-test/production-base",
                &format!(
                    "FROM {}\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n",
                    static_base()
                ),
                &base_ctx,
            )
        }
    };
    worker_image_on(&base, "rinit-test/production-worker")
}

fn production_path(names: Names, case: u8) {
    let t_test = Instant::now();
    let test = format!("production_path_{names:?}");
    if !engine(&test) {
        return;
    }
    let Some(progs) = programs(&test) else {
        return;
    };
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    env.create_topic_and_subscription(TOPIC, SUB, 10);
    env.create_bucket(BUCKET);
    let dir = env.work.join("production");
    let ip = fakes::pick_addresses(case);
    eprintln!(
        "{test}: loopback addresses {ip:?}; files in {}",
        dir.display()
    );

    let certs = fakes::make_certs(
        &progs.openssl,
        &dir.join("tls"),
        &[PUBSUB_HOST, STORAGE_HOST],
    );
    let metadata = MetadataServer::start(ip.metadata, PROJECT, TOKEN_LIFETIME);
    let nginx = Nginx::start(
        &progs.nginx,
        &dir.join("nginx"),
        ip.google,
        &certs,
        &Upstreams {
            pubsub_port: env.pubsub_port,
            gcs_port: env.gcs_port,
            checker: metadata.checker,
        },
    );
    let records = [
        (PUBSUB_HOST, ip.google),
        (STORAGE_HOST, ip.google),
        (METADATA_HOST, ip.metadata),
    ];
    // The container's resolver, in both tests: it knows the Google names
    // only in the DNS test. In the hosts-file test it answers NXDOMAIN and
    // must never be asked, and Docker does not copy the machine's resolver
    // into the container (no query may leave loopback).
    let dns_records: &[(&str, std::net::Ipv4Addr)] = match names {
        Names::Dns => &records,
        Names::HostsFile => &[],
    };
    // In the DNS test every name also has the AAAA record ::1, where
    // nothing listens on 443 or 80: a dual-stack answer on a host whose
    // IPv6 path leads nowhere (as on Cloud Run without IPv6 egress). Each
    // client must fall back to the IPv4 address.
    if names == Names::Dns {
        for port in [443, 80] {
            assert!(
                std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).is_err(),
                "something listens on [::1]:{port}; this test needs it unused"
            );
        }
    }
    let dns = Dnsmasq::start(
        &progs.dnsmasq,
        &dir.join("dns"),
        ip.dns,
        dns_records,
        (names == Names::Dns).then_some(std::net::Ipv6Addr::LOCALHOST),
    );

    // The gates are real: without a token, or with one the metadata server
    // never issued, nginx refuses; the metadata server refuses a request
    // without Metadata-Flavor.
    for host in [PUBSUB_HOST, STORAGE_HOST] {
        assert_eq!(
            curl_status(&progs.curl, &certs, ip.google, host, &[]),
            401,
            "{host} without a token"
        );
        assert_eq!(
            curl_status(
                &progs.curl,
                &certs,
                ip.google,
                host,
                &["Authorization: Bearer ya29.not-issued"]
            ),
            401,
            "{host} with a token nobody issued"
        );
    }
    let token_path = "/computeMetadata/v1/instance/service-accounts/default/token";
    assert_eq!(fakes::metadata_get(metadata.addr, token_path, false), 403);
    assert!(metadata.issued().is_empty());

    let image = worker_image(Some(&certs.ca));

    // The container's name resolution.
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions timeout:1\n", ip.dns),
    )
    .expect("write resolv.conf");
    let mut args: Vec<String> = vec![
        "-v".into(),
        format!("{}:/etc/resolv.conf:ro", resolv.display()),
    ];
    if names == Names::HostsFile {
        for (name, addr) in records {
            args.push("--add-host".into());
            args.push(format!("{name}:{addr}"));
        }
    }
    for v in [
        format!("PROJECT_ID={}", PROJECT),
        format!("SUBSCRIPTION_ID={SUB}"),
        format!("BUCKET_NAME={BUCKET}"),
    ] {
        args.push("-e".into());
        args.push(v);
    }
    let c = Container::run("production", &[&args[..], &[image]].concat());
    let t_start = Instant::now();
    let started = wait_every(
        "\"worker started\" in docker logs",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let logs = c.logs();
            let line = logs.lines().find(|l| l.contains("worker started"))?;
            Some(line.to_string())
        },
    );
    eprintln!("{test}: {started}");
    assert!(
        started.contains("pubsub=\"google (ADC)\"") || started.contains("pubsub=google (ADC)"),
        "the worker must be on the production endpoints: {started}"
    );

    // Messages flow for PUBLISH_FOR, across token refreshes.
    let publish = |publishing: &AtomicBool| {
        let (mut ids, mut msgs) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while publishing.load(Ordering::Relaxed) {
            let batch: Vec<_> = (i..i + 4).map(message).collect();
            i += 4;
            ids.extend(env.publish(TOPIC, &batch));
            msgs.extend(batch);
            std::thread::sleep(Duration::from_millis(400));
        }
        (ids, msgs)
    };
    let ((), (ids, msgs)) = while_publishing(publish, || {
        while t_start.elapsed() < PUBLISH_FOR {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    eprintln!("{test}: published {} messages", ids.len());
    env.wait_objects(BUCKET, ids.len(), Duration::from_secs(120));

    // A clean stop: rinit forwards SIGTERM, the worker drains and exits 0.
    c.stop(10);
    let logs = c.logs();
    assert_eq!(c.state().exit_code, 0, "exit code; docker logs:\n{logs}");
    let s = text_summary(&logs);
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "exit_code"), 0, "{s}");
    assert_eq!(
        n(&s, "created"),
        ids.len() as u64,
        "one creation per message: {s}"
    );
    assert_eq!(n(&s, "nacked_write_failed"), 0, "{s}");
    let trouble: Vec<&str> = logs
        .lines()
        .filter(|l| !l.contains(" rinit ") && (l.contains(" WARN ") || l.contains(" ERROR ")))
        .collect();
    assert!(
        trouble.is_empty(),
        "warnings or errors from the worker or its libraries:\n{}",
        trouble.join("\n")
    );

    // Every published message stored exactly once, byte-exact.
    let objects = env.list_objects(BUCKET);
    let names_stored: BTreeSet<_> = objects.iter().map(|o| o.name.clone()).collect();
    assert_eq!(objects.len(), ids.len(), "exactly one object per message");
    assert_eq!(names_stored, ids.iter().cloned().collect::<BTreeSet<_>>());
    let by_name: HashMap<_, _> = objects.iter().map(|o| (o.name.as_str(), o)).collect();
    for (id, m) in ids.iter().zip(&msgs) {
        let o = by_name[id.as_str()];
        assert!(env.read_object(BUCKET, id) == m.data, "bytes of {id}");
        assert_eq!(
            o.metadata.get("pubsub-attr-i"),
            m.attributes.get("i"),
            "{o:?}"
        );
    }
    assert_eq!(
        env.remaining_message_ids(SUB),
        Vec::<String>::new(),
        "subscription empty"
    );

    // What nginx saw: the streams' lines are written when they end, which
    // the stop above did.
    std::thread::sleep(Duration::from_millis(500));
    let access = nginx.access();
    let text = std::fs::read_to_string(&nginx.access_log).unwrap_or_default();
    eprintln!("{test}: first 20 lines of nginx's access log:");
    for l in text.lines().take(20) {
        eprintln!("  {l}");
    }
    let issued = metadata.issued();
    let issued_at: HashMap<&str, &fakes::Issued> =
        issued.iter().map(|i| (i.token.as_str(), i)).collect();
    let worker_lines: Vec<_> = access
        .iter()
        .filter(|a| a.uri != "/rinit-test-probe")
        .collect();
    let probes = access.len() - worker_lines.len();
    assert_eq!(probes, 4, "the four probes, each refused:\n{text}");
    assert!(
        access
            .iter()
            .filter(|a| a.uri == "/rinit-test-probe")
            .all(|a| a.status == 401),
        "{text}"
    );
    assert!(
        !worker_lines.is_empty(),
        "nginx saw nothing from the worker"
    );
    for a in &worker_lines {
        let token = a
            .token
            .as_deref()
            .unwrap_or_else(|| panic!("a request without a bearer token: {}", a.raw));
        let t = issued_at
            .get(token)
            .unwrap_or_else(|| panic!("a token the metadata server never issued: {}", a.raw));
        // When the request started (nginx logs its end and its duration):
        // within the token's lifetime.
        let field = |k: &str| -> f64 {
            a.raw
                .split(' ')
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {}", a.raw))
        };
        let end = a.raw.split(' ').next().and_then(|v| v.parse::<f64>().ok());
        let start =
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(end.expect("$msec") - field("rt="));
        let slack = Duration::from_millis(1500);
        assert!(
            start + slack >= t.issued && start <= t.expires + slack,
            "a request made outside its token's lifetime ({:?}..{:?}): {}",
            t.issued,
            t.expires,
            a.raw
        );
        assert!(
            a.status != 401 && a.status != 403,
            "nginx refused the worker: {}",
            a.raw
        );
    }
    let hosts: BTreeSet<&str> = worker_lines.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from([PUBSUB_HOST, STORAGE_HOST]),
        "the worker reached both APIs through nginx"
    );
    let uploads: Vec<_> = worker_lines
        .iter()
        .filter(|a| a.host == STORAGE_HOST && a.method == "POST" && a.status == 200)
        .collect();
    assert_eq!(
        uploads.len(),
        ids.len(),
        "one successful upload per message through nginx"
    );
    // A refresh: each client (the Pub/Sub and the Storage client keep
    // their own credentials, so each fetched its own first token) went on
    // with a new token, and nginx accepted every request made with one.
    let mut per_host: Vec<(&str, Vec<&str>)> = Vec::new();
    for host in [PUBSUB_HOST, STORAGE_HOST] {
        let mut seen: Vec<&str> = Vec::new();
        for a in worker_lines.iter().filter(|a| a.host == host) {
            let t = a.token.as_deref().expect("checked above");
            if !seen.contains(&t) {
                seen.push(t);
            }
        }
        assert!(
            seen.len() >= 2,
            "no token refresh seen by nginx for {host} (tokens used: {seen:?}; issued: {})",
            issued.len()
        );
        per_host.push((host, seen));
    }
    // Refused token checks: only the four probes'.
    let refused: Vec<_> = metadata
        .checks()
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.authorization)
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "only the probes with a token were refused by the token check: {refused:?}"
    );
    let first_tokens: Vec<&str> = per_host.iter().map(|(_, seen)| seen[0]).collect();
    let after_refresh = worker_lines
        .iter()
        .filter(|a| !first_tokens.contains(&a.token.as_deref().unwrap_or_default()))
        .count();
    eprintln!(
        "{test}: {} requests through nginx, {after_refresh} of them with refreshed tokens \
         ({} uploads); tokens used: {} for Pub/Sub, {} for Storage, {} issued",
        worker_lines.len(),
        uploads.len(),
        per_host[0].1.len(),
        per_host[1].1.len(),
        issued.len(),
    );
    assert!(after_refresh > 0);

    // The metadata server: only well-formed requests (our probe aside).
    let md = metadata.requests();
    let no_flavor: Vec<&str> = md
        .iter()
        .filter(|r| !r.flavor)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(no_flavor, [token_path], "requests without Metadata-Flavor");
    let unserved: Vec<(&str, u16)> = md
        .iter()
        .filter(|r| r.flavor && r.status != 200)
        .map(|r| (r.path.as_str(), r.status))
        .collect();
    assert!(
        unserved.is_empty(),
        "the worker asked the metadata server for what it does not serve: {unserved:?}"
    );
    let paths: BTreeSet<&str> = md.iter().map(|r| r.path.as_str()).collect();
    eprintln!("{test}: metadata paths requested: {paths:?}");

    // The names were resolved as this test meant: by DNS, for the three
    // names and nothing else; or from /etc/hosts without asking DNS at all.
    let q = dns.queries();
    match names {
        Names::Dns => {
            for name in [PUBSUB_HOST, STORAGE_HOST, METADATA_HOST] {
                for ty in ["A", "AAAA"] {
                    assert!(
                        q.iter().any(|(t, n)| t == ty && n == name),
                        "dnsmasq was never asked for {ty} {name}: {q:?}"
                    );
                }
            }
            let unknown: Vec<_> = q
                .iter()
                .filter(|(_, n)| ![PUBSUB_HOST, STORAGE_HOST, METADATA_HOST].contains(&n.as_str()))
                .collect();
            assert!(unknown.is_empty(), "unexpected DNS queries: {unknown:?}");
        }
        Names::HostsFile => assert!(q.is_empty(), "DNS was asked: {q:?}"),
    }
    drop(c);

    if names == Names::HostsFile {
        // The roots really come from the image's CA bundle: the same image
        // with the machine's bundle (no test CA) reaches nothing. rustls
        // refuses nginx's certificate, so nginx logs failed handshakes and
        // no request; nothing is stored, nothing acked.
        let image = worker_image(None);
        let handshakes = || {
            std::fs::read_to_string(&nginx.error_log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("while SSL handshaking"))
                .count()
        };
        let (before, lines_before) = (handshakes(), nginx.access().len());
        let late = env.publish(TOPIC, &[message(1), message(2)]);
        let c = Container::run("production-no-ca", &[&args[..], &[image]].concat());
        wait_every(
            "nginx to refuse handshakes from the worker without the test CA",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || (handshakes() >= before + 2).then_some(()),
        );
        std::thread::sleep(Duration::from_secs(3));
        c.stop(10);
        let logs = c.logs();
        assert_eq!(
            nginx.access().len(),
            lines_before,
            "a request got through TLS without the test CA:\n{logs}"
        );
        assert_eq!(env.list_objects(BUCKET).len(), ids.len(), "{logs}");
        assert_eq!(
            env.remaining_message_ids(SUB),
            late.iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            "the two late messages are still there"
        );
        eprintln!(
            "{test}: without the test CA in the image: {} refused handshakes in nginx's \
             error log, no request, nothing stored",
            handshakes() - before
        );
    }
    eprintln!("{test}: took {} s", t_test.elapsed().as_secs());
}

#[test]
fn production_path_names_from_hosts_file() {
    production_path(Names::HostsFile, 1);
}

#[test]
fn production_path_names_from_dns() {
    production_path(Names::Dns, 2);
}
