//! Signal names, written out here rather than taken from rinit's own table:
//! the tests (and the probe they run) must not take their oracle from the
//! code under test.

/// The probe's name for a signal: `SIGTERM`, or `SIG34` for real-time ones.
pub fn sig_name(signo: i32) -> String {
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
    NAMES
        .get(signo as usize)
        .map_or_else(|| format!("SIG{signo}"), |n| n.to_string())
}

/// The number of a signal name (`TERM`, `SIGTERM`, `term`) or number (`15`);
/// `None` for anything else.
pub fn signo(name: &str) -> Option<i32> {
    let n = name.trim().trim_start_matches("SIG").to_ascii_uppercase();
    (1..32)
        .find(|&s| sig_name(s).trim_start_matches("SIG") == n)
        .or_else(|| n.parse().ok())
}
