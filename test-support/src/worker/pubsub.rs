//! The Pub/Sub emulator's REST API, as the tests use it: topics and
//! subscriptions, publishing, synchronous pulls, acks and nacks. Plain REST,
//! so no assertion depends on the client library under test.

use super::emulators::{TestEnv, PROJECT};
use super::{mixed_message, TestMessage};
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A message obtained with a synchronous pull.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub ack_id: String,
    pub message_id: String,
}

impl TestEnv {
    /// Creates a topic and a subscription to it (names must be >= 3 chars),
    /// with the given ack deadline (10..600 s).
    pub fn create_topic_and_subscription(&self, topic: &str, sub: &str, ack_deadline_s: u32) {
        let base = self.pubsub_url();
        self.call_ok(
            reqwest::Method::PUT,
            &format!("{base}/v1/projects/{PROJECT}/topics/{topic}"),
            Some(json!({})),
        );
        self.call_ok(
            reqwest::Method::PUT,
            &format!("{base}/v1/projects/{PROJECT}/subscriptions/{sub}"),
            Some(json!({
                "topic": format!("projects/{PROJECT}/topics/{topic}"),
                "ackDeadlineSeconds": ack_deadline_s,
            })),
        );
    }

    /// Publishes messages (batched under the 10 MB request limit); returns
    /// their IDs in order.
    pub fn publish(&self, topic: &str, messages: &[TestMessage]) -> Vec<String> {
        let url = format!(
            "{}/v1/projects/{PROJECT}/topics/{topic}:publish",
            self.pubsub_url()
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ids = Vec::new();
        let mut batch: Vec<Value> = Vec::new();
        let mut batch_bytes = 0usize;
        let flush = |batch: &mut Vec<Value>, ids: &mut Vec<String>| {
            if batch.is_empty() {
                return;
            }
            let v = self.call_ok(
                reqwest::Method::POST,
                &url,
                Some(json!({ "messages": std::mem::take(batch) })),
            );
            let got = v["messageIds"].as_array().expect("messageIds");
            ids.extend(got.iter().filter_map(|i| i.as_str().map(String::from)));
        };
        for m in messages {
            let size = m.data.len() * 4 / 3 + 1024;
            if batch_bytes + size > 6_000_000 || batch.len() >= 500 {
                flush(&mut batch, &mut ids);
                batch_bytes = 0;
            }
            let mut j = json!({ "data": b64.encode(&m.data) });
            if !m.attributes.is_empty() {
                j["attributes"] = json!(m.attributes);
            }
            batch.push(j);
            batch_bytes += size;
        }
        flush(&mut batch, &mut ids);
        assert_eq!(ids.len(), messages.len(), "publish returned too few IDs");
        ids
    }

    /// A synchronous pull of up to `max` messages (`returnImmediately`).
    /// The pulled messages are leased: ack or nack them.
    pub fn pull(&self, sub: &str, max: u32) -> Vec<Pulled> {
        let url = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{sub}:pull",
            self.pubsub_url()
        );
        let v = self.call_ok(
            reqwest::Method::POST,
            &url,
            Some(json!({ "returnImmediately": true, "maxMessages": max })),
        );
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        v["receivedMessages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|rm| Pulled {
                ack_id: text(&rm["ackId"]),
                message_id: text(&rm["message"]["messageId"]),
            })
            .collect()
    }

    /// Nacks (ack deadline 0): the messages are redelivered at once.
    pub fn nack(&self, sub: &str, ack_ids: &[String]) {
        if ack_ids.is_empty() {
            return;
        }
        let url = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{sub}:modifyAckDeadline",
            self.pubsub_url()
        );
        self.call_ok(
            reqwest::Method::POST,
            &url,
            Some(json!({ "ackIds": ack_ids, "ackDeadlineSeconds": 0 })),
        );
    }

    /// Message IDs still deliverable on the subscription: pulls until a few
    /// pulls in a row come back empty, then nacks everything it pulled so
    /// the messages stay available.
    pub fn remaining_message_ids(&self, sub: &str) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        let mut acks = Vec::new();
        let mut empty = 0;
        while empty < 3 {
            let got = self.pull(sub, 1000);
            if got.is_empty() {
                empty += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            empty = 0;
            for p in got {
                ids.insert(p.message_id);
                acks.push(p.ack_id);
            }
        }
        self.nack(sub, &acks);
        ids.into_iter().collect()
    }
}

/// A steady flow of [`mixed_message`]s for a publisher thread: `backlog`
/// messages at once, then `per_tick` every `tick`.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub backlog: u64,
    pub per_tick: u64,
    pub tick: Duration,
}

impl TestEnv {
    /// Publishes `flow` to `topic` on a thread of its own while `body` runs
    /// (see [`while_publishing`]). Returns what `body` returned, then the
    /// IDs and the messages published, in order.
    pub fn while_publishing<B>(
        &self,
        topic: &str,
        flow: Flow,
        body: impl FnOnce() -> B,
    ) -> (B, Vec<String>, Vec<TestMessage>) {
        let (b, (ids, msgs)) = while_publishing(
            |publishing| self.publish_until(topic, flow, publishing),
            body,
        );
        (b, ids, msgs)
    }

    /// Publishes `flow` to `topic` until `publishing` is cleared. Returns
    /// the IDs and the messages, in order.
    fn publish_until(
        &self,
        topic: &str,
        flow: Flow,
        publishing: &AtomicBool,
    ) -> (Vec<String>, Vec<TestMessage>) {
        let (mut ids, mut msgs) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while publishing.load(Ordering::Relaxed) {
            let n = if i == 0 {
                flow.backlog.max(flow.per_tick)
            } else {
                flow.per_tick
            };
            let batch: Vec<_> = (i..i + n).map(mixed_message).collect();
            i += n;
            ids.extend(self.publish(topic, &batch));
            msgs.extend(batch);
            std::thread::sleep(flow.tick);
        }
        (ids, msgs)
    }
}

/// Runs `publish` on a thread of its own while `body` runs on this one;
/// returns both results. `publish` loops while the flag it is handed is
/// set, and the flag is cleared when `body` ends, returning or panicking:
/// the scope joins the publisher before a panic goes on, so a failed assert
/// in `body` that left the flag set would hang the test instead of failing
/// it.
pub fn while_publishing<P: Send, B>(
    publish: impl FnOnce(&AtomicBool) -> P + Send,
    body: impl FnOnce() -> B,
) -> (B, P) {
    let publishing = AtomicBool::new(true);
    std::thread::scope(|scope| {
        let publisher = scope.spawn(|| publish(&publishing));
        let stop = StopOnDrop(&publishing);
        let b = body();
        drop(stop);
        (b, publisher.join().expect("publisher thread"))
    })
}

/// Clears the publishing flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::while_publishing;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A body that fails still stops the publisher: its panic comes out of
    /// `while_publishing` at once, not after the publisher's own bound.
    #[test]
    fn a_panicking_body_stops_the_publisher() {
        let stopped_by_flag = AtomicBool::new(false);
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while_publishing(
                |publishing| {
                    while t0.elapsed() < Duration::from_secs(10) {
                        if !publishing.load(Ordering::Relaxed) {
                            stopped_by_flag.store(true, Ordering::Relaxed);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                },
                || panic!("a failed assert in the body"),
            )
        }));
        assert!(result.is_err(), "the body's panic goes on");
        assert!(
            stopped_by_flag.load(Ordering::Relaxed),
            "the publisher ran {:?}, to its own bound: the flag was never cleared",
            t0.elapsed()
        );
    }
}
