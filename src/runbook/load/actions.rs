//! A runbook's `action` or `rollback` in either form: a kubectl-style string (parsed by
//! [`ActionSpec::from_kubectl_capped`]) or a native `{kind: ...}` mapping, with a scale's count,
//! direction and bounds. A scale that names no `max_replicas` gets the runbook's default cap.

use super::values::{show, type_name};
use super::Parser;
use crate::runbook::action::{ActionSpec, Bounds, Direction, ReplicaSpec, PATCHABLE};
use crate::runbook::template::Template;
use crate::yaml::{Mapping, Value};

impl Parser<'_> {
    /// An action or rollback; `default_max` caps a scale that names no `max_replicas`.
    pub(super) fn action(&mut self, v: &Value, key: &str, default_max: u32) -> Option<ActionSpec> {
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
                let implied = if step.is_negative() {
                    Direction::Down
                } else {
                    Direction::Up
                };
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
}
