//! The deployment files users copy (deploy/, issue 19 part 2, and issue
//! 18's recipe for images one cannot rebuild), checked four ways:
//!
//! - each passes its platform's own validator, offline
//!   (`scripts/check-deploy`: Kubernetes' JSON schemas, the ECS API's model
//!   in botocore, gcloud's parse of a worker pool, the Docker CLI's Compose
//!   loader), and each validator rejects a copy with one field misspelt, so
//!   a validator that checks nothing cannot pass;
//! - the numbers agree: every file's rinit grace leaves at least 1 s of its
//!   platform's stop window, the window told to rinit is the platform's
//!   own, and the worker's drain limit ends inside the grace, read from the
//!   files with this test's own parsing;
//! - rinit itself, given each file's command line and variables on that
//!   platform, starts with that grace and that window, known;
//! - the recipe for images one cannot rebuild works as written: Docker plays
//!   the kubelet (the init container's command into a volume, then the app
//!   container's command, args, variables and read-only mount, from the
//!   YAML) around an image without rinit, and `docker stop` finds rinit as
//!   PID 1 draining it.

use rinit_test_support::docker::{
    assert_static, build, build_text, docker, docker_ok, engine, Container,
};
use rinit_test_support::{phase, root_dir, run, run_ok, wait_for, Out, TempDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

/// The files, with the validator kind `scripts/check-deploy` must see.
const FILES: [(&str, &str); 5] = [
    ("deploy/kubernetes/deployment.yaml", "kubernetes"),
    ("deploy/kubernetes/unmodified-image.yaml", "kubernetes"),
    ("deploy/ecs/task-definition.json", "ecs"),
    ("deploy/cloud-run/worker-pool.yaml", "cloud-run"),
    ("deploy/swarm/stack.yml", "compose"),
];

/// Cloud Run's stop window: fixed, nowhere in the file.
const CLOUD_RUN_WINDOW: u64 = 10_000;
/// The longest `stopTimeout` ECS accepts (Fargate; ECS_CONTAINER_STOP_TIMEOUT
/// on EC2 may be longer, this file is for Fargate).
const ECS_MAX_STOP_TIMEOUT: u64 = 120_000;

/// Installs the pinned validators once per test process
/// (scripts/setup-deploy-validators is idempotent and locked).
fn validators() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        run_ok(
            &mut Command::new(root_dir().join("scripts/setup-deploy-validators")),
            Duration::from_secs(600),
        );
    });
}

/// `scripts/check-deploy PATHS...`.
fn check_deploy(paths: &[PathBuf]) -> Out {
    validators();
    run(
        Command::new(root_dir().join("scripts/check-deploy")).args(paths),
        Duration::from_secs(300),
    )
}

/// Every document of a YAML (or JSON) file, as JSON, read by PyYAML from the
/// validators' venv.
fn documents(path: &Path) -> Vec<Value> {
    validators();
    let out = run_ok(
        Command::new(root_dir().join(".venv-deploy/bin/python"))
            .args([
                "-c",
                "import json, sys, yaml\n\
                 json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
            ])
            .arg(path),
        Duration::from_secs(60),
    );
    serde_json::from_str(&out.stdout).expect("PyYAML printed JSON")
}

/// A duration as the files write them, in ms: a bare number of seconds
/// (`60`, Kubernetes' and ECS's integers, rinit's bare numbers) or numbers
/// with units (`25s`, `1m30s`, `500ms`). This test's own parser, not
/// rinit's: the oracle must not come from the code under test.
fn ms(text: &str) -> u64 {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return secs * 1000;
    }
    let mut total = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} is not a duration"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            u => panic!("{text:?}: unit {u:?}"),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    total
}

/// What one file sets up for rinit on its platform.
#[derive(Debug)]
struct Setup {
    file: &'static str,
    /// rinit's `--platform` name.
    platform: &'static str,
    /// The platform's stop-to-SIGKILL window, from the file (or Cloud Run's).
    window_ms: u64,
    /// rinit's command line up to and including `--` (the file's
    /// entrypoint or command).
    rinit_args: Vec<String>,
    /// The container's environment.
    env: Vec<(String, String)>,
}

