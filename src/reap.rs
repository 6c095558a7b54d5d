//! Reaping: collecting every exited child, and finding who is still alive.

/// How a process ended, as `waitpid` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// What one pass of `reap_zombies` found.
#[derive(Debug, Default)]
pub struct Reaped {
    /// The main child's end, if it was among those reaped.
    pub main: Option<Exit>,
    /// Orphans and other descendants reaped (not counting the main child).
    pub orphans: usize,
    /// No children left at all: every descendant is gone.
    pub none_left: bool,
    /// The main child was stopped (only looked for with `untraced`).
    pub main_stopped: bool,
}

/// Reaps every exited child without blocking. SIGCHLD coalesces (one
/// wake-up may stand for thousands of exits), so this loops until the
/// kernel says nothing more has exited.
/// With `untraced` (terminal job control) a stop of the main child is
/// reported too.
pub fn reap_zombies(main_pid: i32, untraced: bool) -> Reaped {
    let mut out = Reaped::default();
    let flags = libc::WNOHANG | if untraced { libc::WUNTRACED } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid > 0 && libc::WIFSTOPPED(status) {
            out.main_stopped |= pid == main_pid;
            continue;
        }
        if pid > 0 {
            if pid == main_pid {
                out.main = Some(if libc::WIFSIGNALED(status) {
                    Exit::Signal(libc::WTERMSIG(status))
                } else {
                    Exit::Code(libc::WEXITSTATUS(status))
                });
            } else {
                out.orphans += 1;
            }
            continue;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        out.none_left = pid < 0;
        return out;
    }
}

/// A live process, for the logs of a kill.
#[derive(Clone, Debug)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
}

/// The processes rinit is responsible for, read from /proc: every
/// descendant, or (`whole_namespace`, when rinit is PID 1) every process but
/// rinit. Empty when /proc is missing or belongs to another PID namespace,
/// so a pid read there is never signalled here.
pub fn survivors(whole_namespace: bool) -> Vec<Process> {
    scan(whole_namespace, false)
}

/// `survivors`, plus those already dead but not yet reaped: right after a
/// SIGKILL, the ones it just killed.
pub fn survivors_and_dying(whole_namespace: bool) -> Vec<Process> {
    scan(whole_namespace, true)
}

fn scan(whole_namespace: bool, with_zombies: bool) -> Vec<Process> {
    let me = std::process::id() as i32;
    let proc_self = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
    if proc_self != Some(me) {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, ppid, comm) of every live, non-zombie process.
    let table: Vec<(i32, i32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat(pid, with_zombies))
        .collect();
    if whole_namespace {
        return table
            .into_iter()
            .filter(|&(pid, _, _)| pid != me)
            .map(|(pid, _, comm)| Process { pid, comm })
            .collect();
    }
    let mut ours = vec![me];
    let mut found = Vec::new();
    // Breadth-first over the parent links; the table is small (a container).
    while let Some(parent) = ours.pop() {
        for (pid, ppid, comm) in &table {
            if *ppid == parent {
                ours.push(*pid);
                found.push(Process {
                    pid: *pid,
                    comm: comm.clone(),
                });
            }
        }
    }
    found
}

/// Parses `/proc/PID/stat` into (pid, ppid, comm), skipping zombies unless
/// asked: they are already dead and only wait to be reaped.
fn stat(pid: i32, with_zombies: bool) -> Option<(i32, i32, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    (with_zombies || (state != "Z" && state != "X")).then_some((pid, ppid, comm))
}
