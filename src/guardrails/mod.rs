//! Shared guardrails: the one truth every replica consults before it acts.
//!
//! A decision asks the store one question ([`GuardrailStore::decide`]) that claims the incident id
//! (idempotency) and, when the decision would act, checks and reserves every guardrail of
//! docs/design.md#guardrails atomically: circuit breaker, sliding-hour rate limit, cooldown and
//! blast radius. After an execution, [`GuardrailStore::finish`] releases the reservation and feeds
//! the circuit breaker; [`GuardrailStore::record`] stores the final outcome so a redelivered
//! incident re-publishes it instead of acting again.
//!
//! Two implementations pass one behaviour suite (`tests/common/guardrail_suite.rs`):
//! [`memory::MemoryStore`] (demo, replay, unit tests) and [`redis::RedisStore`] (production; one
//! Lua script per call, Redis `TIME`, one hash-tagged key space).

pub mod memory;
pub mod redis;
pub mod topology;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which guardrail stopped a decision (`outcome.guardrail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guardrail {
    /// More than `max_per_hour` executions of (runbook, service) or (runbook, target) in the
    /// sliding window.
    RateLimit,
    /// The previous execution of (runbook, service) or (runbook, target) was less than
    /// `cooldown_minutes` ago.
    Cooldown,
    /// The runbook's circuit breaker is OPEN, or HALF_OPEN with its one probe in flight.
    CircuitOpen,
    /// Too many actions in flight, or too many distinct services touched in the window (across
    /// all runbooks, or by this runbook).
    BlastRadius,
    /// The store could not be reached; nothing is executed without its guardrails.
    StoreUnavailable,
}

impl Guardrail {
    /// Every guardrail.
    pub const ALL: [Guardrail; 5] = [
        Guardrail::RateLimit,
        Guardrail::Cooldown,
        Guardrail::CircuitOpen,
        Guardrail::BlastRadius,
        Guardrail::StoreUnavailable,
    ];

    /// The wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Guardrail::RateLimit => "rate_limit",
            Guardrail::Cooldown => "cooldown",
            Guardrail::CircuitOpen => "circuit_open",
            Guardrail::BlastRadius => "blast_radius",
            Guardrail::StoreUnavailable => "store_unavailable",
        }
    }

    /// Parse the wire name (used by the Redis store's script answers).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl fmt::Display for Guardrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Circuit breaker state of one runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CircuitState {
    /// Normal operation.
    Closed,
    /// Blocked after `failure_threshold` consecutive failures, until `recovery_timeout` passes.
    Open,
    /// Recovery test: exactly one execution (the probe) may run across all replicas.
    HalfOpen,
}

impl CircuitState {
    /// Gauge value exported as `remediator_circuit_state` (0 closed, 1 half-open, 2 open).
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }

    /// Parse the store's name for the state.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CLOSED" => CircuitState::Closed,
            "OPEN" => CircuitState::Open,
            "HALF_OPEN" => CircuitState::HalfOpen,
            _ => return None,
        })
    }

    /// The store's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "CLOSED",
            CircuitState::Open => "OPEN",
            CircuitState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// The numbers one guarded decision is held to, resolved from the runbook and worker config.
///
/// Durations are in milliseconds so tests can run the real Redis scripts with short windows;
/// production uses `rate_window_ms = 3_600_000` (the contract's sliding hour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// At most this many executions of (runbook, service), and of (runbook, target), in any
    /// `rate_window_ms` window.
    pub max_per_hour: u32,
    /// Length of the sliding rate-limit window.
    pub rate_window_ms: u64,
    /// No execution of (runbook, service), nor of (runbook, target), within this long after the
    /// previous one.
    pub cooldown_ms: u64,
    /// Consecutive failed executions of the runbook that open its circuit.
    pub failure_threshold: u32,
    /// How long an OPEN circuit stays open before one probe is allowed (HALF_OPEN).
    pub recovery_ms: u64,
    /// Executions in flight across all replicas and runbooks.
    pub max_concurrent_actions: u32,
    /// Distinct services touched across all runbooks within `services_window_ms`.
    pub max_affected_services: u32,
    /// Distinct services touched by this runbook within `services_window_ms` (the runbook's
    /// `blast_radius_limit`); a service it already touched in the window is always allowed.
    /// 0 = no per-runbook limit.
    pub runbook_max_services: u32,
    /// Window of the affected-services counts (global and per runbook).
    pub services_window_ms: u64,
    /// After an epoch change (state lost), run conservatively (circuits half-open) this long.
    pub conservative_ms: u64,
    /// The idempotency TTL: the record of an incident whose action started (executing, or
    /// interrupted by a crash) lives at least this long, like a done record, so a redelivery
    /// however late within it is never run again.
    pub record_ttl_ms: u64,
}

/// What a guarded decision is about: the runbook, the (primary) service and the object it would
/// touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Runbook id.
    pub runbook: String,
    /// Primary service of the incident, normalised (see [`Scope::normalise_service`]).
    pub service: String,
    /// What the action touches, `<namespace>/<kind>/<name>` (empty: no such object, e.g. a
    /// webhook). The rate limit and cooldown hold per (runbook, service) *and* per (runbook,
    /// target), so a free-text `service` varied for the same object does not walk past them.
    pub target: String,
}

impl Scope {
    /// The service as the guardrails count it: trimmed and lower-cased, so `API` and `api` are
    /// one service.
    pub fn normalise_service(service: &str) -> String {
        service.trim().to_lowercase()
    }
}

/// What the caller wants from [`GuardrailStore::decide`] besides claiming the incident id.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The decision is already final without guardrails (expired, manual, low confidence):
    /// claim the id and store `outcomes` (a JSON array of outcome events) in the same step.
    Record {
        /// JSON array of the outcome events to store.
        outcomes: String,
        /// How long the done record is kept (the idempotency horizon).
        ttl_ms: u64,
    },
    /// Check the guardrails without reserving anything (approval_required, suggest). The
    /// incident is claimed; the caller stores the final outcome with [`GuardrailStore::record`].
    Check {
        /// Runbook and service.
        scope: Scope,
        /// Limits to check.
        limits: Limits,
    },
    /// Check and reserve (execute): on success a rate-limit slot, the cooldown, a blast-radius
    /// lease and possibly the circuit probe are held until [`GuardrailStore::finish`].
    Reserve {
        /// Runbook and service.
        scope: Scope,
        /// Limits to check and reserve against.
        limits: Limits,
    },
    /// A dry run: checked and reserved like `Reserve` (so shadow mode shows what would be
    /// blocked), but it never takes the circuit's half-open probe, never moves the circuit and
    /// never marks the incident executing. Released with [`ExecResult::NotRun`].
    DryRun {
        /// Runbook and service.
        scope: Scope,
        /// Limits to check and reserve against.
        limits: Limits,
    },
}

impl Admission {
    /// The mode's wire name (`decide.lua` ARGV 8); a cached answer is only replayed to a retry
    /// in the same mode.
    pub fn mode(&self) -> &'static str {
        match self {
            Admission::Record { .. } => "record",
            Admission::Check { .. } => "check",
            Admission::Reserve { .. } => "reserve",
            Admission::DryRun { .. } => "dry_run",
        }
    }

    /// The idempotency TTL this request carries (see [`Limits::record_ttl_ms`]).
    pub fn record_ttl_ms(&self) -> u64 {
        match self {
            Admission::Record { ttl_ms, .. } => *ttl_ms,
            Admission::Check { limits, .. } | Admission::Reserve { limits, .. } | Admission::DryRun { limits, .. } => {
                limits.record_ttl_ms
            }
        }
    }
}

/// One call of [`GuardrailStore::decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecideRequest {
    /// The incident id (idempotency key).
    pub incident_id: String,
    /// Unique per processing attempt. Repeating a call with the same attempt and admission mode
    /// (after a timeout whose effect is unknown) returns the first call's answer instead of
    /// reserving twice. Repeating it in another mode (the incident aged out meanwhile) releases
    /// the lease the first answer may have taken, unused, and decides afresh.
    pub attempt: String,
    /// Replica identity, stored with the claim for operators.
    pub worker: String,
    /// Where the incident came from (`topic/partition/offset`), if from Kafka. A redelivery of
    /// the same message is answered `Duplicate { same_source: true }` so its recorded outcome is
    /// re-published; a second message with the same id is a genuine duplicate.
    pub source: Option<String>,
    /// How long the claim and any reservation live unless renewed; a crashed replica's claim
    /// and slots free themselves when it expires.
    pub lease_ms: u64,
    /// What to check or reserve.
    pub admission: Admission,
}

/// The store's answer to [`GuardrailStore::decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum DecideAnswer {
    /// `Admission::Record`: the incident was new; its outcome is stored and it is done.
    Recorded,
    /// `Check`/`Reserve`: every guardrail allows it. For `Reserve`, `probe` says this execution
    /// is the circuit's single HALF_OPEN probe, and `conservative` that the store lost its state
    /// recently (epoch change) so the circuit is treated as half-open.
    Allowed {
        /// This execution is the one HALF_OPEN probe.
        probe: bool,
        /// The store is in conservative mode after losing state.
        conservative: bool,
    },
    /// `Check`/`Reserve`: a guardrail says no; nothing was reserved. The incident is claimed.
    Blocked {
        /// Which guardrail.
        guardrail: Guardrail,
        /// Human-readable detail, e.g. `cooldown active (212s remaining)`.
        detail: String,
    },
    /// The incident id was handled before: its recorded outcomes (JSON array) and whether this
    /// request comes from the same source message (a redelivery) or is a new duplicate.
    Duplicate {
        /// JSON array of the recorded outcome events.
        outcomes: String,
        /// Same `source` as the recorded one.
        same_source: bool,
    },
    /// Another replica holds a live claim on the incident; ask again later.
    InProgress {
        /// The replica holding it.
        worker: String,
        /// Milliseconds until its lease expires.
        retry_after_ms: u64,
    },
    /// A previous attempt started executing and its replica died before finishing. The action
    /// may or may not have happened, so it is never run again: the caller (now holding the
    /// claim) records a final `aborted` outcome. Sticky until that outcome is recorded: if this
    /// caller dies too, the next attempt is Interrupted again.
    Interrupted {
        /// The replica whose action was interrupted.
        worker: String,
    },
}

