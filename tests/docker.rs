//! rinit inside real containers, stopped and signalled by the Docker engine.
//!
//! Each test builds (once per run, see test-support/src/docker.rs) an image
//! `FROM scratch` holding the static rinit, the static probe
//! (tests/support/probe.rs) and a static busybox, and runs containers with
//! `--network host`. The probe plays the worker: it records the signals it
//! gets and the start (`--ready`) and end (`--done`) of its "job" in a
//! bind-mounted directory, so what happened inside is read from outside.
//!
//! Scenarios (issue 5):
//! 1. `docker stop` of a child that drains in 1 s: exit 0 in about 1 s.
//! 2. A child that ignores SIGTERM: rinit kills it at its grace, well before
//!    Docker's SIGKILL, and says so in `docker logs`.
//! 3. The shell-form ENTRYPOINT pitfall next to the same job under rinit.
//! 5. `docker kill -s` reaches the child with tini's exit codes; orphans of
//!    `docker exec` processes are reaped.
//!
//! Scenario 4 (the reference worker, stopped at random moments with messages
//! flowing) is examples/pubsub-gcs-worker/tests/docker.rs.
//!
//! Setup: scripts/setup-docker.sh installs busybox-static; the images are
//! built by the tests. Without a Docker engine they skip with one line,
//! except under CI=true, where that is a failure.

use rinit_test_support::docker as docker_support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use docker_support::{
    assert_static, build, build_text, engine, probe_beside, static_base, wait_ready, Compose,
    Container, State,
};
use rinit_test_support::{assert_clean_exit, root_dir, text_phase, wait_for, TempDir};

const RINIT: &str = env!("CARGO_BIN_EXE_rinit");
const BUSYBOX: &str = "/bin/busybox";
const SETUP: &str = "run scripts/setup-docker.sh (installs Debian's busybox-static)";

/// `rinit-test/probe:<hash>`: FROM scratch with /rinit, /probe, and busybox
/// as /bin/busybox and /bin/sh (for the shell-form case and `docker exec`).
fn probe_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let probe = probe_beside(Path::new(RINIT));
        assert_static(
            Path::new(RINIT),
            "rinit must be built static (.cargo/config.toml)",
        );
        assert_static(
            &probe,
            "the probe must be built static (.cargo/config.toml)",
        );
        assert_static(Path::new(BUSYBOX), SETUP);
        let ctx = TempDir::new("probe-image");
        ctx.copy_in(Path::new(RINIT), "rinit")
            .copy_in(&probe, "probe")
            .copy_in(Path::new(BUSYBOX), "busybox");
        build_text(
            "rinit-test/probe",
            "FROM scratch\n\
             COPY rinit /rinit\n\
             COPY probe /probe\n\
             COPY busybox /bin/busybox\n\
             COPY busybox /bin/sh\n",
            &ctx,
        )
    })
}

/// `-v DIR:/data`.
fn mount(dir: &TempDir) -> String {
    format!("{}:/data", dir.path().display())
}

/// `docker run` with a fresh data directory mounted at /data, then `args`
/// (further options, the image, the command).
fn run_with_data(label: &str, args: &[&str]) -> (Container, TempDir) {
    let data = TempDir::new(label);
    let mut full = vec!["-v".to_string(), mount(&data)];
    full.extend(args.iter().map(|a| a.to_string()));
    (Container::run(label, &full), data)
}

/// `/rinit OPTS -- /probe --ready /data/ready ARGS`: the probe under rinit,
/// telling in the data directory when it is ready (see `wait_ready`).
fn probe_under_rinit<'a>(opts: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut cmd = vec!["/rinit"];
    cmd.extend_from_slice(opts);
    cmd.extend(["--", "/probe", "--ready", "/data/ready"]);
    cmd.extend_from_slice(args);
    cmd
}

/// `docker run` (`docker_opts` first) of the probe image with a fresh data
/// directory: `probe_under_rinit(opts, args)`, once the probe is ready.
fn run_probe(
    label: &str,
    docker_opts: &[&str],
    opts: &[&str],
    args: &[&str],
) -> (Container, TempDir) {
    let mut full = docker_opts.to_vec();
    full.push(probe_image());
    full.extend(probe_under_rinit(opts, args));
    let (c, data) = run_with_data(label, &full);
    wait_ready(&data, "ready");
    (c, data)
}

/// What a `docker stop` took, and what the container left behind.
struct Stopped {
    took: Duration,
    state: State,
    logs: String,
}

