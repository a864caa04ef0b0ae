//! Worker configuration: one YAML file, every key overridable by `REMEDIATOR_<SECTION>_<KEY>`.
//!
//! Precedence is flag > environment > file > default (docs/configuration.md). Unknown keys in the
//! file are errors, and so are unknown `REMEDIATOR_*` variables whose first word is one the
//! configuration claims: a section (`REMEDIATOR_APPROVALS_TTLL`), a top-level key
//! (`REMEDIATOR_DRY_RUNN`) or a secret ([`secrets`]). The list is derived from [`Config`] itself,
//! so a new section is covered the day it is added.
//!
//! Values are typed at load, once: durations (`300s`, `15m`, `1h`, `500ms`, `7d` or a plain
//! number of seconds) are [`Duration`]s, the executor and the log format enums. This module
//! depends on nothing above it; the engine and the Kafka clients take their settings from it.
//!
//! One concern per file, so each is found in one hop:
//!
//! * this file: the typed sections, their defaults, [`ConfigError`];
//! * `load.rs`: the layers (defaults, file, environment, flags) merged into one tree that keeps
//!   every file value's position, then typed; the list of keys and their variables;
//! * `validate.rs`: the rules across keys that types alone cannot state;
//! * `duration.rs`: how durations are read and written;
//! * [`secrets`]: the variables that carry secrets and how a secret is read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod duration;
mod load;
mod proxy;
pub mod secrets;
mod validate;

pub use duration::{format_duration, parse_duration};
pub use proxy::TrustedProxy;
pub use secrets::{secret, secret_from};

/// Default config file path.
pub const DEFAULT_PATH: &str = "config/remediator.yaml";

/// Which executor acts (`executor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ExecutorKind {
    /// The Kubernetes API server.
    Kubernetes,
    /// A simulated cluster: nothing real is touched.
    Simulated,
}

impl TryFrom<String> for ExecutorKind {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        match v.as_str() {
            "kubernetes" => Ok(Self::Kubernetes),
            "simulated" => Ok(Self::Simulated),
            _ => Err(format!("must be kubernetes or simulated, got {v:?}")),
        }
    }
}

impl From<ExecutorKind> for String {
    fn from(k: ExecutorKind) -> String {
        k.as_str().into()
    }
}

impl ExecutorKind {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Simulated => "simulated",
        }
    }
}

impl PartialEq<&str> for ExecutorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable text.
    Text,
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        match v.as_str() {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err(format!("must be json or text, got {v:?}")),
        }
    }
}

impl From<LogFormat> for String {
    fn from(f: LogFormat) -> String {
        f.as_str().into()
    }
}

impl LogFormat {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
        }
    }
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Input topic.
    pub incidents_topic: String,
    /// Audit topic.
    pub outcomes_topic: String,
    /// Dead-letter topic for poison messages.
    pub dlq_topic: String,
    /// Approval answers topic.
    pub approvals_topic: String,
    /// Incidents processed concurrently (across partitions; each partition stays in order).
    pub max_in_flight: usize,
    /// At most this many of a partition's waiting incidents are decided with one question to
    /// the guardrail store (one round trip); 1 decides them one at a time. A lone incident never
    /// waits for company.
    pub decide_batch: usize,
    /// Extra librdkafka properties for both clients (TLS, SASL, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "remediator".into(),
            incidents_topic: "incidents".into(),
            outcomes_topic: "remediation-outcomes".into(),
            dlq_topic: "incidents-dlq".into(),
            approvals_topic: "remediation-approvals".into(),
            max_in_flight: 16,
            decide_batch: 16,
            properties: BTreeMap::new(),
        }
    }
}

/// Redis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL.
    pub url: String,
    /// Per-call timeout; a dead Redis fails a call this fast.
    pub timeout_ms: u64,
    /// Key namespace (hash tag) of all guardrail state.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            timeout_ms: 200,
            key_prefix: "remediator".into(),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

