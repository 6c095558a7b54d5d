//! Each value's grammar and its check: sizes, durations (rinit's own
//! parser), names (project, subscription, bucket, object prefix), emulator
//! hosts and rinit's drain budget. Every refusal is one line naming the
//! variable and the flag.

use super::{ConfigError, Endpoint, LogFormat};
use std::time::Duration;

/// PROJECT_ID, SUBSCRIPTION_ID and BUCKET_NAME: all three present (one
/// line names every one missing), each valid; the subscription as its full
/// name.
pub(super) fn names(
    project: Option<String>,
    subscription: Option<String>,
    bucket: Option<String>,
) -> Result<(String, String, String), ConfigError> {
    let present = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (project, subscription, bucket) =
        (present(project), present(subscription), present(bucket));
    let mut missing = Vec::new();
    if project.is_none() {
        missing.push("PROJECT_ID (--project-id)");
    }
    if subscription.is_none() {
        missing.push("SUBSCRIPTION_ID (--subscription-id)");
    }
    if bucket.is_none() {
        missing.push("BUCKET_NAME (--bucket-name)");
    }
    let (Some(project), Some(subscription), Some(bucket)) = (project, subscription, bucket) else {
        return Err(ConfigError(format!(
            "configuration error: missing {}",
            missing.join(", ")
        )));
    };
    let project_id = project.trim().to_string();
    check_project_id(&project_id)?;
    let subscription = subscription_name(&project_id, subscription.trim())?;
    let bucket = bucket.trim().to_string();
    check_bucket(&bucket)?;
    Ok((project_id, subscription, bucket))
}

/// MAX_OUTSTANDING_BYTES: a size within the bounds.
pub(super) fn outstanding_bytes(v: &str) -> Result<u64, ConfigError> {
    parse_size(v)
        .filter(|b| (MIN_OUTSTANDING_BYTES..=MAX_OUTSTANDING_BYTES).contains(b))
        .ok_or_else(|| {
            bad(
                "MAX_OUTSTANDING_BYTES (--max-outstanding-bytes)",
                v,
                "must be a size from 1MiB to 1TiB such as 64MiB, 500MB or 1048576",
            )
        })
}

/// LEASE_EXTENSION: a duration Pub/Sub accepts as an ack deadline.
pub(super) fn lease_extension(v: &str) -> Result<Duration, ConfigError> {
    let d = duration("LEASE_EXTENSION (--lease-extension)", v)?;
    if !(Duration::from_secs(10)..=Duration::from_secs(600)).contains(&d) {
        return Err(ConfigError(format!(
            "configuration error: LEASE_EXTENSION (--lease-extension) must be between 10s and \
             600s, got {v:?}"
        )));
    }
    Ok(d)
}

/// LOG_FORMAT: text or json, any case.
pub(super) fn log_format(v: &str) -> Result<LogFormat, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(ConfigError(format!(
            "configuration error: LOG_FORMAT (--log-format) must be text or json, got {other:?}"
        ))),
    }
}

fn bad(what: &str, value: &str, why: &str) -> ConfigError {
    ConfigError(format!("configuration error: {what} {value:?} {why}"))
}

/// Project IDs: 6-30 chars of lowercase letters, digits and hyphens. The
/// emulator accepts any name, so only the character set is enforced, which
/// still catches a pasted project *number* with spaces or a full URL.
fn check_project_id(p: &str) -> Result<(), ConfigError> {
    let ok = p.len() <= 100
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "PROJECT_ID (--project-id)",
            p,
            "is not a valid project ID",
        ))
    }
}

/// Accepts a short subscription ID or the full resource name of a
/// subscription in the same project.
fn subscription_name(project: &str, s: &str) -> Result<String, ConfigError> {
    const WHAT: &str = "SUBSCRIPTION_ID (--subscription-id)";
    let id = if let Some(rest) = s.strip_prefix("projects/") {
        match rest.split_once("/subscriptions/") {
            Some((p, id)) if p == project => id,
            Some((p, _)) => {
                return Err(bad(
                    WHAT,
                    s,
                    &format!("names project {p:?} but PROJECT_ID is {project:?}"),
                ))
            }
            None => return Err(bad(WHAT, s, "is not projects/P/subscriptions/S")),
        }
    } else {
        s
    };
    // Pub/Sub resource IDs: 3-255 chars, start with a letter, then letters,
    // digits and - _ . ~ + %.
    let valid = (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%'));
    if !valid {
        return Err(bad(
            WHAT,
            s,
            "is not a valid subscription ID (3-255 chars, starts with a letter)",
        ));
    }
    Ok(format!("projects/{project}/subscriptions/{id}"))
}

/// Bucket names: 3-63 chars (222 with dots) of lowercase letters, digits,
/// '-', '_' and '.', starting and ending with a letter or digit.
fn check_bucket(b: &str) -> Result<(), ConfigError> {
    let max = if b.contains('.') { 222 } else { 63 };
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = (3..=max).contains(&b.len())
        && b.starts_with(edge)
        && b.ends_with(edge)
        && b.chars().all(|c| edge(c) || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "BUCKET_NAME (--bucket-name)",
            b,
            "is not a valid bucket name (3-63 lowercase letters, digits, '-', '_', '.')",
        ))
    }
}

