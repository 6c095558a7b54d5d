//! Issue 18: rinit tells what it knows. The drain budget it hands the child,
//! the termination message it leaves, what it made of `K_SERVICE`, its
//! settings from the environment alone (`docker run --init`), and the cause
//! of a SIGKILL sent by someone else. (The OOM killer's and the deadline's
//! causes are in tests/docker.rs, `sigkill_causes_are_told_apart`, where a
//! memory limit can be set.)
//!
//! Every scenario runs as a real PID 1 and as a subreaper.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

both_modes!(
    the_child_gets_its_drain_budget,
    termination_message_says_why,
    termination_message_never_blocks_or_fails_the_exit,
    k_service_with_a_stated_window_is_knative,
    settings_from_the_environment_alone,
    a_sigkill_from_someone_else_is_other,
);

/// The budget in the child's environment, as `RINIT_DRAIN_MS
/// RINIT_DRAIN_SECONDS` (empty when unset), under `opts`.
fn budget(mode: Mode, opts: &[&str], env: &[(&str, &str)]) -> String {
    let dir = TempDir::new("budget");
    let out = dir.file("budget");
    let done = Rinit::new(mode, &dir)
        .opts(opts.iter().copied())
        .envs(env)
        .cmd([
            "sh",
            "-c",
            &format!("echo \"$RINIT_DRAIN_MS $RINIT_DRAIN_SECONDS\" > {out}"),
        ])
        .run();
    assert_eq!(done.status, 0, "{}", done.stderr);
    fs::read_to_string(&out)
        .expect("budget file")
        .trim()
        .to_string()
}

/// From the signal the child gets to rinit's deadline, less 1 s: the
/// forwarded stop signal (after any pre-stop delay), or a sequence's TERM
/// step. A value inherited from rinit's own environment is replaced; with
/// no deadline there is no budget.
fn the_child_gets_its_drain_budget(mode: Mode) {
    assert_eq!(budget(mode, &["--grace=8s"], &[]), "7000 7");
    assert_eq!(budget(mode, &["--grace=2500ms"], &[]), "1500 1");
    assert_eq!(
        budget(mode, &["--grace=10s", "--pre-stop-delay=3s"], &[]),
        "6000 6"
    );
    assert_eq!(
        budget(mode, &["--preset=sidekiq", "--grace=25s"], &[]),
        "22000 22"
    );
    assert_eq!(
        budget(mode, &["--grace=8s"], &[("RINIT_DRAIN_MS", "99")]),
        "7000 7"
    );
    assert_eq!(budget(mode, &["--grace=none"], &[]), "");
    // No budget: an inherited value does not pass for one.
    assert_eq!(
        budget(
            mode,
            &["--grace=none"],
            &[("RINIT_DRAIN_MS", "99"), ("RINIT_DRAIN_SECONDS", "9")]
        ),
        ""
    );
}

/// The message a platform shows: the status and why, the drain, what the
/// deadline killed; one line, in the file `--termination-log` names.
fn termination_message_says_why(mode: Mode) {
    let dir = TempDir::new("termlog");
    let (log, ready) = (dir.file("termination"), dir.file("ready"));
    let done = Rinit::new(mode, &dir)
        .opts(["--termination-log", &log])
        .cmd(["sh", "-c", "exit 3"])
        .run();
    assert_eq!(done.status, 3);
    assert_eq!(
        fs::read_to_string(&log).expect("message"),
        "rinit: exit status 3: the command exited with code 3"
    );
    // Killed at the deadline, by the variable this time.
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace=1s"])
        .env("RINIT_TERMINATION_LOG", &log)
        .probe(["--ready", &ready, "--ignore", "TERM"])
        .spawn();
    run.ready(&ready);
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 137);
    let message = fs::read_to_string(&log).expect("message");
    assert!(
        message.starts_with(
            "rinit: exit status 137: the command was killed at rinit's 1s deadline; drain 1"
        ) && message.contains("; killed at the deadline: probe (pid ")
            && !message.contains('\n'),
        "{message:?}"
    );
}

