//! The engine's calls to the guardrail store, with their one retry policy.
//!
//! Before anything ran, a store error ends handling ([`EngineError::StoreUnavailable`]: the
//! caller retries the same message later, fail closed). Once the decision is taken, its writes
//! (the release of a reservation, the record of an outcome, a new approval) are retried with
//! [`STORE_RETRY`] until the store answers: forgetting an execution would let it run twice.

use super::{ms, Engine, EngineError, Handled, Source};
use crate::guardrails::{Admission, Approval, DecideAnswer, DecideRequest, FinishAnswer, FinishRequest, StoreError};
use crate::outcome::Outcome;
use crate::retry::{self, Backoff};
use std::fmt::Display;
use std::time::Duration;
use tracing::{info, warn};

/// Waits between tries of a store write that must not be lost.
pub(super) const STORE_RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

impl Engine {
    /// A store call failed: counted (`remediator_store_errors_total`) and logged together.
    pub(super) fn store_failed(&self, what: &str, error: &dyn Display) {
        self.metrics.store_errors.inc();
        warn!(error = %error, "{what}");
    }

    /// The claim-and-admission request for `claim_id` (an incident id, or an approval's claim).
    pub(super) fn request(
        &self,
        claim_id: &str,
        source: Option<&Source>,
        attempt: &str,
        admission: Admission,
    ) -> DecideRequest {
        DecideRequest {
            incident_id: claim_id.to_string(),
            attempt: attempt.to_string(),
            worker: self.settings.worker.clone(),
            source: source.map(ToString::to_string),
            lease_ms: ms(self.settings.guardrails.lease),
            admission,
            on_block: None,
            rollout_version: None,
        }
    }

    /// A request that records `outcomes` (a JSON array of events) as the final word on `claim_id`.
    pub(super) fn record_request(
        &self,
        claim_id: &str,
        source: Option<&Source>,
        attempt: &str,
        outcomes: String,
    ) -> DecideRequest {
        self.request(
            claim_id,
            source,
            attempt,
            Admission::Record {
                outcomes,
                ttl_ms: ms(self.settings.guardrails.idempotency_ttl),
            },
        )
    }

    /// Ask the store, waiting while another replica holds a live claim on the incident.
    pub(super) async fn claim(&self, req: &DecideRequest) -> Result<DecideAnswer, EngineError> {
        loop {
            let answer = self.store.decide(req).await;
            if answer.is_ok() {
                self.metrics.store_decisions_per_call.observe(1.0);
            }
            match answer {
                Ok(DecideAnswer::InProgress { worker, retry_after_ms }) => {
                    info!(%worker, retry_after_ms, "incident claimed by another replica; waiting");
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(50, 1000))).await;
                }
                Ok(a) => return Ok(a),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    return Err(match e {
                        StoreError::Unavailable(m) | StoreError::Protocol(m) => EngineError::StoreUnavailable(m),
                    });
                }
            }
        }
    }

    /// [`Engine::claim`] for several requests in one call to the store, in order: the answers up
    /// to the first that ends a batch ([`DecideAnswer::ends_batch`]). When the first one is a
    /// claim another replica holds, waits for it like [`Engine::claim`] does, so the answers are
    /// never empty unless `requests` is.
    pub(super) async fn claim_batch(&self, requests: &[DecideRequest]) -> Result<Vec<DecideAnswer>, EngineError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        loop {
            let answers = self.store.decide_batch(requests).await;
            if let Ok(a) = &answers {
                self.metrics.store_decisions_per_call.observe(a.len() as f64);
            }
            match answers {
                Ok(answers) => match answers.first() {
                    Some(DecideAnswer::InProgress { worker, retry_after_ms }) => {
                        info!(%worker, retry_after_ms, "incident claimed by another replica; waiting");
                        tokio::time::sleep(Duration::from_millis((*retry_after_ms).clamp(50, 1000))).await;
                    }
                    Some(_) => return Ok(answers),
                    None => {
                        return Err(EngineError::StoreUnavailable(
                            "the store answered none of a batch".into(),
                        ))
                    }
                },
                Err(e) => {
                    self.metrics.store_errors.inc();
                    return Err(match e {
                        StoreError::Unavailable(m) | StoreError::Protocol(m) => EngineError::StoreUnavailable(m),
                    });
                }
            }
        }
    }

    /// Record the final outcomes under `record_id` (retrying: it has been decided) and return them.
    pub(super) async fn finalize(&self, record_id: &str, attempt: &str, outcomes: Vec<Outcome>) -> Handled {
        let handled = Handled::new(outcomes);
        let json = handled.record();
        let ttl = ms(self.settings.guardrails.idempotency_ttl);
        retry::until_ok(
            STORE_RETRY,
            || self.store.record(record_id, attempt, &json, ttl),
            |e| self.store_failed("could not record the outcome; retrying", e),
        )
        .await;
        handled
    }

    /// Release a reservation, retrying until the store answers: an unreleased execution would
    /// keep its blast-radius slot until the lease expires and miss the circuit breaker.
    pub(super) async fn finish_retrying(&self, req: &FinishRequest) -> FinishAnswer {
        retry::until_ok(
            STORE_RETRY,
            || self.store.finish(req),
            |e| self.store_failed("could not release the reservation; retrying", e),
        )
        .await
    }

    /// Store a new pending approval (retrying: the decision to ask is taken), or get the one
    /// already pending for the same group.
    pub(super) async fn create_approval_retrying(&self, pending: &Approval) -> Approval {
        let ttl = ms(self.settings.approval_ttl);
        retry::until_ok(
            STORE_RETRY,
            || self.store.create_approval(pending, ttl),
            |e| self.store_failed("could not store the approval; retrying", e),
        )
        .await
    }
}
