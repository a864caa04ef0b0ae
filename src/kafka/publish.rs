//! Publishing: a decided message's dead-letter copy and outcomes, each acknowledged by the broker.
//!
//! A record is retried until the broker acknowledges it, through any outage, because an executed
//! action's outcome must get out. The one exception is a producer that is stuck while the cluster
//! answers: [`Shared::deliver`] tells the two apart with a metadata request through the consumer
//! and ends the worker with [`KafkaError::Stalled`] after [`STALL_FAILURES`] such failures, so it
//! is restarted with fresh clients. Dead-letter copies are the poison message byte for byte, with
//! headers naming the error and where it came from; outcomes carry the incident's trace context.

use super::shared::{Decided, Finished, Shared, Work};
use super::trace::TRACEPARENT;
use super::{KafkaError, BACKOFF_MAX, BACKOFF_MIN};
use crate::engine::{Handled, Source};
use crate::incident::Rejection;
use crate::retry::Backoff;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{debug, warn, Instrument};

/// Consecutive failed deliveries of one record, each while the cluster itself answered, after
/// which the producer is presumed stuck (see [`Shared::deliver`]). Each failure is normally a
/// whole `message.timeout.ms` (30 s by default), so this is about two minutes without an
/// acknowledgement.
const STALL_FAILURES: u32 = 4;
/// How long the metadata request that tells a stuck producer from a broker outage may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// Header names the dead-letter copy carries (docs/design.md#dead-letters).
const DLQ_HEADERS: [&str; 5] = [
    "error",
    "error_field",
    "source_topic",
    "source_partition",
    "source_offset",
];

