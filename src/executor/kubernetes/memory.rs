//! The Kubernetes executor's action memory.
//!
//! Post-checks need what the action saw *before* acting: the deleted pod's uid and owning
//! Deployment (the pod and its owner references are gone afterwards), the replica count a scale
//! set. The executor remembers these per action id (and separately for its rollback), for the
//! last [`MEMORY`] executions; they are also returned in [`crate::executor::ActionReport::captured`]
//! for the audit and the rollback's templates (`old_replicas`).

use super::{KubernetesExecutor, Owner};
use crate::executor::ExecContext;
use std::collections::{HashMap, VecDeque};

/// Executions whose effects are remembered for their post-checks.
const MEMORY: usize = 1024;

/// What an execution did that its post-checks need to know (keyed by action id).
#[derive(Debug, Clone, Default)]
pub(super) struct Remembered {
    pub(super) deleted_pod: Option<DeletedPod>,
    pub(super) scaled_to: Option<u32>,
}

/// The pod a `delete_pod` deleted, as read before the delete.
#[derive(Debug, Clone)]
pub(super) struct DeletedPod {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: String,
    /// `None`: it could not be resolved before the delete.
    pub(super) owner: Option<Owner>,
}

/// The remembered executions, oldest first in `order`.
#[derive(Debug, Default)]
pub(super) struct Memory {
    entries: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

impl KubernetesExecutor {
    /// Memory key of an execution phase: a rollback (and the checks verifying it) has its own
    /// record, so "the count the action set" means the rollback's count while verifying it.
    fn memory_key(ctx: &ExecContext<'_>) -> String {
        if ctx.rollback {
            format!("{}#rollback", ctx.action_id)
        } else {
            ctx.action_id.to_string()
        }
    }

    pub(super) fn remember(&self, ctx: &ExecContext<'_>, update: impl FnOnce(&mut Remembered)) {
        let action_id = &Self::memory_key(ctx);
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if !m.entries.contains_key(action_id) {
            m.order.push_back(action_id.to_string());
            while m.order.len() > MEMORY {
                if let Some(old) = m.order.pop_front() {
                    m.entries.remove(&old);
                }
            }
        }
        update(m.entries.entry(action_id.to_string()).or_default());
    }

    pub(super) fn recall(&self, ctx: &ExecContext<'_>) -> Remembered {
        let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        m.entries.get(&Self::memory_key(ctx)).cloned().unwrap_or_default()
    }
}
