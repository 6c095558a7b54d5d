//! The init itself: spawn, then one loop that waits for a signal or the next
//! drain step, forwards, reaps, and exits once nothing is left.
//!
//! State is three values: the main child's exit (once reaped), the drain
//! (once a stop began), and whether anything is still alive. rinit exits when
//! the main child has been reaped and no other child remains.

use std::time::Instant;

use tracing::{debug, info, warn};

use crate::cli::Config;
use crate::log;
use crate::reap::{self, Exit};
use crate::shutdown::{Drain, Step};
use crate::signals::{self, name, Received, Target};
use crate::spawn::{self, Isolation};

/// Runs the command under supervision and returns rinit's exit status.
pub fn run(cfg: Config) -> i32 {
    let wait_set = signals::configure_signals();
    let pid1 = std::process::id() == 1;
    let subreaper = !pid1 && become_subreaper();
    if let Some(sig) = cfg.parent_death {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) };
    }
    let isolation = Isolation::detect(cfg.setsid);
    let child = match spawn::spawn(&cfg.command, isolation) {
        Ok(pid) => pid,
        Err(e) => {
            tracing::error!(phase = "spawn", status = e.status, "{}", e.message);
            return e.status;
        }
    };
    let target = if cfg.single_child {
        Target::Child(child)
    } else {
        Target::Group(child)
    };
    log_start(&cfg, child, isolation, pid1, subreaper);

    let mut main: Option<Exit> = None;
    let mut drain: Option<Drain> = None;
    loop {
        while let Some(step) = drain.as_mut().and_then(|d| d.due(Instant::now())) {
            match step {
                Step::Send { signo, staged } => {
                    if let Some(t) = reachable(target, main.is_none()) {
                        forward(t, signo, staged, true);
                    }
                }
                Step::Deadline => {
                    warn!(phase = "deadline", grace = %grace_text(&cfg), "grace expired; killing what is left");
                    escalate(target, pid1, main.is_none(), drain.as_mut());
                }
            }
        }
        let timeout = drain
            .as_ref()
            .and_then(Drain::next_at)
            .map(|t| t.saturating_duration_since(Instant::now()));
        match signals::wait(&wait_set, timeout) {
            None => continue,
            Some(r) if r.signo == libc::SIGCHLD => {
                let reaped = reap::reap_zombies(child);
                if let Some(exit) = reaped.main {
                    log_child_exit(child, exit, drain.as_ref());
                    main = Some(exit);
                }
                if reaped.orphans > 0 {
                    if drain.is_some() {
                        info!(phase = "reaped", count = reaped.orphans, "reaped orphans");
                    } else {
                        debug!(phase = "reaped", count = reaped.orphans, "reaped orphans");
                    }
                }
                match (main, reaped.none_left) {
                    (Some(exit), true) => return finish(&cfg, exit, drain.as_ref()),
                    (Some(exit), false) if reaped.main.is_some() => {
                        // A stop drain already signalled the group; what escaped it has not been.
                        sweep_stragglers(&cfg, target, pid1, drain.is_some());
                        let d = drain
                            .get_or_insert_with(|| Drain::on_child_exit(&cfg.plan, Instant::now()));
                        // Without a grace nothing would ever end the wait (tini's behaviour).
                        if cfg.plan.grace.is_none() {
                            return finish(&cfg, exit, Some(d));
                        }
                    }
                    _ => {}
                }
            }
            Some(r) => on_signal(&cfg, r, target, pid1, isolation, main.is_none(), &mut drain),
        }
    }
}

/// Registers as child subreaper so orphans of the command are re-parented
/// to rinit (and reaped by it) even when it is not PID 1.
fn become_subreaper() -> bool {
    // SAFETY: prctl with integer arguments only.
    let ok = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    if ok {
        debug!(phase = "start", "not PID 1: registered as child subreaper");
    } else {
        warn!(phase = "start", error = %std::io::Error::last_os_error(),
              "not PID 1 and cannot become a subreaper: orphans will not be reaped by rinit");
    }
    ok
}

