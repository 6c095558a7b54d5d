//! Issue 2, the supervisor's contract: reaping, signal forwarding, exit
//! statuses, the child's clean signal state, stragglers, and the TTY case.
//!
//! Every scenario runs twice: as a real PID 1 (`unshare --pid --fork
//! --mount-proc`) and as a plain process that registers as subreaper.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

both_modes!(
    orphan_burst_is_reaped,
    every_signal_reaches_the_child,
    group_delivery_reaches_the_grandchild,
    single_child_spares_the_grandchild,
    rewrite_and_drop,
    exit_codes_pass_through,
    expect_exit_remaps_to_zero,
    death_by_signal_is_128_plus_n,
    start_errors_have_their_status_and_message,
    child_signal_mask_is_restored,
    stragglers_get_term_then_kill_at_the_grace,
    exit_as_soon_as_stragglers_are_gone,
    tty_ctrl_c_reaches_the_foreground_child,
);

/// A double-fork burst of 1,000 orphans, all exiting at once: none is left a
/// zombie, and rinit's debug `reaped` counts add up to exactly 1,000.
fn orphan_burst_is_reaped(mode: Mode) {
    const N: u64 = 1000;
    let dir = TempDir::new("orphans");
    let report = dir.file("zombies");
    let done = Rinit::new(mode, &dir)
        .opts(["-v", "--log-format", "json"])
        .probe([
            "--orphans",
            &N.to_string(),
            "--zombie-report",
            &report,
            "--exit",
            "0",
        ])
        .spawn()
        .finish(Duration::from_secs(60));
    assert_eq!(done.status, 0, "{}", done.stderr);
    let report = fs::read_to_string(&report).unwrap();
    assert!(
        report.starts_with("zombies=0 "),
        "zombies left: {report}\n{}",
        done.stderr
    );
    let lines = done.json();
    let reaped: u64 = phase(&lines, "reaped")
        .iter()
        .map(|l| l["count"].as_u64().expect("reaped count"))
        .sum();
    assert_eq!(
        reaped, N,
        "reaped counts must sum to the burst\n{}",
        done.stderr
    );
    // The mode is reported, and off PID 1 the debug log says it is a subreaper.
    let start = phase(&lines, "start")
        .into_iter()
        .find(|l| l.get("mode").is_some())
        .expect("start line");
    match mode {
        Mode::Pid1 => assert_eq!(start["mode"], "pid1"),
        Mode::Subreaper => {
            assert_eq!(start["mode"], "subreaper");
            assert!(
                done.stderr.contains("registered as child subreaper"),
                "{}",
                done.stderr
            );
        }
    }
}

/// Every signal 1-31 but KILL, STOP and CHLD, plus SIGRTMIN and SIGRTMIN+3,
/// sent to rinit from outside, reaches the child, which records it. The stop
/// signals are narrowed to SIGRTMIN+5 (`--stop-signals`) so TERM, INT and
/// QUIT are plain forwards here; their drain is covered in tests/drain.rs.
/// Each signal is sent only once the previous one was recorded: classic
/// signals do not queue, so two in flight could merge.
fn every_signal_reaches_the_child(mode: Mode) {
    let dir = TempDir::new("signals");
    let files = ProbeFiles::in_dir(&dir);
    let rtmin = libc::SIGRTMIN();
    let stop = rtmin + 5;
    let mut run = Rinit::new(mode, &dir)
        .opts(["--stop-signals", "RTMIN+5", "--grace", "5s"])
        .probe(files.args(&["--exit-on", &format!("{stop}:0:0")]))
        .spawn();
    let pid = run.ready(&files.ready);
    let sigs: Vec<i32> = (1..=31)
        .filter(|&s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(&s))
        .chain([rtmin, rtmin + 3])
        .collect();
    for (i, &s) in sigs.iter().enumerate() {
        run.signal(s);
        run.wait_until(&format!("the child to record {}", sig_name(s)), || {
            files.record().of(pid).len() > i
        });
    }
    let (done, _) = run.stop(stop);
    assert_eq!(done.status, 0, "{}", done.stderr);
    let expected: Vec<String> = sigs.iter().chain([&stop]).map(|&s| sig_name(s)).collect();
    assert_eq!(files.record().of(pid), expected, "{}", done.stderr);
}

