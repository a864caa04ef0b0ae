//! The production guardrail store: Redis, one Lua script per call, Redis `TIME`.
//!
//! Every replica asks the same Redis, and every question is one atomic script (one `EVALSHA`
//! round trip; `SCRIPT LOAD` only after a `NOSCRIPT`, which is what
//! [`redis::ScriptInvocation::invoke_async`] does), so limits hold exactly across replicas while
//! Redis keeps its acknowledged writes. The scripts live in `src/guardrails/` (`decide.lua`,
//! `renew.lua`, `finish.lua`, `record.lua`, the `approval_*.lua` and `trust_record.lua`), each
//! opening with the keys, arguments and reply it uses; `memory/` mirrors them for the
//! single-process store. `decide_batch.lua` is the one exception: it is `decide.lua` itself,
//! wrapped in a function and called once per request of a batch (one round trip for the lot).
//!
//! Where things are: this file holds the connection, the key space, the epoch and the
//! [`GuardrailStore`] calls; `reply.rs` decodes the scripts' replies; `ledger.rs` holds the
//! approvals and the trust ladder ([`super::LedgerStore`]).
//!
//! # Key space
//! Every key starts with `{<key_prefix>}:` — one Redis Cluster hash tag for the whole store, so
//! every script is single-slot. One tag and not one per runbook or service because the scripts
//! cross those lines by design: the blast-radius budget (`leases`, `services`) is global across
//! runbooks and services, and the incident claim must be atomic with the reservation of a
//! runbook's circuit, its per-runbook services (`rbsvc`) and a (runbook, service) rate limit.
//! Splitting them over slots would need cross-slot transactions, which Cluster does not offer.
//! The cost is that the store lives on one shard; at about one script per decision that is far
//! below a shard's capacity.
//!
//! ```text
//! {p}:inc:<incident>           hash    claim / outcome of one incident id
//! {p}:rate:<runbook>:<service> zset    incident id -> reservation ms (rate limit, cooldown)
//! {p}:trate:<runbook>:<target> zset    the same per the action's target (namespace/kind/name)
//! {p}:cb:<runbook>             hash    circuit breaker
//! {p}:leases                   zset    attempt -> lease expiry ms (actions in flight)
//! {p}:services                 zset    service -> last touched ms
//! {p}:rbsvc:<runbook>          zset    service -> last touched by this runbook ms
//! {p}:epoch                    string  generation of the data (detects a wipe)
//! {p}:conservative_until       string  ms; end of conservative mode after a detected wipe
//! {p}:primary                  string  replication id of the primary (detects a failover)
//! {p}:appr:<id>                hash    one approval (json, state, approver, expiry, action hash)
//! {p}:approvals                zset    approval id -> expiry ms (pending index)
//! {p}:approvals_created        zset    approval id -> creation ms (the gauges' oldest)
//! {p}:apprg:<group>            hash    latest approval of a (runbook, target): id, created, expiry
//! {p}:trust:<runbook>          list    last verified results, newest first ('1' / '0')
//! {p}:demoted:<runbook>        string  why the runbook was demoted from auto to approval
//! ```
//! Ids are escaped (`%` → `%25`, `:` → `%3A`) so `rate:a:b:c` cannot mean two things.
//!
//! # Failure
//! Every call is bounded by the configured timeout (connection, response, and an outer
//! [`tokio::time::timeout`] covering reconnects and `NOSCRIPT` reloads); any I/O problem is
//! [`StoreError::Unavailable`] and callers fail closed. The connection is a
//! [`ConnectionManager`](redis::aio::ConnectionManager) (one multiplexed connection, reconnected in the background), created
//! lazily so a worker can start while Redis is down and become ready when it returns.

mod ledger;
mod reply;
#[cfg(test)]
mod tests;

