//! MAX_OUTSTANDING_BYTES bounds what the worker holds, whatever the message
//! sizes: against the real Pub/Sub emulator, with a storage stand-in that
//! holds every upload for a while and records how many bytes it is holding
//! at once (fake-gcs-server answers too fast to see any overlap).

use rinit_test_support::worker::{n, pseudo_random_bytes, GcsKind, TestEnv, TestMessage};
use rinit_test_support::{eventually, tcp_server, Running};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// How long the stand-in holds each upload before answering.
const HOLD: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Seen {
    /// Body sizes of the uploads being held right now.
    active: Vec<usize>,
    /// Most uploads held at once, and the most bytes (while none is big).
    max_uploads: usize,
    max_bytes: usize,
    /// Uploads that overlapped one larger than `big`.
    big_not_alone: usize,
    /// Object names uploaded (the `name` query parameter).
    names: Vec<String>,
}

/// A Cloud Storage stand-in: answers every upload with an object resource
/// after HOLD, and records the overlap.
struct SlowStorage {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl SlowStorage {
    /// `big`: a body above this size must be the only upload in progress.
    fn start(big: usize) -> SlowStorage {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let port = tcp_server(move |conn| {
            let s = s.clone();
            std::thread::spawn(move || serve(conn, &s, big));
        });
        SlowStorage { port, seen }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("stand-in state"))
    }
}

/// One keep-alive connection: requests until the client closes it.
fn serve(conn: TcpStream, seen: &Mutex<Seen>, big: usize) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        let Some(body) = read_body(&mut r, length, chunked) else {
            return;
        };
        let name = target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("name="))
            .unwrap_or("")
            .to_string();
        {
            let mut s = seen.lock().expect("stand-in state");
            if s.active.iter().any(|&n| n > big) || (body > big && !s.active.is_empty()) {
                s.big_not_alone += 1;
            }
            s.active.push(body);
            s.max_uploads = s.max_uploads.max(s.active.len());
            if s.active.iter().all(|&n| n <= big) {
                s.max_bytes = s.max_bytes.max(s.active.iter().sum());
            }
        }
        std::thread::sleep(HOLD);
        {
            let mut s = seen.lock().expect("stand-in state");
            if let Some(i) = s.active.iter().position(|&n| n == body) {
                s.active.swap_remove(i);
            }
            s.names.push(name.clone());
        }
        let json = format!(
            r#"{{"kind":"storage#object","name":"{name}","bucket":"b","generation":"1","metageneration":"1","size":"{body}"}}"#
        );
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            json.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(json.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads and discards a body; returns its size.
fn read_body(r: &mut BufReader<TcpStream>, length: usize, chunked: bool) -> Option<usize> {
    if !chunked {
        std::io::copy(&mut r.take(length as u64), &mut std::io::sink()).ok()?;
        return Some(length);
    }
    let mut total = 0;
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        std::io::copy(&mut r.take(n as u64 + 2), &mut std::io::sink()).ok()?;
        total += n;
        if n == 0 {
            return Some(total);
        }
    }
}

/// Publishes `msgs`, runs the worker with CONCURRENCY=16 and the given
/// MAX_OUTSTANDING_BYTES until every message is uploaded, and returns the
/// stand-in's record.
fn run(env: &TestEnv, tag: &str, msgs: &[TestMessage], max_bytes: &str) -> SlowStorage {
    let (topic, sub) = (format!("fc-{tag}-topic"), format!("fc-{tag}-sub"));
    env.create_topic_and_subscription(&topic, &sub, 30);
    let ids = env.publish(&topic, msgs);
    let storage = SlowStorage::start(4 * MIB);
    let mut cmd = env.worker_command(&sub, "fc-bucket");
    cmd.env(
        "STORAGE_EMULATOR_HOST",
        format!("http://127.0.0.1:{}", storage.port),
    )
    .env("CONCURRENCY", "16")
    .env("MAX_OUTSTANDING_MESSAGES", "100")
    .env("MAX_OUTSTANDING_BYTES", max_bytes);
    let mut w = Running::spawn("worker", cmd);
    let want: BTreeSet<String> = ids.into_iter().collect();
    let all = eventually(Duration::from_secs(60), || {
        storage.seen(|s| want.is_subset(&s.names.iter().cloned().collect()))
    });
    w.signal(libc::SIGTERM);
    let st = w.wait(Duration::from_secs(30));
    assert!(all, "not every message was uploaded within 60 s");
    assert_eq!(st.code(), Some(0), "worker exit status");
    assert_eq!(
        n(&w.summary(), "acked") as usize,
        msgs.len(),
        "every message acked once"
    );
    storage
}

/// With 16 write slots and messages of 1000 KiB, a 4 MiB bound lets at most
/// four be held at once; a 5 MiB message (above the bound) is stored alone.
/// The same messages with the bound at 64 MiB overlap far more, so the
/// bound, not the emulator's pace, is what kept them apart.
#[test]
fn max_outstanding_bytes_bounds_large_messages() {
    let Some(env) = TestEnv::start(GcsKind::FakeGcs) else {
        return;
    };
    let mut msgs: Vec<TestMessage> = (0..16)
        .map(|i| TestMessage::new(pseudo_random_bytes(i, 1000 * KIB)))
        .collect();
    msgs.push(TestMessage::new(pseudo_random_bytes(99, 5 * MIB)));

    let bounded = run(&env, "bounded", &msgs, "4MiB");
    let (uploads, bytes, big_not_alone) =
        bounded.seen(|s| (s.max_uploads, s.max_bytes, s.big_not_alone));
    eprintln!("4MiB bound: at most {uploads} uploads, {bytes} bytes at once");
    assert!(
        uploads <= 4,
        "{uploads} uploads of 1000 KiB held at once under a 4 MiB bound"
    );
    // Multipart bodies: each payload plus under 1 KiB of metadata.
    assert!(
        bytes <= 4 * MIB,
        "{bytes} bytes held at once under a 4 MiB bound"
    );
    assert_eq!(
        big_not_alone, 0,
        "the 5 MiB message overlapped other uploads"
    );

    let unbounded = run(&env, "unbounded", &msgs, "64MiB");
    let uploads = unbounded.seen(|s| s.max_uploads);
    eprintln!("64MiB bound: at most {uploads} uploads at once");
    assert!(
        uploads > 4,
        "without the bound only {uploads} uploads overlapped"
    );
}
