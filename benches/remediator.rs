//! `scripts/bench`: how close the worker comes to the limits of the services it sits between.
//!
//! One run measures three ratios against baselines taken on the same machine in the same run, so
//! they stay comparable across machines and background load, plus absolute figures for context
//! (BENCHMARKS.md explains each and records results):
//!
//! * `admission_vs_redis_ceiling`: guardrail decisions/s through [`RedisStore::decide`] (64 tasks
//!   on the store's one multiplexed connection) over what `redis-benchmark` gets from the same
//!   `decide.lua` with the same keys and arguments on the same server (the server's ceiling).
//! * `pipeline_vs_kafka_passthrough`: incidents/s through [`remediator::kafka::run`] (Kafka in,
//!   decision with Redis, outcome out, offsets committed; worker-wide dry run) over a consumer
//!   that only re-publishes each message with the worker's own librdkafka settings
//!   ([`kafka::consumer_config`], [`kafka::producer_config`]) and its delivery discipline.
//! * `match_cost_10k_vs_10_runbooks`: `Catalogue::match_incident` cost with 10,000 runbooks over
//!   its cost with 10.
//!
//! On request (`--scaling`, or `--only=scaling`) it also measures incidents/s with 1, 2 and 4
//! `remediator run` processes (the release build) in one consumer group over 4 and 12 partitions,
//! with the CPU each party used (workers, broker, Redis, this bench) and Redis commands/s.
//!
//! `ttr` (time to remediate, issue #15): N Deployments on a real control plane (scripts/k8s.sh),
//! one crash-looping pod each (kwok's crash-loop stage), one `CrashLoopBackOff` incident each
//! produced to Kafka at once, ONE `remediator run` process with the Kubernetes executor (not dry
//! run) deleting the pods: produce -> replacement pod Ready (the bench's own pod watch), p50/p99,
//! split into pickup (produce -> the outcome's `decided_at`), remediator (-> old pod seen deleted)
//! and the control plane (-> replacement seen Ready). Runs when `KUBECONFIG` is set (scripts/bench
//! starts a private control plane when it can), otherwise prints "skipped" with the reason.
//!
//! It prints a table, then one JSON line (the last line of stdout). It only runs when invoked by
//! `cargo bench` (which passes `--bench`): under `cargo test --all-targets` it is compiled and
//! exits at once, so CI checks that it builds without running it. It needs `REDIS_URL` and
//! `KAFKA_BOOTSTRAP` (scripts/bench starts private services when they are not set).

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use remediator::clock::SystemClock;
use remediator::engine::{Engine, EventIds, Settings, Source};
use remediator::executor::simulated::SimulatedExecutor;
use remediator::guardrails::memory::{MemoryStore, CLAIM_GRACE_MS};
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::{
    Admission, BlockedRecord, DecideAnswer, DecideRequest, Guardrail, GuardrailStore, Limits, Scope, Store,
};
use remediator::health::Health;
use remediator::incident::{self, Incident};
use remediator::kafka::{self, KafkaSettings};
use remediator::metrics::Metrics;
use remediator::outcome::Decision;
use remediator::runbook::Catalogue;
use remediator::shutdown;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::error::Error;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The allocator the `remediator` binary uses (src/main.rs), so the in-process figures (engine,
/// replay, matching) are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrency of the admission benchmark, and `redis-benchmark -c`.
const ADMISSION_TASKS: usize = 64;
/// Decisions per script call in the batched admission figure.
const ADMISSION_BATCH: usize = 16;
/// Partitions of the incidents topic (the worker runs one task per partition), unless
/// `--partitions` says otherwise.
const PARTITIONS: i32 = 6;
/// The shipped catalogue: the pipeline benchmark decides against the real runbooks.
const RUNBOOKS_YAML: &str = include_str!("../config/runbooks.yaml");
const DECIDE_LUA: &str = remediator::guardrails::redis::DECIDE_SCRIPT;
/// decide.lua as it stood when issue #15 was filed: the baseline its batched-admission target
/// names ("the single-call EVALSHA ceiling of today's script").
const ISSUE_DAY_DECIDE_LUA: &str = include_str!("decide-2026-12-06.lua");
/// Production's `redis.timeout_ms`.
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Guardrail decisions timed through the store (and per redis-benchmark pass).
    admission: usize,
    /// Messages through the worker and through each pass-through.
    pipeline: usize,
    /// Fixed-rate latency run: rate and duration.
    latency_rate: u64,
    latency_secs: u64,
    /// Incidents matched per catalogue and pass.
    matches: usize,
    /// Incidents through `Engine::handle` alone, per store.
    engine: usize,
    /// Incidents in the file `replay` and the reference engine both decide, per round.
    replay: usize,
    /// Incidents per configuration and round of the scaling section (`--scaling`), and rounds.
    scaling: usize,
    scaling_rounds: usize,
    /// Crash-looping Deployments of the time-to-remediate section (one incident each).
    ttr: usize,
}

const QUICK: Sizes = Sizes {
    admission: 40_000,
    pipeline: 20_000,
    latency_rate: 500,
    latency_secs: 5,
    matches: 2_000_000,
    engine: 2_000,
    replay: 20_000,
    scaling: 4_000,
    scaling_rounds: 1,
    ttr: 20,
};
const FULL: Sizes = Sizes {
    admission: 300_000,
    pipeline: 100_000,
    latency_rate: 500,
    latency_secs: 10,
    matches: 10_000_000,
    engine: 10_000,
    replay: 100_000,
    scaling: 12_000,
    scaling_rounds: 2,
    ttr: 60,
};

/// Where the services are, and a tag that makes this run's topics, groups and keys unique.
struct Env {
    redis_url: String,
    brokers: String,
    run: String,
    opts: Opts,
    /// Topics created so far, deleted at the end.
    topics: Mutex<Vec<String>>,
}

impl Env {
    fn partitions(&self) -> i32 {
        self.opts.partitions.unwrap_or(PARTITIONS)
    }
}

/// Rows of the human-readable table.
#[derive(Default)]
struct Table(Vec<[String; 3]>);

impl Table {
    fn row(&mut self, what: &str, value: impl std::fmt::Display, note: impl Into<String>) {
        self.0.push([what.to_string(), value.to_string(), note.into()]);
    }

    fn print(&self) {
        let rows = || self.0.iter().filter(|r| !(r[1].is_empty() && r[2].is_empty()));
        let w0 = rows().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows().map(|r| r[1].len()).max().unwrap_or(0);
        for [a, b, c] in &self.0 {
            if b.is_empty() && c.is_empty() {
                println!("\n{a}");
            } else {
                println!("  {a:<w0$}  {b:>w1$}  {c}");
            }
        }
        println!();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without it.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("remediator bench: compiled; run it with scripts/bench (not under cargo test)");
        return;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(run(opts)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: scripts/bench [--quick] [--scaling] [--only=admission,pipeline,engine,replay,latency,match,scaling,ttr] \
                     [--messages=N] [--scaling-messages=N] [--partitions=N] [--max-in-flight=N] [--kafka-property=KEY=VALUE]...";

/// Command line of the bench binary (after cargo's own `--bench`).
#[derive(Debug, Default)]
struct Opts {
    quick: bool,
    /// Also run the scaling section (worker processes; not part of a default run).
    scaling: bool,
    /// Overrides the incidents per configuration of the scaling section.
    scaling_messages: Option<usize>,
    /// Sections to run (all when empty).
    only: Vec<String>,
    /// Overrides the message count of the pipeline section.
    messages: Option<usize>,
    /// Partitions of the incidents topics.
    partitions: Option<i32>,
    /// `kafka.max_in_flight` of the worker and the pass-throughs (the worker's default if unset).
    max_in_flight: Option<usize>,
    /// `kafka.properties` of the worker and the pass-throughs, to try client settings.
    properties: BTreeMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Opts::default();
        for a in args {
            let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{a}: not a number"));
            if a == "--bench" {
                continue;
            } else if a == "--quick" {
                o.quick = true;
            } else if a == "--scaling" {
                o.scaling = true;
            } else if let Some(v) = a.strip_prefix("--scaling-messages=") {
                o.scaling_messages = Some(num(v)?.max(1));
            } else if let Some(v) = a.strip_prefix("--only=") {
                o.only.extend(v.split(',').map(str::to_string));
            } else if let Some(v) = a.strip_prefix("--messages=") {
                o.messages = Some(num(v)?);
            } else if let Some(v) = a.strip_prefix("--partitions=") {
                o.partitions = Some(num(v)?.clamp(1, 1000) as i32);
            } else if let Some(v) = a.strip_prefix("--max-in-flight=") {
                o.max_in_flight = Some(num(v)?);
            } else if let Some(v) = a.strip_prefix("--kafka-property=") {
                let (k, v) = v.split_once('=').ok_or_else(|| format!("{a}: expected KEY=VALUE"))?;
                o.properties.insert(k.into(), v.into());
            } else {
                return Err(format!("unknown argument {a:?}"));
            }
        }
        Ok(o)
    }
}

async fn run(opts: Opts) -> Res<()> {
    let quick = opts.quick;
    let only = opts.only.clone();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(redis_url), Some(brokers)) = (var("REDIS_URL"), var("KAFKA_BOOTSTRAP")) else {
        return Err("REDIS_URL and KAFKA_BOOTSTRAP must be set (scripts/bench sets them)".into());
    };
    let env = Env {
        redis_url,
        brokers,
        run: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        opts,
        topics: Mutex::default(),
    };
    let mut sizes = if quick { QUICK } else { FULL };
    if let Some(n) = env.opts.messages {
        sizes.pipeline = n;
    }
    if let Some(n) = env.opts.scaling_messages {
        sizes.scaling = n;
    }
    // The scaling section starts worker processes and takes minutes: only on request.
    let wanted = |s: &str| {
        if s == "scaling" {
            env.opts.scaling || only.iter().any(|o| o == s)
        } else {
            only.is_empty() || only.iter().any(|o| o == s)
        }
    };
    init_logging();
    let started = Instant::now();
    let load_before = loadavg();
    let rss_start = vm_rss_kib();
    let mut t = Table::default();
    let mut j = serde_json::Map::new();
    j.insert("bench".into(), json!("remediator"));
    j.insert("mode".into(), json!(if quick { "quick" } else { "full" }));

    // The sections; whatever happens, this run's topics are deleted afterwards.
    let sections = async {
        if wanted("admission") {
            eprintln!(
                "[bench] admission: {} decisions through RedisStore vs redis-benchmark",
                sizes.admission
            );
            admission(&env, sizes, &mut t, &mut j).await?;
        }
        if wanted("pipeline") {
            eprintln!(
                "[bench] pipeline: {} incidents through the worker and the pass-throughs",
                sizes.pipeline
            );
            pipeline(&env, sizes, rss_start, &mut t, &mut j).await?;
        }
        if wanted("engine") {
            eprintln!("[bench] engine: one incident at a time through Engine::handle, Redis vs memory store");
            engine_alone(&env, sizes.engine, &mut t, &mut j).await?;
        }
        if wanted("replay") {
            eprintln!(
                "[bench] replay: {} incidents through `remediator replay` vs the course module's reference engine",
                sizes.replay
            );
            replay_vs_reference(sizes.replay, &mut t, &mut j).await?;
        }
        if wanted("latency") {
            eprintln!(
                "[bench] latency: {}/s for {} s through the worker",
                sizes.latency_rate, sizes.latency_secs
            );
            latency(&env, sizes, &mut t, &mut j).await?;
        }
        if wanted("match") {
            eprintln!("[bench] match: 10 vs 10,000 runbooks");
            matching(sizes, &mut t, &mut j)?;
        }
        if wanted("scaling") {
            scaling(&env, sizes, &mut t, &mut j).await?;
        }
        if wanted("ttr") {
            eprintln!(
                "[bench] ttr: {} crash-looping pods, produce -> replacement Ready through `remediator run`",
                sizes.ttr
            );
            ttr(&env, sizes.ttr, &mut t, &mut j).await?;
        }
        Ok::<(), Box<dyn Error + Send + Sync>>(())
    };
    let outcome = sections.await;
    delete_topics(&env).await;
    outcome?;
    let load_after = loadavg();
    t.row("Machine", "", "");
    let machine = machine();
    for (k, v) in &machine {
        t.row(k, v, "");
    }
    t.row(
        "load average (1 min) before / after",
        format!("{load_before:.2} / {load_after:.2}"),
        "",
    );
    t.row(
        "bench wall time",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
        "",
    );
    let mut m: serde_json::Map<String, Value> = machine.into_iter().map(|(k, v)| (k, json!(v))).collect();
    m.insert("load1_before".into(), json!(round(load_before, 2)));
    m.insert("load1_after".into(), json!(round(load_after, 2)));
    j.insert("machine".into(), Value::Object(m));
    j.insert("wall_s".into(), json!(round(started.elapsed().as_secs_f64(), 1)));
    t.print();
    println!("{}", Value::Object(j));
    Ok(())
}

/// Worker logs as in production (JSON, `info`), into a file so they cost what they cost in
/// production without burying the table. `RUST_LOG` overrides the level.
fn init_logging() {
    let path = std::env::var("BENCH_LOG").unwrap_or_else(|_| "/tmp/remediator-bench.log".into());
    let Ok(file) = std::fs::File::create(&path) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .json()
        .with_current_span(true)
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Admission: RedisStore::decide vs redis-benchmark EVALSHA of the same script.
// ---------------------------------------------------------------------------------------------

/// The two requests of the admission mix (half each):
/// * `check`: an approval-mode runbook on a quiet service; every guardrail passes, nothing is
///   reserved (the decision becomes `approval_required`).
/// * `storm`: a reservation for a (runbook, service) that already ran `max_per_hour` times this
///   hour; blocked by the rate limit (the common answer during an incident storm).
const CHECK_SCOPE: (&str, &str) = ("failover-database", "orders");
const STORM_SCOPE: (&str, &str) = ("restart-pod", "checkout");

/// Production defaults (config defaults and the shipped runbooks' numbers).
fn limits() -> Limits {
    Limits {
        max_per_hour: 3,
        rate_window_ms: 3_600_000,
        cooldown_ms: 300_000,
        failure_threshold: 3,
        recovery_ms: 300_000,
        max_concurrent_actions: 3,
        max_affected_services: 10,
        runbook_max_services: 0,
        services_window_ms: 900_000,
        conservative_ms: 3_600_000,
        record_ttl_ms: 7 * 24 * 3_600_000,
    }
}

fn admission_request(i: usize) -> DecideRequest {
    let (check, (runbook, service)) = if i.is_multiple_of(2) {
        (true, CHECK_SCOPE)
    } else {
        (false, STORM_SCOPE)
    };
    let scope = Scope {
        runbook: runbook.into(),
        service: service.into(),
        target: String::new(),
    };
    DecideRequest {
        incident_id: format!("adm-{i}"),
        attempt: format!("att-{i}"),
        worker: "bench".into(),
        source: Some(format!("incidents/{}/{i}", i % 6)),
        lease_ms: 60_000,
        admission: if check {
            Admission::Check {
                scope,
                limits: limits(),
            }
        } else {
            Admission::Reserve {
                scope,
                limits: limits(),
            }
        },
        // As the worker sends it: the outcome of a block, recorded in the same call.
        on_block: Some(storm_outcome().clone()),
        rollout_version: None,
    }
}

/// A blocked outcome as the engine writes it for a storm incident (about 600 bytes), split for
/// the store ([`BlockedRecord`]).
fn storm_outcome() -> &'static BlockedRecord {
    static RECORD: std::sync::OnceLock<BlockedRecord> = std::sync::OnceLock::new();
    RECORD.get_or_init(|| {
        let json = format!(
            r#"[{{"schema_version":1,"event_id":"{}","incident_id":"storm","service":"{svc}","root_cause":"CrashLoopBackOff","confidence":0.95,"runbook_id":"{rb}","decision":"blocked","success":null,"rolled_back":false,"reason":"@@detail@@","guardrail":"rate_limit","action":{{"kind":"delete_pod","target":"pod/{svc}-7d9f8-x1","namespace":"production","display":"kubectl delete pod {svc}-7d9f8-x1 -n production"}},"checks":[],"mode":"auto","worker":"bench-worker","decided_at":"2026-12-07T03:00:00Z","finished_at":"2026-12-07T03:00:00Z","duration_ms":0}}]"#,
            uuid::Uuid::new_v4(),
            rb = STORM_SCOPE.0,
            svc = STORM_SCOPE.1,
        );
        BlockedRecord::split(&json, "@@detail@@", Guardrail::RateLimit).expect("the sample splits")
    })
}

/// Which decide.lua a `redis-benchmark` pass calls, and so which keys and arguments it needs.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Today's (the store's `DECIDE_SCRIPT`): 11 keys, 27 arguments.
    Current,
    /// The issue-day script (`benches/decide-2026-12-06.lua`): 10 keys, 23 arguments, as the
    /// store of that day called it.
    IssueDay,
}

