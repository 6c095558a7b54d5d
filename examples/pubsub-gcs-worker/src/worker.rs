//! The worker's state machine: pull, quiet, drain, flush.
//!
//! ```text
//!   start-up: clients built (TERM/INT here: exit 0 at once)
//!      |
//!      v
//!  +---------+  TSTP   +-------+
//!  | Pulling | ------> | Quiet |   stream stopped, its queue nacked,
//!  |         | <------ |       |   writes finish and ack; stays up
//!  +---------+  CONT   +-------+
//!      |                   |
//!      | TERM/INT, stream  | TERM/INT, Pub/Sub unusable
//!      | failed, Pub/Sub   |
//!      | unusable          |
//!      v                   v
//!  +------------------------------+   deadline (DRAIN_TIMEOUT) or a
//!  | Draining: queue nacked,      |   second TERM/INT: writes abandoned,
//!  | writes finish, no new retry  | -------------------------------+
//!  +------------------------------+                                 |
//!      | every write ended                                         |
//!      v                                                           |
//!  +------------------------------+   same deadline                |
//!  | Flushing: the library sends  | -------------------------------+
//!  | the acks and nacks           |                                |
//!  +------------------------------+                                v
//!      | all sent                                  summary, exit 3 or 4
//!      v
//!  summary, exit 0 (1 when Pub/Sub failed)
//! ```
//!
//! Messages come from a StreamingPull stream, read by its own task
//! (src/stream.rs; the library extends their leases while we hold their
//! handlers). Each message goes through three places: the "received, not
//! started" queue, a write task holding one of CONCURRENCY permits
//! (src/task.rs), and finally an ack or a nack. From the stream to the ack
//! or nack it also holds its size in the byte budget (src/budget.rs).
//!
//! This file owns start-up and the two pulling states (`Worker::pull`,
//! `Worker::quiet`); the drain and the flush are in worker/drain.rs.

mod drain;

use crate::clients::{self, Clients};
use crate::config::{Config, Endpoint};
use crate::health::{self, Health};
use crate::probe;
use crate::signals::{Signals, StopSignal};
use crate::stream::{recv_queue, Received, Streams, Subscription};
use crate::summary::{Counts, Summary};
use crate::task::Writes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Exit status after a clean stop.
pub const EXIT_OK: i32 = 0;
/// Exit status after a runtime failure: a client could not be built, the
/// subscription stream failed permanently (missing subscription, no
/// permission), or signal handlers could not be installed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for a configuration error (set in `main`).
pub const EXIT_CONFIG: i32 = 2;
/// Exit status when the drain timeout expired and in-flight work was
/// abandoned (left unacked, so Pub/Sub redelivers it after its lease).
pub const EXIT_DRAIN_TIMEOUT: i32 = 3;
/// Exit status when a second TERM/INT arrived during the drain and in-flight
/// work was abandoned.
pub const EXIT_ABORTED: i32 = 4;

/// Runs the worker until a stop signal or a fatal error; returns the exit
/// status. The steps, as the README describes them: pull until told
/// otherwise; on TSTP stay quiet until CONT (pull again) or TERM; then drain
/// (nack what was not started, finish what was) and flush (wait until the
/// library has sent every ack and nack).
pub async fn run(cfg: Config, mut signals: Signals) -> i32 {
    let started = Instant::now();
    warn_if_over_budget(&cfg);
    let (clients, mut quiet) = match start_up(&cfg, &mut signals).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    log_started(&cfg, started, quiet);
    let mut worker = Worker::new(&cfg, clients);
    let (stop, pulling) = loop {
        // Quiet until CONT (then pull again) or TERM/INT (then drain).
        if quiet {
            if let Some(stop) = worker.quiet(&mut signals).await {
                break (stop, None);
            }
        }
        let mut sub = worker.open_stream();
        match worker.pull(&mut sub, &mut signals).await {
            Stop::Signal(StopSignal::Quiet) => {
                worker.stop_stream(sub);
                quiet = true;
            }
            stop => break (stop, Some(sub)),
        }
    };
    let mut drain = worker.stop_pulling(stop, pulling, cfg.drain_timeout);
    let ended = match worker.drain(&mut drain, &mut signals).await {
        Ok(()) => worker.flush(&mut drain, &mut signals).await,
        Err(abandoned) => Err(abandoned),
    };
    worker.finish(&drain, ended)
}

