//! The docs cannot go stale (issue 20): every command the docs show with its
//! output is run here, and its output must match what is shown.
//!
//! What is checked:
//! - every ```` ```console ```` block of README.md and of the reference
//!   worker's README: each block runs as one bash session (so `echo $?`
//!   reads the status of the command before it) from the repository's root,
//!   with a cleared environment and this build's `rinit` first on PATH;
//!   scripts/demo runs its PID 1 and Docker cases with this build
//!   (`RINIT_BIN_DIR`);
//! - the `$ ` commands of the man page's EXAMPLES, the same way;
//! - `rinit --help`: each preset's sequence is the code's, and README.md and
//!   the man page show the same one; every option and variable it names is
//!   in README.md;
//! - no rinit output (a log line, a `rinit: ` refusal) is shown in a block
//!   that is not checked.
//!
//! Outputs are compared with snapbox, after the same redactions on both
//! sides: wall-clock timestamps, pids, and the last two digits of each
//! elapsed millisecond figure (`+0.300s` and `+0.351s` both read `+0.3[MS]s`),
//! so a drain that takes 0.3 s where 2 s are shown fails, and load on the
//! machine does not. `RINIT_DOCS=overwrite` writes what ran into the docs
//! instead (review the diff).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use rinit_test_support::docker::{engine, locked, probe_beside};
use rinit_test_support::root_dir;
use snapbox::{Assert, Data, Redactions};

const RINIT: &str = env!("CARGO_BIN_EXE_rinit");

/// One `$ ` command of a block and the output shown under it.
#[derive(Debug)]
struct Step {
    /// 1-based line of the `$ ` in its file.
    line: usize,
    command: String,
    expected: String,
    /// The file's lines holding `expected` (0-based, end exclusive).
    shown: std::ops::Range<usize>,
}

/// A block of commands that run in one shell, in order.
#[derive(Debug)]
struct Block {
    steps: Vec<Step>,
}

/// The ```` ```console ```` blocks of a Markdown file.
fn markdown_blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let lang = fence.trim_start_matches('`').trim();
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_start().starts_with("```"))
            .unwrap_or_else(|| panic!("{}:{}: unclosed code block", file.display(), i + 1));
        if lang == "console" {
            blocks.push(Block {
                steps: steps(file, &lines, i + 1..end, |l| l.to_string()),
            });
        }
        i = end + 1;
    }
    blocks
}

/// The commands of the man page's EXAMPLES (`.nf` ... `.fi` regions holding
/// `$ ` lines), unescaped from roff.
fn man_blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == ".SH EXAMPLES")
        .expect("the man page has EXAMPLES");
    let end = (start + 1..lines.len())
        .find(|&j| lines[j].starts_with(".SH "))
        .unwrap_or(lines.len());
    let mut blocks = Vec::new();
    let mut i = start;
    while i < end {
        if lines[i] == ".nf" {
            let fi = (i..end)
                .find(|&j| lines[j] == ".fi")
                .expect(".nf without .fi in EXAMPLES");
            if lines[i + 1..fi].iter().any(|l| l.starts_with("$ ")) {
                blocks.push(Block {
                    steps: steps(file, &lines, i + 1..fi, unroff),
                });
            }
            i = fi;
        }
        i += 1;
    }
    blocks
}

/// roff's escapes in the man page's examples, as the reader sees them.
fn unroff(line: &str) -> String {
    line.replace("\\-", "-")
        .replace("\\(aq", "'")
        .replace("\\(dq", "\"")
        .replace("\\e", "\\")
        .replace("\\&", "")
}

/// `line` as roff shows it literally (the inverse of [`unroff`]).
fn roff(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

/// Splits the lines of one block into commands (a `$ ` line, continued by
/// a trailing `\`) and the output shown under each.
fn steps(
    file: &Path,
    lines: &[&str],
    range: std::ops::Range<usize>,
    plain: impl Fn(&str) -> String,
) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut j = range.start;
    while j < range.end {
        let line = plain(lines[j]);
        if let Some(cmd) = line.strip_prefix("$ ") {
            let at = j;
            let mut command = cmd.to_string();
            while command.ends_with('\\') && j + 1 < range.end {
                j += 1;
                command.push('\n');
                command.push_str(&plain(lines[j]));
            }
            steps.push(Step {
                line: at + 1,
                command,
                expected: String::new(),
                shown: j + 1..j + 1,
            });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| {
                panic!(
                    "{}:{}: output before any `$ ` command in a checked block",
                    file.display(),
                    j + 1
                )
            });
            step.expected.push_str(&line);
            step.expected.push('\n');
            step.shown.end = j + 1;
        }
        j += 1;
    }
    steps
}

