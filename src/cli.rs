//! Command line and environment, turned into a checked `Config`.
//!
//! Everything that could make a drain impossible (a grace longer than the
//! platform allows, a stage past the deadline) is refused here, before the
//! command starts, as a one-line usage error.

use std::ffi::OsString;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

use crate::log::{self, Format};
use crate::platform::{self, fmt, Platform, Sources, Window};
use crate::shutdown::{Plan, Stage};
use crate::signals::{self, Rewrites};

/// Exit status of every usage error (as with most Unix tools).
pub const USAGE: i32 = 2;

/// Everything rinit needs to run, validated.
#[derive(Debug)]
pub struct Config {
    /// The command and its arguments, byte for byte as given.
    pub command: Vec<OsString>,
    /// What a stop does, and the grace.
    pub plan: Plan,
    /// The platform and what rinit knows of its kill window.
    pub platform: Platform,
    pub window: Window,
    /// Logged at start: the grace does not fit a window rinit only assumes.
    pub grace_warning: Option<String>,
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
    /// Where the termination message goes (`--termination-log`).
    pub termination_log: TerminationLog,
    /// Logged at start: what rinit made of an ambiguous platform variable.
    pub platform_note: Option<String>,
    pub log_format: Format,
    pub log_level: LevelFilter,
}

/// Where rinit writes its termination message at exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TerminationLog {
    /// Kubernetes' `/dev/termination-log`, if it exists and is writable.
    Default,
    /// This file, created if need be (`--termination-log PATH`).
    Path(OsString),
    /// Nowhere (`--termination-log none`).
    Off,
}

/// Why parsing stopped: print `text` and exit with `status`.
#[derive(Debug)]
pub struct Stop {
    pub status: i32,
    pub text: String,
}

/// The usage error the user sees for `msg`: one line on stderr, exit 2.
///
/// Messages quote what the user gave, which can hold a newline, a carriage
/// return or a terminal escape; those are written escaped (`\n`), so a
/// rejection is always exactly one line (found by fuzzing, issue 13).
pub fn usage(msg: impl std::fmt::Display) -> Stop {
    let mut text = String::from("rinit: ");
    log::escape_into(&mut text, &msg.to_string());
    text.push_str(" (see 'rinit --help')");
    Stop {
        status: USAGE,
        text,
    }
}

/// `rinit --help`. Written out rather than generated: clap's help renderer
/// costs ~50 KiB of a binary whose budget is 1.35 MB.
const HELP: &str = "\
rinit: a container init with a bounded drain. Forwards signals to the command's process group,
reaps zombies, and SIGKILLs what is left at its own deadline, before the platform's SIGKILL.

Usage: rinit [OPTIONS] [--] COMMAND [ARGS]...

Durations: 25s, 1m30s, 500ms, or a bare number of seconds (60), as the platforms write them.

Drain:
      --grace DURATION          Time from the stop signal to SIGKILL of everything left. Default:
                                platform window minus 2s (8s with none). 'none': never SIGKILL;
                                rinit waits as long as anything it started runs, and the
                                platform's kill is the only bound (env RINIT_GRACE)
      --platform NAME           auto, docker (10s), ecs (30s), kubernetes (30s), cloud-run (10s),
                                knative (30s), none
                                [default: auto: from the platform's variables; else docker inside a
                                container, none outside. K_SERVICE alone with a stated window over
                                10s is Knative] (env RINIT_PLATFORM)
      --platform-kill-after DUR The platform's real stop-to-SIGKILL window: docker stop -t, ECS
                                stopTimeout, terminationGracePeriodSeconds
                                (env RINIT_PLATFORM_KILL_AFTER). A stated window (or Cloud Run's
                                fixed one) is enforced: a grace that does not fit is refused. A
                                default one is only assumed: a grace past it starts with a warning
      --stop-signals LIST       Signals that start the drain [default: TERM,INT,QUIT]
      --stop-sequence SEQ       Send these instead of the stop signal: 'TSTP@0s,TERM@5s', offsets
                                from the end of --pre-stop-delay; a negative one counts back from
                                the deadline ('QUIT@-3s'). Sent where forwarded signals go: the
                                group, or the command alone with -c (env RINIT_STOP_SEQUENCE)
      --preset NAME             The stop sequence of a job runner (below); its steps and every
                                forwarded signal go to the runner's main process only, as with -c:
                                the runner stops its own workers (env RINIT_PRESET)
      --pre-stop-delay DURATION Wait this long after the stop signal before forwarding anything
                                (counts against the grace) (env RINIT_PRE_STOP_DELAY)
