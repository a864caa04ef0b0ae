//! The Kafka edge of the worker: consume incidents, publish outcomes, commit only what is done.
//!
//! [`run`] is the whole consume -> handle -> publish -> commit loop (docs/design.md#kafka). Its
//! promises, and how they are kept:
//!
//! * **At-least-once, acknowledgement-driven commits.** The consumer auto-commits, but only
//!   offsets this module *stores* (`enable.auto.offset.store=false`), and it stores offset `N+1`
//!   only after every outcome of message `N` (and its dead-letter copy) was acknowledged by the
//!   broker. A crash between publish and commit redelivers the message; the guardrail store then
//!   re-publishes the recorded outcome instead of acting again.
//! * **Per-partition order, partitions in parallel.** One task per partition decides its messages
//!   one after another and hands them to the partition's publisher, which hands their outcomes
//!   to the producer in the same order without waiting for the broker (up to 64 messages
//!   outstanding; the idempotent producer keeps their order) and finishes them in that order as
//!   the acknowledgements come. Offsets are stored in order by construction: `N+1` is never
//!   stored while `N` is unacknowledged. A failed record is sent again together with every record
//!   handed over after it, in order. Partitions run concurrently.
//! * **Bounded work, backpressure.** At most `max_in_flight` messages are pulled and unfinished at
//!   a time (a semaphore). When it is exhausted the consumer stops pulling; if no slot frees up
//!   within a second, the assigned partitions are *paused* and the consumer is polled again, so
//!   rebalances are served and `max.poll.interval.ms` never expires however long the stall lasts
//!   (a Redis outage can hold every partition for minutes). Consumption resumes once half the
//!   slots are free. Pausing makes librdkafka discard what it had prefetched and later refetch
//!   from the last message handed to us, so nothing is skipped (the refetch costs ~0.5 s, hence
//!   no pause for short bursts); a message that still arrives while paused (a partition assigned a
//!   moment ago) is accepted beyond the bound rather than dropped.
//! * **Fail closed.** When the guardrail store is unreachable nothing is executed: the partition
//!   waits and retries the *same* message with the *same* attempt id (backoff 100 ms .. 5 s).
//! * **Poison never blocks.** A message the engine rejects (or one with a null payload) is copied
//!   byte for byte to the dead-letter topic with headers naming the error and its origin, its
//!   `rejected` outcome is published, and its offset is committed like any other.
//! * **Rebalances.** A revoked partition's message in progress may finish and publish (the new
//!   owner's redelivery is made safe by the store), but its offset is no longer stored, and its
//!   queued messages are dropped unprocessed: they belong to the new owner now.
//! * **A stuck producer ends the worker, an outage does not.** An outcome is retried until the
//!   broker acknowledges it, through any outage. But if one record failed to deliver several
//!   times in a row (about two minutes), each time while the cluster answered the consumer's
//!   metadata request with a leader for every partition of its topic, the producer is presumed
//!   stuck and [`run`]
//!   fails ([`KafkaError::Stalled`]), so the process exits non-zero and is restarted; what it had
//!   not acknowledged is redelivered and re-published from the store, never acted on again.
//! * **Graceful shutdown.** Stop consuming, let each partition finish the message it is working on
//!   (an action runs to its end: post-checks, rollback, record) and publish what it decided,
//!   within the shutdown grace counted from the signal (`shutdown.grace`, see `shutdown.rs`;
//!   queued messages are left for redelivery), then commit synchronously and flush. Only a
//!   message still unfinished when the grace ends is abandoned (and redelivered, which the store
//!   makes safe).
//!
//! Where each part lives:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`run`]: create the clients, consume until shutdown, drain, commit, flush |
//! | `settings.rs` | [`KafkaSettings`] and the librdkafka settings every client starts from |
//! | `context.rs` | the clients' contexts: partition ownership across rebalances, the lag gauge, logs |
//! | `dispatch.rs` | the consume loop: the in-flight bound, pausing and resuming, one queue per partition |
//! | `partition.rs` | one partition's messages: decided in order, published in order, offsets stored in order |
//! | `publish.rs` | outcomes and dead-letter copies out and acknowledged; the stuck-producer check |
//! | `shared.rs` | what the three stages above share: a message taken off the consumer, the partition tasks' state, a decided message |
//! | `trace.rs` | the W3C trace context carried from incidents to their outcomes |
//! | `tests.rs` | unit tests, including a whole [`run`] against librdkafka's mock cluster |

