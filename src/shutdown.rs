//! The bounded drain: what happens between a stop signal and rinit's exit.
//!
//! Design. A stop (a stop signal, or the main child exiting while others
//! still run) starts the clock once. From then on the drain is a list of
//! timed steps, fixed at start-up so every bad combination is refused before
//! the command runs:
//!
//! 1. after `--pre-stop-delay`, send the stop signal (or each step of a
//!    `--stop-sequence`/`--preset`, at its offset) to the child's group;
//! 2. at `--grace`, SIGKILL everything still alive (the "deadline").
//!
//! Nothing here sleeps: the supervisor waits for signals with the next
//! step's time as its timeout, and exits the moment the last process has
//! been reaped, whatever steps remain. So a drain that ends early never costs
//! the rest of the grace, and one that does not end is cut at the grace,
//! before the platform's own SIGKILL can land mid-job.
//!
//! What a stop signal means is decided here too, by [`on_stop_signal`], and
//! only here; the supervisor carries out the [`Action`]:
//!
//! - rewritten to 0 (`-r TERM:0`): dropped, and it starts no drain;
//! - the first one starts the drain;
//! - SIGINT during a drain kills everything at once (a second Ctrl-C, or an
//!   INT after a TERM);
//! - a repeat of one already received is logged, not forwarded (workers read
//!   a second TERM as "quit now");
//! - a different one is forwarded (QUIT after TERM is Celery's cold shutdown).
//!
//! The states, in order: running (no `Drain`), draining (steps pending),
//! killing (`escalated`: SIGKILL sent, rechecks until nothing is left, or
//! `KILL_WAIT` has passed), exited.

use std::time::{Duration, Instant};

/// One timed signal of a stop sequence, resolved against the grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Signal to send to the child's group.
    pub signo: i32,
    /// When, counted from the stop signal.
    pub at: Duration,
}

/// Everything rinit does on a stop, decided at start-up.
#[derive(Clone, Debug)]
pub struct Plan {
    /// SIGKILL the rest this long after the stop; `None` never escalates.
    pub grace: Option<Duration>,
    /// Signals that start the drain (default TERM, INT, QUIT).
    pub stop_signals: Vec<i32>,
    /// Explicit steps; `None` forwards the stop signal itself after the
    /// pre-stop delay.
    pub sequence: Option<Vec<Stage>>,
    /// Wait this long before forwarding anything.
    pub pre_stop: Duration,
}

/// The margin kept between the end of the child's own drain budget and
/// rinit's deadline: what a runner takes after its own timeout to give up
/// and exit (Sidekiq's `-t` expiry: 0.5 s, measured by tests/runners.rs;
/// the reference worker's DRAIN_TIMEOUT: tens of ms), plus reaping and
/// logging, with room to spare.
pub const BUDGET_MARGIN: Duration = Duration::from_secs(1);

impl Plan {
    /// How long the child has between the stop signal it gets (the stop
    /// signal itself after any pre-stop delay; in a sequence, its TERM step,
    /// else its first step) and rinit's deadline, less `BUDGET_MARGIN`:
    /// handed to the child as `RINIT_DRAIN_MS`, so its own drain timeout
    /// follows rinit's grace instead of being kept in step by hand. `None`
    /// without a deadline (`--grace=none`).
    pub fn child_budget(&self) -> Option<Duration> {
        let from = match &self.sequence {
            Some(seq) => seq
                .iter()
                .find(|s| s.signo == libc::SIGTERM)
                .or(seq.first())
                .map_or(self.pre_stop, |s| s.at),
            None => self.pre_stop,
        };
        Some(
            self.grace?
                .saturating_sub(from)
                .saturating_sub(BUDGET_MARGIN),
        )
    }
}

/// What the supervisor must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this signal to the child's group; `staged` when it is a
    /// stop-sequence step rather than the forwarded stop signal.
    Send { signo: i32, staged: bool },
    /// The grace is over: SIGKILL everything that is left.
    Deadline,
    /// Look again for what is left: after a SIGKILL (a process forked or
    /// left the group while rinit was killing), and as PID 1 for processes
    /// that are not rinit's children (`docker exec`), whose end no SIGCHLD
    /// announces.
    Recheck,
    /// `KILL_WAIT` after the SIGKILL something is still there: rinit exits
    /// anyway, naming it.
    GiveUp,
}

