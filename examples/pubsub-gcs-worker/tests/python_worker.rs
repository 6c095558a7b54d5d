//! The seed's Python worker (examples/python-worker, issue 17 item 5) run the
//! way Buildpacks runs it, stopped at random moments while messages flow,
//! beside the unmodified tutorial worker (bench/python_worker.py) as the
//! control. It lives with the reference worker's tests for their emulator
//! harness (test-support's feature `worker`).
//!
//! As Buildpacks would: the app directory laid out as the README says (the
//! wheel `scripts/dist` builds vendored in `wheels/` and named by its path in
//! `requirements.txt`), a fresh venv with `pip install -r requirements.txt`
//! (the Google libraries offline, from the wheelhouse scripts/setup
//! downloads), then the Procfile's command under `bash -c` as PID 1 of a PID
//! namespace, with the venv first on PATH and `CLOUD_RUN_WORKER_POOL` set so
//! that rinit knows Cloud Run's 10 s. The control is the same app with the
//! tutorial's `main.py`.
//!
//! Both run side by side through proxies (storage at 25 ms per chunk, so
//! that stops land on writes in flight), each with its own topic,
//! subscription and bucket; the same text messages are published to both
//! topics for the whole test. Each round starts both, waits until both
//! listen, lets them work for a random time and stops both as Cloud Run
//! does: SIGTERM to PID 1, SIGKILL 10 s later if anything is left. Two rounds
//! are harder: an instance lost without warning (Pub/Sub unreachable for a
//! second, so that written messages go unacked, then SIGKILL), and a SIGTERM
//! while storage hangs (the drain cannot finish: the worker must leave at its
//! budget, before rinit's deadline). A last run of each stores what is left.
//!
//! Asserted: PID 1 is the venv's rinit, with `python main.py` its only child
//! (bash exec'd the command); the fixed worker exits 0 well inside the grace
//! at every SIGTERM and 1 at its 7 s budget when storage hangs, never needing
//! rinit's deadline or the platform's SIGKILL; a clean stop acks every write
//! it finished (the next run meets no message already stored), while the lost
//! instance's written messages come back and meet the create-only
//! precondition (412) instead of making a second object; in the end every
//! published message is one object named by its message ID, byte-exact, and
//! nothing is left on its subscription. The control stores some messages
//! twice (that is the point of the control). The README's recipe lines and
//! the example README's diff are checked against the example's files.
//!
//! The random moments come from a seed printed at the start; set
//! RINIT_PYWORKER_SEED to replay one.

use rinit_test_support::faultproxy::{Fault, FaultProxy};
use rinit_test_support::procfs::{self, descendants};
use rinit_test_support::worker::{while_publishing, GcsKind, TestEnv, TestMessage, PROJECT};
use rinit_test_support::{ci, launch_as_pid1, root_dir, run, run_ok, wait_for, TempDir};
use rinit_test_support::{eventually, Proc, Rng};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// SIGTERM rounds with messages flowing.
const TERM_ROUNDS: usize = 5;
/// The flow, the same to both topics: this many messages before the first
/// round, then [`PER_TICK`] every 100 ms.
const BACKLOG: u64 = 60;
const PER_TICK: u64 = 4;
/// Cloud Run's window from SIGTERM to SIGKILL.
const PLATFORM_KILL: Duration = Duration::from_secs(10);
/// rinit's grace in the example's Procfile, and the drain budget rinit
/// hands the worker under it (the worker's own default is the same).
const GRACE: Duration = Duration::from_secs(8);
const BUDGET: Duration = Duration::from_secs(7);
/// Where scripts/setup puts the worker's pinned requirements as wheels.
const WHEELHOUSE: &str = "target/python-worker-wheels";
/// Building the wheel: seconds when scripts/test built the release binary.
const DIST_TIMEOUT: Duration = Duration::from_secs(900);

/// Message `i` of the flow: UTF-8 text (the tutorial decodes it as such),
/// unique, from a few bytes to 24 KB so that some writes take a while.
fn text_message(i: u64) -> TestMessage {
    let pad = (i * 7919 % 12_000) as usize;
    TestMessage::new(format!("message {i} ✓ {}", "ü".repeat(pad)))
}

