//! rinit as the Docker daemon's own init: `docker run --init` and Compose's
//! `init: true`, with `"init-path"` in daemon.json naming rinit (issue 18,
//! part 4), so an image needs no change to run under rinit.
//!
//! What dockerd 20.10 does with its init (moby `daemon/oci_linux.go` and
//! `daemon/info_unix.go`):
//! - a container started with `--init` (Compose `init: true`, or every
//!   container with the daemon's `"init": true`) in its own PID namespace
//!   gets the init-path binary bind-mounted read-only at `/sbin/docker-init`
//!   and runs `/sbin/docker-init -- <entrypoint> <cmd>`. Nothing else is
//!   passed, so the container's environment (`-e RINIT_GRACE=3s`) is the only
//!   way to configure the init;
//! - `docker info` and `docker version` run `<init-path> --version` and read
//!   tini's format (`tini version 0.19.0 - git.de40ad0`); other output is a
//!   "failed to parse" warning in the daemon's log, at start and on every
//!   `docker info`.
//!
//! The test runs a second, private dockerd beside the engine the other tests
//! use, with its own socket, daemon.json, data root, exec root, pid file,
//! managed containerd and bridge (`rinitd<pid>` on 198.18.N.1/24, a
//! benchmarking range nothing routes). It never touches docker0 or iptables:
//! `--bridge=none` would delete the host's docker0 and `--iptables` would
//! rewrite the main engine's chains. The test image is built on the main
//! engine as the other Docker tests build theirs (`FROM scratch`, the probe
//! and busybox, no rinit in it) and copied over with `docker save`/`load`.
//!
//! Everything it starts is stopped and removed when it ends, failed or not
//! (`PrivateDockerd`'s `Drop`). Without a prerequisite (root, a main engine,
//! dockerd, ip, docker-compose) it skips with one line, except under
//! CI=true, where that is a failure.

use rinit_test_support::docker as docker_support;

use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docker_support::{
    assert_static, build_text, docker_on, docker_on_ok, engine, init_version, probe_beside,
    wait_ready, Compose, Container,
};
use rinit_test_support::{
    assert_clean_exit, ci, run, run_ok, text_phase, try_run, wait_for, TempDir,
};

const RINIT: &str = env!("CARGO_BIN_EXE_rinit");
const BUSYBOX: &str = "/bin/busybox";
const SETUP: &str = "run scripts/setup-docker.sh (installs Debian's busybox-static)";

/// True when `name` is an executable file on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// What this test needs beyond the main engine: root (a second dockerd, a
/// bridge), dockerd itself, iproute2's `ip`, docker-compose. Missing ones
/// skip the test with one line, or fail it under CI=true.
fn prerequisites(test: &str) -> bool {
    if !engine(test) {
        return false;
    }
    let mut missing: Vec<&str> = ["dockerd", "ip", "docker-compose", "sha256sum"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: missing {} (scripts/setup installs iproute2 and docker-compose; dockerd comes with the engine)",
        missing.join(", ")
    );
    assert!(!ci(), "CI=true and {why}");
    eprintln!("SKIP {why}");
    false
}

/// `rinit-test/no-init:<hash>` on the main engine: FROM scratch with the
/// probe as its ENTRYPOINT and busybox for `docker exec`, and no rinit: under
/// `--init` the only rinit in the container is the one dockerd mounts.
fn image_without_init() -> String {
    let probe = probe_beside(Path::new(RINIT));
    assert_static(
        &probe,
        "the probe must be built static (.cargo/config.toml)",
    );
    assert_static(Path::new(BUSYBOX), SETUP);
    let ctx = TempDir::new("no-init-image");
    ctx.copy_in(&probe, "probe")
        .copy_in(Path::new(BUSYBOX), "busybox");
    build_text(
        "rinit-test/no-init",
        "FROM scratch\n\
         COPY probe /probe\n\
         COPY busybox /bin/busybox\n\
         COPY busybox /bin/sh\n\
         ENTRYPOINT [\"/probe\"]\n",
        &ctx,
    )
}

