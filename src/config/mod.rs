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

use crate::yaml::{self, Pos};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default config file path.
pub const DEFAULT_PATH: &str = "config/remediator.yaml";

/// The environment variables that carry secrets, never written in the file
/// (docs/configuration.md#secrets). Each has a `*_file` key as its alternative.
pub mod secrets {
    /// Bearer token of the HTTP approval API (or `approvals.token_file`).
    pub const APPROVAL_TOKEN: &str = "REMEDIATOR_APPROVAL_TOKEN";
    /// Key that signs answers on the approvals topic (or `approvals.hmac_key_file`).
    pub const APPROVAL_HMAC_KEY: &str = "REMEDIATOR_APPROVAL_HMAC_KEY";
    /// Bearer token of the Alertmanager intake (or `alertmanager.token_file`).
    pub const ALERTMANAGER_TOKEN: &str = "REMEDIATOR_ALERTMANAGER_TOKEN";
    /// Notification webhook URL (or `notify.webhook_url_file`).
    pub const WEBHOOK_URL: &str = "REMEDIATOR_WEBHOOK_URL";
    /// All of them.
    pub const ALL: [&str; 4] = [APPROVAL_TOKEN, APPROVAL_HMAC_KEY, ALERTMANAGER_TOKEN, WEBHOOK_URL];
}

/// Durations in the config: read from `300s`, `15m`, `1h`, `500ms`, `7d` or a whole number of
/// seconds ([`parse_duration`]); written back in the largest unit that is exact.
mod duration {
    use serde::{de, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 300s, 15m or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
        }
        d.deserialize_any(Text)
    }
}

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
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            token_file: String::new(),
            topic_enabled: false,
            hmac_key_file: String::new(),
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

/// A secret from the environment variable `var`, else from the file at `file` ("" = none),
/// trimmed. Secrets never live in the YAML that ships in `config/`.
pub fn secret(var: &str, file: &str) -> Result<Option<String>, ConfigError> {
    secret_from(std::env::var(var).ok().as_deref(), file)
}

