//! What the dispatcher, the partition tasks and the publisher share: a message taken off the
//! consumer ([`Work`]), the state every partition task holds ([`Shared`]: the clients, the stop
//! signal, the first fatal error, the counters) and a decided message on its way to the broker
//! ([`Decided`]). Kept apart so the three stages import it and not each other.

use super::context::{ConsumerCtx, ProducerCtx};
use super::{KafkaError, RunStats};
use crate::engine::{Engine, Handled, Source};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tracing::error;

/// One message taken off the consumer, owned so it can cross into its partition's task.
pub(super) struct Work {
    pub(super) source: Source,
    pub(super) key: Option<Vec<u8>>,
    /// `None` for a null payload (a tombstone): poison, since it is not an incident.
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: Option<OwnedHeaders>,
    /// Assignment generation the message was received under.
    pub(super) generation: u64,
    /// The slot this message holds in the `max_in_flight` bound, released when it is finished
    /// or dropped. `None` for a message that arrived while consumption was paused.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Work {
    pub(super) fn from_message(m: &BorrowedMessage<'_>, generation: u64, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            source: Source {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            },
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m.headers().map(|h| h.detach()),
            generation,
            _permit: permit,
        }
    }
}

/// State every partition task shares.
pub(super) struct Shared {
    pub(super) engine: Arc<Engine>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Metrics,
    pub(super) consumer: Arc<StreamConsumer<ConsumerCtx>>,
    pub(super) producer: FutureProducer<ProducerCtx>,
    pub(super) outcomes_topic: String,
    /// `kafka.decide_batch`: a partition's waiting messages decided with one store call.
    pub(super) decide_batch: usize,
    pub(super) dlq_topic: String,
    /// Shutdown in progress: finish the current message, start no other.
    pub(super) stop: watch::Receiver<bool>,
    /// First fatal condition; the dispatcher stops when it is set.
    pub(super) fatal: Mutex<Option<KafkaError>>,
    pub(super) fatal_notify: Notify,
    pub(super) handled: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) republished: AtomicU64,
    /// Owner of the partition tasks (the worker's shutdown tracker).
    pub(super) tasks: Shutdown,
}

/// A message decided and waiting to be published.
pub(super) struct Decided {
    pub(super) handled: Handled,
    /// The `traceparent` its outcomes carry (the incident's trace, our span).
    pub(super) traceparent: Option<String>,
    /// The message's span, entered again to publish.
    pub(super) span: tracing::Span,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow() || self.failed()
    }

    /// A fatal error was recorded: the worker is stopping to be restarted.
    pub(super) fn failed(&self) -> bool {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub(super) fn fail(&self, e: KafkaError) {
        error!(error = %e, "stopping the consumer");
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            *fatal = Some(e);
        }
        drop(fatal);
        self.fatal_notify.notify_one();
    }

    pub(super) fn stats(&self) -> RunStats {
        RunStats {
            handled: self.handled.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            republished: self.republished.load(Ordering::Relaxed),
        }
    }

    /// Wait `d` unless the worker stops first; `false` when it stopped.
    pub(super) async fn backoff(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = stop.wait_for(|v| *v) => false,
        }
    }
}
