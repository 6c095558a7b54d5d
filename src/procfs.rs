//! Reading /proc: which processes are still alive, what they are called,
//! how they would take a signal.
//!
//! Everything is read as bytes. A process name is whatever bytes the
//! program chose, cut by the kernel at 15 of them (often inside a UTF-8
//! character): a scan that read text would skip such a process, and a
//! deadline that cannot see a process cannot kill it.
//!
//! /proc may belong to another PID namespace than rinit's: `unshare --pid
//! --fork` without `--mount-proc`, or a container that kept its parent's
//! /proc. Its pids then name other processes than rinit's, so each process
//! is placed by its `NSpid` line (its pid in every namespace from /proc's
//! down to its own) and only those in rinit's own namespace are listed,
//! under their pid there. Without any /proc nothing is listed, and the
//! supervisor falls back on what needs none (`kill(-1)` as PID 1).

use std::fs;
use std::io;

use crate::log::bytes_text;

/// A live (or just dead, not yet reaped) process rinit is responsible for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Its pid in rinit's namespace.
    pub pid: i32,
    /// Its parent's pid in rinit's namespace (0 if the parent is outside it).
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// When it started (clock ticks since boot): with the pid, names one
    /// process for good, since a pid can be reused but not both.
    pub start: u64,
    /// Its name, escaped where it is not UTF-8 (`worker-x\xc3`).
    pub comm: String,
    /// Dead, waiting to be reaped: its wait status.
    pub zombie: Option<i32>,
    /// Its pid as /proc names it (differs from `pid` under a foreign /proc).
    proc_pid: i32,
}

/// Which processes a scan lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every process of rinit's namespace but rinit (rinit is PID 1).
    Namespace,
    /// rinit's descendants: its children and theirs, to any depth.
    Descendants,
}

/// How this /proc relates to rinit's PID namespace.
enum View {
    /// /proc is rinit's namespace's own.
    Native,
    /// /proc is an ancestor namespace's: `level` is the index of rinit's
    /// namespace in each `NSpid` line, `ns` its `pid:[inode]` link.
    Foreign { level: usize, ns: Vec<u8> },
}

fn view(me: i32) -> Option<View> {
    let link = fs::read_link("/proc/self").ok()?;
    if link.as_os_str().as_encoded_bytes() == me.to_string().as_bytes() {
        return Some(View::Native);
    }
    let status = fs::read("/proc/self/status").ok()?;
    let ids = nspid(&status)?;
    // Our own pid is the last entry: that is our namespace's level.
    (ids.last() == Some(&me)).then_some(())?;
    let ns = fs::read_link("/proc/self/ns/pid").ok()?;
    Some(View::Foreign {
        level: ids.len() - 1,
        ns: ns.into_os_string().into_encoded_bytes(),
    })
}

/// The processes in `scope`, rinit excluded; zombies only `with_zombies`
/// (right after a SIGKILL: the ones it just killed). `None` without a /proc
/// that shows rinit's namespace.
pub fn scan(scope: Scope, with_zombies: bool) -> Option<Vec<Process>> {
    let me = std::process::id() as i32;
    let view = view(me)?;
    let dir = fs::read_dir("/proc").ok()?;
    let mut table: Vec<Process> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| read(pid, &view))
        .collect();
    if let View::Foreign { .. } = view {
        // Parents were read under /proc's pids: name them by ours.
        let by_proc: Vec<(i32, i32)> = table.iter().map(|p| (p.proc_pid, p.pid)).collect();
        for p in &mut table {
            p.ppid = by_proc
                .iter()
                .find(|&&(host, _)| host == p.ppid)
                .map_or(0, |&(_, ours)| ours);
        }
    }
    table.retain(|p| p.pid != me && (with_zombies || p.zombie.is_none()));
    if scope == Scope::Namespace {
        return Some(table);
    }
    // Breadth-first over the parent links; the table is small (a container).
    let mut ours = vec![me];
    let mut found = Vec::new();
    while let Some(parent) = ours.pop() {
        for p in table.iter().filter(|p| p.ppid == parent) {
            ours.push(p.pid);
            found.push(p.clone());
        }
    }
    Some(found)
}

/// One process from `/proc/PID/stat` (and, under a foreign /proc, its
/// namespace and `NSpid`).
fn read(proc_pid: i32, view: &View) -> Option<Process> {
    let pid = match view {
        View::Native => proc_pid,
        View::Foreign { level, ns } => {
            let link = fs::read_link(format!("/proc/{proc_pid}/ns/pid")).ok()?;
            if link.as_os_str().as_encoded_bytes() != ns.as_slice() {
                return None;
            }
            let status = fs::read(format!("/proc/{proc_pid}/status")).ok()?;
            *nspid(&status)?.get(*level)?
        }
    };
    let stat = fs::read(format!("/proc/{proc_pid}/stat")).ok()?;
    let mut p = parse_stat(&stat)?;
    p.pid = pid;
    p.proc_pid = proc_pid;
    if let View::Foreign { .. } = view {
        // stat's group is /proc's number for it; the syscall gives ours.
        // SAFETY: getpgid has no memory effects.
        p.pgid = unsafe { libc::getpgid(pid) };
    }
    Some(p)
}

/// Parses `/proc/PID/stat`. The name sits between the first '(' and the
/// last ')' and may hold anything, spaces and parentheses included; after
/// it every field is ASCII.
fn parse_stat(stat: &[u8]) -> Option<Process> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = bytes_text(stat.get(open + 1..close)?);
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // Field N of proc(5) is f[N - 3]: state is field 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    let zombie = matches!(f.first(), Some(&"Z") | Some(&"X"));
    Some(Process {
        pid: 0,
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        start: num(22)? as u64,
        comm,
        // Field 52, exit_code: the wait status, for a zombie (Linux 3.5).
        zombie: zombie.then(|| num(52).unwrap_or(0) as i32),
        proc_pid: 0,
    })
}

