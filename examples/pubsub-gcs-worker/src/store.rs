//! Turning one Pub/Sub message into one Cloud Storage object, idempotently.
//!
//! The object name is derived from the message ID and the write carries an
//! `ifGenerationMatch=0` precondition, so a redelivered message (after a
//! lost ack, a nack, a crash or an abandoned drain) can never create a
//! second object: the second write fails with 412, which means "already
//! stored", and the message is acked.

use crate::health::{self, Health, Kind};
use crate::shutdown::Shutdown;
use google_cloud_pubsub::model::Message;
use google_cloud_storage::client::Storage;
use std::collections::HashMap;
use std::time::Duration;

/// Metadata key holding the message ID (also the object name's suffix).
pub const META_MESSAGE_ID: &str = "pubsub-message-id";
/// Metadata key holding the publish time, RFC 3339.
pub const META_PUBLISH_TIME: &str = "pubsub-publish-time";
/// Metadata key holding the ordering key, when the message has one.
pub const META_ORDERING_KEY: &str = "pubsub-ordering-key";
/// Prefix of the metadata keys holding the message attributes. A prefix
/// keeps user attributes from ever colliding with the keys above.
pub const META_ATTRIBUTE_PREFIX: &str = "pubsub-attr-";

/// Content type of payloads that are valid UTF-8 (the empty payload is).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Content type of every other payload.
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// What the object for a message looks like, independent of any client.
#[derive(Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    pub name: String,
    pub content_type: &'static str,
    pub metadata: HashMap<String, String>,
}

/// Builds the object name, content type and metadata for a message.
pub fn object_spec(prefix: &str, message: &Message) -> ObjectSpec {
    let content_type = if std::str::from_utf8(&message.data).is_ok() {
        TEXT_CONTENT_TYPE
    } else {
        BINARY_CONTENT_TYPE
    };
    let mut metadata: HashMap<String, String> = message
        .attributes
        .iter()
        .map(|(k, v)| (format!("{META_ATTRIBUTE_PREFIX}{k}"), v.clone()))
        .collect();
    metadata.insert(META_MESSAGE_ID.into(), message.message_id.clone());
    if let Some(t) = message.publish_time {
        metadata.insert(META_PUBLISH_TIME.into(), String::from(t));
    }
    if !message.ordering_key.is_empty() {
        metadata.insert(META_ORDERING_KEY.into(), message.ordering_key.clone());
    }
    ObjectSpec {
        name: format!("{prefix}{}", message.message_id),
        content_type,
        metadata,
    }
}

/// How a write ended, from the message's point of view.
#[derive(Debug)]
pub enum WriteOutcome {
    /// A new object was created: ack.
    Created,
    /// The object already existed (412 on `ifGenerationMatch=0`): an earlier
    /// delivery stored it, so ack.
    AlreadyExists,
    /// Retries exhausted, or a drain started, on errors that may go away
    /// (network, timeout, 408, 429, 5xx): nack for redelivery.
    Transient(String),
    /// An error that no retry will fix for this message (other 4xx, a
    /// malformed request): nack after a hold, leave it to the dead-letter
    /// policy.
    Permanent(String),
}

/// Classification of a single attempt's error.
#[derive(Debug, PartialEq, Eq)]
enum ErrorClass {
    AlreadyExists,
    Transient,
    Permanent,
}

fn classify(e: &google_cloud_storage::Error) -> ErrorClass {
    match e.http_status_code() {
        Some(412) => ErrorClass::AlreadyExists,
        Some(408 | 429) => ErrorClass::Transient,
        Some(c) if (400..500).contains(&c) => ErrorClass::Permanent,
        Some(_) => ErrorClass::Transient,
        // No HTTP status: the request was never answered (connect refused,
        // reset, timeout) or the answer could not be read. Unless the
        // request itself could not be built, that is worth retrying.
        None if e.is_binding() || e.is_serialization() => ErrorClass::Permanent,
        None => ErrorClass::Transient,
    }
}

/// Retry settings for one message.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub attempt_timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Backoff before attempt `n + 1` (n >= 1): exponential, capped, with a
    /// jitter in [50%, 100%] derived from the message ID so that messages
    /// failing together do not retry in lockstep.
    fn backoff(&self, n: u32, salt: &str) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.max_backoff);
        let h = salt
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
            .wrapping_add(u64::from(n));
        let frac = 0.5 + (h % 1000) as f64 / 2000.0;
        exp.mul_f64(frac)
    }
}

/// Where and how objects are written: the client, the bucket, the retry
/// policy, and the health state every attempt reports to.
pub struct ObjectWriter {
    storage: Storage,
    /// `projects/_/buckets/NAME`, as the client wants it.
    bucket: String,
    policy: RetryPolicy,
    health: Health,
}

