//! After the decision: `renew.lua` (a running attempt keeps its claim, lease and probe),
//! `finish.lua` (the reservation released and the result fed to the circuit breaker) and
//! `record.lua` (the final outcome stored, the incident done) in process.
//!
//! Each mirrors its script in `src/guardrails/` step for step; see the scripts for why a stale
//! attempt is answered as it is.

use super::{ms, Circuit, ClaimState, Incident, MemoryStore, State, CLAIM_GRACE_MS};
use crate::guardrails::{CircuitState, ExecResult, FinishAnswer, FinishRequest, RenewRequest, Renewal};

impl MemoryStore {
    /// `finish.lua`, step by step (see it for how stale finishes are treated).
    pub(super) fn finish_at(st: &mut State, now: i64, req: &FinishRequest) -> FinishAnswer {
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
    pub(super) fn renew_at(st: &mut State, now: i64, req: &RenewRequest) -> Renewal {
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
    pub(super) fn record_at(st: &mut State, now: i64, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) {
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