/// A path that cannot be written is one WARNING, and the exit keeps its
/// status and its time; a FIFO nobody reads does not hold the exit; `none`
/// writes nothing.
fn termination_message_never_blocks_or_fails_the_exit(mode: Mode) {
    let dir = TempDir::new("termlog-bad");
    let done = Rinit::new(mode, &dir)
        .opts(["--termination-log", &dir.file("no/such/dir/file")])
        .cmd(["sh", "-c", "exit 4"])
        .run();
    assert_eq!(done.status, 4);
    let warned: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("cannot write the termination message"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", done.stderr);
    assert!(warned[0].contains(" WARNING exit: "), "{}", warned[0]);
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let t0 = Instant::now();
    let done = Rinit::new(mode, &dir)
        .opts(["--termination-log", &fifo.to_string_lossy()])
        .cmd(["true"])
        .run();
    assert_eq!(done.status, 0);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let file = dir.file("off");
    let done = Rinit::new(mode, &dir)
        .opts(["--termination-log=none"])
        .env("RINIT_TERMINATION_LOG", &file)
        .cmd(["true"])
        .run();
    assert_eq!(done.status, 0);
    assert!(!std::path::Path::new(&file).exists(), "none writes nothing");
}

/// `K_SERVICE` alone, with a stated window longer than Cloud Run's 10 s:
/// Knative, the window believed, and a line saying so; without one, Cloud
/// Run's fixed window, with a line saying how to state Knative's.
fn k_service_with_a_stated_window_is_knative(mode: Mode) {
    let dir = TempDir::new("kservice");
    let done = Rinit::new(mode, &dir)
        .opts(["--grace=55s", "--log-format=text"])
        .envs(&[
            ("K_SERVICE", "api"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("RINIT_PLATFORM_KILL_AFTER", "60"),
        ])
        .cmd(["true"])
        .run();
    assert_eq!(done.status, 0, "{}", done.stderr);
    assert_eq!(
        done.start_fields(false, &["platform", "kill_after", "window", "grace"]),
        ["knative", "1m", "known", "55s"]
    );
    let note: Vec<&str> = text_phase(&done.stderr, "start")
        .into_iter()
        .filter(|l| l.contains("K_SERVICE is set"))
        .collect();
    assert!(
        note.len() == 1 && note[0].contains("so this is Knative"),
        "{}",
        done.stderr
    );
    let done = Rinit::new(mode, &dir)
        .opts(["--log-format=text"])
        .env("K_SERVICE", "api")
        .cmd(["true"])
        .run();
    assert_eq!(
        done.start_fields(false, &["platform", "kill_after", "window", "grace"]),
        ["cloud-run", "10s", "known", "8s"]
    );
    assert!(
        done.stderr
            .contains("taken as Cloud Run, whose fixed 10s window is enforced"),
        "{}",
        done.stderr
    );
    // Worker pools are Cloud Run for certain: a longer stated window is refused.
    let env = [
        ("K_SERVICE", "api"),
        ("CLOUD_RUN_WORKER_POOL", "pool"),
        ("RINIT_PLATFORM_KILL_AFTER", "60"),
    ];
    refused(mode, &dir, &[], &env);
}

/// Under `docker run --init` only the environment reaches rinit: the
/// preset, a stop sequence and the pre-stop delay come from variables too,
/// and a refused variable is named.
fn settings_from_the_environment_alone(mode: Mode) {
    let dir = TempDir::new("env-settings");
    let files = ProbeFiles::in_dir(&dir);
    let mut run = Rinit::new(mode, &dir)
        .envs(&[
            ("RINIT_PRESET", "celery"),
            ("RINIT_GRACE", "4"),
            ("RINIT_PRE_STOP_DELAY", "500ms"),
            ("RINIT_LOG_FORMAT", "json"),
        ])
        .probe(files.args(&["--exit-on", "QUIT:0:0"]))
        .spawn();
    let pid = run.ready(&files.ready);
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 0, "{}", done.stderr);
    assert_eq!(files.record().of(pid), ["SIGTERM", "SIGQUIT"]);
    let stages = done.json();
    let stages = phase(&stages, "stage");
    assert_eq!(stages.len(), 2, "{}", done.stderr);
    assert_eq!(
        stages[0]["target"],
        format!("pid {pid}"),
        "a preset signals the main process"
    );
    let env = [("RINIT_STOP_SEQUENCE", "TERM@0s,QUIT@1s")];
    let err = refused(mode, &dir, &["--preset=sidekiq"], &env);
    assert!(
        err.contains("--preset and RINIT_STOP_SEQUENCE cannot be used together"),
        "{err}"
    );
    let err = refused(mode, &dir, &[], &[("RINIT_PRESET", "nope")]);
    assert!(
        err.starts_with("rinit: RINIT_PRESET='nope' is not one of"),
        "{err}"
    );
}

/// The main child killed by SIGKILL from outside rinit: the cause is
/// `other` where the memory cgroup's count can be read (it did not move),
/// `unknown` where it cannot; never `oom`, never `deadline`.
fn a_sigkill_from_someone_else_is_other(mode: Mode) {
    let dir = TempDir::new("other-kill");
    let ready = dir.file("ready");
    let mut run = Rinit::new(mode, &dir)
        .opts(["--log-format=json"])
        .probe(["--ready", &ready])
        .spawn();
    run.ready(&ready);
    kill(run.child_pid(), libc::SIGKILL);
    let done = run.finish(SOON);
    assert_eq!(done.status, 137);
    let lines = done.json();
    let exit = &phase(&lines, "exit")[0];
    let expected = if memory_cgroup_count_readable() {
        "other"
    } else {
        "unknown"
    };
    assert_eq!(exit["cause"], expected, "{}", done.stderr);
    assert_eq!(phase(&lines, "child_exit")[0]["cause"], expected);
}

/// Whether this machine shows the test's memory cgroup an OOM-kill count
/// (as rinit looks for it: v1's `memory.oom_control`, else v2's
/// `memory.events`).
fn memory_cgroup_count_readable() -> bool {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cgroup.lines().any(|l| {
        let f: Vec<&str> = l.splitn(3, ':').collect();
        match f.as_slice() {
            [_, c, path] if c.split(',').any(|c| c == "memory") => {
                fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"))
                    .is_ok_and(|t| t.contains("oom_kill "))
            }
            ["0", "", path] => fs::metadata(format!("/sys/fs/cgroup{path}/memory.events")).is_ok(),
            _ => false,
        }
    })
}
