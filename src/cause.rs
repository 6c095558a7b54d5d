//! Why a process died by SIGKILL: rinit's own kill, the kernel's OOM killer,
//! or someone else.
//!
//! PID 1 reaps every death, so it is the one process that can tell "exit
//! 137" apart. A SIGKILL after rinit's own deadline (or a second Ctrl-C) is
//! rinit's. Otherwise the memory cgroup's count of OOM kills says whether
//! the kernel's OOM killer acted since rinit last looked: cgroup v2's
//! `memory.events`, cgroup v1's `memory.oom_control` (`oom_kill` in both).
//! The count is read once at start, again only when a SIGKILL death is
//! reaped, and once at exit, never on a timer, so an idle rinit still never
//! wakes up. Where no count can be read, or it moved by fewer than the
//! deaths it would explain, the cause is "unknown". The limit of a count:
//! an OOM kill of a process rinit does not reap (a pool process its parent
//! reaps) moves it too, unseen until exit, when the kills no reaped death
//! accounts for are a WARNING and part of the termination message; a later
//! SIGKILL from someone else is then taken for the OOM killer's. Only an
//! event (inotify on v2's `memory.events`) would tell them apart at once;
//! not done (NOTES.md).

use std::ffi::CString;

use tracing::{error, info, warn};

use std::os::fd::OwnedFd;

use crate::procfs::{c_string, ended, find, read_small, Ended, Process};

/// Why a process died by SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// rinit killed it at its deadline.
    Deadline,
    /// rinit killed it on a SIGINT during the drain.
    Interrupt,
    /// The kernel's OOM killer.
    Oom,
    /// Another sender (`docker exec ... kill -9`, a sidecar, a person).
    Other,
    /// No cgroup count to tell the OOM killer from another sender.
    Unknown,
}

impl Cause {
    /// The word in the logs (`cause=oom`).
    pub fn name(self) -> &'static str {
        match self {
            Cause::Deadline => "deadline",
            Cause::Interrupt => "interrupt",
            Cause::Oom => "oom",
            Cause::Other => "other",
            Cause::Unknown => "unknown",
        }
    }
}

/// What rinit learned of the SIGKILL deaths it reaped: why its own SIGKILL
/// went out, why the main child died, what the deadline killed and what it
/// could not. The exit line and the termination message read it.
#[derive(Debug)]
pub struct Deaths {
    /// Why rinit sent its SIGKILL, once it did.
    pub kill_cause: Option<Cause>,
    /// Why the main child died, when it died by SIGKILL.
    pub main_cause: Option<Cause>,
    /// The memory cgroup's limit and peak when the OOM killer took the
    /// main child: read once, for the log line and the message alike.
    pub main_oom_memory: (Option<u64>, Option<u64>),
    /// rinit's memory cgroup: tells the OOM killer's SIGKILL from others'.
    pub memory: Memory,
    /// `comm (pid N)` of what the deadline killed, and could not kill.
    pub killed: Vec<String>,
    pub unkillable: Vec<String>,
    /// Members of the child's group that a forwarded signal reached,
    /// watched through pidfds until they exit (at most `WATCH_MAX`): one
    /// that dies of it may be reaped by its own parent (a runner's pool)
    /// long before rinit looks. From Linux 6.15 the pidfd still tells how
    /// it died; before, its zombie does if rinit looks in time, and failing
    /// that the signals it did not handle when it was watched: a member
    /// that caught the signal and then died of it (Celery's pool) is missed
    /// there.
    watched: Vec<Watched>,
    /// Signals forwarded to the group during the drain, as bits.
    forwarded: u64,
    /// Pids a forwarded signal killed.
    pub forward_kills: Vec<i32>,
    /// SIGKILL deaths rinit reaped that the OOM-kill count accounts for.
    oom_reaped: u64,
    /// At exit: OOM kills in rinit's memory cgroup since start, and those
    /// of them no death rinit reaped accounts for (the command's own
    /// children, or others in the cgroup such as a `docker exec`).
    pub oom_total: u64,
    pub oom_unreaped: u64,
}

