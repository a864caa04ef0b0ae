//! Unit tests of the Kafka edge: client settings, trace context, dead-letter headers, the
//! stuck-producer metadata check, and the whole [`run`] against librdkafka's mock cluster.

use super::publish::{dlq_headers, metadata_has_leaders};
use super::*;
use crate::clock::SystemClock;
use crate::engine::Source;
use crate::engine::{EventIds, Settings};
use crate::executor::simulated::SimulatedExecutor;
use crate::guardrails::memory::MemoryStore;
use crate::incident::Rejection;
use crate::metrics::Metrics;
use crate::runbook::Catalogue;
use rdkafka::consumer::BaseConsumer;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::FutureProducer;
use rdkafka::producer::FutureRecord;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;

fn engine() -> Arc<Engine> {
    let catalogue =
        Catalogue::from_yaml(include_str!("../../tests/data/seed-runbooks.yaml"), "seed").expect("seed loads");
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

/// A mock cluster with the worker's three topics (`incidents` partitions for incidents, one for
/// outcomes and dead letters), and settings that point at it.
fn mock_cluster(
    properties: BTreeMap<String, String>,
    incidents: i32,
) -> (MockCluster<'static, DefaultProducerContext>, KafkaSettings) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let settings = KafkaSettings {
        brokers: cluster.bootstrap_servers(),
        group_id: "remediator-mock".into(),
        properties,
        ..KafkaSettings::default()
    };
    cluster
        .create_topic(&settings.incidents_topic, incidents, 1)
        .expect("incidents topic");
    cluster
        .create_topic(&settings.outcomes_topic, 1, 1)
        .expect("outcomes topic");
    cluster.create_topic(&settings.dlq_topic, 1, 1).expect("dlq topic");
    (cluster, settings)
}

/// Produce `{"id":ID,REST}` keyed by ID for each `(ID, REST)`, in order.
async fn produce_incidents(settings: &KafkaSettings, incidents: &[(String, &str)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .expect("producer");
    for (id, rest) in incidents {
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
}

/// A reader of the outcomes topic from its beginning.
fn outcome_reader(settings: &KafkaSettings) -> StreamConsumer {
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
    reader
}

/// The next outcome on `reader` (within 20 s): its key and JSON.
async fn next_outcome(reader: &StreamConsumer) -> (Option<Vec<u8>>, serde_json::Value) {
    let m = tokio::time::timeout(Duration::from_secs(20), reader.recv())
        .await
        .expect("outcomes within 20 s")
        .expect("outcome message");
    let v = serde_json::from_slice(m.payload().unwrap_or_default()).expect("outcome json");
    (m.key().map(<[u8]>::to_vec), v)
}

/// `n` incidents of a fresh run that no runbook matches (each decided `manual`), ids in order.
fn manual_incidents(n: usize) -> Vec<(String, &'static str)> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| {
            (
                format!("{run_id}-{i:03}"),
                r#""root_cause":"unknown_issue","confidence":0.60,"service":"auth","context":{}"#,
            )
        })
        .collect()
}

/// A [`run`] of a fresh [`engine`] in the background: the engine, its stop trigger, its task.
fn start_worker(
    settings: &KafkaSettings,
) -> (
    Arc<Engine>,
    crate::shutdown::Trigger,
    tokio::task::JoinHandle<Result<RunStats, KafkaError>>,
) {
    let (trigger, shutdown) = crate::shutdown::channel();
    let engine = engine();
    let worker = {
        let (settings, engine) = (settings.clone(), engine.clone());
        tokio::spawn(async move { run(&settings, engine, Arc::new(Health::new()), shutdown).await })
    };
    (engine, trigger, worker)
}

/// Shut a [`run`] down and return its figures (within 40 s).
async fn stop(
    trigger: crate::shutdown::Trigger,
    worker: tokio::task::JoinHandle<Result<RunStats, KafkaError>>,
) -> RunStats {
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(40), worker)
        .await
        .expect("run returns after shutdown")
        .expect("task")
        .expect("run ok")
}

