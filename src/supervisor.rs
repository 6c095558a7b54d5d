//! The init itself: spawn, then one loop that waits for a signal or the next
//! drain step, forwards, reaps, and exits once nothing is left.
//!
//! ```text
//! run:  configure_signals, spawn, then loop {
//!           take_due_steps      (stop-sequence sends, the deadline, rechecks)
//!           wait for a signal   (no timeout unless a step is pending)
//!           SIGCHLD -> on_reap  (may return rinit's exit status)
//!           other   -> on_signal
//!       }
//! ```
//!
//! A `Supervisor` keeps what is fixed at start (config, child, target, pid1,
//! isolation) apart from the two values that change: the main child's exit
//! (once reaped) and the drain (once a stop began). rinit exits when the
//! main child has been reaped and nothing else is left: no child, and as
//! PID 1 no other process in the namespace (`docker exec`'s, which only
//! /proc shows, are checked every `RECHECK`).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::cli::Config;
use crate::log;
use crate::reap::{self, Exit};
use crate::shutdown::{self, Action, Drain, Step};
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
    let mut s = Supervisor::new(cfg, child, pid1, isolation);
    s.log_start(subreaper);
    loop {
        if let Some(status) = s.take_due_steps() {
            return status;
        }
        match signals::wait(&wait_set, s.timeout()) {
            None => {}
            Some(r) if r.signo == libc::SIGCHLD => {
                if let Some(status) = s.on_reap() {
                    return status;
                }
            }
            Some(r) => s.on_signal(r),
        }
    }
}

/// The init's state: fixed settings, then what changes as the container stops.
struct Supervisor {
    cfg: Config,
    /// The main child's pid.
    child: i32,
    /// Where forwarded signals go: the child's group, or the child alone.
    target: Target,
    /// PID 1 of its namespace: everything in it is rinit's to end.
    pid1: bool,
    isolation: Isolation,
    /// The main child's exit, once reaped.
    main: Option<Exit>,
    /// The drain, once a stop (or the main child's exit) began one.
    drain: Option<Drain>,
}

impl Supervisor {
    fn new(cfg: Config, child: i32, pid1: bool, isolation: Isolation) -> Supervisor {
        let target = if cfg.single_child {
            Target::Child(child)
        } else {
            Target::Group(child)
        };
        Supervisor {
            cfg,
            child,
            target,
            pid1,
            isolation,
            main: None,
            drain: None,
        }
    }

    /// The main child has not been reaped yet.
    fn main_alive(&self) -> bool {
        self.main.is_none()
    }

    fn draining(&self) -> bool {
        self.drain.is_some()
    }

    fn escalated(&self) -> bool {
        self.drain.as_ref().is_some_and(|d| d.escalated)
    }

