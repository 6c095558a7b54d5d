//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) on stable,
//! through the same property checks the cargo-fuzz targets run
//! (fuzz/props/rinit.rs), so CI checks every input the fuzzer ever kept:
//! no panic, every rejection one line with exit status 2, everything
//! accepted round-trips. For `cli`, the real binary also runs each rejected
//! command line and must print exactly that line and exit 2.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../fuzz/props/rinit.rs"]
mod props;

use rinit_test_support::corpus::{corpus, replay};

/// One test per fuzz target, named for it: its corpus replayed through its
/// property (the same check for every target, so one body).
macro_rules! corpus_tests {
    ($($test:ident => $target:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            replay(stringify!($target), props::$target);
        }
    )*};
}

corpus_tests!(
    cli_corpus => cli,
    duration_corpus => duration,
    signals_corpus => signals,
    sequence_corpus => sequence,
);

/// At most this many binary runs (each a few milliseconds).
const BINARY_RUNS: usize = 400;

/// The real `rinit` with each rejected (or help/version) command line of the
/// `cli` corpus, and only that environment: it exits 2 with exactly the one
/// line the in-process parse gives on stderr (0 with the text on stdout for
/// help and version). Accepted command lines are not run: their command is
/// whatever the fuzzer wrote.
#[test]
fn cli_rejections_from_the_binary() {
    let rinit = env!("CARGO_BIN_EXE_rinit");
    let stops: Vec<_> = corpus("cli")
        .into_iter()
        .filter_map(|(path, data)| {
            let inv = props::decode(&data);
            inv.parse().err().map(|stop| (path, inv, stop))
        })
        .collect();
    assert!(stops.len() >= 20, "only {} rejections", stops.len());
    // An even spread over the corpus when there are more than BINARY_RUNS.
    let step = stops.len().div_ceil(BINARY_RUNS);
    let mut ran = 0;
    for (path, inv, stop) in stops.iter().step_by(step) {
        let what = format!("{} ({:?})", path.display(), inv.args);
        let mut child = Command::new(rinit)
            .args(&inv.args)
            .env_clear()
            // rinit never reads PATH while parsing; should it ever run a
            // command here after all, a bare name finds nothing.
            .envs(inv.env.iter().filter(|(k, _)| k != "PATH").cloned())
            .env("PATH", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{rinit}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{what}: rinit still running after 5s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = child.wait_with_output().expect("output");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(stop.status), "{what}: {stderr}");
        if stop.status == 0 {
            assert_eq!((&*stdout, &*stderr), (&*stop.text, ""), "{what}");
        } else {
            assert_eq!(stdout, "", "{what}");
            assert_eq!(stderr, format!("{}\n", stop.text), "{what}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
        }
        ran += 1;
    }
    println!(
        "{ran} of {} rejected command lines run through rinit",
        stops.len()
    );
    assert!(ran >= 20, "ran {ran}");
}
