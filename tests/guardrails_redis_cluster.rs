//! The guardrail and ledger behaviour suites against [`RedisStore`] on a real Redis Cluster
//! (`REDIS_CLUSTER_URL`, three primaries started by `scripts/redis-ha.sh start cluster`).
//!
//! Each case uses a fresh key prefix, so the suite's stores land on different slots and
//! therefore on all three primaries. Redis Cluster refuses a script whose keys span slots
//! (`CROSSSLOT`), so every case passing is also the proof that each script is single-slot.

mod common;

use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::GuardrailStore;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Generous for a loaded test machine; production uses ≈200 ms.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster under test, from `REDIS_CLUSTER_URL`; `None` (skip) when unset, a failure when
/// `REMEDIATOR_TEST_REQUIRE_SERVICES` is set.
fn cluster_url() -> Option<String> {
    match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() => panic!(
            "REDIS_CLUSTER_URL is not set but REMEDIATOR_TEST_REQUIRE_SERVICES is: start a cluster with \
             `export \"$(scripts/redis-ha.sh start cluster)\"`"
        ),
        _ => {
            eprintln!("skipping: REDIS_CLUSTER_URL not set (run `scripts/redis-ha.sh start cluster`)");
            None
        }
    }
}

async fn connect(prefix: &str) -> Option<RedisStore> {
    let url = cluster_url()?;
    let store = RedisStore::connect(&url, prefix, TIMEOUT).await.expect("connect");
    assert_eq!(store.topology(), "cluster");
    Some(store)
}

fn fresh_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn cluster_store() -> Option<common::guardrail_suite::Store> {
    Some(Arc::new(connect(&fresh_prefix()).await?))
}

guardrail_suite_tests!(cluster_store);

async fn cluster_ledger() -> Option<common::ledger_suite::Ledger> {
    Some(Arc::new(connect(&fresh_prefix()).await?))
}

ledger_suite_tests!(cluster_ledger);

/// Stores with different prefixes live on different primaries (the hash tag is the prefix), and
/// each store's keys all sit in its tag's slot on one node.
#[tokio::test]
async fn prefixes_spread_over_the_primaries_and_each_stays_on_one() {
    let Some(url) = cluster_url() else { return };
    let nodes: Vec<String> = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(|h| format!("redis://{h}"))
        .collect();
    let mut owners = BTreeSet::new();
    for _ in 0..12 {
        let prefix = fresh_prefix();
        let store = connect(&prefix).await.expect("store");
        store.ping().await.expect("ping");
        let s = common::guardrail_suite::scope("rb", "svc");
        store
            .decide(&common::guardrail_suite::reserve(
                "inc-1",
                "a-1",
                &s,
                &common::guardrail_suite::open_limits(),
                60_000,
            ))
            .await
            .expect("decide");
        // Which primaries hold this prefix's keys? Exactly one.
        let mut holders = Vec::new();
        for node in &nodes {
            let mut c = redis::Client::open(node.as_str())
                .expect("node url")
                .get_multiplexed_async_connection()
                .await
                .expect("node connection");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{prefix}}}:*"))
                .query_async(&mut c)
                .await
                .expect("KEYS");
            if !keys.is_empty() {
                holders.push(node.clone());
            }
        }
        assert_eq!(holders.len(), 1, "prefix {prefix} held by {holders:?}");
        owners.insert(holders.remove(0));
    }
    assert!(owners.len() >= 2, "12 random prefixes all landed on {owners:?}");
}
