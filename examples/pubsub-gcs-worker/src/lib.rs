//! rinit's reference child as a library: the binary (src/main.rs) is one
//! call into [`run`]. A library so that the fuzz target's corpus replay
//! (tests/fuzz_config.rs) drives the configuration parser in-process, and
//! tests/probe.rs the Pub/Sub health probe (the fuzz target itself compiles
//! src/config.rs alone, see fuzz/fuzz_targets/worker_config.rs).
//!
//! Where things are (docs/architecture.md has the map): the state machine
//! in `worker` (pull, quiet) and `worker::drain` (drain, flush); one
//! message's write in `task` and `store`; the stream in `stream`, its byte
//! budget in `budget`; the service checks in `health` and `probe`.

pub mod config;
pub mod probe;

mod budget;
mod clients;
mod health;
mod logging;
mod shutdown;
mod signals;
mod store;
mod stream;
mod summary;
mod task;
mod worker;

/// What a failed check found, as [`probe::PubsubProbe::check`] returns it.
pub use health::Kind;
pub use worker::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};

/// Parses the configuration, starts logging and the runtime, and runs the
/// worker; returns the exit status (see README.md, "Exit codes").
pub fn run() -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match config::parse(std::env::args_os(), &env) {
        Ok(config::Parsed::Run(cfg)) => *cfg,
        Ok(config::Parsed::Print(text)) => {
            print!("{text}");
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("pubsub-gcs-worker: {e}");
            return EXIT_CONFIG;
        }
    };
    logging::init(cfg.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return EXIT_FAILURE;
            }
        };
        worker::run(cfg, signals).await
    })
}