/// `docker stop -t secs`, then the state and logs (printed, so a failing
/// test shows what rinit said).
fn stop_and_read(c: &Container, secs: u32) -> Stopped {
    let took = c.stop(secs);
    let state = c.state();
    let logs = c.logs();
    eprintln!(
        "{}: docker stop -t {secs} took {:.3} s, exit {}; docker logs:\n{logs}",
        c.name,
        took.as_secs_f64(),
        state.exit_code
    );
    Stopped { took, state, logs }
}

/// Asserts the phases appear in this order in rinit's log.
fn assert_phases_in_order(logs: &str, phases: &[&str]) {
    let mut from = 0;
    for phase in phases {
        let tag = format!(" {phase}: ");
        let at = logs[from..]
            .lines()
            .scan(from, |pos, l| {
                let start = *pos;
                *pos += l.len() + 1;
                Some((start, l))
            })
            .find(|(_, l)| l.contains(" rinit ") && l.contains(&tag))
            .map(|(start, _)| start);
        let at = at.unwrap_or_else(|| {
            panic!("no '{phase}' line after the previous phases in rinit's log:\n{logs}")
        });
        from = at;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Scenario 1: `docker stop -t 10` on rinit + a child that drains in 1 s.
#[test]
fn docker_stop_drains_in_about_a_second_and_exits_0() {
    if !engine("docker_stop_drains_in_about_a_second_and_exits_0") {
        return;
    }
    let (c, data) = run_probe(
        "drain",
        &[],
        &["--grace=8s"],
        &[
            "--record",
            "/data/record",
            "--done",
            "/data/done",
            "--exit-on",
            "TERM:1000:0",
        ],
    );
    let Stopped { took, state, logs } = stop_and_read(&c, 10);
    assert_eq!(state.exit_code, 0, "exit code; logs:\n{logs}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "docker stop took {:.3} s; the drain is 1 s and Docker's SIGKILL is at 10 s",
        secs(took)
    );
    assert!(
        data.read("record").contains(" SIGTERM "),
        "TERM reached the child"
    );
    assert!(
        data.read("done").starts_with("done "),
        "the job finished its work"
    );
    assert_phases_in_order(&logs, &["start", "signal", "forward", "child_exit", "exit"]);
    assert_clean_exit(&logs, "docker stop");
    assert_eq!(c.signals_sent(), ["15"], "docker stop's SIGTERM only");
}

/// Scenario 2: a child that ignores SIGTERM under --grace=3s is killed by
/// rinit at 3 s; Docker (SIGKILL at 10 s) never has to.
#[test]
fn docker_stop_child_ignoring_term_is_killed_by_rinit_at_its_grace() {
    if !engine("docker_stop_child_ignoring_term_is_killed_by_rinit_at_its_grace") {
        return;
    }
    let (c, data) = run_probe(
        "ignore",
        &[],
        &["--grace=3s"],
        &["--done", "/data/done", "--ignore", "TERM"],
    );
    let Stopped { took, state, logs } = stop_and_read(&c, 10);
    assert_eq!(
        state.exit_code, 137,
        "rinit's own escalation; logs:\n{logs}"
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(7),
        "docker stop took {:.3} s: rinit's deadline is 3 s, Docker's SIGKILL 10 s",
        secs(took)
    );
    assert!(
        data.read("done").is_empty(),
        "the probe was killed, not finished"
    );
    assert_phases_in_order(
        &logs,
        &[
            "start",
            "signal",
            "forward",
            "deadline",
            "kill",
            "child_exit",
            "exit",
        ],
    );
    let deadline = text_phase(&logs, "deadline");
    assert!(deadline[0].contains("grace=3s"), "{deadline:?}");
    let kill = text_phase(&logs, "kill");
    assert!(kill.iter().any(|l| l.contains("comm=probe")), "{kill:?}");
    let child = text_phase(&logs, "child_exit");
    assert!(
        child[0].contains("signal=SIGKILL") && child[0].contains("killed_by_rinit=true"),
        "{child:?}"
    );
    // The engine's events: its SIGTERM, and no SIGKILL of its own.
    assert_eq!(c.signals_sent(), ["15"], "Docker never had to SIGKILL");
    // rinit lived to log its own exit: Docker's SIGKILL would have cut it off.
    let exit = text_phase(&logs, "exit");
    assert!(
        exit.len() == 1 && exit[0].contains("status=137") && exit[0].contains("escalated=true"),
        "{exit:?}"
    );
}

/// The job of scenario 3: starts, and on SIGTERM takes 1 s to finish its
/// in-flight work, then writes /data/finished.
const JOB: [&str; 7] = [
    "/probe",
    "--ready",
    "/data/started",
    "--done",
    "/data/finished",
    "--exit-on",
    "TERM:1000:0",
];

/// Scenario 3: the shell-form pitfall and the same job under rinit, both
/// stopped with `docker stop -t 3`.
#[test]
fn shell_form_entrypoint_loses_the_job_rinit_finishes_it() {
    if !engine("shell_form_entrypoint_loses_the_job_rinit_finishes_it") {
        return;
    }
    let base = probe_image();
    // Shell form: Docker runs `/bin/sh -c "<line>"`, and sh stays PID 1 as
    // soon as the line is more than one simple command (a wrapper script, a
    // pipe to a log shipper, a trap, an echo afterwards: sh only `exec`s a
    // lone last command). PID 1 gets TERM and, having no handler, ignores it;
    // the job never hears of the stop.
    let shell_form = build_text(
        "rinit-test/shell-form",
        &format!(
            "FROM {base}\nENTRYPOINT {} ; echo \"job exited with status $?\"\n",
            JOB.join(" ")
        ),
        &TempDir::new("shell-form"),
    );
    let under_rinit = build_text(
        "rinit-test/under-rinit",
        &format!(
            "FROM {base}\n\
             ENTRYPOINT [\"/rinit\", \"--grace=2s\", \"--platform-kill-after=3s\", \"--\"]\n\
             CMD [{}]\n",
            JOB.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &TempDir::new("under-rinit"),
    );

    // The pitfall.
    let (c, data) = run_with_data("shell-form", &[&shell_form]);
    wait_ready(&data, "started");
    let top = c.exec(&["/bin/busybox", "cat", "/proc/1/cmdline"]);
    assert!(
        top.stdout.starts_with("/bin/sh\0-c\0"),
        "sh is PID 1 in the shell-form container: {:?}",
        top.stdout
    );
    let Stopped { took, state, logs } = stop_and_read(&c, 3);
    assert_eq!(state.exit_code, 137, "Docker's SIGKILL; logs:\n{logs}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "docker stop waited its 3 s timeout: took {:.3} s",
        secs(took)
    );
    assert!(
        data.read("finished").is_empty(),
        "the in-flight job was cut off: no finish marker"
    );
    assert!(
        !logs.contains("job exited"),
        "sh itself was SIGKILLed too:\n{logs}"
    );
    assert_eq!(c.signals_sent(), ["15", "9"], "Docker had to SIGKILL");

    // The same job under rinit.
    let (c, data) = run_with_data("under-rinit", &[&under_rinit]);
    wait_ready(&data, "started");
    let Stopped { took, state, logs } = stop_and_read(&c, 3);
    assert_eq!(state.exit_code, 0, "a clean drain; logs:\n{logs}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "the job's 1 s drain, not the 3 s timeout: took {:.3} s",
        secs(took)
    );
    assert!(
        data.read("finished").starts_with("done "),
        "the in-flight job finished"
    );
    assert_phases_in_order(&logs, &["start", "signal", "forward", "child_exit", "exit"]);
    assert!(text_phase(&logs, "kill").is_empty(), "{logs}");
    assert_eq!(c.signals_sent(), ["15"], "no SIGKILL from Docker");
}

/// Scenario 5a: `docker kill -s` reaches the child; rinit exits with the
/// child's code, or 128+N when the child dies by signal N (tini's outer
/// tests: TERM -> 143, INT to a child that exits 1 on it -> 1).
#[test]
fn docker_kill_signals_reach_the_child_with_128_plus_n_exit_codes() {
    if !engine("docker_kill_signals_reach_the_child_with_128_plus_n_exit_codes") {
        return;
    }
    let image = probe_image();

    // USR1 and HUP are forwarded and recorded; TERM then ends it (143).
    let (c, data) = run_probe(
        "kill",
        &[],
        &[],
        &["--record", "/data/record", "--die-on", "TERM"],
    );
    for sig in ["USR1", "HUP", "TERM"] {
        c.kill(sig);
        if sig != "TERM" {
            wait_for(
                &format!("SIG{sig} in the probe's record"),
                Duration::from_secs(10),
                || {
                    data.read("record")
                        .contains(&format!(" SIG{sig} "))
                        .then_some(())
                },
            );
        }
    }
    let code = c.wait(Duration::from_secs(15));
    let record = data.read("record");
    let got: Vec<&str> = record
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(got, ["SIGUSR1", "SIGHUP", "SIGTERM"], "record:\n{record}");
    assert_eq!(code, 143, "died by TERM; logs:\n{}", c.logs());
    assert_eq!(
        c.signals_sent(),
        ["10", "1", "15"],
        "the engine's kill events"
    );

    // One container per fatal signal, all at once.
    let cases = [
        ("USR1", vec!["--die-on", "USR1"], 138),
        ("HUP", vec!["--die-on", "HUP"], 129),
        ("INT", vec!["--exit-on", "INT:0:1"], 1),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(sig, flags, want)| {
            let data = TempDir::new("kill-one");
            let mut args = vec!["-v".to_string(), mount(&data), image.to_string()];
            args.extend(probe_under_rinit(&[], flags).into_iter().map(String::from));
            let c = Container::run(&format!("kill-{}", sig.to_lowercase()), &args);
            (sig, want, data, c)
        })
        .collect();
    for (sig, want, data, c) in &runs {
        wait_ready(data, "ready");
        c.kill(sig);
        let code = c.wait(Duration::from_secs(15));
        assert_eq!(code, **want, "docker kill -s {sig}; logs:\n{}", c.logs());
    }
}

/// Counts processes in state Z inside the container, from /proc/*/stat.
fn zombies(c: &Container) -> usize {
    let out = c.exec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "cat /proc/[0-9]*/stat 2>/dev/null",
    ]);
    out.stdout
        .lines()
        .filter(|l| {
            l.rfind(')')
                .and_then(|i| l.get(i + 1..))
                .and_then(|rest| rest.split_whitespace().next())
                == Some("Z")
        })
        .count()
}

/// Scenario 5b: processes left behind by `docker exec` are re-parented to
/// PID 1; rinit reaps them. The same with the probe as PID 1 (which reaps
/// nothing) shows the zombies the check would catch.
#[test]
fn docker_exec_orphans_are_reaped() {
    if !engine("docker_exec_orphans_are_reaped") {
        return;
    }
    const N: usize = 8;
    let image = probe_image();
    // The exec'd shell starts N short sleeps in the background and exits at
    // once, orphaning them; they end 300 ms later.
    let orphans =
        format!("for i in $(/bin/busybox seq {N}); do /bin/busybox sleep 0.3 & done; exit 0");
    let run_case = |label: &str, cmd: &[&str]| -> (Container, TempDir) {
        let data = TempDir::new(label);
        let mut args = vec!["-v".to_string(), mount(&data), image.to_string()];
        args.extend(cmd.iter().map(|s| s.to_string()));
        let c = Container::run(label, &args);
        wait_ready(&data, "ready");
        let out = c.exec(&["/bin/busybox", "sh", "-c", &orphans]);
        assert!(out.ok(), "docker exec: {}", out.stderr);
        (c, data)
    };

    // Control: a PID 1 that never calls wait() keeps them as zombies.
    let (c, _data) = run_case("no-reaper", &["/probe", "--ready", "/data/ready"]);
    let seen = wait_for(
        &format!("{N} zombies under a PID 1 that does not reap"),
        Duration::from_secs(10),
        || {
            let z = zombies(&c);
            (z >= N).then_some(z)
        },
    );
    assert_eq!(seen, N);
    drop(c);

    // rinit reaps every one of them.
    let (c, _data) = run_case("reaper", &probe_under_rinit(&["-v"], &[]));
    let reaped = wait_for(
        &format!("rinit's log to account for {N} reaped orphans"),
        Duration::from_secs(10),
        || {
            let logs = c.logs();
            let total: usize = text_phase(&logs, "reaped")
                .iter()
                .filter_map(|l| l.split("count=").nth(1))
                .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
                .sum();
            (total >= N).then_some(total)
        },
    );
    assert_eq!(reaped, N, "logs:\n{}", c.logs());
    assert_eq!(zombies(&c), 0, "no zombie left under rinit");
    let sleeps = c.exec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "cat /proc/[0-9]*/comm 2>/dev/null",
    ]);
    assert!(!sleeps.stdout.contains("sleep"), "{}", sleeps.stdout);
}

