//! Docker helpers for the end-to-end tests (rinit's tests/docker.rs and
//! tests/dist.rs, the reference worker's docker and production tests).
//!
//! The machines these tests run on reach no container registry, so every
//! image is built here from files on the machine: `FROM scratch` plus static
//! binaries, or `FROM` a local base made by [`static_base`]. Images are tagged
//! by a hash of everything that goes into them, and built under a file lock,
//! so the first test process of a run builds each image and the others (and
//! later runs with the same binaries) find it.
//!
//! Every docker command runs with a timeout, and every container is removed
//! by its guard's `Drop`, even when the test fails.
//!
//! Without a Docker engine the tests print one line and pass; in CI
//! ([`crate::ci`]) a missing engine fails them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::{ci, root_dir, run, try_run, wait_for, Out, TempDir};

/// Time allowed for one ordinary docker command (run, stop, inspect, exec).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for one image build.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// `docker`, talking to the engine at `host` (`docker -H`; a private daemon,
/// tests/docker_init.rs), or to the default engine when `None`.
pub fn docker_command(host: Option<&str>) -> Command {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]);
    }
    cmd
}

/// `docker ARGS...` with the default timeout.
pub fn docker<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Out {
    docker_on(None, args)
}

/// `docker ARGS...`, which must succeed; returns its stdout.
pub fn docker_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    docker_on_ok(None, args)
}

/// `docker -H HOST ARGS...` (see [`docker_command`]) with the default timeout.
pub fn docker_on<S: AsRef<std::ffi::OsStr>>(host: Option<&str>, args: &[S]) -> Out {
    run(docker_command(host).args(args), CMD_TIMEOUT)
}

/// `docker -H HOST ARGS...`, which must succeed; returns its stdout.
pub fn docker_on_ok<S: AsRef<std::ffi::OsStr>>(host: Option<&str>, args: &[S]) -> String {
    let out = docker_on(host, args);
    assert!(
        out.ok(),
        "docker {}{:?} failed ({:?}):\n{}{}",
        host.map(|h| format!("-H {h} ")).unwrap_or_default(),
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// True when a Docker engine answers. Without one: under `CI=true` the test
/// fails; elsewhere it prints one skip line and the caller returns (passes).
pub fn engine(test: &str) -> bool {
    let answer = try_run(
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
        Duration::from_secs(30),
    );
    let why = match answer {
        Ok(out) if out.ok() => return true,
        Ok(out) => out.stderr.lines().next().unwrap_or("").trim().to_string(),
        Err(e) => e,
    };
    if ci() {
        panic!(
            "{test}: CI=true and no Docker engine answers ({why}); the Docker tests must run in CI"
        );
    }
    eprintln!(
        "SKIP {test}: no Docker engine answers ({why}); \
         these tests run where one does (and fail under CI=true)"
    );
    false
}

/// Panics unless `path` is a static ELF executable (no PT_INTERP): a scratch
/// image has no loader, so a dynamic binary would fail with a confusing
/// "no such file or directory" inside the container.
pub fn assert_static(path: &Path, hint: &str) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}. {hint}", path.display()));
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF" && bytes[4] == 2,
        "{} is not a 64-bit ELF file. {hint}",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert!(
            p_type != 3,
            "{} is dynamically linked (it has a PT_INTERP); images here are FROM scratch. {hint}",
            path.display()
        );
    }
}

/// The newest modification time of `path` (a file, or every file under a
/// directory).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The probe (tests/support/probe.rs, the tests' stand-in worker) of the
/// same profile as `rinit`, built here when this run did not build the
/// example or built it from older sources.
pub fn probe_beside(rinit: &Path) -> PathBuf {
    sibling_binary(
        rinit,
        "examples/probe",
        ["--example", "probe"],
        &[root_dir().join("tests/support/probe.rs")],
    )
}