mod context;
mod dispatch;
mod partition;
mod publish;
mod settings;
mod shared;
mod trace;

pub use settings::{consumer_config, producer_config, KafkaSettings};
pub use trace::{TraceParent, TRACEPARENT};

use crate::engine::Engine;
use crate::health::Health;
use crate::shutdown::Shutdown;
use context::{ConsumerCtx, ProducerCtx};
use dispatch::{dispatch, Worker};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use shared::Shared;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

/// First wait after a failed store call or delivery.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the final producer flush may take (everything was already awaited, so it is quick).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What one [`run`] did, counted in input messages whose outcomes were acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Messages fully handled: outcomes (and dead-letter copy) acknowledged by the broker.
    pub handled: u64,
    /// Of those, messages copied to the dead-letter topic.
    pub dead_lettered: u64,
    /// Of those, redeliveries answered by re-publishing the recorded outcome.
    pub republished: u64,
}

/// Why [`run`] could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration (bad property name or value).
    #[error("cannot create the kafka {client}: {source}")]
    Client {
        /// `consumer` or `producer`.
        client: &'static str,
        /// librdkafka's error, naming the property.
        #[source]
        source: RdKafkaError,
    },
    /// Subscribing to the incidents topic failed (e.g. an invalid topic name).
    #[error("cannot subscribe to topic {topic:?}: {source}")]
    Subscribe {
        /// The incidents topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: RdKafkaError,
    },
    /// librdkafka reported a fatal error (e.g. the idempotent producer lost its guarantees);
    /// the client is unusable and the process must restart. Unfinished messages are redelivered.
    #[error("fatal kafka error, the worker must restart: {0}")]
    Fatal(String),
    /// The producer stopped delivering while the cluster answers (module documentation); the
    /// process must restart with fresh clients. Unfinished messages are redelivered and their
    /// recorded outcomes re-published, not acted on again.
    #[error(
        "the producer is stuck: {failures} deliveries to {topic} in a row failed over {secs} s \
         (last: {last}) while the cluster answers; the worker must restart"
    )]
    Stalled {
        /// Topic of the record that could not be delivered.
        topic: String,
        /// Failed attempts in a row.
        failures: u32,
        /// Seconds since the first of them.
        secs: u64,
        /// The last delivery error.
        last: String,
    },
    /// Handling a message panicked (a bug). The worker stops without committing that message,
    /// so it is redelivered after the restart instead of being skipped.
    #[error("handling the message at {0} panicked; stopping so it is not skipped")]
    Panicked(String),
}