/// Dockerfile.example, built as the README says but from the local base and
/// with the probe standing in for the worker (scenario 4 builds it with the
/// real worker): its exec-form ENTRYPOINT and --grace=8s work under
/// `docker stop`, as the non-root user, and rinit sees the Docker platform.
#[test]
fn dockerfile_example_builds_and_drains_under_docker_stop() {
    if !engine("dockerfile_example_builds_and_drains_under_docker_stop") {
        return;
    }
    let probe = probe_beside(Path::new(RINIT));
    assert_static(
        &probe,
        "the probe must be built static (.cargo/config.toml)",
    );
    let base = static_base();
    let ctx = TempDir::new("example");
    ctx.copy_in(Path::new(RINIT), "rinit")
        .copy_in(&probe, "pubsub-gcs-worker");
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile.example");
    let image = build(
        "rinit-test/example-probe",
        &dockerfile,
        ctx.path(),
        &[("BASE", &base)],
    );
    let (c, data) = run_with_data(
        "example",
        &[
            &image,
            "/usr/local/bin/pubsub-gcs-worker",
            "--ready",
            "/data/ready",
            "--done",
            "/data/done",
            "--exit-on",
            "TERM:500:0",
        ],
    );
    wait_ready(&data, "ready");
    let Stopped { took, state, logs } = stop_and_read(&c, 10);
    assert_eq!(state.exit_code, 0, "logs:\n{logs}");
    assert!(took < Duration::from_secs(4), "took {:.3} s", secs(took));
    assert!(data.read("done").starts_with("done "));
    let start = text_phase(&logs, "start");
    assert!(
        start[0].contains("grace=8s")
            && start[0].contains("platform=docker")
            && start[0].contains("kill_after=10s")
            && start[0].contains("mode=pid1"),
        "{start:?}"
    );
    let inspect = docker_support::docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{.Config.User}} {{.Config.StopSignal}}",
        &image,
    ]);
    assert_eq!(
        inspect.trim(),
        r#"["/rinit","--grace=8s","--"] 65532:65532 SIGTERM"#
    );
}