/// A binary of the root package (`rinit-init`) built with the same profile
/// and target dir as `beside` (a binary of the running test's build): at
/// `<dir of beside>/<rel>`, built here with cargo when it is missing or older
/// than any of `sources`. `target` is `--bin NAME` or `--example NAME`.
///
/// Needed because a run that selects only one test target (`--test docker`,
/// or `-p pubsub-gcs-worker`) does not build the other binaries.
pub fn sibling_binary(beside: &Path, rel: &str, target: [&str; 2], sources: &[PathBuf]) -> PathBuf {
    let profile_dir = beside.parent().expect("binary's directory");
    let path = profile_dir.join(rel);
    let fresh = || {
        newest(&path)
            .is_some_and(|built| !sources.iter().any(|s| newest(s).is_some_and(|t| t > built)))
    };
    if fresh() {
        return path;
    }
    locked(|| {
        if fresh() {
            return;
        }
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(name) => name,
        };
        let triple_dir = profile_dir.parent().expect("target triple dir");
        let target_dir = if triple_dir.file_name().and_then(|n| n.to_str())
            == Some("x86_64-unknown-linux-gnu")
        {
            triple_dir.parent().expect("target dir")
        } else {
            triple_dir
        };
        let manifest = root_dir().join("Cargo.toml");
        let t0 = Instant::now();
        let out = run(
            Command::new(env!("CARGO"))
                .args(["build", "-p", "rinit-init", "--profile", profile])
                .args(target)
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(target_dir),
            Duration::from_secs(900),
        );
        assert!(
            out.ok(),
            "cargo build {} --profile {profile} failed:\n{}",
            target.join(" "),
            out.stderr
        );
        eprintln!(
            "built {} ({profile}) in {} ms",
            target.join(" "),
            t0.elapsed().as_millis()
        );
    });
    path
}

/// Runs `f` holding the lock that serialises image builds (and other
/// one-per-run preparation) across the test processes of a run.
pub fn locked<T>(f: impl FnOnce() -> T) -> T {
    let _lock = BuildLock::take();
    f()
}

/// Holds an exclusive `flock` on a lock file shared by every test process.
struct BuildLock {
    _held: std::fs::File,
}

impl BuildLock {
    fn take() -> BuildLock {
        BuildLock {
            _held: crate::fs::lock_file("rinit-docker-tests.lock", BUILD_TIMEOUT),
        }
    }
}

/// Hashes a directory tree (names, modes and contents) into `h`.
fn hash_tree(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        e.file_name().hash(h);
        meta.permissions().mode().hash(h);
        if meta.is_dir() {
            hash_tree(&path, h);
        } else {
            std::fs::read(&path).expect("read").hash(h);
        }
    }
}

/// The word after ` - git.` in `rinit --version` of rinit `version` (the
/// init crate's `CARGO_PKG_VERSION`): what dockerd shows as `docker info`'s
/// "init version", which must hold no dot to be read at all.
pub fn init_version(version: &str) -> String {
    format!("rinit-{}", version.replace('.', "_"))
}

/// What `rinit --version` of rinit `version` prints: tini's format, which
/// dockerd reads (`tini version 0.19.0 - git.de40ad0`).
pub fn version_line(version: &str) -> String {
    format!("rinit {version} - git.{}", init_version(version))
}

/// Waits (30 s at most) until the probe wrote its pid to `file` in `data`
/// (its /data in the container): its signals are blocked and collected
/// from then on (and rinit's were before it started).
pub fn wait_ready(data: &TempDir, file: &str) {
    wait_for(
        &format!("/data/{file} from the probe"),
        Duration::from_secs(30),
        || (!data.read(file).trim().is_empty()).then_some(()),
    );
}

/// Builds `dockerfile` (a path, so the real Dockerfile.example can be used)
/// with `context` and `build_args`, tagged `repo:<hash of all inputs>`, unless
/// an image with that tag exists. Returns the tag.
pub fn build(repo: &str, dockerfile: &Path, context: &Path, build_args: &[(&str, &str)]) -> String {
    let mut h = DefaultHasher::new();
    std::fs::read(dockerfile)
        .unwrap_or_else(|e| panic!("{}: {e}", dockerfile.display()))
        .hash(&mut h);
    hash_tree(context, &mut h);
    build_args.hash(&mut h);
    let tag = format!("{repo}:{:016x}", h.finish());
    let _lock = BuildLock::take();
    if docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).ok() {
        return tag;
    }
    let mut cmd = Command::new("docker");
    cmd.args([
        "build",
        "--quiet",
        "--label",
        "rinit-test=1",
        "-t",
        &tag,
        "-f",
    ])
    .arg(dockerfile);
    for (k, v) in build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    cmd.arg(context);
    let t0 = Instant::now();
    let out = run(&mut cmd, BUILD_TIMEOUT);
    assert!(
        out.ok(),
        "docker build of {tag} from {} failed:\n{}{}",
        dockerfile.display(),
        out.stdout,
        out.stderr
    );
    eprintln!("built {tag} in {} ms", t0.elapsed().as_millis());
    tag
}

