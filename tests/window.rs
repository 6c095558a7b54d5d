//! Issue 9, the window contract: rinit refuses only what it knows.
//!
//! A kill window is known when it is stated (`--platform-kill-after`, env
//! `RINIT_PLATFORM_KILL_AFTER`) or fixed (Cloud Run): a grace that does not
//! fit is refused (tests/drain.rs `refused_configurations`). Docker's, ECS's
//! and Kubernetes' windows are defaults rinit only assumes: a grace beyond one
//! starts, with one WARNING line. Without a platform variable, `auto` means
//! Docker only inside a container. Also here: `-e` on a death by signal, and
//! Cloud Run's maintenance signals.
//!
//! Every scenario runs as a real PID 1 and as a subreaper.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

both_modes!(
    assumed_window_warns_and_starts,
    stated_or_fitting_window_gives_no_warning,
    auto_is_docker_only_inside_a_container,
    expect_exit_covers_a_death_by_signal,
    cloud_run_maintenance_signals_are_forwarded_and_logged,
);

/// rinit's WARNING lines, as text.
fn warnings(done: &Done, json: bool) -> Vec<String> {
    if json {
        done.json()
            .iter()
            .filter(|l| l["severity"] == "WARNING")
            .map(|l| format!("{} {}", l["phase"], l["message"]))
            .collect()
    } else {
        done.stderr
            .lines()
            .filter(|l| l.contains(" rinit WARNING "))
            .map(str::to_string)
            .collect()
    }
}

/// A grace beyond Docker's, ECS's or Kubernetes' default window starts the
/// command (its exit code comes back), with exactly one WARNING at start that
/// names the platform, its default window, the setting that raises it there
/// and `--platform-kill-after`.
fn assumed_window_warns_and_starts(mode: Mode) {
    /// (options, environment, platform, window, JSON?, setting named)
    type Case<'a> = (Opts<'a>, Env<'a>, &'a str, &'a str, bool, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["--platform=docker", "--grace=25s"],
            &[],
            "docker",
            "10s",
            false,
            &["docker stop -t", "--stop-timeout", "stop_grace_period"],
        ),
        (
            &["--grace=40s"],
            &[("ECS_CONTAINER_METADATA_URI_V4", "http://x")],
            "ecs",
            "30s",
            true,
            &["stopTimeout"],
        ),
        (
            &[],
            &[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("RINIT_GRACE", "45s"),
            ],
            "kubernetes",
            "30s",
            true,
            &["terminationGracePeriodSeconds"],
        ),
        // Exactly the window leaves rinit no second of its own: warned.
        (
            &["--platform=kubernetes", "--grace=30s"],
            &[],
            "kubernetes",
            "30s",
            true,
            &["terminationGracePeriodSeconds"],
        ),
    ];
    let dir = TempDir::new("assumed");
    for (opts, env, platform, window, json, settings) in cases {
        let (done, what) = run_settings(mode, &dir, opts, env, 3);
        assert_eq!(
            done.start_fields(*json, &["platform", "kill_after", "window"]),
            [*platform, *window, "assumed"],
            "{what}"
        );
        let warned = warnings(&done, *json);
        assert_eq!(warned.len(), 1, "one warning: {what}");
        let w = &warned[0];
        assert!(w.contains("start"), "at start: {w}");
        for needle in [*platform, *window, "--platform-kill-after"]
            .iter()
            .chain(settings.iter())
        {
            assert!(w.contains(needle), "{needle:?} not in the warning: {w}");
        }
    }
}

