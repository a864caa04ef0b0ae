//! Notifications: every outcome reaches a Slack-compatible webhook, with retries, and a dead
//! webhook never slows the pipeline.

use remediator::clock::{Clock, SystemClock};
use remediator::engine::{Engine, EventIds, Settings};
use remediator::executor::simulated::SimulatedExecutor;
use remediator::guardrails::memory::MemoryStore;
use remediator::metrics::Metrics;
use remediator::notify::Notifier;
use remediator::runbook::Catalogue;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook that fails its first request with 500, then accepts; returns the accepted bodies.
async fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let mut buf = vec![0u8; 65536];
            let mut len = 0;
            // Read headers and the body (Content-Length).
            loop {
                let r = sock.read(&mut buf[len..]).await.unwrap_or(0);
                len += r;
                let text = String::from_utf8_lossy(&buf[..len]).to_string();
                if let Some(h) = text.find("\r\n\r\n") {
                    let cl = text[..h]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if len >= h + 4 + cl {
                        if n > 1 {
                            seen.lock().unwrap().push(text[h + 4..h + 4 + cl].to_string());
                        }
                        break;
                    }
                }
                if r == 0 {
                    break;
                }
            }
            let status = if n == 1 { "500 Internal Server Error" } else { "200 OK" };
            let _ = sock
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, bodies)
}

fn engine(notifier: Notifier, metrics: Metrics) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Engine::new(
        Arc::new(Catalogue::from_yaml(include_str!("data/seed-runbooks.yaml"), "seed").unwrap()),
        Arc::new(MemoryStore::new(Arc::clone(&clock))),
        Arc::new(SimulatedExecutor::new()),
        clock,
        Settings::default(),
        metrics,
        EventIds::Random,
    )
    .with_notifier(notifier)
}

#[tokio::test]
async fn every_outcome_is_posted_with_retries() {
    let (url, bodies) = webhook().await;
    let metrics = Metrics::new();
    let e = engine(Notifier::spawn(&url, metrics.clone()).unwrap(), metrics.clone());
    for line in include_str!("data/seed-incidents.jsonl").lines().take(4) {
        e.handle(line.as_bytes(), None, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    while bodies.lock().unwrap().len() < 4 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "got {:?}",
            bodies.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = bodies.lock().unwrap().clone();
    let texts: Vec<String> = bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        texts[0].starts_with("[remediator] INC001 CrashLoopBackOff on api-server: executed, verified"),
        "{texts:?}"
    );
    assert!(texts
        .iter()
        .any(|t| t.contains("INC003") && t.contains("approval required") && t.contains("approval ")));
    assert!(texts.iter().any(|t| t.contains("INC004") && t.contains("manual")));
    assert!(
        metrics
            .render()
            .contains("remediator_notifications_total{result=\"sent\"} 4"),
        "the 500 was retried"
    );
}

#[tokio::test]
async fn a_dead_webhook_never_blocks_the_pipeline() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let metrics = Metrics::new();
    let e = engine(Notifier::spawn(&dead, metrics.clone()).unwrap(), metrics.clone());
    let t0 = Instant::now();
    for i in 0..1500 {
        let json = format!(r#"{{"id":"N{i}","root_cause":"unknown","confidence":0.5,"service":"s"}}"#);
        e.handle(json.as_bytes(), None, &format!("a{i}")).await.unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "handling waited for the webhook: {:?}",
        t0.elapsed()
    );
    assert!(
        metrics
            .render()
            .contains("remediator_notifications_total{result=\"dropped\"}"),
        "overflow is counted"
    );
}

#[test]
fn bad_webhook_urls_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for bad in ["ftp://x/y", "not a url", "http://user:pw@host/x"] {
            assert!(Notifier::spawn(bad, Metrics::new()).is_err(), "{bad}");
        }
    });
}
