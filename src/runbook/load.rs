//! Strict loading of `runbooks.yaml`, in the seed's form and the richer native form.
//!
//! Hand-written over `serde_yaml::Value` so that *every* problem in a file is reported at once,
//! each with the file, the runbook id and the key: unknown keys, unknown checks, unknown
//! template variables, unsupported actions, out-of-range numbers, duplicate triggers.

use super::action::{ActionSpec, ReplicaSpec, PATCHABLE};
use super::check::{CheckName, CheckSpec, CHECK_NAMES};
use super::template::Template;
use super::{Catalogue, Risk, Runbook, RunbookScope, TrustPolicy};
use crate::outcome::Mode;
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::time::Duration;

/// One problem in a runbook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// File it was found in.
    pub file: String,
    /// Runbook id, when the problem is inside one.
    pub runbook: Option<String>,
    /// Key path inside the runbook (`pre_checks[1].timeout_seconds`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    pub(super) fn at(file: &str, runbook: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            runbook: Some(runbook.into()),
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(r) = &self.runbook {
            write!(f, ": runbook {r:?}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

const RUNBOOK_KEYS: &[&str] = &[
    "risk",
    "mode",
    "description",
    "owner",
    "triggers",
    "symptoms",
    "min_confidence",
    "max_per_hour",
    "cooldown_minutes",
    "blast_radius_limit",
    "scope",
    "pre_checks",
    "action",
    "post_checks",
    "rollback",
    "rollback_checks",
    "dry_run",
    "trust",
];

pub(super) fn parse_catalogue(text: &str, file: &str) -> Result<Catalogue, LoadErrors> {
    let top_err = |message: String| {
        LoadErrors(vec![LoadError {
            file: file.into(),
            runbook: None,
            key: None,
            message,
        }])
    };
    let doc: Value = serde_yaml::from_str(text).map_err(|e| top_err(format!("invalid YAML: {e}")))?;
    let Value::Mapping(top) = doc else {
        return Err(top_err("the top level must be a mapping with a `runbooks` key".into()));
    };
    let mut errors = Vec::new();
    for k in top.keys() {
        if k.as_str() != Some("runbooks") {
            errors.push(LoadError {
                file: file.into(),
                runbook: None,
                key: Some(key_name(k)),
                message: "unknown top-level key (expected only `runbooks`)".into(),
            });
        }
    }
    let Some(Value::Mapping(books)) = top.get("runbooks") else {
        errors.push(LoadError {
            file: file.into(),
            runbook: None,
            key: Some("runbooks".into()),
            message: "must be a mapping of runbook id to runbook".into(),
        });
        return Err(LoadErrors(errors));
    };
    let mut runbooks = Vec::new();
    for (id, body) in books {
        let id_str = key_name(id);
        let mut p = Parser {
            file,
            runbook: &id_str,
            errors: &mut errors,
        };
        if let Some(rb) = p.runbook(&id_str, body) {
            runbooks.push(rb);
        }
    }
    if runbooks.is_empty() && errors.is_empty() {
        errors.push(LoadError {
            file: file.into(),
            runbook: None,
            key: Some("runbooks".into()),
            message: "defines no runbooks".into(),
        });
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Catalogue::build(runbooks, file)
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

struct Parser<'a> {
    file: &'a str,
    runbook: &'a str,
    errors: &'a mut Vec<LoadError>,
}

impl Parser<'_> {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(LoadError::at(self.file, self.runbook, key, message));
    }

    /// Report keys of `m` not in `allowed`.
    fn unknown_keys(&mut self, m: &Mapping, allowed: &[&str], path: &str) {
        for k in m.keys() {
            let name = key_name(k);
            if !allowed.contains(&name.as_str()) {
                let at = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                self.err(&at, format!("unknown key (allowed: {})", allowed.join(", ")));
            }
        }
    }

    fn string(&mut self, v: &Value, key: &str) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.err(key, "must not be empty");
                None
            }
            other => {
                self.err(key, format!("must be a string, got {}", type_name(other)));
                None
            }
        }
    }

    fn strings(&mut self, v: Option<&Value>, key: &str) -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, x)| self.string(x, &format!("{key}[{i}]")))
                .collect(),
            Some(other) => {
                self.err(key, format!("must be a list of strings, got {}", type_name(other)));
                Vec::new()
            }
        }
    }

    fn number(&mut self, v: &Value, key: &str, min: f64, max: f64) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Some(x),
            Some(x) => {
                self.err(key, format!("must be between {min} and {max}, got {x}"));
                None
            }
            None => {
                self.err(key, format!("must be a number, got {}", type_name(v)));
                None
            }
        }
    }

    fn integer(&mut self, v: &Value, key: &str, min: u64, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(x) if (min..=max).contains(&x) => Some(x),
            Some(x) => {
                self.err(key, format!("must be between {min} and {max}, got {x}"));
                None
            }
            None => {
                let shown = match v {
                    Value::Number(n) => format!("{n}"),
                    other => type_name(other).to_string(),
                };
                self.err(key, format!("must be an integer between {min} and {max}, got {shown}"));
                None
            }
        }
    }

    fn template(&mut self, s: &str, key: &str) -> Option<Template> {
        Template::parse(s).map_err(|e| self.err(key, e)).ok()
    }

    fn runbook(&mut self, id: &str, body: &Value) -> Option<Runbook> {
        let before = self.errors.len();
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            self.err("id", "runbook ids must be 1..63 characters of [a-z0-9-_]");
        }
        let Value::Mapping(m) = body else {
            self.err("runbook", format!("must be a mapping, got {}", type_name(body)));
            return None;
        };
        self.unknown_keys(m, RUNBOOK_KEYS, "");
        let get = |k: &str| m.get(k);

        let risk = match get("risk") {
            None => {
                self.err("risk", "is required (LOW, MEDIUM or HIGH)");
                None
            }
            Some(v) => match v.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("LOW") => Some(Risk::Low),
                Some("MEDIUM") => Some(Risk::Medium),
                Some("HIGH") => Some(Risk::High),
                _ => {
                    self.err("risk", format!("must be LOW, MEDIUM or HIGH, got {}", show(v)));
                    None
                }
            },
        };
        let mode = match get("mode") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str() {
                Some("auto") => Some(Mode::Auto),
                Some("approval") => Some(Mode::Approval),
                Some("suggest") => Some(Mode::Suggest),
                Some("dry_run") => {
                    self.err(
                        "mode",
                        "use `dry_run: true` for shadow mode; mode is auto, approval or suggest",
                    );
                    None
                }
                _ => {
                    self.err("mode", format!("must be auto, approval or suggest, got {}", show(v)));
                    None
                }
            },
        };
        let description = get("description").and_then(|v| self.string(v, "description"));
        let owner = get("owner").and_then(|v| self.string(v, "owner"));
        let triggers = self.strings(get("triggers"), "triggers");
        if triggers.is_empty() && get("triggers").is_none() {
            self.err("triggers", "is required: the root causes this runbook fixes");
        } else if triggers.is_empty() && self.errors.len() == before {
            self.err("triggers", "must list at least one root cause");
        }
        let symptoms = self.strings(get("symptoms"), "symptoms");
        let min_confidence = match get("min_confidence") {
            None => {
                self.err("min_confidence", "is required (0.0..1.0)");
                None
            }
            Some(v) => self.number(v, "min_confidence", 0.0, 1.0),
        };
        // Defaults as in the seed's engine: 3 per hour, 10 minutes cooldown.
        let max_per_hour = match get("max_per_hour") {
            None => Some(3),
            Some(v) => self.integer(v, "max_per_hour", 1, 10_000).map(|x| x as u32),
        };
        let cooldown_minutes = match get("cooldown_minutes") {
            None => Some(10),
            Some(v) => self.integer(v, "cooldown_minutes", 0, 7 * 24 * 60),
        };
        let blast_radius_limit = match get("blast_radius_limit") {
            None | Some(Value::Null) => None,
            Some(v) => self.integer(v, "blast_radius_limit", 1, 10_000).map(|x| x as u32),
        };
        let scope = match get("scope") {
            None | Some(Value::Null) => RunbookScope::default(),
            Some(Value::Mapping(s)) => {
                self.unknown_keys(s, &["namespaces", "services"], "scope");
                RunbookScope {
                    namespaces: self.strings(s.get("namespaces"), "scope.namespaces"),
                    services: self.strings(s.get("services"), "scope.services"),
                }
            }
            Some(other) => {
                self.err(
                    "scope",
                    format!("must be a mapping with namespaces/services, got {}", type_name(other)),
                );
                RunbookScope::default()
            }
        };
        let pre_checks = self.checks(get("pre_checks"), "pre_checks");
        let post_checks = self.checks(get("post_checks"), "post_checks");
        let action = match get("action") {
            None | Some(Value::Null) => {
                self.err("action", "is required");
                None
            }
            Some(v) => self.action(v, "action"),
        };
        let rollback = match get("rollback") {
            None | Some(Value::Null) => None,
            Some(v) => self.action(v, "rollback"),
        };
        let explicit_rollback_checks = get("rollback_checks").is_some();
        let mut rollback_checks = self.checks(get("rollback_checks"), "rollback_checks");
        if explicit_rollback_checks && rollback.is_none() && !rollback_checks.is_empty() {
            self.err("rollback_checks", "given without a rollback action");
        }
        // Never assume a rollback worked: a rollback that moves a deployment is verified by its
        // rollout unless the runbook says how to verify it.
        if !explicit_rollback_checks
            && rollback.as_ref().is_some_and(|r| {
                matches!(
                    r,
                    ActionSpec::ScaleDeployment { .. }
                        | ActionSpec::RolloutUndo { .. }
                        | ActionSpec::RolloutRestart { .. }
                        | ActionSpec::ScaleToZero { .. }
                )
            })
        {
            rollback_checks.push(CheckSpec::named(CheckName::DeploymentRolledOut));
        }
        let dry_run = match get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err("dry_run", format!("must be true or false, got {}", type_name(other)));
                false
            }
        };
        let trust = match get("trust") {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(t)) => {
                self.unknown_keys(t, &["floor", "min_runs", "window"], "trust");
                let floor = match t.get("floor") {
                    Some(v) => self.number(v, "trust.floor", 0.0, 1.0),
                    None => {
                        self.err(
                            "trust.floor",
                            "is required (lowest acceptable verified success rate, 0..1)",
                        );
                        None
                    }
                };
                let min_runs = match t.get("min_runs") {
                    Some(v) => self.integer(v, "trust.min_runs", 1, 1000).map(|x| x as u32),
                    None => Some(5),
                };
                let window = match t.get("window") {
                    Some(v) => self.integer(v, "trust.window", 1, 1000).map(|x| x as u32),
                    None => Some(20),
                };
                match (floor, min_runs, window) {
                    (Some(floor), Some(min_runs), Some(window)) if window >= min_runs => Some(TrustPolicy {
                        floor,
                        min_runs,
                        window,
                    }),
                    (Some(_), Some(min_runs), Some(window)) => {
                        self.err(
                            "trust.window",
                            format!("must be at least min_runs ({min_runs}), got {window}"),
                        );
                        None
                    }
                    _ => None,
                }
            }
            Some(other) => {
                self.err(
                    "trust",
                    format!("must be a mapping with floor/min_runs/window, got {}", type_name(other)),
                );
                None
            }
        };
        if self.errors.len() != before {
            return None;
        }
        let risk = risk?;
        Some(Runbook {
            id: id.to_string(),
            risk,
            mode: mode.unwrap_or(if risk == Risk::High { Mode::Approval } else { Mode::Auto }),
            description,
            owner,
            triggers,
            symptoms,
            min_confidence: min_confidence?,
            max_per_hour: max_per_hour?,
            cooldown: Duration::from_secs(cooldown_minutes? * 60),
            blast_radius_limit,
            scope,
            pre_checks,
            action: action?,
            post_checks,
            rollback,
            rollback_checks,
            dry_run,
            trust,
        })
    }

    fn checks(&mut self, v: Option<&Value>, key: &str) -> Vec<CheckSpec> {
        let items = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.err(key, format!("must be a list of checks, got {}", type_name(other)));
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.check(item, &format!("{key}[{i}]")))
            .collect()
    }

    fn check_name(&mut self, s: &str, key: &str) -> Option<CheckName> {
        let found = CheckName::parse(s);
        if found.is_none() {
            let names: Vec<&str> = CHECK_NAMES.iter().map(|(n, _)| *n).collect();
            self.err(key, format!("unknown check {s:?} (known: {})", names.join(", ")));
        }
        found
    }

    fn check(&mut self, item: &Value, key: &str) -> Option<CheckSpec> {
        match item {
            Value::String(s) => self.check_name(s, key).map(CheckSpec::named),
            Value::Mapping(m) => {
                let name_key = format!("{key}.name");
                let name = match m.get("name") {
                    Some(Value::String(s)) => self.check_name(s, &name_key)?,
                    _ => {
                        self.err(&name_key, "is required");
                        return None;
                    }
                };
                let mut allowed = vec!["name", "timeout_seconds"];
                allowed.extend_from_slice(name.params());
                let before = self.errors.len();
                self.unknown_keys(m, &allowed, key);
                let mut spec = CheckSpec::named(name);
                let int = |p: &mut Self, k: &str, min: u64, max: u64| {
                    m.get(k).and_then(|v| p.integer(v, &format!("{key}.{k}"), min, max))
                };
                spec.timeout = int(self, "timeout_seconds", 1, 3600).map(Duration::from_secs);
                spec.max_restarts = int(self, "max_restarts", 1, 1000).map(|x| x as u32);
                spec.max_replicas = int(self, "max_replicas", 1, 10_000).map(|x| x as u32);
                spec.start_hour = int(self, "start_hour", 0, 23).map(|x| x as u8);
                spec.end_hour = int(self, "end_hour", 0, 23).map(|x| x as u8);
                spec.below = m
                    .get("below")
                    .and_then(|v| self.number(v, &format!("{key}.below"), f64::MIN, f64::MAX));
                spec.above = m
                    .get("above")
                    .and_then(|v| self.number(v, &format!("{key}.above"), f64::MIN, f64::MAX));
                if let Some(q) = m.get("query") {
                    let qk = format!("{key}.query");
                    spec.query = self.string(q, &qk).and_then(|s| self.template(&s, &qk));
                }
                if name == CheckName::PrometheusQuery && spec.query.is_none() && m.get("query").is_none() {
                    self.err(&format!("{key}.query"), "is required for prometheus_query");
                }
                if spec.query.is_some() && spec.below.is_none() && spec.above.is_none() {
                    self.err(key, "a query check needs `below` or `above`");
                }
                (self.errors.len() == before).then_some(spec)
            }
            other => {
                self.err(
                    key,
                    format!(
                        "must be a check name or a mapping with `name`, got {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn action(&mut self, v: &Value, key: &str) -> Option<ActionSpec> {
        match v {
            Value::String(s) => ActionSpec::from_kubectl(s).map_err(|e| self.err(key, e)).ok(),
            Value::Mapping(m) => self.native_action(m, key),
            other => {
                self.err(
                    key,
                    format!(
                        "must be a kubectl-style string or a mapping with `kind`, got {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn native_action(&mut self, m: &Mapping, key: &str) -> Option<ActionSpec> {
        let kind = match m.get("kind").and_then(Value::as_str) {
            Some(k) => k.to_string(),
            None => {
                self.err(&format!("{key}.kind"), "is required");
                return None;
            }
        };
        let before = self.errors.len();
        let tmpl = |p: &mut Self, field: &str, default: Option<&str>| -> Option<Template> {
            let fk = format!("{key}.{field}");
            match (m.get(field), default) {
                (Some(v), _) => p.string(v, &fk).and_then(|s| p.template(&s, &fk)),
                (None, Some(d)) => p.template(d, &fk),
                (None, None) => {
                    p.err(&fk, "is required");
                    None
                }
            }
        };
        let deploy_keys = ["kind", "namespace", "deployment"];
        let spec = match kind.as_str() {
            "delete_pod" => {
                self.unknown_keys(m, &["kind", "namespace", "pod"], key);
                let namespace = tmpl(self, "namespace", Some("{namespace}"));
                let pod = tmpl(self, "pod", Some("{pod_name}"));
                ActionSpec::DeletePod {
                    namespace: namespace?,
                    pod: pod?,
                }
            }
            "rollout_restart" | "rollout_undo" | "scale_to_zero" => {
                self.unknown_keys(m, &deploy_keys, key);
                let namespace = tmpl(self, "namespace", Some("{namespace}"))?;
                let deployment = tmpl(self, "deployment", Some("{deployment}"))?;
                match kind.as_str() {
                    "rollout_restart" => ActionSpec::RolloutRestart { namespace, deployment },
                    "rollout_undo" => ActionSpec::RolloutUndo { namespace, deployment },
                    _ => ActionSpec::ScaleToZero { namespace, deployment },
                }
            }
            "scale_deployment" => {
                self.unknown_keys(
                    m,
                    &["kind", "namespace", "deployment", "replicas", "by", "predictive"],
                    key,
                );
                let namespace = tmpl(self, "namespace", Some("{namespace}"));
                let deployment = tmpl(self, "deployment", Some("{deployment}"));
                let given: Vec<&str> = ["replicas", "by", "predictive"]
                    .into_iter()
                    .filter(|k| m.contains_key(*k))
                    .collect();
                if given.len() != 1 {
                    self.err(
                        key,
                        "scale_deployment needs exactly one of `replicas`, `by` or `predictive`",
                    );
                    return None;
                }
                let replicas = match given[0] {
                    "replicas" => {
                        let rk = format!("{key}.replicas");
                        match m.get("replicas") {
                            Some(Value::Number(n)) => {
                                self.integer(&Value::Number(n.clone()), &rk, 0, 10_000)?;
                                ReplicaSpec::To(Template::parse(&n.to_string()).ok()?)
                            }
                            Some(v) => {
                                let t = self.string(v, &rk).and_then(|s| self.template(&s, &rk))?;
                                if t.single_var().is_none() {
                                    self.err(&rk, "must be a number or a single {variable}");
                                    return None;
                                }
                                ReplicaSpec::To(t)
                            }
                            None => return None,
                        }
                    }
                    "by" => {
                        let v = m.get("by")?;
                        match v.as_i64() {
                            Some(n) if n != 0 && n.abs() <= 1000 => ReplicaSpec::By(n as i32),
                            _ => {
                                self.err(
                                    &format!("{key}.by"),
                                    format!("must be a non-zero integer step, got {}", show(v)),
                                );
                                return None;
                            }
                        }
                    }
                    _ => {
                        let pk = format!("{key}.predictive");
                        let Some(Value::Mapping(p)) = m.get("predictive") else {
                            self.err(&pk, "must be a mapping with `max_replicas`");
                            return None;
                        };
                        self.unknown_keys(p, &["max_replicas"], &pk);
                        let max = match p.get("max_replicas") {
                            Some(v) => self.integer(v, &format!("{pk}.max_replicas"), 1, 10_000)?,
                            None => 10,
                        };
                        ReplicaSpec::Predictive {
                            max_replicas: max as u32,
                        }
                    }
                };
                ActionSpec::ScaleDeployment {
                    namespace: namespace?,
                    deployment: deployment?,
                    replicas,
                }
            }
            "patch" => {
                self.unknown_keys(m, &["kind", "resource", "namespace", "name", "patch"], key);
                let resource = match m.get("resource").and_then(Value::as_str) {
                    Some(r) if PATCHABLE.contains(&r) => Some(r.to_string()),
                    other => {
                        self.err(
                            &format!("{key}.resource"),
                            format!(
                                "must be one of {}, got {:?}",
                                PATCHABLE.join(", "),
                                other.unwrap_or("nothing")
                            ),
                        );
                        None
                    }
                };
                let namespace = tmpl(self, "namespace", Some("{namespace}"));
                let name = tmpl(self, "name", None);
                let patch = match m.get("patch") {
                    Some(p @ Value::Mapping(_)) => self.json(p, &format!("{key}.patch")),
                    _ => {
                        self.err(&format!("{key}.patch"), "is required: a mapping (JSON merge patch)");
                        None
                    }
                };
                ActionSpec::Patch {
                    resource: resource?,
                    namespace: namespace?,
                    name: name?,
                    patch: patch?,
                }
            }
            "webhook" => {
                self.unknown_keys(m, &["kind", "url", "method", "body", "timeout_seconds"], key);
                let url = tmpl(self, "url", None);
                if let Some(u) = &url {
                    if !(u.raw().starts_with("http://") || u.raw().starts_with("https://")) {
                        self.err(&format!("{key}.url"), "must start with http:// or https://");
                    }
                }
                let method = match m.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase) {
                    None => Some("POST".to_string()),
                    Some(mth) if mth == "POST" || mth == "PUT" => Some(mth),
                    Some(mth) => {
                        self.err(&format!("{key}.method"), format!("must be POST or PUT, got {mth:?}"));
                        None
                    }
                };
                let body = match m.get("body") {
                    None | Some(Value::Null) => None,
                    Some(b) => Some(self.json(b, &format!("{key}.body"))?),
                };
                let timeout_seconds = match m.get("timeout_seconds") {
                    None => 10,
                    Some(v) => self.integer(v, &format!("{key}.timeout_seconds"), 1, 300)?,
                };
                ActionSpec::Webhook {
                    url: url?,
                    method: method?,
                    body,
                    timeout_seconds,
                }
            }
            other => {
                self.err(
                    &format!("{key}.kind"),
                    format!(
                        "unknown action kind {other:?} (known: delete_pod, scale_deployment, rollout_restart, \
                         rollout_undo, scale_to_zero, patch, webhook)"
                    ),
                );
                return None;
            }
        };
        (self.errors.len() == before).then_some(spec)
    }

    /// Convert YAML to JSON, checking that string leaves are valid templates.
    fn json(&mut self, v: &Value, key: &str) -> Option<serde_json::Value> {
        let json: serde_json::Value = match serde_json::to_value(v) {
            Ok(j) => j,
            Err(e) => {
                self.err(key, format!("is not representable as JSON: {e}"));
                return None;
            }
        };
        let mut ok = true;
        visit_strings(&json, &mut |s| {
            if let Err(e) = Template::parse(s) {
                ok = false;
                self.err(key, e);
            }
        });
        ok.then_some(json)
    }
}

fn visit_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        serde_json::Value::Object(o) => o.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Catalogue;

    const SEED: &str = include_str!("../../tests/data/seed-runbooks.yaml");

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
            r#"f.yaml: runbook "a": colldown_minutes: unknown key"#,
            r#"f.yaml: runbook "a": min_confidence: must be between 0 and 1, got 1.5"#,
            r#"f.yaml: runbook "a": max_per_hour: must be between 1 and 10000, got 0"#,
            r#"f.yaml: runbook "a": pre_checks[0]: unknown check "replicas_greater_than_two""#,
            r#"f.yaml: runbook "a": action: unknown template variable {podname}"#,
            r#"f.yaml: runbook "b": risk: must be LOW, MEDIUM or HIGH, got "EXTREME""#,
            r#"f.yaml: runbook "b": action.kind: unknown action kind "reboot""#,
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
            vec![r#"f.yaml: runbook "b": triggers: trigger "pod_restarts" is also a symptom of runbook "a""#],
            "a trigger that is another runbook's symptom is a `triggers` problem"
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
}
