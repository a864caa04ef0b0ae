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
//!   one after another and hands them to the partition's publisher, which publishes their
//!   outcomes one after another in the same order: while the broker acknowledges message `N`,
//!   `N+1` (up to 8 messages ahead) is being decided. Offsets are stored in order by
//!   construction: `N+1` is never stored while `N` is unpublished. Partitions run concurrently.
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

use crate::engine::{Engine, EngineError, Handled, Source};
use crate::health::Health;
use crate::incident::Rejection;
use crate::metrics::Metrics;
use crate::outcome::Decision;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use futures::FutureExt;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument};

/// First wait after a failed store call or delivery.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the final producer flush may take (everything was already awaited, so it is quick).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a saturated consumer may go unpolled before it pauses its partitions (and polls
/// again): short enough to serve rebalances promptly, long enough that bursts of quick
/// decisions never pay the refetch a pause causes.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// Pause after a consumer error so a persistent one is not logged in a hot loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);
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

/// Where and how to talk to Kafka: the `kafka.*` section of the worker config
/// (docs/configuration.md), used as it is by the worker, the approvals path and the Alertmanager
/// intake, whose clients all start from [`consumer_config`] and [`producer_config`].
pub type KafkaSettings = crate::config::KafkaConfig;

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
        // Send at once: a partition waits for its outcome's acknowledgement before its next
        // message, so librdkafka's default 5 ms linger was paid once per message, serially
        // (scripts/bench: 11x the throughput without it, docs/benchmark-history.md). Batching still
        // happens whenever several outcomes are queued while a request is in flight.
        .set("linger.ms", "0")
        // TCP_NODELAY: a small outcome is not held back by Nagle behind an unacknowledged one.
        .set("socket.nagle.disable", "true");
    for (k, v) in &s.properties {
        c.set(k, v);
    }
    c
}

/// The consumer's view of the group: which partitions it owns (and since which assignment),
/// forwarded librdkafka logs, errors and statistics.
struct ConsumerCtx {
    topic: String,
    health: Arc<Health>,
    metrics: Metrics,
    /// Partition -> generation of the assignment that gave it to us. A message is acknowledged
    /// only while its partition is still owned under the generation it was received in.
    owned: Mutex<HashMap<i32, u64>>,
    generations: AtomicU64,
    /// The dispatcher paused consumption; partitions assigned meanwhile start paused too.
    saturated: AtomicBool,
}

impl ConsumerCtx {
    fn generation(&self, partition: i32) -> Option<u64> {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .copied()
    }

    fn owns(&self, partition: i32, generation: u64) -> bool {
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
struct ProducerCtx {
    health: Arc<Health>,
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

/// One message taken off the consumer, owned so it can cross into its partition's task.
struct Work {
    source: Source,
    key: Option<Vec<u8>>,
    /// `None` for a null payload (a tombstone): poison, since it is not an incident.
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    /// Assignment generation the message was received under.
    generation: u64,
    /// The slot this message holds in the `max_in_flight` bound, released when it is finished
    /// or dropped. `None` for a message that arrived while consumption was paused.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Work {
    fn from_message(m: &BorrowedMessage<'_>, generation: u64, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            source: Source {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            },
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m.headers().map(|h| h.detach()),
            generation,
            _permit: permit,
        }
    }
}

/// A partition's task and the queue feeding it.
struct Worker {
    tx: mpsc::UnboundedSender<Work>,
    handle: JoinHandle<()>,
}

/// State every partition task shares.
struct Shared {
    engine: Arc<Engine>,
    health: Arc<Health>,
    metrics: Metrics,
    consumer: Arc<StreamConsumer<ConsumerCtx>>,
    producer: FutureProducer<ProducerCtx>,
    outcomes_topic: String,
    dlq_topic: String,
    /// Shutdown in progress: finish the current message, start no other.
    stop: watch::Receiver<bool>,
    /// First fatal condition; the dispatcher stops when it is set.
    fatal: Mutex<Option<KafkaError>>,
    fatal_notify: Notify,
    handled: AtomicU64,
    dead_lettered: AtomicU64,
    republished: AtomicU64,
    /// Owner of the partition tasks (the worker's shutdown tracker).
    tasks: Shutdown,
}

/// A message decided and waiting to be published.
struct Decided {
    handled: Handled,
    /// The `traceparent` its outcomes carry (the incident's trace, our span).
    traceparent: Option<String>,
    /// The message's span, entered again to publish.
    span: tracing::Span,
}

/// How handling one message ended.
enum Finished {
    /// Every outcome (and DLQ copy) is acknowledged: the offset may be stored.
    Done,
    /// Given up because the worker is stopping (or Kafka failed fatally): not acknowledged, so
    /// the message will be redelivered.
    Abandoned,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.failed()
    }

    /// A fatal error was recorded: the worker is stopping to be restarted.
    fn failed(&self) -> bool {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some()
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

    fn fail(&self, e: KafkaError) {
        error!(error = %e, "stopping the consumer");
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            *fatal = Some(e);
        }
        drop(fatal);
        self.fatal_notify.notify_one();
    }

    fn stats(&self) -> RunStats {
        RunStats {
            handled: self.handled.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            republished: self.republished.load(Ordering::Relaxed),
        }
    }

    /// Wait `d` unless the worker stops first; `false` when it stopped.
    async fn backoff(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = stop.wait_for(|v| *v) => false,
        }
    }

