//! Issue 21: the deadline holds whatever happens, and rinit signals only its
//! own. Each case of the issue against the real binary, with the
//! well-behaved twin beside it:
//!
//! 1. a process whose name is not UTF-8 (cut mid-character at 15 bytes) is
//!    seen: killed at the grace, sent the straggler TERM, named escaped;
//!    also when /proc is not rinit's namespace's;
//! 2. a stalled log reader does not stop PID 1: the deadline holds, an
//!    exited child is reaped, and dropped lines are counted;
//! 3. a kill that fails (rinit as uid 1000, a root process beside it) is an
//!    ERROR, and rinit exits soon after its deadline all the same;
//! 4. a reused pid 2 (the child's old group id) gets none of rinit's signals;
//! 5. a file that exists but cannot run names what is missing, exit 126;
//! 6. a text log line cannot be split by a name or a path.
//!
//! A property test feeds names and paths of arbitrary bytes through the
//! same paths (tests/hardening.rs, `arbitrary_names_*`).

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rinit_test_support::Rng;

both_modes!(
    odd_name_daemon_is_killed_at_the_grace,
    good_name_daemon_is_killed_at_the_grace,
    odd_name_straggler_gets_its_term,
    stalled_log_reader_does_not_hold_the_deadline,
    stalled_log_reader_does_not_hold_a_clean_exit,
    stalled_log_reader_loses_no_signal_and_counts_dropped_lines,
    a_reader_that_keeps_up_drops_nothing,
    lines_waiting_for_a_slow_reader_are_not_split_by_the_childs_output,
    a_process_whose_main_thread_exited_is_seen,
    missing_interpreters_are_126_and_named,
    text_lines_cannot_be_split,
    arbitrary_names_are_seen_and_stay_one_line,
);

/// A name the kernel cuts at 15 bytes in the middle of a two-byte 'é':
/// `worker-x` and three and a half of them.
const ODD: &[u8] = "worker-xéééé".as_bytes();

/// How `ODD` shows in rinit's log: the valid part as is, the stray byte
/// escaped.
const ODD_SHOWN: &str = "worker-xééé\\xc3";

/// The probe under another name: a symlink called `name` (comm is the
/// exec'd file's base name).
fn probe_named(dir: &TempDir, name: &[u8]) -> PathBuf {
    let link = dir.path().join(std::ffi::OsStr::from_bytes(name));
    symlink(probe_bin(), &link).expect("symlink to the probe");
    link
}

/// A setsid daemon called `name` that ignores TERM, left behind when the
/// main child exits on TERM: rinit must see it and kill it at the grace,
/// naming it in the log, and exit with the main child's status.
fn daemon_killed_at_the_grace(mode: Mode, name: &[u8], shown: &str) {
    let dir = TempDir::new("oddname");
    let files = ProbeFiles::in_dir(&dir);
    let probe = probe_named(&dir, name);
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace=2s", "--log-format=json"])
        .cmd([probe.into_os_string()])
        .cmd(files.args(&["--daemon", "--exit-on", "TERM:0:0"]))
        .spawn();
    run.ready(&files.ready);
    run.wait_until("the daemon line", || files.record().daemon.is_some());
    let daemon = files.record().daemon.expect("daemon pid");
    let done = run.stop_expecting(
        libc::SIGTERM,
        0,
        Duration::from_secs(2)..Duration::from_millis(3500),
        "the main child's status, once the daemon is killed at the 2s grace",
    );
    let lines = done.json();
    let kill = phase(&lines, "kill")
        .into_iter()
        .find(|l| l["pid"] == daemon)
        .unwrap_or_else(|| panic!("no kill line for the daemon {daemon}\n{}", done.stderr));
    assert_eq!(kill["comm"], shown, "{}", done.stderr);
    assert_eq!(kill["severity"], "WARNING");
}

fn odd_name_daemon_is_killed_at_the_grace(mode: Mode) {
    daemon_killed_at_the_grace(mode, ODD, ODD_SHOWN);
}

fn good_name_daemon_is_killed_at_the_grace(mode: Mode) {
    daemon_killed_at_the_grace(mode, b"goodname", "goodname");
}

