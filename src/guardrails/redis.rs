//! The production guardrail store: Redis, one Lua script per call, Redis `TIME`.
//!
//! Every replica asks the same Redis, and every question is one atomic script (one `EVALSHA`
//! round trip; `SCRIPT LOAD` only after a `NOSCRIPT`, which is what
//! [`redis::ScriptInvocation::invoke_async`] does), so limits hold exactly across replicas while
//! Redis keeps its acknowledged writes. The scripts live beside this file (`decide.lua`,
//! `renew.lua`, `finish.lua`, `record.lua`), each opening with the keys, arguments and reply it
//! uses; `memory.rs` mirrors them for the single-process store.
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
//! [`ConnectionManager`] (one multiplexed connection, reconnected in the background), created
//! lazily so a worker can start while Redis is down and become ready when it returns.

use super::memory::CLAIM_GRACE_MS;
use super::topology::{Backend, Conn, Topology};
use super::{
    Admission, Answer, AnswerResult, Approval, ApprovalState, CircuitSnapshot, CircuitState, DecideAnswer,
    DecideRequest, ExecResult, FinishAnswer, FinishRequest, Guardrail, GuardrailStore, LedgerStore, PendingSummary,
    RenewRequest, Renewal, StoreError, TrustStats,
};
use redis::{ErrorKind, RedisError, Script, ScriptInvocation, Value};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// The four scripts, hashed once (their SHA1 is what `EVALSHA` sends).
struct Scripts {
    decide: Script,
    renew: Script,
    finish: Script,
    record: Script,
    approval_create: Script,
    approval_answer: Script,
    approval_pending: Script,
    approval_summary: Script,
    trust_record: Script,
    init_epoch: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            decide: Script::new(include_str!("decide.lua")),
            renew: Script::new(include_str!("renew.lua")),
            finish: Script::new(include_str!("finish.lua")),
            record: Script::new(include_str!("record.lua")),
            approval_create: Script::new(include_str!("approval_create.lua")),
            approval_answer: Script::new(include_str!("approval_answer.lua")),
            approval_pending: Script::new(include_str!("approval_pending.lua")),
            approval_summary: Script::new(include_str!("approval_summary.lua")),
            trust_record: Script::new(include_str!("trust_record.lua")),
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

/// A script's reply as the flat array of strings every script returns.
fn strings(op: &str, v: Value) -> Result<Vec<String>, StoreError> {
    let Value::Array(items) = v else {
        return Err(StoreError::Protocol(format!("{op}: expected an array, got {v:?}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(b) => {
                String::from_utf8(b).map_err(|e| StoreError::Protocol(format!("{op}: reply is not UTF-8: {e}")))
            }
            Value::SimpleString(s) => Ok(s),
            other => Err(StoreError::Protocol(format!("{op}: expected a string, got {other:?}"))),
        })
        .collect()
}

fn flag(op: &str, s: &str) -> Result<bool, StoreError> {
    match s {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(StoreError::Protocol(format!("{op}: expected 0 or 1, got {s:?}"))),
    }
}

fn number<T: std::str::FromStr>(op: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Protocol(format!("{op}: expected a number, got {s:?}")))
}

/// `decide.lua`'s reply: the epoch it read (empty if none) and the answer.
fn parse_decide(reply: &[String]) -> Result<(&str, DecideAnswer), StoreError> {
    const OP: &str = "decide";
    let [epoch, kind, rest @ ..] = reply else {
        return Err(StoreError::Protocol(format!("{OP}: short reply {reply:?}")));
    };
    let answer = match (kind.as_str(), rest) {
        ("recorded", []) => DecideAnswer::Recorded,
        ("allowed", [probe, conservative]) => DecideAnswer::Allowed {
            probe: flag(OP, probe)?,
            conservative: flag(OP, conservative)?,
        },
        ("blocked", [guardrail, detail]) => DecideAnswer::Blocked {
            guardrail: Guardrail::parse(guardrail)
                .ok_or_else(|| StoreError::Protocol(format!("{OP}: unknown guardrail {guardrail:?}")))?,
            detail: detail.clone(),
        },
        ("duplicate", [outcomes, same_source]) => DecideAnswer::Duplicate {
            outcomes: outcomes.clone(),
            same_source: flag(OP, same_source)?,
        },
        ("in_progress", [worker, retry_after_ms]) => DecideAnswer::InProgress {
            worker: worker.clone(),
            retry_after_ms: number(OP, retry_after_ms)?,
        },
        ("interrupted", [worker]) => DecideAnswer::Interrupted { worker: worker.clone() },
        _ => return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}"))),
    };
    Ok((epoch, answer))
}