use super::memory::CLAIM_GRACE_MS;
use super::topology::{Backend, Conn, Topology};
use super::{
    Admission, CircuitSnapshot, CircuitState, DecideAnswer, DecideRequest, ExecResult, FinishAnswer, FinishRequest,
    GuardrailStore, RenewRequest, Renewal, StoreError,
};
use redis::{ErrorKind, RedisError, Script, ScriptInvocation, Value};
use reply::{number, parse_decide, parse_decide_batch, parse_finish, parse_renew, parse_status, strings};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// The text `RedisStore::decide` runs: decide.lua with the `shared` table it expects, declared
/// for one decision (decide_batch.lua shares one across a batch). Public so the benchmark's
/// `redis-benchmark` ceiling runs exactly this script.
pub const DECIDE_SCRIPT: &str = concat!("local shared = {}\n", include_str!("../decide.lua"));

/// The scripts, hashed once (their SHA1 is what `EVALSHA` sends).
struct Scripts {
    decide: Script,
    /// decide.lua as a function, called once per request (see decide_batch.lua).
    decide_batch: Script,
    renew: Script,
    finish: Script,
    record: Script,
    approval_create: Script,
    approval_answer: Script,
    approval_pending: Script,
    approval_summary: Script,
    trust_record: Script,
    rollout: Script,
    init_epoch: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            decide: Script::new(DECIDE_SCRIPT),
            decide_batch: Script::new(concat!(
                "local function decide_one(KEYS, ARGV, shared)\n",
                include_str!("../decide.lua"),
                "\nend\n",
                include_str!("../decide_batch.lua"),
            )),
            renew: Script::new(include_str!("../renew.lua")),
            finish: Script::new(include_str!("../finish.lua")),
            record: Script::new(include_str!("../record.lua")),
            approval_create: Script::new(include_str!("../approval_create.lua")),
            approval_answer: Script::new(include_str!("../approval_answer.lua")),
            approval_pending: Script::new(include_str!("../approval_pending.lua")),
            approval_summary: Script::new(include_str!("../approval_summary.lua")),
            trust_record: Script::new(include_str!("../trust_record.lua")),
            rollout: Script::new(include_str!("../rollout.lua")),
            // SET NX then GET in one step (a MULTI/EXEC pipeline would not route in Cluster).
            init_epoch: Script::new("redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])"),
        }
    }
}

/// Guardrail store shared by all replicas through Redis; see the module documentation.
pub struct RedisStore {
    backend: Backend,
    /// `single`, `cluster` or `sentinel` (from the URL scheme).
    topology: &'static str,
    key_prefix: String,
    /// `{<key_prefix>}:`, the start of every key.
    tag: String,
    timeout: Duration,
    /// The data generation this worker last saw (`epoch` key). `None` until Redis was reached
    /// once. Passed to `decide.lua`, which detects a wipe when the stored one is missing or
    /// different, and updated from its answer (the worker adopts the stored epoch).
    epoch: Mutex<Option<String>>,
    /// Written as the epoch if this worker is the first to reach an empty Redis.
    candidate_epoch: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.topology)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Escape an id for use inside a key: `:` separates key parts, so it (and the escape character
/// itself) must not appear raw.
fn escape(id: &str) -> String {
    id.replace('%', "%25").replace(':', "%3A")
}

/// The inverse of [`escape`] (ids the scripts return as they are stored in the index).
fn unescape(id: &str) -> String {
    id.replace("%3A", ":").replace("%25", "%")
}

/// Classify a client error. Only an answer we cannot interpret (a reply of the wrong shape, a
/// script that failed on data it did not expect) is a protocol error; everything else — refused,
/// reset, timed out, loading, read-only replica, cluster down, out of memory — means the store is
/// not usable right now.
fn classify(op: &str, e: RedisError) -> StoreError {
    // A demoted primary refuses a script's write with READONLY inside a script error: that is an
    // unusable store (Sentinel has moved on), not a broken script.
    let readonly = e.detail().is_some_and(|d| d.contains("READONLY"));
    let script_error =
        !readonly && matches!(e.code(), Some("ERR" | "WRONGTYPE")) && e.detail().is_some_and(|d| d.contains("script"));
    if script_error || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        StoreError::Protocol(format!("{op}: {e}"))
    } else {
        StoreError::Unavailable(format!("{op}: {e}"))
    }
}

