//! What rinit's fuzz targets check, as plain functions of the input bytes.
//! The cargo-fuzz targets (fuzz/fuzz_targets/) call them under libFuzzer;
//! tests/fuzz_corpus.rs calls them on stable for every committed corpus file,
//! so CI re-checks every input the fuzzer ever kept. A broken property is a
//! panic, which libFuzzer records as a crash.
//!
//! Input format, all targets: items separated by NUL bytes (which no argv or
//! environment string can hold). For `cli`, an item starting with `\x01` is
//! an environment entry `NAME=VALUE`, any other item the next argument, so a
//! corpus file reads as the command line it stands for.

#![allow(dead_code)] // Each includer uses some of these.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use rinit::cli::{self, Config, Stop, PRESETS};
use rinit::platform::{self, fmt, MAX_DURATION};
use rinit::shutdown::Stage;
use rinit::signals::{self, Rewrites};

/// One `rinit` invocation: `argv[1..]` and the environment.
#[derive(Debug)]
pub struct Invocation {
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

/// Decodes fuzz bytes into an invocation (see the module comment).
pub fn decode(data: &[u8]) -> Invocation {
    let mut inv = Invocation {
        args: Vec::new(),
        env: Vec::new(),
    };
    for item in data.split(|&b| b == 0) {
        match item.strip_prefix(b"\x01") {
            Some(entry) => {
                // A name must be non-empty and cannot hold '='; entries the
                // OS could not carry are dropped.
                if let Some(eq) = entry.iter().position(|&b| b == b'=').filter(|&i| i > 0) {
                    inv.env.push((
                        OsString::from_vec(entry[..eq].to_vec()),
                        OsString::from_vec(entry[eq + 1..].to_vec()),
                    ));
                }
            }
            None => inv.args.push(OsString::from_vec(item.to_vec())),
        }
    }
    inv
}

impl Invocation {
    /// What `std::env::var(k).ok()` returns in a process started with this
    /// environment, as rinit's `main` reads it: the last entry of that name,
    /// `None` when it is not UTF-8.
    pub fn var(&self, k: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone().into_string().ok())
    }

    /// `cli::parse` as the binary calls it.
    pub fn parse(&self) -> Result<Config, Stop> {
        cli::parse(self.args.iter().cloned(), &|k| self.var(k))
    }
}

/// One line a terminal shows as one line: no control character (newline,
/// carriage return, escape, ...) and no Unicode line or paragraph separator.
pub fn is_one_line(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// What the user sees for any `Stop`: help or version on stdout with status
/// 0, or exactly one `rinit: ...` line with status 2.
pub fn check_stop(stop: &Stop) {
    match stop.status {
        0 => assert!(
            stop.text.starts_with("rinit") && stop.text.ends_with('\n'),
            "help/version text: {:?}",
            stop.text
        ),
        2 => assert!(
            stop.text.starts_with("rinit: ") && is_one_line(&stop.text),
            "a rejection must be one line: {:?}",
            stop.text
        ),
        s => panic!("exit status {s} for {:?}", stop.text),
    }
}

/// A sub-parser's error wrapped as `cli::parse` wraps it. `cli::usage`
/// escapes control characters, so the one-line part holds by construction
/// here; what this adds is the status and the prefix. The one-line property
/// itself is checked end to end by the `cli` target and by the replay through
/// the real binary (tests/fuzz_corpus.rs).
fn check_rejection(err: String) {
    check_stop(&cli::usage(err));
}

/// A duration printed as rinit prints it parses back to itself.
pub fn check_duration_round_trip(d: Duration) {
    let text = fmt(d);
    assert_eq!(
        platform::parse_duration("--grace", &text),
        Ok(d),
        "{d:?} printed as {text:?}"
    );
}

/// A resolved stop sequence printed back (`cli::sequence_text`) and parsed
/// again gives the same plan; every step runs after the pre-stop delay and
/// before the deadline, earliest first.
pub fn check_sequence(seq: &[Stage], grace: Option<Duration>, pre_stop: Duration) {
    assert!(!seq.is_empty());
    for pair in seq.windows(2) {
        assert!(pair[0].at <= pair[1].at, "not in order: {seq:?}");
    }
    for s in seq {
        assert!(
            s.at >= pre_stop,
            "{s:?} before the pre-stop delay {pre_stop:?}"
        );
        assert!(
            grace.is_none_or(|g| s.at < g),
            "{s:?} past the grace {grace:?}"
        );
    }
    let text = cli::sequence_text(seq, pre_stop);
    assert_eq!(
        cli::parse_sequence(&text, &platform::Sources::FLAGS, grace, pre_stop).as_deref(),
        Ok(seq),
        "printed as {text:?}"
    );
}

/// Target `cli`: the whole command line and environment.
pub fn cli(data: &[u8]) {
    match decode(data).parse() {
        Err(stop) => check_stop(&stop),
        Ok(cfg) => {
            assert!(!cfg.command.is_empty());
            let plan = &cfg.plan;
            if let Some(g) = plan.grace {
                assert!(!g.is_zero() && g <= MAX_DURATION, "grace {g:?}");
                assert!(plan.pre_stop < g, "pre-stop {:?} >= grace", plan.pre_stop);
                check_duration_round_trip(g);
            }
            check_duration_round_trip(plan.pre_stop);
            if let Some(seq) = &plan.sequence {
                check_sequence(seq, plan.grace, plan.pre_stop);
            }
            assert!(!plan.stop_signals.is_empty());
            for &s in &plan.stop_signals {
                assert!(
                    signals::catchable(s) && s != libc::SIGCHLD,
                    "stop signal {s}"
                );
            }
            for &c in &cfg.expect_exit {
                assert!((0..=255).contains(&c));
            }
        }
    }
}

/// Target `duration`: `platform::parse_duration`.
pub fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match platform::parse_duration("--grace", &text) {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
            check_duration_round_trip(d);
        }
        Err(e) => check_rejection(e),
    }
}

