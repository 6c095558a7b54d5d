//! The worker in Docker, under rinit, as Dockerfile.example builds it: the
//! image, a container against the emulators, and a `docker stop` checked
//! clean. Shared by tests/docker.rs (stops at random moments) and
//! tests/rolling.rs (a rolling deploy of three replicas).

use super::{assert_summary_consistent, n, TestEnv, PROJECT};
use rinit_test_support::docker::{build, static_base, Container};
use rinit_test_support::{root_dir, text_phase, wait_every, TempDir};
use serde_json::Value;
use std::time::Duration;

/// Dockerfile.example itself, from a local stand-in for its distroless base,
/// with this run's static binaries. Returns the tag.
pub fn worker_image() -> String {
    let (worker, rinit) = super::static_binaries();
    let base = static_base();
    let ctx = TempDir::new("worker-image");
    ctx.copy_in(&rinit, "rinit")
        .copy_in(&worker, "pubsub-gcs-worker");
    build(
        "rinit-test/worker",
        &root_dir().join("Dockerfile.example"),
        ctx.path(),
        &[("BASE", &base)],
    )
}

/// The worker's JSON summary line in `docker logs`.
pub fn summary(logs: &str) -> Value {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("\"message\":\"summary\""))
        .unwrap_or_else(|| panic!("no worker summary in docker logs:\n{logs}"));
    serde_json::from_str(&line[line.find('{').expect("JSON")..]).expect("summary is JSON")
}

/// Starts one worker container from `image` against `env`'s Pub/Sub,
/// pulling `(subscription, bucket)`, writing to Cloud Storage at `storage`
/// with `concurrency` writers; returns once the worker has started.
pub fn start_worker(
    env: &TestEnv,
    image: &str,
    label: &str,
    (sub, bucket): (&str, &str),
    storage: &str,
    concurrency: u32,
) -> Container {
    let vars = [
        format!("PROJECT_ID={PROJECT}"),
        format!("SUBSCRIPTION_ID={sub}"),
        format!("BUCKET_NAME={bucket}"),
        format!("PUBSUB_EMULATOR_HOST={}", env.pubsub_host()),
        format!("STORAGE_EMULATOR_HOST={storage}"),
        "LOG_FORMAT=json".to_string(),
        "LEASE_EXTENSION=10s".to_string(),
        format!("CONCURRENCY={concurrency}"),
        format!("MAX_OUTSTANDING_MESSAGES={}", concurrency * 10),
    ];
    let mut args: Vec<String> = Vec::new();
    for v in vars {
        args.push("-e".into());
        args.push(v);
    }
    args.push(image.to_string());
    let c = Container::run(label, &args);
    wait_every(
        "\"worker started\" in docker logs",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            c.logs()
                .contains("\"message\":\"worker started\"")
                .then_some(())
        },
    );
    c
}

/// `docker stop -t 10` and everything that proves a clean, rinit-bounded
/// stop: exit 0 within 9 s, SIGTERM the only signal in the engine's events
/// (never its SIGKILL), rinit's exit line unescalated and nothing killed by
/// rinit, a consistent worker summary. Returns the summary and how long the
/// stop took.
pub fn stop_cleanly(c: &Container, what: &str) -> (Value, Duration) {
    let took = c.stop(10);
    let state = c.state();
    let logs = c.logs();
    assert_eq!(
        state.exit_code, 0,
        "{what}: exit code; docker logs:\n{logs}"
    );
    assert!(
        took < Duration::from_secs(9),
        "{what}: docker stop took {took:?} (Docker's SIGKILL is at 10 s)"
    );
    assert_eq!(
        c.signals_sent(),
        ["15"],
        "{what}: the engine sent SIGTERM only, never its SIGKILL"
    );
    let exit = text_phase(&logs, "exit");
    assert!(
        exit.len() == 1 && exit[0].contains("status=0") && exit[0].contains("escalated=false"),
        "{what}: rinit's exit line: {exit:?}\n{logs}"
    );
    assert!(
        text_phase(&logs, "kill").is_empty(),
        "{what}: rinit killed nothing:\n{logs}"
    );
    let s = summary(&logs);
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "exit_code"), 0, "{s}");
    (s, took)
}
