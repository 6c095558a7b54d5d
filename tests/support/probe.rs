//! probe: the recording child the tests and benchmarks run under rinit.
//!
//! It blocks every catchable signal and collects them with `sigwaitinfo`, so
//! each one it gets is written down (one `O_APPEND` line per signal, so the
//! lines of several probes sharing a file never interleave) and nothing is
//! lost to a handler race. Flags make it misbehave in the ways real workers
//! do: ignore TERM, drain slowly, leave orphans, escape the process group.
//!
//! Usage: probe [--record FILE] [--ready FILE] [--mask FILE] [--exit-on SIG:MS:CODE]...
//!              [--die-on SIG]... [--ignore SIG]... [--grandchild] [--daemon] [--daemon-exits]
//!              [--orphans N] [--zombie-report FILE] [--sleep MS] [--exit CODE]
//!              [--stamp FILE] [--done FILE] [--tty FILE] [--alloc-mib N] [--leader-exits]
//!
//! Record lines: `<pid> <SIGNAL> <monotonic-ns>`, plus `daemon <pid>` and
//! `grandchild <pid>` lines for the processes it starts. Real-time signals
//! are named by number (`SIG34`).
//!
//! `--mask FILE` writes the `SigBlk:`/`SigIgn:` masks (as in /proc/PID/status)
//! the probe was exec'd with, captured before the Rust runtime starts.
//! `--tty FILE` writes `pgrp=<its process group> tpgid=<stdin's foreground
//! group>` at start-up, so a test can check the child owns the terminal.
//! `--zombie-report FILE` counts zombies among the init's children (the
//! probe's siblings): that is where `--orphans` are re-parented whether the
//! init is PID 1 or a subreaper, and other processes' zombies on a shared
//! host do not count.
//!
//! `--done FILE` models a job's "finished" marker: `done <pid> <monotonic-ns>`
//! is appended when the probe ends cleanly (an `--exit-on` after its delay,
//! or the end of `--sleep`), never when a signal kills it, so a missing line
//! is work that was cut off.

use std::io::Write;

use rinit_test_support::signals;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the probe was told to do.
#[derive(Default)]
struct Opts {
    record: Option<String>,
    ready: Option<String>,
    mask: Option<String>,
    stamp: Option<String>,
    done: Option<String>,
    tty: Option<String>,
    exit_on: Vec<(i32, u64, i32)>,
    die_on: Vec<i32>,
    ignore: Vec<i32>,
    grandchild: bool,
    daemon: bool,
    daemon_exits: bool,
    orphans: usize,
    zombie_report: Option<String>,
    sleep_ms: Option<u64>,
    exit: Option<i32>,
    alloc_mib: usize,
    leader_exits: bool,
}

fn signo(name: &str) -> i32 {
    signals::signo(name).unwrap_or_else(|| die(&format!("probe: unknown signal {name}")))
}

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(99)
}

fn parse() -> Opts {
    let mut o = Opts::default();
    // args_os: argv[0] may be a name of any bytes (tests/hardening.rs).
    let mut args = std::env::args_os().skip(1).map(|a| {
        a.into_string()
            .unwrap_or_else(|_| die("probe: an argument is not UTF-8"))
    });
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("probe: {a} needs a value")))
        };
        match a.as_str() {
            "--record" => o.record = Some(val()),
            "--ready" => o.ready = Some(val()),
            "--mask" => o.mask = Some(val()),
            "--stamp" => o.stamp = Some(val()),
            "--tty" => o.tty = Some(val()),
            "--done" => o.done = Some(val()),
            "--exit-on" => {
                let v = val();
                let mut it = v.split(':');
                let s = signo(it.next().unwrap_or(""));
                let ms = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                let code = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                o.exit_on.push((s, ms, code));
            }
            "--die-on" => o.die_on.push(signo(&val())),
            "--ignore" => o.ignore.push(signo(&val())),
            "--grandchild" => o.grandchild = true,
            "--daemon" => o.daemon = true,
            "--daemon-exits" => {
                o.daemon = true;
                o.daemon_exits = true;
            }
            "--orphans" => o.orphans = val().parse().unwrap_or_else(|_| die("probe: --orphans N")),
            "--zombie-report" => o.zombie_report = Some(val()),
            "--sleep" => {
                o.sleep_ms = Some(val().parse().unwrap_or_else(|_| die("probe: --sleep MS")))
            }
            "--exit" => o.exit = Some(val().parse().unwrap_or_else(|_| die("probe: --exit CODE"))),
            "--leader-exits" => o.leader_exits = true,
            "--alloc-mib" => {
                o.alloc_mib = val()
                    .parse()
                    .unwrap_or_else(|_| die("probe: --alloc-mib N"))
            }
            other => die(&format!("probe: unknown argument {other}")),
        }
    }
    o
}