/// A network bridge made for the private daemon, deleted on drop.
struct Bridge(String);

impl Bridge {
    /// Name prefix; the rest is the creating test's pid.
    const PREFIX: &'static str = "rinitd";

    /// `rinitd<pid>` with an address of its own on 198.18.N.1/24 (RFC 2544's
    /// benchmarking range: no real network uses it), N free on this machine.
    fn create() -> Bridge {
        Bridge::remove_stale();
        let pid = std::process::id();
        let bridge = Bridge(format!("{}{pid}", Bridge::PREFIX));
        ip(&["link", "add", &bridge.0, "type", "bridge"]);
        let used = run(Command::new("ip").args(["-o", "-4", "addr"]), CMD).stdout;
        let n = (0..256)
            .map(|i| (pid as usize + i) % 256)
            .find(|n| !used.contains(&format!(" 198.18.{n}.")))
            .expect("a free /24 in 198.18.0.0/16");
        ip(&["addr", "add", &format!("198.18.{n}.1/24"), "dev", &bridge.0]);
        ip(&["link", "set", &bridge.0, "up"]);
        bridge
    }

    /// Deletes bridges left by test processes that are gone (killed before
    /// their own cleanup could run).
    fn remove_stale() {
        let links = run(
            Command::new("ip").args(["-o", "link", "show", "type", "bridge"]),
            CMD,
        );
        for line in links.stdout.lines() {
            let Some(name) = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            let Some(pid) = name
                .strip_prefix(Bridge::PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("deleting {name}, left by test process {pid} (gone)");
                let _ = try_run(Command::new("ip").args(["link", "del", name]), CMD);
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = try_run(Command::new("ip").args(["link", "del", &self.0]), CMD);
    }
}

/// Time allowed for one `ip` or `docker` command.
const CMD: Duration = Duration::from_secs(60);

/// `ip ARGS...`, which must succeed.
fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), CMD);
}

/// A second dockerd, private to this test, with rinit as its init.
///
/// Fields drop in order after `Drop::drop` has stopped the daemon and
/// unmounted what it left: the directory, then the bridge.
struct PrivateDockerd {
    /// `unix://<dir>/docker.sock`: `docker -H`, or Compose's DOCKER_HOST.
    host: String,
    /// The rinit the daemon mounts: `<dir>/rinit`, standing in for
    /// `/usr/local/bin/rinit`.
    init_path: PathBuf,
    daemon: Child,
    dir: TempDir,
    _bridge: Bridge,
}