/// Handles one received signal other than SIGCHLD.
fn on_signal(
    cfg: &Config,
    r: Received,
    target: Target,
    pid1: bool,
    isolation: Isolation,
    main_alive: bool,
    drain: &mut Option<Drain>,
) {
    // A signal rinit raised against itself (SIGPIPE on a closed stderr) is not the child's business.
    if r.sender == Some(std::process::id() as i32) {
        return;
    }
    let forwarded = cfg.rewrites.apply(r.signo);
    let sender = r.sender.unwrap_or(0);
    if !cfg.plan.stop_signals.contains(&r.signo) {
        if drain.is_some() {
            info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        } else {
            debug!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        }
        if let Some(t) = reachable(target, main_alive).filter(|_| forwarded != 0) {
            forward(t, forwarded, false, drain.is_some());
        }
        job_control(r.signo, target, pid1, isolation);
        return;
    }
    match drain {
        None => {
            // The common case (no stop sequence, no pre-stop delay): signal the
            // child before any bookkeeping or logging. Measured (bench/run,
            // figure 3): the work below, done first on cold caches, added
            // ~27 µs to the forwarding latency.
            let at_once =
                cfg.plan.sequence.is_none() && cfg.plan.pre_stop.is_zero() && forwarded != 0;
            if at_once {
                target.send(forwarded);
            }
            let now = Instant::now();
            log::mark_stop(now);
            info!(phase = "signal", severity = "NOTICE", signal = %name(r.signo), sender_pid = sender,
                  grace = %grace_text(cfg), "stop signal received; draining");
            if at_once {
                info!(phase = "forward", signal = %name(forwarded), target = %target.describe(), "forwarded");
            }
            // Already sent: the drain keeps only the deadline.
            let pending = if at_once { 0 } else { forwarded };
            *drain = Some(Drain::on_stop_signal(&cfg.plan, pending, now));
        }
        Some(d) if r.signo == libc::SIGINT && !d.escalated => {
            warn!(
                phase = "signal",
                signal = "SIGINT",
                sender_pid = sender,
                "second interrupt during the drain: killing now"
            );
            escalate(target, pid1, main_alive, Some(d));
        }
        Some(_) => {
            info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
                  "already draining; not forwarded again");
        }
    }
}

/// The target, unless it is a lone child that has been reaped: its pid may
/// already belong to another process. (A group's id stays pinned while any
/// member lives, and a group with none left gets nothing.)
fn reachable(target: Target, main_alive: bool) -> Option<Target> {
    match target {
        Target::Child(_) if !main_alive => None,
        t => Some(t),
    }
}

/// Terminal job control (only with a TTY, not as PID 1): a stop signal
/// stops rinit too, so the shell sees the job stopped; SIGCONT gives the
/// terminal back to the command.
fn job_control(signo: i32, target: Target, pid1: bool, isolation: Isolation) {
    if isolation != Isolation::Foreground || pid1 {
        return;
    }
    match signo {
        libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
            // SAFETY: plain syscall; SIGSTOP cannot be blocked.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
        libc::SIGCONT => {
            if let Target::Group(pgid) = target {
                // SAFETY: plain syscall; SIGTTOU is blocked, so a background rinit may do it.
                unsafe { libc::tcsetpgrp(0, pgid) };
            }
        }
        _ => {}
    }
}

/// Sends `signo` to the target. Forwards are logged at info during a
/// drain, at debug otherwise (the steady state stays quiet).
fn forward(target: Target, signo: i32, staged: bool, draining: bool) {
    target.send(signo);
    let what = target.describe();
    if staged {
        info!(phase = "stage", signal = %name(signo), target = %what, "stop sequence step sent");
    } else if draining {
        info!(phase = "forward", signal = %name(signo), target = %what, "forwarded");
    } else {
        debug!(phase = "forward", signal = %name(signo), target = %what, "forwarded");
    }
}