impl ObjectWriter {
    /// A writer to `bucket` (its short name).
    pub fn new(storage: Storage, bucket: &str, policy: RetryPolicy, health: Health) -> Self {
        ObjectWriter {
            storage,
            bucket: format!("projects/_/buckets/{bucket}"),
            policy,
            health,
        }
    }

    /// Whether Cloud Storage answers, as judged by the writes so far.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Writes the message's object, retrying transient errors with backoff.
    ///
    /// Once `shutdown` reports the drain, the attempt in progress is allowed
    /// to finish (that is "finishing in-flight work"), but no new attempt
    /// starts, so a drain during a storage outage ends quickly with a nack
    /// instead of sitting out the backoff schedule. Every attempt tells the
    /// health state whether Cloud Storage answered.
    pub async fn write(
        &self,
        spec: &ObjectSpec,
        data: bytes::Bytes,
        shutdown: &mut Shutdown,
    ) -> WriteOutcome {
        let policy = &self.policy;
        // Sent up front in the object metadata: Cloud Storage then verifies
        // the bytes before creating the object (a corrupted upload is
        // rejected, not stored), and the library does not append the
        // trailing checksum part to the multipart body that emulators
        // misread as content.
        let crc32c = crc32c::crc32c(&data);
        let mut last_error = String::new();
        for attempt in 1..=policy.attempts {
            if attempt > 1 {
                if shutdown.is_draining() {
                    return WriteOutcome::Transient(format!(
                        "not retried during drain after: {last_error}"
                    ));
                }
                let wait = policy.backoff(attempt - 1, &spec.name);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.recv() => {
                        return WriteOutcome::Transient(format!(
                            "not retried during drain after: {last_error}"
                        ));
                    }
                }
            }
            let write = self
                .storage
                .write_object(&self.bucket, &spec.name, data.clone())
                .set_if_generation_match(0)
                .with_known_crc32c(crc32c)
                .set_content_type(spec.content_type)
                .set_metadata(spec.metadata.clone())
                .send_unbuffered();
            let result = match tokio::time::timeout(policy.attempt_timeout, write).await {
                Ok(r) => r,
                Err(_) => {
                    last_error = format!(
                        "attempt {attempt} timed out after {:?}",
                        policy.attempt_timeout
                    );
                    self.health.failure(Kind::Timeout, &last_error);
                    tracing::debug!(object = %spec.name, attempt, "write attempt timed out");
                    continue;
                }
            };
            match &result {
                Ok(_) => self.health.success(),
                Err(e) => match health::assess(e) {
                    None => self.health.success(),
                    Some(kind) => self.health.failure(kind, &health::describe_call(e)),
                },
            }
            match result {
                Ok(_) => return WriteOutcome::Created,
                Err(e) => match classify(&e) {
                    ErrorClass::AlreadyExists => return WriteOutcome::AlreadyExists,
                    ErrorClass::Permanent => return WriteOutcome::Permanent(e.to_string()),
                    ErrorClass::Transient => {
                        tracing::debug!(object = %spec.name, attempt, error = %e, "write attempt failed");
                        last_error = e.to_string();
                    }
                },
            }
        }
        WriteOutcome::Transient(format!(
            "{} attempts failed, last: {last_error}",
            policy.attempts
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(data: &'static [u8]) -> Message {
        Message::new()
            .set_data(bytes::Bytes::from_static(data))
            .set_message_id("42")
            .set_attributes([("k", "v")])
    }

    #[test]
    fn names_and_types() {
        let s = object_spec("in/", &msg(b"hello"));
        assert_eq!(s.name, "in/42");
        assert_eq!(s.content_type, TEXT_CONTENT_TYPE);
        assert_eq!(
            s.metadata.get("pubsub-attr-k").map(String::as_str),
            Some("v")
        );
        assert_eq!(
            s.metadata.get(META_MESSAGE_ID).map(String::as_str),
            Some("42")
        );
        assert_eq!(object_spec("", &msg(b"")).content_type, TEXT_CONTENT_TYPE);
        assert_eq!(
            object_spec("", &msg(b"\xff\xfe")).content_type,
            BINARY_CONTENT_TYPE
        );
    }

    #[test]
    fn classification() {
        let http = |c| google_cloud_storage::Error::http(c, Default::default(), Default::default());
        assert_eq!(classify(&http(412)), ErrorClass::AlreadyExists);
        assert_eq!(classify(&http(429)), ErrorClass::Transient);
        assert_eq!(classify(&http(503)), ErrorClass::Transient);
        assert_eq!(classify(&http(403)), ErrorClass::Permanent);
        assert_eq!(classify(&http(400)), ErrorClass::Permanent);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            attempts: 10,
            attempt_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        };
        for n in 1..10 {
            let b = p.backoff(n, "x");
            assert!(
                b >= Duration::from_millis(100) && b <= Duration::from_secs(2),
                "{b:?}"
            );
        }
    }
}
