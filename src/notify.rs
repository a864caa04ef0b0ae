//! Notifications: every outcome can also go to a Slack-compatible webhook
//! (docs/design.md#notifications: always notify, even on success).
//!
//! Notifying must never slow or block the pipeline: outcomes go into a bounded queue
//! ([`QUEUE`]) drained by one background task that posts `{"text": …}` with retries; when the
//! queue is full (the webhook is down or slow) the newest notification is dropped and counted in
//! `remediator_notifications_total{result="dropped"}`. The audit topic remains the record.

use crate::metrics::Metrics;
use crate::outcome::{Decision, Outcome};
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Environment variable with the webhook URL (a secret: it often embeds a token).
pub const URL_ENV: &str = crate::config::secrets::WEBHOOK_URL;

/// Notifications waiting to be sent, at most.
pub const QUEUE: usize = 1000;
/// Attempts per notification.
const ATTEMPTS: u32 = 3;

/// A handle that queues outcomes for the webhook.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<(Outcome, Option<String>)>,
    metrics: Metrics,
    /// `console.public_url`: approval requests link to their page there.
    console: Option<String>,
}

impl Notifier {
    /// Start the sender task posting to `url` (validated: http or https, no credentials).
    pub fn spawn(url: &str, metrics: Metrics) -> Result<Self, String> {
        let (notifier, sender) = Self::start(url, metrics)?;
        tokio::spawn(sender);
        Ok(notifier)
    }

    /// [`Notifier::spawn`] with the sender task owned by `shutdown`: it ends once every
    /// [`Notifier`] is dropped and the queue is sent, and shutdown waits for that (within the
    /// grace), so the outcomes of executions that finished while draining are still announced.
    pub fn spawn_tracked(url: &str, metrics: Metrics, shutdown: &Shutdown) -> Result<Self, String> {
        let (notifier, sender) = Self::start(url, metrics)?;
        shutdown.spawn(sender);
        Ok(notifier)
    }

    fn start(url: &str, metrics: Metrics) -> Result<(Self, impl Future<Output = ()> + Send + 'static), String> {
        let url = crate::executor::webhook::parse_url(url).map_err(|e| format!("notify webhook url: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("notify webhook client: {e}"))?;
        let (tx, mut rx) = mpsc::channel::<(Outcome, Option<String>)>(QUEUE);
        let m = metrics.clone();
        let sender = async move {
            while let Some((o, link)) = rx.recv().await {
                let mut line = text(&o);
                if let Some(link) = link {
                    line.push_str(&format!(" — review: {link}"));
                }
                let body = serde_json::json!({ "text": line });
                let mut sent = false;
                let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
                for attempt in 0..ATTEMPTS {
                    match client.post(url.clone()).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            sent = true;
                            break;
                        }
                        Ok(r) => warn!(status = %r.status(), attempt, "notification webhook refused"),
                        Err(e) => warn!(error = %e, attempt, "notification webhook unreachable"),
                    }
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                if !sent {
                    warn!(incident_id = ?o.incident_id, attempts = ATTEMPTS, "notification not delivered; giving up");
                }
                m.notifications
                    .with_label_values(&[if sent { "sent" } else { "failed" }])
                    .inc();
            }
        };
        Ok((
            Self {
                tx,
                metrics,
                console: None,
            },
            sender,
        ))
    }

    /// Link approval requests to their page in the console at `public_url`
    /// (`console.public_url`; "" = no link).
    pub fn with_console(mut self, public_url: &str) -> Self {
        self.console = Some(public_url.to_string()).filter(|u| !u.is_empty());
        self
    }

    /// Queue an outcome; never waits.
    pub fn notify(&self, o: &Outcome) {
        let link = match (&self.console, o.decision, &o.approval_id) {
            (Some(base), Decision::ApprovalRequired, Some(id)) => Some(approval_link(base, id)),
            _ => None,
        };
        if self.tx.try_send((o.clone(), link)).is_err() {
            warn!(incident_id = ?o.incident_id, "notification queue full; notification dropped");
            self.metrics.notifications.with_label_values(&["dropped"]).inc();
        }
    }
}

/// The console page of approval `id` under `public_url`: `<public_url>#approval/<id>`, the id
/// percent-encoded (approval ids are UUIDs the worker made, but a link is no place to trust that).
pub fn approval_link(public_url: &str, id: &str) -> String {
    let mut link = format!("{public_url}#approval/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            link.push(char::from(b));
        } else {
            link.push_str(&format!("%{b:02X}"));
        }
    }
    link
}

/// One line a human reads in a chat channel.
pub fn text(o: &Outcome) -> String {
    let verdict = match (o.decision, o.success) {
        (Decision::Executed, Some(true)) => "executed, verified".to_string(),
        (Decision::Executed, Some(false)) if o.rolled_back => "executed, FAILED verification, rolled back".into(),
        (Decision::Executed, _) => "executed, FAILED verification".into(),
        (Decision::Blocked, _) => format!(
            "blocked by {}",
            o.guardrail.map(|g| g.as_str()).unwrap_or("a guardrail")
        ),
        (d, _) => d.as_str().replace('_', " "),
    };
    let mut t = format!(
        "[remediator] {} {} on {}: {verdict}",
        o.incident_id.as_deref().unwrap_or("-"),
        o.root_cause.as_deref().unwrap_or("?"),
        o.service.as_deref().unwrap_or("?"),
    );
    if let Some(rb) = &o.runbook_id {
        t.push_str(&format!(" (runbook {rb})"));
    }
    if let Some(a) = &o.action {
        t.push_str(&format!(" — {}", a.display));
    }
    if let Some(id) = &o.approval_id {
        t.push_str(&format!(" — approval {id}"));
    }
    t.push_str(&format!(" — {}", o.reason));
    t
}
