//! Docker Swarm for the end-to-end tests (the reference worker's
//! tests/swarm.rs): a single-node swarm on the engine every Docker test
//! shares, a stack deployed from Compose files, and what the engine says
//! about the stack's containers (events, logs) and Swarm about its tasks.
//!
//! The swarm is made on loopback (`--advertise-addr 127.0.0.1`) and left
//! (`docker swarm leave --force`) when its guard drops, also when the test
//! fails. A run killed before that leaves the engine in a swarm: the node
//! carries the label `rinit-test=1`, and the next [`Swarm::init`] leaves it
//! before making its own. A swarm without that label is someone else's and
//! is never touched. One swarm test at a time, across test processes: the
//! guard holds an exclusive lock while it lives.
//!
//! Images are never resolved against a registry (`--resolve-image never`,
//! `--no-resolve-image`): these machines reach none.

use crate::docker::{docker, docker_ok, events_since};
use crate::fs::lock_file;
use crate::{run_ok, TempDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The node label that marks a swarm made by these tests.
const LABEL: &str = "rinit-test";
/// The bridge Swarm creates for its containers' outside traffic (and does
/// not remove when the node leaves).
const GWBRIDGE: &str = "docker_gwbridge";

/// A single-node swarm, left on drop.
pub struct Swarm {
    /// Holds the swarm lock (`flock`) for the guard's life.
    _lock: File,
    /// Whether `docker_gwbridge` is ours to remove (it was not there before).
    made_gwbridge: bool,
}

/// The engine's swarm state (`inactive`, `active`, `pending`, `error`, `locked`).
fn swarm_state() -> String {
    docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .trim()
        .to_string()
}

fn gwbridge_exists() -> bool {
    docker(&["network", "inspect", "--format", "{{.Name}}", GWBRIDGE]).ok()
}

/// Leaves the swarm and removes its gateway bridge when `gwbridge` says it
/// is ours and no container uses it.
fn leave(gwbridge: bool) {
    let out = docker(&["swarm", "leave", "--force"]);
    if !out.ok() {
        eprintln!("docker swarm leave --force: {}", out.stderr.trim());
    }
    if gwbridge {
        let _ = docker(&["network", "rm", GWBRIDGE]);
    }
}

impl Swarm {
    /// Takes the swarm lock, leaves a swarm a killed run left behind, and
    /// makes a new one on loopback. Panics if the engine is in a swarm these
    /// tests did not make.
    pub fn init() -> Swarm {
        // Another swarm test ends within its own timeouts.
        let lock = lock_file("rinit-swarm.lock", Duration::from_secs(900));
        let state = swarm_state();
        if state != "inactive" {
            let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
            let ours = docker(&[
                "node",
                "inspect",
                "--format",
                &format!("{{{{index .Spec.Labels \"{LABEL}\"}}}}"),
                node.stdout.trim(),
            ]);
            assert!(
                state == "active" && ours.stdout.trim() == "1",
                "the Docker engine is in a swarm ({state}) these tests did not make (no node \
                 label {LABEL}=1): refusing to leave it; run the swarm test on another engine"
            );
            eprintln!("leaving a swarm ({state}) left behind by an earlier test run");
            leave(true);
        }
        let made_gwbridge = !gwbridge_exists();
        docker_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2377",
            // Keeps every replaced task (and its container) inspectable.
            "--task-history-limit",
            "50",
        ]);
        let swarm = Swarm {
            _lock: lock,
            made_gwbridge,
        };
        let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        docker_ok(&[
            "node",
            "update",
            "--label-add",
            &format!("{LABEL}=1"),
            node.trim(),
        ]);
        swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        leave(self.made_gwbridge);
    }
}

/// A stack deployed from Compose files, removed on drop.
pub struct Stack {
    pub name: String,
}

impl Stack {
    /// `docker stack deploy -c FILE... NAME` with `vars` in the environment
    /// (for the files' `${VAR}`s). Deploying again with other `vars` is an
    /// update (a new image tag rolls the service).
    pub fn deploy(name: &str, files: &[&Path], vars: &[(&str, &str)]) -> Stack {
        let stack = Stack {
            name: name.to_string(),
        };
        stack.redeploy(files, vars);
        stack
    }

