//! The worker on a real orchestrator (issue 19, part 1): three replicas of
//! the Dockerfile.example image as a Docker Swarm service, deployed from
//! deploy/swarm/stack.yml itself (plus an override with the emulators'
//! addresses and the host network, which reaches them on loopback), while a
//! publisher keeps a steady flow and storage holds each chunk 250 ms, so
//! that stops land on writes in flight. Swarm then:
//!
//! 1. rolls the stack to a new image tag (the file's `update_config`:
//!    parallelism 1, `start-first`);
//! 2. forces an update (`docker service update --force`, `stop-first`);
//! 3. scales 3 → 1 → 3;
//! 4. removes the stack.
//!
//! Every container that stopped must show, from Docker's events, SIGTERM
//! only (never the SIGKILL Swarm sends at `stop_grace_period`) and exit 0;
//! from Swarm's task states, no task failed; from its logs, rinit started
//! with the file's grace and window (known) and exited 0 unescalated,
//! having killed nothing, the worker took rinit's drain budget as its own
//! limit, and its summary is consistent. Each update's order is checked
//! from the events (start-first: the new task started before the old
//! one's SIGTERM; stop-first: after it exited).
//! At the end every published message is stored exactly once and each
//! object was created once over all replicas.
//!
//! RINIT_SWARM_ROUNDS repeats steps 1-3 (bench/swarm-deploy);
//! RINIT_SWARM_REPORT receives the table.

use rinit_test_support::docker::{docker, docker_ok, engine};
use rinit_test_support::faultproxy::{Fault, FaultProxy};
use rinit_test_support::swarm::{update, Event, Stack, Swarm, TaskPoll, Watch};
use rinit_test_support::worker::{
    assert_summary_consistent, n, summary, worker_image, Flow, TestEnv, PROJECT,
};
use rinit_test_support::{
    assert_clean_exit, root_dir, text_field, text_phase, wait_every, TempDir,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

const STACK: &str = "rinit-swarm";
const REPLICAS: usize = 3;
/// Writers per replica.
const CONCURRENCY: u32 = 4;
/// How long storage holds each chunk: three replicas write at most 48
/// messages a second, the flow is 40, so they are busy most of the time and
/// most stops land on writes in flight (at 150 ms, about a third did, and a
/// run could see none).
const STORAGE_DELAY: Duration = Duration::from_millis(250);
/// The flow: 4 messages every 100 ms (40 a second).
const FLOW: Flow = Flow {
    backlog: 0,
    per_tick: 4,
    tick: Duration::from_millis(100),
};
/// Time between two steps, so that the flow fills the replicas again.
const SETTLE: Duration = Duration::from_secs(3);
const TOPIC: &str = "topic-swarm";
const SUB: &str = "sub-swarm";
const BUCKET: &str = "bucket-swarm";
/// The stack file's numbers, as rinit prints them on its start line.
const GRACE: &str = "25s";
const WINDOW: &str = "30s";
/// The worker's drain limit: the budget rinit hands down (RINIT_DRAIN_MS,
/// the grace less its 1 s margin), the stack file setting none.
const WORKER_DRAIN_MS: u64 = 24_000;
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// How many times steps 1-3 run: RINIT_SWARM_ROUNDS, else 1.
fn rounds() -> usize {
    std::env::var("RINIT_SWARM_ROUNDS").ok().map_or(1, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("RINIT_SWARM_ROUNDS={v:?} is not a number"))
    })
}

/// Now on the engine's clock (the same machine's), in ns.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// The stack file's variables, as a user sets them.
fn vars(tag: &str) -> [(&str, &str); 4] {
    [
        ("WORKER_IMAGE", tag),
        ("PROJECT_ID", PROJECT),
        ("SUBSCRIPTION_ID", SUB),
        ("BUCKET_NAME", BUCKET),
    ]
}

/// Two tags of the worker image (a rolling update changes the tag),
/// untagged on drop.
struct Tags(Vec<String>);

impl Tags {
    fn new(image: &str, names: &[&str]) -> Tags {
        let tags: Vec<String> = names
            .iter()
            .map(|n| format!("rinit-test/swarm-worker:{n}"))
            .collect();
        for t in &tags {
            docker_ok(&["tag", image, t]);
        }
        Tags(tags)
    }
}

