//! Test harness shared by the worker's end-to-end tests: the emulators and
//! the worker. What rinit's tests need too (temp dirs, polling, Docker, CI
//! detection) is in the workspace's test-support crate.
//!
//! It starts the real emulators on free loopback ports — the official Pub/Sub
//! emulator (Debian package, with the grpc shim when the jar needs it) and a
//! GCS emulator from the project-local venv — and talks to both over plain
//! REST, so test assertions do not depend on the client code under test.
//! Every process started here is killed by PID when its owner is dropped,
//! also when a test panics.
//!
//! The API is synchronous (an internal current-thread runtime drives
//! reqwest), so tests are plain `#[test]` functions.
#![allow(dead_code, unused_imports)] // Each test binary uses a different part of it.

pub mod containers;

use rinit_test_support::ci;
use rinit_test_support::docker::{assert_static, sibling_binary};
use rinit_test_support::root_dir;
pub use rinit_test_support::wait::eventually;

use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The worker binary built by cargo for this test run.
pub fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pubsub-gcs-worker"))
}

/// rinit, built by the same workspace command into the same directory.
pub fn rinit_bin() -> PathBuf {
    worker_bin().with_file_name("rinit")
}

/// This run's worker and rinit for a Docker image: both checked static (a
/// scratch-like image has no loader), rinit built beside the worker if this
/// run did not build it.
pub fn static_binaries() -> (PathBuf, PathBuf) {
    let worker = worker_bin();
    assert_static(
        &worker,
        "the worker must be built static (.cargo/config.toml)",
    );
    let rinit = sibling_binary(
        &worker,
        "rinit",
        ["--bin", "rinit"],
        &[root_dir().join("src"), root_dir().join("Cargo.toml")],
    );
    assert_static(&rinit, "rinit must be built static (.cargo/config.toml)");
    (worker, rinit)
}

/// Which GCS emulator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcsKind {
    /// fake-gcs-server: honours `ifGenerationMatch` (412), ignores the
    /// content type of multipart uploads. The default.
    FakeGcs,
    /// gcp-storage-emulator: keeps the content type, ignores preconditions.
    GcpStorageEmulator,
}

/// Paths of the installed emulators.
struct Installed {
    pubsub_jar: PathBuf,
    fake_gcs: PathBuf,
    gcp_storage_emulator: PathBuf,
}

/// Runs `scripts/emulators.sh install` (idempotent, locked) and finds the
/// binaries. `Err` when the Pub/Sub emulator is missing.
fn installed() -> Result<Installed, String> {
    let script = repo_root().join("scripts/emulators.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("install")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        panic!(
            "{} install failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg("paths")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let pubsub_jar = get("pubsub_jar").ok_or_else(|| {
        "the Pub/Sub emulator is not installed (Debian package google-cloud-cli-pubsub-emulator)"
            .to_string()
    })?;
    if Command::new("java").arg("-version").output().is_err() {
        return Err("java is not installed (needed by the Pub/Sub emulator)".into());
    }
    Ok(Installed {
        pubsub_jar,
        fake_gcs: get("fake_gcs").expect("fake-gcs-server not found after install"),
        gcp_storage_emulator: get("gcp_storage_emulator")
            .expect("gcp-storage-emulator not found after install"),
    })
}

/// A free TCP port on 127.0.0.1 (bound and released; the emulators bind it
/// right after, so a collision is unlikely and shows as a start failure).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
    let f = std::fs::File::create(log).expect("create emulator log");
    let f2 = f.try_clone().expect("clone log handle");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { name, child }
}

