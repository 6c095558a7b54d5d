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
use crate::store::{self, RetryPolicy, WriteOutcome};
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_storage::client::Storage;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
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
/// status.
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
    let mut stream = subscriber
        .subscribe(cfg.subscription.clone())
        .set_max_outstanding_messages(cfg.max_outstanding_messages as i64)
        .set_max_lease_extension(cfg.lease_extension)
        .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
        .build();
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

    let ctx = Arc::new(Ctx {
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
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks: JoinSet<TaskOutcome> = JoinSet::new();
    let mut counts = Counts::default();
    let mut exit = EXIT_OK;

    // The stream is read by its own task. `MessageStream::next()` is not
    // cancel-safe while it (re)opens the gRPC stream, and a select loop
    // would cancel it at every task completion: each cancelled open leaves
    // a server-side stream that may be dealt messages nobody reads. The
    // bounded channel is the "received, not started" queue.
    let shutdown = stream.shutdown_token();
    let (msg_tx, mut msg_rx) = mpsc::channel::<(Message, Handler)>(cfg.max_outstanding_messages);
    let mut reader = tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(item)) => {
                    if msg_tx.send(item).await.is_err() {
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
    // One message waiting for a write permit.
    let mut next: Option<(Message, Handler)> = None;

    // ---- Pull loop -------------------------------------------------------
    let first_signal: Option<StopSignal> = loop {
        tokio::select! {
            biased;
            Some(sig) = signals.recv() => break Some(sig),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => counts.record(done),
            permit = permits.clone().acquire_owned(), if next.is_some() => {
                let (Ok(permit), Some((message, handler))) = (permit, next.take()) else {
                    continue;
                };
                tasks.spawn(process(ctx.clone(), message, handler, permit, drain_rx.clone()));
            }
            item = msg_rx.recv(), if next.is_none() => match item {
                Some(item) => {
                    counts.received += 1;
                    next = Some(item);
                }
                None => {
                    let why = (&mut reader)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "subscription reader stopped".to_string());
                    tracing::error!(subscription = %cfg.subscription, error = %why,
                        "cannot receive messages");
                    exit = EXIT_FAILURE;
                    break None;
                }
            },
        }
    };

    // ---- Drain -----------------------------------------------------------
    let stop_at = Instant::now();
    let deadline = tokio::time::Instant::from_std(stop_at + cfg.drain_timeout);
    let in_flight_at_stop = cfg.concurrency - permits.available_permits();
    // `ShutdownToken::shutdown()` cancels the stream on its first poll and
    // then waits for the library's lease loop. Poll it once right here so
    // pulling stops now, not whenever a spawned task first runs (meanwhile
    // the reader would keep moving buffered messages into the queue).
    {
        let first_poll = std::pin::pin!(shutdown.shutdown());
        let _ = first_poll.poll(&mut Context::from_waker(Waker::noop()));
    }
    // Completes when the library has sent every ack and nack, which it does
    // once every handler has been consumed.
    let mut flush = tokio::spawn(async move { shutdown.shutdown().await });
    let _ = drain_tx.send(true);
    let mut unstarted = 0u64;
    if let Some((_, handler)) = next.take() {
        handler.nack();
        unstarted += 1;
    }
    let reason = first_signal.map_or("stream failure", StopSignal::name);
    tracing::info!(
        reason,
        in_flight = in_flight_at_stop,
        drain_timeout_ms = cfg.drain_timeout.as_millis() as u64,
        "stopped pulling; draining"
    );
    // A TERM/INT after a TERM/INT aborts; after a TSTP it is the first one.
    let mut terminate_seen = matches!(first_signal, Some(StopSignal::Terminate(_)));

    let abandon = |counts: &Counts, tasks: &JoinSet<TaskOutcome>, why: &'static str, code: i32| {
        let abandoned = tasks.len() as u64;
        tracing::error!(
            why,
            abandoned,
            "drain abandoned: in-flight messages left unacked for redelivery"
        );
        log_summary(
            counts,
            reason,
            in_flight_at_stop as u64,
            abandoned,
            stop_at.elapsed().as_millis() as u64,
            code,
        );
        code
    };

    let mut queue_closed = false;
    let mut flushed = false;
    while !(queue_closed && tasks.is_empty() && flushed) {
        tokio::select! {
            biased;
            Some(sig) = signals.recv() => {
                if matches!(sig, StopSignal::Terminate(_)) && terminate_seen {
                    counts.nacked += unstarted;
                    counts.nacked_unstarted += unstarted;
                    return abandon(&counts, &tasks, "second termination signal", EXIT_ABORTED);
                }
                terminate_seen |= matches!(sig, StopSignal::Terminate(_));
                tracing::info!(signal = sig.name(), "already draining");
            }
            _ = tokio::time::sleep_until(deadline) => {
                counts.nacked += unstarted;
                counts.nacked_unstarted += unstarted;
                return abandon(&counts, &tasks, "drain timeout", EXIT_DRAIN_TIMEOUT);
            }
            // Received but never started: nack now so Pub/Sub redelivers it
            // at once instead of after the ack deadline.
            item = msg_rx.recv(), if !queue_closed => match item {
                Some((_, handler)) => {
                    counts.received += 1;
                    handler.nack();
                    unstarted += 1;
                }
                None => queue_closed = true,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => counts.record(done),
            // Completes only after every handler was consumed.
            _ = &mut flush, if !flushed => flushed = true,
        }
    }
    counts.nacked += unstarted;
    counts.nacked_unstarted += unstarted;
    tracing::debug!(nacked_unstarted = unstarted, "acks and nacks flushed");
    log_summary(
        &counts,
        reason,
        in_flight_at_stop as u64,
        0,
        stop_at.elapsed().as_millis() as u64,
        exit,
    );
    exit
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
    mut draining: watch::Receiver<bool>,
) -> TaskOutcome {
    let spec = store::object_spec(&ctx.prefix, &message);
    let object = spec.name.clone();
    let outcome = store::write_message(
        &ctx.storage,
        &ctx.bucket,
        spec,
        message.data,
        &ctx.retry,
        &mut draining,
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
                _ = draining.wait_for(|d| *d) => {}
            }
            handler.nack();
            TaskOutcome::NackedUnstorable
        }
    }
}