/// One call of [`GuardrailStore::renew`]: keep a running attempt's claim, lease and probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewRequest {
    /// The incident id (or approval claim id) the attempt holds.
    pub incident_id: String,
    /// The attempt that reserved.
    pub attempt: String,
    /// The runbook, whose circuit may name this attempt as its probe.
    pub runbook: String,
    /// New lease from now.
    pub lease_ms: u64,
    /// The blast-radius limit a lapsed lease is re-acquired under.
    pub max_concurrent_actions: u32,
}

/// The store's answer to [`GuardrailStore::renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Claim and lease extended (and with the lease any probe the attempt holds).
    Renewed,
    /// The lease had lapsed (renewals failed longer than the lease) and other decisions may have
    /// counted it as free; fewer than `max_concurrent_actions` are in flight now, so it was taken
    /// back. `probe`: the attempt holds the circuit's probe again (it had it and nobody took it).
    Reacquired {
        /// The attempt holds the half-open probe.
        probe: bool,
    },
    /// The lease had lapsed and could not be taken back (the limit is full): this action now
    /// runs outside `max_concurrent_actions` (and without any probe it held). The claim is kept.
    Lapsed,
    /// The attempt no longer owns the incident (another attempt took over its expired claim), the
    /// incident is done, or the attempt already finished (a late renewal): nothing changed, no
    /// lease taken back.
    Stale,
}