    /// Decide one message (the guardrail store is asked, the decision recorded, any action run):
    /// what [`Shared::publish`] must then get out. `None` when the worker stopped first (nothing
    /// was decided; the message is redelivered).
    async fn decide(&self, w: &Work) -> Option<Decided> {
        let trace = w.headers.as_ref().and_then(TraceParent::from_headers);
        let span = match &trace {
            Some(t) => tracing::info_span!("message", trace_id = %t.trace_id, parent_id = %t.parent_id),
            None => tracing::info_span!("message"),
        };
        let traceparent = trace.map(|t| t.child());
        let handled = self.decide_traced(w).instrument(span.clone()).await?;
        Some(Decided {
            handled,
            traceparent,
            span,
        })
    }

    async fn decide_traced(&self, w: &Work) -> Option<Handled> {
        // One attempt id per delivery, reused on retries so the store never reserves twice.
        let attempt = uuid::Uuid::new_v4().to_string();
        let payload = w.payload.as_deref().unwrap_or_default();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut handled = loop {
            match self.engine.handle(payload, Some(&w.source), &attempt).await {
                Ok(h) => {
                    // A rejected message never reaches the store, so it says nothing about it.
                    if h.dead_letter.is_none() {
                        self.health.set_store(true);
                    }
                    break h;
                }
                Err(EngineError::StoreUnavailable(reason)) => {
                    // Fail closed: nothing was executed; hold the partition on this message.
                    self.health.set_store(false);
                    let wait = backoff.next_wait();
                    warn!(source = %w.source, %reason, retry_in_ms = wait.as_millis() as u64,
                        "guardrail store unavailable: partition paused on this incident");
                    if !self.backoff(wait).await {
                        info!(source = %w.source, "stopping while the store is unavailable; left for redelivery");
                        return None;
                    }
                }
            }
        };
        if w.payload.is_none() {
            // The engine saw an empty payload; name the real problem in the DLQ and the audit.
            let rejection = Rejection {
                field: "$".into(),
                message: "null payload (tombstone) is not an incident".into(),
            };
            for o in handled.outcomes.iter_mut().filter(|o| o.decision == Decision::Rejected) {
                o.reason = format!("invalid incident: {rejection}");
            }
            handled.dead_letter = Some(rejection);
        }
        Some(handled)
    }

