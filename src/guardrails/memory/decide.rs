//! `decide.lua` in process: the idempotency claim, then every guardrail checked (and, for an
//! execution or a dry run, reserved) in the script's order, under the store's one lock.
//!
//! Kept step for step with `src/guardrails/decide.lua` (the step numbers are the script's), so a
//! change to one is made to the other; the behaviour suite holds both to the same answers.

use super::HashMap;
use super::{blocked, ceil_s, ms, ClaimState, Incident, MemoryStore, State, CLAIM_GRACE_MS};
use crate::guardrails::{Admission, CircuitState, DecideAnswer, DecideRequest, Guardrail, Limits, Scope};

impl MemoryStore {
    /// `decide.lua`, step by step.
    pub(super) fn decide_at(st: &mut State, now: i64, req: &DecideRequest) -> DecideAnswer {
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
        // Rollout: a decision taken in another rollout stage than the record holds is refused
        // before anything is written (decide.lua step 2b, which comes after its interrupted reply).
        if let (None, Some(v), false) = (&interrupted, req.rollout_version, mode == "record") {
            let runbook = req.admission.scope().map_or("", |s| s.runbook.as_str());
            if st.rollouts.get(runbook).map_or(0, |r| r.version) != v {
                return DecideAnswer::StageChanged;
            }
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
        if let (DecideAnswer::Blocked { guardrail, detail }, Some(record)) = (&answer, &req.on_block) {
            // `blocked`: the block is the final word, recorded in the same step.
            if let Some(rec) = st.incidents.get_mut(id) {
                rec.state = ClaimState::Done;
                rec.outcomes = Some(record.render(*guardrail, detail));
                rec.expires_at = now.saturating_add(ttl);
            }
        }
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
        // Entries older than `keep` matter to nothing below (phrased as an age, like the
        // script's trim).
        entries.retain(|_, at| now.saturating_sub(*at) < keep);
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
}
