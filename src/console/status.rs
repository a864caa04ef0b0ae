//! What each runbook is allowed to do right now, and why: one reading for `remediator runbooks`
//! and the console.

use crate::guardrails::{CircuitState, Store, StoreError};
use crate::outcome::Mode;
use crate::rollout::{RolloutPolicy, RolloutRecord, Stage};
use crate::runbook::{Catalogue, Risk};
use serde::Serialize;

/// One runbook's state in the store, beside what its catalogue entry says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunbookStatus {
    /// Runbook id.
    pub id: String,
    /// Risk level.
    pub risk: Risk,
    /// The mode the catalogue gives it.
    pub mode: Mode,
    /// The mode decisions use now: `approval` while an `auto` runbook is demoted.
    pub effective_mode: Mode,
    /// Why it was demoted from auto (`remediator promote` lifts it); `None` when it is not.
    pub demoted: Option<String>,
    /// Its circuit breaker.
    pub circuit: CircuitState,
    /// Consecutive failures the circuit counts.
    pub consecutive_failures: u32,
    /// Verified successes over the executions counted; `None` before the first execution.
    pub success_rate: Option<f64>,
    /// Executions counted (the most recent, at most `window`).
    pub executions: u32,
    /// How many recent executions the rate is computed over.
    pub window: u32,
    /// The trust policy, in words (`floor 80% after 5 runs`), or that there is none.
    pub policy: String,
    /// Why it may run `auto` without a rollback, when its catalogue entry says so.
    pub irreversible_override: Option<String>,
    /// Lowest RCA confidence it acts on.
    pub min_confidence: f64,
    /// What it does (`restart_deployment`, `scale_deployment`, ...).
    pub action: &'static str,
    /// Checks run before the action.
    pub pre_checks: Vec<&'static str>,
    /// Checks that verify it.
    pub post_checks: Vec<&'static str>,
    /// What undoes it when verification fails (`None`: nothing).
    pub rollback: Option<&'static str>,
    /// Its progressive rollout, when it has a policy.
    pub rollout: Option<RolloutStatus>,
}

/// Where a runbook's rollout stands and what its next stage needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutStatus {
    /// The stage its shared record holds.
    pub stage: Stage,
    /// `shadow`, `approval`, `canary 25%`, `auto`.
    pub describe: String,
    /// Verified successes counted toward the next stage.
    pub evidence: u32,
    /// How many the policy needs.
    pub needed: u32,
    /// The next stage (`None` at auto).
    pub next: Option<String>,
    /// The next stage is reached on evidence alone (else a human promotes).
    pub next_automatic: bool,
    /// A human may promote it now (`remediator promote`, the console).
    pub promotable: bool,
    /// What the next stage needs, in words.
    pub needs: String,
}

impl RolloutStatus {
    fn of(id: &str, policy: &RolloutPolicy, rec: &RolloutRecord) -> Self {
        let next = rec.position.next(policy);
        let next_automatic = next.is_some_and(|n| n.stage <= policy.automatic_until);
        let enough = rec.evidence >= policy.promote_after;
        let needs = match next {
            None => "nothing: it runs automatically".to_string(),
            Some(n) if next_automatic => format!(
                "{} more verified success(es), then {} on its own",
                policy.promote_after.saturating_sub(rec.evidence),
                n.describe(policy)
            ),
            Some(n) if enough => format!("a human: `remediator promote {id}` moves it to {}", n.describe(policy)),
            Some(n) => format!(
                "{} more verified success(es), then a human promotes it to {}",
                policy.promote_after - rec.evidence,
                n.describe(policy)
            ),
        };
        RolloutStatus {
            stage: rec.position.stage,
            describe: rec.position.describe(policy),
            evidence: rec.evidence,
            needed: policy.promote_after,
            next: next.map(|n| n.describe(policy)),
            next_automatic,
            promotable: next.is_some() && enough,
            needs,
        }
    }
}

/// Every runbook of `catalogue`, in catalogue order, as `store` sees it now.
pub async fn runbook_statuses(catalogue: &Catalogue, store: &dyn Store) -> Result<Vec<RunbookStatus>, StoreError> {
    let mut out = Vec::with_capacity(catalogue.len());
    for rb in catalogue.runbooks() {
        let window = crate::engine::trust_window(rb);
        let stats = store.trust(&rb.id, window).await?;
        let circuit = store.circuit(&rb.id).await?;
        let demoted = store.demotion(&rb.id).await?;
        let rollout = match &rb.rollout {
            Some(policy) => Some(RolloutStatus::of(&rb.id, policy, &store.rollout(&rb.id, policy).await?)),
            None => None,
        };
        let effective_mode = match (&demoted, rb.mode, rollout.as_ref().map(|r| r.stage)) {
            (_, Mode::Auto, Some(Stage::Shadow)) => Mode::DryRun,
            (_, Mode::Auto, Some(Stage::Approval)) | (Some(_), Mode::Auto, _) => Mode::Approval,
            (_, m, _) => m,
        };
        let policy = match (rb.trust, &rb.rollout) {
            (Some(t), _) => format!("floor {:.0}% after {} runs", t.floor * 100.0, t.min_runs),
            (None, Some(_)) => "rollout: a failed verification steps it back".to_string(),
            (None, None) => "no automatic demotion".to_string(),
        };
        out.push(RunbookStatus {
            id: rb.id.clone(),
            risk: rb.risk,
            mode: rb.mode,
            effective_mode,
            demoted,
            circuit: circuit.state,
            consecutive_failures: circuit.failures,
            success_rate: (stats.total > 0).then(|| stats.rate()),
            executions: stats.total,
            window,
            policy,
            irreversible_override: rb.irreversible_override.clone(),
            min_confidence: rb.min_confidence,
            action: rb.action.kind(),
            pre_checks: rb.pre_checks.iter().map(|c| c.name.as_str()).collect(),
            post_checks: rb.post_checks.iter().map(|c| c.name.as_str()).collect(),
            rollback: rb.rollback.as_ref().map(|a| a.kind()),
            rollout,
        });
    }
    Ok(out)
}
