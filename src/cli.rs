//! Command line and environment, turned into a checked `Config`.
//!
//! Everything that could make a drain impossible (a grace longer than the
//! platform allows, a stage past the deadline) is refused here, before the
//! command starts, as a one-line usage error.

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use tracing::level_filters::LevelFilter;

use crate::log::{self, Format};
use crate::platform::{self, Platform};
use crate::shutdown::{self, Plan};
use crate::signals::{self, Rewrites};

/// Exit status of every usage error (as with most Unix tools).
pub const USAGE: i32 = 2;

/// Everything rinit needs to run, validated.
#[derive(Debug)]
pub struct Config {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// What a stop does, and the grace.
    pub plan: Plan,
    /// The platform and its kill window (`None`: no window).
    pub platform: Platform,
    pub kill_after: Option<Duration>,
    /// `--rewrite` table.
    pub rewrites: Rewrites,
    /// Exit codes reported as 0 (`-e`).
    pub expect_exit: Vec<i32>,
    /// Signal the child only, not its group.
    pub single_child: bool,
    /// Put the child in its own session/group (off with `DUMB_INIT_SETSID=0`).
    pub setsid: bool,
    /// Signal rinit asks to get when its parent dies (`-p`).
    pub parent_death: Option<i32>,
    pub log_format: Format,
    pub log_level: LevelFilter,
}

/// Why parsing stopped: print `text` and exit with `status`.
#[derive(Debug)]
pub struct Stop {
    pub status: i32,
    pub text: String,
}

fn usage(msg: impl std::fmt::Display) -> Stop {
    Stop {
        status: USAGE,
        text: format!("rinit: {msg} (see 'rinit --help')"),
    }
}

/// `rinit --help`. Written out rather than generated: clap's help renderer
/// costs ~50 KiB of a binary whose budget is 1.35 MB.
const HELP: &str = "\
rinit: a container init with a bounded drain. Forwards signals to the command's process group,
reaps zombies, and SIGKILLs what is left at its own deadline, before the platform's SIGKILL.

Usage: rinit [OPTIONS] [--] COMMAND [ARGS]...

Drain:
      --grace DURATION          Time from the stop signal to SIGKILL of everything left (25s, 1m30s,
                                500ms; 'none' never escalates). Default: platform window minus 2s
                                (env RINIT_GRACE)
      --platform NAME           auto, docker (10s), ecs (30s), kubernetes (30s), cloud-run (10s), none
                                [default: auto]
      --platform-kill-after DUR The platform's real stop-to-SIGKILL window: docker stop -t, ECS
                                stopTimeout, terminationGracePeriodSeconds (env RINIT_PLATFORM_KILL_AFTER)
      --stop-signals LIST       Signals that start the drain [default: TERM,INT,QUIT]
      --stop-sequence SEQ       Send these instead of the stop signal: 'TSTP@0s,TERM@5s'; a negative
                                offset counts back from the deadline ('QUIT@-3s')
      --preset NAME             A stop sequence for a known worker (below)
      --pre-stop-delay DURATION Wait this long after the stop signal before forwarding anything
                                (counts against the grace)
Signals:
  -c, --single-child            Signal the command only, not its process group
  -r, --rewrite FROM:TO         Forward FROM as TO; TO 0 drops it (repeatable)
  -p SIG                        Signal rinit gets when its parent dies
Exit:
  -e, --expect-exit CODE        Report this exit code of the command as 0 (repeatable)
Logs:
      --log-format FORMAT       text, json or auto (json on ECS, Kubernetes, Cloud Run)
                                (env RINIT_LOG_FORMAT) [default: auto]
  -v, --verbose / -q, --quiet   More / fewer logs (repeatable; env RINIT_LOG=error|warn|info|debug)
Accepted for tini: -s (subreaper: always on when not PID 1), -g (group: the default), -w;
  env TINI_SUBREAPER, TINI_KILL_PROCESS_GROUP, TINI_VERBOSITY. For dumb-init: DUMB_INIT_SETSID=0.
  -h, --help                    This help
  -V, --version                 Version

Presets (offsets from the stop signal; negative ones count back from the deadline):
  sidekiq   TSTP@0s,TERM@2s    TSTP = quiet (stop fetching), TERM 2s later = shut down
  faktory   TSTP@0s,TERM@2s    TSTP = quiet, TERM 2s later = shut down
  celery    TERM@0s,QUIT@-3s   TERM = warm shutdown, QUIT 3s before the deadline = cold shutdown
  resque    QUIT@0s,TERM@-3s   QUIT = finish the job and exit, TERM 3s before the deadline = kill it

Exit status: the command's own; 128+N if it died by signal N (137 when rinit killed it at the
deadline); 2 usage error; 126 command not executable; 127 command not found; 1 other start failure.
";

