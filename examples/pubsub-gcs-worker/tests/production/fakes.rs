//! The parts of Google's production path that tests/production.rs stands up
//! on loopback: a test CA and server certificate (openssl), nginx terminating
//! TLS for pubsub.googleapis.com and storage.googleapis.com in front of the
//! emulators, a metadata server answering as metadata.google.internal, and
//! dnsmasq answering for those names.
//!
//! Every address used is a 127.x.y.z loopback address picked per test case,
//! so that the cases can run in parallel while each owns ports 53, 80 and
//! 443 on its own addresses. Every process started here is killed by PID
//! when its guard is dropped (also when the test panics); the in-process
//! servers stop with their guard too.

use rinit_test_support::run;
use rinit_test_support::Proc;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// A program the test needs from the machine (installed by scripts/setup),
/// found on PATH or in the sbin directories root's PATH may lack.
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The loopback addresses of one test case.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    /// nginx, port 443: pubsub.googleapis.com and storage.googleapis.com.
    pub google: Ipv4Addr,
    /// The metadata server, port 80: metadata.google.internal.
    pub metadata: Ipv4Addr,
    /// dnsmasq, port 53.
    pub dns: Ipv4Addr,
}

/// Picks a free block 127.A.case.1-3: A from the PID so that concurrent runs
/// rarely meet, then the first A whose ports 443, 80 and 53 are all free.
pub fn pick_addresses(case: u8) -> Addresses {
    let pid = std::process::id();
    for k in 0..160u32 {
        let a = 64 + ((pid + k) % 160) as u8;
        let ip = |d| Ipv4Addr::new(127, a, case, d);
        let free = TcpListener::bind((ip(1), 443)).is_ok()
            && TcpListener::bind((ip(2), 80)).is_ok()
            && UdpSocket::bind((ip(3), 53)).is_ok()
            && TcpListener::bind((ip(3), 53)).is_ok();
        if free {
            return Addresses {
                google: ip(1),
                metadata: ip(2),
                dns: ip(3),
            };
        }
    }
    panic!(
        "no free 127.x.{case}.1-3 block for ports 443, 80 and 53 \
         (binding them needs root, as the other Docker tests do)"
    );
}

// ---- Certificates ------------------------------------------------------------

