//! The Grafana dashboard (`deploy/grafana/remediator.json`) and the Prometheus files
//! (`deploy/prometheus/`) against the metrics the worker really exports.
//!
//! * `promtool check rules`, `promtool test rules` (the unit tests in alerts_test.yml) and
//!   `promtool check config` pass (promtool from Debian's `prometheus` package; skipped when it
//!   is missing, a failure under `REMEDIATOR_TEST_REQUIRE_SERVICES`), and every alert has a test.
//! * Every metric an expression of the dashboard or the rules selects exists in
//!   `Metrics::new().render()` (after touching each labelled metric once), every label it
//!   matches on or groups by is one of that metric's labels (or a target label Prometheus adds).
//! * Every metric `src/metrics.rs` defines is exported, documented in the metrics table of
//!   docs/observability.md and shown on a dashboard panel; every alert rule is named there.
//! * The dashboard is well-formed: unique panel ids, a grid position each, every query on the
//!   datasource variable.

use remediator::metrics::Metrics;
use serde_json::Value as Json;
use serde_json::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Series Prometheus itself creates for every scrape target.
const SYNTHETIC_METRICS: &[&str] = &["up"];
/// Labels Prometheus attaches to every scraped series (job, instance).
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every metric with every label set once, so the exposition lists all series names and labels.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    m.incidents.with_label_values(&["executed"]).inc_by(0);
    m.actions.with_label_values(&["restart-pod", "success"]).inc_by(0);
    m.guardrail_blocks.with_label_values(&["cooldown"]).inc_by(0);
    m.decision_seconds.with_label_values(&[] as &[&str]).observe(0.0);
    m.action_seconds.with_label_values(&["restart-pod"]).observe(0.0);
    m.circuit_state.with_label_values(&["restart-pod"]).set(0);
    m.consumer_lag.with_label_values(&["0"]).set(0);
    m.alertmanager_alerts.with_label_values(&["firing"]).inc_by(0);
    m.trust_rate.with_label_values(&["restart-pod"]).set(1.0);
    m.trust_executions.with_label_values(&["restart-pod"]).set(0);
    m.trust_demoted.with_label_values(&["restart-pod"]).set(0);
    m.rollout_stage.with_label_values(&["restart-pod"]).set(2);
    m.rollout_share.with_label_values(&["restart-pod"]).set(50);
    m.rollout_changes
        .with_label_values(&["restart-pod", "approval", "canary"])
        .inc();
    m.approvals.with_label_values(&["approved"]).inc_by(0);
    m.notifications.with_label_values(&["sent"]).inc_by(0);
    m.lease_lapses.with_label_values(&["lost"]).inc_by(0);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in m.render().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let labels = out.entry(name.to_string()).or_default();
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(l, _)| l) {
            for pair in inner.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.to_string());
                }
            }
        }
    }
    out
}