/// Builds an image from Dockerfile text and a prepared context directory.
pub fn build_text(repo: &str, dockerfile: &str, context: &TempDir) -> String {
    context.write("Dockerfile", dockerfile);
    build(repo, &context.join("Dockerfile"), context.path(), &[])
}

/// A local stand-in for `gcr.io/distroless/static-debian12:nonroot`, which
/// cannot be pulled here: CA certificates (the host's), `root` and `nonroot`
/// (65532) users, a world-writable /tmp, nothing else. Built `FROM scratch`.
pub fn static_base() -> String {
    let ctx = TempDir::new("base");
    ctx.write(
        "rootfs/etc/passwd",
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    ctx.write(
        "rootfs/etc/group",
        "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
    );
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.exists() {
        ctx.copy_in(certs, "rootfs/etc/ssl/certs/ca-certificates.crt");
    }
    for dir in ["rootfs/tmp", "rootfs/home/nonroot"] {
        std::fs::create_dir_all(ctx.join(dir)).expect("mkdir");
    }
    std::fs::set_permissions(
        ctx.join("rootfs/tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .expect("chmod /tmp");
    build_text(
        "rinit-test/static-base",
        "FROM scratch\n\
         COPY rootfs/ /\n\
         COPY --chown=65532:65532 rootfs/home/nonroot /home/nonroot\n",
        &ctx,
    )
}

/// What `docker inspect` says about a container's state.
#[derive(Debug)]
pub struct State {
    pub running: bool,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
}

static CONTAINERS: AtomicUsize = AtomicUsize::new(0);

/// Unix seconds a second ago: a `docker events --since` that cannot miss
/// what happens next.
pub(crate) fn events_since() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(1))
}

/// Now, for `docker events --until` (to the millisecond, so the call returns).
fn events_until() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    format!("{now:.3}")
}

/// The signals an engine sent container `id` since `since`, in order, from
/// its `kill` events: `docker stop` shows "15", then "9" only if its timeout
/// ran out and it had to SIGKILL; `docker kill -s` shows its own.
pub fn signals_sent_to(host: Option<&str>, id: &str, since: u64) -> Vec<String> {
    let out = docker_on_ok(
        host,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &events_until(),
            "--filter",
            &format!("container={id}"),
            "--filter",
            "event=kill",
            "--format",
            "{{.Actor.Attributes.signal}}",
        ],
    );
    out.split_whitespace().map(str::to_string).collect()
}

/// A running (or exited) container, removed with `docker rm -f` on drop.
pub struct Container {
    pub name: String,
    /// Unix seconds just before `docker run`, for `docker events --since`.
    created: u64,
    /// The engine it runs on (`docker -H`); `None`: the default one.
    host: Option<String>,
}

impl Container {
    /// `docker run -d --network host --name ... ARGS`: ARGS holds further
    /// run options, the image and the command.
    pub fn run<S: AsRef<str>>(label: &str, args: &[S]) -> Container {
        Container::run_on(None, label, args)
    }