/// The main child exits on its own, leaving a daemon with an odd name that
/// finishes on SIGTERM. It must get the straggler TERM, so rinit exits as
/// soon as it is gone, even with `--grace=none` (where nothing else would
/// ever end it). As PID 1 also with the test's /proc instead of the
/// namespace's own.
fn odd_name_straggler_gets_its_term(mode: Mode) {
    let foreign = [false, true];
    for foreign_proc in foreign.iter().filter(|&&f| !f || mode == Mode::Pid1) {
        let dir = TempDir::new("oddstraggler");
        let rec = dir.file("rec");
        let probe = probe_named(&dir, ODD);
        let mut rinit = Rinit::new(mode, &dir)
            .opts(["--grace=none", "--log-format=json"])
            .cmd([probe.into_os_string()])
            .cmd(["--daemon-exits", "--record", &rec, "--exit", "3"]);
        if *foreign_proc {
            rinit = rinit.foreign_proc();
        }
        let done = rinit.spawn().finish(SOON);
        let what = format!("foreign /proc: {foreign_proc}\n{}", done.stderr);
        assert_eq!(done.status, 3, "{what}");
        assert!(
            done.elapsed < Duration::from_secs(10),
            "{:?} {what}",
            done.elapsed
        );
        let r = Record::read(&rec);
        let daemon = r.daemon.expect("daemon pid");
        assert_eq!(r.of(daemon), ["SIGTERM"], "{what}");
        let lines = done.json();
        let sweep = phase(&lines, "forward");
        assert!(
            sweep.iter().any(|l| l["count"] == 1),
            "one straggler TERMed: {what}"
        );
    }
}

// ---- 2. a stalled log reader ----------------------------------------------

/// A pipe whose write end becomes rinit's stderr, and whose read end the
/// test holds: it can fill the pipe to the brim while rinit runs (rinit's
/// next write would then block: a blocking write would stop PID 1 there),
/// and start reading only later.
struct StalledPipe {
    read: fs::File,
    /// A second write end, to fill the pipe with; closed once it is full.
    filler: Option<OwnedFd>,
}

/// The lines the test fills the pipe with, taken out again by the reader.
const JUNK: &[u8; 64] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";

impl StalledPipe {
    fn new() -> (StalledPipe, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills fds; both are owned below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (read, write) =
            unsafe { (fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let filler = Some(write.try_clone().expect("dup"));
        (StalledPipe { read, filler }, write)
    }

    /// Fills the pipe until no junk line fits. `RWF_NOWAIT` makes the
    /// test's writes non-blocking without touching the file's flags, which
    /// rinit shares (`O_NONBLOCK` would change how rinit's writes behave).
    fn fill(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.filler.take().expect("filled once");
        loop {
            let iov = libc::iovec {
                iov_base: JUNK.as_ptr() as *mut libc::c_void,
                iov_len: JUNK.len(),
            };
            // SAFETY: a write of a static buffer.
            let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN),
                    "filling the pipe: {e}"
                );
                return;
            }
            assert_eq!(n as usize, JUNK.len(), "a junk line is written whole");
        }
    }

    /// Starts reading after `stall`, in a thread; returns what rinit wrote
    /// (the junk taken out) once the pipe closes.
    fn read_after(mut self, stall: Duration) -> std::thread::JoinHandle<String> {
        self.filler = None;
        std::thread::spawn(move || {
            std::thread::sleep(stall);
            let mut all = String::new();
            let mut raw = Vec::new();
            self.read.read_to_end(&mut raw).expect("read the pipe");
            let junk = std::str::from_utf8(JUNK).expect("ascii");
            for line in String::from_utf8_lossy(&raw).split_inclusive('\n') {
                if line != junk {
                    all.push_str(line);
                }
            }
            all
        })
    }
}

/// How a stop under a stalled log reader ended: rinit's exit, how long
/// after the stop, its termination message, and what reached the reader.
struct StalledStop {
    done: Done,
    took: Duration,
    /// `--termination-log`: written at exit whatever stderr does, so it is
    /// the record of how the drain ended. Nothing rinit logs during the
    /// drain can reach the reader: the pipe is full from before the stop,
    /// and the reader comes back 6 s later, long after rinit's exit (whose
    /// last flush waits 200 ms at most).
    message: String,
    /// For failure messages: the message, and what the reader got (the junk
    /// taken out).
    what: String,
}

