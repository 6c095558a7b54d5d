//! The end of the state machine: Draining (nack what is queued, let the
//! writes finish, start no new retry), Flushing (wait until the library has
//! sent every ack and nack), then the summary line and the exit status. One
//! deadline, DRAIN_TIMEOUT after the stop, bounds both.

use super::{Stop, Worker, EXIT_ABORTED, EXIT_DRAIN_TIMEOUT, EXIT_FAILURE, EXIT_OK};
use crate::signals::{Signals, StopSignal};
use crate::stream::{recv_queue, Subscription};
use crate::summary::Summary;
use std::time::{Duration, Instant};

/// The bookkeeping of one drain: when it started, its deadline, and the
/// rule for repeated signals.
pub(super) struct DrainRun {
    /// The summary's `reason`: the signal's name, or what failed.
    reason: &'static str,
    stop_at: Instant,
    /// `stop_at` + DRAIN_TIMEOUT: past it, in-flight work is abandoned.
    deadline: tokio::time::Instant,
    in_flight_at_stop: u64,
    /// A TERM/INT after a TERM/INT aborts; after a TSTP it is the first one.
    terminate_seen: bool,
    /// Exit status of a drain that completes: EXIT_FAILURE exactly when
    /// Pub/Sub is what failed (see [`DrainRun::pubsub_failed`]).
    exit: i32,
}

/// Why a drain was cut short, and the exit status that says so.
pub(super) struct Abandoned {
    /// For the error line.
    why: &'static str,
    /// EXIT_DRAIN_TIMEOUT or EXIT_ABORTED.
    code: i32,
}

impl Worker {
    /// Stops pulling for good (`pulling` is the stream, unless quiet) and
    /// starts the drain: tasks stop retrying, and the deadline starts.
    pub(super) fn stop_pulling(
        &mut self,
        stop: Stop,
        pulling: Option<Subscription>,
        timeout: Duration,
    ) -> DrainRun {
        let stop_at = Instant::now();
        let in_flight_at_stop = self.writes.in_flight() as u64;
        if let Some(sub) = pulling {
            self.stop_stream(sub);
        }
        self.writes.start_drain();
        let (reason, exit, terminate_seen) = match stop {
            Stop::Signal(sig) => (sig.name(), EXIT_OK, matches!(sig, StopSignal::Terminate(_))),
            Stop::StreamFailed => ("stream failure", EXIT_FAILURE, false),
            Stop::Unavailable => ("pubsub unavailable", EXIT_FAILURE, false),
        };
        tracing::info!(
            reason,
            in_flight = in_flight_at_stop,
            drain_timeout_ms = timeout.as_millis() as u64,
            "stopped pulling; draining"
        );
        DrainRun {
            reason,
            stop_at,
            deadline: tokio::time::Instant::from_std(stop_at + timeout),
            in_flight_at_stop,
            terminate_seen,
            exit,
        }
    }

    /// Step 2: nacks everything still queued and lets the write tasks
    /// finish, within the deadline.
    pub(super) async fn drain(
        &mut self,
        run: &mut DrainRun,
        signals: &mut Signals,
    ) -> Result<(), Abandoned> {
        while self.stopped.is_some() || !self.writes.is_empty() {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline) => return Err(Abandoned::timeout()),
                item = recv_queue(&mut self.stopped) => match item {
                    Some(leftover) => self.counts.nack_queued(leftover.handler),
                    None => self.stopped = None,
                },
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.counts.record(done);
                }
            }
        }
        Ok(())
    }

    /// Step 3: waits until the library has sent every ack and nack, within
    /// the same deadline.
    pub(super) async fn flush(
        &mut self,
        run: &mut DrainRun,
        signals: &mut Signals,
    ) -> Result<(), Abandoned> {
        while !self.flushes.is_empty() {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline), if run.pubsub_failed() => {
                    // Every write already ended; only the acks and nacks
                    // are unconfirmed. What they covered is stored, so a
                    // redelivery finds it present: nothing is lost, and
                    // the exit stays the failure's own.
                    tracing::warn!(
                        endpoint = %self.pubsub_endpoint,
                        "acks and nacks not confirmed: Pub/Sub did not answer before the \
                         drain timeout; what they covered is stored and comes back as \
                         redeliveries"
                    );
                    return Ok(());
                }
                _ = tokio::time::sleep_until(run.deadline) => return Err(Abandoned::timeout()),
                Some(_) = self.flushes.join_next() => {}
            }
        }
        tracing::debug!(
            nacked_unstarted = self.counts.nacked_unstarted,
            "acks and nacks flushed"
        );
        Ok(())
    }

    /// Logs the summary line and returns the exit status.
    pub(super) fn finish(&self, run: &DrainRun, ended: Result<(), Abandoned>) -> i32 {
        let (abandoned, code) = match ended {
            Ok(()) => (0, run.exit),
            Err(Abandoned { why, code }) => {
                let abandoned = self.writes.len() as u64;
                tracing::error!(
                    why,
                    abandoned,
                    "drain abandoned: in-flight messages left unacked for redelivery"
                );
                (abandoned, code)
            }
        };
        Summary {
            counts: &self.counts,
            reason: run.reason,
            in_flight_at_stop: run.in_flight_at_stop,
            abandoned,
            drain_ms: run.stop_at.elapsed().as_millis() as u64,
            exit_code: code,
        }
        .log();
        code
    }
}

impl DrainRun {
    /// Pub/Sub itself is what failed (the stream, or the service for longer
    /// than UNAVAILABLE_EXIT_AFTER; nothing else stops with EXIT_FAILURE):
    /// its acks and nacks may never be confirmed, and waiting for them must
    /// not turn exit 1 into exit 3.
    fn pubsub_failed(&self) -> bool {
        self.exit == EXIT_FAILURE
    }

    /// A signal during the drain: a second TERM/INT aborts it, anything
    /// else is logged and ignored.
    fn on_signal(&mut self, sig: StopSignal) -> Result<(), Abandoned> {
        let terminate = matches!(sig, StopSignal::Terminate(_));
        if terminate && self.terminate_seen {
            return Err(Abandoned {
                why: "second termination signal",
                code: EXIT_ABORTED,
            });
        }
        self.terminate_seen |= terminate;
        tracing::info!(signal = sig.name(), "already draining");
        Ok(())
    }
}

impl Abandoned {
    /// The deadline passed with work still in flight.
    fn timeout() -> Abandoned {
        Abandoned {
            why: "drain timeout",
            code: EXIT_DRAIN_TIMEOUT,
        }
    }
}
