//! Executors carry out rendered actions and run checks against the world.
//!
//! The pipeline decides *whether* and *what*; an [`Executor`] decides nothing, it only acts and
//! observes. Implementations: [`simulated::SimulatedExecutor`] (demo, replay, tests; can be told
//! to fail) and [`kubernetes::KubernetesExecutor`] (the API server through the `kube` crate,
//! Prometheus for query checks, HTTP for webhooks). They share one behaviour suite
//! (`tests/common/executor_suite.rs`).

pub mod kubernetes;
pub mod prometheus;
pub mod simulated;
pub mod webhook;

use crate::incident::Incident;
use crate::runbook::template::Vars;
use crate::runbook::{Action, CheckSpec};
use std::collections::BTreeMap;

/// What an executor sees of the incident being remediated.
#[derive(Debug, Clone)]
pub struct ExecContext<'a> {
    /// The incident.
    pub incident: &'a Incident,
    /// The runbook id.
    pub runbook: &'a str,
    /// The rendered action of this execution (checks look at its target).
    pub action: &'a Action,
    /// Template values, including values captured by the action.
    pub vars: &'a Vars,
    /// Stable id of this execution (fences annotations and logs).
    pub action_id: &'a str,
    /// This call is a rollback of `action`.
    pub rollback: bool,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Did it pass.
    pub passed: bool,
    /// What was observed (`3 replicas`, `pod api-1 Ready after 2.1s`).
    pub detail: String,
}

impl CheckResult {
    /// A pass.
    pub fn pass(detail: impl Into<String>) -> Self {
        Self {
            passed: true,
            detail: detail.into(),
        }
    }

    /// A failure.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            passed: false,
            detail: detail.into(),
        }
    }
}

/// What an action did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionReport {
    /// Human-readable summary (`scaled web from 3 to 5 replicas`).
    pub detail: String,
    /// Values observed while acting that a rollback may need (`old_replicas`).
    pub captured: BTreeMap<String, String>,
    /// The action looked at the live object and refused to change it (a scale whose target
    /// breaks its runbook's direction or bounds against the live count, a pinned undo whose
    /// deployment is no longer at the pinned revisions): nothing was changed,
    /// and the pipeline records `aborted` with this reason instead of verifying anything.
    pub refused: Option<String>,
}

/// An action that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// Carries out actions and runs checks.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Run one check. Checks never panic or error out: a check that cannot observe its
    /// condition fails with the reason in `detail` (never assume success).
    async fn check(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> CheckResult;

    /// Carry out an action (also used for rollbacks).
    async fn execute(&self, action: &Action, ctx: &ExecContext<'_>) -> Result<ActionReport, ExecError>;

    /// Bind an action to the live facts that decide what it will do, before a human is asked to
    /// approve it: the pipeline pins when it creates an approval (the hash and the displayed
    /// action then include those facts) and again right before the approved action runs, and
    /// refuses it when the two differ. A `rollout_undo` gets the deployment's current revision
    /// and the one it would restore ([`crate::runbook::RevisionPin`]), and [`Executor::execute`]
    /// refuses a pinned undo whose revisions no longer hold. Actions whose effect their rendered
    /// fields already state come back unchanged (the default). An error means those facts could
    /// not be read: nothing may be asked for or run on a guess.
    async fn pin(&self, action: &Action) -> Result<Action, ExecError> {
        Ok(action.clone())
    }

    /// Short name for logs and `/readyz`.
    fn name(&self) -> &'static str;
}
