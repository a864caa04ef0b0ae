//! Answers to approvals, from people and from other systems (docs/design.md#approvals).
//!
//! Two doors lead to [`Engine::answer`]: the HTTP API (`GET /v1/approvals`,
//! `POST /v1/approvals/{id}/approve|deny`, bearer token) used by `remediator approve|deny`, and
//! the `remediation-approvals` Kafka topic, consumed only when `approvals.topic_enabled` is set.
//! Whoever can produce to a topic can write anything into it, so the worker never trusts the
//! broker's access control for an answer: every message on the topic carries an HMAC-SHA256
//! (`signature`) over its approval id, decision, approver and action hash, made with a key the
//! worker holds ([`HMAC_KEY_ENV`] or `approvals.hmac_key_file`); `remediator sign-answer` makes
//! one. A message without a valid signature, or without the action hash it must be bound to, is
//! refused and audited, never answered. Both doors publish every resulting outcome — refusals
//! included — to the outcomes topic before they answer or commit, so the audit trail never
//! misses an answer.
//!
//! An answer that unlocks an execution runs in its own task: a client that disconnects (or an
//! HTTP timeout) never cancels an action half-way.

use crate::engine::{Answered, Engine, EngineError};
use crate::guardrails::{Answer, Approval};
use crate::kafka::{consumer_config, producer_config, KafkaSettings};
use crate::outcome::Outcome;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use identity::{Caller, Gate};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Environment variable holding the approval API's bearer token (never put it in YAML).
pub const TOKEN_ENV: &str = crate::config::secrets::APPROVAL_TOKEN;

/// Environment variable holding the key that signs answers on the approvals topic (never put it
/// in YAML); `approvals.hmac_key_file` is the other way to give it.
pub const HMAC_KEY_ENV: &str = crate::config::secrets::APPROVAL_HMAC_KEY;

/// The shortest signing key accepted: 32 bytes, the size of the HMAC-SHA256 output, so the key
/// is never the weak part.
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// Tag at the start of every signed text: a signature made for anything else (another
/// protocol, a later version of this one) never verifies here.
const SIGNING_DOMAIN: &str = "remediator-approval-answer-v1";

/// The key that authenticates answers on the approvals topic.
#[derive(Clone)]
pub struct AnswerKey(Vec<u8>);

impl std::fmt::Debug for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerKey(..)")
    }
}

