//! In-process guardrail store: the same semantics as the Redis scripts, for one process.
//!
//! Used by `demo`, `replay` and unit tests, where there is one replica and time comes from an
//! injected [`Clock`] (so a replay with `ManualClock` is deterministic). Every method is a line-by-
//! line mirror of the matching Lua script in this directory (`decide.lua`, `finish.lua`,
//! `renew.lua`, `record.lua`); the one behaviour suite in `tests/common/guardrail_suite.rs` holds
//! both to the same answers. One [`Mutex`] around plain maps gives the atomicity a Lua script has
//! in Redis: every call reads and writes under one lock, and never awaits while holding it.
//!
//! Differences from Redis, by design: there is no epoch (the state cannot be lost without the
//! process, and with it every reservation), so the store is never in conservative mode; expiry of
//! records and keys is evaluated lazily against the clock instead of by a server.

use super::{
    Admission, Answer, AnswerResult, Approval, ApprovalState, CircuitSnapshot, CircuitState, DecideAnswer,
    DecideRequest, ExecResult, FinishAnswer, FinishRequest, Guardrail, GuardrailStore, LedgerStore, Limits,
    PendingSummary, RenewRequest, Renewal, Scope, StoreError, TrustStats,
};
use crate::clock::{millis, Clock};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// How long a claimed incident record outlives its lease (a record whose action started lives
/// at least the idempotency TTL instead, see [`super::Limits::record_ttl_ms`]).
///
/// The config refuses a `max_incident_age` of this or more, so an incident with `detected_at`
/// that is redelivered after its claim expired is recorded as expired without guardrails. Both
/// stores use this value (the Redis store passes it to its scripts).
pub const CLAIM_GRACE_MS: u64 = 3_600_000;

/// Decisions between two sweeps of expired incident records (lazy expiry keeps memory bounded
/// in a long `demo`; reads already ignore expired records).
const SWEEP_EVERY: u32 = 1024;

/// Progress of one incident id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimState {
    /// Claimed by an attempt that has not started an action (or whose action did not run).
    Claimed,
    /// An action was reserved and may have run; only `record` ends this state.
    Executing,
    /// An executing attempt's lease expired and another attempt took the claim over: the action
    /// may have run, so every later attempt is Interrupted too, until `record`.
    Interrupted,
    /// The final outcomes are stored.
    Done,
}

/// The record of one incident id (Redis: hash `inc:<id>`).
#[derive(Debug, Clone)]
struct Incident {
    state: ClaimState,
    worker: String,
    attempt: String,
    lease_until: i64,
    source: Option<String>,
    outcomes: Option<String>,
    /// This attempt's decide answer and the mode it answered, replayed to a retry of the same
    /// attempt in the same mode.
    answer: Option<(&'static str, DecideAnswer)>,
    /// Interrupted: the worker whose action may have run.
    acted_by: Option<String>,
    /// This attempt's finish answer, replayed to a retry of the same finish.
    finish: Option<FinishAnswer>,
    /// When the record disappears (Redis: the key's TTL).
    expires_at: i64,
}

/// One runbook's circuit (Redis: hash `cb:<runbook>`).
#[derive(Debug, Clone)]
struct Circuit {
    state: CircuitState,
    failures: u32,
    opened_at: i64,
    /// The attempt holding the HALF_OPEN (or conservative) probe. The probe is live while that
    /// attempt holds a live entry in `leases`; it has no expiry of its own.
    probe: Option<String>,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            state: CircuitState::Closed,
            failures: 0,
            opened_at: 0,
            probe: None,
        }
    }
}

/// Everything the store knows; the Redis key of each map is named beside it.
#[derive(Debug, Default)]
struct State {
    /// `inc:<id>`.
    incidents: HashMap<String, Incident>,
    /// `rate:<runbook>:<service>`: incident id → reservation ms.
    rates: HashMap<(String, String), HashMap<String, i64>>,
    /// `trate:<runbook>:<target>`: incident id → reservation ms.
    target_rates: HashMap<(String, String), HashMap<String, i64>>,
    /// `cb:<runbook>`.
    circuits: HashMap<String, Circuit>,
    /// `leases`: attempt → lease expiry ms (actions in flight).
    leases: HashMap<String, i64>,
    /// `services`: service → last touched ms.
    services: HashMap<String, i64>,
    /// `rbsvc:<runbook>`: service → last touched by that runbook ms.
    runbook_services: HashMap<String, HashMap<String, i64>>,
    /// Decisions since the last sweep of expired incident records.
    since_sweep: u32,
}

