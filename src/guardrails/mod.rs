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
//!
//! The approvals and the trust ladder ([`LedgerStore`] and its types, in `ledger.rs`) are kept by
//! the same stores, so every replica shares one truth for them too; [`Store`] is both traits.

mod ledger;
pub mod memory;
pub mod redis;
#[cfg(test)]
mod tests;
pub mod topology;

pub use ledger::{Answer, AnswerResult, Approval, ApprovalState, LedgerStore, PendingSummary, TrustStats};

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

    /// What a `Check`, `Reserve` or `DryRun` is about; `None` for a `Record`.
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            Admission::Record { .. } => None,
            Admission::Check { scope, .. } | Admission::Reserve { scope, .. } | Admission::DryRun { scope, .. } => {
                Some(scope)
            }
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
    /// For `Check`, `Reserve` and `DryRun`: the outcome to record if a guardrail blocks, so the
    /// store marks the incident done in the same call (no second round trip to record it).
    /// `None`: a block leaves the incident claimed, and the caller records its outcome with
    /// [`GuardrailStore::record`]. Ignored for `Record`.
    pub on_block: Option<BlockedRecord>,
    /// For `Check`, `Reserve` and `DryRun` of a runbook with a rollout policy: the version of
    /// its rollout record the decision was taken in. If the record holds another one now, the
    /// store answers [`DecideAnswer::StageChanged`] and writes nothing.
    pub rollout_version: Option<u64>,
}

/// The outcome events of a blocked decision, as the store completes them: their JSON array with
/// the block's detail and guardrail left out, so that
/// `head + detail (JSON-escaped) + mid + guardrail name + tail` is the array
/// ([`BlockedRecord::render`]). The caller writes everything else (event id, times, the reason's
/// wording around the detail); the store adds only the two facts it alone knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRecord {
    /// The array up to the detail (it ends inside the reason's JSON string).
    pub head: String,
    /// From after the detail up to the guardrail's name (it ends inside that JSON string).
    pub mid: String,
    /// From after the guardrail's name to the end of the array.
    pub tail: String,
}

impl BlockedRecord {
    /// Split `json`, the outcome array as a block by `guardrail` would read with `detail_mark`
    /// for the store's detail, into the pieces around the detail and the guardrail's name.
    /// `None` unless the mark and the `"guardrail":"<name>"` field each occur exactly once, the
    /// field after the mark (inside JSON strings quotes are escaped, so a hostile value cannot
    /// fake the field; a value holding the mark only makes the split fail).
    pub fn split(json: &str, detail_mark: &str, guardrail: Guardrail) -> Option<Self> {
        let field = format!("\"guardrail\":\"{}\"", guardrail.as_str());
        let once = |pat: &str| json.find(pat).filter(|&at| json[at + pat.len()..].find(pat).is_none());
        let (d, f) = (once(detail_mark)?, once(&field)?);
        let name_at = f + field.len() - guardrail.as_str().len() - 1;
        (d + detail_mark.len() <= f).then(|| BlockedRecord {
            head: json[..d].to_owned(),
            mid: json[d + detail_mark.len()..name_at].to_owned(),
            tail: json[name_at + guardrail.as_str().len()..].to_owned(),
        })
    }

    /// The outcome array of a block by `guardrail` with `detail` (what `decide.lua` stores).
    pub fn render(&self, guardrail: Guardrail, detail: &str) -> String {
        let quoted = serde_json::to_string(detail).unwrap_or_else(|_| "\"\"".to_owned());
        let escaped = &quoted[1..quoted.len() - 1];
        [
            self.head.as_str(),
            escaped,
            self.mid.as_str(),
            guardrail.as_str(),
            self.tail.as_str(),
        ]
        .concat()
    }
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
    /// The runbook's rollout stage changed since the decision was taken
    /// ([`DecideRequest::rollout_version`]): nothing was claimed or reserved; the caller reads
    /// the record again and decides afresh.
    StageChanged,
}

impl DecideAnswer {
    /// A batch ends at this answer ([`GuardrailStore::decide_batch`]): it holds a reservation
    /// the caller must use and release before deciding anything after it (`Allowed` to a
    /// `Reserve` or a `DryRun`), or the incident is claimed by another replica and the caller
    /// waits for it first (`InProgress`), or the caller decides it again in its runbook's new
    /// rollout stage, in order, before the requests after it (`StageChanged`).
    pub fn ends_batch(&self, admission: &Admission) -> bool {
        match self {
            DecideAnswer::Allowed { .. } => matches!(admission, Admission::Reserve { .. } | Admission::DryRun { .. }),
            DecideAnswer::InProgress { .. } | DecideAnswer::StageChanged => true,
            _ => false,
        }
    }
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

    /// Whether a caller should give its requests the outcome of a block
    /// ([`DecideRequest::on_block`]), so that the store records it in the call that finds it.
    /// Worth it for a store across the network (it saves the second round trip of
    /// [`GuardrailStore::record`]); a store in the same process answers both calls at the cost of a
    /// function call, and building the outcome for every guarded decision would cost more than it
    /// saves. Either way the store honours `on_block` when it is given, and the outcomes are the
    /// same.
    fn wants_block_outcomes(&self) -> bool {
        true
    }

    /// [`GuardrailStore::decide`] for several requests, in order, up to and including the first
    /// answer the caller must act on before it goes on ([`DecideAnswer::ends_batch`]: a
    /// reservation, or a claim another replica holds): the answers are those of deciding them
    /// one after another, and the requests after that one are left undecided, so the caller
    /// runs that action (or waits for that claim) before it asks for them, as it would one at a
    /// time. The Redis store decides them in one script call (one round trip, nothing from
    /// another replica in between); this default asks one at a time.
    ///
    /// After an error some of them may have been decided: retrying the same requests (same
    /// attempts) is safe, since a store replays an attempt's answer instead of deciding again.
    async fn decide_batch(&self, reqs: &[DecideRequest]) -> Result<Vec<DecideAnswer>, StoreError> {
        let mut answers = Vec::with_capacity(reqs.len());
        for req in reqs {
            let answer = self.decide(req).await?;
            let ends = answer.ends_batch(&req.admission);
            answers.push(answer);
            if ends {
                break;
            }
        }
        Ok(answers)
    }

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

/// Everything a replica shares: guardrails, approvals and the trust ladder.
pub trait Store: GuardrailStore + LedgerStore {}

impl<T: GuardrailStore + LedgerStore> Store for T {}