/// `redis-benchmark` arguments for one request kind, exactly as `RedisStore::decide` sends them
/// (for [`Script::IssueDay`]: as that day's store sent them), with `__rand_int__` making every
/// call a fresh incident claim. [`check_benchmark_args`] proves them before any pass is timed.
fn benchmark_args(tag: &str, sha: &str, check: bool, epoch: &str, script: Script) -> Vec<String> {
    let (runbook, service) = if check { CHECK_SCOPE } else { STORM_SCOPE };
    let l = limits();
    let mut keys = vec![
        "inc:adm-rb-__rand_int__".to_string(),
        format!("rate:{runbook}:{service}"),
        format!("cb:{runbook}"),
        "leases".into(),
        "services".into(),
        format!("rbsvc:{runbook}"),
        "epoch".into(),
        "conservative_until".into(),
        "primary".into(),
        format!("trate:{runbook}:"),
    ];
    if script == Script::Current {
        keys.push(format!("rollout:{runbook}"));
    }
    let mut a: Vec<String> = vec!["EVALSHA".into(), sha.into(), keys.len().to_string()];
    a.extend(keys.iter().map(|k| format!("{tag}{k}")));
    a.extend([
        "adm-rb-__rand_int__".to_string(),
        "att-rb-__rand_int__".into(),
        "bench".into(),
        "incidents/0/__rand_int__".into(),
        "1".into(),
        "60000".into(),
        CLAIM_GRACE_MS.to_string(),
        if check { "check" } else { "reserve" }.into(),
        String::new(),
        l.record_ttl_ms.to_string(),
        service.into(),
        l.max_per_hour.to_string(),
        l.rate_window_ms.to_string(),
        l.cooldown_ms.to_string(),
        l.recovery_ms.to_string(),
        l.max_concurrent_actions.to_string(),
        l.max_affected_services.to_string(),
        l.services_window_ms.to_string(),
        l.runbook_max_services.to_string(),
        l.conservative_ms.to_string(),
        epoch.into(),
        "bench-candidate".into(),
        String::new(),
    ]);
    if script == Script::Current {
        // No outcome to record on a block (ARGV 24-26): the single-call ceiling of the script;
        // no rollout policy (ARGV 27).
        a.extend([String::new(), String::new(), String::new(), String::new()]);
    }
    a
}

/// Call `args` once (its `__rand_int__` made a fixed probe id) and require the answer the mix
/// expects: a ceiling timed over calls that fail (a script that gained a key or an argument
/// the bench does not send) would measure an error path, not the script.
async fn check_benchmark_args(con: &mut redis::aio::MultiplexedConnection, args: &[String], expected: &str) -> Res<()> {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a.replace("__rand_int__", "probe"));
    }
    let reply: Vec<String> = cmd
        .query_async(con)
        .await
        .map_err(|e| format!("the redis-benchmark arguments fail: {e}"))?;
    match reply.get(1) {
        Some(kind) if kind == expected => Ok(()),
        _ => Err(format!("the redis-benchmark arguments answer {reply:?}, not {expected:?}").into()),
    }
}

/// `host`, `port` and password of a `redis://[:password@]host:port[/db]` URL.
fn redis_host_port(url: &str) -> Res<(String, u16, Option<String>)> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("redis-benchmark needs a redis:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (password, hostport) = match authority.rsplit_once('@') {
        Some((user, hp)) => (Some(user.rsplit(':').next().unwrap_or(user).to_string()), hp),
        None => (None, authority),
    };
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    Ok((host.to_string(), port.parse()?, password.filter(|p| !p.is_empty())))
}

/// One `redis-benchmark` pass; returns requests/s.
async fn redis_benchmark(url: &str, n: usize, pipeline: usize, args: &[String]) -> Res<f64> {
    let (host, port, password) = redis_host_port(url)?;
    let mut cmd = tokio::process::Command::new("redis-benchmark");
    cmd.args(["-h", &host, "-p", &port.to_string()]);
    if let Some(p) = password {
        cmd.args(["-a", &p]);
    }
    cmd.args(["-n", &n.to_string(), "-c", &ADMISSION_TASKS.to_string()])
        .args(["-P", &pipeline.to_string()])
        .args(["-r", "1000000000", "--csv"])
        .args(args);
    let out = cmd.output().await.map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // --csv: a header, then `"<command>","<rps>",...`.
    let rps = text.lines().filter(|l| l.starts_with("\"EVALSHA")).find_map(|l| {
        l.split("\",\"")
            .nth(1)
            .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
    });
    rps.ok_or_else(|| {
        format!(
            "redis-benchmark gave no rate (status {}): {} {}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into()
    })
}

async fn admission(env: &Env, sizes: Sizes, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let prefix = format!("{}-adm", env.run);
    let tag = format!("{{{prefix}}}:");
    let store = Arc::new(RedisStore::connect(&env.redis_url, &prefix, REDIS_TIMEOUT).await?);
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    // The storm's (runbook, service) already ran max_per_hour times within the hour.
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut con).await?;
    let now_ms = secs * 1000 + micros / 1000;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(format!("{tag}rate:{}:{}", STORM_SCOPE.0, STORM_SCOPE.1));
    for k in 0..limits().max_per_hour {
        zadd.arg(now_ms - 1000 * i64::from(k)).arg(format!("seed-{k}"));
    }
    zadd.query_async::<i64>(&mut con).await?;
    let epoch: String = redis::cmd("GET")
        .arg(format!("{tag}epoch"))
        .query_async(&mut con)
        .await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(DECIDE_LUA)
        .query_async(&mut con)
        .await?;
    if sha != redis::Script::new(DECIDE_LUA).get_hash() {
        return Err("SCRIPT LOAD returned another SHA than the store uses".into());
    }
    let check_args = benchmark_args(&tag, &sha, true, &epoch, Script::Current);
    let storm_args = benchmark_args(&tag, &sha, false, &epoch, Script::Current);
    let issue_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(ISSUE_DAY_DECIDE_LUA)
        .query_async(&mut con)
        .await?;
    let issue_check_args = benchmark_args(&tag, &issue_sha, true, &epoch, Script::IssueDay);
    let issue_storm_args = benchmark_args(&tag, &issue_sha, false, &epoch, Script::IssueDay);
    for (args, expected) in [
        (&check_args, "allowed"),
        (&storm_args, "blocked"),
        (&issue_check_args, "allowed"),
        (&issue_storm_args, "blocked"),
    ] {
        check_benchmark_args(&mut con, args, expected).await?;
    }

    // Warm up (connection, NOSCRIPT path), untimed.
    let warm = run_decisions(&store, 0, 2_000, 1).await;
    // Ceiling before and after the store run, averaged: background load drifts.
    let half = sizes.admission / 2;
    let ceiling = |c: f64, s: f64| 1.0 / (0.5 / c + 0.5 / s);
    let c1 = redis_benchmark(&env.redis_url, half, 1, &check_args).await?;
    let s1 = redis_benchmark(&env.redis_url, half, 1, &storm_args).await?;
    let ic1 = redis_benchmark(&env.redis_url, half, 1, &issue_check_args).await?;
    let is1 = redis_benchmark(&env.redis_url, half, 1, &issue_storm_args).await?;
    let r = run_decisions(&store, 10_000_000, sizes.admission, 1).await;
    // The same decisions, ADMISSION_BATCH per script call (batched admission).
    let b = run_decisions(&store, 20_000_000, sizes.admission, ADMISSION_BATCH).await;
    let c2 = redis_benchmark(&env.redis_url, half, 1, &check_args).await?;
    let s2 = redis_benchmark(&env.redis_url, half, 1, &storm_args).await?;
    // The issue-day script's single-call ceiling (the baseline of the batched target), before
    // the store runs too: see the two averaged below.
    let ic2 = redis_benchmark(&env.redis_url, half, 1, &issue_check_args).await?;
    let is2 = redis_benchmark(&env.redis_url, half, 1, &issue_storm_args).await?;
    let issue_ceiling = (ceiling(ic1, is1) + ceiling(ic2, is2)) / 2.0;
    // Context: the server's ceiling when requests are pipelined, as the multiplexed connection
    // does by itself when 64 tasks share it.
    let cp = redis_benchmark(&env.redis_url, half, 16, &check_args).await?;
    let sp = redis_benchmark(&env.redis_url, half, 16, &storm_args).await?;
    let pipelined_ceiling = ceiling(cp, sp);
    let rate = r.decisions as f64 / r.elapsed.as_secs_f64();
    let ceil = (ceiling(c1, s1) + ceiling(c2, s2)) / 2.0;
    let ratio = rate / ceil;
    let batched_rate = b.decisions as f64 / b.elapsed.as_secs_f64();
    if r.errors > 0 || warm.errors > 0 || b.errors > 0 {
        eprintln!(
            "[bench] admission: {} store errors (timeouts?)",
            r.errors + warm.errors + b.errors
        );
    }
    t.row(
        "Admission (RedisStore::decide, 64 tasks, one multiplexed connection)",
        "",
        "",
    );
    t.row(
        "decisions/s through the store",
        format!("{rate:.0}"),
        format!("{} decisions in {:.2} s", r.decisions, r.elapsed.as_secs_f64()),
    );
    t.row(
        "redis-benchmark EVALSHA/s, same mix",
        format!("{ceil:.0}"),
        format!("check {c1:.0}/{c2:.0}, storm {s1:.0}/{s2:.0} (before/after)"),
    );
    t.row("admission_vs_redis_ceiling", format!("{ratio:.2}"), "target >= 0.7");
    t.row(
        "redis-benchmark EVALSHA/s, same mix, -P 16",
        format!("{pipelined_ceiling:.0}"),
        format!(
            "context: pipelined ceiling; store at {:.2} of it",
            rate / pipelined_ceiling
        ),
    );
    let mix = r
        .answers
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    t.row("answer mix", "", mix);
    t.row("store errors", r.errors + b.errors, "");
    t.row(
        "batched decisions/s (decide_batch)",
        format!("{batched_rate:.0}"),
        format!(
            "{ADMISSION_BATCH} per script call, {} decisions in {:.2} s",
            b.decisions,
            b.elapsed.as_secs_f64()
        ),
    );
    t.row(
        "redis-benchmark EVALSHA/s, same mix, issue-day script",
        format!("{issue_ceiling:.0}"),
        format!(
            "benches/decide-2026-12-06.lua, one call per decision: check {ic1:.0}/{ic2:.0}, storm {is1:.0}/{is2:.0}"
        ),
    );
    t.row(
        "batched_admission_vs_issue_day_ceiling",
        format!("{:.2}", batched_rate / issue_ceiling),
        "target >= 2 (issue #15): over the single-call ceiling of the issue-day script",
    );
    t.row(
        "batched_admission_vs_redis_ceiling",
        format!("{:.2}", batched_rate / ceil),
        "stricter: over today's script's single-call ceiling (above)",
    );
    j.insert("batched_admission_decisions_per_s".into(), json!(batched_rate.round()));
    j.insert(
        "batched_admission_vs_redis_ceiling".into(),
        json!(round(batched_rate / ceil, 3)),
    );
    j.insert("issue_day_ceiling_evalsha_per_s".into(), json!(issue_ceiling.round()));
    j.insert(
        "batched_admission_vs_issue_day_ceiling".into(),
        json!(round(batched_rate / issue_ceiling, 3)),
    );
    j.insert("admission_vs_redis_ceiling".into(), json!(round(ratio, 3)));
    j.insert("admission_decisions_per_s".into(), json!(rate.round()));
    j.insert("redis_ceiling_evalsha_per_s".into(), json!(ceil.round()));
    j.insert(
        "redis_pipelined_ceiling_evalsha_per_s".into(),
        json!(pipelined_ceiling.round()),
    );
    j.insert("admission_answers".into(), json!(r.answers));
    j.insert("admission_errors".into(), json!(r.errors));
    cleanup(&mut con, &tag).await;
    Ok(())
}