/// How an execution ended, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecResult {
    /// Post-checks passed.
    Success,
    /// Post-checks failed (rolled back or not).
    Failure,
    /// The rollback itself failed: open the circuit now, whatever the count.
    ForceOpen,
    /// Nothing ran (pre-check aborted, invalid template, a dry run): release without touching
    /// the circuit.
    NotRun,
}

/// One call of [`GuardrailStore::finish`].
#[derive(Debug, Clone, PartialEq)]
pub struct FinishRequest {
    /// The incident id.
    pub incident_id: String,
    /// The attempt that reserved.
    pub attempt: String,
    /// Runbook and service of the reservation.
    pub scope: Scope,
    /// Circuit breaker settings.
    pub limits: Limits,
    /// How it ended.
    pub result: ExecResult,
}

/// The circuit after [`GuardrailStore::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishAnswer {
    /// State after this result.
    pub circuit: CircuitState,
    /// Consecutive failures after this result.
    pub failures: u32,
    /// This result moved the circuit to OPEN.
    pub opened: bool,
}

/// Snapshot of one runbook's circuit, for metrics and `remediator runbooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSnapshot {
    /// Current state (OPEN past its recovery timeout still reads OPEN until a decision moves it).
    pub state: CircuitState,
    /// Consecutive failures.
    pub failures: u32,
}

/// Errors of a store. Every one of them means "do not act": callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("guardrail store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this version does not understand.
    #[error("guardrail store protocol error: {0}")]
    Protocol(String),
}

