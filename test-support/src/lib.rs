//! What rinit's tests and the reference worker's tests share, in one place so
//! that each rule exists once: a temp dir, a poll with a deadline, reading
//! /proc, reading rinit's log lines (one strictness), deciding "is this CI?"
//! (one rule), running commands with a timeout, processes that die with
//! their guard, the Docker helpers, a fault-injecting proxy, and a
//! single-node Docker Swarm; with the feature `worker`, the worker's
//! harness (the emulators, their REST APIs, the worker's image).
//!
//! Test code: it panics with a message instead of returning errors, since a
//! failed helper is a failed test.

pub mod ci;
pub mod cmd;
pub mod corpus;
pub mod docker;
pub mod faultproxy;
pub mod fs;
pub mod logs;
pub mod process;
pub mod procfs;
pub mod rng;
pub mod signals;
pub mod swarm;
pub mod wait;
#[cfg(feature = "worker")]
pub mod worker;

pub use ci::ci;
pub use cmd::{launch_as_pid1, run, run_ok, try_run, Out};
pub use fs::{root_dir, TempDir};
pub use logs::{assert_clean_exit, json_lines, phase, text_field, text_phase};
pub use process::{black_hole, free_port, tcp_server, Proc, Running};
pub use rng::Rng;
pub use wait::{eventually, eventually_every, poll, wait_every, wait_for};
