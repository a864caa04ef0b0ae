//! The reliability suite's harness (`tests/reliability.rs`): real `remediator run` processes
//! against real Redis and Kafka, the faults done to them, and the full history they leave.
//!
//! A [`Fleet`] is a set of worker processes sharing one consumer group, one Redis key prefix
//! and one simulated-executor journal: every process appends one JSON line per action it is
//! asked to run, *before* acting, with its pid and the time. Processes are configured only
//! through `REMEDIATOR_*` variables and run in a scratch directory (no `config/remediator.yaml`
//! leaks in). Dropping the fleet kills every process it started, also when a test panics, so no
//! orphan worker outlives a test; the logs of a failed test are kept and their path printed.
//!
//! After a scenario, [`History`] holds every incident sent, every outcome record published
//! (re-publications included) and every journal line; its checks return violations as text, so
//! a test both asserts that there are none and reports how many it looked for ([`Figures`],
//! collected by `scripts/reliability.sh`).
//!
//! [`OwnRedis`] and [`OwnKafka`] are private service instances a test may stop, pause and
//! restart without disturbing the tests that share the default ones.
//!
//! Include it with `#[path = "common/reliability.rs"] mod reliability_common;` next to
//! `#[path = "common/kafka.rs"] mod kafka_common;`, which it builds on.

// Each scenario uses part of it.
#![allow(dead_code)]

use crate::kafka_common::{self, Msg, Topics};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Scale and services

/// Whether the heavy parameters apply: `REMEDIATOR_RELIABILITY=heavy` (set by
/// `scripts/reliability.sh heavy`). A normal `cargo test` runs the reduced ones.
pub fn heavy() -> bool {
    std::env::var("REMEDIATOR_RELIABILITY").is_ok_and(|v| v == "heavy")
}

/// `reduced` in a normal `cargo test`, `heavy` under `REMEDIATOR_RELIABILITY=heavy`.
pub fn scale<T>(reduced: T, heavy_value: T) -> T {
    if heavy() {
        heavy_value
    } else {
        reduced
    }
}

/// Where the shared services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Redis URL.
    pub redis: String,
}

/// The services under test, from `KAFKA_BOOTSTRAP` and `REDIS_URL`.
///
/// `None` after a note when either is unset (`cargo test` on a laptop); with
/// `REMEDIATOR_TEST_REQUIRE_SERVICES` set (CI) a missing service is a failure instead.
pub fn services() -> Option<Services> {
    let brokers = kafka_common::bootstrap()?;
    let Some(redis) = kafka_common::redis_url() else {
        if require_services() {
            panic!(
                "REDIS_URL is not set but REMEDIATOR_TEST_REQUIRE_SERVICES is: start Redis with \
                 `out=$(scripts/services.sh start) && export $out`"
            );
        }
        eprintln!("skipping: REDIS_URL not set (run `scripts/services.sh start` and export its output)");
        return None;
    };
    Some(Services { brokers, redis })
}

fn require_services() -> bool {
    std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some()
}

/// Skip (with a note) or fail (under `REMEDIATOR_TEST_REQUIRE_SERVICES`) for a missing tool.
pub fn require_tool(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if require_services() {
            panic!(
                "{tool} not found but REMEDIATOR_TEST_REQUIRE_SERVICES is set ({why}); run scripts/services.sh install"
            );
        }
        eprintln!("skipping: {tool} not found ({why})");
    }
    found
}

/// A TCP port nobody listens on right now (and, with `pair`, the next one too).
pub fn free_port(pair: bool) -> u16 {
    for _ in 0..200 {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !pair || (p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()) {
            return p;
        }
    }
    panic!("no free port pair found");
}

