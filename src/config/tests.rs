//! Unit tests of the configuration: defaults, precedence, positions in messages, every rule of
//! `validate.rs`, durations and secrets; `docs` checks that the shipped example and the reference
//! name every key.

use super::duration::MAX_DURATION_SECS;
use super::*;
use std::path::Path;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_match_the_design() {
    let c = Config::load(Some(Path::new("/nonexistent")), &env(&[]), &[]);
    assert!(c.is_err(), "an explicit missing file is an error");
    let c = Config::load(None, &env(&[]), &[]).unwrap();
    assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.redis.timeout_ms, 200);
    let s = crate::engine::Settings::from(&c);
    assert_eq!(s.guardrails.max_concurrent_actions, 3);
    assert_eq!(s.guardrails.recovery_timeout, Duration::from_secs(300));
    assert_eq!(s.guardrails.max_incident_age, Duration::from_secs(900));
}

#[test]
fn precedence_is_flag_env_file_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "dry_run: false\nkafka:\n  brokers: file:1\n  group_id: g-file\nredis:\n  timeout_ms: 50\n",
    )
    .unwrap();
    let e = env(&[
        ("REMEDIATOR_KAFKA_BROKERS", "env:1"),
        ("REMEDIATOR_DRY_RUN", "true"),
        ("REMEDIATOR_CACHE", "/x"),
    ]);
    let c = Config::load(Some(&p), &e, &[("kafka.brokers", "flag:1".into())]).unwrap();
    assert_eq!(c.kafka.brokers, "flag:1");
    assert!(c.dry_run);
    assert_eq!(c.kafka.group_id, "g-file");
    assert_eq!(c.redis.timeout_ms, 50);
    assert_eq!(c.kafka.incidents_topic, "incidents");
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, "kafka:\n  brokerz: x\n").unwrap();
    let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
    assert!(e.contains("kafka.brokerz: unknown key"), "{e}");
    std::fs::write(&p, "guardrails:\n  recovery_timeout: soon\n").unwrap();
    let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
    assert!(e.contains("guardrails.recovery_timeout"), "{e}");
    let e = Config::load(None, &env(&[("REMEDIATOR_REDIS_TIMEOUT_MS", "fast")]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("REMEDIATOR_REDIS_TIMEOUT_MS") || e.contains("timeout_ms"),
        "{e}"
    );
    let e = Config::load(None, &env(&[("REMEDIATOR_KAFKA_BROKER", "x")]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("REMEDIATOR_KAFKA_BROKER: unknown configuration key"), "{e}");
    let e = Config::load(
        None,
        &env(&[("REMEDIATOR_REDIS_URL", "redis+sentinel://:hunter2@s1:26379")]),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("redis.url") && e.contains("primary's name"), "{e}");
    assert!(!e.contains("hunter2"), "the password is never echoed: {e}");
    let ok = Config::load(
        None,
        &env(&[("REMEDIATOR_REDIS_URL", "redis+cluster://a:7000,b:7001")]),
        &[],
    );
    assert!(ok.is_ok(), "{ok:?}");
}

/// A problem with a value written in the file names where (`file:line:column`); once the
/// environment or a flag overrides that value, the file's place no longer applies.
#[test]
fn file_values_carry_their_position_until_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, "kafka:\n  brokers: b:1\nguardrails:\n  lease: 1s\n").unwrap();
    let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:4:10: guardrails.lease: must be at least 3s (it is renewed every third)",
            p.display()
        )
    );
    let e = Config::load(Some(&p), &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "2s")]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "guardrails.lease: must be at least 3s (it is renewed every third)");
    let e = Config::load(Some(&p), &env(&[]), &[("guardrails.lease", "2s".into())])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "guardrails.lease: must be at least 3s (it is renewed every third)");
}

/// A redelivery may act while the incident is younger than max_incident_age, so the records
/// that stop it (claim, idempotency) must outlive that age: the config says so at load.
#[test]
fn max_incident_age_is_bounded_by_the_claim_grace_and_the_idempotency_ttl() {
    let load = |age: &str, ttl: &str| {
        Config::load(
            None,
            &env(&[
                ("REMEDIATOR_GUARDRAILS_MAX_INCIDENT_AGE", age),
                ("REMEDIATOR_GUARDRAILS_IDEMPOTENCY_TTL", ttl),
            ]),
            &[],
        )
    };
    assert!(load("59m", "7d").is_ok());
    let e = load("1h", "7d").unwrap_err().to_string();
    assert!(
        e.contains("guardrails.max_incident_age") && e.contains("claim grace"),
        "{e}"
    );
    let e = load("30m", "30m").unwrap_err().to_string();
    assert!(
        e.contains("guardrails.max_incident_age") && e.contains("guardrails.idempotency_ttl"),
        "{e}"
    );
    assert!(load("30m", "26h").is_ok());
}