/// Guardrail defaults (docs/design.md#guardrails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsConfig {
    /// Executions in flight across all replicas.
    pub max_concurrent_actions: u32,
    /// Distinct services touched per window.
    pub max_affected_services: u32,
    /// Window of `max_affected_services`.
    #[serde(with = "duration")]
    pub affected_services_window: Duration,
    /// Consecutive failures that open a runbook's circuit.
    pub failure_threshold: u32,
    /// How long an open circuit waits before one probe.
    #[serde(with = "duration")]
    pub recovery_timeout: Duration,
    /// Incidents older than this are `expired`.
    #[serde(with = "duration")]
    pub max_incident_age: Duration,
    /// Claim/lease length; renewed every third of it while an action runs.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// How long handled incident ids (and their outcomes) are remembered.
    #[serde(with = "duration")]
    pub idempotency_ttl: Duration,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_actions: 3,
            max_affected_services: 10,
            affected_services_window: Duration::from_secs(15 * 60),
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(300),
            max_incident_age: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(60),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Settings of the Kubernetes executor (`executor: kubernetes`). The cluster itself is found the
/// kube crate's usual way: the in-cluster service account, else `KUBECONFIG`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Prometheus base URL for query checks (`metrics_improved`, `error_rate_normalized`,
    /// `prometheus_query`); "" = none, and such checks fail (never assumed to pass).
    pub prometheus_url: String,
    /// Timeout of waiting checks that name none (`pod_becomes_ready`, `deployment_rolled_out`, ...).
    #[serde(with = "duration")]
    pub check_timeout: Duration,
    /// How often waiting checks poll.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Timeout of one API server or Prometheus call.
    #[serde(with = "duration")]
    pub api_timeout: Duration,
    /// PromQL template for an `error_rate_normalized` check without a `query` ({service} etc.).
    pub error_rate_query: String,
    /// Threshold of that default query.
    pub error_rate_below: f64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            prometheus_url: String::new(),
            check_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            api_timeout: Duration::from_secs(10),
            error_rate_query: r#"sum(rate(http_requests_total{service="{service}",code=~"5.."}[5m])) / sum(rate(http_requests_total{service="{service}"}[5m]))"#.into(),
            error_rate_below: 0.05,
        }
    }
}

/// Settings of the simulated executor (demo, tests, rehearsals without a cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedConfig {
    /// Append every action as one JSON line to this file ("" = keep it in memory only). Tests of
    /// several worker processes read it to prove nothing ran twice.
    pub journal: String,
    /// Every action takes this long (exercises concurrency limits and crash handling).
    #[serde(with = "duration")]
    pub action_delay: Duration,
    /// Post-checks fail for incidents of these services (exercises rollback and the breaker).
    pub fail_post_checks_for: Vec<String>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            journal: String::new(),
            action_delay: Duration::ZERO,
            fail_post_checks_for: Vec::new(),
        }
    }
}

/// Approval settings (docs/design.md#approvals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long an approval can be answered.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// File holding the approval API's bearer token (the variable `REMEDIATOR_APPROVAL_TOKEN`
    /// wins); "" and no variable: the HTTP approval API is off.
    pub token_file: String,
    /// Consume answers from `kafka.approvals_topic`. Off by default: the topic is a second door
    /// to HIGH-risk actions, open only when the operator gives the signing key too.
    pub topic_enabled: bool,
    /// File holding the key that signs answers on the approvals topic (the variable
    /// `REMEDIATOR_APPROVAL_HMAC_KEY` wins); required when `topic_enabled`.
    pub hmac_key_file: String,
    /// The header in which an authenticating proxy in front of the approval API and the
    /// console names the person ("" = none: the bearer token only). Believed only from
    /// `trusted_proxies`.
    pub identity_header: String,
    /// Addresses or CIDR blocks of the proxies whose `identity_header` is believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            token_file: String::new(),
            topic_enabled: false,
            hmac_key_file: String::new(),
            identity_header: String::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The approvals console (`GET /console`, README "Approvals console"): served with the approval
/// API, so only when its token is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console beside the approval API.
    pub enabled: bool,
    /// How many of the newest outcomes on the audit topic each replica keeps for the console's
    /// list (0: none, and the topic is not read).
    pub recent_outcomes: usize,
    /// The console's address as humans reach it (`https://remediator.example.com/console`);
    /// when set, notifications of an approval request link to the approval's page. "" = no
    /// link.
    pub public_url: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            recent_outcomes: 200,
            public_url: String::new(),
        }
    }
}

