//! Strict loading of `runbooks.yaml`, in the kubectl-style form and the richer native form
//! (docs/design.md#runbooks).
//!
//! Hand-written over a positioned YAML tree ([`crate::yaml`]) so that *every* problem in a file is
//! reported at once, each with `file:line:column`, the runbook id and the key: unknown keys,
//! unknown checks, unknown template variables, unsupported actions, out-of-range numbers,
//! duplicate triggers.
//!
//! Why not serde's derive (with serde-saphyr's `Spanned` and a validation layer): a derived
//! `Deserialize` stops at the first type error of a file (`max_per_hour: lots` hides every later
//! problem), and cannot say what this loader says: a rule spanning keys (a restore only in a
//! rollback, `rollback_checks` without a rollback, a HIGH-risk auto runbook without one), the
//! seed's kubectl strings parsed into typed actions, defaults that depend on other keys (a scale's
//! cap from its pre-check), and one message per problem in the words a runbook author reads. The
//! walk stays; the library gives it the parse, the limits and the positions.

use super::action::{ActionSpec, Bounds, Direction, ReplicaSpec, DEFAULT_MAX_REPLICAS, PATCHABLE};
use super::check::{CheckName, CheckSpec, CHECK_NAMES};
use super::template::Template;
use super::{Catalogue, Risk, Runbook, RunbookScope, TrustPolicy};
use crate::outcome::Mode;
use crate::yaml::{Mapping, Pos, Value};
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
    /// Where in the file (the offending value, or the key for an unknown key; a missing key is
    /// placed at its runbook's id). `None` only when the problem has no place (an unreadable
    /// file, an empty document).
    pub at: Option<Pos>,
}

impl LoadError {
    /// A problem under `key` of `runbook`; its position is filled in once the whole file has been
    /// checked (`parse_catalogue`).
    pub(super) fn at(file: &str, runbook: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            runbook: Some(runbook.into()),
            key: Some(key.into()),
            message: message.into(),
            at: None,
        }
    }
}

impl fmt::Display for LoadError {
    /// `file:line:column: runbook "id": key: message`, like a compiler.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(at) = self.at {
            write!(f, ":{at}")?;
        }
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
    "allow_irreversible_auto",
];

pub(super) fn parse_catalogue(text: &str, file: &str) -> Result<Catalogue, LoadErrors> {
    let top_err = |message: String, at: Option<Pos>| {
        LoadErrors(vec![LoadError {
            file: file.into(),
            runbook: None,
            key: None,
            message,
            at,
        }])
    };
    let doc = crate::yaml::parse(text).map_err(|e| top_err(format!("invalid YAML: {e}"), e.pos))?;
    let Value::Mapping(top) = doc else {
        return Err(top_err(
            "the top level must be a mapping with a `runbooks` key".into(),
            None,
        ));
    };
    let mut errors = Vec::new();
    for e in top.entries() {
        if e.key.as_str() != Some("runbooks") {
            errors.push(LoadError {
                file: file.into(),
                runbook: None,
                key: Some(key_name(&e.key)),
                message: "unknown top-level key (expected only `runbooks`)".into(),
                at: e.key_at,
            });
        }
    }
    let Some(Value::Mapping(books)) = top.get("runbooks") else {
        errors.push(LoadError {
            file: file.into(),
            runbook: None,
            key: Some("runbooks".into()),
            message: "must be a mapping of runbook id to runbook".into(),
            at: top.entry("runbooks").and_then(|e| e.value_at),
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
            at: top.entry("runbooks").and_then(|e| e.key_at),
        });
    }
    let result = if errors.is_empty() {
        Catalogue::build(runbooks, file)
    } else {
        Err(LoadErrors(errors))
    };
    result.map_err(|LoadErrors(mut errors)| {
        for e in &mut errors {
            if let (None, Some(id), Some(key)) = (e.at, &e.runbook, &e.key) {
                e.at = books
                    .entries()
                    .iter()
                    .find(|b| key_name(&b.key) == *id)
                    .and_then(|b| locate(&b.value, b.key_at, key, false));
            }
        }
        LoadErrors(errors)
    })
}

