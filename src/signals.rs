//! Signal plumbing: names, the blocked-signal wait, and forwarding.
//!
//! rinit installs no handlers. Every catchable signal is blocked at start-up
//! and collected synchronously with `sigtimedwait`, so the main loop sleeps
//! in one syscall with no periodic wake-up, and forwarding a signal costs one
//! `sigtimedwait` return plus one `kill`.

use std::time::Duration;

/// A signal as received: its number and, when a process sent it, who.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Signal number.
    pub signo: i32,
    /// Sender's pid for `kill`/`sigqueue`-style signals, `None` for the kernel's.
    pub sender: Option<i32>,
}

/// Names of the classic signals, indexed by number (0 is unused).
const NAMES: [&str; 32] = [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Lowest real-time signal userspace may use (glibc keeps two for itself).
pub fn rtmin() -> i32 {
    libc::SIGRTMIN()
}

/// Highest real-time signal.
pub fn rtmax() -> i32 {
    libc::SIGRTMAX()
}

/// The signal's conventional name, e.g. `SIGTERM` or `SIGRTMIN+3`.
pub fn name(signo: i32) -> String {
    match usize::try_from(signo) {
        Ok(n @ 1..=31) => NAMES[n].to_string(),
        _ if signo == rtmin() => "SIGRTMIN".to_string(),
        _ if signo > rtmin() && signo <= rtmax() => format!("SIGRTMIN+{}", signo - rtmin()),
        _ => signo.to_string(),
    }
}

/// Parses `TERM`, `SIGTERM`, `sigterm`, `15`, `RTMIN+2` into a signal number.
/// `0` is accepted only when `allow_zero` (rewrite targets, meaning "drop").
pub fn parse(text: &str, allow_zero: bool) -> Result<i32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (n == 0 && allow_zero) || (1..=rtmax()).contains(&n) {
            Ok(n)
        } else {
            Err(format!("'{t}' is not a signal number"))
        };
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(pos) = NAMES
        .iter()
        .position(|n| n.get(3..) == Some(bare) && !bare.is_empty())
    {
        return Ok(pos as i32);
    }
    let rt = |rest: &str, base: i32, sign: i32| -> Option<i32> {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix(['+', '-'])?.parse::<i32>().ok()?
        };
        // Checked: an offset near i32::MAX would overflow (found by fuzzing).
        let n = base.checked_add(sign.checked_mul(off)?)?;
        (rtmin()..=rtmax()).contains(&n).then_some(n)
    };
    let parsed = match bare {
        "IOT" => Some(libc::SIGABRT),
        "POLL" => Some(libc::SIGIO),
        b if b.starts_with("RTMIN") => {
            let rest = &b[5..];
            rt(rest, rtmin(), if rest.starts_with('-') { -1 } else { 1 })
        }
        b if b.starts_with("RTMAX") => {
            let rest = &b[5..];
            rt(rest, rtmax(), if rest.starts_with('+') { 1 } else { -1 })
        }
        _ => None,
    };
    parsed.ok_or_else(|| format!("'{t}' is not a signal name"))
}

/// True for signals a process can catch (everything but KILL and STOP).
pub fn catchable(signo: i32) -> bool {
    signo != libc::SIGKILL && signo != libc::SIGSTOP
}

/// Every signal rinit waits for: all catchable classic and real-time signals.
pub fn wait_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in (1..=31).chain(rtmin()..=rtmax()).filter(|&s| catchable(s)) {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks every catchable signal and resets dispositions to default, so
/// signals queue for `wait` instead of running handlers, and so a disposition
/// inherited from whoever started rinit (an ignored SIGCHLD would make the
/// kernel auto-reap and hide exit codes) cannot leak into rinit or the child.
pub fn configure_signals() -> libc::sigset_t {
    let set = wait_set();
    // SAFETY: plain syscalls on a valid set; no handlers are installed.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        reset_dispositions();
    }
    set
}

/// Sets every ignored signal's disposition back to SIG_DFL. The child
/// inherits the result: an ignored disposition survives exec (an ignored
/// SIGCHLD would even make the kernel auto-reap and hide exit codes), a
/// default one is what any program expects to start with. Handlers cannot
/// be inherited across exec, so ignored signals are all there is to undo.
///
/// The kernel's `SigIgn` mask says which they are in one read; resetting
/// all 62 blindly cost ~40 µs of every start (bench/run, figure 2).
///
/// # Safety
/// Must not race a handler installation; rinit installs none.
unsafe fn reset_dispositions() {
    // Plain syscalls into the stack and one `memmem`: this is start-up
    // (std's read_to_string and str::find cost ~5,000 instructions here).
    let mut buf = [0u8; 4096];
    let ignored = crate::procfs::read_small(c"/proc/self/status", &mut buf).and_then(|status| {
        let at = crate::procfs::find(status, b"\nSigIgn:")? + "\nSigIgn:".len();
        let hex = std::str::from_utf8(status.get(at..)?.trim_ascii_start().get(..16)?).ok()?;
        u64::from_str_radix(hex, 16).ok()
    });
    for s in (1..=31).chain(rtmin()..=rtmax()).filter(|&s| catchable(s)) {
        // Without /proc, reset them all.
        if ignored.is_none_or(|mask| mask & (1 << (s - 1)) != 0) {
            libc::signal(s, libc::SIG_DFL);
        }
    }
}