impl Deaths {
    /// Nothing died yet; the OOM-kill count is read once, now.
    pub fn start() -> Deaths {
        Deaths {
            kill_cause: None,
            main_cause: None,
            main_oom_memory: (None, None),
            memory: Memory::start(),
            killed: Vec::new(),
            unkillable: Vec::new(),
            watched: Vec::new(),
            forwarded: 0,
            forward_kills: Vec::new(),
            oom_reaped: 0,
            oom_total: 0,
            oom_unreaped: 0,
        }
    }

    /// Watches these members of the child's group: a signal is about to be
    /// forwarded to it. Called before the send, so that a process the
    /// signal kills at once cannot be reaped by its parent unseen.
    pub fn watch(&mut self, members: Vec<Process>) {
        for p in members {
            if self.watched.len() >= WATCH_MAX {
                break;
            }
            if self.watched.iter().any(|w| w.process.pid == p.pid)
                || self.forward_kills.contains(&p.pid)
            {
                continue;
            }
            if let Ok(fd) = p.pidfd() {
                let unhandled = if pidfd_exit_status() {
                    None
                } else {
                    p.unhandled()
                };
                self.watched.push(Watched {
                    process: p,
                    fd,
                    unhandled,
                });
            }
        }
    }

    /// Whether forwarded-to processes are being watched.
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// `signo` went to the group.
    pub fn forwarded(&mut self, signo: i32) {
        self.forwarded |= bit(signo);
    }

    /// Watched members that have exited since: one that died of a signal
    /// rinit forwarded to the group is a WARNING, and counted on the exit
    /// line. The exit status comes from the pidfd (Linux 6.15+) or, before,
    /// from the zombie while its parent has not reaped it yet.
    pub fn settle(&mut self) {
        let forwarded = self.forwarded;
        let kills = &mut self.forward_kills;
        self.watched.retain(|w| {
            let p = &w.process;
            let status = match ended(&w.fd) {
                Ended::Running => return true,
                Ended::Exited(Some(status)) => Some(status),
                Ended::Exited(None) => p.exit_status(),
            };
            if let Some(sig) = died_of(status, w.unhandled, forwarded) {
                warn!(phase = "forward", pid = p.pid, comm = %p.comm, signal = %crate::signals::name(sig),
                      "killed by the forwarded signal (it does not handle it)");
                kills.push(p.pid);
            }
            false
        });
    }

    /// The deadline's SIGKILL of `p` went out (`ok`) or failed. The name is
    /// escaped: the termination message stays one line whatever it holds.
    pub fn note_kill(&mut self, p: &Process, ok: bool) {
        let list = if ok {
            &mut self.killed
        } else {
            &mut self.unkillable
        };
        let mut name = String::new();
        crate::log::escape_into(&mut name, &p.comm);
        list.push(format!("{name} (pid {})", p.pid));
    }