struct Decided {
    decisions: u64,
    errors: u64,
    elapsed: Duration,
    answers: BTreeMap<String, u64>,
}

/// `n` decisions numbered from `first`, spread over [`ADMISSION_TASKS`] tasks, each asking for
/// `batch` at a time (`RedisStore::decide` for 1, `decide_batch` for more).
async fn run_decisions(store: &Arc<RedisStore>, first: usize, n: usize, batch: usize) -> Decided {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + n;
    let started = Instant::now();
    let tasks: Vec<_> = (0..ADMISSION_TASKS)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                let mut answers: BTreeMap<String, u64> = BTreeMap::new();
                let (mut ok, mut errors) = (0u64, 0u64);
                loop {
                    let i = next.fetch_add(batch, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let reqs: Vec<DecideRequest> = (i..(i + batch).min(end)).map(admission_request).collect();
                    let decided = if let [one] = reqs.as_slice() {
                        store.decide(one).await.map(|a| vec![a])
                    } else {
                        store.decide_batch(&reqs).await
                    };
                    match decided {
                        Ok(all) => {
                            for a in all {
                                ok += 1;
                                let kind = match a {
                                    DecideAnswer::Allowed { .. } => "allowed".to_string(),
                                    DecideAnswer::Blocked { guardrail, .. } => format!("blocked:{guardrail}"),
                                    other => format!("{other:?}").split([' ', '{']).next().unwrap_or("?").to_string(),
                                };
                                *answers.entry(kind).or_default() += 1;
                            }
                        }
                        Err(_) => errors += reqs.len() as u64,
                    }
                }
                (ok, errors, answers)
            })
        })
        .collect();
    let mut d = Decided {
        decisions: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        answers: BTreeMap::new(),
    };
    for task in tasks {
        if let Ok((ok, errors, answers)) = task.await {
            d.decisions += ok;
            d.errors += errors;
            for (k, v) in answers {
                *d.answers.entry(k).or_default() += v;
            }
        }
    }
    d.elapsed = started.elapsed();
    d
}

