//! Configuration: flags and environment variables, validated before the
//! worker connects to anything.
//!
//! Every value is read as a plain string and checked here rather than by
//! clap's typed parsers, so that a missing or malformed value produces one
//! line that names the environment variable *and* the flag, which is what an
//! operator looking at a crash-looping container needs.

use clap::Parser;
use std::fmt;
use std::time::Duration;

// The path is spelt out because the fuzz target compiles this file in by
// its path (fuzz/fuzz_targets/worker_config.rs), and must find this one
// beside it too.
#[path = "config/values.rs"]
mod values;
use values::{
    check_object_prefix, duration, emulator_endpoint, lease_extension, log_format, names,
    outstanding_bytes, positive, rinit_drain_budget,
};

/// The command line; every flag can also come from the environment.
#[derive(Debug, Parser)]
#[command(
    name = "pubsub-gcs-worker",
    version,
    about = "Pulls a Pub/Sub subscription and stores each message as a Cloud Storage object, \
             acking only after the write; quiet on SIGTSTP, resumes on SIGCONT, drains cleanly \
             on SIGTERM/SIGINT."
)]
pub struct Cli {
    /// Google Cloud project that owns the subscription.
    #[arg(long, env = "PROJECT_ID", value_name = "ID")]
    project_id: Option<String>,

    /// Subscription ID (short name, or projects/P/subscriptions/S).
    #[arg(long, env = "SUBSCRIPTION_ID", value_name = "ID")]
    subscription_id: Option<String>,

    /// Destination bucket name.
    #[arg(long, env = "BUCKET_NAME", value_name = "NAME")]
    bucket_name: Option<String>,

    /// Prefix of every object name (the rest is the message ID).
    #[arg(long, env = "OBJECT_PREFIX", value_name = "PREFIX", default_value = "")]
    object_prefix: String,

    /// Number of writes in progress at once.
    #[arg(long, env = "CONCURRENCY", value_name = "N", default_value = "128")]
    concurrency: String,

    /// Flow control: messages leased to this worker at once (>= concurrency).
    #[arg(
        long,
        env = "MAX_OUTSTANDING_MESSAGES",
        value_name = "N",
        default_value = "1000"
    )]
    max_outstanding_messages: String,

    /// Flow control: bytes of messages held at once (queued or being
    /// written), e.g. 64MiB; a single larger message is taken alone.
    #[arg(
        long,
        env = "MAX_OUTSTANDING_BYTES",
        value_name = "SIZE",
        default_value = "64MiB"
    )]
    max_outstanding_bytes: String,

    /// Time allowed after SIGTERM to finish in-flight writes and flush acks
    /// [default: the budget rinit hands the worker in RINIT_DRAIN_MS, else 6s]
    #[arg(long, env = "DRAIN_TIMEOUT", value_name = "DUR")]
    drain_timeout: Option<String>,

    /// Attempts per message before it is nacked (1 = no retry).
    #[arg(long, env = "WRITE_ATTEMPTS", value_name = "N", default_value = "4")]
    write_attempts: String,

    /// Timeout of one write attempt.
    #[arg(
        long,
        env = "WRITE_ATTEMPT_TIMEOUT",
        value_name = "DUR",
        default_value = "30s"
    )]
    write_attempt_timeout: String,

    /// Lease extension (ack deadline) requested from Pub/Sub, 10s..600s.
    #[arg(
        long,
        env = "LEASE_EXTENSION",
        value_name = "DUR",
        default_value = "60s"
    )]
    lease_extension: String,

    /// Exit 1 once Pub/Sub has been unreachable or refusing this long.
    #[arg(
        long,
        env = "UNAVAILABLE_EXIT_AFTER",
        value_name = "DUR",
        default_value = "5m"
    )]
    unavailable_exit_after: String,

    /// Log format: text or json (Cloud Logging fields `severity`, `message`).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Google's production endpoint with Application Default Credentials.
    Google,
    /// An emulator URL (plain http unless the variable said https), with
    /// anonymous credentials.
    Emulator(String),
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub project_id: String,
    /// Full resource name `projects/P/subscriptions/S`.
    pub subscription: String,
    pub bucket: String,
    pub object_prefix: String,
    pub concurrency: usize,
    pub max_outstanding_messages: usize,
    /// Bytes of message data held at once (see `budget::ByteBudget`).
    pub max_outstanding_bytes: u64,
    pub drain_timeout: Duration,
    /// Where `drain_timeout` came from.
    pub drain_from: DrainFrom,
    /// The drain budget rinit handed the worker (RINIT_DRAIN_MS): the time
    /// from the stop signal to rinit's deadline, less rinit's safety margin.
    pub drain_budget: Option<Duration>,
    pub write_attempts: u32,
    pub write_attempt_timeout: Duration,
    pub lease_extension: Duration,
    /// Exit 1 once Pub/Sub has been unusable this long.
    pub unavailable_exit_after: Duration,
    pub log_format: LogFormat,
    pub pubsub_endpoint: Endpoint,
    pub storage_endpoint: Endpoint,
}