/// Compiles the grpc InternalStatus shim if the emulator jar needs it;
/// returns the directory to put first on the classpath.
fn shim_dir(jar: &Path, work: &Path) -> Option<PathBuf> {
    let javap = Command::new("javap")
        .arg("-cp")
        .arg(jar)
        .arg("io.grpc.InternalStatus")
        .output()
        .expect("javap (JDK) is needed to inspect the Pub/Sub emulator jar");
    let sig = "asRuntimeException(io.grpc.Status, io.grpc.Metadata, boolean)";
    if String::from_utf8_lossy(&javap.stdout).contains(sig) {
        return None;
    }
    let out = work.join("shim");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/emulator-shim/io/grpc/InternalStatus.java");
    let status = Command::new("javac")
        .args(["--release", "8", "-nowarn", "-cp"])
        .arg(jar)
        .arg("-d")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("javac (JDK) is needed to build the Pub/Sub emulator shim");
    assert!(status.success(), "javac failed for {}", src.display());
    Some(out)
}

/// A test environment: both emulators, a REST client, a scratch directory.
pub struct TestEnv {
    pub work: PathBuf,
    pub pubsub_port: u16,
    pub gcs_port: u16,
    pub gcs_kind: GcsKind,
    pubsub: Option<Proc>,
    gcs: Option<Proc>,
    installed: Installed,
    /// Buckets to re-create when the GCS emulator restarts.
    buckets: Vec<String>,
    gcs_starts: u32,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// A message to publish.
#[derive(Clone, Debug, Default)]
pub struct TestMessage {
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

impl TestMessage {
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            attributes: HashMap::new(),
        }
    }
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.attributes.insert(k.into(), v.into());
        self
    }
}

/// A message obtained with a synchronous pull.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub ack_id: String,
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

/// An object as listed by the GCS emulator.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

pub const PROJECT: &str = "test-project";

impl TestEnv {
    /// Starts both emulators on 127.0.0.1. Returns `None` (after printing
    /// one skip line) when the Pub/Sub emulator is not installed, and panics
    /// instead under `CI=true`, so CI can never pass by skipping.
    pub fn start(kind: GcsKind) -> Option<TestEnv> {
        let installed = match installed() {
            Ok(i) => i,
            Err(why) => {
                if ci() {
                    panic!("CI=true and the emulator tests cannot run: {why}");
                }
                eprintln!("SKIPPED (not run): {why}");
                return None;
            }
        };
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let work = std::env::temp_dir().join(format!(
            "pubsub-gcs-worker-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&work).expect("create test work dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut env = TestEnv {
            work,
            pubsub_port: free_port(),
            gcs_port: free_port(),
            gcs_kind: kind,
            pubsub: None,
            gcs: None,
            installed,
            buckets: Vec::new(),
            gcs_starts: 0,
            rt,
            http,
        };
        env.start_pubsub();
        env.start_gcs();
        env.wait_ready();
        Some(env)
    }

    /// [`TestEnv::start`] with fake-gcs-server, then a topic, a
    /// subscription to it (10 s ack deadline) and a bucket.
    pub fn start_with(topic: &str, sub: &str, bucket: &str) -> Option<TestEnv> {
        let mut env = TestEnv::start(GcsKind::FakeGcs)?;
        env.create_topic_and_subscription(topic, sub, 10);
        env.create_bucket(bucket);
        Some(env)
    }

    fn start_pubsub(&mut self) {
        let jar = self.installed.pubsub_jar.clone();
        let cp = match shim_dir(&jar, &self.work) {
            Some(shim) => format!("{}:{}", shim.display(), jar.display()),
            None => jar.display().to_string(),
        };
        let mut cmd = Command::new("java");
        cmd.args([
            // A small, fast-starting JVM: tests run several at once on 2 cores.
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            &cp,
            "com.google.cloud.pubsub.testing.v1.Main",
            "--host=127.0.0.1",
        ])
        .arg(format!("--port={}", self.pubsub_port));
        self.pubsub = Some(spawn_logged(
            "pubsub-emulator",
            &mut cmd,
            &self.work.join("pubsub.log"),
        ));
    }

    fn start_gcs(&mut self) {
        self.gcs_starts += 1;
        let log = self.work.join(format!("gcs-{}.log", self.gcs_starts));
        let mut cmd = match self.gcs_kind {
            GcsKind::FakeGcs => {
                let mut c = Command::new(&self.installed.fake_gcs);
                c.args([
                    "-host",
                    "127.0.0.1",
                    "-scheme",
                    "http",
                    "-backend",
                    "memory",
                ])
                .args(["-port", &self.gcs_port.to_string()])
                .args(["-log-level", "warn"]);
                c
            }
            GcsKind::GcpStorageEmulator => {
                let mut c = Command::new(&self.installed.gcp_storage_emulator);
                c.args(["start", "--host", "127.0.0.1", "--in-memory", "-q"])
                    .args(["--port", &self.gcs_port.to_string()]);
                c
            }
        };
        self.gcs = Some(spawn_logged("gcs-emulator", &mut cmd, &log));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let ps = format!("{}/v1/projects/{PROJECT}/topics", self.pubsub_url());
        let gcs = format!("{}/storage/v1/b?project={PROJECT}", self.gcs_url());
        let mut ps_ok = false;
        let mut gcs_ok = false;
        while Instant::now() < deadline {
            for (name, p) in [("pubsub", &mut self.pubsub), ("gcs", &mut self.gcs)] {
                if let Some(p) = p {
                    if let Ok(Some(st)) = p.child.try_wait() {
                        panic!(
                            "{name} emulator exited early ({st}); logs in {}",
                            self.work.display()
                        );
                    }
                }
            }
            ps_ok = ps_ok || self.get_ok(&ps);
            gcs_ok = gcs_ok || self.get_ok(&gcs);
            if ps_ok && gcs_ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "emulators not ready after 90s (pubsub={ps_ok}, gcs={gcs_ok}); logs in {}",
            self.work.display()
        );
    }

    fn get_ok(&self, url: &str) -> bool {
        self.rt.block_on(async {
            self.http
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    }

    pub fn pubsub_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.pubsub_port)
    }
    pub fn gcs_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gcs_port)
    }
    /// Value for PUBSUB_EMULATOR_HOST.
    pub fn pubsub_host(&self) -> String {
        format!("127.0.0.1:{}", self.pubsub_port)
    }
    /// Value for STORAGE_EMULATOR_HOST.
    pub fn storage_host(&self) -> String {
        self.gcs_url()
    }

