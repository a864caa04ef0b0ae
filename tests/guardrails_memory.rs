//! The guardrail behaviour suite against [`MemoryStore`] (real time via `SystemClock`, like the
//! Redis run uses Redis `TIME`), plus what only a memory store can show: deterministic windows
//! under a `ManualClock`.

mod common;

use common::guardrail_suite::{open_limits, reserve, scope, Store, LONG_LEASE};
use remediator::clock::{ManualClock, SystemClock};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::{DecideAnswer, Guardrail, GuardrailStore, Limits};
use std::sync::Arc;

async fn memory_store() -> Option<Store> {
    Some(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
}

guardrail_suite_tests!(memory_store);

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
    assert_eq!(
        store
            .decide(&reserve("i0", "a0", &s, &limits, LONG_LEASE))
            .await
            .expect("d"),
        allowed
    );
    clock.advance(chrono::Duration::minutes(10));
    assert_eq!(
        store
            .decide(&reserve("i1", "a1", &s, &limits, LONG_LEASE))
            .await
            .expect("d"),
        allowed
    );
    clock.advance(chrono::Duration::milliseconds(50 * 60_000 - 1));
    assert_eq!(
        store
            .decide(&reserve("i2", "a2", &s, &limits, LONG_LEASE))
            .await
            .expect("d"),
        DecideAnswer::Blocked {
            guardrail: Guardrail::RateLimit,
            detail: "rate limit 2/hour reached (next slot in 1s)".into()
        }
    );
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(
        store
            .decide(&reserve("i3", "a3", &s, &limits, LONG_LEASE))
            .await
            .expect("d"),
        allowed
    );
}

async fn memory_ledger() -> Option<common::ledger_suite::Ledger> {
    Some(Arc::new(MemoryStore::new(Arc::new(SystemClock))))
}

ledger_suite_tests!(memory_ledger);