/// Timestamps, pids and sub-100 ms digits of elapsed times, on both sides.
fn redactions() -> &'static Redactions {
    static R: OnceLock<Redactions> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Redactions::new();
        let re = |s: &str| Regex::new(s).expect("a valid pattern");
        let mut add = |placeholder: &'static str, pattern: &str| {
            r.insert(placeholder, re(pattern)).expect("a placeholder");
        };
        add("[TIME]", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z");
        // pid=7, child_pid=7, "pgid":7, target="group 7", "pid 7".
        add("[PID]", r#"\b(?:pid|pgid|child_pid)[=":]+(?<redacted>\d+)"#);
        add("[PID]", r"\b(?:group|pid) (?<redacted>\d+)\b");
        add("[PID]", r#"\bsender_pid[=":]+(?<redacted>\d+)"#);
        // +0.300s, drain_ms=300, "since_stop_ms":301: 100 ms resolution.
        add("[MS]", r"\+\d+\.\d(?<redacted>\d\d)s\b");
        add(
            "[MS]",
            r#"\b(?:drain_ms|since_stop_ms)[=":]+\d*?(?<redacted>\d{1,2})\b"#,
        );
        // The termination message's "drain 3501 ms".
        add("[MS]", r"\bdrain \d*?(?<redacted>\d{1,2}) ms\b");
        r
    })
}

/// The directory of this build's rinit, with its probe built beside it
/// (scripts/demo's worker).
fn bin_dir() -> PathBuf {
    probe_beside(Path::new(RINIT));
    Path::new(RINIT)
        .parent()
        .expect("rinit's directory")
        .to_path_buf()
}

/// A step needs a Docker engine (`docker ...`, or a Docker case of
/// scripts/demo).
fn needs_docker(command: &str) -> bool {
    command.contains("docker")
        || ["oom", "unkillable"]
            .iter()
            .any(|case| command.starts_with("scripts/demo") && command.contains(case))
}

/// Runs every step of `block` in one bash, each step's stdout and stderr
/// together, and returns each step's output.
fn run_block(block: &Block) -> Vec<String> {
    const MARK: char = '\u{1e}';
    let mut script = String::from("exec 2>&1 </dev/null\n");
    for (i, step) in block.steps.iter().enumerate() {
        // The marker keeps `$?`, so a shown `echo $?` reads the command before.
        writeln!(
            script,
            "{{ s=$?; printf '\\036{i}\\n'; (exit $s); }}\n{}",
            step.command
        )
        .expect("a String");
    }
    let bin = bin_dir();
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bin.display()
    );
    let out = snapbox::cmd::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("RINIT_BIN_DIR", &bin)
        .current_dir(root_dir())
        .timeout(Duration::from_secs(180))
        .stderr_to_stdout()
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut outputs = vec![String::new(); block.steps.len()];
    for part in text.split(MARK).skip(1) {
        let (index, output) = part.split_once('\n').unwrap_or((part, ""));
        let index: usize = index.parse().expect("a step marker");
        outputs[index] = output.to_string();
    }
    outputs
}

/// Runs the checked blocks of `file` (relative to the repository's root)
/// and fails with every step whose output differs. With `docker` false,
/// steps that need Docker are left out (see [`needs_docker`]); with it
/// true, only blocks holding such steps run.
fn check_file(rel: &str, docker: bool) {
    if std::env::var("RINIT_DOCS").is_ok_and(|v| v == "overwrite") {
        // Two tests may rewrite one file: one at a time, each reading it
        // afresh.
        return locked(|| check_file_now(rel, docker, true));
    }
    check_file_now(rel, docker, false)
}