    /// As [`Container::run`], on the engine at `host` (`docker -H`).
    pub fn run_on<S: AsRef<str>>(host: Option<&str>, label: &str, args: &[S]) -> Container {
        let name = format!(
            "rinit-test-{label}-{}-{}",
            std::process::id(),
            CONTAINERS.fetch_add(1, Ordering::Relaxed)
        );
        let c = Container {
            name,
            created: events_since(),
            host: host.map(str::to_string),
        };
        let mut full: Vec<String> = [
            "run",
            "-d",
            "--name",
            &c.name,
            "--network",
            "host",
            "--label",
            "rinit-test=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        docker_on_ok(host, &full);
        c
    }

    /// `docker` talking to this container's engine.
    fn docker(&self) -> Command {
        docker_command(self.host.as_deref())
    }

    /// `docker ARGS...` on this container's engine, which must succeed.
    fn docker_ok(&self, args: &[&str]) -> String {
        docker_on_ok(self.host.as_deref(), args)
    }

    /// `docker stop -t SECS`; returns how long the call took.
    pub fn stop(&self, secs: u32) -> Duration {
        let t0 = Instant::now();
        let out = run(
            self.docker()
                .args(["stop", "-t", &secs.to_string(), &self.name]),
            Duration::from_secs(u64::from(secs) + 60),
        );
        let took = t0.elapsed();
        assert!(out.ok(), "docker stop {}: {}", self.name, out.stderr);
        took
    }

    /// `docker kill -s SIG`.
    pub fn kill(&self, sig: &str) {
        self.docker_ok(&["kill", "-s", sig, &self.name]);
    }

    /// Waits for the container to exit; returns its exit code.
    pub fn wait(&self, timeout: Duration) -> i32 {
        let out = run(self.docker().args(["wait", &self.name]), timeout);
        assert!(out.ok(), "docker wait {}: {}", self.name, out.stderr);
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("docker wait printed {:?}", out.stdout))
    }

    pub fn state(&self) -> State {
        let text = self.docker_ok(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}} {{.State.StartedAt}} {{.State.FinishedAt}}",
            &self.name,
        ]);
        let f: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(f.len(), 5, "docker inspect printed {text:?}");
        State {
            running: f[0] == "true",
            exit_code: f[1].parse().expect("exit code"),
            oom_killed: f[2] == "true",
            started_at: f[3].to_string(),
            finished_at: f[4].to_string(),
        }
    }

    /// The signals the engine sent this container so far (see
    /// [`signals_sent_to`]).
    pub fn signals_sent(&self) -> Vec<String> {
        signals_sent_to(self.host.as_deref(), &self.name, self.created)
    }

    /// Everything the container wrote, stdout then stderr.
    pub fn logs(&self) -> String {
        let out = docker_on(self.host.as_deref(), &["logs", &self.name]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// `docker exec NAME ARGS...` (its outcome is the caller's to judge).
    pub fn exec(&self, args: &[&str]) -> Out {
        let mut full = vec!["exec", self.name.as_str()];
        full.extend_from_slice(args);
        docker_on(self.host.as_deref(), &full)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = try_run(
            self.docker().args(["rm", "-f", "-v", &self.name]),
            CMD_TIMEOUT,
        );
    }
}

/// A `docker-compose` project in the foreground of a test, taken down on drop.
pub struct Compose {
    pub project: String,
    pub file: PathBuf,
    /// `DOCKER_HOST` for Compose (a private daemon); `None`: the default.
    host: Option<String>,
    /// Unix seconds before `up`, for `docker events --since`.
    since: u64,
}

impl Compose {
    /// A project named `rinit-test-LABEL-PID` from `file`, on the engine at
    /// `host`. Nothing runs until [`Compose::run`] is called with `up`.
    pub fn new(label: &str, file: PathBuf, host: Option<&str>) -> Compose {
        Compose {
            project: format!("rinit-test-{label}-{}", std::process::id()),
            file,
            host: host.map(str::to_string),
            since: events_since(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        if let Some(host) = &self.host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd.arg("-p").arg(&self.project).arg("-f").arg(&self.file);
        cmd
    }

    /// `docker-compose -p PROJECT -f FILE ARGS...`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Out {
        run(self.command().args(args), timeout)
    }

    /// The id of `service`'s container (`docker-compose ps -q`).
    pub fn container_id(&self, service: &str) -> String {
        let out = self.run(&["ps", "-q", service], CMD_TIMEOUT);
        let id = out.stdout.trim().to_string();
        assert!(
            !id.is_empty(),
            "docker-compose ps found no {service} container: {}",
            out.stderr
        );
        id
    }

    /// The signals the engine sent container `id` since this project was
    /// made (see [`signals_sent_to`]).
    pub fn signals_sent(&self, id: &str) -> Vec<String> {
        signals_sent_to(self.host.as_deref(), id, self.since)
    }
}

impl Drop for Compose {
    /// Best effort and never a panic: this may run while a failed test unwinds.
    fn drop(&mut self) {
        let _ = try_run(
            self.command().args(["down", "-v", "-t", "1"]),
            Duration::from_secs(60),
        );
    }
}
