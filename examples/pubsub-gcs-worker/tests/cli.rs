//! Bad configuration: exit status 2 and one line naming the problem, before
//! any connection is attempted (the emulator hosts below point at a port
//! nobody listens on; a connection attempt would show as a hang or a
//! different error). And the one start-up failure an image can cause before
//! any connection: no CA bundle, exit 1 with a line that says so.

use std::process::Command;
use std::time::{Duration, Instant};

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pubsub-gcs-worker"));
    c.env_clear()
        .env("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
        .env("STORAGE_EMULATOR_HOST", "127.0.0.1:9");
    c
}

/// Runs the worker and returns (exit code, stderr).
fn run(mut c: Command) -> (Option<i32>, String) {
    let start = Instant::now();
    let out = c.output().expect("run worker");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a config error must be reported at once"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_config_error(c: Command, needle: &str) {
    let (code, stderr) = run(c);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "exactly one line, got: {stderr:?}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
}

#[test]
fn missing_everything_names_all_three() {
    let (code, stderr) = run(worker());
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    for v in ["PROJECT_ID", "SUBSCRIPTION_ID", "BUCKET_NAME"] {
        assert!(stderr.contains(v), "{v} not named in {stderr:?}");
    }
}

#[test]
fn missing_bucket_only() {
    let mut c = worker();
    c.env("PROJECT_ID", "proj")
        .env("SUBSCRIPTION_ID", "subscription");
    let (code, stderr) = run(c);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("BUCKET_NAME"), "{stderr:?}");
    assert!(!stderr.contains("PROJECT_ID"), "{stderr:?}");
}

#[test]
fn empty_env_counts_as_missing() {
    let mut c = worker();
    c.env("PROJECT_ID", "proj")
        .env("SUBSCRIPTION_ID", "subscription")
        .env("BUCKET_NAME", "");
    assert_config_error(c, "BUCKET_NAME");
}

fn valid() -> Command {
    let mut c = worker();
    c.env("PROJECT_ID", "proj")
        .env("SUBSCRIPTION_ID", "subscription")
        .env("BUCKET_NAME", "bucket");
    c
}

#[test]
fn malformed_values_are_named() {
    let cases: [(&str, &str, &str); 7] = [
        ("CONCURRENCY", "many", "CONCURRENCY"),
        ("MAX_OUTSTANDING_MESSAGES", "0", "MAX_OUTSTANDING_MESSAGES"),
        ("DRAIN_TIMEOUT", "soon", "DRAIN_TIMEOUT"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("PUBSUB_EMULATOR_HOST", "localhost", "PUBSUB_EMULATOR_HOST"),
        (
            "STORAGE_EMULATOR_HOST",
            "http://host:notaport",
            "STORAGE_EMULATOR_HOST",
        ),
        ("BUCKET_NAME", "Not A Bucket", "BUCKET_NAME"),
    ];
    for (var, value, needle) in cases {
        let mut c = valid();
        c.env(var, value);
        assert_config_error(c, needle);
    }
}

#[test]
fn flags_work_like_env_and_unknown_flags_fail() {
    let mut c = worker();
    c.args(["--project-id", "proj", "--subscription-id", "subscription"]);
    assert_config_error(c, "BUCKET_NAME");
    let mut c = valid();
    c.arg("--no-such-flag");
    assert_config_error(c, "--no-such-flag");
}

#[test]
fn help_exits_zero() {
    let out = worker().arg("--help").output().expect("run worker");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SUBSCRIPTION_ID") && text.contains("DRAIN_TIMEOUT"),
        "{text}"
    );
}

/// No CA certificates (SSL_CERT_FILE names a file that is not there, so the
/// machine's own bundle is not read): the Cloud Storage client cannot be
/// built even for a plain-HTTP emulator, and the one error line says what is
/// missing and what to set, not only the library's "could not initialize
/// transport client".
#[test]
fn a_missing_ca_bundle_is_named() {
    let mut c = valid();
    c.env("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt");
    let (code, stderr) = run(c);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    for needle in [
        "start-up failed",
        "cannot create the Cloud Storage client: no CA certificates found",
        "/nonexistent/ca-certificates.crt",
        "SSL_CERT_FILE",
        "plain-HTTP emulator",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
}
