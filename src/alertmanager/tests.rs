//! Unit tests of the Alertmanager intake: alerts to incidents, label mapping, the token.
//! Kept apart so `mod.rs` reads as the code alone.

use super::*;
use crate::incident;

fn alert(status: &str, labels: &[(&str, &str)]) -> Alert {
    Alert {
        status: status.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: BTreeMap::new(),
        starts_at: "2026-11-25T12:00:00.123456789Z".into(),
        fingerprint: "3a4b5c6d7e8f9012".into(),
    }
}

fn crash() -> Alert {
    alert(
        "firing",
        &[
            ("alertname", "CrashLoopBackOff"),
            ("service", "api-server"),
            ("job", "kube-state-metrics"),
            ("namespace", "production"),
            ("pod", "api-server-abc123"),
            ("deployment", "api-server"),
        ],
    )
}

fn incident_of(m: Mapped) -> incident::Incident {
    match m {
        Mapped::Incident { payload, .. } => incident::parse(&payload).expect("valid"),
        other => panic!("expected an incident, got {other:?}"),
    }
}

#[test]
fn firing_alert_maps_labels_to_incident_fields() {
    let c = AlertmanagerConfig::default();
    let i = incident_of(map_alert(&crash(), &c));
    assert_eq!(i.id, "am-3a4b5c6d7e8f9012-1795608000123");
    assert_eq!(i.root_cause, "CrashLoopBackOff");
    assert_eq!(i.services, vec!["api-server".to_string()]);
    assert_eq!(i.confidence, 0.9);
    let ctx = |k: &str| i.context.get(k).map(|v| format!("{v:?}"));
    assert!(ctx("namespace").unwrap().contains("production"));
    assert!(ctx("pod_name").unwrap().contains("api-server-abc123"));
    assert!(ctx("deployment").unwrap().contains("api-server"));
    assert_eq!(
        i.detected_at.unwrap().to_rfc3339_opts(SecondsFormat::Nanos, true),
        "2026-11-25T12:00:00.123456789Z"
    );
}

#[test]
fn ids_are_stable_per_firing_episode() {
    let c = AlertmanagerConfig::default();
    let a = map_alert(&crash(), &c);
    assert_eq!(a, map_alert(&crash(), &c), "a retry maps to the same id and bytes");
    let mut later = crash();
    later.starts_at = "2026-11-25T13:00:00Z".into();
    let (Mapped::Incident { id: first, .. }, Mapped::Incident { id: second, .. }) = (a, map_alert(&later, &c)) else {
        panic!("both map");
    };
    assert_ne!(first, second, "a new episode is a new incident");
    // Without a usable fingerprint the labels give a stable one.
    let mut odd = crash();
    odd.fingerprint = "not hex!".into();
    let (Mapped::Incident { id: x, .. }, Mapped::Incident { id: y, .. }) =
        (map_alert(&odd, &c), map_alert(&odd.clone(), &c))
    else {
        panic!("both map");
    };
    assert_eq!(x, y);
    assert!(x.starts_with("am-") && !x.contains("not hex"), "{x}");
}

#[test]
fn resolved_alerts_never_become_incidents() {
    let mut a = crash();
    a.status = "resolved".into();
    assert_eq!(map_alert(&a, &AlertmanagerConfig::default()), Mapped::Resolved);
    a.status = "pending".into();
    assert!(matches!(map_alert(&a, &AlertmanagerConfig::default()), Mapped::Rejected(r) if r.contains("status")));
}

#[test]
fn service_falls_back_to_job_and_mapping_is_configurable() {
    let mut c = AlertmanagerConfig::default();
    let a = alert("firing", &[("alertname", "HighCPU"), ("job", "checkout")]);
    assert_eq!(incident_of(map_alert(&a, &c)).services, vec!["checkout".to_string()]);
    let a = alert("firing", &[("alertname", "HighCPU")]);
    assert!(matches!(map_alert(&a, &c), Mapped::Rejected(r) if r.starts_with("service:")));
    c.label_mapping.root_cause = vec!["root_cause".into(), "alertname".into()];
    let a = alert(
        "firing",
        &[("alertname", "HighCPU"), ("root_cause", "high_cpu"), ("service", "w")],
    );
    assert_eq!(incident_of(map_alert(&a, &c)).root_cause, "high_cpu");
}

#[test]
fn confidence_comes_from_the_annotation_or_the_default() {
    let mut c = AlertmanagerConfig::default();
    let mut a = crash();
    a.annotations.insert("confidence".into(), "0.75".into());
    assert_eq!(incident_of(map_alert(&a, &c)).confidence, 0.75);
    a.annotations.insert("confidence".into(), "1.5".into());
    assert!(matches!(map_alert(&a, &c), Mapped::Rejected(r) if r.contains("confidence")));
    c.confidence_annotation = String::new();
    c.default_confidence = 0.5;
    assert_eq!(incident_of(map_alert(&a, &c)).confidence, 0.5);
}

#[test]
fn invalid_values_are_rejected_before_producing() {
    let c = AlertmanagerConfig::default();
    let mut a = crash();
    a.labels.insert("alertname".into(), "bad\u{7}name".into());
    assert!(matches!(map_alert(&a, &c), Mapped::Rejected(r) if r.contains("root_cause")));
    let mut a = crash();
    a.starts_at = "yesterday".into();
    assert!(matches!(map_alert(&a, &c), Mapped::Rejected(r) if r.contains("startsAt")));
}

#[test]
fn token_comparison() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secreT", b"secret"));
    assert!(!constant_time_eq(b"secret-longer", b"secret"));
    assert!(!constant_time_eq(b"", b"secret"));
}

/// No token, no intake, unless the operator opted in explicitly; the error names the
/// variable, the file key and the switch.
#[test]
fn an_intake_without_a_token_needs_the_explicit_switch() {
    let closed = AlertmanagerConfig::default();
    for none in [None, Some(""), Some("  \n")] {
        let e = require_token(&closed, none).expect_err("refused").to_string();
        for name in [
            TOKEN_ENV,
            "alertmanager.token_file",
            "alertmanager.allow_unauthenticated",
        ] {
            assert!(e.contains(name), "{e}");
        }
    }
    assert!(require_token(&closed, Some("s3cret")).is_ok());
    let open = AlertmanagerConfig {
        allow_unauthenticated: true,
        ..AlertmanagerConfig::default()
    };
    assert!(require_token(&open, None).is_ok());
    let kafka = KafkaSettings::default();
    let e = Intake::new(&closed, &kafka, None, Metrics::new())
        .err()
        .expect("refused");
    assert!(matches!(e, IntakeError::Unauthenticated), "{e}");
    assert!(Intake::new(&closed, &kafka, Some("s3cret".into()), Metrics::new()).is_ok());
    assert!(Intake::new(&open, &kafka, None, Metrics::new()).is_ok());
}

#[test]
fn the_token_comes_from_the_token_file() {
    if std::env::var(TOKEN_ENV).is_ok() {
        return; // the variable wins; nothing to learn about the file here
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cret\n").expect("write");
    let config = AlertmanagerConfig {
        token_file: path.display().to_string(),
        ..AlertmanagerConfig::default()
    };
    assert_eq!(token(&config).expect("read").as_deref(), Some("s3cret"));
    let missing = AlertmanagerConfig {
        token_file: dir.path().join("nope").display().to_string(),
        ..AlertmanagerConfig::default()
    };
    let e = token(&missing).expect_err("missing file").to_string();
    assert!(e.contains("alertmanager.token_file"), "{e}");
    assert_eq!(token(&AlertmanagerConfig::default()).expect("none"), None);
}
