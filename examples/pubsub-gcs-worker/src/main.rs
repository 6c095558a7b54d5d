//! rinit's reference child: a Pub/Sub → Cloud Storage worker.
//!
//! It pulls a subscription with StreamingPull, stores each message as the
//! object `<prefix><message_id>` (created with `ifGenerationMatch=0`, so a
//! redelivery never duplicates it), acks only after the write, goes quiet
//! on SIGTSTP (resuming on SIGCONT), and drains cleanly on SIGTERM/SIGINT.
//! See README.md for configuration and exit codes, src/lib.rs for the map.

use std::io::Write;

fn main() {
    let code = pubsub_gcs_worker::run();
    // Do not wait for the client libraries' background tasks: every ack
    // that matters was flushed by the drain.
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
