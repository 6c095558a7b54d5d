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

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    /// Dead, waiting to be reaped (`exit_status` says how it died).
    pub zombie: bool,
    /// Its wait status once it has begun to exit (0 before).
    exit_code: i32,
    /// How many threads it has (`stat` field 20).
    threads: i64,
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
    let mut buf = [0u8; 64];
    let native = std::str::from_utf8(link(c"/proc/self", &mut buf)?)
        .ok()?
        .parse()
        == Ok(me);
    if native {
        return Some(View::Native);
    }
    let mut status = [0u8; 4096];
    let ids = nspid(read_small(c"/proc/self/status", &mut status)?)?;
    // Our own pid is the last entry: that is our namespace's level.
    (ids.last() == Some(&me)).then_some(())?;
    Some(View::Foreign {
        level: ids.len() - 1,
        ns: link(c"/proc/self/ns/pid", &mut buf)?.to_vec(),
    })
}

/// The processes in `scope`, rinit excluded; zombies only `with_zombies`
/// (right after a SIGKILL: the ones it just killed). `None` without a /proc
/// that shows rinit's namespace.
pub fn scan(scope: Scope, with_zombies: bool) -> Option<Vec<Process>> {
    let me = std::process::id() as i32;
    let view = view(me)?;
    let mut table: Vec<Process> = numbers_in(c"/proc")?
        .into_iter()
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
    table.retain(|p| p.pid != me && (with_zombies || !p.zombie));
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

/// rinit's descendants, found through each thread's `children` list
/// instead of a read of every process in /proc: on the forwarding path of a
/// stop signal, a container's few processes cost a few reads, not the
/// host's hundreds. `None` where /proc is not rinit's namespace's own or
/// the lists do not exist (a kernel without `CONFIG_PROC_CHILDREN`): `scan`
/// then does it the long way.
pub fn descendants() -> Option<Vec<Process>> {
    let me = std::process::id() as i32;
    if !matches!(view(me)?, View::Native) {
        return None;
    }
    let mut found = Vec::new();
    // Each parent with its thread count: a single-threaded process (rinit
    // itself, most children) has one list, read without listing its task
    // directory. This runs before the first stop signal goes out: every
    // /proc read here is forwarding latency (bench/run, figure 3).
    let mut parents = vec![(me, 1)];
    while let Some((parent, threads)) = parents.pop() {
        let mut dir = [0u8; 64];
        let tids = if threads == 1 {
            vec![parent]
        } else {
            // A process that exits meanwhile has no threads to list.
            match numbers_in(proc_path(parent, "task", &mut dir)?) {
                Some(tids) => tids,
                None => continue,
            }
        };
        let mut parent_digits = [0; 20];
        let parent_text = decimal(parent.unsigned_abs().into(), &mut parent_digits);
        for tid in tids {
            let mut digits = [0; 20];
            let mut path = [0u8; 96];
            let tid_text = decimal(tid.unsigned_abs().into(), &mut digits);
            let list = c_string(
                &[b"/proc/", parent_text, b"/task/", tid_text, b"/children"],
                &mut path,
            )?;
            const LIST: usize = 4096;
            let mut buf = [0u8; LIST];
            let Some(children) = read_small(list, &mut buf) else {
                // rinit's own list exists on any kernel with
                // CONFIG_PROC_CHILDREN: without it, the long way. Any other
                // thread or process may have exited meanwhile.
                if parent == me {
                    return None;
                }
                continue;
            };
            // A full buffer may have cut the last pid short: the long way.
            if children.len() == LIST {
                return None;
            }
            for child in children
                .split(|&b| b == b' ')
                .filter_map(|c| std::str::from_utf8(c).ok()?.parse().ok())
            {
                if let Some(p) = read(child, &View::Native) {
                    parents.push((child, p.threads));
                    found.push(p);
                }
            }
        }
    }
    Some(found)
}

/// The numeric entries of a directory: /proc's pids, a process's thread ids.
fn numbers_in(dir: &CStr) -> Option<Vec<i32>> {
    // SAFETY: opendir/readdir/closedir on a directory stream we own; each
    // entry's name is a NUL-terminated string valid until the next call.
    unsafe {
        let stream = libc::opendir(dir.as_ptr());
        if stream.is_null() {
            return None;
        }
        let mut numbers = Vec::new();
        loop {
            let entry = libc::readdir(stream);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes();
            if let Some(n) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| n.parse::<i32>().ok())
            {
                numbers.push(n);
            }
        }
        libc::closedir(stream);
        Some(numbers)
    }
}

