//! The guardrail behaviour suite against [`MemoryStore`] (real time via `SystemClock`, like the
//! Redis run uses Redis `TIME`), plus what only a memory store can show: deterministic windows
//! under a `ManualClock`.

mod common;

use common::guardrail_suite::{check, finish, open_limits, renewal, reserve, scope, Store, LONG_LEASE};
use remediator::clock::{ManualClock, SystemClock};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::{
    Answer, AnswerResult, DecideAnswer, ExecResult, Guardrail, GuardrailStore, LedgerStore, Limits, Renewal,
};
use std::sync::Arc;

async fn memory_store() -> Option<Store> {
    Some(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
}

guardrail_suite_tests!(memory_store);

/// One call for a batch decides like one call per request (common/guardrail_suite.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_decides_like_one_at_a_time() {
    if let (Some(batched), Some(single)) = (memory_store().await, memory_store().await) {
        common::guardrail_suite::batch_decides_like_one_at_a_time(batched, single).await;
    }
}

/// A retried reservation replays its first answer while its lease lives, to its last
/// millisecond; at the lease's end the attempt decides afresh (as `decide.lua`: a lease whose
/// score is `<= now` has lapsed), and here finds the cooldown its first answer started.
#[tokio::test]
async fn a_retry_replays_its_answer_until_the_last_millisecond_of_its_lease() {
    let clock = ManualClock::new(chrono::DateTime::from_timestamp_millis(1_700_000_000_000).expect("time"));
    let store = MemoryStore::new(Arc::new(clock.clone()));
    let limits = Limits {
        cooldown_ms: 600_000,
        ..open_limits()
    };
    let a = reserve("i0", "a0", &scope("rb", "svc"), &limits, 5_000);
    let allowed = DecideAnswer::Allowed {
        probe: false,
        conservative: false,
    };
    assert_eq!(d(&store, &a).await, allowed);
    clock.advance(chrono::Duration::milliseconds(4_999));
    assert_eq!(d(&store, &a).await, allowed, "the lease's last millisecond");
    clock.advance(chrono::Duration::milliseconds(1));
    match d(&store, &a).await {
        DecideAnswer::Blocked {
            guardrail: Guardrail::Cooldown,
            ..
        } => {}
        other => panic!("at the lease's end the retry decides afresh: {other:?}"),
    }
}

fn manual_store() -> (ManualClock, MemoryStore) {
    let clock = ManualClock::new(chrono::DateTime::from_timestamp_millis(1_700_000_000_000).expect("time"));
    let store = MemoryStore::new(Arc::new(clock.clone()));
    (clock, store)
}

const ALLOWED: DecideAnswer = DecideAnswer::Allowed {
    probe: false,
    conservative: false,
};

/// The memory store's answer to `req` (it never fails).
async fn d(store: &MemoryStore, req: &remediator::guardrails::DecideRequest) -> DecideAnswer {
    store.decide(req).await.expect("decide")
}

fn guardrail_of(answer: &DecideAnswer) -> Option<Guardrail> {
    match answer {
        DecideAnswer::Blocked { guardrail, .. } => Some(*guardrail),
        _ => None,
    }
}

/// Another replica's claim holds to the last millisecond of its lease, and says how long is
/// left; at the lease's end it is taken over.
#[tokio::test]
async fn a_claim_holds_to_the_last_millisecond_of_its_lease() {
    let (clock, store) = manual_store();
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(d(&store, &check("i1", "a1", &s, &limits, 5_000)).await, ALLOWED);
    clock.advance(chrono::Duration::milliseconds(1_234));
    assert_eq!(
        d(&store, &check("i1", "a2", &s, &limits, 5_000)).await,
        DecideAnswer::InProgress {
            worker: "w1".into(),
            retry_after_ms: 3_766
        }
    );
    clock.advance(chrono::Duration::milliseconds(3_765));
    assert_eq!(
        d(&store, &check("i1", "a3", &s, &limits, 5_000)).await,
        DecideAnswer::InProgress {
            worker: "w1".into(),
            retry_after_ms: 1
        }
    );
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(
        d(&store, &check("i1", "a4", &s, &limits, 5_000)).await,
        ALLOWED,
        "at the lease's end the claim is taken over"
    );
}

/// The cooldown holds to its last millisecond and frees at its end, also when it is shorter
/// than the rate window (its entries are then kept for the window).
#[tokio::test]
async fn a_cooldown_shorter_than_the_window_frees_at_its_exact_end() {
    let (clock, store) = manual_store();
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 10,
        rate_window_ms: 3_600_000,
        cooldown_ms: 10_000,
        ..open_limits()
    };
    assert_eq!(d(&store, &reserve("i0", "a0", &s, &limits, LONG_LEASE)).await, ALLOWED);
    clock.advance(chrono::Duration::milliseconds(9_999));
    let held = d(&store, &reserve("i1", "a1", &s, &limits, LONG_LEASE)).await;
    assert_eq!(guardrail_of(&held), Some(Guardrail::Cooldown), "{held:?}");
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(d(&store, &reserve("i2", "a2", &s, &limits, LONG_LEASE)).await, ALLOWED);
}

