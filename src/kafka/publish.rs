//! Publishing: a decided message's dead-letter copy and outcomes, each acknowledged by the broker.
//!
//! A partition's publisher hands each decided message's records to the producer as soon as it
//! has them ([`Shared::enqueue`]), so several messages' records are outstanding at once, and
//! waits for their acknowledgements in the order it handed them over ([`Outstanding`]). The
//! idempotent producer keeps that order on each topic partition; acknowledgements therefore come
//! in order too, and a message counts as published once all of its records are acknowledged.
//!
//! A record that fails (normally after a whole `message.timeout.ms`) is sent again, and so is
//! every record handed over after it, one after another, each waiting for its acknowledgement
//! ([`Shared::redeliver`]): records sent after a failed one may have been delivered before its
//! copy, so sending them again after it keeps the last copy of each in the original order (the
//! price is a duplicate, which at-least-once delivery allows). Delivery is retried until the
//! broker acknowledges, through any outage, because an executed action's outcome must get out.
//! The one exception is a producer that is stuck while the cluster answers: [`Shared::deliver`]
//! tells the two apart with a metadata request through the consumer and ends the worker with
//! [`KafkaError::Stalled`] after [`STALL_FAILURES`] such failures, so it is restarted with fresh
//! clients. Dead-letter copies are the poison message byte for byte, with headers naming the
//! error and where it came from; outcomes carry the incident's trace context.

use super::shared::{Decided, Shared, Work};
use super::trace::TRACEPARENT;
use super::{KafkaError, BACKOFF_MAX, BACKOFF_MIN};
use crate::engine::Source;
use crate::incident::Rejection;
use crate::retry::Backoff;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::{debug, warn, Instrument};

/// Consecutive failed deliveries of one record, each while the cluster itself answered, after
/// which the producer is presumed stuck (see [`Shared::deliver`]). Each failure is normally a
/// whole `message.timeout.ms` (30 s by default), so this is about two minutes without an
/// acknowledgement.
const STALL_FAILURES: u32 = 4;
/// How long the metadata request that tells a stuck producer from a broker outage may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait before handing a record over again when the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// Header names the dead-letter copy carries (docs/design.md#dead-letters).
const DLQ_HEADERS: [&str; 5] = [
    "error",
    "error_field",
    "source_topic",
    "source_partition",
    "source_offset",
];

/// Which topic a record goes to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Destination {
    DeadLetter,
    Outcomes,
}

/// One record of a decided message, kept until it is acknowledged so it can be sent again.
struct Record {
    to: Destination,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

/// What became of a record handed to the producer.
enum Delivery {
    /// Waiting for the broker's answer.
    Pending(DeliveryFuture),
    /// The producer refused it at once (see [`Shared::hand_over`]).
    Refused(RdKafkaError),
}

/// A decided message whose records were handed to the producer: the partition's publisher holds
/// these in order and finishes each once all its records are acknowledged.
pub(super) struct Outstanding {
    pub(super) work: Work,
    records: Vec<Record>,
    deliveries: Vec<Delivery>,
    /// Records at the front acknowledged so far.
    acknowledged: usize,
    dead_letter: Option<Rejection>,
    republished: bool,
    /// The message's span, entered again for what is logged about its publishing.
    span: tracing::Span,
}

impl Outstanding {
    /// Wait for this message's records to be acknowledged, in order: `Ok` once all are, or the
    /// first failure. Cancel-safe: acknowledgements already seen are remembered.
    pub(super) fn acknowledged(&mut self) -> impl Future<Output = Result<(), RdKafkaError>> + '_ {
        std::future::poll_fn(move |cx| self.poll_acknowledged(cx))
    }

    fn poll_acknowledged(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RdKafkaError>> {
        while let Some(delivery) = self.deliveries.get_mut(self.acknowledged) {
            let answer = match delivery {
                Delivery::Refused(e) => Err(e.clone()),
                Delivery::Pending(f) => match Pin::new(f).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(_))) => Ok(()),
                    Poll::Ready(Ok(Err((e, _)))) => Err(e),
                    // The producer dropped the record without an answer (it is being closed).
                    Poll::Ready(Err(_)) => Err(RdKafkaError::Canceled),
                },
            };
            answer?;
            self.acknowledged += 1;
        }
        Poll::Ready(Ok(()))
    }
}

/// Failed deliveries of one record so far, for [`Shared::retry_after`].
struct Attempts {
    backoff: Backoff,
    /// Failures in a row.
    failures: u32,
    /// How many of the latest failures in a row the cluster answered after.
    answered: u32,
    first_failure: Option<Instant>,
}

impl Attempts {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            failures: 0,
            answered: 0,
            first_failure: None,
        }
    }
}

impl Shared {
    fn topic(&self, to: Destination) -> &str {
        match to {
            Destination::DeadLetter => &self.dlq_topic,
            Destination::Outcomes => &self.outcomes_topic,
        }
    }

