//! Whether Pub/Sub and Cloud Storage can be used, told to the operator.
//!
//! The client library retries a StreamingPull stream that cannot be opened
//! (DNS failure, refused connection, TLS error) forever and without a word:
//! the worker would look healthy and do nothing. So the worker checks for
//! itself. Pub/Sub is probed with a real gRPC call through the library's own
//! transport (endpoint, TLS roots, credentials), on a schedule (src/probe.rs);
//! Cloud Storage is judged by the worker's own writes. Each service has one
//! [`Health`]: it logs an INFO line when the service first answers and when
//! it answers again, and while it fails one WARN line (ERROR when no retry
//! can help) per report period, however many attempts fail in between.

use crate::config::Endpoint;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::Error;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The first report period of an outage; it doubles up to `MAX_PERIOD`.
const FIRST_PERIOD: Duration = Duration::from_secs(1);
/// The longest silence while a service keeps failing.
const MAX_PERIOD: Duration = Duration::from_secs(30);
/// Time between probes of Pub/Sub while it answers: how late an outage in
/// the middle of a run can be noticed.
const HEALTHY_PROBE_PERIOD: Duration = Duration::from_secs(10);

/// What went wrong, as far as it can be told from the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The host name does not resolve.
    Dns,
    /// Nothing listens at the address (or a firewall rejects).
    ConnectionRefused,
    /// The handshake failed: not TLS, or a certificate not trusted.
    Tls,
    /// No answer in time: a black hole, or an overloaded service.
    Timeout,
    /// Credentials could not be obtained (e.g. the metadata server).
    Credentials,
    /// 401: the credentials were refused.
    Unauthenticated,
    /// 403: the account lacks a role.
    PermissionDenied,
    /// Subscription or bucket missing.
    NotFound,
    /// Anything else that may go away: 5xx, UNAVAILABLE, resets.
    Unavailable,
}

impl Kind {
    /// The `kind` field of the log line.
    fn name(self) -> &'static str {
        match self {
            Kind::Dns => "dns",
            Kind::ConnectionRefused => "connection_refused",
            Kind::Tls => "tls",
            Kind::Timeout => "timeout",
            Kind::Credentials => "credentials",
            Kind::Unauthenticated => "unauthenticated",
            Kind::PermissionDenied => "permission_denied",
            Kind::NotFound => "not_found",
            Kind::Unavailable => "unavailable",
        }
    }

    /// Needs a change of configuration, certificates or permissions: ERROR.
    fn permanent(self) -> bool {
        matches!(
            self,
            Kind::Tls | Kind::Unauthenticated | Kind::PermissionDenied | Kind::NotFound
        )
    }
}

/// An error and its sources on one line (the library's top-level message
/// alone says "transport error", not which one).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A client error for a log line: its HTTP status (which the library's own
/// message leaves out) and its sources.
pub fn describe_call(e: &Error) -> String {
    match e.http_status_code() {
        Some(code) => format!("HTTP {code}: {}", describe(e)),
        None => describe(e),
    }
}

/// What a failed call says about the service: `None` when the service
/// answered (e.g. 412, 400, INVALID_ARGUMENT), which proves it usable.
pub fn assess(e: &Error) -> Option<Kind> {
    let text = describe(e).to_ascii_lowercase();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Some(Kind::Dns);
    }
    if text.contains("connection refused") {
        return Some(Kind::ConnectionRefused);
    }
    if [
        "certificate",
        "tls",
        "corrupt message",
        "invalidcontenttype",
        "handshake",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        return Some(Kind::Tls);
    }
    if let Some(code) = e.http_status_code() {
        return match code {
            401 => Some(Kind::Unauthenticated),
            403 => Some(Kind::PermissionDenied),
            404 => Some(Kind::NotFound),
            408 => Some(Kind::Timeout),
            400..=499 if code != 429 => None,
            _ => Some(Kind::Unavailable),
        };
    }
    if let Some(status) = e.status() {
        return match status.code {
            Code::Unauthenticated => Some(Kind::Unauthenticated),
            Code::PermissionDenied => Some(Kind::PermissionDenied),
            Code::NotFound => Some(Kind::NotFound),
            Code::DeadlineExceeded => Some(Kind::Timeout),
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted => Some(Kind::Unavailable),
            _ => None,
        };
    }
    if e.is_authentication() {
        return Some(Kind::Credentials);
    }
    if e.is_timeout() {
        return Some(Kind::Timeout);
    }
    Some(Kind::Unavailable)
}

/// Pub/Sub's production endpoint.
pub const PUBSUB_URL: &str = "https://pubsub.googleapis.com";
/// Cloud Storage's production endpoint.
pub const STORAGE_URL: &str = "https://storage.googleapis.com";

/// The URL a client really talks to.
pub fn endpoint_url(e: &Endpoint, google: &str) -> String {
    match e {
        Endpoint::Google => google.to_string(),
        Endpoint::Emulator(url) => url.clone(),
    }
}

/// One service's state, and the lines it logs.
pub struct Health {
    service: &'static str,
    endpoint: String,
    /// The subscription or the bucket.
    resource: String,
    state: Mutex<State>,
}

/// What has been said about a service, and whether it is failing now.
#[derive(Default)]
struct State {
    /// "connected" is said once; later recoveries say "reachable again".
    connected_logged: bool,
    down: Option<Outage>,
}

/// The current run of failures: since when, and when to report next.
struct Outage {
    since: Instant,
    next_report: Instant,
    /// Added to `next_report` at each report, doubled up to `MAX_PERIOD`.
    period: Duration,
    /// Failures since the last line.
    unreported: u64,
    /// The kind the last line named.
    reported: Option<Kind>,
}