    /// When reaped processes died by SIGKILL: why. rinit's own kill, or
    /// else the cgroup's OOM-kill count, read only now (never on a timer).
    /// A helper killed by the OOM killer while the main child (`child`)
    /// lives on (`main_alive`, before this reap) is a WARNING; the main
    /// child's cause is kept for its `child_exit` and `exit` lines, with an
    /// ERROR and the memory figures when it is the OOM killer's.
    pub fn explain(&mut self, reaped: &crate::reap::Reaped, child: i32, main_alive: bool) {
        let main = reaped.main == Some(crate::reap::Exit::Signal(libc::SIGKILL));
        let helpers = reaped
            .signalled
            .iter()
            .filter(|&&(_, s)| s == libc::SIGKILL)
            .map(|&(pid, _)| pid);
        let deaths = helpers.clone().count() + usize::from(main);
        if deaths == 0 {
            return;
        }
        let before = self.memory.seen;
        let cause = match self.kill_cause {
            Some(c) => {
                // rinit's own kill; the count is kept current all the same,
                // for an OOM kill reaped in the same pass.
                self.memory.look();
                c
            }
            None => self.memory.classify(deaths),
        };
        // The kills these deaths account for, so that the exit look does
        // not count them again: all of them (`oom`), else as many as the
        // count moved, at most one per death.
        self.oom_reaped += match (cause, before, self.memory.seen) {
            (Cause::Oom, _, _) => deaths as u64,
            (_, Some(b), Some(a)) => a.saturating_sub(b).min(deaths as u64),
            _ => 0,
        };
        if main {
            self.main_cause = Some(cause);
            if cause == Cause::Oom {
                self.main_oom_memory = self.memory.limit_and_peak();
                let (limit, peak) = self.main_oom_memory;
                error!(phase = "oom", pid = child, limit = %mib(limit), peak = %mib(peak),
                       "main child killed by the kernel's OOM killer");
            }
        }
        for pid in helpers {
            match cause {
                Cause::Deadline | Cause::Interrupt => {}
                Cause::Oom if main_alive && !main => warn!(
                    phase = "oom",
                    pid, "a process was killed by the kernel's OOM killer; the main child lives on"
                ),
                c => info!(
                    phase = "reaped",
                    pid,
                    cause = c.name(),
                    "a process died by SIGKILL"
                ),
            }
        }
    }

    /// At exit: the OOM kills since start, and those no death rinit reaped
    /// accounts for, a WARNING when there are any. A pool process or a
    /// job's child killed by the OOM killer is reaped by its own parent, so
    /// this look is the only one that sees it (and only at the end: no
    /// timer, no event). Where the count cannot be read, nothing is said.
    pub fn count_oom_at_exit(&mut self) {
        let Some(total) = self.memory.since_start() else {
            return;
        };
        self.oom_total = total;
        self.oom_unreaped = total.saturating_sub(self.oom_reaped);
        if self.oom_unreaped > 0 {
            warn!(phase = "oom", count = self.oom_unreaped,
                  "the kernel's OOM killer killed processes in rinit's memory cgroup that rinit did not reap (the command's own children, whose log may name them, or others in the cgroup such as a docker exec)");
        }
    }
}

/// The forwarded signal a watched member died of, if it did: from its wait
/// status (the pidfd's from Linux 6.15, else its zombie's while its parent
/// has not reaped it), else the first forwarded signal it did not handle
/// when watched. Before 6.15, a member that caught the signal, then died of
/// it and was reaped at once (Celery's pool) gives none of these: missed.
fn died_of(status: Option<i32>, unhandled: Option<u64>, forwarded: u64) -> Option<i32> {
    let signal = match status {
        Some(status) => libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        None => unhandled
            .and_then(|u| (1..=64).find(|&s| forwarded & u & bit(s) != 0 && kills_by_default(s))),
    };
    signal.filter(|&s| forwarded & bit(s) != 0)
}

/// A group member a forwarded signal reached, and how to learn its end.
#[derive(Debug)]
struct Watched {
    process: Process,
    fd: OwnedFd,
    /// The signals it did not handle when watched; read only on kernels
    /// whose pidfds do not keep the exit status.
    unhandled: Option<u64>,
}

/// How many group members are watched at once, at most: each holds a
/// pidfd, and rinit must keep fds for its own work.
const WATCH_MAX: usize = 128;

/// `signo`'s bit in a set of signals (1-64).
fn bit(signo: i32) -> u64 {
    1u64 << ((signo - 1) as u64 % 64)
}

/// Signals whose default action ends the process (terminate, or dump core).
fn kills_by_default(signo: i32) -> bool {
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
    )
}