    /// How long the loop may sleep: until the next drain step, or forever.
    fn timeout(&self) -> Option<Duration> {
        self.drain
            .as_ref()
            .and_then(Drain::next_at)
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Carries out every drain step that is due; rinit's exit status if a
    /// recheck finds nothing left.
    fn take_due_steps(&mut self) -> Option<i32> {
        while let Some(step) = self.drain.as_mut().and_then(|d| d.due(Instant::now())) {
            match step {
                Step::Send { signo, staged } => {
                    if let Some(t) = self.reachable() {
                        forward(t, signo, staged, true);
                    }
                }
                Step::Deadline => {
                    warn!(phase = "deadline", grace = %self.grace_text(), "grace expired; killing what is left");
                    self.escalate();
                }
                Step::Recheck => {
                    if self.escalated() {
                        self.kill_rest(false);
                    }
                    if let Some(status) = self.on_reap() {
                        return Some(status);
                    }
                    if let Some(d) = self.drain.as_mut().filter(|d| d.escalated) {
                        d.recheck(Instant::now());
                    }
                }
            }
        }
        None
    }

    /// Reaps what has exited and decides what follows: rinit's exit status
    /// once the main child and everything else are gone; the straggler sweep
    /// when the main child has just gone and others remain.
    fn on_reap(&mut self) -> Option<i32> {
        let job_control = self.isolation == Isolation::Foreground && !self.pid1;
        let reaped = reap::reap_zombies(self.child, job_control);
        if let Some(exit) = reaped.main {
            self.log_child_exit(exit);
            self.main = Some(exit);
        }
        if reaped.orphans > 0 {
            if self.draining() {
                info!(phase = "reaped", count = reaped.orphans, "reaped orphans");
            } else {
                debug!(phase = "reaped", count = reaped.orphans, "reaped orphans");
            }
        }
        if reaped.main_stopped && job_control {
            stop_with_child(self.child);
        }
        let exit = self.main?;
        // As PID 1, processes that are not rinit's children (`docker exec`) are
        // rinit's to end too, but only /proc shows they are still there.
        let others = !reaped.none_left || (self.pid1 && !reap::survivors(true).is_empty());
        if !others {
            return Some(self.finish(exit));
        }
        if reaped.main.is_some() {
            // A stop drain already signalled the group; what escaped it has not been.
            self.sweep_stragglers();
        }
        let now = Instant::now();
        let plan = &self.cfg.plan;
        let d = self
            .drain
            .get_or_insert_with(|| Drain::on_child_exit(plan, now));
        if reaped.none_left {
            // No SIGCHLD will say when the non-children are gone: look again soon.
            d.recheck(now);
        }
        None
    }

    /// Handles one received signal other than SIGCHLD.
    fn on_signal(&mut self, r: Received) {
        // A signal rinit raised against itself (SIGPIPE on a closed stderr) is not the child's business.
        if r.sender == Some(std::process::id() as i32) {
            return;
        }
        let forwarded = self.cfg.rewrites.apply(r.signo);
        if !self.cfg.plan.stop_signals.contains(&r.signo) {
            self.pass_on(r, forwarded);
            return;
        }
        let sender = r.sender.unwrap_or(0);
        match shutdown::on_stop_signal(self.drain.as_mut(), r.signo, forwarded) {
            Action::Drop => {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
                      "stop signal dropped by --rewrite");
            }
            Action::Start => self.start_drain(r, forwarded),
            Action::Interrupt { second } => {
                warn!(
                    phase = "signal",
                    signal = "SIGINT",
                    sender_pid = sender,
                    "{}interrupt during the drain: killing now",
                    if second { "second " } else { "" }
                );
                self.escalate();
            }
            Action::Repeat => {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
                      "already draining; not forwarded again");
            }
            Action::Forward => {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "stop signal during the drain");
                if let Some(t) = self.reachable() {
                    forward(t, forwarded, false, true);
                }
            }
        }
    }

    /// Forwards a signal that is not a stop signal, with the terminal's job
    /// control around it when rinit runs in a shell.
    fn pass_on(&self, r: Received, forwarded: i32) {
        let sender = r.sender.unwrap_or(0);
        if self.maintenance(r.signo) {
            // Cloud Run's notice of a live migration (TSTP) and its end
            // (CONT): transparent to the job, so no drain, but an operator
            // reading the log must see why the worker paused.
            info!(phase = "maintenance", severity = "NOTICE", signal = %name(r.signo), sender_pid = sender,
            "Cloud Run maintenance event {}; {}, not draining",
            if r.signo == libc::SIGTSTP { "ahead (live migration)" } else { "over" },
            if forwarded == 0 { "dropped by --rewrite" } else { "forwarding" });
        } else if self.draining() {
            info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        } else {
            debug!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "received");
        }
        // The terminal goes back to the command before its SIGCONT, after its SIGTSTP.
        if r.signo == libc::SIGCONT {
            self.job_control(r.signo);
        }
        if let Some(t) = self.reachable().filter(|_| forwarded != 0) {
            forward(t, forwarded, false, self.draining());
        }
        if r.signo != libc::SIGCONT {
            self.job_control(r.signo);
        }
    }

    /// The first stop signal: forward it and start the clock.
    fn start_drain(&mut self, r: Received, forwarded: i32) {
        // The common case (no stop sequence, no pre-stop delay): signal the
        // child before any bookkeeping or logging. Measured (bench/run,
        // figure 3): the work below, done first on cold caches, added
        // ~27 µs to the forwarding latency.
        let plan = &self.cfg.plan;
        let at_once = plan.sequence.is_none() && plan.pre_stop.is_zero();
        if at_once {
            self.target.send(forwarded);
        }
        let now = Instant::now();
        log::mark_stop(now);
        info!(phase = "signal", severity = "NOTICE", signal = %name(r.signo), sender_pid = r.sender.unwrap_or(0),
              grace = %self.grace_text(), "stop signal received; draining");
        if at_once {
            info!(phase = "forward", signal = %name(forwarded), target = %self.target.describe(), "forwarded");
        }
        // Already sent: the drain keeps only the deadline.
        let pending = if at_once { 0 } else { forwarded };
        self.drain = Some(Drain::on_stop(&self.cfg.plan, r.signo, pending, now));
    }

    /// Cloud Run jobs get SIGTSTP 10 s before a live migration and SIGCONT
    /// right after it.
    fn maintenance(&self, signo: i32) -> bool {
        self.cfg.platform == crate::platform::Platform::CloudRun
            && (signo == libc::SIGTSTP || signo == libc::SIGCONT)
    }

    /// The target, unless it is a lone child that has been reaped: its pid
    /// may already belong to another process. (A group's id stays pinned
    /// while any member lives, and a group with none left gets nothing.)
    fn reachable(&self) -> Option<Target> {
        match self.target {
            Target::Child(_) if !self.main_alive() => None,
            t => Some(t),
        }
    }

    /// Terminal job control (only with a TTY, not as PID 1): a stop signal
    /// stops rinit too, so the shell sees the job stopped; SIGCONT gives the
    /// terminal back to the command.
    fn job_control(&self, signo: i32) {
        if self.isolation != Isolation::Foreground || self.pid1 {
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
                    if let Target::Group(pgid) = self.target {
                        if libc::tcgetpgrp(0) == libc::getpgrp() {
                            libc::tcsetpgrp(0, pgid);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// SIGKILLs everything rinit is responsible for, then schedules a recheck
    /// for anything that slipped through (forked or left the group meanwhile).
    fn escalate(&mut self) {
        self.kill_rest(true);
        if let Some(d) = self.drain.as_mut() {
            d.escalate(Instant::now());
        }
    }

    /// SIGKILL, widest first so the deadline holds however many processes
    /// there are: as PID 1 the whole namespace (daemons that escaped the group
    /// with setsid included), the child's group, then each survivor by pid,
    /// which also names them in the log (`logged`; rechecks log at debug).
    fn kill_rest(&self, logged: bool) {
        let group = match self.target {
            Target::Group(pgid) | Target::Child(pgid) => pgid,
        };
        // SAFETY: kill has no memory effects; kill(-1) from PID 1 spares PID 1.
        unsafe {
            if self.pid1 {
                libc::kill(-1, libc::SIGKILL);
            }
            // Only while the unreaped leader pins the group's id: once reaped, the
            // number could name someone else's group.
            if self.main_alive() {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        // Listed after the wide kills, so the dying count: they were running at the deadline.
        let left = if logged {
            reap::survivors_and_dying(self.pid1)
        } else {
            reap::survivors(self.pid1)
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
    /// the group unless a stop drain already signalled it, the rest (daemons
    /// that left the group) one by one.
    fn sweep_stragglers(&self) {
        log::mark_stop(Instant::now());
        let group = match self.target {
            Target::Group(pgid) => Some(pgid),
            Target::Child(_) => None,
        };
        let mut sent = 0u64;
        for p in reap::survivors(self.pid1) {
            // SAFETY: getpgid and kill have no memory effects.
            if group.is_some_and(|g| unsafe { libc::getpgid(p.pid) } == g) {
                continue;
            }
            debug!(phase = "forward", signal = "SIGTERM", pid = p.pid, comm = %p.comm, "straggler");
            unsafe { libc::kill(p.pid, libc::SIGTERM) };
            sent += 1;
        }
        if let Some(pgid) = group.filter(|_| !self.draining()) {
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            info!(phase = "forward", signal = "SIGTERM", target = %self.target.describe(), grace = %self.grace_text(),
                  "main child gone; terminating what is left (its group)");
        }
        if sent > 0 {
            info!(phase = "forward", signal = "SIGTERM", count = sent, grace = %self.grace_text(),
                  "main child gone; terminating what is left (outside its group)");
        }
    }

    /// Logs the exit line and maps the child's exit to rinit's status.
    fn finish(&self, exit: Exit) -> i32 {
        // As tini's -e: the final status, whether the child exited with it or
        // died by a signal (`-e 143` covers a JVM that dies by its SIGTERM).
        let status = match exit.status() {
            s if self.cfg.expect_exit.contains(&s) => 0,
            s => s,
        };
        let escalated = self.escalated();
        let drain_ms = self.drain.as_ref().map_or(0, Drain::elapsed_ms);
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
    fn log_child_exit(&self, exit: Exit) {
        let pid = self.child;
        match exit {
            Exit::Code(code) => info!(phase = "child_exit", pid, code, "main child exited"),
            Exit::Signal(s) => {
                info!(phase = "child_exit", pid, signal = %name(s), killed_by_rinit = self.escalated(),
                      "main child killed by signal")
            }
        }
    }

    fn grace_text(&self) -> String {
        self.cfg
            .plan
            .grace
            .map_or_else(|| "none".into(), crate::platform::fmt)
    }

    /// The `start` line, and the warning about an assumed window if any.
    fn log_start(&self, subreaper: bool) {
        let cfg = &self.cfg;
        // SAFETY: getpgid has no memory effects.
        let pgid = unsafe { libc::getpgid(self.child) };
        let mode = match (self.pid1, subreaper) {
            (true, _) => "pid1",
            (false, true) => "subreaper",
            (false, false) => "plain",
        };
        info!(
            phase = "start",
            version = env!("CARGO_PKG_VERSION"),
            child_pid = self.child,
            pgid,
            grace = %self.grace_text(),
            platform = cfg.platform.name(),
            kill_after = %cfg.window.length().map_or_else(|| "none".into(), crate::platform::fmt),
            window = cfg.window.kind(),
            mode,
            tty = self.isolation == Isolation::Foreground,
            "started {}", cfg.command[0].to_string_lossy()
        );
        if let Some(w) = &cfg.grace_warning {
            warn!(phase = "start", platform = cfg.platform.name(), "{w}");
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