/// How often a `Recheck` comes while something is left.
pub const RECHECK: Duration = Duration::from_millis(100);

/// How long rinit waits, after its SIGKILL, for the killed to be gone.
/// A killed process is usually gone within milliseconds; one that is not
/// could not be killed (a root process when rinit is not root) or is stuck
/// in the kernel (uninterruptible I/O). rinit's promise is to end before the
/// platform's kill, at least 1 s after the deadline when the window is
/// known, so it stops waiting after half of that: as PID 1 its exit makes
/// the kernel kill everything left in the namespace, permissions or not.
pub const KILL_WAIT: Duration = Duration::from_millis(500);

/// A drain in progress.
#[derive(Debug)]
pub struct Drain {
    /// When the drain started.
    pub since: Instant,
    /// Timed steps not yet taken, earliest first.
    steps: Vec<(Instant, Step)>,
    /// SIGKILL has been sent; only rechecks are left to schedule.
    pub escalated: bool,
    /// Stop signals already received, as a bit mask: a repeat is not
    /// forwarded again (workers read a second TERM as "quit now").
    seen: u64,
}

impl Drain {
    /// Starts a drain for stop signal `received`, to be forwarded as
    /// `signo` (already rewritten; 0 when the supervisor has already sent it):
    /// the plan's sequence, or `signo` after the pre-stop delay.
    pub fn on_stop(plan: &Plan, received: i32, signo: i32, now: Instant) -> Drain {
        let steps: Vec<(Instant, Step)> = match &plan.sequence {
            Some(seq) => seq
                .iter()
                .map(|s| {
                    (
                        now + s.at,
                        Step::Send {
                            signo: s.signo,
                            staged: true,
                        },
                    )
                })
                .collect(),
            None if signo != 0 => vec![(
                now + plan.pre_stop,
                Step::Send {
                    signo,
                    staged: false,
                },
            )],
            None => Vec::new(),
        };
        let mut d = Drain::with_deadline(plan, steps, now);
        d.seen = bit(received);
        d
    }

    /// Starts a drain because the main child exited and others remain: the
    /// supervisor has already sent each of them SIGTERM, so only the SIGKILL
    /// at the grace is left to schedule (a second SIGTERM would read as
    /// "quit now" to workers that count their stop signals).
    pub fn on_child_exit(plan: &Plan, now: Instant) -> Drain {
        Drain::with_deadline(plan, Vec::new(), now)
    }

    /// A drain started at `now` with these `steps`, then the deadline.
    fn with_deadline(plan: &Plan, mut steps: Vec<(Instant, Step)>, now: Instant) -> Drain {
        if let Some(g) = plan.grace {
            steps.push((now + g, Step::Deadline));
        }
        Drain {
            since: now,
            steps,
            escalated: false,
            seen: 0,
        }
    }

    /// The next step that is due at `now`, removed from the schedule.
    pub fn due(&mut self, now: Instant) -> Option<Step> {
        if self.steps.first().is_some_and(|&(at, _)| at <= now) {
            Some(self.steps.remove(0).1)
        } else {
            None
        }
    }

    /// When the supervisor must wake up next, if ever.
    pub fn next_at(&self) -> Option<Instant> {
        self.steps.first().map(|&(at, _)| at)
    }

    /// Escalation happened (deadline or a second SIGINT): drop every
    /// remaining step, including pending signals the dead cannot receive;
    /// look again soon, and give up waiting at `KILL_WAIT`.
    pub fn escalate(&mut self, now: Instant) {
        self.escalated = true;
        self.steps.clear();
        self.steps.push((now + KILL_WAIT, Step::GiveUp));
        self.recheck(now);
    }

    /// Schedules one `Recheck` (if none is pending) a moment from `now`.
    pub fn recheck(&mut self, now: Instant) {
        if self.steps.iter().all(|&(_, s)| s != Step::Recheck) {
            let at = now + RECHECK;
            let pos = self.steps.partition_point(|&(t, _)| t <= at);
            self.steps.insert(pos, (at, Step::Recheck));
        }
    }

    /// Milliseconds since the drain started.
    pub fn elapsed_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }
}

/// `signo`'s bit in a set of signals (1-64).
fn bit(signo: i32) -> u64 {
    1u64 << (signo as u64 % 64)
}

