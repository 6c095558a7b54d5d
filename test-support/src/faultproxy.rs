//! A fault-injecting loopback proxy between a process under test and a
//! service (issue 13, part 2), driven by the test while traffic flows.
//!
//! No packaged tool fits: toxiproxy and friends are not in the registries
//! these machines reach, and the faults wanted are few. So: std::net and a
//! thread or two per connection.
//!
//! - [`FaultProxy::tcp`] relays bytes both ways (gRPC's HTTP/2 to Pub/Sub is
//!   cut at this level): [`FaultProxy::reset_all`] sends RST on every open
//!   connection, [`FaultProxy::refuse`] closes the listening port (connection
//!   refused) until it is reopened, and a [`Fault::Delay`] holds each chunk
//!   the client sends.
//! - [`FaultProxy::http`] reads each HTTP/1.1 request (one per connection:
//!   it asks the service to close, so the client cannot pool around a fault)
//!   and applies the next [`Fault`] of the plan: forward it, answer a status
//!   itself, reset mid-body, reset after the service handled it (the write
//!   happened, the answer is lost), or hold the answer.
//!
//! A reset is a real RST: the socket is closed with `SO_LINGER` 0.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// What happens to the next request (HTTP) or connection (TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Forwarded unchanged.
    Pass,
    /// HTTP: answered by the proxy with this status and a JSON error body;
    /// the service never sees the request.
    Status(u16),
    /// HTTP: the head and half the body reach the service, then both sides
    /// get an RST: an upload cut in the middle.
    ResetMidRequest,
    /// HTTP: the whole request reaches the service and is handled, then the
    /// client gets an RST instead of the answer.
    ResetBeforeResponse,
    /// HTTP: the service's answer is held this long before it is relayed.
    /// TCP: each chunk the client sends is held this long.
    Delay(Duration),
}

/// How often a blocked read looks at its socket's reset flag.
const POLL: Duration = Duration::from_millis(50);
/// A peer that stops reading for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle connection (no byte either way) is dropped after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// One socket of a proxied connection, resettable from the test's thread.
struct Sock {
    s: TcpStream,
    cut: AtomicBool,
}

