//! Soak (issue 13): rinit as PID 1 under sustained load, watched from
//! outside. Mixed signals are forwarded to the probe (each one paced so none
//! can coalesce, so every one sent must arrive), orphans are re-parented to
//! rinit in bursts and must all be reaped, and at the end a storm of signals
//! hits rinit during a drain that must still end at the grace deadline.
//! rinit's RSS and open fds are sampled throughout and must stay flat.
//!
//! The test command runs a short version (about 30 s); `bench/soak` runs the
//! long one (10 minutes, 1,000,000 signals, 100,000 orphans) through the same
//! code, by setting the `RINIT_SOAK_*` variables read by `Params::from_env`,
//! and prints the summary table this test writes.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{mono_ns, probe_bin, sig_name, text_field, Mode, Rinit, TempDir};

/// How long and how hard. The defaults are the short version.
#[derive(Debug)]
struct Params {
    /// The loaded phase lasts at least this long; the targets below are
    /// spread evenly over it.
    secs: u64,
    /// Signals forwarded before the stop, at least.
    signals: u64,
    /// Orphans reaped before the stop, at least.
    orphans: u64,
    /// Orphans per burst.
    burst: u64,
    /// Signals sent during the drain.
    storm: u64,
    /// rinit's `--grace`, in seconds: the drain must end this long after the
    /// stop (the probe ignores SIGTERM, so only the deadline ends it).
    grace: u64,
}

impl Params {
    fn from_env() -> Params {
        let var = |k: &str, default: u64| {
            std::env::var(k).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{k}={v:?} is not a number"))
            })
        };
        Params {
            secs: var("RINIT_SOAK_SECS", 20),
            signals: var("RINIT_SOAK_SIGNALS", 100_000),
            orphans: var("RINIT_SOAK_ORPHANS", 10_000),
            burst: var("RINIT_SOAK_BURST", 500),
            storm: var("RINIT_SOAK_STORM", 10_000),
            grace: var("RINIT_SOAK_GRACE", 3),
        }
    }
}

/// RSS may move by this much over the run (allocator arenas settle, the
/// stack's deepest page is touched once) but not grow with the load: a
/// leak of even one byte per forwarded signal would show ten times over in
/// the short run.
const RSS_SLACK_KB: u64 = 64;

/// The drain may end this long after the grace: SIGKILL, reap, exit, and
/// this test noticing (it polls every 2 ms), on a loaded 2-core machine.
const DRAIN_SLACK: Duration = Duration::from_millis(1000);

/// How long one batch of signals, or one burst of orphans, may take to be
/// forwarded or reaped before the test calls it lost.
const PATIENCE: Duration = Duration::from_secs(15);

/// Forwardable signals of both kinds: classic ones (which coalesce while
/// pending) and every real-time one (which queue). Not the stop signals,
/// SIGCHLD, or job control, which mean something else to rinit.
fn kinds() -> Vec<i32> {
    let classic = [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGWINCH,
        libc::SIGURG,
        libc::SIGPWR,
        libc::SIGVTALRM,
    ];
    classic
        .into_iter()
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
        .collect()
}

/// How rinit's log names a signal (`SIGHUP`, `SIGRTMIN+3`), from the
/// tests' own table rather than rinit's code (NOTES.md, "Tests").
fn log_name(signo: i32) -> String {
    let rtmin = libc::SIGRTMIN();
    match signo {
        s if s < rtmin => sig_name(s),
        s if s == rtmin => "SIGRTMIN".to_string(),
        s => format!("SIGRTMIN+{}", s - rtmin),
    }
}

/// One sample of rinit's resources.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kb: u64,
    fds: u64,
}

fn sample(pid: i32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample { rss_kb, fds })
}

/// Samples rinit every `every` until stopped or rinit is gone.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: i32, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match sample(pid) {
                    Some(x) => s.lock().expect("samples").push(x),
                    None => return,
                }
                std::thread::sleep(every);
            }
        });
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.take()
    }
}

/// Sends signals to rinit and counts the probe's record lines, so each
/// batch can wait until everything before it has arrived.
struct Sender {
    rinit: i32,
    record: File,
    lines: u64,
    sent: u64,
    per_kind: BTreeMap<i32, u64>,
    buf: Vec<u8>,
}