impl PrivateDockerd {
    /// Starts the daemon and waits until it answers.
    fn start(rinit: &Path) -> PrivateDockerd {
        let bridge = Bridge::create();
        let dir = TempDir::new("dockerd");
        let init_path = dir.join("rinit");
        dir.copy_in(rinit, "rinit");
        // The README's daemon.json line, and the daemon's key kept out of
        // /etc/docker.
        dir.write(
            "daemon.json",
            &format!(
                "{{\"init-path\": \"{}\", \"deprecated-key-path\": \"{}\"}}\n",
                init_path.display(),
                dir.file("key.json")
            ),
        );
        let host = format!("unix://{}", dir.file("docker.sock"));
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("create dockerd.log");
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args(["-H", &host])
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--bridge", &bridge.0])
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        // SAFETY: prctl only, between fork and exec. If this test process is
        // killed before its cleanup runs, the daemon gets SIGTERM and shuts
        // down (its containerd with it) rather than living on.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let daemon = cmd.spawn().expect("start dockerd");
        let mut d = PrivateDockerd {
            host,
            init_path,
            daemon,
            dir,
            _bridge: bridge,
        };
        let t0 = Instant::now();
        wait_for(
            "the private dockerd to answer",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = d.daemon.try_wait() {
                    panic!("dockerd exited with {status} at start:\n{}", d.log());
                }
                docker_on(
                    Some(&d.host),
                    &["version", "--format", "{{.Server.Version}}"],
                )
                .ok()
                .then_some(())
            },
        );
        eprintln!(
            "private dockerd answered in {} ms",
            t0.elapsed().as_millis()
        );
        d
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }

    /// `docker -H <private> ARGS...`, which must succeed; its stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        docker_on_ok(self.host(), args)
    }

    /// What the daemon has logged so far.
    fn log(&self) -> String {
        self.dir.read("dockerd.log")
    }

    /// Copies `image` from the main engine into this one.
    fn load(&self, image: &str) {
        let tar = self.dir.file("image.tar");
        docker_support::docker_ok(&["save", "-o", &tar, image]);
        self.docker_ok(&["load", "-i", &tar]);
        let _ = std::fs::remove_file(&tar);
    }

    /// Kills what is left of the daemon's own processes (its containerd and
    /// shims), found by our directory in their command lines.
    fn kill_leftovers(&self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in procs
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                eprintln!("killing {pid}, left by the private dockerd");
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Detaches every mount the daemon left under our directory (it keeps
    /// the host's network namespace bound at exec/netns/default), deepest
    /// first, so removing the directory removes files, not mounts.
    fn unmount_all(&self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| {
                p.strip_prefix(&dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        points.dedup();
        for p in points {
            let Ok(c) = std::ffi::CString::new(p) else {
                continue;
            };
            // SAFETY: a NUL-terminated path; detaching a mount we own.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Drop for PrivateDockerd {
    /// Best effort and never a panic: this may run while a failed test unwinds.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "private dockerd's last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let t0 = Instant::now();
        // SAFETY: kill has no memory effects; the daemon is our unreaped child.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        while t0.elapsed() < Duration::from_secs(30) {
            if !matches!(self.daemon.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        eprintln!("private dockerd stopped in {} ms", t0.elapsed().as_millis());
        self.kill_leftovers();
        self.unmount_all();
    }
}

/// The main engine's identity and whether docker0 exists, to check this test
/// changed neither.
fn main_engine_state() -> (String, bool) {
    let id = docker_support::docker_ok(&["info", "--format", "{{.ID}}"]);
    let docker0 = run(Command::new("ip").args(["link", "show", "docker0"]), CMD).ok();
    (id.trim().to_string(), docker0)
}

/// `docker exec ID cat /proc/1/cmdline` on the private daemon, split at NULs.
fn pid1_cmdline(d: &PrivateDockerd, id: &str) -> Vec<String> {
    let out = docker_on(
        d.host(),
        &["exec", id, "/bin/busybox", "cat", "/proc/1/cmdline"],
    );
    assert!(out.ok(), "docker exec {id}: {}", out.stderr);
    out.stdout
        .trim_end_matches('\0')
        .split('\0')
        .map(str::to_string)
        .collect()
}

/// The hash in a line of `sha256sum` output.
fn sha256(out: &str) -> String {
    out.split_whitespace().next().unwrap_or("").to_string()
}

/// Everything container `id` on the private daemon wrote.
fn logs(d: &PrivateDockerd, id: &str) -> String {
    let out = docker_on(d.host(), &["logs", id]);
    format!("{}{}", out.stdout, out.stderr)
}

/// Asserts PID 1 of container `id` is the rinit the daemon mounts: its
/// command line is `/sbin/docker-init -- <command>`, its executable has
/// rinit's bytes, and rinit's start line has each of `fields` (`grace=3s`:
/// only the environment can have set it).
fn assert_pid1_is_rinit(d: &PrivateDockerd, id: &str, command: &[&str], fields: &[&str]) {
    let mut want = vec!["/sbin/docker-init", "--"];
    want.extend_from_slice(command);
    assert_eq!(pid1_cmdline(d, id), want, "PID 1's command line");
    let inside = docker_on(
        d.host(),
        &["exec", id, "/bin/busybox", "sha256sum", "/proc/1/exe"],
    );
    let outside = run(Command::new("sha256sum").arg(&d.init_path), CMD);
    assert_eq!(
        sha256(&inside.stdout),
        sha256(&outside.stdout),
        "PID 1's executable is the init-path rinit ({})",
        inside.stderr
    );
    let logs = wait_for("rinit's start line", Duration::from_secs(10), || {
        let logs = logs(d, id);
        (!text_phase(&logs, "start").is_empty()).then_some(logs)
    });
    let start = text_phase(&logs, "start");
    assert!(
        start.first().is_some_and(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            l.contains(&format!("started {} ", command[0]))
                && ["platform=docker", "mode=pid1"]
                    .iter()
                    .chain(fields)
                    .all(|f| words.contains(f))
        }),
        "rinit's start line should have {fields:?}: {start:?}\n{logs}"
    );
}

/// `docker run --init -e RINIT_GRACE=3s` of `image` on the private daemon,
/// with a fresh directory at /data. `command` is the probe's command line:
/// the image's ENTRYPOINT is /probe, so the rest is given as its CMD.
fn run_init(
    d: &PrivateDockerd,
    image: &str,
    label: &str,
    command: &[&str],
) -> (Container, TempDir) {
    assert_eq!(command[0], "/probe", "the image's ENTRYPOINT");
    let data = TempDir::new(label);
    let mount = format!("{}:/data", data.path().display());
    let mut args = vec!["--init", "-e", "RINIT_GRACE=3s", "-v", &mount, image];
    args.extend_from_slice(&command[1..]);
    (Container::run_on(d.host(), label, &args), data)
}

/// `docker stop -t 10`, which must end `c` with `code` in a time within
/// `bounds` (`what` says why); then its logs and Docker's signals, printed.
fn stop(c: &Container, code: i32, bounds: Range<Duration>, what: &str) -> (String, Vec<String>) {
    let took = c.stop(10);
    let exit = c.state().exit_code;
    let logs = c.logs();
    let signals = c.signals_sent();
    eprintln!(
        "{}: docker stop -t 10 took {:.3} s, exit {exit}, Docker sent {signals:?}; logs:\n{logs}",
        c.name,
        took.as_secs_f64()
    );
    assert_eq!(exit, code, "{what}");
    assert!(
        bounds.contains(&took),
        "{what}: docker stop took {:.3} s, not in {bounds:?}",
        took.as_secs_f64()
    );
    (logs, signals)
}

/// The single `exit` line of rinit's log.
fn exit_line(logs: &str) -> String {
    let exit = text_phase(logs, "exit");
    assert_eq!(exit.len(), 1, "one exit line:\n{logs}");
    exit[0].to_string()
}

/// The version probe: `docker info` shows rinit's version where it shows
/// tini's commit, `docker version` lists it as a component, and the daemon
/// (which probes at start and on every `docker info` and `docker version`)
/// logs nothing about its init but at info level.
fn check_version_probe(d: &PrivateDockerd) {
    let info = d.docker_ok(&[
        "info",
        "--format",
        "{{.InitBinary}}|{{.InitCommit.ID}}|{{.InitCommit.Expected}}",
    ]);
    let word = init_version(env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.trim(),
        format!("{}|{word}|{word}", d.init_path.display()),
        "docker info: Init Binary, init version"
    );
    let version = d.docker_ok(&[
        "version",
        "--format",
        "{{range .Server.Components}}{{.Name}}={{index .Details \"GitCommit\"}};{{end}}",
    ]);
    assert!(
        version.contains(&format!("rinit={word};")),
        "docker version's init component: {version}"
    );
    let log = d.log();
    let init_path = d.init_path.to_string_lossy();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&*init_path) && !l.contains("level=info"))
        .collect();
    assert!(
        warned.is_empty(),
        "the daemon complained about its init: {warned:?}"
    );
}

/// `docker run --init -e RINIT_GRACE=3s` of a child that ignores SIGTERM and
/// of one that finishes a 300 ms job on it, each stopped with `docker stop
/// -t 10`; and, as the control, `docker run` without `--init`.
fn check_docker_run_init(d: &PrivateDockerd, image: &str) {
    // Without --init PID 1 is the image's entrypoint: the image carries no
    // init, so the rinit below comes from the daemon.
    let plain = Container::run_on(d.host(), "no-init", &[image]);
    assert_eq!(
        pid1_cmdline(d, &plain.name),
        ["/probe"],
        "PID 1 without --init"
    );
    drop(plain);

    // --init with no RINIT_GRACE: rinit's own default inside Docker, 2 s
    // under the 10 s it assumes Docker gives.
    let default = Container::run_on(
        d.host(),
        "init-default",
        &["--init", image, "--sleep", "60000"],
    );
    assert_pid1_is_rinit(
        d,
        &default.name,
        &["/probe", "--sleep", "60000"],
        &["grace=8s", "kill_after=10s", "window=assumed"],
    );
    drop(default);

    let ignores_cmd = [
        "/probe",
        "--ready",
        "/data/ready",
        "--done",
        "/data/done",
        "--ignore",
        "TERM",
    ];
    let (c_ignores, ignores) = run_init(d, image, "init-ignores", &ignores_cmd);
    let drains_cmd = [
        "/probe",
        "--ready",
        "/data/ready",
        "--done",
        "/data/done",
        "--exit-on",
        "TERM:300:0",
    ];
    let (c_drains, drains) = run_init(d, image, "init-drains", &drains_cmd);
    for data in [&ignores, &drains] {
        wait_ready(data, "ready");
    }
    let fields = ["grace=3s", "kill_after=10s", "window=assumed"];
    assert_pid1_is_rinit(d, &c_ignores.name, &ignores_cmd, &fields);
    assert_pid1_is_rinit(d, &c_drains.name, &drains_cmd, &fields);

    let (logs, signals) = stop(
        &c_drains,
        0,
        Duration::from_millis(290)..Duration::from_millis(2500),
        "a clean drain: the 300 ms job, not a timeout",
    );
    assert!(drains.read("done").starts_with("done "), "the job finished");
    assert_eq!(signals, ["15"], "Docker's SIGTERM only");
    assert_clean_exit(&logs, "docker stop of init-drains");

    let (logs, signals) = stop(
        &c_ignores,
        137,
        Duration::from_millis(2900)..Duration::from_secs(7),
        "killed by rinit at its grace: RINIT_GRACE=3s, not Docker's 10 s",
    );
    let forward = text_phase(&logs, "forward");
    assert!(
        forward.len() == 1 && forward[0].contains("signal=SIGTERM"),
        "rinit forwarded the TERM to the child: {forward:?}"
    );
    assert!(ignores.read("done").is_empty(), "the child was killed");
    assert_eq!(signals, ["15"], "Docker never had to SIGKILL");
    let deadline = text_phase(&logs, "deadline");
    assert!(
        deadline.len() == 1 && deadline[0].contains("grace=3s"),
        "{deadline:?}"
    );
    let exit = exit_line(&logs);
    assert!(
        exit.contains("status=137") && exit.contains("escalated=true"),
        "{exit}"
    );
}

/// Compose's `init: true` against the private daemon (DOCKER_HOST), with
/// `RINIT_GRACE: 2s` in the service's environment and `stop_grace_period:
/// 10s`: `docker-compose stop` ends the draining service with 0 and the one
/// ignoring SIGTERM with rinit's 137 at 2 s.
fn check_compose_init_true(d: &PrivateDockerd, image: &str) {
    let data = TempDir::new("compose-init");
    let services = [
        ("drains", ["--exit-on", "TERM:300:0"]),
        ("ignores", ["--ignore", "TERM"]),
    ];
    let mut yaml = String::from("version: \"2.4\"\nservices:\n");
    for (name, extra) in &services {
        std::fs::create_dir_all(data.join(name)).expect("mkdir");
        yaml.push_str(&format!(
            "  {name}:\n    \
               image: {image}\n    \
               command: [\"--ready\", \"/data/ready\", \"--done\", \"/data/done\", \"{}\", \"{}\"]\n    \
               init: true\n    \
               environment:\n      RINIT_GRACE: 2s\n      RINIT_PLATFORM_KILL_AFTER: 10s\n    \
               stop_grace_period: 10s\n    \
               network_mode: host\n    \
               labels:\n      rinit-test: \"1\"\n    \
               volumes:\n      - {}:/data\n",
            extra[0],
            extra[1],
            data.join(name).display()
        ));
    }
    data.write("compose.yaml", &yaml);
    let compose = Compose::new("compose-init", data.join("compose.yaml"), d.host());
    let up = compose.run(&["up", "-d"], Duration::from_secs(120));
    assert!(up.ok(), "docker-compose up: {}{}", up.stdout, up.stderr);
    let mut ids = Vec::new();
    for (name, extra) in &services {
        wait_ready(&data, &format!("{name}/ready"));
        let id = compose.container_id(name);
        let init = d.docker_ok(&["inspect", "--format", "{{.HostConfig.Init}}", &id]);
        assert_eq!(init.trim(), "true", "{name}: init: true reached the engine");
        let mut command = vec!["/probe", "--ready", "/data/ready", "--done", "/data/done"];
        command.extend_from_slice(extra);
        let fields = ["grace=2s", "kill_after=10s", "window=known"];
        assert_pid1_is_rinit(d, &id, &command, &fields);
        ids.push(id);
    }
    let t0 = Instant::now();
    let stopped = compose.run(&["stop"], Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(stopped.ok(), "docker-compose stop: {}", stopped.stderr);
    let mut codes = Vec::new();
    for ((name, _), id) in services.iter().zip(&ids) {
        let code = d.docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", id]);
        eprintln!(
            "compose {name}: exit {}; logs:\n{}",
            code.trim(),
            logs(d, id)
        );
        assert_eq!(
            compose.signals_sent(id),
            ["15"],
            "{name}: Compose's SIGTERM only"
        );
        codes.push(code.trim().to_string());
    }
    eprintln!(
        "docker-compose stop took {:.3} s; exits {codes:?}",
        took.as_secs_f64()
    );
    assert_eq!(
        codes,
        ["0", "137"],
        "drains exits 0, ignores is killed by rinit"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(7),
        "rinit's 2 s grace, not stop_grace_period's 10 s: docker-compose stop took {:.3} s",
        took.as_secs_f64()
    );
    assert!(
        std::fs::read_to_string(data.join("drains/done"))
            .unwrap_or_default()
            .starts_with("done "),
        "the drains service finished its job"
    );
}

/// `docker run --init` and Compose's `init: true` on a daemon whose
/// daemon.json names rinit as `init-path`: the version probe reads cleanly,
/// rinit is PID 1 with the image's entrypoint and command after `--`, it is
/// configured by `RINIT_GRACE` alone, and `docker stop` drains: a child that
/// ignores SIGTERM is killed at rinit's grace (137), well before Docker's
/// `-t 10`; a well-behaved one finishes its job and exits 0 at once.
#[test]
fn docker_run_init_and_compose_init_true_start_rinit_as_pid1_and_drain() {
    let test = "docker_run_init_and_compose_init_true_start_rinit_as_pid1_and_drain";
    if !prerequisites(test) {
        return;
    }
    let t0 = Instant::now();
    let image = image_without_init();
    let main_before = main_engine_state();
    let d = PrivateDockerd::start(Path::new(RINIT));
    d.load(&image);
    check_version_probe(&d);
    check_docker_run_init(&d, &image);
    check_compose_init_true(&d, &image);
    drop(d);
    assert_eq!(
        main_engine_state(),
        main_before,
        "the main engine and docker0 are as they were"
    );
    eprintln!("{test}: {:.1} s in all", t0.elapsed().as_secs_f64());
}