/// A child that needs 12 s to drain after SIGTERM: longer than Docker's
/// default 10 s, well inside the design line's 25 s grace.
const SLOW_WORKER: [&str; 7] = [
    "/worker",
    "--ready",
    "/data/ready",
    "--done",
    "/data/done",
    "--exit-on",
    "TERM:12000:0",
];

/// tests/images/design-line.Dockerfile (the README's design line, verbatim)
/// with the probe as /worker.
fn design_line_image() -> String {
    let ctx = TempDir::new("design-line");
    ctx.copy_in(&probe_beside(Path::new(RINIT)), "worker");
    let image = build(
        "rinit-test/design-line",
        &root_dir().join("tests/images/design-line.Dockerfile"),
        ctx.path(),
        &[("BASE", probe_image())],
    );
    let entrypoint = docker_support::docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image,
    ]);
    assert_eq!(entrypoint.trim(), r#"["/rinit","--grace=25s","--"]"#);
    image
}

/// The design line inside Docker: the window is assumed, so rinit starts and
/// says so in one WARNING line that names how to raise and state it.
fn assert_design_line_start(logs: &str) {
    let start = text_phase(logs, "start");
    assert!(
        start.len() == 2
            && start[0].contains(" INFO start: ")
            && start[0].contains("grace=25s platform=docker kill_after=10s window=assumed"),
        "{start:?}"
    );
    for needle in [
        " WARNING start: --grace=25s",
        "10s",
        "docker stop -t",
        "stop_grace_period",
        "--platform-kill-after",
    ] {
        assert!(start[1].contains(needle), "{needle:?} not in {}", start[1]);
    }
}