/// Where the drain timeout came from: it is always shorter than rinit's
/// grace unless it was set by hand (the worker must give up, leaving its
/// unfinished messages to be redelivered, before rinit has to SIGKILL it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainFrom {
    /// DRAIN_TIMEOUT or --drain-timeout.
    Set,
    /// RINIT_DRAIN_MS, from rinit.
    Rinit,
    /// Neither: [`DEFAULT_DRAIN_TIMEOUT`].
    Default,
}

impl DrainFrom {
    /// The `drain_timeout_from` field of the start line.
    pub fn name(self) -> &'static str {
        match self {
            DrainFrom::Set => "DRAIN_TIMEOUT",
            DrainFrom::Rinit => "RINIT_DRAIN_MS",
            DrainFrom::Default => "default",
        }
    }
}

/// The drain timeout with neither DRAIN_TIMEOUT nor rinit's budget: below
/// rinit's own default grace of 8 s (7 s of budget), so that the worker
/// gives up first.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(6);

/// A configuration problem, rendered as exactly one line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// rinit's budget, when a drain timeout set by hand is longer: rinit's
    /// deadline would SIGKILL the worker before it gives up.
    pub fn drain_over_budget(&self) -> Option<Duration> {
        self.drain_budget
            .filter(|budget| self.drain_from == DrainFrom::Set && self.drain_timeout > *budget)
    }
}

/// What `main` should do after parsing the command line.
pub enum Parsed {
    Run(Box<Config>),
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
}

/// Parses flags and environment; `env` is the source of the emulator
/// variables and of rinit's RINIT_DRAIN_MS (a parameter so tests need not
/// touch the process environment).
pub fn parse<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Parsed::Print(e.render().to_string()))
                }
                _ => Err(ConfigError(first_line_of_clap_error(&e))),
            };
        }
    };
    validate(cli, env).map(|c| Parsed::Run(Box::new(c)))
}