/// `finish.lua`'s reply: the answer and whether the attempt still owned the incident.
fn parse_finish(reply: &[String]) -> Result<(FinishAnswer, bool), StoreError> {
    const OP: &str = "finish";
    let [state, failures, opened, owner] = reply else {
        return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}")));
    };
    let circuit = CircuitState::parse(state)
        .ok_or_else(|| StoreError::Protocol(format!("{OP}: unknown circuit state {state:?}")))?;
    let current = match owner.as_str() {
        "current" => true,
        "stale" => false,
        _ => return Err(StoreError::Protocol(format!("{OP}: unexpected owner {owner:?}"))),
    };
    Ok((
        FinishAnswer {
            circuit,
            failures: number(OP, failures)?,
            opened: flag(OP, opened)?,
        },
        current,
    ))
}

/// The `renewed`/`recorded` or `stale` status of `renew.lua` and `record.lua`.
fn parse_status(op: &str, ok: &str, reply: &[String]) -> Result<bool, StoreError> {
    match reply {
        [s] if s == ok => Ok(true),
        [s] if s == "stale" => Ok(false),
        _ => Err(StoreError::Protocol(format!("{op}: unexpected reply {reply:?}"))),
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

    /// Run one plain command within the timeout.
    async fn command<T: redis::FromRedisValue>(&self, op: &str, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.call(op, |mut c| async move { cmd.query_async::<T>(&mut c).await })
            .await
    }
}

/// Rebuild an approval from its immutable JSON and its mutable fields.
fn approval_from(
    op: &str,
    json: &str,
    state: &str,
    approver: &str,
    created: &str,
    expires: &str,
) -> Result<Approval, StoreError> {
    let mut a: Approval =
        serde_json::from_str(json).map_err(|e| StoreError::Protocol(format!("{op}: approval json: {e}")))?;
    a.state = ApprovalState::parse(state).ok_or_else(|| StoreError::Protocol(format!("{op}: state {state:?}")))?;
    a.approver = (!approver.is_empty()).then(|| approver.to_string());
    a.created_at_ms = number(op, created)?;
    a.expires_at_ms = number(op, expires)?;
    Ok(a)
}

#[async_trait::async_trait]
impl LedgerStore for RedisStore {
    async fn create_approval(&self, approval: &Approval, ttl_ms: u64) -> Result<Approval, StoreError> {
        let mut a = approval.clone();
        a.state = ApprovalState::Pending;
        a.approver = None;
        let json = serde_json::to_string(&a).map_err(|e| StoreError::Protocol(format!("approval json: {e}")))?;
        let mut inv = self.scripts.approval_create.prepare_invoke();
        inv.key(self.key(&["appr", &a.id]))
            .key(self.key(&["approvals"]))
            .key(self.key(&["approvals_created"]))
            .key(self.key(&["apprg", &a.group]));
        inv.arg(escape(&a.id))
            .arg(&json)
            .arg(&a.action_hash)
            .arg(ttl_ms)
            .arg(if a.group.is_empty() { "" } else { "1" });
        let reply = self.run("create approval", &inv).await?;
        let [verdict, id, created, expires] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("create approval: reply {reply:?}")));
        };
        if verdict != "created" && verdict != "joined" {
            return Err(StoreError::Protocol(format!("create approval: verdict {verdict:?}")));
        }
        a.id = unescape(id);
        a.created_at_ms = number("create approval", created)?;
        a.expires_at_ms = number("create approval", expires)?;
        Ok(a)
    }

    async fn answer_approval(&self, id: &str, answer: &Answer) -> Result<AnswerResult, StoreError> {
        let op = "answer approval";
        let mut inv = self.scripts.approval_answer.prepare_invoke();
        inv.key(self.key(&["appr", id]))
            .key(self.key(&["approvals"]))
            .key(self.key(&["approvals_created"]));
        inv.arg(escape(id))
            .arg(if answer.approve { "approved" } else { "denied" })
            .arg(&answer.approver)
            .arg(answer.action_hash.as_deref().unwrap_or(""));
        let reply = self.run(op, &inv).await?;
        let [verdict, json, state, approver, created, expires] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("{op}: reply {reply:?}")));
        };
        if verdict == "not_found" {
            return Ok(AnswerResult::NotFound);
        }
        let a = approval_from(op, json, state, approver, created, expires)?;
        Ok(match verdict.as_str() {
            "ok" => AnswerResult::Accepted(a),
            "again" => AnswerResult::Repeated(a),
            "answered" => AnswerResult::AlreadyAnswered(a),
            "expired" => AnswerResult::Expired(a),
            "tampered" => AnswerResult::Tampered(a),
            other => return Err(StoreError::Protocol(format!("{op}: verdict {other:?}"))),
        })
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let op = "pending approvals";
        // Read the index first, then let the script read exactly those hashes (declared keys;
        // the script re-checks each against the index and the clock).
        let ids: Vec<String> = self
            .command(op, redis::cmd("ZRANGE").arg(self.key(&["approvals"])).arg(0).arg(-1))
            .await?;
        let mut inv = self.scripts.approval_pending.prepare_invoke();
        inv.key(self.key(&["approvals"]));
        let prefix = self.key(&["appr", ""]);
        for id in &ids {
            inv.key(format!("{prefix}{id}")).arg(id);
        }
        let reply = self.run(op, &inv).await?;
        if reply.len() % 3 != 0 {
            return Err(StoreError::Protocol(format!("{op}: {} fields", reply.len())));
        }
        reply
            .chunks(3)
            .map(|c| approval_from(op, &c[0], "pending", "", &c[1], &c[2]))
            .collect()
    }

    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        let op = "pending summary";
        let mut inv = self.scripts.approval_summary.prepare_invoke();
        inv.key(self.key(&["approvals"])).key(self.key(&["approvals_created"]));
        let reply = self.run(op, &inv).await?;
        let [count, oldest] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("{op}: reply {reply:?}")));
        };
        let oldest_created_ms = if oldest.is_empty() {
            None
        } else {
            // A zset score comes back as a float's text.
            let ms: f64 = number(op, oldest)?;
            Some(ms as i64)
        };
        Ok(PendingSummary {
            count: number(op, count)?,
            oldest_created_ms,
        })
    }

    async fn record_trust(&self, runbook: &str, success: bool, window: u32) -> Result<TrustStats, StoreError> {
        let mut inv = self.scripts.trust_record.prepare_invoke();
        inv.key(self.key(&["trust", runbook]))
            .arg(if success { "1" } else { "0" })
            .arg(window.max(1));
        let reply = self.run("record trust", &inv).await?;
        let [ok, total] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("record trust: reply {reply:?}")));
        };
        Ok(TrustStats {
            successes: number("record trust", ok)?,
            total: number("record trust", total)?,
        })
    }

    async fn trust(&self, runbook: &str, window: u32) -> Result<TrustStats, StoreError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.key(&["trust", runbook]))
            .arg(0)
            .arg(i64::from(window.max(1)) - 1);
        let all: Vec<String> = self.command("trust", &cmd).await?;
        Ok(TrustStats {
            successes: all.iter().filter(|v| *v == "1").count() as u32,
            total: all.len() as u32,
        })
    }

    async fn demote(&self, runbook: &str, reason: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&["demoted", runbook])).arg(reason).arg("NX");
        let set: Option<String> = self.command("demote", &cmd).await?;
        Ok(set.is_some())
    }

    async fn demotion(&self, runbook: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(&["demoted", runbook]));
        self.command("demotion", &cmd).await
    }

    async fn promote(&self, runbook: &str) -> Result<bool, StoreError> {
        // A promotion starts a fresh record: the evidence that demoted it is not held against it.
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(&["demoted", runbook]));
        let n: i64 = self.command("promote", &cmd).await?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(&["trust", runbook]));
        self.command::<i64>("promote", &cmd).await?;
        Ok(n > 0)
    }
}

