//! Approvals and the trust ladder in process, behind their own lock (they never share a step
//! with a guardrail decision): the same answers as `approval_create.lua`, `approval_answer.lua`,
//! `approval_pending.lua`, `approval_summary.lua` and `trust_record.lua`, held to them by the
//! ledger behaviour suite (`tests/common/ledger_suite.rs`).

use super::HashMap;
use super::{ms, MemoryStore};
use crate::guardrails::{
    Answer, AnswerResult, Approval, ApprovalState, LedgerStore, PendingSummary, StoreError, TrustStats,
};
use crate::rollout::{self, Position, PromoteRefusal, RolloutPolicy, RolloutRecord, Stage, Transition};
use std::collections::VecDeque;
use std::sync::MutexGuard;

/// Approvals and the trust ladder (mirrors the `approval_*.lua` scripts / `trust_record.lua`).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    approvals: HashMap<String, Approval>,
    /// group -> id of its latest approval (approval_create.lua's `apprg:<group>`).
    groups: HashMap<String, String>,
    trust: HashMap<String, VecDeque<bool>>,
    demoted: HashMap<String, String>,
}

#[async_trait::async_trait]
impl LedgerStore for MemoryStore {
    async fn create_approval(&self, approval: &Approval, ttl_ms: u64) -> Result<Approval, StoreError> {
        let now = self.now();
        let mut ledger = self.ledger();
        // Same as approval_create.lua: join the group's approval while it is pending.
        if !approval.group.is_empty() {
            if let Some(existing) = ledger
                .groups
                .get(&approval.group)
                .and_then(|id| ledger.approvals.get(id))
                .filter(|e| e.state == ApprovalState::Pending && e.expires_at_ms >= now)
            {
                let mut joined = approval.clone();
                joined.id = existing.id.clone();
                joined.created_at_ms = existing.created_at_ms;
                joined.expires_at_ms = existing.expires_at_ms;
                joined.state = ApprovalState::Pending;
                joined.approver = None;
                return Ok(joined);
            }
        }
        let mut a = approval.clone();
        a.created_at_ms = now;
        a.expires_at_ms = now.saturating_add(ms(ttl_ms));
        a.state = ApprovalState::Pending;
        a.approver = None;
        if !a.group.is_empty() {
            ledger.groups.insert(a.group.clone(), a.id.clone());
        }
        ledger.approvals.insert(a.id.clone(), a.clone());
        Ok(a)
    }