/// The design line under `docker stop -t 30`: the 12 s drain completes, exit
/// 0 the moment it does, and Docker never sends its SIGKILL.
#[test]
fn design_line_drains_under_docker_stop_t_30() {
    if !engine("design_line_drains_under_docker_stop_t_30") {
        return;
    }
    let image = design_line_image();
    let mut args = vec![image.as_str()];
    args.extend(SLOW_WORKER);
    let (c, data) = run_with_data("design-t30", &args);
    wait_ready(&data, "ready");
    let Stopped { took, state, logs } = stop_and_read(&c, 30);
    assert_eq!(state.exit_code, 0, "logs:\n{logs}");
    assert!(
        took >= Duration::from_secs(12) && took < Duration::from_secs(20),
        "a 12 s drain took {:.3} s",
        secs(took)
    );
    assert!(data.read("done").starts_with("done "), "the job finished");
    assert_eq!(c.signals_sent(), ["15"], "Docker never had to SIGKILL");
    assert_design_line_start(&logs);
    assert_phases_in_order(&logs, &["start", "signal", "forward", "child_exit", "exit"]);
    let exit = text_phase(&logs, "exit");
    assert!(
        exit.len() == 1 && exit[0].contains("status=0") && exit[0].contains("escalated=false"),
        "{exit:?}"
    );
}

