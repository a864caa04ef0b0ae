//! A simulated cluster: the executor of `demo`, `replay` and tests.
//!
//! It keeps a journal of every action it was asked to run (so tests can prove "no executor
//! call"), tracks deployment replica counts so scale rollbacks have something to restore (and
//! refuses a scale against them as the Kubernetes executor does against the live count), tracks
//! deployment revisions as the deployment controller numbers them (a restart or an undo makes a
//! new one; tests move them with [`SimulatedExecutor::set_revision`] to stand for a deploy), so
//! undos are pinned and refused as the Kubernetes executor pins and refuses them, and
//! can be told to fail: a post-check for chosen services (to exercise rollback and the circuit
//! breaker), the action itself, the rollback, or to take a while (to exercise concurrency).

use super::{ActionReport, CheckResult, ExecContext, ExecError, Executor};
use crate::runbook::{scaling, Action, CheckName, CheckSpec, Replicas, RevisionPin};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// Fault injection for the simulated executor.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Post-checks fail for incidents of these services.
    pub fail_post_checks_for: BTreeSet<String>,
    /// Pre-checks fail for these services.
    pub fail_pre_checks_for: BTreeSet<String>,
    /// The action errors for these services.
    pub fail_actions_for: BTreeSet<String>,
    /// Rollback actions (and the checks verifying them) fail for these services.
    pub fail_rollbacks_for: BTreeSet<String>,
    /// Every action takes this long.
    pub action_delay: Duration,
}

/// One action the simulated cluster carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Incident id.
    pub incident_id: String,
    /// Runbook id.
    pub runbook: String,
    /// Action kind.
    pub kind: String,
    /// kubectl-style rendering.
    pub display: String,
}

/// The simulated executor.
#[derive(Debug, Default)]
pub struct SimulatedExecutor {
    faults: Mutex<Faults>,
    journal: Mutex<Vec<JournalEntry>>,
    journal_file: Option<std::path::PathBuf>,
    replicas: Mutex<BTreeMap<(String, String), u32>>,
    revisions: Mutex<BTreeMap<(String, String), i64>>,
}

/// The revision an unknown deployment starts at: one earlier revision to roll back to.
pub const START_REVISION: i64 = 2;

impl SimulatedExecutor {
    /// A simulated cluster where everything succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulated cluster with faults.
    pub fn with_faults(faults: Faults) -> Self {
        Self {
            faults: Mutex::new(faults),
            ..Self::default()
        }
    }