/// One app directory as a Buildpacks user has it.
struct App {
    name: &'static str,
    dir: PathBuf,
    sub: String,
    bucket: String,
    topic: String,
}

/// One start of an app: `unshare` (the platform's sandbox) around PID 1.
struct Instance {
    unshare: Proc,
    pid1: i32,
    log: PathBuf,
    started: Instant,
}

/// How one stop went.
#[derive(Debug)]
struct Stopped {
    /// Exit status of PID 1 (`unshare --fork` passes it on); `None` if
    /// killed.
    code: Option<i32>,
    took: Duration,
    /// The platform had to SIGKILL the namespace.
    platform_killed: bool,
}

/// How a round ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Round {
    /// SIGTERM after a random time.
    Term,
    /// Pub/Sub unreachable for a second (writes go on, acks cannot be sent),
    /// then SIGKILL: an instance lost without warning.
    LostInPubsubOutage,
    /// Storage hangs; SIGTERM: the drain cannot finish.
    TermWhileStorageHangs,
}

#[test]
fn python_worker_under_rinit_loses_and_duplicates_nothing_where_the_tutorial_duplicates() {
    let wheelhouse = root_dir().join(WHEELHOUSE);
    if !wheelhouse.join("constraints.txt").is_file() {
        assert!(!ci(), "CI=true and no {WHEELHOUSE}: scripts/setup makes it");
        eprintln!("SKIPPED (not run): no {WHEELHOUSE}; run scripts/setup");
        return;
    }
    let maturin = root_dir().join(".venv/bin/maturin");
    if !maturin.is_file() {
        assert!(
            !ci(),
            "CI=true and no maturin: scripts/setup-dist installs it"
        );
        eprintln!("SKIPPED (not run): no maturin; run scripts/setup-dist");
        return;
    }
    let Some(mut env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    let tmp = TempDir::new("python-worker");
    let example = root_dir().join("examples/python-worker");

    // The recipe, as the README states it and the example has it.
    let requirements = read(&example.join("requirements.txt"));
    let procfile = read(&example.join("Procfile"));
    let readme = buildpacks_section();
    let rinit_line = requirements
        .lines()
        .find(|l| l.starts_with("./wheels/rinit-"))
        .expect("requirements.txt names rinit's vendored wheel");
    assert!(
        readme.lines().any(|l| l == rinit_line),
        "the README's Buildpacks recipe has requirements.txt's line {rinit_line:?}"
    );
    let procfile_line = procfile.trim_end();
    assert!(
        readme.lines().any(|l| l == procfile_line),
        "the README's Buildpacks recipe has the Procfile line {procfile_line:?}"
    );
    let command = procfile_line
        .strip_prefix("web: ")
        .expect("the Procfile's process is `web`");
    // The example's README shows the whole diff against the tutorial.
    let diff = run(
        Command::new("diff")
            .args(["-u", "--label", "bench/python_worker.py"])
            .args(["--label", "examples/python-worker/main.py"])
            .arg(root_dir().join("bench/python_worker.py"))
            .arg(example.join("main.py")),
        Duration::from_secs(30),
    );
    assert_eq!(diff.code, Some(1), "diff: {}", diff.stderr);
    assert!(
        read(&example.join("README.md")).contains(&format!("```diff\n{}```", diff.stdout)),
        "examples/python-worker/README.md shows the current diff; regenerate it with \
         `diff -u --label bench/python_worker.py --label examples/python-worker/main.py \
         bench/python_worker.py examples/python-worker/main.py`:\n{}",
        diff.stdout
    );

    // The wheel, built by scripts/dist, vendored where requirements.txt says.
    let wheel = dist_wheel(&tmp.join("dist"));
    let vendored = rinit_line.trim_start_matches("./");
    assert_eq!(
        Path::new(vendored).file_name(),
        Some(wheel.file_name().expect("wheel name")),
        "requirements.txt names the wheel scripts/dist builds"
    );
    let apps = [
        ("fixed", example.join("main.py")),
        ("control", root_dir().join("bench/python_worker.py")),
    ]
    .map(|(name, main)| {
        let dir = tmp.join(name);
        std::fs::create_dir_all(dir.join("wheels")).expect("mkdir app");
        copy(&main, &dir.join("main.py"));
        copy(
            &example.join("requirements.txt"),
            &dir.join("requirements.txt"),
        );
        copy(&example.join("Procfile"), &dir.join("Procfile"));
        copy(&wheel, &dir.join(vendored));
        App {
            name,
            dir,
            sub: format!("sub-{name}"),
            bucket: format!("bucket-{name}"),
            topic: format!("topic-{name}"),
        }
    });

    // One venv with requirements.txt installed, as the buildpack does it
    // (from the app directory); both apps have the same requirements.
    let venv = tmp.join("venv");
    run_ok(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        Duration::from_secs(120),
    );
    let t0 = Instant::now();
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--disable-pip-version-check", "--no-index"])
        .arg("--find-links")
        .arg(&wheelhouse)
        .args(["--requirement", "requirements.txt"])
        .current_dir(&apps[0].dir);
    // Only the wheelhouse: no PIP_FIND_LINKS or other pip settings of this
    // machine's environment.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PIP_")) {
        pip.env_remove(k);
    }
    let pip = run_ok(&mut pip, Duration::from_secs(300));
    assert!(
        pip.stdout.contains("rinit-0.1.0") && pip.stdout.contains("google-cloud-pubsub-"),
        "pip: {}",
        pip.stdout
    );
    eprintln!(
        "pip install -r requirements.txt: {} ms",
        t0.elapsed().as_millis()
    );
    let rinit = venv.join("bin/rinit");

    for app in &apps {
        env.create_topic_and_subscription(&app.topic, &app.sub, 10);
        env.create_bucket(&app.bucket);
    }
    let slow_storage = FaultProxy::tcp(env.gcs_port);
    slow_storage.set_default(Fault::Delay(Duration::from_millis(25)));
    let storage = format!("http://{}", slow_storage.host());
    let pubsub = FaultProxy::tcp(env.pubsub_port);
    let start = |app: &App, run: usize| -> Instance {
        let log = tmp.join(&format!("{}-{run}.log", app.name));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = launch_as_pid1(command, &app.dir, &venv.join("bin"))
            .env("CLOUD_RUN_WORKER_POOL", "python-worker")
            .env("PROJECT_ID", PROJECT)
            .env("SUBSCRIPTION_ID", &app.sub)
            .env("BUCKET_NAME", &app.bucket)
            .env("PUBSUB_EMULATOR_HOST", pubsub.host())
            .env("STORAGE_EMULATOR_HOST", &storage)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("unshare (util-linux) runs; the test needs root");
        let unshare = Proc {
            name: app.name,
            child,
        };
        let pid1 = pid1_of(&unshare, &rinit);
        Instance {
            unshare,
            pid1,
            log,
            started: Instant::now(),
        }
    };

    let mut rng = Rng::from_env("RINIT_PYWORKER_SEED");
    let mut stops: Vec<(Round, [Stopped; 2])> = Vec::new();
    let topics: Vec<&str> = apps.iter().map(|a| a.topic.as_str()).collect();
    let publish = |publishing: &AtomicBool| publish_flow(&env, &topics, publishing);
    let ((), (ids, msgs)) = while_publishing(publish, || {
        let rounds = std::iter::repeat_n(Round::Term, TERM_ROUNDS)
            .chain([Round::LostInPubsubOutage, Round::TermWhileStorageHangs]);
        for (n, round) in rounds.enumerate() {
            let stored_before = apps.each_ref().map(|a| env.list_objects(&a.bucket).len());
            match round {
                // A backlog builds meanwhile, so that the instances have
                // plenty leased when they are lost.
                Round::LostInPubsubOutage => std::thread::sleep(Duration::from_secs(3)),
                // New connections (each message's new storage client) hold
                // their first bytes for longer than any budget.
                Round::TermWhileStorageHangs => {
                    slow_storage.set_default(Fault::Delay(Duration::from_secs(30)))
                }
                Round::Term => {}
            }
            let running = apps.each_ref().map(|a| start(a, n));
            for (app, i) in apps.iter().zip(&running) {
                let line = wait_listening(i);
                if app.name == "fixed" {
                    assert!(line.contains("(drain budget 7.0 s)"), "{line}");
                }
            }
            let stopped = if round == Round::LostInPubsubOutage {
                // Once both store, Pub/Sub becomes unreachable: writes go
                // on, their acks cannot be sent. Then both are lost without
                // warning, so every message written in that second comes
                // back.
                for (app, before) in apps.iter().zip(stored_before) {
                    wait_for("both workers to store", Duration::from_secs(60), || {
                        (env.list_objects(&app.bucket).len() > before).then_some(())
                    });
                }
                pubsub.refuse(true);
                std::thread::sleep(Duration::from_secs(1));
                let stopped = stop_both(running, libc::SIGKILL);
                pubsub.refuse(false);
                stopped
            } else {
                let work = Duration::from_millis(rng.between(300, 3000));
                std::thread::sleep(work);
                eprintln!("round {n}: stopping after {} ms of work", work.as_millis());
                stop_both(running, libc::SIGTERM)
            };
            eprintln!("round {n} ({round:?}): {stopped:?}");
            if round == Round::TermWhileStorageHangs {
                slow_storage.set_default(Fault::Delay(Duration::from_millis(25)));
            }
            stops.push((round, stopped));
        }
    });
    eprintln!("published {} messages to each topic", ids[0].len());

    // The fixed worker at each stop, by its exit and by rinit's log.
    for (n, (round, [fixed, _])) in stops.iter().enumerate() {
        let what = format!("round {n} ({round:?}): fixed worker {fixed:?}");
        assert!(!fixed.platform_killed, "{what}");
        match round {
            Round::Term => {
                assert_eq!(fixed.code, Some(0), "{what}");
                assert!(fixed.took < GRACE, "{what}");
            }
            Round::TermWhileStorageHangs => {
                // Out at its budget, with the unfinished messages unacked,
                // before rinit's deadline would have killed it.
                assert_eq!(fixed.code, Some(1), "{what}");
                assert!(fixed.took >= BUDGET && fixed.took < GRACE, "{what}");
            }
            Round::LostInPubsubOutage => continue,
        }
        // rinit's own account: one exit line, no escalation, no deadline.
        let log = read(&tmp.join(&format!("fixed-{n}.log")));
        let exit = rinit_phase(&log, "exit");
        assert_eq!(exit.len(), 1, "rinit's exit line, {what}:\n{log}");
        assert_eq!(exit[0]["escalated"], false, "{what}:\n{log}");
        assert!(rinit_phase(&log, "deadline").is_empty(), "{what}:\n{log}");
    }

    // Last runs: everything left is stored, then a clean stop.
    let [fixed, control] = &apps;
    let last = apps.each_ref().map(|a| start(a, stops.len()));
    let want = ids[0].len();
    let all_named = env.has_objects_within(&fixed.bucket, want, Duration::from_secs(120));
    // The control has no name to count by: wait until its bucket holds at
    // least one object per message and stops growing.
    let mut seen = (0, Instant::now());
    let control_settled = eventually(Duration::from_secs(120), || {
        let n = env.list_objects(&control.bucket).len();
        if n != seen.0 {
            seen = (n, Instant::now());
        }
        n >= want && seen.1.elapsed() > Duration::from_secs(3)
    });
    let last_stops = stop_both(last, libc::SIGTERM);
    eprintln!("last runs: {last_stops:?}");

    // The fixed worker: each message once, named by its ID, byte-exact.
    assert!(
        all_named,
        "the fixed worker did not store every message in 120 s"
    );
    assert_eq!(last_stops[0].code, Some(0), "{:?}", last_stops[0]);
    let objects = env.list_objects(&fixed.bucket);
    let names: BTreeSet<String> = objects.iter().map(|o| o.name.clone()).collect();
    let expected: BTreeSet<String> = ids[0]
        .iter()
        .map(|id| format!("message-{id}.txt"))
        .collect();
    let lost = expected.difference(&names).count();
    let extra = names.difference(&expected).count();
    for (id, m) in ids[0].iter().zip(&msgs) {
        let name = format!("message-{id}.txt");
        if names.contains(&name) {
            assert!(
                env.read_object(&fixed.bucket, &name) == m.data,
                "bytes of {name}"
            );
        }
    }
    let left = env.remaining_message_ids(&fixed.sub);
    // Per run of the fixed worker: redeliveries of messages already stored.
    let met_412: Vec<usize> = (0..=stops.len())
        .map(|r| read(&tmp.join(&format!("fixed-{r}.log"))))
        .map(|l| {
            l.lines()
                .filter(|l| l.contains("stored by an earlier delivery"))
                .count()
        })
        .collect();
    let already: usize = met_412.iter().sum();

    // The control: objects matched to messages by content.
    let by_data: HashMap<&[u8], usize> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.data.as_slice(), i))
        .collect();
    let mut copies = vec![0usize; msgs.len()];
    let mut unknown = 0;
    for o in env.list_objects(&control.bucket) {
        match by_data.get(env.read_object(&control.bucket, &o.name).as_slice()) {
            Some(&i) => copies[i] += 1,
            None => unknown += 1,
        }
    }
    // Not stored yet, not lost: a killed client's leases (60 s, the Python
    // client's stream ack deadline) bring them back later.
    let control_unstored = copies.iter().filter(|&&c| c == 0).count();
    let control_dups: usize = copies.iter().map(|&c| c.saturating_sub(1)).sum();
    let kills = |w: usize| stops.iter().filter(|(_, s)| s[w].platform_killed).count();
    eprintln!(
        "{} messages, {} stops; fixed: lost {lost}, duplicates {extra}, redeliveries met by \
         a 412 {already} {met_412:?}, platform kills {}, left on the subscription {}; control \
         (tutorial): duplicates {control_dups}, not stored when it was stopped \
         {control_unstored}, unknown objects {unknown}, platform kills {}, settled \
         {control_settled}",
        want,
        stops.len() + 1,
        kills(0),
        left.len(),
        kills(1),
    );
    assert_eq!((lost, extra), (0, 0), "fixed worker: lost, extra objects");
    assert_eq!(
        left,
        Vec::<String>::new(),
        "fixed worker: subscription drained"
    );
    // A clean stop acks every write it finished: the next run redoes none.
    for (n, (round, _)) in stops.iter().enumerate() {
        if *round == Round::Term {
            assert_eq!(
                met_412[n + 1],
                0,
                "run {} met messages stored in run {n} but not acked by its drain",
                n + 1
            );
        }
    }
    // The instance lost in the outage left written messages unacked: their
    // redeliveries met the create-only precondition, not a second object.
    assert!(
        already > 0,
        "no redelivery met a 412: the lost round exercised nothing"
    );
    assert!(
        control_dups > 0,
        "the tutorial worker stored no message twice over {} stops: the control shows nothing",
        stops.len()
    );
}