/// The design line under Compose with `stop_grace_period: 30s`: `docker-compose
/// stop` waits out the 12 s drain, exit 0, no SIGKILL in Docker's events.
#[test]
fn design_line_drains_under_compose_stop_grace_period() {
    if !engine("design_line_drains_under_compose_stop_grace_period") {
        return;
    }
    let image = design_line_image();
    let data = TempDir::new("design-line-compose");
    let command = SLOW_WORKER
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    data.write(
        "compose.yaml",
        &format!(
            "version: \"2.4\"\n\
             services:\n  \
               worker:\n    \
                 image: {image}\n    \
                 command: [{command}]\n    \
                 stop_grace_period: 30s\n    \
                 network_mode: host\n    \
                 labels:\n      rinit-test: \"1\"\n    \
                 volumes:\n      - {}:/data\n",
            data.path().display()
        ),
    );
    let compose = Compose::new("compose", data.join("compose.yaml"), None);
    let up = compose.run(&["up", "-d"], Duration::from_secs(120));
    assert!(up.ok(), "docker-compose up: {}{}", up.stdout, up.stderr);
    wait_ready(&data, "ready");
    let id = compose.container_id("worker");
    let t0 = std::time::Instant::now();
    let stop = compose.run(&["stop"], Duration::from_secs(90));
    let took = t0.elapsed();
    assert!(stop.ok(), "docker-compose stop: {}", stop.stderr);
    let exit_code = docker_support::docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &id]);
    let logs = {
        let out = docker_support::docker(&["logs", &id]);
        format!("{}{}", out.stdout, out.stderr)
    };
    eprintln!(
        "docker-compose stop took {:.3} s; logs:\n{logs}",
        secs(took)
    );
    assert_eq!(exit_code.trim(), "0", "logs:\n{logs}");
    assert!(
        took >= Duration::from_secs(12) && took < Duration::from_secs(20),
        "a 12 s drain took {:.3} s under stop_grace_period: 30s",
        secs(took)
    );
    assert!(data.read("done").starts_with("done "), "the job finished");
    assert_eq!(
        compose.signals_sent(&id),
        ["15"],
        "Compose's SIGTERM only, never its SIGKILL"
    );
    assert_design_line_start(&logs);
    assert_phases_in_order(&logs, &["start", "signal", "forward", "child_exit", "exit"]);
    // `down` then removes what `stop` left, as a user's deploy script would.
    let down = compose.run(&["down", "-v"], Duration::from_secs(60));
    assert!(down.ok(), "docker-compose down: {}", down.stderr);
    assert!(
        !docker_support::docker(&["inspect", &id]).ok(),
        "the container is gone after down"
    );
}

/// Plain `docker stop` (10 s) of the design line: Docker's SIGKILL lands at
/// 10 s as it always would, mid-drain; the warning was in the log from the
/// start, before anything was lost.
#[test]
fn design_line_under_plain_docker_stop_was_warned_about() {
    if !engine("design_line_under_plain_docker_stop_was_warned_about") {
        return;
    }
    let image = design_line_image();
    let mut args = vec![image.as_str()];
    args.extend(SLOW_WORKER);
    let (c, data) = run_with_data("design-t10", &args);
    wait_ready(&data, "ready");
    let before_stop = c.logs();
    let Stopped { took, state, logs } = stop_and_read(&c, 10);
    assert_design_line_start(&before_stop);
    assert_eq!(state.exit_code, 137, "Docker's SIGKILL; logs:\n{logs}");
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(14),
        "docker stop took {:.3} s",
        secs(took)
    );
    assert_eq!(c.signals_sent(), ["15", "9"], "Docker had to SIGKILL");
    assert!(data.read("done").is_empty(), "the job was cut off");
    assert!(
        text_phase(&logs, "exit").is_empty(),
        "rinit never got to exit by itself:\n{logs}"
    );
}