/// A test CA and one server certificate for `names`, made with openssl.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(openssl: &Path, dir: &Path, names: &[&str]) -> Certs {
    std::fs::create_dir_all(dir).expect("create cert dir");
    let ssl = |args: &[&str]| {
        let out = run(
            Command::new(openssl).args(args).current_dir(dir),
            Duration::from_secs(60),
        );
        assert!(out.ok(), "openssl {args:?} failed:\n{}", out.stderr);
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-nodes"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=rinit production-path test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ssl(&ca_args);
    let mut csr_args = vec!["req", "-new", "-nodes"];
    csr_args.extend(ec);
    csr_args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=googleapis test server",
    ]);
    ssl(&csr_args);
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .expect("write server.ext");
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    Certs {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

// ---- Metadata server -----------------------------------------------------------

/// An access token the metadata server handed out.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

/// One request the metadata server answered.
#[derive(Clone, Debug)]
pub struct MetadataRequest {
    pub path: String,
    pub flavor: bool,
    pub status: u16,
}

/// One token check nginx asked for (auth_request).
#[derive(Clone, Debug)]
pub struct Check {
    pub authorization: Option<String>,
    pub ok: bool,
}

#[derive(Default)]
struct MetadataState {
    issued: Vec<Issued>,
    requests: Vec<MetadataRequest>,
    checks: Vec<Check>,
}

/// What the metadata server of a GCE VM / Cloud Run instance answers, for
/// the default service account: a new access token per token request, each
/// valid for `expires_in`; the project ID; the service account's email; the
/// universe domain. Like the real one it refuses any request without
/// `Metadata-Flavor: Google` (403) and says `Metadata-Flavor: Google` in
/// every answer.
///
/// A second listener (on 127.0.0.1) is nginx's `auth_request` target: 204
/// when the request's `Authorization: Bearer <token>` names a token this
/// server issued and that has not expired, 401 otherwise.
pub struct MetadataServer {
    pub addr: SocketAddr,
    pub checker: SocketAddr,
    state: Arc<Mutex<MetadataState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct Settings {
    project: String,
    expires_in: Duration,
    salt: u64,
}

impl MetadataServer {
    pub fn start(ip: Ipv4Addr, project: &str, expires_in: Duration) -> MetadataServer {
        let metadata = TcpListener::bind((ip, 80))
            .unwrap_or_else(|e| panic!("metadata server: bind {ip}:80: {e}"));
        let checker = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind token checker");
        let state = Arc::new(Mutex::new(MetadataState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // Unpredictable tokens: a per-run random salt (std's hasher keys).
        let salt = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from(std::process::id()));
            h.finish()
        };
        let settings = Settings {
            project: project.to_string(),
            expires_in,
            salt,
        };
        let addr = metadata.local_addr().expect("metadata address");
        let checker_addr = checker.local_addr().expect("checker address");
        let threads = [(metadata, false), (checker, true)]
            .into_iter()
            .map(|(listener, is_checker)| {
                let (state, stop, settings) = (state.clone(), stop.clone(), settings.clone());
                std::thread::spawn(move || serve(listener, is_checker, state, stop, settings))
            })
            .collect();
        MetadataServer {
            addr,
            checker: checker_addr,
            state,
            stop,
            threads,
        }
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().expect("metadata state").issued.clone()
    }

    pub fn requests(&self) -> Vec<MetadataRequest> {
        self.state.lock().expect("metadata state").requests.clone()
    }

    pub fn checks(&self) -> Vec<Check> {
        self.state.lock().expect("metadata state").checks.clone()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    is_checker: bool,
    state: Arc<Mutex<MetadataState>>,
    stop: Arc<AtomicBool>,
    settings: Settings,
) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (state, settings) = (state.clone(), settings.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, is_checker, &state, &settings);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A parsed HTTP/1.x request head (the requests here have no body).
struct Head {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_head(conn: &mut TcpStream) -> std::io::Result<Head> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head {
        method,
        path,
        headers,
    })
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nMetadata-Flavor: Google\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

static TOKENS: AtomicU64 = AtomicU64::new(0);

fn handle(
    mut conn: TcpStream,
    is_checker: bool,
    state: &Mutex<MetadataState>,
    settings: &Settings,
) -> std::io::Result<()> {
    let head = read_head(&mut conn)?;
    if is_checker {
        let authorization = head.headers.get("authorization").cloned();
        let now = SystemTime::now();
        let mut s = state.lock().expect("metadata state");
        let ok = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                s.issued
                    .iter()
                    .any(|i| i.token == t && i.issued <= now && now < i.expires)
            });
        s.checks.push(Check { authorization, ok });
        drop(s);
        return respond(&mut conn, if ok { 204 } else { 401 }, "text/plain", "");
    }
    let flavor = head
        .headers
        .get("metadata-flavor")
        .is_some_and(|v| v == "Google");
    let (status, content_type, body) = if !flavor {
        (
            403,
            "text/html",
            "Missing required header \"Metadata-Flavor\"".to_string(),
        )
    } else if head.method != "GET" {
        (405, "text/plain", String::new())
    } else {
        const SA: &str = "/computeMetadata/v1/instance/service-accounts/default";
        match head.path.as_str() {
            p if p == format!("{SA}/token") => {
                let n = TOKENS.fetch_add(1, Ordering::Relaxed) + 1;
                let token = format!(
                    "ya29.rinit-test-{n}-{:016x}",
                    settings.salt.rotate_left(n as u32 * 7) ^ n.wrapping_mul(0x9E37_79B9)
                );
                let issued = SystemTime::now();
                state.lock().expect("metadata state").issued.push(Issued {
                    token: token.clone(),
                    issued,
                    expires: issued + settings.expires_in,
                });
                (
                    200,
                    "application/json",
                    format!(
                        "{{\"access_token\":\"{token}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
                        settings.expires_in.as_secs()
                    ),
                )
            }
            p if p == format!("{SA}/email") => (
                200,
                "application/text",
                format!("worker@{}.iam.gserviceaccount.com", settings.project),
            ),
            "/computeMetadata/v1/project/project-id" => {
                (200, "application/text", settings.project.clone())
            }
            "/computeMetadata/v1/universe/universe-domain" => {
                (200, "application/text", "googleapis.com".to_string())
            }
            _ => (404, "text/html", "Not Found".to_string()),
        }
    };
    state
        .lock()
        .expect("metadata state")
        .requests
        .push(MetadataRequest {
            path: head.path,
            flavor,
            status,
        });
    respond(&mut conn, status, content_type, &body)
}

/// One raw HTTP/1.1 GET to the metadata server; returns the status code.
pub fn metadata_get(addr: SocketAddr, path: &str, flavor: bool) -> u16 {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let extra = if flavor {
        "Metadata-Flavor: Google\r\n"
    } else {
        ""
    };
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: metadata.google.internal\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from the metadata server: {text:?}"))
}

// ---- nginx -----------------------------------------------------------------------

/// nginx on `ip:443`, one TLS server per Google API host, each refusing
/// (401) every request whose bearer token the metadata server does not
/// vouch for, and logging every request with its Authorization header.
pub struct Nginx {
    _proc: Proc,
    pub access_log: PathBuf,
    pub error_log: PathBuf,
}

/// One access log line.
#[derive(Clone, Debug)]
pub struct Access {
    pub raw: String,
    pub host: String,
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// The bearer token, if the request had an `Authorization: Bearer` header.
    pub token: Option<String>,
}

pub struct Upstreams {
    pub pubsub_port: u16,
    pub gcs_port: u16,
    pub checker: SocketAddr,
}

impl Nginx {
    pub fn start(nginx: &Path, dir: &Path, ip: Ipv4Addr, certs: &Certs, up: &Upstreams) -> Nginx {
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx dir");
        let access_log = dir.join("access.log");
        let error_log = dir.join("error.log");
        // `$http_authorization` is logged whole: the test checks every token
        // nginx saw against what the metadata server issued.
        let auth = format!(
            "auth_request /_token_check;\n\
             location = /_token_check {{\n\
                 internal;\n\
                 proxy_pass http://{checker}/check;\n\
                 proxy_pass_request_body off;\n\
                 proxy_set_header Content-Length \"\";\n\
             }}",
            checker = up.checker
        );
        let tls = format!(
            "listen {ip}:443 ssl http2;\n\
             ssl_certificate {cert};\n\
             ssl_certificate_key {key};\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             access_log {log} production;",
            cert = certs.cert.display(),
            key = certs.key.display(),
            log = access_log.display(),
        );
        let conf = format!(
            "# Written by examples/pubsub-gcs-worker/tests/production/fakes.rs\n\
             daemon off;\n\
             master_process off;\n\
             pid {dir}/nginx.pid;\n\
             error_log {err} info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             client_body_temp_path {dir}/tmp/body;\n\
             proxy_temp_path {dir}/tmp/proxy;\n\
             fastcgi_temp_path {dir}/tmp/fastcgi;\n\
             uwsgi_temp_path {dir}/tmp/uwsgi;\n\
             scgi_temp_path {dir}/tmp/scgi;\n\
             log_format production '$msec $host $request_method $uri $status \
             up=$upstream_status grpc=$sent_trailer_grpc_status rt=$request_time \
             auth=\"$http_authorization\"';\n\
             client_max_body_size 0;\n\
             client_body_timeout 1h;\n\
             keepalive_timeout 1h;\n\
             keepalive_requests 1000000;\n\
             http2_idle_timeout 1h;\n\
             http2_recv_timeout 1h;\n\
             server {{\n\
             {tls}\n\
             server_name pubsub.googleapis.com;\n\
             location / {{\n\
                 grpc_pass grpc://127.0.0.1:{ps};\n\
                 grpc_read_timeout 1h;\n\
                 grpc_send_timeout 1h;\n\
             }}\n\
             {auth}\n\
             }}\n\
             server {{\n\
             {tls}\n\
             server_name storage.googleapis.com;\n\
             location / {{\n\
                 proxy_pass http://127.0.0.1:{gcs};\n\
                 proxy_http_version 1.1;\n\
                 proxy_read_timeout 1h;\n\
             }}\n\
             {auth}\n\
             }}\n\
             }}\n",
            dir = dir.display(),
            err = error_log.display(),
            ps = up.pubsub_port,
            gcs = up.gcs_port,
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let base = |c: &mut Command| {
            c.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&conf_path);
        };
        let mut check = Command::new(nginx);
        base(&mut check);
        let out = run(check.arg("-t"), Duration::from_secs(30));
        assert!(
            out.ok(),
            "nginx -t {}:\n{}",
            conf_path.display(),
            out.stderr
        );
        let mut cmd = Command::new(nginx);
        base(&mut cmd);
        let mut proc = Proc::spawn_logged("nginx", &mut cmd, &dir.join("nginx.out"));
        proc.wait_ready(Duration::from_secs(20), &error_log, || {
            TcpStream::connect((ip, 443)).is_ok()
        });
        Nginx {
            _proc: proc,
            access_log,
            error_log,
        }
    }

    pub fn access(&self) -> Vec<Access> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(parse_access)
            .collect()
    }
}

