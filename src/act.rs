//! Executes a `Plan`: the only module that removes pods.
//!
//! Pods are removed in plan order: the hottest, then the coldest, and the coldest only
//! when the hottest went (the pair rule: removing the coldest alone rarely relieves the
//! hot pod and still costs the consumer group a rebalance). A pod that a
//! PodDisruptionBudget protects (429), or that is already gone or replaced (404, 409),
//! is refused with a warning. Any other failure stops acting at once. After each
//! removal an Event records why on the pod; a failed Event is only a warning.
//!
//! A dry run executes the same plan as server-side dry runs (`dryRun=All`): the API
//! server checks RBAC, admission and PodDisruptionBudgets and removes nothing, so the
//! dry-run week shows which removals would be refused. No Event is posted.

use crate::error::Error;
use crate::kube::{EvictionMode, Kube};
use crate::outcome::Refusal;
use crate::plan::{Plan, Removal, Role};

/// How the plan is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub eviction: EvictionMode,
    /// Server-side dry runs only.
    pub dry_run: bool,
}

/// What happened to the plan's pods.
#[derive(Debug, Default)]
pub struct Acted {
    /// Pods removed (in a dry run: whose removal the API server accepted).
    pub removed: Vec<Removal>,
    /// Pods the API server refused to remove, with why.
    pub refused: Vec<(Removal, Refusal)>,
    /// The coldest pod, kept because the hottest was not removed.
    pub kept: Option<Removal>,
    /// The failure that stopped acting, if any.
    pub error: Option<Error>,
}

pub fn execute(kube: &Kube, plan: &Plan, mode: Mode, now: i64) -> Acted {
    let mut acted = Acted::default();
    for pod in plan.removals() {
        if pod.role == Role::LowestCpu && !acted.removed.iter().any(|r| r.role == Role::HighestCpu) {
            log::warn!(pod = pod.name.as_str(); "coldest pod kept: the hottest was not removed, and removing the coldest alone would not relieve it");
            acted.kept = Some(pod.clone());
            continue;
        }
        match kube.remove(mode.eviction, &pod.name, &pod.uid, mode.dry_run) {
            Ok(()) if mode.dry_run => {
                log::info!(pod = pod.name.as_str(), role = pod.role.label(), cpu = round(pod.cpu); "dry run: pod {} would be {}", pod.name, mode.eviction.done());
                acted.removed.push(pod.clone());
            }
            Ok(()) => {
                removed(kube, plan, pod, mode.eviction, now);
                acted.removed.push(pod.clone());
            }
            Err(e) => match e.status().and_then(Refusal::of_status) {
                Some(refusal) => {
                    if mode.dry_run {
                        log::warn!(pod = pod.name.as_str(), reason = refusal.words(), error:% = e; "dry run: pod {} would be refused: {}", pod.name, refusal.words());
                    } else {
                        log::warn!(pod = pod.name.as_str(), reason = refusal.words(), error:% = e; "pod not removed, continuing");
                    }
                    acted.refused.push((pod.clone(), refusal));
                }
                None => {
                    log::error!(pod = pod.name.as_str(), error:% = e; "removal failed, stopping");
                    acted.error = Some(e);
                    break;
                }
            },
        }
    }
    acted
}

/// Logs a removal and records it as an Event on the pod.
fn removed(kube: &Kube, plan: &Plan, pod: &Removal, mode: EvictionMode, now: i64) {
    let (mean, spread) = plan.stats.map_or((0.0, 0.0), |s| (s.mean, s.spread));
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
}

/// Rounds for logs, so a person reads 1.902 and not 1.9022079799999998.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
