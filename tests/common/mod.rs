//! Shared harness of the integration tests: run rinit (as a real PID 1 under
//! `unshare --pid`, or directly as a subreaper) around the `probe` example,
//! signal it from outside, and read what the probe recorded and what rinit
//! logged.
//!
//! Every wait polls with a deadline; a run that outlives its deadline is
//! SIGKILLed with everything under it and the test fails with rinit's stderr.
//! rinit always starts with a cleared environment (only `PATH`, plus what a
//! test adds) so the machine's `KUBERNETES_SERVICE_HOST`, `RINIT_*` and the
//! like cannot change results.

// Each test binary uses a different part of the harness and of what it re-exports.
#![allow(dead_code, unused_imports)]

pub use rinit_test_support::procfs::{
    alive, all_processes, children, descendants, kill, mono_ns, stat, Stat,
};
pub use rinit_test_support::signals::sig_name;
pub use rinit_test_support::{json_lines, phase, poll, text_field, text_phase, TempDir};

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs;
use std::ops::RangeBounds;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How rinit runs: the two code paths of the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`).
    Pid1,
    /// A plain process of the test's namespace: rinit registers as subreaper.
    Subreaper,
}

/// Generates `mod NAME { fn pid1(); fn subreaper(); }` calling `NAME(Mode)`,
/// so every scenario runs (and is reported) once per mode.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn pid1() {
                super::$name($crate::common::Mode::Pid1)
            }
            #[test]
            fn subreaper() {
                super::$name($crate::common::Mode::Subreaper)
            }
        }
    )*};
}

/// A generous bound for anything that should take well under a second.
pub const SOON: Duration = Duration::from_secs(20);

/// PATH for rinit and the shells the tests run.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn rinit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rinit"))
}

/// The `probe` example, built next to the binary by `cargo test`/`nextest`.
pub fn probe_bin() -> PathBuf {
    let p = rinit_bin()
        .parent()
        .expect("rinit has a directory")
        .join("examples/probe");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --examples` (cargo test and nextest do)",
        p.display()
    );
    p
}

/// `unshare`, found once on the usual paths.
pub fn unshare_bin() -> PathBuf {
    for d in PATH.split(':') {
        let p = Path::new(d).join("unshare");
        if p.exists() {
            return p;
        }
    }
    panic!("unshare (util-linux) is required for the PID 1 tests");
}

// ---- running rinit ---------------------------------------------------------

/// What to run: rinit's options, the command, extra environment.
pub struct Rinit {
    mode: Mode,
    dir: PathBuf,
    opts: Vec<OsString>,
    command: Vec<OsString>,
    env: Vec<(String, String)>,
    dashes: bool,
    pre_exec: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>>,
    /// PID 1 mode: mount a /proc of the new namespace (the default); off, rinit
    /// sees the test's /proc, whose pids are not its namespace's.
    mount_proc: bool,
    /// Run rinit through these (`setpriv --reuid ...`), which exec it.
    wrapper: Vec<OsString>,
    /// rinit's stderr, when the test holds its other end (a pipe).
    stderr_fd: Option<std::os::fd::OwnedFd>,
}

impl Rinit {
    /// rinit in `mode`, with its stdout/stderr captured to files in `dir`.
    pub fn new(mode: Mode, dir: &TempDir) -> Rinit {
        Rinit {
            mode,
            dir: dir.path().to_path_buf(),
            opts: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            dashes: true,
            pre_exec: None,
            mount_proc: true,
            wrapper: Vec::new(),
            stderr_fd: None,
        }
    }

    /// PID 1 without its own /proc: the test's /proc stays, as with
    /// `unshare --pid --fork` alone.
    pub fn foreign_proc(mut self) -> Rinit {
        self.mount_proc = false;
        self
    }

    /// Runs rinit through `argv` (a program that execs what follows it).
    pub fn wrapped<S: Into<OsString>>(mut self, argv: impl IntoIterator<Item = S>) -> Rinit {
        self.wrapper.extend(argv.into_iter().map(Into::into));
        self
    }

    /// rinit's stderr goes to `fd` (the test reads the other end itself).
    pub fn stderr_fd(mut self, fd: std::os::fd::OwnedFd) -> Rinit {
        self.stderr_fd = Some(fd);
        self
    }

    /// rinit options (before `--`).
    pub fn opts<S: Into<OsString>>(mut self, opts: impl IntoIterator<Item = S>) -> Rinit {
        self.opts.extend(opts.into_iter().map(Into::into));
        self
    }

