//! The init itself: spawn, then one loop that waits for a signal or the next
//! drain step, forwards, reaps, and exits once nothing is left.
//!
//! ```text
//! run:  configure_signals, spawn, then loop {
//!           take_due_steps      (stop-sequence sends, the deadline, rechecks, giving up)
//!           log::flush          (lines a stalled log reader has not taken yet)
//!           wait for a signal   (no timeout unless a step or a log line is pending)
//!           SIGCHLD -> on_reap  (may return rinit's exit status)
//!           other   -> on_signal
//!       }
//! ```
//!
//! A `Supervisor` keeps what is fixed at start (config, child, target, pid1,
//! isolation) apart from what changes: the main child's exit (once reaped),
//! the drain (once a stop began), and what rinit must account for at exit.
//! rinit exits when the main child has been reaped and nothing else is left:
//! no child, and as PID 1 no other process in the namespace (`docker exec`'s,
//! whose end no SIGCHLD announces, are checked every `RECHECK`), or when
//! `KILL_WAIT` after its SIGKILL something still could not be killed.
//!
//! rinit signals only its own. The child's pid, and the id of the group it
//! leads, cannot be reused while the child is unreaped, so until then both
//! are signalled directly. Once it is reaped, its group is signalled member
//! by member, and only while rinit can prove the id is still the child's
//! group (`members_now`); single processes through pidfds
//! (`procfs::Process::signal`).

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::cause::{Cause, Deaths};
use crate::cli::Config;
use crate::log;
use crate::procfs::{self, Process, Scope};
use crate::reap::{self, Exit};
use crate::report;
use crate::shutdown::{self, Action, Drain, Step, KILL_WAIT};
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
    let child = match spawn::spawn(&cfg.command, isolation, cfg.plan.child_budget()) {
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
        let logs_waiting = !log::flush();
        let received = signals::wait(&wait_set, s.timeout(logs_waiting));
        // Once per wake-up, before anything is reaped: a watched process's
        // zombie still tells how it died (kernels before 6.15).
        s.deaths.settle();
        match received {
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
    /// Once the child is reaped: a time (`procfs::now_ticks`) at which its
    /// group was still its group, the proof for `members_now`.
    group_proof: u64,
    /// Why each SIGKILL death happened, and what the deadline killed.
    deaths: Deaths,
    /// When the group's members were last listed for `Deaths::watch`.
    watched_at: Option<Instant>,
}

/// How often, at most, a forward during a drain lists the group's members
/// to watch them (`watch_group`), and how often watched members are looked
/// at while they live.
const WATCH_EVERY: Duration = Duration::from_millis(50);

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
            group_proof: 0,
            deaths: Deaths::start(),
            watched_at: None,
        }
    }

    /// Where rinit looks for what is left: as PID 1 the whole namespace,
    /// otherwise its descendants.
    fn scope(&self) -> Scope {
        if self.pid1 {
            Scope::Namespace
        } else {
            Scope::Descendants
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

    /// How long the loop may sleep: until the next drain step, the next
    /// retry of log lines a stalled reader has not taken, or the next look
    /// at watched processes; with none of those, forever.
    fn timeout(&self, logs_waiting: bool) -> Option<Duration> {
        let step = self
            .drain
            .as_ref()
            .and_then(Drain::next_at)
            .map(|t| t.saturating_duration_since(Instant::now()));
        // While forwarded-to processes are watched (a drain only), look
        // again soon, so a death the forward caused is told when it happens.
        let watch = self.deaths.watching().then_some(WATCH_EVERY);
        [step, logs_waiting.then_some(log::RETRY), watch]
            .into_iter()
            .flatten()
            .min()
    }

    /// Carries out every drain step that is due; rinit's exit status once
    /// nothing is left, or when it gives up waiting for the killed.
    fn take_due_steps(&mut self) -> Option<i32> {
        while let Some(step) = self.drain.as_mut().and_then(|d| d.due(Instant::now())) {
            match step {
                Step::Send { signo, staged } => self.forward(signo, staged),
                Step::Deadline => {
                    // A child that exited a moment ago (its SIGCHLD still
                    // queued) was not killed: reap before deciding it was.
                    // No straggler TERM now: the SIGKILL follows at once.
                    if let Some(status) = self.reap(false) {
                        return Some(status);
                    }
                    warn!(phase = "deadline", grace = %self.grace_text(), "grace expired; killing what is left");
                    self.escalate(Cause::Deadline);
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
                Step::GiveUp => {
                    return Some(self.on_reap().unwrap_or_else(|| self.give_up()));
                }
            }
        }
        None
    }

    /// Reaps what has exited and decides what follows: rinit's exit status
    /// once the main child and everything else are gone; the straggler sweep
    /// when the main child has just gone and others remain.
    fn on_reap(&mut self) -> Option<i32> {
        self.reap(true)
    }

    /// `on_reap`, with the straggler sweep only when `sweep`.
    fn reap(&mut self, sweep: bool) -> Option<i32> {
        let job_control = self.isolation == Isolation::Foreground && !self.pid1;
        // Until the child is reaped its zombie pins the group's id: taken
        // before the reap, this time is one at which the group was its own.
        let before = self.main_alive().then(procfs::now_ticks);
        let reaped = reap::reap_zombies(self.child, job_control);
        self.deaths.explain(&reaped, self.child, self.main_alive());
        if let Some(exit) = reaped.main {
            self.group_proof = before.unwrap_or(0);
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
        // rinit's to end too; no SIGCHLD says when they are gone.
        let others = !reaped.none_left || (self.pid1 && procfs::others_alive());
        if !others {
            return Some(self.finish(exit));
        }
        if sweep && reaped.main.is_some() && !self.escalated() {
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
                self.escalate(Cause::Interrupt);
            }
            Action::Repeat => {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender,
                      "already draining; not forwarded again");
            }
            Action::Forward => {
                info!(phase = "signal", signal = %name(r.signo), sender_pid = sender, "stop signal during the drain");
                self.forward(forwarded, false);
            }
        }
    }

    /// Forwards a signal that is not a stop signal, with the terminal's job
    /// control around it when rinit runs in a shell.
    fn pass_on(&mut self, r: Received, forwarded: i32) {
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
        if forwarded != 0 {
            self.forward(forwarded, false);
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
            self.watch_group(None);
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
        if at_once {
            self.deaths.forwarded(forwarded);
            self.deaths.settle();
        }
    }

    /// Sends `signo` where forwarded signals go and logs it (at info during
    /// a drain, at debug otherwise: the steady state stays quiet); during a
    /// drain, notes the group members it ended.
    fn forward(&mut self, signo: i32, staged: bool) {
        let watch = self.draining();
        // Both ids are signalled directly while the unreaped child pins
        // them. Once the child is reaped a lone child is gone for good, and
        // its group is reached member by member while it provably is its
        // group (`members_now`): listed once, for the watch and the send.
        let sent = match self.target {
            t if self.main_alive() => {
                if watch {
                    self.watch_group(None);
                }
                t.send(signo);
                true
            }
            Target::Child(_) => false,
            Target::Group(_) => {
                let members = self.members_now();
                if watch {
                    self.watch_group(Some(&members));
                }
                for p in &members {
                    let _ = p.signal(signo);
                }
                !members.is_empty()
            }
        };
        if !sent {
            debug!(phase = "forward", signal = %name(signo), target = %self.target.describe(), "nothing left to signal");
            return;
        }
        let what = self.target.describe();
        if staged {
            info!(phase = "stage", signal = %name(signo), target = %what, "stop sequence step sent");
        } else if self.draining() {
            info!(phase = "forward", signal = %name(signo), target = %what, "forwarded");
        } else {
            debug!(phase = "forward", signal = %name(signo), target = %what, "forwarded");
        }
        if self.draining() {
            if let Target::Group(_) = self.target {
                self.deaths.forwarded(signo);
            }
            self.deaths.settle();
        }
    }

    /// Watches the members of the child's group (other than the child)
    /// before a signal is forwarded to it during a drain: a runner's
    /// helpers dying of the stop signal meant for the runner is work lost,
    /// and must not look like a clean drain (`Deaths::settle`). Before, not
    /// after: a parent blocked in `wait` reaps a member the signal kills
    /// within microseconds, before any look after the send (measured:
    /// NOTES.md). `listed`: the members, when the caller has just listed
    /// them.
    fn watch_group(&mut self, listed: Option<&[Process]>) {
        // A storm of signals during a drain must not become a storm of
        // /proc scans: one per WATCH_EVERY at most (the first always).
        let now = Instant::now();
        if self.watched_at.is_some_and(|t| now < t + WATCH_EVERY) {
            return;
        }
        self.watched_at = Some(now);
        if let Target::Group(_) = self.target {
            let members = match listed {
                Some(m) => m.to_vec(),
                None if self.main_alive() => self.group_members(),
                None => self.members_now(),
            };
            self.deaths.watch(members);
        }
    }

    /// The live members of the child's group other than the child. All of
    /// them descend from rinit (the group is the child's session's, which
    /// only its descendants can be in), so rinit's process tree is walked,
    /// not all of /proc: this runs before the first stop signal goes out.
    fn group_members(&self) -> Vec<Process> {
        let Target::Group(g) = self.target else {
            return Vec::new();
        };
        let mut all = procfs::descendants()
            .or_else(|| procfs::scan(Scope::Descendants, false))
            .unwrap_or_default();
        all.retain(|p| p.pgid == g && p.pid != self.child && !p.zombie);
        all
    }

    /// Once the child is reaped: the members of its group, if rinit can
    /// still prove the group is the child's. A group's id can be reused only
    /// once no process is left in the group or the session the child led;
    /// a process reusing it as its pid makes a new group, with `setsid` (a
    /// new session only its later descendants can join) or `setpgid` in its
    /// own session (one the child's group's members, all in the child's
    /// session, cannot join). So one member that started by a time the
    /// group was known to be the child's (the reap, then each look that
    /// proved it) proves it is the child's still. Otherwise none, for good:
    /// the number may since have become someone else's group (or every
    /// member rinit could prove is gone, leaving only processes forked since
    /// its last look: those still get the deadline's SIGKILL). Start times
    /// count in clock ticks (10 ms): a reuse within the tick of the proof
    /// would take the whole pid space wrapping in 10 ms, or root writing
    /// `ns_last_pid` at that very moment.
    fn members_now(&mut self) -> Vec<Process> {
        let now = procfs::now_ticks();
        let members = self.group_members();
        self.prove(now, members)
    }

    /// `members`, listed after `now`, if one of them proves the group is
    /// still the child's (`members_now`); none otherwise, for good.
    fn prove(&mut self, now: u64, members: Vec<Process>) -> Vec<Process> {
        if members.iter().any(|p| p.start <= self.group_proof) {
            self.group_proof = now;
            members
        } else {
            if self.group_proof > 0 {
                debug!(phase = "forward", target = %self.target.describe(), "the group is gone; never signalled again");
            }
            self.group_proof = 0;
            Vec::new()
        }
    }

    /// Cloud Run jobs get SIGTSTP 10 s before a live migration and SIGCONT
    /// right after it.
    fn maintenance(&self, signo: i32) -> bool {
        self.cfg.platform == crate::platform::Platform::CloudRun
            && (signo == libc::SIGTSTP || signo == libc::SIGCONT)
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
    fn escalate(&mut self, why: Cause) {
        self.deaths.kill_cause = Some(why);
        self.kill_rest(true);
        if let Some(d) = self.drain.as_mut() {
            d.escalate(Instant::now());
        }
    }

    /// SIGKILL, widest first so the deadline holds however many processes
    /// there are: as PID 1 the whole namespace (daemons that escaped the group
    /// with setsid included), the child and its group while it pins them,
    /// then each process by pid. At the deadline (`first`) the processes are
    /// listed before the wide kills, so the log names everything that was
    /// running, even what another parent reaps the moment it dies (a `docker
    /// exec`'d process); rechecks list what is still alive and log at debug.
    /// Every kill is checked: one that fails (a root process when rinit runs
    /// as a user) is an ERROR, never "killed".
    fn kill_rest(&mut self, first: bool) {
        let running = if first {
            procfs::scan(self.scope(), false)
        } else {
            None
        };
        if self.pid1 {
            let _ = procfs::kill(-1, libc::SIGKILL);
        }
        if self.main_alive() {
            if self.isolation != Isolation::None {
                let _ = procfs::kill(-self.child, libc::SIGKILL);
            }
            let _ = procfs::kill(self.child, libc::SIGKILL);
        }
        let left = running.or_else(|| procfs::scan(self.scope(), false));
        for p in left.unwrap_or_default() {
            let r = match p.signal(libc::SIGKILL) {
                // Gone already: the wide kill got it.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                r => r,
            };
            if first {
                self.deaths.note_kill(&p, r.is_ok());
            }
            match (r, first) {
                (Ok(()), true) => warn!(phase = "kill", pid = p.pid, comm = %p.comm, "SIGKILL"),
                (Ok(()), false) => {
                    debug!(phase = "kill", pid = p.pid, comm = %p.comm, "SIGKILL (recheck)")
                }
                (Err(e), true) => {
                    error!(phase = "kill", pid = p.pid, comm = %p.comm, error = %e, "cannot SIGKILL")
                }
                (Err(e), false) => {
                    debug!(phase = "kill", pid = p.pid, comm = %p.comm, error = %e, "cannot SIGKILL (recheck)")
                }
            }
        }
    }

    /// `KILL_WAIT` after the SIGKILL something is still there: name it and
    /// exit all the same. As PID 1, rinit's exit makes the kernel kill
    /// everything left in the namespace; otherwise it is left running.
    fn give_up(&mut self) -> i32 {
        let left = procfs::scan(self.scope(), false).unwrap_or_default();
        let fate = if self.pid1 {
            "rinit exits and the kernel kills it with the namespace"
        } else {
            "rinit exits and leaves it running"
        };
        for p in &left {
            error!(phase = "kill", pid = p.pid, comm = %p.comm, wait = %crate::platform::fmt(KILL_WAIT),
                   "still there after SIGKILL; {fate}");
        }
        if left.is_empty() {
            error!(phase = "kill", wait = %crate::platform::fmt(KILL_WAIT),
                   "processes are still there after SIGKILL, and no /proc names them; {fate}");
        }
        // A main child that outlived its SIGKILL dies by it with rinit (PID 1),
        // a death of rinit's causing.
        if self.main.is_none() {
            self.deaths.main_cause = self.deaths.kill_cause;
        }
        self.finish(self.main.unwrap_or(Exit::Signal(libc::SIGKILL)))
    }

    /// The main child is gone but others remain: SIGTERM them now (SIGKILL
    /// follows at the grace). Each gets one TERM: members of the group that
    /// a stop drain already signalled are left out. Without a /proc to name
    /// them, PID 1 can still reach them all with `kill(-1)`.
    fn sweep_stragglers(&mut self) {
        log::mark_stop(Instant::now());
        let now = procfs::now_ticks();
        let left = procfs::scan(self.scope(), false);
        // The group's members are among what is left: no second scan.
        let signalled: Vec<(i32, u64)> = match (self.target, &left) {
            (Target::Group(g), Some(left)) if self.draining() => {
                let members = left
                    .iter()
                    .filter(|p| p.pgid == g && p.pid != self.child)
                    .cloned()
                    .collect();
                self.prove(now, members)
                    .iter()
                    .map(|p| (p.pid, p.start))
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut sent = 0u64;
        match left {
            Some(left) => {
                for p in left
                    .iter()
                    .filter(|p| !signalled.contains(&(p.pid, p.start)))
                {
                    match p.signal(libc::SIGTERM) {
                        Ok(()) => {
                            debug!(phase = "forward", signal = "SIGTERM", pid = p.pid, comm = %p.comm, "straggler");
                            sent += 1;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(e) => {
                            warn!(phase = "forward", signal = "SIGTERM", pid = p.pid, comm = %p.comm, error = %e, "cannot signal a straggler")
                        }
                    }
                }
            }
            None if self.pid1 => {
                let _ = procfs::kill(-1, libc::SIGTERM);
                info!(phase = "forward", signal = "SIGTERM", grace = %self.grace_text(),
                      "main child gone; terminating what is left (everything: no /proc shows this namespace)");
                return;
            }
            None => {}
        }
        if sent > 0 {
            info!(phase = "forward", signal = "SIGTERM", count = sent, grace = %self.grace_text(),
                  "main child gone; terminating what is left");
        }
    }

    /// Logs the exit line, writes the termination message and maps the
    /// child's exit to rinit's status.
    fn finish(&mut self, exit: Exit) -> i32 {
        self.deaths.settle();
        self.deaths.count_oom_at_exit();
        // As tini's -e: the final status, whether the child exited with it or
        // died by a signal (`-e 143` covers a JVM that dies by its SIGTERM).
        let status = match exit.status() {
            s if self.cfg.expect_exit.contains(&s) => 0,
            s => s,
        };
        let escalated = self.escalated();
        let drain_ms = self.drain.as_ref().map_or(0, Drain::elapsed_ms);
        let killed_by_forward = self.deaths.forward_kills.len();
        let main_cause = self.deaths.main_cause;
        let cause = match (exit, main_cause) {
            (Exit::Code(_), _) => "exited",
            (Exit::Signal(_), Some(c)) => c.name(),
            (Exit::Signal(_), None) => "signal",
        };
        let (warning, message) = if escalated {
            (true, "exiting after killing the rest")
        } else if killed_by_forward > 0 {
            (
                true,
                "exiting; the stop signal killed processes that do not handle it",
            )
        } else if self.deaths.oom_unreaped > 0 {
            (
                true,
                "exiting; the OOM killer killed processes rinit did not reap",
            )
        } else {
            let oom = main_cause == Some(Cause::Oom) || self.deaths.oom_total > 0;
            (oom, "exiting")
        };
        if warning {
            warn!(
                phase = "exit",
                status, cause, drain_ms, escalated, killed_by_forward, "{message}"
            );
        } else {
            info!(
                phase = "exit",
                status, cause, drain_ms, escalated, killed_by_forward, "{message}"
            );
        }
        report::write(&self.cfg.termination_log, || {
            report::message(&report::Outcome {
                status,
                exit,
                drain_ms: self.drain.as_ref().map(|_| drain_ms),
                grace: self.grace_text(),
                deaths: &self.deaths,
            })
        });
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
                let cause = self.deaths.main_cause.map_or("signal", Cause::name);
                info!(phase = "child_exit", pid, signal = %name(s), killed_by_rinit = self.escalated(),
                      cause, "main child killed by signal")
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
        if let Some(note) = &cfg.platform_note {
            info!(phase = "start", platform = cfg.platform.name(), "{note}");
        }
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