/// Whether pidfds keep a process's exit status after another parent reaped
/// it (`PIDFD_INFO_EXIT`, Linux 6.15), read once from the kernel's release.
fn pidfd_exit_status() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        // SAFETY: uname writes only `u`.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return false;
        }
        // SAFETY: uname NUL-terminates `release`.
        let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
        let mut n = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|v| v.parse::<u32>().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0)) >= (6, 15)
    })
}

/// Bytes as whole MiB for a log line, or "unknown" where the cgroup does
/// not say.
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "unknown".into(), |b| format!("{}MiB", b >> 20))
}

/// rinit's memory cgroup, where its OOM-kill count and memory figures are.
#[derive(Debug)]
pub struct Memory {
    /// The count's file (`.../memory.events` or `.../memory.oom_control`),
    /// NUL-terminated, and whether it is cgroup v2's.
    counter: Option<(CString, bool)>,
    /// The OOM-kill count at start, and at the last look.
    start: Option<u64>,
    seen: Option<u64>,
}

impl Memory {
    /// Finds the cgroup and reads its count once: later deaths compare
    /// with it. This runs at every start, so it reads with plain syscalls
    /// into the stack and searches with libc's `memmem`: std's file reading,
    /// path building and line splitting cost ~20,000 instructions here
    /// (bench/run, figure 2).
    pub fn start() -> Memory {
        let mut m = Memory {
            counter: find_counter(),
            start: None,
            seen: None,
        };
        m.start = m.read();
        m.seen = m.start;
        m
    }

    /// Keeps the last look current (after deaths rinit caused itself).
    fn look(&mut self) {
        if let Some(now) = self.read() {
            self.seen = Some(now);
        }
    }

    /// The count now, if it can be read.
    fn read(&self) -> Option<u64> {
        let mut text = [0u8; 512];
        self.counter
            .as_ref()
            .and_then(|(file, _)| count(read_small(file, &mut text)?))
    }

    /// OOM kills in the cgroup since rinit started, if both counts read.
    pub fn since_start(&self) -> Option<u64> {
        Some(self.read()?.saturating_sub(self.start?))
    }

    /// After `deaths` SIGKILL deaths that rinit did not cause were reaped:
    /// `Oom` when the count went up by at least as many, `Other` when it
    /// did not move, `Unknown` when it moved by fewer (which of them?) or
    /// cannot be read.
    pub fn classify(&mut self, deaths: usize) -> Cause {
        let now = self.read();
        let cause = match (self.seen, now) {
            (Some(before), Some(after)) if after.saturating_sub(before) >= deaths as u64 => {
                Cause::Oom
            }
            (Some(before), Some(after)) if after == before => Cause::Other,
            _ => Cause::Unknown,
        };
        if now.is_some() {
            self.seen = now;
        }
        cause
    }

    /// The cgroup's memory limit and peak usage in bytes, where it shows
    /// them (v1: `memory.limit_in_bytes`, `memory.max_usage_in_bytes`; v2:
    /// `memory.max`, `memory.peak`, Linux 5.19+). "No limit" is `None`.
    pub fn limit_and_peak(&self) -> (Option<u64>, Option<u64>) {
        let Some((file, v2)) = &self.counter else {
            return (None, None);
        };
        let file = file.to_bytes();
        let dir = &file[..file.iter().rposition(|&b| b == b'/').unwrap_or(0)];
        let read = |name: &str| {
            let path = CString::new([dir, b"/", name.as_bytes()].concat()).ok()?;
            let mut buf = [0u8; 64];
            let text = std::str::from_utf8(read_small(&path, &mut buf)?).ok()?;
            // v1 writes "no limit" as a huge multiple of the page size.
            text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 62)
        };
        if *v2 {
            (read("memory.max"), read("memory.peak"))
        } else {
            (
                read("memory.limit_in_bytes"),
                read("memory.max_usage_in_bytes"),
            )
        }
    }
}

