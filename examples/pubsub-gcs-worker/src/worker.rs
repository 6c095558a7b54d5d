//! The pull loop and the drain.
//!
//! Messages come from one StreamingPull `MessageStream`, read by its own
//! task (the library extends their leases while we hold their handlers).
//! Each message goes through three places: a bounded channel (received, not
//! started), a task in `tasks` that holds one of `concurrency` permits while
//! it writes, and finally an ack or a nack. A stop request (TERM, INT, TSTP) drops the stream at once, nacks
//! everything still pending so Pub/Sub redelivers it immediately, lets the
//! writes in progress finish and ack, then waits for the library to flush
//! the acks and nacks — all inside the drain timeout.

use crate::config::{Config, Endpoint};
use crate::shutdown::{Drain, Shutdown};
use crate::store::{self, RetryPolicy, WriteOutcome};
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{ShutdownBehavior, ShutdownToken};
use google_cloud_storage::client::Storage;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

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

/// A stop request from a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM or SIGINT: drain, then exit. A second one aborts the drain.
    Terminate(&'static str),
    /// SIGTSTP: stop fetching and drain. Used by rinit's staged stop
    /// sequences, which may send TERM afterwards; that TERM is not a
    /// "second" signal.
    StopFetching,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate(n) => n,
            StopSignal::StopFetching => "SIGTSTP",
        }
    }
}

/// Installs the handlers for TERM, INT and TSTP and forwards them to a
/// channel. Done before anything else so that a signal during start-up is
/// never lost (and TSTP never stops the process).
pub fn install_signal_handlers() -> std::io::Result<mpsc::UnboundedReceiver<StopSignal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tstp = signal(SignalKind::from_raw(libc::SIGTSTP))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                Some(()) = term.recv() => StopSignal::Terminate("SIGTERM"),
                Some(()) = int.recv() => StopSignal::Terminate("SIGINT"),
                Some(()) = tstp.recv() => StopSignal::StopFetching,
                else => break,
            };
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Counters for the summary line. Invariants: `acked == stored`, and after
/// a completed drain `received == acked + nacked`.
#[derive(Debug, Default)]
struct Counts {
    received: u64,
    /// Objects whose existence was confirmed by this process: created now,
    /// or found already present (412).
    stored: u64,
    created: u64,
    already_present: u64,
    acked: u64,
    nacked: u64,
    nacked_write_failed: u64,
    nacked_unstorable: u64,
    nacked_unstarted: u64,
}

/// What a message task did with its message.
#[derive(Debug)]
enum TaskOutcome {
    Acked { created: bool },
    NackedWriteFailed,
    NackedUnstorable,
}

