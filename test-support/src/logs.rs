//! rinit's log lines, read as a user (or a log service) reads them.
//!
//! One strictness for every test: a text line belongs to phase P only when
//! the word after rinit's severity is `P:` (`... rinit INFO start: ...`), so a
//! worker line that happens to contain " start: " never counts.

/// Parses every stderr line as JSON; a line that does not parse fails the test.
pub fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

/// The JSON log lines of one phase.
pub fn phase<'a>(lines: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["phase"] == name).collect()
}

/// The value of `key=` in a text log line (`key="a b"` keeps its quotes off).
pub fn text_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_string())
    } else {
        Some(rest.split_whitespace().next()?.to_string())
    }
}

/// Text log lines of one phase (`... rinit SEVERITY phase: message ...`).
pub fn text_phase<'a>(stderr: &'a str, name: &str) -> Vec<&'a str> {
    let tag = format!(" {name}: ");
    stderr
        .lines()
        .filter(|l| {
            l.split_once(" rinit ")
                .and_then(|(_, r)| r.split_once(' '))
                .is_some_and(|(_, r)| r.starts_with(&tag[1..]))
        })
        .collect()
}

/// rinit's text log of a clean stop: one `exit` line with status 0 and no
/// escalation, and no `kill` line (rinit killed nothing). `what` names the
/// stop in the failure message.
pub fn assert_clean_exit(stderr: &str, what: &str) {
    let exit = text_phase(stderr, "exit");
    assert!(
        exit.len() == 1 && exit[0].contains("status=0") && exit[0].contains("escalated=false"),
        "{what}: rinit's exit line: {exit:?}\n{stderr}"
    );
    assert!(
        text_phase(stderr, "kill").is_empty(),
        "{what}: rinit killed nothing:\n{stderr}"
    );
}
