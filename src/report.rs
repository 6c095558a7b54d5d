//! The termination message: one line, at exit, that a platform shows
//! operators (Kubernetes: the container's last state in `kubectl describe
//! pod`), so "exit 137" comes with its why without anyone reading logs.

use std::ffi::CString;

use tracing::warn;

use crate::cause::{mib, Cause, Deaths};
use crate::cli::TerminationLog;
use crate::log;
use crate::reap::Exit;
use crate::signals::name;

/// Kubernetes' limit for one container's message, and so rinit's.
const MAX: usize = 4096;

/// What the message is made of.
pub struct Outcome<'a> {
    /// rinit's exit status (after `-e`).
    pub status: i32,
    /// How the main child ended.
    pub exit: Exit,
    /// How long the drain took, if there was one.
    pub drain_ms: Option<u64>,
    /// The grace, as the logs write it.
    pub grace: String,
    /// Why the SIGKILL deaths happened, what the deadline and the
    /// forwarded stop signal killed.
    pub deaths: &'a Deaths,
}

/// The status, why, how long the drain took and what was killed, in one
/// line of at most 4 KiB.
pub fn message(o: &Outcome) -> String {
    let d = o.deaths;
    let why = match (o.exit, d.main_cause) {
        (Exit::Code(c), _) => format!("the command exited with code {c}"),
        (Exit::Signal(_), Some(Cause::Deadline)) => {
            format!("the command was killed at rinit's {} deadline", o.grace)
        }
        (Exit::Signal(_), Some(Cause::Interrupt)) => {
            "the command was killed on an interrupt during the drain".into()
        }
        (Exit::Signal(_), Some(Cause::Oom)) => {
            let (limit, peak) = d.main_oom_memory;
            format!(
                "the command was killed by the kernel's OOM killer (memory limit {}, peak {})",
                mib(limit),
                mib(peak)
            )
        }
        (Exit::Signal(_), Some(Cause::Other)) => {
            "the command was killed by SIGKILL from another process, not rinit nor the OOM killer"
                .into()
        }
        (Exit::Signal(_), Some(Cause::Unknown)) => {
            "the command was killed by SIGKILL; no memory cgroup count tells by whom".into()
        }
        (Exit::Signal(s), None) => format!("the command died by {}", name(s)),
    };
    let mut m = format!("rinit: exit status {}: {why}", o.status);
    if let Some(ms) = o.drain_ms {
        m.push_str(&format!("; drain {ms} ms"));
    }
    // Counts before the lists, which can run past the bound.
    if !d.forward_kills.is_empty() {
        m.push_str(&format!(
            "; the stop signal killed {} processes that do not handle it",
            d.forward_kills.len()
        ));
    }
    let others = d
        .oom_total
        .saturating_sub(u64::from(d.main_cause == Some(Cause::Oom)));
    if others > 0 {
        m.push_str(&format!(
            "; the OOM killer also killed other processes: {others}"
        ));
        if d.oom_unreaped > 0 {
            m.push_str(&format!(
                ", {} of them not reaped by rinit (see the command's log)",
                d.oom_unreaped
            ));
        }
    }
    for (what, list) in [
        ("killed at the deadline", &d.killed),
        ("could not kill", &d.unkillable),
    ] {
        if !list.is_empty() {
            m.push_str(&format!("; {what}: {}", list.join(", ")));
        }
    }
    if m.len() > MAX {
        let mut end = MAX - 3;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push_str("...");
    }
    m
}

/// Writes the message (made only when there is somewhere to write it)
/// where `--termination-log` says: by default Kubernetes'
/// `/dev/termination-log` if it exists and is writable, silently nothing
/// otherwise. Opened non-blocking, so a FIFO without a reader cannot hold
/// the exit; a failure is one WARNING.
pub fn write(to: &TerminationLog, text: impl FnOnce() -> String) {
    let (path, explicit) = match to {
        TerminationLog::Off => return,
        TerminationLog::Default => (c"/dev/termination-log".to_owned(), false),
        TerminationLog::Path(p) => match CString::new(p.as_encoded_bytes()) {
            Ok(p) => (p, true),
            Err(_) => return,
        },
    };
    let flags = libc::O_WRONLY | libc::O_TRUNC | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let flags = if explicit {
        flags | libc::O_CREAT
    } else {
        flags
    };
    // SAFETY: plain syscalls on a path and a buffer we own; the fd is
    // closed here.
    let failed = unsafe {
        let fd = libc::open(path.as_ptr(), flags, 0o644);
        if fd < 0 && !explicit {
            return;
        }
        let text = text();
        let ok =
            fd >= 0 && libc::write(fd, text.as_ptr().cast(), text.len()) == text.len() as isize;
        let e = std::io::Error::last_os_error();
        if fd >= 0 {
            libc::close(fd);
        }
        (!ok).then_some(e)
    };
    if let Some(e) = failed {
        warn!(phase = "exit", path = %log::bytes_text(path.to_bytes()), error = %e,
              "cannot write the termination message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deaths() -> Deaths {
        let mut d = Deaths::start();
        d.main_cause = Some(Cause::Deadline);
        d
    }

    /// The message's parts, in order, and its bound.
    #[test]
    fn message_says_status_why_drain_and_what_was_killed() {
        let mut d = deaths();
        d.killed = vec!["worker (pid 7)".into(), "sleep (pid 9)".into()];
        d.forward_kills = vec![11, 12];
        d.oom_total = 2;
        d.oom_unreaped = 1;
        let o = Outcome {
            status: 137,
            exit: Exit::Signal(libc::SIGKILL),
            drain_ms: Some(25003),
            grace: "25s".into(),
            deaths: &d,
        };
        assert_eq!(
            message(&o),
            "rinit: exit status 137: the command was killed at rinit's 25s deadline; drain 25003 ms; \
             the stop signal killed 2 processes that do not handle it; \
             the OOM killer also killed other processes: 2, 1 of them not reaped by rinit \
             (see the command's log); \
             killed at the deadline: worker (pid 7), sleep (pid 9)"
        );
        let mut many = deaths();
        many.killed = (0..1000)
            .map(|i| format!("worker-é{i} (pid {i})"))
            .collect();
        let long = message(&Outcome { deaths: &many, ..o });
        assert!(long.len() <= MAX && long.ends_with("..."), "{}", long.len());
    }

    #[test]
    fn exits_and_other_signals() {
        let d = Deaths::start();
        let o = Outcome {
            status: 0,
            exit: Exit::Code(3),
            drain_ms: None,
            grace: "8s".into(),
            deaths: &d,
        };
        assert_eq!(
            message(&o),
            "rinit: exit status 0: the command exited with code 3"
        );
        let o = Outcome {
            status: 143,
            exit: Exit::Signal(libc::SIGTERM),
            drain_ms: Some(12),
            ..o
        };
        assert_eq!(
            message(&o),
            "rinit: exit status 143: the command died by SIGTERM; drain 12 ms"
        );
    }
}
