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

use std::time::{Duration, Instant};

use crate::platform::fmt;
use crate::signals;

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

/// The worker protocols rinit knows, as `--stop-sequence` text. A negative
/// offset counts back from the grace deadline.
pub const PRESETS: [(&str, &str, &str); 4] = [
    (
        "sidekiq",
        "TSTP@0s,TERM@2s",
        "TSTP = quiet (stop fetching), TERM 2s later = shut down",
    ),
    (
        "faktory",
        "TSTP@0s,TERM@2s",
        "TSTP = quiet, TERM 2s later = shut down",
    ),
    (
        "celery",
        "TERM@0s,QUIT@-3s",
        "TERM = warm shutdown, QUIT 3s before the deadline = cold",
    ),
    (
        "resque",
        "QUIT@0s,TERM@-3s",
        "QUIT = finish the job and exit, TERM 3s before the deadline = kill the job now",
    ),
];

/// Parses `SIG@OFFSET,...` (OFFSET a duration such as `5s`, or `-3s` for
/// "3 s before the deadline") and resolves each step against the grace and
/// pre-stop delay. Every step must fall after the pre-stop delay and before
/// the deadline, or it could never run.
pub fn parse_sequence(
    text: &str,
    grace: Option<Duration>,
    pre_stop: Duration,
) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (sig, offset) = part.split_once('@').ok_or_else(|| {
            format!("--stop-sequence step '{part}' must be SIGNAL@OFFSET, e.g. TERM@5s")
        })?;
        let signo = signals::parse(sig, false)
            .map_err(|e| format!("--stop-sequence step '{part}': {e}"))?;
        let (from_deadline, dur) = match offset.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, offset.trim()),
        };
        let dur = crate::platform::parse_duration(
            &format!("--stop-sequence step '{part}': offset"),
            dur,
        )?;
        let at = if from_deadline {
            let g = grace.ok_or_else(|| {
                format!("--stop-sequence step '{part}' counts from the deadline, but --grace=none has none")
            })?;
            let at = g.checked_sub(dur).ok_or_else(|| {
                format!(
                    "--stop-sequence step '{part}' is {} before a deadline only {} away",
                    fmt(dur),
                    fmt(g)
                )
            })?;
            if at < pre_stop {
                return Err(format!(
                    "--stop-sequence step '{part}' falls at {}, inside --pre-stop-delay={}",
                    fmt(at),
                    fmt(pre_stop)
                ));
            }
            at
        } else {
            pre_stop + dur
        };
        if let Some(g) = grace.filter(|&g| at >= g) {
            return Err(format!(
                "--stop-sequence step '{part}' falls at {}, at or past the --grace={} deadline",
                fmt(at),
                fmt(g)
            ));
        }
        stages.push(Stage { signo, at });
    }
    if stages.is_empty() {
        return Err(format!("--stop-sequence '{text}' has no steps"));
    }
    stages.sort_by_key(|s| s.at);
    Ok(stages)
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
}

/// How often a `Recheck` comes while something is left.
pub const RECHECK: Duration = Duration::from_millis(100);

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
    /// Starts a drain for stop signal `signo` (already rewritten; 0 when the
    /// supervisor has already sent it): the plan's sequence, or `signo`
    /// after the pre-stop delay.
    pub fn on_stop_signal(plan: &Plan, signo: i32, now: Instant) -> Drain {
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
        Drain::with_deadline(plan, steps, now)
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
    /// remaining step, including pending signals the dead cannot receive.
    pub fn escalate(&mut self, now: Instant) {
        self.escalated = true;
        self.steps.clear();
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

    /// Records stop signal `signo`; true if it had been received before.
    pub fn repeated(&mut self, signo: i32) -> bool {
        let bit = 1u64 << (signo as u64 % 64);
        let seen = self.seen & bit != 0;
        self.seen |= bit;
        seen
    }

    /// Milliseconds since the drain started.
    pub fn elapsed_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn sequence_resolves_offsets() {
        let seq = parse_sequence("TERM@5s, TSTP@0s", Some(S(10)), S(0)).unwrap();
        assert_eq!(
            seq,
            vec![
                Stage {
                    signo: 20,
                    at: S(0)
                },
                Stage {
                    signo: 15,
                    at: S(5)
                }
            ]
        );
        let seq = parse_sequence("TERM@0s,QUIT@-3s", Some(S(10)), S(1)).unwrap();
        assert_eq!(
            seq,
            vec![
                Stage {
                    signo: 15,
                    at: S(1)
                },
                Stage { signo: 3, at: S(7) }
            ]
        );
    }

    #[test]
    fn sequence_refuses_what_cannot_run() {
        assert!(parse_sequence("TERM@10s", Some(S(10)), S(0))
            .unwrap_err()
            .contains("past the --grace=10s"));
        assert!(parse_sequence("TERM@8s", Some(S(10)), S(3)).is_err());
        assert!(parse_sequence("QUIT@-12s", Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("QUIT@-3s", None, S(0)).is_err());
        assert!(parse_sequence("QUIT@-8s", Some(S(10)), S(3)).is_err());
        assert!(parse_sequence("TERM", Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("NOPE@1s", Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("", Some(S(10)), S(0)).is_err());
    }

    #[test]
    fn presets_parse_with_the_default_grace() {
        for (name, seq, _) in PRESETS {
            assert!(parse_sequence(seq, Some(S(8)), S(0)).is_ok(), "{name}");
        }
    }

    #[test]
    fn drain_steps_in_order() {
        let plan = Plan {
            grace: Some(S(10)),
            stop_signals: vec![15],
            sequence: None,
            pre_stop: S(2),
        };
        let t0 = Instant::now();
        let mut d = Drain::on_stop_signal(&plan, 15, t0);
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
}
