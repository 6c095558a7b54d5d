//! StreamingPull streams: opening one with the worker's flow control, the
//! task that reads it into the "received, not started" queue, and stopping
//! it at once.

use crate::budget::ByteBudget;
use crate::config::Config;
use crate::health::{self, Health};
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{ShutdownBehavior, ShutdownToken};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

/// A message taken off the stream: not acked or nacked yet, and holding its
/// share of the byte budget until it is dropped.
pub struct Received {
    pub message: Message,
    pub handler: Handler,
    pub bytes: OwnedSemaphorePermit,
}

/// How every stream of this worker is opened: the subscription, its flow
/// control, the byte budget all streams share (a stopped stream's messages
/// may still be held), and the health state a failed stream reports to.
pub struct Streams {
    subscriber: Subscriber,
    subscription: String,
    max_outstanding_messages: usize,
    max_outstanding_bytes: u64,
    lease_extension: Duration,
    bytes: ByteBudget,
    /// Shared with the probe: a stream that fails for good reports through
    /// it too, since the worker may exit before the probe's next call.
    health: Arc<Health>,
}

impl Streams {
    /// Streams of the configured subscription, under its flow control.
    pub fn new(subscriber: Subscriber, cfg: &Config, health: Arc<Health>) -> Streams {
        Streams {
            subscriber,
            subscription: cfg.subscription.clone(),
            max_outstanding_messages: cfg.max_outstanding_messages,
            max_outstanding_bytes: cfg.max_outstanding_bytes,
            lease_extension: cfg.lease_extension,
            bytes: ByteBudget::new(cfg.max_outstanding_bytes),
            health,
        }
    }

    /// Opens a stream and starts the task that reads it.
    pub fn open(&self) -> Subscription {
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
        let health = Arc::clone(&self.health);
        let reader = tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok((message, handler))) => {
                        // While the budget is spent the stream is not read.
                        let bytes = budget.acquire(&message).await;
                        let received = Received {
                            message,
                            handler,
                            bytes,
                        };
                        if tx.send(received).await.is_err() {
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
}

/// One opened StreamingPull stream, from its first pull until every
/// message it delivered has been handed on.
pub struct Subscription {
    /// Received, not started. Filled by `reader`; closes once the stream
    /// has stopped and everything it delivered is in here.
    queue: mpsc::Receiver<Received>,
    /// Reads the stream; its result says why the stream ended.
    reader: JoinHandle<Option<String>>,
    stream: ShutdownToken,
}

impl Subscription {
    /// The next message received and not started; `None` once the stream
    /// has ended and its queue is empty.
    pub async fn recv(&mut self) -> Option<Received> {
        self.queue.recv().await
    }

    /// Why the stream ended, once [`Subscription::recv`] has said it did.
    pub async fn why_ended(&mut self) -> String {
        (&mut self.reader)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "subscription reader stopped".to_string())
    }

    /// Cancels the stream now and returns the library's flush: it completes
    /// once every handler of this stream has been consumed and its acks and
    /// nacks sent.
    pub fn stop(&self) -> impl Future<Output = ()> + Send + 'static {
        // `ShutdownToken::shutdown()` cancels the stream on its first poll
        // and then waits for the library's lease loop. Poll it once right
        // here so pulling stops now, not whenever a spawned task first runs
        // (meanwhile the reader would keep moving buffered messages into the
        // queue).
        {
            let first_poll = std::pin::pin!(self.stream.shutdown());
            let _ = first_poll.poll(&mut Context::from_waker(Waker::noop()));
        }
        let token = self.stream.clone();
        async move { token.shutdown().await }
    }

    /// Closes the queue and takes what it holds now, without waiting for
    /// the reader: it may be parked on the byte budget that writes in
    /// progress hold, for minutes. Closed, the queue refuses the reader's
    /// next message, whose handler is then dropped, which nacks it.
    pub fn close(mut self) -> impl Iterator<Item = Received> {
        self.queue.close();
        std::iter::from_fn(move || self.queue.try_recv().ok())
    }
}

/// The next queued message of a stopped stream; pending forever when there
/// is none, so it can sit in a `select!` without a guard.
pub async fn recv_queue(sub: &mut Option<Subscription>) -> Option<Received> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}
