//! Approvals and the trust ladder: the shared state of humans in the loop.
//!
//! An approval (docs/design.md#approvals) is bound to the hash of the action it unlocks, expires,
//! and is answered at most once; the trust ladder keeps each runbook's last verified results and
//! demotes it from `auto` to `approval` when they fall short. Both live in the guardrail store
//! ([`LedgerStore`], implemented by `memory/ledger.rs` and `redis/ledger.rs`) so every replica
//! sees the same pending approvals, answers and demotions.

use super::StoreError;
use crate::rollout::{PromoteRefusal, RolloutPolicy, RolloutRecord, Transition};
use serde::{Deserialize, Serialize};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a human.
    Pending,
    /// Approved (single use: it unlocked one execution attempt).
    Approved,
    /// Denied.
    Denied,
}

impl ApprovalState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            _ => return None,
        })
    }
}

/// An approval a decision asked for (docs/design.md#approvals): bound to the hash of the rendered
/// action, with an expiry, answerable once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Approval id (a UUID).
    pub id: String,
    /// The incident that asked for it.
    pub incident_id: String,
    /// The runbook it would run.
    pub runbook: String,
    /// SHA-256 of the rendered action; an answer naming another hash is refused as tampered.
    pub action_hash: String,
    /// The rendered action, for humans.
    pub action: String,
    /// The incident as parsed (JSON), so the execution re-renders and re-checks it.
    pub incident: String,
    /// When it was created (store clock, ms).
    pub created_at_ms: i64,
    /// When it stops being answerable (store clock, ms).
    pub expires_at_ms: i64,
    /// Current state.
    pub state: ApprovalState,
    /// Who answered.
    pub approver: Option<String>,
    /// What it acts on (runbook and target of the action, `""` = not grouped): while an
    /// approval of a group is pending, later requests of the same group join it instead of
    /// asking again (one pending approval per runbook and target; an alert storm asks once).
    #[serde(default)]
    pub group: String,
}

/// How many approvals wait and since when: what the gauges need, without reading every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingSummary {
    /// Approvals pending and not expired.
    pub count: usize,
    /// When the oldest of them was created (store clock, ms); `None` when none waits.
    pub oldest_created_ms: Option<i64>,
}

/// A human's answer to an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Who answers (audited).
    pub approver: String,
    /// The action hash the human saw; when given it must match the approval's.
    pub action_hash: Option<String>,
}

/// The store's verdict on an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerResult {
    /// Accepted: the approval (now approved or denied) is returned.
    Accepted(Approval),
    /// No such approval (never existed, or long gone).
    NotFound,
    /// Past its expiry.
    Expired(Approval),
    /// Answered before (single use): the earlier answer stands.
    AlreadyAnswered(Approval),
    /// The same approver gave this same answer before (same decision, no other action hash): a
    /// retry of an accepted answer whose handling failed after the store took it. The approval
    /// (as answered) is returned so the caller finishes or re-publishes what the first try
    /// started; the execution's own claim still allows one run at most.
    Repeated(Approval),
    /// The answer names a different action hash than the approval was bound to.
    Tampered(Approval),
}

/// A runbook's verified track record over its last executions (the trust ladder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustStats {
    /// Executions whose post-checks passed.
    pub successes: u32,
    /// Executions counted (at most the window).
    pub total: u32,
}

impl TrustStats {
    /// Verified success rate, 1.0 when nothing ran yet.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            f64::from(self.successes) / f64::from(self.total)
        }
    }
}

/// Approvals and the trust ladder: shared state for humans in the loop, kept by the same store
/// as the guardrails so every replica sees one truth.
#[async_trait::async_trait]
pub trait LedgerStore: Send + Sync {
    /// Store a new pending approval; its `created_at_ms`/`expires_at_ms` are set from the store's
    /// clock (`ttl_ms` from now) and returned. When an approval of the same non-empty `group` is
    /// still pending, nothing is created: the request joins it, and the returned approval carries
    /// the pending one's `id`, `created_at_ms` and `expires_at_ms` (an id other than the one
    /// asked for means "joined").
    async fn create_approval(&self, approval: &Approval, ttl_ms: u64) -> Result<Approval, StoreError>;

    /// Answer an approval atomically: at most one answer is ever accepted; the same answer
    /// again from the same approver is [`AnswerResult::Repeated`], anything else after it
    /// [`AnswerResult::AlreadyAnswered`].
    async fn answer_approval(&self, id: &str, answer: &Answer) -> Result<AnswerResult, StoreError>;

    /// Approvals still waiting, oldest first.
    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError>;

    /// How many approvals wait and the creation time of the oldest, without reading them all
    /// (the gauges every replica refreshes periodically).
    async fn pending_summary(&self) -> Result<PendingSummary, StoreError>;

    /// Add one verified result to a runbook's record (keeping the last `window`) and return it.
    async fn record_trust(&self, runbook: &str, success: bool, window: u32) -> Result<TrustStats, StoreError>;

    /// A runbook's record over the last `window` results.
    async fn trust(&self, runbook: &str, window: u32) -> Result<TrustStats, StoreError>;

    /// Demote a runbook from `auto` to `approval`; `true` if this call demoted it.
    async fn demote(&self, runbook: &str, reason: &str) -> Result<bool, StoreError>;

    /// Why a runbook is demoted, if it is.
    async fn demotion(&self, runbook: &str) -> Result<Option<String>, StoreError>;

    /// Undo a demotion (a human decision); `true` if it was demoted.
    async fn promote(&self, runbook: &str) -> Result<bool, StoreError>;

    /// A runbook's rollout record (docs/rollout.md): where it stands (its policy's first stage
    /// while nothing moved it), the record's version, and the successes counted in the policy's
    /// window. Reads only.
    async fn rollout(&self, runbook: &str, policy: &RolloutPolicy) -> Result<RolloutRecord, StoreError>;

    /// Apply one transition ([`crate::rollout::apply`]) to a runbook's rollout record in one
    /// atomic step: a success (counted once per `evidence_id`, the incident), a failure, or a
    /// human's promotion (`Ok(Err(_))`: refused, nothing changed).
    async fn rollout_apply(
        &self,
        runbook: &str,
        policy: &RolloutPolicy,
        transition: Transition,
        evidence_id: &str,
    ) -> Result<Result<RolloutRecord, PromoteRefusal>, StoreError>;
}
