//! rinit as a library: the modules behind the `rinit` binary.
//!
//! The binary (src/main.rs) is only a C `main` calling [`run`]. The split
//! exists so the parsers can be driven in-process by the fuzz targets
//! (fuzz/) and by the corpus replay test (tests/fuzz_corpus.rs); nothing
//! here is a stable API. With LTO, what the binary does not call is not
//! linked, so the split costs the shipped binary nothing measurable
//! (README, "Reliability").

pub mod cli;
pub mod log;
pub mod platform;
pub mod procfs;
pub mod reap;
pub mod shutdown;
pub mod signals;
pub mod spawn;
pub mod supervisor;

/// How long rinit's exit waits for a stalled log reader to take its last
/// lines.
const EXIT_FLUSH: std::time::Duration = std::time::Duration::from_millis(200);

/// The whole of rinit: parse and check the configuration, set up logging,
/// and hand over to the supervisor loop. Never returns.
pub fn run() -> ! {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match cli::parse(std::env::args_os().skip(1), &env) {
        Ok(cfg) => cfg,
        Err(stop) => {
            // Help and version to stdout, errors to stderr; a closed or full
            // stream must not turn a usage error into a panic.
            use std::io::Write;
            let _ = if stop.status == 0 {
                std::io::stdout().write_all(stop.text.as_bytes())
            } else {
                writeln!(std::io::stderr(), "{}", stop.text)
            };
            std::process::exit(stop.status);
        }
    };
    log::init(cfg.log_format, cfg.log_level);
    let status = supervisor::run(cfg);
    // A stalled log reader gets a moment for the last lines, never more:
    // the platform's SIGKILL is at most a second away.
    log::flush_before_exit(EXIT_FLUSH);
    std::process::exit(status);
}