/// One process from `/proc/PID/stat` (and, under a foreign /proc, its
/// namespace and `NSpid`).
fn read(proc_pid: i32, view: &View) -> Option<Process> {
    let pid = match view {
        View::Native => proc_pid,
        View::Foreign { level, ns } => {
            let mut path = [0u8; 64];
            if link(proc_path(proc_pid, "ns/pid", &mut path)?, &mut [0; 64])? != ns.as_slice() {
                return None;
            }
            let mut buf = [0u8; 4096];
            let status = proc_file(proc_pid, "status", &mut buf)?;
            *nspid(status)?.get(*level)?
        }
    };
    let mut buf = [0u8; 1024];
    let mut p = parse_stat(proc_file(proc_pid, "stat", &mut buf)?)?;
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
    // A leader thread that has exited shows Z while its other threads run
    // on: only a process with no thread left is dead (field 20 counts them).
    let threads = num(20).unwrap_or(0);
    let zombie = matches!(f.first(), Some(&"Z") | Some(&"X")) && threads <= 1;
    // Field 52, exit_code: the wait status, set as the process begins to
    // exit (Linux 3.5; shown only to who may ptrace it, else 0).
    let exit_code = num(52).unwrap_or(0) as i32;
    Some(Process {
        pid: 0,
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        start: num(22)? as u64,
        comm,
        zombie,
        exit_code,
        threads,
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
    /// Its wait status if it has begun to exit or is a zombie (`stat`
    /// field 52), read now.
    pub fn exit_status(&self) -> Option<i32> {
        let mut buf = [0u8; 1024];
        let code = parse_stat(proc_file(self.proc_pid, "stat", &mut buf)?)?.exit_code;
        (code != 0).then_some(code)
    }

    /// Whether this pid still names the process the scan saw (same start
    /// time).
    fn still_same(&self) -> bool {
        let mut buf = [0u8; 1024];
        proc_file(self.proc_pid, "stat", &mut buf)
            .and_then(parse_stat)
            .is_some_and(|p| p.start == self.start)
    }

    /// A pidfd for this very process: opened, then checked against the
    /// start time the scan saw, so a pid reused since the scan is refused
    /// (`ESRCH`).
    pub fn pidfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes two integers; the fd is owned at once.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) } as i32;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if self.still_same() {
            Ok(fd)
        } else {
            Err(io::Error::from_raw_os_error(libc::ESRCH))
        }
    }

    /// Sends `signo` to this process and no other. rinit's own children are
    /// signalled by pid: their pids stay theirs until rinit reaps them. Any
    /// other process is signalled through its `pidfd`, so a pid reused
    /// since the scan is never hit. Without pidfds (Linux before 5.3, a
    /// seccomp profile that refuses `pidfd_open` with EPERM, as Docker's
    /// before 20.10 did, or no fd left), by pid after the same check.
    pub fn signal(&self, signo: i32) -> io::Result<()> {
        if self.ppid == std::process::id() as i32 {
            return kill(self.pid, signo);
        }
        let fd = match self.pidfd() {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM | libc::EMFILE | libc::ENFILE)
                ) =>
            {
                return if self.still_same() {
                    kill(self.pid, signo)
                } else {
                    Err(io::Error::from_raw_os_error(libc::ESRCH))
                };
            }
            Err(e) => return Err(e),
        };
        // SAFETY: a pidfd we own, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
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
    }

    /// The signals it neither catches nor ignores now, as bits: those whose
    /// default action will be its fate (`SigCgt`, `SigIgn`).
    pub fn unhandled(&self) -> Option<u64> {
        let mut buf = [0u8; 4096];
        let status = proc_file(self.proc_pid, "status", &mut buf)?;
        let mask = |name: &str| u64::from_str_radix(status_field(status, name)?.trim(), 16).ok();
        Some(!(mask("SigCgt:")? | mask("SigIgn:")?))
    }
}

/// What a pidfd says of its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Still running.
    Running,
    /// Gone, with its wait status where the kernel keeps it for holders of
    /// a pidfd (Linux 6.15+), even after another parent reaped it.
    Exited(Option<i32>),
}

/// The kernel's `struct pidfd_info`, as first published (Linux 6.13): 64
/// bytes, which later kernels still accept.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;

/// `PIDFD_INFO_EXIT`: ask for (and be told of) the exit status.
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// Whether the process behind `fd` has exited, and how.
pub fn ended(fd: &OwnedFd) -> Ended {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll with a zero timeout writes only `pfd`.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 || pfd.revents & libc::POLLIN == 0 {
        return Ended::Running;
    }
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: the ioctl writes at most the 64 bytes of `info`.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info) } == 0;
    Ended::Exited((ok && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code))
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

/// `/proc/PID/NAME` as a C string in `buf`: no formatting machinery on
/// the paths that look at every process.
fn proc_path<'a>(pid: i32, name: &str, buf: &'a mut [u8; 64]) -> Option<&'a CStr> {
    let mut digits = [0; 20];
    let pid = decimal(pid.unsigned_abs().into(), &mut digits);
    c_string(&[b"/proc/", pid, b"/", name.as_bytes()], buf)
}

/// `n` in decimal, in `buf`: no formatting machinery on the paths every
/// start or every process takes.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `parts` one after the other, NUL-terminated, in `buf`; `None` when
/// they do not fit or hold a NUL.
pub fn c_string<'a>(parts: &[&[u8]], buf: &'a mut [u8]) -> Option<&'a CStr> {
    let mut len = 0;
    for part in parts {
        buf.get_mut(len..len + part.len())?.copy_from_slice(part);
        len += part.len();
    }
    *buf.get_mut(len)? = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}