/// Resets glibc's reserved signals (32 and 33, below `SIGRTMIN`) to SIG_DFL
/// with the raw syscall. glibc refuses to touch them, but an ignored
/// disposition inherited from whoever started rinit survives exec, and the
/// child (not necessarily a glibc program) would start with it.
///
/// # Safety
/// Only between fork and exec: rinit's own glibc may rely on these signals.
pub unsafe fn reset_reserved() {
    /// The kernel's `struct sigaction` (x86_64 and aarch64 layout).
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for s in 32..rtmin() {
        libc::syscall(
            libc::SYS_rt_sigaction,
            s,
            &default as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>(),
        );
    }
}

/// Sleeps until a signal in `set` arrives or `timeout` passes (`None`: no
/// timeout). Returns `None` on timeout or an interrupted wait.
pub fn wait(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<Received> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: siginfo_t is plain data; the kernel fills it on success.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let signo = unsafe { libc::sigtimedwait(set, &mut info, tsp) };
    if signo <= 0 {
        return None;
    }
    // Only user-sent signals (kill, sigqueue, tgkill) carry a meaningful pid.
    let from_user = info.si_code <= 0;
    // SAFETY: si_pid is valid for the SI_USER/SI_QUEUE/SI_TKILL codes checked above.
    let pid = unsafe { info.si_pid() };
    Some(Received {
        signo,
        sender: (from_user && pid > 0).then_some(pid),
    })
}

/// Where forwarded signals go.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The child's whole process group (the default, so a shell's children
    /// get the signal too).
    Group(i32),
    /// The child alone (`--single-child`, `DUMB_INIT_SETSID=0`).
    Child(i32),
}

impl Target {
    /// Sends `signo` to the target; a target that is already gone is not an error.
    pub fn send(self, signo: i32) {
        let pid = match self {
            Target::Group(pgid) => -pgid,
            Target::Child(pid) => pid,
        };
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid, signo) };
    }

    /// Human form for logs: `group 42` or `pid 42`.
    pub fn describe(self) -> String {
        match self {
            Target::Group(p) => format!("group {p}"),
            Target::Child(p) => format!("pid {p}"),
        }
    }
}

/// `--rewrite FROM:TO` table: TO of 0 drops the signal.
#[derive(Clone, Debug, Default)]
pub struct Rewrites(Vec<(i32, i32)>);

impl Rewrites {
    /// Parses one `FROM:TO` pair and adds it (later pairs win).
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (from, to) = spec
            .split_once(':')
            .ok_or_else(|| format!("--rewrite '{spec}' must be FROM:TO, e.g. TERM:QUIT"))?;
        let from = parse(from, false).map_err(|e| format!("--rewrite '{spec}': {e}"))?;
        let to = parse(to, true).map_err(|e| format!("--rewrite '{spec}': {e}"))?;
        if !catchable(from) || from == libc::SIGCHLD {
            return Err(format!(
                "--rewrite '{spec}': {} never reaches rinit",
                name(from)
            ));
        }
        self.0.retain(|&(f, _)| f != from);
        self.0.push((from, to));
        Ok(())
    }

    /// The signal to forward for `signo`: rewritten, unchanged, or 0 = drop.
    pub fn apply(&self, signo: i32) -> i32 {
        self.0
            .iter()
            .find(|&&(f, _)| f == signo)
            .map_or(signo, |&(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in (1..=31).chain(rtmin()..=rtmax()) {
            assert_eq!(parse(&name(s), false), Ok(s), "{}", name(s));
        }
        assert_eq!(parse("term", false), Ok(15));
        assert_eq!(parse("RTMAX-1", false), Ok(rtmax() - 1));
        assert!(parse("0", false).is_err());
        assert_eq!(parse("0", true), Ok(0));
        assert!(parse("SIGFOO", false).is_err());
        assert!(parse("SIG", false).is_err());
        assert!(parse("99", false).is_err());
    }

    /// Real-time offsets that overflow an i32 are refused, not wrapped.
    #[test]
    fn huge_realtime_offsets() {
        for t in [
            "RTMIN+2147483647",
            "RTMAX--2147483648",
            "SIGRTMIN+-2147483648",
        ] {
            let e = parse(t, false).unwrap_err();
            assert!(e.contains("not a signal name"), "{t}: {e}");
        }
    }

    #[test]
    fn rewrites() {
        let mut r = Rewrites::default();
        r.add("TERM:QUIT").unwrap();
        r.add("USR1:0").unwrap();
        assert_eq!(r.apply(15), 3);
        assert_eq!(r.apply(10), 0);
        assert_eq!(r.apply(2), 2);
        assert!(r.add("KILL:TERM").is_err());
        assert!(r.add("TERM").is_err());
    }
}