    /// Stops the GCS emulator (SIGKILL): a storage outage.
    pub fn stop_gcs(&mut self) {
        self.gcs = None;
        // Wait until the port refuses connections.
        let url = format!("{}/storage/v1/b", self.gcs_url());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get_ok(&url) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts the GCS emulator on the same port and re-creates the
    /// buckets. The in-memory backend starts empty: objects written before
    /// the outage are gone.
    pub fn restart_gcs(&mut self) {
        self.start_gcs();
        let gcs = format!("{}/storage/v1/b?project={PROJECT}", self.gcs_url());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.get_ok(&gcs) {
            assert!(Instant::now() < deadline, "GCS emulator did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
        for b in self.buckets.clone() {
            self.create_bucket_inner(&b);
        }
    }

    /// Kills the Pub/Sub emulator (SIGKILL). It keeps everything in memory:
    /// topics, subscriptions and undelivered messages are gone with it.
    pub fn kill_pubsub(&mut self) {
        self.pubsub = None;
    }

    /// Starts the Pub/Sub emulator again on the same port and waits until it
    /// answers; it starts empty. Its message IDs start again at 1, which the
    /// real service never does: a caller that publishes again must make
    /// sure new IDs do not collide with the objects of earlier ones.
    pub fn restart_pubsub(&mut self) {
        self.start_pubsub();
        self.wait_ready();
    }

    fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self.http.request(method.clone(), url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, v)
        })
    }

