//! Typed actions: what a runbook does, parsed from kubectl-style strings (docs/design.md#runbooks)
//! or from the native `{kind: ...}` form, and rendered against an incident into concrete values.
//!
//! kubectl strings are *parsed* into these types, never executed: the executor speaks to the
//! Kubernetes API. A string that is not one of the supported shapes is a load error.

use super::template::{RenderError, Template, Vars};
use crate::outcome::ActionView;
use serde_json::Value;
use std::collections::BTreeMap;

/// The cap a scale action gets when its runbook names none: the `max_replicas` of its
/// `current_replicas_below_max` pre-check if it has one, else this (the reference catalogue's
/// scale-up relies on it).
pub const DEFAULT_MAX_REPLICAS: u32 = 10;

/// Which way a scale action may move a deployment. Declared by the runbook (never by the
/// incident), and checked twice: at render time against the runbook's bounds, and against the
/// live count right before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only above the live count, never above the runbook's `max_replicas`.
    Up,
    /// Only below the live count, never below the runbook's `min_replicas` (at least 1).
    Down,
    /// Back to the count a scale action captured from the live object before acting
    /// (`{old_replicas}`): only in a rollback, never a value from the incident.
    Restore,
}

impl Direction {
    /// The name as written in runbooks and outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Restore => "restore",
        }
    }
}

/// The replica range a scale action may set, from the runbook. `min >= 1`: zero replicas is
/// reachable only through `scale_to_zero`, which only a HIGH-risk runbook may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Lowest count a scale may set (`min_replicas`, default 1).
    pub min: u32,
    /// Highest count a scale may set (`max_replicas`).
    pub max: u32,
}

impl Bounds {
    /// `min_replicas: 1`, `max_replicas` = [`DEFAULT_MAX_REPLICAS`].
    pub const DEFAULT: Bounds = Bounds {
        min: 1,
        max: DEFAULT_MAX_REPLICAS,
    };

    fn check(&self, n: u32) -> Result<(), String> {
        if n == 0 {
            Err("0 replicas is refused: only a scale_to_zero action (HIGH risk) may scale to zero".into())
        } else if n > self.max {
            Err(format!("{n} replicas is above the runbook's max_replicas {}", self.max))
        } else if n < self.min {
            Err(format!("{n} replicas is below the runbook's min_replicas {}", self.min))
        } else {
            Ok(())
        }
    }
}

/// How a scale action picks the replica count.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaSpec {
    /// Scale to an absolute count (literal or template such as `{new_replicas}`), only in
    /// `direction` (`Up` or `Down`) and within `bounds`.
    To {
        /// The count.
        count: Template,
        /// Which way it may move the deployment.
        direction: Direction,
        /// The runbook's range.
        bounds: Bounds,
    },
    /// Back to `{old_replicas}` as captured by the action (a rollback only).
    Restore,
    /// Scale by a relative step (`--replicas=+1`: up, `-1`: down), the result within `bounds`.
    By(i32, Bounds),
    /// The predictive scaler (docs/design.md#scaling): from `predicted_load` / `current_load`, up
    /// only, capped.
    Predictive {
        /// Never scale above this.
        max_replicas: u32,
    },
}

/// Resources the generic merge-patch action may touch (kept closed so RBAC can be exact).
pub const PATCHABLE: &[&str] = &[
    "deployments",
    "statefulsets",
    "daemonsets",
    "configmaps",
    "horizontalpodautoscalers",
];

/// An action as written in a runbook, with templates.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionSpec {
    /// Delete one pod (its controller replaces it).
    DeletePod {
        /// Namespace template.
        namespace: Template,
        /// Pod name template.
        pod: Template,
    },
    /// Set a deployment's replica count.
    ScaleDeployment {
        /// Namespace template.
        namespace: Template,
        /// Deployment name template.
        deployment: Template,
        /// How many.
        replicas: ReplicaSpec,
    },
    /// Restart every pod of a deployment by stamping its template.
    RolloutRestart {
        /// Namespace template.
        namespace: Template,
        /// Deployment name template.
        deployment: Template,
    },
    /// Roll a deployment back to its previous ReplicaSet revision.
    RolloutUndo {
        /// Namespace template.
        namespace: Template,
        /// Deployment name template.
        deployment: Template,
    },
    /// Scale a deployment to zero, remembering the old count for rollback.
    ScaleToZero {
        /// Namespace template.
        namespace: Template,
        /// Deployment name template.
        deployment: Template,
    },
    /// JSON merge-patch of a named resource.
    Patch {
        /// One of [`PATCHABLE`].
        resource: String,
        /// Namespace template.
        namespace: Template,
        /// Object name template.
        name: Template,
        /// Merge patch; string leaves may contain templates.
        patch: Value,
    },
    /// Call an HTTP endpoint (automation outside Kubernetes: cache cleaners, DB failover).
    Webhook {
        /// URL template.
        url: Template,
        /// `POST` or `PUT`.
        method: String,
        /// JSON body; string leaves may contain templates.
        body: Option<Value>,
        /// Request timeout.
        timeout_seconds: u64,
    },
}

