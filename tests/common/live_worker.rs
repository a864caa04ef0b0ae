//! A real `remediator run` process for the live tests (approvals over HTTP and the topic, the
//! console in a browser): its environment on fresh topics and key prefix, waiting for it to be
//! ready, and killing it when the test ends. Include with `#[path = "common/live_worker.rs"]`,
//! beside `common/kafka.rs` as `kafka_common`.

#![allow(dead_code)]

use crate::kafka_common::{unique, Topics};
use rdkafka::admin::{NewTopic, TopicReplication};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Env {
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_remediator"));
        c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// `remediator run` in the background with `extra` variables, its output discarded.
    pub fn spawn_run(&self, extra: &[(&str, &str)]) -> Child {
        let mut c = self.command(&["run"]);
        c.envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Child(c.spawn().expect("run"))
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run remediator")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub async fn create_topic(brokers: &str, name: &str) {
    crate::kafka_common::create_topics(
        brokers,
        vec![NewTopic::new(name, 1, TopicReplication::Fixed(1))],
        Duration::from_secs(10),
    )
    .await;
}

pub fn incident(id: &str, svc: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"{svc}","context":{{"deployment":"{svc}","namespace":"production"}}}}"#
    )
}

/// A worker's environment on fresh topics and a fresh key prefix (the approvals topic is not
/// enabled: each test says what it enables).
pub fn worker_env(brokers: &str, redis: &str, topics: &Topics, approvals_topic: &str, port: u16) -> Env {
    Env {
        vars: [
            ("REMEDIATOR_EXECUTOR", "simulated".to_string()),
            ("REMEDIATOR_KAFKA_BROKERS", brokers.to_string()),
            ("REMEDIATOR_KAFKA_GROUP_ID", unique("group")),
            ("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", topics.incidents.clone()),
            ("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", topics.outcomes.clone()),
            ("REMEDIATOR_KAFKA_DLQ_TOPIC", topics.dlq.clone()),
            ("REMEDIATOR_KAFKA_APPROVALS_TOPIC", approvals_topic.to_string()),
            ("REMEDIATOR_REDIS_URL", redis.to_string()),
            ("REMEDIATOR_REDIS_KEY_PREFIX", unique("test")),
            ("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml".to_string()),
            ("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}")),
            ("REMEDIATOR_APPROVAL_TOKEN", "s3cret-token".to_string()),
            ("REMEDIATOR_LOG_FORMAT", "text".to_string()),
            ("USER", "tester".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// Wait for the worker's /readyz (bounded).
pub async fn ready(url: &str) {
    let t0 = Instant::now();
    while reqwest::get(format!("{url}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "worker not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One worker's fresh topics (one partition each), approvals topic and free port, with its
/// environment ([`worker_env`]).
pub struct Setup {
    pub topics: Topics,
    pub approvals_topic: String,
    pub url: String,
    pub env: Env,
}

impl Setup {
    pub async fn new(brokers: &str, redis: &str) -> Self {
        let topics = Topics::create(brokers, 1).await;
        let approvals_topic = unique("approvals");
        create_topic(brokers, &approvals_topic).await;
        let port = free_port();
        let env = worker_env(brokers, redis, &topics, &approvals_topic, port);
        Self {
            topics,
            approvals_topic,
            url: format!("http://127.0.0.1:{port}"),
            env,
        }
    }
}
