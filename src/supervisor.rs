//! The init itself: spawn, then one loop that waits for a signal or the next
//! drain step, forwards, reaps, and exits once nothing is left.
//!
//! State is three values: the main child's exit (once reaped), the drain
//! (once a stop began), and whether anything is still alive. rinit exits when
//! the main child has been reaped and nothing else is left: no child, and as
//! PID 1 no other process in the namespace (`docker exec`'s, which only
//! /proc shows, are checked every `RECHECK`).

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
    if let Some(w) = &cfg.grace_warning {
        warn!(phase = "start", platform = cfg.platform.name(), "{w}");
    }

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
                Step::Recheck => {
                    if drain.as_ref().is_some_and(|d| d.escalated) {
                        kill_rest(target, pid1, main.is_none(), false);
                    }
                    if let Some(status) =
                        on_reap(&cfg, child, target, pid1, isolation, &mut main, &mut drain)
                    {
                        return status;
                    }
                    if let Some(d) = drain.as_mut().filter(|d| d.escalated) {
                        d.recheck(Instant::now());
                    }
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
                if let Some(status) =
                    on_reap(&cfg, child, target, pid1, isolation, &mut main, &mut drain)
                {
                    return status;
                }
            }
            Some(r) => on_signal(&cfg, r, target, pid1, isolation, main.is_none(), &mut drain),
        }
    }
}

/// Reaps what has exited and decides what follows: rinit's exit status once
/// the main child and everything else are gone; the straggler sweep when the
/// main child has just gone and others remain.
fn on_reap(
    cfg: &Config,
    child: i32,
    target: Target,
    pid1: bool,
    isolation: Isolation,
    main: &mut Option<Exit>,
    drain: &mut Option<Drain>,
) -> Option<i32> {
    let job_control = isolation == Isolation::Foreground && !pid1;
    let reaped = reap::reap_zombies(child, job_control);
    if let Some(exit) = reaped.main {
        log_child_exit(child, exit, drain.as_ref());
        *main = Some(exit);
    }
    if reaped.orphans > 0 {
        if drain.is_some() {
            info!(phase = "reaped", count = reaped.orphans, "reaped orphans");
        } else {
            debug!(phase = "reaped", count = reaped.orphans, "reaped orphans");
        }
    }
    if reaped.main_stopped && job_control {
        stop_with_child(child);
    }
    let exit = (*main)?;
    // As PID 1, processes that are not rinit's children (`docker exec`) are
    // rinit's to end too, but only /proc shows they are still there.
    let others = !reaped.none_left || (pid1 && !reap::survivors(true).is_empty());
    if !others {
        return Some(finish(cfg, exit, drain.as_ref()));
    }
    if reaped.main.is_some() {
        // A stop drain already signalled the group; what escaped it has not been.
        sweep_stragglers(cfg, target, pid1, drain.is_some());
    }
    let now = Instant::now();
    let d = drain.get_or_insert_with(|| Drain::on_child_exit(&cfg.plan, now));
    if reaped.none_left {
        // No SIGCHLD will say when the non-children are gone: look again soon.
        d.recheck(now);
    }
    None
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
        if maintenance(cfg, r.signo) {
            // Cloud Run's notice of a live migration (TSTP) and its end
            // (CONT): transparent to the job, so no drain, but an operator
            // reading the log must see why the worker paused.
            info!(phase = "maintenance", severity = "NOTICE", signal = %name(r.signo), sender_pid = sender,
            "{}", if r.signo == libc::SIGTSTP {
                "Cloud Run maintenance event: migration ahead; forwarding, not draining"
            } else {
                "Cloud Run maintenance event over; forwarding"
            });
        } else if drain.is_some() {
            info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        } else {
            debug!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        }
        // The terminal goes back to the command before its SIGCONT, after its SIGTSTP.
        if r.signo == libc::SIGCONT {
            job_control(r.signo, target, pid1, isolation);
        }
        if let Some(t) = reachable(target, main_alive).filter(|_| forwarded != 0) {
            forward(t, forwarded, false, drain.is_some());
        }
        if r.signo != libc::SIGCONT {
            job_control(r.signo, target, pid1, isolation);
        }
        return;
    }
    if forwarded == 0 {
        info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
              "stop signal dropped by --rewrite");
        return;
    }
    match drain {
        None => {
            // The common case (no stop sequence, no pre-stop delay): signal the
            // child before any bookkeeping or logging. Measured (bench/run,
            // figure 3): the work below, done first on cold caches, added
            // ~27 µs to the forwarding latency.
            let at_once = cfg.plan.sequence.is_none() && cfg.plan.pre_stop.is_zero();
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
            let d = drain.insert(Drain::on_stop_signal(&cfg.plan, pending, now));
            d.repeated(r.signo);
        }
        Some(d) if r.signo == libc::SIGINT && !d.escalated => {
            let second = if d.repeated(libc::SIGINT) {
                "second "
            } else {
                ""
            };
            warn!(
                phase = "signal",
                signal = "SIGINT",
                sender_pid = sender,
                "{second}interrupt during the drain: killing now"
            );
            escalate(target, pid1, main_alive, Some(d));
        }
        Some(d) => {
            if d.repeated(r.signo) {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
                      "already draining; not forwarded again");
                return;
            }
            // A different stop signal mid-drain is a new instruction (QUIT after
            // TERM is Celery's cold shutdown): pass it on.
            info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "stop signal during the drain");
            if let Some(t) = reachable(target, main_alive) {
                forward(t, forwarded, false, true);
            }
        }
    }
}

