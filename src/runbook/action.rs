//! Typed actions: what a runbook does, parsed from the seed's kubectl-style strings or from the
//! native `{kind: ...}` form, and rendered against an incident into concrete values.
//!
//! kubectl strings are *parsed* into these types, never executed: the executor speaks to the
//! Kubernetes API. A string that is not one of the supported shapes is a load error.

use super::template::{RenderError, Template, Vars};
use crate::outcome::ActionView;
use serde_json::Value;
use std::collections::BTreeMap;

/// How a scale action picks the replica count.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaSpec {
    /// Scale to an absolute count (literal or template such as `{new_replicas}`).
    To(Template),
    /// Scale by a relative step (`--replicas=+1`).
    By(i32),
    /// The seed's PredictiveScaler: from `predicted_load` / `current_load`, up only, capped.
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

/// A rendered replica target.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicas {
    /// Absolute.
    To(u32),
    /// Relative to the current count.
    By(i32),
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

impl ActionSpec {
    /// Parse a seed-style kubectl string.
    ///
    /// Supported: `kubectl delete pod P`, `kubectl scale deployment D --replicas=N|+N|-N`,
    /// `kubectl rollout restart|undo deployment D` (also `deployment/D`), each with an optional
    /// `-n NS` / `--namespace NS` / `--namespace=NS` (default `{namespace}` from the context).
    pub fn from_kubectl(cmd: &str) -> Result<Self, String> {
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
                    ReplicaSpec::By(n)
                } else {
                    let t = Template::parse(r)?;
                    if t.single_var().is_none() && r.parse::<u32>().is_err() {
                        return Err(format!("--replicas={r} must be a number or a single {{variable}}"));
                    }
                    ReplicaSpec::To(t)
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
                if let ReplicaSpec::To(t) = replicas {
                    v.push(t);
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
                    ReplicaSpec::To(t) => {
                        let var = t.single_var().unwrap_or("replicas");
                        let v = t.render(vars)?;
                        Replicas::To(v.parse().map_err(|_| RenderError {
                            var: var.into(),
                            message: format!("must be an integer, got {v:?}"),
                        })?)
                    }
                    ReplicaSpec::By(n) => Replicas::By(*n),
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
                let flag = match replicas {
                    Replicas::To(n) => {
                        params.insert("replicas".into(), Value::from(*n));
                        n.to_string()
                    }
                    Replicas::By(n) => {
                        params.insert("replicas_delta".into(), Value::from(*n));
                        format!("{n:+}")
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
            Action::RolloutUndo { namespace, deployment } => (
                format!("deployment/{deployment}"),
                Some(namespace),
                format!("kubectl rollout undo deployment {deployment} -n {namespace}"),
            ),
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
                replicas: ReplicaSpec::To(_),
                ..
            }
        ));
        let a = ActionSpec::from_kubectl("kubectl rollout undo deployment {deployment} -n {namespace}").unwrap();
        assert_eq!(a.kind(), "rollout_undo");
        let a = ActionSpec::from_kubectl("kubectl scale deployment/web --replicas=+1 --namespace=prod").unwrap();
        assert!(matches!(
            a,
            ActionSpec::ScaleDeployment {
                replicas: ReplicaSpec::By(1),
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
}
