//! Graceful shutdown, one small type passed to every task.
//!
//! SIGTERM (or Ctrl-C) fires the [`Trigger`]; every loop holding a [`Shutdown`] stops taking new
//! work, finishes what it has in hand, and returns. What is in hand may be an action with its
//! post-checks and rollback, which can take minutes: it is never cut off early. The bound is the
//! *grace* (`shutdown.grace`), counted from the moment shutdown was requested; the orchestrator's
//! own limit (`terminationGracePeriodSeconds`) must be longer than it.
//!
//! Every background task of a worker is spawned through [`Shutdown::spawn`], so one owner (a
//! [`TaskTracker`] shared by the trigger and all observers) knows them all, and
//! [`Shutdown::finish`] waits for every one of them, within the grace, before the process exits.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The grace of [`channel`]: the default of `shutdown.grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// Fires shutdown.
#[derive(Debug, Clone)]
pub struct Trigger {
    fired: watch::Sender<Option<Instant>>,
    grace: Duration,
    tasks: TaskTracker,
}

/// Observes shutdown, and spawns the tasks shutdown waits for.
#[derive(Debug, Clone)]
pub struct Shutdown {
    fired: watch::Receiver<Option<Instant>>,
    grace: Duration,
    tasks: TaskTracker,
}

/// A connected trigger and observer with the default grace ([`DEFAULT_GRACE`]).
pub fn channel() -> (Trigger, Shutdown) {
    with_grace(DEFAULT_GRACE)
}

/// A connected trigger and observer: work in hand gets `grace` after shutdown is requested.
pub fn with_grace(grace: Duration) -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    let tasks = TaskTracker::new();
    (
        Trigger {
            fired: tx,
            grace,
            tasks: tasks.clone(),
        },
        Shutdown {
            fired: rx,
            grace,
            tasks,
        },
    )
}

impl Trigger {
    /// Ask every task to stop. The grace is counted from the first call.
    pub fn fire(&self) {
        self.fired.send_if_modified(|at| {
            let first = at.is_none();
            if first {
                *at = Some(Instant::now());
            }
            first
        });
    }

    /// Another observer (same grace, same task owner).
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            fired: self.fired.subscribe(),
            grace: self.grace,
            tasks: self.tasks.clone(),
        }
    }
}

impl Shutdown {
    /// Has shutdown been requested?
    pub fn is_triggered(&self) -> bool {
        self.fired.borrow().is_some()
    }

    /// Wait until shutdown is requested (returns at once if it already was, or if the trigger
    /// was dropped).
    pub async fn wait(&mut self) {
        let _ = self.fired.wait_for(Option::is_some).await;
    }

    /// How long work in hand may take once shutdown is requested.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When the grace ends: `grace` after shutdown was requested, or `grace` from now if it was
    /// not (a worker stopping on its own, after a fatal error, still lets work in hand finish).
    pub fn deadline(&self) -> Instant {
        let fired = *self.fired.borrow();
        fired.unwrap_or_else(Instant::now) + self.grace
    }

    /// Spawn a task that shutdown waits for ([`Shutdown::finish`]). Every long-lived or
    /// work-carrying task of the worker goes through here, so none is dropped mid-way when the
    /// process exits.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Tasks spawned through [`Shutdown::spawn`] that have not finished yet.
    pub fn tasks_running(&self) -> usize {
        self.tasks.len()
    }

    /// Wait until every task spawned through [`Shutdown::spawn`] has finished, at most until
    /// [`Shutdown::deadline`]. `true` when all did; `false` when some were still running at the
    /// deadline (they are dropped when the process exits).
    pub async fn finish(&self) -> bool {
        self.tasks.close();
        tokio::time::timeout_at(self.deadline(), self.tasks.wait())
            .await
            .is_ok()
    }
}

/// Wait for SIGTERM or Ctrl-C, then fire `trigger`.
pub async fn on_signal(trigger: Trigger) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!(
        grace_s = trigger.grace.as_secs(),
        "shutdown requested: taking no new work; work in hand may finish within the grace"
    );
    trigger.fire();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The grace is counted from the first signal, and `finish` waits for every spawned task,
    /// but no longer than the grace.
    #[tokio::test]
    async fn finish_waits_for_every_task_within_the_grace() {
        let (trigger, shutdown) = with_grace(Duration::from_secs(5));
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        shutdown.spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let mut observer = trigger.subscribe();
        assert!(!observer.is_triggered());
        trigger.fire();
        observer.wait().await;
        let deadline = shutdown.deadline();
        tokio::time::sleep(Duration::from_millis(20)).await;
        trigger.fire();
        assert_eq!(shutdown.deadline(), deadline, "counted from the first signal");
        assert!(shutdown.finish().await, "a 0.6 s task finishes within a 5 s grace");
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(shutdown.tasks_running(), 0);

        let (trigger, shutdown) = with_grace(Duration::from_millis(300));
        shutdown.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        trigger.fire();
        let started = Instant::now();
        let all = tokio::time::timeout(Duration::from_secs(5), shutdown.finish())
            .await
            .expect("finish is bounded by the grace");
        assert!(!all, "a task past the grace is reported");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(shutdown.tasks_running(), 1);
    }
}