impl AnswerKey {
    /// A key from its secret text (at least [`MIN_HMAC_KEY_BYTES`] bytes); the error names
    /// `source`, the variable or file it came from, never the key.
    pub fn new(secret: &str, source: &str) -> Result<Self, String> {
        if secret.len() < MIN_HMAC_KEY_BYTES {
            return Err(format!(
                "{source}: the approval signing key must be at least {MIN_HMAC_KEY_BYTES} bytes, got {}",
                secret.len()
            ));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The key from [`HMAC_KEY_ENV`], else from `file` (`approvals.hmac_key_file`); an error
    /// when neither gives one.
    pub fn load(file: &str) -> Result<Self, String> {
        Self::load_from(std::env::var(HMAC_KEY_ENV).ok().as_deref(), file)
    }

    /// [`AnswerKey::load`] with the variable's value given (`None`: unset).
    fn load_from(env_value: Option<&str>, file: &str) -> Result<Self, String> {
        let source = if env_value.is_some_and(|v| !v.trim().is_empty()) || file.is_empty() {
            HMAC_KEY_ENV.to_string()
        } else {
            format!("approvals.hmac_key_file {file}")
        };
        match crate::config::secret_from(env_value, file).map_err(|e| e.to_string())? {
            Some(k) => Self::new(&k, &source),
            None => Err(format!("{HMAC_KEY_ENV} (or approvals.hmac_key_file) is not set")),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this never fails.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// The signature of an answer: lower-case hex HMAC-SHA256 of [`signed_text`].
    pub fn sign(&self, approval_id: &str, decision: &str, approver: &str, action_hash: &str) -> String {
        let mut mac = self.mac();
        mac.update(&signed_text(approval_id, decision, approver, action_hash));
        hex(&mac.finalize().into_bytes())
    }

    /// Check `signature` (hex) against the answer's fields, in constant time.
    pub fn verify(
        &self,
        approval_id: &str,
        decision: &str,
        approver: &str,
        action_hash: &str,
        signature: &str,
    ) -> bool {
        let Some(given) = unhex(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(&signed_text(approval_id, decision, approver, action_hash));
        mac.verify_slice(&given).is_ok()
    }

    /// A complete, signed message for the approvals topic (what `remediator sign-answer` prints).
    pub fn signed_message(&self, approval_id: &str, approve: bool, approver: &str, action_hash: &str) -> AnswerMessage {
        let decision = if approve { "approve" } else { "deny" };
        AnswerMessage {
            approval_id: approval_id.to_string(),
            decision: decision.to_string(),
            approver: approver.to_string(),
            action_hash: Some(action_hash.to_string()),
            signature: Some(self.sign(approval_id, decision, approver, action_hash)),
        }
    }
}

/// The bytes an answer's signature covers: the domain tag, then each field as its byte length,
/// `:`, the bytes and `\n`. Length prefixes make the encoding unambiguous whatever the fields
/// contain (no separator inside a field can shift a boundary).
pub fn signed_text(approval_id: &str, decision: &str, approver: &str, action_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for field in [SIGNING_DOMAIN, approval_id, decision, approver, action_hash] {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Equality of two secrets in time independent of where they differ (and of their lengths:
/// their SHA-256 digests are compared, always 32 bytes).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(a.as_bytes()).ct_eq(&Sha256::digest(b.as_bytes())).into()
}

/// Publishes outcome events to the outcomes topic and waits for the broker's acknowledgement.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    /// A producer with the worker's settings (idempotent, `acks=all`).
    pub fn new(settings: &KafkaSettings) -> Result<Self, String> {
        let producer = producer_config(settings)
            .create()
            .map_err(|e| format!("kafka producer: {e}"))?;
        Ok(Self {
            producer,
            topic: settings.outcomes_topic.clone(),
        })
    }

    /// Publish `outcomes` in order, retrying each until acknowledged or `within` has passed.
    pub async fn publish(&self, outcomes: &[Outcome], within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        for o in outcomes {
            let payload = o.to_json();
            let key = o.incident_id.clone().unwrap_or_default();
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            loop {
                let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                match self.producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => break,
                    Err((e, _)) if tokio::time::Instant::now() < deadline => {
                        warn!(error = %e, "outcome not acknowledged; retrying");
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                    Err((e, _)) => return Err(format!("outcome not acknowledged: {e}")),
                }
            }
        }
        Ok(())
    }
}

/// Answer an approval in a task of its own (never cancelled with its caller; owned by
/// `tasks`, so shutdown waits for the execution it unlocks) and publish the outcomes; the store
/// errors of [`Engine::answer`] are retried while `within` allows.
async fn answer_and_publish(
    tasks: &Shutdown,
    engine: Arc<Engine>,
    publisher: Publisher,
    id: String,
    answer: Answer,
    within: Duration,
) -> Result<Answered, String> {
    let task = tasks.spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let answered = loop {
            match engine.answer(&id, &answer).await {
                Ok(a) => break a,
                Err(EngineError::StoreUnavailable(e)) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %e, approval = %id, "store unavailable while answering; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        publisher.publish(&answered.outcomes, Duration::from_secs(60)).await?;
        Ok(answered)
    });
    task.await.map_err(|e| format!("answer task failed: {e}"))?
}

/// The body of `POST /v1/approvals/{id}/approve|deny`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Who answers (audited).
    pub approver: String,
    /// The action hash the human reviewed; when given it must match.
    #[serde(default)]
    pub action_hash: Option<String>,
}

/// The reply of the answer endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AnswerReply {
    /// The answer was accepted (approved or denied).
    pub accepted: bool,
    /// `approved`, `denied`, or why it was refused.
    pub reason: String,
    /// The outcome events it produced (already published).
    pub outcomes: Vec<Outcome>,
}

/// The HTTP approval API.
pub struct Api {
    engine: Arc<Engine>,
    publisher: Publisher,
    gate: Gate,
    /// Owner of the answer tasks (the worker's shutdown tracker).
    tasks: Shutdown,
}

#[derive(Clone)]
struct ApiState(Arc<Api>);

impl Api {
    /// An API guarded by `gate` (the bearer token from [`TOKEN_ENV`], and a trusted proxy's
    /// identity header if configured); the executions its answers unlock are spawned through
    /// `tasks`, so shutdown lets them finish.
    pub fn new(engine: Arc<Engine>, publisher: Publisher, gate: Gate, tasks: Shutdown) -> Self {
        Self {
            engine,
            publisher,
            gate,
            tasks,
        }
    }

    /// The routes, to merge into the worker's router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/approvals", get(list))
            .route("/v1/approvals/{id}/approve", post(approve))
            .route("/v1/approvals/{id}/deny", post(deny))
            .with_state(ApiState(self))
    }

    fn caller(&self, headers: &HeaderMap, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<Caller> {
        self.gate.caller(headers, peer.map(|Extension(ConnectInfo(a))| a))
    }
}

fn refuse(code: StatusCode, reason: &str) -> Response {
    (code, Json(serde_json::json!({ "accepted": false, "reason": reason }))).into_response()
}

async fn list(
    State(ApiState(api)): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if api.caller(&headers, peer).is_none() {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match api.engine.store().pending_approvals().await {
        Ok(pending) => Json::<Vec<Approval>>(pending).into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn approve(
    state: State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Json<AnswerBody>,
) -> Response {
    respond(state, peer, headers, id, body, true).await
}

async fn deny(
    state: State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Json<AnswerBody>,
) -> Response {
    respond(state, peer, headers, id, body, false).await
}

async fn respond(
    State(ApiState(api)): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AnswerBody>,
    approve: bool,
) -> Response {
    let Some(caller) = api.caller(&headers, peer) else {
        warn!(approval = %id, "approval answer without a valid bearer token or trusted identity refused");
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    };
    let answer = Answer {
        approve,
        // Behind a trusted proxy, the identity it vouches for is the approver.
        approver: caller.name(&body.approver),
        action_hash: body.action_hash,
    };
    match answer_and_publish(
        &api.tasks,
        Arc::clone(&api.engine),
        api.publisher.clone(),
        id,
        answer,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(a) => {
            let code = if a.accepted {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            (
                code,
                Json(AnswerReply {
                    accepted: a.accepted,
                    reason: a.reason,
                    outcomes: a.outcomes,
                }),
            )
                .into_response()
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// A message on the approvals topic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerMessage {
    /// The approval.
    pub approval_id: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Who answers.
    pub approver: String,
    /// The action hash reviewed: required (a message without it is refused), and it must be
    /// the approval's. Optional here only so that its absence is audited, not a parse error.
    #[serde(default)]
    pub action_hash: Option<String>,
    /// Lower-case hex HMAC-SHA256 of [`signed_text`] with the worker's key ([`AnswerKey`]).
    #[serde(default)]
    pub signature: Option<String>,
}

impl AnswerMessage {
    /// Authenticate the message with `key`: the action hash must be given and the signature
    /// must verify. The error says what was wrong (never what the right signature is).
    pub fn authenticate(&self, key: &AnswerKey) -> Result<(), String> {
        let hash = self.action_hash.as_deref().unwrap_or("");
        if hash.is_empty() {
            return Err("action_hash is required on the approvals topic".into());
        }
        let Some(signature) = self.signature.as_deref().filter(|s| !s.is_empty()) else {
            return Err("signature is missing (unauthenticated answer)".into());
        };
        if key.verify(&self.approval_id, &self.decision, &self.approver, hash, signature) {
            Ok(())
        } else {
            Err("signature does not verify (unauthenticated answer)".into())
        }
    }
}

/// The approvals consumer's librdkafka settings: the worker's (see [`consumer_config`]) in its
/// own group `<kafka.group_id>-approvals`, committing by hand, and starting at the end of the
/// topic when the group is new (`auto.offset.reset=latest`, whatever `kafka.properties` says):
/// enabling the topic for the first time must not replay every answer it ever held.
pub fn approvals_consumer_config(settings: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = consumer_config(settings);
    config
        .set("group.id", format!("{}-approvals", settings.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest");
    config
}

/// Consume the approvals topic until shutdown: authenticate, answer, publish, then commit, one
/// message at a time (answers are rare; order and exactly-one audit matter more than
/// throughput). Only an answer whose signature verifies with `key` reaches [`Engine::answer`].
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    engine: Arc<Engine>,
    publisher: Publisher,
    key: AnswerKey,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let consumer: StreamConsumer = approvals_consumer_config(settings)
        .create()
        .map_err(|e| format!("approvals consumer: {e}"))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| format!("subscribing to {topic}: {e}"))?;
    info!(topic, "consuming approval answers");
    loop {
        // Shutdown first: once it is requested no new answer is taken, even one already
        // waiting; the answer in hand (below) is finished, its execution included.
        let msg = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "approvals consumer error");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let parsed = read_answer(msg.payload(), &key);
        match parsed {
            Ok((approval_id, answer)) => {
                // Retry until the store and broker answer: skipping an answer would lose it.
                let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
                loop {
                    let r = answer_and_publish(
                        &shutdown,
                        Arc::clone(&engine),
                        publisher.clone(),
                        approval_id.clone(),
                        answer.clone(),
                        Duration::from_secs(30),
                    )
                    .await;
                    match r {
                        Ok(_) => break,
                        Err(e) if shutdown.is_triggered() => {
                            // Not committed: the next consumer of the group gets it again.
                            warn!(error = %e, approval = %approval_id, "answer not processed; left for redelivery (shutting down)");
                            return Ok(());
                        }
                        Err(e) => {
                            warn!(error = %e, approval = %approval_id, "answer not processed; retrying");
                            tokio::time::sleep(backoff.next_wait()).await;
                        }
                    }
                }
            }
            Err(refusal) => {
                let o = match refusal {
                    Refusal::Malformed(why) => {
                        warn!(reason = %why, partition = msg.partition(), offset = msg.offset(), "malformed approval answer");
                        engine.refused_answer(None, None, &why)
                    }
                    Refusal::Unauthenticated(m, why) => {
                        warn!(reason = %why, approval = %m.approval_id, partition = msg.partition(), offset = msg.offset(),
                            "unauthenticated approval answer refused");
                        // The claimed approver is not audited as the approver: nobody proved it.
                        engine.unauthenticated_answer(&m.approval_id, &m.approver, &why)
                    }
                };
                while let Err(e) = publisher
                    .publish(std::slice::from_ref(&o), Duration::from_secs(30))
                    .await
                {
                    warn!(error = %e, "could not publish the refusal; retrying");
                }
            }
        }
        if let Err(e) = consumer.commit_message(&msg, CommitMode::Sync) {
            warn!(error = %e, "could not commit the approval answer");
        }
    }
}

/// What one message on the approvals topic asks for: the approval id and an authenticated
/// answer, or why it is refused. Nothing in the message is trusted before its signature verifies.
fn read_answer(payload: Option<&[u8]>, key: &AnswerKey) -> Result<(String, Answer), Refusal> {
    let m = payload
        .ok_or_else(|| "empty message".to_string())
        .and_then(|p| serde_json::from_slice::<AnswerMessage>(p).map_err(|e| format!("not an approval answer: {e}")))
        .and_then(|m| match m.decision.as_str() {
            "approve" | "deny" => Ok(m),
            other => Err(format!("decision must be approve or deny, got {other:?}")),
        })
        .map_err(Refusal::Malformed)?;
    if let Err(why) = m.authenticate(key) {
        return Err(Refusal::Unauthenticated(Box::new(m), why));
    }
    let answer = Answer {
        approve: m.decision == "approve",
        approver: m.approver,
        action_hash: m.action_hash,
    };
    Ok((m.approval_id, answer))
}

/// Why a message on the approvals topic is not answered.
#[derive(Debug)]
enum Refusal {
    /// Not an answer at all.
    Malformed(String),
    /// An answer whose signature or action hash is missing or wrong.
    Unauthenticated(Box<AnswerMessage>, String),
}

/// `remediator approve|deny`: answer through a worker's HTTP API. Returns the reply (refusals
/// included); errors are transport or authentication problems.
pub async fn client_answer(
    url: &str,
    token: &str,
    id: &str,
    approve: bool,
    body: &AnswerBody,
) -> Result<AnswerReply, String> {
    let verb = if approve { "approve" } else { "deny" };
    // The id is a path segment: refuse anything that could leave it.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("approval id {id:?} must be letters, digits and '-'"));
    }
    let endpoint = format!("{}/v1/approvals/{id}/{verb}", url.trim_end_matches('/'));
    let reply = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(token)
        .json(body)
        // An approval may run an action with post-checks that wait: allow for them.
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let status = reply.status();
    let text = reply.text().await.map_err(|e| format!("{endpoint}: {e}"))?;
    match serde_json::from_str::<AnswerReply>(&text) {
        Ok(r) => Ok(r),
        Err(_) => Err(format!(
            "{endpoint}: HTTP {status}: {}",
            crate::incident::shorten(&text)
        )),
    }
}

/// `remediator approvals`: the pending approvals of a worker's HTTP API.
pub async fn client_pending(url: &str, token: &str) -> Result<Vec<Approval>, String> {
    let endpoint = format!("{}/v1/approvals", url.trim_end_matches('/'));
    let reply = reqwest::Client::new()
        .get(&endpoint)
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let status = reply.status();
    let text = reply.text().await.map_err(|e| format!("{endpoint}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{endpoint}: HTTP {status}: {}",
            crate::incident::shorten(&text)
        ));
    }
    serde_json::from_str(&text).map_err(|e| format!("{endpoint}: {e}"))
}

pub mod identity;
#[cfg(test)]
mod tests;