/// The value of a `/proc/PID/status` line (`NSpid:`, `SigCgt:`), read as
/// bytes: its `Name:` line holds the process name, which need not be UTF-8.
fn status_field<'a>(status: &'a [u8], key: &str) -> Option<&'a str> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(key.as_bytes()))?;
    std::str::from_utf8(line).ok()
}

/// The pids of an `NSpid:` line, from /proc's namespace down to the
/// process's own.
fn nspid(status: &[u8]) -> Option<Vec<i32>> {
    status_field(status, "NSpid:")?
        .split_ascii_whitespace()
        .map(|v| v.parse().ok())
        .collect()
}

impl Process {
    /// Whether `signo`, sent now, ends this process: a signal whose default
    /// action is to terminate, which it neither catches, ignores nor
    /// blocks. A zombie has already ended: by `signo`, or not. `None` when
    /// the process is gone and cannot tell.
    pub fn ended_by(&self, signo: i32) -> Option<bool> {
        if let Some(status) = self.zombie {
            return Some(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == signo);
        }
        if !terminates_by_default(signo) {
            return Some(false);
        }
        let status = fs::read(format!("/proc/{}/status", self.proc_pid)).ok()?;
        let bit = 1u64 << (signo - 1);
        let mask = |name: &str| u64::from_str_radix(status_field(&status, name)?.trim(), 16).ok();
        let handled = mask("SigCgt:")? | mask("SigIgn:")? | mask("SigBlk:")?;
        Some(handled & bit == 0)
    }

    /// Sends `signo` to this process and no other. rinit's own children are
    /// signalled by pid: their pids stay theirs until rinit reaps them. Any
    /// other process is signalled through a pidfd, opened and then checked
    /// against the start time the scan saw, so a pid reused since the scan
    /// is never hit. Where pidfds do not exist (before Linux 5.3), by pid.
    pub fn signal(&self, signo: i32) -> io::Result<()> {
        if self.ppid == std::process::id() as i32 {
            return kill(self.pid, signo);
        }
        // SAFETY: pidfd_open takes two integers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) } as i32;
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOSYS) => kill(self.pid, signo),
                _ => Err(e),
            };
        }
        let same = fs::read(format!("/proc/{}/stat", self.proc_pid))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_some_and(|p| p.start == self.start);
        let r = if !same {
            Err(io::Error::from_raw_os_error(libc::ESRCH))
        } else {
            // SAFETY: a pidfd we own, no siginfo.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    signo,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        r
    }
}

/// `kill(2)`, its failure as an error.
pub fn kill(pid: i32, signo: i32) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(pid, signo) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signals whose default action ends the process (terminate, or core).
fn terminates_by_default(signo: i32) -> bool {
    !matches!(
        signo,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    ) && (1..=64).contains(&signo)
}

/// As PID 1: whether any other process is left in the namespace, zombies
/// of other parents included. `kill(-1, 0)` counts every process PID 1 can
/// see whether or not it may signal it, and needs no /proc.
pub fn others_alive() -> bool {
    // SAFETY: signal 0 only checks.
    unsafe { libc::kill(-1, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that is not UTF-8, with a space and a parenthesis in it, is
    /// read and shown escaped; the fields after it are found.
    #[test]
    fn stat_with_any_name() {
        let mut stat = b"42 (worker-x\xc3\xa9 a)b\xc3) S 1 42 42 0 -1 4194560".to_vec();
        stat.extend_from_slice(
            b" 0 0 0 0 0 0 0 0 20 0 1 0 12345 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        );
        stat.extend_from_slice(b" 17 18 19 20 21 22 23 24 25 26 27 28 29 0\n");
        let p = parse_stat(&stat).expect("parses");
        assert_eq!(p.comm, "worker-x\u{e9} a)b\\xc3");
        assert_eq!((p.ppid, p.pgid, p.start, p.zombie), (1, 42, 12345, None));
        let z = String::from_utf8_lossy(&stat)
            .replace(") S ", ") Z ")
            .replace(" 29 0\n", " 29 9\n");
        assert_eq!(parse_stat(z.as_bytes()).expect("zombie").zombie, Some(9));
    }

    /// A status file whose name is not UTF-8 still gives its fields.
    #[test]
    fn nspid_lines() {
        let status =
            b"Name:\tworker-x\xc3\nNSpid:\t4242\t7\t1\nNSpgid:\t1\nSigCgt:\t0000000000004000\n";
        assert_eq!(nspid(status), Some(vec![4242, 7, 1]));
        assert_eq!(
            status_field(status, "SigCgt:").map(str::trim),
            Some("0000000000004000")
        );
        assert_eq!(nspid(b"Name:\tx\n"), None);
    }

    /// This test process itself: seen, with its name, start time and group.
    #[test]
    fn scan_sees_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let found = scan(Scope::Descendants, false).expect("/proc");
        let p = found.iter().find(|p| p.pid == pid).cloned();
        let _ = child.kill();
        let _ = child.wait();
        let p = p.expect("the child is listed");
        assert_eq!(p.comm, "sleep");
        assert_eq!(p.ppid, std::process::id() as i32);
        assert!(p.start > 0);
    }

    #[test]
    fn default_actions() {
        for s in [
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            40,
        ] {
            assert!(terminates_by_default(s), "{s}");
        }
        for s in [libc::SIGCHLD, libc::SIGCONT, libc::SIGTSTP, libc::SIGWINCH] {
            assert!(!terminates_by_default(s), "{s}");
        }
    }
}
