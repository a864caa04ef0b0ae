//! Progressive rollout in the engine (docs/rollout.md): the stage a rollout runbook is decided
//! in, the evidence its results add, and the gauges every replica reports.
//!
//! The stage is read from the shared record and cached; the cache is never trusted blindly: a
//! decision carries the version it was taken in, the store refuses it if the record moved on
//! (`DecideAnswer::StageChanged`), and the engine forgets its copy and decides again.

use super::{Engine, EngineError, Report, Subject};
use crate::decision::RolloutFact;
use crate::guardrails::StoreError;
use crate::outcome::{Decision, Outcome, RolloutChange, RolloutView};
use crate::rollout::{in_canary, Position, PromoteRefusal, RolloutPolicy, RolloutRecord, Stage, Transition};
use crate::runbook::Runbook;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a replica uses its copy of a rollout record before reading it again (a change by
/// another replica is caught at once anyway, by the version check of the decision).
const ROLLOUT_CACHE: Duration = Duration::from_secs(5);

impl Engine {
    /// The runbook's rollout record: cached, else read from the store. If the store cannot be
    /// read, the policy's first stage at version 0 (the decision that follows fails closed, or
    /// is refused as taken in a changed stage).
    pub(super) async fn rollout_record(&self, rb: &Runbook, policy: &RolloutPolicy) -> RolloutRecord {
        if let Some((rec, at)) = self.rollouts.lock().unwrap_or_else(|e| e.into_inner()).get(&rb.id) {
            if at.elapsed() < ROLLOUT_CACHE {
                return rec.clone();
            }
        }
        match self.store.rollout(&rb.id, policy).await {
            Ok(rec) => {
                self.cache_rollout(rb, policy, &rec);
                rec
            }
            Err(e) => {
                warn!(error = %e, runbook = %rb.id, "could not read the rollout record");
                RolloutRecord {
                    position: Position::start(policy),
                    version: 0,
                    evidence: 0,
                    changed_from: None,
                }
            }
        }
    }

    /// Read the record again (the store said it changed). An error ends the decision as the
    /// store's unavailability does (the incident is retried), so a store that answers decisions
    /// but not reads cannot make the engine decide again and again.
    pub(super) async fn reload_rollout(&self, rb: &Runbook) -> Result<(), EngineError> {
        let Some(policy) = &rb.rollout else {
            return Ok(());
        };
        self.rollouts.lock().unwrap_or_else(|e| e.into_inner()).remove(&rb.id);
        let rec = self.store.rollout(&rb.id, policy).await.map_err(|e| {
            self.metrics.store_errors.inc();
            EngineError::StoreUnavailable(format!("reading the rollout record of {}: {e}", rb.id))
        })?;
        self.cache_rollout(rb, policy, &rec);
        Ok(())
    }

    fn cache_rollout(&self, rb: &Runbook, policy: &RolloutPolicy, rec: &RolloutRecord) {
        self.set_rollout_gauges(&rb.id, policy, rec.position);
        self.rollouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rb.id.clone(), (rec.clone(), Instant::now()));
    }

    fn set_rollout_gauges(&self, runbook: &str, policy: &RolloutPolicy, at: Position) {
        self.metrics
            .rollout_stage
            .with_label_values(&[runbook])
            .set(at.stage.gauge());
        let share = match at.stage {
            Stage::Auto => 100,
            _ => at.share(policy).map_or(0, i64::from),
        };
        self.metrics.rollout_share.with_label_values(&[runbook]).set(share);
    }

    /// What the decision of an incident on `target` knows of the runbook's rollout, and the view
    /// its outcome carries.
    pub(super) fn rollout_fact(
        rb: &Runbook,
        policy: &RolloutPolicy,
        rec: &RolloutRecord,
        target: &str,
    ) -> (RolloutFact, RolloutView) {
        let share = rec.position.share(policy);
        let member = share.is_some_and(|s| in_canary(&rb.id, target, s));
        let fact = RolloutFact {
            stage: rec.position.stage,
            share,
            in_canary: member,
        };
        let view = RolloutView {
            stage: rec.position.stage,
            share,
            in_canary: share.map(|_| member),
            evidence: None,
            needed: policy.promote_after,
            change: None,
        };
        (fact, view)
    }

    /// Add a result to the runbook's rollout (a verified success, or a failure that steps it
    /// back) and say in `reason` if it moved. The view for the outcome: `decided` (or the stage
    /// the record was in) with the evidence and the change. A store error is logged: the
    /// outcome is never lost for it, and the next result counts again.
    pub(super) async fn rollout_result(
        &self,
        rb: &Runbook,
        transition: Transition,
        evidence_id: &str,
        decided: Option<&RolloutView>,
        reason: &mut String,
    ) -> Option<RolloutView> {
        let policy = rb.rollout.as_ref()?;
        let rec = match self.store.rollout_apply(&rb.id, policy, transition, evidence_id).await {
            Ok(Ok(rec)) => rec,
            Ok(Err(refusal)) => {
                warn!(runbook = %rb.id, %refusal, "rollout result refused");
                return decided.cloned();
            }
            Err(e) => {
                warn!(error = %e, runbook = %rb.id, "could not record the result in the rollout");
                return decided.cloned();
            }
        };
        self.cache_rollout(rb, policy, &rec);
        let before = rec.changed_from.unwrap_or(rec.position);
        let mut view = decided.cloned().unwrap_or(RolloutView {
            stage: before.stage,
            share: before.share(policy),
            in_canary: None,
            evidence: None,
            needed: policy.promote_after,
            change: None,
        });
        view.evidence = Some(rec.evidence);
        if let Some(from) = rec.changed_from {
            let why = match transition {
                Transition::Failure => "a failed verification steps the rollout back".to_string(),
                _ => format!(
                    "{} verified successes within {}h without a failure",
                    policy.promote_after,
                    policy.window.as_secs() / 3600
                ),
            };
            view.change = Some(self.rollout_changed(rb, policy, from, rec.position, why, reason));
        }
        Some(view)
    }

    /// Count and log a stage change; say it in `reason`.
    fn rollout_changed(
        &self,
        rb: &Runbook,
        policy: &RolloutPolicy,
        from: Position,
        to: Position,
        why: String,
        reason: &mut String,
    ) -> RolloutChange {
        self.metrics
            .rollout_changes
            .with_label_values(&[&rb.id, from.stage.as_str(), to.stage.as_str()])
            .inc();
        let (from_text, to_text) = (from.describe(policy), to.describe(policy));
        if to.stage < from.stage {
            warn!(runbook = %rb.id, from = %from_text, to = %to_text, %why, "rollout stepped back");
        } else {
            info!(runbook = %rb.id, from = %from_text, to = %to_text, %why, "rollout moved on");
        }
        reason.push_str(&format!(
            "; rollout of runbook {} moved from {from_text} to {to_text}: {why}",
            rb.id
        ));
        RolloutChange {
            from: from.stage,
            to: to.stage,
            share: to.share(policy),
            why,
        }
    }

    /// A human promotes a rollout runbook one position right (`remediator promote`, the
    /// console): the `rollout_changed` outcome to publish on the audit topic, or why it was
    /// refused (nothing changed then).
    pub async fn promote_rollout(&self, rb: &Runbook, by: &str) -> Result<Result<Outcome, PromoteRefusal>, StoreError> {
        let Some(policy) = rb.rollout.as_ref() else {
            return Ok(Err(PromoteRefusal::NoPolicy));
        };
        let decided_at = self.clock.now();
        let rec = match self
            .store
            .rollout_apply(&rb.id, policy, Transition::Promote, "")
            .await?
        {
            Ok(rec) => rec,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.cache_rollout(rb, policy, &rec);
        let from = rec.changed_from.unwrap_or(rec.position);
        // A promotion needs exactly `promote_after` successes (no more are kept).
        let why = format!("promoted by {by} after {} verified successes", policy.promote_after);
        let mut reason = String::new();
        let change = self.rollout_changed(rb, policy, from, rec.position, why, &mut reason);
        let subject = Subject {
            runbook_id: Some(rb.id.clone()),
            approver: Some(by.to_string()),
            rollout: Some(RolloutView {
                stage: from.stage,
                share: from.share(policy),
                in_canary: None,
                evidence: Some(rec.evidence),
                needed: policy.promote_after,
                change: Some(change),
            }),
            ..Subject::default()
        };
        let reason = reason.trim_start_matches("; ").to_string();
        Ok(Ok(self.outcome(
            &subject,
            decided_at,
            Report::new(Decision::RolloutChanged, reason),
        )))
    }

    /// Set the rollout gauges of every rollout runbook from the shared store.
    pub(super) async fn refresh_rollout_gauges(&self) -> Result<(), StoreError> {
        for rb in self.catalogue.runbooks() {
            if let Some(policy) = &rb.rollout {
                let rec = self.store.rollout(&rb.id, policy).await?;
                self.cache_rollout(rb, policy, &rec);
            }
        }
        Ok(())
    }
}