/// The embedded demo's setup: librdkafka's mock cluster (no CreateTopics; topics come from
/// `MockCluster::create_topic`), the in-memory store, the simulated executor. Three
/// incidents in, three outcomes out, a clean shutdown.
async fn mock_round_trip(properties: BTreeMap<String, String>) {
    let (_cluster, settings) = mock_cluster(properties, 3);
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
    produce_incidents(&settings, &incidents).await;

    let (trigger, shutdown) = crate::shutdown::channel();
    let health = Arc::new(Health::new());
    let worker = {
        let (settings, engine, health) = (settings.clone(), engine(), health.clone());
        tokio::spawn(async move { run(&settings, engine, health, shutdown).await })
    };

    let reader = outcome_reader(&settings);
    let mut decisions = BTreeMap::new();
    while decisions.len() < 3 {
        let (key, v) = next_outcome(&reader).await;
        let id = v["incident_id"].as_str().unwrap_or_default().to_string();
        assert_eq!(key.as_deref(), Some(id.as_bytes()), "outcome keyed by incident id");
        decisions.insert(id, v["decision"].as_str().unwrap_or_default().to_string());
    }
    assert!(health.snapshot().0, "kafka marked healthy once assigned");
    let stats = stop(trigger, worker).await;
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

/// A partition's outcomes are outstanding together, and when the broker refuses some of them
/// the failed one and everything handed over after it are sent again in order: each incident's
/// last outcome on the topic comes in the incidents' order, every offset is committed, nothing
/// is lost. The mock broker answers the worker's first Produce requests with a permanent error
/// twice (after the incidents were produced; four failures in a row would be a stuck producer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_outcome_is_sent_again_with_every_outcome_after_it() {
    const N: usize = 40;
    let (cluster, settings) = mock_cluster([("group.protocol".to_string(), "consumer".to_string())].into(), 1);
    let incidents = manual_incidents(N);
    produce_incidents(&settings, &incidents).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );

    let (engine, trigger, worker) = start_worker(&settings);
    let reader = outcome_reader(&settings);
    // Each incident's latest position on the topic; done once the last incident's outcome came
    // after every other's.
    let mut seen: Vec<String> = Vec::new();
    let last = &incidents[N - 1].0;
    let mut read = 0;
    loop {
        let (_, v) = next_outcome(&reader).await;
        read += 1;
        let id = v["incident_id"].as_str().unwrap_or_default().to_string();
        seen.retain(|s| s != &id);
        seen.push(id);
        if seen.len() == N && seen.last() == Some(last) {
            break;
        }
    }
    let want: Vec<String> = incidents.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, want, "each incident's last outcome, in the incidents' order");
    assert!(
        engine.metrics().delivery_retries.get() >= 1,
        "the refused records were sent again ({read} outcomes read)"
    );
    let stats = stop(trigger, worker).await;
    assert_eq!(stats.handled, N as u64, "every message finished once");
    let committed = committed_offset(&settings);
    assert_eq!(committed, Some(N as i64), "every offset committed");
}

/// Incidents already waiting in a partition are decided together: one store call answers
/// several of them (`remediator_store_decisions_per_call`), and every one is decided once, its
/// outcome published in the partition's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_incidents_are_decided_with_one_store_call_for_several() {
    const N: usize = 48;
    let (_cluster, settings) = mock_cluster(BTreeMap::new(), 1);
    let incidents = manual_incidents(N);
    produce_incidents(&settings, &incidents).await;
    let (engine, trigger, worker) = start_worker(&settings);
    let reader = outcome_reader(&settings);
    let mut seen = Vec::new();
    while seen.len() < N {
        let (_, v) = next_outcome(&reader).await;
        assert_eq!(v["decision"], "manual", "{v}");
        seen.push(v["incident_id"].as_str().unwrap_or_default().to_string());
    }
    let want: Vec<String> = incidents.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, want, "one outcome each, in the partition's order");
    let stats = stop(trigger, worker).await;
    assert_eq!(stats.handled, N as u64);
    let per_call = &engine.metrics().store_decisions_per_call;
    assert_eq!(per_call.get_sample_sum() as usize, N, "every incident decided once");
    assert!(
        (per_call.get_sample_count() as usize) < N,
        "{} store calls for {N} waiting incidents: none decided together",
        per_call.get_sample_count()
    );
}

/// The worker group's committed offset of incidents partition 0.
fn committed_offset(settings: &KafkaSettings) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&settings.incidents_topic, 0);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed");
    match committed.find_partition(&settings.incidents_topic, 0)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