/// What a PromQL expression refers to: metric names with the labels matched in their selectors,
/// and the labels of every `by (...)` / `without (...)` / `on (...)` / `ignoring (...)` list.
#[derive(Debug, Default)]
struct Refs {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// A small PromQL lexer: enough for the expressions of this repository's dashboard and rules.
fn refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut r = Refs::default();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let ident_at = |j: usize| {
        let mut k = j;
        while k < chars.len() && (chars[k].is_ascii_alphanumeric() || chars[k] == '_' || chars[k] == ':') {
            k += 1;
        }
        (chars[j..k].iter().collect::<String>(), k)
    };
    // Index just past the `close` matching the `open` at `j` (strings skipped).
    let skip_group = |j: usize, open: char, close: char| {
        let mut depth = 0;
        let mut k = j;
        while k < chars.len() {
            match chars[k] {
                '"' | '\'' | '`' => {
                    let q = chars[k];
                    k += 1;
                    while k < chars.len() && chars[k] != q {
                        k += if chars[k] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return k + 1;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        panic!("unbalanced {open}{close} in {expr}");
    };
    let label_names = |from: usize, to: usize| -> Vec<String> {
        // Inside {...} or (...): identifiers that are not inside strings.
        let mut names = Vec::new();
        let mut k = from;
        while k < to {
            match chars[k] {
                '"' | '\'' | '`' => {
                    let q = chars[k];
                    k += 1;
                    while k < to && chars[k] != q {
                        k += if chars[k] == '\\' { 2 } else { 1 };
                    }
                    k += 1;
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let (id, end) = ident_at(k);
                    names.push(id);
                    k = end;
                }
                _ => k += 1,
            }
        }
        names
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string literal (e.g. label_replace's arguments): step past it.
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '{' {
            panic!("a selector without a metric name in {expr}");
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let (id, end) = ident_at(i);
            let after = next_non_space(end);
            let followed_by = chars.get(after).copied();
            if GROUPING.contains(&id.as_str()) {
                if followed_by == Some('(') {
                    let close = skip_group(after, '(', ')');
                    r.grouping.extend(label_names(after + 1, close - 1));
                    i = close;
                } else {
                    i = end;
                }
            } else if KEYWORDS.contains(&id.as_str()) || followed_by == Some('(') {
                i = end; // an operator, aggregation or function
            } else if followed_by == Some('{') {
                let close = skip_group(after, '{', '}');
                let names = label_names(after + 1, close - 1);
                // Matchers are `label op value`: every identifier outside the values is a label.
                r.selectors.push((id, names));
                i = close;
            } else {
                r.selectors.push((id, Vec::new()));
                i = end;
            }
        } else {
            i += 1;
        }
    }
    r
}

/// Every PromQL expression of the dashboard (panel targets and query variables), with a label.
fn dashboard_exprs(d: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            out.push((
                format!("panel {title:?}"),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            if let Some(inner) = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
                let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
                out.push((
                    format!("variable {}", v["name"]),
                    format!("sum by ({}) ({})", label.trim(), metric.trim()),
                ));
            }
        }
    }
    out
}

fn rule_exprs() -> Vec<(String, String)> {
    let rules: Yaml = serde_saphyr::from_str(&read("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).expect("alert name");
            (format!("rule {name}"), r["expr"].as_str().expect("expr").to_string())
        })
        .collect()
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/remediator.json")).expect("remediator.json is JSON")
}

#[test]
fn every_referenced_metric_and_label_exists() {
    let exported = exported();
    let mut exprs = dashboard_exprs(&dashboard());
    exprs.extend(rule_exprs());
    let mut used = BTreeSet::new();
    for (origin, expr) in &exprs {
        let r = refs(expr);
        assert!(!r.selectors.is_empty(), "{origin}: no metric found in {expr}");
        let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        for (metric, labels) in &r.selectors {
            if SYNTHETIC_METRICS.contains(&metric.as_str()) {
                available.insert("job".into());
                continue;
            }
            let known = exported.get(metric).unwrap_or_else(|| {
                panic!(
                    "{origin}: {metric} is not exported by remediator (metrics: {:?})",
                    exported.keys()
                )
            });
            for l in labels {
                assert!(
                    known.contains(l) || TARGET_LABELS.contains(&l.as_str()),
                    "{origin}: {metric} has no label {l} (it has {known:?})"
                );
            }
            available.extend(known.iter().cloned());
            used.insert(metric.clone());
        }
        for l in &r.grouping {
            assert!(
                available.contains(l),
                "{origin}: groups by {l}, which none of its metrics has ({available:?}) in {expr}"
            );
        }
    }
    // The dashboard shows every metric family touched in `exported()` (the ones listed there).
    let families: BTreeSet<String> = exported
        .keys()
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_string()
        })
        .collect();
    let shown: BTreeSet<String> = dashboard_exprs(&dashboard())
        .iter()
        .flat_map(|(_, e)| refs(e).selectors.into_iter().map(|(m, _)| m))
        .map(|m| m.trim_end_matches("_bucket").to_string())
        .collect();
    let missing: Vec<&String> = families.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "metrics without a panel in deploy/grafana/remediator.json: {missing:?} (add one; alert rules optional)"
    );
}

/// Every metric name `src/metrics.rs` defines (its `"remediator_..."` string literals).
fn defined_metrics() -> BTreeSet<String> {
    let src = read("src/metrics.rs");
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|lit| {
            lit.starts_with("remediator_")
                && lit
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_defined_metric_is_exported_documented_and_on_a_panel() {
    let defined = defined_metrics();
    assert!(
        defined.len() >= 20,
        "found only {defined:?} in src/metrics.rs: has the definition style changed?"
    );
    let exported = exported();
    let readme = read("docs/observability.md");
    let table: BTreeSet<&str> = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("docs/observability.md has a Metrics section")
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    let shown: BTreeSet<String> = dashboard_exprs(&dashboard())
        .iter()
        .flat_map(|(_, e)| refs(e).selectors.into_iter().map(|(m, _)| m))
        .map(|m| {
            m.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_string()
        })
        .collect();
    for name in &defined {
        let series = [name.clone(), format!("{name}_bucket")];
        assert!(
            series.iter().any(|s| exported.contains_key(s)),
            "{name} is defined but not in the exposition: touch it in exported() of this test"
        );
        assert!(
            table.contains(name.as_str()),
            "{name} is missing from the metrics table of docs/observability.md"
        );
        assert!(
            shown.contains(name),
            "{name} has no panel in deploy/grafana/remediator.json"
        );
    }
    for documented in &table {
        assert!(
            defined.contains(*documented),
            "docs/observability.md documents {documented}, which src/metrics.rs does not define"
        );
    }
    for (origin, _) in rule_exprs() {
        let alert = origin.trim_start_matches("rule ");
        assert!(
            readme.contains(&format!("`{alert}`")),
            "alert {alert} is not named in docs/observability.md (Dashboards and alerts)"
        );
    }
}

#[test]
fn the_lexer_finds_metrics_and_labels() {
    let r = refs(
        r#"histogram_quantile(0.95, sum by (le, runbook) (rate(a_bucket{instance=~"$instance", x="}"}[$__rate_interval]))) or vector(0) unless b offset 15m"#,
    );
    assert_eq!(
        r.selectors,
        vec![
            ("a_bucket".to_string(), vec!["instance".to_string(), "x".to_string()]),
            ("b".to_string(), vec![])
        ]
    );
    assert_eq!(r.grouping, vec!["le".to_string(), "runbook".to_string()]);
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "remediator");
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains("datasource"),
        "a datasource variable, so imports work anywhere"
    );
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{title}: duplicate id");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap_or(0) + p["gridPos"]["w"].as_u64().unwrap_or(0) <= 24);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: duplicate refId"
            );
        }
    }
}

/// `promtool` from PATH; `None` (with a note) when missing, unless services are required.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() {
            panic!("promtool not found but REMEDIATOR_TEST_REQUIRE_SERVICES is set: apt-get install prometheus");
        }
        eprintln!("skipping: promtool not found (Debian: apt-get install --no-install-recommends prometheus)");
    }
    found
}

fn promtool_ok(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_rules_config_and_unit_tests() {
    let Some(promtool) = promtool() else { return };
    promtool_ok(&promtool, &["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool_ok(&promtool, &["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool_ok(&promtool, &["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}

#[test]
fn every_alert_has_a_unit_test() {
    let tests: Yaml = serde_saphyr::from_str(&read("deploy/prometheus/alerts_test.yml")).expect("alerts_test.yml");
    let tested: BTreeSet<String> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().expect("alertname").to_string())
        .collect();
    for (origin, _) in rule_exprs() {
        let name = origin.trim_start_matches("rule ");
        assert!(
            tested.contains(name),
            "alert {name} has no firing case in alerts_test.yml"
        );
    }
}