/// Where the problem under `key` (`pre_checks[1].timeout_seconds`) of a runbook lies: the value
/// at that path (its key, with `want_key`), or the deepest part of the path the file has (so a
/// missing key points at the mapping that lacks it); `id_at` (the runbook's id) when none.
fn locate(body: &Value, id_at: Option<Pos>, key: &str, want_key: bool) -> Option<Pos> {
    let mut cur = body;
    let mut at = id_at;
    let parts: Vec<&str> = key.split('.').collect();
    for (n, part) in parts.iter().enumerate() {
        let mut pieces = part.split('[');
        let name = pieces.next().unwrap_or_default();
        let Value::Mapping(m) = cur else { return at };
        let Some(entry) = m.entry(name) else { return at };
        let last = n + 1 == parts.len() && !part.contains('[');
        at = if last && want_key { entry.key_at } else { entry.value_at }.or(at);
        cur = &entry.value;
        for index in pieces {
            let Some(i) = index.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) else {
                return at;
            };
            let Value::Sequence(items) = cur else { return at };
            let Some(item) = items.get(i) else { return at };
            at = items.pos(i).or(at);
            cur = item;
        }
    }
    at
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(_) | Value::Mapping(_) => "?".into(),
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

    /// Report keys of `m` not in `allowed`, each at the key itself.
    fn unknown_keys(&mut self, m: &Mapping, allowed: &[&str], path: &str) {
        for e in m.entries() {
            let name = key_name(&e.key);
            if !allowed.contains(&name.as_str()) {
                let at = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                self.err(&at, format!("unknown key (allowed: {})", allowed.join(", ")));
                if let Some(last) = self.errors.last_mut() {
                    last.at = e.key_at;
                }
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
        // Defaults when a runbook names none: 3 per hour, 10 minutes cooldown
        // (docs/design.md#runbooks).
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
        // A scale that names no cap gets the one its pre-check enforces, so a bare
        // `current_replicas_below_max` (10 by default) also bounds `--replicas={new_replicas}`.
        let default_max = pre_checks
            .iter()
            .find(|c| c.name == CheckName::CurrentReplicasBelowMax)
            .map_or(DEFAULT_MAX_REPLICAS, |c| c.max_replicas.unwrap_or(DEFAULT_MAX_REPLICAS));
        let action = match get("action") {
            None | Some(Value::Null) => {
                self.err("action", "is required");
                None
            }
            Some(v) => self.action(v, "action", default_max),
        };
        let rollback = match get("rollback") {
            None | Some(Value::Null) => None,
            Some(v) => self.action(v, "rollback", default_max),
        };
        self.scale_rules(risk, action.as_ref(), rollback.as_ref());
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
        let irreversible_override = match get("allow_irreversible_auto") {
            None | Some(Value::Null) => None,
            Some(v) => self.string(v, "allow_irreversible_auto"),
        };
        // "Keep approval gates for high-risk actions" and "don't automate irreversible actions":
        // a HIGH-risk runbook that acts on its own with nothing to undo it needs a stated reason.
        let no_rollback = matches!(get("rollback"), None | Some(Value::Null));
        if risk == Some(Risk::High) && mode == Some(Mode::Auto) && no_rollback {
            if get("allow_irreversible_auto").is_none() {
                self.err(
                    "rollback",
                    "a HIGH-risk runbook in mode auto needs a rollback; to run it automatically anyway, \
                     state why in `allow_irreversible_auto: <reason>` (or use mode approval)",
                );
            }
        } else if get("allow_irreversible_auto").is_some() {
            self.err(
                "allow_irreversible_auto",
                "only for a runbook with risk HIGH, mode auto and no rollback (nothing to override here)",
            );
        }
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
            irreversible_override,
        })
    }

    /// Where scaling may go: `scale_to_zero` only in a HIGH-risk runbook; a `restore` only in a
    /// rollback of a scale, the one action that captures the count to restore.
    fn scale_rules(&mut self, risk: Option<Risk>, action: Option<&ActionSpec>, rollback: Option<&ActionSpec>) {
        for (key, spec) in [("action", action), ("rollback", rollback)] {
            if matches!(spec, Some(ActionSpec::ScaleToZero { .. })) && risk.is_some_and(|r| r != Risk::High) {
                self.err(
                    &format!("{key}.kind"),
                    "scale_to_zero stops every pod: only a runbook with `risk: HIGH` may use it",
                );
            }
        }
        let restores = |s: Option<&ActionSpec>| {
            matches!(
                s,
                Some(ActionSpec::ScaleDeployment {
                    replicas: ReplicaSpec::Restore,
                    ..
                })
            )
        };
        if restores(action) {
            self.err(
                "action",
                "a restore (`{old_replicas}`) is only possible in a rollback: the count is captured by the action",
            );
        }
        let captures = matches!(
            action,
            Some(ActionSpec::ScaleDeployment { .. } | ActionSpec::ScaleToZero { .. })
        );
        if restores(rollback) && action.is_some() && !captures {
            self.err(
                "rollback",
                "a restore (`{old_replicas}`) needs an action that captures the count: scale_deployment or scale_to_zero",
            );
        }
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

    /// An action or rollback; `default_max` caps a scale that names no `max_replicas`.
    fn action(&mut self, v: &Value, key: &str, default_max: u32) -> Option<ActionSpec> {
        match v {
            Value::String(s) => ActionSpec::from_kubectl_capped(s, default_max)
                .map_err(|e| self.err(key, e))
                .ok(),
            Value::Mapping(m) => self.native_action(m, key, default_max),
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

    fn native_action(&mut self, m: &Mapping, key: &str, default_max: u32) -> Option<ActionSpec> {
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
                    &[
                        "kind",
                        "namespace",
                        "deployment",
                        "replicas",
                        "by",
                        "predictive",
                        "direction",
                        "max_replicas",
                        "min_replicas",
                    ],
                    key,
                );
                let namespace = tmpl(self, "namespace", Some("{namespace}"));
                let deployment = tmpl(self, "deployment", Some("{deployment}"));
                let given: Vec<&str> = ["replicas", "by", "predictive"]
                    .into_iter()
                    .filter(|k| m.contains_key(k))
                    .collect();
                if given.len() != 1 {
                    self.err(
                        key,
                        "scale_deployment needs exactly one of `replicas`, `by` or `predictive`",
                    );
                    return None;
                }
                let replicas = self.replica_spec(m, key, given[0], default_max)?;
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

    /// A scale's count, direction and bounds. The direction defaults to `restore` for
    /// `replicas: "{old_replicas}"`, `down` for a negative `by`, else `up`; the cap
    /// (`max_replicas`) to `default_max`, the floor (`min_replicas`) to 1. Never 0: that is
    /// `scale_to_zero`'s job.
    fn replica_spec(&mut self, m: &Mapping, key: &str, given: &str, default_max: u32) -> Option<ReplicaSpec> {
        let dk = format!("{key}.direction");
        let direction = match m.get("direction") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str() {
                Some("up") => Some(Direction::Up),
                Some("down") => Some(Direction::Down),
                Some("restore") => Some(Direction::Restore),
                _ => {
                    self.err(&dk, format!("must be up, down or restore, got {}", show(v)));
                    return None;
                }
            },
        };
        let max = match m.get("max_replicas") {
            Some(v) => self.integer(v, &format!("{key}.max_replicas"), 1, 10_000)? as u32,
            None => default_max,
        };
        let min = match m.get("min_replicas") {
            Some(v) => self.integer(v, &format!("{key}.min_replicas"), 1, 10_000)? as u32,
            None => 1,
        };
        if min > max {
            self.err(
                &format!("{key}.min_replicas"),
                format!("must not exceed max_replicas ({max}), got {min}"),
            );
            return None;
        }
        let bounds = Bounds { min, max };
        match given {
            "replicas" => {
                let rk = format!("{key}.replicas");
                let count = match m.get("replicas") {
                    Some(Value::Number(n)) => {
                        let literal = self.integer(&Value::Number(*n), &rk, 0, 10_000)? as u32;
                        if literal < min || literal > max || literal == 0 {
                            let why = if literal == 0 {
                                "0 replicas is refused: use `kind: scale_to_zero` (HIGH risk only)".to_string()
                            } else {
                                format!("must lie within min_replicas..max_replicas ({min}..{max}), got {literal}")
                            };
                            self.err(&rk, why);
                            return None;
                        }
                        Template::parse(&n.to_string()).ok()?
                    }
                    Some(v) => {
                        let t = self.string(v, &rk).and_then(|s| self.template(&s, &rk))?;
                        if t.single_var().is_none() {
                            self.err(&rk, "must be a number or a single {variable}");
                            return None;
                        }
                        t
                    }
                    None => return None,
                };
                let restores = count.single_var() == Some("old_replicas");
                match direction {
                    None if restores => Some(ReplicaSpec::Restore),
                    Some(Direction::Restore) if restores => Some(ReplicaSpec::Restore),
                    Some(Direction::Restore) => {
                        self.err(
                            &dk,
                            "restore takes the count the action captured: it needs `replicas: \"{old_replicas}\"`",
                        );
                        None
                    }
                    Some(_) if restores => {
                        self.err(
                            &rk,
                            "{old_replicas} is the count captured before the action: use it with `direction: restore`",
                        );
                        None
                    }
                    d => Some(ReplicaSpec::To {
                        count,
                        direction: d.unwrap_or(Direction::Up),
                        bounds,
                    }),
                }
            }
            "by" => {
                let v = m.get("by")?;
                let step = match v.as_i64() {
                    Some(n) if n != 0 && n.abs() <= 1000 => n as i32,
                    _ => {
                        self.err(
                            &format!("{key}.by"),
                            format!("must be a non-zero integer step, got {}", show(v)),
                        );
                        return None;
                    }
                };
                let implied = if step > 0 { Direction::Up } else { Direction::Down };
                if direction.is_some_and(|d| d != implied) {
                    self.err(
                        &dk,
                        format!(
                            "a step of {step:+} goes {}, not {}",
                            implied.as_str(),
                            direction.map_or("", Direction::as_str)
                        ),
                    );
                    return None;
                }
                Some(ReplicaSpec::By(step, bounds))
            }
            _ => {
                let pk = format!("{key}.predictive");
                for k in ["direction", "max_replicas", "min_replicas"] {
                    if m.contains_key(k) {
                        self.err(
                            &format!("{key}.{k}"),
                            "not with `predictive` (it only scales up, capped by predictive.max_replicas)",
                        );
                        return None;
                    }
                }
                let Some(Value::Mapping(p)) = m.get("predictive") else {
                    self.err(&pk, "must be a mapping with `max_replicas`");
                    return None;
                };
                self.unknown_keys(p, &["max_replicas"], &pk);
                let max = match p.get("max_replicas") {
                    Some(v) => self.integer(v, &format!("{pk}.max_replicas"), 1, 10_000)?,
                    None => 10,
                };
                Some(ReplicaSpec::Predictive {
                    max_replicas: max as u32,
                })
            }
        }
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
            errs[0]
                .starts_with(r#"f.yaml:2:3: runbook "h": rollback: a HIGH-risk runbook in mode auto needs a rollback"#),
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
            errs[0]
                .starts_with(r#"f.yaml:7:30: runbook "h": allow_irreversible_auto: only for a runbook with risk HIGH"#),
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
}