impl Counts {
    fn record(&mut self, r: Result<TaskOutcome, tokio::task::JoinError>) {
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
}

/// Shared, read-only state of the message tasks.
struct Ctx {
    storage: Storage,
    bucket: String,
    prefix: String,
    retry: RetryPolicy,
    /// How long a message that can never be stored is held (its lease kept
    /// alive) before it is nacked, so that it costs one delivery per hold
    /// instead of spinning; the subscription's dead-letter policy counts the
    /// deliveries and eventually takes it away.
    unstorable_hold: Duration,
}

async fn build_clients(cfg: &Config) -> Result<(Subscriber, Storage), String> {
    use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
    let subscriber = match &cfg.pubsub_endpoint {
        Endpoint::Google => Subscriber::builder().build().await,
        Endpoint::Emulator(url) => {
            Subscriber::builder()
                .with_endpoint(url.clone())
                .with_credentials(Anonymous::new().build())
                .build()
                .await
        }
    }
    .map_err(|e| format!("cannot create the Pub/Sub client: {e}"))?;
    // Retries are ours (bounded, drain-aware, see store.rs), so the library
    // makes exactly one attempt per call.
    let builder = Storage::builder().with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
    let storage = match &cfg.storage_endpoint {
        Endpoint::Google => builder.build().await,
        Endpoint::Emulator(url) => {
            builder
                .with_endpoint(url.clone())
                .with_credentials(Anonymous::new().build())
                .build()
                .await
        }
    }
    .map_err(|e| format!("cannot create the Cloud Storage client: {e}"))?;
    Ok((subscriber, storage))
}

fn endpoint_label(e: &Endpoint) -> &str {
    match e {
        Endpoint::Google => "google (ADC)",
        Endpoint::Emulator(u) => u,
    }
}

/// Runs the worker until a stop signal or a fatal error; returns the exit
/// status. Three steps, as the README describes them: pull until told to
/// stop, drain (nack what was not started, finish what was), flush (wait
/// until the library has sent every ack and nack).
pub async fn run(cfg: Config, mut signals: mpsc::UnboundedReceiver<StopSignal>) -> i32 {
    let started = Instant::now();
    let clients = tokio::select! {
        biased;
        Some(sig) = signals.recv() => {
            tracing::info!(signal = sig.name(), "stop requested during start-up");
            log_summary(&Counts::default(), sig.name(), 0, 0, 0, EXIT_OK);
            return EXIT_OK;
        }
        c = build_clients(&cfg) => c,
    };
    let (subscriber, storage) = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return EXIT_FAILURE;
        }
    };
    let mut worker = Worker::start(&cfg, &subscriber, storage);
    tracing::info!(
        project = %cfg.project_id,
        subscription = %cfg.subscription,
        bucket = %cfg.bucket,
        object_prefix = %cfg.object_prefix,
        concurrency = cfg.concurrency,
        max_outstanding_messages = cfg.max_outstanding_messages,
        drain_timeout_ms = cfg.drain_timeout.as_millis() as u64,
        pubsub = endpoint_label(&cfg.pubsub_endpoint),
        storage = endpoint_label(&cfg.storage_endpoint),
        startup_ms = started.elapsed().as_millis() as u64,
        "worker started"
    );
    let stop = worker.pull(&mut signals).await;
    let mut drain = worker.stop_pulling(stop, cfg.drain_timeout);
    let ended = match worker.drain(&mut drain, &mut signals).await {
        Ok(()) => worker.flush(&mut drain, &mut signals).await,
        Err(abandoned) => Err(abandoned),
    };
    worker.finish(&drain, ended)
}

/// Why pulling ended.
#[derive(Clone, Copy)]
enum Stop {
    Signal(StopSignal),
    /// The subscription stream failed or ended: drain, then exit 1.
    StreamFailed,
}

/// The bookkeeping of one drain: when it started, its deadline, and the
/// rule for repeated signals.
struct DrainRun {
    reason: &'static str,
    stop_at: Instant,
    deadline: tokio::time::Instant,
    in_flight_at_stop: u64,
    /// A TERM/INT after a TERM/INT aborts; after a TSTP it is the first one.
    terminate_seen: bool,
    /// Exit status of a drain that completes.
    exit: i32,
    /// Completes when the library has sent every ack and nack.
    flush: JoinHandle<()>,
}

/// Why a drain was cut short, and the exit status that says so.
struct Abandoned {
    why: &'static str,
    code: i32,
}

/// The running worker: the subscription queue, the message tasks and the
/// counts, from the first pull to the summary line.
struct Worker {
    ctx: Arc<Ctx>,
    concurrency: usize,
    permits: Arc<Semaphore>,
    tasks: JoinSet<TaskOutcome>,
    counts: Counts,
    subscription: String,
    drain: Drain,
    /// Received, not started. Filled by `reader`.
    queue: mpsc::Receiver<(Message, Handler)>,
    /// Reads the stream; its result says why the stream ended.
    reader: JoinHandle<Option<String>>,
    stream: ShutdownToken,
    /// One message waiting for a write permit.
    next: Option<(Message, Handler)>,
}

