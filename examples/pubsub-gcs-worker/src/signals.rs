//! The four signals the worker acts on, as messages to the run loop.
//!
//! Handlers are installed before anything else, so a signal during start-up
//! is queued rather than lost, and TSTP never stops the process.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

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
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate(n) => n,
            StopSignal::Quiet => "SIGTSTP",
            StopSignal::Resume => "SIGCONT",
        }
    }
}

/// The run loop's end of the signal channel.
pub type Signals = mpsc::UnboundedReceiver<StopSignal>;

/// Installs the handlers for TERM, INT, TSTP and CONT and forwards them to
/// a channel, in the order they arrive.
pub fn install() -> std::io::Result<Signals> {
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
