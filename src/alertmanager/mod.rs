//! Alertmanager webhook intake: `POST /v1/alertmanager` turns firing Prometheus alerts into
//! incidents on the incidents topic, so alert rules can drive runbooks without an RCA pipeline in
//! between. The worker then handles them like any other incident (same decisions, guardrails and
//! audit); this module only translates and publishes.
//!
//! Its promises, and how they are kept:
//!
//! * **Only firing alerts act.** An alert with `status: resolved` never becomes an incident; it
//!   is counted (`remediator_alertmanager_alerts_total{status="resolved"}`) and skipped. Whether
//!   the *group* is firing does not matter: each alert carries its own status.
//! * **Retries are idempotent.** The incident id is `am-<fingerprint>-<startsAt in ms>`: the same
//!   alert firing episode always gives the same id, however often Alertmanager retries or
//!   re-notifies it, and the worker's idempotency record answers every copy after the first with
//!   `duplicate`. A new episode of the same alert (a new `startsAt`) is a new incident. The
//!   alert's `startsAt` becomes `detected_at`, so the freshness guard (`max_incident_age`) also
//!   holds for alerts that were delivered late.
//! * **200 means on the broker.** The reply is sent only after the broker acknowledged every
//!   incident of the request (`acks=all`, idempotent producer). Otherwise it is 503 and
//!   Alertmanager retries the whole notification, which the ids make harmless.
//! * **Nothing invalid is produced.** Every incident is checked with [`crate::incident::parse`]
//!   before it is produced. An alert that cannot become a valid incident (no root-cause or service
//!   label, a bad confidence annotation) is `rejected`: counted, logged and named in the reply,
//!   while the rest of the request still succeeds (retrying cannot fix an alert's labels).
//! * **Bounded and authenticated.** Bodies over [`MAX_BODY_BYTES`] get 413. Requests need
//!   `Authorization: Bearer <token>` (401 otherwise), the token coming from
//!   `REMEDIATOR_ALERTMANAGER_TOKEN` or `alertmanager.token_file`, never from the YAML config.
//!   Without a token the intake is not created at all ([`IntakeError::Unauthenticated`], so the
//!   worker refuses to start), unless the operator opted in with
//!   `alertmanager.allow_unauthenticated: true` (a warning at start): an open intake lets anyone
//!   who reaches the port create incidents that runbooks act on.

use crate::config::{secrets, AlertmanagerConfig};
use crate::kafka::{producer_config, KafkaSettings};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Path of the webhook (configure it as a `webhook_configs` URL in Alertmanager).
pub const PATH: &str = "/v1/alertmanager";
/// Environment variable holding the optional bearer token (a secret: never in the YAML file).
pub const TOKEN_ENV: &str = secrets::ALERTMANAGER_TOKEN;
/// Largest accepted request body. Alertmanager's own notifications stay far below it (a group is
/// truncated by `max_alerts`); anything larger is refused before it is parsed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The `status` values of `remediator_alertmanager_alerts_total`: produced and acknowledged,
/// skipped as resolved, not convertible into an incident, not acknowledged by the broker.
pub const STATUSES: [&str; 4] = ["firing", "resolved", "rejected", "failed"];
/// Webhook payload version this intake understands.
const WEBHOOK_VERSION: &str = "4";

/// The webhook body (Alertmanager webhook payload, version 4). Fields this intake does not use
/// (`groupLabels`, `commonLabels`, `externalURL`, …) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    /// Payload version; must be `"4"`.
    pub version: String,
    /// The alerts of the group, each with its own status.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    #[serde(default)]
    pub status: String,
    /// The alert's labels (`alertname`, `service`, `namespace`, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations (`confidence`, `summary`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When this firing episode began (RFC 3339).
    #[serde(default, rename = "startsAt")]
    pub starts_at: String,
    /// Alertmanager's hash of the labels: the alert's identity.
    #[serde(default)]
    pub fingerprint: String,
}

/// What became of one alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// A firing alert, as a validated incident: its id (also the Kafka key) and JSON payload.
    Incident {
        /// Incident id.
        id: String,
        /// The incident JSON, already accepted by [`crate::incident::parse`].
        payload: Vec<u8>,
    },
    /// A resolved alert: never acted on.
    Resolved,
    /// Not convertible into a valid incident; the reason names the label or field.
    Rejected(String),
}