impl Sender {
    fn new(rinit: i32, record: &str) -> Sender {
        Sender {
            rinit,
            record: File::open(record).unwrap_or_else(|e| panic!("{record}: {e}")),
            lines: 0,
            sent: 0,
            per_kind: BTreeMap::new(),
            buf: vec![0; 1 << 16],
        }
    }

    fn send(&mut self, signo: i32) {
        common::kill(self.rinit, signo);
        self.sent += 1;
        *self.per_kind.entry(signo).or_default() += 1;
    }

    /// Reads what the probe appended since the last call.
    fn count_lines(&mut self) {
        loop {
            let n = self.record.read(&mut self.buf).expect("read record");
            if n == 0 {
                return;
            }
            self.lines += self.buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }

    /// One of each kind (real-time ones twice: they queue), then waits until
    /// the probe has recorded all of them. A classic signal is sent again
    /// only once its previous one arrived, so none can coalesce.
    fn batch(&mut self, kinds: &[i32]) {
        for &k in kinds {
            self.send(k);
            if k >= libc::SIGRTMIN() {
                self.send(k);
            }
        }
        let end = Instant::now() + PATIENCE;
        loop {
            self.count_lines();
            if self.lines >= self.sent {
                assert_eq!(self.lines, self.sent, "the probe got more than was sent");
                return;
            }
            assert!(
                Instant::now() < end,
                "lost: {} signals sent, {} arrived after {PATIENCE:?}",
                self.sent,
                self.lines
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// rinit's children (host pids), from the kernel's list.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `n` orphans inside rinit's namespace: a probe entered into it with
/// nsenter forks a middle process that forks `n` and exits, so the kernel
/// re-parents all `n` to the namespace's init, rinit, and they exit in one
/// burst. Returns how long until rinit had reaped them all (its only child
/// is the main one again); fails if that takes longer than `PATIENCE`.
fn orphan_burst(rinit: i32, n: u64) -> Duration {
    let out = Command::new("nsenter")
        .arg(format!("--target={rinit}"))
        .arg("--pid")
        .arg("--")
        .arg(probe_bin())
        .args(["--orphans", &n.to_string(), "--exit", "0"])
        .output()
        .expect("nsenter (util-linux)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "orphan burst: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    loop {
        let left = children(rinit);
        if left.len() <= 1 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "{} of rinit's children still there {PATIENCE:?} after a burst of {n}",
            left.len() - 1
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits for rinit's "draining" line, reading only the end of its log (by
/// then it holds a line per forwarded signal).
fn wait_for_drain(log: &Path) {
    use std::io::{Seek, SeekFrom};
    let end = Instant::now() + PATIENCE;
    let mut f = File::open(log).expect("rinit's log");
    let mut tail = Vec::new();
    loop {
        let len = f.metadata().expect("log size").len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
            .expect("seek");
        tail.clear();
        f.read_to_end(&mut tail).expect("read log");
        if String::from_utf8_lossy(&tail).contains("stop signal received; draining") {
            return;
        }
        assert!(Instant::now() < end, "no drain {PATIENCE:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The probe's record, as counts per signal name (after `since_ns` only).
fn received(record: &Path, since_ns: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let f = File::open(record).expect("record");
    for line in BufReader::new(f).lines() {
        let line = line.expect("record line");
        let mut parts = line.split_whitespace();
        if let (Some(_pid), Some(sig), Some(ns)) = (parts.next(), parts.next(), parts.next()) {
            if ns.parse::<u64>().is_ok_and(|ns| ns >= since_ns) {
                *out.entry(sig.to_string()).or_default() += 1;
            }
        }
    }
    out
}

#[test]
fn soak_as_pid1() {
    let p = Params::from_env();
    let dir = TempDir::new("soak");
    let (record, ready) = (dir.file("record"), dir.file("ready"));
    // Opened by the sender before the probe has anything to write.
    File::create(&record).expect("record file");
    let grace = Duration::from_secs(p.grace);
    // -v: every forward and every reaped batch is a log line, so rinit's
    // own count can be checked against what was sent and created.
    let mut run = Rinit::new(Mode::Pid1, &dir)
        .opts(["-v", "--platform=none", &format!("--grace={}s", p.grace)])
        .probe(["--record", &record, "--ready", &ready, "--ignore", "TERM"])
        .spawn();
    run.ready(&ready);
    let rinit = run.rinit_pid();
    let kinds = kinds();
    let started = Instant::now();
    let every = Duration::from_millis(if p.secs > 60 { 1000 } else { 250 });
    let sampler = Sampler::start(rinit, every);
    let mut sender = Sender::new(rinit, &record);

    // The loaded phase: both targets spread evenly over `secs`, so the load
    // lasts the whole time (with short pauses once ahead of schedule).
    let span = Duration::from_secs(p.secs);
    let (mut orphans, mut bursts, mut slowest_burst) = (0u64, 0u64, Duration::ZERO);
    let mut warm: Option<Sample> = None;
    loop {
        let elapsed = started.elapsed();
        let due = |total: u64| {
            (total as f64 * (elapsed.as_secs_f64() / span.as_secs_f64()).min(1.0)) as u64
        };
        let mut busy = false;
        if sender.sent < p.signals && sender.sent <= due(p.signals) + 5_000 {
            for _ in 0..20 {
                sender.batch(&kinds);
            }
            busy = true;
        }
        if orphans < p.orphans && orphans <= due(p.orphans) {
            slowest_burst = slowest_burst.max(orphan_burst(rinit, p.burst));
            orphans += p.burst;
            bursts += 1;
            busy = true;
        }
        if warm.is_none() && bursts > 0 {
            // After the first burst and the first signals: the steady state.
            warm = sample(rinit);
        }
        if elapsed >= span && sender.sent >= p.signals && orphans >= p.orphans {
            break;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let loaded = started.elapsed();
    let before_stop = sampler.take();

    // The drain under a storm: SIGTERM (ignored by the probe, so only the
    // deadline can end the drain), then `storm` signals of every kind,
    // QUIT and repeated TERMs among them, spread over the first half of the
    // grace.
    let stop_ns = mono_ns();
    let stopped = Instant::now();
    run.signal(libc::SIGTERM);
    // The storm starts once the drain has: signals pending together are
    // taken lowest number first, so a HUP sent with the TERM would be
    // forwarded before the drain began.
    wait_for_drain(&dir.path().join("rinit.stderr"));
    let mut storm_kinds = kinds.clone();
    storm_kinds.extend([libc::SIGTERM, libc::SIGQUIT]);
    let mut storm_sent: BTreeMap<i32, u64> = BTreeMap::new();
    for i in 0..p.storm {
        let k = storm_kinds[i as usize % storm_kinds.len()];
        common::kill(rinit, k);
        *storm_sent.entry(k).or_default() += 1;
        if i % 100 == 99 {
            let on_time = grace / 2 * (i as u32 + 1) / p.storm as u32;
            if let Some(wait) = on_time.checked_sub(stopped.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let storm_took = stopped.elapsed();
    // `finish` counts its timeout from the spawn.
    let done = run.finish(started.elapsed() + grace + PATIENCE);
    let drain = done.ended - stopped;
    let samples = sampler.finish();

    // What rinit says it did.
    let (mut forwarded, mut reaped, mut drain_forwards) = (0u64, 0u64, 0u64);
    let mut forwarded_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for line in done.stderr.lines() {
        if line.contains(" forward: forwarded ") {
            if line.contains(" DEBUG ") {
                forwarded += 1;
                *forwarded_kinds
                    .entry(text_field(line, "signal").unwrap_or_default())
                    .or_default() += 1;
            } else {
                drain_forwards += 1;
            }
        } else if line.contains(" reaped: reaped orphans ") {
            reaped += text_field(line, "count")
                .and_then(|c| c.parse::<u64>().ok())
                .expect("reaped count");
        }
    }
    let got = received(Path::new(&record), 0);
    let got_in_storm = received(Path::new(&record), stop_ns);

    let warm = warm.expect("a sample after the first burst");
    let first = samples.first().copied().expect("samples");
    let last_loaded = before_stop
        .last()
        .copied()
        .expect("samples before the stop");
    let max_rss = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let (min_fds, max_fds) = (
        samples.iter().map(|s| s.fds).min().unwrap_or(0),
        samples.iter().map(|s| s.fds).max().unwrap_or(0),
    );
    let table = format!(
        "rinit soak as PID 1 ({p:?})\n\
         | what | figure |\n|---|---|\n\
         | loaded phase | {:.0} s |\n\
         | signals sent (paced, {} kinds) | {} |\n\
         | forwarded (rinit's log) | {forwarded} |\n\
         | received by the probe | {} |\n\
         | orphans created, in bursts of {} | {orphans} ({bursts} bursts) |\n\
         | orphans reaped (rinit's log) | {reaped} |\n\
         | slowest burst, last orphan reaped | {} ms |\n\
         | RSS first / warm / last before stop / max (KiB) | {} / {} / {} / {max_rss} |\n\
         | open fds min / max | {min_fds} / {max_fds} |\n\
         | samples | {} (every {every:?}) |\n\
         | storm during the drain | {} signals in {} ms, {drain_forwards} forwarded |\n\
         | drain: stop to rinit's exit (grace {}s) | {} ms, exit status {} |\n",
        loaded.as_secs_f64(),
        kinds.len(),
        sender.sent,
        got.values().sum::<u64>() - got_in_storm.values().sum::<u64>(),
        p.burst,
        slowest_burst.as_millis(),
        first.rss_kb,
        warm.rss_kb,
        last_loaded.rss_kb,
        samples.len(),
        p.storm,
        storm_took.as_millis(),
        p.grace,
        drain.as_millis(),
        done.status,
    );
    println!("{table}");
    if let Ok(path) = std::env::var("RINIT_SOAK_REPORT") {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    // Every signal sent before the stop was forwarded once and arrived,
    // kind by kind.
    let sent_kinds: BTreeMap<String, u64> = sender
        .per_kind
        .iter()
        .map(|(&k, &n)| (log_name(k), n))
        .collect();
    assert_eq!(forwarded_kinds, sent_kinds, "forwarded vs sent\n{table}");
    assert_eq!(forwarded, sender.sent, "forwarded vs sent\n{table}");
    for (&k, &n) in &sender.per_kind {
        let arrived = got.get(&sig_name(k)).copied().unwrap_or(0)
            - got_in_storm.get(&sig_name(k)).copied().unwrap_or(0);
        assert_eq!(arrived, n, "{} sent {n} times\n{table}", sig_name(k));
    }
    // Every orphan was reaped by rinit, burst by burst (orphan_burst waited
    // for each), and its log accounts for each one.
    assert_eq!(reaped, orphans, "reaped vs created\n{table}");
    // Flat: no fd opened for good, RSS within the slack of the warm sample.
    assert_eq!(min_fds, max_fds, "open fds changed\n{table}");
    assert!(
        max_rss <= warm.rss_kb + RSS_SLACK_KB,
        "RSS grew past {} + {RSS_SLACK_KB} KiB\n{table}",
        warm.rss_kb
    );
    // The storm was forwarded while draining: every queued (real-time) one
    // arrived, classic ones at least once each (they may coalesce).
    for (&k, &n) in &storm_sent {
        let arrived = got_in_storm.get(&sig_name(k)).copied().unwrap_or(0);
        match k {
            libc::SIGTERM => {} // Ignored by the probe, and a repeat is not forwarded.
            k if k >= libc::SIGRTMIN() => {
                assert_eq!(arrived, n, "{} during the drain\n{table}", sig_name(k))
            }
            _ => assert!(arrived >= 1, "{} during the drain\n{table}", sig_name(k)),
        }
    }
    // And the drain still ended at the deadline, the probe killed by rinit.
    assert!(
        drain >= grace && drain <= grace + DRAIN_SLACK,
        "drain took {drain:?}, grace {grace:?}\n{table}"
    );
    assert_eq!(done.status, 128 + libc::SIGKILL, "{table}");
}