/// Runs the probe with `child` (how it takes TERM) under `rinit --grace=2s
/// -v`, its stderr a pipe filled to the brim whose reader stalls 6 s, and
/// stops it.
fn stop_under_a_stalled_reader(mode: Mode, label: &str, child: [&str; 2]) -> StalledStop {
    let dir = TempDir::new(label);
    let ready = dir.file("ready");
    let message = dir.file("termination");
    let (mut pipe, stderr) = StalledPipe::new();
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace=2s", "-v", "--termination-log", &message])
        .stderr_fd(stderr)
        .probe(["--ready", &ready].into_iter().chain(child))
        .spawn();
    run.ready(&ready);
    pipe.fill();
    let reader = pipe.read_after(Duration::from_secs(6));
    let (done, took) = run.stop(libc::SIGTERM);
    let message = dir.read("termination");
    let log = reader.join().expect("reader");
    StalledStop {
        done,
        took,
        what: format!("termination message: {message:?}\nthe reader got:\n{log}"),
        message,
    }
}

/// The reader stalls 6 s; the child ignores TERM. rinit must kill it at its
/// 2 s grace, not when the reader comes back, and exit 137 at once. The
/// status, the time and the termination message (the main child killed at
/// the deadline, named) are the proof; the log cannot be, see `StalledStop`.
fn stalled_log_reader_does_not_hold_the_deadline(mode: Mode) {
    let s = stop_under_a_stalled_reader(mode, "stall-deadline", ["--ignore", "TERM"]);
    let what = &s.what;
    assert_eq!(s.done.status, 137, "{what}");
    assert!(
        s.took >= Duration::from_secs(2) && s.took < Duration::from_millis(3500),
        "exit {:?} after the stop (grace 2s, reader stalled 6s)\n{what}",
        s.took
    );
    assert!(
        s.message
            .starts_with("rinit: exit status 137: the command was killed at rinit's 2s deadline; ")
            && s.message.contains("; killed at the deadline: probe (pid "),
        "{what}"
    );
}

/// The reader stalls 6 s; the child exits 0 on TERM at once. rinit must
/// reap it and exit 0 at once: not wait for the reader, not reach its
/// deadline, not call the exited child killed. The status, the time and
/// the termination message (an exit with code 0, nothing killed) are the
/// proof; the log cannot be, see `StalledStop`.
fn stalled_log_reader_does_not_hold_a_clean_exit(mode: Mode) {
    let s = stop_under_a_stalled_reader(mode, "stall-clean", ["--exit-on", "TERM:0:0"]);
    let what = &s.what;
    assert_eq!(s.done.status, 0, "{what}");
    assert!(
        s.took < Duration::from_secs(1),
        "exit {:?} after the stop\n{what}",
        s.took
    );
    assert!(
        s.message
            .starts_with("rinit: exit status 0: the command exited with code 0; drain ")
            && !s.message.contains("killed"),
        "{what}"
    );
}

/// A 3 s stall while 400 real-time signals are forwarded (two debug lines
/// each, far more than the backlog holds): every signal still reaches the
/// child at once, and once the reader is back the log says how many lines
/// were dropped; every line that did arrive is whole JSON.
fn stalled_log_reader_loses_no_signal_and_counts_dropped_lines(mode: Mode) {
    let (log, got) = signals_under_a_reader(mode, 400, Some(Duration::from_secs(3)));
    let lines = json_lines(&log);
    let dropped: Vec<_> = phase(&lines, "log");
    assert_eq!(dropped.len(), 1, "one report\n{log}");
    assert_eq!(dropped[0]["severity"], "WARNING");
    let n = dropped[0]["dropped"].as_u64().expect("dropped count");
    let forwarded = lines
        .iter()
        .filter(|l| l["message"] == "forwarded" && l["signal"] == "SIGRTMIN+1")
        .count() as u64;
    assert!(n > 0, "{log}");
    assert_eq!(got, 400, "signals reached the child");
    assert!(
        forwarded < 400,
        "lines were dropped, not queued without bound"
    );
    assert_eq!(phase(&lines, "exit").len(), 1, "{log}");
}