/// SIGKILLs everything rinit is responsible for: each survivor by pid (so
/// the log names them), the child's group, and as PID 1 the whole namespace
/// (daemons that escaped the group with setsid included).
fn escalate(target: Target, pid1: bool, main_alive: bool, drain: Option<&mut Drain>) {
    for p in reap::survivors(pid1) {
        warn!(phase = "kill", pid = p.pid, comm = %p.comm, "SIGKILL");
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
    let group = match target {
        Target::Group(pgid) | Target::Child(pgid) => pgid,
    };
    // SAFETY: as above; kill(-1) from PID 1 spares PID 1 itself.
    unsafe {
        // Only while the unreaped leader pins the group's id: once reaped, the
        // number could name someone else's group.
        if main_alive {
            libc::kill(-group, libc::SIGKILL);
        }
        if pid1 {
            libc::kill(-1, libc::SIGKILL);
        }
    }
    if let Some(d) = drain {
        d.escalate();
    }
}

/// The main child is gone but others remain: SIGTERM them now (SIGKILL
/// follows at the grace). Each gets one TERM: the group's members through
/// the group unless a stop drain already signalled it, the rest (daemons that
/// left the group) one by one.
fn sweep_stragglers(cfg: &Config, target: Target, pid1: bool, group_signalled: bool) {
    log::mark_stop(Instant::now());
    let left = reap::survivors(pid1);
    info!(phase = "forward", signal = "SIGTERM", remaining = left.len() as u64,
          grace = %grace_text(cfg), "main child gone; terminating what is left");
    let group = match target {
        Target::Group(pgid) => Some(pgid),
        Target::Child(_) => None,
    };
    for p in &left {
        // SAFETY: getpgid and kill have no memory effects.
        if group.is_some_and(|g| unsafe { libc::getpgid(p.pid) } == g) {
            continue;
        }
        debug!(phase = "forward", signal = "SIGTERM", pid = p.pid, comm = %p.comm, "straggler");
        unsafe { libc::kill(p.pid, libc::SIGTERM) };
    }
    if let Some(pgid) = group.filter(|_| !group_signalled) {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
    }
}

/// Logs the exit line and maps the child's exit to rinit's status.
fn finish(cfg: &Config, exit: Exit, drain: Option<&Drain>) -> i32 {
    let status = match exit {
        Exit::Code(c) if cfg.expect_exit.contains(&c) => 0,
        e => e.status(),
    };
    let escalated = drain.is_some_and(|d| d.escalated);
    let drain_ms = drain.map_or(0, Drain::elapsed_ms);
    if escalated {
        warn!(
            phase = "exit",
            status, drain_ms, escalated, "exiting after killing the rest"
        );
    } else {
        info!(phase = "exit", status, drain_ms, escalated, "exiting");
    }
    status
}

/// The time since the stop is not a field here: the logger stamps
/// `since_stop_ms` on every line once a stop began (a second one made JSON
/// lines carry the key twice).
fn log_child_exit(pid: i32, exit: Exit, drain: Option<&Drain>) {
    let killed = drain.is_some_and(|d| d.escalated);
    match exit {
        Exit::Code(code) => info!(phase = "child_exit", pid, code, "main child exited"),
        Exit::Signal(s) => {
            info!(phase = "child_exit", pid, signal = %name(s), killed_by_rinit = killed,
                  "main child killed by signal")
        }
    }
}

fn grace_text(cfg: &Config) -> String {
    cfg.plan
        .grace
        .map_or_else(|| "none".into(), crate::platform::fmt)
}

fn log_start(cfg: &Config, child: i32, isolation: Isolation, pid1: bool, subreaper: bool) {
    // SAFETY: getpgid has no memory effects.
    let pgid = unsafe { libc::getpgid(child) };
    let mode = match (pid1, subreaper) {
        (true, _) => "pid1",
        (false, true) => "subreaper",
        (false, false) => "plain",
    };
    info!(
        phase = "start",
        version = env!("CARGO_PKG_VERSION"),
        child_pid = child,
        pgid,
        grace = %grace_text(cfg),
        platform = cfg.platform.name(),
        kill_after = %cfg.kill_after.map_or_else(|| "none".into(), crate::platform::fmt),
        mode,
        tty = isolation == Isolation::Foreground,
        "started {}", cfg.command[0].to_string_lossy()
    );
}