fn check_file_now(rel: &str, docker: bool, overwrite: bool) {
    let file = root_dir().join(rel);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let blocks = if rel.ends_with(".1") {
        man_blocks(&file, &text)
    } else {
        markdown_blocks(&file, &text)
    };
    let blocks: Vec<Block> = blocks
        .into_iter()
        .filter(|b| b.steps.iter().any(|s| needs_docker(&s.command)) == docker)
        .collect();
    if blocks.is_empty() {
        return;
    }
    let mut failures = Vec::new();
    let mut rewrites: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut steps = 0;
    for block in &blocks {
        let outputs = run_block(block);
        for (step, actual) in block.steps.iter().zip(outputs) {
            steps += 1;
            let label = format!("{rel}:{}: $ {}", step.line, step.command);
            let expected = redactions().redact(&step.expected);
            let result = Assert::new()
                .redact_with(redactions().clone())
                .normalize_paths(false)
                .try_eq(
                    Some(&label),
                    Data::text(actual.clone()),
                    Data::text(expected),
                );
            if let Err(e) = result {
                failures.push(format!("{label}\n{e}"));
                rewrites.push((step.shown.clone(), actual));
            }
        }
    }
    eprintln!("{rel}: {steps} shown commands run");
    if overwrite && !rewrites.is_empty() {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let man = rel.ends_with(".1");
        for (range, actual) in rewrites.into_iter().rev() {
            let new: Vec<String> = actual
                .lines()
                .map(|l| if man { roff(l) } else { l.to_string() })
                .collect();
            lines.splice(range, new);
        }
        std::fs::write(&file, lines.join("\n") + "\n").expect("write the doc");
        eprintln!(
            "{rel}: RINIT_DOCS=overwrite rewrote {} outputs",
            failures.len()
        );
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {steps} shown outputs in {rel} differ from what the commands print now \
         (RINIT_DOCS=overwrite writes them in; review the diff):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn readme_shown_outputs_match() {
    check_file("README.md", false);
}

#[test]
fn readme_shown_docker_outputs_match() {
    if engine("readme_shown_docker_outputs_match") {
        check_file("README.md", true);
    }
}

#[test]
fn worker_readme_shown_outputs_match() {
    check_file("examples/pubsub-gcs-worker/README.md", false);
    if engine("worker_readme_shown_outputs_match") {
        check_file("examples/pubsub-gcs-worker/README.md", true);
    }
}

#[test]
fn man_page_examples_match() {
    check_file("packaging/rinit.1", false);
}

/// Enough of the README runs that a broken extractor (or a block format
/// changed by hand) cannot pass by checking nothing.
#[test]
fn readme_has_checked_blocks() {
    let file = root_dir().join("README.md");
    let text = std::fs::read_to_string(&file).expect("README.md");
    let blocks = markdown_blocks(&file, &text);
    let steps: usize = blocks.iter().map(|b| b.steps.len()).sum();
    assert!(
        blocks.len() >= 10 && steps >= 20,
        "README.md: {} console blocks, {steps} commands",
        blocks.len()
    );
    let man = root_dir().join("packaging/rinit.1");
    let man_steps: usize = man_blocks(&man, &std::fs::read_to_string(&man).expect("man"))
        .iter()
        .map(|b| b.steps.len())
        .sum();
    assert!(
        man_steps >= 2,
        "the man page's EXAMPLES: {man_steps} commands"
    );
}

/// Output of rinit (a log line, a refusal) or of the reference worker shown
/// anywhere but in a checked block is a copy that can go stale.
#[test]
fn no_output_is_shown_unchecked() {
    let shown = Regex::new(
        r#"( rinit (DEBUG|INFO|NOTICE|WARNING|ERROR) |^rinit: |"component":"rinit"|pubsub_gcs_worker::)"#,
    )
    .expect("a valid pattern");
    let mut unchecked = Vec::new();
    for rel in [
        "README.md",
        "examples/pubsub-gcs-worker/README.md",
        "examples/python-worker/README.md",
        "docs/architecture.md",
    ] {
        let text = std::fs::read_to_string(root_dir().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e} (renamed? then name it here)"));
        let mut lang: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                lang = match lang {
                    None => Some(line.trim_start().trim_start_matches('`').trim().into()),
                    Some(_) => None,
                };
                continue;
            }
            if lang.as_deref().is_some_and(|l| l != "console") && shown.is_match(line) {
                unchecked.push(format!("{rel}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "output shown outside a ```console block (run by tests/docs.rs): make it a \
         console block under the command that prints it:\n{}",
        unchecked.join("\n")
    );
}

/// `rinit --help`, run.
fn help() -> String {
    let out = std::process::Command::new(RINIT)
        .arg("--help")
        .output()
        .expect("rinit --help runs");
    assert!(out.status.success(), "rinit --help: {:?}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// rinit's own parse of `args`, with no environment.
fn plan(args: &[&str]) -> rinit::shutdown::Plan {
    match rinit::cli::parse(args.iter().map(std::ffi::OsString::from), &|_| None) {
        Ok(config) => config.plan,
        Err(stop) => panic!("{args:?} refused: {}", stop.text),
    }
}

/// Each preset `--help` lists sends what its line says (the same plan as
/// `--stop-sequence` with that text, under several graces and a pre-stop
/// delay), and README.md's presets table and the man page's PRESETS give the
/// same sequence.
#[test]
fn help_presets_are_the_code() {
    let help = help();
    let readme = std::fs::read_to_string(root_dir().join("README.md")).expect("README.md");
    let man = std::fs::read_to_string(root_dir().join("packaging/rinit.1"))
        .expect("man page")
        .replace("\\-", "-");
    // Every line of the "Presets" section, up to the blank line after it,
    // is `  NAME  SEQUENCE  what it means`; each is checked below.
    let line = Regex::new(r"^  ([a-z][a-z0-9-]*) +(\S+) ").expect("pattern");
    let presets: Vec<(String, String)> = help
        .lines()
        .skip_while(|l| !l.starts_with("Presets"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let c = line
                .captures(l)
                .unwrap_or_else(|| panic!("not a preset line: {l:?}\n{help}"));
            (c[1].to_string(), c[2].to_string())
        })
        .collect();
    assert!(presets.len() >= 4, "presets in --help:\n{help}");
    for (name, sequence) in &presets {
        for extra in [&["--grace=8s"][..], &["--grace=25s", "--pre-stop-delay=1s"]] {
            let mut by_name = vec!["--preset", name];
            by_name.extend(extra);
            by_name.extend(["--", "worker"]);
            let by_text_flag = format!("--stop-sequence={sequence}");
            let mut by_text = vec![by_text_flag.as_str()];
            by_text.extend(extra);
            by_text.extend(["--", "worker"]);
            assert_eq!(
                plan(&by_name).sequence,
                plan(&by_text).sequence,
                "--help says {name} is {sequence} ({extra:?})"
            );
        }
        assert!(
            readme.contains(&format!("| `{name}` | `{sequence}` |")),
            "README.md's presets table does not give {name} as {sequence}"
        );
        assert!(
            man.contains(&format!(".B {name}\n{sequence}:")),
            "the man page's PRESETS do not give {name} as {sequence}"
        );
    }
}

/// Every option and environment variable `--help` names is in README.md.
#[test]
fn readme_names_every_option_and_variable_of_help() {
    let help = help();
    let readme = std::fs::read_to_string(root_dir().join("README.md")).expect("README.md");
    let names = Regex::new(r"(--[a-z][a-z-]+|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b)").expect("pattern");
    let mut missing: Vec<&str> = names
        .find_iter(&help)
        .map(|m| m.as_str())
        .filter(|n| !readme.contains(n))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "README.md does not mention {missing:?}, which `rinit --help` names"
    );
}

/// Each message Troubleshooting names in bold (`**`message`**`) is one rinit
/// prints: it is in rinit's source or in an output the README shows (and
/// the tests above run), so renaming a message cannot leave its entry
/// pointing at nothing.
#[test]
fn troubleshooting_names_messages_rinit_prints() {
    let readme = std::fs::read_to_string(root_dir().join("README.md")).expect("README.md");
    let start = readme
        .find("## Troubleshooting")
        .expect("README.md has Troubleshooting");
    let end = readme[start..]
        .find("From the reference worker")
        .map_or(readme.len(), |e| start + e);
    let mut printed = String::new();
    for entry in std::fs::read_dir(root_dir().join("src")).expect("src/") {
        let path = entry.expect("an entry of src/").path();
        printed.push_str(&std::fs::read_to_string(&path).expect("a source file"));
    }
    let file = root_dir().join("README.md");
    for block in markdown_blocks(&file, &readme) {
        for step in block.steps {
            printed.push_str(&step.expected);
        }
    }
    let named = Regex::new(r"\*\*`([^`]+)`\*\*").expect("pattern");
    let fragments: Vec<&str> = named
        .captures_iter(&readme[start..end])
        .map(|c| c.get(1).expect("a group").as_str())
        .collect();
    assert!(fragments.len() >= 10, "Troubleshooting names {fragments:?}");
    let missing: Vec<&&str> = fragments.iter().filter(|f| !printed.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "Troubleshooting names messages rinit does not print: {missing:?}"
    );
}