impl Shared {
    /// Does the cluster answer a metadata request for `topic` (asked through the consumer, not
    /// the producer under suspicion) with a leader, among the brokers it lists, for every
    /// partition? `false` means an outage (or a topic gone), which is waited out.
    async fn cluster_answers(&self, topic: &str) -> bool {
        let (consumer, name) = (self.consumer.clone(), topic.to_string());
        let asked = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
                .map(|md| metadata_has_leaders(&md, &name))
        })
        .await;
        match asked {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => {
                debug!(%topic, error = %e, "metadata request failed: the cluster is not reachable");
                false
            }
            Err(e) => {
                warn!(%topic, error = %e, "metadata task failed");
                false
            }
        }
    }

    /// Get a decided message's dead-letter copy and outcomes out, each acknowledged by the
    /// broker. `Abandoned` only when the worker failed fatally.
    pub(super) async fn publish(&self, w: &Work, decided: Decided) -> Finished {
        let Decided {
            handled,
            traceparent,
            span,
        } = decided;
        self.publish_traced(w, handled, traceparent).instrument(span).await
    }

    async fn publish_traced(&self, w: &Work, handled: Handled, traceparent: Option<String>) -> Finished {
        if let Some(rejection) = &handled.dead_letter {
            let headers = dlq_headers(rejection, &w.source, w.headers.as_ref());
            // Byte for byte: a null payload stays null.
            if !self
                .deliver(
                    &self.dlq_topic,
                    w.key.as_deref(),
                    w.payload.as_deref(),
                    Some(headers),
                    &w.source,
                )
                .await
            {
                return Finished::Abandoned;
            }
            self.metrics.dlq.inc();
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            warn!(source = %w.source, field = %rejection.field, reason = %rejection, topic = %self.dlq_topic,
                "poison message copied to the dead-letter topic");
        }
        // Outcomes continue the incident's trace (W3C trace context): same trace id, our span.
        let outcome_headers = traceparent.as_deref().map(|tp| {
            OwnedHeaders::new().insert(Header {
                key: TRACEPARENT,
                value: Some(tp),
            })
        });
        for o in &handled.outcomes {
            let key = o.incident_id.as_deref().map(str::as_bytes);
            if !self
                .deliver(
                    &self.outcomes_topic,
                    key,
                    Some(o.to_json().as_bytes()),
                    outcome_headers.clone(),
                    &w.source,
                )
                .await
            {
                return Finished::Abandoned;
            }
            self.metrics.outcomes_published.inc();
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        if handled.republished {
            self.republished.fetch_add(1, Ordering::Relaxed);
        }
        Finished::Done
    }

    /// Publish one record and wait for the broker's acknowledgement, retrying until it comes.
    /// `false` only when the worker failed fatally: the caller must not acknowledge.
    ///
    /// **Liveness.** A broker outage is waited out for as long as it lasts, but a producer that
    /// no longer delivers while the cluster is fine is not. After each failed attempt the
    /// consumer's own metadata request asks the cluster whether every partition of the topic has
    /// a leader. When it has after [`STALL_FAILURES`] failures in a row (about two minutes with
    /// the default `message.timeout.ms`), the producer is stuck (seen once after a broker
    /// restart: one replica's idempotent producer timed out for minutes while the other
    /// replica's recovered at once) and the worker fails with [`KafkaError::Stalled`]: the
    /// process exits non-zero, its orchestrator restarts it with fresh clients, the messages it
    /// had not acknowledged are redelivered, and the guardrail store answers them with their
    /// recorded outcomes instead of acting again. When the cluster does not answer, or a
    /// partition has no leader, it is an outage: the count starts again and the record keeps
    /// being retried (a failure that happened during an outage which ended just before the check
    /// counts once, and the next attempt, in the recovered cluster, succeeds). A cluster that
    /// answers but cannot take writes (fewer in-sync replicas than `min.insync.replicas`, an
    /// ACL) also ends the worker, once per restart and message: it is visible, where waiting was
    /// not.
    async fn deliver(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        source: &Source,
    ) -> bool {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        // Failures in a row, and how many of the latest ones in a row the cluster answered after.
        let (mut failures, mut answered, mut first_failure) = (0u32, 0u32, None);
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            // Timeout::Never: a full local queue is waited out; shutdown's drain bound applies.
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => return true,
                Err((e, _)) => {
                    if let Some((code, reason)) = self.producer.client().fatal_error() {
                        self.fail(KafkaError::Fatal(format!("producer: {code}: {reason}")));
                        return false;
                    }
                    if self.failed() {
                        // Another partition found the producer unusable: the worker is restarting,
                        // and this message is redelivered after it.
                        return false;
                    }
                    failures += 1;
                    let since = *first_failure.get_or_insert_with(std::time::Instant::now);
                    answered = if self.cluster_answers(topic).await {
                        answered + 1
                    } else {
                        0
                    };
                    if answered >= STALL_FAILURES {
                        self.fail(KafkaError::Stalled {
                            topic: topic.to_string(),
                            failures: answered,
                            secs: since.elapsed().as_secs(),
                            last: e.to_string(),
                        });
                        return false;
                    }
                    let wait = backoff.next_wait();
                    warn!(%topic, %source, error = %e, failures, cluster_answered = answered,
                        retry_in_ms = wait.as_millis() as u64, "delivery not acknowledged; retrying");
                    // Keep retrying while draining too: an executed action's outcome must get out.
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// `topic` is in `md` without error, with at least one partition, and every partition has a
/// leader that is one of the brokers `md` lists.
pub(super) fn metadata_has_leaders(md: &rdkafka::metadata::Metadata, topic: &str) -> bool {
    let brokers: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
    md.topics().iter().find(|t| t.name() == topic).is_some_and(|t| {
        t.error().is_none()
            && !t.partitions().is_empty()
            && t.partitions()
                .iter()
                .all(|p| p.error().is_none() && p.leader() >= 0 && brokers.contains(&p.leader()))
    })
}

/// The dead-letter headers (docs/design.md#dead-letters), then the original headers except ones we
/// set.
pub(super) fn dlq_headers(rejection: &Rejection, source: &Source, original: Option<&OwnedHeaders>) -> OwnedHeaders {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    let error = rejection.to_string();
    let mut h = OwnedHeaders::new_with_capacity(DLQ_HEADERS.len() + original.map_or(0, |o| o.count()))
        .insert(Header {
            key: "error",
            value: Some(error.as_str()),
        })
        .insert(Header {
            key: "error_field",
            value: Some(rejection.field.as_str()),
        })
        .insert(Header {
            key: "source_topic",
            value: Some(source.topic.as_str()),
        })
        .insert(Header {
            key: "source_partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "source_offset",
            value: Some(offset.as_str()),
        });
    if let Some(original) = original {
        for header in original.iter().filter(|x| !DLQ_HEADERS.contains(&x.key)) {
            h = h.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    h
}