/// [`secret`] with the variable's value given (`None`: unset); a blank value counts as unset.
pub fn secret_from(env_value: Option<&str>, file: &str) -> Result<Option<String>, ConfigError> {
    if let Some(v) = env_value.map(str::trim).filter(|v| !v.is_empty()) {
        return Ok(Some(v.to_string()));
    }
    if file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
        path: file.into(),
        source: e,
    })?;
    Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
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
    /// Load `path` (or the default path if it exists), apply environment overrides from `env`,
    /// and validate. `explicit` says the path was given by a flag, so a missing file is an error.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let origin = path.display().to_string();
        // The layers meet in one JSON tree (defaults, then the file, then environment, then
        // flags) that serde's derive turns into `Config`. The derive gives types and unknown-key
        // refusal; the hand-written merge gives what it cannot: the layering, the refusal of a
        // file key the defaults lack with its position, and the position of every file value, so
        // a problem found later (a type, a rule in `validate`) still names `file:line:column`.
        let mut doc = defaults_tree()?;
        let mut at: BTreeMap<String, Pos> = BTreeMap::new();
        let file_doc = match std::fs::read_to_string(&path) {
            Ok(text) => Some(yaml::parse(&text).map_err(|e| invalid(located(&origin, e.pos), e.message))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => return Err(ConfigError::Read { path, source: e }),
        };
        if let Some(file_doc) = file_doc {
            match file_doc {
                yaml::Value::Null => {}
                yaml::Value::Mapping(m) => merge(&mut doc, &m, "", &origin, &mut at)?,
                _ => return Err(invalid(&origin, "must be a mapping of config keys")),
            }
        }
        let keys = leaf_keys(&defaults_tree()?);
        let claimed = claimed_words(&keys);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("REMEDIATOR_") else {
                continue;
            };
            let Some(path) = keys.iter().find(|k| env_name(k) == rest) else {
                // A variable whose first word is a section, a top-level key or a secret's claims
                // to configure the worker: if it is none of them, it is a typo. Other
                // REMEDIATOR_* variables belong to scripts (REMEDIATOR_CACHE, REMEDIATOR_TEST_...).
                if secrets::ALL.contains(&name.as_str()) {
                    continue;
                }
                if claimed.contains(rest.split('_').next().unwrap_or("")) {
                    return Err(invalid(name, "unknown configuration key"));
                }
                continue;
            };
            set_path(&mut doc, path, value, name)?;
            at.retain(|k, _| !within(k, path));
        }
        for (key, value) in overrides {
            set_path(&mut doc, key, value, &format!("--{}", key.replace(['.', '_'], "-")))?;
            at.retain(|k, _| !within(k, key));
        }
        // Where in the file the value at `key` (or the section holding it) was written, if it was.
        let file_pos = |key: &str| {
            let mut k = key;
            loop {
                if let Some(p) = at.get(k) {
                    return Some(*p);
                }
                k = &k[..k.rfind('.')?];
            }
        };
        let config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            invalid(located(&origin, file_pos(&key)), format!("{key}: {}", e.inner()))
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { origin: key, message } => match file_pos(&key) {
                Some(p) => invalid(format!("{origin}:{p}: {key}"), message),
                None => invalid(key, message),
            },
            other => other,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.guardrails;
        let (k, am) = (&self.kubernetes, &self.alertmanager);
        for (key, d) in [
            ("guardrails.affected_services_window", g.affected_services_window),
            ("guardrails.recovery_timeout", g.recovery_timeout),
            ("guardrails.max_incident_age", g.max_incident_age),
            ("guardrails.lease", g.lease),
            ("guardrails.idempotency_ttl", g.idempotency_ttl),
            ("approvals.ttl", self.approvals.ttl),
            ("kubernetes.check_timeout", k.check_timeout),
            ("kubernetes.poll_interval", k.poll_interval),
            ("kubernetes.api_timeout", k.api_timeout),
            ("alertmanager.delivery_timeout", am.delivery_timeout),
            ("shutdown.grace", self.shutdown.grace),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        // An incident may be acted on while younger than max_incident_age; its claim record (and
        // the done record) must outlive that, or a redelivery could find no record and still be
        // fresh enough to act.
        let max_age = g.max_incident_age;
        let grace = Duration::from_millis(crate::guardrails::memory::CLAIM_GRACE_MS);
        if max_age >= grace {
            return Err(invalid(
                "guardrails.max_incident_age",
                format!(
                    "must be below {}s, the claim grace (how long an incident's claim outlives its lease)",
                    grace.as_secs()
                ),
            ));
        }
        if max_age >= g.idempotency_ttl {
            return Err(invalid(
                "guardrails.max_incident_age",
                "must be below guardrails.idempotency_ttl (a redelivery must never outlive its record while still fresh)",
            ));
        }
        // A repeated approval answer re-enters the execution claim kept under the approval's
        // claim id; that record must outlive the approval itself (answerable for approvals.ttl,
        // kept 24 h longer for the audit), or a late repeat could find no claim and run again.
        let approval_life = self.approvals.ttl.saturating_add(Duration::from_secs(24 * 3600));
        if g.idempotency_ttl <= approval_life {
            return Err(invalid(
                "guardrails.idempotency_ttl",
                "must be greater than approvals.ttl + 24h (an approval's execution claim must outlive the approval)",
            ));
        }
        if g.lease < Duration::from_secs(3) {
            return Err(invalid(
                "guardrails.lease",
                "must be at least 3s (it is renewed every third)",
            ));
        }
        for (key, v) in [
            ("guardrails.max_concurrent_actions", g.max_concurrent_actions),
            ("guardrails.max_affected_services", g.max_affected_services),
            ("guardrails.failure_threshold", g.failure_threshold),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.kafka.max_in_flight == 0 || self.kafka.max_in_flight > 10_000 {
            return Err(invalid("kafka.max_in_flight", "must be between 1 and 10000"));
        }
        if !(1..=60_000).contains(&self.redis.timeout_ms) {
            return Err(invalid("redis.timeout_ms", "must be between 1 and 60000"));
        }
        if !(k.error_rate_below.is_finite()) {
            return Err(invalid("kubernetes.error_rate_below", "must be a number"));
        }
        if !(0.0..=1.0).contains(&am.default_confidence) {
            return Err(invalid(
                "alertmanager.default_confidence",
                "must be between 0.0 and 1.0",
            ));
        }
        let m = &am.label_mapping;
        for (key, labels) in [
            ("alertmanager.label_mapping.root_cause", &m.root_cause),
            ("alertmanager.label_mapping.service", &m.service),
        ] {
            if labels.iter().all(|l| l.is_empty()) {
                return Err(invalid(key, "must name at least one label"));
            }
        }
        if self.worker_id.is_empty() {
            return Err(invalid("worker_id", "must not be empty"));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return Err(invalid("redis.key_prefix", "must be non-empty and contain no braces"));
        }
        // The scheme chooses the topology; the message never repeats the URL (it may hold a
        // password).
        crate::guardrails::topology::Topology::parse(&self.redis.url).map_err(|m| invalid("redis.url", m))?;
        Ok(())
    }

    /// `shutdown.grace`.
    pub fn grace(&self) -> Duration {
        self.shutdown.grace
    }

    /// Every config key (dotted) with its environment variable, for docs and `--help`.
    pub fn keys() -> Vec<(String, String)> {
        let doc = defaults_tree().unwrap_or(Value::Null);
        leaf_keys(&doc)
            .into_iter()
            .map(|k| (k.clone(), format!("REMEDIATOR_{}", env_name(&k))))
            .collect()
    }
}

