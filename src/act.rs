//! Executes a `Plan`: the only module that removes pods or posts Events.
//!
//! Pods are removed in plan order: the hottest, then the coldest, and the coldest only
//! when the hottest went (the pair rule: removing the coldest alone rarely relieves the
//! hot pod and still costs the consumer group a rebalance). A pod that a
//! PodDisruptionBudget protects (429), or that is already gone or replaced (404, 409),
//! is refused with a warning. Any other failure stops acting at once; its pod's
//! answer is `unknown` (it may have happened), and the next run settles it from the
//! cluster. After each removal an Event records why on the pod, and after the action
//! one Event on the Deployment records it where the owning team looks (`kubectl
//! describe deploy`); a failed Event is only a warning.
//!
//! A dry run executes the same plan as server-side dry runs (`dryRun=All`): the API
//! server checks RBAC, admission and PodDisruptionBudgets and removes nothing, so the
//! dry-run week shows which removals would be refused. No Event is posted.

use crate::error::Error;
use crate::kube::{EvictionMode, Involved, Kube};
use crate::memory::Answer;
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
    /// What the API server answered, for each pod asked, in order (in a dry run: to
    /// the dry run). A pod of the plan that is not here was not asked.
    pub answers: Vec<(Removal, Answer)>,
    /// The failure that stopped acting, if any.
    pub error: Option<Error>,
}

impl Acted {
    /// The pods whose removal the API server accepted.
    pub fn removed(&self) -> impl Iterator<Item = &Removal> {
        self.answers
            .iter()
            .filter(|(_, a)| *a == Answer::Removed)
            .map(|(r, _)| r)
    }

    /// The refusals, by reason.
    pub fn refused(&self) -> impl Iterator<Item = Refusal> + '_ {
        self.answers.iter().filter_map(|(_, a)| match a {
            Answer::Refused(why) => Some(*why),
            _ => None,
        })
    }
}

pub fn execute(kube: &Kube, plan: &Plan, mode: Mode, deployment: &Involved, now: i64) -> Acted {
    let mut acted = Acted::default();
    for pod in plan.removals() {
        if pod.role == Role::LowestCpu && !acted.removed().any(|r| r.role == Role::HighestCpu) {
            log::warn!(pod = pod.name.as_str(); "coldest pod kept: the hottest was not removed, and removing the coldest alone would not relieve it");
            continue;
        }
        match kube.remove(mode.eviction, &pod.name, &pod.uid, mode.dry_run) {
            Ok(()) if mode.dry_run => {
                log::info!(
                    namespace = kube.namespace, deployment = deployment.name.as_str(), pod = pod.name.as_str(),
                    role = pod.role.label(), cpu = round(pod.cpu);
                    "dry run: pod {} would be {}", pod.name, mode.eviction.done()
                );
                acted.answers.push((pod.clone(), Answer::Removed));
            }
            Ok(()) => {
                removed(kube, plan, pod, mode.eviction, deployment, now);
                acted.answers.push((pod.clone(), Answer::Removed));
            }
            Err(e) => match e.status().and_then(Refusal::of_status) {
                Some(refusal) => {
                    if mode.dry_run {
                        log::warn!(pod = pod.name.as_str(), reason = refusal.words(), error:% = e; "dry run: pod {} would be refused: {}", pod.name, refusal.words());
                    } else {
                        log::warn!(pod = pod.name.as_str(), reason = refusal.words(), error:% = e; "pod not removed, continuing");
                    }
                    acted.answers.push((pod.clone(), Answer::Refused(refusal)));
                }
                None => {
                    log::error!(pod = pod.name.as_str(), error:% = e; "removal failed, stopping; whether it happened is settled by the next run");
                    acted.answers.push((pod.clone(), Answer::Unknown));
                    acted.error = Some(e);
                    break;
                }
            },
        }
    }
    if !mode.dry_run {
        recorded(kube, plan, &acted, mode.eviction, deployment, now);
    }
    acted
}

/// Logs a removal (with its namespace and Deployment, for a log query that lists the
/// pods removed) and records it as an Event on the pod.
fn removed(kube: &Kube, plan: &Plan, pod: &Removal, mode: EvictionMode, deployment: &Involved, now: i64) {
    let (mean, spread) = plan.stats.map_or((0.0, 0.0), |s| (s.mean, s.spread));
    log::info!(
        namespace = kube.namespace, deployment = deployment.name.as_str(), pod = pod.name.as_str(), uid = pod.uid.as_str(), node = pod.node.as_deref().unwrap_or(""),
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
    let object = Involved::pod(&pod.name, &pod.uid);
    if let Err(e) = kube.post_event(&object, "Normal", "Rebalanced", &message, now) {
        log::warn!(pod = pod.name.as_str(), error:% = e; "could not record the removal as an Event");
    }
}

/// One Event on the Deployment for the whole action, when a pod went.
fn recorded(kube: &Kube, plan: &Plan, acted: &Acted, mode: EvictionMode, deployment: &Involved, now: i64) {
    let removed: Vec<String> = acted
        .removed()
        .map(|r| format!("{} ({:.3} cores, {})", r.name, r.cpu, r.role.superlative()))
        .collect();
    if removed.is_empty() {
        return;
    }
    let mean = plan.stats.map_or(0.0, |s| s.mean);
    let message = format!(
        "pod-rebalancer: {} {}: {}, fleet mean {:.3} cores",
        mode.done(),
        removed.join(" and "),
        plan.over_threshold().unwrap_or_default(),
        mean,
    );
    announce(kube, deployment, "Normal", "Rebalanced", &message, now);
}

/// An Event on the Deployment: the action, or a Warning (the breaker opened, the
/// imbalance is unfixable). A failed Event is only a warning.
pub fn announce(kube: &Kube, deployment: &Involved, kind: &str, reason: &str, message: &str, now: i64) {
    if let Err(e) = kube.post_event(deployment, kind, reason, message, now) {
        log::warn!(deployment = deployment.name.as_str(), reason, error:% = e; "could not post the Event on the Deployment");
    }
}

/// Rounds for logs, so a person reads 1.902 and not 1.9022079799999998.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