impl Setup {
    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// rinit's grace: `--grace=` on its command line wins over RINIT_GRACE.
    fn grace_ms(&self) -> u64 {
        let flag = self
            .rinit_args
            .iter()
            .find_map(|a| a.strip_prefix("--grace="));
        let text = flag
            .or_else(|| self.var("RINIT_GRACE"))
            .unwrap_or_else(|| panic!("{}: no --grace and no RINIT_GRACE", self.file));
        ms(text)
    }
}

/// rinit's arguments: the part of `command` up to `--`, which must start
/// with a path ending in `/rinit`.
fn rinit_part(file: &str, command: &[Value]) -> Vec<String> {
    let words: Vec<String> = command
        .iter()
        .map(|w| w.as_str().expect("command words are strings").to_string())
        .collect();
    assert!(
        words.first().is_some_and(|w| w.ends_with("/rinit")),
        "{file}: the container does not start rinit: {words:?}"
    );
    let end = words
        .iter()
        .position(|w| w == "--")
        .unwrap_or_else(|| panic!("{file}: rinit's command has no `--`: {words:?}"));
    words[..=end].to_vec()
}

/// A Kubernetes-style `env` list (`name`/`value`).
fn env_list(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().expect("env name").to_string(),
                e["value"]
                    .as_str()
                    .expect("env value is a string")
                    .to_string(),
            )
        })
        .collect()
}

/// The container that runs rinit in a pod spec (the one whose command
/// starts it).
fn rinit_container(pod: &Value) -> &Value {
    pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| {
            c["command"][0]
                .as_str()
                .is_some_and(|w| w.ends_with("/rinit"))
        })
        .expect("a container whose command starts rinit")
}

fn kubernetes(file: &'static str) -> Setup {
    let doc = &documents(&root_dir().join(file))[0];
    let pod = &doc["spec"]["template"]["spec"];
    let c = rinit_container(pod);
    Setup {
        file,
        platform: "kubernetes",
        window_ms: pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds")
            * 1000,
        rinit_args: rinit_part(file, c["command"].as_array().expect("command")),
        env: env_list(&c["env"]),
    }
}

fn ecs(file: &'static str) -> Setup {
    let doc = &documents(&root_dir().join(file))[0];
    let c = &doc["containerDefinitions"][0];
    let stop_timeout = c["stopTimeout"].as_u64().expect("stopTimeout") * 1000;
    assert!(
        stop_timeout <= ECS_MAX_STOP_TIMEOUT,
        "{file}: stopTimeout {stop_timeout} ms is over Fargate's 120 s"
    );
    Setup {
        file,
        platform: "ecs",
        window_ms: stop_timeout,
        rinit_args: rinit_part(file, c["entryPoint"].as_array().expect("entryPoint")),
        env: env_list(&c["environment"]),
    }
}

fn cloud_run(file: &'static str) -> Setup {
    let doc = &documents(&root_dir().join(file))[0];
    let c = rinit_container(&doc["spec"]["template"]["spec"]);
    Setup {
        file,
        platform: "cloud-run",
        window_ms: CLOUD_RUN_WINDOW,
        rinit_args: rinit_part(file, c["command"].as_array().expect("command")),
        env: env_list(&c["env"]),
    }
}

fn swarm(file: &'static str) -> Setup {
    let doc = &documents(&root_dir().join(file))[0];
    let s = &doc["services"]["worker"];
    let env = s["environment"]
        .as_object()
        .expect("environment is a map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
        .collect();
    Setup {
        file,
        platform: "docker",
        window_ms: ms(s["stop_grace_period"].as_str().expect("stop_grace_period")),
        rinit_args: rinit_part(file, s["entrypoint"].as_array().expect("entrypoint")),
        env,
    }
}

fn setups() -> Vec<Setup> {
    vec![
        kubernetes("deploy/kubernetes/deployment.yaml"),
        kubernetes("deploy/kubernetes/unmodified-image.yaml"),
        ecs("deploy/ecs/task-definition.json"),
        cloud_run("deploy/cloud-run/worker-pool.yaml"),
        swarm("deploy/swarm/stack.yml"),
    ]
}

#[test]
fn every_deployment_file_passes_its_platforms_own_validator() {
    let paths: Vec<PathBuf> = FILES.iter().map(|(f, _)| root_dir().join(f)).collect();
    let out = check_deploy(&paths);
    assert!(
        out.ok(),
        "scripts/check-deploy:\n{}{}",
        out.stdout,
        out.stderr
    );
    for ((file, kind), path) in FILES.iter().zip(&paths) {
        let want = format!("ok {kind} {}: ", path.display());
        assert!(
            out.stdout.lines().any(|l| l.starts_with(&want)),
            "{file}: no `{want}` line:\n{}",
            out.stdout
        );
    }
    // Every file in deploy/ a user can apply is one of them.
    let mut found = Vec::new();
    for dir in ["kubernetes", "ecs", "cloud-run", "swarm"] {
        for e in std::fs::read_dir(root_dir().join("deploy").join(dir)).expect("deploy/") {
            let name = e.expect("entry").file_name().to_string_lossy().to_string();
            if [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x)) {
                found.push(format!("deploy/{dir}/{name}"));
            }
        }
    }
    found.sort();
    let mut listed: Vec<String> = FILES.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "a deployment file this test does not check");
    eprintln!("{}", out.stdout.trim_end());
}