/// An approval's execution claim is kept for guardrails.idempotency_ttl; it must outlive the
/// approval (approvals.ttl, plus the 24 h the store keeps it), or a repeated answer could
/// find no claim and execute again.
#[test]
fn the_idempotency_ttl_outlives_every_approval() {
    let load = |ttl: &str, appr: &str| {
        Config::load(
            None,
            &env(&[
                ("REMEDIATOR_GUARDRAILS_IDEMPOTENCY_TTL", ttl),
                ("REMEDIATOR_APPROVALS_TTL", appr),
            ]),
            &[],
        )
    };
    assert!(load("168h", "1h").is_ok());
    assert!(load("26h", "1h").is_ok());
    for (ttl, appr) in [("25h", "1h"), ("24h", "1h"), ("48h", "24h"), ("2h", "1h")] {
        let e = load(ttl, appr).unwrap_err().to_string();
        assert!(
            e.contains("guardrails.idempotency_ttl") && e.contains("approvals.ttl"),
            "{ttl} {appr}: {e}"
        );
    }
}

#[test]
fn every_key_has_an_env_name() {
    let keys = Config::keys();
    assert!(keys.contains(&("kafka.brokers".into(), "REMEDIATOR_KAFKA_BROKERS".into())));
    assert!(keys.contains(&("redis.url".into(), "REMEDIATOR_REDIS_URL".into())));
    assert!(keys.contains(&("runbooks".into(), "REMEDIATOR_RUNBOOKS".into())));
    assert!(keys.contains(&(
        "guardrails.max_concurrent_actions".into(),
        "REMEDIATOR_GUARDRAILS_MAX_CONCURRENT_ACTIONS".into()
    )));
}

#[test]
fn the_shutdown_grace_is_a_positive_duration() {
    let c = Config::load(None, &env(&[("REMEDIATOR_SHUTDOWN_GRACE", "90s")]), &[]).unwrap();
    assert_eq!(c.grace(), Duration::from_secs(90));
    assert_eq!(
        Config::load(None, &env(&[]), &[]).unwrap().grace(),
        Duration::from_secs(600)
    );
    for bad in ["0s", "soon"] {
        let e = Config::load(None, &env(&[("REMEDIATOR_SHUTDOWN_GRACE", bad)]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shutdown.grace"), "{e}");
    }
}

/// A mistyped variable of any section, top-level key or secret is an error naming it; the
/// list comes from the config itself, so no section can be forgotten.
#[test]
fn a_typo_in_every_section_is_an_error() {
    let mut firsts: Vec<String> = Config::keys()
        .into_iter()
        .map(|(_, var)| {
            var.trim_start_matches("REMEDIATOR_")
                .split('_')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    firsts.dedup();
    for must in [
        "APPROVALS",
        "NOTIFY",
        "KAFKA",
        "SHUTDOWN",
        "DRY",
        "WORKER",
        "APPROVAL",
        "WEBHOOK",
    ] {
        assert!(
            firsts.iter().any(|f| f == must) || must == "APPROVAL" || must == "WEBHOOK",
            "{must} claimed"
        );
    }
    let mut typos: Vec<String> = firsts.iter().map(|f| format!("REMEDIATOR_{f}_TYPO")).collect();
    typos.extend(
        [
            "REMEDIATOR_APPROVALS_TTLL",
            "REMEDIATOR_DRY_RUNN",
            "REMEDIATOR_APPROVAL_TOKNE",
        ]
        .map(String::from),
    );
    typos.push("REMEDIATOR_WEBHOOK_UR".into());
    for typo in &typos {
        let e = Config::load(None, &env(&[(typo, "1")]), &[])
            .map(|_| ())
            .expect_err(typo)
            .to_string();
        assert_eq!(e, format!("{typo}: unknown configuration key"));
    }
    // Secrets and the scripts' own variables are not configuration keys, and not typos.
    for fine in secrets::ALL
        .iter()
        .copied()
        .chain(["REMEDIATOR_CACHE", "REMEDIATOR_TEST_X", "REMEDIATOR_RUN"])
    {
        assert!(Config::load(None, &env(&[(fine, "x")]), &[]).is_ok(), "{fine}");
    }
}

/// Durations are typed at load: written back in the largest exact unit, read back the same.
#[test]
fn durations_round_trip_through_their_text() {
    for (d, text) in [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(90), "90s"),
        (Duration::from_secs(900), "15m"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_secs(7 * 86400), "7d"),
    ] {
        assert_eq!(format_duration(d), text);
        assert_eq!(parse_duration(text), Ok(d));
    }
    assert!(parse_duration("213503982334602d").unwrap_err().contains("too long"));
    assert_eq!(parse_duration("3650d"), Ok(Duration::from_secs(MAX_DURATION_SECS)));
    assert!(parse_duration("3651d").unwrap_err().contains("at most 3650d"));
    let c = Config::load(None, &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "90")]), &[]).unwrap();
    assert_eq!(c.guardrails.lease, Duration::from_secs(90), "plain seconds");
    let e = Config::load(None, &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "soon")]), &[]).unwrap_err();
    assert!(
        e.to_string().contains("guardrails.lease: invalid duration \"soon\""),
        "{e}"
    );
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert!(parse_duration("1y").is_err());
    assert!(parse_duration("-1s").is_err());
}