/// The count's file for rinit's memory cgroup, from `/proc/self/cgroup`:
/// the v1 `memory` line if there is one (hybrid hosts keep memory on v1),
/// else the v2 line (`0::`). Inside a container whose cgroup namespace is
/// the host's, that path is the host's and does not exist under the
/// container's `/sys/fs/cgroup`, which is then the container's own cgroup:
/// so the path is tried first, the mount's root second.
fn find_counter() -> Option<(CString, bool)> {
    // 4 KiB: a systemd-driven Kubernetes node's v1 paths run ~190 bytes a line.
    let mut buf = [0u8; 4096];
    let (path, v2) = memory_cgroup(read_small(c"/proc/self/cgroup", &mut buf)?)?;
    let (root, counter): (&[u8], &[u8]) = if v2 {
        (b"/sys/fs/cgroup", b"/memory.events")
    } else {
        (b"/sys/fs/cgroup/memory", b"/memory.oom_control")
    };
    let path = if path == b"/" { &b""[..] } else { path };
    let mut file = [0u8; 1024];
    let found = [path, b""].into_iter().find_map(|p| {
        let file = c_string(&[root, p, counter], &mut file)?;
        // SAFETY: access only reads the NUL-terminated path.
        (unsafe { libc::access(file.as_ptr(), libc::R_OK) } == 0).then(|| (file.to_owned(), v2))
    });
    found
}

/// The memory cgroup's path in the text of `/proc/self/cgroup`, and whether
/// it is cgroup v2's.
fn memory_cgroup(text: &[u8]) -> Option<(&[u8], bool)> {
    Some(
        match find(text, b":memory:").or_else(|| find(text, b",memory:")) {
            Some(at) => (line_from(text, at + 8), false),
            None if text.starts_with(b"0::") => (line_from(text, 3), true),
            None => (line_from(text, find(text, b"\n0::")? + 4), true),
        },
    )
}

/// `text` from `at` to the end of that line.
fn line_from(text: &[u8], at: usize) -> &[u8] {
    let rest = text.get(at..).unwrap_or_default();
    &rest[..find(rest, b"\n").unwrap_or(rest.len())]
}

