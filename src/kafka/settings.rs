//! The client settings: what the worker's consumer and producer are told before they connect.
//!
//! Every Kafka client of the process (the worker's, the approvals path's, the Alertmanager
//! intake's, the benchmark's pass-through baseline) starts from [`consumer_config`] or
//! [`producer_config`], so the delivery guarantees the `kafka` module documentation promises
//! (stored-offset commits, an idempotent `acks=all` producer) are set in one place and cannot
//! drift between copies. Operators' `kafka.properties` are applied last and win.

use rdkafka::ClientConfig;

/// Where and how to talk to Kafka: the `kafka.*` section of the worker config
/// (docs/configuration.md), used as it is by the worker, the approvals path and the Alertmanager
/// intake, whose clients all start from [`consumer_config`] and [`producer_config`].
pub type KafkaSettings = crate::config::KafkaConfig;

/// The consumer's librdkafka settings, `properties` applied last. Public so tools that must talk
/// to Kafka exactly like the worker (the pass-through baseline of `benches/remediator.rs`) use
/// these very settings instead of a copy that drifts.
pub fn consumer_config(s: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group_id)
        // Auto-commit only what we store: offsets are stored after acknowledgement.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the beginning: incidents sent before the first start count.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Statistics feed the consumer-lag gauge; every 5 s is cheap.
        .set("statistics.interval.ms", "5000")
        // TCP_NODELAY, as the Java client does: small fetches and commits are not held back by
        // Nagle waiting on a delayed ACK (scripts/bench: lower p99 decision latency).
        .set("socket.nagle.disable", "true");
    for (k, v) in &s.properties {
        c.set(k, v);
    }
    c
}

/// The producer's librdkafka settings, `properties` applied last (see [`consumer_config`]).
pub fn producer_config(s: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers)
        // No duplicates or reordering from librdkafka's own retries, and no acknowledgement
        // before every in-sync replica has the outcome.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Surface a broker outage after 30 s (and retry ourselves) instead of librdkafka's 5 min.
        .set("message.timeout.ms", "30000")
        // Send at once: a lone outcome does not wait (librdkafka's default 5 ms linger was paid
        // once per message when a partition published serially; scripts/bench: 11x the
        // throughput without it, docs/benchmark-history.md). Batching still happens whenever
        // several outcomes are queued while a request is in flight.
        .set("linger.ms", "0")
        // TCP_NODELAY: a small outcome is not held back by Nagle behind an unacknowledged one.
        .set("socket.nagle.disable", "true");
    for (k, v) in &s.properties {
        c.set(k, v);
    }
    c
}
