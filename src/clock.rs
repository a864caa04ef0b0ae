//! Time as an injected dependency.
//!
//! Decisions that depend on "now" (incident freshness, in-memory guardrail windows, outcome
//! timestamps) read it from a [`Clock`], so `replay` and tests are deterministic. The Redis
//! guardrail store never uses this clock: its scripts read Redis `TIME`, so every replica agrees.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: `replay --now` and tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing still at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    /// Move the clock forward (or backward, for tests of clock skew).
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }

    /// Set the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Milliseconds since the Unix epoch, the unit every guardrail window uses.
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