impl Drop for Tags {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = docker(&["rmi", t]);
        }
    }
}

/// A step of the deploy and the engine-time window it ran in.
struct Step {
    name: String,
    from: u128,
    to: u128,
    /// How many tasks it must stop.
    stops: usize,
}

/// A container of the stack, from its events and logs.
struct Replica {
    id: String,
    slot: u64,
    image: String,
    started: u128,
    /// The first SIGTERM's time.
    termed: Option<u128>,
    died: Option<u128>,
    signals: Vec<String>,
    exit_code: Option<String>,
}

/// The stack's containers from the events so far, in start order.
fn replicas(events: &[Event]) -> Vec<Replica> {
    let mut out: Vec<Replica> = Vec::new();
    for e in events {
        if e.action == "start" {
            out.push(Replica {
                id: e.container.clone(),
                slot: e.slot(),
                image: e.attr("image").unwrap_or_default().to_string(),
                started: e.time_ns,
                termed: None,
                died: None,
                signals: Vec::new(),
                exit_code: None,
            });
            continue;
        }
        let Some(r) = out.iter_mut().find(|r| r.id == e.container) else {
            continue;
        };
        match e.action.as_str() {
            "kill" => {
                let sig = e.attr("signal").unwrap_or_default().to_string();
                if sig == "15" && r.termed.is_none() {
                    r.termed = Some(e.time_ns);
                }
                r.signals.push(sig);
            }
            "die" => {
                r.died = Some(e.time_ns);
                r.exit_code = e.attr("exitCode").map(str::to_string);
            }
            _ => {}
        }
    }
    out
}

/// Waits until exactly `want` containers run, each satisfying `ok` and each
/// with its worker started (its log says so), and none is stopping.
fn wait_live(watch: &Watch, what: &str, want: usize, ok: impl Fn(&Replica) -> bool) {
    wait_every(what, STEP_TIMEOUT, Duration::from_millis(250), || {
        let all = replicas(&watch.events());
        let live: Vec<&Replica> = all.iter().filter(|r| r.died.is_none()).collect();
        let ready = live.len() == want
            && live.iter().all(|r| {
                ok(r)
                    && r.termed.is_none()
                    && watch.logs(&r.id).contains("\"message\":\"worker started\"")
            });
        ready.then_some(())
    });
}

/// The most containers running at once between `from` and `to`.
fn most_running(all: &[Replica], from: u128, to: u128) -> usize {
    let running_at = |t: u128| {
        all.iter()
            .filter(|r| r.started <= t && r.died.is_none_or(|d| d > t))
            .count()
    };
    // The count only rises at a start.
    all.iter()
        .map(|r| r.started)
        .filter(|t| (from..=to).contains(t))
        .chain([from])
        .map(running_at)
        .max()
        .unwrap_or(0)
}

/// The median and max of `v` (not empty).
fn median_max(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() - 1])
}

/// One stopped container's checked figures.
struct Stopped {
    step: usize,
    rinit_drain_ms: u64,
    kill_to_die_ms: u64,
    summary: Value,
}