/// The flow: [`BACKLOG`] messages, then [`PER_TICK`] every 100 ms, the same
/// to each topic, until `publishing` is cleared. Returns the IDs per topic
/// and the messages.
fn publish_flow(
    env: &TestEnv,
    topics: &[&str],
    publishing: &AtomicBool,
) -> (Vec<Vec<String>>, Vec<TestMessage>) {
    let mut ids = vec![Vec::new(); topics.len()];
    let mut msgs = Vec::new();
    let mut next = 0;
    while publishing.load(Ordering::Relaxed) {
        let n = if next == 0 { BACKLOG } else { PER_TICK };
        let batch: Vec<TestMessage> = (next..next + n).map(text_message).collect();
        next += n;
        for (t, topic) in topics.iter().enumerate() {
            ids[t].extend(env.publish(topic, &batch));
        }
        msgs.extend(batch);
        std::thread::sleep(Duration::from_millis(100));
    }
    (ids, msgs)
}

/// PID 1 of the namespace once bash has exec'd the Procfile command: the
/// venv's rinit, seen from here as unshare's only child.
fn pid1_of(unshare: &Proc, rinit: &Path) -> i32 {
    let pid = unshare.child.id() as i32;
    wait_for(
        "bash to exec rinit as PID 1",
        Duration::from_secs(10),
        || {
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            let pid1: i32 = children.split_whitespace().next()?.parse().ok()?;
            (std::fs::read_link(format!("/proc/{pid1}/exe")).ok()? == rinit).then_some(pid1)
        },
    )
}

