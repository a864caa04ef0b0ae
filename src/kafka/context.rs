//! The clients' contexts: what librdkafka tells us from its own threads.
//!
//! The consumer's context is the worker's record of which partitions it owns, and under which
//! assignment: rebalance callbacks update it before and after librdkafka moves partitions, and
//! an offset is stored only while its partition is still owned under the assignment its message
//! came in (see `partition.rs`). It also keeps newly assigned partitions paused while the
//! dispatcher is saturated, turns statistics into the consumer-lag gauge, and marks Kafka healthy
//! or not. Both contexts forward librdkafka's log lines and client errors into `tracing`.

use crate::health::Health;
use crate::metrics::Metrics;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, error, info, warn};

/// The consumer's view of the group: which partitions it owns (and since which assignment),
/// forwarded librdkafka logs, errors and statistics.
pub(super) struct ConsumerCtx {
    pub(super) topic: String,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Metrics,
    /// Partition -> generation of the assignment that gave it to us. A message is acknowledged
    /// only while its partition is still owned under the generation it was received in.
    pub(super) owned: Mutex<HashMap<i32, u64>>,
    pub(super) generations: AtomicU64,
    /// The dispatcher paused consumption; partitions assigned meanwhile start paused too.
    pub(super) saturated: AtomicBool,
}

impl ConsumerCtx {
    pub(super) fn generation(&self, partition: i32) -> Option<u64> {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .copied()
    }

    pub(super) fn owns(&self, partition: i32, generation: u64) -> bool {
        self.generation(partition) == Some(generation)
    }
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log("consumer", level, fac, log_message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        client_error(&self.health, "consumer", error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        if statistics.brokers.values().any(|b| b.state == "UP") {
            self.health.set_kafka(true);
        }
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        for p in topic.partitions.values().filter(|p| owned.contains_key(&p.partition)) {
            // Position-based lag: what is in the log beyond the next message we will be given.
            // Before the first message, the committed offset is where we start; without one, the
            // log start (auto.offset.reset=earliest).
            let position = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|o| *o >= 0);
            let (Some(position), true) = (position, p.hi_offset >= 0) else {
                continue;
            };
            let lag = p.hi_offset - position;
            self.metrics
                .consumer_lag
                .with_label_values(&[&p.partition.to_string()])
                .set(lag.max(0));
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Forget revoked partitions *before* librdkafka unassigns them: from here on their
        // in-progress messages may finish and publish, but store no offset.
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
            for e in tpl.elements_for_topic(&self.topic) {
                owned.remove(&e.partition());
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[&e.partition().to_string()]);
            }
            info!(partitions = ?partitions(tpl), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                    for e in tpl.elements_for_topic(&self.topic) {
                        owned.insert(e.partition(), generation);
                    }
                }
                // Joined the group, even with no partitions to own: Kafka is reachable.
                self.health.set_kafka(true);
                if tpl.count() > 0 {
                    let result = if self.saturated.load(Ordering::Relaxed) {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "could not set the pause state of newly assigned partitions");
                    }
                }
                info!(partitions = ?partitions(tpl), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {}
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => warn!(error = %e, "offset commit failed; will retry on the next commit"),
        }
    }
}

/// The producer's context: logs and errors into tracing and health.
pub(super) struct ProducerCtx {
    pub(super) health: Arc<Health>,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log("producer", level, fac, log_message);
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        client_error(&self.health, "producer", error, reason);
    }

    fn stats(&self, _statistics: Statistics) {
        // Statistics feed the consumer's lag gauge; if `properties` enables them for the producer
        // too, there is nothing to do with them.
    }
}

fn forward_log(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    // `properties` go to both clients by design; each one's "not my property" is expected noise.
    if fac == "CONFWARN" && message.contains("will be ignored by this") {
        debug!(target: "librdkafka", client, fac, "{message}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            error!(target: "librdkafka", client, fac, "{message}")
        }
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", client, fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", client, fac, "{message}"),
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", client, fac, "{message}"),
    }
}

fn client_error(health: &Health, client: &str, error: RdKafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
        health.set_kafka(false);
    }
    warn!(client, error = %error, reason, "kafka client error");
}

fn partitions(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}
