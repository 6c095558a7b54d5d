//! rinit as a library: the modules behind the `rinit` binary.
//!
//! The binary (src/main.rs) is only a C `main` calling [`run`]. The split
//! exists so the parsers can be driven in-process by the fuzz targets
//! (fuzz/) and by the corpus replay test (tests/fuzz_corpus.rs); nothing
//! here is a stable API. With LTO, what the binary does not call is not
//! linked, so the split costs the shipped binary nothing measurable
//! (README, "Reliability").

pub mod cause;
pub mod cli;
pub mod log;
pub mod platform;
pub mod procfs;
pub mod reap;
pub mod report;
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
    let vars = environment();
    let env = |k: &str| {
        vars.iter()
            .find(|(name, _)| *name == k.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_string)
    };
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

extern "C" {
    /// The process's environment (POSIX).
    static environ: *const *const libc::c_char;
}

/// The process's environment as it started, one `NAME=value` C string per
/// variable: read by `environment` and handed on to the child by `spawn`.
/// Raw pointers: a caller looks at the first byte before paying a `strlen`.
pub(crate) fn environ_vars() -> impl Iterator<Item = *const libc::c_char> {
    // SAFETY: `environ` is the NUL-terminated array of NUL-terminated
    // strings the process started with; nothing in rinit changes it (no
    // setenv, single-threaded), so its strings live as long as the process.
    let mut e = unsafe { environ };
    std::iter::from_fn(move || unsafe {
        if e.is_null() || (*e).is_null() {
            return None;
        }
        let var = *e;
        e = e.add(1);
        Some(var)
    })
}

/// The variables rinit reads, as (name, value), taken in one pass over the
/// environment: rinit's own (`RINIT_*`, tini's and dumb-init's) and the
/// platforms' markers. A `getenv` each cost ~3,000 instructions of every
/// start (bench/run, figure 2); any variable the configuration reads must
/// match one of these prefixes.
fn environment() -> Vec<(&'static [u8], &'static [u8])> {
    let mut found = Vec::new();
    for var in environ_vars() {
        // SAFETY: `var` is a NUL-terminated string of the environment, which
        // lives as long as the process (`environ_vars`).
        let first = unsafe { *var } as u8;
        // The first byte rules out nearly every variable at no cost.
        let read: &[&[u8]] = match first {
            b'R' => &[b"RINIT_"],
            b'T' => &[b"TINI_"],
            b'D' => &[b"DUMB_INIT_"],
            b'C' => &[b"CLOUD_RUN_"],
            b'E' => &[b"ECS_CONTAINER_METADATA_URI_V4="],
            b'K' => &[b"K_SERVICE=", b"KUBERNETES_SERVICE_HOST="],
            _ => continue,
        };
        // SAFETY: as above.
        let var = unsafe { std::ffi::CStr::from_ptr(var) }.to_bytes();
        if read.iter().any(|p| var.starts_with(p)) {
            if let Some(eq) = var.iter().position(|&b| b == b'=') {
                found.push((&var[..eq], &var[eq + 1..]));
            }
        }
    }
    found
}
