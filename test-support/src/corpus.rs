//! The committed fuzz corpora (fuzz/corpus/<target>/), replayed on stable by
//! rinit's and the worker's tests through the same property checks the
//! cargo-fuzz targets run.

use std::path::PathBuf;

use crate::root_dir;

/// Every file of one target's corpus, sorted by name, with its bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root_dir().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    // A missing or emptied corpus would make a replay pass on nothing.
    assert!(
        files.len() >= 20,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Runs `check` on every input of `target`, naming each one that fails.
pub fn replay(target: &str, check: fn(&[u8])) {
    let inputs = corpus(target);
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(|| check(data)).is_err())
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs break a property (reproduce with `cargo fuzz run {target} FILE`):\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}