/// The twin: a reader that keeps up gets every line and no report. (100
/// signals: their 200 lines fit the pipe, however late the reading thread
/// is scheduled.)
fn a_reader_that_keeps_up_drops_nothing(mode: Mode) {
    let (log, got) = signals_under_a_reader(mode, 100, None);
    let lines = json_lines(&log);
    assert!(phase(&lines, "log").is_empty(), "{log}");
    let forwarded = lines
        .iter()
        .filter(|l| l["message"] == "forwarded" && l["signal"] == "SIGRTMIN+1")
        .count();
    assert_eq!((got, forwarded), (100, 100), "{log}");
}

/// Runs the probe under `rinit -v` with stderr on a pipe that stalls for
/// `stall` (or not at all), sends `n` SIGRTMIN+1 (queued, never merged)
/// during it, then stops rinit. Returns rinit's log and how many of the
/// signals the probe recorded.
fn signals_under_a_reader(mode: Mode, n: usize, stall: Option<Duration>) -> (String, usize) {
    let dir = TempDir::new("stall-signals");
    let files = ProbeFiles::in_dir(&dir);
    let (mut pipe, stderr) = StalledPipe::new();
    let mut run = Rinit::new(mode, &dir)
        .opts(["-v", "--log-format=json"])
        .stderr_fd(stderr)
        .probe(files.args(&["--exit-on", "TERM:0:0"]))
        .spawn();
    let pid = run.ready(&files.ready);
    if stall.is_some() {
        pipe.fill();
    }
    let reader = pipe.read_after(stall.unwrap_or(Duration::ZERO));
    let rt1 = libc::SIGRTMIN() + 1;
    let t0 = Instant::now();
    for _ in 0..n {
        run.signal(rt1);
    }
    let name = sig_name(rt1);
    run.wait_until("every signal at the probe", || {
        files
            .record()
            .of(pid)
            .iter()
            .filter(|s| **s == name)
            .count()
            == n
    });
    if let Some(stall) = stall {
        assert!(
            t0.elapsed() < stall,
            "forwarding waited for the log reader: {:?}",
            t0.elapsed()
        );
        std::thread::sleep(stall.saturating_sub(t0.elapsed()) + Duration::from_millis(500));
    }
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 0);
    let got = files
        .record()
        .of(pid)
        .iter()
        .filter(|s| **s == name)
        .count();
    (reader.join().expect("reader"), got)
}

// ---- 3. a kill that fails ---------------------------------------------------

/// rinit as PID 1 runs as uid 1000; a root process joins its namespace
/// (`nsenter`, as `docker exec` would). At the deadline rinit cannot kill
/// it: the log must say so (an ERROR naming it, no "SIGKILL" line for it),
/// and rinit must exit soon after its grace all the same, with the main
/// child's status; the kernel then ends the root process with the
/// namespace. The twin: the same process as uid 1000 is killed.
#[test]
fn unkillable_process_is_named_and_rinit_exits_after_its_grace() {
    for root in [true, false] {
        let dir = TempDir::new("eperm");
        let ready = dir.file("ready");
        let mut run = Rinit::new(Mode::Pid1, &dir)
            .wrapped(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"])
            .opts(["--grace=3s", "--log-format=json"])
            .probe(["--ready", &ready, "--ignore", "TERM"])
            .spawn();
        run.ready(&ready);
        let rinit = run.rinit_pid();
        let mut joiner = Command::new("nsenter");
        joiner.args(["-t", &rinit.to_string(), "-p", "-m", "--"]);
        if !root {
            joiner.args(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]);
        }
        let mut nsenter = joiner.args(["sleep", "60"]).spawn().expect("nsenter sleep");
        let nsenter_pid = nsenter.id() as i32;
        let mut sleep = None;
        run.wait_until("sleep in rinit's namespace", || {
            sleep = children(nsenter_pid)
                .into_iter()
                .find(|s| s.comm == "sleep");
            sleep.is_some()
        });
        let sleep = sleep.expect("sleep");
        let (done, took) = run.stop(libc::SIGTERM);
        let what = format!("root: {root}, exit {took:?}\n{}", done.stderr);
        // Gone with the namespace, if rinit could not kill it.
        poll(
            "the sleep to be gone",
            SOON,
            || what.clone(),
            || (!alive(sleep.pid, sleep.starttime)).then_some(()),
        );
        let _ = nsenter.wait();
        assert_eq!(done.status, 137, "{what}");
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_millis(4500),
            "grace 3s: {what}"
        );
        let lines = done.json();
        let about_sleep: Vec<_> = phase(&lines, "kill")
            .into_iter()
            .filter(|l| l["comm"] == "sleep")
            .collect();
        if root {
            assert!(
                about_sleep
                    .iter()
                    .any(|l| l["severity"] == "ERROR" && l["message"] == "cannot SIGKILL"),
                "{what}"
            );
            assert!(
                about_sleep.iter().all(|l| l["message"] != "SIGKILL"),
                "a failed kill logged as done: {what}"
            );
            assert!(
                about_sleep.iter().any(|l| l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("still there after SIGKILL"))),
                "{what}"
            );
        } else {
            assert!(
                about_sleep.iter().any(|l| l["message"] == "SIGKILL"),
                "{what}"
            );
            assert!(
                phase(&lines, "kill")
                    .iter()
                    .all(|l| l["severity"] != "ERROR"),
                "{what}"
            );
        }
        assert!(
            !done.stderr.contains("terminating what is left"),
            "no straggler sweep reads as a new grace after the kill: {what}"
        );
    }
}