/// A DRAIN_TIMEOUT set by hand longer than rinit's budget: one WARNING at
/// start, since rinit's deadline would cut the drain short with SIGKILL.
fn warn_if_over_budget(cfg: &Config) {
    if let Some(budget) = cfg.drain_over_budget() {
        let dur = rinit::platform::fmt;
        tracing::warn!(
            drain_timeout_ms = cfg.drain_timeout.as_millis() as u64,
            rinit_drain_ms = budget.as_millis() as u64,
            "DRAIN_TIMEOUT={} is longer than the drain budget rinit hands the worker \
             (RINIT_DRAIN_MS={}, {}): rinit's deadline will SIGKILL the worker before it gives \
             up; lower DRAIN_TIMEOUT or unset it",
            dur(cfg.drain_timeout),
            budget.as_millis(),
            dur(budget)
        );
    }
}

/// Builds the clients while listening to signals: TSTP/CONT before the
/// first pull only set where to begin (`true`: quiet), and a TERM/INT ends
/// the run with exit 0 at once. `Err` is the exit status.
async fn start_up(cfg: &Config, signals: &mut Signals) -> Result<(Clients, bool), i32> {
    let mut quiet = false;
    let build = clients::build(cfg);
    tokio::pin!(build);
    let clients = loop {
        tokio::select! {
            biased;
            Some(sig) = signals.recv() => match sig {
                StopSignal::Terminate(name) => {
                    tracing::info!(signal = name, "stop requested during start-up");
                    Summary {
                        counts: &Counts::default(),
                        reason: name,
                        in_flight_at_stop: 0,
                        abandoned: 0,
                        drain_ms: 0,
                        exit_code: EXIT_OK,
                    }
                    .log();
                    return Err(EXIT_OK);
                }
                StopSignal::Quiet => quiet = true,
                StopSignal::Resume => quiet = false,
            },
            c = &mut build => break c,
        }
    };
    match clients {
        Ok(c) => Ok((c, quiet)),
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            Err(EXIT_FAILURE)
        }
    }
}

/// The "worker started" line: the settings that matter when reading a run.
fn log_started(cfg: &Config, started: Instant, quiet: bool) {
    tracing::info!(
        project = %cfg.project_id,
        subscription = %cfg.subscription,
        bucket = %cfg.bucket,
        object_prefix = %cfg.object_prefix,
        concurrency = cfg.concurrency,
        max_outstanding_messages = cfg.max_outstanding_messages,
        max_outstanding_bytes = cfg.max_outstanding_bytes,
        drain_timeout_ms = cfg.drain_timeout.as_millis() as u64,
        drain_timeout_from = cfg.drain_from.name(),
        unavailable_exit_after_ms = cfg.unavailable_exit_after.as_millis() as u64,
        pubsub = endpoint_label(&cfg.pubsub_endpoint),
        storage = endpoint_label(&cfg.storage_endpoint),
        startup_ms = started.elapsed().as_millis() as u64,
        quiet,
        "worker started"
    );
}

/// The endpoint as the "worker started" line shows it.
fn endpoint_label(e: &Endpoint) -> &str {
    match e {
        Endpoint::Google => "google (ADC)",
        Endpoint::Emulator(u) => u,
    }
}

/// Why pulling ended.
#[derive(Clone, Copy)]
enum Stop {
    /// TERM/INT (drain, exit 0), or TSTP (quiet) from the pull step.
    Signal(StopSignal),
    /// The subscription stream failed or ended: drain, then exit 1.
    StreamFailed,
    /// Pub/Sub has been unusable for UNAVAILABLE_EXIT_AFTER: drain, exit 1.
    Unavailable,
}

/// The running worker: the streams, the message tasks and the counts, from
/// the first pull to the summary line.
struct Worker {
    streams: Streams,
    writes: Writes,
    counts: Counts,
    /// The last stream, stopped, while its queue has not been emptied.
    stopped: Option<Subscription>,
    /// One message waiting for a write permit.
    next: Option<Received>,
    /// The library's flush of each stopped stream: completes once every
    /// handler of that stream has been consumed and its acks and nacks sent.
    flushes: JoinSet<()>,
    /// The subscription and where it is, for the error line when it fails.
    subscription: String,
    pubsub_endpoint: String,
    /// Yields once, when Pub/Sub has been unusable for too long.
    give_up: mpsc::Receiver<Duration>,
}

