//! Starting the command: its own process group, a clean signal state.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// How the child is isolated from rinit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// New session and group (no TTY): signals to the group reach the
    /// child's whole tree and nothing of rinit's.
    Session,
    /// New group made the TTY's foreground group, so the terminal's job
    /// control (Ctrl-C, Ctrl-Z) reaches the child as it would from a shell.
    Foreground,
    /// Stay in rinit's group (`DUMB_INIT_SETSID=0`): only the child itself
    /// can be signalled.
    None,
}

impl Isolation {
    /// Session when stdin is not a terminal, the TTY's foreground group when it is.
    pub fn detect(setsid: bool) -> Isolation {
        if !setsid {
            Isolation::None
        } else if unsafe { libc::isatty(0) } == 1 {
            Isolation::Foreground
        } else {
            Isolation::Session
        }
    }
}

/// Why the command could not be started, with the exit status it maps to.
#[derive(Debug)]
pub struct SpawnError {
    /// 127 not found, 126 not executable, 1 anything else.
    pub status: i32,
    /// One line naming the command and the OS error.
    pub message: String,
}

/// Forks and execs `argv` with every signal unblocked and at its default
/// disposition. Returns the child's pid.
pub fn spawn(argv: &[String], isolation: Isolation) -> Result<i32, SpawnError> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            match isolation {
                Isolation::Session => {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Isolation::Foreground => {
                    if libc::setpgid(0, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // SIGTTOU is still blocked here, so a background group may take the
                    // terminal. A failure (stdin not our controlling TTY) is harmless.
                    libc::tcsetpgrp(0, libc::getpid());
                }
                Isolation::None => {}
            }
            // std::process::Command keeps the parent's blocked mask: clear it, or the
            // child would never see the signals rinit forwards.
            crate::signals::reset_dispositions();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => Ok(child.id() as i32),
        Err(e) => Err(classify(&argv[0], &e)),
    }
}

/// Maps an exec failure to the shell's conventions (127 / 126) or 1.
fn classify(program: &str, e: &io::Error) -> SpawnError {
    let (status, what) = match e.raw_os_error() {
        Some(libc::ENOENT) => (127, "command not found"),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) | Some(libc::EPERM) => {
            (126, "command cannot be executed")
        }
        _ => (1, "cannot start command"),
    };
    SpawnError {
        status,
        message: format!("{what}: '{program}': {e}"),
    }
}