// ---- 4. a reused pid ------------------------------------------------------

/// The main child (pid 2, so group 2) quits at the first step of a stop
/// sequence, leaving a TERM-ignoring daemon in its own session. An
/// unrelated session leader is then given pid 2 (`ns_last_pid`), so it leads
/// a group 2 too. Nothing rinit sends from then on may reach it: not the
/// forwarded USR1 and HUP, not the sequence's TERM step (sent to "the
/// child's group").
#[test]
fn a_reused_group_id_gets_nothing() {
    let dir = TempDir::new("reuse");
    let files = ProbeFiles::in_dir(&dir);
    let (new_rec, new_ready) = (dir.file("new-rec"), dir.file("new-ready"));
    let mut run = Rinit::new(Mode::Pid1, &dir)
        .opts([
            "-v",
            "--grace=none",
            "--stop-sequence=USR2@0s,TERM@1500ms",
            "--log-format=json",
        ])
        .probe(files.args(&["--daemon", "--exit-on", "USR2:0:0"]))
        .spawn();
    assert_eq!(run.ready(&files.ready), 2);
    run.wait_until("the daemon line", || files.record().daemon.is_some());
    run.signal(libc::SIGTERM);
    let t0 = Instant::now();
    // The main child is gone once rinit TERMs the daemon (which ignores it).
    run.wait_log("main child gone", 1);
    // Past the clock tick (10 ms) of the reap: rinit's proof that a group is
    // still the child's counts start times in ticks (supervisor.rs,
    // `members_now`).
    std::thread::sleep(Duration::from_millis(50));
    let rinit = run.rinit_pid();
    // The forked leader writes to a file, not nsenter's pipes, so they
    // close when setsid returns.
    let script = format!(
        "echo 1 > /proc/sys/kernel/ns_last_pid && exec setsid -f {} --record {new_rec} --ready {new_ready} </dev/null >{} 2>&1",
        probe_bin().display(),
        dir.file("new-out")
    );
    let out = rinit_test_support::run(
        Command::new("nsenter").args([
            "-t",
            &rinit.to_string(),
            "-p",
            "-m",
            "--",
            "sh",
            "-c",
            &script,
        ]),
        SOON,
    );
    assert!(out.ok(), "nsenter: {out:?}");
    assert_eq!(
        run.wait_file(&new_ready),
        "2",
        "the new session leader must get pid 2"
    );
    run.signal(libc::SIGUSR1);
    run.signal(libc::SIGHUP);
    // The TERM step is due 1.5 s after the stop.
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "too slow to test the step"
    );
    run.wait_log("nothing left to signal", 3);
    let got = Record::read(&new_rec).of(2);
    let log = run.stderr();
    assert!(got.is_empty(), "the unrelated group 2 got {got:?}\n{log}");
    let nothing = log.matches("nothing left to signal").count();
    assert_eq!(
        nothing, 3,
        "USR1, HUP and the TERM step went nowhere\n{log}"
    );
}

