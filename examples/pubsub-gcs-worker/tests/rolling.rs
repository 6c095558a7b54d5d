//! A rolling deploy (issue 13, part 3a): three replicas of the worker in
//! Docker under rinit (the Dockerfile.example image), the oldest replaced
//! every few seconds (`docker stop -t 10`, then a new container) while a
//! publisher thread keeps a steady flow of messages.
//!
//! Every stop must be clean (exit 0 within 9 s, SIGTERM the only signal in
//! Docker's own events, rinit's exit line unescalated, a consistent
//! summary); at the end every published message is stored exactly once,
//! byte-exact, each object created once over all replicas, and the
//! subscription is drained. Each stop's time is recorded: the `docker stop`
//! call and the worker's own `drain_ms`, median and max.
//!
//! The suite runs it for 30 s; `bench/rolling-deploy` runs it for 3 minutes
//! or more (RINIT_ROLLING_SECS) and writes a table (RINIT_ROLLING_REPORT).

use rinit_test_support::docker::Container;
use rinit_test_support::faultproxy::{Fault, FaultProxy};
use rinit_test_support::wait_every;
use rinit_test_support::worker::{
    docker_setup, figures, n, start_worker, stop_cleanly, Flow, Replica,
};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
/// Time between replacements (after the new replica has started).
const EVERY: Duration = Duration::from_secs(3);
/// Writers per replica.
const CONCURRENCY: u32 = 4;
/// The flow: `PER_TICK` messages every `TICK` (40 a second).
const PER_TICK: u64 = 4;
const TICK: Duration = Duration::from_millis(100);
const TOPIC: &str = "topic-rolling";
const SUB: &str = "sub-rolling";
const BUCKET: &str = "bucket-rolling";

/// How long the deploy rolls: RINIT_ROLLING_SECS, else 30 s.
fn rolling_for() -> Duration {
    let secs = std::env::var("RINIT_ROLLING_SECS")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("RINIT_ROLLING_SECS={v:?} is not a number"))
        })
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// One replacement's stop.
struct Stop {
    took: Duration,
    summary: Value,
}

/// Median and max of `v` (not empty), in ms.
fn median_max(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() - 1])
}

