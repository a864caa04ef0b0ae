//! In-process guardrail store: the same semantics as the Redis scripts, for one process.
//!
//! Used by `demo`, `replay` and unit tests, where there is one replica and time comes from an
//! injected [`Clock`] (so a replay with `ManualClock` is deterministic). Every method is a line-by-
//! line mirror of the matching Lua script in `src/guardrails/` (`decide.lua`, `finish.lua`,
//! `renew.lua`, `record.lua`); the one behaviour suite in `tests/common/guardrail_suite.rs` holds
//! both to the same answers. One [`Mutex`] around plain maps gives the atomicity a Lua script has
//! in Redis: every call reads and writes under one lock, and never awaits while holding it.
//!
//! Differences from Redis, by design: there is no epoch (the state cannot be lost without the
//! process, and with it every reservation), so the store is never in conservative mode; expiry of
//! records and keys is evaluated lazily against the clock instead of by a server.
//!
//! Where things are: this file holds the state (one map per Redis key, named beside it) and the
//! [`GuardrailStore`] entry points; `decide.rs` mirrors `decide.lua`; `execution.rs` mirrors
//! `renew.lua`, `finish.lua` and `record.lua`; `ledger.rs` holds the approvals and the trust
//! ladder ([`super::LedgerStore`]).

mod decide;
mod execution;
mod ledger;

use super::{
    CircuitSnapshot, CircuitState, DecideAnswer, DecideRequest, FinishAnswer, FinishRequest, Guardrail, GuardrailStore,
    RenewRequest, Renewal, StoreError,
};
use crate::clock::{millis, Clock};
use std::sync::{Arc, Mutex, MutexGuard};

/// The maps of the in-process store: keyed by runbook, service, incident and attempt names, with
/// foldhash (seeded per map) rather than SipHash, which cost more than the rest of a lookup.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use ledger::Ledger;

/// How long a claimed incident record outlives its lease (a record whose action started lives
/// at least the idempotency TTL instead, see [`super::Limits::record_ttl_ms`]).
///
/// The config refuses a `max_incident_age` of this or more, so an incident with `detected_at`
/// that is redelivered after its claim expired is recorded as expired without guardrails. Both
/// stores use this value (the Redis store passes it to its scripts).
pub const CLAIM_GRACE_MS: u64 = 3_600_000;

/// Decisions between two sweeps of expired incident records, at least (lazy expiry keeps memory
/// bounded in a long `demo`; reads already ignore expired records). See [`State::sweep`].
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
    /// `rollout:<runbook>` and `rollout:<runbook>:ok` (here, not in the ledger: a decision
    /// reads the record's version in its one step).
    rollouts: HashMap<String, Rollout>,
    /// Decisions since the last sweep of expired incident records.
    since_sweep: u32,
}

/// A runbook's rollout record (`rollout.lua`): `None` position = its policy's first stage.
#[derive(Debug, Default)]
struct Rollout {
    position: Option<crate::rollout::Position>,
    version: u64,
    /// Evidence id → when it counted (ms), the newest `promote_after` at most.
    evidence: HashMap<String, i64>,
}

impl State {
    /// The incident record, unless it has expired (expired records are dropped here).
    fn live_incident(&mut self, id: &str, now: i64) -> Option<&mut Incident> {
        if self.incidents.get(id).is_some_and(|r| r.expires_at <= now) {
            self.incidents.remove(id);
        }
        self.incidents.get_mut(id)
    }

    /// Count a decision, and drop the expired incident records once enough decisions passed:
    /// [`SWEEP_EVERY`], or as many as there are records, whichever is more. A sweep costs one
    /// look at every record, so its cost per decision stays constant however many records a long
    /// run keeps (at most about twice the live ones).
    fn sweep(&mut self, now: i64) {
        self.since_sweep += 1;
        if self.since_sweep as usize >= self.incidents.len().max(SWEEP_EVERY as usize) {
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
}

#[async_trait::async_trait]
impl GuardrailStore for MemoryStore {
    /// In process, a block recorded by a second call costs no round trip.
    fn wants_block_outcomes(&self) -> bool {
        false
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: i64) -> Incident {
        Incident {
            state: ClaimState::Done,
            worker: "w".into(),
            attempt: "a".into(),
            lease_until: 0,
            source: None,
            outcomes: Some("[]".into()),
            answer: None,
            acted_by: None,
            finish: None,
            expires_at,
        }
    }

    /// Expired records go after SWEEP_EVERY decisions in a small store, and after as many
    /// decisions as there are records in a large one; live records stay.
    #[test]
    fn expired_records_are_swept_at_a_constant_cost_per_decision() {
        let mut st = State::default();
        st.incidents.insert("live".into(), record(1_000));
        st.incidents.insert("expired".into(), record(100));
        for _ in 1..SWEEP_EVERY {
            st.sweep(200);
        }
        assert_eq!(st.incidents.len(), 2, "no sweep before {SWEEP_EVERY} decisions");
        st.sweep(200);
        assert_eq!(st.incidents.keys().collect::<Vec<_>>(), ["live"]);

        let n = 3 * SWEEP_EVERY as usize;
        st.incidents.extend((0..n).map(|i| (format!("old-{i}"), record(100))));
        for _ in 1..=n {
            st.sweep(200);
        }
        assert_eq!(
            st.incidents.len(),
            n + 1,
            "no sweep before as many decisions as records"
        );
        st.sweep(200);
        assert_eq!(st.incidents.keys().collect::<Vec<_>>(), ["live"]);
    }
}
