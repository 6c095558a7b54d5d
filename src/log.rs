//! Shutdown-phase logs: one line per phase on stderr, as text or JSON.
//!
//! A purpose-built `tracing` subscriber rather than `tracing-subscriber`:
//! rinit logs a dozen flat events, so filtering is a level compare and
//! formatting one buffer and one `write(2)` per line. That keeps the binary
//! small and start-up cheap, and a line is never interleaved with the
//! child's output. JSON follows Cloud Logging's structured-log fields
//! (`time`, `severity`, `message`, `logging.googleapis.com/labels`) and is
//! otherwise flat, so CloudWatch Logs Insights discovers every field.
//!
//! Logging never blocks the init. A log driver under back-pressure (Docker's
//! blocking mode, awslogs, fluentd) stops reading stderr; a blocking write
//! would then stop PID 1 itself: no reaping, no deadline. So every write is
//! non-blocking (see [`Sink`]); what the reader cannot take yet waits in a
//! bounded backlog that the supervisor retries, and lines that do not fit
//! are counted and reported once the reader is back. The text format escapes
//! control characters, so one event is always one line, whatever a process
//! name or a command path holds.

use std::fmt::{Debug, Write as _};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Output format of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `TIME [+ELAPSED] rinit SEVERITY phase: message key=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

/// When the drain started, so every later line can say how far into it it is.
static STOP: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the drain; later lines carry the elapsed time.
pub fn mark_stop(at: Instant) {
    let _ = STOP.set(at);
}

/// Parses a level name (`RINIT_LOG`, `--log-level`-style).
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    Some(match text.to_ascii_lowercase().as_str() {
        "off" | "none" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

/// Installs the subscriber for the rest of the process.
pub fn init(format: Format, level: LevelFilter) {
    sink().format = format;
    let _ = tracing::subscriber::set_global_default(Logger { level });
}

/// The subscriber: level filter plus formatter; spans are not used.
struct Logger {
    level: LevelFilter,
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let severity = fields
            .severity
            .unwrap_or_else(|| severity(event.metadata().level()));
        let mut sink = sink();
        let line = sink.format.line(severity, &fields);
        sink.emit(line.as_bytes());
    }
}

impl Format {
    fn line(self, severity: &str, f: &Fields) -> String {
        match self {
            Format::Text => text_line(severity, f),
            Format::Json => json_line(severity, f),
        }
    }
}

/// Lines the reader has not taken yet are kept up to this many bytes; past
/// it, new lines are dropped and counted. 64 KiB is a pipe's own buffer:
/// hundreds of rinit's lines, more than a whole drain logs.
const BACKLOG: usize = 64 * 1024;

/// The most one pipe write takes whole or not at all (POSIX's minimum,
/// Linux's size).
const PIPE_BUF: usize = 4096;

/// While lines wait, the supervisor wakes this often to retry them (and
/// only then: an idle rinit with nothing to log never wakes). Often enough
/// to find the room a reader makes before a busy child fills it again: a
/// child that writes to the same stderr faster than the reader takes it
/// can still keep rinit's lines out, and they are then dropped and counted
/// (a blocking writer thread would wait its turn instead, but glibc's
/// threads cost ~80 KB of this static binary; NOTES.md).
pub const RETRY: Duration = Duration::from_millis(20);

/// Where log lines go: stderr, written without ever blocking.
///
/// The descriptor is shared with the child (it is the container's log
/// stream), so rinit cannot set `O_NONBLOCK` on it: that flag belongs to
/// the open file, and the child's writes would start failing. Instead:
/// - pipes, FIFOs, sockets and terminals get `pwritev2(RWF_NOWAIT)`, which
///   makes one write non-blocking and nothing else;
/// - where the kernel does not support that for the file (pipes before
///   Linux 6.4, FIFOs and terminals still), the pipe, FIFO or terminal is
///   opened again through `/proc/self/fd/2` as a new open file of rinit's
///   own, non-blocking;
/// - a regular file is written plainly (a page-cache write does not wait
///   for a reader), and so is anything that cannot be reopened: the one case
///   left where a stalled reader could still block rinit.
struct Sink {
    format: Format,
    how: How,
    /// Bytes written by no one yet, whole lines in order (the first may be
    /// partly written already).
    backlog: Vec<u8>,
    /// Lines dropped since the backlog was last emptied.
    dropped: u64,
}

/// How the sink writes, decided at its first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Untried,
    NoWait,
    Reopened(i32),
    Plain,
}

/// The one sink, shared by the subscriber and the supervisor's retries.
static SINK: Mutex<Sink> = Mutex::new(Sink {
    format: Format::Text,
    how: How::Untried,
    backlog: Vec::new(),
    dropped: 0,
});

fn sink() -> std::sync::MutexGuard<'static, Sink> {
    // A panic while holding the lock cannot leave a line half-built in
    // the backlog (lines are appended whole), so poisoning is ignored.
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sink {
    /// Writes `line`, or queues it behind lines that are still waiting.
    fn emit(&mut self, line: &[u8]) {
        if self.flush() {
            let n = self.write_now(line);
            self.backlog.extend_from_slice(&line[n..]);
        } else if self.backlog.len() + line.len() <= BACKLOG {
            self.backlog.extend_from_slice(line);
        } else {
            self.dropped += 1;
        }
    }

    /// Writes what waits, in order; true when nothing is left waiting. Once
    /// the backlog is out, the count of dropped lines follows as a line of
    /// its own.
    fn flush(&mut self) -> bool {
        while !self.backlog.is_empty() {
            // Whole lines, at most PIPE_BUF at a time: a pipe write that
            // size is all or nothing, so the child's own output can never
            // land inside one of rinit's lines. (A single line longer than
            // that goes as it is.)
            let chunk = match self.backlog[..self.backlog.len().min(PIPE_BUF)]
                .iter()
                .rposition(|&b| b == b'\n')
            {
                Some(end) => end + 1,
                None => self.backlog.len(),
            };
            let backlog = std::mem::take(&mut self.backlog);
            let n = self.write_now(&backlog[..chunk]);
            self.backlog = backlog;
            if n == 0 {
                return false;
            }
            self.backlog.drain(..n);
        }
        if self.dropped > 0 {
            let fields = Fields {
                message: "stderr was not read for a while: log lines were dropped".into(),
                phase: "log".into(),
                severity: None,
                rest: vec![("dropped", Value::Num(self.dropped.to_string()))],
            };
            let line = self.format.line("WARNING", &fields);
            self.dropped = 0;
            let n = self.write_now(line.as_bytes());
            self.backlog.extend_from_slice(&line.as_bytes()[n..]);
        }
        self.backlog.is_empty()
    }

    /// One write that does not block: how much of `buf` went out (0 when the
    /// reader is full). A closed or broken stderr counts as written: there
    /// is no one to wait for.
    fn write_now(&mut self, buf: &[u8]) -> usize {
        loop {
            if self.how == How::Untried {
                self.how = first_how();
            }
            // SAFETY: plain syscalls on a buffer we own.
            let r = unsafe {
                match self.how {
                    How::NoWait => {
                        let iov = libc::iovec {
                            iov_base: buf.as_ptr() as *mut libc::c_void,
                            iov_len: buf.len(),
                        };
                        libc::pwritev2(2, &iov, 1, -1, libc::RWF_NOWAIT)
                    }
                    How::Reopened(fd) => libc::write(fd, buf.as_ptr().cast(), buf.len()),
                    _ => libc::write(2, buf.as_ptr().cast(), buf.len()),
                }
            };
            if r >= 0 {
                return r as usize;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return 0,
                Some(libc::EINTR) => {}
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) if self.how == How::NoWait => {
                    self.how = reopen();
                }
                _ => return buf.len(),
            }
        }
    }

    /// The descriptor a stalled reader would make writable again.
    fn fd(&self) -> i32 {
        match self.how {
            How::Reopened(fd) => fd,
            _ => 2,
        }
    }
}

/// Regular files are written plainly; anything else without blocking.
fn first_how() -> How {
    // SAFETY: fstat writes only `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let file =
        unsafe { libc::fstat(2, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG;
    if file {
        How::Plain
    } else {
        How::NoWait
    }
}

/// A non-blocking open file of rinit's own for the pipe, FIFO or terminal
/// behind stderr; a plain write when there is none to be had.
fn reopen() -> How {
    // SAFETY: plain syscalls on a NUL-terminated path.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let kind = if libc::fstat(2, &mut st) == 0 {
            st.st_mode & libc::S_IFMT
        } else {
            0
        };
        if kind == libc::S_IFIFO || kind == libc::S_IFCHR {
            let fd = libc::open(
                c"/proc/self/fd/2".as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
            );
            if fd >= 0 {
                return How::Reopened(fd);
            }
        }
    }
    How::Plain
}