impl Sock {
    fn new(s: TcpStream) -> Arc<Sock> {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(POLL));
        let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = s.set_nodelay(true);
        Arc::new(Sock {
            s,
            cut: AtomicBool::new(false),
        })
    }

    /// Marks the socket for an RST: the close that follows (once its
    /// threads notice, within [`POLL`]) aborts the connection.
    fn reset(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized value.
        unsafe {
            libc::setsockopt(
                self.s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        self.cut.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// Reads block until data, EOF, an error, a reset or [`IDLE_TIMEOUT`].
impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut waited = Duration::ZERO;
        loop {
            if self.is_cut() {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            match (&self.s).read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    waited += POLL;
                    if waited >= IDLE_TIMEOUT {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.is_cut() {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        (&self.s).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The plan: faults queued for the next requests, then the default.
struct Plan {
    next: VecDeque<Fault>,
    default: Fault,
}

/// What the proxy's threads and the test share.
struct Shared {
    upstream: SocketAddr,
    http: bool,
    plan: Mutex<Plan>,
    refusing: AtomicBool,
    /// Set by the accept loop: whether the port is bound right now.
    listening: AtomicBool,
    stop: AtomicBool,
    socks: Mutex<Vec<Weak<Sock>>>,
    /// Faults applied so far, by fault.
    applied: Mutex<HashMap<Fault, u64>>,
    resets: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    fn take(&self) -> Fault {
        let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        let f = plan.next.pop_front().unwrap_or(plan.default);
        drop(plan);
        *self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(f)
            .or_default() += 1;
        f
    }

    fn register(&self, s: TcpStream) -> Arc<Sock> {
        let sock = Sock::new(s);
        let mut socks = self.socks.lock().unwrap_or_else(PoisonError::into_inner);
        socks.retain(|w| w.strong_count() > 0);
        socks.push(Arc::downgrade(&sock));
        sock
    }

    fn connect_upstream(&self) -> io::Result<Arc<Sock>> {
        TcpStream::connect_timeout(&self.upstream, Duration::from_secs(5)).map(|s| self.register(s))
    }
}

/// A running proxy on 127.0.0.1; stops accepting when dropped (open
/// connections end with their peers).
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A byte relay to `127.0.0.1:upstream_port`.
    pub fn tcp(upstream_port: u16) -> FaultProxy {
        FaultProxy::start(upstream_port, false)
    }

    /// A one-request-per-connection HTTP/1.1 proxy to
    /// `127.0.0.1:upstream_port`, applying the plan's faults per request.
    pub fn http(upstream_port: u16) -> FaultProxy {
        FaultProxy::start(upstream_port, true)
    }

    fn start(upstream_port: u16, http: bool) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            http,
            plan: Mutex::new(Plan {
                next: VecDeque::new(),
                default: Fault::Pass,
            }),
            refusing: AtomicBool::new(false),
            listening: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            socks: Mutex::new(Vec::new()),
            applied: Mutex::new(HashMap::new()),
            resets: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, port, sh));
        FaultProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for a `*_EMULATOR_HOST` variable.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The fault for every request (connection, in TCP mode) once the
    /// queued ones are used up.
    pub fn set_default(&self, f: Fault) {
        self.plan().default = f;
    }

    /// Queues `f` for the next `n` requests (connections, in TCP mode).
    pub fn inject(&self, f: Fault, n: usize) {
        self.plan().next.extend(std::iter::repeat_n(f, n));
    }

    /// Ends every fault: the queue emptied, `Pass` by default, the port open.
    pub fn heal(&self) {
        {
            let mut plan = self.plan();
            plan.next.clear();
            plan.default = Fault::Pass;
        }
        self.refuse(false);
    }

    /// Queued faults not yet applied.
    pub fn pending(&self) -> usize {
        self.plan().next.len()
    }

    /// How many times `f` was applied (Pass included).
    pub fn applied(&self, f: Fault) -> u64 {
        self.shared
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&f)
            .copied()
            .unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Sockets open now (both sides of each proxied connection).
    pub fn open_sockets(&self) -> usize {
        self.shared
            .socks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|w| w.upgrade().is_some_and(|s| !s.is_cut()))
            .count()
    }

    /// Sockets reset by [`FaultProxy::reset_all`] and [`FaultProxy::refuse`].
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Sends an RST on every open connection, both sides; returns how many
    /// sockets were open.
    pub fn reset_all(&self) -> usize {
        let socks: Vec<Arc<Sock>> = self
            .shared
            .socks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        for s in &socks {
            s.reset();
        }
        self.shared
            .resets
            .fetch_add(socks.len() as u64, Ordering::SeqCst);
        socks.len()
    }

    /// `true`: an outage. Open connections are reset and the port closed,
    /// so new ones are refused. `false`: the port listens again.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
        if on {
            self.reset_all();
        }
        // Wait until the accept loop has closed or reopened the port.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.shared.listening.load(Ordering::SeqCst) == on {
            assert!(
                std::time::Instant::now() < deadline,
                "the fault proxy's port did not {}",
                if on { "close" } else { "reopen" }
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.shared
            .plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections, closing the port while refusing and binding the
/// same port again afterwards.
fn accept_loop(listener: TcpListener, port: u16, sh: Arc<Shared>) {
    let mut listener = Some(listener);
    while !sh.stop.load(Ordering::SeqCst) {
        let refusing = sh.refusing.load(Ordering::SeqCst);
        if refusing {
            // Dropping the listener resets what waits in its backlog.
            listener = None;
            sh.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(l) = listener.as_ref() else {
            // std sets SO_REUSEADDR, so the port can be bound again at once,
            // unless an outgoing connection took it as its local port
            // meanwhile: then try again shortly, never in a hot loop.
            listener = TcpListener::bind(("127.0.0.1", port)).ok();
            match &listener {
                Some(l) => {
                    let _ = l.set_nonblocking(true);
                    sh.listening.store(true, Ordering::SeqCst);
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
            continue;
        };
        let _ = l.set_nonblocking(true);
        match l.accept() {
            Ok((client, _)) => {
                sh.connections.fetch_add(1, Ordering::SeqCst);
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let client = sh.register(client);
                    if sh.http {
                        serve_http(&sh, &client);
                    } else {
                        relay_tcp(&sh, client);
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// TCP mode: relays both directions until each closes; an error on one side
/// resets the other, as the peer of a dead connection would see it.
fn relay_tcp(sh: &Shared, client: Arc<Sock>) {
    let delay = match sh.take() {
        Fault::Delay(d) => d,
        Fault::Pass => Duration::ZERO,
        f => panic!("{f:?} is an HTTP fault; this proxy relays TCP"),
    };
    let Ok(server) = sh.connect_upstream() else {
        client.reset();
        return;
    };
    let (c2, s2) = (client.clone(), server.clone());
    std::thread::spawn(move || pump(&s2, &c2, Duration::ZERO));
    pump(&client, &server, delay);
}

/// Copies `from` to `to`, holding each chunk for `delay`.
fn pump(from: &Sock, to: &Sock, delay: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match { from }.read(&mut buf) {
            Ok(0) => {
                let _ = to.s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if { to }.write_all(&buf[..n]).is_err() {
                    from.reset();
                    return;
                }
            }
            Err(_) => {
                to.reset();
                from.reset();
                return;
            }
        }
    }
}

/// The framing of a request body.
enum Body {
    Length(u64),
    Chunked,
}

/// HTTP mode: one request, with the plan's next fault.
fn serve_http(sh: &Shared, client: &Arc<Sock>) {
    let mut reader = BufReader::new(&**client);
    let Some((head, body)) = read_head(&mut reader) else {
        return;
    };
    let fault = sh.take();
    if let Fault::Status(code) = fault {
        let _ = copy_body(&mut reader, &body, None);
        let text =
            format!(r#"{{"error":{{"code":{code},"message":"injected by the fault proxy"}}}}"#);
        let _ = write!(
            &**client,
            "HTTP/1.1 {code} Injected\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        return;
    }
    let Ok(server) = sh.connect_upstream() else {
        client.reset();
        return;
    };
    if (&*server).write_all(head.as_bytes()).is_err() {
        client.reset();
        return;
    }
    if fault == Fault::ResetMidRequest {
        let half = match body {
            Body::Length(n) => n / 2,
            Body::Chunked => 0,
        };
        let _ = copy_body(&mut reader, &Body::Length(half), Some(&server));
        server.reset();
        client.reset();
        return;
    }
    if copy_body(&mut reader, &body, Some(&server)).is_err() {
        server.reset();
        client.reset();
        return;
    }
    let mut response = Vec::new();
    if { &*server }.read_to_end(&mut response).is_err() {
        client.reset();
        return;
    }
    match fault {
        Fault::ResetBeforeResponse => client.reset(),
        Fault::Delay(d) => {
            std::thread::sleep(d);
            let _ = (&**client).write_all(&response);
        }
        _ => {
            let _ = (&**client).write_all(&response);
        }
    }
}

/// Reads a request head; returns it with `connection: close` in place of
/// any connection header, and the body's framing. `None` at EOF or on a
/// malformed head.
fn read_head(r: &mut impl BufRead) -> Option<(String, Body)> {
    let mut head = String::new();
    let mut body = Body::Length(0);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            body = Body::Length(v.trim().parse().ok()?);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            body = Body::Chunked;
        } else if lower.starts_with("connection:") {
            continue;
        }
        head.push_str(&line);
    }
    head.push_str("connection: close\r\n\r\n");
    Some((head, body))
}

/// Copies a body from `r` to `to`, or discards it.
fn copy_body(r: &mut impl BufRead, body: &Body, to: Option<&Sock>) -> io::Result<()> {
    let out = |bytes: &[u8]| match to {
        Some(s) => { s }.write_all(bytes),
        None => Ok(()),
    };
    match body {
        Body::Length(n) => {
            let mut left = *n;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let k = r.read(&mut buf[..left.min(64 * 1024) as usize])?;
                if k == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                out(&buf[..k])?;
                left -= k as u64;
            }
        }
        Body::Chunked => loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            out(size_line.as_bytes())?;
            let size = u64::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    out(l.as_bytes())?;
                    if l == "\r\n" || l == "\n" {
                        return Ok(());
                    }
                }
            }
            copy_body(r, &Body::Length(size + 2), to)?;
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream answering each connection's first read with a fixed HTTP
    /// response, then closing.
    fn upstream() -> u16 {
        crate::tcp_server(|mut s| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        })
    }

    fn get(port: u16) -> io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn http_statuses_then_pass() {
        let p = FaultProxy::http(upstream());
        p.inject(Fault::Status(503), 1);
        assert!(get(p.port()).unwrap().starts_with("HTTP/1.1 503 "));
        assert!(get(p.port()).unwrap().starts_with("HTTP/1.1 200 OK"));
        assert_eq!(p.applied(Fault::Status(503)), 1);
        assert_eq!(p.applied(Fault::Pass), 1);
    }

    #[test]
    fn a_reset_is_an_rst_and_refuse_is_refused() {
        let p = FaultProxy::tcp(upstream());
        let mut s = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        // Connected through to the upstream, which now waits for a read.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(p.reset_all(), 2, "the client and upstream sockets");
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).expect_err("read after the reset");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);

        p.refuse(true);
        let e = TcpStream::connect(("127.0.0.1", p.port())).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        p.heal();
        assert!(get(p.port()).unwrap().ends_with("ok"));
    }
}