/// `/proc/PID/NAME` read whole into `buf`.
fn proc_file<'a>(pid: i32, name: &str, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    read_small(proc_path(pid, name, &mut [0; 64])?, buf)
}

/// Where a symbolic link points (`/proc/self`, `/proc/PID/ns/pid`).
fn link<'a>(path: &CStr, buf: &'a mut [u8; 64]) -> Option<&'a [u8]> {
    // SAFETY: readlink writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.get(..usize::try_from(n).ok()?)
}

/// Where `needle` first occurs in `hay` (glibc's `memmem`).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // SAFETY: memmem reads within both slices and returns a pointer into
    // `hay` or null.
    let at = unsafe {
        libc::memmem(
            hay.as_ptr().cast(),
            hay.len(),
            needle.as_ptr().cast(),
            needle.len(),
        )
    };
    (!at.is_null()).then(|| at as usize - hay.as_ptr() as usize)
}

/// A small file read whole into `buf` with plain syscalls. A read that
/// returns less than asked is the end: /proc's and cgroupfs' files hand
/// over all they hold in one read (seq_file fills the buffer), so the usual
/// read that returns 0 is saved: these reads are on the path of a stop
/// signal (bench/run, figure 3).
pub fn read_small<'a>(path: &CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: plain syscalls on a buffer we own; the fd is closed here.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buf.len() {
            let want = buf.len() - len;
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), want);
            if n <= 0 {
                break;
            }
            len += n as usize;
            if (n as usize) < want {
                break;
            }
        }
        libc::close(fd);
        Some(&buf[..len])
    }
}

/// Now, in the unit of `Process::start`: clock ticks since boot
/// (`CLOCK_BOOTTIME`, which /proc's start times count in too).
pub fn now_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime and sysconf write nothing of ours but `ts`.
    let hz = unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
        libc::sysconf(libc::_SC_CLK_TCK)
    }
    .max(1) as u64;
    ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
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
        assert_eq!((p.ppid, p.pgid, p.start, p.zombie), (1, 42, 12345, false));
        let z = String::from_utf8_lossy(&stat)
            .replace(") S ", ") Z ")
            .replace(" 29 0\n", " 29 9\n");
        let z = parse_stat(z.as_bytes()).expect("zombie");
        assert_eq!((z.zombie, z.exit_code), (true, 9));
    }

    /// A status file whose name is not UTF-8 still gives its fields.
    /// A name of any bytes (the kernel keeps up to 15, none NUL): the stat
    /// line parses, the fields after the name are right, the name is shown
    /// as `bytes_text` shows it.
    #[test]
    fn stat_parses_any_name() {
        for mut name in crate::log::tests::tricky_bytes(7, 3000, 15) {
            name.retain(|&b| b != 0);
            name.truncate(15);
            let mut stat = b"42 (".to_vec();
            stat.extend_from_slice(&name);
            stat.extend_from_slice(
                b") S 1 40 40 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 987 1 2 3 4 5 6 7 8",
            );
            stat.extend_from_slice(
                b" 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 0\n",
            );
            let p = parse_stat(&stat).unwrap_or_else(|| panic!("{name:?}"));
            assert_eq!(p.comm, bytes_text(&name), "{name:?}");
            assert_eq!(
                (p.ppid, p.pgid, p.start, p.zombie),
                (1, 40, 987, false),
                "{name:?}"
            );
        }
    }

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

    /// A grandchild killed by SIGTERM and reaped by its own parent: the
    /// pidfd still tells how it died (Linux 6.15+; before, that it ended).
    #[test]
    fn a_pidfd_tells_how_someone_elses_child_died() {
        let mut fds = [0; 2];
        // SAFETY: pipe, fork and waitpid; the child only forks, writes and exits.
        let mid = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let mid = libc::fork();
            if mid == 0 {
                let gc = libc::fork();
                if gc == 0 {
                    libc::pause();
                    libc::_exit(0);
                }
                libc::write(fds[1], (&gc as *const i32).cast(), 4);
                libc::waitpid(gc, std::ptr::null_mut(), 0);
                libc::_exit(0);
            }
            mid
        };
        let mut gc = 0i32;
        // SAFETY: reads 4 bytes into `gc`.
        assert_eq!(
            unsafe { libc::read(fds[0], (&mut gc as *mut i32).cast(), 4) },
            4
        );
        let found = scan(Scope::Descendants, false).expect("/proc");
        let p = found
            .iter()
            .find(|p| p.pid == gc)
            .expect("the grandchild is listed");
        let fd = p.pidfd().expect("pidfd");
        assert_eq!(ended(&fd), Ended::Running);
        kill(gc, libc::SIGTERM).expect("kill");
        // SAFETY: reaps the middle process, which reaped the grandchild.
        unsafe { libc::waitpid(mid, std::ptr::null_mut(), 0) };
        match ended(&fd) {
            Ended::Exited(Some(status)) => {
                assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM)
            }
            Ended::Exited(None) => {} // a kernel before 6.15
            Ended::Running => panic!("the grandchild is gone"),
        }
    }
}