fn command() -> Command {
    let flag = |id: &'static str, short: char| Arg::new(id).short(short).action(ArgAction::SetTrue);
    let opt = |id: &'static str, long: &'static str| Arg::new(id).long(long);
    let many = |id: &'static str, short: char, long: &'static str| {
        Arg::new(id)
            .short(short)
            .long(long)
            .action(ArgAction::Append)
    };
    Command::new("rinit")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(flag("help", 'h').long("help"))
        .arg(flag("version", 'V').long("version"))
        .arg(opt("grace", "grace"))
        .arg(opt("platform", "platform"))
        .arg(opt("kill_after", "platform-kill-after"))
        .arg(opt("stop_signals", "stop-signals"))
        .arg(opt("sequence", "stop-sequence"))
        .arg(opt("preset", "preset").conflicts_with("sequence"))
        .arg(opt("pre_stop", "pre-stop-delay"))
        .arg(opt("log_format", "log-format"))
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::Count),
        )
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .action(ArgAction::Count),
        )
        .arg(flag("single_child", 'c').long("single-child"))
        .arg(many("rewrite", 'r', "rewrite"))
        .arg(many("expect", 'e', "expect-exit"))
        .arg(Arg::new("pdeath").short('p'))
        .arg(flag("subreaper", 's'))
        .arg(flag("group", 'g'))
        .arg(flag("warn", 'w'))
        .arg(Arg::new("command").num_args(1..).trailing_var_arg(true))
}