/// The guardrail store shared by all replicas.
#[async_trait::async_trait]
pub trait GuardrailStore: Send + Sync {
    /// Claim the incident and check (and possibly reserve) its guardrails, atomically.
    async fn decide(&self, req: &DecideRequest) -> Result<DecideAnswer, StoreError>;

    /// Extend the claim, the blast-radius lease and any probe of an attempt that is still
    /// running, so long actions keep their slot while a crashed replica's slot expires.
    ///
    /// [`Renewal::Stale`] (nothing changed) when the attempt no longer owns the incident or the
    /// incident is done. A lease that already lapsed may have been counted as free by another
    /// decision: it is re-acquired only if `max_concurrent_actions` still allows
    /// ([`Renewal::Reacquired`]), else the answer is [`Renewal::Lapsed`], never `Renewed`.
    async fn renew(&self, req: &RenewRequest) -> Result<Renewal, StoreError>;

    /// Release the reservation of an attempt and feed its result to the circuit breaker.
    ///
    /// Idempotent per attempt (a retry returns the first answer). After `Success`, `Failure` or
    /// `ForceOpen` the incident stays "executing" until [`GuardrailStore::record`]: if the
    /// replica dies in between, a redelivery is answered `Interrupted`, never run again. After
    /// `NotRun` it is merely claimed. A finish from an attempt that no longer holds the HALF_OPEN
    /// probe never closes the circuit (see `finish.lua`).
    async fn finish(&self, req: &FinishRequest) -> Result<FinishAnswer, StoreError>;

    /// Store the final outcomes (JSON array) of an incident and mark it done for `ttl_ms`.
    ///
    /// A no-op (still `Ok`) when another attempt owns the incident; it records its own outcome.
    async fn record(&self, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) -> Result<(), StoreError>;

    /// Read a runbook's circuit (no side effects).
    async fn circuit(&self, runbook: &str) -> Result<CircuitSnapshot, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

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
}

/// Everything a replica shares: guardrails, approvals and the trust ladder.
pub trait Store: GuardrailStore + LedgerStore {}

impl<T: GuardrailStore + LedgerStore> Store for T {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire names are a contract: they are stored in Redis (read by every replica, of every
    /// version), written on the audit topic and used as metric labels.
    #[test]
    fn wire_names_are_the_contract_and_parse_back() {
        let guardrails = [
            (Guardrail::RateLimit, "rate_limit"),
            (Guardrail::Cooldown, "cooldown"),
            (Guardrail::CircuitOpen, "circuit_open"),
            (Guardrail::BlastRadius, "blast_radius"),
            (Guardrail::StoreUnavailable, "store_unavailable"),
        ];
        for (g, name) in guardrails {
            assert_eq!((g.as_str(), g.to_string()), (name, name.to_string()));
            assert_eq!(Guardrail::parse(name), Some(g));
        }
        assert_eq!(Guardrail::parse("RATE_LIMIT"), None);
        for (s, name, gauge) in [
            (CircuitState::Closed, "CLOSED", 0),
            (CircuitState::HalfOpen, "HALF_OPEN", 1),
            (CircuitState::Open, "OPEN", 2),
        ] {
            assert_eq!((s.as_str(), s.gauge()), (name, gauge));
            assert_eq!(CircuitState::parse(name), Some(s));
        }
        assert_eq!(CircuitState::parse("closed"), None);
        for (s, name) in [
            (ApprovalState::Pending, "pending"),
            (ApprovalState::Approved, "approved"),
            (ApprovalState::Denied, "denied"),
        ] {
            assert_eq!(s.as_str(), name);
            assert_eq!(ApprovalState::parse(name), Some(s));
        }
        assert_eq!(ApprovalState::parse("expired"), None);
    }

    #[test]
    fn services_are_counted_trimmed_and_lower_cased() {
        assert_eq!(Scope::normalise_service("  API-Server "), "api-server");
    }

    /// The trust ladder's rate: verified successes over executions counted, and a runbook that
    /// never ran is trusted as configured (1.0), never demoted for lack of evidence.
    #[test]
    fn trust_rate_is_successes_over_executions() {
        let rate = |successes, total| TrustStats { successes, total }.rate();
        assert_eq!(rate(0, 0), 1.0);
        assert_eq!(rate(3, 4), 0.75);
        assert_eq!(rate(0, 2), 0.0);
        assert_eq!(rate(5, 5), 1.0);
    }
}
