//! Flow control by size: MAX_OUTSTANDING_BYTES, enforced by the worker
//! itself (the Pub/Sub emulator ignores the stream's own setting, and the
//! message count alone bounds nothing: 1000 messages of 10 MB are 10 GB).

use google_cloud_pubsub::model::Message;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The byte budget. A message holds permits
/// for its size from the moment the reader takes it off the stream until it
/// is acked or nacked, so the messages queued and being written never add
/// up to more than the bound, whatever their sizes. While the budget is
/// spent the reader stops reading the stream: the library then stops
/// reading gRPC, and the server, told the same bound, stops sending. One
/// permit is one KiB (a u32 count covers the 1 TiB maximum); a message
/// larger than the whole budget waits until it is all free and is then
/// processed alone.
#[derive(Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    kib: u32,
}

impl ByteBudget {
    /// A budget of `bytes` (MAX_OUTSTANDING_BYTES).
    pub fn new(bytes: u64) -> ByteBudget {
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
    pub async fn acquire(&self, m: &Message) -> OwnedSemaphorePermit {
        match self.permits.clone().acquire_many_owned(self.cost(m)).await {
            Ok(p) => p,
            // The semaphore is never closed; were it, waiting forever is
            // the bound's meaning.
            Err(_) => std::future::pending().await,
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