/// Notification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// File holding the webhook URL (Slack-compatible); the variable
    /// `REMEDIATOR_WEBHOOK_URL` wins. Neither: no notifications.
    pub webhook_url_file: String,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (production) or `text`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Graceful shutdown (`shutdown.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long work in hand (an action with its post-checks, rollback, record,
    /// publish; an approval answer) may take before it is given up. Every runbook's worst case
    /// must fit in it (checked at start), and `terminationGracePeriodSeconds` must exceed it.
    #[serde(with = "duration")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: crate::shutdown::DEFAULT_GRACE,
        }
    }
}

/// Which alert labels (and annotation) become which incident fields, for the Alertmanager intake.
/// Each field lists label names tried in order; the first one present on the alert wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelMapping {
    /// Labels giving the incident's `root_cause` (matched against runbook triggers).
    pub root_cause: Vec<String>,
    /// Labels giving the incident's service.
    pub service: Vec<String>,
    /// Labels giving `context.namespace`.
    pub namespace: Vec<String>,
    /// Labels giving `context.pod_name`.
    pub pod: Vec<String>,
    /// Labels giving `context.deployment`.
    pub deployment: Vec<String>,
}

impl Default for LabelMapping {
    fn default() -> Self {
        let one = |s: &str| vec![s.to_string()];
        Self {
            root_cause: one("alertname"),
            service: vec!["service".into(), "job".into()],
            namespace: one("namespace"),
            pod: one("pod"),
            deployment: one("deployment"),
        }
    }
}

/// The Alertmanager webhook intake (`POST /v1/alertmanager` on `http.listen`). Its bearer token
/// comes from the environment (`REMEDIATOR_ALERTMANAGER_TOKEN`) or from `token_file`, never from
/// this file: an enabled intake without one refuses to start unless `allow_unauthenticated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Serve the endpoint.
    pub enabled: bool,
    /// File holding the bearer token (the variable `REMEDIATOR_ALERTMANAGER_TOKEN` wins).
    pub token_file: String,
    /// Serve the endpoint without a token (anyone who reaches it can create incidents): an
    /// explicit opt-in, logged as a warning at start. Off: no token refuses to start.
    pub allow_unauthenticated: bool,
    /// Label names per incident field.
    pub label_mapping: LabelMapping,
    /// Annotation holding the confidence (0..1); "" = always use `default_confidence`.
    pub confidence_annotation: String,
    /// Confidence of an alert without that annotation.
    pub default_confidence: f64,
    /// How long the broker may take to acknowledge the incidents of one request before the
    /// request fails with 503 (and Alertmanager retries).
    #[serde(with = "duration")]
    pub delivery_timeout: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            token_file: String::new(),
            allow_unauthenticated: false,
            label_mapping: LabelMapping::default(),
            confidence_annotation: "confidence".into(),
            default_confidence: 0.9,
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// The whole worker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Replica identity (default: the hostname).
    pub worker_id: String,
    /// Runbook catalogue file.
    pub runbooks: String,
    /// Worker-wide shadow mode.
    pub dry_run: bool,
    /// Which executor acts: `kubernetes` (the API server) or `simulated` (a simulated cluster,
    /// for rehearsals and tests: nothing real is touched).
    pub executor: ExecutorKind,
    /// The Kubernetes executor.
    pub kubernetes: KubernetesConfig,
    /// The simulated executor.
    pub simulated: SimulatedConfig,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// HTTP endpoints.
    pub http: HttpConfig,
    /// Guardrail defaults.
    pub guardrails: GuardrailsConfig,
    /// Approvals.
    pub approvals: ApprovalsConfig,
    /// The approvals console.
    pub console: ConsoleConfig,
    /// Notifications.
    pub notify: NotifyConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Alertmanager webhook intake.
    pub alertmanager: AlertmanagerConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worker_id: gethostname::gethostname().to_string_lossy().into_owned(),
            runbooks: "config/runbooks.yaml".into(),
            dry_run: false,
            executor: ExecutorKind::Kubernetes,
            kubernetes: KubernetesConfig::default(),
            simulated: SimulatedConfig::default(),
            kafka: KafkaConfig::default(),
            redis: RedisConfig::default(),
            http: HttpConfig::default(),
            guardrails: GuardrailsConfig::default(),
            approvals: ApprovalsConfig::default(),
            console: ConsoleConfig::default(),
            notify: NotifyConfig::default(),
            log: LogConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// A configuration problem, naming the file, variable or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file or an override is invalid.
    #[error("{origin}: {message}")]
    Invalid {
        /// File path, environment variable or flag.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(origin: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        message: message.into(),
    }
}

impl Config {
    /// `shutdown.grace`.
    pub fn grace(&self) -> Duration {
        self.shutdown.grace
    }
}

#[cfg(test)]
mod tests;
