//! What happened to every message, counted as it happens, and the one
//! `summary` line that lets an operator (and the tests) check a drain.

use google_cloud_pubsub::subscriber::handler::Handler;

/// Counters for the summary line. Invariants: `acked == stored`, and after
/// a completed drain `received == acked + nacked`.
#[derive(Debug, Default)]
pub struct Counts {
    pub received: u64,
    /// Objects whose existence was confirmed by this process: created now,
    /// or found already present (412).
    pub stored: u64,
    pub created: u64,
    pub already_present: u64,
    pub acked: u64,
    pub nacked: u64,
    pub nacked_write_failed: u64,
    pub nacked_unstorable: u64,
    pub nacked_unstarted: u64,
}

/// What a message task did with its message.
#[derive(Debug)]
pub enum TaskOutcome {
    Acked { created: bool },
    NackedWriteFailed,
    NackedUnstorable,
}

impl Counts {
    /// Counts a message task's end.
    pub fn record(&mut self, r: Result<TaskOutcome, tokio::task::JoinError>) {
        match r {
            Ok(TaskOutcome::Acked { created }) => {
                self.stored += 1;
                self.acked += 1;
                if created {
                    self.created += 1;
                } else {
                    self.already_present += 1;
                }
            }
            Ok(TaskOutcome::NackedWriteFailed) => {
                self.nacked += 1;
                self.nacked_write_failed += 1;
            }
            Ok(TaskOutcome::NackedUnstorable) => {
                self.nacked += 1;
                self.nacked_unstorable += 1;
            }
            // A panicking task dropped its handler, and the handler's Drop
            // nacks: the message is redelivered.
            Err(e) => {
                tracing::error!(error = %e, "message task failed; its message was nacked");
                self.nacked += 1;
                self.nacked_write_failed += 1;
            }
        }
    }

    /// A message still in a stopped stream's queue: received by the worker
    /// only now, and nacked as never started.
    pub fn nack_queued(&mut self, handler: Handler) {
        self.received += 1;
        self.nack_unstarted(handler);
    }

    /// Received but never started: nacked now so Pub/Sub redelivers it at
    /// once instead of after the ack deadline.
    pub fn nack_unstarted(&mut self, handler: Handler) {
        handler.nack();
        self.nacked += 1;
        self.nacked_unstarted += 1;
    }
}

/// The summary line: the counts, and how the run ended.
pub struct Summary<'a> {
    pub counts: &'a Counts,
    /// The stop signal's name, or what failed.
    pub reason: &'a str,
    pub in_flight_at_stop: u64,
    /// Writes left unfinished and unacked by an abandoned drain.
    pub abandoned: u64,
    pub drain_ms: u64,
    pub exit_code: i32,
}

impl Summary<'_> {
    /// Logs the line (INFO, message `summary`).
    pub fn log(&self) {
        let c = self.counts;
        tracing::info!(
            reason = self.reason,
            received = c.received,
            stored = c.stored,
            created = c.created,
            already_present = c.already_present,
            acked = c.acked,
            nacked = c.nacked,
            nacked_write_failed = c.nacked_write_failed,
            nacked_unstorable = c.nacked_unstorable,
            nacked_unstarted = c.nacked_unstarted,
            in_flight_at_stop = self.in_flight_at_stop,
            abandoned = self.abandoned,
            drain_ms = self.drain_ms,
            exit_code = self.exit_code,
            "summary"
        );
    }
}