/// Without a cooldown nothing is ever blocked by one, even when the clock steps back behind the
/// last execution (a newest entry "in the future" starts no cooldown of zero length).
#[tokio::test]
async fn no_cooldown_blocks_nothing_even_after_the_clock_steps_back() {
    let (clock, store) = manual_store();
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(d(&store, &reserve("i0", "a0", &s, &limits, LONG_LEASE)).await, ALLOWED);
    clock.advance(chrono::Duration::milliseconds(-1_000));
    assert_eq!(d(&store, &reserve("i1", "a1", &s, &limits, LONG_LEASE)).await, ALLOWED);
}

/// With a cooldown longer than the rate window, an entry exactly one window old no longer
/// counts for the rate limit (so what blocks is the cooldown, and says so).
#[tokio::test]
async fn a_rate_entry_one_window_old_no_longer_counts_under_a_longer_cooldown() {
    let (clock, store) = manual_store();
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 1,
        rate_window_ms: 60_000,
        cooldown_ms: 120_000,
        ..open_limits()
    };
    assert_eq!(d(&store, &reserve("i0", "a0", &s, &limits, LONG_LEASE)).await, ALLOWED);
    clock.advance(chrono::Duration::milliseconds(59_999));
    let rate = d(&store, &reserve("i1", "a1", &s, &limits, LONG_LEASE)).await;
    assert_eq!(guardrail_of(&rate), Some(Guardrail::RateLimit), "{rate:?}");
    clock.advance(chrono::Duration::milliseconds(1));
    let cooldown = d(&store, &reserve("i2", "a2", &s, &limits, LONG_LEASE)).await;
    assert_eq!(guardrail_of(&cooldown), Some(Guardrail::Cooldown), "{cooldown:?}");
}

/// The blast radius to the millisecond: a lease counts to its last millisecond, a service
/// touched counts for the whole window (against the worker-wide and the runbook's limit), and
/// each frees at its exact end.
#[tokio::test]
async fn blast_radius_frees_at_the_exact_end_of_a_lease_or_window() {
    let leases = Limits {
        max_concurrent_actions: 1,
        ..open_limits()
    };
    let services = Limits {
        max_affected_services: 1,
        services_window_ms: 60_000,
        ..open_limits()
    };
    let runbook_services = Limits {
        runbook_max_services: 1,
        services_window_ms: 60_000,
        ..open_limits()
    };
    for (what, limits, first_lease, frees_after) in [
        ("a lease", leases, 5_000, 5_000),
        ("the services window", services, LONG_LEASE, 60_000),
        ("the runbook's services window", runbook_services, LONG_LEASE, 60_000),
    ] {
        let (clock, store) = manual_store();
        let first = reserve("i0", "a0", &scope("rb", "svc-0"), &limits, first_lease);
        assert_eq!(d(&store, &first).await, ALLOWED, "{what}");
        clock.advance(chrono::Duration::milliseconds(frees_after - 1));
        let held = d(&store, &reserve("i1", "a1", &scope("rb", "svc-1"), &limits, LONG_LEASE)).await;
        assert_eq!(guardrail_of(&held), Some(Guardrail::BlastRadius), "{what}: {held:?}");
        clock.advance(chrono::Duration::milliseconds(1));
        let freed = d(&store, &reserve("i2", "a2", &scope("rb", "svc-2"), &limits, 1_000)).await;
        assert_eq!(freed, ALLOWED, "{what} frees at its exact end");
    }
}

/// A renewal keeps a lease only while it lives, to its last millisecond; at its end the lease
/// has lapsed and is taken back (`Reacquired`, its own lapsed lease not counted against the
/// limit), never reported renewed.
#[tokio::test]
async fn a_renewal_at_the_lease_s_end_reacquires_it() {
    let (clock, store) = manual_store();
    let limits = open_limits();
    let a = reserve("i0", "a0", &scope("rb", "svc"), &limits, 5_000);
    assert_eq!(d(&store, &a).await, ALLOWED);
    clock.advance(chrono::Duration::milliseconds(4_999));
    let renew = renewal("i0", "a0", "rb", 5_000, 1);
    assert_eq!(store.renew(&renew).await.expect("r"), Renewal::Renewed);
    clock.advance(chrono::Duration::milliseconds(5_000));
    assert_eq!(
        store.renew(&renew).await.expect("r"),
        Renewal::Reacquired { probe: false }
    );
}

/// An approval can be answered to the last millisecond of its expiry, not after.
#[tokio::test]
async fn an_approval_is_answerable_to_its_last_millisecond() {
    let (clock, store) = manual_store();
    let yes = Answer {
        approve: true,
        approver: "alice".into(),
        action_hash: None,
    };
    store
        .create_approval(&common::ledger_suite::approval("a1"), 5_000)
        .await
        .expect("create");
    store
        .create_approval(&common::ledger_suite::approval("a2"), 5_000)
        .await
        .expect("create");
    clock.advance(chrono::Duration::milliseconds(5_000));
    let last = store.answer_approval("a1", &yes).await.expect("answer");
    assert!(matches!(last, AnswerResult::Accepted(_)), "{last:?}");
    clock.advance(chrono::Duration::milliseconds(1));
    let late = store.answer_approval("a2", &yes).await.expect("answer");
    assert!(matches!(late, AnswerResult::Expired(_)), "{late:?}");
}

