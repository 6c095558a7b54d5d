//! Which platform runs the container, and what rinit knows of its kill window.
//!
//! The platform's kill window is the hard ceiling on any drain: if the
//! platform's SIGKILL lands first, rinit never gets to log, escalate, or exit
//! with the child's status. But only some windows can be known from inside:
//! one the operator states (`--platform-kill-after`), and Cloud Run's, which
//! is fixed. Docker's, ECS's and Kubernetes' are defaults that deployments
//! raise where no container can see it. So rinit enforces a known window
//! (refusing a grace that does not fit) and only warns about an assumed one:
//! refusing on a guess would block correct deployments.

use std::path::Path;
use std::time::Duration;

/// A container platform with a stop-to-kill window.
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
    /// Knative Serving on Kubernetes, which sets Cloud Run's `K_SERVICE`
    /// too: the pod's `terminationGracePeriodSeconds`. Only ever concluded
    /// from `K_SERVICE` with a stated window Cloud Run could not have.
    Knative,
    /// No platform (a terminal, a plain host): no window to respect.
    None,
}

/// What rinit knows of the window between the platform's SIGTERM and its SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// No platform: nothing to check the grace against.
    None,
    /// Stated by the operator, or fixed by the platform: a grace that does
    /// not fit is refused.
    Known(Duration),
    /// The platform's default, which the deployment may have raised where
    /// rinit cannot see: a grace that does not fit is only warned about.
    Assumed(Duration),
}

impl Window {
    /// The window's length, known or assumed.
    pub fn length(self) -> Option<Duration> {
        match self {
            Window::None => None,
            Window::Known(d) | Window::Assumed(d) => Some(d),
        }
    }

    /// `known`, `assumed` or `none`, as the start line says it.
    pub fn kind(self) -> &'static str {
        match self {
            Window::None => "none",
            Window::Known(_) => "known",
            Window::Assumed(_) => "assumed",
        }
    }
}

impl Platform {
    /// Parses the `--platform` value; `auto` detects from the environment.
    /// `from`: `--platform` or `RINIT_PLATFORM`, as a refusal names it.
    pub fn parse(
        text: &str,
        from: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Platform, String> {
        Ok(match text {
            "auto" => Platform::detect(env, in_container),
            "docker" => Platform::Docker,
            "ecs" => Platform::Ecs,
            "kubernetes" | "k8s" => Platform::Kubernetes,
            "cloud-run" | "cloudrun" => Platform::CloudRun,
            "knative" => Platform::Knative,
            "none" => Platform::None,
            other => {
                return Err(format!(
                "{from} '{other}' is not one of auto, docker, ecs, kubernetes, cloud-run, knative, none"
            ))
            }
        })
    }

    /// Reads the variables each platform sets in every container it runs.
    /// Without one, Docker's default applies only inside a container
    /// (`in_container` is asked last, as it costs a syscall or two); a
    /// terminal or a plain host has no kill window at all.
    pub fn detect(env: &dyn Fn(&str) -> Option<String>, in_container: fn() -> bool) -> Platform {
        let set = |k: &str| is_set(env, k);
        if set("K_SERVICE") || set("CLOUD_RUN_JOB") || set("CLOUD_RUN_WORKER_POOL") {
            Platform::CloudRun
        } else if set("ECS_CONTAINER_METADATA_URI_V4") {
            Platform::Ecs
        } else if set("KUBERNETES_SERVICE_HOST") {
            Platform::Kubernetes
        } else if in_container() {
            Platform::Docker
        } else {
            Platform::None
        }
    }

    /// The name used in flags and logs.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Docker => "docker",
            Platform::Ecs => "ecs",
            Platform::Kubernetes => "kubernetes",
            Platform::CloudRun => "cloud-run",
            Platform::Knative => "knative",
            Platform::None => "none",
        }
    }

    /// The window rinit works with: the operator's word (`stated`) first,
    /// then Cloud Run's fixed 10 s, then the platform's default. Cloud Run
    /// kills at 10 s whatever is stated, so a longer stated window there is
    /// refused rather than believed, naming what stated it (`from`).
    pub fn window(self, stated: Option<Duration>, from: &str) -> Result<Window, String> {
        Ok(match (stated, self) {
            (Some(d), Platform::CloudRun) if d > CLOUD_RUN => {
                return Err(format!(
                    "{from}={} is longer than Cloud Run's fixed window: \
                     Cloud Run kills PID 1 {} after SIGTERM, whatever is stated",
                    fmt(d),
                    fmt(CLOUD_RUN)
                ))
            }
            (Some(d), _) => Window::Known(d),
            (None, Platform::CloudRun) => Window::Known(CLOUD_RUN),
            (None, Platform::Docker) => Window::Assumed(Duration::from_secs(10)),
            (None, Platform::Ecs | Platform::Kubernetes | Platform::Knative) => {
                Window::Assumed(Duration::from_secs(30))
            }
            (None, Platform::None) => Window::None,
        })
    }

    /// Where a deployment on this platform raises its window.
    fn raised_by(self) -> &'static str {
        match self {
            Platform::Docker => {
                "docker stop -t, docker run --stop-timeout or Compose stop_grace_period"
            }
            Platform::Ecs => {
                "the task definition's stopTimeout, or ECS_CONTAINER_STOP_TIMEOUT on EC2"
            }
            Platform::Kubernetes | Platform::Knative => "the pod's terminationGracePeriodSeconds",
            Platform::CloudRun | Platform::None => "nothing",
        }
    }

    /// Structured platforms ship stderr to a log service that reads JSON.
    pub fn wants_json(self) -> bool {
        matches!(
            self,
            Platform::Ecs | Platform::Kubernetes | Platform::CloudRun | Platform::Knative
        )
    }
}