/// Turn one alert into an incident, following `config`'s label mapping.
///
/// Pure (no I/O, no clock): the same alert always gives the same id and payload.
pub fn map_alert(alert: &Alert, config: &AlertmanagerConfig) -> Mapped {
    match alert.status.as_str() {
        "firing" => {}
        "resolved" => return Mapped::Resolved,
        other => return Mapped::Rejected(format!("status: must be firing or resolved, got {other:?}")),
    }
    let m = &config.label_mapping;
    let label = |names: &[String]| {
        names
            .iter()
            .filter_map(|n| alert.labels.get(n))
            .find(|v| !v.is_empty())
            .cloned()
    };
    let Some(root_cause) = label(&m.root_cause) else {
        return Mapped::Rejected(format!("root_cause: none of the labels {:?} is set", m.root_cause));
    };
    let Some(service) = label(&m.service) else {
        return Mapped::Rejected(format!("service: none of the labels {:?} is set", m.service));
    };
    let confidence = match alert.annotations.get(&config.confidence_annotation) {
        Some(text) if !config.confidence_annotation.is_empty() => match text.trim().parse::<f64>() {
            Ok(c) if (0.0..=1.0).contains(&c) => c,
            _ => {
                return Mapped::Rejected(format!(
                    "annotation {:?}: must be a number between 0 and 1, got {text:?}",
                    config.confidence_annotation
                ))
            }
        },
        _ => config.default_confidence,
    };
    let starts_at = match DateTime::parse_from_rfc3339(&alert.starts_at) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => return Mapped::Rejected(format!("startsAt: must be an RFC 3339 time ({e})")),
    };
    let fingerprint = fingerprint(alert);
    let id = format!("am-{fingerprint}-{}", starts_at.timestamp_millis());
    let mut context = Map::new();
    for (key, names) in [
        ("namespace", &m.namespace),
        ("pod_name", &m.pod),
        ("deployment", &m.deployment),
    ] {
        if let Some(v) = label(names) {
            context.insert(key.into(), v.into());
        }
    }
    if let Some(name) = alert.labels.get("alertname") {
        context.insert("alertname".into(), name.clone().into());
    }
    context.insert("alert_fingerprint".into(), fingerprint.into());
    let incident = json!({
        "id": id,
        "root_cause": root_cause,
        "confidence": confidence,
        "service": service,
        "context": context,
        "detected_at": starts_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    });
    let payload = incident.to_string().into_bytes();
    match crate::incident::parse(&payload) {
        Ok(_) => Mapped::Incident { id, payload },
        Err((rejection, _)) => Mapped::Rejected(format!("incident {rejection}")),
    }
}

/// Alertmanager's fingerprint (16 hex digits) when it sent a sane one; otherwise a stable hash
/// of the sorted labels, so the id stays stable either way.
fn fingerprint(alert: &Alert) -> String {
    let fp = &alert.fingerprint;
    if !fp.is_empty() && fp.len() <= 32 && fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return fp.to_ascii_lowercase();
    }
    let mut text = String::new();
    for (k, v) in &alert.labels {
        text.push_str(k);
        text.push('\u{1}');
        text.push_str(v);
        text.push('\u{2}');
    }
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes())
        .simple()
        .to_string();
    hash[..16].to_string()
}

/// A configuration problem of the intake.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// librdkafka refused the producer configuration (a bad `kafka.properties` entry).
    #[error("cannot create the alertmanager intake's kafka producer: {0}")]
    Producer(#[from] rdkafka::error::KafkaError),
    /// The intake is enabled without a bearer token and without the explicit opt-in.
    #[error(
        "alertmanager.enabled is true but no bearer token is set: set {TOKEN_ENV} (or \
         alertmanager.token_file), or set alertmanager.allow_unauthenticated: true to accept \
         unauthenticated requests"
    )]
    Unauthenticated,
    /// `alertmanager.token_file` could not be read.
    #[error("alertmanager.token_file: {0}")]
    TokenFile(String),
}

/// Refuse an intake without a token unless `config.allow_unauthenticated` says so. Called by
/// [`Intake::new`]; public so configuration checks (compose, Helm) can ask the same question.
pub fn require_token(config: &AlertmanagerConfig, token: Option<&str>) -> Result<(), IntakeError> {
    match token.map(str::trim) {
        Some(t) if !t.is_empty() => Ok(()),
        _ if config.allow_unauthenticated => Ok(()),
        _ => Err(IntakeError::Unauthenticated),
    }
}

/// The intake: mapping, producer and metrics. One per process; share it as `Arc<Intake>`.
pub struct Intake {
    config: AlertmanagerConfig,
    topic: String,
    producer: FutureProducer,
    token: Option<String>,
    metrics: Metrics,
}

/// An alert that could not become an incident.
#[derive(Debug, Serialize)]
struct RejectedAlert {
    fingerprint: String,
    reason: String,
}

