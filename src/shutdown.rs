//! Graceful shutdown, one small type passed to every task.
//!
//! SIGTERM (or Ctrl-C) fires the [`Trigger`]; every loop holding a [`Shutdown`] stops taking new
//! work, drains what it has in flight, commits, and returns.

use tokio::sync::watch;

/// Fires shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Observes shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and observer.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Ask every task to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// Another observer.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Has shutdown been requested?
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until shutdown is requested (returns at once if it already was, or if the trigger
    /// was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
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
    tracing::info!("shutdown requested: draining in-flight incidents");
    trigger.fire();
}
