//! Reaping: collecting every exited child.

/// How a process ended, as `waitpid` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// What one pass of `reap_zombies` found.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The main child's end, if it was among those reaped.
    pub main: Option<Exit>,
    /// Orphans and other descendants reaped (not counting the main child).
    pub orphans: usize,
    /// Of those, the ones a signal ended: (pid, signal). Allocated only
    /// when there are any.
    pub signalled: Vec<(i32, i32)>,
    /// No children left at all: every descendant is gone.
    pub none_left: bool,
    /// The main child was stopped (only looked for with `untraced`).
    pub main_stopped: bool,
}

/// Reaps every exited child without blocking. SIGCHLD coalesces (one
/// wake-up may stand for thousands of exits), so this loops until the
/// kernel says nothing more has exited.
/// With `untraced` (terminal job control) a stop of the main child is
/// reported too.
pub fn reap_zombies(main_pid: i32, untraced: bool) -> Reaped {
    let mut out = Reaped::default();
    let flags = libc::WNOHANG | if untraced { libc::WUNTRACED } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid > 0 && libc::WIFSTOPPED(status) {
            out.main_stopped |= pid == main_pid;
            continue;
        }
        if pid > 0 {
            if pid == main_pid {
                out.main = Some(if libc::WIFSIGNALED(status) {
                    Exit::Signal(libc::WTERMSIG(status))
                } else {
                    Exit::Code(libc::WEXITSTATUS(status))
                });
            } else {
                out.orphans += 1;
                if libc::WIFSIGNALED(status) {
                    out.signalled.push((pid, libc::WTERMSIG(status)));
                }
            }
            continue;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        out.none_left = pid < 0;
        return out;
    }
}
