//! A reserved action from start to finish: the per-replica ceiling, pre-checks, the action,
//! post-checks, the rollback and its checks, the lease kept alive meanwhile, and the release of
//! the reservation that feeds the circuit breaker and the trust ladder.

use super::{ms, Engine, Report};
use crate::clock::millis;
use crate::executor::ExecContext;
use crate::guardrails::{ExecResult, FinishRequest, Limits, RenewRequest, Renewal, Scope};
use crate::incident::Incident;
use crate::outcome::{CheckOutcome, Decision, Phase};
use crate::retry::Backoff;
use crate::rollout::Transition;
use crate::runbook::template::Vars;
use crate::runbook::{Action, CheckSpec, Runbook};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// An action whose guardrails `attempt` has reserved, with what running it needs.
#[derive(Clone, Copy)]
pub(super) struct Reserved<'a> {
    /// The id the store's claim is under (the incident's, or its approval's).
    pub claim_id: &'a str,
    pub incident: &'a Incident,
    pub rb: &'a Runbook,
    pub action: &'a Action,
    pub vars: &'a Vars,
    pub attempt: &'a str,
    /// This execution is the circuit's half-open probe.
    pub probe: bool,
}

/// The lease-renewal task of one execution, aborted when dropped: if the execution future is
/// dropped (a drain that aborts it at the end of the grace, a panic in the task that ran it),
/// the task stops renewing instead of keeping the claim and the lease alive for ever.
struct RenewalTask(tokio::task::JoinHandle<()>);

impl Drop for RenewalTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One execution counted in `remediator_actions_in_flight` while it lives: the count goes down
/// however the execution ends, dropped at the end of a drain or by a panic included.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn start(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What happened to an execution's lease while it ran, as its renewal task saw it.
#[derive(Debug, Default)]
struct LeaseLoss {
    /// The blast-radius lease lapsed and could not be taken back (or the claim was taken over).
    slot_lost: AtomicBool,
    /// It held the half-open probe and lost it.
    probe_lost: AtomicBool,
}

/// What an execution ended as, before it is written into an outcome.
struct Execution {
    decision: Decision,
    success: Option<bool>,
    rolled_back: bool,
    reason: String,
    checks: Vec<CheckOutcome>,
    result: ExecResult,
    label: &'static str,
}

impl Engine {
    /// Execute an action whose guardrails are reserved (by `attempt`), release them, feed the
    /// circuit breaker and the trust ladder, and report what happened. `Err` with the detail when
    /// the per-replica ceiling refused it (nothing ran; the reservation is released): a
    /// rate-limit block for the caller's decision.
    pub(super) async fn run_reserved(&self, r: Reserved<'_>, scope: Scope, limits: Limits) -> Result<Report, String> {
        let Reserved {
            claim_id,
            incident,
            rb,
            attempt,
            ..
        } = r;
        let finish = |result| FinishRequest {
            incident_id: claim_id.to_string(),
            attempt: attempt.to_string(),
            scope: scope.clone(),
            limits: limits.clone(),
            result,
        };
        let window = ms(self.settings.rate_window) as i64;
        let now_ms = millis(self.clock.now());
        if !self.ceiling.try_acquire(&scope, rb.max_per_hour, window, now_ms) {
            self.finish_retrying(&finish(ExecResult::NotRun)).await;
            return Err(format!(
                "per-replica ceiling of {}/hour reached for {} on {} (the shared store may have lost state)",
                rb.max_per_hour,
                rb.id,
                incident.service()
            ));
        }
        let exec = self.execute(r).await;
        let fin = self.finish_retrying(&finish(exec.result)).await;
        self.metrics
            .circuit_state
            .with_label_values(&[&rb.id])
            .set(fin.circuit.gauge());
        self.metrics.actions.with_label_values(&[&rb.id, exec.label]).inc();
        let mut reason = exec.reason;
        if fin.opened {
            reason.push_str(&format!(
                "; circuit opened after {} consecutive failure{}",
                fin.failures,
                if fin.failures == 1 { "" } else { "s" }
            ));
        }
        let (trust, rollout) = match exec.result {
            ExecResult::NotRun => (None, None),
            _ => {
                let verified = exec.success == Some(true);
                let trust = self.update_trust(rb, verified, &mut reason).await;
                let result = if verified {
                    Transition::Success
                } else {
                    Transition::Failure
                };
                let rollout = self.rollout_result(rb, result, &incident.id, None, &mut reason).await;
                (trust, rollout)
            }
        };
        Ok(Report {
            decision: exec.decision,
            reason,
            guardrail: None,
            success: exec.success,
            rolled_back: exec.rolled_back,
            checks: exec.checks,
            trust,
            rollout,
        })
    }