#[test]
fn rolling_deploy_of_three_replicas_loses_and_duplicates_nothing() {
    let Some((env, image)) = docker_setup(
        "rolling_deploy_of_three_replicas_loses_and_duplicates_nothing",
        TOPIC,
        SUB,
        BUCKET,
    ) else {
        return;
    };
    let length = rolling_for();
    // Each chunk the workers send to storage held 150 ms, a slow real
    // write: the replicas are busy about half the time, so most stops land
    // on writes in flight.
    let slow = FaultProxy::tcp(env.gcs_port);
    slow.set_default(Fault::Delay(Duration::from_millis(150)));
    let storage = format!("http://{}", slow.host());
    let replica = Replica {
        subscription: SUB,
        bucket: BUCKET,
        storage: &storage,
        concurrency: CONCURRENCY,
    };
    let start = |label: &str| start_worker(&env, &image, label, replica);

    let publishing = AtomicBool::new(true);
    let mut stops: Vec<Stop> = Vec::new();
    let t0 = Instant::now();
    let flow = Flow {
        backlog: 0,
        per_tick: PER_TICK,
        tick: TICK,
    };
    let (ids, msgs, mut replicas) = std::thread::scope(|scope| {
        let publisher = scope.spawn(|| env.publish_until(TOPIC, flow, &publishing));
        let mut replicas: VecDeque<Container> = (0..REPLICAS).map(|_| start("replica")).collect();
        while t0.elapsed() < length {
            std::thread::sleep(EVERY);
            let oldest = replicas.pop_front().expect("three replicas");
            let (summary, took) = stop_cleanly(&oldest, &format!("stop {}", stops.len() + 1));
            eprintln!(
                "stop {:3} at {:5.1} s: docker stop {:4} ms, {}",
                stops.len() + 1,
                t0.elapsed().as_secs_f64(),
                took.as_millis(),
                figures(&summary),
            );
            stops.push(Stop { took, summary });
            drop(oldest);
            replicas.push_back(start("replica"));
        }
        publishing.store(false, Ordering::Relaxed);
        let (ids, msgs) = publisher.join().expect("publisher thread");
        (ids, msgs, replicas)
    });
    let rolled = t0.elapsed();
    eprintln!(
        "{} stops in {:.1} s, {} messages published",
        stops.len(),
        rolled.as_secs_f64(),
        ids.len()
    );

    // The last replicas store the rest, then stop as cleanly.
    wait_every(
        &format!("{} objects in the bucket", ids.len()),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || (env.list_objects(BUCKET).len() >= ids.len()).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut finals = Vec::new();
    while let Some(c) = replicas.pop_front() {
        finals.push(stop_cleanly(&c, "final stop").0);
    }
    // The figures first (the table shows them), then the full check.
    let (lost, extra) = env.lost_and_extra(BUCKET, &ids);
    let summaries: Vec<&Value> = stops.iter().map(|s| &s.summary).chain(&finals).collect();
    let total = |key: &str| -> u64 { summaries.iter().map(|s| n(s, key)).sum() };
    let created = total("created");
    let twice = created.saturating_sub(ids.len() as u64);
    eprintln!("lost {lost}, extra objects {extra}, objects written twice {twice}");
    env.assert_stored_exactly_once(BUCKET, SUB, &ids, &msgs);
    assert_eq!(created, ids.len() as u64, "each object created once");

    let min_stops = (length.as_secs() / 6).max(3) as usize;
    assert!(
        stops.len() >= min_stops,
        "{} stops in {rolled:?}: replacements too slow",
        stops.len()
    );
    let busy = stops
        .iter()
        .filter(|s| n(&s.summary, "in_flight_at_stop") + n(&s.summary, "nacked_unstarted") > 0)
        .count();
    assert!(
        busy > 0,
        "no stop landed on work in flight: no drain was tested"
    );
    // The drains that had writes to finish, apart: an idle replica's is ~0.
    let writing: Vec<&Stop> = stops
        .iter()
        .filter(|s| n(&s.summary, "in_flight_at_stop") > 0)
        .collect();
    let (writing_median, writing_max) = if writing.is_empty() {
        (0, 0)
    } else {
        median_max(writing.iter().map(|s| n(&s.summary, "drain_ms")).collect())
    };
    let (took_median, took_max) =
        median_max(stops.iter().map(|s| s.took.as_millis() as u64).collect());
    let (drain_median, drain_max) =
        median_max(stops.iter().map(|s| n(&s.summary, "drain_ms")).collect());
    let redelivered = total("already_present");
    let table = format!(
        "| rolling deploy | value |\n|---|---|\n\
         | replicas | {REPLICAS} |\n\
         | duration | {:.0} s |\n\
         | stops (docker stop -t 10) | {} |\n\
         | stops with work in flight or leased | {busy} |\n\
         | messages published | {} |\n\
         | lost | {lost} |\n\
         | duplicate objects (extra, written twice) | {extra}, {twice} |\n\
         | Docker SIGKILLs (engine events) | 0 of {} stops |\n\
         | redeliveries found stored (412) | {redelivered} |\n\
         | docker stop time, median / max | {took_median} / {took_max} ms |\n\
         | worker drain_ms, median / max | {drain_median} / {drain_max} ms |\n\
         | worker drain_ms with writes in flight ({} stops), median / max | {writing_median} / {writing_max} ms |\n",
        rolled.as_secs_f64(),
        stops.len(),
        ids.len(),
        stops.len() + finals.len(),
        writing.len(),
    );
    eprintln!("{table}");
    if let Ok(path) = std::env::var("RINIT_ROLLING_REPORT") {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
