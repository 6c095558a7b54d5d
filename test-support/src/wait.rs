//! Waiting for something with a deadline: every wait in the tests polls, and
//! a wait that runs out fails the test naming what it waited for.

use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Some`; panics after
/// `timeout` naming `what`, with `context()` (a log, say) appended.
pub fn poll_every<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > end {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(every);
    }
}

/// [`poll_every`] at 5 ms, for cheap checks of fast events (files, /proc).
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    check: impl FnMut() -> Option<T>,
) -> T {
    poll_every(what, timeout, Duration::from_millis(5), context, check)
}

/// [`poll_every`] at 50 ms with no context, for checks that cost something.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_every(what, timeout, Duration::from_millis(50), check)
}

/// [`wait_for`], polling every `every`.
pub fn wait_every<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    poll_every(what, timeout, every, String::new, check)
}

/// Polls `check` every 200 ms until it holds (`true`) or `timeout` passes
/// (`false`), for a caller that asserts with its own message.
pub fn eventually(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    eventually_every(timeout, Duration::from_millis(200), check)
}

/// [`eventually`], polling every `every`.
pub fn eventually_every(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(every);
    }
}