/// Cloud Run's fixed window between SIGTERM and SIGKILL.
const CLOUD_RUN: Duration = Duration::from_secs(10);

/// `K_SERVICE` is the only sign of Cloud Run: Cloud Run services set it,
/// and so does Knative Serving on any Kubernetes cluster. Jobs and worker
/// pools have variables of their own, which Knative does not set.
pub fn k_service_only(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| is_set(env, k);
    set("K_SERVICE") && !set("CLOUD_RUN_JOB") && !set("CLOUD_RUN_WORKER_POOL")
}

/// A platform's marker variable counts when set and not empty.
fn is_set(env: &dyn Fn(&str) -> Option<String>, k: &str) -> bool {
    env(k).is_some_and(|v| !v.is_empty())
}

/// The platform and window rinit works with, and a line for the start-up
/// log when `K_SERVICE` alone named the platform. There a stated window
/// beats the guess: one longer than Cloud Run's fixed 10 s cannot be Cloud
/// Run's, so it is Knative's (the pod's `terminationGracePeriodSeconds`).
pub fn resolve_window(
    platform: Platform,
    stated: Option<Duration>,
    from: &str,
    k_service_only: bool,
) -> Result<(Platform, Window, Option<String>), String> {
    if !k_service_only || platform != Platform::CloudRun {
        return Ok((platform, platform.window(stated, from)?, None));
    }
    let said = "K_SERVICE is set, by Cloud Run services and by Knative Serving alike";
    Ok(match stated {
        Some(d) if d > CLOUD_RUN => (
            Platform::Knative,
            Window::Known(d),
            Some(format!(
                "{said}: the stated window of {} is longer than Cloud Run's fixed {}, \
                 so this is Knative and the window is believed",
                fmt(d),
                fmt(CLOUD_RUN)
            )),
        ),
        Some(d) => (
            Platform::CloudRun,
            Window::Known(d),
            Some(format!("{said}: the stated window of {} is believed", fmt(d))),
        ),
        None => (
            Platform::CloudRun,
            Window::Known(CLOUD_RUN),
            Some(format!(
                "{said}: taken as Cloud Run, whose fixed {} window is enforced; on Knative, state the pod's \
                 terminationGracePeriodSeconds with --platform-kill-after (env RINIT_PLATFORM_KILL_AFTER)",
                fmt(CLOUD_RUN)
            )),
        ),
    })
}

/// Docker's `/.dockerenv` and Podman's `/run/.containerenv`: the markers
/// their engines put in every container's root. Both are what other tools
/// (systemd-detect-virt among them) rely on; a cgroup path is not, since
/// cgroup namespaces hide it.
fn in_container() -> bool {
    Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists()
}

/// Margin kept between rinit's deadline and the platform's SIGKILL when the
/// grace is derived: enough to kill, reap, log and exit.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2);

/// The least margin an explicit `--grace` must leave.
pub const MIN_MARGIN: Duration = Duration::from_secs(1);

/// Grace used when neither `--grace` nor a platform window says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(8);

