//! The drain budget rinit hands the worker (issue 18): with no DRAIN_TIMEOUT,
//! the worker's drain timeout is rinit's RINIT_DRAIN_MS, so it gives up
//! before rinit's deadline whatever the grace; with neither, 6 s (under
//! rinit's default grace of 8 s); a DRAIN_TIMEOUT set by hand wins, with one
//! WARNING at start when it outlasts rinit's budget.
//!
//! The start line is read before any connection matters: both emulator
//! hosts point at a closed port.

use rinit_test_support::worker::{rinit_bin, worker_bin, worker_vars};
use rinit_test_support::Running;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The worker's environment, JSON logs, no emulator listening.
fn configure(c: &mut Command) {
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(worker_vars(
            "sub-b",
            "bucket-b",
            "127.0.0.1:9",
            "127.0.0.1:9",
        ));
}

/// The worker alone, with `vars` set.
fn worker(vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(worker_bin());
    configure(&mut c);
    c.envs(vars.iter().copied());
    c
}

/// Starts `cmd` and returns its "worker started" line and every WARNING
/// line before it, then stops it.
fn start_line(label: &'static str, cmd: Command) -> (Value, Vec<Value>) {
    let mut w = Running::spawn(label, cmd);
    w.wait_for_line(Duration::from_secs(20), |l| {
        l.contains("\"worker started\"")
    })
    .unwrap_or_else(|| panic!("{label}: no start line"));
    let lines = w.json_lines();
    let started = lines
        .iter()
        .position(|v| v["message"] == "worker started")
        .expect("start line");
    let warnings = lines[..started]
        .iter()
        .filter(|v| v["severity"] == "WARNING")
        .cloned()
        .collect();
    w.signal(libc::SIGTERM);
    w.wait(Duration::from_secs(20));
    (lines[started].clone(), warnings)
}

fn drain_timeout(start: &Value) -> (u64, &str) {
    (
        start["drain_timeout_ms"]
            .as_u64()
            .expect("drain_timeout_ms"),
        start["drain_timeout_from"]
            .as_str()
            .expect("drain_timeout_from"),
    )
}

/// Under the real rinit, no DRAIN_TIMEOUT: the worker takes the budget
/// rinit computed for its grace (the grace less rinit's 1 s margin).
#[test]
fn under_rinit_the_drain_timeout_is_rinits_budget() {
    for (grace, budget) in [("5s", 4000), ("12", 11_000)] {
        let mut cmd = Command::new(rinit_bin());
        cmd.arg(format!("--grace={grace}"))
            .arg("--platform=none")
            .arg("--")
            .arg(worker_bin());
        configure(&mut cmd);
        let (start, warnings) = start_line("rinit+worker", cmd);
        assert_eq!(
            drain_timeout(&start),
            (budget, "RINIT_DRAIN_MS"),
            "--grace={grace}: {start}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}

/// The budget handed down by hand, as rinit sets it: taken as is.
#[test]
fn rinit_drain_ms_sets_the_drain_timeout() {
    let (start, warnings) = start_line("worker", worker(&[("RINIT_DRAIN_MS", "4321")]));
    assert_eq!(drain_timeout(&start), (4321, "RINIT_DRAIN_MS"), "{start}");
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// Neither DRAIN_TIMEOUT nor rinit's budget: 6 s.
#[test]
fn without_rinit_the_drain_timeout_is_6s() {
    let (start, warnings) = start_line("worker", worker(&[]));
    assert_eq!(drain_timeout(&start), (6000, "default"), "{start}");
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// DRAIN_TIMEOUT set by hand wins; longer than rinit's budget, it is one
/// WARNING at start naming both values; within it, no warning.
#[test]
fn a_drain_timeout_over_the_budget_is_one_warning() {
    let over = worker(&[("DRAIN_TIMEOUT", "10s"), ("RINIT_DRAIN_MS", "7000")]);
    let (start, warnings) = start_line("worker", over);
    assert_eq!(drain_timeout(&start), (10_000, "DRAIN_TIMEOUT"), "{start}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let message = warnings[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("DRAIN_TIMEOUT=10s") && message.contains("RINIT_DRAIN_MS=7000"),
        "{message}"
    );
    assert_eq!(warnings[0]["drain_timeout_ms"], 10_000);
    assert_eq!(warnings[0]["rinit_drain_ms"], 7000);

    let within = worker(&[("DRAIN_TIMEOUT", "5s"), ("RINIT_DRAIN_MS", "7000")]);
    let (start, warnings) = start_line("worker", within);
    assert_eq!(drain_timeout(&start), (5000, "DRAIN_TIMEOUT"), "{start}");
    assert!(warnings.is_empty(), "{warnings:?}");
}