/// The probe and its grandchild (a second probe in its group) under rinit
/// with `opts`, both recording, and SIGUSR1 sent to rinit: the run, the
/// probe's files, the probe's pid and the grandchild's.
fn usr1_with_a_grandchild(mode: Mode, dir: &TempDir, opts: &[&str]) -> (Run, ProbeFiles, i32, i32) {
    let files = ProbeFiles::in_dir(dir);
    let mut run = Rinit::new(mode, dir)
        .opts(opts.iter().copied())
        .probe(files.args(&["--grandchild", "--exit-on", "TERM:0:0"]))
        .spawn();
    let pid = run.ready(&files.ready);
    let grandchild = files.record().grandchild.expect("grandchild line");
    run.signal(libc::SIGUSR1);
    (run, files, pid, grandchild)
}

/// By default a forwarded signal goes to the child's process group, so a
/// grandchild (here a second probe forked by the first) gets it too.
fn group_delivery_reaches_the_grandchild(mode: Mode) {
    let dir = TempDir::new("group");
    let (mut run, files, pid, grandchild) = usr1_with_a_grandchild(mode, &dir, &["--grace", "1s"]);
    run.wait_until("child and grandchild to record SIGUSR1", || {
        let r = files.record();
        r.of(pid).contains(&"SIGUSR1".into()) && r.of(grandchild).contains(&"SIGUSR1".into())
    });
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 0, "{}", done.stderr);
}

/// `--single-child` signals the child alone. To prove the grandchild never
/// got the forwarded SIGUSR1 without waiting on a timer: once the child has
/// recorded it, the test sends SIGUSR2 straight to the grandchild. Pending
/// classic signals are taken lowest number first, so had SIGUSR1 (10) ever
/// reached the grandchild it would be recorded before SIGUSR2 (12).
fn single_child_spares_the_grandchild(mode: Mode) {
    let dir = TempDir::new("single");
    let opts = ["--single-child", "--grace", "1s"];
    let (mut run, files, pid, grandchild) = usr1_with_a_grandchild(mode, &dir, &opts);
    run.wait_until("the child to record SIGUSR1", || {
        files.record().of(pid).contains(&"SIGUSR1".into())
    });
    let child_host = run.child_pid();
    let grandchild_host = poll("the grandchild", SOON, String::new, || {
        children(child_host).first().map(|s| s.pid)
    });
    kill(grandchild_host, libc::SIGUSR2);
    run.wait_until("the grandchild to record SIGUSR2", || {
        !files.record().of(grandchild).is_empty()
    });
    assert_eq!(files.record().of(grandchild), ["SIGUSR2"]);
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 0, "{}", done.stderr);
    // The stop signal went to the child alone; the grandchild's only TERM is
    // the straggler sweep after the child exited (then SIGKILL at the grace).
    assert_eq!(files.record().of(grandchild), ["SIGUSR2", "SIGTERM"]);
}

/// `-r FROM:TO` forwards FROM as TO (a stop signal too), and TO=0 drops it.
/// The drop is proven by order: SIGHUP (1) is sent before SIGWINCH (28), so
/// had it been forwarded the child would have recorded it first.
fn rewrite_and_drop(mode: Mode) {
    let dir = TempDir::new("rewrite");
    let files = ProbeFiles::in_dir(&dir);
    let mut run = Rinit::new(mode, &dir)
        .opts([
            "-r",
            "USR1:USR2",
            "--rewrite",
            "HUP:0",
            "-r",
            "SIGTERM:3",
            "--grace",
            "5s",
        ])
        .probe(files.args(&["--exit-on", "QUIT:0:0"]))
        .spawn();
    let pid = run.ready(&files.ready);
    run.signal(libc::SIGUSR1);
    run.wait_until("SIGUSR2", || !files.record().of(pid).is_empty());
    run.signal(libc::SIGHUP);
    run.signal(libc::SIGWINCH);
    run.wait_until("SIGWINCH", || files.record().of(pid).len() >= 2);
    let (done, _) = run.stop(libc::SIGTERM);
    assert_eq!(done.status, 0, "{}", done.stderr);
    assert_eq!(
        files.record().of(pid),
        ["SIGUSR2", "SIGWINCH", "SIGQUIT"],
        "{}",
        done.stderr
    );
    // TERM still started the drain (the rewrite changes what is sent, not what it means).
    assert!(
        done.stderr.contains("stop signal received") && done.stderr.contains("signal=SIGTERM"),
        "{}",
        done.stderr
    );
}