/// The console's keys: its defaults, and addresses a notification link can be built on.
#[test]
fn console_keys_have_defaults_and_a_checked_address() {
    let c = Config::load(None, &env(&[]), &[]).unwrap();
    assert!(c.console.enabled);
    assert_eq!(c.console.recent_outcomes, 200);
    assert_eq!(c.console.public_url, "");
    let load = |k: &str, v: &str| Config::load(None, &env(&[(k, v)]), &[]);
    for good in [
        "https://remediator.example.com/console",
        "http://127.0.0.1:8080/console",
    ] {
        let c = load("REMEDIATOR_CONSOLE_PUBLIC_URL", good).expect(good);
        assert_eq!(c.console.public_url, good);
    }
    for bad in [
        "remediator.example.com/console",
        "javascript:alert(1)",
        "https://example.com/console#x",
        "https://example.com/con sole",
        "https://example.com/\nconsole",
    ] {
        let e = load("REMEDIATOR_CONSOLE_PUBLIC_URL", bad).unwrap_err().to_string();
        assert!(e.starts_with("console.public_url: must"), "{bad:?}: {e}");
    }
    assert_eq!(
        load("REMEDIATOR_CONSOLE_RECENT_OUTCOMES", "10000")
            .unwrap()
            .console
            .recent_outcomes,
        10_000
    );
    assert_eq!(
        load("REMEDIATOR_CONSOLE_RECENT_OUTCOMES", "0")
            .unwrap()
            .console
            .recent_outcomes,
        0
    );
    let e = load("REMEDIATOR_CONSOLE_RECENT_OUTCOMES", "10001")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "console.recent_outcomes: must be at most 10000");
    assert!(!load("REMEDIATOR_CONSOLE_ENABLED", "false").unwrap().console.enabled);
}

mod docs {
    use super::*;

    /// The shipped example and the configuration reference (docs/configuration.md) name every
    /// key, so neither drifts from the code.
    #[test]
    fn example_config_and_readme_document_every_key() {
        let example = include_str!("../../config/remediator.yaml");
        let readme = include_str!("../../docs/configuration.md");
        let parsed = Config::load(
            Some(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/remediator.yaml"
            ))),
            &BTreeMap::new(),
            &[],
        );
        assert!(parsed.is_ok(), "config/remediator.yaml loads: {parsed:?}");
        for (key, var) in Config::keys() {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            if !key.starts_with("alertmanager.label_mapping.") && key != "worker_id" {
                assert!(
                    example.contains(&format!("{leaf}:")),
                    "config/remediator.yaml lacks {key}"
                );
            }
            assert!(
                readme.contains(&format!("`{key}`")) || readme.contains(&var),
                "docs/configuration.md lacks {key} / {var}"
            );
        }
    }
}
