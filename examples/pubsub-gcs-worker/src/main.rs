//! rinit's reference child: a Pub/Sub → Cloud Storage worker.
//!
//! It pulls a subscription with StreamingPull, stores each message as the
//! object `<prefix><message_id>` (created with `ifGenerationMatch=0`, so a
//! redelivery never duplicates it), acks only after the write, goes quiet
//! on SIGTSTP (resuming on SIGCONT), and drains cleanly on SIGTERM/SIGINT.
//! See README.md for configuration and exit codes.

// In the library (src/lib.rs), where the fuzz target reaches it too.
use pubsub_gcs_worker::config;
mod health;
mod logging;
mod shutdown;
mod store;
mod worker;

use std::io::Write;

fn main() {
    let code = real_main();
    // Do not wait for the client libraries' background tasks: every ack
    // that matters was flushed by the drain.
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn real_main() -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match config::parse(std::env::args_os(), &env) {
        Ok(config::Parsed::Run(cfg)) => *cfg,
        Ok(config::Parsed::Print(text)) => {
            print!("{text}");
            return worker::EXIT_OK;
        }
        Err(e) => {
            eprintln!("pubsub-gcs-worker: {e}");
            return worker::EXIT_CONFIG;
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
            return worker::EXIT_FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match worker::install_signal_handlers() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return worker::EXIT_FAILURE;
            }
        };
        worker::run(cfg, signals).await
    })
}
