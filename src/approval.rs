//! Answers to approvals, from people and from other systems (DESIGN.md §4a).
//!
//! Two doors lead to [`Engine::answer`]: the HTTP API (`GET /v1/approvals`,
//! `POST /v1/approvals/{id}/approve|deny`, bearer token) used by `remediator approve|deny`, and
//! the `remediation-approvals` Kafka topic (access controlled by Kafka's ACLs). Both publish
//! every resulting outcome — refusals included — to the outcomes topic before they answer or
//! commit, so the audit trail never misses an answer.
//!
//! An answer that unlocks an execution runs in its own task: a client that disconnects (or an
//! HTTP timeout) never cancels an action half-way.

use crate::guardrails::{Answer, Approval};
use crate::kafka::{consumer_config, producer_config, KafkaSettings};
use crate::outcome::Outcome;
use crate::pipeline::{Answered, Engine, EngineError};
use crate::shutdown::Shutdown;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Environment variable holding the approval API's bearer token (never put it in YAML).
pub const TOKEN_ENV: &str = "REMEDIATOR_APPROVAL_TOKEN";

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
            loop {
                let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                match self.producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => break,
                    Err((e, _)) if tokio::time::Instant::now() < deadline => {
                        warn!(error = %e, "outcome not acknowledged; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
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
        let answered = loop {
            match engine.answer(&id, &answer).await {
                Ok(a) => break a,
                Err(EngineError::StoreUnavailable(e)) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %e, approval = %id, "store unavailable while answering; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
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
    token: String,
    /// Owner of the answer tasks (the worker's shutdown tracker).
    tasks: Shutdown,
}

#[derive(Clone)]
struct ApiState(Arc<Api>);

impl Api {
    /// An API guarded by `token` (a bearer token from [`TOKEN_ENV`]); the executions its
    /// answers unlock are spawned through `tasks`, so shutdown lets them finish.
    pub fn new(engine: Arc<Engine>, publisher: Publisher, token: String, tasks: Shutdown) -> Self {
        Self {
            engine,
            publisher,
            token,
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

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Compare every byte so the time taken does not reveal a matching prefix.
        given.len() == self.token.len() && given.bytes().zip(self.token.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }
}

fn refuse(code: StatusCode, reason: &str) -> Response {
    (code, Json(serde_json::json!({ "accepted": false, "reason": reason }))).into_response()
}

async fn list(State(ApiState(api)): State<ApiState>, headers: HeaderMap) -> Response {
    if !api.authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match api.engine.store().pending_approvals().await {
        Ok(pending) => Json::<Vec<Approval>>(pending).into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn approve(state: State<ApiState>, headers: HeaderMap, id: Path<String>, body: Json<AnswerBody>) -> Response {
    respond(state, headers, id, body, true).await
}

async fn deny(state: State<ApiState>, headers: HeaderMap, id: Path<String>, body: Json<AnswerBody>) -> Response {
    respond(state, headers, id, body, false).await
}

async fn respond(
    State(ApiState(api)): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AnswerBody>,
    approve: bool,
) -> Response {
    if !api.authorized(&headers) {
        warn!(approval = %id, "approval answer without a valid bearer token refused");
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let answer = Answer {
        approve,
        approver: body.approver,
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
    /// The action hash reviewed (optional).
    #[serde(default)]
    pub action_hash: Option<String>,
}

/// Consume the approvals topic until shutdown: answer, publish, then commit, one message at a
/// time (answers are rare; order and exactly-one audit matter more than throughput).
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    engine: Arc<Engine>,
    publisher: Publisher,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let mut config = consumer_config(settings);
    config
        .set("group.id", format!("{}-approvals", settings.group_id))
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().map_err(|e| format!("approvals consumer: {e}"))?;
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
        let parsed = msg
            .payload()
            .ok_or_else(|| "empty message".to_string())
            .and_then(|p| {
                serde_json::from_slice::<AnswerMessage>(p).map_err(|e| format!("not an approval answer: {e}"))
            })
            .and_then(|m| match m.decision.as_str() {
                "approve" | "deny" => Ok(m),
                other => Err(format!("decision must be approve or deny, got {other:?}")),
            });
        match parsed {
            Ok(m) => {
                let answer = Answer {
                    approve: m.decision == "approve",
                    approver: m.approver,
                    action_hash: m.action_hash,
                };
                // Retry until the store and broker answer: skipping an answer would lose it.
                loop {
                    let r = answer_and_publish(
                        &shutdown,
                        Arc::clone(&engine),
                        publisher.clone(),
                        m.approval_id.clone(),
                        answer.clone(),
                        Duration::from_secs(30),
                    )
                    .await;
                    match r {
                        Ok(_) => break,
                        Err(e) if shutdown.is_triggered() => {
                            // Not committed: the next consumer of the group gets it again.
                            warn!(error = %e, approval = %m.approval_id, "answer not processed; left for redelivery (shutting down)");
                            return Ok(());
                        }
                        Err(e) => {
                            warn!(error = %e, approval = %m.approval_id, "answer not processed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            Err(why) => {
                warn!(reason = %why, partition = msg.partition(), offset = msg.offset(), "malformed approval answer");
                let o = engine.refused_answer(None, None, &why);
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