/// Waits for the worker's "Listening" line; then checks that the namespace
/// holds rinit and its one child, `python main.py`: nothing else (no bash)
/// between the platform and rinit.
fn wait_listening(i: &Instance) -> String {
    let line = wait_for("the worker to listen", Duration::from_secs(60), || {
        read(&i.log)
            .lines()
            .find(|l| l.starts_with("Listening for messages"))
            .map(str::to_string)
    });
    let rest: Vec<(String, Vec<String>)> = descendants(i.pid1)
        .iter()
        .map(|s| (s.comm.clone(), cmdline(s.pid)))
        .collect();
    assert_eq!(
        rest,
        [(
            "python".to_string(),
            vec!["python".to_string(), "main.py".to_string()]
        )],
        "PID 1 (rinit)'s descendants; log:\n{}",
        read(&i.log)
    );
    assert!(
        procfs::stat(i.pid1).is_some_and(|s| s.comm == "rinit"),
        "PID 1 is rinit"
    );
    line
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Stops both instances at once as the platform does: `sig` to each PID 1,
/// then SIGKILL to whatever is left [`PLATFORM_KILL`] later.
fn stop_both(mut running: [Instance; 2], sig: i32) -> [Stopped; 2] {
    let at = Instant::now();
    for i in &running {
        // SAFETY: kill has no memory effects. A PID 1 already gone (ESRCH)
        // shows in the exit status below.
        unsafe { libc::kill(i.pid1, sig) };
    }
    // Both watched in one loop, so that each exit is timed when it happens.
    let mut done: [Option<Stopped>; 2] = [None, None];
    let mut platform_killed = false;
    while done.iter().any(Option::is_none) {
        for (i, d) in running.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                if let Some(st) = i.unshare.child.try_wait().expect("try_wait") {
                    *d = Some(Stopped {
                        code: st.code(),
                        took: at.elapsed(),
                        platform_killed,
                    });
                }
            }
        }
        if !platform_killed && at.elapsed() >= PLATFORM_KILL {
            platform_killed = true;
            for (i, d) in running.iter().zip(&done) {
                if d.is_none() {
                    // SAFETY: as above.
                    unsafe { libc::kill(i.pid1, libc::SIGKILL) };
                }
            }
        }
        assert!(
            at.elapsed() < PLATFORM_KILL * 2,
            "a namespace outlived the platform's SIGKILL; started {:?} ago",
            running[0].started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    done.map(|d| d.expect("every instance stopped"))
}

/// rinit's JSON log lines (Cloud Run's format) of one phase.
fn rinit_phase(log: &str, phase: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["phase"] == phase)
        .collect()
}

/// `scripts/dist --out DIR wheel` (reusing the release build when scripts/test
/// made it); returns the wheel's path.
fn dist_wheel(out: &Path) -> PathBuf {
    run_ok(
        Command::new(root_dir().join("scripts/dist"))
            .arg("--out")
            .arg(out)
            .arg("wheel")
            // Others may be editing the tree; what is tested is the wheel.
            .env("RINIT_DIST_ALLOW_DIRTY", "1"),
        DIST_TIMEOUT,
    );
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("read dist dir")
        .map(|e| e.expect("dist entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel from scripts/dist: {wheels:?}");
    wheels[0].clone()
}

/// The README's "Python on Buildpacks" section.
fn buildpacks_section() -> String {
    let text = read(&root_dir().join("README.md"));
    let start = text
        .find("### Python on Buildpacks")
        .expect("README.md has a 'Python on Buildpacks' section");
    let rest = &text[start..];
    let end = rest[3..].find("\n#").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}
