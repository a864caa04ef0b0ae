//! Helpers for tests against the real Kafka broker started by `scripts/services.sh`: unique
//! topics per test, producing and reading records, the group's committed offsets, and a worker
//! (`remediator::kafka::run`) running in the background.
//!
//! Include it with `#[path = "common/kafka.rs"] mod kafka_common;`.

// Each test binary uses only part of it.
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use remediator::clock::SystemClock;
use remediator::engine::{Engine, EventIds, Settings};
use remediator::executor::Executor;
use remediator::guardrails::Store;
use remediator::health::Health;
use remediator::kafka::{KafkaError, KafkaSettings, RunStats};
use remediator::metrics::Metrics;
use remediator::runbook::Catalogue;
use remediator::shutdown::{self, Trigger};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The broker under test, from `KAFKA_BOOTSTRAP`.
///
/// `None` (after a note on stderr) when unset, so `cargo test` passes on a laptop without
/// services; with `REMEDIATOR_TEST_REQUIRE_SERVICES` set (CI) a missing broker is a failure.
pub fn bootstrap() -> Option<String> {
    init_tracing();
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() => panic!(
            "KAFKA_BOOTSTRAP is not set but REMEDIATOR_TEST_REQUIRE_SERVICES is: start Kafka with \
             `out=$(scripts/services.sh start) && export $out`"
        ),
        _ => {
            eprintln!("skipping: KAFKA_BOOTSTRAP not set (run `scripts/services.sh start` and export its output)");
            None
        }
    }
}

/// `REDIS_URL` when set; tests fall back to the in-memory store without it.
pub fn redis_url() -> Option<String> {
    std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty())
}

/// Logs of the worker under test, shown for failing tests (`RUST_LOG=remediator=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("remediator=info,librdkafka=warn")),
        )
        .try_init();
}

/// A fresh id: topic names, group ids, incident ids and store prefixes never collide between
/// tests or runs (the store remembers incident ids; the broker keeps topics).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Topics of one test.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Input.
    pub incidents: String,
    /// Audit output (one partition, so reading it back is ordered).
    pub outcomes: String,
    /// Dead letters (one partition).
    pub dlq: String,
    /// Partitions of `incidents`.
    pub partitions: i32,
}

impl Topics {
    /// Create unique topics; `incidents` gets `partitions` partitions.
    pub async fn create(bootstrap: &str, partitions: i32) -> Self {
        let t = Self {
            incidents: unique("incidents"),
            outcomes: unique("outcomes"),
            dlq: unique("dlq"),
            partitions,
        };
        let new = vec![
            NewTopic::new(&t.incidents, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&t.outcomes, 1, TopicReplication::Fixed(1)),
            NewTopic::new(&t.dlq, 1, TopicReplication::Fixed(1)),
        ];
        create_topics(bootstrap, new, Duration::from_secs(10)).await;
        t
    }

    /// Worker settings for these topics and `group`.
    pub fn settings(&self, bootstrap: &str, group: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: bootstrap.to_string(),
            group_id: group.to_string(),
            incidents_topic: self.incidents.clone(),
            outcomes_topic: self.outcomes.clone(),
            dlq_topic: self.dlq.clone(),
            max_in_flight: 16,
            ..KafkaSettings::default()
        }
    }
}

/// Create `topics`, panicking with the topic and error code on a refusal.
///
/// A test broker starved of CPU (a loaded 2-core CI machine) can miss a heartbeat and be fenced
/// for a few seconds, during which CreateTopics answers "no broker available"
/// (InvalidReplicationFactor) or times out. Those refusals are retried for up to a minute; a topic
/// that an earlier, timed-out attempt did create counts as created. Any other refusal fails at once.
pub async fn create_topics(bootstrap: &str, mut pending: Vec<NewTopic<'_>>, operation_timeout: Duration) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let opts = AdminOptions::new().operation_timeout(Some(operation_timeout));
    while !pending.is_empty() {
        let results = admin.create_topics(&pending, &opts).await.expect("CreateTopics");
        let mut again = Vec::new();
        for (topic, r) in pending.into_iter().zip(results) {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) if retriable_create(code) && Instant::now() < deadline => {
                    eprintln!("creating {name}: {code}; retrying (the broker may be fenced)");
                    again.push(topic);
                }
                Err((name, code)) => panic!("creating {name}: {code}"),
            }
        }
        pending = again;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// CreateTopics refusals that mean "the broker is not (yet) able to", not "never".
fn retriable_create(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::NotController
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
    )
}

/// A message to produce.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// Key.
    pub key: Option<String>,
    /// Payload; `None` is a null payload (tombstone).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