    fn future_record<'a>(&'a self, r: &'a Record) -> FutureRecord<'a, [u8], [u8]> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(self.topic(r.to));
        if let Some(p) = &r.payload {
            record = record.payload(p);
        }
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(h) = &r.headers {
            record = record.headers(h.clone());
        }
        record
    }

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

    /// Hand a decided message's records to the producer without waiting for the broker: its
    /// dead-letter copy first (the poison message byte for byte), then its outcomes (with the
    /// incident's trace context).
    pub(super) async fn enqueue(&self, work: Work, decided: Decided) -> Outstanding {
        let Decided {
            handled,
            traceparent,
            span,
        } = decided;
        let mut records = Vec::with_capacity(handled.outcomes.len() + 1);
        if let Some(rejection) = &handled.dead_letter {
            records.push(Record {
                to: Destination::DeadLetter,
                key: work.key.clone(),
                // Byte for byte: a null payload stays null.
                payload: work.payload.clone(),
                headers: Some(dlq_headers(rejection, &work.source, work.headers.as_ref())),
            });
        }
        // Outcomes continue the incident's trace (W3C trace context): same trace id, our span.
        let outcome_headers = traceparent.as_deref().map(|tp| {
            OwnedHeaders::new().insert(Header {
                key: TRACEPARENT,
                value: Some(tp),
            })
        });
        records.extend(handled.events().map(|(o, json)| Record {
            to: Destination::Outcomes,
            key: o.incident_id.as_ref().map(|id| id.clone().into_bytes()),
            payload: Some(json.as_bytes().to_vec()),
            headers: outcome_headers.clone(),
        }));
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            deliveries.push(self.hand_over(r).await);
        }
        Outstanding {
            work,
            records,
            deliveries,
            acknowledged: 0,
            dead_letter: handled.dead_letter,
            republished: handled.republished,
            span,
        }
    }

    /// Give one record to the producer; a full local queue is waited out (shutdown's drain bound
    /// applies), anything else it refuses at once is a failed delivery like any other.
    async fn hand_over(&self, r: &Record) -> Delivery {
        loop {
            match self.producer.send_result(self.future_record(r)) {
                Ok(f) => return Delivery::Pending(f),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Delivery::Refused(e),
            }
        }
    }

    /// A message's records are all acknowledged: count it and store its offset.
    pub(super) fn finish(&self, o: Outstanding) {
        if let Some(rejection) = &o.dead_letter {
            self.metrics.dlq.inc();
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            o.span.in_scope(|| {
                warn!(source = %o.work.source, field = %rejection.field, reason = %rejection, topic = %self.dlq_topic,
                    "poison message copied to the dead-letter topic");
            });
        }
        let outcomes = o.records.iter().filter(|r| r.to == Destination::Outcomes).count();
        self.metrics.outcomes_published.inc_by(outcomes as u64);
        self.handled.fetch_add(1, Ordering::Relaxed);
        if o.republished {
            self.republished.fetch_add(1, Ordering::Relaxed);
        }
        self.acknowledge(&o.work);
    }

    /// The first outstanding message's next record failed with `error`: send it and every record
    /// handed over after it again, one after another, each acknowledged before the next is sent,
    /// finishing each message on the way. `false` only when the worker failed fatally: nothing
    /// more of this partition may be acknowledged.
    pub(super) async fn redeliver(&self, outstanding: &mut VecDeque<Outstanding>, error: RdKafkaError) -> bool {
        let mut error = Some(error);
        while let Some(o) = outstanding.pop_front() {
            for r in &o.records[o.acknowledged..] {
                let delivered = self
                    .deliver(r, &o.work.source, error.take())
                    .instrument(o.span.clone())
                    .await;
                if !delivered {
                    return false;
                }
            }
            self.finish(o);
        }
        true
    }

    /// Send a record again and wait for the broker's acknowledgement, retrying until it comes;
    /// `failed` is the failure the record had, if it was the one that failed. `false` only when the worker failed
    /// fatally: the caller must not acknowledge.
    async fn deliver(&self, r: &Record, source: &Source, failed: Option<RdKafkaError>) -> bool {
        let mut attempts = Attempts::new();
        if let Some(e) = failed {
            if !self.retry_after(&mut attempts, r.to, source, e).await {
                return false;
            }
        }
        loop {
            self.metrics.delivery_retries.inc();
            // Timeout::Never: a full local queue is waited out; shutdown's drain bound applies.
            match self.producer.send(self.future_record(r), Timeout::Never).await {
                Ok(_) => return true,
                Err((e, _)) => {
                    if !self.retry_after(&mut attempts, r.to, source, e).await {
                        return false;
                    }
                }
            }
        }
    }

    /// After a failed delivery of a record: wait before the next attempt (`true`), or give up
    /// (`false`) because the worker failed fatally.
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
    async fn retry_after(&self, a: &mut Attempts, to: Destination, source: &Source, e: RdKafkaError) -> bool {
        let topic = self.topic(to);
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            self.fail(KafkaError::Fatal(format!("producer: {code}: {reason}")));
            return false;
        }
        if self.failed() {
            // Another partition found the producer unusable: the worker is restarting, and this
            // message is redelivered after it.
            return false;
        }
        a.failures += 1;
        let since = *a.first_failure.get_or_insert_with(Instant::now);
        a.answered = if self.cluster_answers(topic).await {
            a.answered + 1
        } else {
            0
        };
        if a.answered >= STALL_FAILURES {
            self.fail(KafkaError::Stalled {
                topic: topic.to_string(),
                failures: a.answered,
                secs: since.elapsed().as_secs(),
                last: e.to_string(),
            });
            return false;
        }
        let wait = a.backoff.next_wait();
        warn!(%topic, %source, error = %e, failures = a.failures, cluster_answered = a.answered,
            retry_in_ms = wait.as_millis() as u64, "delivery not acknowledged; retrying");
        // Keep retrying while draining too: an executed action's outcome must get out.
        tokio::time::sleep(wait).await;
        true
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