fn append(path: &Option<String>, line: &str) {
    if let Some(p) = path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap_or_else(|e| die(&format!("probe: {p}: {e}")));
        // One write per line: O_APPEND makes it atomic across processes.
        let _ = f.write_all(line.as_bytes());
    }
}

fn mono_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn all_catchable() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigdelset(&mut set, libc::SIGKILL);
        libc::sigdelset(&mut set, libc::SIGSTOP);
        set
    }
}

/// Forks; the child runs `f` and exits 0.
fn fork_then(f: impl FnOnce()) -> i32 {
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("probe: fork failed");
    }
    if pid == 0 {
        f();
        unsafe { libc::_exit(0) };
    }
    pid
}

/// Double-forks `n` processes that all exit at the same moment: a middle
/// child forks them, each blocks on a pipe the middle holds, and the middle
/// exits, closing it, so the kernel re-parents all `n` to the init and they
/// exit in one burst.
fn orphans(n: usize) {
    let mut fds = [0; 2];
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("probe: pipe failed");
    }
    let middle = fork_then(|| {
        unsafe { libc::close(fds[0]) };
        for _ in 0..n {
            fork_then(|| unsafe {
                libc::close(fds[1]);
                let mut b = [0u8; 1];
                // Blocks until the middle process exits and the write end closes.
                libc::read(fds[0], b.as_mut_ptr().cast(), 1);
            });
        }
    });
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
        let mut st = 0;
        libc::waitpid(middle, &mut st, 0);
    }
}

/// Counts processes in state Z whose parent is the probe's parent (the
/// init, which the orphans were re-parented to).
fn zombies() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return usize::MAX;
    };
    let init = unsafe { libc::getppid() }.to_string();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // After "comm)": state, then ppid.
                    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
                    Some(rest.next()? == "Z" && rest.next()? == init)
                })
                .unwrap_or(false)
        })
        .count()
}

/// The blocked mask and ignored dispositions the probe was exec'd with, in
/// /proc/PID/status bit order (bit N-1 for signal N), read by
/// `save_exec_signal_state` before `main`.
static EXEC_BLOCKED: AtomicU64 = AtomicU64::new(0);
static EXEC_IGNORED: AtomicU64 = AtomicU64::new(0);

/// Runs from `.init_array`, before the Rust runtime, which sets SIGPIPE to
/// SIG_IGN itself: reading /proc/self/status in `main` would blame that on
/// whoever exec'd the probe. Raw syscalls, so glibc's reserved signals (32,
/// 33) are seen as the kernel has them.
extern "C" fn save_exec_signal_state() {
    // The kernel's `struct sigaction` on x86_64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let mut blocked = 0u64;
    let mut ignored = 0u64;
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut blocked as *mut u64,
            8usize,
        );
        for sig in 1..=64u64 {
            let mut old = KernelSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            let r = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            );
            if r == 0 && old.handler == libc::SIG_IGN {
                ignored |= 1 << (sig - 1);
            }
        }
    }
    EXEC_BLOCKED.store(blocked, Ordering::Relaxed);
    EXEC_IGNORED.store(ignored, Ordering::Relaxed);
}

#[used]
#[link_section = ".init_array"]
static SAVE_EXEC_SIGNAL_STATE: extern "C" fn() = save_exec_signal_state;