impl State {
    /// The incident record, unless it has expired (expired records are dropped here).
    fn live_incident(&mut self, id: &str, now: i64) -> Option<&mut Incident> {
        if self.incidents.get(id).is_some_and(|r| r.expires_at <= now) {
            self.incidents.remove(id);
        }
        self.incidents.get_mut(id)
    }

    fn sweep(&mut self, now: i64) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.incidents.retain(|_, r| r.expires_at > now);
        }
    }

    /// Cache `answer` as this attempt's answer in `mode` (see `decide.lua`, `reply`) and return
    /// it.
    fn reply(&mut self, id: &str, mode: &'static str, answer: DecideAnswer) -> DecideAnswer {
        if let Some(rec) = self.incidents.get_mut(id) {
            rec.answer = Some((mode, answer.clone()));
        }
        answer
    }
}

/// Guardrail store for a single process; see the module documentation.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    ledger: Mutex<Ledger>,
}

/// Approvals and the trust ladder (mirrors `approve.lua` / `trust.lua`).
#[derive(Debug, Default)]
struct Ledger {
    approvals: HashMap<String, Approval>,
    /// group -> id of its latest approval (approval_create.lua's `apprg:<group>`).
    groups: HashMap<String, String>,
    trust: HashMap<String, VecDeque<bool>>,
    demoted: HashMap<String, String>,
}

