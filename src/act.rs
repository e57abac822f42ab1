//! Executes a `Plan`: the only module that changes the cluster.
//!
//! Pods are removed in plan order. A pod that a PodDisruptionBudget protects (429),
//! or that is already gone or replaced (404, 409), is skipped with a warning: the
//! plan's other pod may still go. Any other failure stops acting at once. After each
//! removal an Event records why on the pod; a failed Event is only a warning.

use crate::error::Error;
use crate::kube::{EvictionMode, Kube};
use crate::plan::{Plan, Removal};

/// What happened to the plan's pods.
#[derive(Debug, Default)]
pub struct Acted {
    pub removed: Vec<Removal>,
    /// Pods left alone, with why.
    pub skipped: Vec<(Removal, String)>,
    /// The failure that stopped acting, if any.
    pub error: Option<Error>,
}

pub fn execute(kube: &Kube, plan: &Plan, mode: EvictionMode, now: i64) -> Acted {
    let mut acted = Acted::default();
    let (mean, spread) = plan.stats.map_or((0.0, 0.0), |s| (s.mean, s.spread));
    for pod in plan.removals() {
        match kube.remove(mode, &pod.name, &pod.uid) {
            Ok(()) => {
                log::info!(
                    pod = pod.name.as_str(), uid = pod.uid.as_str(), node = pod.node.as_deref().unwrap_or(""),
                    role = pod.role.label(), cpu = round(pod.cpu), mean = round(mean), spread = round(spread),
                    threshold = plan.threshold, mode = mode.verb();
                    "pod removed"
                );
                let message = format!(
                    "pod-rebalancer: {} as the {} pod: CPU {:.3} cores vs fleet mean {:.3} cores, {}",
                    mode.done(),
                    pod.role.superlative(),
                    pod.cpu,
                    mean,
                    plan.over_threshold().unwrap_or_default(),
                );
                if let Err(e) = kube.post_event(&pod.name, &pod.uid, &message, now) {
                    log::warn!(pod = pod.name.as_str(), error:% = e; "could not record the removal as an Event");
                }
                acted.removed.push(pod.clone());
            }
            Err(e) if matches!(e.status(), Some(429 | 404 | 409)) => {
                let why = match e.status() {
                    Some(429) => "a PodDisruptionBudget does not allow it now",
                    Some(404) => "the pod is already gone",
                    _ => "the pod was replaced or changed",
                };
                log::warn!(pod = pod.name.as_str(), reason = why, error:% = e; "pod not removed, continuing");
                acted.skipped.push((pod.clone(), why.to_string()));
            }
            Err(e) => {
                log::error!(pod = pod.name.as_str(), error:% = e; "removal failed, stopping");
                acted.error = Some(e);
                break;
            }
        }
    }
    acted
}

/// Rounds for logs, so a person reads 1.902 and not 1.9022079799999998.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
