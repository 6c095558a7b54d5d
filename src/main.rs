//! rinit: a container init with a bounded drain.
//!
//! `main` only hands over to the library (src/lib.rs), which parses and
//! checks the configuration, sets up logging and runs the supervisor loop.
//!
//! `no_main`: rinit is entered from C's `main`, skipping std's runtime
//! start-up (`lang_start`). That start-up reads /proc/self/maps with sscanf
//! to place a main-thread stack guard, installs SIGSEGV/SIGBUS handlers on a
//! new sigaltstack, polls fds 0-2 and ignores SIGPIPE (which rinit resets at
//! once anyway): measured on a 2-CPU EPYC VM, 42k instructions and ~85 µs of
//! every start, and it links std's panic-backtrace printer, 136 KB of the
//! static binary (bench/run, issue 6). `std::env::args` still works (glibc
//! hands argv to std's init_array hook).

// Under `cargo test` the harness brings its own `main` (and finds no tests).
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    rinit::run()
}
