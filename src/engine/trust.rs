//! The trust ladder: each runbook's verified results, its demotion from auto to approval when
//! its policy says so, and the gauges every replica reports from the shared record.

use super::Engine;
use crate::guardrails::StoreError;
use crate::outcome::{Mode, TrustView};
use crate::runbook::Runbook;
use std::time::{Duration, Instant};
use tracing::warn;

/// Executions a runbook's verified success rate is computed over when it has no trust policy.
const DEFAULT_TRUST_WINDOW: u32 = 20;
/// How long a replica trusts its cached view of a runbook's demotion.
const DEMOTION_CACHE: Duration = Duration::from_secs(5);

/// How many recent executions a runbook's verified success rate is computed over: its trust
/// policy's window, or [`DEFAULT_TRUST_WINDOW`].
pub(crate) fn window(rb: &Runbook) -> u32 {
    rb.trust.map(|t| t.window).unwrap_or(DEFAULT_TRUST_WINDOW)
}

impl Engine {
    /// Set the trust-ladder gauges (`remediator_runbook_success_rate`, `_executions`, `_demoted`)
    /// and the rollout gauges of every runbook from the shared store, so every replica reports the same record, a
    /// promotion included, not only the replica that last executed the runbook.
    pub async fn refresh_trust_gauges(&self) -> Result<(), StoreError> {
        for rb in self.catalogue.runbooks() {
            let stats = self.store.trust(&rb.id, window(rb)).await?;
            // As the engine sees it: only a runbook with a trust policy is ever demoted.
            let demoted = rb.trust.is_some() && self.store.demotion(&rb.id).await?.is_some();
            self.set_trust_gauges(&rb.id, stats.rate(), stats.total, demoted);
        }
        self.refresh_rollout_gauges().await
    }

    fn set_trust_gauges(&self, runbook: &str, rate: f64, total: u32, demoted: bool) {
        self.metrics.trust_rate.with_label_values(&[runbook]).set(rate);
        self.metrics
            .trust_executions
            .with_label_values(&[runbook])
            .set(i64::from(total));
        self.metrics
            .trust_demoted
            .with_label_values(&[runbook])
            .set(i64::from(demoted));
    }

    /// Feed one verified result to the runbook's record; demote it when its policy says so (and
    /// say so in `reason`). The trust ladder is advisory bookkeeping after the fact: a store
    /// error here is logged, never allowed to lose the outcome.
    pub(super) async fn update_trust(&self, rb: &Runbook, success: bool, reason: &mut String) -> Option<TrustView> {
        let stats = match self.store.record_trust(&rb.id, success, window(rb)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, runbook = %rb.id, "could not record the verified result");
                return None;
            }
        };
        let mut demoted = self.demotion(rb).await.is_some();
        if let Some(policy) = rb.trust {
            if rb.mode == Mode::Auto && !demoted && stats.total >= policy.min_runs && stats.rate() < policy.floor {
                let why = format!(
                    "verified success {:.0}% < floor {:.0}% over the last {} executions",
                    stats.rate() * 100.0,
                    policy.floor * 100.0,
                    stats.total
                );
                match self.store.demote(&rb.id, &why).await {
                    Ok(newly) => {
                        demoted = true;
                        self.cache_demotion(&rb.id, Some(why.clone()));
                        if newly {
                            warn!(runbook = %rb.id, %why, "runbook demoted from auto to approval");
                            reason.push_str(&format!("; runbook {} demoted from auto to approval: {why}", rb.id));
                        }
                    }
                    Err(e) => warn!(error = %e, runbook = %rb.id, "could not demote the runbook"),
                }
            }
        }
        self.set_trust_gauges(&rb.id, stats.rate(), stats.total, demoted);
        Some(TrustView {
            success_rate: stats.rate(),
            executions: stats.total,
            demoted,
        })
    }

    /// Why a runbook with a trust policy is demoted, if it is; cached a few seconds so a
    /// decision does not pay an extra store round trip (another replica's demotion is seen
    /// within [`DEMOTION_CACHE`]).
    pub(super) async fn demotion(&self, rb: &Runbook) -> Option<String> {
        rb.trust?;
        if let Some((why, at)) = self.demotions.lock().unwrap_or_else(|e| e.into_inner()).get(&rb.id) {
            if at.elapsed() < DEMOTION_CACHE {
                return why.clone();
            }
        }
        match self.store.demotion(&rb.id).await {
            Ok(why) => {
                self.cache_demotion(&rb.id, why.clone());
                why
            }
            // Unknown: the guardrail call that follows fails closed anyway.
            Err(_) => None,
        }
    }

    fn cache_demotion(&self, runbook: &str, why: Option<String>) {
        self.demotions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(runbook.to_string(), (why, Instant::now()));
    }
}
