//! What one run came to: the stage a failed run failed in, or the outcome of a run that
//! completed. Both are enums end to end; their label values (the `stage` and `outcome`
//! labels of the metrics, the `outcome` field of the last log line) are written here
//! and nowhere else.

use std::fmt;

/// The cycle completed: it acted, or chose not to and said why.
pub const EXIT_OK: u8 = 0;
/// The cycle failed.
pub const EXIT_FAILED: u8 = 1;
/// The configuration or the command line is invalid; nothing was requested.
pub const EXIT_USAGE: u8 = 2;

/// Where a failed run failed: the `stage` label of `rebalancer_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the Kubernetes API (client set-up, the Deployment, the pod list), or
    /// finding no pod there.
    Kubernetes,
    /// Reading the metrics endpoint, or finding no CPU metrics there.
    Metrics,
    /// Reading or writing the state ConfigMap (the memory).
    State,
    /// Removing the planned pods.
    Act,
    /// Writing the metrics file.
    Report,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Kubernetes,
        Stage::Metrics,
        Stage::State,
        Stage::Act,
        Stage::Report,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Kubernetes => "kubernetes",
            Stage::Metrics => "metrics",
            Stage::State => "state",
            Stage::Act => "act",
            Stage::Report => "report",
        }
    }
}

/// How a run that completed ended: the `outcome` label of `rebalancer_cycle_outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Removals were attempted (a PodDisruptionBudget may still have refused them).
    Acted,
    /// The plan removes pods, but the run is a dry run.
    DryRun,
    Balanced,
    /// The fleet is changing: a rollout, a terminating pod or a young pod.
    Stabilizing,
    TooFewPods,
    Idle,
    /// The removal budget allows no removal.
    MinPods,
    /// The partition signal shows that no assignment of the partitions can balance
    /// the group (SPEC §12): no eviction can.
    Unfixable,
    /// The breaker is open: the last actions did not lower the spread.
    Ineffective,
    /// The Deployment carries `pod-rebalancer.io/paused: "true"`.
    Paused,
    /// Fleet mode: the plan did not fit in what was left of the run's removal budget.
    Deferred,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Acted,
        Outcome::DryRun,
        Outcome::Balanced,
        Outcome::Stabilizing,
        Outcome::TooFewPods,
        Outcome::Idle,
        Outcome::MinPods,
        Outcome::Unfixable,
        Outcome::Ineffective,
        Outcome::Paused,
        Outcome::Deferred,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Acted => "acted",
            Outcome::DryRun => "dry_run",
            Outcome::Balanced => "balanced",
            Outcome::Stabilizing => "stabilizing",
            Outcome::TooFewPods => "too_few_pods",
            Outcome::Idle => "idle",
            Outcome::MinPods => "min_pods",
            Outcome::Unfixable => "unfixable",
            Outcome::Ineffective => "ineffective",
            Outcome::Paused => "paused",
            Outcome::Deferred => "deferred",
        }
    }
}

/// Why the API server refused a removal: the `reason` label of
/// `rebalancer_removals_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// 429: a PodDisruptionBudget allows no disruption now.
    DisruptionBudget,
    /// 404: the pod is already gone.
    Gone,
    /// 409: the pod was replaced (its uid changed) or changed.
    Replaced,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::DisruptionBudget, Refusal::Gone, Refusal::Replaced];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::DisruptionBudget => "disruption_budget",
            Refusal::Gone => "gone",
            Refusal::Replaced => "replaced",
        }
    }

    /// The refusal an answer's status means, if it is one.
    pub fn of_status(code: u16) -> Option<Refusal> {
        match code {
            429 => Some(Refusal::DisruptionBudget),
            404 => Some(Refusal::Gone),
            409 => Some(Refusal::Replaced),
            _ => None,
        }
    }

    /// In words, for the log.
    pub fn words(self) -> &'static str {
        match self {
            Refusal::DisruptionBudget => "a PodDisruptionBudget does not allow it now",
            Refusal::Gone => "the pod is already gone",
            Refusal::Replaced => "the pod was replaced or changed",
        }
    }
}

/// The `outcome` label of a run that failed, whatever its stage.
pub const ERROR: &str = "error";

/// A run's result as its labels see it: an outcome, or the stage that failed.
pub type Ended = Result<Outcome, Stage>;

/// The `outcome` label value of a run's result.
pub fn label(ended: Ended) -> &'static str {
    match ended {
        Ok(outcome) => outcome.label(),
        Err(_) => ERROR,
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_is_labelled_error_whatever_its_stage() {
        for stage in Stage::ALL {
            assert_eq!(label(Err(stage)), "error");
        }
        assert_eq!(label(Ok(Outcome::DryRun)), "dry_run");
        assert_eq!(label(Ok(Outcome::Unfixable)), "unfixable");
    }
}
