//! The pull loop, quiet, and the drain.
//!
//! Messages come from a StreamingPull `MessageStream`, read by its own task
//! (the library extends their leases while we hold their handlers). Each
//! message goes through three places: a bounded channel (received, not
//! started), a task in `tasks` that holds one of `concurrency` permits while
//! it writes, and finally an ack or a nack. From the stream to the ack or
//! nack it also holds its size in a [`ByteBudget`] (MAX_OUTSTANDING_BYTES).
//!
//! TSTP makes the worker quiet: the stream is dropped at once, everything
//! received but not started is nacked (Pub/Sub redelivers it now), the
//! writes in progress finish and ack, and the worker stays up; CONT opens a
//! new stream. TERM or INT drains: the same stop, then the library's flush
//! of acks and nacks, all inside the drain timeout, then exit.

use crate::config::{Config, Endpoint};
use crate::health::{self, Health, PubsubProbe};
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

/// What a signal asks of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM or SIGINT: drain, then exit. A second one aborts the drain.
    Terminate(&'static str),
    /// SIGTSTP: quiet, as Sidekiq reads it: stop pulling, finish what was
    /// started, stay up. Cloud Run jobs send it before a live migration and
    /// rinit's `sidekiq` preset before its TERM; neither means "exit".
    Quiet,
    /// SIGCONT: after a quiet, pull again (Cloud Run: the migration is over).
    Resume,
}

impl StopSignal {
    /// The signal's name, for log lines and the summary's `reason`.
    fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate(n) => n,
            StopSignal::Quiet => "SIGTSTP",
            StopSignal::Resume => "SIGCONT",
        }
    }
}

/// Installs the handlers for TERM, INT, TSTP and CONT and forwards them to
/// a channel. Done before anything else so that a signal during start-up is
/// never lost (and TSTP never stops the process).
pub fn install_signal_handlers() -> std::io::Result<mpsc::UnboundedReceiver<StopSignal>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tstp = signal(SignalKind::from_raw(libc::SIGTSTP))?;
    let mut cont = signal(SignalKind::from_raw(libc::SIGCONT))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                Some(()) = term.recv() => StopSignal::Terminate("SIGTERM"),
                Some(()) = int.recv() => StopSignal::Terminate("SIGINT"),
                Some(()) = tstp.recv() => StopSignal::Quiet,
                Some(()) = cont.recv() => StopSignal::Resume,
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

/// Flow control by size (MAX_OUTSTANDING_BYTES). A message holds permits
/// for its size from the moment the reader takes it off the stream until it
/// is acked or nacked, so the messages queued and being written never add
/// up to more than the bound, whatever their sizes. While the budget is
/// spent the reader stops reading the stream: the library then stops
/// reading gRPC, and the server, told the same bound, stops sending. One
/// permit is one KiB (a u32 count covers the 1 TiB maximum); a message
/// larger than the whole budget waits until it is all free and is then
/// processed alone.
#[derive(Clone)]
struct ByteBudget {
    permits: Arc<Semaphore>,
    kib: u32,
}

/// A message taken off the stream: not acked or nacked yet, and holding its
/// share of the byte budget until it is dropped.
type Received = (Message, Handler, OwnedSemaphorePermit);

