//! Signal names, written out here rather than taken from rinit's own table:
//! the tests (and the probe they run) must not take their oracle from the
//! code under test.

/// The probe's name for a signal: `SIGTERM`, or `SIG34` for real-time ones.
/// Each name is tied to libc's constant for it, not to a position in a
/// table, so a table shifted by one in rinit cannot agree with this one.
pub fn sig_name(signo: i32) -> String {
    let name = match signo {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{signo}"),
    };
    name.to_string()
}

/// The number of a signal name (`TERM`, `SIGTERM`, `term`) or number (`15`);
/// `None` for anything else.
pub fn signo(name: &str) -> Option<i32> {
    let n = name.trim().trim_start_matches("SIG").to_ascii_uppercase();
    (1..32)
        .find(|&s| sig_name(s).trim_start_matches("SIG") == n)
        .or_else(|| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(sig_name(15), "SIGTERM");
        assert_eq!(sig_name(20), "SIGTSTP");
        assert_eq!(sig_name(34), "SIG34");
        assert_eq!(signo("term"), Some(15));
        assert_eq!(signo("SIGKILL"), Some(9));
        assert_eq!(signo("40"), Some(40));
        assert_eq!(signo("NOPE"), None);
        assert!((1..32).all(|s| signo(&sig_name(s)) == Some(s)));
    }
}
