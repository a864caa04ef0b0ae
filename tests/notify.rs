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
    let notifier = Notifier::spawn(&url, metrics.clone())
        .unwrap()
        .with_console("https://remediator.example.com/console");
    let e = engine(notifier, metrics.clone());
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
    // The approval request links to its page in the console; nothing else has a link.
    let asking = texts.iter().find(|t| t.contains("INC003")).unwrap();
    let link = asking
        .split(" — review: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no console link: {asking}"));
    let id = link
        .strip_prefix("https://remediator.example.com/console#approval/")
        .unwrap_or_else(|| panic!("{link}"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{link}");
    assert!(asking.contains(&format!("approval {id}")), "{asking}");
    assert_eq!(texts.iter().filter(|t| t.contains("review:")).count(), 1, "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("INC004") && t.contains("manual")));
    // The webhook holds a body as soon as it receives it; the notifier counts it sent once the
    // answer is back, a moment later: wait for the count (bounded) rather than race it.
    let t0 = Instant::now();
    while !metrics
        .render()
        .contains("remediator_notifications_total{result=\"sent\"} 4")
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "the 500 was retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The link to an approval's page keeps only what cannot change its meaning.
#[test]
fn an_approval_link_encodes_the_id() {
    use remediator::notify::approval_link;
    let base = "https://r.example.com/console";
    assert_eq!(
        approval_link(base, "4a062866-57f8-4fe8-98ea-a17991d39cf8"),
        "https://r.example.com/console#approval/4a062866-57f8-4fe8-98ea-a17991d39cf8"
    );
    assert_eq!(
        approval_link(base, "a/../b?c=d#e f"),
        "https://r.example.com/console#approval/a%2F%2E%2E%2Fb%3Fc%3Dd%23e%20f"
    );
    assert_eq!(
        approval_link(base, "é"),
        "https://r.example.com/console#approval/%C3%A9"
    );
}

/// Without a console address, nothing links anywhere (and an empty one is no address).
#[tokio::test]
async fn without_a_console_address_no_link_is_added() {
    let (url, bodies) = webhook().await;
    let metrics = Metrics::new();
    let e = engine(
        Notifier::spawn(&url, metrics.clone()).unwrap().with_console(""),
        metrics,
    );
    let line = include_str!("data/seed-incidents.jsonl").lines().nth(2).unwrap();
    e.handle(line.as_bytes(), None, "a1").await.unwrap();
    let t0 = Instant::now();
    while bodies.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "nothing posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = bodies.lock().unwrap()[0].clone();
    assert!(
        body.contains("approval required") && !body.contains("review:"),
        "{body}"
    );
}
