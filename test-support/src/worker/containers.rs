//! The worker in Docker, under rinit, as Dockerfile.example builds it: the
//! image, a container against the emulators, and a `docker stop` checked
//! clean, for the worker's tests/docker.rs (stops at random moments); its
//! image for tests/swarm.rs too.

use super::{assert_summary_consistent, n, summary, worker_vars, TestEnv};
use crate::docker::{build, engine, static_base, Container};
use crate::{assert_clean_exit, root_dir, wait_every, TempDir};
use serde_json::Value;
use std::time::Duration;

/// Where a Docker test of the worker starts: the emulators with `topic`,
/// `sub` and `bucket`, and the worker's image. `None` (the test returns)
/// where the Docker engine or the emulators are missing outside CI.
pub fn docker_setup(test: &str, topic: &str, sub: &str, bucket: &str) -> Option<(TestEnv, String)> {
    if !engine(test) {
        return None;
    }
    let env = TestEnv::start_with(topic, sub, bucket)?;
    Some((env, worker_image()))
}

/// Dockerfile.example itself, from a local stand-in for its distroless base,
/// with this run's static binaries. Returns the tag.
pub fn worker_image() -> String {
    worker_image_on(&static_base(), "rinit-test/worker")
}

/// Dockerfile.example on `base` (an image with the CA bundle the test
/// wants) with this run's static binaries, tagged into `repo`.
pub fn worker_image_on(base: &str, repo: &str) -> String {
    let (worker, rinit) = super::static_binaries();
    let ctx = TempDir::new("worker-image");
    ctx.copy_in(&rinit, "rinit")
        .copy_in(&worker, "pubsub-gcs-worker");
    build(
        repo,
        &root_dir().join("Dockerfile.example"),
        ctx.path(),
        &[("BASE", base)],
    )
}

/// What one worker container pulls, where it writes, and how hard.
#[derive(Clone, Copy, Debug)]
pub struct Replica<'a> {
    pub subscription: &'a str,
    pub bucket: &'a str,
    /// STORAGE_EMULATOR_HOST: the emulator, or a proxy in front of it.
    pub storage: &'a str,
    /// CONCURRENCY (MAX_OUTSTANDING_MESSAGES is ten times it).
    pub concurrency: u32,
}

/// Starts one worker container named after `label` from `image`, against
/// `env`'s Pub/Sub; returns once the worker has started.
pub fn start_worker(env: &TestEnv, image: &str, label: &str, replica: Replica) -> Container {
    let Replica {
        subscription: sub,
        bucket,
        storage,
        concurrency,
    } = replica;
    let mut vars = worker_vars(sub, bucket, &env.pubsub_host(), storage);
    vars.extend([
        ("LEASE_EXTENSION", "10s".to_string()),
        ("CONCURRENCY", concurrency.to_string()),
        ("MAX_OUTSTANDING_MESSAGES", (concurrency * 10).to_string()),
    ]);
    let mut args: Vec<String> = Vec::new();
    for (k, v) in vars {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
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
    assert_clean_exit(&logs, what);
    let s = summary(&logs);
    assert_summary_consistent(&s);
    assert_eq!(n(&s, "exit_code"), 0, "{s}");
    (s, took)
}