/// Issue 21: rinit runs as uid 1000 (`docker run --user`) and a root
/// process joins the container (`docker exec -u 0`). At rinit's deadline the
/// kill of that process fails (EPERM): the log must say so, naming it, and
/// rinit must exit soon after its grace anyway (as PID 1 its exit ends the
/// namespace, the root process with it), not when Docker's own SIGKILL comes
/// at `-t 20`. The twin: the same process as uid 1000 is killed.
#[test]
fn docker_exec_root_process_under_a_non_root_rinit() {
    if !engine("docker_exec_root_process_under_a_non_root_rinit") {
        return;
    }
    for exec_user in ["0", "1000"] {
        let (c, data) = run_probe(
            &format!("eperm-{exec_user}"),
            &["--user", "1000:1000"],
            &["--grace=3s"],
            &["--ignore", "TERM"],
        );
        docker_support::docker_ok(&[
            "exec",
            "-d",
            "-u",
            exec_user,
            &c.name,
            "/probe",
            "--ready",
            "/data/joined",
        ]);
        wait_ready(&data, "joined");
        let joined = format!("pid={} ", data.read("joined").trim());
        let Stopped { took, state, logs } = stop_and_read(&c, 20);
        assert_eq!(state.exit_code, 137, "{logs}");
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(7),
            "docker stop -t 20 took {:.3} s: rinit's grace is 3 s",
            secs(took)
        );
        assert_eq!(c.signals_sent(), ["15"], "Docker never had to SIGKILL");
        let about_joined: Vec<&str> = text_phase(&logs, "kill")
            .into_iter()
            .filter(|l| l.contains(&joined))
            .collect();
        if exec_user == "0" {
            assert!(
                about_joined
                    .iter()
                    .any(|l| l.contains(" ERROR kill: cannot SIGKILL ")),
                "{logs}"
            );
            assert!(
                about_joined
                    .iter()
                    .any(|l| l.contains("still there after SIGKILL")),
                "{logs}"
            );
            assert!(
                !about_joined
                    .iter()
                    .any(|l| l.contains(" WARNING kill: SIGKILL ")),
                "a failed kill logged as done:\n{logs}"
            );
        } else {
            assert!(
                about_joined
                    .iter()
                    .any(|l| l.contains(" WARNING kill: SIGKILL ")),
                "{logs}"
            );
            assert!(!logs.contains(" ERROR "), "{logs}");
        }
        let exit = text_phase(&logs, "exit");
        assert!(
            exit.len() == 1 && exit[0].contains("status=137"),
            "{exit:?}"
        );
    }
}

/// What a container with a 32 MiB memory limit (`-m 32m --memory-swap 32m`)
/// and `/dev/termination-log` bind-mounted from `data` left behind.
struct Told {
    state: State,
    logs: String,
    message: String,
}

/// Runs `cmd` under rinit in a 32 MiB container, with a file of `data`
/// as `/dev/termination-log`; `act` does what ends it; returns what rinit
/// said in its log and its termination message.
fn told(label: &str, cmd: &[&str], act: impl FnOnce(&Container, &TempDir)) -> Told {
    let data = TempDir::new(label);
    data.write("termination-log", "");
    let term = format!(
        "{}:/dev/termination-log",
        data.join("termination-log").display()
    );
    let mut args = vec!["-m", "32m", "--memory-swap", "32m", "-v", &term]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(["-v".to_string(), mount(&data), probe_image().to_string()]);
    args.extend(cmd.iter().map(|s| s.to_string()));
    let c = Container::run(label, &args);
    act(&c, &data);
    c.wait(Duration::from_secs(60));
    let (state, logs) = (c.state(), c.logs());
    eprintln!("{label}: exit {}; docker logs:\n{logs}", state.exit_code);
    Told {
        state,
        logs,
        message: data.read("termination-log"),
    }
}

/// An OOM kill of a process that rinit does not reap (the command's own
/// child, reaped by the command: a pool process, a job's child) is told at
/// exit, in the log and in the termination message, although the command
/// lived on and exited 0.
#[test]
fn oom_kills_rinit_does_not_reap_are_told_at_exit() {
    if !engine("oom_kills_rinit_does_not_reap_are_told_at_exit") {
        return;
    }
    let t = told(
        "oom-unreaped",
        &[
            "/rinit",
            "--grace=5s",
            "--",
            "/bin/sh",
            "-c",
            "/probe --alloc-mib 64; exec /probe --ready /data/ready --exit-on TERM:0:0",
        ],
        |c, data| {
            wait_ready(data, "ready");
            c.stop(10);
        },
    );
    assert_eq!(t.state.exit_code, 0, "{}", t.logs);
    let oom = text_phase(&t.logs, "oom");
    assert!(
        oom.len() == 1
            && oom[0].contains(" WARNING oom: the kernel's OOM killer killed processes in rinit's memory cgroup that rinit did not reap")
            && oom[0].contains("count=1"),
        "{}",
        t.logs
    );
    let exit = text_phase(&t.logs, "exit");
    assert!(
        exit[0]
            .contains(" WARNING exit: exiting; the OOM killer killed processes rinit did not reap")
            && exit[0].contains("status=0 cause=exited"),
        "{exit:?}"
    );
    assert_eq!(
        t.message,
        format!(
            "rinit: exit status 0: the command exited with code 0; drain {} ms; the OOM killer also killed other processes: 1, 1 of them not reaped by rinit (see the command's log)",
            drain_ms(exit[0])
        ),
    );
}

/// `drain_ms=N` of an exit line.
fn drain_ms(line: &str) -> u64 {
    line.split_once("drain_ms=")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drain_ms in {line:?}"))
}