/// Retries the lines a stalled reader has not taken; true when none wait.
pub fn flush() -> bool {
    sink().flush()
}

/// Before rinit exits: waits for the reader up to `bound` for what is still
/// queued, then gives up on it. The exit is never held longer.
pub fn flush_before_exit(bound: Duration) {
    let end = Instant::now() + bound;
    loop {
        let mut sink = sink();
        if sink.flush() {
            return;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd {
            fd: sink.fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        drop(sink);
        // SAFETY: poll writes only `pfd`.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
    }
}

/// Cloud Logging's name for a tracing level.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// A field's value, kept typed so JSON numbers stay numbers.
enum Value {
    Str(String),
    Num(String),
    Bool(bool),
}

/// The fields of one event, in the order they were written.
#[derive(Default)]
struct Fields {
    message: String,
    phase: String,
    severity: Option<&'static str>,
    rest: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "phase" => self.phase = value.to_string(),
            // Lets an event raise itself to NOTICE, which tracing has no level for.
            "severity" if value == "NOTICE" => self.severity = Some("NOTICE"),
            name => self.rest.push((name, Value::Str(value.to_string()))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest
            .push((field.name(), Value::Num(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest
            .push((field.name(), Value::Num(value.to_string())));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name(), Value::Bool(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            name => self.rest.push((name, Value::Str(text))),
        }
    }
}

/// Milliseconds since the drain started, if it has.
fn since_stop_ms() -> Option<u64> {
    STOP.get().map(|t| t.elapsed().as_millis() as u64)
}

fn text_line(severity: &str, f: &Fields) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(
        out,
        "{} ",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    if let Some(ms) = since_stop_ms() {
        let _ = write!(out, "+{}.{:03}s ", ms / 1000, ms % 1000);
    }
    let _ = write!(out, "rinit {severity} {}: ", f.phase);
    escape_into(&mut out, &f.message);
    for (k, v) in &f.rest {
        match v {
            // Debug quoting escapes quotes, backslashes and every control
            // character, so a value can neither end the line nor fake a field.
            Value::Str(s)
                if s.is_empty()
                    || s.bytes().any(|b| b == b' ' || b == b'"')
                    || s.chars().any(breaks_line) =>
            {
                let _ = write!(out, " {k}={s:?}");
            }
            Value::Str(s) | Value::Num(s) => {
                for part in [" ", k, "=", s] {
                    out.push_str(part);
                }
            }
            Value::Bool(b) => {
                let _ = write!(out, " {k}={b}");
            }
        }
    }
    out.push('\n');
    out
}

fn json_line(severity: &str, f: &Fields) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"time\":\"");
    let _ = write!(
        out,
        "{}",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    out.push_str("\",\"severity\":\"");
    out.push_str(severity);
    out.push_str("\",\"message\":");
    json_str(&mut out, &f.message);
    out.push_str(",\"phase\":");
    json_str(&mut out, &f.phase);
    if let Some(ms) = since_stop_ms() {
        let _ = write!(out, ",\"since_stop_ms\":{ms}");
    }
    for (k, v) in &f.rest {
        out.push(',');
        json_str(&mut out, k);
        out.push(':');
        match v {
            Value::Str(s) => json_str(&mut out, s),
            Value::Num(n) => out.push_str(n),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push_str(",\"logging.googleapis.com/labels\":{\"component\":\"rinit\"}}\n");
    out
}

/// A character that could end a line or rewrite it on a terminal: control
/// characters (newline, carriage return, escape, NEL) and the Unicode line
/// and paragraph separators.
fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Appends `s` with every line-breaking character written as Rust writes it
/// (`\n`, `\u{1b}`), so text that holds what the user or a process chose
/// (a command path, an option's value) stays on one line. By hand, which
/// costs the binary less than `char::escape_default`.
pub fn escape_into(out: &mut String, s: &str) {
    // Nearly always nothing to escape: one scan, one copy.
    if !s.chars().any(breaks_line) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if breaks_line(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Bytes the kernel hands over (a process name, a path) as text: valid
/// UTF-8 as it is, each other byte as `\xNN`. The kernel cuts a name at 15
/// bytes, often inside a character, and a name may be any bytes at all.
pub fn bytes_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Writes `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_keeps_types() {
        let f = Fields {
            message: "a \"quoted\"\nline".into(),
            phase: "kill".into(),
            severity: None,
            rest: vec![
                ("pid", Value::Num("42".into())),
                ("comm", Value::Str("we\\ird\u{1}".into())),
                ("escalated", Value::Bool(true)),
            ],
        };
        let line = json_line("WARNING", &f);
        assert!(line.ends_with("}\n"));
        assert!(line.contains(r#""message":"a \"quoted\"\nline""#), "{line}");
        assert!(
            line.contains(r#""pid":42,"comm":"we\\ird\u0001","escalated":true"#),
            "{line}"
        );
        assert!(line.contains(r#""logging.googleapis.com/labels":{"component":"rinit"}"#));
    }

    /// Deterministic bytes for the properties below: biased towards what
    /// breaks lines or quoting (newline, CR, ESC, NEL, U+2028, quotes,
    /// spaces, '=', backslashes, stray UTF-8 bytes).
    pub(crate) fn tricky_bytes(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
        const PIECES: [&[u8]; 14] = [
            b"\n",
            b"\r",
            b"\x1b[2J",
            "\u{85}".as_bytes(),
            "\u{2028}".as_bytes(),
            b"\"",
            b" ",
            b"=",
            b"\\",
            b"\xc3",
            b"\xff",
            "é".as_bytes(),
            b"rinit INFO exit: ",
            b"a",
        ];
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| {
                let mut b = Vec::new();
                let len = (next() as usize) % (max_len + 1);
                while b.len() < len {
                    let r = next();
                    if r % 3 == 0 {
                        b.push((r >> 8) as u8);
                    } else {
                        b.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
                    }
                }
                b
            })
            .collect()
    }

    /// Any bytes, as a process name or a command path: the text line is one
    /// line with no control character but its end, and the JSON line parses
    /// back to exactly the escaped name.
    #[test]
    fn any_bytes_make_one_line() {
        for bytes in tricky_bytes(0x5eed, 3000, 40) {
            let shown = bytes_text(&bytes);
            let f = Fields {
                message: format!("started {shown}"),
                phase: "kill".into(),
                severity: None,
                rest: vec![
                    ("comm", Value::Str(shown.clone())),
                    ("pid", Value::Num("7".into())),
                ],
            };
            let text = text_line("WARNING", &f);
            let body = text.strip_suffix('\n').expect("ends the line");
            assert!(!body.chars().any(breaks_line), "{bytes:?} -> {text:?}");
            assert!(
                body.ends_with(" pid=7"),
                "a value cannot eat the next field: {text:?}"
            );
            let json = json_line("WARNING", &f);
            let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            assert_eq!(v["comm"], shown.as_str());
            assert_eq!(json.matches('\n').count(), 1);
        }
    }

    /// Valid UTF-8 stays as it is; each byte that is not part of it is
    /// written `\xNN`.
    #[test]
    fn bytes_text_escapes_only_what_is_not_utf8() {
        assert_eq!(bytes_text("worker-xé".as_bytes()), "worker-xé");
        assert_eq!(bytes_text(b"worker-x\xc3"), "worker-x\\xc3");
        assert_eq!(bytes_text(b"\xff\xfe a"), "\\xff\\xfe a");
        for bytes in tricky_bytes(42, 500, 20) {
            let shown = bytes_text(&bytes);
            if let Ok(s) = std::str::from_utf8(&bytes) {
                assert_eq!(shown, s);
            } else {
                assert!(shown.contains("\\x"), "{bytes:?}");
            }
        }
    }
}
