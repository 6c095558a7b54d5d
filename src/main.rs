//! rinit: a container init with a bounded drain.
//!
//! `main` only wires the parts: parse and check the configuration, set up
//! logging, and hand over to the supervisor loop.

mod cli;
mod log;
mod platform;
mod reap;
mod shutdown;
mod signals;
mod spawn;
mod supervisor;

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match cli::parse(std::env::args_os().skip(1), &env) {
        Ok(cfg) => cfg,
        Err(stop) => {
            if stop.status == 0 {
                print!("{}", stop.text);
            } else {
                eprintln!("{}", stop.text);
            }
            std::process::exit(stop.status);
        }
    };
    log::init(cfg.log_format, cfg.log_level);
    std::process::exit(supervisor::run(cfg));
}