#[test]
fn each_validator_rejects_a_copy_with_one_field_misspelt() {
    // One misspelt key per file, at the place the file's numbers live.
    let cases = [
        (
            "deploy/kubernetes/deployment.yaml",
            "terminationGracePeriodSeconds:",
            "terminationGracePeriod:",
        ),
        (
            "deploy/kubernetes/unmodified-image.yaml",
            "initContainers:",
            "initContainer:",
        ),
        (
            "deploy/ecs/task-definition.json",
            "\"stopTimeout\"",
            "\"stopTimout\"",
        ),
        (
            "deploy/cloud-run/worker-pool.yaml",
            "instanceSplits:",
            "instanceSplit:",
        ),
        (
            "deploy/swarm/stack.yml",
            "stop_grace_period:",
            "stop_grace:",
        ),
    ];
    let tmp = TempDir::new("deploy-broken");
    let mut paths = Vec::new();
    for (file, good, bad) in cases {
        let text = std::fs::read_to_string(root_dir().join(file)).expect(file);
        assert_eq!(text.matches(good).count(), 1, "{file}: {good} once");
        let name = file.replace('/', "_");
        tmp.write(&name, &text.replace(good, bad));
        paths.push((file, tmp.join(&name), bad.trim_matches(['"', ':'])));
    }
    let out = check_deploy(&paths.iter().map(|(_, p, _)| p.clone()).collect::<Vec<_>>());
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    for (file, path, field) in &paths {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&*path.to_string_lossy()))
            .unwrap_or_else(|| panic!("{file}: no line for its broken copy:\n{}", out.stdout));
        assert!(
            line.starts_with("FAIL ") && line.contains(field),
            "{file}: the broken copy must fail naming {field}: {line}"
        );
    }
}

#[test]
fn each_files_grace_leaves_at_least_1s_of_its_platform_window() {
    for s in setups() {
        let grace = s.grace_ms();
        assert!(
            grace + 1000 <= s.window_ms,
            "{}: grace {grace} ms leaves less than 1 s of the {} ms window",
            s.file,
            s.window_ms
        );
        match s.var("RINIT_PLATFORM_KILL_AFTER") {
            // Cloud Run's window is fixed; stating it is pointless there.
            None => assert_eq!(
                s.platform, "cloud-run",
                "{}: window not told to rinit",
                s.file
            ),
            Some(stated) => assert_eq!(
                ms(stated),
                s.window_ms,
                "{}: RINIT_PLATFORM_KILL_AFTER is not the platform's window",
                s.file
            ),
        }
        if let Some(drain) = s.var("DRAIN_TIMEOUT") {
            assert!(
                ms(drain) + 1000 <= grace,
                "{}: DRAIN_TIMEOUT={drain} does not end 1 s inside the grace ({grace} ms)",
                s.file
            );
        }
        eprintln!(
            "{}: window {} ms, grace {grace} ms, drain {:?}",
            s.file,
            s.window_ms,
            s.var("DRAIN_TIMEOUT")
        );
    }
}

