//! `remediator replay` and `remediator validate` end to end, through the built binary.

mod common;

use std::process::Command;

const NOW: &str = "2026-11-25T12:00:00Z";

fn remediator(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remediator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run remediator")
}

fn replay(runbooks: &str) -> Vec<serde_json::Value> {
    let out = remediator(&[
        "replay",
        "--runbooks",
        runbooks,
        "--incidents",
        "tests/data/seed-incidents.jsonl",
        "--now",
        NOW,
    ]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON outcome"))
        .collect()
}

#[test]
fn replay_of_the_seed_incidents_gives_the_prescribed_decisions() {
    let outcomes = replay("tests/data/seed-runbooks.yaml");
    let got: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|o| {
            (
                o["incident_id"].as_str().unwrap_or("-"),
                o["decision"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let want = vec![
        ("INC001", "dry_run"),           // restart-pod, dry-run execution in replay
        ("INC002", "dry_run"),           // scale-up, confidence 0.75 >= 0.7
        ("INC003", "approval_required"), // HIGH risk
        ("INC004", "manual"),            // no runbook
        ("-", "rejected"),               // truncated JSON
        ("INC006", "rejected"),          // confidence is a string
        ("-", "rejected"),               // not JSON
        ("INC001", "duplicate"),         // same id again
        ("INC007", "blocked"),           // restart-pod on api-server within cooldown
        ("INC008", "manual"),            // confidence 0.65 < 0.7
        ("INC009", "expired"),           // detected 3 h before --now
        ("INC010", "aborted"),           // hostile pod name never reaches an action
    ];
    assert_eq!(got, want);
    assert_eq!(
        outcomes[5]["reason"],
        "invalid incident: confidence: must be a number, got string"
    );
    assert_eq!(outcomes[8]["guardrail"], "cooldown");
    assert_eq!(outcomes[8]["reason"], "cooldown active (300s remaining)");
    assert_eq!(
        outcomes[9]["reason"],
        "confidence 0.65 < 0.7 required by runbook scale-up"
    );
    assert!(
        outcomes[11]["reason"].as_str().unwrap().contains("context.pod_name"),
        "{}",
        outcomes[11]["reason"]
    );
    assert_eq!(
        outcomes[0]["action"]["display"],
        "kubectl delete pod api-server-abc123 -n production"
    );
    assert_eq!(
        outcomes[2]["action"]["display"], "kubectl rollout undo deployment checkout --to-revision=1 -n production",
        "an approval shows the revision its undo restores"
    );
    for o in &outcomes {
        common::schema::assert_valid_outcome(o);
    }
}

#[test]
fn replay_is_deterministic_and_the_native_catalogue_agrees() {
    let a = replay("tests/data/seed-runbooks.yaml");
    let b = replay("tests/data/seed-runbooks.yaml");
    assert_eq!(a, b, "same input, same output, event ids included");
    let native = replay("config/runbooks.yaml");
    let decisions = |v: &[serde_json::Value]| v.iter().map(|o| o["decision"].clone()).collect::<Vec<_>>();
    assert_eq!(decisions(&a), decisions(&native));
}

#[test]
fn validate_accepts_the_shipped_files_and_lists_every_problem() {
    for f in ["config/runbooks.yaml", "tests/data/seed-runbooks.yaml"] {
        let out = remediator(&["validate", "--runbooks", f]);
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "runbooks:\n  a:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 2\n    action: kubectl delete pod {pod} -n {namespace}\n    pre_checks: [nope]\n",
    )
    .unwrap();
    let out = remediator(&["validate", "--runbooks", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "runbook \"a\": min_confidence",
        "runbook \"a\": pre_checks[0]: unknown check \"nope\"",
        "unknown template variable {pod}",
        "3 problem(s) found",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// The catalogue refuses what the principles forbid, warns about
/// what it allows only with care, and an override is shown wherever the runbook is listed.
#[test]
fn validate_refuses_high_risk_auto_without_rollback_and_warns_about_irreversible_automation() {
    let dir = tempfile::tempdir().unwrap();
    let high = dir.path().join("high.yaml");
    let body = "runbooks:\n  undo:\n    risk: HIGH\n    mode: auto\n    triggers: [x]\n    min_confidence: 0.9\n    action: {kind: rollout_undo}\n";
    std::fs::write(&high, body).unwrap();
    let out = remediator(&["validate", "--runbooks", high.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a HIGH-risk auto runbook without rollback validates"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("high.yaml:2:3: runbook \"undo\": rollback: a HIGH-risk runbook in mode auto needs a rollback"),
        "{err}"
    );

    // With a stated reason it loads, and is still warned about.
    std::fs::write(
        &high,
        format!("{body}    allow_irreversible_auto: the deploy pipeline re-deploys on failure\n"),
    )
    .unwrap();
    let out = remediator(&["validate", "--runbooks", high.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ")
            && err.contains("runbook \"undo\": rollback: rollout_undo runs automatically but is neither reversible")
            && err.contains("(allow_irreversible_auto: the deploy pipeline re-deploys on failure)"),
        "{err}"
    );

    // The shipped catalogue: one automatic action that nothing undoes (clearing caches) is
    // warned about on stderr; validation still passes.
    let out = remediator(&["validate", "--runbooks", "config/runbooks.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with(
            "warning: config/runbooks.yaml: runbook \"clear-disk-cache\": rollback: webhook runs automatically"
        ),
        "{err}"
    );
    let out = remediator(&["validate", "--runbooks", "tests/data/seed-runbooks.yaml"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "the seed file has nothing to warn about"
    );
}

/// `remediator runbooks` (against real Redis) shows a runbook's override.
#[test]
fn the_runbooks_report_shows_an_override() {
    let Some(redis) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        assert!(
            std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_none(),
            "REDIS_URL is required"
        );
        eprintln!("REDIS_URL unset: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rb.yaml");
    std::fs::write(
        &path,
        "runbooks:\n  undo:\n    risk: HIGH\n    mode: auto\n    triggers: [x]\n    min_confidence: 0.9\n    action: {kind: rollout_undo}\n    allow_irreversible_auto: the deploy pipeline re-deploys on failure\n  restart:\n    risk: LOW\n    triggers: [y]\n    min_confidence: 0.9\n    action: {kind: delete_pod}\n",
    )
    .unwrap();
    let prefix = format!(
        "test-report-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .arg("runbooks")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("REMEDIATOR_REDIS_URL", &redis)
        .env("REMEDIATOR_REDIS_KEY_PREFIX", &prefix)
        .env("REMEDIATOR_RUNBOOKS", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run remediator runbooks");
    // Bounded: a hung store must fail the test, not hang it.
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("remediator runbooks did not finish within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in {text}"))
    };
    assert!(
        line("undo").ends_with("OVERRIDE auto without rollback: the deploy pipeline re-deploys on failure"),
        "{text}"
    );
    assert!(!line("restart").contains("OVERRIDE"), "{text}");
}

/// Offline: the reference catalogue's LOW-risk scale-up never renders 0 or a count
/// above its cap (10, from its `current_replicas_below_max` pre-check), whatever the incident says.
#[test]
fn replay_refuses_a_scale_to_zero_or_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let incidents = dir.path().join("scale.jsonl");
    let line = |id: &str, n: u32| {
        format!(
            r#"{{"id":"{id}","root_cause":"high_cpu","confidence":0.9,"service":"{id}","context":{{"deployment":"{id}","namespace":"production","new_replicas":{n},"old_replicas":3,"max_replicas":10000}}}}"#
        )
    };
    std::fs::write(
        &incidents,
        [
            line("zero", 0),
            line("eleven", 11),
            line("huge", 10000),
            line("ten", 10),
        ]
        .join("\n"),
    )
    .unwrap();
    for runbooks in ["tests/data/seed-runbooks.yaml", "config/runbooks.yaml"] {
        let out = remediator(&[
            "replay",
            "--runbooks",
            runbooks,
            "--incidents",
            incidents.to_str().unwrap(),
            "--now",
            NOW,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let outcomes: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(&str, &str)> = outcomes
            .iter()
            .map(|o| (o["decision"].as_str().unwrap(), o["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(got.len(), 4, "{runbooks}: {got:?}");
        assert_eq!(got[0].0, "aborted", "{runbooks}: {got:?}");
        assert!(
            got[0].1.contains("context.new_replicas: 0 replicas is refused"),
            "{got:?}"
        );
        for (d, reason) in &got[1..3] {
            assert_eq!(*d, "aborted", "{runbooks}: {got:?}");
            assert!(reason.contains("is above the runbook's max_replicas 10"), "{reason}");
        }
        assert_eq!(got[3].0, "dry_run", "{runbooks}: the cap itself is allowed: {got:?}");
        assert_eq!(outcomes[3]["action"]["params"]["max_replicas"], 10);
    }
}

/// `remediator replay --incidents -` with its stdin, stdout and stderr on pipes.
fn replay_on_pipes() -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_remediator"))
        .args([
            "replay",
            "--runbooks",
            "tests/data/seed-runbooks.yaml",
            "--incidents",
            "-",
            "--now",
            NOW,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start remediator")
}

/// A reader that goes away (`remediator replay ... | head`) ends the replay with an error naming
/// the output, at once, even while its input is still open (a `tail -f` feeding stdin).
#[test]
fn a_closed_output_ends_replay_while_the_input_stays_open() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let mut child = replay_on_pipes();
    // Nobody reads the output.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().expect("stdin");
    let line = r#"{"id":"x","root_cause":"cosmic_rays","confidence":0.8,"service":"svc","context":{}}"#;
    // More than the output buffer holds, so a write to the closed pipe happens; then the input
    // stays open with nothing more to read.
    for _ in 0..400 {
        if writeln!(stdin, "{line}").is_err() {
            break;
        }
    }
    let _ = stdin.flush();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "replay did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(!status.success());
    assert!(err.contains("writing output"), "{err}");
    drop(stdin);
}

/// Fed line by line (`tail -f … | remediator replay --incidents -`), replay answers each line at
/// once, while its input stays open.
#[test]
fn each_line_of_an_open_input_is_answered_at_once() {
    use std::io::{BufRead, Write};
    let mut child = replay_on_pipes();
    let mut stdin = child.stdin.take().expect("stdin");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.expect("output line")).is_err() {
                return;
            }
        }
    });
    for i in 0..3 {
        writeln!(
            stdin,
            r#"{{"id":"open-{i}","root_cause":"cosmic_rays","confidence":0.8,"service":"svc","context":{{}}}}"#
        )
        .expect("write a line");
        stdin.flush().expect("flush");
        let out = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no answer to line {i} while the input is open"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON outcome");
        assert_eq!(v["incident_id"], format!("open-{i}"));
    }
    drop(stdin);
    assert!(child.wait().expect("exit").success());
}
