//! Typed actions: what a runbook does, parsed from kubectl-style strings (docs/design.md#runbooks)
//! or from the native `{kind: ...}` form, and rendered against an incident into concrete values.
//!
//! kubectl strings are *parsed* into these types, never executed: the executor speaks to the
//! Kubernetes API. A string that is not one of the supported shapes is a load error.
//!
//! This file holds the two action types (as written, [`ActionSpec`]; as rendered, [`Action`])
//! and what is known about them without an incident. The rest lives by concern:
//! * `scale`: how far a scale may move a deployment (directions, bounds, the replica target
//!   judged against the live count);
//! * `kubectl`: the kubectl-style strings parsed into an [`ActionSpec`];
//! * `render`: an [`ActionSpec`] rendered against an incident's variables into an [`Action`];
//! * `view`: the outcome's view of an [`Action`] (what audits and approvals show and hash).

mod kubectl;
mod render;
mod scale;
mod view;

pub use scale::{Bounds, Direction, ReplicaSpec, Replicas, DEFAULT_MAX_REPLICAS, STOPPED_DELIBERATELY};

use super::template::Template;
use serde_json::Value;

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
impl ActionSpec {
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
}

#[cfg(test)]
mod tests;
