//! Unit tests of the loader: the seed file, every problem located, both forms, the scaling and
//! rollback rules, and garbage that must be an error rather than a panic.

use super::super::Catalogue;

const SEED: &str = include_str!("../../../tests/data/seed-runbooks.yaml");

#[test]
fn seed_file_loads_unchanged() {
    let c = Catalogue::from_yaml(SEED, "seed").unwrap();
    assert_eq!(c.len(), 3);
    let rp = c.get("restart-pod").unwrap();
    assert_eq!(rp.max_per_hour, 5);
    assert_eq!(rp.cooldown.as_secs(), 300);
    assert!(rp.rollback.is_none());
    assert_eq!(
        c.get("rollback-deployment").unwrap().mode,
        crate::outcome::Mode::Approval
    );
    assert_eq!(c.get("scale-up").unwrap().mode, crate::outcome::Mode::Auto);
}

fn errors(yaml: &str) -> Vec<String> {
    Catalogue::from_yaml(yaml, "f.yaml")
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn every_problem_is_reported_with_file_runbook_and_key() {
    let errs = errors(
        r#"
runbooks:
  a:
    risk: LOW
    triggers: [x]
    min_confidence: 1.5
    max_per_hour: 0
    colldown_minutes: 5
    pre_checks: [replicas_greater_than_two]
    action: kubectl delete pod {podname} -n {namespace}
  b:
    risk: EXTREME
    triggers: [x]
    min_confidence: 0.5
    action: {kind: reboot}
"#,
    );
    let want = [
        r#"f.yaml:8:5: runbook "a": colldown_minutes: unknown key"#,
        r#"f.yaml:6:21: runbook "a": min_confidence: must be between 0 and 1, got 1.5"#,
        r#"f.yaml:7:19: runbook "a": max_per_hour: must be between 1 and 10000, got 0"#,
        r#"f.yaml:9:18: runbook "a": pre_checks[0]: unknown check "replicas_greater_than_two""#,
        r#"f.yaml:10:13: runbook "a": action: unknown template variable {podname}"#,
        r#"f.yaml:12:11: runbook "b": risk: must be LOW, MEDIUM or HIGH, got "EXTREME""#,
        r#"f.yaml:15:20: runbook "b": action.kind: unknown action kind "reboot""#,
    ];
    for w in want {
        assert!(errs.iter().any(|e| e.starts_with(w)), "missing {w:?} in {errs:#?}");
    }
}

#[test]
fn duplicate_triggers_across_runbooks_are_errors() {
    let errs = errors(
        r#"
runbooks:
  a: {risk: LOW, triggers: [OOMKilled], min_confidence: 0.5, action: "kubectl delete pod {pod_name}"}
  b: {risk: LOW, triggers: [oomkilled], min_confidence: 0.5, action: "kubectl delete pod {pod_name}"}
"#,
    );
    assert!(
        errs[0].contains(r#"runbook "b": triggers: trigger "oomkilled" is already claimed by runbook "a""#),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 1, "reported once, under `triggers`: {errs:?}");
    let errs = errors(
        r#"
runbooks:
  a: {risk: LOW, triggers: [OOMKilled], symptoms: [pod_restarts], min_confidence: 0.5, action: "kubectl delete pod {pod_name}"}
  b: {risk: LOW, triggers: [pod_restarts], min_confidence: 0.5, action: "kubectl delete pod {pod_name}"}
"#,
    );
    assert_eq!(
        errs,
        vec![r#"f.yaml:4:28: runbook "b": triggers: trigger "pod_restarts" is also a symptom of runbook "a""#],
        "a trigger that is another runbook's symptom is a `triggers` problem"
    );

    // The same string as a runbook's own trigger and symptom selects that runbook either way: no
    // conflict.
    let own = Catalogue::from_yaml(
        r#"
runbooks:
  a: {risk: LOW, triggers: [pod_restarts], symptoms: [pod_restarts], min_confidence: 0.5, action: "kubectl delete pod {pod_name}"}
"#,
        "f.yaml",
    );
    assert!(
        own.is_ok(),
        "a runbook's own trigger may also be its symptom: {:?}",
        own.err()
    );
}

#[test]
fn native_forms_parse() {
    let c = Catalogue::from_yaml(
        r#"
runbooks:
  web:
    risk: MEDIUM
    mode: suggest
    triggers: [disk_full]
    symptoms: [disk_usage_high]
    min_confidence: 0.6
    scope: {namespaces: [prod]}
    pre_checks: [{name: off_peak_hours, start_hour: 1, end_hour: 5}]
    action: {kind: webhook, url: "http://cleaner.ops:8080/clear/{service}", body: {pod: "{pod_name}"}}
    post_checks: [{name: prometheus_query, query: 'disk{service="{service}"}', below: 70, timeout_seconds: 30}]
  sc:
    risk: LOW
    triggers: [load]
    min_confidence: 0.6
    action: {kind: scale_deployment, predictive: {max_replicas: 8}}
"#,
        "f",
    )
    .unwrap();
    assert_eq!(c.get("web").unwrap().mode, crate::outcome::Mode::Suggest);
    assert_eq!(c.get("web").unwrap().post_checks[0].timeout.unwrap().as_secs(), 30);
}

const SCALE: &str = r#"
runbooks:
  up:
    risk: LOW
    triggers: [high_cpu]
    min_confidence: 0.7
    pre_checks: [{name: current_replicas_below_max, max_replicas: 6}]
    action: kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}
    rollback: kubectl scale deployment {deployment} --replicas={old_replicas} -n {namespace}
  native:
    risk: LOW
    triggers: [queue_backlog]
    min_confidence: 0.7
    action: {kind: scale_deployment, replicas: "{new_replicas}", max_replicas: 20, min_replicas: 2}
    rollback: {kind: scale_deployment, replicas: "{old_replicas}"}
  down:
    risk: MEDIUM
    triggers: [idle]
    min_confidence: 0.7
    action: {kind: scale_deployment, by: -1, min_replicas: 2}
"#;

#[test]
fn scales_get_a_direction_and_the_runbooks_cap() {
    use crate::runbook::{Bounds, Direction, ReplicaSpec};
    let c = Catalogue::from_yaml(SCALE, "f").unwrap();
    let replicas = |id: &str, rollback: bool| {
        let rb = c.get(id).unwrap();
        match if rollback {
            rb.rollback.clone().unwrap()
        } else {
            rb.action.clone()
        } {
            crate::runbook::ActionSpec::ScaleDeployment { replicas, .. } => replicas,
            other => panic!("{other:?}"),
        }
    };
    // The kubectl form: up, capped by its current_replicas_below_max pre-check.
    assert!(matches!(
        replicas("up", false),
        ReplicaSpec::To {
            direction: Direction::Up,
            bounds: Bounds { min: 1, max: 6 },
            ..
        }
    ));
    assert_eq!(replicas("up", true), ReplicaSpec::Restore);
    assert!(matches!(
        replicas("native", false),
        ReplicaSpec::To {
            direction: Direction::Up,
            bounds: Bounds { min: 2, max: 20 },
            ..
        }
    ));
    assert_eq!(replicas("native", true), ReplicaSpec::Restore);
    assert_eq!(replicas("down", false), ReplicaSpec::By(-1, Bounds { min: 2, max: 10 }));
    // The reference catalogue (tests/data/seed-runbooks.yaml): scale-up is capped at 10 (its
    // bare pre-check's default).
    let seed = Catalogue::from_yaml(SEED, "seed").unwrap();
    assert!(matches!(
        &seed.get("scale-up").unwrap().action,
        crate::runbook::ActionSpec::ScaleDeployment {
            replicas: ReplicaSpec::To {
                direction: Direction::Up,
                bounds: Bounds { min: 1, max: 10 },
                ..
            },
            ..
        }
    ));
}

#[test]
fn zero_restore_outside_a_rollback_and_contradictions_are_load_errors() {
    let rb = |risk: &str, action: &str, rollback: &str| {
        format!(
                "runbooks:\n  s:\n    risk: {risk}\n    triggers: [x]\n    min_confidence: 0.5\n    action: {action}\n    rollback: {rollback}\n"
            )
    };
    for (yaml, want) in [
        (
            rb("LOW", "{kind: scale_to_zero}", "null"),
            r#"f.yaml:6:20: runbook "s": action.kind: scale_to_zero stops every pod: only a runbook with `risk: HIGH`"#,
        ),
        (
            rb("MEDIUM", "{kind: scale_deployment, replicas: 0}", "null"),
            r#"f.yaml:6:48: runbook "s": action.replicas: 0 replicas is refused: use `kind: scale_to_zero`"#,
        ),
        (
            rb("LOW", "kubectl scale deployment d --replicas=0", "null"),
            r#"f.yaml:6:13: runbook "s": action: --replicas=0: 0 replicas is refused"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, replicas: 11}", "null"),
            r#"f.yaml:6:48: runbook "s": action.replicas: must lie within min_replicas..max_replicas (1..10), got 11"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, replicas: \"{old_replicas}\"}", "null"),
            r#"f.yaml:6:13: runbook "s": action: a restore (`{old_replicas}`) is only possible in a rollback"#,
        ),
        (
            rb(
                "LOW",
                "{kind: rollout_restart}",
                "{kind: scale_deployment, replicas: \"{old_replicas}\"}",
            ),
            r#"f.yaml:7:15: runbook "s": rollback: a restore (`{old_replicas}`) needs an action that captures the count"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, replicas: 1, min_replicas: 2}", "null"),
            r#"f.yaml:6:48: runbook "s": action.replicas: must lie within min_replicas..max_replicas (2..10), got 1"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, by: 0}", "null"),
            r#"f.yaml:6:42: runbook "s": action.by: must be a non-zero integer step, got 0"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, by: 2, direction: down}", "null"),
            r#"f.yaml:6:56: runbook "s": action.direction: a step of +2 goes up, not down"#,
        ),
        (
            rb(
                "LOW",
                "{kind: scale_deployment, replicas: \"{new_replicas}\", direction: restore}",
                "null",
            ),
            r#"f.yaml:6:77: runbook "s": action.direction: restore takes the count the action captured"#,
        ),
        (
            rb(
                "LOW",
                "{kind: scale_deployment, replicas: \"{new_replicas}\", min_replicas: 5, max_replicas: 4}",
                "null",
            ),
            r#"f.yaml:6:80: runbook "s": action.min_replicas: must not exceed max_replicas (4), got 5"#,
        ),
        (
            rb("LOW", "{kind: scale_deployment, replicas: \"{max_replicas}\"}", "null"),
            r#"f.yaml:6:48: runbook "s": action.replicas: unknown template variable {max_replicas}"#,
        ),
    ] {
        let errs = errors(&yaml);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    // `{old_replicas}` is the captured count: put back as it was, never a direction of its own.
    for direction in ["up", "down"] {
        let yaml = rb(
            "LOW",
            "{kind: scale_deployment, replicas: \"{new_replicas}\"}",
            &format!("{{kind: scale_deployment, replicas: \"{{old_replicas}}\", direction: {direction}}}"),
        );
        let errs = errors(&yaml);
        assert!(
            errs.iter().any(|e| e.contains(
                "rollback.replicas: {old_replicas} is the count captured before the action: use it with `direction: restore`"
            )),
            "{direction}: {errs:#?}"
        );
    }
    // A count at either bound, and bounds that meet, are within them.
    for action in [
        "{kind: scale_deployment, replicas: 2, min_replicas: 2, max_replicas: 4}",
        "{kind: scale_deployment, replicas: 4, min_replicas: 2, max_replicas: 4}",
        "{kind: scale_deployment, replicas: 3, min_replicas: 3, max_replicas: 3}",
    ] {
        Catalogue::from_yaml(&rb("LOW", action, "null"), "f").unwrap_or_else(|e| panic!("{action}: {e}"));
    }
    // HIGH risk may stop every pod (approval by default), and restore the count it captured.
    Catalogue::from_yaml(
        &rb(
            "HIGH",
            "{kind: scale_to_zero}",
            "{kind: scale_deployment, replicas: \"{old_replicas}\"}",
        ),
        "f",
    )
    .unwrap();
}

/// A merge patch names a resource it may patch and a mapping; anything else is refused, naming
/// the key.
#[test]
fn a_patch_needs_a_patchable_resource_and_a_mapping() {
    let rb = |action: &str| {
        format!(
            "runbooks:\n  p:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 0.5\n    action: {action}\n    rollback: null\n"
        )
    };
    let c = Catalogue::from_yaml(
        &rb("{kind: patch, resource: configmaps, name: \"{service}-cfg\", patch: {data: {mode: \"{service}\"}}}"),
        "f",
    )
    .unwrap();
    let crate::runbook::ActionSpec::Patch { resource, patch, .. } = &c.get("p").unwrap().action else {
        panic!("not a patch")
    };
    assert_eq!(resource, "configmaps");
    assert_eq!(patch, &serde_json::json!({"data": {"mode": "{service}"}}));
    for (action, want) in [
        (
            "{kind: patch, resource: secrets, name: x, patch: {a: 1}}",
            "action.resource: must be one of deployments, statefulsets",
        ),
        (
            "{kind: patch, name: x, patch: {a: 1}}",
            "action.resource: must be one of",
        ),
        (
            "{kind: patch, resource: configmaps, name: x, patch: \"{a: 1}\"}",
            "action.patch: is required: a mapping (JSON merge patch)",
        ),
        (
            "{kind: patch, resource: configmaps, name: x, patch: [1]}",
            "action.patch: is required: a mapping (JSON merge patch)",
        ),
        (
            "{kind: patch, resource: configmaps, name: x}",
            "action.patch: is required",
        ),
        // Every string leaf is a template checked at load, at any depth.
        (
            "{kind: patch, resource: configmaps, name: x, patch: {a: \"{nope}\"}}",
            "action.patch: unknown template variable {nope}",
        ),
        (
            "{kind: patch, resource: configmaps, name: x, patch: {a: [1, \"{nope}\"]}}",
            "action.patch: unknown template variable {nope}",
        ),
        (
            "{kind: patch, resource: configmaps, name: x, patch: {a: {b: \"{nope}\"}}}",
            "action.patch: unknown template variable {nope}",
        ),
    ] {
        let errs = errors(&rb(action));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{action}: missing {want:?} in {errs:#?}"
        );
    }
}

/// A webhook takes an http(s) URL, POST (the default) or PUT in any case, and a bounded timeout.
#[test]
fn a_webhook_takes_only_http_post_or_put_and_a_bounded_timeout() {
    let rb = |action: &str| {
        format!(
            "runbooks:\n  w:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 0.5\n    action: {action}\n    rollback: null\n"
        )
    };
    for (method, want) in [("", "POST"), ("method: put, ", "PUT"), ("method: Post, ", "POST")] {
        let yaml = rb(&format!(
            "{{kind: webhook, {method}url: \"https://hooks.example.com/{{service}}\", body: {{s: \"{{service}}\"}}}}"
        ));
        let c = Catalogue::from_yaml(&yaml, "f").unwrap();
        let crate::runbook::ActionSpec::Webhook {
            method,
            timeout_seconds,
            ..
        } = &c.get("w").unwrap().action
        else {
            panic!("not a webhook")
        };
        assert_eq!(method, want);
        assert_eq!(*timeout_seconds, 10);
    }
    for (action, want) in [
        (
            "{kind: webhook, method: DELETE, url: \"https://h.example.com/x\"}",
            "action.method: must be POST or PUT, got \"DELETE\"",
        ),
        (
            "{kind: webhook, method: GET, url: \"https://h.example.com/x\"}",
            "action.method: must be POST or PUT, got \"GET\"",
        ),
        (
            "{kind: webhook, url: \"ftp://h.example.com/x\"}",
            "action.url: must start with http:// or https://",
        ),
        (
            "{kind: webhook, url: \"https://h.example.com/x\", timeout_seconds: 301}",
            "action.timeout_seconds",
        ),
    ] {
        let errs = errors(&rb(action));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{action}: missing {want:?} in {errs:#?}"
        );
    }
}

#[test]
fn high_risk_auto_without_rollback_needs_a_stated_override() {
    let rb = |extra: &str| {
        format!(
                "runbooks:\n  h:\n    risk: HIGH\n    triggers: [x]\n    min_confidence: 0.5\n    action: {{kind: rollout_undo}}\n{extra}"
            )
    };
    let errs = errors(&rb("    mode: auto\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(r#"f.yaml:2:3: runbook "h": rollback: a HIGH-risk runbook in mode auto needs a rollback"#),
        "{errs:?}"
    );
    let errs = errors(&rb(
        "    mode: auto\n    rollback: null\n    allow_irreversible_auto: \"\"\n",
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with(r#"f.yaml:9:30: runbook "h": allow_irreversible_auto: must not be empty"#)),
        "{errs:?}"
    );
    let c = Catalogue::from_yaml(
        &rb("    mode: auto\n    allow_irreversible_auto: the deploy pipeline re-deploys on failure\n"),
        "f",
    )
    .unwrap();
    let h = c.get("h").unwrap();
    assert_eq!(
        h.irreversible_override.as_deref(),
        Some("the deploy pipeline re-deploys on failure")
    );
    assert_eq!(h.warnings().len(), 1, "still warned about");
    // Not needed (approval by default, or a rollback): an override there is an error.
    let errs = errors(&rb("    allow_irreversible_auto: why\n"));
    assert!(
        errs[0].starts_with(r#"f.yaml:7:30: runbook "h": allow_irreversible_auto: only for a runbook with risk HIGH"#),
        "{errs:?}"
    );
    Catalogue::from_yaml(&rb("    mode: auto\n    rollback: {kind: rollout_undo}\n"), "f").unwrap();
    Catalogue::from_yaml(&rb(""), "f").unwrap();
}

#[test]
fn automatic_actions_neither_reversible_nor_self_healing_are_warned_about() {
    let c = Catalogue::from_yaml(include_str!("../../../config/runbooks.yaml"), "c").unwrap();
    let warned: Vec<&str> = c
        .runbooks()
        .iter()
        .filter(|rb| !rb.warnings().is_empty())
        .map(|rb| rb.id.as_str())
        .collect();
    // restart-pod and restart-service are self-healing, scale-up has a rollback, the
    // others wait for a human.
    assert_eq!(warned, ["clear-disk-cache"]);
    assert!(Catalogue::from_yaml(SEED, "seed")
        .unwrap()
        .runbooks()
        .iter()
        .all(|rb| rb.warnings().is_empty()));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for text in [
        "",
        "[]",
        "runbooks: 3",
        "runbooks: {a: 3}",
        ":\n- ]",
        "runbooks: {}",
        "other: 1\nrunbooks: {}",
    ] {
        assert!(Catalogue::from_yaml(text, "f").is_err(), "{text:?}");
    }
}

/// A runbook id is 1 to 63 characters of `[a-z0-9-_]`: it names keys in the store and metric
/// labels.
#[test]
fn runbook_ids_are_short_lower_case_words() {
    let rb = |id: &str| {
        format!("runbooks:\n  \"{id}\":\n    risk: LOW\n    triggers: [x]\n    min_confidence: 0.5\n    action: kubectl delete pod {{pod_name}}\n    rollback: null\n")
    };
    let longest = "a".repeat(63);
    for good in ["a", "restart-pod_2", longest.as_str()] {
        Catalogue::from_yaml(&rb(good), "f").unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let too_long = "a".repeat(64);
    for bad in ["", too_long.as_str(), "Restart", "restart pod", "a/b", "a.b", "é"] {
        let errs = errors(&rb(bad));
        assert!(
            errs.iter()
                .any(|e| e.contains(": id: runbook ids must be 1..63 characters of [a-z0-9-_]")),
            "{bad:?}: {errs:#?}"
        );
    }
}

/// Every problem is one line, in the order found, none dropped and no blank line.
#[test]
fn every_problem_is_one_line_of_the_error() {
    let yaml = "runbooks:\n  a:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 1.5\n    colour: red\n    action: kubectl delete pod {pod_name}\n    rollback: null\n";
    let e = Catalogue::from_yaml(yaml, "f.yaml").unwrap_err();
    assert!(e.0.len() >= 2, "{e:?}");
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(e.to_string(), lines.join("\n"));
    assert!(!e.to_string().starts_with('\n') && !e.to_string().ends_with('\n'));
}

/// The runbook keys' own rules, each refused with its key named: a mode that is a flag, a trigger
/// list that is empty, checks of a rollback that does not exist, a trust window shorter than the
/// runs it needs.
#[test]
fn runbook_keys_refuse_what_cannot_work() {
    let rb = |extra: &str| {
        format!("runbooks:\n  r:\n    risk: LOW\n    min_confidence: 0.5\n    action: kubectl delete pod {{pod_name}}\n{extra}")
    };
    let triggers = "    triggers: [x]\n";
    for (extra, want) in [
        (
            format!("{triggers}    mode: dry_run\n"),
            "mode: use `dry_run: true` for shadow mode; mode is auto, approval or suggest",
        ),
        (
            "    triggers: []\n".to_string(),
            "triggers: must list at least one root cause",
        ),
        (
            String::new(),
            "triggers: is required: the root causes this runbook fixes",
        ),
        (
            format!("{triggers}    rollback: null\n    rollback_checks: [pod_becomes_ready]\n"),
            "rollback_checks: given without a rollback action",
        ),
        (
            format!("{triggers}    trust: {{floor: 0.8, min_runs: 10, window: 5}}\n"),
            "trust.window: must be at least min_runs (10), got 5",
        ),
    ] {
        let errs = errors(&rb(&extra));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{extra}: missing {want:?} in {errs:#?}"
        );
        assert_eq!(
            errs.iter().filter(|e| e.contains("triggers")).count(),
            usize::from(want.starts_with("triggers")),
            "{extra}: {errs:#?}"
        );
    }
    // An empty list of rollback checks without a rollback says nothing; a window as long as
    // the runs it needs is enough.
    for extra in [
        format!("{triggers}    rollback: null\n    rollback_checks: []\n"),
        format!("{triggers}    rollback: null\n    trust: {{floor: 0.8, min_runs: 10, window: 10}}\n"),
    ] {
        Catalogue::from_yaml(&rb(&extra), "f").unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

/// A rollout policy: its defaults, each key's range, and what it cannot be combined with, each
/// refused with its key named.
#[test]
fn a_rollout_policy_loads_with_defaults_and_refuses_what_cannot_work() {
    use crate::rollout::{RolloutPolicy, Stage};
    use std::time::Duration;
    let rb = |extra: &str| {
        format!(
            "runbooks:\n  r:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 0.5\n    \
             action: kubectl delete pod {{pod_name}}\n{extra}"
        )
    };
    let load = |extra: &str| {
        Catalogue::from_yaml(&rb(extra), "f")
            .unwrap_or_else(|e| panic!("{extra}: {e}"))
            .get("r")
            .unwrap()
            .rollout
            .clone()
    };
    assert_eq!(load(""), None);
    assert_eq!(
        load("    rollout: {}\n"),
        Some(RolloutPolicy {
            start: Stage::Shadow,
            promote_after: 5,
            window: Duration::from_secs(24 * 3600),
            canary_shares: vec![],
            automatic_until: Stage::Approval,
        })
    );
    assert_eq!(
        load("    rollout: {start: approval, promote_after: 1000, window_hours: 720, canary: {shares: [1, 99]}}\n"),
        Some(RolloutPolicy {
            start: Stage::Approval,
            promote_after: 1000,
            window: Duration::from_secs(720 * 3600),
            canary_shares: vec![1, 99],
            automatic_until: Stage::Canary,
        })
    );
    assert_eq!(
        load("    rollout: {canary: {shares: [10]}, automatic_until: canary}\n").map(|p| p.automatic_until),
        Some(Stage::Canary)
    );
    assert_eq!(
        load("    rollout: {promote_after: 1, window_hours: 1, automatic_until: auto}\n").map(|p| (
            p.promote_after,
            p.window,
            p.automatic_until
        )),
        Some((1, Duration::from_secs(3600), Stage::Auto))
    );
    for (extra, want) in [
        ("    rollout: yes\n", "rollout: must be a mapping"),
        (
            "    rollout: {start: canary}\n",
            "rollout.start: must be shadow or approval",
        ),
        (
            "    rollout: {start: auto}\n",
            "rollout.start: must be shadow or approval",
        ),
        (
            "    rollout: {promote_after: 0}\n",
            "rollout.promote_after: must be between 1 and 1000, got 0",
        ),
        (
            "    rollout: {promote_after: 1001}\n",
            "rollout.promote_after: must be between 1 and 1000",
        ),
        (
            "    rollout: {window_hours: 0}\n",
            "rollout.window_hours: must be between 1 and 720, got 0",
        ),
        (
            "    rollout: {window_hours: 721}\n",
            "rollout.window_hours: must be between 1 and 720",
        ),
        (
            "    rollout: {canary: {shares: []}}\n",
            "rollout.canary.shares: must list at least one share",
        ),
        (
            "    rollout: {canary: {}}\n",
            "rollout.canary.shares: must list at least one share",
        ),
        (
            "    rollout: {canary: 10}\n",
            "rollout.canary: must be a mapping with shares",
        ),
        (
            "    rollout: {canary: {shares: 10}}\n",
            "rollout.canary.shares: must be a list of percents",
        ),
        (
            "    rollout: {canary: {shares: [0]}}\n",
            "rollout.canary.shares[0]: must be between 1 and 99",
        ),
        (
            "    rollout: {canary: {shares: [100]}}\n",
            "rollout.canary.shares[0]: must be between 1 and 99",
        ),
        (
            "    rollout: {canary: {shares: [10, 10]}}\n",
            "rollout.canary.shares[1]: shares must increase strictly",
        ),
        (
            "    rollout: {canary: {shares: [50, 10]}}\n",
            "rollout.canary.shares[1]: shares must increase strictly",
        ),
        (
            "    rollout: {canary: {shares: [10], width: 2}}\n",
            "rollout.canary.width: unknown key",
        ),
        (
            "    rollout: {automatic_until: canary}\n",
            "rollout.automatic_until: is canary, but rollout.canary.shares names no share",
        ),
        (
            "    rollout: {automatic_until: shadow}\n",
            "rollout.automatic_until: must be approval, canary or auto",
        ),
        ("    rollout: {stages: 3}\n", "rollout.stages: unknown key"),
        (
            "    mode: approval\n    rollout: {}\n",
            "rollout: needs mode auto (the stage a rollout ends in), got mode approval",
        ),
        ("    mode: suggest\n    rollout: {}\n", "rollout: needs mode auto"),
        (
            "    trust: {floor: 0.8}\n    rollout: {}\n",
            "rollout: cannot be combined with trust",
        ),
        (
            "    dry_run: true\n    rollout: {}\n",
            "rollout: cannot be combined with dry_run: true",
        ),
    ] {
        let errs = errors(&rb(extra));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{extra}: missing {want:?} in {errs:#?}"
        );
    }
    // HIGH risk is approval by default: a rollout needs it to say auto (with a rollback).
    let high = "runbooks:\n  r:\n    risk: HIGH\n    triggers: [x]\n    action: kubectl delete pod {pod_name}\n    rollout: {}\n";
    assert!(errors(high).iter().any(|e| e.contains("needs mode auto")));
}
