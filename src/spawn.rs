//! Starting the command: its own process group, a clean signal state.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

/// How the child is isolated from rinit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// New session and group (no TTY): signals to the group reach the
    /// child's whole tree and nothing of rinit's.
    Session,
    /// New group made the TTY's foreground group, so the terminal's job
    /// control (Ctrl-C, Ctrl-Z) reaches the child as it would from a shell.
    Foreground,
    /// New group on a TTY rinit does not own (`rinit ... &`): the terminal
    /// stays with the shell, which would exit if rinit took it.
    Background,
    /// Stay in rinit's group (`DUMB_INIT_SETSID=0`): only the child itself
    /// can be signalled.
    None,
}

impl Isolation {
    /// Session when stdin is not a terminal; on a terminal, its foreground
    /// group if rinit has it, else a background group.
    pub fn detect(setsid: bool) -> Isolation {
        // SAFETY: plain syscalls with no memory effects.
        unsafe {
            if !setsid {
                Isolation::None
            } else if libc::isatty(0) != 1 {
                Isolation::Session
            } else if libc::tcgetpgrp(0) == libc::getpgrp() {
                Isolation::Foreground
            } else {
                Isolation::Background
            }
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
///
/// Raw fork/exec rather than `std::process::Command`: rinit needs nothing of
/// Command's generality, and leaving it out keeps ~20 KiB out of the binary.
/// An exec failure comes back over a close-on-exec pipe as the child's errno,
/// so rinit can exit 126/127 with the message instead of supervising a corpse.
pub fn spawn(argv: &[OsString], isolation: Isolation) -> Result<i32, SpawnError> {
    let program = argv[0].to_string_lossy();
    let fail = |e: io::Error| classify(&program, &e);
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on owned fds; between fork and exec the child
    // makes only async-signal-safe calls and never returns.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        match libc::fork() {
            -1 => {
                let e = io::Error::last_os_error();
                libc::close(fds[0]);
                libc::close(fds[1]);
                Err(fail(e))
            }
            0 => {
                libc::close(fds[0]);
                let errno = match isolate(isolation) {
                    Ok(()) => {
                        libc::execvp(ptrs[0], ptrs.as_ptr());
                        *libc::__errno_location()
                    }
                    Err(e) => e,
                };
                libc::write(fds[1], (&errno as *const i32).cast(), 4);
                libc::_exit(127)
            }
            pid => {
                libc::close(fds[1]);
                let mut errno = 0i32;
                let n = loop {
                    let n = libc::read(fds[0], (&mut errno as *mut i32).cast(), 4);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                libc::close(fds[0]);
                if n == 4 {
                    // The child is already gone or about to be: collect it here.
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                    return Err(fail(io::Error::from_raw_os_error(errno)));
                }
                Ok(pid)
            }
        }
    }
}

/// In the forked child: new session or foreground group, and an empty mask (the blocked mask survives exec, and a
/// child that inherits rinit's would never see a forwarded signal).
///
/// # Safety
/// Only between fork and exec.
unsafe fn isolate(isolation: Isolation) -> Result<(), i32> {
    match isolation {
        Isolation::Session => {
            if libc::setsid() < 0 {
                return Err(*libc::__errno_location());
            }
        }
        Isolation::Foreground | Isolation::Background => {
            if libc::setpgid(0, 0) < 0 {
                return Err(*libc::__errno_location());
            }
            // SIGTTOU is still blocked here, so the new group may take the
            // terminal rinit had. A failure (stdin not our controlling TTY) is harmless.
            if isolation == Isolation::Foreground {
                libc::tcsetpgrp(0, libc::getpid());
            }
        }
        Isolation::None => {}
    }
    // rinit reset its own dispositions before forking; only glibc's reserved
    // signals, which it cannot touch in itself, are left to reset here.
    crate::signals::reset_reserved();
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    Ok(())
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