    /// Deploys the same stack again (see [`Stack::deploy`]).
    pub fn redeploy(&self, files: &[&Path], vars: &[(&str, &str)]) {
        let mut cmd = Command::new("docker");
        cmd.args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "--detach=true",
        ]);
        for f in files {
            cmd.arg("-c").arg(f);
        }
        cmd.arg(&self.name).envs(vars.iter().copied());
        run_ok(&mut cmd, crate::docker::CMD_TIMEOUT);
    }

    /// The full name of one of the stack's services.
    pub fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.name)
    }

    /// `docker stack rm`: every task gets its stop (SIGTERM, then SIGKILL
    /// after the service's stop_grace_period).
    pub fn remove(&self) {
        docker_ok(&["stack", "rm", &self.name]);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.name]);
    }
}

/// A service's `UpdateStatus` (`null` before its first update).
fn update_status(service: &str) -> Value {
    let text = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .UpdateStatus}}",
        service,
    ]);
    serde_json::from_str(text.trim()).expect("UpdateStatus is JSON")
}

/// Runs `request` (which asks Swarm to update `service`: a redeploy, a
/// `docker service update`) and waits until that update has completed;
/// panics if Swarm paused it or rolled it back.
pub fn update(service: &str, timeout: Duration, request: impl FnOnce()) {
    let before = update_status(service)["StartedAt"]
        .as_str()
        .unwrap_or("")
        .to_string();
    request();
    let t0 = Instant::now();
    loop {
        let s = update_status(service);
        let started = s["StartedAt"].as_str().unwrap_or("");
        let state = s["State"].as_str().unwrap_or("");
        // Swarm clears the status (null) between an update's request and
        // its start.
        if started != before {
            match state {
                "completed" => return,
                "updating" | "" => {}
                _ => panic!("{service}: the update ended {state}: {s}"),
            }
        }
        assert!(
            t0.elapsed() < timeout,
            "{service}: update not completed after {timeout:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One container event of the stack (`docker events`).
#[derive(Clone, Debug)]
pub struct Event {
    /// `create`, `start`, `kill`, `die`, `stop`, `destroy`...
    pub action: String,
    pub container: String,
    /// Unix time in nanoseconds, the engine's clock.
    pub time_ns: u128,
    /// The event's attributes: the container's labels, `image`, `name`,
    /// and `signal` (kill) or `exitCode` (die).
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attributes.get(k).map(String::as_str)
    }

    /// The task's slot, from the Swarm label `com.docker.swarm.task.name`
    /// (`STACK_SERVICE.SLOT.TASKID`).
    pub fn slot(&self) -> u64 {
        let name = self.attr("com.docker.swarm.task.name").unwrap_or("");
        name.rsplit('.')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no slot in task name {name:?}"))
    }
}

/// What the engine says about a stack's containers while the test runs:
/// every container event (`docker events`), and every container's logs,
/// followed from its start (`docker logs -f`), so that a container Swarm
/// removes soon after it stops (a scaled-down task's) keeps its logs here.
pub struct Watch {
    events_proc: Child,
    events: Arc<Mutex<Vec<Event>>>,
    followers: Arc<Mutex<BTreeMap<String, Child>>>,
    reader: Option<JoinHandle<()>>,
    dir: Arc<TempDir>,
}

impl Watch {
    /// Starts watching the containers of stack `stack`.
    pub fn start(stack: &str) -> Watch {
        // From a second ago: `docker events` subscribes asynchronously, and
        // `--since` replays what came before it did, so a deploy right after
        // this call is seen whole.
        let since = events_since();
        let mut events_proc = Command::new("docker")
            .args(["events", "--since", &since.to_string()])
            .args(["--filter", "type=container", "--filter"])
            .arg(format!("label=com.docker.stack.namespace={stack}"))
            .args(["--format", "{{json .}}"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        let stdout = events_proc.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let followers = Arc::new(Mutex::new(BTreeMap::new()));
        let dir = Arc::new(TempDir::new("swarm-logs"));
        let reader = {
            let (events, followers, dir) = (events.clone(), followers.clone(), dir.clone());
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some(e) = parse_event(&line) else {
                        continue;
                    };
                    if e.action == "start" {
                        let child = follow_logs(&e.container, &dir.join(&e.container));
                        followers
                            .lock()
                            .expect("followers")
                            .insert(e.container.clone(), child);
                    }
                    if let Ok(mut v) = events.lock() {
                        v.push(e);
                    }
                }
            })
        };
        Watch {
            events_proc,
            events,
            followers,
            reader: Some(reader),
            dir,
        }
    }

    /// Every event so far, in the order the engine sent them.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// A container's logs (stdout and stderr) so far.
    pub fn logs(&self, container: &str) -> String {
        self.dir.read(container)
    }

    /// A stopped container's whole logs: waits for its follower to end.
    pub fn final_logs(&self, container: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let done = self
                .followers
                .lock()
                .ok()
                .and_then(|mut f| f.get_mut(container).map(|c| c.try_wait()))
                .is_some_and(|r| matches!(r, Ok(Some(_))));
            if done {
                return self.logs(container);
            }
            assert!(
                t0.elapsed() < timeout,
                "docker logs -f {container} still running {timeout:?} after the container died"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.events_proc.kill();
        let _ = self.events_proc.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Ok(mut f) = self.followers.lock() {
            for c in f.values_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn parse_event(line: &str) -> Option<Event> {
    let v: Value = serde_json::from_str(line).ok()?;
    let attributes = v["Actor"]["Attributes"]
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Some(Event {
        action: v["Action"].as_str()?.to_string(),
        container: v["Actor"]["ID"].as_str()?.to_string(),
        time_ns: v["timeNano"].as_u64()? as u128,
        attributes,
    })
}

/// `docker logs -f CONTAINER` into `path` (both streams), until the
/// container stops.
fn follow_logs(container: &str, path: &Path) -> Child {
    let out = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let err = out.try_clone().expect("clone log file");
    Command::new("docker")
        .args(["logs", "-f", container])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("docker logs -f")
}

/// One task as Swarm last showed it.
#[derive(Clone, Debug)]
pub struct Task {
    pub slot: u64,
    pub image: String,
    /// `Status.State`: `running`, `shutdown`, `complete`, `failed`...
    pub state: String,
    pub desired: String,
    pub exit_code: Option<i64>,
    pub error: String,
}

/// Swarm's view of a service's tasks, polled every second while it lives:
/// the last state seen of every task, including those Swarm deletes soon
/// after they stop (a scaled-down slot's), if a poll saw them.
pub struct TaskPoll {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, Task>>>,
    thread: Option<JoinHandle<()>>,
}

impl TaskPoll {
    pub fn start(service: &str) -> TaskPoll {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = {
            let (stop, seen, service) = (stop.clone(), seen.clone(), service.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (id, t) in poll_tasks(&service) {
                        if let Ok(mut s) = seen.lock() {
                            s.insert(id, t);
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        TaskPoll {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Polls once more, then returns every task seen, by ID.
    pub fn tasks(&self, service: &str) -> BTreeMap<String, Task> {
        let mut all = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        all.extend(poll_tasks(service));
        all
    }
}

impl Drop for TaskPoll {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The service's tasks now (`docker service ps`, then `docker inspect` of
/// each; a task deleted in between is left out).
fn poll_tasks(service: &str) -> Vec<(String, Task)> {
    let ids = docker(&["service", "ps", "-q", "--no-trunc", service]);
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "task", "--format", "{{json .}}"];
    args.extend(&ids);
    let out = docker(&args);
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let task = Task {
                slot: v["Slot"].as_u64().unwrap_or(0),
                image: v["Spec"]["ContainerSpec"]["Image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                state: v["Status"]["State"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                desired: v["DesiredState"].as_str().unwrap_or_default().to_string(),
                exit_code: v["Status"]["ContainerStatus"]["ExitCode"].as_i64(),
                error: v["Status"]["Err"].as_str().unwrap_or_default().to_string(),
            };
            (v["ID"].as_str().unwrap_or_default().to_string(), task)
        })
        .collect()
}
