//! Starting the command: its own process group, a clean signal state.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::log;

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
///
/// With `budget`, the child's environment gets `RINIT_DRAIN_MS` (and
/// `RINIT_DRAIN_SECONDS`, rounded down, for a shell's `$((...))` or
/// Sidekiq's integer `-t`): see `Plan::child_budget`.
pub fn spawn(
    argv: &[OsString],
    isolation: Isolation,
    budget: Option<std::time::Duration>,
) -> Result<i32, SpawnError> {
    let fail = |e: io::Error| classify(&argv[0], &e);
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // The child's environment: rinit's, with the budget put in. Built here
    // as pointers rather than with setenv, which copies the whole
    // environment and cost ~6,000 start-up instructions (bench/run).
    let budget_vars = budget.map(|b| {
        [
            Var::new(b"RINIT_DRAIN_MS=", b.as_millis() as u64),
            Var::new(b"RINIT_DRAIN_SECONDS=", b.as_secs()),
        ]
    });
    // rinit's own two variables, always: with no budget (--grace=none) an
    // inherited value must not pass for one.
    let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(crate::environ_vars().count() + 3);
    envp.extend(crate::environ_vars().filter(|&var| {
        // SAFETY: a NUL-terminated string of the environment
        // (`environ_vars`); only an `R` variable pays for its length.
        let ours = unsafe {
            *var as u8 == b'R' && {
                let v = CStr::from_ptr(var).to_bytes();
                v.starts_with(b"RINIT_DRAIN_MS=") || v.starts_with(b"RINIT_DRAIN_SECONDS=")
            }
        };
        !ours
    }));
    envp.extend(budget_vars.iter().flatten().map(|v| v.0.as_ptr().cast()));
    envp.push(std::ptr::null());
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
                        libc::execvpe(ptrs[0], ptrs.as_ptr(), envp.as_ptr());
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

/// `NAME=n` as a C string on the stack: no allocation and no formatting
/// machinery on every start.
struct Var([u8; 48]);

impl Var {
    fn new(name: &[u8], n: u64) -> Var {
        let mut digits = [0; 20];
        let mut v = Var([0; 48]);
        // The names are constants well under the 27 bytes left for them.
        let _ = crate::procfs::c_string(&[name, crate::procfs::decimal(n, &mut digits)], &mut v.0);
        v
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
///
/// `ENOENT` does not always mean the command is missing: the kernel says the
/// same when the file is there but what it needs to run is not (a script's
/// interpreter, `#!/bin/sh\r` with Windows line endings among them; a
/// dynamic binary's loader), and so does glibc when a file with no `#!`
/// line needs a `/bin/sh` the image lacks. Those are 126, "exists but cannot
/// be executed", with the missing part named, as bash's "bad interpreter".
fn classify(program: &OsStr, e: &io::Error) -> SpawnError {
    let mut shown = String::new();
    log::escape_into(&mut shown, &log::bytes_text(program.as_bytes()));
    let (status, message) = match e.raw_os_error() {
        Some(libc::ENOENT) => match missing_part(program) {
            Some(why) => (126, format!("command cannot be executed: '{shown}': {why}")),
            None => (127, format!("command not found: '{shown}': {e}")),
        },
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) | Some(libc::EPERM) => {
            (126, format!("command cannot be executed: '{shown}': {e}"))
        }
        _ => (1, format!("cannot start command: '{shown}': {e}")),
    };
    SpawnError { status, message }
}

/// When exec said `ENOENT` about a file that exists: what it could not
/// find. `None` when the file itself is missing.
fn missing_part(program: &OsStr) -> Option<String> {
    let path = CString::new(resolve(program)?.into_os_string().into_vec()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let head = crate::procfs::read_small(&path, &mut buf)?;
    let mut why = String::new();
    if let Some(line) = head.strip_prefix(b"#!") {
        // As the kernel reads it: up to the newline, the first word after
        // spaces and tabs. A carriage return is part of the name.
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let interp = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        why.push_str("its interpreter '");
        log::escape_into(&mut why, &log::bytes_text(interp));
        why.push_str("' was not found");
        if interp.ends_with(b"\r") {
            why.push_str(" (the \\r is a Windows line ending: convert the script with dos2unix)");
        }
    } else if head.starts_with(b"\x7fELF") {
        why.push_str("its loader (ELF interpreter) ");
        if let Some(interp) = elf_interp(head) {
            why.push('\'');
            log::escape_into(&mut why, &log::bytes_text(interp));
            why.push_str("' ");
        }
        why.push_str(
            "was not found: a dynamically linked program in an image without its libraries",
        );
    } else {
        why.push_str("it has no #! line, and there is no /bin/sh to run it with");
    }
    Some(why)
}

/// The file `execvp` tried: the path itself when it holds a '/', else the
/// first match on `PATH` (glibc's default when unset).
fn resolve(program: &OsStr) -> Option<PathBuf> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file's first bytes.
fn elf_interp(elf: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?) as usize);
    // EI_CLASS 2: 64-bit; EI_DATA 1: little-endian.
    if elf.get(4..6)? != [2, 1] {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)? as usize, u16_at(0x38)?);
    (0..phnum as usize).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        // p_type 3: PT_INTERP.
        if elf.get(ph..ph + 4)? != 3u32.to_le_bytes() {
            return None;
        }
        let (off, len) = (u64_at(ph.checked_add(8)?)?, u64_at(ph.checked_add(32)?)?);
        let interp = elf.get(off..off.checked_add(len)?)?;
        interp.split(|&b| b == 0).next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way a file can exist and still not run, and a file that is
    /// missing: status and the part named.
    #[test]
    fn enoent_names_what_is_missing() {
        let dir = rinit_test_support::TempDir::new("spawn");
        let file = |name: &str, body: &str| OsString::from(dir.executable(name, body));
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        let cases: [(OsString, i32, &str); 5] = [
            (
                file("interp.sh", "#!/nonexistent/interp -x\necho\n"),
                126,
                "its interpreter '/nonexistent/interp' was not found",
            ),
            (
                file("crlf.sh", "#!/bin/sh\r\necho\r\n"),
                126,
                "its interpreter '/bin/sh\\r' was not found (the \\r is a Windows line ending",
            ),
            (
                file("plain.sh", "echo hi\n"),
                126,
                "no #! line, and there is no /bin/sh",
            ),
            (
                dir.join("missing").into_os_string(),
                127,
                "command not found",
            ),
            ("rinit-no-such-command".into(), 127, "command not found"),
        ];
        for (program, status, needle) in cases {
            let e = classify(&program, &enoent);
            assert_eq!(e.status, status, "{program:?}: {}", e.message);
            assert!(e.message.contains(needle), "{program:?}: {}", e.message);
            assert!(
                !e.message.contains(['\r', '\n']),
                "one line: {:?}",
                e.message
            );
        }
    }

    #[test]
    fn variables_for_the_child() {
        let text = |v: Var| {
            CStr::from_bytes_until_nul(&v.0)
                .expect("NUL")
                .to_bytes()
                .to_vec()
        };
        assert_eq!(text(Var::new(b"A=", 0)), b"A=0");
        assert_eq!(
            text(Var::new(b"RINIT_DRAIN_MS=", 22000)),
            b"RINIT_DRAIN_MS=22000"
        );
        assert_eq!(
            text(Var::new(b"RINIT_DRAIN_SECONDS=", u64::MAX)),
            b"RINIT_DRAIN_SECONDS=18446744073709551615"
        );
    }

    /// The loader a dynamically linked program asks for, read from its own
    /// program headers (Debian's coreutils are dynamically linked).
    #[test]
    fn elf_loader_is_named() {
        let env = std::fs::read("/usr/bin/env").expect("/usr/bin/env");
        let interp = elf_interp(&env).expect("a dynamic binary has PT_INTERP");
        assert!(
            interp.starts_with(b"/lib") && interp.windows(3).any(|w| w == b"ld-"),
            "{:?}",
            String::from_utf8_lossy(interp)
        );
        assert_eq!(elf_interp(b"\x7fELF\x01\x01"), None);
        assert_eq!(elf_interp(b"#!/bin/sh"), None);
    }
}