/// What the supervisor does with one stop signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rewritten to 0: ignore it, and start no drain (dumb-init's meaning).
    Drop,
    /// The first stop signal: start the drain.
    Start,
    /// A stop signal not received before in this drain: pass it on.
    Forward,
    /// Received before: log it, do not forward it again.
    Repeat,
    /// SIGINT during the drain: SIGKILL everything now. `second` when an
    /// INT had already come (a second Ctrl-C) rather than another signal.
    Interrupt { second: bool },
}

/// The drain's rules (module doc) for stop signal `signo`, forwarded as
/// `forwarded` after `--rewrite`, given the drain so far (`None`: running).
/// Sends nothing; it only remembers the signal as received.
pub fn on_stop_signal(drain: Option<&mut Drain>, signo: i32, forwarded: i32) -> Action {
    if forwarded == 0 {
        return Action::Drop;
    }
    let Some(d) = drain else {
        return Action::Start;
    };
    let seen = d.seen & bit(signo) != 0;
    d.seen |= bit(signo);
    match signo {
        libc::SIGINT if !d.escalated => Action::Interrupt { second: seen },
        _ if seen => Action::Repeat,
        _ => Action::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn drain_steps_in_order() {
        let plan = Plan {
            grace: Some(S(10)),
            stop_signals: vec![15],
            sequence: None,
            pre_stop: S(2),
        };
        let t0 = Instant::now();
        let mut d = Drain::on_stop(&plan, 15, 15, t0);
        assert_eq!(d.due(t0), None);
        assert_eq!(d.next_at(), Some(t0 + S(2)));
        assert_eq!(
            d.due(t0 + S(2)),
            Some(Step::Send {
                signo: 15,
                staged: false
            })
        );
        assert_eq!(d.due(t0 + S(10)), Some(Step::Deadline));
        assert_eq!(d.next_at(), None);
    }

    fn plan(grace: Option<Duration>, sequence: Option<Vec<Stage>>) -> Plan {
        Plan {
            grace,
            stop_signals: vec![libc::SIGTERM, libc::SIGINT, libc::SIGQUIT],
            sequence,
            pre_stop: Duration::ZERO,
        }
    }

    /// Every rule of the module doc, as (signals so far, next signal and
    /// what it is forwarded as, expected action).
    #[test]
    fn stop_signal_rules() {
        use libc::{SIGINT as INT, SIGQUIT as QUIT, SIGTERM as TERM, SIGUSR1 as USR1};
        use Action::*;
        /// How the drain came about before `signals` arrived.
        #[derive(Debug)]
        enum From {
            Running,
            StopSignal(i32),
            ChildExit,
            Escalated(i32),
        }
        /// (how the drain began, stop signals since, (signal, forwarded as), action)
        type Case = (From, &'static [i32], (i32, i32), Action);
        let cases: &[Case] = &[
            // The first stop signal starts the drain, unless dropped by -r.
            (From::Running, &[], (TERM, TERM), Start),
            (From::Running, &[], (TERM, QUIT), Start),
            (From::Running, &[], (TERM, 0), Drop),
            // Mid-drain, a dropped signal is still dropped.
            (From::StopSignal(TERM), &[], (QUIT, 0), Drop),
            // Repeats are not forwarded again; the first signal counts.
            (From::StopSignal(TERM), &[], (TERM, TERM), Repeat),
            (From::StopSignal(TERM), &[QUIT], (QUIT, QUIT), Repeat),
            // A different stop signal is forwarded (rewritten as asked).
            (From::StopSignal(TERM), &[], (QUIT, QUIT), Forward),
            (From::StopSignal(TERM), &[], (QUIT, USR1), Forward),
            // Any INT during a drain kills now; a second one says so.
            (
                From::StopSignal(TERM),
                &[],
                (INT, INT),
                Interrupt { second: false },
            ),
            (
                From::StopSignal(INT),
                &[],
                (INT, INT),
                Interrupt { second: true },
            ),
            (
                From::StopSignal(TERM),
                &[QUIT],
                (INT, INT),
                Interrupt { second: false },
            ),
            // After the main child exited, every stop signal is new.
            (From::ChildExit, &[], (TERM, TERM), Forward),
            (
                From::ChildExit,
                &[],
                (INT, INT),
                Interrupt { second: false },
            ),
            // Once killing, INT no longer escalates: a repeat or a forward.
            (From::Escalated(INT), &[], (INT, INT), Repeat),
            (From::Escalated(TERM), &[], (INT, INT), Forward),
        ];
        for (from, before, (signo, forwarded), want) in cases {
            let t0 = Instant::now();
            let p = plan(Some(S(10)), None);
            let mut drain = match *from {
                From::Running => None,
                From::StopSignal(s) => Some(Drain::on_stop(&p, s, s, t0)),
                From::ChildExit => Some(Drain::on_child_exit(&p, t0)),
                From::Escalated(s) => {
                    let mut d = Drain::on_stop(&p, s, s, t0);
                    d.escalate(t0);
                    Some(d)
                }
            };
            for &b in before.iter() {
                on_stop_signal(drain.as_mut(), b, b);
            }
            assert_eq!(
                on_stop_signal(drain.as_mut(), *signo, *forwarded),
                *want,
                "{from:?} then {before:?}, then {signo} forwarded as {forwarded}"
            );
        }
    }

    #[test]
    fn sequence_steps_then_deadline_then_rechecks() {
        let seq = vec![
            Stage {
                signo: libc::SIGTSTP,
                at: S(0),
            },
            Stage {
                signo: libc::SIGTERM,
                at: S(2),
            },
        ];
        let t0 = Instant::now();
        let mut d = Drain::on_stop(&plan(Some(S(5)), Some(seq)), libc::SIGTERM, 0, t0);
        let send = |signo| {
            Some(Step::Send {
                signo,
                staged: true,
            })
        };
        assert_eq!(d.due(t0), send(libc::SIGTSTP));
        assert_eq!(d.due(t0 + S(1)), None);
        assert_eq!(d.due(t0 + S(2)), send(libc::SIGTERM));
        assert_eq!(d.next_at(), Some(t0 + S(5)));
        assert_eq!(d.due(t0 + S(5)), Some(Step::Deadline));
        // Killing: only rechecks, one at a time, RECHECK apart, until
        // KILL_WAIT gives up.
        let t1 = t0 + S(5);
        d.escalate(t1);
        d.recheck(t1);
        assert_eq!(d.next_at(), Some(t1 + RECHECK));
        assert_eq!(d.due(t1 + RECHECK), Some(Step::Recheck));
        d.recheck(t1 + RECHECK);
        assert_eq!(d.next_at(), Some(t1 + RECHECK * 2));
        assert_eq!(d.due(t1 + KILL_WAIT), Some(Step::Recheck));
        assert_eq!(d.due(t1 + KILL_WAIT), Some(Step::GiveUp));
        assert_eq!(d.next_at(), None);
    }

    /// The budget counts from the signal the child gets, not from the stop.
    #[test]
    fn child_budget_counts_from_the_childs_signal() {
        let ms = Duration::from_millis;
        let seq = |steps: &[(i32, u64)]| {
            Some(
                steps
                    .iter()
                    .map(|&(signo, at)| Stage { signo, at: ms(at) })
                    .collect(),
            )
        };
        let mut p = plan(Some(S(8)), None);
        assert_eq!(p.child_budget(), Some(S(7)));
        p.pre_stop = S(2);
        assert_eq!(p.child_budget(), Some(S(5)));
        // Sidekiq's preset under 25 s: TERM at +2 s.
        let p = plan(
            Some(S(25)),
            seq(&[(libc::SIGTSTP, 0), (libc::SIGTERM, 2000)]),
        );
        assert_eq!(p.child_budget(), Some(S(22)));
        // No TERM step: from the first step.
        let p = plan(
            Some(S(10)),
            seq(&[(libc::SIGUSR1, 500), (libc::SIGQUIT, 3000)]),
        );
        assert_eq!(p.child_budget(), Some(ms(8500)));
        // Never negative; none without a deadline.
        assert_eq!(
            plan(Some(ms(800)), None).child_budget(),
            Some(Duration::ZERO)
        );
        assert_eq!(plan(None, None).child_budget(), None);
    }

    #[test]
    fn no_grace_no_deadline() {
        let t0 = Instant::now();
        let mut d = Drain::on_stop(&plan(None, None), libc::SIGTERM, 0, t0);
        assert_eq!(d.next_at(), None, "already forwarded, never killed");
        let mut d2 = Drain::on_child_exit(&plan(None, None), t0);
        assert_eq!(d2.due(t0 + S(3600)), None);
        d.escalate(t0);
        assert!(d.escalated);
    }
}