/// Object names may not contain CR/LF and are at most 1024 bytes; leave room
/// for the message ID (up to ~20 digits).
pub(super) fn check_object_prefix(p: &str) -> Result<(), ConfigError> {
    if p.len() > 900 || p.contains(['\r', '\n']) || p.starts_with(".well-known/acme-challenge/") {
        return Err(bad(
            "OBJECT_PREFIX (--object-prefix)",
            p,
            "is not usable as an object name prefix",
        ));
    }
    Ok(())
}

pub(super) fn positive(what: &str, v: &str, max: usize) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(what, v, &format!("must be an integer from 1 to {max}"))),
    }
}

/// Parses a duration exactly as rinit does, with rinit's own parser
/// (`rinit::platform::parse_duration`: humantime's `500ms`, `8s`, `1m30s`,
/// `2h`, or a bare number of seconds, guarded against the sums that make
/// humantime panic): one grammar for the init and the worker. Zero and
/// anything over 24 h are refused: every duration here is a timeout or a
/// hold.
fn parse_duration(v: &str) -> Option<Duration> {
    let d = rinit::platform::parse_duration("duration", v).ok()?;
    (!d.is_zero() && d <= Duration::from_secs(86_400)).then_some(d)
}

/// Bounds of MAX_OUTSTANDING_BYTES. Below 1 MiB the bound would serialize
/// ordinary traffic; above 1 TiB it bounds nothing.
const MIN_OUTSTANDING_BYTES: u64 = 1 << 20;
const MAX_OUTSTANDING_BYTES: u64 = 1 << 40;

/// Parses a size: bytes (`1048576`), or a number with a unit, decimal (`kB`,
/// `MB`, `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`), case-insensitive,
/// with optional space (`64MiB`, `1.5 GB`).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = (n * factor as f64).round();
    // Also refuses NaN and infinities (`as` would saturate them).
    (bytes.is_finite() && (0.0..=u64::MAX as f64 / 2.0).contains(&bytes)).then_some(bytes as u64)
}

pub(super) fn duration(what: &str, v: &str) -> Result<Duration, ConfigError> {
    parse_duration(v).ok_or_else(|| {
        bad(
            what,
            v,
            "must be a positive duration such as 500ms, 8s, 1m30s or 60 (seconds), at most 24h",
        )
    })
}

/// The drain budget rinit hands its child: whole milliseconds, 0 included
/// (rinit's grace leaves the child no time), at most rinit's own longest
/// duration. Unset or empty: no budget (not under rinit, or `--grace=none`).
pub(super) fn rinit_drain_budget(v: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = v.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .filter(|d| *d <= rinit::platform::MAX_DURATION)
        .map(Some)
        .ok_or_else(|| {
            bad(
                "RINIT_DRAIN_MS",
                &raw,
                "must be whole milliseconds (rinit sets it from its grace; unset it to use \
                 DRAIN_TIMEOUT or the 6s default)",
            )
        })
}

/// `host:port`, optionally with an `http://` or `https://` scheme, turned
/// into a URL. Only the form is checked: no name is resolved here.
pub(super) fn emulator_endpoint(var: &str, v: Option<String>) -> Result<Endpoint, ConfigError> {
    let Some(raw) = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
        return Ok(Endpoint::Google);
    };
    let (scheme, rest) = if let Some(r) = raw.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = raw.strip_prefix("https://") {
        ("https", r)
    } else {
        ("http", raw.as_str())
    };
    let rest = rest.trim_end_matches('/');
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || rest.contains('/') {
        return Err(bad(
            var,
            &raw,
            "must be host:port (optionally with http://)",
        ));
    }
    Ok(Endpoint::Emulator(format!("{scheme}://{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("8s", ms(8_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1m30s", ms(90_000)),
            ("1m 30s", ms(90_000)),
            // A bare number is seconds, as for rinit.
            ("3", ms(3_000)),
            ("1.5", ms(1_500)),
            ("3600.123456789", Duration::new(3600, 123_456_789)),
            // What humantime prints for a bare-seconds value parses back.
            ("2m 9s 457ms 555us 800ns", Duration::new(129, 457_555_800)),
        ] {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        // Zero, over 24 h, negative, not a duration, and an absurd sum
        // (refused, not a panic in humantime).
        for text in [
            "0s",
            "25h",
            "-3",
            "NaN",
            "abc",
            "5 parsecs",
            "0.5s18446744073709551615.5s",
        ] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("64 mib"), Some(64 << 20));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("2k"), Some(2000));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("-1MiB"), None);
        assert_eq!(parse_size("1..5MiB"), None);
        assert_eq!(parse_size("10 parsecs"), None);
        assert_eq!(parse_size("1e400"), None);
    }

    #[test]
    fn emulator_hosts() {
        assert_eq!(
            emulator_endpoint("X", Some("127.0.0.1:8085".into())),
            Ok(Endpoint::Emulator("http://127.0.0.1:8085".into()))
        );
        assert_eq!(
            emulator_endpoint("X", Some("http://localhost:9023/".into())),
            Ok(Endpoint::Emulator("http://localhost:9023".into()))
        );
        assert_eq!(
            emulator_endpoint("X", Some("".into())),
            Ok(Endpoint::Google)
        );
        assert!(emulator_endpoint("X", Some("localhost".into())).is_err());
        assert!(emulator_endpoint("X", Some("localhost:http".into())).is_err());
    }
}
