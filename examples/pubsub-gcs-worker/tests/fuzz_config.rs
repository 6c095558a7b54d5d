//! Replays the committed fuzz corpus of the worker's configuration
//! (fuzz/corpus/worker_config/) on stable, through the same property check
//! the cargo-fuzz target runs (fuzz/props/worker.rs): no panic, every
//! rejection one `configuration error: ...` line, every accepted
//! configuration printed back as flags parses to itself.

use pubsub_gcs_worker::config;

#[path = "../../../fuzz/props/worker.rs"]
mod props;

use rinit_test_support::corpus::replay;

#[test]
fn worker_config_corpus() {
    replay("worker_config", props::config);
}