/// A rendered action with concrete, validated values.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete a pod.
    DeletePod {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
    },
    /// Scale a deployment.
    ScaleDeployment {
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
        /// Target.
        replicas: Replicas,
    },
    /// Rollout restart.
    RolloutRestart {
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
    },
    /// Rollout undo.
    RolloutUndo {
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
        /// The revisions read from the cluster when a human was asked to approve this undo
        /// (`None` when rendered from a runbook): part of the view, so of the approval's hash.
        pin: Option<RevisionPin>,
    },
    /// Scale to zero.
    ScaleToZero {
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
    },
    /// Merge-patch.
    Patch {
        /// Resource plural.
        resource: String,
        /// Namespace.
        namespace: String,
        /// Object name.
        name: String,
        /// Rendered patch.
        patch: Value,
    },
    /// HTTP call.
    Webhook {
        /// URL.
        url: String,
        /// Method.
        method: String,
        /// Rendered body.
        body: Option<Value>,
        /// Timeout.
        timeout_seconds: u64,
    },
}

/// Why a scale other than `down` or `restore` is refused on a deployment at 0 replicas.
pub const STOPPED_DELIBERATELY: &str = "the deployment runs 0 replicas: it was stopped deliberately \
     (scale_to_zero or a human), and only a human or the stop's own restore brings it back";

/// What a `rollout_undo` does depends on the deployment's history, not on its rendered fields: a
/// deploy between the request for an approval and the answer would change what the approved undo
/// restores. So before an undo is shown to a human (and hashed), the executor pins the live
/// revisions into it ([`crate::executor::Executor::pin`]); the approved run pins again and must
/// hash the same, and the executor refuses a pinned undo when the live revisions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionPin {
    /// The deployment's revision (`deployment.kubernetes.io/revision`): the one the undo replaces.
    pub from: i64,
    /// The revision whose template the undo restores (the highest one below `from`).
    pub to: i64,
}

/// A rendered replica target, with the rule the live count must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicas {
    /// Raise to this count: only from below it, within the bounds.
    Up(u32, Bounds),
    /// Lower to this count: only from above it, within the bounds.
    Down(u32, Bounds),
    /// Relative to the current count; the result must lie within the bounds.
    By(i32, Bounds),
    /// The count captured from the live object before the action this rolls back.
    Restore(u32),
    /// Predictive scale-up.
    Predictive {
        /// Expected load.
        predicted_load: f64,
        /// Current load.
        current_load: f64,
        /// Cap.
        max_replicas: u32,
    },
}

impl Replicas {
    /// The count to set given the live `current` one, or why the scale is refused. The
    /// executors call this on the count they read right before the call (the call carries that
    /// read's `resourceVersion`), so a deployment that changed since rendering is judged as it is.
    /// `Ok(current)` means there is nothing to do.
    ///
    /// A deployment at 0 replicas was stopped deliberately (`scale_to_zero`, or a human): an
    /// `up`, `by` or predictive scale never brings it back, however low its risk, so that an
    /// automatic LOW-risk runbook cannot undo a HIGH-risk stop. Only a `restore` (the rollback of
    /// the stop) or a human does.
    pub fn target(&self, current: u32) -> Result<u32, String> {
        if current == 0 && !matches!(self, Replicas::Restore(_) | Replicas::Down(..)) {
            return Err(STOPPED_DELIBERATELY.to_string());
        }
        match self {
            Replicas::Up(n, bounds) => {
                bounds.check(*n)?;
                if *n < current {
                    return Err(format!(
                        "a scale-up to {n} replicas is refused: the deployment already runs {current}"
                    ));
                }
                Ok(*n)
            }
            Replicas::Down(n, bounds) => {
                bounds.check(*n)?;
                if *n > current {
                    return Err(format!(
                        "a scale-down to {n} replicas is refused: the deployment runs only {current}"
                    ));
                }
                Ok(*n)
            }
            Replicas::By(step, bounds) => {
                let n = (current as i64 + *step as i64).clamp(0, u32::MAX as i64) as u32;
                bounds.check(n).map_err(|m| format!("{current} {step:+} = {n}: {m}"))?;
                Ok(n)
            }
            Replicas::Restore(n) => Ok(*n),
            Replicas::Predictive {
                predicted_load,
                current_load,
                max_replicas,
            } => Ok(super::scaling::predictive_target(
                current,
                *predicted_load,
                *current_load,
                *max_replicas,
            )),
        }
    }
}