/// Everything a clean stop shows, for one container; returns its figures.
fn check_stop(watch: &Watch, r: &Replica, step: usize) -> Stopped {
    let what = format!("container {} (slot {}, {})", &r.id[..12], r.slot, r.image);
    let logs = watch.final_logs(&r.id, Duration::from_secs(30));
    assert_eq!(
        r.signals,
        ["15"],
        "{what}: the engine sent SIGTERM only, never Swarm's SIGKILL:\n{logs}"
    );
    assert_eq!(
        r.exit_code.as_deref(),
        Some("0"),
        "{what}: exit code:\n{logs}"
    );
    let start = text_phase(&logs, "start");
    assert!(
        start.len() == 1
            && text_field(start[0], "grace").as_deref() == Some(GRACE)
            && text_field(start[0], "kill_after").as_deref() == Some(WINDOW)
            && text_field(start[0], "window").as_deref() == Some("known")
            && text_field(start[0], "platform").as_deref() == Some("docker")
            && text_field(start[0], "mode").as_deref() == Some("pid1"),
        "{what}: rinit's start line must carry the stack file's grace and window:\n{logs}"
    );
    assert_clean_exit(&logs, &what);
    let exit = text_phase(&logs, "exit");
    assert_eq!(
        text_field(exit[0], "killed_by_forward").as_deref(),
        Some("0"),
        "{what}: the SIGTERM killed a process that does not handle it:\n{logs}"
    );
    let rinit_drain_ms = text_field(exit[0], "drain_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no drain_ms on {}", exit[0]));
    let started: Value = logs
        .lines()
        .find(|l| l.contains("\"message\":\"worker started\""))
        .and_then(|l| serde_json::from_str(&l[l.find('{')?..]).ok())
        .unwrap_or_else(|| panic!("{what}: no \"worker started\" line:\n{logs}"));
    assert!(
        started["drain_timeout_ms"] == WORKER_DRAIN_MS
            && started["drain_timeout_from"] == "RINIT_DRAIN_MS",
        "{what}: the worker's drain limit must be rinit's budget: {started}"
    );
    let s = summary(&logs);
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "exit_code"), 0, "{what}: {s}");
    let (termed, died) = (r.termed.expect("termed"), r.died.expect("died"));
    Stopped {
        step,
        rinit_drain_ms,
        kill_to_die_ms: ((died - termed) / 1_000_000) as u64,
        summary: s,
    }
}