/// A small deterministic random source (xorshift), seeded from `REMEDIATOR_RELIABILITY_SEED` or
/// the clock; the seed is reported with the figures so a failing run can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seed from the environment or the clock.
    pub fn new() -> Self {
        let seed = std::env::var("REMEDIATOR_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Self(seed.max(1))
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi` (milliseconds, counts).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// Poll `cond` every 50 ms until it holds; `Err` naming `what` after `within`.
pub async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > within {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (the journal's and the outcomes' clock).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---------------------------------------------------------------------------------------------
// Runbooks and incidents

/// The suite's runbook: `RelCrash` -> delete the pod, verified by `pod_becomes_ready`, no
/// rollback (self-healing), so a failed post-check is a plain failure that feeds the circuit.
/// No pre-checks: an execution is reservation -> journal line -> action -> post-check -> release.
pub fn runbooks(max_per_hour: u32) -> String {
    format!(
        "runbooks:
  rel-restart:
    risk: LOW
    triggers: [RelCrash]
    min_confidence: 0.5
    max_per_hour: {max_per_hour}
    cooldown_minutes: 0
    action: kubectl delete pod {{pod_name}} -n {{namespace}}
    post_checks: [pod_becomes_ready]
"
    )
}

/// An incident for the suite's runbook on `service` (an RFC 1123 label).
pub fn crash(id: &str, service: &str) -> Msg {
    let payload = json!({
        "id": id,
        "root_cause": "RelCrash",
        "confidence": 0.9,
        "service": service,
        "context": {"pod_name": format!("{service}-pod"), "namespace": "rel"},
    });
    Msg::incident(id, &payload.to_string())
}

/// What a mixed workload's incident should end as, if nothing interferes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Matches the runbook: executes.
    Act,
    /// Unknown root cause: `manual`.
    Unknown,
    /// Confidence below the runbook's minimum: `manual`.
    LowConfidence,
    /// Invalid (no root cause): `rejected`, dead-lettered.
    Invalid,
}

/// A mixed workload: `n` incidents with ids `<run>-<i>`, about 70% executing (on `services`
/// distinct services, so neither rate limit nor cooldown interferes), 12% unknown root causes,
/// 12% low confidence and 6% invalid.
pub fn mixed(run: &str, n: usize, services: usize) -> Vec<(Msg, Kind)> {
    (0..n)
        .map(|i| {
            let id = format!("{run}-{i}");
            let service = format!("svc-{}", i % services.max(1));
            match i % 17 {
                0 | 9 => {
                    let p = json!({"id": id, "root_cause": "Martians", "confidence": 0.99, "service": service});
                    (Msg::incident(&id, &p.to_string()), Kind::Unknown)
                }
                4 | 13 => {
                    let p = json!({"id": id, "root_cause": "RelCrash", "confidence": 0.2, "service": service,
                        "context": {"pod_name": "p", "namespace": "rel"}});
                    (Msg::incident(&id, &p.to_string()), Kind::LowConfidence)
                }
                7 => {
                    let p = json!({"id": id, "confidence": 0.9, "service": service});
                    (Msg::incident(&id, &p.to_string()), Kind::Invalid)
                }
                _ => (crash(&id, &service), Kind::Act),
            }
        })
        .collect()
}

/// A mixed workload (see [`mixed`]: `n` incidents over 40 services, ids `<name>-…`) being sent
/// to `topics.incidents` over `over`, with a collector already reading the outcomes.
pub struct Flood {
    /// Reads the outcomes topic from the start.
    pub collector: Collector,
    /// Every incident and what it should end as.
    pub work: Vec<(Msg, Kind)>,
    /// The incident ids sent.
    pub sent: BTreeSet<String>,
    /// The paced producer; its result is how many it sent.
    pub producing: tokio::task::JoinHandle<usize>,
}

/// Start a [`Flood`].
pub fn flood(brokers: &str, topics: &Topics, name: &str, n: usize, over: Duration) -> Flood {
    let collector = Collector::start(brokers, &topics.outcomes);
    let work = mixed(&kafka_common::unique(name), n, 40);
    let msgs: Vec<Msg> = work.iter().map(|(m, _)| m.clone()).collect();
    let sent = ids(&msgs);
    let producing = Producer::new(brokers).send_paced(&topics.incidents, msgs, over);
    Flood {
        collector,
        work,
        sent,
        producing,
    }
}

// ---------------------------------------------------------------------------------------------
// Producing

/// One idempotent producer (acks=all) for a test; unacknowledged messages are retried for two
/// minutes, so a broker restart in the middle of a flood loses nothing.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    /// Connect to `brokers`.
    pub fn new(brokers: &str) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "120000")
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        Self { inner }
    }

    /// Send `msgs` (in order within each partition) and wait for every acknowledgement.
    pub async fn send_all(&self, topic: &str, msgs: &[Msg]) -> Vec<(i32, i64)> {
        let sends = msgs.iter().map(|m| {
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
            self.inner.send(rec, Timeout::After(Duration::from_secs(150)))
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| {
                let d = r.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
                (d.partition, d.offset)
            })
            .collect()
    }

    /// Send `msgs` spread evenly over `over`, in batches every 50 ms, then wait for every
    /// acknowledgement. Runs in the background: a flood goes on while the test does harm.
    pub fn send_paced(&self, topic: &str, msgs: Vec<Msg>, over: Duration) -> tokio::task::JoinHandle<usize> {
        let this = self.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            let ticks = (over.as_millis() / 50).max(1) as usize;
            let per_tick = msgs.len().div_ceil(ticks).max(1);
            let start = tokio::time::Instant::now();
            let mut pending = Vec::new();
            for (i, chunk) in msgs.chunks(per_tick).enumerate() {
                tokio::time::sleep_until(start + Duration::from_millis(50 * i as u64)).await;
                let chunk = chunk.to_vec();
                let (p, t) = (this.clone(), topic.clone());
                pending.push(tokio::spawn(async move { p.send_all(&t, &chunk).await.len() }));
            }
            let mut sent = 0;
            for p in pending {
                sent += p.await.expect("producer task");
            }
            sent
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Worker processes

/// One `remediator run` process.
pub struct Proc {
    /// Its `worker_id`.
    pub name: String,
    /// Its `/metrics`, `/healthz`, `/readyz` port.
    pub port: u16,
    /// Its pid (journal lines carry it).
    pub pid: u32,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Still running?
    pub fn alive(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_none()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GET `url`: `(status, body)`, status 0 when nothing answered within 2 s.
pub async fn http_get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    match client.get(url).send().await {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The value of an unlabelled metric line `name value` in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' ').and_then(|v| v.trim().parse().ok()))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Worker processes sharing one group, key prefix and journal. See the module documentation.
pub struct Fleet {
    /// Scenario name: worker ids are `<name>-<n>`.
    pub name: String,
    /// The journal every worker appends to.
    pub journal: PathBuf,
    /// Consumer group.
    pub group: String,
    /// Topics.
    pub topics: Topics,
    /// Brokers the workers use.
    pub brokers: String,
    dir: Option<tempfile::TempDir>,
    env: BTreeMap<String, String>,
    procs: Vec<Proc>,
    spawned: usize,
    /// `kill -9`s done.
    pub kills: usize,
    /// Processes started after the first [`Fleet::start`].
    pub restarts: usize,
}

impl Fleet {
    /// A fleet (no process yet) for `topics` on `svc`, with `runbooks_yaml` as its catalogue and
    /// `env` (`REMEDIATOR_*` name, value) on top of the suite's defaults: text logs, a 3 s lease
    /// (so a killed worker's claims and slots expire quickly), a 6 s Kafka session (so the group
    /// notices a killed member quickly) and high worker-wide blast-radius limits (a scenario that
    /// tests them sets them).
    pub fn new(name: &str, svc: &Services, topics: &Topics, runbooks_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("reliability-{name}-"))
            .tempdir()
            .expect("scratch dir");
        let runbooks = dir.path().join("runbooks.yaml");
        std::fs::write(&runbooks, runbooks_yaml).expect("write runbooks");
        let journal = dir.path().join("journal.jsonl");
        let group = kafka_common::unique(&format!("rel-{name}"));
        let mut all: BTreeMap<String, String> = [
            ("REMEDIATOR_KAFKA_BROKERS", svc.brokers.as_str()),
            ("REMEDIATOR_KAFKA_GROUP_ID", &group),
            ("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", &topics.incidents),
            ("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", &topics.outcomes),
            ("REMEDIATOR_KAFKA_DLQ_TOPIC", &topics.dlq),
            (
                "REMEDIATOR_KAFKA_PROPERTIES",
                "session.timeout.ms=6000,heartbeat.interval.ms=1000",
            ),
            ("REMEDIATOR_REDIS_URL", &svc.redis),
            (
                "REMEDIATOR_REDIS_KEY_PREFIX",
                &kafka_common::unique(&format!("rel-{name}")),
            ),
            ("REMEDIATOR_RUNBOOKS", &runbooks.display().to_string()),
            ("REMEDIATOR_EXECUTOR", "simulated"),
            ("REMEDIATOR_SIMULATED_JOURNAL", &journal.display().to_string()),
            ("REMEDIATOR_GUARDRAILS_LEASE", "3s"),
            ("REMEDIATOR_GUARDRAILS_MAX_CONCURRENT_ACTIONS", "1000"),
            ("REMEDIATOR_GUARDRAILS_MAX_AFFECTED_SERVICES", "1000000"),
            ("REMEDIATOR_LOG_FORMAT", "text"),
            ("REMEDIATOR_LOG_LEVEL", "info,librdkafka=warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in env {
            all.insert(k.to_string(), v.to_string());
        }
        Self {
            name: name.to_string(),
            journal,
            group,
            topics: topics.clone(),
            brokers: svc.brokers.clone(),
            dir: Some(dir),
            env: all,
            procs: Vec::new(),
            spawned: 0,
            kills: 0,
            restarts: 0,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("scratch dir")
    }

    /// Change a variable for processes started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_string(), value.to_string());
    }

    /// Start one more worker process; returns its index.
    pub fn spawn(&mut self) -> usize {
        self.spawned += 1;
        let name = format!("{}-{}", self.name, self.spawned);
        let port = free_port(false);
        let log = self.dir().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remediator"));
        cmd.arg("run")
            .current_dir(self.dir())
            .env_remove("RUST_LOG")
            .envs(&self.env)
            .env("REMEDIATOR_WORKER_ID", &name)
            .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("start remediator run");
        let pid = child.id();
        self.procs.push(Proc {
            name,
            port,
            pid,
            child,
            log,
            exit: None,
        });
        self.procs.len() - 1
    }

    /// Start `n` workers and wait until each is ready and the group is stable with all of them.
    pub async fn start(&mut self, n: usize) {
        let first = self.procs.len();
        for _ in 0..n {
            self.spawn();
        }
        for i in first..self.procs.len() {
            self.wait_ready(i, Duration::from_secs(60)).await;
        }
        let running = self.running().len();
        wait_group(&self.brokers, &self.group, running, Duration::from_secs(60)).await;
    }

    /// Start a replacement (counted as a restart), without waiting for it.
    pub fn restart_one(&mut self) -> usize {
        self.restarts += 1;
        self.spawn()
    }

    /// Wait until worker `i` answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, i: usize, within: Duration) {
        let start = Instant::now();
        loop {
            let (code, body) = http_get(&self.procs[i].url("/readyz")).await;
            if code == 200 {
                return;
            }
            if !self.procs[i].alive() || start.elapsed() > within {
                panic!(
                    "worker {} not ready after {:?} (readyz {code} {body:?}); log:\n{}",
                    self.procs[i].name,
                    start.elapsed(),
                    tail(&self.procs[i].log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Indexes of processes still running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.procs.len()).filter(|&i| self.procs[i].alive()).collect()
    }

    /// Process `i`.
    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// Index of the process with `pid`.
    pub fn by_pid(&self, pid: u32) -> Option<usize> {
        self.procs.iter().position(|p| p.pid == pid)
    }

    /// `kill -9` worker `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        let p = &mut self.procs[i];
        let _ = p.child.kill();
        p.exit = p.child.wait().ok();
        self.kills += 1;
    }

    /// SIGTERM worker `i` and wait (at most 45 s) for it to exit; returns its exit status.
    pub async fn terminate(&mut self, i: usize) -> ExitStatus {
        signal(self.procs[i].pid, "TERM");
        let start = Instant::now();
        loop {
            if !self.procs[i].alive() {
                return self.procs[i].exit.expect("exit status");
            }
            if start.elapsed() > Duration::from_secs(45) {
                panic!(
                    "worker {} did not exit within 45 s of SIGTERM; log:\n{}",
                    self.procs[i].name,
                    tail(&self.procs[i].log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM every running worker at once and wait for all; each must exit 0 (drained and
    /// committed). Returns the failures as violations.
    pub async fn stop_all(&mut self) -> Vec<String> {
        let running = self.running();
        for &i in &running {
            signal(self.procs[i].pid, "TERM");
        }
        let mut violations = Vec::new();
        for i in running {
            let status = self.terminate(i).await;
            if !status.success() {
                violations.push(format!(
                    "worker {} exited with {status} after SIGTERM; log tail:\n{}",
                    self.procs[i].name,
                    tail(&self.procs[i].log(), 20)
                ));
            }
        }
        violations
    }

    /// Every worker's `/healthz` and whether it is alive; violations for any that is not.
    pub async fn check_alive(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        for i in self.running_or_all() {
            let name = self.procs[i].name.clone();
            if !self.procs[i].alive() {
                v.push(format!("worker {name} is not running: {:?}", self.procs[i].exit));
                continue;
            }
            let (code, _) = http_get(&self.procs[i].url("/healthz")).await;
            if code != 200 {
                v.push(format!("worker {name}: /healthz answered {code}"));
            }
        }
        v
    }

    fn running_or_all(&mut self) -> Vec<usize> {
        // Processes that were neither killed nor stopped on purpose must all be running.
        (0..self.procs.len())
            .filter(|&i| self.procs[i].exit.is_none())
            .collect()
    }

    /// The journal so far.
    pub fn journal(&self) -> Vec<Action> {
        read_journal(&self.journal)
    }

    /// Sum of an unlabelled metric over the running workers.
    pub async fn metric_sum(&mut self, name: &str) -> f64 {
        let mut sum = 0.0;
        for i in self.running() {
            let (_, body) = http_get(&self.procs[i].url("/metrics")).await;
            sum += metric(&body, name).unwrap_or(0.0);
        }
        sum
    }

    /// Where the logs are.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir().to_path_buf()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.exit.is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "[reliability] {}: worker logs and journal kept in {}",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait until `group` is `Stable` with exactly `members` members (every worker owns its share).
pub async fn wait_group(brokers: &str, group: &str, members: usize, within: Duration) {
    let (brokers, group) = (brokers.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("admin consumer");
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(list) = c.fetch_group_list(Some(&group), Duration::from_secs(5)) {
                if let Some(g) = list.groups().first() {
                    last = format!("{} with {} members", g.state(), g.members().len());
                    if g.state() == "Stable" && g.members().len() == members {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < within,
                "group {group} not stable with {members} members after {within:?} (last: {last})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("group wait");
}

// ---------------------------------------------------------------------------------------------
// History

/// One line of the simulated executor's journal.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Action {
    /// Incident the action is for.
    pub incident_id: String,
    /// Runbook.
    pub runbook: String,
    /// Action kind.
    pub kind: String,
    /// A rollback rather than the runbook's action.
    pub rollback: bool,
    /// The worker process that ran it.
    pub pid: u32,
    /// When it started (before acting), ms since the epoch.
    pub at_ms: i64,
}

/// Every line of the journal at `path` (none if it was never written).
pub fn read_journal(path: &Path) -> Vec<Action> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
        .collect()
}

/// One outcome record as published (re-publications are separate records, same `event_id`).
#[derive(Debug, Clone)]
pub struct Out {
    /// Offset in the outcomes topic.
    pub offset: i64,
    /// `event_id`.
    pub event_id: String,
    /// `incident_id` (null for a rejected event without a readable id).
    pub incident_id: Option<String>,
    /// `decision`.
    pub decision: String,
    /// `guardrail`.
    pub guardrail: Option<String>,
    /// `reason`.
    pub reason: String,
    /// `worker`.
    pub worker: String,
    /// `success`.
    pub success: Option<bool>,
    /// `decided_at`, ms.
    pub decided_ms: i64,
    /// `finished_at`, ms.
    pub finished_ms: i64,
    /// The whole event.
    pub json: Value,
}

impl Out {
    fn from_record(offset: i64, payload: &[u8]) -> Self {
        let json: Value = serde_json::from_slice(payload).expect("outcome is JSON");
        let s = |k: &str| json[k].as_str().map(str::to_string);
        let t = |k: &str| {
            s(k).and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
                .map(|d| d.timestamp_millis())
                .unwrap_or(0)
        };
        Self {
            offset,
            event_id: s("event_id").unwrap_or_default(),
            incident_id: s("incident_id"),
            decision: s("decision").unwrap_or_default(),
            guardrail: s("guardrail"),
            reason: s("reason").unwrap_or_default(),
            worker: s("worker").unwrap_or_default(),
            success: json["success"].as_bool(),
            decided_ms: t("decided_at"),
            finished_ms: t("finished_at"),
            json,
        }
    }
}

/// Reads an outcomes topic (one partition) from the beginning in the background, so a test can
/// wait for outcomes while it does harm.
pub struct Collector {
    outs: Arc<Mutex<Vec<Out>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Start reading `topic` partition 0 from its beginning.
    pub fn start(brokers: &str, topic: &str) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", kafka_common::unique("rel-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let outs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&outs);
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        let out = Out::from_record(m.offset(), m.payload().unwrap_or_default());
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(out);
                    }
                    // The broker may be restarting: librdkafka reconnects by itself.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { outs, task }
    }

    /// Every record read so far.
    pub fn snapshot(&self) -> Vec<Out> {
        self.outs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Incident ids with at least one outcome so far.
    pub fn decided(&self) -> BTreeSet<String> {
        self.outs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|o| o.incident_id.clone())
            .collect()
    }

    /// Wait until every id in `ids` has an outcome; `Err` lists a few missing ones.
    pub async fn wait_all(&self, ids: &BTreeSet<String>, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let decided = self.decided();
            let missing: Vec<&String> = ids.iter().filter(|i| !decided.contains(*i)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(format!(
                    "{} of {} incidents have no outcome after {within:?}, e.g. {:?}",
                    missing.len(),
                    ids.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every record of `topic` partition 0, up to its high watermark (read after the workers
/// stopped, this is the complete audit trail).
pub async fn read_all(brokers: &str, topic: &str) -> Vec<kafka_common::Record> {
    let hw = kafka_common::high_watermarks(brokers, topic, 1)[0];
    let got = kafka_common::read(brokers, topic, hw as usize, Duration::from_secs(60)).await;
    assert_eq!(got.len() as i64, hw, "read {} of {hw} records of {topic}", got.len());
    got
}

/// Everything a scenario left behind, read after its workers stopped.
#[derive(Debug, Default)]
pub struct History {
    /// Incident ids sent.
    pub sent: BTreeSet<String>,
    /// Every outcome record, in topic order.
    pub records: Vec<Out>,
    /// Every journal line.
    pub journal: Vec<Action>,
}

/// The final outcome of each incident (the first record of its one event) and what is wrong.
#[derive(Debug, Default)]
pub struct Finals {
    /// Incident id -> its final outcome.
    pub by_id: BTreeMap<String, Out>,
    /// Records that repeat an event already published (re-publications after a redelivery).
    pub republished: usize,
    /// `rejected` outcomes emitted again for a redelivered invalid message (new event id; an
    /// invalid message is never claimed in the store, so its redelivery is rejected again).
    pub rejected_again: usize,
}

impl History {
    /// Read the outcomes topic completely and the journal.
    pub async fn gather(fleet: &Fleet, sent: BTreeSet<String>) -> Self {
        let records = read_all(&fleet.brokers, &fleet.topics.outcomes)
            .await
            .into_iter()
            .map(|r| Out::from_record(r.offset, r.payload.as_deref().unwrap_or_default()))
            .collect();
        Self {
            sent,
            records,
            journal: fleet.journal(),
        }
    }

    /// Exactly one final outcome per incident sent: one distinct `event_id` each (a
    /// re-publication repeats the event byte for byte and counts once), never `duplicate` (each
    /// incident was sent once), and no outcome for an incident that was never sent.
    pub fn finals(&self, violations: &mut Vec<String>) -> Finals {
        let mut f = Finals::default();
        let mut events: BTreeMap<&str, &Out> = BTreeMap::new();
        let mut per_id: BTreeMap<&str, Vec<&Out>> = BTreeMap::new();
        for o in &self.records {
            if let Some(first) = events.get(o.event_id.as_str()) {
                f.republished += 1;
                if first.json != o.json {
                    violations.push(format!(
                        "event {} re-published with different contents:\n{}\n{}",
                        o.event_id, first.json, o.json
                    ));
                }
                continue;
            }
            events.insert(&o.event_id, o);
            match &o.incident_id {
                Some(id) if self.sent.contains(id) => per_id.entry(id).or_default().push(o),
                other => violations.push(format!("outcome for an incident never sent ({other:?}): {}", o.json)),
            }
        }
        for id in &self.sent {
            let Some(list) = per_id.get(id.as_str()) else {
                violations.push(format!("incident {id}: no outcome"));
                continue;
            };
            let first = list[0];
            if list.len() > 1 {
                // An invalid message is not claimed, so its redelivery is rejected again: the
                // same decision and reason, a new event (documented, never an action).
                if list
                    .iter()
                    .all(|o| o.decision == "rejected" && o.reason == first.reason)
                {
                    f.rejected_again += list.len() - 1;
                } else {
                    let all: Vec<String> = list
                        .iter()
                        .map(|o| format!("{} by {} ({})", o.decision, o.worker, o.reason))
                        .collect();
                    violations.push(format!("incident {id}: {} distinct outcomes: {all:#?}", list.len()));
                }
            }
            if first.decision == "duplicate" {
                violations.push(format!(
                    "incident {id} sent once but answered duplicate: {}",
                    first.reason
                ));
            }
            f.by_id.insert(id.clone(), first.clone());
        }
        f
    }

    /// No incident's action ran twice (the journal is written before acting, by every process).
    pub fn single_execution(&self, violations: &mut Vec<String>) {
        let mut seen: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
        for a in self.journal.iter().filter(|a| !a.rollback) {
            seen.entry(&a.incident_id).or_default().push(a);
        }
        for (id, list) in seen {
            if list.len() > 1 {
                let who: Vec<String> = list.iter().map(|a| format!("pid {} at {}", a.pid, a.at_ms)).collect();
                violations.push(format!("incident {id} executed {} times: {who:?}", list.len()));
            }
        }
    }

    /// The journal and the outcomes agree: every `executed` outcome has its action in the
    /// journal, and every journaled action belongs to an `executed` incident or to one whose
    /// worker died while acting (recorded `aborted`, "interrupted").
    pub fn journal_matches(&self, finals: &Finals, violations: &mut Vec<String>) {
        let acted: BTreeSet<&str> = self
            .journal
            .iter()
            .filter(|a| !a.rollback)
            .map(|a| a.incident_id.as_str())
            .collect();
        for (id, o) in &finals.by_id {
            if o.decision == "executed" && !acted.contains(id.as_str()) {
                violations.push(format!("incident {id} executed by {} but not in the journal", o.worker));
            }
        }
        for id in acted {
            match finals.by_id.get(id) {
                Some(o) if o.decision == "executed" => {}
                Some(o) if o.decision == "aborted" && o.reason.contains("interrupted") => {}
                Some(o) => violations.push(format!(
                    "incident {id} was acted on but its outcome is {} ({})",
                    o.decision, o.reason
                )),
                None => violations.push(format!("incident {id} acted on without a final outcome")),
            }
        }
    }

    /// Every distinct event validates against `schemas/outcome.v1.json`.
    pub fn schema_valid(&self, violations: &mut Vec<String>) {
        let mut seen = BTreeSet::new();
        for o in &self.records {
            if !seen.insert(o.event_id.as_str()) {
                continue;
            }
            let errors: Vec<String> = crate::schema::outcome()
                .iter_errors(&o.json)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            if !errors.is_empty() {
                violations.push(format!("outcome violates the schema: {errors:?}: {}", o.json));
            }
        }
    }
}

/// The incident ids (message keys) of `msgs`.
pub fn ids(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter().filter_map(|m| m.key.clone()).collect()
}

/// The checks every scenario ends with, after its workers stopped: one final outcome per
/// incident, no action twice, journal and outcomes agree, every event valid, every offset
/// committed. Violations go to `v`.
pub async fn full_history(fleet: &Fleet, sent: BTreeSet<String>, v: &mut Vec<String>) -> (History, Finals) {
    let h = History::gather(fleet, sent).await;
    let finals = h.finals(v);
    h.single_execution(v);
    h.journal_matches(&finals, v);
    h.schema_valid(v);
    committed_all(fleet, v);
    (h, finals)
}

/// Count of final outcomes per decision.
pub fn decisions(finals: &Finals) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in finals.by_id.values() {
        *m.entry(o.decision.clone()).or_insert(0) += 1;
    }
    m
}

/// Every partition's committed offset reaches its high watermark: nothing left unprocessed or
/// unacknowledged. Auto-commit runs every 5 s and the last commit happens at shutdown, so this is
/// checked after the workers stopped.
pub fn committed_all(fleet: &Fleet, violations: &mut Vec<String>) {
    let t = &fleet.topics;
    let hw = kafka_common::high_watermarks(&fleet.brokers, &t.incidents, t.partitions);
    let committed = kafka_common::committed(&fleet.brokers, &fleet.group, &t.incidents, t.partitions);
    for (p, (h, c)) in hw.iter().zip(&committed).enumerate() {
        if *h > 0 && *c != Some(*h) {
            violations.push(format!(
                "partition {p}: committed {c:?}, high watermark {h}: messages left behind"
            ));
        }
    }
}

/// Most intervals `[start, end)` that overlap at one instant, and when.
pub fn max_overlap(intervals: &[(i64, i64)]) -> (usize, i64) {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for &(s, e) in intervals {
        events.push((s, 1));
        events.push((e, -1));
    }
    // Ends before starts at the same instant: [a, b) and [b, c) do not overlap.
    events.sort();
    let (mut cur, mut best, mut at) = (0i64, 0i64, 0);
    for (t, d) in events {
        cur += d as i64;
        if cur > best {
            best = cur;
            at = t;
        }
    }
    (best as usize, at)
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Figures of one scenario: printed, and appended to `$REMEDIATOR_RELIABILITY_FIGURES` (one
/// tab-separated line `test k=v k=v …`) for `scripts/reliability.sh`'s summary table.
pub struct Figures {
    test: String,
    items: Vec<(String, String)>,
    start: Instant,
}

impl Figures {
    /// Start timing `test`.
    pub fn new(test: &str) -> Self {
        Self {
            test: test.to_string(),
            items: vec![("mode".into(), if heavy() { "heavy" } else { "reduced" }.into())],
            start: Instant::now(),
        }
    }

    /// Add a figure.
    pub fn add(&mut self, key: &str, value: impl Display) -> &mut Self {
        self.items.push((key.to_string(), value.to_string()));
        self
    }

    /// The figures every history-checked scenario reports: executions, re-published and
    /// re-rejected records, and the final decisions.
    pub fn history(&mut self, h: &History, finals: &Finals) -> &mut Self {
        self.add("executions", h.journal.len())
            .add("republished", finals.republished)
            .add("rejected_again", finals.rejected_again)
            .add("decisions", format!("{:?}", decisions(finals)).replace(' ', ""))
    }

    /// Print and record the figures (with the elapsed seconds), then panic if `violations` is
    /// not empty, listing them.
    pub fn finish(&mut self, violations: &[String]) {
        self.add("violations", violations.len());
        self.add("secs", format!("{:.1}", self.start.elapsed().as_secs_f64()));
        let line: Vec<String> = self.items.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("[reliability] {}: {}", self.test, line.join(" "));
        if let Ok(path) = std::env::var("REMEDIATOR_RELIABILITY_FIGURES") {
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                let _ = writeln!(f, "{}\t{}", self.test, line.join("\t"));
            }
        }
        assert!(
            violations.is_empty(),
            "{}: {} violation(s):\n{}",
            self.test,
            violations.len(),
            violations.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Private services

/// A private `redis-server` (no persistence) that a test may stop, pause and restart.
pub struct OwnRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    paused: bool,
}

impl OwnRedis {
    /// Start one on a free port; `None` (skip) when `redis-server` is missing.
    pub fn start() -> Option<Self> {
        if !require_tool("redis-server", "needed for a private Redis") {
            return None;
        }
        let r = Self {
            port: free_port(false),
            dir: tempfile::Builder::new()
                .prefix("reliability-redis-")
                .tempdir()
                .expect("dir"),
            paused: false,
        };
        r.up();
        Some(r)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("redis.pid")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile()).ok()?.trim().parse().ok()
    }

    /// Start (again): an empty Redis, as after a restart without persistence.
    pub fn up(&self) {
        let status = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .status()
            .expect("redis-server");
        assert!(status.success(), "redis-server failed to start");
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "private redis did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Does it answer PING?
    pub fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Stop it (SIGTERM; nothing is saved) and wait until it is gone.
    pub fn down(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "TERM");
        }
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            || self.pid().is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(start.elapsed() < Duration::from_secs(10), "private redis did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freeze it (SIGSTOP): connections stay open but nothing answers, like a hung server or a
    /// network partition.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
            self.paused = true;
        }
    }

    /// Thaw it (SIGCONT): it then serves the commands queued meanwhile.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
            self.paused = false;
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            if self.paused {
                signal(pid, "CONT");
            }
            signal(pid, "KILL");
        }
    }
}

/// A private single-node Kafka (and its Redis) started by `scripts/services.sh` with its own run
/// directory and ports, so a test can stop and restart the broker.
pub struct OwnKafka {
    /// Bootstrap servers.
    pub brokers: String,
    /// Its Redis.
    pub redis: String,
    run: PathBuf,
    env: Vec<(String, String)>,
}

impl OwnKafka {
    /// Start it (`services.sh start`, 10-30 s); `None` (skip) when the Kafka jars are not
    /// installed (`scripts/services.sh install`).
    pub fn start(name: &str) -> Option<Self> {
        let cache = std::env::var("REMEDIATOR_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/remediator", std::env::var("HOME").unwrap_or_default()));
        let installed = std::fs::read_dir(&cache).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("kafka-") && e.path().join("libs/.complete").exists()
            })
        });
        if !installed || !require_tool("redis-server", "services.sh starts one") || !require_tool("kcat", "services.sh")
        {
            if !installed {
                if require_services() {
                    panic!("Kafka jars not installed in {cache} but REMEDIATOR_TEST_REQUIRE_SERVICES is set");
                }
                eprintln!("skipping: Kafka jars not installed in {cache} (run scripts/services.sh install)");
            }
            return None;
        }
        let kafka_port = free_port(true);
        let redis_port = free_port(false);
        let run = std::env::temp_dir().join(kafka_common::unique(&format!("reliability-kafka-{name}")));
        let env = vec![
            ("REMEDIATOR_RUN".to_string(), run.display().to_string()),
            ("KAFKA_PORT".to_string(), kafka_port.to_string()),
            ("KAFKA_CONTROLLER_PORT".to_string(), (kafka_port + 1).to_string()),
            ("REDIS_PORT".to_string(), redis_port.to_string()),
        ];
        let k = Self {
            brokers: format!("127.0.0.1:{kafka_port}"),
            redis: format!("redis://127.0.0.1:{redis_port}"),
            run,
            env,
        };
        k.services("start");
        Some(k)
    }

    fn services(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .arg(cmd)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("services.sh");
        assert!(
            out.status.success(),
            "services.sh {cmd} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn broker_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.run.join("kafka/kafka.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stop the broker only (`TERM`: a clean shutdown; `KILL`: a crash) and wait until it is gone.
    pub fn stop_broker(&self, sig: &str) {
        let pid = self.broker_pid().expect("broker pid");
        signal(pid, sig);
        let start = Instant::now();
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(start.elapsed() < Duration::from_secs(60), "broker did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start the broker again on the same data directory (`services.sh start`).
    pub fn start_broker(&self) {
        self.services("start");
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        // Stops Kafka and Redis; removes the run directory unless the test failed (then its
        // broker logs are kept for the post-mortem).
        let keep = std::thread::panicking();
        if keep {
            eprintln!(
                "[reliability] private Kafka's data and logs kept in {}",
                self.run.display()
            );
        }
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .arg(if keep { "stop" } else { "clean" })
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// A replicated Kafka cluster

/// `n` consecutive TCP ports nobody listens on right now; returns the first.
pub fn free_port_block(n: u16) -> u16 {
    for _ in 0..200 {
        let p = free_port(false);
        if p.checked_add(n).is_some() && (p..p + n).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()) {
            return p;
        }
    }
    panic!("no block of {n} free ports found");
}

/// Whether `scripts/services.sh install` put the Kafka jars in `$REMEDIATOR_CACHE`; skips (with
/// a note) or fails (under `REMEDIATOR_TEST_REQUIRE_SERVICES`) when not, or when kcat is missing.
fn kafka_jars(what: &str) -> bool {
    let cache = std::env::var("REMEDIATOR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/remediator", std::env::var("HOME").unwrap_or_default()));
    let installed = std::fs::read_dir(&cache).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka-") && e.path().join("libs/.complete").exists())
    });
    if !installed {
        if require_services() {
            panic!("Kafka jars not installed in {cache} but REMEDIATOR_TEST_REQUIRE_SERVICES is set ({what})");
        }
        eprintln!("skipping: Kafka jars not installed in {cache} (run scripts/services.sh install; {what})");
        return false;
    }
    require_tool("kcat", what)
}

/// One partition as the cluster's metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition.
    pub partition: i32,
    /// Leader's node id (`-1`: none).
    pub leader: i32,
    /// Replicas (node ids).
    pub replicas: Vec<i32>,
    /// In-sync replicas (node ids).
    pub isr: Vec<i32>,
}

/// A private 3-node KRaft cluster (each node broker and controller) started by
/// `scripts/kafka-cluster.sh` on a free block of ports with its own run directory, so a test can
/// kill, pause and restart nodes. Dropping it stops every node (also when the test panics; the
/// logs are then kept).
pub struct OwnCluster {
    /// Bootstrap servers (all three nodes).
    pub brokers: String,
    /// How long `start` took.
    pub started_in: Duration,
    run: PathBuf,
    base: u16,
}

impl OwnCluster {
    /// Nodes in the cluster (ids `1..=NODES`).
    pub const NODES: i32 = 3;

    /// Start it (about 7 s); `None` (skip) when the Kafka jars or kcat are missing.
    pub fn start(name: &str) -> Option<Self> {
        if !kafka_jars("needed for a replicated cluster") {
            return None;
        }
        let base = free_port_block(6);
        let run = std::env::temp_dir().join(kafka_common::unique(&format!("reliability-cluster-{name}")));
        let t0 = Instant::now();
        let mut c = Self {
            brokers: String::new(),
            started_in: Duration::ZERO,
            run,
            base,
        };
        let out = c.script(&["start"]);
        c.brokers = out
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_CLUSTER_BOOTSTRAP="))
            .unwrap_or_else(|| panic!("kafka-cluster.sh start printed no bootstrap line: {out:?}"))
            .to_string();
        c.started_in = t0.elapsed();
        Some(c)
    }

    /// Run `scripts/kafka-cluster.sh ARGS` for this cluster; its stdout. Panics on failure.
    pub fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-cluster.sh"))
            .args(args)
            .env("REMEDIATOR_RUN", &self.run)
            .env("KAFKA_CLUSTER_PORT_BASE", self.base.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("kafka-cluster.sh");
        assert!(
            out.status.success(),
            "kafka-cluster.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop node `n` (`TERM`: a controlled shutdown; `KILL`: a crash) and wait until it is gone.
    pub fn stop_node(&self, n: i32, sig: &str) {
        let cmd = if sig == "KILL" { "kill-node" } else { "stop-node" };
        self.script(&[cmd, &n.to_string()]);
    }

    /// Start node `n` again on its data and wait until the cluster lists it.
    pub fn start_node(&self, n: i32) {
        self.script(&["start-node", &n.to_string()]);
    }

    /// Freeze node `n` (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause_node(&self, n: i32) {
        self.script(&["pause-node", &n.to_string()]);
    }

    /// Thaw node `n` (SIGCONT).
    pub fn resume_node(&self, n: i32) {
        self.script(&["resume-node", &n.to_string()]);
    }

    /// The partitions of `topic` as the cluster reports them now (`Err` when it does not answer
    /// within 5 s).
    pub fn partitions(&self, topic: &str) -> Result<Vec<PartitionState>, String> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("{topic} not in the metadata"))?;
        Ok(t.partitions()
            .iter()
            .map(|p| PartitionState {
                partition: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
            })
            .collect())
    }

    /// The leader of `topic`/`partition` now (`None`: none, or no answer).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partitions(topic)
            .ok()?
            .into_iter()
            .find(|p| p.partition == partition && p.leader >= 0)
            .map(|p| p.leader)
    }

    /// Wait until every partition of `topics` has a leader and `isr` in-sync replicas; `Err`
    /// with the last state seen after `within`.
    pub async fn wait_isr(&self, topics: &[&str], isr: usize, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let mut last = String::new();
            let mut ok = true;
            for t in topics {
                match self.partitions(t) {
                    Ok(ps) if ps.iter().all(|p| p.leader >= 0 && p.isr.len() == isr) => {}
                    Ok(ps) => {
                        ok = false;
                        last = format!("{t}: {ps:?}");
                    }
                    Err(e) => {
                        ok = false;
                        last = format!("{t}: {e}");
                    }
                }
            }
            if ok {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(format!("ISR of {isr} not reached after {within:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Unique topics for a test, every one with replication factor 3; `min.insync.replicas` 2,
    /// except the outcomes topic's, which is `outcomes_min_isr`.
    pub async fn topics(&self, partitions: i32, outcomes_min_isr: u8) -> Topics {
        use rdkafka::admin::{NewTopic, TopicReplication};
        let t = Topics {
            incidents: kafka_common::unique("incidents"),
            outcomes: kafka_common::unique("outcomes"),
            dlq: kafka_common::unique("dlq"),
            partitions,
        };
        let out_isr = outcomes_min_isr.to_string();
        let new = vec![
            NewTopic::new(&t.incidents, partitions, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
            NewTopic::new(&t.outcomes, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", &out_isr),
            NewTopic::new(&t.dlq, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2"),
        ];
        kafka_common::create_topics(&self.brokers, new, Duration::from_secs(20)).await;
        let names = [t.incidents.as_str(), t.outcomes.as_str(), t.dlq.as_str()];
        if let Err(e) = self.wait_isr(&names, 3, Duration::from_secs(30)).await {
            panic!("new topics not fully replicated: {e}");
        }
        t
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let keep = std::thread::panicking();
        if keep {
            eprintln!("[reliability] cluster's data and logs kept in {}", self.run.display());
        }
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-cluster.sh"))
            .arg(if keep { "stop" } else { "clean" })
            .env("REMEDIATOR_RUN", &self.run)
            .env("KAFKA_CLUSTER_PORT_BASE", self.base.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Proc {
    /// How it ended, once it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.alive();
        self.exit
    }
}