Signals:
  -c, --single-child            Signal the command only. Without -c, its whole process group, so
                                a wrapper's child hears the stop; a forward that kills a member
                                is a WARNING
  -r, --rewrite FROM:TO         Forward FROM as TO; TO 0 drops it (repeatable)
  -p SIG                        Signal rinit gets when its parent dies
Exit:
  -e, --expect-exit CODE        Report this exit status as 0, 128+N for death by signal N included
                                (repeatable)
      --termination-log PATH    Write one line at exit (status, cause, drain, what was killed);
                                'none' for nowhere [default: /dev/termination-log if it exists,
                                as Kubernetes mounts it] (env RINIT_TERMINATION_LOG)
Logs:
      --log-format FORMAT       text, json or auto (json on ECS, Kubernetes, Cloud Run)
                                (env RINIT_LOG_FORMAT) [default: auto]
  -v, --verbose / -q, --quiet   More / fewer logs (repeatable; env RINIT_LOG=off|error|warn|info|debug)
Accepted for tini: -s (subreaper: always on when not PID 1), -g (group: the default), -w;
  env TINI_SUBREAPER, TINI_KILL_PROCESS_GROUP, TINI_VERBOSITY. For dumb-init: DUMB_INIT_SETSID=0.
  -h, --help                    This help
  -V, --version                 Version

The exit line's cause says how the command ended: exited, signal, or for a SIGKILL deadline,
interrupt, oom (an ERROR line gives the memory limit and peak), other (another sender) or
unknown; see rinit(1), LOG LINES.

The command's environment also gets RINIT_DRAIN_MS and RINIT_DRAIN_SECONDS: the time from the
signal it receives to rinit's deadline, less 1s (none with --grace=none), for its own timeout.

Presets (offsets from the end of --pre-stop-delay; negative ones count back from the deadline):
  sidekiq   TSTP@0s,TERM@2s    TSTP = quiet (stop fetching), TERM 2s later = shut down
  faktory   TSTP@0s,TERM@2s    TSTP = quiet, TERM 2s later = shut down
  celery    TERM@0s,QUIT@-3s   TERM = warm shutdown, QUIT 3s before the deadline = cold shutdown
  resque    QUIT@0s,TERM@-3s   QUIT = finish the job and exit, TERM 3s before the deadline = kill it

Exit status: the command's own; 128+N if it died by signal N (137 when rinit killed it at the
deadline; -e maps any of these to 0, -e 137 included); 2 usage error; 126 command not executable
(its interpreter or loader missing included); 127 command not found; 1 other start failure.
";

/// Every option rinit takes. The parse loop matches on these, so each lands
/// in its own typed field of `Args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Help,
    Version,
    Grace,
    Platform,
    PlatformKillAfter,
    StopSignals,
    StopSequence,
    Preset,
    PreStopDelay,
    TerminationLog,
    LogFormat,
    Verbose,
    Quiet,
    SingleChild,
    Rewrite,
    ExpectExit,
    /// tini's `-p SIG`.
    ParentDeath,
    /// tini's `-s`, `-g`, `-w`: accepted, nothing to do.
    TiniNoop,
}

/// Each option's long name (`None`: short only, as tini's), short letter.
const OPTIONS: [(Option<&str>, Option<char>, Opt); 20] = [
    (Some("help"), Some('h'), Opt::Help),
    (Some("version"), Some('V'), Opt::Version),
    (Some("grace"), None, Opt::Grace),
    (Some("platform"), None, Opt::Platform),
    (Some("platform-kill-after"), None, Opt::PlatformKillAfter),
    (Some("stop-signals"), None, Opt::StopSignals),
    (Some("stop-sequence"), None, Opt::StopSequence),
    (Some("preset"), None, Opt::Preset),
    (Some("pre-stop-delay"), None, Opt::PreStopDelay),
    (Some("termination-log"), None, Opt::TerminationLog),
    (Some("log-format"), None, Opt::LogFormat),
    (Some("verbose"), Some('v'), Opt::Verbose),
    (Some("quiet"), Some('q'), Opt::Quiet),
    (Some("single-child"), Some('c'), Opt::SingleChild),
    (Some("rewrite"), Some('r'), Opt::Rewrite),
    (Some("expect-exit"), Some('e'), Opt::ExpectExit),
    (None, Some('p'), Opt::ParentDeath),
    (None, Some('s'), Opt::TiniNoop),
    (None, Some('g'), Opt::TiniNoop),
    (None, Some('w'), Opt::TiniNoop),
];

