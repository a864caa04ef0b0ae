//! The scaling arithmetic (docs/design.md#scaling), shared by both executors and by
//! [`Replicas::target`](super::Replicas::target), which judges a runbook's scale against the
//! live replica count.
//!
//! It lives beside the runbook types, not in an executor: the catalogue and every executor
//! depend on it, and it depends on nothing of the crate, so no executor's module is imported
//! for production logic and no import circle can form through it.

/// The predictive scaler: replicas needed for the predicted load at the current load per
/// replica, plus one, capped at `max_replicas`, and never below the current count (scale up
/// only).
pub fn predictive_target(current: u32, predicted_load: f64, current_load: f64, max_replicas: u32) -> u32 {
    if current == 0 || current_load <= 0.0 {
        return current;
    }
    let per_replica = current_load / current as f64;
    let needed = (predicted_load / per_replica) as u64 + 1;
    let target = needed.clamp(1, max_replicas as u64) as u32;
    target.max(current)
}

/// A scale of deployment `namespace/deployment` judged against its live count: the count to
/// set (`target`, the answer of [`Replicas::target`](super::Replicas::target)), or the refusal
/// both executors record when the target breaks the runbook (nothing is changed then), naming
/// the deployment.
pub fn judged(namespace: &str, deployment: &str, target: Result<u32, String>) -> Result<u32, String> {
    target.map_err(|why| format!("deployment {namespace}/{deployment}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictive_scaling_matches_the_seed() {
        // 4 replicas at load 400 (100 each), predicted 900 -> 9 + 1 = 10, capped at 8.
        assert_eq!(predictive_target(4, 900.0, 400.0, 8), 8);
        assert_eq!(predictive_target(4, 900.0, 400.0, 20), 10);
        // Never scales down.
        assert_eq!(predictive_target(4, 100.0, 400.0, 20), 4);
    }

    #[test]
    fn predictive_scaling_edges() {
        // A stopped deployment stays stopped; no load observed means no basis to scale on.
        assert_eq!(predictive_target(0, 900.0, 400.0, 8), 0);
        assert_eq!(predictive_target(4, 900.0, 0.0, 8), 4);
        assert_eq!(predictive_target(4, 900.0, -1.0, 8), 4);
        // A cap below the current count never scales down; exactly the need is needed + 1.
        assert_eq!(predictive_target(6, 900.0, 400.0, 5), 6);
        assert_eq!(predictive_target(4, 800.0, 400.0, 20), 9);
        assert_eq!(predictive_target(1, 0.0, 100.0, 20), 1);
    }

    #[test]
    fn a_refused_scale_names_the_deployment() {
        assert_eq!(judged("prod", "web", Ok(3)), Ok(3));
        assert_eq!(
            judged("prod", "web", Err("out of bounds".into())),
            Err("deployment prod/web: out of bounds".into())
        );
    }
}
