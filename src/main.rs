//! rinit: a container init with a bounded drain.
//!
//! `main` only wires the parts: parse and check the configuration, set up
//! logging, and hand over to the supervisor loop.
//!
//! `no_main`: rinit is entered from C's `main`, skipping std's runtime
//! start-up (`lang_start`). That start-up reads /proc/self/maps with sscanf
//! to place a main-thread stack guard, installs SIGSEGV/SIGBUS handlers on a
//! new sigaltstack, polls fds 0-2 and ignores SIGPIPE (which rinit resets at
//! once anyway): measured on a 2-CPU EPYC VM, 42k instructions and ~85 µs of
//! every start, and it links std's panic-backtrace printer, 136 KB of the
//! static binary (bench/run, issue 6). `std::env::args` still works (glibc
//! hands argv to std's init_array hook).

#![cfg_attr(not(test), no_main)]

mod cli;
mod log;
mod platform;
mod reap;
mod shutdown;
mod signals;
mod spawn;
mod supervisor;

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    run()
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> ! {
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
    std::process::exit(supervisor::run(cfg));
}