impl Worker {
    /// Opens the stream and starts the task that reads it.
    fn start(cfg: &Config, subscriber: &Subscriber, storage: Storage) -> Worker {
        let mut stream = subscriber
            .subscribe(cfg.subscription.clone())
            .set_max_outstanding_messages(cfg.max_outstanding_messages as i64)
            .set_max_lease_extension(cfg.lease_extension)
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        let token = stream.shutdown_token();
        // The stream is read by its own task. `MessageStream::next()` is not
        // cancel-safe while it (re)opens the gRPC stream, and a select loop
        // would cancel it at every task completion: each cancelled open
        // leaves a server-side stream that may be dealt messages nobody
        // reads. The bounded channel is the "received, not started" queue.
        let (tx, queue) = mpsc::channel::<(Message, Handler)>(cfg.max_outstanding_messages);
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(item)) => {
                        if tx.send(item).await.is_err() {
                            return None;
                        }
                    }
                    Some(Err(e)) => {
                        return Some(format!("subscription stream failed permanently: {e}"))
                    }
                    // Either our shutdown (expected) or the end of the stream.
                    None => return Some("subscription stream ended".to_string()),
                }
            }
        });
        Worker {
            ctx: Arc::new(Ctx {
                storage,
                bucket: cfg.bucket.clone(),
                prefix: cfg.object_prefix.clone(),
                retry: RetryPolicy {
                    attempts: cfg.write_attempts,
                    attempt_timeout: cfg.write_attempt_timeout,
                    initial_backoff: Duration::from_millis(250),
                    max_backoff: Duration::from_secs(4),
                },
                unstorable_hold: cfg.lease_extension,
            }),
            concurrency: cfg.concurrency,
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            tasks: JoinSet::new(),
            counts: Counts::default(),
            subscription: cfg.subscription.clone(),
            drain: Drain::new(),
            queue,
            reader,
            stream: token,
            next: None,
        }
    }

    /// Step 1: moves messages from the queue to write tasks, at most
    /// `concurrency` at once, until a stop signal or a stream failure.
    async fn pull(&mut self, signals: &mut mpsc::UnboundedReceiver<StopSignal>) -> Stop {
        loop {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => return Stop::Signal(sig),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.counts.record(done);
                }
                permit = self.permits.clone().acquire_owned(), if self.next.is_some() => {
                    let (Ok(permit), Some((message, handler))) = (permit, self.next.take()) else {
                        continue;
                    };
                    let shutdown = self.drain.subscribe();
                    self.tasks.spawn(process(self.ctx.clone(), message, handler, permit, shutdown));
                }
                item = self.queue.recv(), if self.next.is_none() => match item {
                    Some(item) => {
                        self.counts.received += 1;
                        self.next = Some(item);
                    }
                    None => {
                        let why = (&mut self.reader)
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "subscription reader stopped".to_string());
                        tracing::error!(subscription = %self.subscription, error = %why,
                            "cannot receive messages");
                        return Stop::StreamFailed;
                    }
                },
            }
        }
    }

    /// Cancels the stream at once, starts the flush and the tasks' drain,
    /// and nacks the message that was waiting for a permit.
    fn stop_pulling(&mut self, stop: Stop, timeout: Duration) -> DrainRun {
        let stop_at = Instant::now();
        let in_flight_at_stop = (self.concurrency - self.permits.available_permits()) as u64;
        // `ShutdownToken::shutdown()` cancels the stream on its first poll
        // and then waits for the library's lease loop. Poll it once right
        // here so pulling stops now, not whenever a spawned task first runs
        // (meanwhile the reader would keep moving buffered messages into the
        // queue).
        {
            let first_poll = std::pin::pin!(self.stream.shutdown());
            let _ = first_poll.poll(&mut Context::from_waker(Waker::noop()));
        }
        // Completes once every handler has been consumed.
        let token = self.stream.clone();
        let flush = tokio::spawn(async move { token.shutdown().await });
        self.drain.start();
        if let Some((_, handler)) = self.next.take() {
            self.nack_unstarted(handler);
        }
        let (reason, exit, terminate_seen) = match stop {
            Stop::Signal(sig) => (sig.name(), EXIT_OK, matches!(sig, StopSignal::Terminate(_))),
            Stop::StreamFailed => ("stream failure", EXIT_FAILURE, false),
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
            flush,
        }
    }

    /// Received but never started: nacked now so Pub/Sub redelivers it at
    /// once instead of after the ack deadline.
    fn nack_unstarted(&mut self, handler: Handler) {
        handler.nack();
        self.counts.nacked += 1;
        self.counts.nacked_unstarted += 1;
    }

    /// Step 2: nacks everything still queued and lets the write tasks
    /// finish, within the deadline.
    async fn drain(
        &mut self,
        run: &mut DrainRun,
        signals: &mut mpsc::UnboundedReceiver<StopSignal>,
    ) -> Result<(), Abandoned> {
        let mut queue_closed = false;
        while !(queue_closed && self.tasks.is_empty()) {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline) => return Err(Abandoned::timeout()),
                item = self.queue.recv(), if !queue_closed => match item {
                    Some((_, handler)) => {
                        self.counts.received += 1;
                        self.nack_unstarted(handler);
                    }
                    None => queue_closed = true,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.counts.record(done);
                }
            }
        }
        Ok(())
    }

    /// Step 3: waits until the library has sent every ack and nack, within
    /// the same deadline.
    async fn flush(
        &mut self,
        run: &mut DrainRun,
        signals: &mut mpsc::UnboundedReceiver<StopSignal>,
    ) -> Result<(), Abandoned> {
        loop {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline) => return Err(Abandoned::timeout()),
                _ = &mut run.flush => break,
            }
        }
        tracing::debug!(
            nacked_unstarted = self.counts.nacked_unstarted,
            "acks and nacks flushed"
        );
        Ok(())
    }

    /// Logs the summary line and returns the exit status.
    fn finish(&self, run: &DrainRun, ended: Result<(), Abandoned>) -> i32 {
        let (abandoned, code) = match ended {
            Ok(()) => (0, run.exit),
            Err(Abandoned { why, code }) => {
                let abandoned = self.tasks.len() as u64;
                tracing::error!(
                    why,
                    abandoned,
                    "drain abandoned: in-flight messages left unacked for redelivery"
                );
                (abandoned, code)
            }
        };
        log_summary(
            &self.counts,
            run.reason,
            run.in_flight_at_stop,
            abandoned,
            run.stop_at.elapsed().as_millis() as u64,
            code,
        );
        code
    }
}