/// All 256 exit codes come back unchanged, with and without `--` before the
/// command.
fn exit_codes_pass_through(mode: Mode) {
    let dir = TempDir::new("codes");
    for code in 0..=255 {
        let mut r = Rinit::new(mode, &dir).probe(["--exit", &code.to_string()]);
        if code % 2 == 1 {
            r = r.no_dashes();
        }
        let done = r.run();
        assert_eq!(done.status, code, "exit {code}\n{}", done.stderr);
    }
}

/// `-e CODE` (repeatable) reports CODE as 0 and leaves other codes alone.
fn expect_exit_remaps_to_zero(mode: Mode) {
    let dir = TempDir::new("expect");
    for (code, want) in [(3, 0), (7, 0), (4, 4), (0, 0), (255, 255)] {
        let done = Rinit::new(mode, &dir)
            .opts(["-e", "3", "--expect-exit", "7"])
            .probe(["--exit", &code.to_string()])
            .run();
        assert_eq!(done.status, want, "exit {code}\n{}", done.stderr);
    }
}

/// A child killed by signal N gives 128+N: TERM and USR1/USR2 forwarded by
/// rinit (the probe dies of them), KILL sent from outside to the child.
fn death_by_signal_is_128_plus_n(mode: Mode) {
    for (sig, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGKILL, "KILL"),
    ] {
        let dir = TempDir::new("die");
        let ready = dir.file("ready");
        let mut args = vec!["--ready".to_string(), ready.clone()];
        if sig != libc::SIGKILL {
            args.extend(["--die-on".into(), name.into()]);
        }
        let mut run = Rinit::new(mode, &dir)
            .opts(["--grace", "5s"])
            .probe(args)
            .spawn();
        run.ready(&ready);
        if sig == libc::SIGKILL {
            kill(run.child_pid(), sig);
        } else {
            run.signal(sig);
        }
        let done = run.finish(SOON);
        assert_eq!(done.status, 128 + sig, "SIG{name}\n{}", done.stderr);
    }
}

/// 127 command not found, 126 not executable, 2 usage error, 1 any other
/// failure to start (ENAMETOOLONG here): each with one line on stderr naming it.
fn start_errors_have_their_status_and_message(mode: Mode) {
    let dir = TempDir::new("errors");
    let not_exec = dir.file("not-executable");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
    // A path component over NAME_MAX: execve fails with ENAMETOOLONG.
    let too_long = format!("/{}", "x".repeat(300));
    let missing = dir.file("no-such-command");
    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        (
            vec!["--".into(), missing.clone()],
            127,
            vec!["command not found", &missing],
        ),
        (
            vec!["--".into(), not_exec.clone()],
            126,
            vec!["cannot be executed", &not_exec],
        ),
        (
            vec!["--".into(), dir.file("")],
            126,
            vec!["cannot be executed"],
        ),
        (
            vec!["--bogus".into(), "true".into()],
            2,
            vec!["--bogus", "rinit --help"],
        ),
        (vec![], 2, vec!["COMMAND"]),
        (
            vec!["--".into(), too_long.clone()],
            1,
            vec!["cannot start command", "File name too long"],
        ),
    ];
    for (args, want, needles) in cases {
        // `opts` carries the whole command line here (one case has no command).
        let done = Rinit::new(mode, &dir).opts(args.clone()).no_dashes().run();
        let what = args
            .iter()
            .map(|a| &a[..a.len().min(40)])
            .collect::<Vec<_>>();
        assert_eq!(done.status, want, "{what:?}\n{}", done.stderr);
        let err = done.stderr.trim_end();
        assert_eq!(err.lines().count(), 1, "{what:?}: one line\n{err}");
        for n in needles {
            assert!(err.contains(n), "{what:?}: {n:?} not in\n{err}");
        }
    }
}

/// Blocks SIGUSR1/SIGTERM and ignores SIGINT/SIGHUP in the process about to
/// exec (unshare or rinit): what a careless parent leaves behind.
fn dirty_signal_state() -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls on a local set, between fork and exec.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    Ok(())
}

/// The hex masks of a probe `--mask` file: (SigBlk, SigIgn).
fn masks(path: &str) -> (u64, u64) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex mask"))
            .unwrap_or_else(|| panic!("{k} missing in {text:?}"))
    };
    (get("SigBlk:"), get("SigIgn:"))
}