/// The half-open circuit's one probe holds it to the last millisecond of its lease; at its end
/// the next decision takes the probe.
#[tokio::test]
async fn a_probe_holds_the_half_open_circuit_to_the_end_of_its_lease() {
    let (clock, store) = manual_store();
    let s = scope("rb", "svc");
    let limits = open_limits();
    assert_eq!(d(&store, &reserve("i0", "a0", &s, &limits, LONG_LEASE)).await, ALLOWED);
    store
        .finish(&finish("i0", "a0", &s, &limits, ExecResult::ForceOpen))
        .await
        .expect("finish");
    clock.advance(chrono::Duration::milliseconds(limits.recovery_ms as i64));
    let probe = DecideAnswer::Allowed {
        probe: true,
        conservative: false,
    };
    assert_eq!(d(&store, &reserve("i1", "a1", &s, &limits, 5_000)).await, probe);
    clock.advance(chrono::Duration::milliseconds(4_999));
    let held = d(&store, &reserve("i2", "a2", &s, &limits, 5_000)).await;
    assert_eq!(guardrail_of(&held), Some(Guardrail::CircuitOpen), "{held:?}");
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(d(&store, &reserve("i3", "a3", &s, &limits, 5_000)).await, probe);
}

/// With a manual clock the sliding window is exact to the millisecond: the oldest entry stops
/// counting exactly `rate_window_ms` after it was taken.
#[tokio::test]
async fn manual_clock_rate_window_is_exact_to_the_millisecond() {
    let clock = ManualClock::new(chrono::DateTime::from_timestamp_millis(1_700_000_000_000).expect("time"));
    let store = MemoryStore::new(Arc::new(clock.clone()));
    let s = scope("rb", "svc");
    let limits = Limits {
        max_per_hour: 2,
        rate_window_ms: 3_600_000,
        ..open_limits()
    };
    let allowed = DecideAnswer::Allowed {
        probe: false,
        conservative: false,
    };
    assert_eq!(d(&store, &reserve("i0", "a0", &s, &limits, LONG_LEASE)).await, allowed);
    clock.advance(chrono::Duration::minutes(10));
    assert_eq!(d(&store, &reserve("i1", "a1", &s, &limits, LONG_LEASE)).await, allowed);
    clock.advance(chrono::Duration::milliseconds(50 * 60_000 - 1));
    assert_eq!(
        d(&store, &reserve("i2", "a2", &s, &limits, LONG_LEASE)).await,
        DecideAnswer::Blocked {
            guardrail: Guardrail::RateLimit,
            detail: "rate limit 2/hour reached (next slot in 1s)".into()
        }
    );
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(d(&store, &reserve("i3", "a3", &s, &limits, LONG_LEASE)).await, allowed);
}

/// The record of an action that started lives the idempotency TTL, not lease + claim grace: a
/// redelivery two hours after a mid-action crash (claim grace 1 h) is Interrupted, never run; a
/// renewal never shortens it; and the interrupted claim that took over lives as long.
#[tokio::test]
async fn started_action_record_lives_the_idempotency_ttl() {
    let clock = ManualClock::new(chrono::DateTime::from_timestamp_millis(1_700_000_000_000).expect("time"));
    let store = MemoryStore::new(Arc::new(clock.clone()));
    let s = scope("rb", "svc");
    let day = 24 * 3_600_000;
    let limits = Limits {
        record_ttl_ms: day,
        ..open_limits()
    };
    let allowed = DecideAnswer::Allowed {
        probe: false,
        conservative: false,
    };
    let interrupted = DecideAnswer::Interrupted { worker: "w1".into() };
    assert_eq!(d(&store, &reserve("i1", "a1", &s, &limits, 60_000)).await, allowed);
    store.renew(&renewal("i1", "a1", "rb", 60_000, 1)).await.expect("renew");
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(d(&store, &reserve("i1", "a2", &s, &limits, 60_000)).await, interrupted);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        d(&store, &reserve("i1", "a3", &s, &limits, 60_000)).await,
        interrupted,
        "the interrupted claim lives as long"
    );
    clock.advance(chrono::Duration::hours(25));
    assert_eq!(
        d(&store, &reserve("i1", "a4", &s, &limits, 60_000)).await,
        allowed,
        "past the idempotency TTL the id is new again"
    );
}

async fn memory_ledger() -> Option<common::ledger_suite::Ledger> {
    Some(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
}

ledger_suite_tests!(memory_ledger);

/// A decision in a rollout stage the record has left is refused and writes nothing.
#[tokio::test]
async fn a_decision_in_a_left_rollout_stage_writes_nothing() {
    let store = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    common::guardrail_suite::a_decision_in_a_left_rollout_stage_writes_nothing(store.clone(), store).await;
}