/// The OOM-kill count in the text of `memory.events` (v2) or
/// `memory.oom_control` (v1, Linux 4.13+): `oom_kill`, one per process the
/// OOM killer killed (a group kill counts each of its processes there too;
/// `oom_group_kill` counts the group kills themselves, so it is not added).
fn count(text: &[u8]) -> Option<u64> {
    // The key starts a line; with its space, "oom_kill " is not
    // "oom_kill_disable".
    const KEY: &[u8] = b"oom_kill ";
    let mut from = 0;
    let at = loop {
        let at = from + find(text.get(from..)?, KEY)?;
        if at == 0 || text[at - 1] == b'\n' {
            break at + KEY.len();
        }
        from = at + 1;
    };
    std::str::from_utf8(line_from(text, at)).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Recorded contents of the two files (cgroup v2's from a 6.1 kernel,
    /// v1's from a 5.10 one).
    #[test]
    fn counts_from_recorded_files() {
        // A group kill of two processes: oom_kill counts both already.
        let v2 = b"low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(count(v2), Some(2));
        assert_eq!(count(b"low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), Some(0));
        let v1 = b"oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        assert_eq!(count(v1), Some(4));
        // v1 before Linux 4.13 has no count: unknown, not zero.
        assert_eq!(count(b"oom_kill_disable 0\nunder_oom 0\n"), None);
        // `oom_kill_disable` must not be read as `oom_kill`.
        assert_eq!(count(b"oom_kill_disable 1\n"), None);
    }

    /// This machine's own memory cgroup is found and its count read: where
    /// the mount shows a count at its root, rinit's own cgroup has one too.
    #[test]
    fn finds_this_process_cgroup() {
        let m = Memory::start();
        let has_count = [
            "/sys/fs/cgroup/memory/memory.oom_control",
            "/sys/fs/cgroup/memory.events",
        ]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("oom_kill ")));
        if has_count {
            assert!(m.counter.is_some(), "no counter found");
        }
        if let Some((file, _)) = &m.counter {
            assert!(
                std::path::Path::new(std::ffi::OsStr::from_bytes(file.to_bytes())).exists(),
                "{file:?}"
            );
            assert!(m.seen.is_some(), "{file:?} has a count");
            assert_eq!(m.since_start(), Some(0), "no OOM kill in this test");
        }
    }

    /// Recorded `/proc/self/cgroup` texts: cgroup v2 (a container and a
    /// systemd host), v1, and a hybrid host that keeps memory on v1.
    #[test]
    fn memory_cgroup_from_recorded_files() {
        assert_eq!(memory_cgroup(b"0::/\n"), Some((&b"/"[..], true)));
        assert_eq!(
            memory_cgroup(b"0::/system.slice/docker-1f2e.scope\n"),
            Some((&b"/system.slice/docker-1f2e.scope"[..], true))
        );
        let v1 = b"12:pids:/docker/ab\n9:memory:/docker/ab\n4:cpu,cpuacct:/docker/ab\n1:name=systemd:/docker/ab\n";
        assert_eq!(memory_cgroup(v1), Some((&b"/docker/ab"[..], false)));
        let joined = b"5:cpuset,memory:/kubepods/pod1/c2\n";
        assert_eq!(
            memory_cgroup(joined),
            Some((&b"/kubepods/pod1/c2"[..], false))
        );
        let hybrid = b"7:memory:/user.slice\n1:name=systemd:/user.slice/s\n0::/user.slice/s\n";
        assert_eq!(memory_cgroup(hybrid), Some((&b"/user.slice"[..], false)));
        let v2_last = b"1:name=systemd:/a\n0::/a/b\n";
        assert_eq!(memory_cgroup(v2_last), Some((&b"/a/b"[..], true)));
        assert_eq!(memory_cgroup(b"1:name=systemd:/a\n"), None);
    }

    /// A cgroup's files, recorded, in a directory of their own.
    fn cgroup_dir(files: &[(&str, &str)]) -> (std::path::PathBuf, CString) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rinit-cgroup-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        let counter = dir.join(files[0].0);
        (
            dir,
            CString::new(counter.as_os_str().as_bytes()).expect("path"),
        )
    }

    /// A cgroup's recorded files (the counter first) read as rinit reads
    /// them: (limit, peak), and the OOM kills since a start count of 0.
    fn recorded(files: &[(&str, &str)], v2: bool) -> ((Option<u64>, Option<u64>), Option<u64>) {
        let (dir, file) = cgroup_dir(files);
        let m = Memory {
            counter: Some((file, v2)),
            start: Some(0),
            seen: Some(0),
        };
        let got = (m.limit_and_peak(), m.since_start());
        std::fs::remove_dir_all(&dir).expect("cleanup");
        got
    }

    /// Limit and peak as each version writes them; "no limit" is none.
    #[test]
    fn limit_and_peak_from_recorded_files() {
        let v2 = [
            ("memory.events", "oom 1\noom_kill 1\n"),
            ("memory.max", "33554432\n"),
            ("memory.peak", "33538048\n"),
        ];
        assert_eq!(
            recorded(&v2, true),
            ((Some(32 << 20), Some(33538048)), Some(1))
        );

        // No limit (v2 "max"), and a kernel before 5.19 without memory.peak.
        let no_limit = [("memory.events", "oom_kill 0\n"), ("memory.max", "max\n")];
        assert_eq!(recorded(&no_limit, true), ((None, None), Some(0)));
        assert_eq!(mib(None), "unknown");

        // v1: "no limit" is a huge multiple of the page size.
        let v1 = [
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.max_usage_in_bytes", "5242880\n"),
        ];
        assert_eq!(recorded(&v1, false), ((None, Some(5 << 20)), Some(0)));
    }

    /// The exit look: kills since start that no reaped death accounts for.
    #[test]
    fn unreaped_oom_kills_are_counted_at_exit() {
        let (dir, file) = cgroup_dir(&[("memory.events", "oom_kill 5\n")]);
        let mut d = Deaths::start();
        d.memory = Memory {
            counter: Some((file, true)),
            start: Some(5),
            seen: Some(5),
        };
        // Two OOM kills; rinit reaped one of them (an orphan).
        std::fs::write(dir.join("memory.events"), "oom_kill 7\n").expect("write");
        let reaped = crate::reap::Reaped {
            orphans: 1,
            signalled: vec![(40, libc::SIGKILL)],
            ..Default::default()
        };
        d.explain(&reaped, 2, true);
        d.count_oom_at_exit();
        assert_eq!(d.oom_unreaped, 1);
        // Two SIGKILL deaths reaped, one OOM kill since: `unknown` which,
        // but that kill is accounted for, not told again at exit.
        std::fs::write(dir.join("memory.events"), "oom_kill 8\n").expect("write");
        let two = crate::reap::Reaped {
            orphans: 2,
            signalled: vec![(41, libc::SIGKILL), (42, libc::SIGKILL)],
            ..Default::default()
        };
        d.explain(&two, 2, true);
        d.count_oom_at_exit();
        assert_eq!(d.oom_unreaped, 1, "still only the one rinit did not reap");
        // Unreadable at exit: nothing is said.
        std::fs::remove_dir_all(&dir).expect("cleanup");
        d.oom_unreaped = 0;
        d.count_oom_at_exit();
        assert_eq!(d.oom_unreaped, 0);
    }

    /// How a watched member's end is read, kernel by kernel.
    #[test]
    fn died_of_the_forwarded_signal() {
        let term = bit(libc::SIGTERM);
        let killed_by = |s: i32| Some(s); // a wait status for death by `s`
                                          // A wait status (Linux 6.15+, or the zombie before its parent reaps).
        assert_eq!(
            died_of(killed_by(libc::SIGTERM), None, term),
            Some(libc::SIGTERM)
        );
        assert_eq!(died_of(Some(0), None, term), None, "exited 0");
        assert_eq!(
            died_of(killed_by(libc::SIGKILL), None, term),
            None,
            "not forwarded"
        );
        // Before 6.15, reaped by its parent: what it did not handle.
        assert_eq!(died_of(None, Some(term), term), Some(libc::SIGTERM));
        assert_eq!(
            died_of(
                None,
                Some(bit(libc::SIGCHLD) | bit(libc::SIGHUP)),
                bit(libc::SIGCHLD)
            ),
            None
        );
        // Caught TERM, died, reaped at once (Celery's pool): missed there.
        assert_eq!(died_of(None, Some(0), term), None);
        assert_eq!(died_of(None, None, term), None);
    }

    /// Each outcome of a look at the count.
    #[test]
    fn classify_compares_with_the_last_look() {
        let dir = std::env::temp_dir().join(format!("rinit-cause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("memory.events");
        let write =
            |n: u64| std::fs::write(&file, format!("oom 0\noom_kill {n}\n")).expect("write");
        write(5);
        let mut m = Memory {
            counter: Some((
                CString::new(file.as_os_str().as_bytes()).expect("path"),
                true,
            )),
            start: Some(5),
            seen: Some(5),
        };
        assert_eq!(m.classify(1), Cause::Other);
        write(6);
        assert_eq!(m.classify(1), Cause::Oom);
        write(7);
        assert_eq!(m.classify(2), Cause::Unknown, "one OOM kill for two deaths");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(m.classify(1), Cause::Unknown, "no file");
        let mut none = Memory {
            counter: None,
            start: None,
            seen: None,
        };
        assert_eq!(none.classify(1), Cause::Unknown);
    }
}
