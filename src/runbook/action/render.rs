//! An [`ActionSpec`] rendered against an incident's variables into an [`Action`] with concrete,
//! validated values: names checked as Kubernetes names, the namespace checked against the
//! runbook's scope, a scale's count checked against the runbook's bounds. Everything an incident
//! supplies passes through here before it reaches an executor.

use super::{Action, ActionSpec, Direction, ReplicaSpec, Replicas};
use crate::runbook::template::{self, RenderError, Template, Vars};
use serde_json::Value;

impl ActionSpec {
    /// Render against `vars`: every value validated, the namespace checked against `allowed`
    /// (empty = any).
    pub fn render(&self, vars: &Vars, allowed_namespaces: &[String]) -> Result<Action, RenderError> {
        let ns = |t: &Template| -> Result<String, RenderError> {
            let n = t.render(vars)?;
            template::validate(template::VarKind::Label, &n).map_err(|m| RenderError {
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
            template::validate(template::VarKind::Subdomain, &n).map_err(|m| RenderError {
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
