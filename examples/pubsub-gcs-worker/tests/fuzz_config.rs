//! Replays the committed fuzz corpus of the worker's configuration
//! (fuzz/corpus/worker_config/) on stable, through the same property check
//! the cargo-fuzz target runs (fuzz/props/worker.rs): no panic, every
//! rejection one `configuration error: ...` line, every accepted
//! configuration printed back as flags parses to itself.

use std::path::{Path, PathBuf};

use pubsub_gcs_worker::config;

#[path = "../../../fuzz/props/worker.rs"]
mod props;

#[test]
fn worker_config_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/worker_config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    // A missing or emptied corpus would make this test pass on nothing.
    assert!(
        files.len() >= 20,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            std::panic::catch_unwind(|| props::config(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs break a property (reproduce with `cargo fuzz run worker_config FILE`):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