/// Target `signals`: signal names and numbers, and a `--rewrite` table built
/// from every NUL-separated item, in order (later pairs win).
pub fn signals(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut table = Rewrites::default();
    // What the table must do: (from, to) per accepted pair, the latest last.
    let mut model: Vec<(i32, i32)> = Vec::new();
    for item in text.split('\0') {
        for allow_zero in [false, true] {
            match signals::parse(item, allow_zero) {
                Ok(n) => {
                    assert!(
                        (n == 0 && allow_zero) || (1..=signals::rtmax()).contains(&n),
                        "{item:?} gave {n}"
                    );
                    let name = signals::name(n);
                    assert_eq!(
                        signals::parse(&name, allow_zero),
                        Ok(n),
                        "{n} named {name:?}"
                    );
                }
                Err(e) => check_rejection(e),
            }
        }
        match table.add(item) {
            Ok(()) => {
                let (from, to) = item.split_once(':').expect("an accepted pair has a ':'");
                let pair = (
                    signals::parse(from, false).expect("accepted FROM parses"),
                    signals::parse(to, true).expect("accepted TO parses"),
                );
                model.retain(|&(f, _)| f != pair.0);
                model.push(pair);
            }
            Err(e) => check_rejection(e),
        }
    }
    // The table, and the same table written with rinit's own names.
    let mut again = Rewrites::default();
    for &(f, t) in &model {
        let spec = format!("{}:{}", signals::name(f), signals::name(t));
        assert_eq!(again.add(&spec), Ok(()), "{spec:?}");
    }
    for s in 1..=signals::rtmax() {
        let want = model.iter().find(|&&(f, _)| f == s).map_or(s, |&(_, t)| t);
        assert_eq!(table.apply(s), want, "signal {s} with {model:?}");
        assert_eq!(again.apply(s), want, "signal {s}, names printed back");
    }
}

/// Target `sequence`: `SEQ[\0GRACE[\0PRE_STOP]]`, and every preset against
/// that grace and pre-stop delay. GRACE is a duration or `none`; a missing or
/// unparsable GRACE is 8s, PRE_STOP 0s.
pub fn sequence(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut items = text.split('\0');
    let seq = items.next().unwrap_or("");
    let grace = match items.next() {
        Some(g) if g.trim() == "none" => None,
        Some(g) => Some(
            platform::parse_duration("--grace", g)
                .ok()
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(8)),
        ),
        None => Some(Duration::from_secs(8)),
    };
    let pre_stop = items
        .next()
        .and_then(|p| platform::parse_duration("--pre-stop-delay", p).ok())
        .unwrap_or(Duration::ZERO);
    let presets = PRESETS.iter().map(|(_, s, _)| *s);
    for text in std::iter::once(seq).chain(presets) {
        match cli::parse_sequence(text, &platform::Sources::FLAGS, grace, pre_stop) {
            Ok(stages) => check_sequence(&stages, grace, pre_stop),
            Err(e) => check_rejection(e),
        }
    }
}