/// The twin of `a_reused_group_id_gets_nothing`: the child's group still
/// has a member after the child is reaped (a grandchild), so what rinit
/// forwards still reaches it.
#[test]
fn a_group_outliving_its_leader_still_gets_signals() {
    let dir = TempDir::new("outlive");
    let rec = dir.file("rec");
    let mut run = Rinit::new(Mode::Pid1, &dir)
        .opts(["--grace=none", "--log-format=json"])
        .probe(["--grandchild", "--record", &rec, "--exit", "0"])
        .spawn();
    run.wait_log("main child gone", 1);
    let gc = Record::read(&rec).grandchild.expect("grandchild pid");
    run.wait_until("the straggler TERM", || {
        Record::read(&rec).of(gc) == ["SIGTERM"]
    });
    run.signal(libc::SIGUSR1);
    run.wait_until("USR1 at the grandchild", || {
        Record::read(&rec).of(gc) == ["SIGTERM", "SIGUSR1"]
    });
}

// ---- 5. files that exist and cannot run -------------------------------------

/// Scripts whose interpreter is missing, or has a Windows line ending, are
/// 126 with the interpreter named. The twins: a good script runs, a missing
/// command is 127.
fn missing_interpreters_are_126_and_named(mode: Mode) {
    let dir = TempDir::new("interp");
    let cases = [
        (
            dir.executable("interp.sh", "#!/nonexistent/interp\nexit 0\n"),
            126,
            "its interpreter '/nonexistent/interp' was not found",
        ),
        (
            dir.executable("crlf.sh", "#!/bin/sh\r\nexit 0\r\n"),
            126,
            "its interpreter '/bin/sh\\r' was not found",
        ),
        (dir.executable("good.sh", "#!/bin/sh\nexit 7\n"), 7, ""),
        (dir.file("missing"), 127, "command not found"),
    ];
    for (path, status, needle) in cases {
        let done = Rinit::new(mode, &dir).cmd([&path]).run();
        assert_eq!(done.status, status, "{path}\n{}", done.stderr);
        assert!(done.stderr.contains(needle), "{path}\n{}", done.stderr);
        assert_eq!(
            text_phase(&done.stderr, "spawn").len(),
            usize::from(!needle.is_empty())
        );
    }
}

