//! One partition's messages, in order: decide, publish, acknowledge.
//!
//! Each partition has a task that decides its messages one after another (the guardrail store
//! sees a partition's incidents in order, and fails closed: while the store is unreachable the
//! task retries the same message with the same attempt id) and a publisher task that gets their
//! outcomes out in the same order and stores each offset once they are acknowledged, and only
//! while the partition is still owned. [`Shared`] is the state all partition tasks share: the
//! engine, the clients, the stop signal, the first fatal error and the run's counters.

use super::publish::Outstanding;
use super::shared::{Decided, Shared, Work};
use super::trace::TraceParent;
use super::{KafkaError, BACKOFF_MAX, BACKOFF_MIN};
use crate::engine::{EngineError, Handled, Message};
use crate::incident::Rejection;
use crate::retry::Backoff;
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

impl Shared {
    /// Decide the first of `ready` and, with it, as many of the next ones as one question to
    /// the guardrail store answers ([`Engine::handle_batch`]: the store is asked, the decisions
    /// recorded, any action run), in order: what [`publish_in_order`] must then get out, one
    /// [`Decided`] for each of the first messages of `ready`. `None` when the worker stopped
    /// first (nothing was decided; the messages are redelivered).
    ///
    /// [`Engine::handle_batch`]: crate::engine::Engine::handle_batch
    async fn decide(&self, ready: &[(Work, String)]) -> Option<Vec<Decided>> {
        let traces: Vec<Option<TraceParent>> = ready
            .iter()
            .map(|(w, _)| w.headers.as_ref().and_then(TraceParent::from_headers))
            .collect();
        let spans: Vec<tracing::Span> = traces
            .iter()
            .map(|trace| match trace {
                Some(t) => tracing::info_span!("message", trace_id = %t.trace_id, parent_id = %t.parent_id),
                None => tracing::info_span!("message"),
            })
            .collect();
        // The decision runs in the first message's span (a lone message: its own).
        let handled = self.decide_traced(ready).instrument(spans[0].clone()).await?;
        Some(
            handled
                .into_iter()
                .zip(traces.into_iter().zip(spans))
                .map(|(handled, (trace, span))| Decided {
                    handled,
                    traceparent: trace.map(|t| t.child()),
                    span,
                })
                .collect(),
        )
    }

    async fn decide_traced(&self, ready: &[(Work, String)]) -> Option<Vec<Handled>> {
        // One attempt id per delivery, kept with the message and reused on retries (and in a
        // later batch) so the store never reserves twice.
        let messages: Vec<Message<'_>> = ready
            .iter()
            .map(|(w, attempt)| Message {
                payload: w.payload.as_deref().unwrap_or_default(),
                source: Some(&w.source),
                attempt,
            })
            .collect();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut handled = loop {
            match self.engine.handle_batch(&messages).await {
                Ok(h) => {
                    // A rejected message never reaches the store, so it says nothing about it.
                    if h.iter().any(|h| h.dead_letter.is_none()) {
                        self.health.set_store(true);
                    }
                    break h;
                }
                Err(EngineError::StoreUnavailable(reason)) => {
                    // Fail closed: nothing was executed; hold the partition on this message.
                    let source = &ready[0].0.source;
                    self.health.set_store(false);
                    let wait = backoff.next_wait();
                    warn!(%source, %reason, retry_in_ms = wait.as_millis() as u64,
                        "guardrail store unavailable: partition paused on this incident");
                    if !self.backoff(wait).await {
                        info!(%source, "stopping while the store is unavailable; left for redelivery");
                        return None;
                    }
                }
            }
        };
        for ((w, _), h) in ready.iter().zip(handled.iter_mut()) {
            if w.payload.is_none() {
                // The engine saw an empty payload; name the real problem in the DLQ and the audit.
                let rejection = Rejection {
                    field: "$".into(),
                    message: "null payload (tombstone) is not an incident".into(),
                };
                h.reword_rejections(&format!("invalid incident: {rejection}"));
                h.dead_letter = Some(rejection);
            }
        }
        Some(handled)
    }

    /// Store `offset + 1` for a finished message, if its partition is still ours.
    pub(super) fn acknowledge(&self, w: &Work) {
        let p = w.source.partition;
        if !self.consumer.context().owns(p, w.generation) {
            debug!(source = %w.source, "partition no longer owned; its offset is left to the new owner");
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(1);
        if let Err(e) = tpl.add_partition_offset(&w.source.topic, p, Offset::Offset(w.source.offset + 1)) {
            warn!(source = %w.source, error = %e, "cannot build the offset to store");
            return;
        }
        // Revocation can still race us between the check and the call; librdkafka then refuses
        // (the partition is unassigned), which is exactly what we want.
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            debug!(source = %w.source, error = %e, "offset not stored (partition revoked?)");
        }
    }
}

/// Decided messages of one partition that may be outstanding (handed to the producer and not yet
/// acknowledged, or waiting to be handed over) at once. Over all partitions, `kafka.max_in_flight`
/// bounds them too.
const PUBLISH_DEPTH: usize = 64;