/// clap renders usage and hints over several lines; keep the line that says
/// what is wrong.
fn first_line_of_clap_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid command line");
    // clap quotes the argument as given; a control character in it (an
    // escape, a carriage return) is written escaped, so the error stays one
    // line (found by fuzzing, issue 13).
    let mut out = String::from("configuration error: ");
    for c in line.trim_start_matches("error: ").chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn validate(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let (project_id, subscription, bucket) =
        names(cli.project_id, cli.subscription_id, cli.bucket_name)?;
    let concurrency = positive("CONCURRENCY (--concurrency)", &cli.concurrency, 10_000)?;
    let max_outstanding_messages = positive(
        "MAX_OUTSTANDING_MESSAGES (--max-outstanding-messages)",
        &cli.max_outstanding_messages,
        1_000_000,
    )?;
    if max_outstanding_messages < concurrency {
        return Err(ConfigError(format!(
            "configuration error: MAX_OUTSTANDING_MESSAGES ({max_outstanding_messages}) must be \
             at least CONCURRENCY ({concurrency})"
        )));
    }
    let max_outstanding_bytes = outstanding_bytes(&cli.max_outstanding_bytes)?;
    let drain_budget = rinit_drain_budget(env("RINIT_DRAIN_MS"))?;
    let (drain_timeout, drain_from) = match (&cli.drain_timeout, drain_budget) {
        (Some(v), _) => (
            duration("DRAIN_TIMEOUT (--drain-timeout)", v)?,
            DrainFrom::Set,
        ),
        (None, Some(budget)) => (budget, DrainFrom::Rinit),
        (None, None) => (DEFAULT_DRAIN_TIMEOUT, DrainFrom::Default),
    };
    let write_attempts = positive(
        "WRITE_ATTEMPTS (--write-attempts)",
        &cli.write_attempts,
        100,
    )?;
    let write_attempt_timeout = duration(
        "WRITE_ATTEMPT_TIMEOUT (--write-attempt-timeout)",
        &cli.write_attempt_timeout,
    )?;
    let lease_extension = lease_extension(&cli.lease_extension)?;
    let unavailable_exit_after = duration(
        "UNAVAILABLE_EXIT_AFTER (--unavailable-exit-after)",
        &cli.unavailable_exit_after,
    )?;
    let log_format = log_format(&cli.log_format)?;
    check_object_prefix(&cli.object_prefix)?;
    let pubsub_endpoint = emulator_endpoint("PUBSUB_EMULATOR_HOST", env("PUBSUB_EMULATOR_HOST"))?;
    let storage_endpoint =
        emulator_endpoint("STORAGE_EMULATOR_HOST", env("STORAGE_EMULATOR_HOST"))?;

    Ok(Config {
        project_id,
        subscription,
        bucket,
        object_prefix: cli.object_prefix,
        concurrency,
        max_outstanding_messages,
        max_outstanding_bytes,
        drain_timeout,
        drain_from,
        drain_budget,
        // `positive` bounded it to 100, so the conversion cannot fail.
        write_attempts: u32::try_from(write_attempts).unwrap_or(100),
        write_attempt_timeout,
        lease_extension,
        unavailable_exit_after,
        log_format,
        pubsub_endpoint,
        storage_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["w"];
        all.extend_from_slice(args);
        match parse(all, &no_env)? {
            Parsed::Run(c) => Ok(*c),
            Parsed::Print(_) => Err(ConfigError("printed".into())),
        }
    }

    const BASE: [&str; 6] = [
        "--project-id",
        "proj-1",
        "--subscription-id",
        "sub-1",
        "--bucket-name",
        "bkt-1",
    ];

    fn run_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec!["w"];
        all.extend_from_slice(&BASE);
        all.extend_from_slice(args);
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        match parse(all, &lookup)? {
            Parsed::Run(c) => Ok(*c),
            Parsed::Print(_) => Err(ConfigError("printed".into())),
        }
    }

    #[test]
    fn drain_timeout_defaults_to_rinits_budget_then_6s() {
        let c = run_env(&[], &[("RINIT_DRAIN_MS", "7000")]).unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(7));
        assert_eq!(c.drain_from, DrainFrom::Rinit);
        assert_eq!(c.drain_over_budget(), None);
        let c = run_env(&[], &[("RINIT_DRAIN_MS", "22500")]).unwrap();
        assert_eq!(c.drain_timeout, Duration::from_millis(22_500));
        // No time left (a grace of 1 s): the worker gives up at once.
        let c = run_env(&[], &[("RINIT_DRAIN_MS", "0")]).unwrap();
        assert_eq!(c.drain_timeout, Duration::ZERO);
        for unset in [&[][..], &[("RINIT_DRAIN_MS", " ")][..]] {
            let c = run_env(&[], unset).unwrap();
            assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
            assert_eq!(c.drain_from, DrainFrom::Default);
            assert_eq!(c.drain_budget, None);
        }
        assert_eq!(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs(6));
    }

    #[test]
    fn a_drain_timeout_set_by_hand_wins_and_is_checked_against_the_budget() {
        let budget = [("RINIT_DRAIN_MS", "7000")];
        let c = run_env(&["--drain-timeout", "10s"], &budget).unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.drain_from, DrainFrom::Set);
        assert_eq!(c.drain_over_budget(), Some(Duration::from_secs(7)));
        let c = run_env(&["--drain-timeout", "7s"], &budget).unwrap();
        assert_eq!(c.drain_over_budget(), None, "equal to the budget fits");
        let c = run_env(&["--drain-timeout", "10s"], &[]).unwrap();
        assert_eq!(c.drain_over_budget(), None, "no budget, nothing to exceed");
    }

    #[test]
    fn a_malformed_drain_budget_is_named() {
        for bad in ["7s", "-1", "1.5", "99999999999999999999", "31557600001"] {
            let e = run_env(&[], &[("RINIT_DRAIN_MS", bad)]).unwrap_err().0;
            assert!(
                e.starts_with("configuration error: RINIT_DRAIN_MS") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        // The largest rinit can hand down (its one-year cap) is taken.
        let c = run_env(&[], &[("RINIT_DRAIN_MS", "31557600000")]).unwrap();
        assert_eq!(c.drain_timeout, rinit::platform::MAX_DURATION);
    }

    #[test]
    fn max_outstanding_bytes() {
        let mut a = BASE.to_vec();
        a.extend(["--max-outstanding-bytes", "16MiB"]);
        assert_eq!(run(&a).unwrap().max_outstanding_bytes, 16 << 20);
        for bad in ["512KiB", "2TiB", "lots"] {
            let mut a = BASE.to_vec();
            a.extend(["--max-outstanding-bytes", bad]);
            let e = run(&a).unwrap_err().0;
            assert!(
                e.starts_with("configuration error: MAX_OUTSTANDING_BYTES") && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn full_config() {
        let c = run(&BASE).unwrap();
        assert_eq!(c.subscription, "projects/proj-1/subscriptions/sub-1");
        assert_eq!(c.bucket, "bkt-1");
        assert_eq!(c.object_prefix, "");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.pubsub_endpoint, Endpoint::Google);
    }

    #[test]
    fn missing_names_all() {
        let e = run(&["--project-id", "p-1"]).unwrap_err();
        assert_eq!(
            e.0,
            "configuration error: missing SUBSCRIPTION_ID (--subscription-id), BUCKET_NAME (--bucket-name)"
        );
        assert!(!e.0.contains('\n'));
    }

    #[test]
    fn malformed_values() {
        let mut a = BASE.to_vec();
        a.extend(["--concurrency", "zero"]);
        assert!(run(&a).unwrap_err().0.contains("CONCURRENCY"));
        let mut a = BASE.to_vec();
        a.extend(["--drain-timeout", "soon"]);
        assert!(run(&a).unwrap_err().0.contains("DRAIN_TIMEOUT"));
        let mut a = BASE.to_vec();
        a.extend(["--log-format", "xml"]);
        assert!(run(&a).unwrap_err().0.contains("LOG_FORMAT"));
        let mut a = BASE.to_vec();
        a.extend(["--concurrency", "5000"]);
        assert!(run(&a).unwrap_err().0.contains("MAX_OUTSTANDING_MESSAGES"));
        let e = run(&[
            "--project-id",
            "p",
            "--subscription-id",
            "s",
            "--bucket-name",
            "bkt",
        ])
        .unwrap_err();
        assert!(e.0.contains("SUBSCRIPTION_ID"), "{e}");
        let e = run(&[
            "--project-id",
            "p",
            "--subscription-id",
            "sub",
            "--bucket-name",
            "B!",
        ])
        .unwrap_err();
        assert!(e.0.contains("BUCKET_NAME"), "{e}");
        let e = run(&["--nope"]).unwrap_err();
        assert!(
            e.0.starts_with("configuration error:") && !e.0.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn full_subscription_name() {
        let c = run(&[
            "--project-id",
            "p1",
            "--subscription-id",
            "projects/p1/subscriptions/abc",
            "--bucket-name",
            "bkt",
        ])
        .unwrap();
        assert_eq!(c.subscription, "projects/p1/subscriptions/abc");
        assert!(run(&[
            "--project-id",
            "p1",
            "--subscription-id",
            "projects/p2/subscriptions/abc",
            "--bucket-name",
            "bkt",
        ])
        .is_err());
    }

    /// clap's message quotes the argument; a control character in it is
    /// escaped, so the error is one line.
    #[test]
    fn clap_errors_are_one_line() {
        for arg in ["\u{8}h", "-\u{1b}[2J", "--x\ry"] {
            let e = run(&[arg]).unwrap_err().0;
            assert!(
                e.starts_with("configuration error: ") && !e.chars().any(|c| c.is_control()),
                "{e:?}"
            );
        }
    }
}
