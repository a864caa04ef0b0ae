//! The consume loop: pull messages within the in-flight bound and route each to its partition.
//!
//! [`dispatch`] is the only place that polls the consumer and the only one that takes slots of
//! the `max_in_flight` semaphore, which is what makes backpressure simple: when no slot is free
//! it stops pulling, pauses the assignment if the stall outlasts [`PAUSE_AFTER`] (so the consumer
//! is still polled and the group membership stays alive), and resumes once half the slots are
//! free. Each message becomes a [`Work`] that owns its slot and goes to its partition's queue;
//! the partition's task (`partition.rs`) is spawned on its first message.

use super::context::ConsumerCtx;
use super::partition::partition_task;
use super::shared::{Shared, Work};
use super::KafkaError;
use crate::shutdown::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::Message;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How long a saturated consumer may go unpolled before it pauses its partitions (and polls
/// again): short enough to serve rebalances promptly, long enough that bursts of quick
/// decisions never pay the refetch a pause causes.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// Pause after a consumer error so a persistent one is not logged in a hot loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A partition's task and the queue feeding it.
pub(super) struct Worker {
    pub(super) tx: mpsc::UnboundedSender<Work>,
    pub(super) handle: JoinHandle<()>,
}

/// The consume loop: pull messages within the in-flight bound and hand each to its partition's
/// task, until shutdown or a fatal error.
pub(super) async fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<i32, Worker>,
    max_in_flight: usize,
    shutdown: &mut Shutdown,
) {
    let consumer = &shared.consumer;
    let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    // Hysteresis: once paused, resume only when half the slots are free again, so a saturated
    // worker does not pause and resume (and refetch) for every single message.
    let resume_at = u32::try_from((max_in_flight / 2).max(1)).unwrap_or(u32::MAX);
    let mut next: Option<OwnedSemaphorePermit> = None;
    let mut paused = false;
    loop {
        if next.is_none() {
            next = slots.clone().try_acquire_owned().ok();
        }
        if next.is_none() && !paused {
            // Saturated. A short stall (a burst of quick decisions) is waited out without
            // polling, because pausing costs a refetch; only a long one (slow actions, a store
            // outage) pauses, so that the consumer is polled again for as long as it lasts.
            tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                _ = shared.fatal_notify.notified() => return,
                permit = slots.clone().acquire_owned() => {
                    next = permit.ok();
                    continue;
                }
                _ = tokio::time::sleep(PAUSE_AFTER) => {
                    set_paused(consumer, true);
                    paused = true;
                }
            }
        } else if next.is_some() && paused {
            set_paused(consumer, false);
            paused = false;
        }
        let saturated = next.is_none();
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = shared.fatal_notify.notified() => return,
            // Only this loop takes slots, so once `resume_at` are free, one is still free after
            // releasing them: the next iteration takes it and resumes.
            free = slots.clone().acquire_many_owned(resume_at), if saturated => drop(free),
            received = consumer.recv() => match received {
                Ok(m) => {
                    let Some(generation) = consumer.context().generation(m.partition()) else {
                        // Not ours (any more): the owner will get it. Never happens in practice,
                        // since librdkafka drops messages of revoked partitions.
                        debug!(partition = m.partition(), offset = m.offset(), "message of an unowned partition ignored");
                        continue;
                    };
                    let work = Work::from_message(&m, generation, next.take());
                    let partition = work.source.partition;
                    let worker = workers.entry(partition).or_insert_with(|| spawn_worker(shared, partition));
                    if worker.tx.send(work).is_err() {
                        // The task only ends when stopping or after a fatal error: the message
                        // stays unacknowledged and is redelivered.
                        debug!(partition, "partition task has stopped; message left for redelivery");
                    }
                }
                Err(e) => {
                    if matches!(e, RdKafkaError::MessageConsumptionFatal(_)) {
                        let detail = consumer.client().fatal_error().map_or_else(|| e.to_string(), |(c, r)| format!("{c}: {r}"));
                        shared.fail(KafkaError::Fatal(format!("consumer: {detail}")));
                        return;
                    }
                    warn!(error = %e, "consumer error");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Pause or resume every assigned partition. The consumer keeps being polled either way, so the
/// group membership stays alive.
fn set_paused(consumer: &StreamConsumer<ConsumerCtx>, pause: bool) {
    consumer.context().saturated.store(pause, Ordering::Relaxed);
    let result = consumer.assignment().and_then(|tpl| {
        if tpl.count() == 0 {
            Ok(())
        } else if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        }
    });
    match result {
        Ok(()) if pause => debug!("in-flight bound reached: consumption paused"),
        Ok(()) => debug!("consumption resumed"),
        Err(e) => warn!(error = %e, pause, "could not change the pause state of the assignment"),
    }
}

fn spawn_worker(shared: &Arc<Shared>, partition: i32) -> Worker {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = shared.tasks.spawn(partition_task(shared.clone(), partition, rx));
    Worker { tx, handle }
}