fn parse_access(line: &str) -> Access {
    let f: Vec<&str> = line.split(' ').collect();
    assert!(f.len() >= 9, "unexpected access log line: {line}");
    let authorization = line
        .split_once(" auth=\"")
        .and_then(|(_, a)| a.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no auth field: {line}"));
    Access {
        raw: line.to_string(),
        host: f[1].to_string(),
        method: f[2].to_string(),
        uri: f[3].to_string(),
        status: f[4].parse().unwrap_or_else(|_| panic!("status in {line}")),
        token: authorization.strip_prefix("Bearer ").map(str::to_string),
    }
}

// ---- dnsmasq ---------------------------------------------------------------------

/// dnsmasq on `ip:53`, answering for the records given (each name also
/// with the AAAA `also_v6` if given) and nothing else:
/// no upstream server, no /etc/hosts; other names under googleapis.com and
/// .internal are NXDOMAIN, the rest REFUSED. Every query is logged.
pub struct Dnsmasq {
    _proc: Proc,
    pub log: PathBuf,
}

impl Dnsmasq {
    pub fn start(
        dnsmasq: &Path,
        dir: &Path,
        ip: Ipv4Addr,
        records: &[(&str, Ipv4Addr)],
        also_v6: Option<std::net::Ipv6Addr>,
    ) -> Dnsmasq {
        std::fs::create_dir_all(dir).expect("dnsmasq dir");
        let log = dir.join("dnsmasq.log");
        let mut cmd = Command::new(dnsmasq);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--port=53",
            "--user=root",
            "--log-queries",
        ])
        .arg(format!("--listen-address={ip}"))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg(format!("--log-facility={}", log.display()));
        // Answer for the zones authoritatively (NXDOMAIN for unknown names,
        // no data for AAAA) instead of REFUSED.
        for zone in ["googleapis.com", "internal"] {
            cmd.arg(format!("--local=/{zone}/"));
        }
        for (name, addr) in records {
            match also_v6 {
                Some(v6) => cmd.arg(format!("--host-record={name},{addr},{v6}")),
                None => cmd.arg(format!("--host-record={name},{addr}")),
            };
        }
        let out = dir.join("dnsmasq.out");
        let mut proc = Proc::spawn_logged("dnsmasq", &mut cmd, &out);
        proc.wait_ready(Duration::from_secs(20), &out, || {
            TcpStream::connect((ip, 53)).is_ok()
        });
        Dnsmasq { _proc: proc, log }
    }

    /// The (type, name) pairs queried so far, from dnsmasq's query log.
    pub fn queries(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(" query[")? + 7..];
                let (ty, rest) = rest.split_once("] ")?;
                let name = rest.split(' ').next()?;
                Some((ty.to_string(), name.to_string()))
            })
            .collect()
    }
}
