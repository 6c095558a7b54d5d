//! Shutdown-phase logs: one line per phase on stderr, as text or JSON.
//!
//! A purpose-built `tracing` subscriber rather than `tracing-subscriber`:
//! rinit logs a dozen flat events, so filtering is a level compare and
//! formatting one buffer and one `write(2)` per line. That keeps the binary
//! small and start-up cheap, and a line is never interleaved with the
//! child's output. JSON follows Cloud Logging's structured-log fields
//! (`time`, `severity`, `message`, `logging.googleapis.com/labels`) and is
//! otherwise flat, so CloudWatch Logs Insights discovers every field.

use std::fmt::{Debug, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

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
    let _ = tracing::subscriber::set_global_default(Logger { format, level });
}

/// The subscriber: level filter plus formatter; spans are not used.
struct Logger {
    format: Format,
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
        let line = match self.format {
            Format::Text => text_line(severity, &fields),
            Format::Json => json_line(severity, &fields),
        };
        // One write per line; a closed stderr must not stop the init.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    let _ = write!(out, "rinit {severity} {}: {}", f.phase, f.message);
    for (k, v) in &f.rest {
        match v {
            Value::Str(s) if s.is_empty() || s.contains(' ') => {
                let _ = write!(out, " {k}={s:?}");
            }
            Value::Str(s) | Value::Num(s) => {
                let _ = write!(out, " {k}={s}");
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
mod tests {
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
}
