//! The drain, as the message tasks see it.
//!
//! As in tokio's mini-redis (`src/shutdown.rs`), the run loop owns the one
//! [`Drain`] and every message task holds a [`Shutdown`] made from it. A
//! write already in progress is allowed to finish (that is what "finishing
//! in-flight work" means); a task only looks at its `Shutdown` before it
//! would start something new: another retry attempt, or a hold on a message
//! that cannot be stored. So a drain during an outage ends with quick nacks
//! instead of sitting out a backoff schedule.

use tokio::sync::watch;

/// The run loop's half: starting the drain is one call and cannot be undone.
pub struct Drain(watch::Sender<bool>);

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Drain(watch::channel(false).0)
    }

    /// Starts the drain for every task, now and later.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    /// A listener for one message task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

/// A message task's half: has the drain started, and wait until it does.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// True once the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when the drain starts (at once if it has). A `Drain` that
    /// is gone counts as started: nobody is left to wait for the work.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn start_reaches_existing_and_later_listeners() {
        let drain = Drain::new();
        let mut early = drain.subscribe();
        assert!(!early.is_draining());
        let pending = tokio::time::timeout(Duration::from_millis(20), early.recv()).await;
        assert!(pending.is_err(), "recv completed before the drain started");
        drain.start();
        assert!(early.is_draining());
        early.recv().await;
        let mut late = drain.subscribe();
        assert!(late.is_draining());
        late.recv().await;
    }

    #[tokio::test]
    async fn a_dropped_drain_releases_waiters() {
        let drain = Drain::new();
        let mut s = drain.subscribe();
        drop(drain);
        tokio::time::timeout(Duration::from_secs(1), s.recv())
            .await
            .expect("recv must complete once the Drain is gone");
    }
}