impl Worker {
    /// Also starts the Pub/Sub probe, which runs until the process exits.
    fn new(cfg: &Config, clients: Clients) -> Worker {
        let pubsub_endpoint = health::endpoint_url(&cfg.pubsub_endpoint, health::PUBSUB_URL);
        let pubsub_health = Arc::new(Health::new(
            "Pub/Sub",
            pubsub_endpoint.clone(),
            cfg.subscription.clone(),
        ));
        let give_up = probe::watch(
            clients.probe,
            Arc::clone(&pubsub_health),
            cfg.unavailable_exit_after,
        );
        Worker {
            streams: Streams::new(clients.subscriber, cfg, pubsub_health),
            writes: Writes::new(clients.storage, cfg),
            counts: Counts::default(),
            stopped: None,
            next: None,
            flushes: JoinSet::new(),
            subscription: cfg.subscription.clone(),
            pubsub_endpoint,
            give_up,
        }
    }

    /// Opens a stream, after nacking what a previous, stopped stream still
    /// had queued.
    fn open_stream(&mut self) -> Subscription {
        if let Some(old) = self.stopped.take() {
            for leftover in old.close() {
                self.counts.nack_queued(leftover.handler);
            }
        }
        self.streams.open()
    }

    /// Step 1: moves messages from the queue to write tasks, at most
    /// CONCURRENCY at once, until TSTP, TERM/INT or a stream failure.
    async fn pull(&mut self, sub: &mut Subscription, signals: &mut Signals) -> Stop {
        loop {
            let permit = self.writes.permit();
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => match sig {
                    StopSignal::Resume => {
                        tracing::debug!(signal = sig.name(), "not quiet; nothing to resume");
                    }
                    _ => return Stop::Signal(sig),
                },
                Some(down) = self.give_up.recv() => return self.unavailable(down),
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.counts.record(done);
                }
                permit = permit, if self.next.is_some() => {
                    let (Ok(permit), Some(received)) = (permit, self.next.take()) else {
                        continue;
                    };
                    self.writes.start(received, permit);
                }
                item = sub.recv(), if self.next.is_none() => match item {
                    Some(item) => {
                        self.counts.received += 1;
                        self.next = Some(item);
                    }
                    None => {
                        let why = sub.why_ended().await;
                        tracing::error!(subscription = %self.subscription,
                            endpoint = %self.pubsub_endpoint, error = %why,
                            "cannot receive messages");
                        return Stop::StreamFailed;
                    }
                },
            }
        }
    }

    /// Cancels a stream at once, starts its flush, and nacks the message
    /// that was waiting for a permit; its queue is emptied later.
    fn stop_stream(&mut self, sub: Subscription) {
        self.flushes.spawn(sub.stop());
        if let Some(received) = self.next.take() {
            self.counts.nack_unstarted(received.handler);
        }
        self.stopped = Some(sub);
    }

    /// Pub/Sub has been unusable for `down`: the reason to stop.
    fn unavailable(&self, down: Duration) -> Stop {
        tracing::error!(
            endpoint = %self.pubsub_endpoint,
            subscription = %self.subscription,
            down_ms = down.as_millis() as u64,
            "Pub/Sub unusable for longer than UNAVAILABLE_EXIT_AFTER; exiting so that the \
             platform restarts the worker and alerts"
        );
        Stop::Unavailable
    }

    /// Step 1b, after TSTP: stops pulling, nacks what was received but not
    /// started, lets the writes in progress finish and ack (retries
    /// included: there is no deadline), and stays up. Returns `None` on
    /// CONT, or the stop that ends the quiet (TERM/INT).
    async fn quiet(&mut self, signals: &mut Signals) -> Option<Stop> {
        tracing::info!(
            in_flight = self.writes.in_flight(),
            "quiet (SIGTSTP): stopped pulling; finishing in-flight work; SIGCONT resumes, \
             SIGTERM exits"
        );
        let mut idle_logged = false;
        loop {
            let idle = self.stopped.is_none() && self.writes.is_empty() && self.flushes.is_empty();
            if idle && !idle_logged {
                idle_logged = true;
                tracing::info!(
                    nacked_unstarted = self.counts.nacked_unstarted,
                    acked = self.counts.acked,
                    "quiet and idle: every started message acked or nacked and flushed"
                );
            }
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => match sig {
                    StopSignal::Resume => {
                        tracing::info!(signal = sig.name(), "resuming: pulling again");
                        return None;
                    }
                    StopSignal::Quiet => tracing::info!(signal = sig.name(), "already quiet"),
                    StopSignal::Terminate(_) => return Some(Stop::Signal(sig)),
                },
                Some(down) = self.give_up.recv() => return Some(self.unavailable(down)),
                item = recv_queue(&mut self.stopped) => match item {
                    Some(leftover) => self.counts.nack_queued(leftover.handler),
                    None => self.stopped = None,
                },
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.counts.record(done);
                }
                Some(_) = self.flushes.join_next(), if !self.flushes.is_empty() => {}
            }
        }
    }
}
