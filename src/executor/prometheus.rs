//! A minimal Prometheus HTTP API client for the query checks (`prometheus_query`,
//! `metrics_improved`, `error_rate_normalized`).
//!
//! Only the instant-query endpoint is used (`GET /api/v1/query?query=…`). The answer is reduced
//! to one number: a `scalar`, or the first sample of a `vector`. Anything else (an error status,
//! an empty vector, a range result, a `NaN`) is an error with a reason, never a silent pass: a
//! verification that cannot observe its metric must fail. So is an answer over
//! [`MAX_RESPONSE_BYTES`] (1 MiB), which is not read into memory.
//!
//! The URL is built with [`reqwest::Url`]'s path and query builders, so the PromQL text (which
//! comes from a runbook template filled with incident values) is always percent-encoded as one
//! query parameter and can never change the path or add parameters.

use reqwest::Url;
use serde::Deserialize;
use std::time::Duration;

/// Why a query produced no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// The server could not be reached or did not answer in time.
    #[error("Prometheus unreachable at {url}: {message}")]
    Unreachable {
        /// The base URL (without the query).
        url: String,
        /// Transport error.
        message: String,
    },
    /// The server answered, but not with a usable result.
    #[error("Prometheus query {query:?} failed: {message}")]
    Query {
        /// The PromQL text.
        query: String,
        /// What was wrong.
        message: String,
    },
}

/// A Prometheus server to run instant queries against.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: Url,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A client for the server at `base` (e.g. `http://prometheus:9090`, optionally with a path
    /// prefix such as `http://gateway/prometheus`). Only `http` and `https` are accepted.
    pub fn new(base: &str, http: reqwest::Client) -> Result<Self, String> {
        let base = Url::parse(base).map_err(|e| format!("invalid Prometheus URL {base:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(format!(
                "invalid Prometheus URL {base}: must be http(s)://host[:port][/prefix]"
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(format!(
                "invalid Prometheus URL {base}: must not carry a query or fragment"
            ));
        }
        Ok(Self { base, http })
    }

    /// The configured base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The instant-query URL for `query`: path segments appended, query percent-encoded.
    pub fn query_url(&self, query: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            // `Prometheus::new` refused cannot-be-a-base URLs, so this branch always runs.
            segs.pop_if_empty().extend(["api", "v1", "query"]);
        }
        url.query_pairs_mut().append_pair("query", query);
        url
    }

    /// Run an instant query and reduce its result to one number.
    pub async fn query(&self, query: &str, timeout: Duration) -> Result<f64, PromError> {
        let url = self.query_url(query);
        let unreachable = |message: String| PromError::Unreachable {
            url: self.base.to_string(),
            message,
        };
        let failed = |message: String| PromError::Query {
            query: query.to_string(),
            message,
        };
        let resp = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        // Bounded: an answer over MAX_RESPONSE_BYTES fails the check, naming the limit.
        let body = read_capped(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| failed(format!("HTTP {status}, {e}")))?;
        // Prometheus answers 400/422/503 with the same JSON envelope carrying the reason.
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            failed(format!(
                "HTTP {status}, not a Prometheus API answer ({e}): {}",
                snippet(&body)
            ))
        })?;
        if answer.status != "success" {
            return Err(failed(format!(
                "HTTP {status}, {}: {}",
                answer.error_type.as_deref().unwrap_or("error"),
                answer.error.as_deref().unwrap_or("no error message")
            )));
        }
        let data = answer.data.ok_or_else(|| failed("answer has no data".into()))?;
        let value = match data.result_type.as_str() {
            "scalar" => sample_value(&data.result),
            "vector" => match data.result.as_array().and_then(|a| a.first()) {
                None => return Err(failed("returned no samples (empty vector)".into())),
                Some(first) => first.get("value").and_then(sample_value),
            },
            other => {
                return Err(failed(format!(
                    "returned a {other}; only scalar and vector results are supported"
                )))
            }
        };
        let value = value.ok_or_else(|| failed(format!("malformed sample in {}", snippet(&body))))?;
        if value.is_nan() {
            return Err(failed("returned NaN".into()));
        }
        Ok(value)
    }
}

/// A sample is `[timestamp, "value"]`; the value is a string so `NaN` and `+Inf` survive JSON.
fn sample_value(v: &serde_json::Value) -> Option<f64> {
    let s = v.as_array()?.get(1)?.as_str()?;
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Largest response body read from a Prometheus query or a webhook action. Both answers are small
/// (one number; an acknowledgement); a larger one is refused rather than buffered, so a broken
/// or hostile endpoint cannot make the worker hold unbounded memory.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Read a response body, at most `limit` bytes: a declared `Content-Length` over it is refused
/// before reading, and a body that grows past it while streaming stops being read. The error
/// names the limit.
pub(crate) async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let over = || format!("response body larger than {limit} bytes (the limit); not read");
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(over());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its sources, so "error sending request" shows "connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

/// At most 200 characters of a response body, for error details.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::webhook::tests::serve_body;

    /// A query answer over 1 MiB is an error naming the limit (declared or
    /// streamed); one at the limit is read (and here refused only for not being JSON).
    #[tokio::test]
    async fn query_answers_are_read_up_to_the_limit() {
        let t = Duration::from_secs(10);
        for chunked in [false, true] {
            let prom = Prometheus::new(
                &serve_body(MAX_RESPONSE_BYTES + 1, chunked, b' ').await,
                reqwest::Client::new(),
            )
            .expect("url");
            let e = prom.query("up", t).await.expect_err("too long").to_string();
            assert!(e.contains("larger than 1048576 bytes"), "{e}");
            let prom = Prometheus::new(
                &serve_body(MAX_RESPONSE_BYTES, chunked, b' ').await,
                reqwest::Client::new(),
            )
            .expect("url");
            let e = prom.query("up", t).await.expect_err("blank body").to_string();
            assert!(
                e.contains("not a Prometheus API answer") && !e.contains("the limit"),
                "{e}"
            );
        }
    }

    #[test]
    fn query_is_one_encoded_parameter_under_the_base_path() {
        let p = Prometheus::new("http://prom:9090/prefix/", reqwest::Client::new()).unwrap();
        let u = p.query_url(r#"rate(errors{service="api"}[5m]) > 0 & x=1#frag"#);
        assert_eq!(u.path(), "/prefix/api/v1/query");
        let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![(
                "query".to_string(),
                r#"rate(errors{service="api"}[5m]) > 0 & x=1#frag"#.to_string()
            )]
        );
        assert!(u.fragment().is_none());
        let p = Prometheus::new("http://prom:9090", reqwest::Client::new()).unwrap();
        assert_eq!(p.query_url("up").as_str(), "http://prom:9090/api/v1/query?query=up");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["prom:9090", "ftp://prom", "http://prom/?x=1", "not a url", "mailto:x@y"] {
            assert!(Prometheus::new(bad, reqwest::Client::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_parse_including_special_values() {
        assert_eq!(sample_value(&serde_json::json!([1.0, "0.25"])), Some(0.25));
        assert_eq!(sample_value(&serde_json::json!([1.0, "+Inf"])), Some(f64::INFINITY));
        assert_eq!(sample_value(&serde_json::json!([1.0, 3])), None);
        assert_eq!(sample_value(&serde_json::json!("x")), None);
    }
}