/// rinit started with signals blocked and ignored still gives its child an
/// empty blocked mask and no ignored signal. A control run of the probe
/// without rinit, under the same parent, shows the dirty state is real.
fn child_signal_mask_is_restored(mode: Mode) {
    let dir = TempDir::new("mask");
    let bit = |s: i32| 1u64 << (s - 1);
    // Control: the same launcher (unshare or none) straight to the probe.
    let control = dir.file("control");
    let mut cmd = match mode {
        Mode::Pid1 => {
            let mut c = Command::new(unshare_bin());
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(probe_bin());
            c
        }
        Mode::Subreaper => Command::new(probe_bin()),
    };
    cmd.args(["--mask", &control, "--exit", "0"])
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null());
    // SAFETY: dirty_signal_state only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(dirty_signal_state) };
    assert!(cmd.status().unwrap().success());
    let (blk, ign) = masks(&control);
    assert_eq!(
        blk & (bit(libc::SIGUSR1) | bit(libc::SIGTERM)),
        bit(libc::SIGUSR1) | bit(libc::SIGTERM),
        "control: the dirty mask must reach the exec'd program ({blk:x})"
    );
    assert_eq!(
        ign & (bit(libc::SIGINT) | bit(libc::SIGHUP)),
        bit(libc::SIGINT) | bit(libc::SIGHUP),
        "control: ignored signals must reach the exec'd program ({ign:x})"
    );

    let mask = dir.file("mask");
    let done = Rinit::new(mode, &dir)
        .pre_exec(dirty_signal_state)
        .probe(["--mask", &mask, "--exit", "0"])
        .run();
    assert_eq!(done.status, 0, "{}", done.stderr);
    assert_eq!(
        masks(&mask),
        (0, 0),
        "child's SigBlk/SigIgn must be empty:\n{}",
        fs::read_to_string(&mask).unwrap()
    );
}

/// The main child exits on its own (code 5) and leaves a grandchild in its
/// group and a daemon that escaped with setsid, both ignoring SIGTERM: rinit
/// sends them SIGTERM (the grandchild records it), SIGKILLs them at the grace
/// (the log names both), and exits with the main child's 5. Off PID 1, the
/// test checks from outside that both are gone once rinit has exited.
fn stragglers_get_term_then_kill_at_the_grace(mode: Mode) {
    let dir = TempDir::new("stragglers");
    let rec = dir.file("rec");
    let mut run = Rinit::new(mode, &dir)
        .opts(["--grace", "1s", "--log-format", "json"])
        .probe(["--grandchild", "--daemon", "--record", &rec, "--exit", "5"])
        .spawn();
    run.wait_until("grandchild and daemon lines", || {
        let r = Record::read(&rec);
        r.grandchild.is_some() && r.daemon.is_some()
    });
    let r = Record::read(&rec);
    let (grandchild, daemon) = (r.grandchild.unwrap(), r.daemon.unwrap());
    // Their identity (pid + start time), to tell them apart from a reused pid.
    let ids: Vec<(i32, u64)> = match mode {
        Mode::Subreaper => [grandchild, daemon]
            .iter()
            .filter_map(|&p| stat(p).filter(|s| s.comm == "probe"))
            .map(|s| (s.pid, s.starttime))
            .collect(),
        Mode::Pid1 => Vec::new(),
    };
    let done = run.finish(SOON);
    assert_eq!(done.status, 5, "{}", done.stderr);
    assert!(
        done.elapsed >= Duration::from_secs(1),
        "killed before the grace: {:?}\n{}",
        done.elapsed,
        done.stderr
    );
    for (pid, start) in ids {
        assert!(!alive(pid, start), "pid {pid} survived rinit");
    }
    assert_eq!(
        Record::read(&rec).of(grandchild),
        ["SIGTERM"],
        "{}",
        done.stderr
    );
    let lines = done.json();
    let killed: Vec<i64> = phase(&lines, "kill")
        .iter()
        .map(|l| l["pid"].as_i64().unwrap())
        .collect();
    for p in [grandchild, daemon] {
        assert!(
            killed.contains(&(p as i64)),
            "no kill line for {p}\n{}",
            done.stderr
        );
    }
    assert_eq!(phase(&lines, "deadline").len(), 1, "{}", done.stderr);
    let exit = &phase(&lines, "exit")[0];
    assert_eq!(exit["status"], 5);
    assert_eq!(exit["escalated"], true);
}

