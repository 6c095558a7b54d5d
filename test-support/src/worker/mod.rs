//! The reference worker's test harness (feature `worker`): the emulators
//! and their REST APIs (emulators.rs, pubsub.rs, gcs.rs), the worker wired
//! to them, its summary line, the messages the tests publish, and the
//! worker's Docker image (containers.rs). What every test shares (temp
//! dirs, polling, processes, Docker, CI detection) is in the crate's other
//! modules.

mod containers;
mod emulators;
mod gcs;
mod pubsub;

pub use containers::{
    docker_setup, start_worker, stop_cleanly, worker_image, worker_image_on, Replica,
};
pub use emulators::{GcsKind, TestEnv, PROJECT};
pub use gcs::ObjectInfo;
pub use pubsub::{while_publishing, Flow, Pulled};

use crate::docker::{assert_static, sibling_binary};
use crate::process::Running;
use crate::root_dir;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The worker binary cargo built for the running test: integration tests
/// run from `<target>/<triple>/<profile>/deps/`, the package's binaries sit
/// one directory up.
pub fn worker_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary under <target>/<profile>/deps")
        .join("pubsub-gcs-worker");
    assert!(
        bin.is_file(),
        "{} is not built: run the worker's tests with cargo (-p pubsub-gcs-worker)",
        bin.display()
    );
    bin
}

/// rinit, from the same profile and target directory as the worker (built
/// here when this run did not build it, or built it from older sources).
pub fn rinit_bin() -> PathBuf {
    sibling_binary(
        &worker_bin(),
        "rinit",
        ["--bin", "rinit"],
        &[root_dir().join("src"), root_dir().join("Cargo.toml")],
    )
}

/// This run's worker and rinit for a Docker image: both checked static (a
/// scratch-like image has no loader).
pub fn static_binaries() -> (PathBuf, PathBuf) {
    let worker = worker_bin();
    assert_static(
        &worker,
        "the worker must be built static (.cargo/config.toml)",
    );
    let rinit = rinit_bin();
    assert_static(&rinit, "rinit must be built static (.cargo/config.toml)");
    (worker, rinit)
}

/// A message to publish.
#[derive(Clone, Debug, Default)]
pub struct TestMessage {
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

impl TestMessage {
    /// A message with this payload and no attributes.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            attributes: HashMap::new(),
        }
    }
    /// The message with attribute `k` set to `v`.
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.attributes.insert(k.into(), v.into());
        self
    }
}

impl TestEnv {
    /// A worker command (not started) configured for this environment, with
    /// JSON logs and debug level for the worker's own events.
    pub fn worker_command(&self, sub: &str, bucket: &str) -> Command {
        let mut c = Command::new(worker_bin());
        self.worker_env(&mut c, sub, bucket);
        c
    }

    /// Sets the worker's environment on any command (e.g. rinit wrapping it).
    pub fn worker_env(&self, c: &mut Command, sub: &str, bucket: &str) {
        let vars = worker_vars(sub, bucket, &self.pubsub_host(), &self.storage_host());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars)
            .env("LEASE_EXTENSION", "10s")
            .env("RUST_LOG", "warn,pubsub_gcs_worker=debug");
    }
}

/// What every test tells the worker: the subscription `sub` it pulls from
/// at `pubsub` (PUBSUB_EMULATOR_HOST), the bucket it writes to at
/// `storage` (STORAGE_EMULATOR_HOST), JSON logs. Each caller adds its own
/// variables.
pub fn worker_vars(
    sub: &str,
    bucket: &str,
    pubsub: &str,
    storage: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("PROJECT_ID", PROJECT.to_string()),
        ("SUBSCRIPTION_ID", sub.to_string()),
        ("BUCKET_NAME", bucket.to_string()),
        ("PUBSUB_EMULATOR_HOST", pubsub.to_string()),
        ("STORAGE_EMULATOR_HOST", storage.to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ]
}

/// Message number `i` of a flow: text, binary and empty-with-attributes
/// payloads, some of them tens of KB so that writes are in flight when a
/// stop or a fault lands; attribute `i` says which it is.
pub fn mixed_message(i: u64) -> TestMessage {
    let m = match i % 5 {
        0 => TestMessage::new(Vec::new()).attr("kind", "empty"),
        1 | 2 => {
            let mut b = pseudo_random_bytes(i, 1 + (i as usize * 7919) % 65536);
            b[0] = 0xff;
            TestMessage::new(b).attr("kind", "binary")
        }
        _ => TestMessage::new(format!("message {i} ✓")).attr("kind", "text"),
    };
    m.attr("i", &i.to_string())
}

/// Deterministic pseudo-random bytes (xorshift), for binary payloads.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A count field of the worker's JSON summary line.
pub fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("summary has no {k}: {v}"))
}

/// A summary's figures on one line (`received=... drain_ms=...`), for a
/// test's progress output.
pub fn figures(s: &Value) -> String {
    [
        "received",
        "stored",
        "nacked",
        "nacked_unstarted",
        "in_flight_at_stop",
        "drain_ms",
    ]
    .map(|k| format!("{k}={}", n(s, k)))
    .join(" ")
}

/// The summary's own invariants: nothing acked that was not stored, and
/// every received message either acked or nacked (nothing abandoned).
pub fn assert_summary_consistent(s: &Value) {
    // Cloud Logging's structured-log fields.
    assert_eq!(s["severity"], "INFO", "{s}");
    assert_eq!(s["message"], "summary", "{s}");
    assert_eq!(n(s, "stored"), n(s, "acked"), "{s}");
    assert_eq!(
        n(s, "stored"),
        n(s, "created") + n(s, "already_present"),
        "{s}"
    );
    assert_eq!(n(s, "received"), n(s, "acked") + n(s, "nacked"), "{s}");
    assert_eq!(
        n(s, "nacked"),
        n(s, "nacked_write_failed") + n(s, "nacked_unstorable") + n(s, "nacked_unstarted"),
        "{s}"
    );
    assert_eq!(n(s, "abandoned"), 0, "{s}");
}

/// The worker's JSON summary line (`LOG_FORMAT=json`) in a log: the last
/// one, since a log may hold earlier runs'.
pub fn summary(logs: &str) -> Value {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("\"message\":\"summary\""))
        .unwrap_or_else(|| {
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            panic!("no worker summary line; the log ends:\n{}", tail.join("\n"))
        });
    serde_json::from_str(&line[line.find('{').expect("JSON")..]).expect("summary is JSON")
}

impl Running {
    /// The worker's summary line in this process's stderr.
    pub fn summary(&self) -> Value {
        summary(&self.lines().join("\n"))
    }

    /// SIGTERM, then what a clean stop shows: exit 0 within 30 s and a
    /// consistent summary line, which is returned.
    pub fn stop_clean(mut self) -> Value {
        self.signal(libc::SIGTERM);
        let st = self.wait(Duration::from_secs(30));
        assert_eq!(st.code(), Some(0), "exit status after SIGTERM");
        let s = self.summary();
        assert_summary_consistent(&s);
        s
    }
}