impl RedisStore {
    /// Connect to `url` with every key under `{<key_prefix>}:`. The scheme chooses the topology
    /// (see [`super::topology`]): `redis://host:port[/db]` one server,
    /// `redis+cluster://host:port,…` a Redis Cluster, `redis+sentinel://host:port,…/name[/db]`
    /// the primary that Sentinel names `name`.
    ///
    /// The connection is made lazily: this returns `Ok` even when Redis is down (every call then
    /// fails with [`StoreError::Unavailable`] until it is back), so a worker starts, reports not
    /// ready and pauses consumption instead of crash-looping. If Redis answers now, the epoch is
    /// initialised (`SET epoch <uuid> NX`, then `GET`); otherwise the first decision does it.
    /// `timeout` bounds the connection, every response and every whole call (≈200 ms in
    /// production, `redis.timeout_ms`).
    ///
    /// Errors: an unparsable URL or a `key_prefix` that is empty or contains `{`/`}` (it is the
    /// hash tag), both reported as `Unavailable` since the store cannot be used.
    pub async fn connect(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(format!(
                "invalid guardrail key prefix {key_prefix:?}: must be non-empty without '{{' or '}}'"
            )));
        }
        // The URL may carry a password: the errors name the problem, not the URL.
        let topology = Topology::parse(url).map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        let backend = Backend::new(&topology, timeout).map_err(StoreError::Unavailable)?;
        let store = Self {
            backend,
            topology: topology.kind(),
            key_prefix: key_prefix.to_owned(),
            tag: format!("{{{key_prefix}}}:"),
            timeout,
            epoch: Mutex::new(None),
            candidate_epoch: uuid::Uuid::new_v4().to_string(),
            scripts: Scripts::new(),
        };
        match store.init_epoch().await {
            Ok(epoch) => store.adopt_epoch(&epoch),
            Err(e) => tracing::warn!(error = %e, "guardrail store not reachable at start-up; will retry on use"),
        }
        Ok(store)
    }

    /// The configured key prefix (keys start with `{<key_prefix>}:`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// `single`, `cluster` or `sentinel`: how the store reaches Redis.
    pub fn topology(&self) -> &'static str {
        self.topology
    }

    /// Full key name for `parts` joined by `:`, each escaped.
    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.tag.clone();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(&escape(part));
        }
        key
    }

    fn inc_key(&self, incident_id: &str) -> String {
        self.key(&["inc", incident_id])
    }

    /// A runbook's rollout record (`rollout.lua`; decide.lua reads its version).
    fn rollout_key(&self, runbook: &str) -> String {
        self.key(&["rollout", runbook])
    }

    fn cb_key(&self, runbook: &str) -> String {
        self.key(&["cb", runbook])
    }

    /// `SET epoch <candidate> NX` then `GET epoch`, atomically: the stored generation.
    async fn init_epoch(&self) -> Result<String, StoreError> {
        let mut inv = self.scripts.init_epoch.prepare_invoke();
        inv.key(self.key(&["epoch"])).arg(&self.candidate_epoch);
        let epoch: Option<String> = self
            .call("init epoch", |mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        epoch.ok_or_else(|| StoreError::Protocol("init epoch: epoch missing right after SET NX".into()))
    }

    /// Remember the store's epoch (see the `epoch` field).
    fn adopt_epoch(&self, epoch: &str) {
        if epoch.is_empty() {
            return;
        }
        let mut current = self.epoch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_deref() != Some(epoch) {
            if let Some(previous) = current.as_deref() {
                tracing::warn!(previous, epoch, "guardrail store epoch changed: Redis lost its data");
            }
            *current = Some(epoch.to_owned());
        }
    }

    fn timed_out(&self, op: &str) -> StoreError {
        StoreError::Unavailable(format!("{op}: no answer within {} ms", self.timeout.as_millis()))
    }

    /// Run `f` on a connection within the timeout (which also covers getting the connection:
    /// reconnects, a Sentinel lookup, `NOSCRIPT` reloads). A failure for lack of a usable server
    /// tells the backend, so a Sentinel-managed store looks up the primary again.
    async fn call<T, Fut>(&self, op: &str, f: impl FnOnce(Conn) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut generation = None;
        let attempt = async {
            let (g, conn) = self.backend.conn().await?;
            generation = Some(g);
            f(conn).await
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Err(self.timed_out(op)),
            Ok(Err(e)) => Err(classify(op, e)),
            Ok(Ok(v)) => Ok(v),
        };
        if let (Err(StoreError::Unavailable(_)), Some(g)) = (&result, generation) {
            self.backend.failed(g);
        }
        result
    }

    /// Run one script invocation within the timeout and return its flat string reply.
    async fn run(&self, op: &str, invocation: &ScriptInvocation<'_>) -> Result<Vec<String>, StoreError> {
        let v: Value = self
            .call(op, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        strings(op, v)
    }

    /// The epoch this worker remembers (see [`RedisStore::adopt_epoch`]).
    fn remembered_epoch(&self) -> Option<String> {
        self.epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Add one decide.lua request (its 11 keys and 27 arguments, in the order the script's
    /// header lists them) to `inv`.
    fn push_decide(&self, inv: &mut ScriptInvocation<'_>, req: &DecideRequest, remembered: &str) {
        let mode = req.admission.mode();
        let ttl_ms = req.admission.record_ttl_ms();
        let (scope, limits, outcomes) = match &req.admission {
            Admission::Record { outcomes, .. } => (None, None, outcomes.as_str()),
            Admission::Check { scope, limits }
            | Admission::Reserve { scope, limits }
            | Admission::DryRun { scope, limits } => (Some(scope), Some(limits), ""),
        };
        // Record needs no scope; its rate, circuit and rbsvc keys are placeholders the script
        // never touches (still under the tag, so the script stays single-slot).
        let (runbook, service, target) = scope.map_or(("", "", ""), |s| {
            (s.runbook.as_str(), s.service.as_str(), s.target.as_str())
        });
        inv.key(self.inc_key(&req.incident_id))
            .key(self.key(&["rate", runbook, service]))
            .key(self.cb_key(runbook))
            .key(self.key(&["leases"]))
            .key(self.key(&["services"]))
            .key(self.key(&["rbsvc", runbook]))
            .key(self.key(&["epoch"]))
            .key(self.key(&["conservative_until"]))
            .key(self.key(&["primary"]))
            .key(self.key(&["trate", runbook, target]))
            .key(self.rollout_key(runbook));
        inv.arg(&req.incident_id)
            .arg(&req.attempt)
            .arg(&req.worker)
            .arg(req.source.as_deref().unwrap_or(""))
            .arg(if req.source.is_some() { "1" } else { "0" })
            .arg(req.lease_ms)
            .arg(CLAIM_GRACE_MS)
            .arg(mode)
            .arg(outcomes)
            .arg(ttl_ms.max(1))
            .arg(service);
        match limits {
            Some(l) => inv
                .arg(l.max_per_hour)
                .arg(l.rate_window_ms)
                .arg(l.cooldown_ms)
                .arg(l.recovery_ms)
                .arg(l.max_concurrent_actions)
                .arg(l.max_affected_services)
                .arg(l.services_window_ms)
                .arg(l.runbook_max_services)
                .arg(l.conservative_ms),
            None => inv.arg(0).arg(0).arg(0).arg(0).arg(0).arg(0).arg(0).arg(0).arg(0),
        };
        inv.arg(remembered).arg(&self.candidate_epoch).arg(target);
        match req.on_block.as_ref().filter(|_| scope.is_some()) {
            Some(b) => inv.arg(&b.head).arg(&b.mid).arg(&b.tail),
            None => inv.arg("").arg("").arg(""),
        };
        match req.rollout_version.filter(|_| scope.is_some()) {
            Some(v) => inv.arg(v),
            None => inv.arg(""),
        };
    }

    /// Run one plain command within the timeout.
    async fn command<T: redis::FromRedisValue>(&self, op: &str, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.call(op, |mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }
}

#[async_trait::async_trait]
impl GuardrailStore for RedisStore {
    async fn decide(&self, req: &DecideRequest) -> Result<DecideAnswer, StoreError> {
        let mut inv = self.scripts.decide.prepare_invoke();
        let remembered = self.remembered_epoch();
        self.push_decide(&mut inv, req, remembered.as_deref().unwrap_or(""));
        let reply = self.run("decide", &inv).await?;
        let (epoch, answer) = parse_decide(&reply)?;
        self.adopt_epoch(epoch);
        Ok(answer)
    }

    async fn decide_batch(&self, reqs: &[DecideRequest]) -> Result<Vec<DecideAnswer>, StoreError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.decide_batch.prepare_invoke();
        inv.arg(reqs.len());
        let remembered = self.remembered_epoch();
        for req in reqs {
            self.push_decide(&mut inv, req, remembered.as_deref().unwrap_or(""));
        }
        let reply = self.run("decide_batch", &inv).await?;
        let mut answers = Vec::with_capacity(reqs.len());
        for (epoch, answer) in parse_decide_batch(&reply, reqs)? {
            // In order, as the script did between two requests.
            self.adopt_epoch(epoch);
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn renew(&self, req: &RenewRequest) -> Result<Renewal, StoreError> {
        const OP: &str = "renew";
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.inc_key(&req.incident_id))
            .key(self.key(&["leases"]))
            .key(self.cb_key(&req.runbook))
            .arg(&req.attempt)
            .arg(req.lease_ms)
            .arg(CLAIM_GRACE_MS)
            .arg(req.max_concurrent_actions);
        let renewal = parse_renew(&self.run(OP, &inv).await?)?;
        if renewal == Renewal::Stale {
            tracing::debug!(incident_id = %req.incident_id, attempt = %req.attempt, "guardrail renew of a stale attempt ignored");
        }
        Ok(renewal)
    }

    async fn finish(&self, req: &FinishRequest) -> Result<FinishAnswer, StoreError> {
        let result = match req.result {
            ExecResult::Success => "success",
            ExecResult::Failure => "failure",
            ExecResult::ForceOpen => "force_open",
            ExecResult::NotRun => "not_run",
        };
        let mut inv = self.scripts.finish.prepare_invoke();
        inv.key(self.inc_key(&req.incident_id))
            .key(self.cb_key(&req.scope.runbook))
            .key(self.key(&["leases"]))
            .arg(&req.attempt)
            .arg(result)
            .arg(req.limits.failure_threshold);
        let reply = self.run("finish", &inv).await?;
        let (answer, current) = parse_finish(&reply)?;
        if !current {
            tracing::warn!(
                incident_id = %req.incident_id,
                attempt = %req.attempt,
                "guardrail finish from an attempt that no longer owns the incident"
            );
        }
        Ok(answer)
    }

    async fn record(&self, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let mut inv = self.scripts.record.prepare_invoke();
        inv.key(self.inc_key(incident_id))
            .arg(attempt)
            .arg(outcomes)
            .arg(ttl_ms.max(1));
        let reply = self.run("record", &inv).await?;
        if !parse_status("record", "recorded", &reply)? {
            tracing::warn!(
                incident_id,
                attempt,
                "guardrail record from an attempt that no longer owns the incident ignored"
            );
        }
        Ok(())
    }

    async fn circuit(&self, runbook: &str) -> Result<CircuitSnapshot, StoreError> {
        const OP: &str = "circuit";
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.cb_key(runbook)).arg("state").arg("failures");
        let (state, failures): (Option<String>, Option<String>) = self.command(OP, &cmd).await?;
        let state = match state {
            None => CircuitState::Closed,
            Some(s) => {
                CircuitState::parse(&s).ok_or_else(|| StoreError::Protocol(format!("{OP}: unknown state {s:?}")))?
            }
        };
        let failures = match failures {
            None => 0,
            Some(f) => number(OP, &f)?,
        };
        Ok(CircuitSnapshot { state, failures })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.command::<String>("ping", &redis::cmd("PING")).await.map(drop)
    }
}