    /// Get a decided message's dead-letter copy and outcomes out, each acknowledged by the
    /// broker. `Abandoned` only when the worker failed fatally.
    async fn publish(&self, w: &Work, decided: Decided) -> Finished {
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

    /// Store `offset + 1` for a finished message, if its partition is still ours.
    fn acknowledge(&self, w: &Work) {
        let p = w.source.partition;
        if !self.consumer.context().owns(p, w.generation) {
            debug!(source = %w.source, "partition no longer owned; its offset is left to the new owner");
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(1);
        if let Err(e) = tpl.add_partition_offset(&w.source.topic, p, Offset::Offset(w.source.offset + 1)) {
            warn!(source = %w.source, error = %e, "cannot build the offset to store");
            return;
        }
        // Revocation can still race us between the check and the call; librdkafka then refuses
        // (the partition is unassigned), which is exactly what we want.
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            debug!(source = %w.source, error = %e, "offset not stored (partition revoked?)");
        }
    }
}

/// `topic` is in `md` without error, with at least one partition, and every partition has a
/// leader that is one of the brokers `md` lists.
fn metadata_has_leaders(md: &rdkafka::metadata::Metadata, topic: &str) -> bool {
    let brokers: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
    md.topics().iter().find(|t| t.name() == topic).is_some_and(|t| {
        t.error().is_none()
            && !t.partitions().is_empty()
            && t.partitions()
                .iter()
                .all(|p| p.error().is_none() && p.leader() >= 0 && brokers.contains(&p.leader()))
    })
}

/// The W3C trace-context header carried from incidents to their outcomes.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (32 lowercase hex, not all zero).
    pub trace_id: String,
    /// Parent span id (16 lowercase hex, not all zero).
    pub parent_id: String,
    /// Trace flags (2 hex).
    pub flags: String,
}