#[test]
fn swarm_rolls_scales_and_removes_the_worker_without_losing_a_message() {
    if !engine("swarm_rolls_scales_and_removes_the_worker_without_losing_a_message") {
        return;
    }
    let Some(env) = TestEnv::start_with(TOPIC, SUB, BUCKET) else {
        return;
    };
    let t_run = Instant::now();
    let image = worker_image();
    let tags = Tags::new(&image, &["v1", "v2"]);
    let slow = FaultProxy::tcp(env.gcs_port);
    slow.set_default(Fault::Delay(STORAGE_DELAY));

    // The emulators' addresses and the host network, over the user's file.
    let dir = TempDir::new("swarm");
    dir.write(
        "override.yml",
        &format!(
            "version: \"3.8\"\n\
             services:\n  worker:\n    environment:\n\
             \x20     PUBSUB_EMULATOR_HOST: \"{}\"\n\
             \x20     STORAGE_EMULATOR_HOST: \"http://{}\"\n\
             \x20     CONCURRENCY: \"{CONCURRENCY}\"\n\
             \x20     MAX_OUTSTANDING_MESSAGES: \"{}\"\n\
             \x20     LEASE_EXTENSION: 10s\n\
             \x20   labels:\n      rinit-test: \"1\"\n\
             \x20   networks: [hostnet]\n\
             \x20   deploy:\n      labels:\n        rinit-test: \"1\"\n\
             networks:\n  hostnet:\n    external: true\n    name: host\n",
            env.pubsub_host(),
            slow.host(),
            CONCURRENCY * 10,
        ),
    );
    let stack_file = root_dir().join("deploy/swarm/stack.yml");
    let override_file = dir.join("override.yml");
    let files = [stack_file.as_path(), override_file.as_path()];

    let _swarm = Swarm::init();
    let watch = Watch::start(STACK);
    let stack = Stack::deploy(STACK, &files, &vars(&tags.0[0]));
    let service = stack.service("worker");
    let tasks = TaskPoll::start(&service);
    wait_live(&watch, "three replicas started", REPLICAS, |r| {
        r.image == tags.0[0]
    });

    // What Swarm made of the file.
    let spec: Value = serde_json::from_str(
        docker_ok(&["service", "inspect", "--format", "{{json .Spec}}", &service]).trim(),
    )
    .expect("service spec is JSON");
    let container = &spec["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container["StopGracePeriod"], 30_000_000_000u64, "{spec}");
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], REPLICAS, "{spec}");
    assert_eq!(spec["UpdateConfig"]["Parallelism"], 1, "{spec}");
    assert_eq!(spec["UpdateConfig"]["Order"], "start-first", "{spec}");

    let mut steps: Vec<Step> = Vec::new();
    let ((), ids, msgs) = env.while_publishing(TOPIC, FLOW, || {
        let mut step = |name: String, stops: usize, act: &dyn Fn(u128)| {
            std::thread::sleep(SETTLE);
            let from = now_ns();
            act(from);
            steps.push(Step {
                name,
                from,
                to: now_ns(),
                stops,
            });
        };
        for round in 0..rounds() {
            // A new tag: v2 on even rounds, back to v1 on odd ones.
            let tag = tags.0[(round + 1) % 2].as_str();
            step(
                "rolling update to a new tag (start-first)".into(),
                REPLICAS,
                &|from| {
                    update(&service, STEP_TIMEOUT, || {
                        stack.redeploy(&files, &vars(tag))
                    });
                    wait_live(&watch, "the new tag on every replica", REPLICAS, |r| {
                        r.image == tag && r.started > from
                    });
                },
            );
            step(
                "docker service update --force (stop-first)".into(),
                REPLICAS,
                &|from| {
                    update(&service, STEP_TIMEOUT, || {
                        docker_ok(&[
                            "service",
                            "update",
                            "--force",
                            "--update-order",
                            "stop-first",
                            "--no-resolve-image",
                            "--detach",
                            &service,
                        ]);
                    });
                    wait_live(&watch, "three new replicas", REPLICAS, |r| r.started > from);
                },
            );
            step("scale 3 -> 1".into(), REPLICAS - 1, &|_| {
                docker_ok(&["service", "scale", "--detach", &format!("{service}=1")]);
                wait_live(&watch, "one replica", 1, |_| true);
            });
            step("scale 1 -> 3".into(), 0, &|_| {
                docker_ok(&[
                    "service",
                    "scale",
                    "--detach",
                    &format!("{service}={REPLICAS}"),
                ]);
                wait_live(&watch, "three replicas", REPLICAS, |_| true);
            });
        }
    });
    eprintln!(
        "{} messages published over {} steps",
        ids.len(),
        steps.len()
    );

    // The last replicas store the rest, then the stack goes.
    env.wait_objects(BUCKET, ids.len(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let tasks_seen = tasks.tasks(&service);
    let from = now_ns();
    stack.remove();
    wait_every(
        "every container of the stack stopped",
        STEP_TIMEOUT,
        Duration::from_millis(250),
        || {
            replicas(&watch.events())
                .iter()
                .all(|r| r.died.is_some())
                .then_some(())
        },
    );
    steps.push(Step {
        name: "docker stack rm".into(),
        from,
        to: now_ns(),
        stops: REPLICAS,
    });
    drop(tasks);

    // Every container: stopped cleanly, in one step, as that step orders.
    let all = replicas(&watch.events());
    let mut stopped: Vec<Stopped> = Vec::new();
    for r in &all {
        let died = r.died.expect("every container died");
        let step = steps
            .iter()
            .position(|s| (s.from..=s.to).contains(&died))
            .unwrap_or_else(|| panic!("container {} stopped outside any step", r.id));
        let s = check_stop(&watch, r, step);
        eprintln!(
            "{:<44} slot {} {}: SIGTERM to exit {:4} ms, rinit drain_ms={:<4} worker drain_ms={:<4} \
             in_flight_at_stop={} nacked_unstarted={} stored={}",
            steps[step].name,
            r.slot,
            &r.image[r.image.len() - 2..],
            s.kill_to_die_ms,
            s.rinit_drain_ms,
            n(&s.summary, "drain_ms"),
            n(&s.summary, "in_flight_at_stop"),
            n(&s.summary, "nacked_unstarted"),
            n(&s.summary, "stored"),
        );
        stopped.push(s);
    }
    for (i, s) in steps.iter().enumerate() {
        let count = stopped.iter().filter(|x| x.step == i).count();
        assert_eq!(count, s.stops, "{}: tasks stopped", s.name);
        let old: Vec<&Replica> = all
            .iter()
            .filter(|r| r.died.is_some_and(|d| (s.from..=s.to).contains(&d)))
            .collect();
        let new: Vec<&Replica> = all
            .iter()
            .filter(|r| (s.from..=s.to).contains(&r.started))
            .collect();
        for o in &old {
            let Some(n) = new.iter().find(|n| n.slot == o.slot) else {
                continue;
            };
            let (termed, died) = (o.termed.expect("termed"), o.died.expect("died"));
            if s.name.contains("start-first") {
                assert!(
                    n.started < termed,
                    "{}: slot {}'s new task started after the old one's SIGTERM",
                    s.name,
                    o.slot
                );
            } else if s.name.contains("stop-first") {
                assert!(
                    n.started > died,
                    "{}: slot {}'s new task started before the old one exited",
                    s.name,
                    o.slot
                );
            }
        }
    }
    let started = rounds() * (2 * REPLICAS + REPLICAS - 1) + REPLICAS;
    assert_eq!(all.len(), started, "containers started over the run");

    // Swarm's own word on each task it still showed.
    for (id, t) in &tasks_seen {
        assert!(
            !["failed", "rejected", "orphaned"].contains(&t.state.as_str()),
            "task {id} (slot {}) ended {}: {}",
            t.slot,
            t.state,
            t.error
        );
    }
    let ended: Vec<_> = tasks_seen
        .values()
        .filter(|t| ["shutdown", "complete"].contains(&t.state.as_str()))
        .collect();
    for t in &ended {
        assert_eq!(t.exit_code, Some(0), "a task Swarm shows ended: {t:?}");
    }

    // Every message, exactly once.
    let (lost, extra) = env.lost_and_extra(BUCKET, &ids);
    let created: u64 = stopped.iter().map(|s| n(&s.summary, "created")).sum();
    let twice = created.saturating_sub(ids.len() as u64);
    eprintln!("lost {lost}, extra objects {extra}, objects written twice {twice}");
    env.assert_stored_exactly_once(BUCKET, SUB, &ids, &msgs);
    assert_eq!(created, ids.len() as u64, "each object created once");
    let busy = stopped
        .iter()
        .filter(|s| n(&s.summary, "in_flight_at_stop") + n(&s.summary, "nacked_unstarted") > 0)
        .count();
    assert!(
        busy > 0,
        "no stop landed on work in flight: no drain was tested"
    );

    let mut table = String::from(
        "| step | step took, s (median) | most running at once | stops | with writes in flight | rinit drain_ms median / max | SIGTERM to exit, ms median / max |\n\
         |---|---|---|---|---|---|---|\n",
    );
    // One row per kind of step (the rounds of the bench add up).
    let mut names: Vec<&str> = Vec::new();
    for s in &steps {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    for name in names {
        let mine: Vec<&Stopped> = stopped
            .iter()
            .filter(|x| steps[x.step].name == name)
            .collect();
        let (took, _) = median_max(
            steps
                .iter()
                .filter(|s| s.name == name)
                .map(|s| ((s.to - s.from) / 1_000_000) as u64)
                .collect(),
        );
        let took = took as f64 / 1000.0;
        let most = steps
            .iter()
            .filter(|s| s.name == name)
            .map(|s| most_running(&all, s.from, s.to))
            .max()
            .unwrap_or(0);
        if mine.is_empty() {
            table += &format!("| {name} | {took:.1} | {most} | 0 | | | |\n");
            continue;
        }
        let writing = mine
            .iter()
            .filter(|x| n(&x.summary, "in_flight_at_stop") > 0)
            .count();
        let (dm, dx) = median_max(mine.iter().map(|x| x.rinit_drain_ms).collect());
        let (km, kx) = median_max(mine.iter().map(|x| x.kill_to_die_ms).collect());
        table += &format!(
            "| {name} | {took:.1} | {most} | {} | {writing} | {dm} / {dx} | {km} / {kx} |\n",
            mine.len()
        );
    }
    let ids_unique: BTreeSet<&String> = ids.iter().collect();
    table += &format!(
        "\nrounds {}, run {:.0} s, containers {}, stops {}, messages {} (unique {}), lost {lost}, \
         duplicates {extra} extra / {twice} written twice, SIGKILLs 0, non-zero exits 0, \
         tasks Swarm showed ended {} (all exit 0, none failed)\n",
        rounds(),
        t_run.elapsed().as_secs_f64(),
        all.len(),
        stopped.len(),
        ids.len(),
        ids_unique.len(),
        ended.len(),
    );
    eprintln!("{table}");
    if let Ok(path) = std::env::var("RINIT_SWARM_REPORT") {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