/// One partition's messages, in two stages that overlap: this task decides each message after
/// the one before it was decided (so the store sees a partition's incidents in order, and a
/// redelivered duplicate finds the record of its original) — the messages already waiting, up
/// to `kafka.decide_batch`, with one question to the store, which answers them as it would one
/// at a time and stops at an action to run, which runs before the next are decided — and a
/// publisher task of its own
/// hands the decided messages' outcomes to the producer in the same order as they come, without
/// waiting for the broker, storing each offset once that message's outcomes, and those of every
/// message before it, are acknowledged. So while the broker acknowledges message `N`, messages
/// `N+1`, `N+2`, ... are being decided and published; outcomes keep the partition's order, and
/// offsets are stored strictly in order. A message whose publishing was abandoned (a fatal Kafka
/// error) stops the partition: nothing after it is published or acknowledged.
pub(super) async fn partition_task(shared: Arc<Shared>, partition: i32, mut rx: mpsc::UnboundedReceiver<Work>) {
    let (decided_tx, decided_rx) = mpsc::channel::<(Work, Decided)>(PUBLISH_DEPTH);
    let publisher = shared.tasks.spawn(publish_in_order(shared.clone(), decided_rx));
    // Messages received and not decided yet, each with its attempt id.
    let mut ready: VecDeque<(Work, String)> = VecDeque::new();
    loop {
        if ready.is_empty() {
            match rx.recv().await {
                Some(work) => ready.push_back((work, uuid::Uuid::new_v4().to_string())),
                None => break,
            }
        }
        // Whatever else is already waiting, up to a batch; a lone message does not wait.
        while ready.len() < shared.decide_batch {
            match rx.try_recv() {
                Ok(work) => ready.push_back((work, uuid::Uuid::new_v4().to_string())),
                Err(_) => break,
            }
        }
        if shared.stopping() {
            // Not started: left for redelivery (after a restart or to the next owner).
            ready.clear();
            continue;
        }
        ready.retain(|(work, _)| {
            let owned = shared.consumer.context().owns(partition, work.generation);
            if !owned {
                debug!(source = %work.source, "partition revoked before this message started; skipped");
            }
            owned
        });
        if ready.is_empty() {
            continue;
        }
        if publisher.is_finished() {
            // Publishing stopped: nothing after its last message may be acknowledged.
            break;
        }
        let decided = match AssertUnwindSafe(shared.decide(ready.make_contiguous()))
            .catch_unwind()
            .await
        {
            Ok(Some(d)) => d,
            // Stopping before it was decided: left for redelivery, and so is everything after.
            Ok(None) => break,
            Err(_) => {
                shared.fail(KafkaError::Panicked(ready[0].0.source.to_string()));
                break;
            }
        };
        // A decided message whose publisher is gone is redelivered and re-published from the
        // store's record.
        let mut gone = false;
        for d in decided {
            let Some((work, _)) = ready.pop_front() else { break };
            if decided_tx.send((work, d)).await.is_err() {
                gone = true;
                break;
            }
        }
        if gone {
            break;
        }
    }
    // The queue is closed (shutdown, revocation) or this partition stops: what was decided is
    // still published (an executed action's outcome must get out) and acknowledged in order.
    drop(decided_tx);
    if let Err(e) = publisher.await {
        shared.fail(KafkaError::Panicked(format!("publishing partition {partition}: {e}")));
    }
}

/// The publishing stage of [`partition_task`]: hands each decided message's records to the
/// producer as soon as it comes (up to [`PUBLISH_DEPTH`] messages outstanding), and finishes the
/// messages in the same order as their records are acknowledged, storing each offset. After a
/// failed record, that record and every one handed over after it are sent again in order
/// ([`Shared::redeliver`]). A message whose publishing was abandoned (a fatal Kafka error) stops
/// the partition: nothing after it is acknowledged.
async fn publish_in_order(shared: Arc<Shared>, mut decided: mpsc::Receiver<(Work, Decided)>) {
    let mut outstanding: VecDeque<Outstanding> = VecDeque::with_capacity(PUBLISH_DEPTH);
    let mut open = true;
    while open || !outstanding.is_empty() {
        let room = open && outstanding.len() < PUBLISH_DEPTH;
        tokio::select! {
            biased;
            // Acknowledgements first: they make room.
            answer = async {
                match outstanding.front_mut() {
                    Some(o) => o.acknowledged().await,
                    None => std::future::pending().await,
                }
            } => {
                let published = match answer {
                    Ok(()) => {
                        if let Some(o) = outstanding.pop_front() {
                            shared.finish(o);
                        }
                        true
                    }
                    Err(e) => shared.redeliver(&mut outstanding, e).await,
                };
                if !published {
                    // Nothing after an unacknowledged message may be acknowledged.
                    return;
                }
            }
            next = decided.recv(), if room => match next {
                Some((work, d)) => outstanding.push_back(shared.enqueue(work, d).await),
                None => open = false,
            },
        }
    }
}
