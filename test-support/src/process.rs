//! Processes a test starts and owns: killed (SIGKILL) and reaped when their
//! guard is dropped, also when the test panics, so no run leaves one behind.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the caller's server
/// binds it right after, so a collision is unlikely and shows as a start
/// failure).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A TCP server on a free loopback port, for a test's stand-in of a
/// service: one thread hands each connection, in turn, to `serve`. Its port.
pub fn tcp_server(mut serve: impl FnMut(TcpStream) + Send + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = l.local_addr().expect("the listener's address").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            serve(s);
        }
    });
    port
}

/// A TCP server on a free loopback port that accepts every connection and
/// never answers, holding them open: a peer that hangs. Its port.
pub fn black_hole() -> u16 {
    let mut held = Vec::new();
    tcp_server(move |s| held.push(s))
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    /// Starts `cmd` (a server: an emulator, nginx, dnsmasq) with stdin
    /// closed and stdout and stderr both written to `log`.
    pub fn spawn_logged(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let f =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let f2 = f.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child }
    }

    /// Polls `ready` every 50 ms until it holds; panics after `timeout`, or
    /// at once with `log`'s text if the process exits first.
    pub fn wait_ready(&mut self, timeout: Duration, log: &Path, mut ready: impl FnMut() -> bool) {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}): {}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if ready() {
                return;
            }
            assert!(
                Instant::now() < end,
                "{} not ready after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running program whose stderr lines are collected (and echoed to the
/// test's stderr with a prefix, so `--no-capture` shows them). Killed on
/// drop.
pub struct Running {
    pub proc: Proc,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Spawns `cmd` with stdin closed, stdout inherited, stderr collected.
    pub fn spawn(label: &'static str, mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Running {
            proc: Proc { name: label, child },
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a collected line satisfies `pred`.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a PID we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.proc.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for exit; panics after `timeout`. Also drains stderr.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.proc.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {timeout:?}", self.proc.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines that hold a JSON object (a prefix, such as rinit's, is
    /// skipped up to the first `{`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(&l[l.find('{')?..]).ok())
            .collect()
    }

    /// The JSON lines whose `message` is `message`.
    pub fn messages(&self, message: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["message"] == message)
            .collect()
    }
}
