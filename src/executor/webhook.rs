//! The `webhook` action: one HTTP call to automation that lives outside Kubernetes (a disk
//! cleaner, a database operator).
//!
//! The URL comes from a runbook template, so it is parsed, never spliced: only `http` and
//! `https` URLs with a host are called, credentials embedded in the URL are refused (secrets
//! belong in the environment, docs/configuration.md), and the URL never reaches a shell. The call
//! carries the execution's action id in `Idempotency-Key` so a receiver can discard a repeat.
//! Any answer outside 2xx is an error: the engine then reports the action as failed instead of
//! verifying something that never happened. The body is read up to [`MAX_RESPONSE_BYTES`]
//! (1 MiB), never further into memory. A 2xx whose body is over that cap, or breaks off while
//! streaming, still says the receiver applied the change: the call succeeds with the unread body
//! noted ([`WebhookReply::unread`]) and the engine goes on to the post-checks, which decide.

use super::prometheus::{error_chain, read_capped, snippet, MAX_RESPONSE_BYTES};
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
    /// Why the body of this 2xx answer was not read (over the cap, or broken off), if it was not.
    pub unread: Option<String>,
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
    // Bounded: never more than MAX_RESPONSE_BYTES is read. The status decides: a non-2xx is a
    // failure whatever its body; a 2xx means the receiver applied the change, so a body that
    // cannot be read (too long, broken off) is noted, not turned into a failure that would skip
    // the post-checks and misreport an applied change.
    let (text, unread) = match read_capped(resp, MAX_RESPONSE_BYTES).await {
        Ok(b) => (snippet(&b), None),
        Err(e) if status.is_success() => (String::new(), Some(e)),
        Err(e) => return Err(ExecError(format!("webhook {m} {u} answered HTTP {status} with a {e}"))),
    };
    if !status.is_success() {
        return Err(ExecError(format!("webhook {m} {u} answered HTTP {status}: {text}")));
    }
    Ok(WebhookReply {
        status: status.as_u16(),
        body: text,
        unread,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local HTTP server answering every request with 200 and `size` bytes of body, declared
    /// in `Content-Length` or (`chunked`) streamed without it.
    pub(crate) async fn serve_body(size: usize, chunked: bool, body_byte: u8) -> String {
        serve_answer("200 OK", size, chunked, body_byte, false).await
    }

    /// [`serve_body`] with another status line, and (`truncated`) a body that breaks off: half of
    /// a declared `Content-Length`, then the connection closes.
    pub(crate) async fn serve_answer(
        status: &'static str,
        size: usize,
        chunked: bool,
        body_byte: u8,
        truncated: bool,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = vec![body_byte; if truncated { size / 2 } else { size }];
                    let head = if chunked {
                        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                    } else {
                        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n")
                    };
                    let _ = sock.write_all(head.as_bytes()).await;
                    if chunked {
                        for part in body.chunks(64 * 1024) {
                            let _ = sock.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await;
                            let _ = sock.write_all(part).await;
                            let _ = sock.write_all(b"\r\n").await;
                        }
                        if !truncated {
                            let _ = sock.write_all(b"0\r\n\r\n").await;
                        }
                    } else {
                        let _ = sock.write_all(&body).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// A webhook answer is read up to 1 MiB, whether it
    /// declares its length or streams it. A 2xx over the cap or broken off mid-body still
    /// succeeds (the change was applied), noting the unread body naming the limit; a non-2xx
    /// over the cap is an error.
    #[tokio::test]
    async fn webhook_answers_are_read_up_to_the_limit() {
        let http = reqwest::Client::new();
        let t = Duration::from_secs(10);
        for chunked in [false, true] {
            let url = serve_body(MAX_RESPONSE_BYTES + 1, chunked, b'x').await;
            let ok = call(&http, &url, "POST", None, t, "a-1")
                .await
                .expect("a 2xx is applied even when its body is too long");
            assert_eq!(ok.status, 200);
            let why = ok.unread.expect("the unread body is noted");
            assert!(why.contains("larger than 1048576 bytes"), "{why}");
            let url = serve_answer("200 OK", 4096, chunked, b'x', true).await;
            let ok = call(&http, &url, "POST", None, t, "a-1")
                .await
                .expect("a 2xx is applied even when its body breaks off");
            assert!(ok.unread.is_some(), "chunked={chunked}: {ok:?}");
            let url = serve_answer(
                "500 Internal Server Error",
                MAX_RESPONSE_BYTES + 1,
                chunked,
                b'x',
                false,
            )
            .await;
            let e = call(&http, &url, "POST", None, t, "a-1")
                .await
                .expect_err("a 500 fails");
            assert!(
                e.0.contains("HTTP 500") && e.0.contains("larger than 1048576 bytes"),
                "{e}"
            );
            let url = serve_body(MAX_RESPONSE_BYTES, chunked, b'x').await;
            let ok = call(&http, &url, "POST", None, t, "a-1").await.expect("at the limit");
            assert_eq!((ok.status, ok.unread), (200, None));
        }
    }

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