/// A root holding only the static rinit, a script with no `#!` line (no
/// /bin/sh to run it) and a dynamically linked program (coreutils' env)
/// whose loader is not there: 126, naming what is missing.
#[test]
fn without_sh_or_loader_the_missing_part_is_named() {
    let root = TempDir::new("interp-root");
    root.copy_in(&rinit_bin(), "rinit");
    root.copy_in(std::path::Path::new("/usr/bin/env"), "env");
    root.executable("plain.sh", "exit 0\n");
    for (file, needle) in [
        (
            "/plain.sh",
            "it has no #! line, and there is no /bin/sh to run it with",
        ),
        (
            "/env",
            "its loader (ELF interpreter) '/lib64/ld-linux-x86-64.so.2' was not found",
        ),
    ] {
        let out = rinit_test_support::run(
            Command::new("chroot")
                .arg(root.path())
                .args(["/rinit", "--", file])
                .env_clear()
                .env("PATH", PATH),
            SOON,
        );
        let err = &out.stderr;
        assert_eq!(out.code, Some(126), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
}

// ---- 6. one event, one line --------------------------------------------------

/// A command path and a process name with a newline and an escape in them
/// cannot split a text log line or fake one: every line starts as rinit's
/// lines do, and the escaped forms are there.
fn text_lines_cannot_be_split(mode: Mode) {
    let dir = TempDir::new("forge");
    // The spawn error quotes the path.
    let forged = format!("{}/a\nrinit INFO exit: fake", dir.path().display());
    let done = Rinit::new(mode, &dir).cmd([&forged]).run();
    assert_eq!(done.status, 127);
    one_event_per_line(&done.stderr);
    assert!(
        done.stderr.contains("/a\\nrinit INFO exit: fake'"),
        "{}",
        done.stderr
    );
    // The kill line names the process: 'ev\nrinit\x1b[2J' (15 bytes kept).
    let probe = probe_named(&dir, b"ev\nrinit\x1b[2Jxyz");
    let ready = dir.file("ready");
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace=1s"])
        .cmd([probe.into_os_string()])
        .cmd(["--ready", &ready, "--ignore", "TERM"])
        .spawn();
    run.ready(&ready);
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 137);
    one_event_per_line(&done.stderr);
    let kill = text_phase(&done.stderr, "kill");
    assert_eq!(kill.len(), 1, "{}", done.stderr);
    assert!(
        kill[0].contains(r#"comm="ev\nrinit\u{1b}[2Jxyz""#),
        "{}",
        kill[0]
    );
}

/// Every line of a text log is one of rinit's: a timestamp, then (after an
/// optional `+elapsed`) `rinit SEVERITY phase:`.
fn one_event_per_line(log: &str) {
    for line in log.lines() {
        let mut words = line.split(' ');
        let time = words.next().unwrap_or_default();
        assert!(
            time.len() == 24 && time.ends_with('Z'),
            "not a log line: {line:?}\n{log}"
        );
        let mut next = words.next().unwrap_or_default();
        if next.starts_with('+') {
            next = words.next().unwrap_or_default();
        }
        assert_eq!(next, "rinit", "{line:?}");
    }
}

// ---- property: names of arbitrary bytes -------------------------------------

/// Names of random bytes (any but '/' and NUL, which a file name cannot
/// hold), each given to a process that ignores TERM: at the deadline every
/// one must be seen and named, in JSON exactly as the kernel cut it (15
/// bytes) with each byte that is not UTF-8 written `\xNN`, and the text log
/// must stay one event per line. (The unit tests in src/log.rs and
/// src/procfs.rs run the same property over thousands of names without
/// processes.)
fn arbitrary_names_are_seen_and_stay_one_line(mode: Mode) {
    const N: usize = 24;
    // A fixed seed: the same names every run.
    let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15);
    for json in [true, false] {
        let dir = TempDir::new("arbitrary");
        fs::create_dir(dir.join("links")).expect("links dir");
        fs::create_dir(dir.join("r")).expect("ready dir");
        let mut expected = Vec::new();
        for i in 0..N {
            let mut name = format!("{i:02}").into_bytes();
            for _ in 0..rng.between(0, 19) {
                let b = rng.between(1, 255) as u8;
                name.push(if b == b'/' { b'\n' } else { b });
            }
            let link = dir.join("links").join(std::ffi::OsStr::from_bytes(&name));
            symlink(probe_bin(), &link).expect("symlink");
            expected.push(shown(&name[..name.len().min(15)]));
        }
        let script = format!(
            "n=0; for f in \"$0\"/links/*; do \"$f\" --ignore TERM --ready \"$0/r/$n\" & n=$((n+1)); done; exec {} --ignore TERM --ready \"$0/ready\"",
            probe_bin().display()
        );
        let mut rinit = Rinit::new(mode, &dir).opts(["--grace=1s"]);
        if json {
            rinit = rinit.opts(["--log-format=json"]);
        }
        let mut run = rinit.cmd(["sh", "-c", &script, &dir.file("")]).spawn();
        run.ready(&dir.file("ready"));
        run.wait_until("every named process ready", || {
            fs::read_dir(dir.join("r")).map(|d| d.count()).unwrap_or(0) == N
        });
        let (done, _) = run.stop(libc::SIGTERM);
        assert_eq!(done.status, 137, "{}", done.stderr);
        if json {
            let lines = done.json();
            let mut named: Vec<String> = phase(&lines, "kill")
                .iter()
                .filter(|l| l["message"] == "SIGKILL")
                .filter_map(|l| l["comm"].as_str().map(str::to_string))
                .filter(|c| c != "probe")
                .collect();
            named.sort();
            expected.sort();
            assert_eq!(named, expected, "{}", done.stderr);
        } else {
            one_event_per_line(&done.stderr);
            assert_eq!(
                text_phase(&done.stderr, "kill").len(),
                N + 1,
                "{}",
                done.stderr
            );
        }
    }
}

/// How a name is expected in the log, written here independently of
/// rinit's code: valid UTF-8 as is, every other byte as `\xNN`.
fn shown(name: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = name;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).expect("valid part"));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