fn main() {
    let o = parse();
    if let Some(path) = &o.mask {
        // What the exec left the probe with, saved before the Rust runtime ran.
        let blk = EXEC_BLOCKED.load(Ordering::Relaxed);
        let ign = EXEC_IGNORED.load(Ordering::Relaxed);
        append(
            &Some(path.clone()),
            &format!("SigBlk:\t{blk:016x}\nSigIgn:\t{ign:016x}\n"),
        );
    }
    if let Some(path) = &o.tty {
        let (pgrp, tpgid) = unsafe { (libc::getpgrp(), libc::tcgetpgrp(0)) };
        append(&Some(path.clone()), &format!("pgrp={pgrp} tpgid={tpgid}\n"));
    }
    let mut set = all_catchable();
    // Ignored signals must not stay blocked: a blocked signal is queued, never ignored.
    for &s in &o.ignore {
        unsafe {
            libc::signal(s, libc::SIG_IGN);
            libc::sigdelset(&mut set, s);
        }
    }
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if o.grandchild {
        let pid = fork_then(|| serve(&o, set, true));
        append(&o.record, &format!("grandchild {pid}\n"));
    }
    if o.daemon {
        let pid = fork_then(|| unsafe {
            libc::setsid();
            if o.daemon_exits {
                // A daemon that finishes on SIGTERM: it records it and exits.
                let mut term: libc::sigset_t = std::mem::zeroed();
                libc::sigaddset(&mut term, libc::SIGTERM);
                libc::sigprocmask(libc::SIG_SETMASK, &term, std::ptr::null_mut());
                let mut sig = 0;
                libc::sigwait(&term, &mut sig);
                let me = std::process::id();
                append(&o.record, &format!("{me} SIGTERM {}\n", mono_ns()));
                std::process::exit(0);
            }
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            loop {
                libc::pause();
            }
        });
        // Announce it (and so become ready) only once it has left the group:
        // a signal sent to the group before its setsid would still reach it.
        loop {
            let pgid = unsafe { libc::getpgid(pid) };
            if pgid == pid || pgid < 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        append(&o.record, &format!("daemon {pid}\n"));
    }
    if o.orphans > 0 {
        orphans(o.orphans);
        if let Some(p) = &o.zombie_report {
            // Give the init up to 10 s to reap the burst, then say what is left.
            let t0 = Instant::now();
            let mut left = zombies();
            while left > 0 && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
                left = zombies();
            }
            append(
                &Some(p.clone()),
                &format!("zombies={left} ms={}\n", t0.elapsed().as_millis()),
            );
        }
    }
    if let Some(code) = o.exit {
        std::process::exit(code);
    }
    if o.alloc_mib > 0 {
        // Memory actually used, page by page, past any limit the test set:
        // the kernel's OOM killer is meant to end this process.
        let mut held = Vec::new();
        for _ in 0..o.alloc_mib {
            held.push(vec![1u8; 1 << 20]);
        }
        std::hint::black_box(&held);
    }
    if o.leader_exits {
        // The work goes on in a second thread; the main thread exits, so
        // /proc shows the process as Z although it lives.
        let worker = std::thread::spawn(move || serve(&o, set, false));
        std::mem::forget(worker);
        // SAFETY: the raw exit syscall ends only this thread, without the
        // unwinding pthread_exit would force through Rust's frames; the
        // other thread keeps the process.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    } else {
        serve(&o, set, false);
    }
}

/// The signal loop: record, then act on what the flags say.
fn serve(o: &Opts, set: libc::sigset_t, grandchild: bool) {
    let me = std::process::id();
    if let Some(r) = &o.ready {
        if !grandchild {
            let _ = std::fs::write(r, format!("{me}\n"));
        }
    }
    let deadline = o
        .sleep_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            if grandchild {
                std::process::exit(0);
            }
            finish(o, 0);
        }
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let s = unsafe { libc::sigtimedwait(&set, &mut info, tsp) };
        if s <= 0 {
            continue;
        }
        let now = mono_ns();
        if s == libc::SIGCHLD && !o.grandchild && !o.daemon {
            continue;
        }
        if s == libc::SIGCHLD {
            // Reap our own children (the grandchild/daemon) quietly.
            unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} };
            continue;
        }
        append(&o.record, &format!("{me} {} {now}\n", signals::sig_name(s)));
        if !grandchild {
            if let Some(p) = &o.stamp {
                append(&Some(p.clone()), &format!("{now}\n"));
            }
        }
        if grandchild {
            continue;
        }
        if o.die_on.contains(&s) {
            unsafe {
                libc::signal(s, libc::SIG_DFL);
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigaddset(&mut one, s);
                libc::kill(me as i32, s);
                libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
            }
        }
        if let Some(&(_, ms, code)) = o.exit_on.iter().find(|(sig, _, _)| *sig == s) {
            std::thread::sleep(Duration::from_millis(ms));
            finish(o, code);
        }
    }
}

/// A clean end: write the `--done` marker, then exit with `code`.
fn finish(o: &Opts, code: i32) -> ! {
    append(
        &o.done,
        &format!("done {} {}\n", std::process::id(), mono_ns()),
    );
    std::process::exit(code)
}