/// The reply body: what became of each alert of the request.
#[derive(Debug, Default, Serialize)]
struct Reply {
    /// Incidents acknowledged by the broker (ids).
    produced: Vec<String>,
    /// Resolved alerts skipped.
    resolved: usize,
    /// Alerts that could not become incidents.
    rejected: Vec<RejectedAlert>,
    /// Incidents the broker did not acknowledge (then the status is 503).
    failed: Vec<String>,
}

impl Intake {
    /// Create the intake producing to `kafka.incidents_topic`. `token` (see [`token`]) is the
    /// bearer token every request must carry; `None` or empty is refused
    /// ([`IntakeError::Unauthenticated`]) unless `config.allow_unauthenticated`, which leaves
    /// the endpoint open (protect it by network).
    pub fn new(
        config: &AlertmanagerConfig,
        kafka: &KafkaSettings,
        token: Option<String>,
        metrics: Metrics,
    ) -> Result<Self, IntakeError> {
        require_token(config, token.as_deref())?;
        // The worker's producer (idempotent, acks=all), but a broker outage fails the request
        // within the delivery timeout, so Alertmanager retries instead of its own webhook
        // timeout expiring first. Set after `kafka.properties`: this bound is the intake's own.
        let mut c = producer_config(kafka);
        c.set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().max(1).to_string(),
        );
        // Every status exported from the start (at 0), so increase() in alert rules sees the
        // first alert of each kind.
        for status in STATUSES {
            metrics.alertmanager_alerts.with_label_values(&[status]).inc_by(0);
        }
        Ok(Self {
            config: config.clone(),
            topic: kafka.incidents_topic.clone(),
            producer: c.create()?,
            // Secrets mounted from files often end in a newline.
            token: token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            metrics,
        })
    }

    /// The route (`POST /v1/alertmanager`, body limit included), to merge into the HTTP router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route(PATH, post(handle))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim());
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    fn count(&self, status: &str, n: usize) {
        if n > 0 {
            self.metrics
                .alertmanager_alerts
                .with_label_values(&[status])
                .inc_by(n as u64);
        }
    }

    /// Map every alert, produce the incidents concurrently and wait for all acknowledgements.
    async fn accept(&self, notification: Notification) -> (StatusCode, Reply) {
        let mut reply = Reply::default();
        let mut incidents = Vec::new();
        for alert in &notification.alerts {
            match map_alert(alert, &self.config) {
                Mapped::Incident { id, payload } => incidents.push((id, payload)),
                Mapped::Resolved => reply.resolved += 1,
                Mapped::Rejected(reason) => {
                    warn!(fingerprint = %alert.fingerprint, alertname = ?alert.labels.get("alertname"), %reason,
                        "alert rejected: it cannot become a valid incident");
                    reply.rejected.push(RejectedAlert {
                        fingerprint: alert.fingerprint.clone(),
                        reason,
                    });
                }
            }
        }
        let sends = incidents.iter().map(|(id, payload)| {
            let record = FutureRecord::to(&self.topic)
                .key(id.as_str())
                .payload(payload.as_slice());
            // Timeout::Never only waits out a full local queue; message.timeout.ms bounds delivery.
            self.producer.send(record, Timeout::Never)
        });
        let results = futures::future::join_all(sends).await;
        for ((id, _), result) in incidents.iter().zip(results) {
            match result {
                Ok(_) => {
                    info!(incident_id = %id, topic = %self.topic, "alert produced as incident");
                    reply.produced.push(id.clone());
                }
                Err((e, _)) => {
                    warn!(incident_id = %id, topic = %self.topic, error = %e, "incident not acknowledged by the broker");
                    reply.failed.push(id.clone());
                }
            }
        }
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            error!(%code, %reason, "alertmanager intake producer failed fatally; restart the worker");
        }
        self.count("firing", reply.produced.len());
        self.count("resolved", reply.resolved);
        self.count("rejected", reply.rejected.len());
        self.count("failed", reply.failed.len());
        let status = if reply.failed.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, reply)
    }
}

async fn handle(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    if !intake.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}\n"),
            )
                .into_response()
        }
    };
    if notification.version != WEBHOOK_VERSION {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "webhook payload version {:?} is not supported (expected \"{WEBHOOK_VERSION}\")\n",
                notification.version
            ),
        )
            .into_response();
    }
    let (status, reply) = intake.accept(notification).await;
    (status, Json(reply)).into_response()
}

/// Compare without an early exit, so response times do not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ x);
    }
    diff == 0
}

/// The intake's bearer token: [`TOKEN_ENV`], else the contents of `alertmanager.token_file`
/// (trimmed; blank is none).
pub fn token(config: &AlertmanagerConfig) -> Result<Option<String>, IntakeError> {
    crate::config::secret(TOKEN_ENV, &config.token_file).map_err(|e| IntakeError::TokenFile(e.to_string()))
}

#[cfg(test)]
mod tests;