impl DrainRun {
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
    fn timeout() -> Abandoned {
        Abandoned {
            why: "drain timeout",
            code: EXIT_DRAIN_TIMEOUT,
        }
    }
}

/// One line that lets an operator (and the tests) check the drain.
fn log_summary(
    c: &Counts,
    reason: &str,
    in_flight_at_stop: u64,
    abandoned: u64,
    drain_ms: u64,
    exit_code: i32,
) {
    tracing::info!(
        reason,
        received = c.received,
        stored = c.stored,
        created = c.created,
        already_present = c.already_present,
        acked = c.acked,
        nacked = c.nacked,
        nacked_write_failed = c.nacked_write_failed,
        nacked_unstorable = c.nacked_unstorable,
        nacked_unstarted = c.nacked_unstarted,
        in_flight_at_stop,
        abandoned,
        drain_ms,
        exit_code,
        "summary"
    );
}

/// Stores one message, then acks or nacks it.
async fn process(
    ctx: Arc<Ctx>,
    message: Message,
    handler: Handler,
    permit: OwnedSemaphorePermit,
    mut shutdown: Shutdown,
) -> TaskOutcome {
    let spec = store::object_spec(&ctx.prefix, &message);
    let object = spec.name.clone();
    let outcome = store::write_message(
        &ctx.storage,
        &ctx.bucket,
        spec,
        message.data,
        &ctx.retry,
        &mut shutdown,
    )
    .await;
    drop(permit);
    let message_id = message.message_id;
    match outcome {
        WriteOutcome::Created => {
            handler.ack();
            tracing::debug!(%message_id, %object, "stored and acked");
            TaskOutcome::Acked { created: true }
        }
        WriteOutcome::AlreadyExists => {
            handler.ack();
            tracing::info!(%message_id, %object, "object already present (redelivery); acked");
            TaskOutcome::Acked { created: false }
        }
        WriteOutcome::Transient(error) => {
            handler.nack();
            tracing::warn!(%message_id, %object, %error, "write failed; nacked for redelivery");
            TaskOutcome::NackedWriteFailed
        }
        WriteOutcome::Permanent(error) => {
            tracing::error!(
                %message_id,
                %object,
                delivery_attempt = handler.delivery_attempt().unwrap_or(0),
                hold_ms = ctx.unstorable_hold.as_millis() as u64,
                %error,
                "message cannot be stored; holding it, then nacking (dead-letter policy decides)"
            );
            tokio::select! {
                _ = tokio::time::sleep(ctx.unstorable_hold) => {}
                _ = shutdown.recv() => {}
            }
            handler.nack();
            TaskOutcome::NackedUnstorable
        }
    }
}