impl ActionSpec {
    /// Parse a seed-style kubectl string, capping scales at [`DEFAULT_MAX_REPLICAS`].
    ///
    /// Supported: `kubectl delete pod P`, `kubectl scale deployment D --replicas=N|+N|-N`,
    /// `kubectl rollout restart|undo deployment D` (also `deployment/D`), each with an optional
    /// `-n NS` / `--namespace NS` / `--namespace=NS` (default `{namespace}` from the context).
    pub fn from_kubectl(cmd: &str) -> Result<Self, String> {
        Self::from_kubectl_capped(cmd, DEFAULT_MAX_REPLICAS)
    }

    /// [`ActionSpec::from_kubectl`] with the runbook's cap. A kubectl string cannot declare a
    /// direction, so it gets the safe one: `--replicas={old_replicas}` restores the captured count
    /// (a rollback), `-N` goes down (never below 1), and anything else goes up, within `1..=max`.
    pub fn from_kubectl_capped(cmd: &str, max_replicas: u32) -> Result<Self, String> {
        let bounds = Bounds {
            min: 1,
            max: max_replicas,
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let unsupported = || {
            format!(
                "unsupported action {cmd:?}: supported kubectl forms are `delete pod`, `scale deployment --replicas=`, \
                 `rollout restart deployment`, `rollout undo deployment`; use the native {{kind: ...}} form for others"
            )
        };
        if words.first() != Some(&"kubectl") {
            return Err(unsupported());
        }
        let mut namespace: Option<&str> = None;
        let mut replicas: Option<&str> = None;
        let mut positional = Vec::new();
        let mut i = 1;
        while i < words.len() {
            let w = words[i];
            if w == "-n" || w == "--namespace" {
                namespace = Some(
                    words
                        .get(i + 1)
                        .copied()
                        .ok_or_else(|| format!("{w} needs a value in {cmd:?}"))?,
                );
                i += 2;
                continue;
            }
            if let Some(v) = w.strip_prefix("--namespace=") {
                namespace = Some(v);
            } else if let Some(v) = w.strip_prefix("--replicas=") {
                replicas = Some(v);
            } else if w.starts_with('-') {
                return Err(format!("unsupported flag {w:?} in {cmd:?}"));
            } else {
                positional.push(w);
            }
            i += 1;
        }
        // `deployment/name` is the same as `deployment name`.
        let mut pos: Vec<&str> = Vec::new();
        for p in positional {
            match p.split_once('/') {
                Some((kind, name)) if matches!(kind, "deployment" | "deployments" | "deploy" | "pod" | "pods") => {
                    pos.push(kind);
                    pos.push(name);
                }
                _ => pos.push(p),
            }
        }
        let ns = Template::parse(namespace.unwrap_or("{namespace}"))?;
        let is_deploy = |k: &str| matches!(k, "deployment" | "deployments" | "deploy");
        let spec = match pos.as_slice() {
            ["delete", "pod" | "pods", name] if replicas.is_none() => ActionSpec::DeletePod {
                namespace: ns,
                pod: Template::parse(name)?,
            },
            ["scale", kind, name] if is_deploy(kind) => {
                let r = replicas.ok_or_else(|| format!("`kubectl scale` needs --replicas= in {cmd:?}"))?;
                let replicas = if let Some(step) = r.strip_prefix('+').or(r.strip_prefix('-').map(|_| r)) {
                    let n: i32 = step.parse().map_err(|_| format!("--replicas={r} is not a number"))?;
                    if n == 0 || n.abs() > 1000 {
                        return Err(format!("--replicas={r} must be a non-zero step of at most 1000"));
                    }
                    ReplicaSpec::By(n, bounds)
                } else {
                    let t = Template::parse(r)?;
                    if let Ok(n) = r.parse::<u32>() {
                        bounds.check(n).map_err(|m| format!("--replicas={r}: {m}"))?;
                    } else if t.single_var().is_none() {
                        return Err(format!("--replicas={r} must be a number or a single {{variable}}"));
                    }
                    if t.single_var() == Some("old_replicas") {
                        ReplicaSpec::Restore
                    } else {
                        ReplicaSpec::To {
                            count: t,
                            direction: Direction::Up,
                            bounds,
                        }
                    }
                };
                ActionSpec::ScaleDeployment {
                    namespace: ns,
                    deployment: Template::parse(name)?,
                    replicas,
                }
            }
            ["rollout", "restart", kind, name] if is_deploy(kind) && replicas.is_none() => ActionSpec::RolloutRestart {
                namespace: ns,
                deployment: Template::parse(name)?,
            },
            ["rollout", "undo", kind, name] if is_deploy(kind) && replicas.is_none() => ActionSpec::RolloutUndo {
                namespace: ns,
                deployment: Template::parse(name)?,
            },
            _ => return Err(unsupported()),
        };
        Ok(spec)
    }

    /// Every template this action uses (for load-time checks and scope validation).
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            ActionSpec::DeletePod { namespace, pod } => vec![namespace, pod],
            ActionSpec::ScaleDeployment {
                namespace,
                deployment,
                replicas,
            } => {
                let mut v = vec![namespace, deployment];
                if let ReplicaSpec::To { count, .. } = replicas {
                    v.push(count);
                }
                v
            }
            ActionSpec::RolloutRestart { namespace, deployment }
            | ActionSpec::RolloutUndo { namespace, deployment }
            | ActionSpec::ScaleToZero { namespace, deployment } => vec![namespace, deployment],
            ActionSpec::Patch { namespace, name, .. } => vec![namespace, name],
            ActionSpec::Webhook { url, .. } => vec![url],
        }
    }

    /// The action kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::DeletePod { .. } => "delete_pod",
            ActionSpec::ScaleDeployment { .. } => "scale_deployment",
            ActionSpec::RolloutRestart { .. } => "rollout_restart",
            ActionSpec::RolloutUndo { .. } => "rollout_undo",
            ActionSpec::ScaleToZero { .. } => "scale_to_zero",
            ActionSpec::Patch { .. } => "patch",
            ActionSpec::Webhook { .. } => "webhook",
        }
    }

    /// Render against `vars`: every value validated, the namespace checked against `allowed`
    /// (empty = any).
    pub fn render(&self, vars: &Vars, allowed_namespaces: &[String]) -> Result<Action, RenderError> {
        let ns = |t: &Template| -> Result<String, RenderError> {
            let n = t.render(vars)?;
            super::template::validate(super::template::VarKind::Label, &n).map_err(|m| RenderError {
                var: "namespace".into(),
                message: format!("{m}, got {n:?}"),
            })?;
            if !allowed_namespaces.is_empty() && !allowed_namespaces.contains(&n) {
                return Err(RenderError {
                    var: "namespace".into(),
                    message: format!(
                        "{n:?} is outside the runbook's scope ({})",
                        allowed_namespaces.join(", ")
                    ),
                });
            }
            Ok(n)
        };
        let name = |t: &Template, var: &str| -> Result<String, RenderError> {
            let n = t.render(vars)?;
            super::template::validate(super::template::VarKind::Subdomain, &n).map_err(|m| RenderError {
                var: var.into(),
                message: format!("{m}, got {n:?}"),
            })?;
            Ok(n)
        };
        Ok(match self {
            ActionSpec::DeletePod { namespace, pod } => Action::DeletePod {
                namespace: ns(namespace)?,
                pod: name(pod, "pod_name")?,
            },
            ActionSpec::ScaleDeployment {
                namespace,
                deployment,
                replicas,
            } => Action::ScaleDeployment {
                namespace: ns(namespace)?,
                deployment: name(deployment, "deployment")?,
                replicas: match replicas {
                    ReplicaSpec::To {
                        count,
                        direction,
                        bounds,
                    } => {
                        let var = count.single_var().unwrap_or("replicas");
                        let v = count.render(vars)?;
                        let n: u32 = v.parse().map_err(|_| RenderError {
                            var: var.into(),
                            message: format!("must be an integer, got {v:?}"),
                        })?;
                        // The runbook's bounds, before anything is reserved or called; the live
                        // count is judged again by the executor right before the call.
                        bounds.check(n).map_err(|message| RenderError {
                            var: var.into(),
                            message,
                        })?;
                        match direction {
                            Direction::Down => Replicas::Down(n, *bounds),
                            _ => Replicas::Up(n, *bounds),
                        }
                    }
                    ReplicaSpec::Restore => Replicas::Restore(vars.captured_count("old_replicas")?),
                    ReplicaSpec::By(n, bounds) => Replicas::By(*n, *bounds),
                    ReplicaSpec::Predictive { max_replicas } => Replicas::Predictive {
                        predicted_load: vars.decimal("predicted_load")?,
                        current_load: vars.decimal("current_load")?,
                        max_replicas: *max_replicas,
                    },
                },
            },
            ActionSpec::RolloutRestart { namespace, deployment } => Action::RolloutRestart {
                namespace: ns(namespace)?,
                deployment: name(deployment, "deployment")?,
            },
            ActionSpec::RolloutUndo { namespace, deployment } => Action::RolloutUndo {
                namespace: ns(namespace)?,
                deployment: name(deployment, "deployment")?,
                pin: None,
            },
            ActionSpec::ScaleToZero { namespace, deployment } => Action::ScaleToZero {
                namespace: ns(namespace)?,
                deployment: name(deployment, "deployment")?,
            },
            ActionSpec::Patch {
                resource,
                namespace,
                name: n,
                patch,
            } => Action::Patch {
                resource: resource.clone(),
                namespace: ns(namespace)?,
                name: name(n, "name")?,
                patch: render_json(patch, vars)?,
            },
            ActionSpec::Webhook {
                url,
                method,
                body,
                timeout_seconds,
            } => Action::Webhook {
                url: url.render(vars)?,
                method: method.clone(),
                body: body.as_ref().map(|b| render_json(b, vars)).transpose()?,
                timeout_seconds: *timeout_seconds,
            },
        })
    }
}

