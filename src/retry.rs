//! One retry policy for the whole worker: exponential backoff between two bounds.
//!
//! Every loop that retries an operation (the store after an action ran, a broker delivery, a
//! connection at start-up, a lease renewal, a Kubernetes write that conflicted) takes its waits
//! from a [`Backoff`], so a retry's pace is read in one place and tested once. A loop that must
//! stop on shutdown waits with [`Backoff::wait_unless`]; a loop whose work is already decided (an
//! executed action's record) retries with [`until_ok`] whatever happens, because giving up would
//! lose what it carries.

use std::future::Future;
use std::time::Duration;

/// Waits that double from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `first`, double after every wait, never beyond `max` (`first` is capped by it).
    pub const fn new(first: Duration, max: Duration) -> Self {
        let first = if first.as_nanos() > max.as_nanos() { max } else { first };
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next try; the one after it is twice as long, up to the bound.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// The operation succeeded: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleep the next wait unless `stop` completes first; `false` when it did (give up).
    pub async fn wait_unless(&mut self, stop: impl Future) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = stop => false,
        }
    }
}

/// Run `op` until it succeeds, calling `failed` with each error and waiting by `backoff` before
/// the next try. For work already decided, whose result must not be lost: it never gives up.
pub async fn until_ok<T, E, Fut>(mut backoff: Backoff, mut op: impl FnMut() -> Fut, mut failed: impl FnMut(&E)) -> T
where
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                failed(&e);
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_bound_and_start_again_after_a_success() {
        let mut b = Backoff::new(MS * 50, MS * 300);
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [MS * 50, MS * 100, MS * 200, MS * 300, MS * 300]);
        b.reset();
        assert_eq!(b.next_wait(), MS * 50);
        assert_eq!(
            Backoff::new(MS * 500, MS * 100).next_wait(),
            MS * 100,
            "first capped by max"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_every_failure_and_returns_the_success() {
        let mut tries = 0;
        let mut errors = Vec::new();
        let v = until_ok(
            Backoff::new(MS * 50, Duration::from_secs(5)),
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 4 {
                        Err(format!("down {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |e: &String| errors.push(e.clone()),
        )
        .await;
        assert_eq!(
            (v, errors),
            (4, vec!["down 1".to_string(), "down 2".into(), "down 3".into()])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_when_stopped() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!b.wait_unless(std::future::ready(())).await);
        let started = tokio::time::Instant::now();
        assert!(b.wait_unless(std::future::pending::<()>()).await);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