impl ByteBudget {
    fn new(bytes: u64) -> ByteBudget {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        ByteBudget {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// A message's cost: data, attributes and ordering key, in KiB rounded
    /// up, at least 1 and at most the whole budget.
    fn cost(&self, m: &Message) -> u32 {
        let attributes: usize = m.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        let bytes = m.data.len() + attributes + m.ordering_key.len();
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.kib)
    }

    /// Waits until `m` fits in what is left of the budget.
    async fn acquire(&self, m: &Message) -> OwnedSemaphorePermit {
        match self.permits.clone().acquire_many_owned(self.cost(m)).await {
            Ok(p) => p,
            // The semaphore is never closed; were it, waiting forever is
            // the bound's meaning.
            Err(_) => std::future::pending().await,
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
    /// Whether Cloud Storage answers, judged by every write attempt.
    storage_health: Health,
}

/// The clients, and the Pub/Sub probe sharing the subscriber's credentials
/// (one token cache, one token refresh).
async fn build_clients(cfg: &Config) -> Result<(Subscriber, Storage, PubsubProbe), String> {
    use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
    let credentials = match &cfg.pubsub_endpoint {
        Endpoint::Google => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| format!("cannot find credentials for Pub/Sub: {e}"))?,
        Endpoint::Emulator(_) => Anonymous::new().build(),
    };
    let builder = Subscriber::builder().with_credentials(credentials.clone());
    let subscriber = match &cfg.pubsub_endpoint {
        Endpoint::Google => builder.build().await,
        Endpoint::Emulator(url) => builder.with_endpoint(url.clone()).build().await,
    }
    .map_err(|e| format!("cannot create the Pub/Sub client: {e}"))?;
    let probe =
        PubsubProbe::new(&cfg.pubsub_endpoint, credentials, cfg.subscription.clone()).await?;
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
    Ok((subscriber, storage, probe))
}

/// The endpoint as the "worker started" line shows it.
fn endpoint_label(e: &Endpoint) -> &str {
    match e {
        Endpoint::Google => "google (ADC)",
        Endpoint::Emulator(u) => u,
    }
}

/// Runs the worker until a stop signal or a fatal error; returns the exit
/// status. The steps, as the README describes them: pull until told
/// otherwise; on TSTP stay quiet until CONT (pull again) or TERM; then drain
/// (nack what was not started, finish what was) and flush (wait until the
/// library has sent every ack and nack).
pub async fn run(cfg: Config, mut signals: mpsc::UnboundedReceiver<StopSignal>) -> i32 {
    let started = Instant::now();
    let mut quiet = false;
    let build = build_clients(&cfg);
    tokio::pin!(build);
    let clients = loop {
        tokio::select! {
            biased;
            Some(sig) = signals.recv() => match sig {
                StopSignal::Terminate(name) => {
                    tracing::info!(signal = name, "stop requested during start-up");
                    log_summary(&Counts::default(), name, 0, 0, 0, EXIT_OK);
                    return EXIT_OK;
                }
                StopSignal::Quiet => quiet = true,
                StopSignal::Resume => quiet = false,
            },
            c = &mut build => break c,
        }
    };
    let (subscriber, storage, probe) = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return EXIT_FAILURE;
        }
    };
    tracing::info!(
        project = %cfg.project_id,
        subscription = %cfg.subscription,
        bucket = %cfg.bucket,
        object_prefix = %cfg.object_prefix,
        concurrency = cfg.concurrency,
        max_outstanding_messages = cfg.max_outstanding_messages,
        max_outstanding_bytes = cfg.max_outstanding_bytes,
        drain_timeout_ms = cfg.drain_timeout.as_millis() as u64,
        unavailable_exit_after_ms = cfg.unavailable_exit_after.as_millis() as u64,
        pubsub = endpoint_label(&cfg.pubsub_endpoint),
        storage = endpoint_label(&cfg.storage_endpoint),
        startup_ms = started.elapsed().as_millis() as u64,
        quiet,
        "worker started"
    );
    let mut worker = Worker::new(&cfg, subscriber, storage, probe);
    let (stop, pulling) = loop {
        // Quiet until CONT (then pull again) or TERM/INT (then drain).
        if quiet {
            if let Some(stop) = worker.quiet(&mut signals).await {
                break (stop, None);
            }
        }
        let mut sub = worker.open_stream().await;
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

/// The bookkeeping of one drain: when it started, its deadline, and the
/// rule for repeated signals.
struct DrainRun {
    /// The summary's `reason`: the signal's name, or what failed.
    reason: &'static str,
    stop_at: Instant,
    /// `stop_at` + DRAIN_TIMEOUT: past it, in-flight work is abandoned.
    deadline: tokio::time::Instant,
    in_flight_at_stop: u64,
    /// A TERM/INT after a TERM/INT aborts; after a TSTP it is the first one.
    terminate_seen: bool,
    /// Exit status of a drain that completes.
    exit: i32,
    /// Pub/Sub itself is what failed: its acks and nacks may never be
    /// confirmed, and waiting for them must not turn exit 1 into exit 3.
    pubsub_failed: bool,
}

/// Why a drain was cut short, and the exit status that says so.
struct Abandoned {
    /// For the error line.
    why: &'static str,
    /// EXIT_DRAIN_TIMEOUT or EXIT_ABORTED.
    code: i32,
}

/// One opened StreamingPull stream, from its first pull until every
/// message it delivered has been handed on.
struct Subscription {
    /// Received, not started. Filled by `reader`; closes once the stream
    /// has stopped and everything it delivered is in here.
    queue: mpsc::Receiver<Received>,
    /// Reads the stream; its result says why the stream ended.
    reader: JoinHandle<Option<String>>,
    stream: ShutdownToken,
}

/// The running worker: the subscription queue, the message tasks and the
/// counts, from the first pull to the summary line.
struct Worker {
    ctx: Arc<Ctx>,
    subscriber: Subscriber,
    subscription: String,
    max_outstanding_messages: usize,
    max_outstanding_bytes: u64,
    /// Shared by every stream: a stopped stream's messages may still be held.
    bytes: ByteBudget,
    lease_extension: Duration,
    concurrency: usize,
    permits: Arc<Semaphore>,
    tasks: JoinSet<TaskOutcome>,
    counts: Counts,
    drain: Drain,
    /// The last stream, stopped, while its queue has not been emptied.
    stopped: Option<Subscription>,
    /// One message waiting for a write permit.
    next: Option<Received>,
    /// The library's flush of each stopped stream: completes once every
    /// handler of that stream has been consumed and its acks and nacks sent.
    flushes: JoinSet<()>,
    /// Where the stream connects, for the error line when it fails.
    pubsub_endpoint: String,
    /// Shared with the probe: a stream that fails for good reports through
    /// it too, since the worker may exit before the probe's next call.
    pubsub_health: Arc<Health>,
    /// Yields once, when Pub/Sub has been unusable for too long.
    give_up: mpsc::Receiver<Duration>,
}

impl Worker {
    /// Also starts the Pub/Sub probe, which runs until the process exits.
    fn new(cfg: &Config, subscriber: Subscriber, storage: Storage, probe: PubsubProbe) -> Worker {
        let pubsub_endpoint = health::endpoint_url(&cfg.pubsub_endpoint, health::PUBSUB_URL);
        let pubsub_health = Arc::new(Health::new(
            "Pub/Sub",
            pubsub_endpoint.clone(),
            cfg.subscription.clone(),
        ));
        let probe_health = Arc::clone(&pubsub_health);
        let (give_up_tx, give_up) = mpsc::channel(1);
        let give_up_after = cfg.unavailable_exit_after;
        tokio::spawn(async move {
            let down = health::watch_pubsub(probe, &probe_health, give_up_after).await;
            let _ = give_up_tx.send(down).await;
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
                storage_health: Health::new(
                    "Cloud Storage",
                    health::endpoint_url(&cfg.storage_endpoint, health::STORAGE_URL),
                    format!("bucket {}", cfg.bucket),
                ),
            }),
            subscriber,
            subscription: cfg.subscription.clone(),
            max_outstanding_messages: cfg.max_outstanding_messages,
            max_outstanding_bytes: cfg.max_outstanding_bytes,
            bytes: ByteBudget::new(cfg.max_outstanding_bytes),
            lease_extension: cfg.lease_extension,
            concurrency: cfg.concurrency,
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            tasks: JoinSet::new(),
            counts: Counts::default(),
            drain: Drain::new(),
            stopped: None,
            next: None,
            flushes: JoinSet::new(),
            pubsub_endpoint,
            pubsub_health,
            give_up,
        }
    }

    /// Opens a stream and starts the task that reads it, after nacking what
    /// a previous, stopped stream still had queued.
    async fn open_stream(&mut self) -> Subscription {
        if let Some(mut old) = self.stopped.take() {
            // Not waiting for the old reader: it may be parked on the byte
            // budget that writes in progress hold, for minutes. Closed, its
            // queue refuses the reader's next message, whose handler is then
            // dropped, which nacks it.
            old.queue.close();
            while let Ok((_, handler, _bytes)) = old.queue.try_recv() {
                self.nack_queued(handler);
            }
        }
        let mut stream = self
            .subscriber
            .subscribe(self.subscription.clone())
            .set_max_outstanding_messages(self.max_outstanding_messages as i64)
            .set_max_outstanding_bytes(
                i64::try_from(self.max_outstanding_bytes).unwrap_or(i64::MAX),
            )
            .set_max_lease_extension(self.lease_extension)
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        let token = stream.shutdown_token();
        // The stream is read by its own task. `MessageStream::next()` is not
        // cancel-safe while it (re)opens the gRPC stream, and a select loop
        // would cancel it at every task completion: each cancelled open
        // leaves a server-side stream that may be dealt messages nobody
        // reads. The bounded channel is the "received, not started" queue.
        let (tx, queue) = mpsc::channel::<Received>(self.max_outstanding_messages);
        let budget = self.bytes.clone();
        let health = Arc::clone(&self.pubsub_health);
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok((message, handler))) => {
                        // While the budget is spent the stream is not read.
                        let bytes = budget.acquire(&message).await;
                        if tx.send((message, handler, bytes)).await.is_err() {
                            return None;
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(kind) = health::assess(&e) {
                            health.failure(kind, &health::describe_call(&e));
                        }
                        return Some(format!("subscription stream failed permanently: {e}"));
                    }
                    // Either our shutdown (expected) or the end of the stream.
                    None => return Some("subscription stream ended".to_string()),
                }
            }
        });
        Subscription {
            queue,
            reader,
            stream: token,
        }
    }

    /// Step 1: moves messages from the queue to write tasks, at most
    /// `concurrency` at once, until TSTP, TERM/INT or a stream failure.
    async fn pull(
        &mut self,
        sub: &mut Subscription,
        signals: &mut mpsc::UnboundedReceiver<StopSignal>,
    ) -> Stop {
        loop {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => match sig {
                    StopSignal::Resume => {
                        tracing::debug!(signal = sig.name(), "not quiet; nothing to resume");
                    }
                    _ => return Stop::Signal(sig),
                },
                Some(down) = self.give_up.recv() => return self.unavailable(down),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.counts.record(done);
                }
                permit = self.permits.clone().acquire_owned(), if self.next.is_some() => {
                    let (Ok(permit), Some((message, handler, bytes))) = (permit, self.next.take()) else {
                        continue;
                    };
                    let shutdown = self.drain.subscribe();
                    self.tasks.spawn(process(self.ctx.clone(), message, handler, permit, bytes, shutdown));
                }
                item = sub.queue.recv(), if self.next.is_none() => match item {
                    Some(item) => {
                        self.counts.received += 1;
                        self.next = Some(item);
                    }
                    None => {
                        let why = (&mut sub.reader)
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "subscription reader stopped".to_string());
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
        // `ShutdownToken::shutdown()` cancels the stream on its first poll
        // and then waits for the library's lease loop. Poll it once right
        // here so pulling stops now, not whenever a spawned task first runs
        // (meanwhile the reader would keep moving buffered messages into the
        // queue).
        {
            let first_poll = std::pin::pin!(sub.stream.shutdown());
            let _ = first_poll.poll(&mut Context::from_waker(Waker::noop()));
        }
        let token = sub.stream.clone();
        self.flushes.spawn(async move { token.shutdown().await });
        if let Some((_, handler, _bytes)) = self.next.take() {
            self.nack_unstarted(handler);
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

    /// Writes in progress (tasks holding a permit).
    fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    /// Step 1b, after TSTP: stops pulling, nacks what was received but not
    /// started, lets the writes in progress finish and ack (retries
    /// included: there is no deadline), and stays up. Returns `None` on
    /// CONT, or the stop that ends the quiet (TERM/INT).
    async fn quiet(&mut self, signals: &mut mpsc::UnboundedReceiver<StopSignal>) -> Option<Stop> {
        tracing::info!(
            in_flight = self.in_flight(),
            "quiet (SIGTSTP): stopped pulling; finishing in-flight work; SIGCONT resumes, \
             SIGTERM exits"
        );
        let mut idle_logged = false;
        loop {
            let idle = self.stopped.is_none() && self.tasks.is_empty() && self.flushes.is_empty();
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
                    Some((_, handler, _bytes)) => self.nack_queued(handler),
                    None => self.stopped = None,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.counts.record(done);
                }
                Some(_) = self.flushes.join_next(), if !self.flushes.is_empty() => {}
            }
        }
    }

    /// Stops pulling for good (`pulling` is the stream, unless quiet) and
    /// starts the drain: tasks stop retrying, and the deadline starts.
    fn stop_pulling(
        &mut self,
        stop: Stop,
        pulling: Option<Subscription>,
        timeout: Duration,
    ) -> DrainRun {
        let stop_at = Instant::now();
        let in_flight_at_stop = self.in_flight() as u64;
        if let Some(sub) = pulling {
            self.stop_stream(sub);
        }
        self.drain.start();
        let pubsub_failed = matches!(stop, Stop::StreamFailed | Stop::Unavailable);
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
            pubsub_failed,
        }
    }

    /// A message still in a stopped stream's queue: received by the worker
    /// only now, and nacked as never started.
    fn nack_queued(&mut self, handler: Handler) {
        self.counts.received += 1;
        self.nack_unstarted(handler);
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
        while self.stopped.is_some() || !self.tasks.is_empty() {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline) => return Err(Abandoned::timeout()),
                item = recv_queue(&mut self.stopped) => match item {
                    Some((_, handler, _bytes)) => self.nack_queued(handler),
                    None => self.stopped = None,
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
        while !self.flushes.is_empty() {
            tokio::select! {
                biased;
                Some(sig) = signals.recv() => run.on_signal(sig)?,
                _ = tokio::time::sleep_until(run.deadline), if run.pubsub_failed => {
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

/// The next queued message of a stopped stream; pending forever when there
/// is none, so it can sit in a `select!` without a guard.
async fn recv_queue(sub: &mut Option<Subscription>) -> Option<Received> {
    match sub {
        Some(sub) => sub.queue.recv().await,
        None => std::future::pending().await,
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
    /// The deadline passed with work still in flight.
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
    // Held until the ack or nack below: the message is outstanding until then.
    _bytes: OwnedSemaphorePermit,
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
        &ctx.storage_health,
    )
    .await;
    // During an outage the health line reports it once per period; one
    // line per message would repeat it.
    let outage = ctx.storage_health.is_down();
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
            if outage {
                tracing::debug!(%message_id, %object, %error, "write failed; nacked for redelivery");
            } else {
                tracing::warn!(%message_id, %object, %error, "write failed; nacked for redelivery");
            }
            TaskOutcome::NackedWriteFailed
        }
        WriteOutcome::Permanent(error) => {
            let delivery_attempt = handler.delivery_attempt().unwrap_or(0);
            let hold_ms = ctx.unstorable_hold.as_millis() as u64;
            if outage {
                tracing::debug!(%message_id, %object, delivery_attempt, hold_ms, %error,
                    "message cannot be stored; holding it, then nacking (dead-letter policy decides)");
            } else {
                tracing::error!(%message_id, %object, delivery_attempt, hold_ms, %error,
                    "message cannot be stored; holding it, then nacking (dead-letter policy decides)");
            }
            tokio::select! {
                _ = tokio::time::sleep(ctx.unstorable_hold) => {}
                _ = shutdown.recv() => {}
            }
            handler.nack();
            TaskOutcome::NackedUnstorable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    fn msg(bytes: usize) -> Message {
        Message::new().set_data(bytes::Bytes::from(vec![b'x'; bytes]))
    }

    #[test]
    fn cost_is_kib_rounded_up_and_capped_at_the_budget() {
        let b = ByteBudget::new(4 << 20);
        assert_eq!(b.cost(&msg(0)), 1);
        assert_eq!(b.cost(&msg(1024)), 1);
        assert_eq!(b.cost(&msg(1025)), 2);
        let with_attrs = msg(1000).set_attributes([("k".repeat(20), "v".repeat(10))]);
        assert_eq!(b.cost(&with_attrs), 2);
        assert_eq!(b.cost(&msg(9 << 20)), 4096);
    }

    /// Four messages of 1000 KiB fill a 4 MiB budget: the fifth waits
    /// until one of them is released (acked or nacked).
    #[tokio::test]
    async fn large_messages_stay_under_the_bound() {
        let b = ByteBudget::new(4 << 20);
        let m = msg(1000 * 1024);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(b.acquire(&m).await);
        }
        assert!(timeout(Duration::from_millis(50), b.acquire(&m))
            .await
            .is_err());
        held.pop();
        let fifth = timeout(Duration::from_secs(1), b.acquire(&m)).await;
        assert!(fifth.is_ok(), "a fifth message fits once one is released");
    }

    /// A message larger than the whole budget is not refused: it waits until
    /// nothing else is held, and nothing else is taken while it is.
    #[tokio::test]
    async fn a_message_larger_than_the_bound_goes_alone() {
        let b = ByteBudget::new(4 << 20);
        let small = b.acquire(&msg(10)).await;
        let big = msg(6 << 20);
        assert!(timeout(Duration::from_millis(50), b.acquire(&big))
            .await
            .is_err());
        drop(small);
        let held = timeout(Duration::from_secs(1), b.acquire(&big)).await;
        assert!(
            held.is_ok(),
            "the large message is taken once the budget is free"
        );
        assert!(timeout(Duration::from_millis(50), b.acquire(&msg(1)))
            .await
            .is_err());
        drop(held);
        assert!(timeout(Duration::from_secs(1), b.acquire(&msg(1)))
            .await
            .is_ok());
    }
}