/// A stated window silences the warning (it is then enforced); a grace that
/// fits an assumed window needs none.
fn stated_or_fitting_window_gives_no_warning(mode: Mode) {
    type Case<'a> = (Opts<'a>, Env<'a>, [&'a str; 3]);
    let cases: &[Case] = &[
        (
            &[
                "--platform=docker",
                "--grace=25s",
                "--platform-kill-after=30s",
            ],
            &[],
            ["30s", "known", "25s"],
        ),
        (
            &["--grace=55s"],
            &[
                ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ("RINIT_PLATFORM_KILL_AFTER", "60s"),
            ],
            ["1m", "known", "55s"],
        ),
        (
            &["--platform=docker", "--grace=9s"],
            &[],
            ["10s", "assumed", "9s"],
        ),
        (&["--platform=docker"], &[], ["10s", "assumed", "8s"]),
        (&["--platform=cloud-run"], &[], ["10s", "known", "8s"]),
        (
            &["--platform=none", "--grace=1h"],
            &[],
            ["none", "none", "1h"],
        ),
    ];
    let dir = TempDir::new("stated");
    for (opts, env, want) in cases {
        let opts = [*opts, &["--log-format=text"]].concat();
        let (done, what) = run_settings(mode, &dir, &opts, env, 0);
        assert_eq!(
            done.start_fields(false, &["kill_after", "window", "grace"]),
            *want,
            "{what}"
        );
        assert!(warnings(&done, false).is_empty(), "no warning: {what}");
    }
}

/// A root directory holding only the static rinit and probe (and `proc`),
/// plus the container marker `marker`, if any: `auto` sees only what is there.
fn root_with(dir: &TempDir, marker: Option<&str>) -> String {
    let root = dir.file("root");
    for sub in ["proc", "run", "data"] {
        std::fs::create_dir_all(Path::new(&root).join(sub)).expect("mkdir in the root");
    }
    std::fs::copy(rinit_bin(), Path::new(&root).join("rinit")).expect("copy rinit");
    std::fs::copy(probe_bin(), Path::new(&root).join("probe")).expect("copy the probe");
    if let Some(m) = marker {
        std::fs::write(Path::new(&root).join(m), "").expect("write the marker");
    }
    root
}