/// The defaults as a tree: the base layer of `Config::load`, and the list of keys.
fn defaults_tree() -> Result<Value, ConfigError> {
    serde_json::to_value(Config::default()).map_err(|e| invalid("defaults", e.to_string()))
}

/// `file` or `file:line:column`.
fn located(file: &str, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => format!("{file}:{p}"),
        None => file.to_string(),
    }
}

/// Is dotted `key` the key `path` or inside it?
fn within(key: &str, path: &str) -> bool {
    key == path || key.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
}

/// The first words of every variable the configuration owns: its sections, its top-level keys
/// (`DRY` of `DRY_RUN`) and its secrets (`APPROVAL`, `WEBHOOK`, ...).
fn claimed_words(keys: &[String]) -> std::collections::BTreeSet<String> {
    let first = |name: &str| name.split('_').next().unwrap_or("").to_string();
    keys.iter()
        .map(|k| first(&env_name(k)))
        .chain(secrets::ALL.iter().map(|s| first(s.trim_start_matches("REMEDIATOR_"))))
        .collect()
}

/// `kafka.brokers` -> `KAFKA_BROKERS`.
fn env_name(key: &str) -> String {
    key.replace('.', "_").to_ascii_uppercase()
}

fn leaf_keys(v: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// Merge a file's mapping into the defaults, rejecting keys the defaults do not have; records in
/// `at` where each value taken from the file was written.
fn merge(
    base: &mut Value,
    file: &yaml::Mapping,
    prefix: &str,
    origin: &str,
    at: &mut BTreeMap<String, Pos>,
) -> Result<(), ConfigError> {
    let Value::Object(b) = base else {
        return Err(invalid(origin, format!("{prefix}: is not a section")));
    };
    for e in file.entries() {
        let key = e
            .key
            .as_str()
            .ok_or_else(|| invalid(located(origin, e.key_at), format!("{prefix}: keys must be strings")))?;
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = b.get_mut(key) else {
            return Err(invalid(located(origin, e.key_at), format!("{path}: unknown key")));
        };
        // Values only (a section's keys record their own), so a value set by the environment
        // or a flag never inherits its section's place in the file.
        if let (Some(p), false) = (
            e.value_at,
            matches!(e.value, yaml::Value::Mapping(_)) && path != "kafka.properties",
        ) {
            at.insert(path.clone(), p);
        }
        match (slot, &e.value) {
            // `kafka.properties` is an open map: take it as given.
            (slot @ Value::Object(_), yaml::Value::Mapping(_)) if path == "kafka.properties" => {
                *slot = to_json(&e.value, origin, e.value_at)?
            }
            (slot @ Value::Object(_), yaml::Value::Mapping(m)) => merge(slot, m, &path, origin, at)?,
            (Value::Object(_), other) if !other.is_null() => {
                return Err(invalid(
                    located(origin, e.value_at),
                    format!("{path}: must be a mapping"),
                ));
            }
            (slot, v) => *slot = to_json(v, origin, e.value_at)?,
        }
    }
    Ok(())
}

/// A file value as JSON (the tree `Config` is deserialized from).
fn to_json(v: &yaml::Value, origin: &str, pos: Option<Pos>) -> Result<Value, ConfigError> {
    serde_json::to_value(v).map_err(|e| invalid(located(origin, pos), e.to_string()))
}

/// Set a dotted key from a string (environment or flag), parsed as a YAML scalar so numbers and
/// booleans keep their type; string-typed keys keep the raw text.
fn set_path(doc: &mut Value, key: &str, raw: &str, origin: &str) -> Result<(), ConfigError> {
    let mut cur = doc;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let Value::Object(m) = cur else {
            return Err(invalid(origin, format!("{key}: not a section")));
        };
        let slot = m
            .get_mut(*p)
            .ok_or_else(|| invalid(origin, format!("{key}: unknown key")))?;
        if i + 1 == parts.len() {
            *slot = match slot {
                Value::String(_) => Value::String(raw.to_string()),
                Value::Object(_) => {
                    // key=value,key=value for `kafka.properties`.
                    let mut m = serde_json::Map::new();
                    for pair in raw.split(',').filter(|s| !s.trim().is_empty()) {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| invalid(origin, format!("expected key=value pairs, got {pair:?}")))?;
                        m.insert(k.trim().into(), Value::String(v.trim().into()));
                    }
                    Value::Object(m)
                }
                _ => {
                    let v = yaml::parse(raw).map_err(|e| invalid(origin, e.message))?;
                    to_json(&v, origin, None)?
                }
            };
            return Ok(());
        }
        cur = slot;
    }
    Ok(())
}

