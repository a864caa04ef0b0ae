//! The newest outcomes on the audit topic, as the console shows them.
//!
//! Every replica tails the whole topic (all partitions, from a little before the end when it
//! starts), so any replica behind a load balancer shows the same history, including what other
//! replicas and `remediator execute` published. It reads without a consumer group's commits: it
//! never moves the offsets of anyone else. Messages are kept as they came (raw bytes, at most
//! `console.recent_outcomes` of them) and parsed only when someone asks; a message that is not
//! an outcome (anyone who can produce to the topic can write there) is left out of the answer.

use super::OutcomeFilter;
use crate::kafka::KafkaSettings;
use crate::outcome::Outcome;
use crate::shutdown::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Default number of outcomes an answer holds.
const DEFAULT_LIMIT: usize = 50;

/// The last outcomes seen on the audit topic, shared by the tail task and the console.
#[derive(Clone)]
pub struct Recent {
    kept: Arc<Mutex<VecDeque<Vec<u8>>>>,
    capacity: usize,
}

impl Recent {
    /// Keep at most `capacity` messages (0: keep none; the console's list stays empty).
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
            capacity,
        }
    }

    /// How many messages it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keep one message, forgetting the oldest when full.
    pub fn push(&self, payload: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        while kept.len() >= self.capacity {
            kept.pop_front();
        }
        kept.push_back(payload.to_vec());
    }

    /// The outcomes that pass `filter`, newest (by `finished_at`) first, at most its limit.
    pub fn newest(&self, filter: &OutcomeFilter) -> Vec<Outcome> {
        let kept: Vec<Vec<u8>> = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let wanted = |want: &Option<String>, have: Option<&str>| match want.as_deref() {
            None | Some("") => true,
            Some(w) => have == Some(w),
        };
        let mut out: Vec<Outcome> = kept
            .iter()
            .rev()
            .filter_map(|p| serde_json::from_slice::<Outcome>(p).ok())
            .filter(|o| {
                wanted(&filter.runbook, o.runbook_id.as_deref())
                    && wanted(&filter.service, o.service.as_deref())
                    && wanted(&filter.decision, Some(o.decision.as_str()))
            })
            .collect();
        // Stable: outcomes finished in the same millisecond stay in arrival order, newest first.
        out.sort_by_key(|o| std::cmp::Reverse(o.finished_at));
        out.truncate(filter.limit.unwrap_or(DEFAULT_LIMIT));
        out
    }

    /// Tail `topic` until shutdown, reconnecting after an error.
    pub async fn tail(self, settings: KafkaSettings, topic: String, mut shutdown: Shutdown) {
        if self.capacity == 0 {
            return;
        }
        loop {
            let err = tokio::select! {
                _ = shutdown.wait() => return,
                r = self.tail_once(&settings, &topic) => r,
            };
            warn!(topic = %topic, error = %err, "console: reading the audit topic failed; retrying in 5 s");
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Assign every partition of `topic` a little before its end and keep what arrives; returns
    /// only on an error.
    async fn tail_once(&self, settings: &KafkaSettings, topic: &str) -> String {
        let mut config = crate::kafka::consumer_config(settings);
        // Its own group name, never committed: the worker's offsets are not touched.
        config
            .set("group.id", format!("{}-console", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "0");
        let consumer: StreamConsumer = match config.create() {
            Ok(c) => c,
            Err(e) => return format!("consumer: {e}"),
        };
        let consumer = Arc::new(consumer);
        let (c, t, per) = (Arc::clone(&consumer), topic.to_string(), self.capacity);
        let assignment = tokio::task::spawn_blocking(move || starting_points(&c, &t, per)).await;
        let tpl = match assignment {
            Ok(Ok(tpl)) => tpl,
            Ok(Err(e)) => return e,
            Err(e) => return format!("metadata task: {e}"),
        };
        if let Err(e) = consumer.assign(&tpl) {
            return format!("assign: {e}");
        }
        info!(topic, partitions = tpl.count(), "console: tailing the audit topic");
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    if let Some(p) = m.payload() {
                        self.push(p);
                    }
                }
                // librdkafka reconnects by itself; a broker outage shows here as errors.
                Err(e) => {
                    warn!(error = %e, "console: audit topic read error");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Each partition of `topic` at `keep` messages before its end (or its start): together at
/// least the last `keep` messages of the topic.
fn starting_points(consumer: &StreamConsumer, topic: &str, keep: usize) -> Result<TopicPartitionList, String> {
    const WAIT: Duration = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), WAIT)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {topic} has no partitions (does it exist?)"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, WAIT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        let start = high.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX)).max(low);
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| format!("{topic}/{p}: {e}"))?;
    }
    Ok(tpl)
}