/// The grace decided at start-up, and the warning to log when it is longer
/// than a window rinit only assumes.
#[derive(Debug, PartialEq, Eq)]
pub struct Grace {
    /// `None`: never escalate.
    pub grace: Option<Duration>,
    /// One line for the start-up log, or `None` when all is well.
    pub warning: Option<String>,
}

/// What the user wrote for each setting, as refusals name it: the flag,
/// or the environment variable that stood in for it (`RINIT_GRACE` in a
/// task definition, `--grace` in a Dockerfile).
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    pub kill_after: &'static str,
    pub grace: &'static str,
    pub pre_stop: &'static str,
    pub sequence: &'static str,
}

impl Sources {
    /// Every setting given as its flag.
    pub const FLAGS: Sources = Sources {
        kill_after: "--platform-kill-after",
        grace: "--grace",
        pre_stop: "--pre-stop-delay",
        sequence: "--stop-sequence",
    };
}

/// Decides the grace: the explicit one if it fits a known window (refused
/// otherwise) or an assumed one (warned otherwise), or else the window minus
/// the safety margin. `Some(None)` in `explicit` is `--grace=none`.
/// Refusals and the warning name the settings as the user wrote them
/// (`from`).
pub fn resolve_grace(
    explicit: Option<Option<Duration>>,
    platform: Platform,
    window: Window,
    from: &Sources,
) -> Result<Grace, String> {
    let ok = |grace| Grace {
        grace,
        warning: None,
    };
    match (explicit, window) {
        (Some(None), _) => Ok(ok(None)),
        (Some(Some(g)), Window::Known(w)) if g + MIN_MARGIN > w => Err(format!(
            "{}={} cannot be honoured: {} kills PID 1 {} after SIGTERM ({}); {}",
            from.grace,
            fmt(g),
            match platform {
                Platform::CloudRun => "Cloud Run".to_string(),
                Platform::None => "the platform".to_string(),
                p => format!("the {} platform", p.name()),
            },
            fmt(w),
            match platform {
                Platform::CloudRun => "a fixed window",
                _ => "the window stated by --platform-kill-after or RINIT_PLATFORM_KILL_AFTER",
            },
            if w > MIN_MARGIN {
                format!("use a grace of at most {}", fmt(w - MIN_MARGIN))
            } else {
                format!("a window of {} leaves no room for a drain", fmt(w))
            },
        )),
        (Some(Some(g)), Window::Assumed(w)) if g + MIN_MARGIN > w => Ok(Grace {
            grace: Some(g),
            warning: Some(format!(
                "{}={} does not fit the {} platform's default kill window of {}, \
                 which rinit assumes but cannot see: if it was raised ({}), state it with --platform-kill-after (env \
                 RINIT_PLATFORM_KILL_AFTER) to silence this warning; if not, the platform \
                 will SIGKILL mid-drain",
                from.grace,
                fmt(g),
                platform.name(),
                fmt(w),
                platform.raised_by()
            )),
        }),
        (Some(Some(g)), _) => Ok(ok(Some(g))),
        (None, Window::Known(w) | Window::Assumed(w)) if w > SAFETY_MARGIN => {
            Ok(ok(Some(w - SAFETY_MARGIN)))
        }
        (None, Window::Known(w) | Window::Assumed(w)) => Err(format!(
            "{}={} leaves no room for a drain: it must exceed {}",
            from.kill_after,
            fmt(w),
            fmt(SAFETY_MARGIN)
        )),
        (None, Window::None) => Ok(ok(Some(DEFAULT_GRACE))),
    }
}

