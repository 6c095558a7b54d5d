//! The message tasks: each stores one message, then acks or nacks it, with
//! at most CONCURRENCY of them writing at once.

use crate::config::Config;
use crate::health::{self, Health};
use crate::shutdown::{Drain, Shutdown};
use crate::store::{self, ObjectWriter, RetryPolicy, WriteOutcome};
use crate::stream::Received;
use crate::summary::TaskOutcome;
use google_cloud_storage::client::Storage;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

/// Shared, read-only state of the message tasks.
struct Ctx {
    writer: ObjectWriter,
    /// OBJECT_PREFIX.
    prefix: String,
    /// How long a message that can never be stored is held (its lease kept
    /// alive) before it is nacked, so that it costs one delivery per hold
    /// instead of spinning; the subscription's dead-letter policy counts the
    /// deliveries and eventually takes it away.
    unstorable_hold: Duration,
}

/// The write tasks in progress, the permits that bound them, and the drain
/// they all listen to.
pub struct Writes {
    ctx: Arc<Ctx>,
    concurrency: usize,
    permits: Arc<Semaphore>,
    tasks: JoinSet<TaskOutcome>,
    drain: Drain,
}

impl Writes {
    /// No task yet; at most CONCURRENCY at once, each writing to the
    /// configured bucket through `storage`.
    pub fn new(storage: Storage, cfg: &Config) -> Writes {
        let retry = RetryPolicy {
            attempts: cfg.write_attempts,
            attempt_timeout: cfg.write_attempt_timeout,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        };
        let health = Health::new(
            "Cloud Storage",
            health::endpoint_url(&cfg.storage_endpoint, health::STORAGE_URL),
            format!("bucket {}", cfg.bucket),
        );
        let ctx = Ctx {
            writer: ObjectWriter::new(storage, &cfg.bucket, retry, health),
            prefix: cfg.object_prefix.clone(),
            unstorable_hold: cfg.lease_extension,
        };
        Writes {
            ctx: Arc::new(ctx),
            concurrency: cfg.concurrency,
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            tasks: JoinSet::new(),
            drain: Drain::new(),
        }
    }

    /// Waits for a free write slot. The future owns what it needs, so it
    /// can wait beside [`Writes::join_next`] in one `select!`.
    pub fn permit(&self) -> impl Future<Output = Result<OwnedSemaphorePermit, AcquireError>> {
        self.permits.clone().acquire_owned()
    }

    /// Starts the task for `received`, holding `permit` while it writes.
    pub fn start(&mut self, received: Received, permit: OwnedSemaphorePermit) {
        let shutdown = self.drain.subscribe();
        self.tasks
            .spawn(process(self.ctx.clone(), received, permit, shutdown));
    }

    /// The next task to end (pending forever when there is none: guard the
    /// `select!` branch with [`Writes::is_empty`]).
    pub async fn join_next(&mut self) -> Option<Result<TaskOutcome, JoinError>> {
        self.tasks.join_next().await
    }

    /// No task left.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Tasks not yet ended, writing or holding an unstorable message.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Writes in progress (tasks holding a permit).
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    /// Tells every task, now and later, that the drain has started.
    pub fn start_drain(&self) {
        self.drain.start();
    }
}

/// Stores one message, then acks or nacks it. `permit` (a write slot) is
/// released once the write has ended; the message's share of the byte
/// budget once it is acked or nacked.
async fn process(
    ctx: Arc<Ctx>,
    received: Received,
    permit: OwnedSemaphorePermit,
    mut shutdown: Shutdown,
) -> TaskOutcome {
    // `_bytes` is held to the end: the message is outstanding until then.
    let Received {
        message,
        handler,
        bytes: _bytes,
    } = received;
    let spec = store::object_spec(&ctx.prefix, &message);
    let outcome = ctx.writer.write(&spec, message.data, &mut shutdown).await;
    let object = spec.name;
    // During an outage the health line reports it once per period; one
    // line per message would repeat it.
    let outage = ctx.writer.health().is_down();
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
