//! Readiness of the worker's dependencies, written by the loops that use them and read by
//! `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};

/// What `/readyz` reports. Each flag is set by the component that last talked to the dependency.
#[derive(Debug, Default)]
pub struct Health {
    kafka: AtomicBool,
    store: AtomicBool,
    executor: AtomicBool,
}

impl Health {
    /// All dependencies unknown (not ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Record whether Kafka is reachable (consumer assigned / metadata answered).
    pub fn set_kafka(&self, ok: bool) {
        self.kafka.store(ok, Ordering::Relaxed);
    }

    /// Record whether the guardrail store answers.
    pub fn set_store(&self, ok: bool) {
        self.store.store(ok, Ordering::Relaxed);
    }

    /// Record whether the executor's backend (Kubernetes) is reachable.
    pub fn set_executor(&self, ok: bool) {
        self.executor.store(ok, Ordering::Relaxed);
    }

    /// `(kafka, store, executor)`.
    pub fn snapshot(&self) -> (bool, bool, bool) {
        (
            self.kafka.load(Ordering::Relaxed),
            self.store.load(Ordering::Relaxed),
            self.executor.load(Ordering::Relaxed),
        )
    }

    /// Ready only when every dependency is reachable.
    pub fn ready(&self) -> bool {
        let (k, s, e) = self.snapshot();
        k && s && e
    }
}