/// The child writes its own lines to the same stderr (a line a
/// millisecond) while rinit's lines wait for a reader that had stalled.
/// However the reader takes them (3000 bytes at a time here, ending
/// anywhere), each of rinit's lines arrives whole: what waits goes out in
/// whole lines of at most PIPE_BUF, which a pipe never splits.
fn lines_waiting_for_a_slow_reader_are_not_split_by_the_childs_output(mode: Mode) {
    let dir = TempDir::new("interleave");
    let (mut pipe, stderr) = StalledPipe::new();
    let child_line = format!("CHILD{}", "c".repeat(180));
    let rt1 = libc::SIGRTMIN() + 1;
    let script =
        format!("trap '' {rt1}; while :; do printf '%s\\n' {child_line} >&2; sleep 0.001; done");
    let mut run = Rinit::new(mode, &dir)
        .opts(["-v", "--log-format=json"])
        .stderr_fd(stderr)
        .cmd(["sh", "-c", &script])
        .spawn();
    // The shell must ignore RTMIN+1 before the signals come (the default
    // action would end it): its SigIgn mask shows the bit once the trap ran.
    let sh = run.child_pid();
    let bit = 1u64 << (rt1 - 1);
    run.wait_until("sh to ignore RTMIN+1", || {
        fs::read_to_string(format!("/proc/{sh}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    });
    pipe.fill();
    let rinit = run.rinit_pid();
    for _ in 0..200 {
        // Queued (never merged): 400 debug lines, more than the queue holds.
        kill(rinit, rt1);
    }
    // Read in pieces that end anywhere, while both write.
    let mut read = pipe.read.try_clone().expect("dup");
    let mut got = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let mut buf = [0u8; 3000];
        let n = read.read(&mut buf).expect("read");
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(run);
    let text = String::from_utf8_lossy(&got);
    // The reading stopped anywhere: only whole lines count.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let junk = std::str::from_utf8(JUNK).expect("ascii").trim_end();
    let mut rinit_lines = 0;
    for line in whole.lines() {
        if line == child_line || line == junk || line.is_empty() {
            continue;
        }
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a split line ({e}): {line:?}"));
        rinit_lines += 1;
    }
    assert!(
        rinit_lines > 50,
        "rinit's lines came through: {rinit_lines}"
    );
    assert!(
        whole.contains(r#""phase":"log""#) || rinit_lines > 400,
        "what did not fit was counted"
    );
}

/// Whether a process started as `argv0` is shown as a zombie (`Z`) in
/// /proc while one of its threads lives (the main thread's own `cmdline`
/// went with it: a live thread's is read).
fn shown_as_zombie(argv0: &std::path::Path) -> bool {
    let started_as =
        |cmdline: Vec<u8>| cmdline.split(|&b| b == 0).next() == Some(argv0.as_os_str().as_bytes());
    all_processes().iter().filter(|p| p.state == 'Z').any(|p| {
        fs::read_dir(format!("/proc/{}/task", p.pid))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| fs::read(t.path().join("cmdline")).is_ok_and(started_as))
    })
}

/// A daemon whose main thread has exited while another thread runs on:
/// /proc shows its state as Z, like a dead process, yet it lives. rinit
/// must still see it: TERM it when the main child is gone, and SIGKILL it
/// at the grace, naming it.
fn a_process_whose_main_thread_exited_is_seen(mode: Mode) {
    let dir = TempDir::new("zleader");
    let ready = dir.file("ready");
    let probe = probe_named(&dir, b"threaded");
    let script = format!(
        "setsid {} --ready {ready} --ignore TERM --leader-exits & wait",
        probe.display()
    );
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace=1s", "--log-format=json"])
        .cmd(["sh", "-c", &script])
        .spawn();
    run.ready(&ready);
    run.wait_until(
        "/proc to show the probe as Z (its main thread gone)",
        || shown_as_zombie(&probe),
    );
    run.signal(libc::SIGTERM);
    let done = run.finish(SOON);
    let lines = done.json();
    let kill_line = phase(&lines, "kill")
        .into_iter()
        .find(|l| l["comm"] == "threaded")
        .unwrap_or_else(|| panic!("the daemon is named at the deadline\n{}", done.stderr));
    assert_eq!(kill_line["message"], "SIGKILL", "{}", done.stderr);
    assert!(
        !done.stderr.contains("no /proc names them"),
        "{}",
        done.stderr
    );
}