impl Health {
    /// A service not yet heard from; `service` starts every line's message.
    pub fn new(service: &'static str, endpoint: String, resource: String) -> Health {
        Health {
            service,
            endpoint,
            resource,
            state: Mutex::new(State::default()),
        }
    }

    /// The state; a panic elsewhere while it was held cannot leave it
    /// half-updated in a way that matters for logging, so poison is ignored.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The service answered.
    pub fn success(&self) {
        let mut st = self.state();
        if let Some(outage) = st.down.take() {
            tracing::info!(
                service = self.service,
                endpoint = %self.endpoint,
                resource = %self.resource,
                down_ms = outage.since.elapsed().as_millis() as u64,
                "{} reachable again",
                self.service
            );
        } else if !st.connected_logged {
            tracing::info!(
                service = self.service,
                endpoint = %self.endpoint,
                resource = %self.resource,
                "{} connected",
                self.service
            );
        }
        st.connected_logged = true;
    }

    /// A call failed: logs at once on the first failure, then at most once
    /// per report period (1 s, 2 s, 4 s ... 30 s).
    pub fn failure(&self, kind: Kind, error: &str) {
        let now = Instant::now();
        let mut st = self.state();
        let outage = st.down.get_or_insert(Outage {
            since: now,
            next_report: now,
            period: FIRST_PERIOD,
            unreported: 0,
            reported: None,
        });
        outage.unreported += 1;
        // A permanent kind not yet named is news (a 403 after timeouts): it
        // is reported at once; anything else waits for the period.
        let news = kind.permanent() && outage.reported != Some(kind);
        if now < outage.next_report && !news {
            return;
        }
        outage.reported = Some(kind);
        let down_ms = now.duration_since(outage.since).as_millis() as u64;
        let (service, endpoint, resource) = (self.service, &self.endpoint, &self.resource);
        let failures = outage.unreported;
        if kind.permanent() {
            tracing::error!(service, %endpoint, %resource, kind = kind.name(), %error, failures,
                down_ms, "{service} unavailable ({})", kind.name());
        } else {
            tracing::warn!(service, %endpoint, %resource, kind = kind.name(), %error, failures,
                down_ms, "{service} unavailable ({})", kind.name());
        }
        outage.unreported = 0;
        outage.next_report = now + outage.period;
        outage.period = (outage.period * 2).min(MAX_PERIOD);
    }

    /// True during an outage: per-message lines would repeat its report.
    pub fn is_down(&self) -> bool {
        self.state().down.is_some()
    }

    /// How long the current outage has lasted.
    pub fn down_for(&self) -> Option<Duration> {
        self.state().down.as_ref().map(|o| o.since.elapsed())
    }

    /// When to probe next: at the next report time during an outage.
    pub fn next_probe_in(&self) -> Duration {
        match &self.state().down {
            Some(o) => o.next_report.saturating_duration_since(Instant::now()),
            None => HEALTHY_PROBE_PERIOD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(code: u16) -> Error {
        Error::http(code, Default::default(), Default::default())
    }

    #[test]
    fn kinds_from_errors() {
        assert_eq!(assess(&http(401)), Some(Kind::Unauthenticated));
        assert_eq!(assess(&http(403)), Some(Kind::PermissionDenied));
        assert_eq!(assess(&http(404)), Some(Kind::NotFound));
        assert_eq!(assess(&http(503)), Some(Kind::Unavailable));
        assert_eq!(assess(&http(429)), Some(Kind::Unavailable));
        assert_eq!(assess(&http(412)), None, "412 is an answer");
        assert_eq!(assess(&http(400)), None, "400 is an answer");
        let status = |code| {
            Error::service(
                google_cloud_gax::error::rpc::Status::default()
                    .set_code(code)
                    .set_message("m"),
            )
        };
        assert_eq!(assess(&status(Code::InvalidArgument)), None);
        assert_eq!(assess(&status(Code::NotFound)), Some(Kind::NotFound));
        assert_eq!(assess(&status(Code::Unavailable)), Some(Kind::Unavailable));
        assert_eq!(
            assess(&Error::io("dns error: failed to lookup address")),
            Some(Kind::Dns)
        );
        assert_eq!(
            assess(&Error::io(
                "tcp connect error: Connection refused (os error 111)"
            )),
            Some(Kind::ConnectionRefused)
        );
        assert!(Kind::Tls.permanent() && !Kind::Dns.permanent());
    }

    #[test]
    fn reports_once_per_period() {
        let h = Health::new("Svc", "http://x:1".into(), "r".into());
        assert!(!h.is_down());
        h.failure(Kind::Dns, "e");
        assert!(h.is_down());
        let first = h.next_probe_in();
        assert!(
            first <= FIRST_PERIOD && first > FIRST_PERIOD / 2,
            "{first:?}"
        );
        // Failures inside the period are counted, not reported.
        h.failure(Kind::Dns, "e");
        assert_eq!(h.state().down.as_ref().map(|o| o.unreported), Some(1));
        assert_eq!(
            h.state().down.as_ref().map(|o| o.period),
            Some(FIRST_PERIOD * 2)
        );
        // A permanent kind not yet named is reported inside the period,
        // once: the same kind again waits.
        h.failure(Kind::NotFound, "e");
        assert_eq!(h.state().down.as_ref().map(|o| o.unreported), Some(0));
        h.failure(Kind::NotFound, "e");
        assert_eq!(h.state().down.as_ref().map(|o| o.unreported), Some(1));
        h.success();
        assert!(!h.is_down());
        assert_eq!(h.next_probe_in(), HEALTHY_PROBE_PERIOD);
    }
}
