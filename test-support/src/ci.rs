//! Whether the tests run in CI, where a missing prerequisite (a Docker engine,
//! an emulator) is a failure rather than a skip.

/// `CI` set to `true` or `1` (what CI systems export). One rule for every
/// test, so a prerequisite cannot be required in one file and skipped in
/// another.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