/// Render the template strings inside a JSON value (object keys stay literal).
fn render_json(v: &Value, vars: &Vars) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) => {
            // Parsed at load time already; a parse failure here would be a loader bug.
            let t = Template::parse(s).map_err(|m| RenderError {
                var: "template".into(),
                message: m,
            })?;
            Value::String(t.render(vars)?)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| render_json(x, vars)).collect::<Result<_, _>>()?),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, vars)?)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

impl Action {
    /// Wire name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::DeletePod { .. } => "delete_pod",
            Action::ScaleDeployment { .. } => "scale_deployment",
            Action::RolloutRestart { .. } => "rollout_restart",
            Action::RolloutUndo { .. } => "rollout_undo",
            Action::ScaleToZero { .. } => "scale_to_zero",
            Action::Patch { .. } => "patch",
            Action::Webhook { .. } => "webhook",
        }
    }

    /// The outcome's view of this action.
    pub fn view(&self) -> ActionView {
        let mut params = BTreeMap::new();
        let (target, namespace, display) = match self {
            Action::DeletePod { namespace, pod } => (
                format!("pod/{pod}"),
                Some(namespace),
                format!("kubectl delete pod {pod} -n {namespace}"),
            ),
            Action::ScaleDeployment {
                namespace,
                deployment,
                replicas,
            } => {
                fn bounded(params: &mut BTreeMap<String, Value>, direction: &str, bounds: &Bounds) {
                    params.insert("direction".into(), Value::from(direction));
                    params.insert("min_replicas".into(), Value::from(bounds.min));
                    params.insert("max_replicas".into(), Value::from(bounds.max));
                }
                let flag = match replicas {
                    Replicas::Up(n, bounds) | Replicas::Down(n, bounds) => {
                        let up = matches!(replicas, Replicas::Up(..));
                        bounded(&mut params, if up { "up" } else { "down" }, bounds);
                        params.insert("replicas".into(), Value::from(*n));
                        n.to_string()
                    }
                    Replicas::By(n, bounds) => {
                        bounded(&mut params, if *n > 0 { "up" } else { "down" }, bounds);
                        params.insert("replicas_delta".into(), Value::from(*n));
                        format!("{n:+}")
                    }
                    Replicas::Restore(n) => {
                        params.insert("direction".into(), Value::from("restore"));
                        params.insert("replicas".into(), Value::from(*n));
                        n.to_string()
                    }
                    Replicas::Predictive {
                        predicted_load,
                        current_load,
                        max_replicas,
                    } => {
                        params.insert("predicted_load".into(), Value::from(*predicted_load));
                        params.insert("current_load".into(), Value::from(*current_load));
                        params.insert("max_replicas".into(), Value::from(*max_replicas));
                        "<predictive>".into()
                    }
                };
                (
                    format!("deployment/{deployment}"),
                    Some(namespace),
                    format!("kubectl scale deployment {deployment} --replicas={flag} -n {namespace}"),
                )
            }
            Action::RolloutRestart { namespace, deployment } => (
                format!("deployment/{deployment}"),
                Some(namespace),
                format!("kubectl rollout restart deployment {deployment} -n {namespace}"),
            ),
            Action::RolloutUndo {
                namespace,
                deployment,
                pin,
            } => {
                let to = match pin {
                    Some(p) => {
                        params.insert("undone_from_revision".into(), Value::from(p.from));
                        params.insert("restored_revision".into(), Value::from(p.to));
                        format!(" --to-revision={}", p.to)
                    }
                    None => String::new(),
                };
                (
                    format!("deployment/{deployment}"),
                    Some(namespace),
                    format!("kubectl rollout undo deployment {deployment}{to} -n {namespace}"),
                )
            }
            Action::ScaleToZero { namespace, deployment } => {
                params.insert("replicas".into(), Value::from(0));
                (
                    format!("deployment/{deployment}"),
                    Some(namespace),
                    format!("kubectl scale deployment {deployment} --replicas=0 -n {namespace}"),
                )
            }
            Action::Patch {
                resource,
                namespace,
                name,
                patch,
            } => {
                params.insert("patch".into(), patch.clone());
                (
                    format!("{resource}/{name}"),
                    Some(namespace),
                    format!("kubectl patch {resource} {name} -n {namespace} --type=merge -p '{patch}'"),
                )
            }
            Action::Webhook { url, method, body, .. } => {
                if let Some(b) = body {
                    params.insert("body".into(), b.clone());
                }
                (url.clone(), None, format!("{method} {url}"))
            }
        };
        ActionView {
            kind: self.kind().to_string(),
            target,
            namespace: namespace.cloned(),
            params,
            display,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_kubectl_strings_parse_into_typed_actions() {
        let a = ActionSpec::from_kubectl("kubectl delete pod {pod_name} -n {namespace}").unwrap();
        assert_eq!(a.kind(), "delete_pod");
        let a =
            ActionSpec::from_kubectl("kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}")
                .unwrap();
        assert!(matches!(
            a,
            ActionSpec::ScaleDeployment {
                replicas: ReplicaSpec::To {
                    direction: Direction::Up,
                    bounds: Bounds::DEFAULT,
                    ..
                },
                ..
            }
        ));
        let a = ActionSpec::from_kubectl("kubectl rollout undo deployment {deployment} -n {namespace}").unwrap();
        assert_eq!(a.kind(), "rollout_undo");
        let a = ActionSpec::from_kubectl("kubectl scale deployment/web --replicas=+1 --namespace=prod").unwrap();
        assert!(matches!(
            a,
            ActionSpec::ScaleDeployment {
                replicas: ReplicaSpec::By(1, Bounds::DEFAULT),
                ..
            }
        ));
        let a = ActionSpec::from_kubectl("kubectl rollout restart deploy {deployment}").unwrap();
        assert_eq!(a.kind(), "rollout_restart");
    }

    #[test]
    fn other_commands_are_refused() {
        for bad in [
            "kubectl exec -it {pod_name} -- sh",
            "rm -rf /tmp",
            "kubectl delete pod {pod_name} -n {namespace} --force",
            "kubectl delete namespace {namespace}",
            "kubectl scale deployment {deployment}",
            "kubectl delete pod {pod_name} -n",
        ] {
            assert!(ActionSpec::from_kubectl(bad).is_err(), "{bad}");
        }
    }

    fn scale_up(vars: &[(&str, &str)]) -> Result<Action, RenderError> {
        let a = ActionSpec::from_kubectl_capped(
            "kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}",
            10,
        )
        .unwrap();
        let mut v = Vars::default();
        v.set("deployment", "web");
        v.set("namespace", "prod");
        for (k, x) in vars {
            v.set(k, *x);
        }
        a.render(&v, &[])
    }

    #[test]
    fn a_scale_renders_only_within_its_runbooks_bounds() {
        let b = Bounds { min: 1, max: 10 };
        assert_eq!(
            scale_up(&[("new_replicas", "10")]).unwrap(),
            Action::ScaleDeployment {
                namespace: "prod".into(),
                deployment: "web".into(),
                replicas: Replicas::Up(10, b)
            },
            "the cap itself is allowed"
        );
        let e = scale_up(&[("new_replicas", "11")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "context.new_replicas: 11 replicas is above the runbook's max_replicas 10"
        );
        let e = scale_up(&[("new_replicas", "10000")]).unwrap_err();
        assert!(e.message.contains("above the runbook's max_replicas 10"), "{e}");
        let e = scale_up(&[("new_replicas", "0")]).unwrap_err();
        assert!(e.message.contains("only a scale_to_zero action (HIGH risk)"), "{e}");
        assert!(scale_up(&[("new_replicas", "1")]).is_ok());
        // An incident cannot raise the cap: there is no such variable to give.
        assert!(scale_up(&[("new_replicas", "50"), ("max_replicas", "100")]).is_err());
    }

    #[test]
    fn a_restore_takes_only_a_captured_count() {
        let a = ActionSpec::from_kubectl("kubectl scale deployment web --replicas={old_replicas} -n prod").unwrap();
        let mut v = Vars::default();
        v.set("old_replicas", "0");
        let e = a.render(&v, &[]).unwrap_err();
        assert!(e.message.contains("was not captured from the cluster"), "{e}");
        v.capture("old_replicas", "3");
        let r = a.render(&v, &[]).unwrap();
        assert_eq!(r.view().display, "kubectl scale deployment web --replicas=3 -n prod");
        assert_eq!(r.view().params["direction"], "restore");
        v.set("old_replicas", "4");
        assert!(
            a.render(&v, &[]).is_err(),
            "overwritten by the incident: not captured any more"
        );
    }

    #[test]
    fn a_stopped_deployment_is_never_scaled_back_up() {
        let b = Bounds { min: 1, max: 10 };
        let predictive = Replicas::Predictive {
            predicted_load: 900.0,
            current_load: 400.0,
            max_replicas: 8,
        };
        for r in [Replicas::Up(3, b), Replicas::By(2, b), Replicas::By(-1, b), predictive] {
            assert_eq!(r.target(0), Err(STOPPED_DELIBERATELY.to_string()), "{r:?}");
        }
        assert!(Replicas::Down(1, b).target(0).unwrap_err().contains("runs only 0"));
        assert_eq!(
            Replicas::Restore(3).target(0),
            Ok(3),
            "the stop's rollback brings it back"
        );
    }

    #[test]
    fn the_live_count_decides_last() {
        let b = Bounds { min: 2, max: 10 };
        assert_eq!(Replicas::Up(5, b).target(3), Ok(5));
        assert_eq!(Replicas::Up(5, b).target(5), Ok(5), "already there: nothing to do");
        assert!(Replicas::Up(5, b).target(6).unwrap_err().contains("already runs 6"));
        assert!(
            Replicas::Up(11, b).target(3).is_err(),
            "bounds hold even if rendered in code"
        );
        assert!(Replicas::Up(0, b).target(3).is_err());
        assert_eq!(Replicas::Down(2, b).target(4), Ok(2));
        assert!(Replicas::Down(1, b).target(4).unwrap_err().contains("min_replicas 2"));
        assert!(Replicas::Down(4, b).target(3).unwrap_err().contains("runs only 3"));
        assert_eq!(Replicas::By(1, b).target(9), Ok(10));
        assert!(Replicas::By(1, b).target(10).unwrap_err().contains("max_replicas 10"));
        assert!(Replicas::By(-1, b).target(2).unwrap_err().contains("min_replicas 2"));
        let one = Bounds { min: 1, max: 10 };
        assert!(Replicas::By(-3, one).target(3).unwrap_err().contains("scale_to_zero"));
        assert_eq!(
            Replicas::Restore(0).target(5),
            Ok(0),
            "a restore puts back what was there"
        );
    }

    #[test]
    fn a_pinned_undo_shows_its_revisions() {
        let a = ActionSpec::from_kubectl("kubectl rollout undo deployment web -n prod").unwrap();
        let unpinned = a.render(&Vars::default(), &[]).unwrap();
        assert_eq!(unpinned.view().display, "kubectl rollout undo deployment web -n prod");
        assert!(unpinned.view().params.is_empty());
        let Action::RolloutUndo {
            namespace, deployment, ..
        } = unpinned
        else {
            panic!("not an undo")
        };
        let pinned = |from, to| Action::RolloutUndo {
            namespace: namespace.clone(),
            deployment: deployment.clone(),
            pin: Some(RevisionPin { from, to }),
        };
        let v = pinned(3, 2).view();
        assert_eq!(v.display, "kubectl rollout undo deployment web --to-revision=2 -n prod");
        assert_eq!(v.params["undone_from_revision"], 3);
        assert_eq!(v.params["restored_revision"], 2);
        assert_ne!(pinned(4, 3).view(), v, "another revision is another view");
        assert_ne!(pinned(4, 2).view(), v, "the undone revision counts too");
    }

    #[test]
    fn render_validates_and_scopes() {
        let a = ActionSpec::from_kubectl("kubectl delete pod {pod_name} -n {namespace}").unwrap();
        let mut v = Vars::default();
        v.set("pod_name", "api-1");
        v.set("namespace", "production");
        let r = a.render(&v, &[]).unwrap();
        assert_eq!(r.view().display, "kubectl delete pod api-1 -n production");
        let e = a.render(&v, &["staging".to_string()]).unwrap_err();
        assert_eq!(e.var, "namespace");
        v.set("pod_name", "x;reboot");
        assert_eq!(a.render(&v, &[]).unwrap_err().var, "pod_name");
    }

    /// The live count decides, at every edge of the runbook's bounds and the declared direction.
    #[test]
    fn scale_targets_hold_at_every_edge() {
        let b = Bounds { min: 2, max: 5 };
        let up = |n| Replicas::Up(n, b);
        let down = |n| Replicas::Down(n, b);
        assert_eq!(up(5).target(3), Ok(5));
        assert_eq!(up(4).target(4), Ok(4), "already there: nothing to do");
        assert_eq!(
            up(3).target(4),
            Err("a scale-up to 3 replicas is refused: the deployment already runs 4".into())
        );
        assert_eq!(
            up(6).target(3),
            Err("6 replicas is above the runbook's max_replicas 5".into())
        );
        assert_eq!(
            up(1).target(1),
            Err("1 replicas is below the runbook's min_replicas 2".into())
        );
        assert_eq!(
            up(0).target(1),
            Err("0 replicas is refused: only a scale_to_zero action (HIGH risk) may scale to zero".into())
        );
        assert_eq!(down(2).target(3), Ok(2));
        assert_eq!(down(2).target(2), Ok(2), "already there: nothing to do");
        assert_eq!(
            down(3).target(2),
            Err("a scale-down to 3 replicas is refused: the deployment runs only 2".into())
        );
        assert_eq!(
            down(1).target(3),
            Err("1 replicas is below the runbook's min_replicas 2".into())
        );
        assert_eq!(Replicas::By(2, b).target(3), Ok(5));
        assert_eq!(
            Replicas::By(2, b).target(4),
            Err("4 +2 = 6: 6 replicas is above the runbook's max_replicas 5".into())
        );
        assert_eq!(Replicas::By(-1, b).target(3), Ok(2));
        assert_eq!(
            Replicas::By(-2, b).target(3),
            Err("3 -2 = 1: 1 replicas is below the runbook's min_replicas 2".into())
        );
        // A deployment stopped at 0 stays stopped, whatever asks: only its restore brings it back
        // (and a scale-down has nothing to take away).
        let predictive = Replicas::Predictive {
            predicted_load: 10.0,
            current_load: 1.0,
            max_replicas: 5,
        };
        for r in [up(3), Replicas::By(1, b), predictive] {
            assert_eq!(r.target(0), Err(STOPPED_DELIBERATELY.to_string()), "{r:?}");
        }
        assert_eq!(
            down(2).target(0),
            Err("a scale-down to 2 replicas is refused: the deployment runs only 0".into())
        );
        assert_eq!(Replicas::Restore(3).target(0), Ok(3));
    }

    /// A kubectl string gets the safe direction and the runbook's cap; steps are bounded.
    #[test]
    fn kubectl_scales_get_safe_directions_and_bounded_steps() {
        let replicas = |cmd: &str| match ActionSpec::from_kubectl_capped(cmd, 8) {
            Ok(ActionSpec::ScaleDeployment { replicas, .. }) => Ok(replicas),
            Ok(other) => panic!("{cmd}: {other:?}"),
            Err(e) => Err(e),
        };
        let b = Bounds { min: 1, max: 8 };
        assert_eq!(
            replicas("kubectl scale deployment d --replicas=+1000"),
            Ok(ReplicaSpec::By(1000, b))
        );
        assert_eq!(
            replicas("kubectl scale deploy/d --replicas=-1"),
            Ok(ReplicaSpec::By(-1, b))
        );
        assert_eq!(
            replicas("kubectl scale deployment d --replicas=+1001"),
            Err("--replicas=+1001 must be a non-zero step of at most 1000".into())
        );
        assert_eq!(
            replicas("kubectl scale deployment d --replicas=-0"),
            Err("--replicas=-0 must be a non-zero step of at most 1000".into())
        );
        assert_eq!(
            replicas("kubectl scale deployments d --replicas={old_replicas}"),
            Ok(ReplicaSpec::Restore)
        );
        assert!(matches!(
            replicas("kubectl scale deployment d --replicas=8"),
            Ok(ReplicaSpec::To { direction: Direction::Up, bounds, .. }) if bounds == b
        ));
        assert_eq!(
            replicas("kubectl scale deployment d --replicas=9"),
            Err("--replicas=9: 9 replicas is above the runbook's max_replicas 8".into())
        );
        assert_eq!(
            replicas("kubectl scale deployment d --replicas=x{new_replicas}"),
            Err("--replicas=x{new_replicas} must be a number or a single {variable}".into())
        );
        assert_eq!(
            replicas("kubectl scale deployment d"),
            Err("`kubectl scale` needs --replicas= in \"kubectl scale deployment d\"".into())
        );
        // Namespace flags, kind/name, and what is not a supported form.
        let ns = |cmd: &str| match ActionSpec::from_kubectl(cmd).unwrap() {
            ActionSpec::DeletePod { namespace, pod } => (namespace.to_string(), pod.to_string()),
            other => panic!("{cmd}: {other:?}"),
        };
        assert_eq!(ns("kubectl delete pod/p -n prod"), ("prod".into(), "p".into()));
        assert_eq!(
            ns("kubectl delete pods p --namespace prod"),
            ("prod".into(), "p".into())
        );
        assert_eq!(ns("kubectl delete pod p --namespace=prod"), ("prod".into(), "p".into()));
        assert_eq!(ns("kubectl delete pod p"), ("{namespace}".into(), "p".into()));
        for bad in [
            "kubectl delete pod p --replicas=2",
            "kubectl rollout restart deployment d --replicas=2",
            "kubectl rollout undo deployment d --replicas=2",
            "kubectl rollout restart statefulset d",
            "kubectl delete node n",
            "helm delete x",
            "kubectl delete service/s",
        ] {
            assert!(
                ActionSpec::from_kubectl(bad)
                    .unwrap_err()
                    .starts_with("unsupported action"),
                "{bad}"
            );
        }
        assert_eq!(
            ActionSpec::from_kubectl("kubectl delete pod p -n").unwrap_err(),
            "-n needs a value in \"kubectl delete pod p -n\""
        );
        assert_eq!(
            ActionSpec::from_kubectl("kubectl delete pod p --force").unwrap_err(),
            "unsupported flag \"--force\" in \"kubectl delete pod p --force\""
        );
        assert_eq!(
            ActionSpec::from_kubectl("kubectl rollout undo deploy/d")
                .unwrap()
                .kind(),
            "rollout_undo"
        );
        assert_eq!(
            ActionSpec::from_kubectl("kubectl rollout restart deployments d")
                .unwrap()
                .kind(),
            "rollout_restart"
        );
    }
}