/// `auto` without a platform variable: Docker's assumed 10 s inside a
/// container (Docker's `/.dockerenv`, Podman's `/run/.containerenv`), no
/// window at all outside one, where the design line's `--grace=25s` starts
/// without a word. rinit runs chrooted into a root that has the marker or not
/// (the test machine may itself be a container).
fn auto_is_docker_only_inside_a_container(mode: Mode) {
    let cases = [
        (None, "none", "none", "none", false),
        (Some(".dockerenv"), "docker", "10s", "assumed", true),
        (Some("run/.containerenv"), "docker", "10s", "assumed", true),
    ];
    for (marker, platform, kill_after, window, warned) in cases {
        let dir = TempDir::new("auto");
        let root = root_with(&dir, marker);
        let rinit = ["/rinit", "--grace=25s", "--", "/probe", "--exit", "5"];
        let mut cmd = match mode {
            Mode::Pid1 => {
                let mut c = Command::new(unshare_bin());
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                    .arg(format!("--root={root}"));
                c
            }
            Mode::Subreaper => {
                let mut c = Command::new("chroot");
                c.arg(&root);
                c
            }
        };
        let out = cmd
            .args(rinit)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output()
            .expect("run rinit chrooted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("marker {marker:?}\n{stderr}");
        assert_eq!(out.status.code(), Some(5), "the command ran: {what}");
        let start = text_phase(&stderr, "start")
            .into_iter()
            .find(|l| l.contains(" INFO start: "))
            .unwrap_or_else(|| panic!("no start line: {what}"));
        let got: Vec<String> = ["platform", "kill_after", "window", "grace"]
            .iter()
            .map(|k| text_field(start, k).unwrap_or_default())
            .collect();
        assert_eq!(got, [platform, kill_after, window, "25s"], "{what}");
        let warning = stderr.lines().filter(|l| l.contains(" WARNING ")).count();
        assert_eq!(warning, usize::from(warned), "{what}");
    }
    // Outside a container, no `--grace` means 8 s.
    let dir = TempDir::new("auto-default");
    let root = root_with(&dir, None);
    let out = Command::new("chroot")
        .args([&root, "/rinit", "--", "/probe", "--exit", "0"])
        .env_clear()
        .env("PATH", PATH)
        .output()
        .expect("run rinit chrooted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(" grace=8s platform=none kill_after=none window=none "),
        "{stderr}"
    );
}

/// `-e` applies to the final status however it was reached, as tini's does:
/// `-e 143` turns a death by SIGTERM (a JVM's) into 0, and only that status.
fn expect_exit_covers_a_death_by_signal(mode: Mode) {
    let dir = TempDir::new("expect");
    let ready = dir.file("ready");
    for (opts, want) in [
        (&["-e", "143"][..], 0),
        (&["-e", "1"][..], 143),
        (&[][..], 143),
    ] {
        let _ = std::fs::remove_file(&ready);
        let mut run = Rinit::new(mode, &dir)
            .opts(opts.iter().copied())
            .probe(["--ready", &ready, "--die-on", "TERM"])
            .spawn();
        run.ready(&ready);
        let (done, _) = run.stop(libc::SIGTERM);
        assert_eq!(done.status, want, "{opts:?}\n{}", done.stderr);
        let exit = text_phase(&done.stderr, "exit");
        assert_eq!(
            text_field(exit[0], "status").as_deref(),
            Some(want.to_string().as_str()),
            "the exit line tells the status rinit exits with\n{}",
            done.stderr
        );
    }
}

/// On Cloud Run, TSTP (a live migration ahead) and CONT (it is over) are
/// forwarded unchanged and start no drain; each is logged at NOTICE as phase
/// `maintenance`. Elsewhere they are ordinary signals. The command then
/// still stops on TERM as usual.
fn cloud_run_maintenance_signals_are_forwarded_and_logged(mode: Mode) {
    for (env, maintenance) in [
        (("CLOUD_RUN_JOB", "nightly"), true),
        (("RINIT_PLATFORM_KILL_AFTER", "10s"), false),
    ] {
        let dir = TempDir::new("maintenance");
        let files = ProbeFiles::in_dir(&dir);
        let mut run = Rinit::new(mode, &dir)
            .opts(["--grace=5s", "--log-format=json"])
            .env(env.0, env.1)
            .probe(files.args(&["--exit-on", "TERM:0:0"]))
            .spawn();
        let pid = run.ready(&files.ready);
        run.signal(libc::SIGTSTP);
        run.wait_until("the child to record SIGTSTP", || {
            files.record().of(pid) == ["SIGTSTP"]
        });
        // Past the grace: had TSTP started a drain, the deadline would fire.
        std::thread::sleep(std::time::Duration::from_millis(5500));
        run.signal(libc::SIGCONT);
        run.wait_until("the child to record SIGCONT", || {
            files.record().of(pid).len() == 2
        });
        let (done, _) = run.stop(libc::SIGTERM);
        let what = format!("{env:?}\n{}", done.stderr);
        assert_eq!(done.status, 0, "{what}");
        assert_eq!(
            files.record().of(pid),
            ["SIGTSTP", "SIGCONT", "SIGTERM"],
            "{what}"
        );
        let lines = done.json();
        let notes = phase(&lines, "maintenance");
        if maintenance {
            let got: Vec<(&str, &str)> = notes
                .iter()
                .map(|l| {
                    (
                        l["severity"].as_str().unwrap_or_default(),
                        l["signal"].as_str().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("NOTICE", "SIGTSTP"), ("NOTICE", "SIGCONT")],
                "{what}"
            );
            for n in &notes {
                let m = n["message"].as_str().unwrap_or_default();
                assert!(m.contains("forwarding, not draining"), "{m}");
            }
        } else {
            assert!(notes.is_empty(), "not on Cloud Run: {what}");
        }
        // One drain only, started by TERM; nothing escalated.
        let drains: Vec<_> = phase(&lines, "signal")
            .into_iter()
            .filter(|l| l["severity"] == "NOTICE")
            .collect();
        assert_eq!(drains.len(), 1, "{what}");
        assert_eq!(drains[0]["signal"], "SIGTERM", "{what}");
        assert!(phase(&lines, "deadline").is_empty(), "{what}");
    }
}
