//! Real job runners behind rinit (issue 17): Sidekiq 6 (Debian's
//! ruby-sidekiq) and Celery 5 (PyPI, prefork pool), each test with its own
//! Redis on loopback, stopped the way a platform stops a container: SIGTERM
//! to PID 1, and SIGKILL at the window (10 s, Docker's default) if PID 1 is
//! still there.
//!
//! Each runner gets the same three kinds of work (tests/runners/): a short
//! job a drain must let finish, a long job no drain can finish (it must go
//! back to Redis and be completed by a fresh worker), and, for Sidekiq, a job
//! that runs a child process. What a stop must achieve is one check,
//! [`Outcome::problems`]: exit 0 by itself before the platform's SIGKILL, no
//! escalation, nothing killed by a forwarded signal, the short jobs finished,
//! the long job back in the queue and completed by a fresh worker. The
//! correct setups must pass it; the controls (a shell as PID 1, a runner
//! timeout past the bound, Celery without its preset) must fail it, each in
//! the way asserted.
//!
//! PID 1 runs are `unshare --pid --fork --mount-proc` (the namespace's PID 1
//! is rinit, or `sh` for the shell control); the Docker runs build images on
//! the debootstrap'd Debian base without a registry (tests/images/
//! runners.Dockerfile) and use `docker stop`, with Redis on the host's
//! loopback (`--network host`).
//!
//! Setup: scripts/setup-runners (scripts/setup calls it). Without Sidekiq,
//! Redis, the Celery venv or a Docker engine a test skips with one line,
//! except under CI=true, where that is a failure.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{children, kill, stat, text_field, text_phase, unshare_bin, TempDir, PATH};
use rinit_test_support::docker::{self as docker_support, assert_static, build, Container};
use rinit_test_support::{ci, free_port, root_dir, run, run_ok, wait_for};

const RINIT: &str = env!("CARGO_BIN_EXE_rinit");
const SETUP: &str = "run scripts/setup-runners";
/// The platform's window: SIGTERM, then SIGKILL this long after (Docker's
/// default `docker stop`).
const WINDOW: Duration = Duration::from_secs(10);
/// rinit's grace in every run here: 2 s inside the window.
const GRACE: &str = "--grace=8s";
/// For things that take a second or two on an idle machine (a runner
/// booting, a job being picked up) and may take much longer on a loaded one.
const SLOW: Duration = Duration::from_secs(90);

// ---- prerequisites ------------------------------------------------------

fn runners_dir() -> PathBuf {
    root_dir().join("tests/runners")
}

/// scripts/setup-runners' output directory.
fn setup_dir() -> PathBuf {
    root_dir().join(".runners")
}

fn celery_bin() -> PathBuf {
    setup_dir().join("venv/bin/celery")
}

fn venv_python() -> PathBuf {
    setup_dir().join("venv/bin/python")
}

/// True when every program `runner` needs is installed. Otherwise fails
/// under CI=true, or prints one skip line (the caller returns).
fn prerequisites(test: &str, runner: Runner) -> bool {
    let mut need: Vec<PathBuf> = ["/usr/bin/redis-server", "/usr/bin/redis-cli"]
        .iter()
        .map(PathBuf::from)
        .collect();
    match runner {
        Runner::Sidekiq => need.extend(["/usr/bin/ruby", "/usr/bin/sidekiq"].map(PathBuf::from)),
        Runner::Celery => need.extend([celery_bin(), venv_python()]),
    }
    let missing: Vec<String> = need
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !ci(),
        "{test}: CI=true and {} missing ({SETUP})",
        missing.join(", ")
    );
    eprintln!("SKIP {test}: {} missing ({SETUP})", missing.join(", "));
    false
}

// ---- Redis ----------------------------------------------------------------