/// Consume incidents until `shutdown` fires, publishing their outcomes and committing what is
/// done (see the module documentation for the guarantees).
///
/// Returns the counts of handled messages. Errors only for a configuration librdkafka rejects,
/// a fatal client error, or a panic while handling a message; broker outages are waited out.
pub async fn run(
    settings: &KafkaSettings,
    engine: Arc<Engine>,
    health: Arc<Health>,
    mut shutdown: Shutdown,
) -> Result<RunStats, KafkaError> {
    let metrics = engine.metrics().clone();
    let ctx = ConsumerCtx {
        topic: settings.incidents_topic.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        owned: Mutex::new(HashMap::new()),
        generations: AtomicU64::new(0),
        saturated: AtomicBool::new(false),
    };
    let consumer: Arc<StreamConsumer<ConsumerCtx>> = Arc::new(
        consumer_config(settings)
            .create_with_context(ctx)
            .map_err(|source| KafkaError::Client {
                client: "consumer",
                source,
            })?,
    );
    let producer: FutureProducer<ProducerCtx> = producer_config(settings)
        .create_with_context(ProducerCtx { health: health.clone() })
        .map_err(|source| KafkaError::Client {
            client: "producer",
            source,
        })?;
    consumer
        .subscribe(&[settings.incidents_topic.as_str()])
        .map_err(|source| KafkaError::Subscribe {
            topic: settings.incidents_topic.clone(),
            source,
        })?;
    info!(
        brokers = %settings.brokers,
        group = %settings.group_id,
        topic = %settings.incidents_topic,
        max_in_flight = settings.max_in_flight,
        "consuming incidents"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        engine,
        health: health.clone(),
        metrics,
        consumer: consumer.clone(),
        producer: producer.clone(),
        outcomes_topic: settings.outcomes_topic.clone(),
        decide_batch: settings.decide_batch.max(1),
        dlq_topic: settings.dlq_topic.clone(),
        stop: stop_rx,
        fatal: Mutex::new(None),
        fatal_notify: Notify::new(),
        handled: AtomicU64::new(0),
        dead_lettered: AtomicU64::new(0),
        republished: AtomicU64::new(0),
        tasks: shutdown.clone(),
    });

    let mut workers: HashMap<i32, Worker> = HashMap::new();
    dispatch(&shared, &mut workers, settings.max_in_flight, &mut shutdown).await;
    if shutdown.is_triggered() {
        info!("shutdown: no new incidents; draining the ones in progress");
    }

    // Drain: no new messages; each partition finishes the one it is working on, within the
    // grace counted from the signal.
    let _ = stop_tx.send(true);
    drain(workers, shutdown.deadline()).await;

    // Commit what was stored, synchronously: the last acknowledgements must not wait for the
    // next auto-commit tick that will never come.
    let committer = consumer.clone();
    match tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync)).await {
        Ok(Ok(())) => info!("offsets committed"),
        Ok(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => debug!("no new offsets to commit"),
        Ok(Err(e)) => warn!(error = %e, "final commit failed; the unacknowledged tail will be redelivered"),
        Err(e) => warn!(error = %e, "final commit task failed"),
    }
    // After a fatal error the producer is not trusted to flush (a stuck one would only make the
    // exit wait); every acknowledged outcome was awaited already.
    let failed = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some();
    let flush_timeout = if failed { Duration::ZERO } else { FLUSH_TIMEOUT };
    let flusher = producer.clone();
    match tokio::task::spawn_blocking(move || flusher.flush(Timeout::After(flush_timeout))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "producer flush failed"),
        Err(e) => warn!(error = %e, "producer flush task failed"),
    }

    let stats = shared.stats();
    let fatal = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(shared);
    drop(producer);
    // Closing the consumer leaves the group (a blocking handshake): keep it off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    health.set_kafka(false);
    info!(
        handled = stats.handled,
        dead_lettered = stats.dead_lettered,
        republished = stats.republished,
        "consumer stopped"
    );
    match fatal {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Close every partition queue and wait, until `deadline` (the end of the shutdown grace), for
/// the tasks to finish their current message.
async fn drain(workers: HashMap<i32, Worker>, deadline: tokio::time::Instant) {
    let mut handles = Vec::with_capacity(workers.len());
    for (partition, w) in workers {
        drop(w.tx);
        handles.push((partition, w.handle));
    }
    for (partition, mut handle) in handles {
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(_) => {}
            Err(_) => {
                // Its message stays unacknowledged and is redelivered; the store keeps that safe.
                error!(
                    partition,
                    "in-flight incident did not finish within the shutdown grace; abandoning it"
                );
                handle.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests;