/// Milliseconds from config as a signed timestamp offset (saturating: absurd values mean
/// "forever", not a negative window).
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whole seconds for humans, rounded up so "0s remaining" never appears while still blocked.
fn ceil_s(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

fn blocked(guardrail: Guardrail, detail: String) -> DecideAnswer {
    DecideAnswer::Blocked { guardrail, detail }
}

impl MemoryStore {
    /// An empty store reading time from `clock` (`SystemClock` for demo, `ManualClock` for
    /// replay and deterministic tests).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn now(&self) -> i64 {
        millis(self.clock.now())
    }

    /// The state, even if a panicking thread poisoned the lock: every mutation below leaves
    /// the maps consistent at each statement, like a Lua script that errors half-way.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `decide.lua`, step by step.
    fn decide_at(st: &mut State, now: i64, req: &DecideRequest) -> DecideAnswer {
        st.sweep(now);
        let id = req.incident_id.as_str();
        let lease_ms = ms(req.lease_ms);

        let mode = req.admission.mode();
        let ttl = ms(req.admission.record_ttl_ms().max(1));

        // 1. Idempotency.
        let mut interrupted = None;
        let mut release_stale = false;
        let lease_live = st.leases.get(&req.attempt).is_some_and(|&until| until > now);
        if let Some(rec) = st.live_incident(id, now) {
            let same = rec.attempt == req.attempt && rec.answer.is_some();
            if let Some((m, answer)) = &rec.answer {
                // An `allowed` that reserved is replayed only while its lease lives: once it
                // expired, others may have taken the slot and the probe. The attempt never
                // received it, so it decides afresh below.
                let reserved = matches!(answer, DecideAnswer::Allowed { .. }) && matches!(mode, "reserve" | "dry_run");
                if same && *m == mode && (!reserved || lease_live) {
                    return answer.clone();
                }
            }
            if rec.state == ClaimState::Done {
                return DecideAnswer::Duplicate {
                    outcomes: rec.outcomes.clone().unwrap_or_else(|| "[]".to_owned()),
                    same_source: req.source.is_some() && rec.source == req.source,
                };
            }
            if same {
                // The same attempt asks in another mode (or its cached `allowed` lapsed): it never
                // received the cached answer, so never acted on it. Its lease (and any probe with
                // it) is released whatever the state (a dry run holds one while claimed); the
                // rate slot and cooldown stay counted. Then it decides afresh.
                release_stale = true;
            } else {
                if rec.lease_until > now {
                    return DecideAnswer::InProgress {
                        worker: rec.worker.clone(),
                        retry_after_ms: u64::try_from(rec.lease_until - now).unwrap_or(0),
                    };
                }
                // Expired lease: a claim that never acted is taken over; one that may have acted
                // must never act again.
                if rec.state == ClaimState::Executing {
                    interrupted = Some(rec.worker.clone());
                }
            }
            // Interrupted is sticky until an outcome is recorded.
            if rec.state == ClaimState::Interrupted {
                interrupted = Some(rec.acted_by.clone().unwrap_or_else(|| rec.worker.clone()));
            }
        }
        if release_stale {
            st.leases.remove(&req.attempt);
        }

        // Claim (fresh or take-over); a claim outlives its lease by CLAIM_GRACE_MS, an
        // interrupted one lives at least the idempotency TTL.
        let claim_expiry = now.saturating_add(lease_ms).saturating_add(ms(CLAIM_GRACE_MS));
        st.incidents.insert(
            id.to_owned(),
            Incident {
                state: if interrupted.is_some() {
                    ClaimState::Interrupted
                } else {
                    ClaimState::Claimed
                },
                worker: req.worker.clone(),
                attempt: req.attempt.clone(),
                lease_until: now.saturating_add(lease_ms),
                source: req.source.clone(),
                outcomes: None,
                answer: None,
                acted_by: interrupted.clone(),
                finish: None,
                expires_at: if interrupted.is_some() {
                    claim_expiry.max(now.saturating_add(ttl))
                } else {
                    claim_expiry
                },
            },
        );
        if let Some(worker) = interrupted {
            return st.reply(id, mode, DecideAnswer::Interrupted { worker });
        }

        let (scope, limits) = match &req.admission {
            // 3. Record: final without guardrails.
            Admission::Record { outcomes, .. } => {
                if let Some(rec) = st.incidents.get_mut(id) {
                    rec.state = ClaimState::Done;
                    rec.outcomes = Some(outcomes.clone());
                    rec.expires_at = now.saturating_add(ttl);
                }
                return st.reply(id, mode, DecideAnswer::Recorded);
            }
            Admission::Check { scope, limits }
            | Admission::Reserve { scope, limits }
            | Admission::DryRun { scope, limits } => (scope, limits),
        };
        let answer = Self::check_and_reserve(st, now, req, scope, limits, ttl);
        st.reply(id, mode, answer)
    }

    /// `limit` of `decide.lua`: the exact sliding-window rate limit (an entry counts while
    /// now - at < window), then the cooldown since the newest entry, of one rate key.
    fn limit(
        rates: &mut HashMap<(String, String), HashMap<String, i64>>,
        key: &(String, String),
        now: i64,
        keep: i64,
        limits: &Limits,
    ) -> Option<DecideAnswer> {
        let window = ms(limits.rate_window_ms);
        let cooldown = ms(limits.cooldown_ms);
        let entries = rates.entry(key.clone()).or_default();
        entries.retain(|_, at| *at > now.saturating_sub(keep));
        let mut in_window: Vec<i64> = entries
            .values()
            .copied()
            .filter(|at| *at > now.saturating_sub(window))
            .collect();
        in_window.sort_unstable();
        let newest = entries.values().copied().max();
        if entries.is_empty() {
            rates.remove(key);
        }
        let max_per_hour = limits.max_per_hour as usize;
        if in_window.len() >= max_per_hour {
            if max_per_hour == 0 {
                return Some(blocked(
                    Guardrail::RateLimit,
                    "rate limit 0/hour reached (no executions allowed)".to_owned(),
                ));
            }
            // The next slot frees when the entry that would bring the count below the limit
            // leaves the window.
            let next_ms = in_window
                .get(in_window.len() - max_per_hour)
                .map_or(window, |at| at.saturating_add(window) - now);
            return Some(blocked(
                Guardrail::RateLimit,
                format!(
                    "rate limit {}/hour reached (next slot in {}s)",
                    limits.max_per_hour,
                    ceil_s(next_ms)
                ),
            ));
        }
        // Cooldown since the newest execution.
        if cooldown > 0 {
            if let Some(newest) = newest {
                let remaining = newest.saturating_add(cooldown) - now;
                if remaining > 0 {
                    return Some(blocked(
                        Guardrail::Cooldown,
                        format!("cooldown active ({}s remaining)", ceil_s(remaining)),
                    ));
                }
            }
        }
        None
    }

    /// Steps 4a–4f of `decide.lua`: first failing guardrail wins, nothing is reserved on a block.
    fn check_and_reserve(
        st: &mut State,
        now: i64,
        req: &DecideRequest,
        scope: &Scope,
        limits: &Limits,
        ttl: i64,
    ) -> DecideAnswer {
        // A dry run takes the slots a real run would, but never the probe nor the circuit.
        let real = matches!(req.admission, Admission::Reserve { .. });
        let reserve = real || matches!(req.admission, Admission::DryRun { .. });
        // 4a. No epoch in memory: the state cannot be lost while the process lives.
        let conservative = false;

        // 4b. Circuit breaker.
        let (c_state, opened_at, probe) = st
            .circuits
            .get(&scope.runbook)
            .map(|c| (c.state, c.opened_at, c.probe.clone()))
            .unwrap_or((CircuitState::Closed, 0, None));
        let mut take_probe = false;
        if c_state == CircuitState::Open {
            let wait = opened_at.saturating_add(ms(limits.recovery_ms)).saturating_sub(now);
            if wait > 0 {
                return blocked(
                    Guardrail::CircuitOpen,
                    format!("circuit open ({}s until half-open)", ceil_s(wait)),
                );
            }
            take_probe = real;
        } else if c_state == CircuitState::HalfOpen || conservative {
            // Exactly one probe: it is live while its attempt's lease is, and this runs under
            // the lock, so of any number of concurrent callers only the first sees none.
            let live = probe
                .as_ref()
                .and_then(|p| st.leases.get(p))
                .is_some_and(|&until| until > now);
            if live {
                let detail = if c_state == CircuitState::HalfOpen {
                    "circuit half-open, probe in flight"
                } else {
                    "circuit half-open (conservative mode), probe in flight"
                };
                return blocked(Guardrail::CircuitOpen, detail.to_owned());
            }
            take_probe = real;
        }

        // 4c/4d. Rate limit and cooldown, per (runbook, service) and per (runbook, target): both
        // must allow. Entries are kept max(window, cooldown) because the cooldown reads the newest.
        let window = ms(limits.rate_window_ms);
        let cooldown = ms(limits.cooldown_ms);
        let keep = window.max(cooldown).max(1);
        let rate_key = (scope.runbook.clone(), scope.service.clone());
        if let Some(b) = Self::limit(&mut st.rates, &rate_key, now, keep, limits) {
            return b;
        }
        let target_key = (scope.runbook.clone(), scope.target.clone());
        if !scope.target.is_empty() {
            if let Some(b) = Self::limit(&mut st.target_rates, &target_key, now, keep, limits) {
                return b;
            }
        }

        // 4e. Blast radius: actions in flight, distinct services in the window, then distinct
        // services this runbook touched in the same window.
        st.leases.retain(|_, until| *until > now);
        if st.leases.len() >= limits.max_concurrent_actions as usize {
            return blocked(
                Guardrail::BlastRadius,
                format!("max concurrent actions ({}) in flight", limits.max_concurrent_actions),
            );
        }
        let services_from = now.saturating_sub(ms(limits.services_window_ms));
        st.services.retain(|_, at| *at > services_from);
        if !st.services.contains_key(&scope.service) && st.services.len() >= limits.max_affected_services as usize {
            return blocked(
                Guardrail::BlastRadius,
                format!(
                    "max affected services ({}) in window reached",
                    limits.max_affected_services
                ),
            );
        }
        // Trimmed and (on Reserve) touched whatever the limit, so a limit added to a runbook
        // counts the services it touched before the change.
        let (runbook_touched, runbook_distinct) = match st.runbook_services.get_mut(&scope.runbook) {
            Some(touched) => {
                touched.retain(|_, at| *at > services_from);
                (touched.contains_key(&scope.service), touched.len())
            }
            None => (false, 0),
        };
        if runbook_distinct == 0 {
            st.runbook_services.remove(&scope.runbook);
        }
        let rb_max = limits.runbook_max_services;
        if rb_max > 0 && !runbook_touched && runbook_distinct >= rb_max as usize {
            let unit = if rb_max == 1 { "service" } else { "services" };
            return blocked(
                Guardrail::BlastRadius,
                format!("runbook blast radius ({rb_max} {unit} per window) reached"),
            );
        }

        // 4f. Allowed: Reserve takes every slot at once; Check leaves the incident claimed only.
        if reserve {
            // Keyed by incident id: re-reserving the same incident (after NotRun) moves its entry.
            st.rates
                .entry(rate_key)
                .or_default()
                .insert(req.incident_id.clone(), now);
            if !scope.target.is_empty() {
                st.target_rates
                    .entry(target_key)
                    .or_default()
                    .insert(req.incident_id.clone(), now);
            }
            st.leases
                .insert(req.attempt.clone(), now.saturating_add(ms(req.lease_ms)));
            st.services.insert(scope.service.clone(), now);
            st.runbook_services
                .entry(scope.runbook.clone())
                .or_default()
                .insert(scope.service.clone(), now);
            if take_probe {
                let circuit = st.circuits.entry(scope.runbook.clone()).or_default();
                if circuit.state == CircuitState::Open {
                    circuit.state = CircuitState::HalfOpen;
                }
                circuit.probe = Some(req.attempt.clone());
            }
            // Only a real action makes the incident executing; its record then lives at least
            // the idempotency TTL.
            if real {
                if let Some(rec) = st.incidents.get_mut(&req.incident_id) {
                    rec.state = ClaimState::Executing;
                    rec.expires_at = rec.expires_at.max(now.saturating_add(ttl));
                }
            }
        }
        DecideAnswer::Allowed {
            probe: take_probe,
            conservative,
        }
    }

    /// `finish.lua`, step by step (see it for how stale finishes are treated).
    fn finish_at(st: &mut State, now: i64, req: &FinishRequest) -> FinishAnswer {
        let owns = match st.live_incident(&req.incident_id, now) {
            Some(rec) if rec.attempt == req.attempt => {
                if let Some(cached) = rec.finish {
                    return cached;
                }
                true
            }
            _ => false,
        };

        st.leases.remove(&req.attempt);

        let circuit = st.circuits.entry(req.scope.runbook.clone()).or_default();
        let holds_probe = circuit.probe.as_deref() == Some(req.attempt.as_str());
        let mut opened = false;
        let mut open = |c: &mut Circuit| {
            opened = c.state != CircuitState::Open;
            c.state = CircuitState::Open;
            c.opened_at = now;
            // A new OPEN period: whoever probed before no longer speaks for the circuit.
            c.probe = None;
        };
        match req.result {
            ExecResult::Success => {
                // Only the live probe, or any success while CLOSED, resets the breaker: a late
                // success never closes a circuit newer evidence opened or another probe tests.
                if holds_probe || circuit.state == CircuitState::Closed {
                    circuit.state = CircuitState::Closed;
                    circuit.failures = 0;
                    if holds_probe {
                        circuit.probe = None;
                    }
                }
            }
            ExecResult::Failure => {
                circuit.failures = circuit.failures.saturating_add(1);
                if holds_probe
                    || (circuit.state == CircuitState::Closed && circuit.failures >= req.limits.failure_threshold)
                {
                    open(circuit);
                }
            }
            ExecResult::ForceOpen => {
                circuit.failures = circuit.failures.saturating_add(1);
                open(circuit);
            }
            ExecResult::NotRun => {
                // No evidence either way: release the probe so the next caller probes.
                if holds_probe {
                    circuit.probe = None;
                }
            }
        }
        let answer = FinishAnswer {
            circuit: circuit.state,
            failures: circuit.failures,
            opened,
        };

        // The record: an action that ran stays Executing until `record` (a crash before it
        // makes a redelivery Interrupted, never a second action); NotRun returns to Claimed.
        if owns {
            if let Some(rec) = st.incidents.get_mut(&req.incident_id) {
                rec.answer = None;
                rec.finish = Some(answer);
                if req.result == ExecResult::NotRun && rec.state == ClaimState::Executing {
                    rec.state = ClaimState::Claimed;
                }
            }
        } else {
            tracing::warn!(
                incident_id = %req.incident_id,
                attempt = %req.attempt,
                "guardrail finish from an attempt that no longer owns the incident"
            );
        }
        answer
    }

    /// `renew.lua`.
    fn renew_at(st: &mut State, now: i64, req: &RenewRequest) -> Renewal {
        let lease_ms = ms(req.lease_ms);
        let executing = match st.live_incident(&req.incident_id, now) {
            // A finished attempt released its lease: a late renewal never takes one back.
            Some(rec) if rec.attempt == req.attempt && rec.state != ClaimState::Done && rec.finish.is_none() => {
                rec.lease_until = now.saturating_add(lease_ms);
                // Extend, never shorten (an executing record lives at least the idempotency TTL).
                rec.expires_at = rec
                    .expires_at
                    .max(now.saturating_add(lease_ms).saturating_add(ms(CLAIM_GRACE_MS)));
                rec.state == ClaimState::Executing
            }
            _ => {
                tracing::debug!(incident_id = %req.incident_id, attempt = %req.attempt, "guardrail renew of a stale attempt ignored");
                return Renewal::Stale;
            }
        };
        // Only an executing attempt holds a lease.
        if !executing {
            return Renewal::Renewed;
        }
        if let Some(until) = st.leases.get_mut(&req.attempt) {
            if *until > now {
                *until = now.saturating_add(lease_ms);
                return Renewal::Renewed;
            }
        }
        // The lease lapsed: another decision may have counted it as free. Take it back only if
        // the limit still allows; never report it renewed.
        st.leases.retain(|_, until| *until > now);
        if st.leases.len() >= req.max_concurrent_actions as usize {
            // The probe lived with the lease: given up, so its result no longer moves the circuit.
            if let Some(c) = st.circuits.get_mut(&req.runbook) {
                if c.probe.as_deref() == Some(req.attempt.as_str()) {
                    c.probe = None;
                }
            }
            return Renewal::Lapsed;
        }
        st.leases.insert(req.attempt.clone(), now.saturating_add(lease_ms));
        // The probe is live while its attempt's lease is: still named, nobody took it.
        let probe = st
            .circuits
            .get(&req.runbook)
            .is_some_and(|c| c.probe.as_deref() == Some(req.attempt.as_str()));
        Renewal::Reacquired { probe }
    }

    /// `record.lua`.
    fn record_at(st: &mut State, now: i64, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) {
        let expires_at = now.saturating_add(ms(ttl_ms.max(1)));
        match st.live_incident(incident_id, now) {
            Some(rec) if rec.attempt != attempt => {
                tracing::warn!(
                    incident_id,
                    attempt,
                    owner = %rec.attempt,
                    "guardrail record from an attempt that no longer owns the incident ignored"
                );
            }
            Some(rec) => {
                rec.state = ClaimState::Done;
                rec.outcomes = Some(outcomes.to_owned());
                rec.answer = None;
                rec.expires_at = expires_at;
            }
            None => {
                // Expired during a very long action: re-create it as done so a redelivery never
                // acts (no source known any more).
                st.incidents.insert(
                    incident_id.to_owned(),
                    Incident {
                        state: ClaimState::Done,
                        worker: String::new(),
                        attempt: attempt.to_owned(),
                        lease_until: 0,
                        source: None,
                        outcomes: Some(outcomes.to_owned()),
                        answer: None,
                        acted_by: None,
                        finish: None,
                        expires_at,
                    },
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl GuardrailStore for MemoryStore {
    async fn decide(&self, req: &DecideRequest) -> Result<DecideAnswer, StoreError> {
        let now = self.now();
        Ok(Self::decide_at(&mut self.lock(), now, req))
    }

    async fn renew(&self, req: &RenewRequest) -> Result<Renewal, StoreError> {
        let now = self.now();
        Ok(Self::renew_at(&mut self.lock(), now, req))
    }

    async fn finish(&self, req: &FinishRequest) -> Result<FinishAnswer, StoreError> {
        let now = self.now();
        Ok(Self::finish_at(&mut self.lock(), now, req))
    }

    async fn record(&self, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let now = self.now();
        Self::record_at(&mut self.lock(), now, incident_id, attempt, outcomes, ttl_ms);
        Ok(())
    }

    async fn circuit(&self, runbook: &str) -> Result<CircuitSnapshot, StoreError> {
        let st = self.lock();
        Ok(st.circuits.get(runbook).map_or(
            CircuitSnapshot {
                state: CircuitState::Closed,
                failures: 0,
            },
            |c| CircuitSnapshot {
                state: c.state,
                failures: c.failures,
            },
        ))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
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
        // Same order as approve.lua: single use first, then expiry, then the binding.
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