    async fn answer_approval(&self, id: &str, answer: &Answer) -> Result<AnswerResult, StoreError> {
        let now = self.now();
        let mut ledger = self.ledger();
        let Some(a) = ledger.approvals.get_mut(id) else {
            return Ok(AnswerResult::NotFound);
        };
        // Same order as approval_answer.lua: single use first, then expiry, then the binding.
        if a.state != ApprovalState::Pending {
            let decision = if answer.approve {
                ApprovalState::Approved
            } else {
                ApprovalState::Denied
            };
            // Same as approval_answer.lua: a repeat is a retry only until the expiry. (Its
            // `retryable` mark, which keeps an answer given by an older version from ever being
            // a retry, always holds here: this store lives and dies with one process.)
            if a.state == decision
                && a.approver.as_deref() == Some(answer.approver.as_str())
                && answer.action_hash.as_ref().is_none_or(|h| *h == a.action_hash)
                && now <= a.expires_at_ms
            {
                return Ok(AnswerResult::Repeated(a.clone()));
            }
            return Ok(AnswerResult::AlreadyAnswered(a.clone()));
        }
        if now > a.expires_at_ms {
            return Ok(AnswerResult::Expired(a.clone()));
        }
        if answer.action_hash.as_ref().is_some_and(|h| *h != a.action_hash) {
            return Ok(AnswerResult::Tampered(a.clone()));
        }
        a.state = if answer.approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        a.approver = Some(answer.approver.clone());
        Ok(AnswerResult::Accepted(a.clone()))
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let now = self.now();
        let ledger = self.ledger();
        let mut v: Vec<Approval> = ledger
            .approvals
            .values()
            .filter(|a| a.state == ApprovalState::Pending && a.expires_at_ms >= now)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(v)
    }

    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        let now = self.now();
        let ledger = self.ledger();
        let pending = ledger
            .approvals
            .values()
            .filter(|a| a.state == ApprovalState::Pending && a.expires_at_ms >= now);
        Ok(PendingSummary {
            count: pending.clone().count(),
            oldest_created_ms: pending.map(|a| a.created_at_ms).min(),
        })
    }

    async fn record_trust(&self, runbook: &str, success: bool, window: u32) -> Result<TrustStats, StoreError> {
        let mut ledger = self.ledger();
        let q = ledger.trust.entry(runbook.to_string()).or_default();
        q.push_front(success);
        q.truncate(window.max(1) as usize);
        Ok(stats(q))
    }

    async fn trust(&self, runbook: &str, window: u32) -> Result<TrustStats, StoreError> {
        let ledger = self.ledger();
        Ok(ledger
            .trust
            .get(runbook)
            .map(|q| stats(&q.iter().take(window.max(1) as usize).copied().collect()))
            .unwrap_or_default())
    }

    async fn demote(&self, runbook: &str, reason: &str) -> Result<bool, StoreError> {
        let mut ledger = self.ledger();
        if ledger.demoted.contains_key(runbook) {
            return Ok(false);
        }
        ledger.demoted.insert(runbook.to_string(), reason.to_string());
        Ok(true)
    }

    async fn demotion(&self, runbook: &str) -> Result<Option<String>, StoreError> {
        Ok(self.ledger().demoted.get(runbook).cloned())
    }

    async fn promote(&self, runbook: &str) -> Result<bool, StoreError> {
        let mut ledger = self.ledger();
        ledger.trust.remove(runbook);
        Ok(ledger.demoted.remove(runbook).is_some())
    }

    async fn rollout(&self, runbook: &str, policy: &RolloutPolicy) -> Result<RolloutRecord, StoreError> {
        let now = self.now();
        let st = self.lock();
        let (position, version, evidence) = match st.rollouts.get(runbook) {
            Some(r) => (
                r.position.unwrap_or_else(|| Position::start(policy)),
                r.version,
                counted(&r.evidence, now, policy),
            ),
            None => (Position::start(policy), 0, 0),
        };
        Ok(RolloutRecord {
            position,
            version,
            evidence,
            changed_from: None,
        })
    }

    async fn rollout_apply(
        &self,
        runbook: &str,
        policy: &RolloutPolicy,
        transition: Transition,
        evidence_id: &str,
    ) -> Result<Result<RolloutRecord, PromoteRefusal>, StoreError> {
        // Same steps as rollout.lua.
        let now = self.now();
        let mut st = self.lock();
        let r = st.rollouts.entry(runbook.to_owned()).or_default();
        let at = r.position.unwrap_or_else(|| Position::start(policy));
        if transition == Transition::Success && at.stage != Stage::Auto {
            r.evidence.insert(evidence_id.to_owned(), now);
            // The newest `promote_after` are kept (rollout.lua's ZREMRANGEBYRANK; its trim by
            // age only frees memory sooner, as evidence out of the window is never counted).
            while r.evidence.len() > policy.promote_after.max(1) as usize {
                let oldest = r
                    .evidence
                    .iter()
                    .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
                    .map(|(id, _)| id.clone());
                if let Some(id) = oldest {
                    r.evidence.remove(&id);
                }
            }
        }
        let mut evidence = counted(&r.evidence, now, policy);
        let (to, clear) = match rollout::apply(policy, at, evidence, transition) {
            Ok(change) => change,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if clear {
            r.evidence.clear();
            evidence = 0;
        }
        if let Some(to) = to {
            r.position = Some(to);
            r.version += 1;
        }
        Ok(Ok(RolloutRecord {
            position: to.unwrap_or(at),
            version: r.version,
            evidence,
            changed_from: to.map(|_| at),
        }))
    }
}

/// Evidence younger than the policy's window (rollout.lua's ZCOUNT).
fn counted(evidence: &HashMap<String, i64>, now: i64, policy: &RolloutPolicy) -> u32 {
    let window = ms(policy.window.as_millis() as u64).max(1);
    evidence.values().filter(|t| **t > now - window).count() as u32
}

fn stats(q: &VecDeque<bool>) -> TrustStats {
    TrustStats {
        successes: q.iter().filter(|s| **s).count() as u32,
        total: q.len() as u32,
    }
}

impl MemoryStore {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