    fn call_ok(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), url, body);
        assert!(
            (200..300).contains(&status),
            "{method} {url} -> {status}: {v}"
        );
        v
    }

    // ---- Pub/Sub ----------------------------------------------------------

    /// Creates a topic and a subscription to it (names must be >= 3 chars),
    /// with the given ack deadline (10..600 s).
    pub fn create_topic_and_subscription(&self, topic: &str, sub: &str, ack_deadline_s: u32) {
        let base = self.pubsub_url();
        self.call_ok(
            reqwest::Method::PUT,
            &format!("{base}/v1/projects/{PROJECT}/topics/{topic}"),
            Some(json!({})),
        );
        self.call_ok(
            reqwest::Method::PUT,
            &format!("{base}/v1/projects/{PROJECT}/subscriptions/{sub}"),
            Some(json!({
                "topic": format!("projects/{PROJECT}/topics/{topic}"),
                "ackDeadlineSeconds": ack_deadline_s,
            })),
        );
    }

    /// Publishes messages (batched under the 10 MB request limit); returns
    /// their IDs in order.
    pub fn publish(&self, topic: &str, messages: &[TestMessage]) -> Vec<String> {
        let url = format!(
            "{}/v1/projects/{PROJECT}/topics/{topic}:publish",
            self.pubsub_url()
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ids = Vec::new();
        let mut batch: Vec<Value> = Vec::new();
        let mut batch_bytes = 0usize;
        let flush = |batch: &mut Vec<Value>, ids: &mut Vec<String>| {
            if batch.is_empty() {
                return;
            }
            let v = self.call_ok(
                reqwest::Method::POST,
                &url,
                Some(json!({ "messages": std::mem::take(batch) })),
            );
            let got = v["messageIds"].as_array().expect("messageIds");
            ids.extend(got.iter().filter_map(|i| i.as_str().map(String::from)));
        };
        for m in messages {
            let size = m.data.len() * 4 / 3 + 1024;
            if batch_bytes + size > 6_000_000 || batch.len() >= 500 {
                flush(&mut batch, &mut ids);
                batch_bytes = 0;
            }
            let mut j = json!({ "data": b64.encode(&m.data) });
            if !m.attributes.is_empty() {
                j["attributes"] = json!(m.attributes);
            }
            batch.push(j);
            batch_bytes += size;
        }
        flush(&mut batch, &mut ids);
        assert_eq!(ids.len(), messages.len(), "publish returned too few IDs");
        ids
    }

    /// A synchronous pull of up to `max` messages (`returnImmediately`).
    /// The pulled messages are leased: ack or nack them.
    pub fn pull(&self, sub: &str, max: u32) -> Vec<Pulled> {
        let url = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{sub}:pull",
            self.pubsub_url()
        );
        let v = self.call_ok(
            reqwest::Method::POST,
            &url,
            Some(json!({ "returnImmediately": true, "maxMessages": max })),
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        v["receivedMessages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|rm| {
                        let m = &rm["message"];
                        Pulled {
                            ack_id: rm["ackId"].as_str().unwrap_or_default().to_string(),
                            message_id: m["messageId"].as_str().unwrap_or_default().to_string(),
                            data: b64
                                .decode(m["data"].as_str().unwrap_or_default())
                                .expect("base64 data"),
                            attributes: serde_json::from_value(m["attributes"].clone())
                                .unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn ack(&self, sub: &str, ack_ids: &[String]) {
        if ack_ids.is_empty() {
            return;
        }
        let url = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{sub}:acknowledge",
            self.pubsub_url()
        );
        self.call_ok(
            reqwest::Method::POST,
            &url,
            Some(json!({ "ackIds": ack_ids })),
        );
    }

    /// Nacks (ack deadline 0): the messages are redelivered at once.
    pub fn nack(&self, sub: &str, ack_ids: &[String]) {
        if ack_ids.is_empty() {
            return;
        }
        let url = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{sub}:modifyAckDeadline",
            self.pubsub_url()
        );
        self.call_ok(
            reqwest::Method::POST,
            &url,
            Some(json!({ "ackIds": ack_ids, "ackDeadlineSeconds": 0 })),
        );
    }

    /// Message IDs still deliverable on the subscription: pulls until a few
    /// pulls in a row come back empty, then nacks everything it pulled so
    /// the messages stay available.
    pub fn remaining_message_ids(&self, sub: &str) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        let mut acks = Vec::new();
        let mut empty = 0;
        while empty < 3 {
            let got = self.pull(sub, 1000);
            if got.is_empty() {
                empty += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            empty = 0;
            for p in got {
                ids.insert(p.message_id);
                acks.push(p.ack_id);
            }
        }
        self.nack(sub, &acks);
        ids.into_iter().collect()
    }

    // ---- Cloud Storage ----------------------------------------------------

    fn create_bucket_inner(&self, name: &str) {
        self.call_ok(
            reqwest::Method::POST,
            &format!("{}/storage/v1/b?project={PROJECT}", self.gcs_url()),
            Some(json!({ "name": name })),
        );
    }

    pub fn create_bucket(&mut self, name: &str) {
        self.create_bucket_inner(name);
        self.buckets.push(name.to_string());
    }

    /// Lists every object of a bucket (all pages).
    pub fn list_objects(&self, bucket: &str) -> Vec<ObjectInfo> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/storage/v1/b/{bucket}/o?maxResults=1000", self.gcs_url());
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", encode(t)));
            }
            let v = self.call_ok(reqwest::Method::GET, &url, None);
            for o in v["items"].as_array().into_iter().flatten() {
                out.push(ObjectInfo {
                    name: o["name"].as_str().unwrap_or_default().to_string(),
                    size: o["size"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| o["size"].as_u64())
                        .unwrap_or(0),
                    content_type: o["contentType"].as_str().map(String::from),
                    metadata: serde_json::from_value(o["metadata"].clone()).unwrap_or_default(),
                });
            }
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        out
    }

    /// Reads an object's bytes.
    pub fn read_object(&self, bucket: &str, name: &str) -> Vec<u8> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            self.gcs_url(),
            encode(name)
        );
        self.rt.block_on(async {
            let r = self.http.get(&url).send().await.expect("GET object");
            assert!(r.status().is_success(), "GET {url} -> {}", r.status());
            r.bytes().await.expect("object body").to_vec()
        })
    }

    /// Creates an object directly (plain media upload, no precondition).
    pub fn upload_object(&self, bucket: &str, name: &str, data: &[u8]) {
        let url = format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            self.gcs_url(),
            encode(name)
        );
        self.rt.block_on(async {
            let r = self
                .http
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(data.to_vec())
                .send()
                .await
                .expect("upload");
            assert!(r.status().is_success(), "upload {name} -> {}", r.status());
        });
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.gcs = None;
        self.pubsub = None;
        // Keep the logs of a failed test for inspection.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.work);
        } else {
            eprintln!("emulator logs kept in {}", self.work.display());
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- Worker processes --------------------------------------------------------

/// A running worker (or rinit + worker) whose stderr lines are collected.
/// Killed on drop.
pub struct Running {
    pub proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Spawns `cmd` with stderr piped and collected (and echoed to the test's
    /// stderr with a prefix, so `--no-capture` shows it).
    pub fn spawn(label: &'static str, mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Running {
            proc: Proc { name: label, child },
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a collected line satisfies `pred`.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a PID we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for exit; panics after `timeout`. Also drains stderr.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.proc.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {timeout:?}", self.proc.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The JSON lines (`LOG_FORMAT=json`) whose message is `message`.
    pub fn messages(&self, message: &str) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l[l.find('{')?..]).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The worker's JSON summary line (requires `LOG_FORMAT=json`).
    pub fn summary(&self) -> Value {
        let line = self
            .lines()
            .into_iter()
            .rev()
            .find(|l| l.contains("\"message\":\"summary\""))
            .expect("no summary line in the worker's log");
        let start = line.find('{').expect("JSON summary");
        serde_json::from_str(&line[start..]).expect("summary is JSON")
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
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PROJECT_ID", PROJECT)
            .env("SUBSCRIPTION_ID", sub)
            .env("BUCKET_NAME", bucket)
            .env("PUBSUB_EMULATOR_HOST", self.pubsub_host())
            .env("STORAGE_EMULATOR_HOST", self.storage_host())
            .env("LOG_FORMAT", "json")
            .env("LEASE_EXTENSION", "10s")
            .env("RUST_LOG", "warn,pubsub_gcs_worker=debug");
    }
}

impl TestEnv {
    /// How far `bucket` is from one object per message of `ids`: published
    /// IDs with no object (lost), and objects that are no published ID
    /// (extra). For reports; [`TestEnv::assert_stored_exactly_once`] checks.
    pub fn lost_and_extra(&self, bucket: &str, ids: &[String]) -> (usize, usize) {
        let names: std::collections::BTreeSet<String> = self
            .list_objects(bucket)
            .into_iter()
            .map(|o| o.name)
            .collect();
        let published: std::collections::BTreeSet<&String> = ids.iter().collect();
        let lost = published.iter().filter(|id| !names.contains(**id)).count();
        let extra = names.iter().filter(|n| !published.contains(n)).count();
        (lost, extra)
    }

    /// Every published message (`ids[i]` is `msgs[i]`) stored exactly once:
    /// one object per message ID and no other, with the payload's bytes and
    /// attributes; and nothing left to deliver on `sub`.
    pub fn assert_stored_exactly_once(
        &self,
        bucket: &str,
        sub: &str,
        ids: &[String],
        msgs: &[TestMessage],
    ) {
        let objects = self.list_objects(bucket);
        let names: std::collections::BTreeSet<_> = objects.iter().map(|o| o.name.clone()).collect();
        let want: std::collections::BTreeSet<_> = ids.iter().cloned().collect();
        assert_eq!(want.len(), ids.len(), "message IDs are unique");
        assert_eq!(objects.len(), ids.len(), "exactly one object per message");
        assert_eq!(names, want, "the objects are the published messages");
        let by_name: HashMap<_, _> = objects.iter().map(|o| (o.name.as_str(), o)).collect();
        for (id, m) in ids.iter().zip(msgs) {
            let o = by_name[id.as_str()];
            assert_eq!(o.size, m.data.len() as u64, "size of {id}");
            assert!(self.read_object(bucket, id) == m.data, "bytes of {id}");
            for (k, v) in &m.attributes {
                let key = format!("pubsub-attr-{k}");
                assert_eq!(o.metadata.get(&key), Some(v), "{key} of {id}: {o:?}");
            }
        }
        assert_eq!(
            self.remaining_message_ids(sub),
            Vec::<String>::new(),
            "subscription drained"
        );
    }
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

impl TestEnv {
    /// A steady flow for a publisher thread: `backlog` messages at once,
    /// then `per_tick` every `tick` ([`mixed_message`] numbering), until
    /// `publishing` is cleared. Returns the IDs and the messages, in order.
    pub fn publish_until(
        &self,
        topic: &str,
        backlog: u64,
        per_tick: u64,
        tick: Duration,
        publishing: &std::sync::atomic::AtomicBool,
    ) -> (Vec<String>, Vec<TestMessage>) {
        let (mut ids, mut msgs) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while publishing.load(std::sync::atomic::Ordering::Relaxed) {
            let n = if i == 0 {
                backlog.max(per_tick)
            } else {
                per_tick
            };
            let batch: Vec<_> = (i..i + n).map(mixed_message).collect();
            i += n;
            ids.extend(self.publish(topic, &batch));
            msgs.extend(batch);
            std::thread::sleep(tick);
        }
        (ids, msgs)
    }
}

/// xorshift64*: random stop moments, replayable from a seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the variable `var` when it is set (to replay a run), else
    /// from the clock; prints the seed as `var=SEED`.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("random stop moments: {var}={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
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