/// Stragglers that do exit on SIGTERM let rinit exit at once, not at the
/// grace: `sh` leaves a background `sleep` and exits 3.
fn exit_as_soon_as_stragglers_are_gone(mode: Mode) {
    let dir = TempDir::new("sweep");
    let done = Rinit::new(mode, &dir)
        .opts(["--grace", "8s"])
        .cmd(["sh", "-c", "sleep 60 & exit 3"])
        .run();
    assert_eq!(done.status, 3, "{}", done.stderr);
    assert!(
        done.elapsed < Duration::from_secs(5),
        "waited for the grace: {:?}\n{}",
        done.elapsed,
        done.stderr
    );
    assert!(
        done.stderr
            .contains("main child gone; terminating what is left"),
        "{}",
        done.stderr
    );
}

// ---- TTY ---------------------------------------------------------------------

/// A pseudo-terminal pair: (master fd, slave path).
fn open_pty() -> (fs::File, String) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc pty calls; the fd is owned by the returned File.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        let name = std::ffi::CStr::from_ptr(buf.as_ptr())
            .to_string_lossy()
            .into_owned();
        (fs::File::from_raw_fd(m), name)
    }
}

/// An interactive `bash` on a new pty, as a user's terminal session: the
/// shell, the pty master to type into, and everything the pty printed so far
/// (collected by a thread until the shell is gone).
fn interactive_bash() -> (
    std::process::Child,
    fs::File,
    std::sync::Arc<std::sync::Mutex<String>>,
    String,
) {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    let (master, slave_path) = open_pty();
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .unwrap();
    let mut shell = Command::new("bash");
    shell
        .args(["--norc", "--noprofile", "-i"])
        .env_clear()
        .env("PATH", PATH)
        .env("TERM", "dumb")
        .env("PS1", "$ ")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        shell.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let bash = shell.spawn().expect("bash");
    let out = Arc::new(Mutex::new(String::new()));
    let mut reader = master.try_clone().unwrap();
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once the shell has gone and the slave is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (bash, master, out, slave_path)
}

/// Under a job-control shell (`bash -i` on a pty), the child is the
/// terminal's foreground group, Ctrl-C (typed as \x03) reaches it as SIGINT
/// from the terminal itself, and rinit exits 130.
fn tty_ctrl_c_reaches_the_foreground_child(mode: Mode) {
    use std::io::Write;

    let dir = TempDir::new("tty");
    let (rec, ready, tty) = (dir.file("rec"), dir.file("ready"), dir.file("tty"));
    let (mut bash, mut writer, out, slave_path) = interactive_bash();
    let launcher = match mode {
        Mode::Pid1 => format!(
            "{} --pid --fork --mount-proc --kill-child ",
            unshare_bin().display()
        ),
        Mode::Subreaper => String::new(),
    };
    let line = format!(
        "{launcher}{} --grace 5s -- {} --record {rec} --ready {ready} --tty {tty} --die-on INT; echo RC=$?\n",
        rinit_bin().display(),
        probe_bin().display()
    );
    writer.write_all(line.as_bytes()).unwrap();
    let tty_name = slave_path.trim_start_matches("/dev/").to_string();
    let context = || {
        let ps = Command::new("ps")
            .args(["-o", "pid,ppid,pgid,sid,tpgid,stat,comm", "-t", &tty_name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "pty output:\n{}\nprocesses on the pty:\n{ps}",
            out.lock().unwrap()
        )
    };
    let finish = |bash: &mut std::process::Child| {
        let _ = bash.kill();
        let _ = bash.wait();
    };
    let got_ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll("the probe under the pty", SOON, context, || {
            fs::read_to_string(&ready)
                .ok()
                .filter(|t| t.ends_with('\n'))
        })
    }));
    let pid: i32 = match got_ready {
        Ok(t) => t.trim().parse().unwrap(),
        Err(e) => {
            finish(&mut bash);
            std::panic::resume_unwind(e);
        }
    };
    writer.write_all(b"\x03").unwrap();
    let rc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll("rinit's exit status from the shell", SOON, context, || {
            // The echoed command line has "RC=$?"; the shell's answer has digits.
            let text = out.lock().unwrap().clone();
            text.match_indices("RC=").find_map(|(at, _)| {
                let digits: String = text[at + 3..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                (!digits.is_empty() && text[at + 3 + digits.len()..].starts_with(['\r', '\n']))
                    .then(|| digits.parse::<i32>().unwrap())
            })
        })
    }));
    let _ = writer.write_all(b"exit\n");
    let t0 = Instant::now();
    while bash.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    finish(&mut bash);
    let rc = rc.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let output = out.lock().unwrap().clone();
    assert_eq!(rc, 130, "pty output:\n{output}");
    assert_eq!(Record::read(&rec).of(pid), ["SIGINT"], "{output}");
    assert!(output.contains("tty=true"), "start line: {output}");
    let t = fs::read_to_string(&tty).unwrap();
    let field = |k: &str| -> i32 {
        t.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {t:?}"))
    };
    assert_eq!(field("pgrp="), pid, "the child leads its own group: {t}");
    assert_eq!(
        field("tpgid="),
        pid,
        "the child is the terminal's foreground group: {t}"
    );
}