impl Opt {
    fn takes_value(self) -> bool {
        !matches!(
            self,
            Opt::Help | Opt::Version | Opt::Verbose | Opt::Quiet | Opt::SingleChild | Opt::TiniNoop
        )
    }
}

/// The command line split into typed options and the command, not yet
/// checked. A single value is the last one given (later options win, as with
/// getopt); repeatable options collect in order.
///
/// lexopt rather than clap: clap's parser was 75% of rinit's start-up
/// instructions (151k of 202k for `rinit -q -- /bin/true`, bench/run), and an
/// init's start-up is paid by every container start; lexopt costs ~400
/// instructions and ~6 KB over a hand-written loop (NOTES.md). The grammar is
/// getopt's: options first, `--name=value`, `--name value`, `-abc` clusters,
/// `-rVALUE`; the first non-option (or everything after `--`) is the command.
#[derive(Debug, Default)]
struct Args {
    help: bool,
    version: bool,
    grace: Option<String>,
    platform: Option<String>,
    platform_kill_after: Option<String>,
    stop_signals: Option<String>,
    stop_sequence: Option<String>,
    preset: Option<String>,
    pre_stop_delay: Option<String>,
    termination_log: Option<String>,
    log_format: Option<String>,
    verbose: i64,
    quiet: i64,
    single_child: bool,
    rewrite: Vec<String>,
    expect_exit: Vec<String>,
    parent_death: Option<String>,
    command: Vec<OsString>,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
        use lexopt::Arg::{Long, Short, Value};
        let mut out = Args::default();
        let mut p = lexopt::Parser::from_args(args);
        // getopt (and tini) read `-e=0` as the value `=0`, not `0`.
        p.set_short_equals(false);
        while let Some(arg) = p.next().map_err(lexopt_error)? {
            let opt = match arg {
                Value(command) => {
                    out.command.push(command);
                    out.command.extend(p.raw_args().map_err(lexopt_error)?);
                    break;
                }
                // lexopt hands over a non-UTF-8 option with U+FFFD in it.
                Long(name) if name.contains('\u{FFFD}') => {
                    return Err(format!("option '--{name}' is not valid UTF-8"))
                }
                Short('\u{FFFD}') => return Err("an option is not valid UTF-8".into()),
                Long(name) => {
                    OPTIONS
                        .iter()
                        .find(|(long, _, _)| *long == Some(name))
                        .ok_or_else(|| format!("unknown option '--{name}'"))?
                        .2
                }
                Short(c) => {
                    OPTIONS
                        .iter()
                        .find(|(_, short, _)| *short == Some(c))
                        .ok_or_else(|| format!("unknown option '-{c}'"))?
                        .2
                }
            };
            let value = if opt.takes_value() {
                p.value()
                    .map_err(lexopt_error)?
                    .into_string()
                    .map_err(|v| format!("'{}' is not valid UTF-8", v.to_string_lossy()))?
            } else {
                String::new()
            };
            out.set(opt, value);
        }
        Ok(out)
    }

    /// Stores one option (`value` is empty for flags).
    fn set(&mut self, opt: Opt, value: String) {
        match opt {
            Opt::Help => self.help = true,
            Opt::Version => self.version = true,
            Opt::Grace => self.grace = Some(value),
            Opt::Platform => self.platform = Some(value),
            Opt::PlatformKillAfter => self.platform_kill_after = Some(value),
            Opt::StopSignals => self.stop_signals = Some(value),
            Opt::StopSequence => self.stop_sequence = Some(value),
            Opt::Preset => self.preset = Some(value),
            Opt::PreStopDelay => self.pre_stop_delay = Some(value),
            Opt::TerminationLog => self.termination_log = Some(value),
            Opt::LogFormat => self.log_format = Some(value),
            Opt::Verbose => self.verbose += 1,
            Opt::Quiet => self.quiet += 1,
            Opt::SingleChild => self.single_child = true,
            Opt::Rewrite => self.rewrite.push(value),
            Opt::ExpectExit => self.expect_exit.push(value),
            Opt::ParentDeath => self.parent_death = Some(value),
            Opt::TiniNoop => {}
        }
    }
}

/// lexopt's errors in rinit's words (each names the option).
fn lexopt_error(e: lexopt::Error) -> String {
    match e {
        lexopt::Error::MissingValue {
            option: Some(option),
        } => format!("option '{option}' needs a value"),
        lexopt::Error::UnexpectedValue { option, .. } => {
            format!("option '{option}' takes no value")
        }
        e => e.to_string(),
    }
}

