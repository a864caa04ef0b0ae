//! Sentinel failover (docs/guarantees.md#what-is-exact-and-where-it-degrades): a private
//! primary, its replica and three Sentinels started by `scripts/redis-ha.sh`, the primary killed
//! with SIGKILL while the store (and, in the second test, four worker processes under a flood)
//! uses it through `redis+sentinel://`.
//!
//! * [`store_follows_a_sentinel_failover`]: calls fail closed while no primary is usable, the
//!   store follows the promoted replica, notices the promotion (conservative mode) and keeps the
//!   state that had been replicated.
//! * [`sentinel_failover_mid_flood_stays_within_the_bound`]: the full history of a flood across
//!   failovers (reduced: 1, heavy `REMEDIATOR_RELIABILITY=heavy`: 6, half of them to a replica that
//!   had fallen behind): every incident one final
//!   outcome, nothing executed twice, and per (runbook, service) at most `max_per_hour` plus the
//!   reservations the failover lost, never more than replicas × the per-replica ceiling; the
//!   lost reservations are counted from the journal against what the new primary still holds.

mod common;
#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/reliability.rs"]
mod reliability_common;
// The reliability harness checks events against the schemas as `crate::schema`.
use common::schema;

use common::guardrail_suite::{finish, open_limits, reserve, scope};
use kafka_common::{unique, Msg, Topics};
use reliability_common::{
    crash, decisions, full_history, ids, now_ms, require_tool, runbooks, scale, services, Collector, Figures, Fleet,
    Producer,
};
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::{DecideAnswer, ExecResult, Guardrail, GuardrailStore, Limits, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A private Sentinel set-up or Redis Cluster with replicas (`scripts/redis-ha.sh` with its own
/// ports and run directory), stopped when dropped.
struct OwnHa {
    /// `sentinel` or `cluster`.
    topology: &'static str,
    base: u16,
    run: PathBuf,
    url: String,
}

/// The Sentinel set-up or the Sentinel-managed primary.
type OwnSentinel = OwnHa;

impl OwnHa {
    /// A Sentinel set-up on ports `base` (primary), `base+1` (replica), `base+10..12`
    /// (Sentinels), or the next free block of 20; `None` (skip) without `redis-server`.
    fn start(base: u16) -> Option<Self> {
        Self::start_topology("sentinel", base, &[0, 1, 10, 11, 12])
    }

    /// A Redis Cluster of 3 primaries and 3 replicas on `base..base+5` (cluster bus 10000 up), or
    /// the next free block of 20.
    fn start_cluster(base: u16) -> Option<Self> {
        Self::start_topology(
            "cluster",
            base,
            &[0, 1, 2, 3, 4, 5, 10_000, 10_001, 10_002, 10_003, 10_004, 10_005],
        )
    }

    fn start_topology(topology: &'static str, base: u16, offsets: &[u16]) -> Option<Self> {
        if !require_tool("redis-server", "the set-up runs redis-server") {
            return None;
        }
        // The first block of ports from `base` on that nobody listens on (another test run may
        // hold the default ones).
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let base = (0..50)
            .map(|k| base + 20 * k)
            .find(|b| offsets.iter().all(|o| free(b + o)))
            .expect("no free block of ports for the Redis set-up");
        let mut s = Self {
            topology,
            base,
            run: std::env::temp_dir().join(unique("redis-ha")),
            url: String::new(),
        };
        let out = s.script(&["start", topology]);
        let var = if topology == "cluster" {
            "REDIS_CLUSTER_URL="
        } else {
            "REDIS_SENTINEL_URL="
        };
        s.url = out
            .trim()
            .strip_prefix(var)
            .unwrap_or_else(|| panic!("unexpected output {out:?}"))
            .to_string();
        Some(s)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("bash");
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-ha.sh"))
            .env("REDIS_SENTINEL_PORT", self.base.to_string())
            .env("REDIS_CLUSTER_PORT", self.base.to_string())
            .env("REDIS_CLUSTER_REPLICAS", "1")
            .env("REDIS_HA_RUN", &self.run);
        c
    }

    fn script(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .expect("redis-ha.sh");
        assert!(out.status.success(), "redis-ha.sh {args:?} failed");
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// (cluster) The port of the primary serving `key`'s slot.
    fn slot_owner(&self, key: &str) -> u16 {
        let out = self.script(&["slot-owner", key]);
        out.trim().parse().unwrap_or_else(|_| panic!("slot owner {out:?}"))
    }

    /// The port the Sentinels name as primary.
    fn primary(&self) -> u16 {
        let out = self.script(&["primary"]);
        out.trim().parse().unwrap_or_else(|_| panic!("primary port {out:?}"))
    }

    fn kill(&self, port: u16) {
        self.script(&["kill", &port.to_string()]);
    }

    /// The primary on `port` stops feeding its replica (see `redis-ha.sh cut`).
    fn cut(&self, port: u16) {
        self.script(&["cut", &port.to_string()]);
    }

    /// Start the killed node again as a replica of the current primary; returns once the
    /// Sentinels agree on a primary and know an in-sync replica of it, so the next failover has
    /// one to promote (which node is which can change meanwhile on a loaded machine: callers ask
    /// `primary()` afresh).
    fn revive(&self, port: u16) {
        self.script(&["revive", &port.to_string()]);
    }

    /// Wait until the Sentinels name a primary other than `old`; the time it took.
    async fn wait_new_primary(&self, old: u16, within: Duration) -> (u16, Duration) {
        let t0 = Instant::now();
        loop {
            let p = self.primary();
            if p != old {
                return (p, t0.elapsed());
            }
            assert!(t0.elapsed() < within, "no failover from {old} within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A plain connection to the node on `port`.
    async fn raw(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }
}

impl Drop for OwnHa {
    fn drop(&mut self) {
        let _ = self.command().args(["stop", self.topology]).status();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// Each test starts its own Redis set-up and kills nodes on a timing that a loaded machine can
/// upset (Sentinel's down-after is 1 s): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn limits(max_per_hour: u32) -> Limits {
    Limits {
        max_per_hour,
        conservative_ms: 60_000,
        ..open_limits()
    }
}

/// Reserve (and finish) incident `i0` with a limit of 2, and wait until a replica of `primary`
/// acknowledged it.
///
/// The acknowledgement is read from the primary's replication offsets, not with `WAIT`: `WAIT`
/// only covers the writes of the connection it is sent on, and the store's writes went through
/// its own connection, so on a fresh connection it returns at once (it passed while the replica
/// still lagged, and a failover then lost `i0`).
async fn reserve_replicated(ha: &OwnHa, store: &RedisStore, primary: u16) {
    let (s, l) = (scope("rb", "svc"), limits(2));
    assert_eq!(
        store
            .decide(&reserve("i0", "a0", &s, &l, 30_000))
            .await
            .expect("decide"),
        DecideAnswer::Allowed {
            probe: false,
            conservative: false
        }
    );
    store
        .finish(&finish("i0", "a0", &s, &l, ExecResult::Success))
        .await
        .expect("finish");
    let conn = ha.raw(primary).await;
    let info = |text: &str, field: &str| -> Option<u64> {
        let at = text.find(field)? + field.len();
        text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let replication = || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut conn)
                .await
                .expect("INFO replication")
        }
    };
    // Every write so far, i0's included, is below this offset.
    let target = info(&replication().await, "master_repl_offset:").expect("master_repl_offset");
    let t0 = Instant::now();
    loop {
        // `slave0:ip=…,port=…,state=online,offset=N,lag=…`: what the replica acknowledged (it
        // acknowledges every second).
        let text = replication().await;
        let acked = text
            .lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| info(l, "offset="));
        if acked.is_some_and(|a| a >= target) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the replica did not acknowledge offset {target} within 10 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After the node holding `i0`'s reservation was killed: every call fails closed
/// (`Unavailable`, never an answer from a stale node) until the store answers again, and that
/// first answer is the conservative probe (the promotion was noticed). Returns how many calls
/// were refused and when the first answer came.
async fn first_answer_after_failover(store: &RedisStore, within: Duration) -> (usize, Duration) {
    let (s, l) = (scope("rb", "svc"), limits(2));
    let t0 = Instant::now();
    let mut refused = 0;
    let answer = loop {
        match store.decide(&reserve("i1", "a1", &s, &l, 30_000)).await {
            Ok(a) => break a,
            Err(StoreError::Unavailable(_)) => refused += 1,
            Err(e) => panic!("a failover must look like an outage, got {e:?}"),
        }
        assert!(t0.elapsed() < within, "store never followed the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "the dead primary was never noticed");
    assert_eq!(
        answer,
        DecideAnswer::Allowed {
            probe: true,
            conservative: true
        },
        "the promotion must put the store in conservative mode"
    );
    store
        .finish(&finish("i1", "a1", &s, &l, ExecResult::Success))
        .await
        .expect("finish");
    (refused, t0.elapsed())
}

/// `i0`'s reservation survived the failover: with `i1`, the limit of 2 is reached.
async fn assert_limit_kept(store: &RedisStore, incident: &str) {
    let (s, l) = (scope("rb", "svc"), limits(2));
    let answer = store
        .decide(&reserve(incident, incident, &s, &l, 30_000))
        .await
        .expect("decide");
    assert!(
        matches!(
            answer,
            DecideAnswer::Blocked {
                guardrail: Guardrail::RateLimit,
                ..
            }
        ),
        "{incident}: {answer:?}"
    );
}

/// One store through Sentinel: a reservation replicated before the primary dies survives the
/// failover; while no primary is usable every call fails closed (`Unavailable`, never an answer
/// from a stale node); the first answer after the failover is conservative (the promotion was
/// noticed: one probe at a time); and the old primary, revived as a replica, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_follows_a_sentinel_failover() {
    let _serial = SERIAL.lock().await;
    let Some(ha) = OwnSentinel::start(17300) else { return };
    let store = RedisStore::connect(&ha.url, &unique("sentinel"), Duration::from_millis(500))
        .await
        .expect("connect");
    assert_eq!(store.topology(), "sentinel");
    let old = ha.primary();
    reserve_replicated(&ha, &store, old).await;
    ha.kill(old);
    let (refused, took) = first_answer_after_failover(&store, Duration::from_secs(30)).await;
    let (new, _) = ha.wait_new_primary(old, Duration::from_secs(1)).await;
    eprintln!("failover {old} -> {new}: {refused} calls refused, first answer after {took:?}");
    assert_limit_kept(&store, "i2").await;
    ha.revive(old);
    assert_limit_kept(&store, "i3").await;
}

/// One store on a Redis Cluster with replicas: the primary serving the store's slot is killed,
/// the cluster promotes its replica (cluster-node-timeout 2 s), and the store follows it (the
/// redis crate refreshes its slot map) without a restart; calls fail closed meanwhile, the
/// promotion is noticed (conservative mode) and the replicated state is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_follows_a_primary_failover() {
    let _serial = SERIAL.lock().await;
    let Some(ha) = OwnHa::start_cluster(17700) else { return };
    let prefix = unique("cluster-fo");
    let store = RedisStore::connect(&ha.url, &prefix, Duration::from_millis(500))
        .await
        .expect("connect");
    assert_eq!(store.topology(), "cluster");
    let owner = ha.slot_owner(&format!("{{{prefix}}}:epoch"));
    reserve_replicated(&ha, &store, owner).await;
    ha.kill(owner);
    let (refused, took) = first_answer_after_failover(&store, Duration::from_secs(45)).await;
    let new_owner = ha.slot_owner(&format!("{{{prefix}}}:epoch"));
    eprintln!("cluster failover {owner} -> {new_owner}: {refused} calls refused, first answer after {took:?}");
    assert_ne!(new_owner, owner, "a replica was promoted");
    assert_limit_kept(&store, "i2").await;
}

/// Four worker processes through Sentinel under a flood of incidents for one runbook
/// (`max_per_hour: 5` per service; each service gets 8 incidents in a row, new services keep
/// coming, so reservations happen all through the flood, and about a second later a second burst
/// of 8, which only reservations lost in between can let through); the primary is killed mid-flood and
/// revived as a replica after the failover (reduced: once; heavy: 6 times), every other time
/// after its replica fell 1.5 s behind, so that the failover really loses reservations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_mid_flood_stays_within_the_bound() {
    let _serial = SERIAL.lock().await;
    const MAX_PER_HOUR: usize = 5;
    const REPLICAS: usize = 4;
    let Some(svc) = services() else { return };
    let Some(ha) = OwnSentinel::start(17500) else { return };
    let mut fig = Figures::new("sentinel_failover");
    let failovers = scale(1, 6);
    let n = scale(480, 2400);
    let over = Duration::from_secs(scale(16, 80));
    let prefix = unique("rel-sentinel");
    let topics = Topics::create(&svc.brokers, 4).await;
    let own = reliability_common::Services {
        brokers: svc.brokers.clone(),
        redis: ha.url.clone(),
    };
    let mut fleet = Fleet::new(
        "sentinel",
        &own,
        &topics,
        &runbooks(MAX_PER_HOUR as u32),
        &[
            ("REMEDIATOR_REDIS_KEY_PREFIX", &prefix),
            ("REMEDIATOR_SIMULATED_ACTION_DELAY", "20ms"),
        ],
    );
    fleet.start(REPLICAS).await;
    let collector = Collector::start(&svc.brokers, &topics.outcomes);
    let run = unique("sentinel");
    let work: Vec<(String, String)> = (0..n)
        .map(|i| {
            // Bursts of 8 incidents per service, in groups of 4 bursts that alternate between 4
            // new services and the 4 services of the group before.
            let burst = i / 8;
            let service = if (burst / 4) % 2 == 0 { burst } else { burst - 4 };
            (format!("{run}-{i}"), format!("fo-svc-{service}"))
        })
        .collect();
    let msgs: Vec<Msg> = work.iter().map(|(id, service)| crash(id, service)).collect();
    let service_of: BTreeMap<String, String> = work.into_iter().collect();
    let sent = ids(&msgs);
    let producing = Producer::new(&svc.brokers).send_paced(&topics.incidents, msgs, over);

    let mut windows = Vec::new();
    let mut lagging_failovers = 0;
    for round in 0..failovers {
        tokio::time::sleep(over / (failovers as u32 + 1)).await;
        let old = ha.primary();
        // Every other failover (the first one included) promotes a replica that fell behind: the
        // primary stops feeding it and takes 2 s of reservations alone before it dies, so those
        // writes are lost and the bound is what holds.
        if round % 2 == 0 {
            ha.cut(old);
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            lagging_failovers += 1;
        }
        ha.kill(old);
        let killed_at = now_ms();
        let (_, took) = ha.wait_new_primary(old, Duration::from_secs(30)).await;
        windows.push((killed_at, killed_at + took.as_millis() as i64));
        ha.revive(old);
    }

    let mut v = Vec::new();
    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(120, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    let logs: Vec<String> = fleet.running().into_iter().map(|i| fleet.proc(i).log()).collect();
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;

    // Reservations the new primary still holds, per service, against the journal.
    let mut conn = ha.raw(ha.primary()).await;
    let mut executed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &h.journal {
        let service = service_of.get(&a.incident_id).cloned().unwrap_or_default();
        executed.entry(service).or_default().push(a.incident_id.clone());
    }
    let (mut lost, mut excess, mut in_window) = (0, 0, 0);
    let max_per_service = executed.values().map(Vec::len).max().unwrap_or(0);
    for (service, ids) in &executed {
        let key = format!("{{{prefix}}}:rate:rel-restart:{service}");
        let held: BTreeSet<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("ZRANGE");
        let lost_here = ids.iter().filter(|id| !held.contains(*id)).count();
        lost += lost_here;
        let over_limit = ids.len().saturating_sub(MAX_PER_HOUR);
        excess += over_limit;
        if over_limit > lost_here {
            v.push(format!(
                "{service}: {} executions, {over_limit} over max_per_hour but only {lost_here} reservations lost",
                ids.len()
            ));
        }
        if ids.len() > REPLICAS * MAX_PER_HOUR {
            v.push(format!(
                "{service}: {} executions, above replicas x per-replica ceiling = {}",
                ids.len(),
                REPLICAS * MAX_PER_HOUR
            ));
        }
    }
    for a in &h.journal {
        if windows.iter().any(|(from, to)| (*from..=*to).contains(&a.at_ms)) {
            in_window += 1;
        }
    }
    let conservative = logs.iter().filter(|l| l.contains("running conservatively")).count();
    if conservative == 0 {
        v.push("no worker reported conservative mode after the failover".into());
    }
    let failover_ms: Vec<i64> = windows.iter().map(|(a, b)| b - a).collect();
    let d = decisions(&finals);
    fig.add("workers", REPLICAS)
        .add("incidents", n)
        .add("failovers", failovers)
        .add("lagging_replica_failovers", lagging_failovers)
        .add("failover_ms", format!("{failover_ms:?}").replace(' ', ""))
        .add("executions", h.journal.len())
        .add("executions_in_failover_windows", in_window)
        .add("lost_reservations", lost)
        .add("excess_over_max_per_hour", excess)
        .add("max_executions_one_service", max_per_service)
        .add("bound_per_service", REPLICAS * MAX_PER_HOUR)
        .add("conservative_workers", conservative)
        .add("decisions", format!("{d:?}").replace(' ', ""))
        .finish(&v);
}
