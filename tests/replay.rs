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
        outcomes[2]["action"]["display"],
        "kubectl rollout undo deployment checkout -n production"
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