    /// The command rinit runs.
    pub fn cmd<S: Into<OsString>>(mut self, argv: impl IntoIterator<Item = S>) -> Rinit {
        self.command.extend(argv.into_iter().map(Into::into));
        self
    }

    /// The probe, with these arguments.
    pub fn probe<S: Into<OsString>>(self, args: impl IntoIterator<Item = S>) -> Rinit {
        let argv: Vec<OsString> = std::iter::once(probe_bin().into())
            .chain(args.into_iter().map(Into::into))
            .collect();
        self.cmd(argv)
    }

    pub fn env(mut self, k: &str, v: &str) -> Rinit {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Each of `pairs` added to the environment.
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Rinit {
        self.env
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Leave out the `--` between the options and the command.
    pub fn no_dashes(mut self) -> Rinit {
        self.dashes = false;
        self
    }

    /// Runs `f` in the forked process before it execs (rinit, or unshare).
    pub fn pre_exec(
        mut self,
        f: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Rinit {
        self.pre_exec = Some(Box::new(f));
        self
    }

    /// The full command line: `[unshare ...] rinit OPTS -- COMMAND`.
    fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if self.mode == Mode::Pid1 {
            argv.push(unshare_bin().into());
            // --kill-child: if the test dies, the namespace dies with unshare.
            for a in ["--pid", "--fork", "--kill-child"] {
                argv.push(a.into());
            }
            if self.mount_proc {
                argv.push("--mount-proc".into());
            }
        }
        argv.extend(self.wrapper.iter().cloned());
        argv.push(rinit_bin().into());
        argv.extend(self.opts.iter().cloned());
        if self.dashes {
            argv.push("--".into());
        }
        argv.extend(self.command.iter().cloned());
        argv
    }

    pub fn spawn(mut self) -> Run {
        let argv = self.argv();
        let stderr = self.dir.join("rinit.stderr");
        let stdout = self.dir.join("rinit.stdout");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", PATH)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"));
        match self.stderr_fd.take() {
            Some(fd) => cmd.stderr(Stdio::from(fd)),
            None => cmd.stderr(fs::File::create(&stderr).expect("stderr file")),
        };
        if let Some(f) = self.pre_exec.take() {
            // SAFETY: the tests' closures only make async-signal-safe syscalls.
            unsafe { cmd.pre_exec(f) };
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        Run {
            mode: self.mode,
            child,
            stderr,
            stdout,
            started: Instant::now(),
            argv,
            rinit_pid: std::cell::Cell::new(None),
            done: false,
        }
    }

    /// Runs to completion (the command is expected to end on its own).
    pub fn run(self) -> Done {
        self.spawn().finish(SOON)
    }
}

/// The rinit options of a row of settings.
pub type Opts<'a> = &'a [&'a str];

/// The environment of a row of settings.
pub type Env<'a> = &'a [(&'a str, &'a str)];

/// One row of a table of settings: rinit in `mode` with `opts` and `env` over
/// `probe --exit CODE`, which must start and pass its code through; how it
/// ended, and the row as failure messages name it (options, environment and
/// rinit's log).
pub fn run_settings(mode: Mode, dir: &TempDir, opts: Opts, env: Env, code: i32) -> (Done, String) {
    let done = Rinit::new(mode, dir)
        .opts(opts.iter().copied())
        .probe(["--exit", &code.to_string()])
        .envs(env)
        .run();
    let what = format!("{opts:?} {env:?}\n{}", done.stderr);
    assert_eq!(done.status, code, "the command ran: {what}");
    (done, what)
}

/// rinit in `mode` with `opts` and `env`, which must refuse them before it
/// starts its command (`touch DIR/started`): exit 2, and the command never
/// ran. Returns what rinit printed.
pub fn refused(mode: Mode, dir: &TempDir, opts: Opts, env: Env) -> String {
    let marker = dir.file("started");
    let done = Rinit::new(mode, dir)
        .opts(opts.iter().copied())
        .cmd(["touch", &marker])
        .envs(env)
        .run();
    assert_eq!(done.status, 2, "{opts:?} {env:?}\n{}", done.stderr);
    assert!(!Path::new(&marker).exists(), "{opts:?}: the command ran");
    done.stderr
}

/// A running rinit.
pub struct Run {
    pub mode: Mode,
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
    started: Instant,
    argv: Vec<OsString>,
    rinit_pid: std::cell::Cell<Option<i32>>,
    done: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct Done {
    /// rinit's exit code (a death by signal fails the test instead).
    pub status: i32,
    pub stderr: String,
    pub stdout: String,
    /// When the exit was observed (polled every few ms).
    pub ended: Instant,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Done {
    /// The `start` line's `keys`, from JSON lines (`json`) or text lines,
    /// failing if the log is not in that format. Numbers come back as text.
    pub fn start_fields(&self, json: bool, keys: &[&str]) -> Vec<String> {
        if json {
            let lines = self.json();
            let s = phase(&lines, "start")
                .into_iter()
                .find(|l| l["severity"] == "INFO")
                .unwrap_or_else(|| panic!("no start line\n{}", self.stderr))
                .clone();
            keys.iter()
                .map(|k| match &s[k] {
                    serde_json::Value::String(v) => v.clone(),
                    v => v.to_string(),
                })
                .collect()
        } else {
            let s = text_phase(&self.stderr, "start")
                .into_iter()
                .find(|l| l.contains(" INFO start: "))
                .unwrap_or_else(|| panic!("no text start line\n{}", self.stderr));
            keys.iter()
                .map(|k| text_field(s, k).unwrap_or_default())
                .collect()
        }
    }

    /// rinit's log lines as JSON objects (every line must parse).
    pub fn json(&self) -> Vec<serde_json::Value> {
        json_lines(&self.stderr)
    }
}

impl Run {
    /// rinit's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!(
            "mode: {:?}\ncommand: {:?}\nrinit stderr:\n{}",
            self.mode,
            self.argv,
            self.stderr()
        )
    }

    /// Exits early if rinit already ended, so waits fail fast and clearly.
    fn check_running(&mut self, what: &str) {
        if let Ok(Some(st)) = self.child.try_wait() {
            self.done = true;
            panic!(
                "rinit exited ({st}) while waiting for {what}\n{}",
                self.context()
            );
        }
    }

    /// The host pid of rinit itself (in PID 1 mode, unshare's child).
    pub fn rinit_pid(&self) -> i32 {
        if let Some(p) = self.rinit_pid.get() {
            return p;
        }
        let pid = match self.mode {
            Mode::Subreaper => self.child.id() as i32,
            Mode::Pid1 => {
                let unshare = self.child.id() as i32;
                poll(
                    "rinit to be exec'd by unshare",
                    SOON,
                    || self.context(),
                    || {
                        children(unshare)
                            .into_iter()
                            .find(|s| s.comm == "rinit")
                            .map(|s| s.pid)
                    },
                )
            }
        };
        self.rinit_pid.set(Some(pid));
        pid
    }

    /// The host pid of rinit's main child (after it is ready).
    pub fn child_pid(&self) -> i32 {
        let r = self.rinit_pid();
        poll(
            "rinit's child",
            SOON,
            || self.context(),
            || {
                let c = children(r);
                (c.len() == 1).then(|| c[0].pid)
            },
        )
    }

    /// Sends `sig` to rinit from outside.
    pub fn signal(&self, sig: i32) {
        kill(self.rinit_pid(), sig);
    }

    /// Sends `sig` (the one that ends the run) and waits for rinit to exit:
    /// how it ended, and how long after the signal (the clock starts just
    /// before it).
    pub fn stop(self, sig: i32) -> (Done, Duration) {
        let t0 = Instant::now();
        self.signal(sig);
        let done = self.finish(SOON);
        let took = done.ended - t0;
        (done, took)
    }

    /// [`Run::stop`] that must end with rinit's exit `status` in a time
    /// within `bounds` of the signal (`why` says what they stand for, in the
    /// failure with rinit's log).
    pub fn stop_expecting(
        self,
        sig: i32,
        status: i32,
        bounds: impl RangeBounds<Duration> + Debug,
        why: &str,
    ) -> Done {
        let (done, took) = self.stop(sig);
        assert_eq!(done.status, status, "{why}\n{}", done.stderr);
        assert!(
            bounds.contains(&took),
            "{why}: exit {took:?} after the signal, not in {bounds:?}\n{}",
            done.stderr
        );
        done
    }

    /// Waits until `path` holds a complete line (the probe's ready file) and
    /// returns it, trimmed.
    pub fn wait_file(&mut self, path: &str) -> String {
        let end = Instant::now() + SOON;
        loop {
            if let Ok(t) = fs::read_to_string(path) {
                if t.ends_with('\n') {
                    return t.trim().to_string();
                }
            }
            self.check_running(path);
            if Instant::now() > end {
                self.kill_all();
                panic!("timed out waiting for {path}\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the probe's ready file; returns the pid it wrote (as the
    /// probe sees it: a namespace pid in PID 1 mode). Also looks up rinit's
    /// host pid now, so a later `signal` is one `kill` (timed tests start
    /// their clock just before it).
    pub fn ready(&mut self, path: &str) -> i32 {
        let pid = self
            .wait_file(path)
            .parse()
            .expect("ready file holds a pid");
        self.rinit_pid();
        pid
    }

    /// Polls until `f` holds, failing clearly if rinit exits first or time runs out.
    pub fn wait_until(&mut self, what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + SOON;
        while !f() {
            self.check_running(what);
            if Instant::now() > end {
                self.kill_all();
                panic!("timed out waiting for {what}\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a stderr line containing `needle` to appear `n` times.
    pub fn wait_log(&mut self, needle: &str, n: usize) {
        let path = self.stderr.clone();
        self.wait_until(&format!("{n}x '{needle}' in rinit's log"), || {
            fs::read_to_string(&path)
                .unwrap_or_default()
                .matches(needle)
                .count()
                >= n
        });
    }

    /// Waits for rinit to exit, at most `timeout`; kills everything and fails otherwise.
    pub fn finish(mut self, timeout: Duration) -> Done {
        let end = self.started + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => panic!("wait: {e}"),
            }
            if Instant::now() > end {
                self.kill_all();
                panic!(
                    "rinit did not exit within {timeout:?}; killed\n{}",
                    self.context()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let ended = Instant::now();
        self.done = true;
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().unwrap_or_else(|| {
            panic!(
                "rinit was killed by signal {:?}\n{}",
                status.signal(),
                self.context()
            )
        });
        Done {
            status: code,
            stderr: self.stderr(),
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            ended,
            elapsed: ended - self.started,
        }
    }

    /// SIGKILLs rinit and everything under it, and reaps it.
    fn kill_all(&mut self) {
        if self.done {
            return;
        }
        let top = self.child.id() as i32;
        let below = descendants(top);
        // Killing PID 1 of the namespace takes the namespace down with it.
        for s in below.iter().rev() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// ---- what the probe recorded -------------------------------------------------

/// The probe's two files in a scenario's directory: `rec`, where it records
/// every signal it gets, and `ready`, where it writes its pid once it does.
pub struct ProbeFiles {
    pub rec: String,
    pub ready: String,
}

impl ProbeFiles {
    pub fn in_dir(dir: &TempDir) -> ProbeFiles {
        ProbeFiles {
            rec: dir.file("rec"),
            ready: dir.file("ready"),
        }
    }

    /// The probe's arguments: record and say when ready here, then `args`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["--record", self.rec.as_str(), "--ready", &self.ready];
        argv.extend_from_slice(args);
        argv
    }

    /// What the probe (and its grandchild and daemon) recorded so far.
    pub fn record(&self) -> Record {
        Record::read(&self.rec)
    }
}

/// One signal the probe (or its grandchild) got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub pid: i32,
    pub sig: String,
    pub ns: u64,
}

/// A probe record file.
#[derive(Debug, Default)]
pub struct Record {
    pub signals: Vec<Got>,
    pub daemon: Option<i32>,
    pub grandchild: Option<i32>,
}

impl Record {
    pub fn read(path: &str) -> Record {
        let mut r = Record::default();
        for line in fs::read_to_string(path).unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["daemon", pid] => r.daemon = pid.parse().ok(),
                ["grandchild", pid] => r.grandchild = pid.parse().ok(),
                [pid, sig, ns] => r.signals.push(Got {
                    pid: pid.parse().expect("record pid"),
                    sig: sig.to_string(),
                    ns: ns.parse().expect("record ns"),
                }),
                _ => panic!("bad record line {line:?} in {path}"),
            }
        }
        r
    }

    /// Signal names `pid` got, in order.
    pub fn of(&self, pid: i32) -> Vec<String> {
        self.signals
            .iter()
            .filter(|g| g.pid == pid)
            .map(|g| g.sig.clone())
            .collect()
    }
}