/// The longest duration rinit accepts anywhere: far beyond any platform's
/// window, and small enough that no deadline arithmetic can overflow.
/// humantime's year (365.25 days), so the limit prints as `1year`.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Parses a duration for `what` (`--grace`, `RINIT_GRACE`, ...): humantime's
/// `25s`, `1m30s`, `500ms`, or a bare number of seconds (`60`, `2.5`), the
/// unit of every platform's own setting (`docker stop -t 60`, ECS
/// `stopTimeout: 60`, `terminationGracePeriodSeconds: 60`), so a value copied
/// from one starts rather than crash-looping on a refusal. Anything over
/// `MAX_DURATION` is refused.
pub fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    if seconds_bound(text) > 1 << 63 {
        return Err(format!(
            "{what}='{text}' is longer than the {} rinit accepts",
            fmt(MAX_DURATION)
        ));
    }
    let t = text.trim();
    let bare = t.starts_with(|c: char| c.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let seconds;
    let t = if bare {
        seconds = format!("{t}s");
        seconds.as_str()
    } else {
        t
    };
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("{what}='{text}' is not a duration such as 25s, 1m30s, 500ms or 60 (seconds): {e}")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{what}='{text}' is longer than the {} rinit accepts",
            fmt(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// An upper bound of the seconds humantime adds up for `text`, checked
/// before humantime sees it. humantime 2.4 panics (an overflow in
/// `Duration::new`) when its running total reaches `u64::MAX` seconds and a
/// carried second is added ("0.5s18446744073709551615.5s", found by
/// fuzzing, issue 13); rinit's release build aborts on a panic. Below 2^63
/// seconds that cannot happen, and every duration rinit accepts is far
/// below: each number counts as years unless its unit is below a second.
/// Numbers are read as humantime reads them: whitespace between digits
/// joins them ("1 2s" is 12s); a fraction adds less than one unit.
fn seconds_bound(text: &str) -> u64 {
    const YEAR: u64 = 31_557_600;
    let mut total: u64 = 0;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let (mut n, mut fraction, mut progress) = (0u64, false, false);
        while let Some(&c) = chars.peek() {
            match c.to_digit(10) {
                // Fraction digits add less than the one unit counted below.
                Some(d) if !fraction => n = n.saturating_mul(10).saturating_add(d.into()),
                Some(_) => {}
                None if c == '.' && !fraction => fraction = true,
                None if c.is_whitespace() => {}
                None => break,
            }
            progress = true;
            chars.next();
        }
        let mut unit = String::new();
        while let Some(&c) = chars
            .peek()
            .filter(|&&c| c.is_ascii_alphabetic() || c == 'µ')
        {
            unit.push(c);
            chars.next();
        }
        let secs = if unit.starts_with('n') {
            n / 1_000_000_000 + 1
        } else if unit.starts_with(['u', 'µ']) {
            n / 1_000_000 + 1
        } else if unit.starts_with("ms") || unit.starts_with("milli") {
            n / 1_000 + 1
        } else {
            n.saturating_add(1).saturating_mul(YEAR)
        };
        total = total.saturating_add(secs);
        if !progress && unit.is_empty() {
            // Neither a number nor a unit ('-', '+', ...): humantime refuses it.
            chars.next();
        }
    }
    total
}

/// Formats a duration the way it is written on the command line (`25s`, `1m 30s`).
pub fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stated window's name in refusals, as a flag.
    const KA: &str = Sources::FLAGS.kill_after;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn detects_each_platform() {
        let inside: fn() -> bool = || true;
        let outside: fn() -> bool = || false;
        assert_eq!(Platform::detect(&env_of(&[]), inside), Platform::Docker);
        assert_eq!(Platform::detect(&env_of(&[]), outside), Platform::None);
        let cases: [(&'static [(&str, &str)], Platform); 6] = [
            (&[("K_SERVICE", "api")], Platform::CloudRun),
            (&[("CLOUD_RUN_JOB", "j")], Platform::CloudRun),
            (&[("CLOUD_RUN_WORKER_POOL", "w")], Platform::CloudRun),
            (
                &[("ECS_CONTAINER_METADATA_URI_V4", "http://x")],
                Platform::Ecs,
            ),
            (
                &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
                Platform::Kubernetes,
            ),
            // Cloud Run wins over the Kubernetes variables it also sets.
            (
                &[("K_SERVICE", "a"), ("KUBERNETES_SERVICE_HOST", "x")],
                Platform::CloudRun,
            ),
        ];
        for (env, want) in cases {
            // A platform variable decides, inside a container or not.
            assert_eq!(Platform::detect(&env_of(env), inside), want, "{env:?}");
            assert_eq!(Platform::detect(&env_of(env), outside), want, "{env:?}");
        }
        // An empty variable is no platform.
        assert_eq!(
            Platform::detect(&env_of(&[("K_SERVICE", "")]), outside),
            Platform::None
        );
    }

    /// `K_SERVICE` alone: a stated window wins (Knative when it is longer
    /// than Cloud Run's 10 s), with one line saying so; jobs and worker
    /// pools keep Cloud Run's fixed window, stated or not.
    #[test]
    fn k_service_alone_believes_a_stated_window() {
        let env = env_of(&[("K_SERVICE", "api")]);
        assert!(k_service_only(&env));
        assert!(!k_service_only(&env_of(&[
            ("K_SERVICE", "a"),
            ("CLOUD_RUN_WORKER_POOL", "w")
        ])));
        let (p, w, note) = resolve_window(Platform::CloudRun, Some(S(60)), KA, true).unwrap();
        assert_eq!((p, w), (Platform::Knative, Window::Known(S(60))));
        assert!(note.unwrap().contains("Knative"));
        let (p, w, note) = resolve_window(Platform::CloudRun, Some(S(8)), KA, true).unwrap();
        assert_eq!((p, w), (Platform::CloudRun, Window::Known(S(8))));
        assert!(note.unwrap().contains("8s is believed"));
        let (p, w, note) = resolve_window(Platform::CloudRun, None, KA, true).unwrap();
        assert_eq!((p, w), (Platform::CloudRun, Window::Known(S(10))));
        assert!(note.unwrap().contains("--platform-kill-after"));
        // Not K_SERVICE alone: Cloud Run's fixed window, a longer one refused.
        assert!(resolve_window(Platform::CloudRun, Some(S(60)), KA, false).is_err());
        assert_eq!(
            resolve_window(Platform::Kubernetes, Some(S(60)), KA, false).unwrap(),
            (Platform::Kubernetes, Window::Known(S(60)), None)
        );
    }

    #[test]
    fn known_and_assumed_windows() {
        assert_eq!(
            Platform::CloudRun.window(None, KA),
            Ok(Window::Known(S(10)))
        );
        assert_eq!(
            Platform::Docker.window(None, KA),
            Ok(Window::Assumed(S(10)))
        );
        assert_eq!(Platform::Ecs.window(None, KA), Ok(Window::Assumed(S(30))));
        assert_eq!(
            Platform::Kubernetes.window(None, KA),
            Ok(Window::Assumed(S(30)))
        );
        assert_eq!(Platform::None.window(None, KA), Ok(Window::None));
        // Stated, the window is known whatever the platform...
        for p in [
            Platform::Docker,
            Platform::Ecs,
            Platform::Kubernetes,
            Platform::None,
        ] {
            assert_eq!(p.window(Some(S(60)), KA), Ok(Window::Known(S(60))), "{p:?}");
        }
        // ...but Cloud Run kills at 10 s whatever is stated: a shorter window
        // is believed, a longer one refused, naming both numbers.
        assert_eq!(
            Platform::CloudRun.window(Some(S(8)), KA),
            Ok(Window::Known(S(8)))
        );
        let e = Platform::CloudRun.window(Some(S(30)), KA).unwrap_err();
        assert!(e.contains("30s") && e.contains("10s"), "{e}");
    }

    /// Every platform, its window known or assumed, a grace over or under it.
    #[test]
    fn grace_against_each_window() {
        use Platform as P;
        // (platform, stated window, grace, refused?, warned?)
        let cases = [
            (P::Docker, None, 9, false, false),
            (P::Docker, None, 25, false, true),
            (P::Docker, Some(30), 25, false, false),
            (P::Docker, Some(20), 25, true, false),
            (P::Ecs, None, 29, false, false),
            (P::Ecs, None, 40, false, true),
            (P::Ecs, Some(60), 40, false, false),
            (P::Ecs, Some(30), 40, true, false),
            (P::Kubernetes, None, 29, false, false),
            (P::Kubernetes, None, 30, false, true),
            (P::Kubernetes, Some(60), 55, false, false),
            (P::Kubernetes, Some(30), 30, true, false),
            (P::CloudRun, None, 9, false, false),
            (P::CloudRun, None, 10, true, false),
            (P::CloudRun, Some(8), 7, false, false),
            (P::CloudRun, Some(8), 8, true, false),
            (P::None, None, 3600, false, false),
            (P::None, Some(10), 25, true, false),
            (P::Docker, Some(1), 1, true, false),
        ];
        for (platform, stated, g, refused, warned) in cases {
            let r = resolve_grace(
                Some(Some(S(g))),
                platform,
                platform.window(stated.map(S), KA).unwrap(),
                &Sources::FLAGS,
            );
            let what = format!("{platform:?} window {stated:?} grace {g}s: {r:?}");
            match r {
                Err(e) => {
                    assert!(refused, "{what}");
                    let w = fmt(platform
                        .window(stated.map(S), KA)
                        .unwrap()
                        .length()
                        .unwrap());
                    assert!(
                        e.contains(&format!("--grace={g}s")) && e.contains(&w),
                        "names both numbers: {e}"
                    );
                }
                Ok(got) => {
                    assert!(!refused, "{what}");
                    assert_eq!(got.grace, Some(S(g)), "{what}");
                    assert_eq!(got.warning.is_some(), warned, "{what}");
                }
            }
        }
    }

    #[test]
    fn the_warning_names_platform_window_setting_and_flag() {
        let words = [
            (Platform::Docker, "10s", "docker stop -t"),
            (Platform::Docker, "10s", "stop_grace_period"),
            (Platform::Ecs, "30s", "stopTimeout"),
            (Platform::Kubernetes, "30s", "terminationGracePeriodSeconds"),
        ];
        for (p, window, setting) in words {
            let w = resolve_grace(
                Some(Some(S(45))),
                p,
                p.window(None, KA).unwrap(),
                &Sources::FLAGS,
            )
            .unwrap()
            .warning
            .unwrap();
            for needle in [
                p.name(),
                window,
                setting,
                "--platform-kill-after",
                "--grace=45s",
            ] {
                assert!(w.contains(needle), "{needle:?} not in {w}");
            }
            assert!(!w.contains('\n'), "one line: {w}");
        }
    }

    /// humantime panics on a total of u64::MAX seconds plus a carried
    /// second; such a text is refused before it gets there, and every
    /// duration up to the limit, in any unit, still parses.
    #[test]
    fn absurd_durations_are_refused_not_a_panic() {
        for t in [
            "0.5s18446744073709551615.5s",
            "0.5s 18446744073709551615.5s",
            "18446744073709551615s.5s.5s",
            "584542046090y 1s .5s .5s",
            "1 8446744073709551615 s .5s .5s",
        ] {
            let e = parse_duration("--grace", t).unwrap_err();
            assert!(
                e.contains("longer than") || e.contains("not a duration"),
                "{t}: {e}"
            );
        }
        for (t, secs) in [
            ("60", 60),
            (" 30 ", 30),
            ("0", 0),
            ("31536000", 31_536_000),
            ("31536000000000000ns", 31_536_000),
            ("31536000000000us", 31_536_000),
            ("31536000000ms", 31_536_000),
            ("31536000s", 31_536_000),
            ("365d", 31_536_000),
            ("52w 1d", 31_536_000),
            ("1h 30m", 5400),
            ("1 2s", 12),
            ("1.999999999s 1ns", 2),
        ] {
            assert_eq!(parse_duration("--grace", t), Ok(S(secs)), "{t}");
        }
    }

    /// The platforms' settings are plain seconds; a value copied from one
    /// means seconds here too, fractions included.
    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(
            parse_duration("--grace", "2.5"),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(
            parse_duration("--grace", "25"),
            parse_duration("--grace", "25s")
        );
        for t in ["-3", "1.2.3", ".5", "1e3", "NaN", "1 2"] {
            let e = parse_duration("RINIT_GRACE", t).unwrap_err();
            assert!(
                e.starts_with(&format!("RINIT_GRACE='{t}' is not a duration")),
                "{t}: {e}"
            );
        }
        let e = parse_duration("--grace", "31557601").unwrap_err();
        assert!(e.contains("longer than the 1year"), "{e}");
    }

    #[test]
    fn default_grace() {
        let d = |p: Platform, stated| {
            resolve_grace(None, p, p.window(stated, KA).unwrap(), &Sources::FLAGS).unwrap()
        };
        assert_eq!(d(Platform::Docker, None).grace, Some(S(8)));
        assert_eq!(d(Platform::Kubernetes, None).grace, Some(S(28)));
        assert_eq!(d(Platform::CloudRun, None).grace, Some(S(8)));
        assert_eq!(d(Platform::Ecs, Some(S(60))).grace, Some(S(58)));
        assert_eq!(d(Platform::None, None).grace, Some(DEFAULT_GRACE));
        assert!(d(Platform::Docker, None).warning.is_none());
        assert!(
            resolve_grace(None, Platform::Docker, Window::Known(S(2)), &Sources::FLAGS).is_err()
        );
        // `--grace=none` escalates never, whatever the window.
        assert_eq!(
            resolve_grace(
                Some(None),
                Platform::CloudRun,
                Window::Known(S(10)),
                &Sources::FLAGS
            )
            .unwrap()
            .grace,
            Option::None
        );
    }
}