impl Msg {
    /// A JSON incident keyed by its id.
    pub fn incident(id: &str, payload: &str) -> Self {
        Self {
            key: Some(id.to_string()),
            payload: Some(payload.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }
}

/// Produce `msgs` in order (acks=all, idempotent), returning each one's (partition, offset).
pub async fn produce(bootstrap: &str, topic: &str, msgs: &[Msg]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut out = Vec::new();
    for m in msgs {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = &m.key {
            rec = rec.key(k.as_str());
        }
        if let Some(p) = &m.payload {
            rec = rec.payload(p.as_slice());
        }
        let d = producer
            .send(rec, Timeout::After(Duration::from_secs(10)))
            .await
            .expect("produced");
        out.push((d.partition, d.offset));
    }
    out
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Raw payload (`None`: null).
    pub payload: Option<Vec<u8>>,
    /// Headers as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).expect("JSON payload")
    }

    /// First header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Read `topic` (partition 0) from the beginning until `count` records arrived or `within` passed.
pub async fn read(bootstrap: &str, topic: &str, count: usize, within: Duration) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < count {
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        };
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// High watermark (records ever written) of each partition of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The offsets `group` committed for each partition of `topic` (`None`: nothing committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // Right after a broker was killed the group coordinator may be moving: a transient
    // NotCoordinator / coordinator-load answer is retried (30 s), anything left is a failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("committed offsets of {group}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// An engine with the reference catalogue (tests/data/seed-runbooks.yaml), `store` and `executor`.
pub fn engine(store: Arc<dyn Store>, executor: Arc<dyn Executor>) -> Arc<Engine> {
    engine_with(include_str!("../data/seed-runbooks.yaml"), store, executor)
}

/// An engine like [`engine`] with the runbooks of `catalogue` (YAML).
pub fn engine_with(catalogue: &str, store: Arc<dyn Store>, executor: Arc<dyn Executor>) -> Arc<Engine> {
    let catalogue = Catalogue::from_yaml(catalogue, "test").expect("test catalogue");
    let settings = Settings {
        worker: "kafka-test".into(),
        ..Settings::default()
    };
    Arc::new(Engine::new(
        Arc::new(catalogue),
        store,
        executor,
        Arc::new(SystemClock),
        settings,
        Metrics::new(),
        EventIds::Random,
    ))
}

/// The four sample incidents of tests/data/seed-incidents.jsonl (executed, executed,
/// approval_required, manual with the default guardrails, docs/design.md#guardrails), with ids
/// prefixed by `run` so the store never saw them; `detected_at` omitted, so they are fresh.
pub fn seed_incidents(run: &str) -> Vec<(String, String)> {
    [
        ("INC001", r#""root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api-server","context":{"pod_name":"api-server-abc123","namespace":"production"}"#),
        ("INC002", r#""root_cause":"high_cpu","confidence":0.75,"service":"worker","context":{"deployment":"worker","namespace":"production","new_replicas":5,"old_replicas":3}"#),
        ("INC003", r#""root_cause":"error_rate_spike_after_deploy","confidence":0.92,"service":"checkout","context":{"deployment":"checkout","namespace":"production"}"#),
        ("INC004", r#""root_cause":"unknown_issue","confidence":0.60,"service":"auth","context":{}"#),
    ]
    .into_iter()
    .map(|(id, rest)| {
        let id = format!("{run}-{id}");
        let payload = format!(r#"{{"id":"{id}",{rest}}}"#);
        (id, payload)
    })
    .collect()
}

/// `remediator::kafka::run` in the background.
pub struct Worker {
    trigger: Trigger,
    handle: JoinHandle<Result<RunStats, KafkaError>>,
    /// The health the worker writes.
    pub health: Arc<Health>,
}

impl Worker {
    /// Start consuming.
    pub fn start(settings: &KafkaSettings, engine: Arc<Engine>) -> Self {
        let (trigger, observer) = shutdown::channel();
        let health = Arc::new(Health::new());
        let settings = settings.clone();
        let h = health.clone();
        let handle = tokio::spawn(async move { remediator::kafka::run(&settings, engine, h, observer).await });
        Self {
            trigger,
            handle,
            health,
        }
    }

    /// Fire shutdown and wait (at most 45 s) for `run` to return.
    pub async fn stop(self) -> Result<RunStats, KafkaError> {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(45), self.handle)
            .await
            .expect("run returns within 45 s of shutdown")
            .expect("run task did not panic")
    }
}

/// Poll `cond` every 20 ms until it holds; panics naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