    /// Run pre-checks, the action, post-checks and, on failure, the rollback.
    async fn execute(&self, r: Reserved<'_>) -> Execution {
        let Reserved {
            claim_id,
            incident,
            rb,
            action,
            vars,
            attempt,
            probe,
        } = r;
        let started = Instant::now();
        let in_flight = InFlight::start(&self.metrics.in_flight);
        let (renewal, lease) = self.spawn_renewal(claim_id, attempt, &rb.id, probe);
        let mut vars = vars.clone();
        let mut checks = Vec::new();
        let action_id = format!("{}-{}", rb.id, attempt);
        fn ctx<'a>(
            i: &'a Incident,
            rb: &'a Runbook,
            a: &'a Action,
            vars: &'a Vars,
            id: &'a str,
            rollback: bool,
        ) -> ExecContext<'a> {
            ExecContext {
                incident: i,
                runbook: &rb.id,
                action: a,
                vars,
                action_id: id,
                rollback,
            }
        }
        let mut exec = 'run: {
            let pre_ctx = ctx(incident, rb, action, &vars, &action_id, false);
            if let Some(failure) = self
                .run_checks(&rb.pre_checks, Phase::Pre, &pre_ctx, true, &mut checks)
                .await
            {
                break 'run Execution {
                    decision: Decision::Aborted,
                    success: None,
                    rolled_back: false,
                    reason: format!("{failure}; nothing changed"),
                    checks,
                    result: ExecResult::NotRun,
                    label: "aborted",
                };
            }
            let report = match self
                .executor
                .execute(action, &ctx(incident, rb, action, &vars, &action_id, false))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    break 'run Execution {
                        decision: Decision::Executed,
                        success: Some(false),
                        rolled_back: false,
                        reason: format!("action {} failed: {e}", action.kind()),
                        checks,
                        result: ExecResult::Failure,
                        label: "error",
                    };
                }
            };
            if let Some(why) = report.refused {
                break 'run Execution {
                    decision: Decision::Aborted,
                    success: None,
                    rolled_back: false,
                    reason: format!("action {} refused: {why}; nothing changed", action.kind()),
                    checks,
                    result: ExecResult::NotRun,
                    label: "aborted",
                };
            }
            for (k, v) in &report.captured {
                vars.capture(k, v.clone());
            }
            let post_ctx = ctx(incident, rb, action, &vars, &action_id, false);
            let failed = self
                .run_checks(&rb.post_checks, Phase::Post, &post_ctx, false, &mut checks)
                .await;
            let Some(failure) = failed else {
                break 'run Execution {
                    decision: Decision::Executed,
                    success: Some(true),
                    rolled_back: false,
                    reason: format!(
                        "{}; verified by {} post-check{}{}",
                        report.detail,
                        rb.post_checks.len(),
                        if rb.post_checks.len() == 1 { "" } else { "s" },
                        if probe {
                            " (half-open probe succeeded: circuit closed)"
                        } else {
                            ""
                        }
                    ),
                    checks,
                    result: ExecResult::Success,
                    label: "success",
                };
            };
            let Some(rollback) = &rb.rollback else {
                break 'run Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: false,
                    reason: format!("{failure}; no rollback defined (self-healing action)"),
                    checks,
                    result: ExecResult::Failure,
                    label: "failure",
                };
            };
            let rendered = rollback.render(&vars, &rb.scope.namespaces);
            let outcome = match rendered {
                Err(e) => Err(format!("rollback not rendered: {e}")),
                Ok(rb_action) => self
                    .executor
                    .execute(&rb_action, &ctx(incident, rb, action, &vars, &action_id, true))
                    .await
                    .map_err(|e| format!("rollback failed: {e}"))
                    .and_then(|r| match &r.refused {
                        Some(why) => Err(format!("rollback refused: {why}")),
                        None => Ok(r),
                    }),
            };
            let outcome = match outcome {
                Ok(report) => {
                    // Never assume the rollback worked either.
                    let rb_ctx = ctx(incident, rb, action, &vars, &action_id, true);
                    let unverified = self
                        .run_checks(&rb.rollback_checks, Phase::Rollback, &rb_ctx, false, &mut checks)
                        .await;
                    unverified.map_or(Ok(report), Err)
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: true,
                    reason: format!("{failure}; rolled back ({})", r.detail),
                    checks,
                    result: ExecResult::Failure,
                    label: "rolled_back",
                },
                Err(e) => Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: false,
                    reason: format!("{failure}; {e}"),
                    checks,
                    result: ExecResult::ForceOpen,
                    label: "rollback_failed",
                },
            }
        };
        // A runbook that acts automatically with nothing to undo it says so on every execution.
        if let Some(why) = &rb.irreversible_override {
            exec.reason
                .push_str(&format!(" [runbook override allow_irreversible_auto: {why}]"));
        }
        drop(renewal);
        if lease.slot_lost.load(Ordering::SeqCst) {
            exec.reason.push_str(
                "; its blast-radius slot lapsed during the action (lease renewals failed for longer than \
                 guardrails.lease) and could not be taken back: max_concurrent_actions did not hold for it",
            );
        }
        if lease.probe_lost.load(Ordering::SeqCst) {
            // Its result no longer speaks for the circuit (finish.lua), so it closed nothing.
            exec.reason = exec.reason.replace(" (half-open probe succeeded: circuit closed)", "");
            exec.reason
                .push_str("; its half-open probe lapsed during the action and another execution may have probed");
        }
        drop(in_flight);
        self.metrics
            .action_seconds
            .with_label_values(&[&rb.id])
            .observe(started.elapsed().as_secs_f64());
        info!(runbook = %rb.id, result = exec.label, reason = %exec.reason, "execution finished");
        exec
    }

    /// Run `specs` in order, appending each result to `checks`; the first failure, described,
    /// is returned. Pre-checks stop at it (`stop_at_failure`); verification runs every check so
    /// the outcome shows the whole picture.
    async fn run_checks(
        &self,
        specs: &[CheckSpec],
        phase: Phase,
        ctx: &ExecContext<'_>,
        stop_at_failure: bool,
        checks: &mut Vec<CheckOutcome>,
    ) -> Option<String> {
        let what = match phase {
            Phase::Pre => "pre-check",
            Phase::Post => "post-check",
            Phase::Rollback => "rollback check",
        };
        let mut failed = None;
        for c in specs {
            let r = self.executor.check(c, ctx).await;
            if !r.passed && failed.is_none() {
                failed = Some(format!("{what} {} failed: {}", c.name(), r.detail));
            }
            checks.push(CheckOutcome {
                phase,
                name: c.name().into(),
                passed: r.passed,
                detail: r.detail,
            });
            if failed.is_some() && stop_at_failure {
                break;
            }
        }
        failed
    }

    /// Keep the claim, the blast-radius lease and any probe alive while an action runs.
    ///
    /// Renewed every third of the lease; after a store error, again promptly (backoff from
    /// 100 ms, at most a third of the lease), so a short outage does not cost the lease. If the
    /// lease lapsed anyway, the store takes it back when `max_concurrent_actions` still allows;
    /// otherwise the loss is counted (`remediator_lease_lapses_total{result="lost"}`) and written
    /// into the outcome through the returned [`LeaseLoss`].
    fn spawn_renewal(
        &self,
        incident_id: &str,
        attempt: &str,
        runbook: &str,
        probe: bool,
    ) -> (RenewalTask, Arc<LeaseLoss>) {
        let store = Arc::clone(&self.store);
        let metrics = self.metrics.clone();
        let lease = self.settings.guardrails.lease;
        let req = RenewRequest {
            incident_id: incident_id.to_string(),
            attempt: attempt.to_string(),
            runbook: runbook.to_string(),
            lease_ms: ms(lease),
            max_concurrent_actions: self.settings.guardrails.max_concurrent_actions,
        };
        let loss = Arc::new(LeaseLoss::default());
        let seen = Arc::clone(&loss);
        let every = lease / 3;
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), every);
            let (mut wait, mut holds_probe) = (every, probe);
            loop {
                tokio::time::sleep(wait).await;
                wait = every;
                match store.renew(&req).await {
                    Ok(Renewal::Renewed) => backoff.reset(),
                    Ok(Renewal::Reacquired { probe }) => {
                        backoff.reset();
                        warn!(incident_id = %req.incident_id, "execution lease lapsed and was re-acquired");
                        metrics.lease_lapses.with_label_values(&["reacquired"]).inc();
                        if holds_probe && !probe {
                            holds_probe = false;
                            seen.probe_lost.store(true, Ordering::SeqCst);
                        }
                    }
                    Ok(answer @ (Renewal::Lapsed | Renewal::Stale)) => {
                        backoff.reset();
                        if !seen.slot_lost.swap(true, Ordering::SeqCst) {
                            warn!(incident_id = %req.incident_id, ?answer, "execution lease lapsed and could not be re-acquired");
                            metrics.lease_lapses.with_label_values(&["lost"]).inc();
                        }
                        if holds_probe {
                            holds_probe = false;
                            seen.probe_lost.store(true, Ordering::SeqCst);
                        }
                        if answer == Renewal::Stale {
                            // Another attempt owns the incident now: nothing of ours to renew.
                            return;
                        }
                    }
                    Err(e) => {
                        metrics.store_errors.inc();
                        warn!(error = %e, "could not renew the execution lease; retrying");
                        wait = backoff.next_wait();
                    }
                }
            }
        });
        (RenewalTask(task), loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An execution counts in the in-flight gauge exactly while it lives, however it ends.
    #[test]
    fn an_execution_is_in_flight_while_it_lives() {
        let gauge = prometheus::IntGauge::new("in_flight_test", "test").expect("gauge");
        {
            let _a = InFlight::start(&gauge);
            let b = InFlight::start(&gauge);
            assert_eq!(gauge.get(), 2);
            drop(b);
            assert_eq!(gauge.get(), 1);
        }
        assert_eq!(gauge.get(), 0);
        let panicked = std::panic::catch_unwind(|| {
            let _c = InFlight::start(&gauge);
            panic!("an execution that panics");
        });
        assert!(panicked.is_err());
        assert_eq!(gauge.get(), 0, "a panic does not leave it counted");
    }

    /// Dropping the execution (a drain abort, a panic) stops its renewal task.
    #[tokio::test]
    async fn renewal_task_is_aborted_when_dropped() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = RenewalTask(tokio::spawn(async move {
            let _alive = tx;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
        drop(task);
        let ended = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(
            matches!(ended, Ok(Err(_))),
            "the task ended (its sender dropped): {ended:?}"
        );
    }
}
