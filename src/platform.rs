//! Which platform runs the container, and how long it waits before SIGKILL.
//!
//! The platform's kill window is the hard ceiling on any drain: if the
//! platform's SIGKILL lands first, rinit never gets to log, escalate, or exit
//! with the child's status. So the grace is checked against it at start-up.

use std::time::Duration;

/// A container platform with a known stop-to-kill window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// `docker stop`: SIGKILL 10 s after SIGTERM unless `-t` says otherwise.
    Docker,
    /// Amazon ECS: `stopTimeout`, 30 s by default (120 s at most).
    Ecs,
    /// Kubernetes: `terminationGracePeriodSeconds`, 30 s by default.
    Kubernetes,
    /// Cloud Run services, jobs and worker pools: 10 s, not configurable.
    CloudRun,
    /// No platform: no window to respect.
    None,
}

impl Platform {
    /// Parses the `--platform` value; `auto` detects from the environment.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Platform, String> {
        Ok(match text {
            "auto" => Platform::detect(env),
            "docker" => Platform::Docker,
            "ecs" => Platform::Ecs,
            "kubernetes" | "k8s" => Platform::Kubernetes,
            "cloud-run" | "cloudrun" => Platform::CloudRun,
            "none" => Platform::None,
            other => {
                return Err(format!(
                "--platform '{other}' is not one of auto, docker, ecs, kubernetes, cloud-run, none"
            ))
            }
        })
    }

    /// Reads the variables each platform sets in every container it runs.
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Platform {
        let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
        if set("K_SERVICE") || set("CLOUD_RUN_JOB") || set("CLOUD_RUN_WORKER_POOL") {
            Platform::CloudRun
        } else if set("ECS_CONTAINER_METADATA_URI_V4") {
            Platform::Ecs
        } else if set("KUBERNETES_SERVICE_HOST") {
            Platform::Kubernetes
        } else {
            Platform::Docker
        }
    }

    /// The name used in flags and logs.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Docker => "docker",
            Platform::Ecs => "ecs",
            Platform::Kubernetes => "kubernetes",
            Platform::CloudRun => "cloud-run",
            Platform::None => "none",
        }
    }

    /// The platform's default time from SIGTERM to SIGKILL.
    pub fn kill_after(self) -> Option<Duration> {
        match self {
            Platform::Docker | Platform::CloudRun => Some(Duration::from_secs(10)),
            Platform::Ecs | Platform::Kubernetes => Some(Duration::from_secs(30)),
            Platform::None => None,
        }
    }

    /// Structured platforms ship stderr to a log service that reads JSON.
    pub fn wants_json(self) -> bool {
        matches!(
            self,
            Platform::Ecs | Platform::Kubernetes | Platform::CloudRun
        )
    }
}

/// Margin kept between rinit's deadline and the platform's SIGKILL when the
/// grace is derived: enough to kill, reap, log and exit.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2);

/// The least margin an explicit `--grace` must leave.
pub const MIN_MARGIN: Duration = Duration::from_secs(1);

/// Grace used when neither `--grace` nor a platform window says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(8);

/// Decides the grace: the explicit one if it fits the window, otherwise the
/// window minus the safety margin. `Ok(None)` means no escalation.
pub fn resolve_grace(
    explicit: Option<Option<Duration>>,
    platform: Platform,
    window: Option<Duration>,
) -> Result<Option<Duration>, String> {
    match (explicit, window) {
        (Some(None), _) => Ok(None),
        (Some(Some(g)), Some(w)) if g + MIN_MARGIN > w => Err(format!(
            "--grace={} cannot be honoured: the {} platform kills PID 1 {} after SIGTERM; \
             use a grace of at most {}, or tell rinit the real window with --platform-kill-after",
            fmt(g),
            platform.name(),
            fmt(w),
            fmt(w.saturating_sub(MIN_MARGIN))
        )),
        (Some(Some(g)), _) => Ok(Some(g)),
        (None, Some(w)) if w > SAFETY_MARGIN => Ok(Some(w - SAFETY_MARGIN)),
        (None, Some(w)) => Err(format!(
            "--platform-kill-after={} leaves no room for a drain: it must exceed {}",
            fmt(w),
            fmt(SAFETY_MARGIN)
        )),
        (None, None) => Ok(Some(DEFAULT_GRACE)),
    }
}

/// The longest duration rinit accepts anywhere: far beyond any platform's
/// window, and small enough that no deadline arithmetic can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a humantime duration (`25s`, `1m30s`, `500ms`) for `what`
/// (`--grace`, ...), refusing anything over `MAX_DURATION`.
pub fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{what}='{text}' is not a duration such as 25s, 1m30s or 500ms: {e}")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{what}='{text}' is longer than the {} rinit accepts",
            fmt(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// Formats a duration the way it is written on the command line (`25s`, `1m 30s`).
pub fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn detects_each_platform() {
        assert_eq!(Platform::detect(&env_of(&[])), Platform::Docker);
        assert_eq!(
            Platform::detect(&env_of(&[("K_SERVICE", "api")])),
            Platform::CloudRun
        );
        assert_eq!(
            Platform::detect(&env_of(&[("CLOUD_RUN_JOB", "j")])),
            Platform::CloudRun
        );
        assert_eq!(
            Platform::detect(&env_of(&[("CLOUD_RUN_WORKER_POOL", "w")])),
            Platform::CloudRun
        );
        assert_eq!(
            Platform::detect(&env_of(&[("ECS_CONTAINER_METADATA_URI_V4", "http://x")])),
            Platform::Ecs
        );
        assert_eq!(
            Platform::detect(&env_of(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")])),
            Platform::Kubernetes
        );
        // Cloud Run wins over the Kubernetes variables it also sets.
        assert_eq!(
            Platform::detect(&env_of(&[
                ("K_SERVICE", "a"),
                ("KUBERNETES_SERVICE_HOST", "x")
            ])),
            Platform::CloudRun
        );
    }

    #[test]
    fn grace_against_window() {
        let s = Duration::from_secs;
        assert_eq!(
            resolve_grace(None, Platform::Docker, Some(s(10))),
            Ok(Some(s(8)))
        );
        assert_eq!(
            resolve_grace(Some(Some(s(9))), Platform::Docker, Some(s(10))),
            Ok(Some(s(9)))
        );
        let err = resolve_grace(Some(Some(s(25))), Platform::Docker, Some(s(10))).unwrap_err();
        assert!(
            err.contains("--grace=25s")
                && err.contains("10s")
                && err.contains("--platform-kill-after")
        );
        assert_eq!(
            resolve_grace(Some(None), Platform::Docker, Some(s(10))),
            Ok(None)
        );
        assert_eq!(
            resolve_grace(None, Platform::None, None),
            Ok(Some(DEFAULT_GRACE))
        );
    }
}
