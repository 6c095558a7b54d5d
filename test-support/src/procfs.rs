//! The process table, read from /proc as `ps` would, and signals sent to it.

use std::fs;

/// CLOCK_MONOTONIC in ns: the clock the probe stamps its records with.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One line of /proc/PID/stat, the parts the tests need.
#[derive(Clone, Debug)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// Start time in clock ticks since boot: tells a pid apart from a reused one.
    pub starttime: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some(Stat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        starttime: rest.get(19)?.parse().ok()?,
    })
}

/// Every process of this (the test's) PID namespace.
pub fn all_processes() -> Vec<Stat> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(stat)
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time `pid` has used so far, all threads, user plus system
/// (/proc/PID/stat fields 14 and 15): how the fault tests tell a waiting
/// process from a hot loop.
pub fn cpu_time(pid: i32) -> Option<std::time::Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // rest[0] is field 3, so utime (14) and stime (15) are rest[11] and rest[12].
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(std::time::Duration::from_millis(ticks * 1000 / hz.max(1)))
}

pub fn children(pid: i32) -> Vec<Stat> {
    all_processes()
        .into_iter()
        .filter(|s| s.ppid == pid)
        .collect()
}

/// Every descendant of `pid`, by parent links, parents first.
pub fn descendants(pid: i32) -> Vec<Stat> {
    let table = all_processes();
    let mut out: Vec<Stat> = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for s in table.iter().filter(|s| s.ppid == p) {
            queue.push(s.pid);
            out.push(s.clone());
        }
    }
    out
}

/// True while `pid` is the process that had `starttime` (and is not a zombie).
pub fn alive(pid: i32, starttime: u64) -> bool {
    stat(pid).is_some_and(|s| s.starttime == starttime && s.state != 'Z' && s.state != 'X')
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}