/// One test's own Redis: a free port on loopback, its own directory, no
/// persistence; SIGKILLed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        // A port free a moment ago can be taken by another test before
        // Redis binds it: then Redis exits, and we try another.
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let log = fs::File::create(dir.join("redis.log")).expect("redis log file");
            let mut child = Command::new("/usr/bin/redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("start redis-server");
            let t0 = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ping = run(
                    Command::new("/usr/bin/redis-cli").args(["-p", &port.to_string(), "ping"]),
                    Duration::from_secs(30),
                );
                if ping.stdout.trim() == "PONG" {
                    return Redis {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                assert!(
                    t0.elapsed() < SLOW,
                    "redis-server on port {port} did not answer:\n{}",
                    dir.read("redis.log")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli --raw ARGS`, which must succeed; its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new("/usr/bin/redis-cli")
                .args(["-p", &self.port.to_string(), "--raw"])
                .args(args),
            Duration::from_secs(30),
        );
        out.stdout
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.cli(&["LRANGE", key, "0", "-1"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn count(&self, args: &[&str]) -> usize {
        let text = self.cli(args);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("redis-cli {args:?} printed {text:?}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the runners and their jobs ---------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Sidekiq,
    Celery,
}

impl Runner {
    /// The runner's command, and its image's name.
    fn name(self) -> &'static str {
        match self {
            Runner::Sidekiq => "sidekiq",
            Runner::Celery => "celery",
        }
    }
}

/// One line the jobs append to `$JOBS_DIR/events`.
#[derive(Debug)]
struct Event {
    name: String,
    what: String,
}

/// One test's world: its Redis, the jobs' directory, a directory for logs.
struct World {
    runner: Runner,
    redis: Redis,
    jobs: TempDir,
    logs: TempDir,
}

impl World {
    fn new(test: &str, runner: Runner) -> Option<World> {
        if !prerequisites(test, runner) {
            return None;
        }
        Some(World {
            runner,
            redis: Redis::start(),
            jobs: TempDir::new("jobs"),
            logs: TempDir::new("logs"),
        })
    }

    /// The runner's jobs (`CLASS:NAME:SECONDS`), their names, and the names
    /// of those that must finish during the drain.
    fn jobs(
        &self,
    ) -> (
        &'static [&'static str],
        Vec<&'static str>,
        &'static [&'static str],
    ) {
        let (jobs, finish): (&[&str], &[&str]) = match self.runner {
            Runner::Sidekiq => (&SIDEKIQ_JOBS, &SIDEKIQ_FINISH),
            Runner::Celery => (&CELERY_JOBS, &CELERY_FINISH),
        };
        let names = jobs
            .iter()
            .map(|j| j.split(':').nth(1).unwrap_or(j))
            .collect();
        (jobs, names, finish)
    }

    /// The environment of every runner process (and nothing of the test's).
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), PATH.to_string()),
            (
                "JOBS_DIR".to_string(),
                self.jobs.path().display().to_string(),
            ),
        ];
        match self.runner {
            Runner::Sidekiq => env.push(("REDIS_URL".into(), self.redis.url())),
            Runner::Celery => {
                env.push(("BROKER_URL".into(), self.redis.url()));
                env.push(("PYTHONPATH".into(), runners_dir().display().to_string()));
                // No __pycache__ written into the source tree.
                env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
            }
        }
        env
    }

    /// Enqueues `KIND:NAME:SECONDS` jobs with the runner's own client.
    fn enqueue(&self, jobs: &[&str]) {
        let mut cmd = match self.runner {
            Runner::Sidekiq => {
                let mut c = Command::new("/usr/bin/ruby");
                c.arg(runners_dir().join("sidekiq_enqueue.rb"));
                c
            }
            Runner::Celery => {
                let mut c = Command::new(venv_python());
                c.arg(runners_dir().join("celery_enqueue.py"));
                c
            }
        };
        cmd.args(jobs).env_clear().envs(self.env());
        run_ok(&mut cmd, SLOW);
    }

    /// The worker's command line; for Sidekiq, `-t` is `timeout`.
    fn worker(&self, timeout: u32) -> Vec<String> {
        match self.runner {
            Runner::Sidekiq => vec![
                "sidekiq".into(),
                "-r".into(),
                runners_dir().join("sidekiq_jobs.rb").display().to_string(),
                "-t".into(),
                timeout.to_string(),
                "-c".into(),
                "5".into(),
            ],
            Runner::Celery => vec![
                celery_bin().display().to_string(),
                "-A".into(),
                "celery_tasks".into(),
                "worker".into(),
                "--pool=prefork".into(),
                "--concurrency=2".into(),
                "--loglevel=INFO".into(),
            ],
        }
    }

    fn events(&self) -> Vec<Event> {
        self.jobs
            .read("events")
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "bad event line {l:?}");
                Event {
                    name: f[0].to_string(),
                    what: f[1].to_string(),
                }
            })
            .collect()
    }

    fn count(&self, name: &str, what: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.name == name && e.what == what)
            .count()
    }

    /// Waits until each of `names` has started, failing with `context()`
    /// if `alive()` turns false first.
    fn wait_started(
        &self,
        names: &[&str],
        mut alive: impl FnMut() -> bool,
        context: impl Fn() -> String,
    ) {
        let t0 = Instant::now();
        while !names.iter().all(|n| self.count(n, "start") > 0) {
            assert!(
                alive(),
                "the runner exited before {names:?} started:\n{}",
                context()
            );
            assert!(
                t0.elapsed() < SLOW,
                "{names:?} did not all start within {SLOW:?}; events:\n{}\n{}",
                self.jobs.read("events"),
                context()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The runner's queue in Redis (Sidekiq's `queue:default`, Celery's
    /// `celery`), as the JSON of each message.
    fn queue(&self) -> Vec<String> {
        self.redis.list(match self.runner {
            Runner::Sidekiq => "queue:default",
            Runner::Celery => "celery",
        })
    }

    /// Whether the queue holds the long job (Sidekiq: class LongJob;
    /// Celery: task celery_tasks.long).
    fn long_queued(&self) -> bool {
        let needle = match self.runner {
            Runner::Sidekiq => "\"class\":\"LongJob\"",
            Runner::Celery => "\"task\": \"celery_tasks.long\"",
        };
        self.queue().iter().any(|m| m.contains(needle))
    }

    /// Jobs parked elsewhere than the queue: Sidekiq's retry set (a failed
    /// job), Celery's unacked hash (a task a killed worker held: redelivered
    /// only after the visibility timeout, an hour by default).
    fn parked(&self) -> usize {
        match self.runner {
            Runner::Sidekiq => self.redis.count(&["ZCARD", "retry"]),
            Runner::Celery => self.redis.count(&["HLEN", "unacked"]),
        }
    }

    /// Releases the long job and runs a fresh worker (on the host) until
    /// the long job is done; true if it was, within `SLOW`.
    fn fresh_worker_completes_long(&self) -> bool {
        self.jobs.write("release", "");
        let log = fs::File::create(self.logs.join("fresh.log")).expect("fresh log");
        let argv = self.worker(5);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start a fresh worker");
        let t0 = Instant::now();
        let done = loop {
            if self.count("long", "done") > 0 {
                break true;
            }
            if t0.elapsed() > SLOW || matches!(child.try_wait(), Ok(Some(_))) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        kill(child.id() as i32, libc::SIGTERM);
        let t1 = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && t1.elapsed() < SLOW {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        if !done {
            eprintln!("fresh worker's log:\n{}", self.logs.read("fresh.log"));
        }
        done
    }
}

// ---- the platform -----------------------------------------------------------

/// A command as PID 1 of a fresh PID namespace, its output (rinit's log and
/// the runner's, interleaved as in `docker logs`) in one file.
struct Pid1 {
    child: Child,
    log: PathBuf,
    done: bool,
}

impl Pid1 {
    fn spawn(world: &World, argv: &[String]) -> Pid1 {
        let log = world.logs.join("pid1.log");
        let out = fs::File::create(&log).expect("pid1 log");
        let child = Command::new(unshare_bin())
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(argv)
            .env_clear()
            .envs(world.env())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        Pid1 {
            child,
            log,
            done: false,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The host pid of the namespace's PID 1 (unshare's one child).
    fn pid(&self) -> i32 {
        let unshare = self.child.id() as i32;
        wait_for("the namespace's PID 1", SLOW, || {
            let c = children(unshare);
            (c.len() == 1).then(|| c[0].pid)
        })
    }

    /// Plays the platform: SIGTERM to PID 1, SIGKILL at `WINDOW` if it is
    /// still there. Returns how it ended and when.
    fn stop(mut self) -> Stopped {
        let pid1 = self.pid();
        let comm = stat(pid1).map(|s| s.comm);
        let t0 = Instant::now();
        kill(pid1, libc::SIGTERM);
        let mut killed = false;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for unshare") {
                break st;
            }
            if !killed && t0.elapsed() >= WINDOW {
                // The whole namespace dies with its PID 1.
                kill(pid1, libc::SIGKILL);
                killed = true;
            }
            assert!(
                t0.elapsed() < WINDOW + SLOW,
                "PID 1 outlived its SIGKILL:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = t0.elapsed();
        self.done = true;
        Stopped {
            pid1: comm,
            killed_by_platform: killed,
            code: status.code(),
            took,
            log: self.log(),
        }
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if !self.done {
            for s in common::descendants(self.child.id() as i32).iter().rev() {
                kill(s.pid, libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a stop ended, as the platform saw it.
struct Stopped {
    /// PID 1's name when the stop came (`rinit`, `sh`; Docker: unknown).
    pid1: Option<String>,
    /// PID 1 was still there at the window and got the platform's SIGKILL.
    killed_by_platform: bool,
    /// PID 1's exit status (None: killed by a signal).
    code: Option<i32>,
    /// From the SIGTERM to PID 1's exit.
    took: Duration,
    /// rinit's log and the runner's.
    log: String,
}

impl Stopped {
    /// rinit's last `exit` line, if there is one.
    fn exit_line(&self) -> Option<&str> {
        text_phase(&self.log, "exit").last().copied()
    }

    fn exit_field(&self, key: &str) -> Option<String> {
        self.exit_line().and_then(|l| text_field(l, key))
    }
}

/// What a stop left behind: the platform's view and each job's fate.
struct Outcome {
    what: String,
    stopped: Stopped,
    /// The jobs that must finish during the drain, and whether each did.
    finished: Vec<(String, bool)>,
    /// The long job was back in the queue after the stop.
    requeued: bool,
    /// A fresh worker then completed the long job (only tried if requeued).
    completed: bool,
}

impl Outcome {
    /// Reads the jobs' fate after `stopped`, and runs a fresh worker when
    /// the long job is back in the queue.
    fn read(world: &World, what: &str, stopped: Stopped, must_finish: &[&str]) -> Outcome {
        let finished = must_finish
            .iter()
            .map(|n| (n.to_string(), world.count(n, "done") > 0))
            .collect();
        let requeued = world.long_queued();
        let parked = world.parked();
        let queue = world.queue();
        let completed = requeued && world.fresh_worker_completes_long();
        let o = Outcome {
            what: what.to_string(),
            stopped,
            finished,
            requeued,
            completed,
        };
        eprintln!(
            "{what}: stop to exit {:.3} s, {}, exit line: {}\n  finished {:?}, long job requeued {requeued} (queue {queue:?}), parked {parked}, completed by a fresh worker {completed}\n  problems: {:?}\n  events:\n{}\n  log:\n{}",
            o.stopped.took.as_secs_f64(),
            if o.stopped.killed_by_platform {
                "killed by the platform".to_string()
            } else {
                format!("exit {:?}", o.stopped.code)
            },
            o.stopped.exit_line().unwrap_or("(none)"),
            o.finished,
            o.problems(),
            world.jobs.read("events"),
            o.stopped.log,
        );
        o
    }

    /// Everything that went wrong against a clean drain; empty when the stop
    /// lost nothing.
    fn problems(&self) -> Vec<String> {
        let s = &self.stopped;
        let mut p = Vec::new();
        if s.killed_by_platform {
            p.push("killed by the platform".to_string());
        } else if s.code != Some(0) {
            p.push(format!("exit status {:?}", s.code));
        }
        match s.exit_line() {
            None => p.push("no rinit exit line".to_string()),
            Some(_) => {
                if s.exit_field("escalated").as_deref() != Some("false") {
                    p.push("escalated".to_string());
                }
                if s.exit_field("killed_by_forward").as_deref() != Some("0") {
                    p.push(format!(
                        "killed_by_forward={}",
                        s.exit_field("killed_by_forward")
                            .unwrap_or_else(|| "(absent)".into())
                    ));
                }
            }
        }
        for (name, done) in &self.finished {
            if !done {
                p.push(format!("{name} did not finish"));
            }
        }
        if !self.requeued {
            p.push("long job not requeued".to_string());
        } else if !self.completed {
            p.push("long job requeued but not completed by a fresh worker".to_string());
        }
        p
    }

    fn assert_clean(&self) {
        let p = self.problems();
        assert!(
            p.is_empty(),
            "{}: the stop lost work or was not clean: {p:?}\n{}",
            self.what,
            self.stopped.log
        );
    }

    /// A control: the stop must fail the check with each of `expected`.
    fn assert_fails_with(&self, expected: &[&str]) {
        let p = self.problems();
        for e in expected {
            assert!(
                p.iter().any(|x| x == e),
                "{}: expected the problem {e:?}, got {p:?}\n{}",
                self.what,
                self.stopped.log
            );
        }
    }

    fn took(&self) -> Duration {
        self.stopped.took
    }
}

/// `rinit OPTS -- ARGV`.
fn under_rinit(opts: &[&str], argv: Vec<String>) -> Vec<String> {
    let mut v = vec![RINIT.to_string()];
    v.extend(opts.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(argv);
    v
}

/// `sh -c 'ARGV; echo ...'`: a shell that stays PID 1 (it only execs a
/// lone last command), as a shell-form ENTRYPOINT with an echo after it.
fn under_sh(argv: Vec<String>) -> Vec<String> {
    let line = argv
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{line}; echo \"worker exited with status $?\""),
    ]
}

/// The jobs of every Sidekiq run: a long one (2 minutes unless released),
/// a 3 s one, and one that waits 4 s on a child process.
const SIDEKIQ_JOBS: [&str; 3] = ["LongJob:long:120", "SleepJob:short:3", "ChildJob:child:4"];
const SIDEKIQ_FINISH: [&str; 2] = ["short", "child"];
/// The tasks of every Celery run: a long one (acks_late,
/// reject_on_worker_lost) and a 2 s one with Celery's default acks.
const CELERY_JOBS: [&str; 2] = ["long:long:120", "short:short:2"];
const CELERY_FINISH: [&str; 1] = ["short"];

/// Enqueues `jobs`, starts `argv` as PID 1, waits for every job to be
/// running, stops it as the platform would, and reads the outcome.
fn stop_pid1(world: &World, what: &str, argv: Vec<String>) -> Outcome {
    let (jobs, names, finish) = world.jobs();
    world.enqueue(jobs);
    let mut p = Pid1::spawn(world, &argv);
    let log = p.log.clone();
    world.wait_started(
        &names,
        || p.alive(),
        || fs::read_to_string(&log).unwrap_or_default(),
    );
    let stopped = p.stop();
    Outcome::read(world, what, stopped, finish)
}

/// The control every runner gets: the runner under `/bin/sh -c` as PID 1
/// (`timeout` as in [`World::worker`]). The shell ignores SIGTERM (PID 1
/// with no handler), so the runner never hears of the stop and the
/// platform's SIGKILL at the window ends everything: no rinit exit line,
/// the long job not back in the queue. None after a skip line.
fn under_a_shell_as_pid1(test: &str, runner: Runner, timeout: u32) -> Option<(World, Outcome)> {
    let w = World::new(test, runner)?;
    let what = format!("{} under sh -c", runner.name());
    let o = stop_pid1(&w, &what, under_sh(w.worker(timeout)));
    assert_eq!(o.stopped.pid1.as_deref(), Some("sh"), "the shell is PID 1");
    o.assert_fails_with(&[
        "killed by the platform",
        "no rinit exit line",
        "long job not requeued",
    ]);
    assert!(o.took() >= WINDOW, "{:?}", o.took());
    Some((w, o))
}

/// A control whose runner takes longer to requeue than the bound: rinit's
/// 8 s deadline kills it first (exit 137, escalated), the long job not
/// back in the queue.
fn assert_killed_at_rinits_deadline(o: &Outcome) {
    o.assert_fails_with(&[
        "exit status Some(137)",
        "escalated",
        "long job not requeued",
    ]);
    assert!(
        o.took() >= Duration::from_millis(7900) && o.took() < WINDOW,
        "killed at rinit's 8 s deadline: {:?}",
        o.took()
    );
}

// ---- Sidekiq as PID 1 -------------------------------------------------------

/// `--preset sidekiq` with Sidekiq's `-t 5` under `--grace=8s`: TSTP (quiet)
/// at once, TERM at 2 s; the 3 s job and the child-process job finish, the
/// long job is pushed back at TERM + 4.5 s, Sidekiq exits at TERM + 5 s (7 s
/// after the stop, before rinit's deadline), and a fresh Sidekiq completes
/// the long job.
#[test]
fn sidekiq_preset_drains_and_pushes_the_long_job_back() {
    let Some(w) = World::new("sidekiq_preset", Runner::Sidekiq) else {
        return;
    };
    let o = stop_pid1(
        &w,
        "sidekiq --preset sidekiq -t 5",
        under_rinit(&["--preset", "sidekiq", GRACE], w.worker(5)),
    );
    o.assert_clean();
    // TERM at 2 s + Sidekiq's 5 s: never before 7 s, always before 8 s
    // (rinit's deadline; no escalation was checked above).
    assert!(
        o.took() >= Duration::from_millis(6900),
        "Sidekiq waits its -t after the TERM at 2 s: exit after {:?}",
        o.took()
    );
    let log = &o.stopped.log;
    assert!(
        log.contains("Received TSTP, no longer accepting new work"),
        "{log}"
    );
    assert!(log.contains("Pushed 1 jobs back to Redis"), "{log}");
    assert_eq!(
        w.count("long", "start"),
        2,
        "run twice: cut off, then completed"
    );
    assert_eq!(w.parked(), 0, "nothing in the retry set");
}

/// Control: `/bin/sh -c` as PID 1. The shell ignores SIGTERM (PID 1 with no
/// handler), so Sidekiq never hears of the stop, and the platform's SIGKILL
/// at 10 s takes the long job with it: not in Redis at all.
#[test]
fn sidekiq_under_a_shell_as_pid1_loses_the_long_job() {
    let Some((w, o)) = under_a_shell_as_pid1("sidekiq_shell", Runner::Sidekiq, 5) else {
        return;
    };
    assert!(
        !o.stopped.log.contains("Shutting down"),
        "Sidekiq never heard the TERM:\n{}",
        o.stopped.log
    );
    assert_eq!(w.count("long", "done"), 0);
    assert_eq!(w.parked(), 0, "not in the retry set either: lost");
}

/// Control: Sidekiq's `-t 7` past the bound (TERM offset 2 s + t must fit
/// in the 8 s grace less 1 s). Sidekiq would push the long job back at
/// TERM + 6.5 s = 8.5 s; rinit's deadline kills it at 8 s: exit 137 and the
/// job is gone.
#[test]
fn sidekiq_timeout_past_the_bound_loses_the_long_job() {
    let Some(w) = World::new("sidekiq_t7", Runner::Sidekiq) else {
        return;
    };
    let o = stop_pid1(
        &w,
        "sidekiq --preset sidekiq -t 7",
        under_rinit(&["--preset", "sidekiq", GRACE], w.worker(7)),
    );
    assert_killed_at_rinits_deadline(&o);
    assert!(
        !o.stopped.log.contains("Pushed 1 jobs back"),
        "{}",
        o.stopped.log
    );
    assert_eq!(w.parked(), 0, "not in the retry set either: lost");
}

/// Without a preset, rinit's default sends TERM to Sidekiq's whole process
/// group: the `sleep` the child-process job waits on dies of it, so the job
/// fails into the retry set although Sidekiq's `-t 5` would have let it
/// finish. rinit's log names the `sleep` at WARNING and counts it.
#[test]
fn sidekiq_without_preset_the_killed_child_shows_in_rinits_log() {
    let Some(w) = World::new("sidekiq_group_term", Runner::Sidekiq) else {
        return;
    };
    let o = stop_pid1(
        &w,
        "sidekiq, rinit's default (TERM to the group)",
        under_rinit(&[GRACE], w.worker(5)),
    );
    o.assert_fails_with(&["killed_by_forward=1", "child did not finish"]);
    let log = &o.stopped.log;
    let warnings: Vec<&str> = text_phase(log, "forward")
        .into_iter()
        .filter(|l| l.contains(" WARNING forward: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert_eq!(
        text_field(warnings[0], "comm").as_deref(),
        Some("sleep"),
        "{log}"
    );
    assert_eq!(
        text_field(warnings[0], "signal").as_deref(),
        Some("SIGTERM"),
        "{log}"
    );
    assert!(
        log.contains("sleep 4.0 failed"),
        "the job saw its child die:\n{log}"
    );
    assert_eq!(o.stopped.code, Some(0), "Sidekiq's own status stays 0");
    assert_eq!(w.parked(), 1, "the child-process job is in the retry set");
}

// ---- Celery as PID 1 --------------------------------------------------------

/// `--preset celery` under `--grace=8s`: TERM (warm shutdown) to Celery's
/// main process at once, so its pool processes live on and the 2 s task
/// finishes; QUIT (cold shutdown) at 5 s requeues the long task (acks_late,
/// reject_on_worker_lost); exit about 1 s later, before rinit's deadline; a
/// fresh worker completes the long task.
#[test]
fn celery_preset_warm_then_cold_shutdown_requeues_the_long_task() {
    let Some(w) = World::new("celery_preset", Runner::Celery) else {
        return;
    };
    let o = stop_pid1(
        &w,
        "celery --preset celery",
        under_rinit(&["--preset", "celery", GRACE], w.worker(0)),
    );
    o.assert_clean();
    assert!(
        o.took() >= Duration::from_secs(5),
        "the cold shutdown starts at QUIT, 3 s before the 8 s deadline: exit after {:?}",
        o.took()
    );
    let log = &o.stopped.log;
    assert!(log.contains("Warm shutdown"), "{log}");
    assert!(log.contains("Cold shutdown"), "{log}");
    assert!(
        log.contains("Restoring 1 unacknowledged message(s)"),
        "{log}"
    );
    assert!(
        !log.contains("WorkerLostError"),
        "no pool process died: {log}"
    );
    assert_eq!(
        w.count("long", "start"),
        2,
        "run twice: cut off, then completed"
    );
}

/// Control: `/bin/sh -c` as PID 1. Celery never hears the stop; the
/// platform's SIGKILL at 10 s leaves the long task in Redis' unacked hash,
/// where it waits out the visibility timeout (an hour by default) instead
/// of going back to the queue.
#[test]
fn celery_under_a_shell_as_pid1_strands_the_long_task() {
    let Some((w, o)) = under_a_shell_as_pid1("celery_shell", Runner::Celery, 0) else {
        return;
    };
    assert!(
        !o.stopped.log.contains("Warm shutdown"),
        "{}",
        o.stopped.log
    );
    assert_eq!(w.parked(), 1, "stranded in the unacked hash");
    assert_eq!(w.count("long", "done"), 0);
}

/// Control: Celery's own shutdown timeout past the bound. With
/// `worker_soft_shutdown_timeout = 5` the QUIT at 5 s starts a 5 s soft
/// shutdown first; rinit's deadline kills Celery at 8 s, before it can
/// requeue: exit 137, the long task stranded in the unacked hash.
#[test]
fn celery_soft_shutdown_past_the_bound_strands_the_long_task() {
    let Some(w) = World::new("celery_soft5", Runner::Celery) else {
        return;
    };
    let argv = under_rinit(
        &["--preset", "celery", GRACE],
        [
            vec!["/usr/bin/env".to_string(), "SOFT_SHUTDOWN_TIMEOUT=5".into()],
            w.worker(0),
        ]
        .concat(),
    );
    let o = stop_pid1(&w, "celery --preset celery, soft shutdown 5 s", argv);
    assert_killed_at_rinits_deadline(&o);
    assert!(
        o.stopped.log.contains("Initiating Soft Shutdown"),
        "{}",
        o.stopped.log
    );
    assert_eq!(w.parked(), 1, "stranded in the unacked hash");
}

/// Without a preset, rinit's default sends TERM to Celery's whole process
/// group: the pool processes end at once (billiard's handler resets TERM
/// and exits; Celery logs WorkerLostError), and the short task, acked on
/// receipt, is lost. rinit's own log must say so: a WARNING naming each
/// pool process the forwarded signal ended, and their count as
/// `killed_by_forward` on the exit line.
#[test]
fn celery_without_preset_the_killed_pool_shows_in_rinits_log() {
    let Some(w) = World::new("celery_group_term", Runner::Celery) else {
        return;
    };
    let o = stop_pid1(
        &w,
        "celery, rinit's default (TERM to the group)",
        under_rinit(&[GRACE], w.worker(0)),
    );
    o.assert_fails_with(&["short did not finish"]);
    let log = &o.stopped.log;
    assert!(log.contains("WorkerLostError"), "{log}");
    let warnings: Vec<&str> = text_phase(log, "forward")
        .into_iter()
        .filter(|l| l.contains(" WARNING forward: "))
        .collect();
    for l in &warnings {
        assert!(
            l.contains("killed by the forwarded signal (it does not handle it)"),
            "{l}"
        );
        assert_eq!(text_field(l, "signal").as_deref(), Some("SIGTERM"), "{l}");
        assert!(
            text_field(l, "pid").is_some() && text_field(l, "comm").is_some(),
            "{l}"
        );
    }
    let counted: usize = o
        .stopped
        .exit_field("killed_by_forward")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no killed_by_forward on the exit line:\n{log}"));
    assert!(
        (1..=2).contains(&counted) && warnings.len() == counted,
        "the 2 pool processes the TERM ended: {} WARNING lines, killed_by_forward={counted}\n{log}",
        warnings.len()
    );
    assert_eq!(o.stopped.code, Some(0), "Celery's own status stays 0");
    assert_eq!(w.count("short", "start"), 1, "lost: never run again");
}

// ---- Docker -----------------------------------------------------------------

const DEBIAN_IMAGE: &str = "rinit-test/debian:bookworm-minbase";

/// `rinit-test/runners:<hash>` (tests/images/runners.Dockerfile): the
/// Debian base with Ruby/Sidekiq and Python/Celery installed offline from
/// scripts/setup-runners' .debs and wheels, rinit and the jobs. None (after
/// a skip line) without an engine or the setup's files.
fn runners_image(test: &str) -> Option<&'static str> {
    static IMAGE: OnceLock<String> = OnceLock::new();
    if let Some(i) = IMAGE.get() {
        return Some(i);
    }
    if !docker_support::engine(test) {
        return None;
    }
    let debs = setup_dir().join("debs");
    let wheels = setup_dir().join("wheels");
    let ready = docker_support::docker(&["image", "inspect", DEBIAN_IMAGE]).ok()
        && debs.join(".stamp").exists()
        && wheels.join(".stamp").exists();
    if !ready {
        assert!(
            !ci(),
            "{test}: CI=true and no {DEBIAN_IMAGE} or .runners/debs, .runners/wheels (scripts/setup-dist, {SETUP})"
        );
        eprintln!("SKIP {test}: no {DEBIAN_IMAGE} or .runners/debs and wheels ({SETUP})");
        return None;
    }
    assert_static(
        Path::new(RINIT),
        "rinit must be built static (.cargo/config.toml)",
    );
    let image = IMAGE.get_or_init(|| {
        let ctx = TempDir::new("runners-image");
        for (dir, ext, to) in [(&debs, "deb", "debs"), (&wheels, "whl", "wheels")] {
            for e in fs::read_dir(dir).expect("read setup dir") {
                let p = e.expect("dir entry").path();
                if p.extension().is_some_and(|x| x == ext) {
                    let name = p
                        .file_name()
                        .expect("file name")
                        .to_string_lossy()
                        .into_owned();
                    ctx.copy_in(&p, &format!("{to}/{name}"));
                }
            }
        }
        for f in [
            "requirements.txt",
            "sidekiq_jobs.rb",
            "sidekiq_enqueue.rb",
            "celery_tasks.py",
            "celery_enqueue.py",
        ] {
            let to = if f == "requirements.txt" {
                f.to_string()
            } else {
                format!("app/{f}")
            };
            ctx.copy_in(&runners_dir().join(f), &to);
        }
        ctx.copy_in(Path::new(RINIT), "rinit");
        build(
            "rinit-test/runners",
            &root_dir().join("tests/images/runners.Dockerfile"),
            ctx.path(),
            &[("BASE", DEBIAN_IMAGE)],
        )
    });
    Some(image)
}

/// One runner's image: tests/images/<runner>.Dockerfile on the runners image.
fn runner_image(test: &str, runner: Runner) -> Option<String> {
    let base = runners_image(test)?;
    let name = runner.name();
    let ctx = TempDir::new("runner-image");
    Some(build(
        &format!("rinit-test/{name}"),
        &root_dir().join(format!("tests/images/{name}.Dockerfile")),
        ctx.path(),
        &[("BASE", base)],
    ))
}

/// Enqueues the runner's jobs, runs its image (Redis on the host's
/// loopback, the jobs' directory mounted at /jobs), waits for every job to
/// be running, `docker stop`s it (10 s), and reads the outcome.
fn docker_stop(world: &World, what: &str, image: &str) -> Outcome {
    let (jobs, names, finish) = world.jobs();
    world.enqueue(jobs);
    let url = match world.runner {
        Runner::Sidekiq => format!("REDIS_URL={}", world.redis.url()),
        Runner::Celery => format!("BROKER_URL={}", world.redis.url()),
    };
    let c = Container::run(
        what.split_whitespace().next().unwrap_or("runner"),
        &[
            "-v",
            &format!("{}:/jobs", world.jobs.path().display()),
            "-e",
            "JOBS_DIR=/jobs",
            "-e",
            &url,
            image,
        ],
    );
    world.wait_started(&names, || c.state().running, || c.logs());
    let took = c.stop(WINDOW.as_secs() as u32);
    let state = c.state();
    let stopped = Stopped {
        pid1: None,
        killed_by_platform: c.signals_sent().iter().any(|s| s == "9"),
        code: Some(state.exit_code),
        took,
        log: c.logs(),
    };
    Outcome::read(world, what, stopped, finish)
}

/// tests/images/sidekiq.Dockerfile under `docker stop`: rinit's preset, and
/// Sidekiq's `-t` from `RINIT_DRAIN_SECONDS` (5 under `--grace=8s`). Exit 0
/// at about 7 s with no SIGKILL from Docker, the short and child-process
/// jobs finished, the long job back in Redis and completed by a fresh
/// Sidekiq.
#[test]
fn docker_sidekiq_preset_under_docker_stop() {
    let test = "docker_sidekiq_preset_under_docker_stop";
    let Some(w) = World::new(test, Runner::Sidekiq) else {
        return;
    };
    let Some(image) = runner_image(test, Runner::Sidekiq) else {
        return;
    };
    let o = docker_stop(&w, "sidekiq in Docker", &image);
    o.assert_clean();
    let log = &o.stopped.log;
    assert!(
        log.contains("Pushed 1 jobs back to Redis"),
        "Sidekiq's -t came from RINIT_DRAIN_SECONDS:\n{log}"
    );
    assert!(
        o.took() >= Duration::from_millis(6900),
        "TERM at 2 s + -t 5: {:?}",
        o.took()
    );
}

/// tests/images/celery.Dockerfile under `docker stop`: warm shutdown at
/// once, the 2 s task finished, the cold shutdown at 5 s requeues the long
/// task; exit 0 before Docker's SIGKILL; a fresh worker completes it.
#[test]
fn docker_celery_preset_under_docker_stop() {
    let test = "docker_celery_preset_under_docker_stop";
    let Some(w) = World::new(test, Runner::Celery) else {
        return;
    };
    let Some(image) = runner_image(test, Runner::Celery) else {
        return;
    };
    let o = docker_stop(&w, "celery in Docker", &image);
    o.assert_clean();
    assert!(
        o.stopped
            .log
            .contains("Restoring 1 unacknowledged message(s)"),
        "{}",
        o.stopped.log
    );
}
