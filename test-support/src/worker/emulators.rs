//! The emulators, started fresh for each test on free loopback ports: the
//! official Pub/Sub emulator (Debian package, with the grpc shim when its
//! jar needs it) and a GCS emulator from the project-local venv
//! (scripts/emulators.sh installs both, and builds the shim). Each is
//! killed by PID when its [`TestEnv`] is dropped, also when a test panics.
//!
//! The API is synchronous (an internal current-thread runtime drives
//! reqwest), so tests are plain `#[test]` functions.

use crate::process::{free_port, Proc};
use crate::{ci, root_dir, run_ok};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
    /// The grpc shim's classes, put before the jar when it needs them.
    shim: Option<PathBuf>,
    fake_gcs: PathBuf,
    gcp_storage_emulator: PathBuf,
}

/// Runs `scripts/emulators.sh install` (idempotent, locked; it builds the
/// Pub/Sub emulator's grpc shim once, if its jar needs one) and finds the
/// binaries. `Err` when the Pub/Sub emulator or java is missing.
fn installed() -> Result<Installed, String> {
    let script = root_dir().join("scripts/emulators.sh");
    // A first install pip-installs the GCS emulators.
    run_ok(
        Command::new("bash").arg(&script).arg("install"),
        Duration::from_secs(600),
    );
    let text = run_ok(
        Command::new("bash").arg(&script).arg("paths"),
        Duration::from_secs(60),
    )
    .stdout;
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
    if get("java").is_none() {
        return Err("java is not installed (needed by the Pub/Sub emulator)".into());
    }
    Ok(Installed {
        pubsub_jar,
        shim: get("shim"),
        fake_gcs: get("fake_gcs").expect("fake-gcs-server not found after install"),
        gcp_storage_emulator: get("gcp_storage_emulator")
            .expect("gcp-storage-emulator not found after install"),
    })
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
    pub(super) buckets: Vec<String>,
    gcs_starts: u32,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) http: reqwest::Client,
}

/// The project every test resource lives in.
pub const PROJECT: &str = "test-project";

/// How long a starting emulator may take to answer (a JVM on a busy
/// machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

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
        let jar = self.installed.pubsub_jar.display();
        let cp = match &self.installed.shim {
            Some(shim) => format!("{}:{jar}", shim.display()),
            None => jar.to_string(),
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
        self.pubsub = Some(Proc::spawn_logged(
            "pubsub-emulator",
            &mut cmd,
            &self.work.join("pubsub.log"),
        ));
    }

    fn start_gcs(&mut self) {
        self.gcs_starts += 1;
        let log = self.gcs_log();
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
        self.gcs = Some(Proc::spawn_logged("gcs-emulator", &mut cmd, &log));
    }

    /// The GCS emulator's log of its latest start.
    fn gcs_log(&self) -> PathBuf {
        self.work.join(format!("gcs-{}.log", self.gcs_starts))
    }

    /// Waits until both emulators answer (they start side by side).
    fn wait_ready(&mut self) {
        self.wait_pubsub();
        self.wait_gcs(READY_TIMEOUT);
    }

    /// Waits until the Pub/Sub emulator answers; panics at once if it
    /// exits, with its log.
    fn wait_pubsub(&mut self) {
        let url = format!("{}/v1/projects/{PROJECT}/topics", self.pubsub_url());
        let log = self.work.join("pubsub.log");
        let mut p = self.pubsub.take().expect("Pub/Sub emulator started");
        p.wait_ready(READY_TIMEOUT, &log, || self.get_ok(&url));
        self.pubsub = Some(p);
    }

    /// Waits until the GCS emulator answers; panics at once if it exits,
    /// with its log.
    fn wait_gcs(&mut self, timeout: Duration) {
        let url = format!("{}/storage/v1/b?project={PROJECT}", self.gcs_url());
        let log = self.gcs_log();
        let mut p = self.gcs.take().expect("GCS emulator started");
        p.wait_ready(timeout, &log, || self.get_ok(&url));
        self.gcs = Some(p);
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
        // Killed and reaped: its listening socket closed with it.
        self.gcs = None;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.gcs_port)).is_err(),
            "the GCS emulator's port still accepts connections after it was killed"
        );
    }

    /// Restarts the GCS emulator on the same port and re-creates the
    /// buckets. The in-memory backend starts empty: objects written before
    /// the outage are gone.
    pub fn restart_gcs(&mut self) {
        self.start_gcs();
        self.wait_gcs(Duration::from_secs(60));
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
        self.wait_pubsub();
    }

    pub(super) fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
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

    pub(super) fn call_ok(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), url, body);
        assert!(
            (200..300).contains(&status),
            "{method} {url} -> {status}: {v}"
        );
        v
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