/// Terminal job control when rinit runs from an interactive shell (not PID
/// 1, so subreaper mode only): Ctrl-Z stops the command and rinit with it,
/// so the shell gets its prompt back and lists the job as stopped; `fg`
/// resumes both and hands the terminal back, so Ctrl-C then reaches the
/// command (exit 130). And `rinit ... &` must leave the terminal to the
/// shell: the shell is still there to answer afterwards.
#[test]
fn tty_ctrl_z_and_fg_give_ordinary_job_control() {
    use std::io::Write;

    let (mut bash, mut writer, out, _) = interactive_bash();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let wait_for = |what: &str, needle: &str, count: usize| {
            poll(
                what,
                SOON,
                || format!("pty output:\n{}", out.lock().unwrap()),
                || (out.lock().unwrap().matches(needle).count() >= count).then_some(()),
            )
        };
        let rinit = rinit_bin().display().to_string();
        writer
            .write_all(format!("{rinit} -- sleep 100\n").as_bytes())
            .unwrap();
        wait_for("the start line", "tty=true", 1);
        writer.write_all(b"\x1a").unwrap();
        wait_for("the shell to see the job stopped", "Stopped", 1);
        writer.write_all(b"fg\n").unwrap();
        // bash echoes the resumed job's command line.
        wait_for("the job to resume", "sleep 100\r\n", 3);
        std::thread::sleep(Duration::from_millis(300));
        writer.write_all(b"\x03").unwrap();
        wait_for("rinit's exit line", "status=130", 1);
        writer.write_all(b"echo RC=$?.\n").unwrap();
        wait_for("rinit's exit status", "RC=130.", 1);
        writer
            .write_all(format!("{rinit} -q -- sleep 1 &\n").as_bytes())
            .unwrap();
        // The shell is back at its prompt, reading the terminal, when rinit starts.
        std::thread::sleep(Duration::from_millis(500));
        writer.write_all(b"echo ALIVE$((40+2)).\n").unwrap();
        wait_for("the shell to keep its terminal", "ALIVE42.", 1);
    }));
    let _ = writer.write_all(b"exit\n");
    let _ = bash.kill();
    let _ = bash.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// As PID 1, rinit answers for every process in the namespace, also those it
/// did not start (`docker exec`, here `nsenter`), whose end no SIGCHLD
/// announces: when the command exits they get SIGTERM, and rinit waits for
/// them (polling /proc) instead of exiting and leaving the kernel to
/// SIGKILL them mid-job.
#[test]
fn pid1_terms_and_waits_for_processes_it_did_not_start() {
    let dir = TempDir::new("outsider");
    let (ready, up, got) = (dir.file("ready"), dir.file("up"), dir.file("got"));
    let mut run = Rinit::new(Mode::Pid1, &dir)
        .opts(["--grace", "5s"])
        .probe(["--ready", &ready, "--exit-on", "USR1:0:7"])
        .spawn();
    run.ready(&ready);
    let script = format!(
        "trap 'sleep 0.3; echo got > {got}; exit 0' TERM; echo up > {up}; while :; do sleep 0.05; done"
    );
    let mut outsider = Command::new("nsenter")
        .args([
            "-t",
            &run.rinit_pid().to_string(),
            "-p",
            "-m",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("nsenter");
    run.wait_file(&up);
    let (done, _) = run.stop(libc::SIGUSR1);
    let _ = outsider.kill();
    let _ = outsider.wait();
    assert_eq!(done.status, 7, "{}", done.stderr);
    assert_eq!(
        fs::read_to_string(&got).unwrap_or_default().trim(),
        "got",
        "the outsider was not given its TERM and its time\n{}",
        done.stderr
    );
}