    /// Also append every action as one JSON line to `path`, so several worker processes can be
    /// audited together (each line is written with one `O_APPEND` write).
    pub fn with_journal_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.journal_file = Some(path.into());
        self
    }

    /// Change the faults (tests and demo flip them between incidents).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    /// Every action carried out so far, in order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        lock(&self.journal).clone()
    }

    fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// The revision of a deployment (`deployment.kubernetes.io/revision` on a real one);
    /// [`START_REVISION`] for one never seen.
    pub fn revision(&self, namespace: &str, deployment: &str) -> i64 {
        let key = (namespace.to_string(), deployment.to_string());
        lock(&self.revisions).get(&key).copied().unwrap_or(START_REVISION)
    }

    /// Set a deployment's revision: a deploy outside remediator (tests).
    pub fn set_revision(&self, namespace: &str, deployment: &str, revision: i64) {
        lock(&self.revisions).insert((namespace.to_string(), deployment.to_string()), revision);
    }

    /// What an undo of the deployment would go from and to: the simulated history is linear,
    /// so the revision below the current one.
    fn undo_pin(&self, namespace: &str, deployment: &str) -> Result<RevisionPin, ExecError> {
        let from = self.revision(namespace, deployment);
        if from <= 1 {
            return Err(ExecError(format!(
                "deployment {namespace}/{deployment} has no previous revision to roll back to (current revision {from})"
            )));
        }
        Ok(RevisionPin { from, to: from - 1 })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl Executor for SimulatedExecutor {
    async fn check(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> CheckResult {
        let faults = self.faults();
        let service = ctx.incident.service();
        let is_post = matches!(
            check.name,
            CheckName::PodBecomesReady
                | CheckName::MetricsImproved
                | CheckName::ErrorRateNormalized
                | CheckName::DeploymentRolledOut
                | CheckName::PrometheusQuery
        );
        let fail = if ctx.rollback {
            &faults.fail_rollbacks_for
        } else if is_post {
            &faults.fail_post_checks_for
        } else {
            &faults.fail_pre_checks_for
        };
        if fail.contains(service) {
            CheckResult::fail(format!("simulated: {} failed for {service}", check.name()))
        } else {
            CheckResult::pass(format!("simulated: {} ok", check.name()))
        }
    }

    async fn execute(&self, action: &Action, ctx: &ExecContext<'_>) -> Result<ActionReport, ExecError> {
        let faults = self.faults();
        let is_rollback = ctx.rollback;
        // Journal first: the journal records every action the executor was asked to run, even
        // one whose process is killed halfway through it.
        let entry = JournalEntry {
            incident_id: ctx.incident.id.clone(),
            runbook: ctx.runbook.to_string(),
            kind: action.kind().to_string(),
            display: action.view().display,
        };
        if let Some(path) = &self.journal_file {
            append_line(path, &entry, is_rollback)
                .map_err(|e| ExecError(format!("journal {}: {e}", path.display())))?;
        }
        lock(&self.journal).push(entry);
        if !faults.action_delay.is_zero() {
            tokio::time::sleep(faults.action_delay).await;
        }
        let service = ctx.incident.service();
        let failing = if is_rollback {
            &faults.fail_rollbacks_for
        } else {
            &faults.fail_actions_for
        };
        if failing.contains(service) {
            return Err(ExecError(format!("simulated: {} failed for {service}", action.kind())));
        }
        let mut report = ActionReport {
            detail: format!("simulated: {}", action.view().display),
            ..Default::default()
        };
        // A scale to zero is a restore to 0, as in the Kubernetes executor.
        let to_zero = Replicas::Restore(0);
        let scale = match action {
            Action::ScaleDeployment {
                namespace,
                deployment,
                replicas,
            } => Some((namespace, deployment, replicas)),
            Action::ScaleToZero { namespace, deployment } => Some((namespace, deployment, &to_zero)),
            _ => None,
        };
        if let Some((namespace, deployment, replicas)) = scale {
            let mut map = lock(&self.replicas);
            let key = (namespace.clone(), deployment.clone());
            // Unknown deployments start where the incident says they are, else at 1.
            let current = *map
                .entry(key.clone())
                .or_insert_with(|| ctx.vars.count("old_replicas").unwrap_or(1));
            // The same live-count rule as the Kubernetes executor.
            let target = match scaling::judged(namespace, deployment, replicas.target(current)) {
                Ok(t) => t,
                Err(refused) => {
                    report.refused = Some(refused);
                    report.detail = format!("simulated: {deployment} left at {current} replicas");
                    return Ok(report);
                }
            };
            map.insert(key, target);
            report.captured.insert("old_replicas".into(), current.to_string());
            report.detail = format!("simulated: scaled {deployment} from {current} to {target} replicas");
        }
        if let Action::RolloutRestart { namespace, deployment } = action {
            // A new pod template: the controller makes a new revision.
            let next = self.revision(namespace, deployment) + 1;
            self.set_revision(namespace, deployment, next);
        }
        if let Action::RolloutUndo {
            namespace,
            deployment,
            pin,
        } = action
        {
            // The same rule as the Kubernetes executor: a pinned undo only at its revisions.
            let live = self.undo_pin(namespace, deployment)?;
            if let Some(p) = pin.filter(|p| *p != live) {
                report.refused = Some(format!(
                    "deployment {namespace}/{deployment} is at revision {} (an undo would restore revision {}), \
                     but this undo was approved at revision {} to restore revision {}: the deployment changed \
                     since the approval was asked for (ask again)",
                    live.from, live.to, p.from, p.to
                ));
                report.detail = format!("simulated: {deployment} left at revision {}", live.from);
                return Ok(report);
            }
            // The restored template becomes the newest revision, as the controller renumbers it.
            self.set_revision(namespace, deployment, live.from + 1);
            report
                .captured
                .insert("undone_from_revision".into(), live.from.to_string());
            report.captured.insert("restored_revision".into(), live.to.to_string());
        }
        Ok(report)
    }

    async fn pin(&self, action: &Action) -> Result<Action, ExecError> {
        match action {
            Action::RolloutUndo {
                namespace, deployment, ..
            } => Ok(Action::RolloutUndo {
                namespace: namespace.clone(),
                deployment: deployment.clone(),
                pin: Some(self.undo_pin(namespace, deployment)?),
            }),
            other => Ok(other.clone()),
        }
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

fn append_line(path: &std::path::Path, e: &JournalEntry, rollback: bool) -> std::io::Result<()> {
    use std::io::Write;
    let line = serde_json::json!({
        "incident_id": e.incident_id,
        "runbook": e.runbook,
        "kind": e.kind,
        "display": e.display,
        "rollback": rollback,
        "pid": std::process::id(),
        "at_ms": chrono::Utc::now().timestamp_millis(),
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}