/// Issue 18: every SIGKILL death gets its cause, in the log and in the
/// termination message a platform shows: the kernel's OOM killer (the main
/// child; a helper while the main child lives on), another sender (`docker
/// exec ... kill -9`), and rinit's own deadline.
#[test]
fn sigkill_causes_are_told_apart() {
    if !engine("sigkill_causes_are_told_apart") {
        return;
    }
    // The main child allocates past the limit.
    let t = told(
        "oom-main",
        &["/rinit", "--grace=5s", "--", "/probe", "--alloc-mib", "64"],
        |_, _| {},
    );
    assert_eq!(t.state.exit_code, 137, "{}", t.logs);
    let oom = text_phase(&t.logs, "oom");
    assert!(
        oom.len() == 1
            && oom[0].contains(" ERROR oom: main child killed by the kernel's OOM killer ")
            && oom[0].contains("limit=32MiB"),
        "{}",
        t.logs
    );
    let exit = text_phase(&t.logs, "exit");
    assert!(
        exit[0].contains("status=137") && exit[0].contains("cause=oom"),
        "{exit:?}"
    );
    assert!(
        text_phase(&t.logs, "child_exit")[0].contains("cause=oom"),
        "{}",
        t.logs
    );
    assert!(
        t.message.starts_with("rinit: exit status 137: the command was killed by the kernel's OOM killer (memory limit 32MiB, peak "),
        "{:?}",
        t.message
    );

    // A helper (orphaned, so rinit reaps it) allocates past the limit; the
    // main child lives on and drains at the stop.
    let t = told(
        "oom-helper",
        &[
            "/rinit",
            "--grace=5s",
            "--",
            "/bin/sh",
            "-c",
            "(/probe --alloc-mib 64 &); exec /probe --ready /data/ready --exit-on TERM:0:0",
        ],
        |c, data| {
            wait_ready(data, "ready");
            wait_for("the helper's OOM line", Duration::from_secs(30), || {
                c.logs().contains(" oom: ").then_some(())
            });
            assert!(c.state().running, "the main child lives on");
            c.stop(10);
        },
    );
    let oom = text_phase(&t.logs, "oom");
    assert!(
        oom.len() == 1
            && oom[0].contains(" WARNING oom: ")
            && oom[0].contains("the main child lives on"),
        "{}",
        t.logs
    );
    assert_eq!(t.state.exit_code, 0, "{}", t.logs);
    assert!(
        text_phase(&t.logs, "exit")[0].contains(" WARNING exit: exiting status=0 cause=exited"),
        "{}",
        t.logs
    );
    assert!(
        t.message
            .starts_with("rinit: exit status 0: the command exited with code 0")
            && t.message
                .ends_with("; the OOM killer also killed other processes: 1"),
        "{:?}",
        t.message
    );

    // Someone else's SIGKILL.
    let t = told(
        "other",
        &probe_under_rinit(&["--grace=5s"], &[]),
        |c, data| {
            wait_ready(data, "ready");
            let pid = data.read("ready").trim().to_string();
            // The kill ends the main child, so rinit and the whole container
            // exit at once and can take the exec'd `kill` with them before
            // it reports: its own status proves nothing either way. The
            // container's exit and rinit's cause below are what count.
            let out = c.exec(&["/bin/busybox", "kill", "-9", &pid]);
            eprintln!("docker exec kill -9 {pid}: {:?} {}", out.code, out.stderr);
        },
    );
    assert_eq!(t.state.exit_code, 137, "{}", t.logs);
    assert!(
        text_phase(&t.logs, "exit")[0].contains("cause=other"),
        "{}",
        t.logs
    );
    assert!(text_phase(&t.logs, "oom").is_empty(), "{}", t.logs);
    assert!(
        t.message.contains("killed by SIGKILL from another process"),
        "{:?}",
        t.message
    );

    // rinit's own deadline.
    let t = told(
        "deadline",
        &probe_under_rinit(&["--grace=2s"], &["--ignore", "TERM"]),
        |c, data| {
            wait_ready(data, "ready");
            c.stop(10);
        },
    );
    assert_eq!(t.state.exit_code, 137, "{}", t.logs);
    assert!(
        text_phase(&t.logs, "exit")[0].contains("cause=deadline"),
        "{}",
        t.logs
    );
    assert!(
        t.message.starts_with(
            "rinit: exit status 137: the command was killed at rinit's 2s deadline; drain 2"
        ) && t.message.contains("killed at the deadline: probe (pid "),
        "{:?}",
        t.message
    );
}