/// The text of a duration as rinit prints it (`platform::fmt`: `55s`,
/// `1m30s`), from ms; whole seconds are enough for these files.
fn rinit_text(ms: u64) -> String {
    assert_eq!(ms % 1000, 0, "whole seconds");
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[test]
fn rinit_starts_with_each_files_grace_and_window_known() {
    let rinit = PathBuf::from(env!("CARGO_BIN_EXE_rinit"));
    for s in setups() {
        // The file's own command line, with the platform named (a test host
        // is not the platform) and /bin/true for the program.
        let mut args = s.rinit_args[1..s.rinit_args.len() - 1].to_vec();
        args.push(format!("--platform={}", s.platform));
        args.extend(["--".to_string(), "/bin/true".to_string()]);
        let out = run(
            Command::new(&rinit)
                .args(&args)
                .env_clear()
                .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("RINIT_LOG_FORMAT", "json"),
            Duration::from_secs(30),
        );
        assert_eq!(
            out.code,
            Some(0),
            "{}: rinit {args:?} refused the file's settings:\n{}",
            s.file,
            out.stderr
        );
        let start = rinit_test_support::json_lines(&out.stderr)
            .into_iter()
            .find(|l| l["phase"] == "start")
            .unwrap_or_else(|| panic!("{}: no start line:\n{}", s.file, out.stderr));
        assert_eq!(start["platform"], s.platform, "{}: {start}", s.file);
        assert_eq!(
            start["grace"],
            rinit_text(s.grace_ms()).as_str(),
            "{}: {start}",
            s.file
        );
        assert_eq!(
            start["kill_after"],
            rinit_text(s.window_ms).as_str(),
            "{}: {start}",
            s.file
        );
        assert_eq!(start["window"], "known", "{}: {start}", s.file);
        assert!(
            !out.stderr.contains("WARNING"),
            "{}: rinit warned about the file's settings:\n{}",
            s.file,
            out.stderr
        );
    }
}

/// A pod's container, as the kubelet would start it in Docker: entrypoint
/// (its `command`'s first word), the rest of the command and its `args`,
/// its environment, and its volume mounts (`NAME:PATH[:ro]`).
struct PodContainer {
    entrypoint: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String, bool)>,
}

impl PodContainer {
    fn of(c: &Value) -> PodContainer {
        let words = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|w| w.as_str().expect("string").to_string())
                .collect()
        };
        let command = words(&c["command"]);
        PodContainer {
            entrypoint: command[0].clone(),
            argv: command[1..]
                .iter()
                .cloned()
                .chain(words(&c["args"]))
                .collect(),
            env: env_list(&c["env"]),
            mounts: c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m["name"].as_str().expect("name").to_string(),
                        m["mountPath"].as_str().expect("mountPath").to_string(),
                        m["readOnly"].as_bool().unwrap_or(false),
                    )
                })
                .collect(),
        }
    }

    /// `docker run` options, image, and command for this container, with
    /// the pod's volume `volume` as the Docker volume `docker_volume`.
    fn run_args(&self, image: &str, volume: &str, docker_volume: &str) -> Vec<String> {
        let mut a = vec!["--entrypoint".to_string(), self.entrypoint.clone()];
        for (name, path, ro) in &self.mounts {
            assert_eq!(name, volume, "one volume in the recipe");
            a.push("-v".into());
            a.push(format!(
                "{docker_volume}:{path}{}",
                if *ro { ":ro" } else { "" }
            ));
        }
        for (k, v) in &self.env {
            a.push("-e".into());
            a.push(format!("{k}={v}"));
        }
        a.push(image.to_string());
        a.extend(self.argv.iter().cloned());
        a
    }
}

