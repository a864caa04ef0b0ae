//! One runbook's keys: risk, mode, triggers, limits, scope, checks, action and rollback, trust,
//! with their defaults, and the rules that span keys (a restore only in a rollback of a scale,
//! `scale_to_zero` only at HIGH risk, `rollback_checks` only with a rollback, a HIGH-risk auto
//! runbook without a rollback only with a stated override).

use super::values::{show, type_name};
use super::Parser;
use crate::outcome::Mode;
use crate::runbook::action::{ActionSpec, ReplicaSpec, DEFAULT_MAX_REPLICAS};
use crate::runbook::check::{CheckName, CheckSpec};
use crate::runbook::{Risk, Runbook, RunbookScope, TrustPolicy};
use crate::yaml::Value;
use std::time::Duration;

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
    "rollout",
    "allow_irreversible_auto",
];
impl Parser<'_> {
    pub(super) fn runbook(&mut self, id: &str, body: &Value) -> Option<Runbook> {
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
        let rollout = self.rollout(get("rollout"));
        if rollout.is_some() {
            // Rollout moves the runbook along the automation spectrum toward auto: it replaces the
            // fixed mode and the trust ladder's demotion, and shadow is its first stage.
            let effective = mode.unwrap_or(if risk == Some(Risk::High) {
                Mode::Approval
            } else {
                Mode::Auto
            });
            if effective != Mode::Auto {
                self.err(
                    "rollout",
                    format!(
                        "needs mode auto (the stage a rollout ends in), got mode {}",
                        effective.as_str()
                    ),
                );
            }
            if trust.is_some() {
                self.err(
                    "rollout",
                    "cannot be combined with trust: a rollout steps back on any failed verification itself",
                );
            }
            if dry_run {
                self.err(
                    "rollout",
                    "cannot be combined with dry_run: true (use `rollout.start: shadow`)",
                );
            }
        }
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
            rollout,
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
}