/// `d` in the largest unit that is exact: `250ms`, `90s`, `15m`, `1h`, `7d`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The longest duration the config accepts: ten years.
const MAX_DURATION_SECS: u64 = 3650 * 86400;

/// Parse `300s`, `15m`, `1h`, `500ms`, `7d` or a plain number of seconds (at most 3650d).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 300s, 15m, 1h)"))?;
    let per = match unit {
        "" | "s" => 1,
        "ms" if n / 1000 <= MAX_DURATION_SECS => return Ok(Duration::from_millis(n)),
        "ms" => return Err(format!("duration {s:?} is too long (at most 3650d)")),
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    // Bounded so no deadline computed from it can overflow a clock.
    n.checked_mul(per)
        .filter(|secs| *secs <= MAX_DURATION_SECS)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long (at most 3650d)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load(Some(Path::new("/nonexistent")), &env(&[]), &[]);
        assert!(c.is_err(), "an explicit missing file is an error");
        let c = Config::load(None, &env(&[]), &[]).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(c.redis.timeout_ms, 200);
        let s = crate::engine::Settings::from(&c);
        assert_eq!(s.guardrails.max_concurrent_actions, 3);
        assert_eq!(s.guardrails.recovery_timeout, Duration::from_secs(300));
        assert_eq!(s.max_incident_age, Duration::from_secs(900));
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "dry_run: false\nkafka:\n  brokers: file:1\n  group_id: g-file\nredis:\n  timeout_ms: 50\n",
        )
        .unwrap();
        let e = env(&[
            ("REMEDIATOR_KAFKA_BROKERS", "env:1"),
            ("REMEDIATOR_DRY_RUN", "true"),
            ("REMEDIATOR_CACHE", "/x"),
        ]);
        let c = Config::load(Some(&p), &e, &[("kafka.brokers", "flag:1".into())]).unwrap();
        assert_eq!(c.kafka.brokers, "flag:1");
        assert!(c.dry_run);
        assert_eq!(c.kafka.group_id, "g-file");
        assert_eq!(c.redis.timeout_ms, 50);
        assert_eq!(c.kafka.incidents_topic, "incidents");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "kafka:\n  brokerz: x\n").unwrap();
        let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
        assert!(e.contains("kafka.brokerz: unknown key"), "{e}");
        std::fs::write(&p, "guardrails:\n  recovery_timeout: soon\n").unwrap();
        let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
        assert!(e.contains("guardrails.recovery_timeout"), "{e}");
        let e = Config::load(None, &env(&[("REMEDIATOR_REDIS_TIMEOUT_MS", "fast")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("REMEDIATOR_REDIS_TIMEOUT_MS") || e.contains("timeout_ms"),
            "{e}"
        );
        let e = Config::load(None, &env(&[("REMEDIATOR_KAFKA_BROKER", "x")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("REMEDIATOR_KAFKA_BROKER: unknown configuration key"), "{e}");
        let e = Config::load(
            None,
            &env(&[("REMEDIATOR_REDIS_URL", "redis+sentinel://:hunter2@s1:26379")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("redis.url") && e.contains("primary's name"), "{e}");
        assert!(!e.contains("hunter2"), "the password is never echoed: {e}");
        let ok = Config::load(
            None,
            &env(&[("REMEDIATOR_REDIS_URL", "redis+cluster://a:7000,b:7001")]),
            &[],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// A problem with a value written in the file names where (`file:line:column`); once the
    /// environment or a flag overrides that value, the file's place no longer applies.
    #[test]
    fn file_values_carry_their_position_until_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "kafka:\n  brokers: b:1\nguardrails:\n  lease: 1s\n").unwrap();
        let e = Config::load(Some(&p), &env(&[]), &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:4:10: guardrails.lease: must be at least 3s (it is renewed every third)",
                p.display()
            )
        );
        let e = Config::load(Some(&p), &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "2s")]), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "guardrails.lease: must be at least 3s (it is renewed every third)");
        let e = Config::load(Some(&p), &env(&[]), &[("guardrails.lease", "2s".into())])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "guardrails.lease: must be at least 3s (it is renewed every third)");
    }

    /// A redelivery may act while the incident is younger than max_incident_age, so the records
    /// that stop it (claim, idempotency) must outlive that age: the config says so at load.
    #[test]
    fn max_incident_age_is_bounded_by_the_claim_grace_and_the_idempotency_ttl() {
        let load = |age: &str, ttl: &str| {
            Config::load(
                None,
                &env(&[
                    ("REMEDIATOR_GUARDRAILS_MAX_INCIDENT_AGE", age),
                    ("REMEDIATOR_GUARDRAILS_IDEMPOTENCY_TTL", ttl),
                ]),
                &[],
            )
        };
        assert!(load("59m", "7d").is_ok());
        let e = load("1h", "7d").unwrap_err().to_string();
        assert!(
            e.contains("guardrails.max_incident_age") && e.contains("claim grace"),
            "{e}"
        );
        let e = load("30m", "30m").unwrap_err().to_string();
        assert!(
            e.contains("guardrails.max_incident_age") && e.contains("guardrails.idempotency_ttl"),
            "{e}"
        );
        assert!(load("30m", "26h").is_ok());
    }

    /// An approval's execution claim is kept for guardrails.idempotency_ttl; it must outlive the
    /// approval (approvals.ttl, plus the 24 h the store keeps it), or a repeated answer could
    /// find no claim and execute again.
    #[test]
    fn the_idempotency_ttl_outlives_every_approval() {
        let load = |ttl: &str, appr: &str| {
            Config::load(
                None,
                &env(&[
                    ("REMEDIATOR_GUARDRAILS_IDEMPOTENCY_TTL", ttl),
                    ("REMEDIATOR_APPROVALS_TTL", appr),
                ]),
                &[],
            )
        };
        assert!(load("168h", "1h").is_ok());
        assert!(load("26h", "1h").is_ok());
        for (ttl, appr) in [("25h", "1h"), ("24h", "1h"), ("48h", "24h"), ("2h", "1h")] {
            let e = load(ttl, appr).unwrap_err().to_string();
            assert!(
                e.contains("guardrails.idempotency_ttl") && e.contains("approvals.ttl"),
                "{ttl} {appr}: {e}"
            );
        }
    }

    #[test]
    fn every_key_has_an_env_name() {
        let keys = Config::keys();
        assert!(keys.contains(&("kafka.brokers".into(), "REMEDIATOR_KAFKA_BROKERS".into())));
        assert!(keys.contains(&("redis.url".into(), "REMEDIATOR_REDIS_URL".into())));
        assert!(keys.contains(&("runbooks".into(), "REMEDIATOR_RUNBOOKS".into())));
        assert!(keys.contains(&(
            "guardrails.max_concurrent_actions".into(),
            "REMEDIATOR_GUARDRAILS_MAX_CONCURRENT_ACTIONS".into()
        )));
    }

    #[test]
    fn the_shutdown_grace_is_a_positive_duration() {
        let c = Config::load(None, &env(&[("REMEDIATOR_SHUTDOWN_GRACE", "90s")]), &[]).unwrap();
        assert_eq!(c.grace(), Duration::from_secs(90));
        assert_eq!(
            Config::load(None, &env(&[]), &[]).unwrap().grace(),
            Duration::from_secs(600)
        );
        for bad in ["0s", "soon"] {
            let e = Config::load(None, &env(&[("REMEDIATOR_SHUTDOWN_GRACE", bad)]), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("shutdown.grace"), "{e}");
        }
    }

    /// A mistyped variable of any section, top-level key or secret is an error naming it; the
    /// list comes from the config itself, so no section can be forgotten.
    #[test]
    fn a_typo_in_every_section_is_an_error() {
        let mut firsts: Vec<String> = Config::keys()
            .into_iter()
            .map(|(_, var)| {
                var.trim_start_matches("REMEDIATOR_")
                    .split('_')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        firsts.dedup();
        for must in [
            "APPROVALS",
            "NOTIFY",
            "KAFKA",
            "SHUTDOWN",
            "DRY",
            "WORKER",
            "APPROVAL",
            "WEBHOOK",
        ] {
            assert!(
                firsts.iter().any(|f| f == must) || must == "APPROVAL" || must == "WEBHOOK",
                "{must} claimed"
            );
        }
        let mut typos: Vec<String> = firsts.iter().map(|f| format!("REMEDIATOR_{f}_TYPO")).collect();
        typos.extend(
            [
                "REMEDIATOR_APPROVALS_TTLL",
                "REMEDIATOR_DRY_RUNN",
                "REMEDIATOR_APPROVAL_TOKNE",
            ]
            .map(String::from),
        );
        typos.push("REMEDIATOR_WEBHOOK_UR".into());
        for typo in &typos {
            let e = Config::load(None, &env(&[(typo, "1")]), &[])
                .map(|_| ())
                .expect_err(typo)
                .to_string();
            assert_eq!(e, format!("{typo}: unknown configuration key"));
        }
        // Secrets and the scripts' own variables are not configuration keys, and not typos.
        for fine in secrets::ALL
            .iter()
            .copied()
            .chain(["REMEDIATOR_CACHE", "REMEDIATOR_TEST_X", "REMEDIATOR_RUN"])
        {
            assert!(Config::load(None, &env(&[(fine, "x")]), &[]).is_ok(), "{fine}");
        }
    }

    /// Durations are typed at load: written back in the largest exact unit, read back the same.
    #[test]
    fn durations_round_trip_through_their_text() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(7 * 86400), "7d"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert!(parse_duration("213503982334602d").unwrap_err().contains("too long"));
        assert_eq!(parse_duration("3650d"), Ok(Duration::from_secs(MAX_DURATION_SECS)));
        assert!(parse_duration("3651d").unwrap_err().contains("at most 3650d"));
        let c = Config::load(None, &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "90")]), &[]).unwrap();
        assert_eq!(c.guardrails.lease, Duration::from_secs(90), "plain seconds");
        let e = Config::load(None, &env(&[("REMEDIATOR_GUARDRAILS_LEASE", "soon")]), &[]).unwrap_err();
        assert!(
            e.to_string().contains("guardrails.lease: invalid duration \"soon\""),
            "{e}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

#[cfg(test)]
mod docs {
    use super::*;

    /// The shipped example and the configuration reference (docs/configuration.md) name every
    /// key, so neither drifts from the code.
    #[test]
    fn example_config_and_readme_document_every_key() {
        let example = include_str!("../../config/remediator.yaml");
        let readme = include_str!("../../docs/configuration.md");
        let parsed = Config::load(
            Some(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/remediator.yaml"
            ))),
            &BTreeMap::new(),
            &[],
        );
        assert!(parsed.is_ok(), "config/remediator.yaml loads: {parsed:?}");
        for (key, var) in Config::keys() {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            if !key.starts_with("alertmanager.label_mapping.") && key != "worker_id" {
                assert!(
                    example.contains(&format!("{leaf}:")),
                    "config/remediator.yaml lacks {key}"
                );
            }
            assert!(
                readme.contains(&format!("`{key}`")) || readme.contains(&var),
                "docs/configuration.md lacks {key} / {var}"
            );
        }
    }
}