/// Parses `args` (without argv[0]) and the environment into a `Config`.
pub fn parse(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Stop> {
    let m = command()
        .try_get_matches_from(std::iter::once("rinit".into()).chain(args))
        .map_err(|e| {
            let text = e.to_string();
            usage(
                text.lines()
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: "),
            )
        })?;
    if m.get_flag("help") {
        return Err(Stop {
            status: 0,
            text: HELP.into(),
        });
    }
    if m.get_flag("version") {
        return Err(Stop {
            status: 0,
            text: format!("rinit {}\n", env!("CARGO_PKG_VERSION")),
        });
    }
    if !m.contains_id("command") {
        return Err(usage(
            "no COMMAND given: rinit [OPTIONS] -- COMMAND [ARGS]...",
        ));
    }
    config(&m, env).map_err(usage)
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{flag}='{text}' is not a duration such as 25s, 1m30s or 500ms: {e}"))
}

/// A flag's value, or the environment variable standing in for it.
fn value(
    m: &ArgMatches,
    id: &str,
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
) -> Option<String> {
    m.get_one::<String>(id)
        .cloned()
        .or_else(|| env(var).filter(|v| !v.is_empty()))
}

fn config(m: &ArgMatches, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    let platform = Platform::parse(m.get_one::<String>("platform").map_or("auto", |s| s), env)?;
    let kill_after = match value(m, "kill_after", env, "RINIT_PLATFORM_KILL_AFTER") {
        Some(t) => Some(duration("--platform-kill-after", &t)?),
        None => platform.kill_after(),
    };
    let grace = match value(m, "grace", env, "RINIT_GRACE") {
        Some(t) if t.trim() == "none" => Some(None),
        Some(t) => match duration("--grace", &t)? {
            d if d.is_zero() => {
                return Err("--grace=0 would kill at once; use 'none' to never escalate".into())
            }
            d => Some(Some(d)),
        },
        None => None,
    };
    let grace = platform::resolve_grace(grace, platform, kill_after)?;
    let pre_stop = match m.get_one::<String>("pre_stop") {
        Some(t) => duration("--pre-stop-delay", t)?,
        None => Duration::ZERO,
    };
    if let Some(g) = grace.filter(|&g| pre_stop >= g) {
        return Err(format!(
            "--pre-stop-delay={} does not fit in --grace={}: nothing would be forwarded before the deadline",
            platform::fmt(pre_stop),
            platform::fmt(g)
        ));
    }
    let sequence = match (
        m.get_one::<String>("sequence"),
        m.get_one::<String>("preset"),
    ) {
        (Some(seq), _) => Some(shutdown::parse_sequence(seq, grace, pre_stop)?),
        (None, Some(name)) => {
            let (_, seq, _) = shutdown::PRESETS
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| {
                    format!("--preset '{name}' is not one of sidekiq, faktory, celery, resque")
                })?;
            Some(
                shutdown::parse_sequence(seq, grace, pre_stop)
                    .map_err(|e| format!("--preset {name} ({seq}) does not fit: {e}"))?,
            )
        }
        (None, None) => None,
    };
    let stop_signals = match m.get_one::<String>("stop_signals") {
        Some(list) => list
            .split(',')
            .map(|s| match signals::parse(s, false) {
                Ok(n) if signals::catchable(n) && n != libc::SIGCHLD => Ok(n),
                Ok(n) => Err(format!(
                    "--stop-signals: {} never reaches rinit",
                    signals::name(n)
                )),
                Err(e) => Err(format!("--stop-signals: {e}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![libc::SIGTERM, libc::SIGINT, libc::SIGQUIT],
    };
    let mut rewrites = Rewrites::default();
    for spec in m.get_many::<String>("rewrite").into_iter().flatten() {
        rewrites.add(spec)?;
    }
    let expect_exit = m
        .get_many::<String>("expect")
        .into_iter()
        .flatten()
        .map(|c| match c.parse::<i32>() {
            Ok(n @ 0..=255) => Ok(n),
            _ => Err(format!("--expect-exit '{c}' is not an exit code (0-255)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let parent_death = m
        .get_one::<String>("pdeath")
        .map(|s| signals::parse(s, false).map_err(|e| format!("-p: {e}")))
        .transpose()?;
    let log_format = match value(m, "log_format", env, "RINIT_LOG_FORMAT").as_deref() {
        None | Some("auto") if platform.wants_json() => Format::Json,
        None | Some("auto") | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(format!(
                "--log-format '{other}' is not one of text, json, auto"
            ))
        }
    };
    let log_level = level(m, env)?;
    let setsid = env("DUMB_INIT_SETSID").as_deref() != Some("0");
    Ok(Config {
        command: m
            .get_many::<String>("command")
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        plan: Plan {
            grace,
            stop_signals,
            sequence,
            pre_stop,
        },
        platform,
        kill_after,
        rewrites,
        expect_exit,
        // Without its own group the child can only be signalled alone.
        single_child: m.get_flag("single_child") || !setsid,
        setsid,
        parent_death,
        log_format,
        log_level,
    })
}

/// `-v`/`-q` beat `RINIT_LOG`, which beats tini's `TINI_VERBOSITY`.
fn level(m: &ArgMatches, env: &dyn Fn(&str) -> Option<String>) -> Result<LevelFilter, String> {
    const LADDER: [LevelFilter; 6] = [
        LevelFilter::OFF,
        LevelFilter::ERROR,
        LevelFilter::WARN,
        LevelFilter::INFO,
        LevelFilter::DEBUG,
        LevelFilter::TRACE,
    ];
    let base = if let Some(v) = env("RINIT_LOG").filter(|v| !v.is_empty()) {
        log::parse_level(&v)
            .ok_or_else(|| format!("RINIT_LOG='{v}' is not one of off, error, warn, info, debug"))?
    } else {
        match env("TINI_VERBOSITY").and_then(|v| v.parse::<u8>().ok()) {
            Some(0) => LevelFilter::ERROR,
            Some(1 | 2) | None => LevelFilter::INFO,
            Some(_) => LevelFilter::DEBUG,
        }
    };
    let pos = LADDER.iter().position(|&l| l == base).unwrap_or(3) as i64;
    let v = i64::from(m.get_count("verbose"));
    let q = i64::from(m.get_count("quiet"));
    Ok(LADDER[(pos + v - q).clamp(0, 5) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, Stop> {
        parse(args.iter().map(Into::into), &|_| None)
    }

    #[test]
    fn command_with_and_without_dashes() {
        assert_eq!(
            run(&["--", "sleep", "-x", "1"]).unwrap().command,
            ["sleep", "-x", "1"]
        );
        assert_eq!(
            run(&["sleep", "-x", "--grace=1s"]).unwrap().command,
            ["sleep", "-x", "--grace=1s"]
        );
        assert_eq!(run(&["-c", "sleep"]).unwrap().command, ["sleep"]);
    }

    #[test]
    fn unknown_option_is_a_usage_error() {
        let e = run(&["--bogus", "sleep"]).unwrap_err();
        assert_eq!(e.status, 2);
        assert!(
            e.text.contains("--bogus") && !e.text.contains('\n'),
            "{}",
            e.text
        );
        assert_eq!(run(&[]).unwrap_err().status, 2);
    }

    #[test]
    fn refused_configurations_name_their_values() {
        let e = run(&["--grace=25s", "x"]).unwrap_err();
        assert!(
            e.text.contains("--grace=25s") && e.text.contains("10s"),
            "{}",
            e.text
        );
        assert!(run(&["--grace=25s", "--platform-kill-after=30s", "x"]).is_ok());
        let e = run(&["--grace=5s", "--pre-stop-delay=5s", "x"]).unwrap_err();
        assert!(e.text.contains("--pre-stop-delay=5s"), "{}", e.text);
        let e = run(&["--grace=5s", "--stop-sequence=TERM@6s", "x"]).unwrap_err();
        assert!(e.text.contains("TERM@6s"), "{}", e.text);
        assert!(run(&["--grace=soon", "x"])
            .unwrap_err()
            .text
            .contains("'soon'"));
        assert!(run(&["--preset=nope", "x"])
            .unwrap_err()
            .text
            .contains("nope"));
    }

    #[test]
    fn verbosity_ladder() {
        assert_eq!(run(&["x"]).unwrap().log_level, LevelFilter::INFO);
        assert_eq!(run(&["-v", "x"]).unwrap().log_level, LevelFilter::DEBUG);
        assert_eq!(run(&["-qq", "x"]).unwrap().log_level, LevelFilter::ERROR);
    }
}