#[async_trait::async_trait]
impl GuardrailStore for RedisStore {
    async fn decide(&self, req: &DecideRequest) -> Result<DecideAnswer, StoreError> {
        let mut inv = self.scripts.decide.prepare_invoke();
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
            .key(self.key(&["trate", runbook, target]));
        let remembered = self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
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
        inv.arg(remembered.as_deref().unwrap_or(""))
            .arg(&self.candidate_epoch)
            .arg(target);

        let reply = self.run("decide", &inv).await?;
        let (epoch, answer) = parse_decide(&reply)?;
        self.adopt_epoch(epoch);
        Ok(answer)
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
        let reply = self.run(OP, &inv).await?;
        let renewal = match reply.as_slice() {
            [s] if s == "renewed" => Renewal::Renewed,
            [s, probe] if s == "reacquired" => Renewal::Reacquired {
                probe: flag(OP, probe)?,
            },
            [s] if s == "lapsed" => Renewal::Lapsed,
            [s] if s == "stale" => Renewal::Stale,
            _ => return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}"))),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key an approval script touches is one of its declared KEYS (Redis Cluster routes
    /// and ACLs check declared keys; a key built inside a script bypasses both).
    #[test]
    fn approval_scripts_touch_only_declared_keys() {
        for (name, text) in [
            ("approval_create.lua", include_str!("approval_create.lua")),
            ("approval_answer.lua", include_str!("approval_answer.lua")),
            ("approval_pending.lua", include_str!("approval_pending.lua")),
            ("approval_summary.lua", include_str!("approval_summary.lua")),
        ] {
            for call in text.split("redis.call(").skip(1) {
                let end = call.find([',', ')']).unwrap_or(call.len());
                let command = &call[..end];
                if command == "'TIME'" {
                    continue;
                }
                let key = call[end..].trim_start_matches(',').trim_start();
                assert!(
                    key.starts_with("KEYS["),
                    "{name}: redis.call({command}, {} …) uses an undeclared key",
                    key.lines().next().unwrap_or("")
                );
            }
        }
    }

    #[test]
    fn escape_keeps_key_parts_unambiguous() {
        assert_eq!(escape("a:b"), "a%3Ab");
        assert_eq!(escape("100%:x"), "100%25%3Ax");
        assert_ne!(
            format!("{}:{}", escape("a:b"), escape("c")),
            format!("{}:{}", escape("a"), escape("b:c"))
        );
    }

    #[test]
    fn decide_replies_parse_and_reject_bad_shapes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let reply = s(&["e1", "allowed", "1", "0"]);
        let (epoch, answer) = parse_decide(&reply).expect("allowed");
        assert_eq!(epoch, "e1");
        assert_eq!(
            answer,
            DecideAnswer::Allowed {
                probe: true,
                conservative: false
            }
        );
        let (_, answer) = parse_decide(&s(&["", "blocked", "cooldown", "cooldown active (3s remaining)"])).expect("b");
        assert_eq!(
            answer,
            DecideAnswer::Blocked {
                guardrail: Guardrail::Cooldown,
                detail: "cooldown active (3s remaining)".into()
            }
        );
        for bad in [
            s(&[]),
            s(&["", "allowed", "1"]),
            s(&["", "allowed", "yes", "0"]),
            s(&["", "blocked", "nope", "x"]),
            s(&["", "in_progress", "w", "-5"]),
            s(&["", "teleported"]),
        ] {
            assert!(matches!(parse_decide(&bad), Err(StoreError::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn finish_replies_parse_and_reject_bad_shapes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, current) = parse_finish(&s(&["OPEN", "3", "1", "current"])).expect("finish");
        assert_eq!(
            a,
            FinishAnswer {
                circuit: CircuitState::Open,
                failures: 3,
                opened: true
            }
        );
        assert!(current);
        assert!(matches!(
            parse_finish(&s(&["AJAR", "3", "1", "current"])),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(
            parse_finish(&s(&["OPEN", "3", "1"])),
            Err(StoreError::Protocol(_))
        ));
    }
}
