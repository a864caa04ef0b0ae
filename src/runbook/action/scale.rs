//! How far a scale action may move a deployment: the direction a runbook declares, the replica
//! range it allows, and the rendered target that the executors judge once more against the live
//! count right before the call. Kept together because these are the scaling safety rules: a
//! newcomer checking what a scale can do reads one file.

use crate::runbook::template::Template;

/// The cap a scale action gets when its runbook names none: the `max_replicas` of its
/// `current_replicas_below_max` pre-check if it has one, else this (the reference catalogue's
/// scale-up relies on it).
pub const DEFAULT_MAX_REPLICAS: u32 = 10;

/// Which way a scale action may move a deployment. Declared by the runbook (never by the
/// incident), and checked twice: at render time against the runbook's bounds, and against the
/// live count right before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only above the live count, never above the runbook's `max_replicas`.
    Up,
    /// Only below the live count, never below the runbook's `min_replicas` (at least 1).
    Down,
    /// Back to the count a scale action captured from the live object before acting
    /// (`{old_replicas}`): only in a rollback, never a value from the incident.
    Restore,
}

impl Direction {
    /// The name as written in runbooks and outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Restore => "restore",
        }
    }
}

/// The replica range a scale action may set, from the runbook. `min >= 1`: zero replicas is
/// reachable only through `scale_to_zero`, which only a HIGH-risk runbook may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Lowest count a scale may set (`min_replicas`, default 1).
    pub min: u32,
    /// Highest count a scale may set (`max_replicas`).
    pub max: u32,
}

impl Bounds {
    /// `min_replicas: 1`, `max_replicas` = [`DEFAULT_MAX_REPLICAS`].
    pub const DEFAULT: Bounds = Bounds {
        min: 1,
        max: DEFAULT_MAX_REPLICAS,
    };

    pub(super) fn check(&self, n: u32) -> Result<(), String> {
        if n == 0 {
            Err("0 replicas is refused: only a scale_to_zero action (HIGH risk) may scale to zero".into())
        } else if n > self.max {
            Err(format!("{n} replicas is above the runbook's max_replicas {}", self.max))
        } else if n < self.min {
            Err(format!("{n} replicas is below the runbook's min_replicas {}", self.min))
        } else {
            Ok(())
        }
    }
}

/// How a scale action picks the replica count.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaSpec {
    /// Scale to an absolute count (literal or template such as `{new_replicas}`), only in
    /// `direction` (`Up` or `Down`) and within `bounds`.
    To {
        /// The count.
        count: Template,
        /// Which way it may move the deployment.
        direction: Direction,
        /// The runbook's range.
        bounds: Bounds,
    },
    /// Back to `{old_replicas}` as captured by the action (a rollback only).
    Restore,
    /// Scale by a relative step (`--replicas=+1`: up, `-1`: down), the result within `bounds`.
    By(i32, Bounds),
    /// The predictive scaler (docs/design.md#scaling): from `predicted_load` / `current_load`, up
    /// only, capped.
    Predictive {
        /// Never scale above this.
        max_replicas: u32,
    },
}
/// Why a scale other than `down` or `restore` is refused on a deployment at 0 replicas.
pub const STOPPED_DELIBERATELY: &str = "the deployment runs 0 replicas: it was stopped deliberately \
     (scale_to_zero or a human), and only a human or the stop's own restore brings it back";
/// A rendered replica target, with the rule the live count must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicas {
    /// Raise to this count: only from below it, within the bounds.
    Up(u32, Bounds),
    /// Lower to this count: only from above it, within the bounds.
    Down(u32, Bounds),
    /// Relative to the current count; the result must lie within the bounds.
    By(i32, Bounds),
    /// The count captured from the live object before the action this rolls back.
    Restore(u32),
    /// Predictive scale-up.
    Predictive {
        /// Expected load.
        predicted_load: f64,
        /// Current load.
        current_load: f64,
        /// Cap.
        max_replicas: u32,
    },
}

impl Replicas {
    /// The count to set given the live `current` one, or why the scale is refused. The
    /// executors call this on the count they read right before the call (the call carries that
    /// read's `resourceVersion`), so a deployment that changed since rendering is judged as it is.
    /// `Ok(current)` means there is nothing to do.
    ///
    /// A deployment at 0 replicas was stopped deliberately (`scale_to_zero`, or a human): an
    /// `up`, `by` or predictive scale never brings it back, however low its risk, so that an
    /// automatic LOW-risk runbook cannot undo a HIGH-risk stop. Only a `restore` (the rollback of
    /// the stop) or a human does.
    pub fn target(&self, current: u32) -> Result<u32, String> {
        if current == 0 && !matches!(self, Replicas::Restore(_) | Replicas::Down(..)) {
            return Err(STOPPED_DELIBERATELY.to_string());
        }
        match self {
            Replicas::Up(n, bounds) => {
                bounds.check(*n)?;
                if *n < current {
                    return Err(format!(
                        "a scale-up to {n} replicas is refused: the deployment already runs {current}"
                    ));
                }
                Ok(*n)
            }
            Replicas::Down(n, bounds) => {
                bounds.check(*n)?;
                if *n > current {
                    return Err(format!(
                        "a scale-down to {n} replicas is refused: the deployment runs only {current}"
                    ));
                }
                Ok(*n)
            }
            Replicas::By(step, bounds) => {
                let n = (current as i64 + *step as i64).clamp(0, u32::MAX as i64) as u32;
                bounds.check(n).map_err(|m| format!("{current} {step:+} = {n}: {m}"))?;
                Ok(n)
            }
            Replicas::Restore(n) => Ok(*n),
            Replicas::Predictive {
                predicted_load,
                current_load,
                max_replicas,
            } => Ok(crate::runbook::scaling::predictive_target(
                current,
                *predicted_load,
                *current_load,
                *max_replicas,
            )),
        }
    }
}
