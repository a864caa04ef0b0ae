//! The one behaviour suite every [`GuardrailStore`] must pass (docs/design.md#guardrails): the
//! in-memory and the Redis store must behave alike.
//!
//! Each case is a plain `async fn` taking a fresh store (for Redis: a fresh uuid key prefix, so
//! cases never see each other's keys). Windows are hundreds of milliseconds and time passes with
//! real `tokio::time::sleep`, so the same cases run against Redis `TIME` and against the memory
//! store with `SystemClock`. Margins around every deadline are at least 150 ms.
//!
//! [`guardrail_suite_tests!`](crate::guardrail_suite_tests) turns every case into a `#[tokio::test]` for one store factory.

use remediator::guardrails::{
    Admission, BlockedRecord, CircuitSnapshot, CircuitState, DecideAnswer, DecideRequest, ExecResult, FinishAnswer,
    FinishRequest, Guardrail, GuardrailStore, Limits, RenewRequest, Renewal, Scope,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store under test.
pub type Store = Arc<dyn GuardrailStore>;

/// Generate one `#[tokio::test]` per suite case. `$make` is an `async fn() -> Option<Store>`;
/// `None` skips (e.g. no `REDIS_URL`).
#[macro_export]
macro_rules! guardrail_suite_tests {
    ($make:path) => {
        $crate::guardrail_suite_tests!(@cases $make;
            record_then_duplicate,
            record_after_check_then_duplicate,
            idempotent_retry_same_attempt,
            finish_retry_is_idempotent,
            in_progress_while_leased,
            claimed_lease_expired_is_taken_over,
            a_stale_finish_leaves_the_new_owner_alone,
            a_stale_record_leaves_the_new_owner_alone,
            executing_lease_expired_is_interrupted,
            finished_then_crashed_is_interrupted_not_run_is_not,
            a_claim_taken_over_starts_clean,
            interrupted_is_sticky_until_recorded,
            same_attempt_in_another_mode_decides_afresh,
            dry_run_never_takes_the_probe_nor_moves_the_circuit,
            stale_record_is_ignored,
            rate_limit_is_an_exact_sliding_window,
            cooldown_reports_remaining_seconds,
            rate_limit_and_cooldown_hold_per_target_whatever_the_service,
            circuit_opens_single_probe_success_closes,
            circuit_probe_failure_reopens,
            success_resets_consecutive_failures,
            stale_probe_finish_does_not_close,
            not_run_probe_releases_probe,
            force_open_opens_at_once,
            blast_radius_concurrency_and_crashed_lease,
            affected_services_window,
            a_service_touched_before_the_window_is_new_in_it,
            runbook_blast_radius_limit,
            runbook_blast_radius_zero_is_unlimited,
            runbook_blast_radius_after_global_services,
            runbook_blast_radius_check_does_not_touch,
            check_does_not_reserve,
            concurrent_reserves_respect_rate_limit,
            concurrent_reserves_respect_max_concurrent,
            concurrent_reserves_respect_runbook_blast_radius,
            renew_keeps_lease_alive,
            lapsed_lease_is_reported_and_reacquired_only_within_the_limit,
            lapsed_probe_is_reacquired_only_if_nobody_took_it,
            circuit_snapshot_and_ping,
            cached_allowed_is_not_replayed_after_its_lease_expired,
            dry_run_lease_is_released_when_the_attempt_asks_in_another_mode,
            lapsed_probe_nobody_took_no_longer_moves_the_circuit,
            renew_after_finish_is_stale_and_takes_nothing_back,
            a_block_with_its_outcome_is_recorded_in_the_same_call,
            a_batch_stops_at_its_first_reservation,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $make().await {
                    $crate::common::guardrail_suite::$case(store).await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Limits that never block: each case tightens the one guardrail it tests.
pub fn open_limits() -> Limits {
    Limits {
        max_per_hour: 10_000,
        rate_window_ms: 60_000,
        cooldown_ms: 0,
        failure_threshold: 3,
        recovery_ms: 60_000,
        max_concurrent_actions: 10_000,
        max_affected_services: 10_000,
        runbook_max_services: 0,
        services_window_ms: 60_000,
        conservative_ms: 0,
        record_ttl_ms: 60_000,
    }
}

/// A (runbook, service) scope.
pub fn scope(runbook: &str, service: &str) -> Scope {
    Scope {
        runbook: runbook.to_owned(),
        service: service.to_owned(),
        target: String::new(),
    }
}

/// A (runbook, service) scope whose action touches `target` (`namespace/kind/name`).
pub fn scope_on(runbook: &str, service: &str, target: &str) -> Scope {
    Scope {
        target: target.to_owned(),
        ..scope(runbook, service)
    }
}

/// Lease long enough never to expire during a case unless the case says so.
pub const LONG_LEASE: u64 = 30_000;

/// A decide request; `attempt` doubles as a readable id in failures.
pub fn request(incident: &str, attempt: &str, worker: &str, lease_ms: u64, admission: Admission) -> DecideRequest {
    DecideRequest {
        incident_id: incident.to_owned(),
        attempt: attempt.to_owned(),
        worker: worker.to_owned(),
        source: Some(format!("incidents/0/{incident}")),
        lease_ms,
        admission,
        on_block: None,
        rollout_version: None,
    }
}

/// Reserve `scope` for `incident` by attempt `attempt`.
pub fn reserve(incident: &str, attempt: &str, scope: &Scope, limits: &Limits, lease_ms: u64) -> DecideRequest {
    request(
        incident,
        attempt,
        "w1",
        lease_ms,
        Admission::Reserve {
            scope: scope.clone(),
            limits: limits.clone(),
        },
    )
}

/// Check `scope` for `incident` by attempt `attempt`.
pub fn check(incident: &str, attempt: &str, scope: &Scope, limits: &Limits, lease_ms: u64) -> DecideRequest {
    request(
        incident,
        attempt,
        "w1",
        lease_ms,
        Admission::Check {
            scope: scope.clone(),
            limits: limits.clone(),
        },
    )
}

/// Finish `attempt` of `incident`.
pub fn finish(incident: &str, attempt: &str, scope: &Scope, limits: &Limits, result: ExecResult) -> FinishRequest {
    FinishRequest {
        incident_id: incident.to_owned(),
        attempt: attempt.to_owned(),
        scope: scope.clone(),
        limits: limits.clone(),
        result,
    }
}

const ALLOWED: DecideAnswer = DecideAnswer::Allowed {
    probe: false,
    conservative: false,
};
const PROBE: DecideAnswer = DecideAnswer::Allowed {
    probe: true,
    conservative: false,
};

async fn decide(store: &Store, req: &DecideRequest) -> DecideAnswer {
    store
        .decide(req)
        .await
        .unwrap_or_else(|e| panic!("decide {}/{}: {e}", req.incident_id, req.attempt))
}

async fn fin(store: &Store, req: &FinishRequest) -> FinishAnswer {
    store
        .finish(req)
        .await
        .unwrap_or_else(|e| panic!("finish {}/{}: {e}", req.incident_id, req.attempt))
}

async fn circuit(store: &Store, runbook: &str) -> CircuitSnapshot {
    store.circuit(runbook).await.expect("circuit")
}

fn assert_blocked(answer: &DecideAnswer, guardrail: Guardrail, detail: &str) {
    match answer {
        DecideAnswer::Blocked {
            guardrail: g,
            detail: d,
        } if *g == guardrail && d == detail => {}
        other => panic!("expected Blocked {{ {guardrail}, {detail:?} }}, got {other:?}"),
    }
}

fn blocked_by(answer: &DecideAnswer, guardrail: Guardrail) -> String {
    match answer {
        DecideAnswer::Blocked { guardrail: g, detail } if *g == guardrail => detail.clone(),
        other => panic!("expected Blocked by {guardrail}, got {other:?}"),
    }
}

/// Sleep until `ms` after `start`.
async fn sleep_until(start: Instant, ms: u64) {
    tokio::time::sleep_until((start + Duration::from_millis(ms)).into()).await;
}

/// The number in `prefix<N>suffix`.
fn number_in(detail: &str, prefix: &str, suffix: &str) -> u64 {
    detail
        .strip_prefix(prefix)
        .and_then(|s| s.strip_suffix(suffix))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail:?} is not {prefix}<N>{suffix}"))
}

/// Run `n` decide requests at once and return their answers (in request order).
async fn concurrently(store: &Store, reqs: Vec<DecideRequest>) -> Vec<DecideAnswer> {
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|req| {
            let store = store.clone();
            tokio::spawn(async move { decide(&store, &req).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

const OUTCOMES: &str = r#"[{"decision":"suggested"}]"#;

// ---------------------------------------------------------------------------------------------
// Idempotency

/// A recorded incident is a duplicate forever after (within its TTL); a redelivery of the same
/// message is told so (same_source) so its outcome is re-published rather than acted on.
pub async fn record_then_duplicate(store: Store) {
    let rec = request(
        "inc-1",
        "a1",
        "w1",
        LONG_LEASE,
        Admission::Record {
            outcomes: OUTCOMES.to_owned(),
            ttl_ms: 60_000,
        },
    );
    assert_eq!(decide(&store, &rec).await, DecideAnswer::Recorded);

    let mut again = reserve("inc-1", "a2", &scope("rb", "svc"), &open_limits(), LONG_LEASE);
    assert_eq!(
        decide(&store, &again).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: true
        }
    );
    again.attempt = "a3".into();
    again.source = Some("incidents/2/99".into());
    assert_eq!(
        decide(&store, &again).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: false
        }
    );
    again.attempt = "a4".into();
    again.source = None;
    assert_eq!(
        decide(&store, &again).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: false
        }
    );

    // Without a source on either side it is never "the same message".
    let mut nosrc = rec.clone();
    nosrc.incident_id = "inc-2".into();
    nosrc.source = None;
    assert_eq!(decide(&store, &nosrc).await, DecideAnswer::Recorded);
    nosrc.attempt = "a5".into();
    assert_eq!(
        decide(&store, &nosrc).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: false
        }
    );

    // A short TTL ends the idempotency horizon.
    let mut short = rec.clone();
    short.incident_id = "inc-3".into();
    short.admission = Admission::Record {
        outcomes: OUTCOMES.to_owned(),
        ttl_ms: 200,
    };
    assert_eq!(decide(&store, &short).await, DecideAnswer::Recorded);
    tokio::time::sleep(Duration::from_millis(400)).await;
    short.attempt = "a6".into();
    assert_eq!(decide(&store, &short).await, DecideAnswer::Recorded);
}

/// Check claims the incident; `record` stores the caller's final outcome; the source of the
/// claim is kept for `same_source`.
pub async fn record_after_check_then_duplicate(store: Store) {
    let s = scope("rb", "svc");
    let req = check("inc-1", "a1", &s, &open_limits(), LONG_LEASE);
    assert_eq!(decide(&store, &req).await, ALLOWED);
    store.record("inc-1", "a1", OUTCOMES, 60_000).await.expect("record");
    // Even the same attempt now gets the recorded outcome, never a replayed Allowed.
    assert_eq!(
        decide(&store, &req).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: true
        }
    );
    let mut other = req.clone();
    other.attempt = "a2".into();
    other.source = Some("incidents/1/7".into());
    assert_eq!(
        decide(&store, &other).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: false
        }
    );
}

/// A retry of the same attempt (after a timeout of unknown effect) gets the first answer and
/// reserves nothing more: while its lease lives it is not decided again (which would find the
/// cooldown its own first answer started).
pub async fn idempotent_retry_same_attempt(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 2,
        ..open_limits()
    };
    let cooled = Limits {
        cooldown_ms: 600_000,
        ..limits.clone()
    };
    let a = reserve("inc-a", "a1", &scope("rb", "svc-a"), &cooled, LONG_LEASE);
    for _ in 0..4 {
        assert_eq!(
            decide(&store, &a).await,
            ALLOWED,
            "a retry within its lease replays the first answer"
        );
    }
    let a = reserve("inc-a2", "a2", &s, &limits, LONG_LEASE);
    for _ in 0..4 {
        assert_eq!(decide(&store, &a).await, ALLOWED);
    }
    let b = reserve("inc-b", "b1", &s, &limits, LONG_LEASE);
    assert_eq!(
        decide(&store, &b).await,
        ALLOWED,
        "the retries of inc-a took one slot only"
    );
    let c = reserve("inc-c", "c1", &s, &limits, LONG_LEASE);
    let first = decide(&store, &c).await;
    blocked_by(&first, Guardrail::RateLimit);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(decide(&store, &c).await, first, "a Blocked answer is replayed as is");

    let r = request(
        "inc-r",
        "r1",
        "w1",
        LONG_LEASE,
        Admission::Record {
            outcomes: OUTCOMES.to_owned(),
            ttl_ms: 60_000,
        },
    );
    assert_eq!(decide(&store, &r).await, DecideAnswer::Recorded);
    assert_eq!(decide(&store, &r).await, DecideAnswer::Recorded);
}

/// A retried finish does not count the same failure twice.
pub async fn finish_retry_is_idempotent(store: Store) {
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(
        decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    let f = finish("inc-1", "a1", &s, &limits, ExecResult::Failure);
    let first = fin(&store, &f).await;
    assert_eq!(
        first,
        FinishAnswer {
            circuit: CircuitState::Closed,
            failures: 1,
            opened: false
        }
    );
    assert_eq!(fin(&store, &f).await, first);
    assert_eq!(circuit(&store, "rb").await.failures, 1);
}

/// Another replica's live claim answers InProgress with the time left on its lease.
pub async fn in_progress_while_leased(store: Store) {
    let s = scope("rb", "svc");
    assert_eq!(
        decide(&store, &check("inc-1", "a1", &s, &open_limits(), 5_000)).await,
        ALLOWED
    );
    let mut other = reserve("inc-1", "a2", &s, &open_limits(), LONG_LEASE);
    other.worker = "w2".into();
    match decide(&store, &other).await {
        DecideAnswer::InProgress { worker, retry_after_ms } => {
            assert_eq!(worker, "w1");
            assert!((1..=5_000).contains(&retry_after_ms), "retry_after_ms {retry_after_ms}");
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    let mut rec = other.clone();
    rec.attempt = "a3".into();
    rec.admission = Admission::Record {
        outcomes: OUTCOMES.into(),
        ttl_ms: 60_000,
    };
    assert!(matches!(decide(&store, &rec).await, DecideAnswer::InProgress { .. }));
}

/// A claim whose lease expired before it started an action is simply taken over.
pub async fn claimed_lease_expired_is_taken_over(store: Store) {
    let s = scope("rb", "svc");
    assert_eq!(
        decide(&store, &check("inc-1", "a1", &s, &open_limits(), 200)).await,
        ALLOWED
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut next = reserve("inc-1", "a2", &s, &open_limits(), LONG_LEASE);
    next.worker = "w2".into();
    assert_eq!(decide(&store, &next).await, ALLOWED);
    let mut third = next.clone();
    third.attempt = "a3".into();
    third.worker = "w3".into();
    assert!(
        matches!(decide(&store, &third).await, DecideAnswer::InProgress { worker, .. } if worker == "w2"),
        "the new owner holds the claim"
    );
}

/// The finish of an attempt whose claim was taken over feeds the circuit (its action ran) but
/// leaves the new owner's claim alone: the owner's own finish is its own, and releases its lease.
pub async fn a_stale_finish_leaves_the_new_owner_alone(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(decide(&store, &check("inc-1", "a1", &s, &limits, 200)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut next = reserve("inc-1", "a2", &s, &limits, LONG_LEASE);
    next.worker = "w2".into();
    assert_eq!(decide(&store, &next).await, ALLOWED);
    let stale = fin(&store, &finish("inc-1", "a1", &s, &limits, ExecResult::Failure)).await;
    assert_eq!(stale.failures, 1, "the stale attempt's failure counts for the circuit");
    let own = fin(&store, &finish("inc-1", "a2", &s, &limits, ExecResult::Success)).await;
    assert_eq!(
        (own.circuit, own.failures),
        (CircuitState::Closed, 0),
        "the owner's success is its own answer"
    );
    assert_eq!(
        decide(&store, &reserve("inc-2", "b1", &s, &limits, LONG_LEASE)).await,
        ALLOWED,
        "the owner's finish released its lease"
    );
}

/// The outcome an attempt records after its claim was taken over is not the incident's: the new
/// owner still holds it, and its own record is the one a duplicate finds.
pub async fn a_stale_record_leaves_the_new_owner_alone(store: Store) {
    let s = scope("rb", "svc");
    assert_eq!(
        decide(&store, &check("inc-1", "a1", &s, &open_limits(), 200)).await,
        ALLOWED
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut next = check("inc-1", "a2", &s, &open_limits(), LONG_LEASE);
    next.worker = "w2".into();
    assert_eq!(decide(&store, &next).await, ALLOWED);
    store
        .record("inc-1", "a1", r#"[{"decision":"stale"}]"#, 60_000)
        .await
        .expect("record");
    let mut third = check("inc-1", "a3", &s, &open_limits(), LONG_LEASE);
    third.worker = "w3".into();
    assert!(
        matches!(decide(&store, &third).await, DecideAnswer::InProgress { worker, .. } if worker == "w2"),
        "the stale record did not finish the incident"
    );
    store.record("inc-1", "a2", OUTCOMES, 60_000).await.expect("record");
    third.attempt = "a4".into();
    assert_eq!(
        decide(&store, &third).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: true
        }
    );
}

/// An attempt that reserved (may have acted) and then lost its lease is never run again.
pub async fn executing_lease_expired_is_interrupted(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(decide(&store, &reserve("inc-1", "a1", &s, &limits, 200)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut next = reserve("inc-1", "a2", &s, &limits, LONG_LEASE);
    next.worker = "w2".into();
    let interrupted = DecideAnswer::Interrupted { worker: "w1".into() };
    assert_eq!(decide(&store, &next).await, interrupted);
    assert_eq!(decide(&store, &next).await, interrupted, "retry of the same attempt");
    let mut third = next.clone();
    third.attempt = "a3".into();
    assert!(matches!(decide(&store, &third).await, DecideAnswer::InProgress { worker, .. } if worker == "w2"));
    // Interrupted took no slot, and the crashed attempt's lease freed its own.
    assert_eq!(
        decide(&store, &reserve("inc-2", "b1", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    store.record("inc-1", "a2", OUTCOMES, 60_000).await.expect("record");
    third.attempt = "a4".into();
    assert!(matches!(decide(&store, &third).await, DecideAnswer::Duplicate { .. }));
}

/// After `finish` of an action that ran, a crash before `record` still means "never again";
/// after `finish(NotRun)` nothing ran, so a later attempt may decide afresh.
pub async fn finished_then_crashed_is_interrupted_not_run_is_not(store: Store) {
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(decide(&store, &reserve("inc-1", "a1", &s, &limits, 200)).await, ALLOWED);
    fin(&store, &finish("inc-1", "a1", &s, &limits, ExecResult::Success)).await;
    assert_eq!(decide(&store, &reserve("inc-2", "b1", &s, &limits, 200)).await, ALLOWED);
    fin(&store, &finish("inc-2", "b1", &s, &limits, ExecResult::NotRun)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("inc-1", "a2", &s, &limits, LONG_LEASE)).await,
        DecideAnswer::Interrupted { worker: "w1".into() }
    );
    assert_eq!(
        decide(&store, &reserve("inc-2", "b2", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
}

/// A claim taken over starts clean: nothing of the attempt before it survives into the new
/// claim. Here the first attempt released its reservation unused (NotRun) and died; the attempt
/// that takes over renews its own lease and its finish feeds the circuit, instead of being taken
/// for the attempt that already finished (and answered with that one's finish).
pub async fn a_claim_taken_over_starts_clean(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        failure_threshold: 1,
        ..open_limits()
    };
    assert_eq!(decide(&store, &reserve("inc-1", "a1", &s, &limits, 200)).await, ALLOWED);
    fin(&store, &finish("inc-1", "a1", &s, &limits, ExecResult::NotRun)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("inc-1", "a2", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        store
            .renew(&renewal("inc-1", "a2", "rb", LONG_LEASE, 10))
            .await
            .expect("renew"),
        Renewal::Renewed,
        "the new attempt's lease is its own"
    );
    let failed = fin(&store, &finish("inc-1", "a2", &s, &limits, ExecResult::Failure)).await;
    assert_eq!(
        (failed.circuit, failed.opened),
        (CircuitState::Open, true),
        "the new attempt's failure counts: {failed:?}"
    );
}

/// Crash, take-over, crash again: the attempt that took over an interrupted action dies before
/// recording its outcome, and the next one is Interrupted again (naming the replica whose action
/// may have run), never allowed to run it. Only a recorded outcome ends that.
pub async fn interrupted_is_sticky_until_recorded(store: Store) {
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(decide(&store, &reserve("inc-1", "a1", &s, &limits, 200)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let interrupted = DecideAnswer::Interrupted { worker: "w1".into() };
    let mut second = reserve("inc-1", "a2", &s, &limits, 200);
    second.worker = "w2".into();
    assert_eq!(decide(&store, &second).await, interrupted);
    // w2 dies before recording its `aborted` outcome.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut third = reserve("inc-1", "a3", &s, &limits, LONG_LEASE);
    third.worker = "w3".into();
    assert_eq!(
        decide(&store, &third).await,
        interrupted,
        "still interrupted after a second crash"
    );
    let mut fourth = third.clone();
    fourth.attempt = "a4".into();
    assert!(matches!(decide(&store, &fourth).await, DecideAnswer::InProgress { worker, .. } if worker == "w3"));
    store.record("inc-1", "a3", OUTCOMES, 60_000).await.expect("record");
    assert!(matches!(decide(&store, &fourth).await, DecideAnswer::Duplicate { .. }));
}

/// A retry of the same attempt in another mode never gets the other mode's cached answer: a
/// Reserve whose answer was lost and that asks again as Record (the incident aged out) is
/// recorded, and the lease it took, unused, is released; a Check that asks again as Reserve is
/// decided afresh (and here blocked), not handed the Check's `allowed` without a reservation.
pub async fn same_attempt_in_another_mode_decides_afresh(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(
        decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    let record = request(
        "inc-1",
        "a1",
        "w1",
        LONG_LEASE,
        Admission::Record {
            outcomes: OUTCOMES.to_owned(),
            ttl_ms: 60_000,
        },
    );
    assert_eq!(decide(&store, &record).await, DecideAnswer::Recorded);
    assert_eq!(
        decide(&store, &record).await,
        DecideAnswer::Recorded,
        "retry in the same mode"
    );
    assert_eq!(
        decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        DecideAnswer::Duplicate {
            outcomes: OUTCOMES.to_owned(),
            same_source: true
        },
        "once recorded, no mode of any attempt acts"
    );
    assert_eq!(
        decide(&store, &reserve("inc-2", "b1", &s, &limits, LONG_LEASE)).await,
        ALLOWED,
        "the stale reservation's lease was released"
    );

    // inc-2 holds the one slot: a Check under looser limits passes, then the same attempt asks
    // to Reserve under the real ones.
    assert_eq!(
        decide(&store, &check("inc-3", "c1", &s, &open_limits(), LONG_LEASE)).await,
        ALLOWED
    );
    let again = reserve("inc-3", "c1", &s, &limits, LONG_LEASE);
    let first = decide(&store, &again).await;
    blocked_by(&first, Guardrail::BlastRadius);
    assert_eq!(decide(&store, &again).await, first, "then cached in its own mode");
}

/// A dry run proves nothing about the action: it never takes the half-open probe, never moves
/// the circuit (neither to HALF_OPEN nor, released as NotRun, back to CLOSED), and a real probe
/// after it is still the one probe.
pub async fn dry_run_never_takes_the_probe_nor_moves_the_circuit(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    let dry = |incident: &str, attempt: &str| {
        request(
            incident,
            attempt,
            "w1",
            LONG_LEASE,
            Admission::DryRun {
                scope: s.clone(),
                limits: limits.clone(),
            },
        )
    };
    open_circuit(&store, "rb", &limits).await;
    assert_blocked(
        &decide(&store, &dry("d0", "d0a")).await,
        Guardrail::CircuitOpen,
        "circuit open (1s until half-open)",
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        decide(&store, &dry("d1", "d1a")).await,
        ALLOWED,
        "allowed, not the probe"
    );
    let open = CircuitSnapshot {
        state: CircuitState::Open,
        failures: 3,
    };
    assert_eq!(circuit(&store, "rb").await, open);
    fin(&store, &finish("d1", "d1a", &s, &limits, ExecResult::NotRun)).await;
    assert_eq!(circuit(&store, "rb").await, open, "a dry run never closes the circuit");

    assert_eq!(
        decide(&store, &reserve("p1", "p1a", &s, &limits, LONG_LEASE)).await,
        PROBE,
        "the real probe is still free"
    );
    assert_blocked(
        &decide(&store, &dry("d2", "d2a")).await,
        Guardrail::CircuitOpen,
        "circuit half-open, probe in flight",
    );
    fin(&store, &finish("p1", "p1a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(circuit(&store, "rb").await.state, CircuitState::Closed);
}

/// Only the attempt that owns the claim records; a stale attempt's record changes nothing.
pub async fn stale_record_is_ignored(store: Store) {
    let s = scope("rb", "svc");
    assert_eq!(
        decide(&store, &check("inc-1", "a1", &s, &open_limits(), 200)).await,
        ALLOWED
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &check("inc-1", "a2", &s, &open_limits(), LONG_LEASE)).await,
        ALLOWED
    );
    store
        .record("inc-1", "a1", r#"["old"]"#, 60_000)
        .await
        .expect("stale record is Ok");
    store.record("inc-1", "a2", r#"["new"]"#, 60_000).await.expect("record");
    assert_eq!(
        decide(&store, &check("inc-1", "a3", &s, &open_limits(), LONG_LEASE)).await,
        DecideAnswer::Duplicate {
            outcomes: r#"["new"]"#.into(),
            same_source: true
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limit and cooldown

/// At most `max_per_hour` in any window, exactly; a slot frees when the oldest entry leaves.
pub async fn rate_limit_is_an_exact_sliding_window(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 5,
        rate_window_ms: 1_500,
        ..open_limits()
    };
    let t0 = Instant::now();
    assert_eq!(
        decide(&store, &reserve("inc-0", "a0", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    sleep_until(t0, 400).await;
    let mut allowed = 1;
    for i in 1..20 {
        let answer = decide(
            &store,
            &reserve(&format!("inc-{i}"), &format!("a{i}"), &s, &limits, LONG_LEASE),
        )
        .await;
        if answer == ALLOWED {
            allowed += 1;
            continue;
        }
        let detail = blocked_by(&answer, Guardrail::RateLimit);
        let n = number_in(&detail, "rate limit 5/hour reached (next slot in ", "s)");
        assert!((1..=2).contains(&n), "{detail}");
    }
    assert_eq!(allowed, 5, "exactly max_per_hour of 20 sequential reservations");

    // inc-0 leaves the window at t0 + 1500 (+ a few ms); the other four at t0 + 1900.
    sleep_until(t0, 1_300).await;
    blocked_by(
        &decide(&store, &reserve("inc-x", "x", &s, &limits, LONG_LEASE)).await,
        Guardrail::RateLimit,
    );
    sleep_until(t0, 1_700).await;
    assert_eq!(
        decide(&store, &reserve("inc-y", "y", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    blocked_by(
        &decide(&store, &reserve("inc-z", "z", &s, &limits, LONG_LEASE)).await,
        Guardrail::RateLimit,
    );
    // Other scopes have their own window.
    assert_eq!(
        decide(
            &store,
            &reserve("inc-o", "o", &scope("rb", "other"), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
}

/// No execution of (runbook, service) within the cooldown; the detail counts down in whole
/// seconds, rounded up.
pub async fn cooldown_reports_remaining_seconds(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        cooldown_ms: 2_500,
        ..open_limits()
    };
    let t0 = Instant::now();
    assert_eq!(
        decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("inc-2", "a2", &s, &limits, LONG_LEASE)).await,
        Guardrail::Cooldown,
        "cooldown active (3s remaining)",
    );
    assert_eq!(
        decide(
            &store,
            &reserve("inc-3", "a3", &scope("rb", "svc2"), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    assert_eq!(
        decide(
            &store,
            &reserve("inc-4", "a4", &scope("rb2", "svc"), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    sleep_until(t0, 1_700).await;
    assert_blocked(
        &decide(&store, &reserve("inc-5", "a5", &s, &limits, LONG_LEASE)).await,
        Guardrail::Cooldown,
        "cooldown active (1s remaining)",
    );
    sleep_until(t0, 2_700).await;
    assert_eq!(
        decide(&store, &reserve("inc-6", "a6", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
}

/// The rate limit and cooldown hold per (runbook, target) as well as per (runbook, service):
/// varying the service for the same object does not walk past them, another object is counted
/// on its own.
pub async fn rate_limit_and_cooldown_hold_per_target_whatever_the_service(store: Store) {
    let limits = Limits {
        max_per_hour: 2,
        ..open_limits()
    };
    let web = "production/deployment/web";
    assert_eq!(
        decide(
            &store,
            &reserve("i1", "a1", &scope_on("rb", "api", web), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    assert_eq!(
        decide(
            &store,
            &reserve("i2", "a2", &scope_on("rb", "api-2", web), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    blocked_by(
        &decide(
            &store,
            &reserve("i3", "a3", &scope_on("rb", "api-3", web), &limits, LONG_LEASE),
        )
        .await,
        Guardrail::RateLimit,
    );
    let other = "production/deployment/other";
    assert_eq!(
        decide(
            &store,
            &reserve("i4", "a4", &scope_on("rb", "api-3", other), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED,
        "another object, another count"
    );

    let cooling = Limits {
        cooldown_ms: 60_000,
        ..open_limits()
    };
    assert_eq!(
        decide(
            &store,
            &reserve("c1", "c1a", &scope_on("rb2", "api", web), &cooling, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    blocked_by(
        &decide(
            &store,
            &reserve("c2", "c2a", &scope_on("rb2", "web-x", web), &cooling, LONG_LEASE),
        )
        .await,
        Guardrail::Cooldown,
    );
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

fn circuit_limits() -> Limits {
    Limits {
        failure_threshold: 3,
        recovery_ms: 800,
        ..open_limits()
    }
}

/// Open `runbook`'s circuit with `failure_threshold` failures (each on its own service).
async fn open_circuit(store: &Store, runbook: &str, limits: &Limits) {
    for i in 0..limits.failure_threshold {
        let (id, attempt) = (format!("open-{i}"), format!("open-a{i}"));
        let s = scope(runbook, &format!("svc-open-{i}"));
        assert_eq!(
            decide(store, &reserve(&id, &attempt, &s, limits, LONG_LEASE)).await,
            ALLOWED
        );
        let answer = fin(store, &finish(&id, &attempt, &s, limits, ExecResult::Failure)).await;
        let last = i + 1 == limits.failure_threshold;
        assert_eq!(
            answer,
            FinishAnswer {
                circuit: if last { CircuitState::Open } else { CircuitState::Closed },
                failures: i + 1,
                opened: last
            }
        );
    }
}

/// After recovery, 32 concurrent callers race for the probe; returns the winner's (incident,
/// attempt). Exactly one wins.
async fn race_for_probe(store: &Store, runbook: &str, limits: &Limits) -> (String, String) {
    let reqs: Vec<_> = (0..32)
        .map(|i| {
            reserve(
                &format!("race-{i}"),
                &format!("race-a{i}"),
                &scope(runbook, "svc"),
                limits,
                LONG_LEASE,
            )
        })
        .collect();
    let answers = concurrently(store, reqs.clone()).await;
    let winners: Vec<_> = answers.iter().enumerate().filter(|(_, a)| **a == PROBE).collect();
    assert_eq!(winners.len(), 1, "exactly one probe among 32: {answers:?}");
    for a in answers.iter().filter(|a| **a != PROBE) {
        assert_blocked(a, Guardrail::CircuitOpen, "circuit half-open, probe in flight");
    }
    let req = &reqs[winners[0].0];
    (req.incident_id.clone(), req.attempt.clone())
}

/// failure_threshold failures → OPEN → blocked → after recovery exactly one probe, whose success
/// closes the circuit. A Check never takes the probe.
pub async fn circuit_opens_single_probe_success_closes(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    assert_eq!(
        circuit(&store, "rb").await,
        CircuitSnapshot {
            state: CircuitState::Open,
            failures: 3
        }
    );
    assert_blocked(
        &decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
        "circuit open (1s until half-open)",
    );
    // Other runbooks are not affected.
    assert_eq!(
        decide(
            &store,
            &reserve("inc-2", "a2", &scope("rb2", "svc"), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        decide(&store, &check("inc-3", "a3", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        circuit(&store, "rb").await.state,
        CircuitState::Open,
        "a Check takes no probe"
    );

    let (id, attempt) = race_for_probe(&store, "rb", &limits).await;
    assert_eq!(circuit(&store, "rb").await.state, CircuitState::HalfOpen);
    assert_blocked(
        &decide(&store, &check("inc-4", "a4", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
        "circuit half-open, probe in flight",
    );
    assert_eq!(
        fin(&store, &finish(&id, &attempt, &s, &limits, ExecResult::Success)).await,
        FinishAnswer {
            circuit: CircuitState::Closed,
            failures: 0,
            opened: false
        }
    );
    assert_eq!(
        decide(&store, &reserve("inc-5", "a5", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
}

/// The probe's failure re-opens the circuit for another recovery period.
pub async fn circuit_probe_failure_reopens(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (id, attempt) = race_for_probe(&store, "rb", &limits).await;
    assert_eq!(
        fin(&store, &finish(&id, &attempt, &s, &limits, ExecResult::Failure)).await,
        FinishAnswer {
            circuit: CircuitState::Open,
            failures: 4,
            opened: true
        }
    );
    assert_blocked(
        &decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
        "circuit open (1s until half-open)",
    );
}

/// The threshold counts consecutive failures: a success in between starts again from zero.
pub async fn success_resets_consecutive_failures(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    let results = [
        ExecResult::Failure,
        ExecResult::Failure,
        ExecResult::Success,
        ExecResult::Failure,
        ExecResult::Failure,
    ];
    for (i, result) in results.into_iter().enumerate() {
        let (id, attempt) = (format!("inc-{i}"), format!("a{i}"));
        assert_eq!(
            decide(&store, &reserve(&id, &attempt, &s, &limits, LONG_LEASE)).await,
            ALLOWED
        );
        let answer = fin(&store, &finish(&id, &attempt, &s, &limits, result)).await;
        assert_eq!(answer.circuit, CircuitState::Closed, "after {i}");
    }
    assert_eq!(
        circuit(&store, "rb").await,
        CircuitSnapshot {
            state: CircuitState::Closed,
            failures: 2
        }
    );
}

/// A probe that lost its lease no longer speaks for the circuit: its late success does not close
/// the circuit another probe is testing.
pub async fn stale_probe_finish_does_not_close(store: Store) {
    let limits = Limits {
        failure_threshold: 1,
        recovery_ms: 300,
        ..open_limits()
    };
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(decide(&store, &reserve("p1", "p1a", &s, &limits, 200)).await, PROBE);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("p2", "p2a", &s, &limits, LONG_LEASE)).await,
        PROBE
    );
    assert_eq!(
        fin(&store, &finish("p1", "p1a", &s, &limits, ExecResult::Success)).await,
        FinishAnswer {
            circuit: CircuitState::HalfOpen,
            failures: 1,
            opened: false
        }
    );
    assert_blocked(
        &decide(&store, &reserve("x", "xa", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
        "circuit half-open, probe in flight",
    );
    assert_eq!(
        fin(&store, &finish("p2", "p2a", &s, &limits, ExecResult::Failure)).await,
        FinishAnswer {
            circuit: CircuitState::Open,
            failures: 2,
            opened: true
        }
    );
}

/// A probe that did not run releases the probe without a verdict; the next caller probes.
pub async fn not_run_probe_releases_probe(store: Store) {
    let limits = Limits {
        failure_threshold: 1,
        recovery_ms: 300,
        ..open_limits()
    };
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        decide(&store, &reserve("p1", "p1a", &s, &limits, LONG_LEASE)).await,
        PROBE
    );
    assert_eq!(
        fin(&store, &finish("p1", "p1a", &s, &limits, ExecResult::NotRun)).await,
        FinishAnswer {
            circuit: CircuitState::HalfOpen,
            failures: 1,
            opened: false
        }
    );
    assert_eq!(
        decide(&store, &reserve("p2", "p2a", &s, &limits, LONG_LEASE)).await,
        PROBE
    );
}

/// A failed rollback opens the circuit at once, whatever the count.
pub async fn force_open_opens_at_once(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    assert_eq!(
        decide(&store, &reserve("inc-1", "a1", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        decide(&store, &reserve("inc-2", "a2", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        fin(&store, &finish("inc-1", "a1", &s, &limits, ExecResult::ForceOpen)).await,
        FinishAnswer {
            circuit: CircuitState::Open,
            failures: 1,
            opened: true
        }
    );
    blocked_by(
        &decide(&store, &reserve("inc-3", "a3", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
    );
    // Already open: counted and re-armed, but not a new transition; a late success of an
    // execution reserved before the circuit opened does not close it.
    assert_eq!(
        fin(&store, &finish("inc-2", "a2", &s, &limits, ExecResult::Success)).await,
        FinishAnswer {
            circuit: CircuitState::Open,
            failures: 1,
            opened: false
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Blast radius

/// At most max_concurrent_actions in flight; finishing frees a slot, and so does the lease
/// expiry of a crashed replica's attempt.
pub async fn blast_radius_concurrency_and_crashed_lease(store: Store) {
    let limits = Limits {
        max_concurrent_actions: 2,
        ..open_limits()
    };
    let s = |svc: &str| scope("rb", svc);
    assert_eq!(
        decide(&store, &reserve("a", "aa", &s("s1"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    // "Crashed": never renewed nor finished.
    assert_eq!(
        decide(&store, &reserve("b", "ba", &s("s2"), &limits, 400)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("c", "ca", &s("s3"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        "max concurrent actions (2) in flight",
    );
    fin(&store, &finish("a", "aa", &s("s1"), &limits, ExecResult::Success)).await;
    assert_eq!(
        decide(&store, &reserve("d", "da", &s("s4"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    blocked_by(
        &decide(&store, &reserve("e", "ea", &s("s5"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        decide(&store, &reserve("f", "fa", &s("s6"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    blocked_by(
        &decide(&store, &reserve("g", "ga", &s("s7"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
    );
}

/// At most max_affected_services distinct services per window, across runbooks; a service
/// already touched in the window does not count again.
pub async fn affected_services_window(store: Store) {
    let limits = Limits {
        max_affected_services: 2,
        services_window_ms: 800,
        ..open_limits()
    };
    assert_eq!(
        decide(&store, &reserve("i1", "a1", &scope("rb1", "s1"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        decide(&store, &reserve("i2", "a2", &scope("rb2", "s2"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("i3", "a3", &scope("rb1", "s3"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        "max affected services (2) in window reached",
    );
    assert_eq!(
        decide(&store, &reserve("i4", "a4", &scope("rb3", "s1"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        decide(&store, &reserve("i5", "a5", &scope("rb1", "s3"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
}

/// A service touched before the window is a new service in it, even while its old entry is
/// still stored (no reservation has trimmed it since): with the window full under a limit
/// lowered meanwhile (a configuration rolled out between two decisions), it is blocked.
pub async fn a_service_touched_before_the_window_is_new_in_it(store: Store) {
    let limits = |max| Limits {
        max_affected_services: max,
        services_window_ms: 1_500,
        ..open_limits()
    };
    let at = |i: &str, svc: &str, max| reserve(i, i, &scope("rb", svc), &limits(max), LONG_LEASE);
    assert_eq!(decide(&store, &at("i1", "s1", 3)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(decide(&store, &at("i2", "s2", 3)).await, ALLOWED);
    assert_eq!(decide(&store, &at("i3", "s3", 3)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(900)).await;
    // s1 left the window; s2 and s3 fill it under the new limit of 2.
    assert_blocked(
        &decide(&store, &at("i4", "s1", 2)).await,
        Guardrail::BlastRadius,
        "max affected services (2) in window reached",
    );
    assert_eq!(decide(&store, &at("i5", "s2", 2)).await, ALLOWED, "s2 is in the window");
}

/// At most runbook_max_services distinct services touched by one runbook per window: a service
/// it already touched is allowed again, another runbook (and a service only it touched) does not
/// count, and the window slides from each service's last touch.
pub async fn runbook_blast_radius_limit(store: Store) {
    const DETAIL: &str = "runbook blast radius (1 service per window) reached";
    let limits = Limits {
        runbook_max_services: 1,
        services_window_ms: 800,
        ..open_limits()
    };
    let rb = |svc: &str| scope("rb", svc);
    assert_eq!(
        decide(&store, &reserve("i1", "a1", &rb("s1"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("i2", "a2", &rb("s2"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        DETAIL,
    );
    let touched = Instant::now();
    assert_eq!(
        decide(&store, &reserve("i3", "a3", &rb("s1"), &limits, LONG_LEASE)).await,
        ALLOWED,
        "a service the runbook already touched is always allowed"
    );
    assert_eq!(
        decide(&store, &reserve("i4", "a4", &scope("rb2", "s2"), &limits, LONG_LEASE)).await,
        ALLOWED,
        "another runbook has a budget of its own"
    );
    assert_blocked(
        &decide(&store, &reserve("i5", "a5", &rb("s2"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        DETAIL,
    );
    // s1 was last touched by rb (i3) just after `touched`; 800 ms later it leaves the window.
    sleep_until(touched, 1_000).await;
    assert_eq!(
        decide(&store, &reserve("i6", "a6", &rb("s2"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("i7", "a7", &rb("s1"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        DETAIL,
    );
}

/// runbook_max_services 0 means no per-runbook limit.
pub async fn runbook_blast_radius_zero_is_unlimited(store: Store) {
    let limits = Limits {
        runbook_max_services: 0,
        ..open_limits()
    };
    for i in 0..10 {
        let s = scope("rb", &format!("s{i}"));
        assert_eq!(
            decide(
                &store,
                &reserve(&format!("i{i}"), &format!("a{i}"), &s, &limits, LONG_LEASE)
            )
            .await,
            ALLOWED
        );
    }
}

/// The global affected-services count is checked first: when both would block, it is reported.
pub async fn runbook_blast_radius_after_global_services(store: Store) {
    let limits = Limits {
        max_affected_services: 1,
        runbook_max_services: 1,
        ..open_limits()
    };
    assert_eq!(
        decide(&store, &reserve("i1", "a1", &scope("rb", "s1"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_blocked(
        &decide(&store, &reserve("i2", "a2", &scope("rb", "s2"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        "max affected services (1) in window reached",
    );
}

/// Check answers like Reserve would for the per-runbook limit but touches no service.
pub async fn runbook_blast_radius_check_does_not_touch(store: Store) {
    let limits = Limits {
        runbook_max_services: 1,
        ..open_limits()
    };
    let rb = |svc: &str| scope("rb", svc);
    for i in 0..4 {
        assert_eq!(
            decide(
                &store,
                &check(
                    &format!("c{i}"),
                    &format!("ca{i}"),
                    &rb(&format!("s{i}")),
                    &limits,
                    LONG_LEASE
                )
            )
            .await,
            ALLOWED
        );
    }
    assert_eq!(
        decide(&store, &reserve("r1", "ra1", &rb("s2"), &limits, LONG_LEASE)).await,
        ALLOWED,
        "no Check counted a service"
    );
    assert_blocked(
        &decide(&store, &check("c9", "ca9", &rb("s3"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
        "runbook blast radius (1 service per window) reached",
    );
    assert_eq!(
        decide(&store, &check("c10", "ca10", &rb("s2"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        decide(&store, &reserve("r2", "ra2", &rb("s2"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
}

/// Check answers like Reserve would but holds nothing.
pub async fn check_does_not_reserve(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 1,
        cooldown_ms: 60_000,
        max_concurrent_actions: 1,
        max_affected_services: 1,
        ..open_limits()
    };
    for i in 0..5 {
        assert_eq!(
            decide(
                &store,
                &check(&format!("c{i}"), &format!("ca{i}"), &s, &limits, LONG_LEASE)
            )
            .await,
            ALLOWED
        );
    }
    assert_eq!(
        decide(&store, &reserve("r", "ra", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    blocked_by(
        &decide(&store, &check("c9", "ca9", &s, &limits, LONG_LEASE)).await,
        Guardrail::RateLimit,
    );
}

/// 64 concurrent reservations of one (runbook, service) with max_per_hour 5: exactly 5 win.
pub async fn concurrent_reserves_respect_rate_limit(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 5,
        ..open_limits()
    };
    let reqs = (0..64)
        .map(|i| reserve(&format!("inc-{i}"), &format!("a{i}"), &s, &limits, LONG_LEASE))
        .collect();
    let answers = concurrently(&store, reqs).await;
    assert_eq!(answers.iter().filter(|a| **a == ALLOWED).count(), 5, "{answers:?}");
    for a in answers.iter().filter(|a| **a != ALLOWED) {
        blocked_by(a, Guardrail::RateLimit);
    }
}

/// 64 concurrent reservations on distinct services with max_concurrent_actions 3: exactly 3.
pub async fn concurrent_reserves_respect_max_concurrent(store: Store) {
    let limits = Limits {
        max_concurrent_actions: 3,
        ..open_limits()
    };
    let reqs = (0..64)
        .map(|i| {
            let s = scope(&format!("rb{}", i % 4), &format!("svc-{i}"));
            reserve(&format!("inc-{i}"), &format!("a{i}"), &s, &limits, LONG_LEASE)
        })
        .collect();
    let answers = concurrently(&store, reqs).await;
    assert_eq!(answers.iter().filter(|a| **a == ALLOWED).count(), 3, "{answers:?}");
    for a in answers.iter().filter(|a| **a != ALLOWED) {
        assert_blocked(a, Guardrail::BlastRadius, "max concurrent actions (3) in flight");
    }
}

/// 64 concurrent reservations of one runbook on distinct services with runbook_max_services 3:
/// exactly 3.
pub async fn concurrent_reserves_respect_runbook_blast_radius(store: Store) {
    let limits = Limits {
        runbook_max_services: 3,
        ..open_limits()
    };
    let reqs = (0..64)
        .map(|i| {
            let s = scope("rb", &format!("svc-{i}"));
            reserve(&format!("inc-{i}"), &format!("a{i}"), &s, &limits, LONG_LEASE)
        })
        .collect();
    let answers = concurrently(&store, reqs).await;
    assert_eq!(answers.iter().filter(|a| **a == ALLOWED).count(), 3, "{answers:?}");
    for a in answers.iter().filter(|a| **a != ALLOWED) {
        assert_blocked(
            a,
            Guardrail::BlastRadius,
            "runbook blast radius (3 services per window) reached",
        );
    }
}

/// A long action that renews keeps its claim and its slot past the original lease; once it
/// stops renewing, both expire.
pub async fn renew_keeps_lease_alive(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(decide(&store, &reserve("long", "la", &s, &limits, 400)).await, ALLOWED);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            store.renew(&renewal("long", "la", "rb", 400, 1)).await.expect("renew"),
            Renewal::Renewed
        );
        // Renewing someone else's attempt is a harmless no-op.
        assert_eq!(
            store
                .renew(&renewal("long", "other", "rb", 60_000, 1))
                .await
                .expect("stale renew"),
            Renewal::Stale
        );
    }
    // 800 ms in, twice the original lease.
    blocked_by(
        &decide(&store, &reserve("b", "ba", &scope("rb", "s2"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
    );
    let mut other = reserve("long", "lb", &s, &limits, LONG_LEASE);
    other.worker = "w2".into();
    assert!(matches!(decide(&store, &other).await, DecideAnswer::InProgress { .. }));

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        decide(&store, &reserve("c", "ca", &scope("rb", "s3"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    other.attempt = "lc".into();
    assert_eq!(
        decide(&store, &other).await,
        DecideAnswer::Interrupted { worker: "w1".into() }
    );
}

/// A renew request.
pub fn renewal(incident: &str, attempt: &str, runbook: &str, lease_ms: u64, max_concurrent: u32) -> RenewRequest {
    RenewRequest {
        incident_id: incident.to_owned(),
        attempt: attempt.to_owned(),
        runbook: runbook.to_owned(),
        lease_ms,
        max_concurrent_actions: max_concurrent,
    }
}

/// Renewals that fail for longer than the lease let the slot lapse; another decision counts it
/// as free and takes it. The next renewal says `Lapsed` (never `Renewed`) while the limit is
/// full, and takes the slot back (`Reacquired`) once it allows again; the claim is kept either way.
pub async fn lapsed_lease_is_reported_and_reacquired_only_within_the_limit(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(decide(&store, &reserve("a", "aa", &s, &limits, 200)).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A's renewals failed: its slot lapsed and B takes it.
    assert_eq!(
        decide(&store, &reserve("b", "ba", &scope("rb", "s2"), &limits, LONG_LEASE)).await,
        ALLOWED
    );
    assert_eq!(
        store
            .renew(&renewal("a", "aa", "rb", LONG_LEASE, 1))
            .await
            .expect("renew"),
        Renewal::Lapsed
    );
    let mut other = reserve("a", "ab", &s, &limits, LONG_LEASE);
    other.worker = "w2".into();
    assert!(
        matches!(decide(&store, &other).await, DecideAnswer::InProgress { .. }),
        "the claim is kept"
    );
    fin(
        &store,
        &finish("b", "ba", &scope("rb", "s2"), &limits, ExecResult::Success),
    )
    .await;
    assert_eq!(
        store
            .renew(&renewal("a", "aa", "rb", LONG_LEASE, 1))
            .await
            .expect("renew"),
        Renewal::Reacquired { probe: false }
    );
    blocked_by(
        &decide(&store, &reserve("c", "ca", &scope("rb", "s3"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
    );
    assert_eq!(
        store
            .renew(&renewal("a", "aa", "rb", LONG_LEASE, 1))
            .await
            .expect("renew"),
        Renewal::Renewed
    );
}

/// A probe whose lease lapsed is taken back with its lease if nobody took the probe meanwhile;
/// if another execution took it, the lapsed one gets its slot back but not the probe.
pub async fn lapsed_probe_is_reacquired_only_if_nobody_took_it(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(decide(&store, &reserve("p1", "p1a", &s, &limits, 200)).await, PROBE);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .renew(&renewal("p1", "p1a", "rb", LONG_LEASE, 100))
            .await
            .expect("renew"),
        Renewal::Reacquired { probe: true }
    );
    assert_blocked(
        &decide(&store, &reserve("x", "xa", &s, &limits, LONG_LEASE)).await,
        Guardrail::CircuitOpen,
        "circuit half-open, probe in flight",
    );
    // Now it lapses again and another execution takes the probe.
    assert_eq!(
        store.renew(&renewal("p1", "p1a", "rb", 200, 100)).await.expect("renew"),
        Renewal::Renewed
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("p2", "p2a", &s, &limits, LONG_LEASE)).await,
        PROBE
    );
    assert_eq!(
        store
            .renew(&renewal("p1", "p1a", "rb", LONG_LEASE, 100))
            .await
            .expect("renew"),
        Renewal::Reacquired { probe: false }
    );
    fin(&store, &finish("p1", "p1a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(
        circuit(&store, "rb").await.state,
        CircuitState::HalfOpen,
        "the lapsed probe no longer speaks for the circuit"
    );
    fin(&store, &finish("p2", "p2a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(circuit(&store, "rb").await.state, CircuitState::Closed);
}

/// A runbook never seen reads CLOSED with no failures; ping answers.
pub async fn circuit_snapshot_and_ping(store: Store) {
    assert_eq!(
        circuit(&store, "never-seen").await,
        CircuitSnapshot {
            state: CircuitState::Closed,
            failures: 0
        }
    );
    store.ping().await.expect("ping");
}

/// A Reserve (or dry run) whose `allowed` was lost and whose lease then expired is not replayed
/// to the retry: meanwhile another execution took the probe and the slot, and replaying the
/// cached answer would run a second probe, or one action over `max_concurrent_actions`.
pub async fn cached_allowed_is_not_replayed_after_its_lease_expired(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let a = reserve("p1", "p1a", &s, &limits, 200);
    assert_eq!(decide(&store, &a).await, PROBE);
    assert_eq!(decide(&store, &a).await, PROBE, "replayed while its lease lives");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("p2", "p2a", &s, &limits, LONG_LEASE)).await,
        PROBE,
        "A's lease expired: B takes the probe"
    );
    assert_blocked(
        &decide(&store, &a).await,
        Guardrail::CircuitOpen,
        "circuit half-open, probe in flight",
    );

    let one = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    let s2 = scope("rb2", "svc");
    let dry = request(
        "d1",
        "d1a",
        "w1",
        200,
        Admission::DryRun {
            scope: s2.clone(),
            limits: one.clone(),
        },
    );
    let r = reserve("r1", "r1a", &s2, &one, 200);
    // p1 (its retry was blocked, its lease released) and p2 still hold leases under rb; the
    // `one` limit counts every lease, so release p2's first.
    fin(&store, &finish("p2", "p2a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(decide(&store, &r).await, ALLOWED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(decide(&store, &dry).await, ALLOWED, "r1's lease expired");
    assert_eq!(decide(&store, &dry).await, ALLOWED, "replayed while its lease lives");
    blocked_by(&decide(&store, &r).await, Guardrail::BlastRadius);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        decide(&store, &reserve("b1", "b1a", &scope("rb2", "s2"), &one, LONG_LEASE)).await,
        ALLOWED,
        "the dry run's lease expired: B takes the slot"
    );
    blocked_by(&decide(&store, &dry).await, Guardrail::BlastRadius);
}

/// A dry run holds a lease while its record is only `claimed`; when the same attempt asks again
/// in another mode (here Record), that lease is released like a Reserve's.
pub async fn dry_run_lease_is_released_when_the_attempt_asks_in_another_mode(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    let dry = request(
        "d1",
        "d1a",
        "w1",
        LONG_LEASE,
        Admission::DryRun {
            scope: s.clone(),
            limits: limits.clone(),
        },
    );
    assert_eq!(decide(&store, &dry).await, ALLOWED);
    blocked_by(
        &decide(&store, &reserve("x", "xa", &scope("rb", "s2"), &limits, LONG_LEASE)).await,
        Guardrail::BlastRadius,
    );
    let record = request(
        "d1",
        "d1a",
        "w1",
        LONG_LEASE,
        Admission::Record {
            outcomes: OUTCOMES.to_owned(),
            ttl_ms: 60_000,
        },
    );
    assert_eq!(decide(&store, &record).await, DecideAnswer::Recorded);
    assert_eq!(
        decide(&store, &reserve("y", "ya", &scope("rb", "s3"), &limits, LONG_LEASE)).await,
        ALLOWED,
        "the dry run's lease was released"
    );
}

/// A probe whose lease lapsed and could not be taken back gives the probe up even if nobody
/// took it: its success no longer closes the circuit (its outcome says the probe lapsed), and
/// the next Reserve is the probe.
pub async fn lapsed_probe_nobody_took_no_longer_moves_the_circuit(store: Store) {
    let limits = circuit_limits();
    let s = scope("rb", "svc");
    open_circuit(&store, "rb", &limits).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(decide(&store, &reserve("p1", "p1a", &s, &limits, 200)).await, PROBE);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Another runbook fills the one slot the renewal is allowed.
    assert_eq!(
        decide(
            &store,
            &reserve("o1", "o1a", &scope("other", "svc"), &limits, LONG_LEASE)
        )
        .await,
        ALLOWED
    );
    assert_eq!(
        store
            .renew(&renewal("p1", "p1a", "rb", LONG_LEASE, 1))
            .await
            .expect("renew"),
        Renewal::Lapsed
    );
    fin(&store, &finish("p1", "p1a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(
        circuit(&store, "rb").await.state,
        CircuitState::HalfOpen,
        "the lapsed probe no longer speaks for the circuit"
    );
    assert_eq!(
        decide(&store, &reserve("p2", "p2a", &s, &limits, LONG_LEASE)).await,
        PROBE
    );
    fin(&store, &finish("p2", "p2a", &s, &limits, ExecResult::Success)).await;
    assert_eq!(circuit(&store, "rb").await.state, CircuitState::Closed);
}

/// A renewal after the attempt finished (a renewal task that outlived its execution) is stale:
/// it never takes back the lease the finish released.
pub async fn renew_after_finish_is_stale_and_takes_nothing_back(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    assert_eq!(
        decide(&store, &reserve("a", "aa", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    fin(&store, &finish("a", "aa", &s, &limits, ExecResult::Success)).await;
    assert_eq!(
        store
            .renew(&renewal("a", "aa", "rb", LONG_LEASE, 1))
            .await
            .expect("renew"),
        Renewal::Stale
    );
    assert_eq!(
        decide(&store, &reserve("b", "ba", &scope("rb", "s2"), &limits, LONG_LEASE)).await,
        ALLOWED,
        "the finished attempt holds no slot"
    );
}

// ---------------------------------------------------------------------------------------------
// Batched admission

/// A small deterministic generator (xorshift64*), so a failing history can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// An answer without what depends on the instant it was given (two stores are asked
/// milliseconds apart): a block's seconds left (every run of digits before an `s` becomes `#`),
/// also inside recorded outcomes (compared as JSON, so `\/` and `/` are one), and an
/// in-progress claim's wait (0, once checked to be within the claim's lease).
fn without_seconds(answer: DecideAnswer) -> DecideAnswer {
    match answer {
        DecideAnswer::Blocked { guardrail, detail } => DecideAnswer::Blocked {
            guardrail,
            detail: seconds_hidden(&detail),
        },
        DecideAnswer::Duplicate { outcomes, same_source } => DecideAnswer::Duplicate {
            outcomes: seconds_hidden(
                &serde_json::from_str::<serde_json::Value>(&outcomes).map_or(outcomes, |v| v.to_string()),
            ),
            same_source,
        },
        DecideAnswer::InProgress { worker, retry_after_ms } => {
            assert!(
                retry_after_ms <= LONG_LEASE,
                "{worker}: retry after {retry_after_ms} ms"
            );
            DecideAnswer::InProgress {
                worker,
                retry_after_ms: 0,
            }
        }
        other => other,
    }
}

/// `text` with every run of digits before an `s` replaced by `#`.
fn seconds_hidden(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if c == 's' && !digits.is_empty() { "#" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.push_str(&digits);
    out
}

/// The outcome a caller asks the store to record if `incident` is blocked (a stand-in for the
/// engine's outcome: the store only fills in the detail and the guardrail).
pub fn on_block(incident: &str, note: &str) -> BlockedRecord {
    // Written field by field: the reason comes before the guardrail, as in an outcome event.
    let json = format!(
        r#"[{{"incident_id":{},"decision":"blocked","reason":"blocked: @@detail@@","guardrail":"rate_limit","note":{}}}]"#,
        serde_json::Value::from(incident),
        serde_json::Value::from(note)
    );
    BlockedRecord::split(&json, "@@detail@@", Guardrail::RateLimit).expect("marks found once")
}

/// Randomized histories decided twice: by `batched` with [`GuardrailStore::decide_batch`] (one
/// call per batch of 1-6 requests) and by `single` one request at a time, with the same
/// finishes in between. Every answer must be the same: rate limits at their edge (2 per window),
/// cooldowns (per service or per target), circuits opened by failures whose half-open state
/// admits exactly one probe, duplicates and in-progress claims (a small pool of incident ids),
/// retries of an attempt (its answer replayed), records, checks and dry runs. Both stores must
/// be fresh; windows are an hour long, so only the seconds in a detail can differ. Three
/// histories (seeds), each with runbooks and incidents of its own.
pub async fn batch_decides_like_one_at_a_time(batched: Store, single: Store) {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=3u64 {
        seen.extend(history(&batched, &single, seed).await);
    }
    let edges = [
        "allowed",
        "probe",
        "rate_limit",
        "cooldown",
        "circuit_open",
        "blast_radius",
        "duplicate",
        "in_progress",
        "recorded",
    ];
    let missing: Vec<_> = edges.iter().filter(|e| !seen.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "the histories never reached {missing:?} (only {seen:?})"
    );
}

/// One history; what kinds of answers it got.
async fn history(batched: &Store, single: &Store, seed: u64) -> std::collections::BTreeSet<&'static str> {
    let runbooks = ["a", "b", "c"].map(|r| format!("rb-{seed}-{r}"));
    let services = ["svc-1", "svc-2", "svc-3", "svc-4"];
    // rb-*-a may act often (its circuit gets exercised), rb-*-b twice an hour with an hour's
    // cooldown, rb-*-c twice an hour on at most 2 services; every circuit opens after 2 failures
    // and is half-open at once.
    let limits_of = |i: usize| Limits {
        max_per_hour: if i == 0 { 1_000 } else { 2 },
        rate_window_ms: 3_600_000,
        cooldown_ms: if i == 1 { 3_600_000 } else { 0 },
        failure_threshold: 2,
        recovery_ms: 0,
        runbook_max_services: if i == 2 { 2 } else { 0 },
        ..open_limits()
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x0100_0000_01B3));
    // Allowed reservations not finished yet: (incident, attempt, scope, limits).
    let mut open: Vec<(String, String, Scope, Limits)> = Vec::new();
    let mut sent: Vec<DecideRequest> = Vec::new();
    let mut decided = 0;
    // What the history reached, so it cannot silently stop testing an edge.
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..120 {
        if !open.is_empty() && rng.below(3) == 0 {
            let (incident, attempt, scope, limits) = open.swap_remove(rng.below(open.len() as u64) as usize);
            let result = [ExecResult::Success, ExecResult::Failure, ExecResult::NotRun][rng.below(3) as usize];
            let req = finish(&incident, &attempt, &scope, &limits, result);
            assert_eq!(
                fin(batched, &req).await,
                fin(single, &req).await,
                "seed {seed}, step {step}: finish {req:?}"
            );
            continue;
        }
        let mut batch = Vec::new();
        for _ in 0..=rng.below(6) {
            if !sent.is_empty() && rng.below(8) == 0 {
                // A retry of an earlier request: same attempt, same mode.
                batch.push(sent[rng.below(sent.len() as u64) as usize].clone());
                continue;
            }
            let r = rng.below(3) as usize;
            let service = services[rng.below(4) as usize];
            let scope = if rng.below(2) == 0 {
                scope_on(&runbooks[r], service, &format!("ns/Deployment/{seed}-{}", rng.below(3)))
            } else {
                scope(&runbooks[r], service)
            };
            let limits = limits_of(r);
            let incident = format!("inc-{seed}-{}", rng.below(40));
            let attempt = format!("att-{seed}-{step}-{}", batch.len());
            let admission = match rng.below(10) {
                0..=4 => Admission::Reserve { scope, limits },
                5..=6 => Admission::Check { scope, limits },
                7 => Admission::DryRun { scope, limits },
                _ => Admission::Record {
                    outcomes: format!(r#"[{{"incident_id":"{incident}","step":{step}}}]"#),
                    ttl_ms: 3_600_000,
                },
            };
            let mut req = request(&incident, &attempt, "w1", LONG_LEASE, admission);
            // Half of them have a block recorded in the same call (ignored for a Record).
            if rng.below(2) == 0 {
                req.on_block = Some(on_block(&incident, &attempt));
            }
            batch.push(req);
        }
        // The store answers up to the first reservation or claim held; the rest is asked again.
        let mut together = Vec::new();
        while together.len() < batch.len() {
            let rest = &batch[together.len()..];
            let answers = batched.decide_batch(rest).await.expect("batch decided");
            assert!(
                !answers.is_empty() && answers.len() <= rest.len(),
                "{} answers",
                answers.len()
            );
            let last = answers.len() - 1;
            assert!(
                answers.len() == rest.len() || answers[last].ends_batch(&rest[last].admission),
                "seed {seed}, step {step}: a batch stopped at {:?}, not at a reservation or a claim held",
                answers[last]
            );
            for (i, a) in answers.iter().enumerate().take(last) {
                assert!(
                    !a.ends_batch(&rest[i].admission),
                    "seed {seed}, step {step}: went on after {a:?}"
                );
            }
            together.extend(answers);
        }
        for (i, (req, answer)) in batch.iter().zip(together).enumerate() {
            let alone = decide(single, req).await;
            assert_eq!(
                without_seconds(answer.clone()),
                without_seconds(alone),
                "seed {seed}, step {step}, request {i} of {}: {req:?}",
                batch.len()
            );
            decided += 1;
            seen.insert(match &answer {
                DecideAnswer::Blocked { guardrail, .. } => guardrail.as_str(),
                DecideAnswer::Allowed { probe: true, .. } => "probe",
                DecideAnswer::Allowed { probe: false, .. } => "allowed",
                DecideAnswer::Duplicate { .. } => "duplicate",
                DecideAnswer::InProgress { .. } => "in_progress",
                DecideAnswer::Recorded => "recorded",
                DecideAnswer::Interrupted { .. } => "interrupted",
                DecideAnswer::StageChanged => "stage_changed",
            });
            if let (DecideAnswer::Allowed { .. }, Admission::Reserve { scope, limits }) = (&answer, &req.admission) {
                if !open.iter().any(|(_, a, ..)| *a == req.attempt) {
                    open.push((
                        req.incident_id.clone(),
                        req.attempt.clone(),
                        scope.clone(),
                        limits.clone(),
                    ));
                }
            }
        }
        sent.extend(batch);
    }
    assert!(decided > 200, "history {seed} decided {decided} requests");
    seen
}

/// A block with the outcome to record (`DecideRequest::on_block`) is recorded in the same call:
/// the incident is done, and a redelivery of the same message gets exactly that outcome back,
/// completed with the guardrail and its detail. Without it a block leaves the incident claimed
/// for the caller to record.
pub async fn a_block_with_its_outcome_is_recorded_in_the_same_call(store: Store) {
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 1,
        ..open_limits()
    };
    assert_eq!(
        decide(&store, &reserve("first", "a0", &s, &limits, LONG_LEASE)).await,
        ALLOWED
    );
    let mut blocked = reserve("second", "a1", &s, &limits, LONG_LEASE);
    blocked.on_block = Some(on_block("second", "note with \"quotes\" / slash"));
    let DecideAnswer::Blocked { guardrail, detail } = decide(&store, &blocked).await else {
        panic!("the second reservation within the hour must be blocked");
    };
    assert_eq!(guardrail, Guardrail::RateLimit);
    // The same attempt asking again gets the same answer (its call timed out, say).
    assert_eq!(
        without_seconds(decide(&store, &blocked).await),
        without_seconds(DecideAnswer::Blocked {
            guardrail,
            detail: detail.clone()
        })
    );
    // A redelivery (another attempt, same message) finds it done, with the completed outcome.
    let again = reserve("second", "a2", &s, &limits, LONG_LEASE);
    let DecideAnswer::Duplicate { outcomes, same_source } = decide(&store, &again).await else {
        panic!("a block recorded in the same call makes the incident done");
    };
    assert!(same_source, "the same message");
    let recorded: serde_json::Value = serde_json::from_str(&outcomes).expect("the record is a JSON array");
    let expected: serde_json::Value =
        serde_json::from_str(&on_block("second", "note with \"quotes\" / slash").render(guardrail, &detail))
            .expect("rendered JSON");
    assert_eq!(recorded, expected);
    assert_eq!(recorded[0]["reason"], format!("blocked: {detail}"));
    assert_eq!(recorded[0]["guardrail"], "rate_limit");
    assert_eq!(recorded[0]["note"], "note with \"quotes\" / slash");

    // Without an outcome to record, a block leaves the incident claimed (the caller records it).
    let bare = reserve("third", "a3", &s, &limits, LONG_LEASE);
    assert!(matches!(decide(&store, &bare).await, DecideAnswer::Blocked { .. }));
    assert!(
        matches!(
            decide(&store, &reserve("third", "a4", &s, &limits, LONG_LEASE)).await,
            DecideAnswer::InProgress { .. }
        ),
        "a block without its outcome is not recorded"
    );
    // An allowed request with an outcome for a block records nothing: it proceeds.
    let mut fresh = check("fourth", "a5", &scope("rb", "other"), &limits, LONG_LEASE);
    fresh.on_block = Some(on_block("fourth", ""));
    assert_eq!(decide(&store, &fresh).await, ALLOWED);
    assert!(matches!(
        decide(
            &store,
            &check("fourth", "a6", &scope("rb", "other"), &limits, LONG_LEASE)
        )
        .await,
        DecideAnswer::InProgress { .. }
    ));
}

/// A batch is answered up to and including its first reservation (an `Allowed` Reserve or dry
/// run) or claim held by another replica (`InProgress`), and no further: the requests after it
/// are not decided at all, so the caller can run that action, or wait for that claim, before
/// they are, as one call at a time would.
pub async fn a_batch_stops_at_its_first_reservation(store: Store) {
    let limits = open_limits();
    let record = |incident: &str, attempt: &str| {
        request(
            incident,
            attempt,
            "w1",
            LONG_LEASE,
            Admission::Record {
                outcomes: "[]".into(),
                ttl_ms: 60_000,
            },
        )
    };
    let dry_run = request(
        "b-dry",
        "a-dry",
        "w1",
        LONG_LEASE,
        Admission::DryRun {
            scope: scope("rb", "svc-d"),
            limits: limits.clone(),
        },
    );
    let batch = [
        check("b-check", "a-check", &scope("rb", "svc-c"), &limits, LONG_LEASE),
        record("b-record", "a-record"),
        reserve("b-reserve", "a-reserve", &scope("rb", "svc-r"), &limits, LONG_LEASE),
        record("b-after", "a-after"),
        dry_run.clone(),
    ];
    let answers = store.decide_batch(&batch).await.expect("decided");
    assert_eq!(
        answers,
        vec![ALLOWED, DecideAnswer::Recorded, ALLOWED],
        "up to the reservation"
    );
    // Not claimed: another attempt records it as new, it is no duplicate nor in progress.
    assert_eq!(
        decide(&store, &record("b-after", "a-other")).await,
        DecideAnswer::Recorded
    );
    // A dry run ends a batch too; a blocked reservation does not.
    let limits_one = Limits {
        max_per_hour: 1,
        ..limits.clone()
    };
    let batch = [
        reserve("c-blocked", "c1", &scope("rb", "svc-r"), &limits_one, LONG_LEASE),
        dry_run,
        record("c-after", "c2"),
    ];
    let answers = store.decide_batch(&batch).await.expect("decided");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        matches!(
            answers[0],
            DecideAnswer::Blocked {
                guardrail: Guardrail::RateLimit,
                ..
            }
        ),
        "{answers:?}"
    );
    assert_eq!(answers[1], ALLOWED);
    // A claim held by another attempt ends a batch (b-check is claimed by a-check).
    let batch = [
        record("e-1", "e1"),
        check("b-check", "e2", &scope("rb", "svc-c"), &limits, LONG_LEASE),
        record("e-3", "e3"),
    ];
    let answers = store.decide_batch(&batch).await.expect("decided");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(matches!(answers[1], DecideAnswer::InProgress { .. }), "{answers:?}");
    assert_eq!(
        decide(&store, &record("e-3", "e-other")).await,
        DecideAnswer::Recorded,
        "e-3 untouched"
    );
    // Nothing reserved nor held: everything answered.
    let batch = [
        record("d-1", "d1"),
        check("d-2", "d2", &scope("rb", "svc-x"), &limits, LONG_LEASE),
    ];
    assert_eq!(store.decide_batch(&batch).await.expect("decided").len(), 2);
}

/// A decision carries the version of its runbook's rollout record it was taken in: while the
/// record holds it (a runbook without a record is at 0) the decision stands; once the stage
/// moved on, the store answers `StageChanged` and writes nothing (no claim, no reservation: the
/// same attempt decided again in the new stage is a first decision); a batch ends at it, so
/// the requests after it are decided only after it; a `Record` does not depend on a stage.
pub async fn a_decision_in_a_left_rollout_stage_writes_nothing(
    store: Store,
    ledger: Arc<dyn remediator::guardrails::LedgerStore>,
) {
    use remediator::rollout::{Stage, Transition};
    let rb = format!("rollout-{}", uuid_like());
    let policy = crate::common::ledger_suite::rollout_policy(Stage::Shadow, &[50], Stage::Canary);
    let s = scope(&rb, "svc");
    let limits = Limits {
        max_per_hour: 1,
        ..open_limits()
    };
    let mut first = check("r0", "r0-a", &s, &limits, LONG_LEASE);
    first.rollout_version = Some(0);
    assert!(matches!(decide(&store, &first).await, DecideAnswer::Allowed { .. }));
    for id in ["x", "y"] {
        ledger
            .rollout_apply(&rb, &policy, Transition::Success, id)
            .await
            .unwrap()
            .unwrap();
    }
    let mut stale = reserve("r1", "r1-a", &s, &limits, LONG_LEASE);
    stale.rollout_version = Some(0);
    assert_eq!(decide(&store, &stale).await, DecideAnswer::StageChanged);
    assert_eq!(
        decide(&store, &stale).await,
        DecideAnswer::StageChanged,
        "and again: nothing was cached"
    );
    // Nothing was written: the rate slot (max_per_hour 1) is still free for the same attempt.
    let mut fresh = stale.clone();
    fresh.rollout_version = Some(1);
    assert!(matches!(decide(&store, &fresh).await, DecideAnswer::Allowed { .. }));
    // A batch ends at a stale request.
    let mut ok = check("r2", "r2-a", &scope(&rb, "other"), &limits, LONG_LEASE);
    ok.rollout_version = Some(1);
    let mut stale2 = check("r3", "r3-a", &scope(&rb, "third"), &limits, LONG_LEASE);
    stale2.rollout_version = Some(0);
    let mut after = check("r4", "r4-a", &scope(&rb, "fourth"), &limits, LONG_LEASE);
    after.rollout_version = Some(1);
    let answers = store.decide_batch(&[ok, stale2, after]).await.expect("batch");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(matches!(answers[0], DecideAnswer::Allowed { .. }), "{answers:?}");
    assert_eq!(answers[1], DecideAnswer::StageChanged);
    // A final decision is recorded whatever the stage.
    let mut record = request(
        "r5",
        "r5-a",
        "w1",
        LONG_LEASE,
        Admission::Record {
            outcomes: OUTCOMES.to_owned(),
            ttl_ms: 60_000,
        },
    );
    record.rollout_version = Some(0);
    assert_eq!(decide(&store, &record).await, DecideAnswer::Recorded);
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
