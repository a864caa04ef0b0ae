//! `remediator validate`, as a user runs it: every problem of a runbook catalogue at once, each
//! named like a compiler names one (`file:line:column: runbook "id": key: message`), and a worker
//! config's problems with the place in the file they came from.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `remediator ARGS` in `dir`; (success, stderr). Bounded: a hang is killed and fails the test.
fn remediator(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .args(args)
        .current_dir(dir)
        .env_remove("REMEDIATOR_RUNBOOKS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start remediator");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("remediator {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    (status.success(), err)
}

/// The text of `file` from `line:column` (1-based, in characters) on.
fn at(file: &str, line: usize, column: usize) -> String {
    file.lines()
        .nth(line - 1)
        .unwrap_or_else(|| panic!("no line {line}"))
        .chars()
        .skip(column - 1)
        .collect()
}

/// Five different mistakes in two runbooks: five messages, each with `file:line:column` (pointing
/// at the offending key or value), the runbook id and the key path.
#[test]
fn five_mistakes_give_five_located_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalogue = "\
runbooks:
  restart-pod:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 1.5
    maxperhour: 5
    post_checks: [pod_becomes_ready, pod_is_happy]
    action: kubectl delete pod {pod_name} -n {namespace}
  scale-up:
    risk: MEDIUM
    triggers: [HighCPU]
    min_confidence: 0.7
    cooldown_minutes: soon
    action: {kind: webhook, url: \"http://scaler.ops/{service}/{pod}\"}
";
    std::fs::write(dir.path().join("runbooks.yaml"), catalogue).expect("write");
    let (ok, err) = remediator(dir.path(), &["validate", "--runbooks", "runbooks.yaml"]);
    assert!(!ok, "validate must fail:\n{err}");
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("runbooks.yaml:")).collect();
    // (message prefix, the text found at its line:column)
    let want = [
        (
            r#"runbooks.yaml:5:21: runbook "restart-pod": min_confidence: must be between 0 and 1, got 1.5"#,
            "1.5",
        ),
        (
            r#"runbooks.yaml:6:5: runbook "restart-pod": maxperhour: unknown key"#,
            "maxperhour",
        ),
        (
            r#"runbooks.yaml:7:38: runbook "restart-pod": post_checks[1]: unknown check "pod_is_happy""#,
            "pod_is_happy",
        ),
        (
            r#"runbooks.yaml:13:23: runbook "scale-up": cooldown_minutes: must be an integer between 0 and 10080, got a string"#,
            "soon",
        ),
        (
            r#"runbooks.yaml:14:34: runbook "scale-up": action.url: unknown template variable {pod}"#,
            "\"http://scaler.ops/{service}/{pod}\"",
        ),
    ];
    assert_eq!(problems.len(), want.len(), "one message per mistake:\n{err}");
    for (message, text) in want {
        assert!(
            problems.iter().any(|p| p.starts_with(message)),
            "missing {message:?} in:\n{err}"
        );
        let loc: Vec<usize> = message
            .split(": ")
            .next()
            .and_then(|f| f.strip_prefix("runbooks.yaml:"))
            .map(|lc| lc.split(':').map(|n| n.parse().expect("number")).collect())
            .expect("file:line:column");
        assert!(
            at(catalogue, loc[0], loc[1]).starts_with(text),
            "{message}: the column points at {:?}, not {text:?}",
            at(catalogue, loc[0], loc[1])
        );
    }
    assert!(err.contains("error: runbooks.yaml: 5 problem(s) found"), "{err}");
}

/// A worker config's problems name the place in the file the offending key or value was written
/// (a syntax error, an unknown key, a wrong type, a broken rule), and no place for a value that
/// came from the environment instead.
#[test]
fn config_problems_name_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("runbooks.yaml"),
        include_str!("data/seed-runbooks.yaml"),
    )
    .expect("write");
    // Line 1 of each file is `runbooks: runbooks.yaml`.
    for (config, want) in [
        ("kafka:\n  brokers: [a\n", "c.yaml:3:12: unclosed bracket"),
        ("kafka:\n  brokerz: x\n", "c.yaml:3:3: kafka.brokerz: unknown key"),
        (
            "redis:\n  timeout_ms: fast\n",
            "c.yaml:3:15: redis.timeout_ms: invalid type",
        ),
        (
            "guardrails:\n  lease: 1s\n",
            "c.yaml:3:10: guardrails.lease: must be at least 3s",
        ),
    ] {
        std::fs::write(dir.path().join("c.yaml"), format!("runbooks: runbooks.yaml\n{config}")).expect("write");
        let (ok, err) = remediator(dir.path(), &["validate", "--config", "c.yaml"]);
        assert!(!ok && err.contains(want), "{config:?}: want {want:?} in:\n{err}");
    }
}
