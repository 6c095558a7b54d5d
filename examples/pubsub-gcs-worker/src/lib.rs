//! The worker's configuration as a library, so that the fuzz target
//! (fuzz/fuzz_targets/worker_config.rs) and its corpus replay
//! (tests/fuzz_config.rs) drive the same parser in-process (issue 13). The
//! binary takes it from here too (main.rs).

pub mod config;
