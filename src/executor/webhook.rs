//! The `webhook` action: one HTTP call to automation that lives outside Kubernetes (a disk
//! cleaner, a database operator).
//!
//! The URL comes from a runbook template, so it is parsed, never spliced: only `http` and
//! `https` URLs with a host are called, credentials embedded in the URL are refused (secrets
//! belong in the environment, DESIGN.md §1.6), and the URL never reaches a shell. The call
//! carries the execution's action id in `Idempotency-Key` so a receiver can discard a repeat.
//! Any answer outside 2xx is an error: the engine then reports the action as failed instead of
//! verifying something that never happened.

use super::prometheus::{error_chain, snippet};
use super::ExecError;
use reqwest::{Method, Url};
use serde_json::Value;
use std::time::Duration;

/// What a successful call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// HTTP status code (2xx).
    pub status: u16,
    /// The first 200 characters of the response body.
    pub body: String,
}

/// Parse and vet a webhook URL.
pub fn parse_url(url: &str) -> Result<Url, ExecError> {
    let u = Url::parse(url).map_err(|e| ExecError(format!("webhook URL {url:?} is invalid: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(ExecError(format!(
            "webhook URL {url:?} is not an http(s) URL with a host"
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(ExecError(
            "webhook URL carries credentials; pass secrets through the environment instead".into(),
        ));
    }
    Ok(u)
}

/// Call `url` with `method` (`POST` or `PUT`) and an optional JSON body, within `timeout`.
pub async fn call(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    body: Option<&Value>,
    timeout: Duration,
    action_id: &str,
) -> Result<WebhookReply, ExecError> {
    let u = parse_url(url)?;
    let m = match method.to_ascii_uppercase().as_str() {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        other => {
            return Err(ExecError(format!(
                "webhook method {other} is not supported (POST or PUT)"
            )))
        }
    };
    let mut req = http
        .request(m.clone(), u.clone())
        .timeout(timeout)
        .header("Idempotency-Key", action_id);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("no answer within {}s", timeout.as_secs_f64())
        } else {
            error_chain(&e)
        };
        ExecError(format!("webhook {m} {u} failed: {why}"))
    })?;
    let status = resp.status();
    let text = match resp.bytes().await {
        Ok(b) => snippet(&b),
        Err(e) => format!("(body unreadable: {})", error_chain(&e)),
    };
    if !status.is_success() {
        return Err(ExecError(format!("webhook {m} {u} answered HTTP {status}: {text}")));
    }
    Ok(WebhookReply {
        status: status.as_u16(),
        body: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host() {
        assert!(parse_url("http://cleaner.ops.svc:8080/v1/clean/api").is_ok());
        assert!(parse_url("https://hooks.example.com/x").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://x/y",
            "http://user:pw@host/x",
            "cleaner/v1",
            "unix:/run/x.sock",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
