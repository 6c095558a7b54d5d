//! `cargo fuzz run worker_config`: see fuzz/props/worker.rs for the input
//! format and the properties (shared with the stable corpus replay,
//! examples/pubsub-gcs-worker/tests/fuzz_config.rs).
#![no_main]

// The worker's config module itself, not the worker crate: it needs only
// clap and humantime, while the crate would build its Google clients with
// coverage instrumentation for nothing.
#[path = "../../examples/pubsub-gcs-worker/src/config.rs"]
#[allow(dead_code)]
mod config;

#[path = "../props/worker.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::config(data));
