//! `cargo fuzz run signals`: see fuzz/props/rinit.rs for the input format and
//! the properties (shared with the stable corpus replay, tests/fuzz_corpus.rs).
#![no_main]

#[path = "../props/rinit.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::signals(data));
