//! `remediator demo` end to end: the embedded pipeline tells the whole story.

use std::process::Command;

#[test]
fn demo_shows_the_seed_decisions_cooldown_circuit_breaker_rejection_and_duplicate() {
    let out = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .arg("demo")
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each incident's verdict line follows its header line.
    let verdicts: Vec<(String, String)> = text
        .lines()
        .zip(text.lines().skip(1))
        .filter(|(_, next)| next.trim_start().starts_with("-> "))
        .map(|(head, next)| {
            let id = head.split_whitespace().next().unwrap_or("").to_string();
            (id, next.trim_start().trim_start_matches("-> ").to_string())
        })
        .collect();
    let want = [
        ("INC001", "EXECUTED, verified"),
        ("INC002", "EXECUTED, verified"),
        ("INC003", "APPROVAL_REQUIRED"),
        ("INC004", "MANUAL"),
        ("INC005", "BLOCKED by cooldown"),
        ("INC006", "EXECUTED, FAILED verification"),
        ("INC007", "EXECUTED, FAILED verification"),
        ("INC008", "EXECUTED, FAILED verification"),
        ("INC009", "BLOCKED by circuit_open"),
        ("INC010", "REJECTED"),
        ("INC001", "DUPLICATE"),
    ];
    assert_eq!(verdicts.len(), want.len(), "{text}");
    for ((id, verdict), (want_id, want_verdict)) in verdicts.iter().zip(want) {
        assert_eq!(id, want_id, "{text}");
        assert!(
            verdict.starts_with(want_verdict),
            "{id}: {verdict:?} should start with {want_verdict:?}\n{text}"
        );
    }
    assert!(text.contains("circuit opened after 3 consecutive failures"), "{text}");
    assert!(
        text.contains("11 incidents in, 11 outcomes out, 1 sent to the dead-letter topic"),
        "{text}"
    );
    assert!(text.contains("the simulated cluster ran 5 actions"), "{text}");
}
