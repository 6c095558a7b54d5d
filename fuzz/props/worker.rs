//! What the `worker_config` fuzz target checks, as a plain function of the
//! input bytes: the cargo-fuzz target calls it under libFuzzer, and the
//! worker's tests/fuzz_config.rs calls it on stable for every committed
//! corpus file. A broken property is a panic.
//!
//! Input format: items separated by NUL bytes; an item starting with `\x01`
//! is an environment entry `NAME=VALUE` (the worker reads
//! `PUBSUB_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST` and rinit's
//! `RINIT_DRAIN_MS` through its `env` parameter), any other item the next
//! argument after argv[0]. The flags'
//! own variables (`PROJECT_ID`, ...) are read by clap from the process
//! environment, which a fuzz target cannot vary safely; every one of them
//! has a flag that goes through the same checks.

#![allow(dead_code)] // Each includer uses some of these.

// The includer provides the worker's `config` module at its root: the fuzz
// target compiles examples/pubsub-gcs-worker/src/config.rs in directly, the
// replay test takes it from the worker's library.
use crate::config::{self, Config, DrainFrom, Endpoint, LogFormat, Parsed};

/// argv (with argv[0]) and the environment entries, from fuzz bytes.
pub fn decode(data: &[u8]) -> (Vec<String>, Vec<(String, String)>) {
    let mut args = vec!["pubsub-gcs-worker".to_string()];
    let mut env = Vec::new();
    for item in data.split(|&b| b == 0) {
        let item = String::from_utf8_lossy(item);
        match item.strip_prefix('\x01') {
            Some(entry) => {
                if let Some((k, v)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) {
                    env.push((k.to_string(), v.to_string()));
                }
            }
            None => args.push(item.into_owned()),
        }
    }
    (args, env)
}

fn lookup(env: &[(String, String)], k: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
}

fn is_one_line(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// The command line and environment that describe `cfg`, written the way an
/// operator would: the full subscription name, durations in humantime's form,
/// each emulator as its URL, rinit's drain budget as rinit hands it down.
fn print_back(cfg: &Config) -> (Vec<String>, Vec<(String, String)>) {
    let dur = rinit::platform::fmt;
    let args = vec![
        "pubsub-gcs-worker".to_string(),
        format!("--project-id={}", cfg.project_id),
        format!("--subscription-id={}", cfg.subscription),
        format!("--bucket-name={}", cfg.bucket),
        format!("--object-prefix={}", cfg.object_prefix),
        format!("--concurrency={}", cfg.concurrency),
        format!(
            "--max-outstanding-messages={}",
            cfg.max_outstanding_messages
        ),
        format!("--write-attempts={}", cfg.write_attempts),
        format!("--write-attempt-timeout={}", dur(cfg.write_attempt_timeout)),
        format!("--lease-extension={}", dur(cfg.lease_extension)),
        format!(
            "--log-format={}",
            match cfg.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        ),
    ];
    let mut args = args;
    if cfg.drain_from == DrainFrom::Set {
        args.push(format!("--drain-timeout={}", dur(cfg.drain_timeout)));
    }
    let mut env = Vec::new();
    if let Some(budget) = cfg.drain_budget {
        env.push(("RINIT_DRAIN_MS".to_string(), budget.as_millis().to_string()));
    }
    for (var, endpoint) in [
        ("PUBSUB_EMULATOR_HOST", &cfg.pubsub_endpoint),
        ("STORAGE_EMULATOR_HOST", &cfg.storage_endpoint),
    ] {
        if let Endpoint::Emulator(url) = endpoint {
            env.push((var.to_string(), url.clone()));
        }
    }
    (args, env)
}

/// The fields `print_back` writes, for the comparison: a field added to
/// `Config` later is left out of the round trip until it is added to both.
fn printed(c: &Config) -> String {
    format!(
        "{:?}",
        (
            (&c.project_id, &c.subscription, &c.bucket, &c.object_prefix),
            (c.concurrency, c.max_outstanding_messages, c.write_attempts),
            (c.drain_timeout, c.drain_from, c.drain_budget),
            (c.write_attempt_timeout, c.lease_extension),
            (c.log_format, &c.pubsub_endpoint, &c.storage_endpoint),
        )
    )
}

/// Target `worker_config`: never a panic; a rejection is one
/// `configuration error: ...` line; an accepted configuration printed back
/// as flags and parsed again is the same configuration.
pub fn config(data: &[u8]) {
    let (args, env) = decode(data);
    match config::parse(&args, &|k| lookup(&env, k)) {
        Err(e) => assert!(
            e.0.starts_with("configuration error: ") && is_one_line(&e.0),
            "a rejection must be one line: {:?}",
            e.0
        ),
        Ok(Parsed::Print(text)) => assert!(!text.is_empty()),
        Ok(Parsed::Run(cfg)) => {
            let (args2, env2) = print_back(&cfg);
            match config::parse(&args2, &|k| lookup(&env2, k)) {
                Ok(Parsed::Run(again)) => assert_eq!(
                    printed(&again),
                    printed(&cfg),
                    "printed back as {args2:?} {env2:?}"
                ),
                Ok(Parsed::Print(_)) => panic!("printed back as help: {args2:?}"),
                Err(e) => panic!("printed back as {args2:?} {env2:?}, refused: {}", e.0),
            }
        }
    }
}
