//! The outcome's view of a rendered [`Action`]: its kind, target, parameters and the equivalent
//! kubectl command line. It is what the audit topic records and what an approver sees; an
//! approval's hash is taken over it, so whatever decides what an action does (a scale's bounds, an
//! undo's pinned revisions) appears in it.

use super::{Action, Bounds, Replicas};
use crate::outcome::ActionView;
use serde_json::Value;
use std::collections::BTreeMap;

impl Action {
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