/// A Docker volume (the emptyDir's stand-in), removed on drop.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// Images for the recipe: the rinit image as scripts/dist builds it
/// (packaging/Dockerfile), the copier from the recipe's own Dockerfile on a
/// local busybox base, and a "vendor" image that has never heard of rinit.
fn recipe_images() -> (String, String) {
    let rinit = PathBuf::from(env!("CARGO_BIN_EXE_rinit"));
    assert_static(&rinit, "rinit must be built static (.cargo/config.toml)");
    let busybox = Path::new("/bin/busybox");
    assert_static(
        busybox,
        "run scripts/setup-docker.sh (Debian's busybox-static)",
    );
    let ctx = TempDir::new("recipe-rinit");
    ctx.copy_in(&rinit, "rinit");
    let rinit_image = build(
        "rinit-test/rinit-image",
        &root_dir().join("packaging/Dockerfile"),
        ctx.path(),
        &[("VERSION", "0.0.0-test")],
    );
    let base = TempDir::new("recipe-busybox");
    base.copy_in(busybox, "busybox");
    let busybox_base = build_text(
        "rinit-test/busybox-cp",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY busybox /bin/cp\n",
        &base,
    );
    let empty = TempDir::new("recipe-copier");
    let copier = build(
        "rinit-test/rinit-copier",
        &root_dir().join("deploy/kubernetes/rinit-copier.Dockerfile"),
        empty.path(),
        &[("BASE", &busybox_base), ("RINIT_IMAGE", &rinit_image)],
    );
    // Drains for 1 s on SIGTERM, then exits 0; says each step.
    let app = TempDir::new("recipe-vendor");
    app.copy_in(busybox, "busybox").executable(
        "vendor-worker",
        "#!/bin/sh\n\
         trap 'echo \"vendor-worker: draining\"; sleep 1; echo \"vendor-worker: drained\"; exit 0' TERM\n\
         echo \"vendor-worker: started $*\"\n\
         while true; do sleep 0.1; done\n",
    );
    let vendor = build_text(
        "rinit-test/vendor-worker",
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         COPY busybox /bin/sh\n\
         COPY busybox /bin/sleep\n\
         COPY vendor-worker /usr/local/bin/vendor-worker\n\
         ENTRYPOINT [\"/usr/local/bin/vendor-worker\"]\n\
         CMD [\"--queue\", \"jobs\"]\n",
        &app,
    );
    (copier, vendor)
}

#[test]
fn unmodified_image_recipe_runs_rinit_from_the_shared_volume_in_docker() {
    if !engine("unmodified_image_recipe_runs_rinit_from_the_shared_volume_in_docker") {
        return;
    }
    let file = "deploy/kubernetes/unmodified-image.yaml";
    let doc = &documents(&root_dir().join(file))[0];
    let pod = &doc["spec"]["template"]["spec"];
    let volume = pod["volumes"][0]["name"].as_str().expect("a volume");
    assert!(
        pod["volumes"][0]["emptyDir"].is_object(),
        "{file}: an emptyDir"
    );
    let init = PodContainer::of(&pod["initContainers"][0]);
    let main = PodContainer::of(rinit_container(pod));
    let window = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("period");
    let (copier, vendor) = recipe_images();
    assert!(
        !docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/busybox",
            &vendor,
            "test",
            "-e",
            "/opt/rinit/rinit"
        ])
        .ok(),
        "the vendor image must not hold rinit itself"
    );

    let vol = Volume(format!("rinit-test-recipe-{}", std::process::id()));
    docker_ok(&["volume", "create", "--label", "rinit-test=1", &vol.0]);
    // The init container, to completion, as the kubelet runs it first.
    let copy = Container::run("recipe-init", &init.run_args(&copier, volume, &vol.0));
    assert_eq!(
        copy.wait(Duration::from_secs(60)),
        0,
        "init container:\n{}",
        copy.logs()
    );
    // The app container, with the pod's variables a kubelet sets.
    let mut args = vec![
        "-e".to_string(),
        "KUBERNETES_SERVICE_HOST=127.0.0.1".to_string(),
    ];
    args.extend(main.run_args(&vendor, volume, &vol.0));
    let c = Container::run("recipe-app", &args);
    wait_for("the vendor worker's start", Duration::from_secs(30), || {
        c.logs()
            .contains("vendor-worker: started --queue jobs")
            .then_some(())
    });
    let took = c.stop(u32::try_from(window).expect("seconds"));
    let logs = c.logs();
    assert_eq!(c.state().exit_code, 0, "{logs}");
    assert_eq!(
        c.signals_sent(),
        ["15"],
        "SIGTERM only, never Docker's SIGKILL"
    );
    assert!(
        logs.contains("vendor-worker: drained"),
        "the worker drained:\n{logs}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("rinit's JSON line"))
        .collect();
    let start = phase(&lines, "start");
    assert!(
        start.len() == 1
            && start[0]["mode"] == "pid1"
            && start[0]["platform"] == "kubernetes"
            && start[0]["grace"] == "25s"
            && start[0]["kill_after"] == "30s"
            && start[0]["window"] == "known",
        "rinit as PID 1 with the recipe's grace and window:\n{logs}"
    );
    let exit = phase(&lines, "exit");
    assert!(
        exit.len() == 1 && exit[0]["status"] == 0 && exit[0]["escalated"] == false,
        "{logs}"
    );
    eprintln!(
        "recipe: rinit from the volume as PID 1, stop {} ms, exit 0",
        took.as_millis()
    );
}