/// Remove this run's keys (a reused Redis should not keep them for the claim's hour).
async fn cleanup(con: &mut redis::aio::MultiplexedConnection, tag: &str) {
    let mut cursor: u64 = 0;
    loop {
        let r: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", tag.replace('{', "\\{").replace('}', "\\}")))
            .arg("COUNT")
            .arg(10_000)
            .query_async(con)
            .await;
        let Ok((next, keys)) = r else { return };
        if !keys.is_empty() {
            let _ = redis::cmd("UNLINK").arg(&keys).query_async::<i64>(con).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

// ---------------------------------------------------------------------------------------------
// Pipeline: the worker vs pass-through consumers with the worker's client settings.
// ---------------------------------------------------------------------------------------------

/// Incident `i` of the production-like mix (see BENCHMARKS.md): mostly matched, confident
/// incidents for the shipped runbooks over 50 services, some below the runbook's confidence,
/// some with no runbook.
fn incident_json(run: &str, i: usize) -> String {
    let id = format!("{run}-{i}");
    let svc = format!("svc-{:02}", i % 50);
    let now = chrono::Utc::now().to_rfc3339();
    let v = match i % 20 {
        0..=9 => json!({"id": id, "root_cause": if i.is_multiple_of(2) {"CrashLoopBackOff"} else {"OOMKilled"},
            "confidence": 0.95, "services": [svc], "symptoms": ["pod_crash_loop"],
            "context": {"pod_name": format!("{svc}-7d9f8-x{i}"), "namespace": "production"}, "detected_at": now}),
        10..=12 => json!({"id": id, "root_cause": "high_cpu", "confidence": 0.9, "services": [svc],
            "context": {"deployment": svc, "namespace": "production", "new_replicas": 5, "old_replicas": 3},
            "detected_at": now}),
        13..=14 => json!({"id": id, "root_cause": "replication_lag", "confidence": 0.97, "services": [svc],
            "context": {}, "detected_at": now}),
        15..=17 => json!({"id": id, "root_cause": "CrashLoopBackOff", "confidence": 0.5, "services": [svc],
            "context": {"pod_name": format!("{svc}-7d9f8-x{i}"), "namespace": "production"}, "detected_at": now}),
        _ => json!({"id": id, "root_cause": "cosmic_rays", "confidence": 0.8, "services": [svc],
            "symptoms": ["latency_high"], "context": {}, "detected_at": now}),
    };
    v.to_string()
}

/// Create this run's topics (deleted again by [`delete_topics`] at the end).
async fn create_topics(env: &Env, topics: &[(&str, i32)]) -> Res<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create()?;
    env.topics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(topics.iter().map(|(name, _)| name.to_string()));
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&new, &opts).await? {
        r.map_err(|(topic, code)| format!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Delete the topics this run created, so a shared broker does not collect them.
async fn delete_topics(env: &Env) {
    let topics = std::mem::take(&mut *env.topics.lock().unwrap_or_else(|e| e.into_inner()));
    if topics.is_empty() {
        return;
    }
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create();
    let Ok(admin) = admin else { return };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = admin.delete_topics(&names, &opts).await {
        eprintln!("[bench] could not delete the bench topics: {e}");
    }
}

/// A plain producer for the load (librdkafka defaults; `linger.ms` as given).
fn load_producer(brokers: &str, linger_ms: &str) -> Res<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .create()?)
}

/// Produce `n` incidents and wait for every acknowledgement.
async fn produce_backlog(brokers: &str, topic: &str, run: &str, n: usize) -> Res<()> {
    let producer = load_producer(brokers, "5")?;
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        let payload = incident_json(run, i);
        let key = format!("{run}-{i}");
        pending.push(enqueue(&producer, topic, Some(key.as_bytes()), Some(payload.as_bytes())).await);
        if pending.len() >= 5_000 {
            while let Some(r) = pending.next().await {
                delivered(r)?;
                if pending.len() < 1_000 {
                    break;
                }
            }
        }
    }
    while let Some(r) = pending.next().await {
        delivered(r)?;
    }
    Ok(())
}

/// Hand one record to librdkafka (waiting while its local queue is full, like
/// `FutureProducer::send` with `Timeout::Never`) and return its acknowledgement.
async fn enqueue(producer: &FutureProducer, topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>) -> DeliveryFuture {
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send_result(record) {
            Ok(f) => return f,
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn delivered(
    r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Res<()> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err("delivery canceled".into()),
    }
}

/// Wait until `count()` reaches `n`: the messages counted after the first one was seen, and
/// the time they took (the group join before the first message is not throughput).
async fn rate_until(n: u64, timeout: Duration, count: impl Fn() -> u64) -> Res<Run> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let c = count();
        let now = Instant::now();
        if c > 0 && first.is_none() {
            first = Some((now, c));
        }
        if c >= n {
            let (t0, c0) = first.unwrap_or((now, c));
            return Ok(Run {
                count: c - c0,
                elapsed: now.duration_since(t0),
            });
        }
        if now > deadline {
            return Err(format!("only {c} of {n} messages within {} s", timeout.as_secs()).into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `INFO commandstats` as calls per command.
async fn commandstats(con: &mut redis::aio::MultiplexedConnection) -> Res<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await?;
    let mut m = BTreeMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let calls = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        m.insert(name.to_string(), calls);
    }
    Ok(m)
}

fn engine(store: Arc<dyn Store>, worker: &str) -> Res<Arc<Engine>> {
    let catalogue = Catalogue::from_yaml(RUNBOOKS_YAML, "config/runbooks.yaml").map_err(|e| e.to_string())?;
    Ok(Arc::new(Engine::new(
        Arc::new(catalogue),
        store,
        Arc::new(SimulatedExecutor::new()),
        Arc::new(SystemClock),
        Settings {
            worker: worker.into(),
            // Worker-wide shadow mode: guardrails reserve as live, the executor is never called.
            dry_run: true,
            ..Settings::default()
        },
        Metrics::new(),
        EventIds::Random,
    )))
}

/// The worker's defaults (`kafka.*` config defaults) with this run's topics and group.
fn worker_settings(env: &Env, name: &str) -> KafkaSettings {
    let mut s = KafkaSettings {
        brokers: env.brokers.clone(),
        group_id: format!("{}-{name}-group", env.run),
        incidents_topic: format!("{}-{name}-incidents", env.run),
        outcomes_topic: format!("{}-{name}-outcomes", env.run),
        dlq_topic: format!("{}-{name}-dlq", env.run),
        ..KafkaSettings::default()
    };
    if let Some(m) = env.opts.max_in_flight {
        s.max_in_flight = m;
    }
    s.properties.extend(env.opts.properties.clone());
    s
}

/// Messages counted between the first and the last one of a run (the group join before the
/// first message is not throughput).
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    count: u64,
    elapsed: Duration,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.count += other.count;
        self.elapsed += other.elapsed;
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one pass of the worker over the backlog did.
#[derive(Default)]
struct WorkerRound {
    run: Run,
    decisions: BTreeMap<String, u64>,
    blocks: BTreeMap<String, u64>,
    /// `INFO commandstats` deltas: every command (scripts' included), script calls.
    commands: u64,
    round_trips: u64,
    rss_kib: u64,
    rss_before_kib: u64,
    /// `remediator_decision_duration_seconds`: time inside `Engine::handle`, summed.
    handle_seconds: f64,
    handled: u64,
}

/// The worker (fresh group, fresh key prefix) over the whole backlog of `s.incidents_topic`.
async fn worker_round(env: &Env, s: &KafkaSettings, round: usize, n: usize) -> Res<WorkerRound> {
    let mut s = s.clone();
    s.group_id = format!("{}-{round}", s.group_id);
    let prefix = format!("{}-tput-{round}", env.run);
    let store = RedisStore::connect(&env.redis_url, &prefix, REDIS_TIMEOUT).await?;
    let engine = engine(Arc::new(store), "bench-worker")?;
    let metrics = engine.metrics().clone();
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let before = commandstats(&mut con).await?;
    let rss_before_kib = vm_rss_kib();
    let (trigger, shutdown) = shutdown::channel();
    let worker = {
        let engine = engine.clone();
        tokio::spawn(async move { kafka::run(&s, engine, Arc::new(Health::new()), shutdown).await })
    };
    let published = metrics.outcomes_published.clone();
    let run = rate_until(n as u64, Duration::from_secs(600), || published.get()).await?;
    let after = commandstats(&mut con).await?;
    let rss_kib = vm_rss_kib();
    trigger.fire();
    let _ = worker.await;
    let handle = metrics.decision_seconds.with_label_values(&[] as &[&str]);
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let r = WorkerRound {
        run,
        decisions: Decision::ALL
            .iter()
            .map(|d| d.as_str())
            .map(|d| (d.to_string(), metrics.incidents.with_label_values(&[d]).get()))
            .filter(|(_, v)| *v > 0)
            .collect(),
        blocks: Guardrail::ALL
            .iter()
            .map(|g| g.as_str())
            .map(|g| (g.to_string(), metrics.guardrail_blocks.with_label_values(&[g]).get()))
            .filter(|(_, v)| *v > 0)
            .collect(),
        commands: after.keys().filter(|k| *k != "info").map(|k| delta(k)).sum(),
        // Commands a script runs are counted too, so client round trips are the script calls
        // (the store sends nothing else per decision).
        round_trips: ["evalsha", "eval", "script|load"].iter().map(|k| delta(k)).sum(),
        rss_kib,
        rss_before_kib,
        handle_seconds: handle.get_sample_sum(),
        handled: handle.get_sample_count(),
    };
    cleanup(&mut con, &format!("{{{prefix}}}:")).await;
    Ok(r)
}

fn join_counts(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

async fn pipeline(
    env: &Env,
    sizes: Sizes,
    rss_start: u64,
    t: &mut Table,
    j: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    // Two rounds over a backlog of half the messages, worker and pass-through alternating, so
    // drifting background load hits both alike.
    const ROUNDS: usize = 2;
    let n = sizes.pipeline / ROUNDS;
    let s = worker_settings(env, "tput");
    let relay_serial = format!("{}-relay-serial", env.run);
    let relay_pipelined = format!("{}-relay-pipelined", env.run);
    create_topics(
        env,
        &[
            (&s.incidents_topic, env.partitions()),
            (&s.outcomes_topic, 1),
            (&s.dlq_topic, 1),
            (&relay_serial, 1),
            (&relay_pipelined, 1),
        ],
    )
    .await?;
    produce_backlog(&env.brokers, &s.incidents_topic, &env.run, n).await?;

    let mut w = WorkerRound::default();
    let mut serial = Run::default();
    for round in 0..ROUNDS {
        let r = worker_round(env, &s, round, n).await?;
        w.run.add(r.run);
        for (k, v) in r.decisions {
            *w.decisions.entry(k).or_default() += v;
        }
        for (k, v) in r.blocks {
            *w.blocks.entry(k).or_default() += v;
        }
        w.commands += r.commands;
        w.round_trips += r.round_trips;
        w.handle_seconds += r.handle_seconds;
        w.handled += r.handled;
        // Round 0 only: later rounds run after the pass-throughs, whose memory the allocator
        // may keep.
        if round == 0 {
            w.rss_kib = r.rss_kib;
            w.rss_before_kib = r.rss_before_kib;
        }
        serial.add(passthrough(&s, &format!("{relay_serial}-{round}"), &relay_serial, n, false).await?);
    }
    let pipelined = passthrough(&s, "pipelined", &relay_pipelined, n, true).await?;
    let (worker_rate, serial_rate, pipelined_rate) = (w.run.rate(), serial.rate(), pipelined.rate());
    let ratio = worker_rate / serial_rate;

    t.row(
        "Pipeline (Kafka in -> decision with Redis -> outcome out, dry run)",
        "",
        "",
    );
    t.row(
        "incidents/s through the worker",
        format!("{worker_rate:.0}"),
        format!(
            "{ROUNDS} x {n} messages, {} partitions, max_in_flight {}, {:.1} s",
            env.partitions(),
            s.max_in_flight,
            w.run.elapsed.as_secs_f64()
        ),
    );
    t.row(
        "pass-through msgs/s (one at a time per partition)",
        format!("{serial_rate:.0}"),
        "a partition's next copy after this one's ack",
    );
    t.row(
        "pass-through msgs/s (pipelined, same in-flight bound)",
        format!("{pipelined_rate:.0}"),
        format!("1 x {n}; acks awaited in order, up to max_in_flight outstanding"),
    );
    t.row("pipeline_vs_kafka_passthrough", format!("{ratio:.2}"), "target >= 0.5");
    t.row(
        "pipeline_vs_kafka_pipelined",
        format!("{:.2}", worker_rate / pipelined_rate),
        "target >= 0.6: the worker's publishing discipline, plus deciding",
    );
    let handle_us = w.handle_seconds * 1e6 / w.handled.max(1) as f64;
    t.row(
        "time in Engine::handle per incident (inside the worker)",
        format!("{handle_us:.0} us"),
        format!(
            "of {:.0} us per incident overall; a pass-through message costs {:.0} us",
            1e6 / worker_rate,
            1e6 / serial_rate
        ),
    );
    t.row("decision mix", "", join_counts(&w.decisions));
    t.row("blocked by", "", join_counts(&w.blocks));
    let decided: u64 = w.decisions.values().sum();
    let per = |x: u64| x as f64 / decided.max(1) as f64;
    t.row(
        "Redis round trips per decision",
        format!("{:.2}", per(w.round_trips)),
        "EVALSHA calls (INFO commandstats delta / decisions)",
    );
    t.row(
        "Redis commands per decision (incl. inside scripts)",
        format!("{:.1}", per(w.commands)),
        "every command Redis ran (INFO commandstats delta / decisions)",
    );
    t.row(
        "worker RSS (process VmRSS)",
        format!("{:.1} MiB", w.rss_kib as f64 / 1024.0),
        format!(
            "after the first round (its backlog prefetched by librdkafka); {:.1} MiB before it, {:.1} MiB at start",
            w.rss_before_kib as f64 / 1024.0,
            rss_start as f64 / 1024.0
        ),
    );
    j.insert("pipeline_vs_kafka_passthrough".into(), json!(round(ratio, 3)));
    j.insert("pipeline_incidents_per_s".into(), json!(worker_rate.round()));
    j.insert("passthrough_per_s".into(), json!(serial_rate.round()));
    j.insert("passthrough_pipelined_per_s".into(), json!(pipelined_rate.round()));
    j.insert(
        "pipeline_vs_kafka_pipelined".into(),
        json!(round(worker_rate / pipelined_rate, 3)),
    );
    j.insert("pipeline_messages".into(), json!(n * ROUNDS));
    j.insert("pipeline_handle_us".into(), json!(round(handle_us, 1)));
    j.insert("pipeline_decisions".into(), json!(w.decisions));
    j.insert(
        "redis_round_trips_per_decision".into(),
        json!(round(per(w.round_trips), 2)),
    );
    j.insert("redis_commands_per_decision".into(), json!(round(per(w.commands), 2)));
    j.insert("worker_rss_mib".into(), json!(round(w.rss_kib as f64 / 1024.0, 1)));
    j.insert(
        "worker_rss_delta_mib".into(),
        json!(round(w.rss_kib.saturating_sub(w.rss_before_kib) as f64 / 1024.0, 1)),
    );
    Ok(())
}

/// A consumed message on its way to its partition's relay task.
struct Relay {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    _permit: OwnedSemaphorePermit,
}

/// Re-publish every message of `s.incidents_topic` to `out`, with the worker's client settings
/// and its at-least-once discipline (offset stored only after the copy is acknowledged, in
/// order, at most `max_in_flight` messages pulled and unfinished). `pipelined = false` waits for
/// each acknowledgement before the partition's next message, as the worker does; `true` keeps
/// up to the in-flight bound outstanding. Returns messages/s.
async fn passthrough(s: &KafkaSettings, group: &str, out: &str, n: usize, pipelined: bool) -> Res<Run> {
    let mut settings = s.clone();
    settings.group_id = format!("{}-{group}", s.group_id);
    let consumer: Arc<StreamConsumer> = Arc::new(kafka::consumer_config(&settings).create()?);
    let producer: FutureProducer = kafka::producer_config(&settings).create()?;
    consumer.subscribe(&[settings.incidents_topic.as_str()])?;
    let acked = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    let dispatcher = {
        let (consumer, producer, acked, out) = (consumer.clone(), producer.clone(), acked.clone(), out.to_string());
        let topic = settings.incidents_topic.clone();
        tokio::spawn(async move {
            let mut lanes: HashMap<i32, mpsc::UnboundedSender<Relay>> = HashMap::new();
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let m = match consumer.recv().await {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                let r = Relay {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    _permit: permit,
                };
                let lane = lanes.entry(r.partition).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let ctx = (
                        consumer.clone(),
                        producer.clone(),
                        acked.clone(),
                        out.clone(),
                        topic.clone(),
                    );
                    tokio::spawn(relay_lane(ctx, rx, pipelined));
                    tx
                });
                let _ = lane.send(r);
            }
        })
    };
    let counter = acked.clone();
    let result = rate_until(n as u64, Duration::from_secs(600), || counter.load(Ordering::Relaxed)).await;
    dispatcher.abort();
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    result
}

type LaneCtx = (Arc<StreamConsumer>, FutureProducer, Arc<AtomicU64>, String, String);

async fn relay_lane(ctx: LaneCtx, mut rx: mpsc::UnboundedReceiver<Relay>, pipelined: bool) {
    let (consumer, producer, acked, out, topic) = ctx;
    let done = |r: &Relay| {
        let _ = consumer.store_offset(&topic, r.partition, r.offset + 1);
        acked.fetch_add(1, Ordering::Relaxed);
    };
    if !pipelined {
        while let Some(r) = rx.recv().await {
            let ack = enqueue(&producer, &out, r.key.as_deref(), r.payload.as_deref()).await;
            if delivered(ack.await).is_ok() {
                done(&r);
            }
        }
        return;
    }
    let mut queue = VecDeque::new();
    loop {
        while let Ok(r) = rx.try_recv() {
            let f = enqueue(&producer, &out, r.key.as_deref(), r.payload.as_deref()).await;
            queue.push_back((r, f));
        }
        if let Some((r, f)) = queue.pop_front() {
            if delivered(f.await).is_ok() {
                done(&r);
            }
            continue;
        }
        match rx.recv().await {
            Some(r) => {
                let f = enqueue(&producer, &out, r.key.as_deref(), r.payload.as_deref()).await;
                queue.push_back((r, f));
            }
            None => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Engine alone: where a message's time goes when Kafka is taken away.
// ---------------------------------------------------------------------------------------------

/// Microseconds per incident of `Engine::handle`, one at a time (as one partition's task runs),
/// over the pipeline's incident mix.
async fn handle_serially(engine: &Engine, run: &str, n: usize) -> f64 {
    let payloads: Vec<String> = (0..n).map(|i| incident_json(run, i)).collect();
    let started = Instant::now();
    for (i, p) in payloads.iter().enumerate() {
        let source = Source {
            topic: "incidents".into(),
            partition: 0,
            offset: i as i64,
        };
        let attempt = uuid::Uuid::new_v4().to_string();
        let _ = black_box(engine.handle(p.as_bytes(), Some(&source), &attempt).await);
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

async fn engine_alone(env: &Env, n: usize, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let prefix = format!("{}-eng", env.run);
    let redis: Arc<dyn Store> = Arc::new(RedisStore::connect(&env.redis_url, &prefix, REDIS_TIMEOUT).await?);
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    let with_redis = engine(redis, "bench-worker")?;
    let with_memory = engine(memory, "bench-worker")?;
    handle_serially(&with_redis, &format!("{}-eng-warm", env.run), 200).await;
    handle_serially(&with_memory, &format!("{}-mem-warm", env.run), 200).await;
    let us_redis = handle_serially(&with_redis, &format!("{}-eng", env.run), n).await;
    let us_memory = handle_serially(&with_memory, &format!("{}-mem", env.run), n).await;
    t.row(
        "Engine alone (Engine::handle, one incident at a time, no Kafka)",
        "",
        "",
    );
    t.row(
        "with the Redis store",
        format!("{us_redis:.0} us"),
        format!("{n} incidents of the pipeline mix"),
    );
    t.row(
        "with the in-memory store",
        format!("{us_memory:.0} us"),
        "CPU of parse, match, decide, outcome JSON",
    );
    j.insert("engine_us_redis".into(), json!(round(us_redis, 1)));
    j.insert("engine_us_memory".into(), json!(round(us_memory, 1)));
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    cleanup(&mut con, &format!("{{{prefix}}}:")).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Replay vs the course module's reference engine (benches/reference_engine.py).
// ---------------------------------------------------------------------------------------------

/// The catalogue both engines load: the module's own runbooks (its action strings are what the
/// reference engine formats).
const SEED_RUNBOOKS_YAML: &str = include_str!("../tests/data/seed-runbooks.yaml");
const REFERENCE_ENGINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference_engine.py");

/// Incident `i` of the replay mix, in the module's format (`service`, `context`), which both
/// engines read: half crash loops and OOM kills, a sixth scale-ups, a tenth HIGH-risk rollbacks,
/// the rest below the runbook's confidence or with no runbook; 50 services.
fn reference_incident(i: usize) -> String {
    let id = format!("r-{i}");
    let svc = format!("svc-{:02}", i % 50);
    let v = match i % 20 {
        0..=9 => json!({"id": id, "root_cause": if i.is_multiple_of(2) {"CrashLoopBackOff"} else {"OOMKilled"},
            "confidence": 0.95, "service": svc,
            "context": {"pod_name": format!("{svc}-7d9f8-x{i}"), "namespace": "production"}}),
        10..=12 => json!({"id": id, "root_cause": "high_cpu", "confidence": 0.9, "service": svc,
            "context": {"deployment": svc, "namespace": "production", "new_replicas": 5, "old_replicas": 3}}),
        13..=14 => json!({"id": id, "root_cause": "error_rate_spike_after_deploy", "confidence": 0.95,
            "service": svc, "context": {"deployment": svc, "namespace": "production"}}),
        15..=17 => json!({"id": id, "root_cause": "CrashLoopBackOff", "confidence": 0.5, "service": svc,
            "context": {"pod_name": format!("{svc}-x{i}"), "namespace": "production"}}),
        _ => json!({"id": id, "root_cause": "cosmic_rays", "confidence": 0.8, "service": svc, "context": {}}),
    };
    v.to_string()
}

/// One `remediator replay` of `incidents` (what the command does: load the catalogue, decide
/// every line in order, write each outcome as a JSON line), into a sink. Seconds.
async fn time_replay(incidents: &std::path::Path) -> Res<f64> {
    let started = Instant::now();
    let catalogue = Catalogue::from_yaml(SEED_RUNBOOKS_YAML, "seed-runbooks.yaml")?;
    let input = std::fs::File::open(incidents)?;
    let out = std::io::BufWriter::new(std::io::sink());
    remediator::replay::replay(catalogue, input, chrono::Utc::now(), out).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// One run of the reference engine over the same file, output discarded. Seconds (the
/// interpreter's start is included; it is a few tens of milliseconds of the whole).
fn time_reference(runbooks: &std::path::Path, incidents: &std::path::Path) -> Res<f64> {
    let started = Instant::now();
    let status = std::process::Command::new("python3")
        .arg(REFERENCE_ENGINE)
        .arg(runbooks)
        .arg(incidents)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("{REFERENCE_ENGINE} failed: {status}").into());
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Replay's stages timed one after another on one thread over the same file, µs per incident:
/// parsing the lines, deciding them (replay's own engine, in input order) and writing each
/// outcome as a JSON line.
struct Stages {
    parse_us: f64,
    decide_us: f64,
    write_us: f64,
}

async fn replay_stages(incidents: &std::path::Path) -> Res<Stages> {
    let text = std::fs::read(incidents)?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let n = lines.len().max(1) as f64;
    let started = Instant::now();
    let parsed: Vec<_> = lines.iter().map(|l| incident::parse(l)).collect();
    let parse_us = started.elapsed().as_secs_f64() * 1e6 / n;

    let catalogue = Catalogue::from_yaml(SEED_RUNBOOKS_YAML, "seed-runbooks.yaml")?;
    let engine = remediator::replay::engine(catalogue, chrono::Utc::now());
    let attempts: Vec<String> = (0..lines.len()).map(|i| format!("replay-{i}")).collect();
    let mut decided = Vec::with_capacity(lines.len());
    let started = Instant::now();
    for (p, attempt) in parsed.into_iter().zip(&attempts) {
        decided.push(engine.handle_parsed(p, None, attempt).await?);
    }
    let decide_us = started.elapsed().as_secs_f64() * 1e6 / n;

    let mut out = std::io::BufWriter::new(std::io::sink());
    let started = Instant::now();
    // As replay's writer does: each event as the engine serialised it.
    for (_, json) in decided.iter().flat_map(remediator::engine::Handled::events) {
        out.write_all(json.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let write_us = started.elapsed().as_secs_f64() * 1e6 / n;
    Ok(Stages {
        parse_us,
        decide_us,
        write_us,
    })
}

async fn replay_vs_reference(n: usize, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    const ROUNDS: usize = 3;
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        eprintln!("[bench] replay: skipped (python3 with PyYAML not found; the reference engine needs both)");
        t.row("replay vs reference engine", "skipped", "python3 with PyYAML not found");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (runbooks, incidents) = (dir.path().join("runbooks.yaml"), dir.path().join("incidents.jsonl"));
    std::fs::write(&runbooks, SEED_RUNBOOKS_YAML)?;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&incidents)?);
        for i in 0..n {
            writeln!(f, "{}", reference_incident(i))?;
        }
        f.flush()?;
    }
    // Alternating rounds, so a change of load during the run hits both alike; medians.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(time_replay(&incidents).await?);
        theirs.push(time_reference(&runbooks, &incidents)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    let stages = replay_stages(&incidents).await?;
    let (rate, reference_rate) = (n as f64 / ours, n as f64 / theirs);
    let ratio = rate / reference_rate;
    t.row(
        "Replay vs the course module's reference engine (same file, same run)",
        "",
        "",
    );
    t.row(
        "remediator replay",
        format!("{rate:.0}/s"),
        format!("{n} incidents, median of {ROUNDS} alternating rounds; outcome JSON written"),
    );
    t.row(
        "reference engine (Python)",
        format!("{reference_rate:.0}/s"),
        "benches/reference_engine.py: SimpleRemediationEngine, results as JSON lines",
    );
    t.row("replay_vs_reference_engine", format!("{ratio:.2}"), "target >= 5");
    // What bounds the ratio: replay's three stages run on their own threads, so it goes no
    // faster than its slowest stage, nor than the machine's cores running all three.
    let reference_us = 1e6 / reference_rate;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let sum = stages.parse_us + stages.decide_us + stages.write_us;
    let bound_us = stages
        .decide_us
        .max(stages.parse_us)
        .max(stages.write_us)
        .max(sum / cores);
    t.row(
        "replay stages, one at a time (us per incident)",
        format!(
            "{:.2} / {:.2} / {:.2}",
            stages.parse_us, stages.decide_us, stages.write_us
        ),
        "parse / decide (Engine::handle_parsed) / write the outcome line",
    );
    t.row(
        "ratio these stages allow",
        format!("{:.2}", reference_us / bound_us),
        format!(
            "reference engine {reference_us:.2} us per incident; replay takes about max(slowest stage, sum / {cores} cores), one pass each"
        ),
    );
    j.insert("replay_parse_us".into(), json!(round(stages.parse_us, 2)));
    j.insert("replay_decide_us".into(), json!(round(stages.decide_us, 2)));
    j.insert("replay_write_us".into(), json!(round(stages.write_us, 2)));
    j.insert("replay_per_s".into(), json!(round(rate, 0)));
    j.insert("reference_engine_per_s".into(), json!(round(reference_rate, 0)));
    j.insert("replay_vs_reference_engine".into(), json!(round(ratio, 2)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Latency at a fixed moderate rate: produce -> outcome received.
// ---------------------------------------------------------------------------------------------

async fn latency(env: &Env, sizes: Sizes, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let s = worker_settings(env, "lat");
    create_topics(
        env,
        &[
            (&s.incidents_topic, env.partitions()),
            (&s.outcomes_topic, 1),
            (&s.dlq_topic, 1),
        ],
    )
    .await?;
    let prefix = format!("{}-lat", env.run);
    let store = RedisStore::connect(&env.redis_url, &prefix, REDIS_TIMEOUT).await?;
    let engine = engine(Arc::new(store), "bench-worker")?;
    let (trigger, shutdown) = shutdown::channel();
    let worker = {
        let (s, engine) = (s.clone(), engine.clone());
        tokio::spawn(async move { kafka::run(&s, engine, Arc::new(Health::new()), shutdown).await })
    };

    // The reader: outcome key (incident id) -> received.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("{}-lat-reader", env.run))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&s.outcomes_topic, 0, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let reading = {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Ok(m) = reader.recv().await {
                let now = Instant::now();
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                let t0 = sent.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
                if let Some(t0) = t0 {
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(now.duration_since(t0).as_secs_f64() * 1e3);
                }
            }
        })
    };
    // The load: an AIOps producer sending each incident at once (linger.ms=0).
    let producer = load_producer(&env.brokers, "0")?;
    let send = |i: usize, sent: &Mutex<HashMap<String, Instant>>| {
        let id = format!("{}-lat-{i}", env.run);
        let payload = incident_json(&format!("{}-lat", env.run), i);
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Instant::now());
        let _ = producer.send_result(FutureRecord::to(&s.incidents_topic).key(&id).payload(&payload));
    };
    // Warm-up: the group join, connections and the script load are not the steady state.
    let warmup = 50;
    for i in 0..warmup {
        send(i, &sent);
    }
    let wait_for = |k: usize| {
        let l = latencies.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while l.lock().unwrap_or_else(|e| e.into_inner()).len() < k && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(warmup).await;
    latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let total = (sizes.latency_rate * sizes.latency_secs) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / sizes.latency_rate as f64));
    let started = Instant::now();
    for i in warmup..warmup + total {
        tick.tick().await;
        send(i, &sent);
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    wait_for(total).await;
    trigger.fire();
    let _ = worker.await;
    reading.abort();
    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p99, max) = (pct(0.50), pct(0.99), l.last().copied().unwrap_or(f64::NAN));
    t.row("Latency (produce -> outcome received)", "", "");
    t.row(
        "offered rate",
        format!("{offered:.0}/s"),
        format!(
            "{} incidents over {} s, {} received",
            total,
            sizes.latency_secs,
            l.len()
        ),
    );
    t.row("p50", format!("{p50:.1} ms"), "");
    t.row("p99", format!("{p99:.1} ms"), format!("max {max:.1} ms"));
    j.insert("latency_rate_per_s".into(), json!(sizes.latency_rate));
    j.insert("latency_p50_ms".into(), json!(round(p50, 2)));
    j.insert("latency_p99_ms".into(), json!(round(p99, 2)));
    j.insert("latency_max_ms".into(), json!(round(max, 2)));
    j.insert("latency_samples".into(), json!(l.len()));
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    cleanup(&mut con, &format!("{{{prefix}}}:")).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Matching: 10 vs 10,000 runbooks.
// ---------------------------------------------------------------------------------------------

/// `n` runbooks, each with two triggers and two symptoms of the same shape whatever `n` is.
fn catalogue_yaml(n: usize) -> String {
    let mut y = String::from("runbooks:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  rb-{i:05}:\n    risk: LOW\n    triggers: [CrashLoop-{i:05}, OOMKilled-{i:05}]\n    \
             symptoms: [pod_crash_loop_{i:05}, health_check_failure_{i:05}]\n    min_confidence: 0.8\n    \
             action: kubectl delete pod {{pod_name}} -n {{namespace}}\n"
        ));
    }
    y
}

/// Incidents for a catalogue of `n` runbooks: half match by root cause (mixed case, as RCA
/// pipelines send it), half by their second symptom after an unknown root cause and symptom.
fn match_incidents(n: usize, count: usize) -> Res<Vec<Incident>> {
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|k| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % n as u64) as usize;
            let v = if k % 2 == 0 {
                json!({"id": format!("m-{k}"), "root_cause": format!("CrashLoop-{i:05}"), "confidence": 0.9,
                    "service": "api"})
            } else {
                json!({"id": format!("m-{k}"), "root_cause": format!("Unknown-{i:05}"), "confidence": 0.9,
                    "service": "api", "symptoms": [format!("latency_high_{i:05}"), format!("Health_Check_Failure_{i:05}")]})
            };
            incident::parse(v.to_string().as_bytes()).map_err(|(r, _)| r.to_string().into())
        })
        .collect()
}

/// Nanoseconds per `match_incident`, best of `passes`.
fn time_matches(cat: &Catalogue, incidents: &[Incident], total: usize, passes: usize) -> Res<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let started = Instant::now();
        let mut hits = 0usize;
        let mut done = 0usize;
        while done < total {
            for inc in incidents {
                hits += usize::from(black_box(cat.match_incident(black_box(inc))).is_some());
            }
            done += incidents.len();
        }
        if hits != done {
            return Err(format!("only {hits} of {done} incidents matched").into());
        }
        best = best.min(started.elapsed().as_nanos() as f64 / done as f64);
    }
    Ok(best)
}