/// Cloud Run jobs get SIGTSTP 10 s before a live migration and SIGCONT
/// right after it.
fn maintenance(cfg: &Config, signo: i32) -> bool {
    cfg.platform == crate::platform::Platform::CloudRun
        && (signo == libc::SIGTSTP || signo == libc::SIGCONT)
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
            // Only when the shell resumed the job in the foreground (`fg`, not
            // `bg`): taking the terminal from the shell would make it exit.
            // SAFETY: plain syscalls; SIGTTOU is blocked, so rinit may do it.
            unsafe {
                if let Target::Group(pgid) = target {
                    if libc::tcgetpgrp(0) == libc::getpgrp() {
                        libc::tcsetpgrp(0, pgid);
                    }
                }
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

/// SIGKILLs everything rinit is responsible for, then schedules a recheck
/// for anything that slipped through (forked or left the group meanwhile).
fn escalate(target: Target, pid1: bool, main_alive: bool, drain: Option<&mut Drain>) {
    kill_rest(target, pid1, main_alive, true);
    if let Some(d) = drain {
        d.escalate(Instant::now());
    }
}

/// SIGKILL, widest first so the deadline holds however many processes there
/// are: as PID 1 the whole namespace (daemons that escaped the group with
/// setsid included), the child's group, then each survivor by pid, which
/// also names them in the log (`logged`; rechecks log at debug).
fn kill_rest(target: Target, pid1: bool, main_alive: bool, logged: bool) {
    let group = match target {
        Target::Group(pgid) | Target::Child(pgid) => pgid,
    };
    // SAFETY: kill has no memory effects; kill(-1) from PID 1 spares PID 1.
    unsafe {
        if pid1 {
            libc::kill(-1, libc::SIGKILL);
        }
        // Only while the unreaped leader pins the group's id: once reaped, the
        // number could name someone else's group.
        if main_alive {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    // Listed after the wide kills, so the dying count: they were running at the deadline.
    let left = if logged {
        reap::survivors_and_dying(pid1)
    } else {
        reap::survivors(pid1)
    };
    for p in left {
        if logged {
            warn!(phase = "kill", pid = p.pid, comm = %p.comm, "SIGKILL");
        } else {
            debug!(phase = "kill", pid = p.pid, comm = %p.comm, "SIGKILL (recheck)");
        }
        // SAFETY: as above.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}

/// The main child is gone but others remain: SIGTERM them now (SIGKILL
/// follows at the grace). Each gets one TERM: the group's members through
/// the group unless a stop drain already signalled it, the rest (daemons that
/// left the group) one by one.
fn sweep_stragglers(cfg: &Config, target: Target, pid1: bool, group_signalled: bool) {
    log::mark_stop(Instant::now());
    let group = match target {
        Target::Group(pgid) => Some(pgid),
        Target::Child(_) => None,
    };
    let mut sent = 0u64;
    for p in reap::survivors(pid1) {
        // SAFETY: getpgid and kill have no memory effects.
        if group.is_some_and(|g| unsafe { libc::getpgid(p.pid) } == g) {
            continue;
        }
        debug!(phase = "forward", signal = "SIGTERM", pid = p.pid, comm = %p.comm, "straggler");
        unsafe { libc::kill(p.pid, libc::SIGTERM) };
        sent += 1;
    }
    if let Some(pgid) = group.filter(|_| !group_signalled) {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        info!(phase = "forward", signal = "SIGTERM", target = %target.describe(), grace = %grace_text(cfg),
              "main child gone; terminating what is left (its group)");
    }
    if sent > 0 {
        info!(phase = "forward", signal = "SIGTERM", count = sent, grace = %grace_text(cfg),
              "main child gone; terminating what is left (outside its group)");
    }
}

/// The main child stopped while it owned the terminal (Ctrl-Z): take the
/// terminal back and stop rinit too, so the shell sees the job stopped.
/// SIGCONT (`fg`) resumes rinit and `job_control` hands the terminal back.
/// A stop while the shell owns the terminal (`kill -TSTP`, `bg`) leaves it
/// alone: taking it would make the shell exit.
fn stop_with_child(child: i32) {
    // SAFETY: plain syscalls; SIGTTOU is blocked, so the background may take the terminal.
    unsafe {
        if libc::tcgetpgrp(0) == child {
            libc::tcsetpgrp(0, libc::getpgrp());
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Logs the exit line and maps the child's exit to rinit's status.
fn finish(cfg: &Config, exit: Exit, drain: Option<&Drain>) -> i32 {
    // As tini's -e: the final status, whether the child exited with it or
    // died by a signal (`-e 143` covers a JVM that dies by its SIGTERM).
    let status = match exit.status() {
        s if cfg.expect_exit.contains(&s) => 0,
        s => s,
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
        kill_after = %cfg.window.length().map_or_else(|| "none".into(), crate::platform::fmt),
        window = cfg.window.kind(),
        mode,
        tty = isolation == Isolation::Foreground,
        "started {}", cfg.command[0].to_string_lossy()
    );
}