impl TraceParent {
    /// Parse a header value; anything malformed is ignored (never an error: tracing is advisory).
    pub fn parse(v: &str) -> Option<Self> {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        match parts.as_slice() {
            [ver, trace, parent, flags]
                if hex(ver, 2)
                    && *ver != "ff"
                    && hex(trace, 32)
                    && nonzero(trace)
                    && hex(parent, 16)
                    && nonzero(parent)
                    && hex(flags, 2) =>
            {
                Some(Self {
                    trace_id: trace.to_string(),
                    parent_id: parent.to_string(),
                    flags: flags.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The first valid `traceparent` header of a message.
    pub fn from_headers(h: &OwnedHeaders) -> Option<Self> {
        h.iter()
            .filter(|x| x.key.eq_ignore_ascii_case(TRACEPARENT))
            .find_map(|x| x.value.and_then(|v| std::str::from_utf8(v).ok()).and_then(Self::parse))
    }

    /// The header for what this worker sends on: same trace, a new span id of ours.
    pub fn child(&self) -> String {
        let span = uuid::Uuid::new_v4().simple().to_string();
        format!("00-{}-{}-{}", self.trace_id, &span[..16], self.flags)
    }
}

/// The dead-letter headers (docs/design.md#dead-letters), then the original headers except ones we
/// set.
fn dlq_headers(rejection: &Rejection, source: &Source, original: Option<&OwnedHeaders>) -> OwnedHeaders {
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

/// The consume loop: pull messages within the in-flight bound and hand each to its partition's
/// task, until shutdown or a fatal error.
async fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<i32, Worker>,
    max_in_flight: usize,
    shutdown: &mut Shutdown,
) {
    let consumer = &shared.consumer;
    let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    // Hysteresis: once paused, resume only when half the slots are free again, so a saturated
    // worker does not pause and resume (and refetch) for every single message.
    let resume_at = u32::try_from((max_in_flight / 2).max(1)).unwrap_or(u32::MAX);
    let mut next: Option<OwnedSemaphorePermit> = None;
    let mut paused = false;
    loop {
        if next.is_none() {
            next = slots.clone().try_acquire_owned().ok();
        }
        if next.is_none() && !paused {
            // Saturated. A short stall (a burst of quick decisions) is waited out without
            // polling, because pausing costs a refetch; only a long one (slow actions, a store
            // outage) pauses, so that the consumer is polled again for as long as it lasts.
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                _ = shared.fatal_notify.notified() => return,
                permit = slots.clone().acquire_owned() => {
                    next = permit.ok();
                    continue;
                }
                _ = tokio::time::sleep(PAUSE_AFTER) => {
                    set_paused(consumer, true);
                    paused = true;
                }
            }
        } else if next.is_some() && paused {
            set_paused(consumer, false);
            paused = false;
        }
        let saturated = next.is_none();
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = shared.fatal_notify.notified() => return,
            // Only this loop takes slots, so once `resume_at` are free, one is still free after
            // releasing them: the next iteration takes it and resumes.
            free = slots.clone().acquire_many_owned(resume_at), if saturated => drop(free),
            received = consumer.recv() => match received {
                Ok(m) => {
                    let Some(generation) = consumer.context().generation(m.partition()) else {
                        // Not ours (any more): the owner will get it. Never happens in practice,
                        // since librdkafka drops messages of revoked partitions.
                        debug!(partition = m.partition(), offset = m.offset(), "message of an unowned partition ignored");
                        continue;
                    };
                    let work = Work::from_message(&m, generation, next.take());
                    let partition = work.source.partition;
                    let worker = workers.entry(partition).or_insert_with(|| spawn_worker(shared, partition));
                    if worker.tx.send(work).is_err() {
                        // The task only ends when stopping or after a fatal error: the message
                        // stays unacknowledged and is redelivered.
                        debug!(partition, "partition task has stopped; message left for redelivery");
                    }
                }
                Err(e) => {
                    if matches!(e, RdKafkaError::MessageConsumptionFatal(_)) {
                        let detail = consumer.client().fatal_error().map_or_else(|| e.to_string(), |(c, r)| format!("{c}: {r}"));
                        shared.fail(KafkaError::Fatal(format!("consumer: {detail}")));
                        return;
                    }
                    warn!(error = %e, "consumer error");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Pause or resume every assigned partition. The consumer keeps being polled either way, so the
/// group membership stays alive.
fn set_paused(consumer: &StreamConsumer<ConsumerCtx>, pause: bool) {
    consumer.context().saturated.store(pause, Ordering::Relaxed);
    let result = consumer.assignment().and_then(|tpl| {
        if tpl.count() == 0 {
            Ok(())
        } else if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        }
    });
    match result {
        Ok(()) if pause => debug!("in-flight bound reached: consumption paused"),
        Ok(()) => debug!("consumption resumed"),
        Err(e) => warn!(error = %e, pause, "could not change the pause state of the assignment"),
    }
}

fn spawn_worker(shared: &Arc<Shared>, partition: i32) -> Worker {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = shared.tasks.spawn(partition_task(shared.clone(), partition, rx));
    Worker { tx, handle }
}

/// Decided messages of one partition that may wait for their publication at once.
const PUBLISH_DEPTH: usize = 8;

/// One partition's messages, in two stages that overlap: this task decides each message after
/// the one before it was decided (so the store sees a partition's incidents in order, and a
/// redelivered duplicate finds the record of its original), and a publisher task of its own
/// publishes the decided messages' outcomes one after another, in the same order, storing each
/// offset once that message's outcomes are acknowledged. So while the broker acknowledges
/// message `N`, message `N+1` is being decided; outcomes keep the partition's order, and offsets
/// are stored strictly in order. A message whose publishing was abandoned (a fatal Kafka error)
/// stops the partition: nothing after it is published or acknowledged.
async fn partition_task(shared: Arc<Shared>, partition: i32, mut rx: mpsc::UnboundedReceiver<Work>) {
    let (decided_tx, decided_rx) = mpsc::channel::<(Work, Decided)>(PUBLISH_DEPTH);
    let publisher = shared.tasks.spawn(publish_in_order(shared.clone(), decided_rx));
    while let Some(work) = rx.recv().await {
        if shared.stopping() {
            // Not started: left for redelivery (after a restart or to the next owner).
            continue;
        }
        if !shared.consumer.context().owns(partition, work.generation) {
            debug!(source = %work.source, "partition revoked before this message started; skipped");
            continue;
        }
        if publisher.is_finished() {
            // Publishing stopped: nothing after its last message may be acknowledged.
            break;
        }
        let decided = match AssertUnwindSafe(shared.decide(&work)).catch_unwind().await {
            Ok(Some(d)) => d,
            // Stopping before it was decided: left for redelivery, and so is everything after.
            Ok(None) => break,
            Err(_) => {
                shared.fail(KafkaError::Panicked(work.source.to_string()));
                break;
            }
        };
        // A decided message whose publisher is gone is redelivered and re-published from the
        // store's record.
        if decided_tx.send((work, decided)).await.is_err() {
            break;
        }
    }
    // The queue is closed (shutdown, revocation) or this partition stops: what was decided is
    // still published (an executed action's outcome must get out) and acknowledged in order.
    drop(decided_tx);
    if let Err(e) = publisher.await {
        shared.fail(KafkaError::Panicked(format!("publishing partition {partition}: {e}")));
    }
}

/// The publishing stage of [`partition_task`].
async fn publish_in_order(shared: Arc<Shared>, mut decided: mpsc::Receiver<(Work, Decided)>) {
    while let Some((work, d)) = decided.recv().await {
        match AssertUnwindSafe(shared.publish(&work, d)).catch_unwind().await {
            Ok(Finished::Done) => shared.acknowledge(&work),
            // Nothing after an unacknowledged message may be acknowledged: stop this partition.
            Ok(Finished::Abandoned) => return,
            Err(_) => {
                shared.fail(KafkaError::Panicked(work.source.to_string()));
                return;
            }
        }
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
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::engine::{EventIds, Settings};
    use crate::executor::simulated::SimulatedExecutor;
    use crate::guardrails::memory::MemoryStore;
    use crate::metrics::Metrics;
    use crate::runbook::Catalogue;
    use rdkafka::consumer::StreamConsumer;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::FutureProducer;
    use std::collections::BTreeMap;

    fn engine() -> Arc<Engine> {
        let catalogue =
            Catalogue::from_yaml(include_str!("../tests/data/seed-runbooks.yaml"), "seed").expect("seed loads");
        Arc::new(Engine::new(
            Arc::new(catalogue),
            Arc::new(MemoryStore::new(Arc::new(SystemClock))),
            Arc::new(SimulatedExecutor::new()),
            Arc::new(SystemClock),
            Settings::default(),
            Metrics::new(),
            EventIds::Random,
        ))
    }

    #[test]
    fn defaults_match_the_design() {
        let s = KafkaSettings::default();
        assert_eq!(s.brokers, "127.0.0.1:9092");
        assert_eq!(s.group_id, "remediator");
        assert_eq!(
            (s.incidents_topic.as_str(), s.outcomes_topic.as_str()),
            ("incidents", "remediation-outcomes")
        );
        assert_eq!(s.dlq_topic, "incidents-dlq");
        assert_eq!(s.max_in_flight, 16);
    }

    #[test]
    fn properties_are_applied_last() {
        let mut s = KafkaSettings::default();
        s.properties.insert("security.protocol".into(), "ssl".into());
        s.properties.insert("acks".into(), "1".into());
        let p = producer_config(&s);
        assert_eq!(p.get("acks"), Some("1"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        let c = consumer_config(&s);
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn outcomes_are_sent_without_delay_unless_configured() {
        let mut s = KafkaSettings::default();
        assert_eq!(producer_config(&s).get("linger.ms"), Some("0"));
        assert_eq!(producer_config(&s).get("socket.nagle.disable"), Some("true"));
        assert_eq!(consumer_config(&s).get("socket.nagle.disable"), Some("true"));
        s.properties.insert("linger.ms".into(), "5".into());
        s.properties.insert("socket.nagle.disable".into(), "false".into());
        assert_eq!(producer_config(&s).get("linger.ms"), Some("5"));
        assert_eq!(producer_config(&s).get("socket.nagle.disable"), Some("false"));
        assert_eq!(consumer_config(&s).get("socket.nagle.disable"), Some("false"));
    }

    #[test]
    fn traceparent_is_parsed_strictly_and_continued() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = TraceParent::parse(&tp.child()).unwrap();
        assert_eq!(
            (child.trace_id.as_str(), child.flags.as_str()),
            (tp.trace_id.as_str(), "01")
        );
        assert_ne!(child.parent_id, tp.parent_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; rm -rf /",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dlq_headers_name_the_error_and_origin_first() {
        let r = Rejection {
            field: "confidence".into(),
            message: "is required".into(),
        };
        let src = Source {
            topic: "incidents".into(),
            partition: 2,
            offset: 41,
        };
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header {
                key: "error",
                value: Some("spoofed"),
            });
        let h = dlq_headers(&r, &src, Some(&original));
        let got: Vec<(String, String)> = h
            .iter()
            .map(|x| {
                (
                    x.key.to_string(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let want = [
            ("error", "confidence: is required"),
            ("error_field", "confidence"),
            ("source_topic", "incidents"),
            ("source_partition", "2"),
            ("source_offset", "41"),
            ("trace", "abc"),
        ];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    /// The stuck-producer check tells "the cluster answers with leaders" from an outage: a topic
    /// whose partitions all have a leader passes; a leaderless partition or an unknown topic does
    /// not (the worker then keeps waiting instead of exiting).
    #[test]
    fn metadata_check_requires_a_leader_for_every_partition() {
        let cluster = MockCluster::new(2).expect("mock cluster");
        cluster.create_topic("led", 2, 1).expect("topic");
        cluster.create_topic("leaderless", 2, 1).expect("topic");
        cluster.partition_leader("leaderless", 1, None).expect("no leader");
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("client");
        let answers = |topic: &str| {
            let md = c
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            metadata_has_leaders(&md, topic)
        };
        assert!(answers("led"));
        assert!(!answers("leaderless"));
        assert!(!answers("missing"));
    }

    /// The embedded demo's setup with the classic group protocol (the default). The mock
    /// cluster delays a new group's first assignment by 3 s, so this test takes ~5 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_the_mock_cluster() {
        mock_round_trip(BTreeMap::new()).await;
    }

    /// The same with the KIP-848 consumer protocol (incremental assignment, no initial delay).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_the_mock_cluster_with_the_consumer_protocol() {
        mock_round_trip([("group.protocol".to_string(), "consumer".to_string())].into()).await;
    }

    /// The embedded demo's setup: librdkafka's mock cluster (no CreateTopics; topics come from
    /// `MockCluster::create_topic`), the in-memory store, the simulated executor. Three
    /// incidents in, three outcomes out, a clean shutdown.
    async fn mock_round_trip(properties: BTreeMap<String, String>) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            group_id: "remediator-mock".into(),
            properties,
            ..KafkaSettings::default()
        };
        cluster
            .create_topic(&settings.incidents_topic, 3, 1)
            .expect("incidents topic");
        cluster
            .create_topic(&settings.outcomes_topic, 1, 1)
            .expect("outcomes topic");
        cluster.create_topic(&settings.dlq_topic, 1, 1).expect("dlq topic");

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .create()
            .expect("producer");
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let incidents = [
            (
                format!("{run_id}-INC001"),
                r#""root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api-server","context":{"pod_name":"api-server-abc123","namespace":"production"}"#,
            ),
            (
                format!("{run_id}-INC002"),
                r#""root_cause":"high_cpu","confidence":0.75,"service":"worker","context":{"deployment":"worker","namespace":"production","new_replicas":5,"old_replicas":3}"#,
            ),
            (
                format!("{run_id}-INC004"),
                r#""root_cause":"unknown_issue","confidence":0.60,"service":"auth","context":{}"#,
            ),
        ];
        for (id, rest) in &incidents {
            let payload = format!(r#"{{"id":"{id}",{rest}}}"#);
            producer
                .send(
                    FutureRecord::to(&settings.incidents_topic)
                        .key(id.as_str())
                        .payload(&payload),
                    Timeout::Never,
                )
                .await
                .expect("incident produced");
        }

        let (trigger, shutdown) = crate::shutdown::channel();
        let health = Arc::new(Health::new());
        let worker = {
            let (settings, engine, health) = (settings.clone(), engine(), health.clone());
            tokio::spawn(async move { run(&settings, engine, health, shutdown).await })
        };

        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", "outcome-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&settings.outcomes_topic, 0, Offset::Beginning)
            .expect("tpl");
        reader.assign(&tpl).expect("assign");
        let mut decisions = BTreeMap::new();
        while decisions.len() < 3 {
            let m = tokio::time::timeout(Duration::from_secs(20), reader.recv())
                .await
                .expect("outcomes within 20 s")
                .expect("outcome message");
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("outcome json");
            let id = v["incident_id"].as_str().unwrap_or_default().to_string();
            assert_eq!(m.key(), Some(id.as_bytes()), "outcome keyed by incident id");
            decisions.insert(id, v["decision"].as_str().unwrap_or_default().to_string());
        }
        assert!(health.snapshot().0, "kafka marked healthy once assigned");
        trigger.fire();
        let stats = tokio::time::timeout(Duration::from_secs(40), worker)
            .await
            .expect("run returns after shutdown")
            .expect("task")
            .expect("run ok");
        assert_eq!(
            stats,
            RunStats {
                handled: 3,
                dead_lettered: 0,
                republished: 0
            }
        );
        let want: BTreeMap<String, String> = [("INC001", "executed"), ("INC002", "executed"), ("INC004", "manual")]
            .into_iter()
            .map(|(i, d)| (format!("{run_id}-{i}"), d.to_string()))
            .collect();
        assert_eq!(decisions, want);
    }
}
