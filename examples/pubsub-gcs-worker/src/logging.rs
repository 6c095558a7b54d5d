//! Structured logs on stderr: tracing's text format by default, or one JSON
//! object per line with the fields Cloud Logging's agent understands.
//!
//! tracing-subscriber's own JSON format names the level `level` and nests
//! the message under `fields`, so Cloud Logging would show every line as
//! severity DEFAULT with the whole JSON as payload. The small formatter below
//! writes `severity` and `message` at the top level instead.

use crate::config::LogFormat;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the default filter
/// (`info` for this crate, `warn` for the libraries).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,pubsub_gcs_worker=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (only possible in tests) is not an error worth dying for.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.event_format(CloudJson).try_init(),
    };
}

/// Formats an event as a Cloud Logging structured log line.
struct CloudJson;

/// Cloud Logging's `LogSeverity` name for a level: tracing's own name but
/// for WARN (WARNING there) and TRACE (which Cloud Logging lacks).
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::WARN => "WARNING",
        Level::TRACE => "DEBUG",
        other => other.as_str(),
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
}

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let mut out = Map::new();
        out.insert("severity".into(), Value::from(severity(meta.level())));
        let message = fields.remove("message").unwrap_or(Value::from(""));
        out.insert("message".into(), message);
        let now = google_cloud_wkt::Timestamp::try_from(std::time::SystemTime::now())
            .map(String::from)
            .unwrap_or_default();
        out.insert("time".into(), Value::from(now));
        out.insert("target".into(), Value::from(meta.target()));
        for (k, v) in fields {
            // Never let an event field overwrite the envelope.
            out.entry(k).or_insert(v);
        }
        let line = serde_json::to_string(&Value::Object(out)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}
