//! Running a command to completion with a timeout, capturing its output;
//! and launching an app's command as a buildpack's launcher does.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a finished command printed and returned.
#[derive(Debug)]
pub struct Out {
    /// Exit code; `None` if it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` to completion, capturing both streams; SIGKILLs it and panics
/// if it takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Out {
    try_run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`] for a command that must succeed; a failure panics with the
/// command, its exit code and all it printed.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    let out = run(cmd, timeout);
    assert!(
        out.ok(),
        "{what} failed ({:?}):\n{}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    out
}

/// As [`run`], but a command that cannot be started is an `Err`.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Out, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let pid = child.id() as i32;
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = Vec::new();
        let t = std::thread::spawn(move || {
            let mut stderr = Vec::new();
            let _ = err_pipe.read_to_end(&mut stderr);
            stderr
        });
        let _ = out_pipe.read_to_end(&mut stdout);
        let stderr = t.join().unwrap_or_default();
        let status = child.wait().ok();
        let _ = tx.send((status, stdout, stderr));
    });
    match rx.recv_timeout(timeout) {
        Ok((status, stdout, stderr)) => Ok(Out {
            code: status.and_then(|s| s.code()),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Err(_) => {
            // SAFETY: kill has no memory effects; the pid is our child, not yet
            // reaped (the reader thread reaps it only after the pipes close).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("timed out after {timeout:?}: {what}");
        }
    }
}

/// An app's `command` launched as a buildpack's launcher does it, PID 1 of a
/// new PID namespace: `unshare --pid --fork --mount-proc --kill-child bash
/// -c COMMAND` in `dir`, with `venv_bin` first on PATH and nothing else of
/// the test's environment (no platform detected by accident). The caller
/// adds the app's variables and spawns it.
pub fn launch_as_pid1(command: &str, dir: &Path, venv_bin: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "bash",
        "-c",
    ])
    .arg(command)
    .current_dir(dir)
    .env_clear()
    .env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display()),
    );
    c
}