/// Parses `args` (without argv[0]) and the environment into a `Config`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Stop> {
    let m = Args::parse(args).map_err(usage)?;
    if m.help {
        return Err(Stop {
            status: 0,
            text: HELP.into(),
        });
    }
    if m.version {
        return Err(Stop {
            status: 0,
            text: version(),
        });
    }
    if m.command.is_empty() {
        return Err(usage(
            "no COMMAND given: rinit [OPTIONS] -- COMMAND [ARGS]...",
        ));
    }
    config(&m, env).map_err(usage)
}

/// `rinit --version`: `rinit 0.1.0 - git.rinit-0_1_0`. The tail is for
/// dockerd, which runs its init (`--init-path`) with `--version` for `docker
/// info` and `docker version` and reads tini's format (`tini version 0.19.0 -
/// git.de40ad0`): the word after ` - git.` is shown as "init version" and may
/// hold no dot. Without it the daemon logs "failed to parse ... version" on
/// every `docker info`.
fn version() -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!("rinit {v} - git.rinit-{}\n", v.replace('.', "_"))
}

/// A flag's value, or the environment variable standing in for it, with the
/// name to quote when the value is refused: a refusal must name what the user
/// actually wrote, `RINIT_GRACE` in a task definition or `--grace` in a
/// Dockerfile.
fn or_env(
    flag: &Option<String>,
    flag_name: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Option<(&'static str, String)> {
    match flag {
        Some(v) => Some((flag_name, v.clone())),
        None => env(var).filter(|v| !v.is_empty()).map(|v| (var, v)),
    }
}

fn config(m: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    let (platform_from, platform_text) = or_env(&m.platform, "--platform", env, "RINIT_PLATFORM")
        .unwrap_or(("--platform", "auto".into()));
    let auto = platform_text == "auto";
    let platform = Platform::parse(&platform_text, platform_from, env)?;
    let flags = Sources::FLAGS;
    let given = |flag, name, var| or_env(flag, name, env, var);
    let kill_after = given(
        &m.platform_kill_after,
        flags.kill_after,
        "RINIT_PLATFORM_KILL_AFTER",
    );
    let grace_given = given(&m.grace, flags.grace, "RINIT_GRACE");
    let pre_stop_given = given(&m.pre_stop_delay, flags.pre_stop, "RINIT_PRE_STOP_DELAY");
    let sequence_given = given(&m.stop_sequence, flags.sequence, "RINIT_STOP_SEQUENCE");
    let name = |given: &Option<(&'static str, String)>, flag| given.as_ref().map_or(flag, |g| g.0);
    let from = Sources {
        kill_after: name(&kill_after, flags.kill_after),
        grace: name(&grace_given, flags.grace),
        pre_stop: name(&pre_stop_given, flags.pre_stop),
        sequence: name(&sequence_given, flags.sequence),
    };
    let stated = kill_after
        .map(|(what, t)| platform::parse_duration(what, &t))
        .transpose()?;
    let k_service_only = auto && platform == Platform::CloudRun && platform::k_service_only(env);
    let (platform, window, platform_note) =
        platform::resolve_window(platform, stated, from.kill_after, k_service_only)?;
    let grace = match grace_given {
        Some((_, t)) if t.trim() == "none" => Some(None),
        Some((what, t)) => match platform::parse_duration(what, &t)? {
            d if d.is_zero() => {
                return Err(format!(
                    "{what}={t} would kill at once; use 'none' to never escalate"
                ))
            }
            d => Some(Some(d)),
        },
        None => None,
    };
    let platform::Grace {
        grace,
        warning: grace_warning,
    } = platform::resolve_grace(grace, platform, window, &from)?;
    let pre_stop = match pre_stop_given {
        Some((what, t)) => platform::parse_duration(what, &t)?,
        None => Duration::ZERO,
    };
    if let Some(g) = grace.filter(|&g| pre_stop >= g) {
        return Err(format!(
            "{}={} does not fit in {}={}: nothing would be forwarded before the deadline",
            from.pre_stop,
            fmt(pre_stop),
            from.grace,
            fmt(g)
        ));
    }
    let preset = given(&m.preset, "--preset", "RINIT_PRESET");
    let sequence = match (sequence_given, &preset) {
        (Some((seq_from, _)), Some((preset_from, _))) => {
            return Err(format!(
                "{preset_from} and {seq_from} cannot be used together"
            ))
        }
        (Some((_, seq)), None) => Some(parse_sequence(&seq, &from, grace, pre_stop)?),
        (None, Some((what, name))) => {
            let (_, seq, _) = PRESETS.iter().find(|(n, _, _)| n == name).ok_or_else(|| {
                format!("{what}='{name}' is not one of sidekiq, faktory, celery, resque")
            })?;
            Some(
                parse_sequence(
                    seq,
                    &Sources {
                        sequence: "its",
                        ..from
                    },
                    grace,
                    pre_stop,
                )
                .map_err(|e| format!("{what}={name} ({seq}) does not fit: {e}"))?,
            )
        }
        (None, None) => None,
    };
    let stop_signals = match &m.stop_signals {
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
    for spec in &m.rewrite {
        rewrites.add(spec)?;
    }
    let expect_exit = m
        .expect_exit
        .iter()
        .map(|c| match c.parse::<i32>() {
            Ok(n @ 0..=255) => Ok(n),
            _ => Err(format!("--expect-exit '{c}' is not an exit code (0-255)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let parent_death = m
        .parent_death
        .as_deref()
        .map(|s| signals::parse(s, false).map_err(|e| format!("-p: {e}")))
        .transpose()?;
    let log_format = match given(&m.log_format, "--log-format", "RINIT_LOG_FORMAT") {
        None if platform.wants_json() => Format::Json,
        None => Format::Text,
        Some((_, v)) if v == "auto" && platform.wants_json() => Format::Json,
        Some((_, v)) if v == "auto" || v == "text" => Format::Text,
        Some((_, v)) if v == "json" => Format::Json,
        Some((what, other)) => {
            return Err(format!("{what}='{other}' is not one of text, json, auto"))
        }
    };
    let log_level = level(m, env)?;
    let setsid = env("DUMB_INIT_SETSID").as_deref() != Some("0");
    let termination_log = match given(
        &m.termination_log,
        "--termination-log",
        "RINIT_TERMINATION_LOG",
    ) {
        None => TerminationLog::Default,
        Some((_, p)) if p == "none" => TerminationLog::Off,
        Some((_, p)) => TerminationLog::Path(p.into()),
    };
    Ok(Config {
        command: m.command.clone(),
        plan: Plan {
            grace,
            stop_signals,
            sequence,
            pre_stop,
        },
        platform,
        window,
        grace_warning,
        rewrites,
        expect_exit,
        // Without its own group the child can only be signalled alone. A
        // preset names a job runner, whose main process manages its own
        // workers and job processes: they must not get its stop signals
        // (Celery's pool processes die of a TERM; a Sidekiq job's child
        // would be cut off), so presets signal the main process only.
        single_child: m.single_child || !setsid || preset.is_some(),
        setsid,
        parent_death,
        termination_log,
        platform_note,
        log_format,
        log_level,
    })
}

/// `-v`/`-q` beat `RINIT_LOG`, which beats tini's `TINI_VERBOSITY`.
fn level(m: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<LevelFilter, String> {
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
    Ok(LADDER[(pos + m.verbose - m.quiet).clamp(0, 5) as usize])
}

/// The worker protocols rinit knows, as `--stop-sequence` text. A negative
/// offset counts back from the grace deadline.
pub const PRESETS: [(&str, &str, &str); 4] = [
    (
        "sidekiq",
        "TSTP@0s,TERM@2s",
        "TSTP = quiet (stop fetching), TERM 2s later = shut down",
    ),
    (
        "faktory",
        "TSTP@0s,TERM@2s",
        "TSTP = quiet, TERM 2s later = shut down",
    ),
    (
        "celery",
        "TERM@0s,QUIT@-3s",
        "TERM = warm shutdown, QUIT 3s before the deadline = cold",
    ),
    (
        "resque",
        "QUIT@0s,TERM@-3s",
        "QUIT = finish the job and exit, TERM 3s before the deadline = kill the job now",
    ),
];

/// Parses `SIG@OFFSET,...` (OFFSET a duration such as `5s`, or `-3s` for
/// "3 s before the deadline") and resolves each step against the grace and
/// pre-stop delay. Every step must fall after the pre-stop delay and before
/// the deadline, or it could never run. Refusals name the settings as
/// `from` says the user wrote them.
pub fn parse_sequence(
    text: &str,
    from: &Sources,
    grace: Option<Duration>,
    pre_stop: Duration,
) -> Result<Vec<Stage>, String> {
    let seq = from.sequence;
    let mut stages = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (sig, offset) = part
            .split_once('@')
            .ok_or_else(|| format!("{seq} step '{part}' must be SIGNAL@OFFSET, e.g. TERM@5s"))?;
        let signo = signals::parse(sig, false).map_err(|e| format!("{seq} step '{part}': {e}"))?;
        let (from_deadline, dur) = match offset.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, offset.trim()),
        };
        let dur = platform::parse_duration(&format!("{seq} step '{part}': offset"), dur)?;
        let at = if from_deadline {
            let g = grace.ok_or_else(|| {
                format!(
                    "{seq} step '{part}' counts from the deadline, but {}=none has none",
                    from.grace
                )
            })?;
            let at = g.checked_sub(dur).ok_or_else(|| {
                format!(
                    "{seq} step '{part}' is {} before a deadline only {} away",
                    fmt(dur),
                    fmt(g)
                )
            })?;
            if at < pre_stop {
                return Err(format!(
                    "{seq} step '{part}' falls at {}, inside {}={}",
                    fmt(at),
                    from.pre_stop,
                    fmt(pre_stop)
                ));
            }
            at
        } else {
            pre_stop + dur
        };
        if let Some(g) = grace.filter(|&g| at >= g) {
            return Err(format!(
                "{seq} step '{part}' falls at {}, at or past the {}={} deadline",
                fmt(at),
                from.grace,
                fmt(g)
            ));
        }
        stages.push(Stage { signo, at });
    }
    if stages.is_empty() {
        return Err(format!("{seq} '{text}' has no steps"));
    }
    stages.sort_by_key(|s| s.at);
    Ok(stages)
}

/// A resolved stop sequence written back as `--stop-sequence` text, each
/// offset counted from the end of `pre_stop`: the inverse of
/// `parse_sequence`, so `parse_sequence(&sequence_text(s, p), from, grace, p)` is
/// `s` again. The fuzz targets check that round trip (fuzz/, issue 13).
pub fn sequence_text(stages: &[Stage], pre_stop: Duration) -> String {
    let steps: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                signals::name(s.signo),
                fmt(s.at.saturating_sub(pre_stop))
            )
        })
        .collect();
    steps.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn run(args: &[&str]) -> Result<Config, Stop> {
        run_env(args, &[])
    }

    /// `parse` with only the variables in `env` set.
    fn run_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Stop> {
        parse(args.iter().map(Into::into), &|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn getopt_grammar() {
        let c = run(&[
            "-cvr",
            "TERM:QUIT",
            "-rUSR1:0",
            "--grace",
            "3s",
            "-e3",
            "sh",
            "-c",
            "x",
        ])
        .unwrap();
        assert!(c.single_child);
        assert_eq!(c.log_level, LevelFilter::DEBUG);
        assert_eq!((c.rewrites.apply(15), c.rewrites.apply(10)), (3, 0));
        assert_eq!(c.plan.grace, Some(Duration::from_secs(3)));
        assert_eq!(c.expect_exit, [3]);
        assert_eq!(c.command, ["sh", "-c", "x"]);
        assert_eq!(run(&["-", "x"]).unwrap().command, ["-", "x"]);
        let e = run(&["-e=0", "x"]).unwrap_err();
        assert!(e.text.contains("'=0'"), "getopt keeps the '=': {}", e.text);
        let odd = std::ffi::OsString::from_vec(vec![b'-', 0xff]);
        let e = parse([odd, "true".into()], &|_| None).unwrap_err();
        assert!(e.status == 2 && e.text.contains("UTF-8"), "{}", e.text);
        let e = run(&["--grace=500000000000y", "x"]).unwrap_err();
        assert!(e.text.contains("longer than"), "{}", e.text);
        assert!(run(&["--grace"])
            .unwrap_err()
            .text
            .contains("'--grace' needs a value"));
        assert!(run(&["-r"])
            .unwrap_err()
            .text
            .contains("'-r' needs a value"));
        assert!(run(&["--help=1", "x"])
            .unwrap_err()
            .text
            .contains("takes no value"));
        assert!(run(&["-x", "y"]).unwrap_err().text.contains("'-x'"));
        assert!(run(&["--p=1", "y"]).unwrap_err().text.contains("'--p'"));
        assert_eq!(run(&["-h"]).unwrap_err().status, 0);
        assert_eq!(run(&["--version", "x"]).unwrap_err().status, 0);
        let both = run(&["--preset=celery", "--stop-sequence=TERM@0s", "x"]).unwrap_err();
        assert!(both.text.contains("together"), "{}", both.text);
    }

    /// dockerd's reading of `--version` (moby's `parseInitVersion`): split
    /// on " - ", and the second part is `git.` and one word with no dot.
    #[test]
    fn version_is_what_dockerd_parses() {
        let text = run(&["-V"]).unwrap_err().text;
        let parts: Vec<&str> = text.split(" - ").collect();
        assert_eq!(parts[0], format!("rinit {}", env!("CARGO_PKG_VERSION")));
        let git: Vec<&str> = parts[1].trim().split('.').collect();
        assert_eq!(
            git,
            [
                "git",
                &format!("rinit-{}", env!("CARGO_PKG_VERSION").replace('.', "_"))
            ]
        );
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

    /// A value with a newline, carriage return, escape or line separator in
    /// it is quoted escaped: still one line, still naming the value.
    #[test]
    fn rejections_are_one_line_whatever_the_value() {
        for args in [
            &["-\n", "x"][..],
            &["--grace=1\nx", "x"],
            &["--rewrite", "\r", "x"],
            &["--log-format=\u{1b}[2J", "x"],
            &["--preset=a\u{2028}b", "x"],
        ] {
            let e = run(args).unwrap_err();
            assert_eq!(e.status, 2);
            assert!(
                !e.text
                    .chars()
                    .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
                "{:?}",
                e.text
            );
        }
        let e = run(&["--grace=1\nx", "x"]).unwrap_err();
        assert!(e.text.contains(r"--grace='1\nx'"), "{}", e.text);
    }

    #[test]
    fn refused_configurations_name_their_values() {
        let e = run(&["--platform=cloud-run", "--grace=25s", "x"]).unwrap_err();
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

    /// The window and the grace, each given as a flag or as its variable.
    #[test]
    fn window_from_flag_or_env() {
        // Stated by variable: known, so a grace that does not fit is refused.
        let e = run_env(
            &["--grace=25s", "x"],
            &[("RINIT_PLATFORM_KILL_AFTER", "20s")],
        )
        .unwrap_err();
        assert!(
            e.text.contains("--grace=25s") && e.text.contains("20s"),
            "{}",
            e.text
        );
        // Assumed (Kubernetes' default), with the grace by variable: warned.
        let c = run_env(
            &["x"],
            &[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("RINIT_GRACE", "45s"),
            ],
        )
        .unwrap();
        assert_eq!(c.window, Window::Assumed(Duration::from_secs(30)));
        let warning = c.grace_warning.unwrap();
        assert!(
            warning.contains("terminationGracePeriodSeconds"),
            "{warning}"
        );
        assert!(warning.starts_with("RINIT_GRACE=45s "), "{warning}");
        // The same, stated: no warning.
        let c = run_env(
            &["--platform-kill-after=60s", "x"],
            &[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("RINIT_GRACE", "45s"),
            ],
        )
        .unwrap();
        assert_eq!(c.window, Window::Known(Duration::from_secs(60)));
        assert!(c.grace_warning.is_none());
        // A flag beats its variable.
        let c = run_env(&["--grace=5s", "x"], &[("RINIT_GRACE", "45s")]).unwrap();
        assert_eq!(c.plan.grace, Some(Duration::from_secs(5)));
    }

    /// A refused variable is named as the variable, a refused flag as the
    /// flag; a bare number is seconds, so a platform's setting copied as is
    /// starts.
    #[test]
    fn refusals_name_the_variable_or_the_flag() {
        /// (arguments, environment, how the error starts)
        type Refused<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let refused: [Refused; 10] = [
            (
                &["x"],
                &[("RINIT_PLATFORM_KILL_AFTER", "sixty")],
                "rinit: RINIT_PLATFORM_KILL_AFTER='sixty' is not a duration",
            ),
            (
                &["--platform-kill-after=sixty", "x"],
                &[],
                "rinit: --platform-kill-after='sixty'",
            ),
            (
                &["x"],
                &[("RINIT_GRACE", "0")],
                "rinit: RINIT_GRACE=0 would kill at once",
            ),
            (
                &["x"],
                &[("RINIT_LOG_FORMAT", "xml")],
                "rinit: RINIT_LOG_FORMAT='xml' is not one of",
            ),
            (
                &["x"],
                &[("RINIT_PLATFORM", "heroku")],
                "rinit: RINIT_PLATFORM 'heroku' is not one of",
            ),
            (
                &["x"],
                &[("CLOUD_RUN_JOB", "j"), ("RINIT_PLATFORM_KILL_AFTER", "30")],
                "rinit: RINIT_PLATFORM_KILL_AFTER=30s is longer than Cloud Run's",
            ),
            (
                &["--platform=docker", "x"],
                &[("RINIT_PLATFORM_KILL_AFTER", "2")],
                "rinit: RINIT_PLATFORM_KILL_AFTER=2s leaves no room",
            ),
            (
                &["--grace=3s", "x"],
                &[("RINIT_PRE_STOP_DELAY", "5s")],
                "rinit: RINIT_PRE_STOP_DELAY=5s does not fit in --grace=3s",
            ),
            (
                &["x"],
                &[("RINIT_GRACE", "5s"), ("RINIT_STOP_SEQUENCE", "TERM@6s")],
                "rinit: RINIT_STOP_SEQUENCE step 'TERM@6s' falls at 6s, at or past the RINIT_GRACE=5s deadline",
            ),
            (
                &["x"],
                &[("RINIT_GRACE", "2s"), ("RINIT_PRESET", "celery")],
                "rinit: RINIT_PRESET=celery (TERM@0s,QUIT@-3s) does not fit: its step 'QUIT@-3s' is 3s before a deadline only 2s away",
            ),
        ];
        for (args, env, start) in refused {
            let e = run_env(args, env).unwrap_err();
            assert!(e.text.starts_with(start), "{args:?} {env:?}: {}", e.text);
        }
        let c = run_env(&["--grace=55", "x"], &[("RINIT_PLATFORM_KILL_AFTER", "60")]).unwrap();
        assert_eq!(c.plan.grace, Some(Duration::from_secs(55)));
        assert_eq!(c.window, Window::Known(Duration::from_secs(60)));
    }

    /// A preset signals the runner's main process only; without one the
    /// group is the target unless -c says otherwise.
    #[test]
    fn presets_signal_the_main_process_only() {
        for (name, _, _) in PRESETS {
            assert!(
                run(&["--preset", name, "x"]).unwrap().single_child,
                "{name}"
            );
        }
        assert!(!run(&["--stop-sequence=TERM@1s", "x"]).unwrap().single_child);
        assert!(!run(&["x"]).unwrap().single_child);
    }

    #[test]
    fn verbosity_ladder() {
        assert_eq!(run(&["x"]).unwrap().log_level, LevelFilter::INFO);
        assert_eq!(run(&["-v", "x"]).unwrap().log_level, LevelFilter::DEBUG);
        assert_eq!(run(&["-qq", "x"]).unwrap().log_level, LevelFilter::ERROR);
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn sequence_resolves_offsets() {
        let seq = parse_sequence("TERM@5s, TSTP@0s", &Sources::FLAGS, Some(S(10)), S(0)).unwrap();
        assert_eq!(
            seq,
            vec![
                Stage {
                    signo: 20,
                    at: S(0)
                },
                Stage {
                    signo: 15,
                    at: S(5)
                }
            ]
        );
        let seq = parse_sequence("TERM@0s,QUIT@-3s", &Sources::FLAGS, Some(S(10)), S(1)).unwrap();
        assert_eq!(
            seq,
            vec![
                Stage {
                    signo: 15,
                    at: S(1)
                },
                Stage { signo: 3, at: S(7) }
            ]
        );
    }

    #[test]
    fn sequence_refuses_what_cannot_run() {
        assert!(
            parse_sequence("TERM@10s", &Sources::FLAGS, Some(S(10)), S(0))
                .unwrap_err()
                .contains("past the --grace=10s")
        );
        assert!(parse_sequence("TERM@8s", &Sources::FLAGS, Some(S(10)), S(3)).is_err());
        assert!(parse_sequence("QUIT@-12s", &Sources::FLAGS, Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("QUIT@-3s", &Sources::FLAGS, None, S(0)).is_err());
        assert!(parse_sequence("QUIT@-8s", &Sources::FLAGS, Some(S(10)), S(3)).is_err());
        assert!(parse_sequence("TERM", &Sources::FLAGS, Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("NOPE@1s", &Sources::FLAGS, Some(S(10)), S(0)).is_err());
        assert!(parse_sequence("", &Sources::FLAGS, Some(S(10)), S(0)).is_err());
    }

    #[test]
    fn sequence_prints_back_to_itself() {
        let seq = parse_sequence(
            "term@0s, QUIT@-3s,usr1@1.5s",
            &Sources::FLAGS,
            Some(S(10)),
            S(1),
        )
        .unwrap();
        let text = sequence_text(&seq, S(1));
        assert_eq!(text, "SIGTERM@0s,SIGUSR1@1s500ms,SIGQUIT@6s");
        assert_eq!(
            parse_sequence(&text, &Sources::FLAGS, Some(S(10)), S(1)),
            Ok(seq)
        );
    }

    #[test]
    fn presets_parse_with_the_default_grace() {
        for (name, seq, _) in PRESETS {
            assert!(
                parse_sequence(seq, &Sources::FLAGS, Some(S(8)), S(0)).is_ok(),
                "{name}"
            );
        }
    }
}