fn matching(sizes: Sizes, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let load = |n: usize| -> Res<(Catalogue, Duration)> {
        let started = Instant::now();
        let c = Catalogue::from_yaml(&catalogue_yaml(n), "generated").map_err(|e| e.to_string())?;
        Ok((c, started.elapsed()))
    };
    let (small, _) = load(10)?;
    let (large, load_large) = load(10_000)?;
    // Same number of distinct incidents for both, so only the catalogue differs.
    let inc_small = match_incidents(10, 4096)?;
    let inc_large = match_incidents(10_000, 4096)?;
    // Alternate to spread background noise over both.
    let (mut ns_small, mut ns_large) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        ns_small = ns_small.min(time_matches(&small, &inc_small, sizes.matches / 3, 1)?);
        ns_large = ns_large.min(time_matches(&large, &inc_large, sizes.matches / 3, 1)?);
    }
    let ratio = ns_large / ns_small;
    // Context: the large catalogue with the small one's incidents (10 hot runbooks), which
    // separates the index's algorithmic cost from cache misses over a spread-out working set.
    let ns_hot = time_matches(&large, &inc_small, sizes.matches / 3, 1)?;
    t.row("Runbook matching (Catalogue::match_incident)", "", "");
    t.row(
        "10 runbooks",
        format!("{ns_small:.0} ns"),
        "per incident, half root cause, half symptom",
    );
    t.row(
        "10,000 runbooks",
        format!("{ns_large:.0} ns"),
        format!("catalogue loads in {:.2} s", load_large.as_secs_f64()),
    );
    t.row("match_cost_10k_vs_10_runbooks", format!("{ratio:.2}"), "target <= 1.3");
    t.row(
        "10,000 runbooks, incidents for 10 of them",
        format!("{ns_hot:.0} ns"),
        "context: same index, cache-resident working set",
    );
    j.insert("match_cost_10k_vs_10_runbooks".into(), json!(round(ratio, 3)));
    j.insert("match_ns_10".into(), json!(round(ns_small, 1)));
    j.insert("match_ns_10k".into(), json!(round(ns_large, 1)));
    j.insert("match_ns_10k_hot10".into(), json!(round(ns_hot, 1)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scaling: 1, 2 and 4 `remediator run` processes over 4 and 12 partitions.
// ---------------------------------------------------------------------------------------------

/// Worker processes and incidents-topic partitions of the scaling figure.
const SCALING_PROCESSES: [usize; 3] = [1, 2, 4];
const SCALING_PARTITIONS: [i32; 2] = [4, 12];

/// One `remediator run` process of the scaling section; killed (by its pid) when dropped.
struct WorkerProc {
    child: std::process::Child,
    port: u16,
}

impl WorkerProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `remediator run` (the release build cargo made next to this bench) configured only by
/// `REMEDIATOR_*` variables, as a container would be: worker-wide dry run, the shipped
/// catalogue, production guardrail and Kafka defaults (plus this run's --max-in-flight and
/// --kafka-property), JSON logs at `info` appended to `log`.
fn spawn_worker(env: &Env, vars: &[(&str, String)], name: &str, log: &std::path::Path) -> Res<WorkerProc> {
    let port = free_port()?;
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_remediator"));
    cmd.arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("REMEDIATOR_WORKER_ID", name)
        .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    if let Some(m) = env.opts.max_in_flight {
        cmd.env("REMEDIATOR_KAFKA_MAX_IN_FLIGHT", m.to_string());
    }
    if !env.opts.properties.is_empty() {
        let props: Vec<String> = env.opts.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cmd.env("REMEDIATOR_KAFKA_PROPERTIES", props.join(","));
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", env!("CARGO_BIN_EXE_remediator")))?;
    Ok(WorkerProc { child, port })
}

async fn http_get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

/// Wait until every process answers `/readyz` with 200 (Kafka, Redis and the executor reachable).
async fn wait_ready(client: &reqwest::Client, procs: &mut [WorkerProc]) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in procs.iter_mut() {
        loop {
            if let Some(status) = p.child.try_wait()? {
                return Err(format!("worker on port {} exited: {status} (log: see the workers' log)", p.port).into());
            }
            if matches!(http_get(client, &p.url("/readyz")).await, Some((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("worker on port {} not ready within 60 s", p.port).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Wait until `group` is `Stable` with `members` members, so the backlog is shared from the
/// first message (the broker runs with `group.initial.rebalance.delay.ms=0`).
async fn wait_group_stable(brokers: &str, group: &str, members: usize) -> Res<()> {
    let (brokers, group) = (brokers.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || -> Res<()> {
        let c: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        let start = Instant::now();
        let mut last = String::from("no answer");
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(list) = c.fetch_group_list(Some(&group), Duration::from_secs(5)) {
                if let Some(g) = list.groups().first() {
                    last = format!("{} with {} members", g.state(), g.members().len());
                    if g.state() == "Stable" && g.members().len() == members {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("group {group} not stable with {members} members within 60 s (last: {last})").into())
    })
    .await?
}

/// The value of an unlabelled sample, or the sum of a labelled family's samples, in an exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn proc_cpu_seconds(pid: u32, tick: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) end with ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / tick)
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 on Linux in practice).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`; idle and iowait are not busy).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The process listening on TCP `port` (the broker), found through its socket's inode.
fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Redis' own CPU seconds (`INFO cpu`: main process, user + system).
async fn redis_cpu_seconds(con: &mut redis::aio::MultiplexedConnection) -> Res<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(con).await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}

/// Where the CPU and Redis counters stood at one moment.
struct Snapshot {
    at: Instant,
    machine: (u64, u64),
    workers: f64,
    broker: Option<f64>,
    bench: f64,
    redis_cpu: f64,
    commands: BTreeMap<String, u64>,
}

async fn snapshot(
    con: &mut redis::aio::MultiplexedConnection,
    pids: &[u32],
    broker: Option<u32>,
    tick: f64,
) -> Res<Snapshot> {
    Ok(Snapshot {
        at: Instant::now(),
        machine: machine_jiffies(),
        workers: pids.iter().filter_map(|p| proc_cpu_seconds(*p, tick)).sum(),
        broker: broker.and_then(|p| proc_cpu_seconds(p, tick)),
        bench: proc_cpu_seconds(std::process::id(), tick).unwrap_or(0.0),
        redis_cpu: redis_cpu_seconds(con).await?,
        commands: commandstats(con).await?,
    })
}

/// One configuration's figures (summed over rounds): counts, seconds and CPU seconds.
#[derive(Debug, Clone, Default)]
struct ScalePoint {
    partitions: i32,
    processes: usize,
    /// Outcomes counted in the measured window, and its length.
    count: u64,
    secs: f64,
    /// Outcomes published, per process (the last round, all of it).
    per_process: Vec<u64>,
    /// CPU seconds over the window: the whole machine (busy), the worker processes, the broker
    /// (the process listening on the bootstrap port), Redis (`INFO cpu`) and this bench.
    machine: f64,
    workers: f64,
    broker: Option<f64>,
    redis: f64,
    bench: f64,
    /// Redis commands (scripts' included) and script calls (round trips) over the window.
    commands: f64,
    round_trips: f64,
    decisions: BTreeMap<String, u64>,
}

impl ScalePoint {
    fn add(&mut self, o: &ScalePoint) {
        self.count += o.count;
        self.secs += o.secs;
        self.per_process = o.per_process.clone();
        self.machine += o.machine;
        self.workers += o.workers;
        self.broker = self.broker.zip(o.broker).map(|(a, b)| a + b);
        self.redis += o.redis;
        self.bench += o.bench;
        self.commands += o.commands;
        self.round_trips += o.round_trips;
        for (k, v) in &o.decisions {
            *self.decisions.entry(k.clone()).or_default() += v;
        }
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }

    /// CPU seconds as percent of one core over the window.
    fn pct(&self, cpu_s: f64) -> f64 {
        100.0 * cpu_s / self.secs.max(1e-9)
    }

    /// CPU microseconds per incident.
    fn per_incident_us(&self, cpu_s: f64) -> f64 {
        1e6 * cpu_s / self.count.max(1) as f64
    }

    /// CPU used by everything else on the machine (other sessions' builds and services).
    fn others(&self) -> f64 {
        (self.machine - self.workers - self.broker.unwrap_or(0.0) - self.redis - self.bench).max(0.0)
    }
}

/// A worker run's own names, unique to this bench run: its incidents, outcomes, dead-letter and
/// approvals topics, its consumer group and its Redis key prefix.
fn worker_names(env: &Env, name: &str) -> (String, String, String, String, String, String) {
    let run = &env.run;
    (
        format!("{run}-{name}-incidents"),
        format!("{run}-{name}-outcomes"),
        format!("{run}-{name}-dlq"),
        format!("{run}-{name}-approvals"),
        format!("{run}-{name}-group"),
        format!("{run}-{name}"),
    )
}

/// `processes` worker processes in one group over a `partitions`-partition topic: wait until
/// they are ready and share the partitions, then produce `n` incidents and time the outcomes
/// (first to last, from the workers' own `remediator_outcomes_published_total`).
async fn scale_point(
    env: &Env,
    (partitions, processes): (i32, usize),
    round: usize,
    n: usize,
    tick: f64,
) -> Res<ScalePoint> {
    let name = format!("scale-p{partitions}-w{processes}-r{round}");
    let (incidents, outcomes, dlq, approvals, group, prefix) = worker_names(env, &name);
    create_topics(
        env,
        &[(&incidents, partitions), (&outcomes, 1), (&dlq, 1), (&approvals, 1)],
    )
    .await?;
    let vars: Vec<(&str, String)> = vec![
        ("REMEDIATOR_KAFKA_BROKERS", env.brokers.clone()),
        ("REMEDIATOR_KAFKA_GROUP_ID", group.clone()),
        ("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", incidents.clone()),
        ("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", outcomes),
        ("REMEDIATOR_KAFKA_DLQ_TOPIC", dlq),
        ("REMEDIATOR_KAFKA_APPROVALS_TOPIC", approvals),
        ("REMEDIATOR_REDIS_URL", env.redis_url.clone()),
        ("REMEDIATOR_REDIS_KEY_PREFIX", prefix.clone()),
        ("REMEDIATOR_RUNBOOKS", "config/runbooks.yaml".into()),
        ("REMEDIATOR_DRY_RUN", "true".into()),
        ("REMEDIATOR_EXECUTOR", "simulated".into()),
        ("REMEDIATOR_LOG_FORMAT", "json".into()),
        ("REMEDIATOR_LOG_LEVEL", "info".into()),
    ];
    let log = std::path::PathBuf::from(
        std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "/tmp/remediator-bench-workers.log".into()),
    );
    let mut procs = Vec::new();
    for i in 0..processes {
        procs.push(spawn_worker(env, &vars, &format!("{name}-{i}"), &log)?);
    }
    let client = reqwest::Client::new();
    wait_ready(&client, &mut procs).await?;
    wait_group_stable(&env.brokers, &group, processes).await?;

    let redis_client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = redis_client.get_multiplexed_async_connection().await?;
    let pids: Vec<u32> = procs.iter().map(WorkerProc::pid).collect();
    let broker_port = env
        .brokers
        .split(',')
        .next()
        .and_then(|b| b.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok());
    let broker = broker_port.and_then(pid_listening_on);

    let producer = {
        let (brokers, topic, run) = (env.brokers.clone(), incidents.clone(), format!("{}-{name}", env.run));
        tokio::spawn(async move { produce_backlog(&brokers, &topic, &run, n).await })
    };
    let urls: Vec<String> = procs.iter().map(|p| p.url("/metrics")).collect();
    let published = |texts: &[String]| -> Vec<u64> {
        texts
            .iter()
            .map(|t| metric_sum(t, "remediator_outcomes_published_total") as u64)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Snapshot, u64)> = None;
    let (end, texts) = loop {
        let mut texts = Vec::with_capacity(urls.len());
        for u in &urls {
            texts.push(http_get(&client, u).await.map(|(_, t)| t).unwrap_or_default());
        }
        let count: u64 = published(&texts).iter().sum();
        if count > 0 && first.is_none() {
            first = Some((snapshot(&mut con, &pids, broker, tick).await?, count));
        }
        if count >= n as u64 {
            break (snapshot(&mut con, &pids, broker, tick).await?, texts);
        }
        if Instant::now() > deadline {
            return Err(format!("{name}: only {count} of {n} outcomes within 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    producer.await??;
    let (start, c0) = first.ok_or("no outcome seen")?;
    let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let count: u64 = published(&texts).iter().sum();
    let (busy0, total0) = start.machine;
    let (busy1, total1) = end.machine;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let delta =
        |k: &str| end.commands.get(k).copied().unwrap_or(0) as f64 - start.commands.get(k).copied().unwrap_or(0) as f64;
    let commands: f64 = end.commands.keys().filter(|k| *k != "info").map(|k| delta(k)).sum();
    let point = ScalePoint {
        partitions,
        processes,
        count: count - c0,
        secs,
        per_process: published(&texts),
        machine: secs * cores * (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
        workers: end.workers - start.workers,
        broker: end.broker.zip(start.broker).map(|(b, a)| b - a),
        redis: end.redis_cpu - start.redis_cpu,
        bench: end.bench - start.bench,
        commands,
        round_trips: ["evalsha", "eval"].iter().map(|k| delta(k)).sum::<f64>(),
        decisions: Decision::ALL
            .iter()
            .map(|d| d.as_str())
            .map(|d| {
                let label = format!("remediator_incidents_total{{decision=\"{d}\"}}");
                let v: f64 = texts.iter().map(|t| metric_sum(t, &label)).sum();
                (d.to_string(), v as u64)
            })
            .filter(|(_, v)| *v > 0)
            .collect(),
    };
    drop(procs);
    cleanup(&mut con, &format!("{{{prefix}}}:")).await;
    Ok(point)
}

async fn scaling(env: &Env, sizes: Sizes, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let tick = clock_ticks();
    let mut configs: Vec<(i32, usize)> = Vec::new();
    for partitions in SCALING_PARTITIONS {
        for processes in SCALING_PROCESSES {
            configs.push((partitions, processes));
        }
    }
    // Rounds alternate the order (forwards, backwards, ...), so load that drifts during the run
    // hits every configuration alike.
    let mut points: Vec<ScalePoint> = configs
        .iter()
        .map(|&(partitions, processes)| ScalePoint {
            partitions,
            processes,
            broker: Some(0.0),
            ..ScalePoint::default()
        })
        .collect();
    for round in 0..sizes.scaling_rounds {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (partitions, processes) = configs[i];
            eprintln!(
                "[bench] scaling round {}/{}: {processes} process(es), {partitions} partitions, {} incidents (load {:.2})",
                round + 1,
                sizes.scaling_rounds,
                sizes.scaling,
                loadavg()
            );
            let p = scale_point(env, (partitions, processes), round, sizes.scaling, tick).await?;
            points[i].add(&p);
        }
    }
    t.row(
        "Scaling (remediator run processes, one group, dry run, real Redis and Kafka)",
        "",
        "",
    );
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut rows = Vec::new();
    for p in &points {
        let base = points
            .iter()
            .find(|b| b.partitions == p.partitions && b.processes == 1)
            .map_or(p.rate(), ScalePoint::rate);
        let broker = p.broker.map_or("n/a".to_string(), |b| format!("{:.0}%", p.pct(b)));
        t.row(
            &format!("{} partitions, {} process(es): incidents/s", p.partitions, p.processes),
            format!("{:.0}", p.rate()),
            format!(
                "x{:.2}; CPU, % of one core: machine {:.0}% of {}00% = workers {:.0}% + broker {broker} + redis {:.0}% + bench {:.0}% + others {:.0}%; redis {:.0} cmd/s, {:.0} EVALSHA/s; outcomes per process {}",
                p.rate() / base,
                p.pct(p.machine),
                cores,
                p.pct(p.workers),
                p.pct(p.redis),
                p.pct(p.bench),
                p.pct(p.others()),
                p.commands / p.secs.max(1e-9),
                p.round_trips / p.secs.max(1e-9),
                p.per_process.iter().map(u64::to_string).collect::<Vec<_>>().join("/")
            ),
        );
        t.row(
            "  CPU per incident: workers / broker / redis",
            format!(
                "{:.0} / {} / {:.0} us",
                p.per_incident_us(p.workers),
                p.broker
                    .map_or("n/a".to_string(), |b| format!("{:.0}", p.per_incident_us(b))),
                p.per_incident_us(p.redis)
            ),
            format!(
                "{:.2} Redis round trips per decision",
                p.round_trips / (p.count.max(1) as f64)
            ),
        );
        rows.push(json!({
            "partitions": p.partitions,
            "processes": p.processes,
            "incidents_per_s": p.rate().round(),
            "speedup_vs_1_process": round(p.rate() / base, 2),
            "seconds": round(p.secs, 2),
            "machine_cpu_pct": round(p.pct(p.machine), 0),
            "workers_cpu_pct": round(p.pct(p.workers), 0),
            "broker_cpu_pct": p.broker.map(|b| round(p.pct(b), 0)),
            "redis_cpu_pct": round(p.pct(p.redis), 0),
            "bench_cpu_pct": round(p.pct(p.bench), 0),
            "others_cpu_pct": round(p.pct(p.others()), 0),
            "cpu_us_per_incident": {
                "workers": round(p.per_incident_us(p.workers), 0),
                "broker": p.broker.map(|b| round(p.per_incident_us(b), 0)),
                "redis": round(p.per_incident_us(p.redis), 0),
            },
            "redis_commands_per_s": (p.commands / p.secs.max(1e-9)).round(),
            "redis_round_trips_per_s": (p.round_trips / p.secs.max(1e-9)).round(),
            "redis_round_trips_per_decision": round(p.round_trips / (p.count.max(1) as f64), 2),
            "outcomes_per_process": p.per_process,
            "decisions": p.decisions,
        }));
    }
    if let Some(p) = points.first() {
        t.row(
            "decision mix (1 process, 4 partitions, all rounds)",
            "",
            join_counts(&p.decisions),
        );
    }
    j.insert("scaling_messages_per_configuration".into(), json!(sizes.scaling));
    j.insert("scaling_rounds".into(), json!(sizes.scaling_rounds));
    j.insert("scaling".into(), Value::Array(rows));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Machine.
// ---------------------------------------------------------------------------------------------

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    vec![
        (
            "nproc".into(),
            std::thread::available_parallelism().map_or(0, |n| n.get()).to_string(),
        ),
        ("cpu".into(), cpu),
        ("ram".into(), format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0)),
        ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_string()),
    ]
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------------------------
// Time to remediate: crash-looping pods on a real control plane, one `remediator run` process.
// ---------------------------------------------------------------------------------------------

/// Partitions of the incidents topic of the ttr section (the worker decides a partition's
/// messages one after another, each to the end of its post-checks), unless `--partitions`.
const TTR_PARTITIONS: i32 = 16;
/// Set to let the ttr section run against a cluster that is not on loopback (it creates a
/// namespace and deletes pods in it).
const TTR_ALLOW_REMOTE: &str = "BENCH_K8S_ALLOW_REMOTE";

/// The shipped `restart-pod` runbook (config/runbooks.yaml) with guardrails wide enough for every
/// incident of the storm to act: the per-hour limit and cooldown open, and the restart ceiling of
/// the pre-check lifted, because kwok's crash loop counts a restart every 2-7 s and a pod waiting
/// in its partition's queue would otherwise be refused as "already flapping". The checks, action
/// and post-check (replacement Ready, polled) are the shipped ones.
const TTR_RUNBOOKS_YAML: &str = r#"runbooks:
  restart-pod:
    description: Delete a crash-looping pod so its controller replaces it (bench copy, wide limits).
    owner: bench
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.8
    max_per_hour: 10000
    cooldown_minutes: 0
    pre_checks:
      - replicas_greater_than_one
      - {name: recent_restarts_less_than_three, max_restarts: 1000}
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    post_checks:
      - {name: pod_becomes_ready, timeout_seconds: 60}
    rollback: null
"#;

/// What the bench's watch saw of one pod, in wall-clock time (comparable with the outcome's
/// `decided_at` / `finished_at`, written by the worker on the same machine).
#[derive(Debug, Clone, Default)]
struct PodSeen {
    name: String,
    /// Its `app` label: the Deployment.
    app: String,
    /// First event showing the Ready condition true (and the pod not being deleted).
    ready: Option<chrono::DateTime<chrono::Utc>>,
    /// First event showing it deleted or being deleted.
    gone: Option<chrono::DateTime<chrono::Utc>>,
    /// Some container is waiting in CrashLoopBackOff.
    crashing: bool,
}

type PodTimes = Arc<Mutex<HashMap<String, PodSeen>>>;

fn pod_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_crashing(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            })
        })
}

/// Watch the namespace's pods and record, per uid, when each was first seen Ready and first seen
/// deleted: the bench's own observation times (a condition's `lastTransitionTime` has 1 s
/// resolution).
fn watch_pods(client: kube::Client, ns: &str) -> (PodTimes, tokio::task::JoinHandle<()>) {
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt;
    let times: PodTimes = Arc::default();
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, ns);
    let seen = Arc::clone(&times);
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let now = chrono::Utc::now();
            let (pod, deleted) = match event {
                Ok(Event::Apply(p) | Event::InitApply(p)) => (p, false),
                Ok(Event::Delete(p)) => (p, true),
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("[bench] ttr: pod watch: {e} (retrying)");
                    continue;
                }
            };
            let Some(uid) = pod.metadata.uid.clone() else { continue };
            let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(uid).or_insert_with(|| PodSeen {
                name: pod.metadata.name.clone().unwrap_or_default(),
                app: pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app").cloned())
                    .unwrap_or_default(),
                ..PodSeen::default()
            });
            if entry.ready.is_none() && !deleted && pod_ready(&pod) {
                entry.ready = Some(now);
            }
            if entry.gone.is_none() && (deleted || pod.metadata.deletion_timestamp.is_some()) {
                entry.gone = Some(now);
            }
            entry.crashing = !deleted && pod_crashing(&pod);
        }
    });
    (times, task)
}

/// Poll `cond` over the watched pods every 50 ms until it holds; the error says what was seen.
async fn wait_pods(
    times: &PodTimes,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&HashMap<String, PodSeen>) -> Result<(), String>,
) -> Res<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = cond(&times.lock().unwrap_or_else(|e| e.into_inner()));
        match r {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() > deadline => {
                return Err(format!("ttr: waited {timeout:?} for {what}; {seen}").into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One remediated Deployment: the bench's times and the worker's outcome, in ms from produce.
struct Remediated {
    /// produce -> outcome `decided_at` (the worker took the message up: Kafka, and the wait
    /// behind earlier incidents of the same partition).
    pickup: f64,
    /// `decided_at` -> the old pod seen deleted (admission in Redis, pre-checks, the DELETE).
    to_delete: f64,
    /// The old pod seen deleted -> its replacement seen Ready (controller, scheduler, kwok).
    control_plane: f64,
    /// produce -> the replacement seen Ready: the time to remediate.
    ttr: f64,
    /// The replacement seen Ready -> outcome `finished_at` (the post-check noticing it; not in
    /// the time to remediate).
    tail: f64,
}

async fn ttr(env: &Env, n: usize, t: &mut Table, j: &mut serde_json::Map<String, Value>) -> Res<()> {
    let skip = |t: &mut Table, j: &mut serde_json::Map<String, Value>, why: String| {
        eprintln!("[bench] ttr: skipped ({why})");
        j.insert("ttr_skipped".into(), json!(why));
        t.row("time to remediate", "skipped", why);
    };
    if std::env::var("KUBECONFIG").map_or(true, |v| v.is_empty()) {
        let why = std::env::var("BENCH_TTR_SKIP")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "no Kubernetes control plane: KUBECONFIG not set".into());
        skip(t, j, why);
        return Ok(());
    }
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("ttr: cannot load KUBECONFIG: {e}"))?;
    let host = config
        .cluster_url
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && std::env::var_os(TTR_ALLOW_REMOTE).is_none() {
        skip(
            t,
            j,
            format!("KUBECONFIG points at {host}, not a loopback test cluster (set {TTR_ALLOW_REMOTE}=1 to use it)"),
        );
        return Ok(());
    }
    let client = kube::Client::try_from(config)?;
    let ns = format!("ttr-{}", env.run);
    let result = ttr_in(env, &client, &ns, n, t, j).await;
    // Everything the section made lives in its namespace; the controller-manager finishes it.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    if let Err(e) = namespaces.delete(&ns, &kube::api::DeleteParams::background()).await {
        eprintln!("[bench] ttr: could not delete namespace {ns}: {e}");
    }
    result
}

async fn ttr_in(
    env: &Env,
    client: &kube::Client,
    ns: &str,
    n: usize,
    t: &mut Table,
    j: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Patch, PatchParams, PostParams};
    let post = PostParams::default();
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"remediator-bench": "ttr"}},
    }))?;
    kube::Api::<Namespace>::all(client.clone())
        .create(&post, &namespace)
        .await
        .map_err(|e| format!("ttr: creating namespace {ns}: {e}"))?;
    let (times, watch) = watch_pods(client.clone(), ns);
    let _stop_watch = AbortOnDrop(watch);

    // The worker starts while the Deployments come up. Its own topics, group and key prefix.
    let name = "ttr";
    let (incidents, outcomes, dlq, approvals, group, prefix) = worker_names(env, name);
    let partitions = env.opts.partitions.unwrap_or(TTR_PARTITIONS);
    create_topics(
        env,
        &[(&incidents, partitions), (&outcomes, 1), (&dlq, 1), (&approvals, 1)],
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let runbooks = dir.path().join("runbooks.yaml");
    std::fs::write(&runbooks, TTR_RUNBOOKS_YAML)?;
    let wide = (n * 2).max(10).to_string();
    let vars: Vec<(&str, String)> = vec![
        ("REMEDIATOR_KAFKA_BROKERS", env.brokers.clone()),
        ("REMEDIATOR_KAFKA_GROUP_ID", group.clone()),
        ("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", incidents.clone()),
        ("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", outcomes.clone()),
        ("REMEDIATOR_KAFKA_DLQ_TOPIC", dlq),
        ("REMEDIATOR_KAFKA_APPROVALS_TOPIC", approvals),
        ("REMEDIATOR_REDIS_URL", env.redis_url.clone()),
        ("REMEDIATOR_REDIS_KEY_PREFIX", prefix.clone()),
        ("REMEDIATOR_RUNBOOKS", runbooks.display().to_string()),
        ("REMEDIATOR_DRY_RUN", "false".into()),
        ("REMEDIATOR_EXECUTOR", "kubernetes".into()),
        // Every incident of the storm may act at once: the blast radius is not what is measured.
        ("REMEDIATOR_GUARDRAILS_MAX_CONCURRENT_ACTIONS", wide.clone()),
        ("REMEDIATOR_GUARDRAILS_MAX_AFFECTED_SERVICES", wide),
        ("REMEDIATOR_LOG_FORMAT", "json".into()),
        ("REMEDIATOR_LOG_LEVEL", "info".into()),
    ];
    let log = std::path::PathBuf::from(
        std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "/tmp/remediator-bench-workers.log".into()),
    );
    let mut procs = vec![spawn_worker(env, &vars, &format!("{}-ttr", env.run), &log)?];

    // N Deployments of 2 replicas (replicas_greater_than_one refuses to restart a lone pod).
    let deployments: Vec<String> = (0..n).map(|i| format!("d-{i:03}")).collect();
    let api = kube::Api::<Deployment>::namespaced(client.clone(), ns);
    let mut creating = FuturesUnordered::new();
    for d in &deployments {
        let object: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": d, "labels": {"app": d}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": d}},
                "template": {
                    "metadata": {"labels": {"app": d}},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
                },
            },
        }))?;
        let (api, post) = (api.clone(), &post);
        creating.push(async move {
            api.create(post, &object)
                .await
                .map_err(|e| format!("ttr: creating deployment {d}: {e}"))
        });
    }
    while let Some(r) = creating.next().await {
        r?;
    }
    drop(creating);
    let ready_count =
        |m: &HashMap<String, PodSeen>| m.values().filter(|p| p.ready.is_some() && p.gone.is_none()).count();
    wait_pods(
        &times,
        &format!("{} Ready pods", 2 * n),
        Duration::from_secs(180),
        |m| {
            let c = ready_count(m);
            if c >= 2 * n {
                Ok(())
            } else {
                Err(format!("{c} Ready"))
            }
        },
    )
    .await?;

    // One pod per Deployment crash-loops: labelled on the pod, not the template, so its
    // replacement is healthy (kwok's pod-crashloop stage, scripts/kwok-stages/).
    let originals: std::collections::HashSet<String> = times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    let victims: BTreeMap<String, (String, String)> = {
        let m = times.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (uid, p) in m.iter() {
            let e = v.entry(p.app.clone()).or_insert_with(|| (p.name.clone(), uid.clone()));
            if p.name < e.0 {
                *e = (p.name.clone(), uid.clone());
            }
        }
        v
    };
    if victims.len() != n {
        return Err(format!("ttr: {} Deployments have pods, expected {n}", victims.len()).into());
    }
    let pods = kube::Api::<Pod>::namespaced(client.clone(), ns);
    let mut labelling = FuturesUnordered::new();
    for (pod, _) in victims.values() {
        let pods = pods.clone();
        labelling.push(async move {
            pods.patch(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"chaos": "crashloop"}}})),
            )
            .await
            .map_err(|e| format!("ttr: labelling pod {pod}: {e}"))
        });
    }
    while let Some(r) = labelling.next().await {
        r?;
    }
    drop(labelling);
    let victim_uids: Vec<String> = victims.values().map(|(_, uid)| uid.clone()).collect();
    wait_pods(
        &times,
        "every labelled pod in CrashLoopBackOff",
        Duration::from_secs(60),
        |m| {
            let c = victim_uids
                .iter()
                .filter(|u| m.get(*u).is_some_and(|p| p.crashing))
                .count();
            if c == n {
                Ok(())
            } else {
                Err(format!("{c} of {n} crash-looping"))
            }
        },
    )
    .await?;

    // The worker is up and owns every partition before the storm.
    let http = reqwest::Client::new();
    wait_ready(&http, &mut procs).await?;
    wait_group_stable(&env.brokers, &group, 1).await?;
    let (audit, reader) = collect_outcomes(&env.brokers, &outcomes, &format!("{group}-audit"))?;
    let _stop_reader = AbortOnDrop(reader);

    // The storm: one incident per Deployment, keyed by its service, all at once.
    let producer = load_producer(&env.brokers, "0")?;
    let mut produced: BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)> = BTreeMap::new();
    let mut acks = FuturesUnordered::new();
    for (d, (pod, _)) in &victims {
        let id = format!("{}-ttr-{d}", env.run);
        let payload = json!({
            "id": id, "root_cause": "CrashLoopBackOff", "confidence": 0.95, "service": d,
            "symptoms": ["pod_crash_loop"],
            "context": {"namespace": ns, "pod_name": pod, "deployment": d},
            "detected_at": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        let at = chrono::Utc::now();
        acks.push(enqueue(&producer, &incidents, Some(d.as_bytes()), Some(payload.as_bytes())).await);
        produced.insert(d.clone(), (id, at));
    }
    // How the keys fell on the partitions: a partition decides its incidents one after another.
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    while let Some(r) = acks.next().await {
        match r {
            Ok(Ok(delivery)) => *per_partition.entry(delivery.partition).or_default() += 1,
            Ok(Err((e, _))) => return Err(format!("ttr: producing an incident: {e}").into()),
            Err(_) => return Err("ttr: producing an incident: delivery canceled".into()),
        }
    }
    eprintln!("[bench] ttr: {n} incidents produced; waiting for the replacements and the outcomes");

    // Each Deployment's replacement: a pod that was not there before the storm, seen Ready.
    let replaced = |m: &HashMap<String, PodSeen>| -> BTreeMap<String, chrono::DateTime<chrono::Utc>> {
        let mut r: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for (uid, p) in m {
            if let (false, Some(at)) = (originals.contains(uid), p.ready) {
                let e = r.entry(p.app.clone()).or_insert(at);
                *e = (*e).min(at);
            }
        }
        r
    };
    wait_pods(&times, "every replacement pod Ready", Duration::from_secs(240), |m| {
        let c = replaced(m).len();
        if c >= n {
            Ok(())
        } else {
            Err(format!("{c} of {n} replaced"))
        }
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while audit.lock().unwrap_or_else(|e| e.into_inner()).len() < n {
        if Instant::now() > deadline {
            let c = audit.lock().unwrap_or_else(|e| e.into_inner()).len();
            return Err(format!("ttr: only {c} of {n} outcomes within 120 s of the last replacement").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http_get(&http, &procs[0].url("/metrics"))
        .await
        .map(|(_, t)| t)
        .unwrap_or_default();
    drop(procs);
    let redis_client = redis::Client::open(env.redis_url.as_str())?;
    let mut con = redis_client.get_multiplexed_async_connection().await?;
    cleanup(&mut con, &format!("{{{prefix}}}:")).await;

    // Per Deployment: the bench's observations and the worker's outcome, in ms from produce.
    let seen = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ready = replaced(&seen);
    let outcomes = audit.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ms = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).num_microseconds().unwrap_or(0) as f64 / 1e3
    };
    let time = |o: &Value, k: &str| -> Res<chrono::DateTime<chrono::Utc>> {
        let s = o[k].as_str().ok_or_else(|| format!("ttr: outcome without {k}: {o}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(s)?.with_timezone(&chrono::Utc))
    };
    let mut rows = Vec::with_capacity(n);
    let mut decisions: BTreeMap<String, usize> = BTreeMap::new();
    for (d, (id, at)) in &produced {
        let o = outcomes.get(id).ok_or_else(|| format!("ttr: no outcome for {id}"))?;
        let label = format!(
            "{}{}",
            o["decision"].as_str().unwrap_or("?"),
            match o["success"].as_bool() {
                Some(true) => " ok",
                Some(false) => " failed",
                None => "",
            }
        );
        *decisions.entry(label).or_default() += 1;
        let victim = &victims[d].1;
        let gone = seen.get(victim).and_then(|p| p.gone).ok_or_else(|| {
            format!(
                "ttr: the crash-looping pod of {d} was never seen deleted ({})",
                o["reason"]
            )
        })?;
        let (decided, finished, up) = (time(o, "decided_at")?, time(o, "finished_at")?, ready[d]);
        rows.push(Remediated {
            pickup: ms(*at, decided),
            to_delete: ms(decided, gone),
            control_plane: ms(gone, up),
            ttr: ms(*at, up),
            tail: ms(up, finished),
        });
    }
    let sorted = |f: fn(&Remediated) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let total = |f: fn(&Remediated) -> f64| rows.iter().map(f).sum::<f64>();
    let ttrs = sorted(|r| r.ttr);
    let (p50, p99, max) = (percentile(&ttrs, 0.5), percentile(&ttrs, 0.99), ttrs[ttrs.len() - 1]);
    let sum_ttr = total(|r| r.ttr).max(1e-9);
    let share = |f: fn(&Remediated) -> f64| total(f) / sum_ttr;
    let (pickup_share, act_share, cp_share) = (share(|r| r.pickup), share(|r| r.to_delete), share(|r| r.control_plane));
    let mean_metric = |base: &str| {
        let count = metric_sum(&metrics, &format!("{base}_count"));
        (count > 0.0).then(|| 1e3 * metric_sum(&metrics, &format!("{base}_sum")) / count)
    };
    let decision_mean = mean_metric("remediator_decision_duration_seconds");
    let action_mean = mean_metric("remediator_action_duration_seconds");
    let med = |f: fn(&Remediated) -> f64| percentile(&sorted(f), 0.5);
    // Executions at once: the worker's busy time (decided -> finished, summed) over the span
    // from the first decision to the last outcome.
    let spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = outcomes
        .values()
        .filter_map(|o| Some((time(o, "decided_at").ok()?, time(o, "finished_at").ok()?)))
        .collect();
    let busy: f64 = spans.iter().map(|(a, b)| ms(*a, *b)).sum();
    let span = match (spans.iter().map(|s| s.0).min(), spans.iter().map(|s| s.1).max()) {
        (Some(a), Some(b)) => ms(a, b).max(1e-9),
        _ => 1e-9,
    };
    let concurrency = busy / span;
    let busiest = per_partition.values().copied().max().unwrap_or(0);
    let decided = decisions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");

    t.row(
        &format!(
            "Time to remediate: {n} crash-looping pods, one incident each, one `remediator run`, real control plane"
        ),
        "",
        "",
    );
    t.row(
        "produce -> replacement Ready p50 / p99 / max",
        format!("{p50:.0} / {p99:.0} / {max:.0} ms"),
        format!("{partitions} partitions, all {n} produced at once; outcomes: {decided}"),
    );
    t.row(
        "  incidents per partition: partitions used / busiest",
        format!("{} / {busiest}", per_partition.len()),
        format!("executions at once, mean: {concurrency:.1} (kafka.max_in_flight bounds messages pulled and unfinished, queued ones included)"),
    );
    t.row(
        "  produce -> worker takes it up (outcome decided_at)",
        format!("{:.0}% (median {:.0} ms)", 100.0 * pickup_share, med(|r| r.pickup)),
        format!(
            "Kafka, and waiting behind earlier incidents of the partition (min {:.0} ms)",
            sorted(|r| r.pickup)[0]
        ),
    );
    t.row(
        "  decided -> old pod seen deleted",
        format!("{:.0}% (median {:.0} ms)", 100.0 * act_share, med(|r| r.to_delete)),
        "remediator: admission in Redis, pre-checks (API reads), the DELETE",
    );
    t.row(
        "  deleted -> replacement seen Ready",
        format!("{:.0}% (median {:.0} ms)", 100.0 * cp_share, med(|r| r.control_plane)),
        "control plane: ReplicaSet controller, scheduler, kwok's node",
    );
    t.row(
        "  after Ready: post-check notices it (not in the above)",
        format!("median {:.0} ms", med(|r| r.tail)),
        "pod_becomes_ready: old pod removed and the Deployment's status back to 2 ready, polled every 250 ms; the partition's next incident waits",
    );
    t.row(
        "ttr_remediator_share",
        format!("{:.2}", pickup_share + act_share),
        "share of produce -> Ready before the DELETE landed (remediator, Kafka and queueing)",
    );
    let fmt_ms = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} ms"));
    t.row(
        "worker: decision / action mean (metrics)",
        format!("{} / {}", fmt_ms(decision_mean), fmt_ms(action_mean)),
        "message received -> outcome ready / pre-checks through post-check (includes waiting for the control plane)",
    );
    j.insert("ttr_pods".into(), json!(n));
    j.insert("ttr_p50_ms".into(), json!(round(p50, 0)));
    j.insert("ttr_p99_ms".into(), json!(round(p99, 0)));
    j.insert("ttr_max_ms".into(), json!(round(max, 0)));
    j.insert("ttr_remediator_share".into(), json!(round(pickup_share + act_share, 3)));
    j.insert("ttr_pickup_share".into(), json!(round(pickup_share, 3)));
    j.insert("ttr_decide_to_delete_share".into(), json!(round(act_share, 3)));
    j.insert("ttr_control_plane_share".into(), json!(round(cp_share, 3)));
    j.insert("ttr_decision_mean_ms".into(), json!(decision_mean.map(|v| round(v, 0))));
    j.insert("ttr_action_mean_ms".into(), json!(action_mean.map(|v| round(v, 0))));
    j.insert("ttr_outcomes".into(), json!(decisions));
    j.insert("ttr_partitions_used".into(), json!(per_partition.len()));
    j.insert("ttr_busiest_partition".into(), json!(busiest));
    j.insert("ttr_concurrency".into(), json!(round(concurrency, 1)));
    Ok(())
}

/// Aborts a task when dropped (the pod watch, whatever way the section ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read the outcomes topic from its start in the background: incident id -> outcome JSON.
type Outcomes = Arc<Mutex<HashMap<String, Value>>>;

fn collect_outcomes(brokers: &str, topic: &str, group: &str) -> Res<(Outcomes, tokio::task::JoinHandle<()>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let seen: Outcomes = Arc::default();
    let out = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let Some(v) = m.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
                        continue;
                    };
                    if let Some(id) = v["incident_id"].as_str() {
                        out.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), v);
                    }
                }
                Err(e) => {
                    eprintln!("[bench] ttr: outcomes consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((seen, task))
}
