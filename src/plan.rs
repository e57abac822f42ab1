//! The decision: plain data in, a `Plan` value out. No I/O, no clock, no logging.
//!
//! `decide` runs four small steps, each returning a value: it assesses every matched
//! pod (eligible, or excluded with a reason), gates the fleet while it is changing,
//! holds when the statistics (or, given a partition answer, the partition signal of
//! `partition.rs`) give no reason to act, and otherwise chooses at most the
//! hottest and the coldest pod within the removal budget. The `Plan` is built once, at
//! the end, and keeps everything a person needs to see why; it is logged before
//! anything acts and printed by `pod-rebalancer plan`.

use crate::outcome::{Outcome, Stage};
use crate::partition::{self, Answer, Explanation};
use crate::stats::{self, Stats};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Below this mean (cores) the fleet is idle and its spread means nothing.
pub const IDLE_MEAN_CORES: f64 = 0.001;

/// The relative tolerance of "spread > threshold" (see `over`).
pub const SPREAD_TOLERANCE: f64 = 1e-9;

/// The numbers the decision needs (README "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The rate window: a pod younger than this is excluded as too young.
    pub window_secs: u64,
    pub threshold: f64,
    pub min_pods: usize,
    /// No action while any matched pod is younger than this.
    pub stabilization_secs: u64,
}

/// What the decision needs to know about one pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pod {
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    /// `status.phase`; empty when the API gave none.
    pub phase: Cow<'static, str>,
    /// Condition `Ready` is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// `metadata.creationTimestamp`, Unix seconds.
    pub created: Option<i64>,
    /// CPU request and limit of the measured container, cores.
    pub cpu_request: Option<f64>,
    pub cpu_limit: Option<f64>,
}

impl Pod {
    /// Why the pod is not healthy (the first reason that applies), or `Ok` for a pod
    /// that is Running, Ready and not terminating: the one definition of "healthy",
    /// used by the exclusions and by the removal budget.
    pub fn health(&self) -> Result<(), Exclusion> {
        if self.terminating {
            Err(Exclusion::Terminating)
        } else if self.phase != "Running" {
            Err(Exclusion::NotRunning)
        } else if !self.ready {
            Err(Exclusion::NotReady)
        } else {
            Ok(())
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.health().is_ok()
    }
}

/// The metrics answer: each pod's CPU in cores, by pod name, as the server sent it
/// (`NaN`, `±Inf` and negative numbers included: classification decides).
///
/// A vector sorted by name rather than a map: 24 bytes a pod beside its name, which at
/// 50,000 pods is less than half of what a `BTreeMap<String, _>` holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Samples(Vec<(Box<str>, f64)>);

impl Samples {
    /// `Err` names a pod that has more than one sample.
    pub fn new(mut by_pod: Vec<(Box<str>, f64)>) -> Result<Samples, Box<str>> {
        by_pod.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(twice) = by_pod.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(twice[0].0.clone());
        }
        Ok(Samples(by_pod))
    }

    pub fn get(&self, pod: &str) -> Option<f64> {
        let i = self.0.binary_search_by(|(name, _)| (**name).cmp(pod)).ok()?;
        Some(self.0[i].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// By pod name, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, f64)> {
        self.0.iter().map(|(name, cpu)| (&**name, *cpu))
    }
}

/// As a map collects: a later sample for the same pod replaces an earlier one.
impl<S: Into<String>> FromIterator<(S, f64)> for Samples {
    fn from_iter<I: IntoIterator<Item = (S, f64)>>(iter: I) -> Samples {
        let map: BTreeMap<String, f64> = iter.into_iter().map(|(name, cpu)| (name.into(), cpu)).collect();
        Samples(
            map.into_iter()
                .map(|(name, cpu)| (name.into_boxed_str(), cpu))
                .collect(),
        )
    }
}

/// The prefix of the Deployment annotations the rebalancer reads (SPEC §6.1, §13).
pub const ANNOTATION_PREFIX: &str = "pod-rebalancer.io/";
/// The owning team's off switch on the Deployment.
pub const PAUSED: &str = "pod-rebalancer.io/paused";

/// The Deployment's rollout state, from its `metadata`, `spec` and `status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Rollout {
    pub name: String,
    /// `metadata.uid`: the Events on the Deployment name it.
    #[serde(skip)]
    pub uid: String,
    /// Its annotations under `pod-rebalancer.io/`, by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas` (Kubernetes defaults it to 1).
    pub desired: i64,
    /// `status.replicas`, `status.updatedReplicas` (0 when absent, as the API omits zeros).
    pub replicas: i64,
    pub updated: i64,
    /// A stable hash of `spec.template` (see `kube::fingerprint`): it changes with a
    /// rollout, not with a replica count. Empty when the Deployment had no template.
    pub fingerprint: String,
}

impl Rollout {
    /// Why the rollout is unfinished, or `None` when it is complete.
    pub fn unfinished(&self) -> Option<String> {
        if self.observed_generation < self.generation {
            return Some(format!(
                "deployment {} rollout in progress: generation {} not yet observed (observed {})",
                self.name, self.generation, self.observed_generation
            ));
        }
        if self.updated < self.desired {
            return Some(format!(
                "deployment {} rollout in progress: {} of {} replicas updated",
                self.name, self.updated, self.desired
            ));
        }
        if self.replicas > self.desired {
            return Some(format!(
                "deployment {} rollout in progress: {} replicas, {} desired",
                self.name, self.replicas, self.desired
            ));
        }
        None
    }
}

/// Everything `decide` reads. The pods are moved in: the plan keeps them, so a
/// 50,000-pod fleet is held once, not once as listed and once as planned.
pub struct Inputs<'a> {
    pub pods: Vec<Pod>,
    pub samples: &'a Samples,
    pub rollout: Option<&'a Rollout>,
    /// Unix seconds.
    pub now: i64,
    pub settings: &'a Settings,
    /// The container the query measured, for messages.
    pub container: &'a str,
    pub namespace: &'a str,
    /// Pods the selector returned that the Deployment does not own (not in `pods`).
    pub ignored: usize,
    /// The label selector the pods were listed with, for messages; `None` for a saved list.
    pub selector: Option<&'a str>,
    /// Another run leased an action at this time and may still be acting
    /// (`memory::in_progress`): the fleet gate holds (SPEC §6.3).
    pub leased: Option<i64>,
    /// The answer of `PARTITION_QUERY`, when it is set (SPEC §12).
    pub partitions: Option<Answer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    Terminating,
    NotRunning,
    NotReady,
    TooYoung,
    NoMetrics,
    InvalidMetrics,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::Terminating => "terminating",
            Exclusion::NotRunning => "not running",
            Exclusion::NotReady => "not ready",
            Exclusion::TooYoung => "too young",
            Exclusion::NoMetrics => "no metrics",
            Exclusion::InvalidMetrics => "invalid metrics",
        })
    }
}

/// Why the plan removes a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    HighestCpu,
    LowestCpu,
}

impl Role {
    /// The `type` label of `rebalancer_pods_deleted_total`.
    pub fn label(self) -> &'static str {
        match self {
            Role::HighestCpu => "highest_cpu",
            Role::LowestCpu => "lowest_cpu",
        }
    }

    /// The role in words: "highest cpu", "lowest cpu".
    pub fn words(self) -> &'static str {
        match self {
            Role::HighestCpu => "highest cpu",
            Role::LowestCpu => "lowest cpu",
        }
    }

    /// The mark beside the pod in the plan's table: "highest", "lowest".
    pub fn mark(self) -> &'static str {
        match self {
            Role::HighestCpu => "highest",
            Role::LowestCpu => "lowest",
        }
    }

    /// How the pod stood in the fleet: "hottest", "coldest".
    pub fn superlative(self) -> &'static str {
        match self {
            Role::HighestCpu => "hottest",
            Role::LowestCpu => "coldest",
        }
    }
}

/// What the decision made of one pod.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Assessment {
    cpu: Option<f64>,
    sample: Option<f64>,
    age: Option<i64>,
    excluded: Option<Exclusion>,
    role: Option<Role>,
}

/// One matched pod as the decision saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PodView<'a> {
    #[serde(flatten)]
    pub pod: &'a Pod,
    /// Cores, when the pod is eligible.
    pub cpu: Option<f64>,
    /// The pod's finite sample (cores), eligible or not: what the query answered.
    pub sample: Option<f64>,
    /// Age in seconds at `now`.
    pub age: Option<i64>,
    /// `None` for an eligible pod.
    pub excluded: Option<Exclusion>,
    /// Set on the pods the plan removes.
    pub role: Option<Role>,
}

impl PodView<'_> {
    /// The pod's sample as a share of its CPU request, "95%"; `None` without either.
    pub fn share_of_request(&self) -> Option<String> {
        match (self.sample, self.pod.cpu_request) {
            (Some(cpu), Some(request)) if request > 0.0 => Some(format!("{:.0}%", 100.0 * cpu / request)),
            _ => None,
        }
    }
}

/// Every matched pod with what the decision made of it, in the plan's order: eligible
/// pods by CPU, highest first, then the excluded ones; ties by name.
///
/// Two parallel vectors rather than one of `(Pod, Assessment)`: the pods are the ones
/// `decide` was given, sorted in place, so no second copy of the fleet ever exists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pods {
    pods: Vec<Pod>,
    assessed: Vec<Assessment>,
}

impl Pods {
    /// Sorts `pods` and `assessed` (same length, same order) into the plan's order.
    fn sorted(mut pods: Vec<Pod>, mut assessed: Vec<Assessment>) -> Pods {
        // Highest CPU first; ties and pods without a number by name, so the order (and
        // with it the choice of candidates) does not depend on the order the API used.
        // Unstable is enough: names are unique in a namespace, so no two pods compare equal.
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            let by_cpu = match (assessed[a].cpu, assessed[b].cpu) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_cpu.then_with(|| pods[a].name.cmp(&pods[b].name))
        });
        // Apply the order in place, one cycle of the permutation at a time: position k
        // takes the element that was at order[k]; a finished position is marked k.
        for start in 0..order.len() {
            let mut k = start;
            while order[k] != start && order[k] != k {
                let from = order[k];
                pods.swap(k, from);
                assessed.swap(k, from);
                order[k] = k;
                k = from;
            }
            order[k] = k;
        }
        Pods { pods, assessed }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = PodView<'_>> + Clone {
        self.pods.iter().zip(&self.assessed).map(|(pod, a)| PodView {
            pod,
            cpu: a.cpu,
            sample: a.sample,
            age: a.age,
            excluded: a.excluded,
            role: a.role,
        })
    }

    /// Forgets the roles `choose` marked: a plan held after all removes no pod.
    pub fn clear_roles(&mut self) {
        for a in &mut self.assessed {
            a.role = None;
        }
    }

    /// The hottest eligible pod and its CPU, the first in the plan's order.
    pub fn hottest(&self) -> Option<(&str, f64)> {
        let first = self.assessed.first()?;
        Some((self.pods[0].name.as_str(), first.cpu?))
    }

    /// How many pods are eligible: they come first.
    fn eligible(&self) -> usize {
        self.assessed.iter().take_while(|a| a.cpu.is_some()).count()
    }
}

impl Serialize for Pods {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A pod the plan removes, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub cpu: f64,
    pub role: Role,
}

/// Why the plan removes nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Hold {
    /// The fleet is changing; each string says how.
    Stabilizing {
        because: Vec<String>,
    },
    TooFewPods {
        eligible: usize,
        min_pods: usize,
    },
    Idle {
        mean: f64,
    },
    Balanced {
        spread: f64,
        threshold: f64,
    },
    /// The Deployment wants no replicas and has no pods (a consumer scaled to zero).
    ScaledToZero {
        deployment: String,
    },
    /// The Deployment carries `pod-rebalancer.io/paused` with a true value.
    Paused {
        deployment: String,
    },
    /// The partition signal shows that no assignment of the partitions balances the
    /// group (SPEC §12): even the most even one has a spread over the threshold, for
    /// each reason in `because` (key skew, idle consumers).
    Unfixable {
        best_possible_spread: f64,
        threshold: f64,
        because: Vec<String>,
    },
    /// Removing even one pod would leave fewer healthy pods than allowed.
    MinPods {
        healthy: usize,
        min_pods: usize,
    },
    /// The breaker is open: the last `spreads.len()` actions did not lower the spread
    /// enough (each `[before, after]`); nothing is removed until `until` (Unix seconds).
    Ineffective {
        until: i64,
        spreads: Vec<[f64; 2]>,
    },
}

impl Hold {
    pub fn outcome(&self) -> Outcome {
        match self {
            Hold::Stabilizing { .. } => Outcome::Stabilizing,
            Hold::TooFewPods { .. } => Outcome::TooFewPods,
            Hold::Idle { .. } | Hold::ScaledToZero { .. } => Outcome::Idle,
            Hold::Paused { .. } => Outcome::Paused,
            Hold::Balanced { .. } => Outcome::Balanced,
            Hold::MinPods { .. } => Outcome::MinPods,
            Hold::Unfixable { .. } => Outcome::Unfixable,
            Hold::Ineffective { .. } => Outcome::Ineffective,
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Stabilizing { because } => write!(f, "fleet is changing: {}", because.join("; ")),
            Hold::TooFewPods { eligible, min_pods } => {
                write!(f, "too few pods with metrics: {eligible} eligible, {min_pods} required")
            }
            Hold::Idle { mean } => write!(f, "fleet idle: mean {mean:.4} cores < {IDLE_MEAN_CORES} cores"),
            Hold::ScaledToZero { deployment } => {
                write!(
                    f,
                    "scaled to zero: deployment {deployment} wants 0 replicas and has no pods"
                )
            }
            Hold::Paused { deployment } => write!(
                f,
                "paused: deployment {deployment} carries the annotation {PAUSED}=true (the owning team's off switch)"
            ),
            Hold::Balanced { spread, threshold } => {
                write!(f, "balanced: spread {spread:.2} <= threshold {threshold:.2}")
            }
            Hold::Unfixable {
                best_possible_spread,
                threshold,
                because,
            } => write!(
                f,
                "unfixable: no assignment of the partitions balances the pods (best possible spread {best_possible_spread:.2} > threshold {threshold:.2}): {}",
                because.join("; ")
            ),
            Hold::MinPods { healthy, min_pods } => write!(
                f,
                "minimum pods: {healthy} healthy pods, {min_pods} must stay, removing one would leave too few"
            ),
            Hold::Ineffective { until, spreads } => {
                let spreads: Vec<String> = spreads.iter().map(spread_change).collect();
                write!(
                    f,
                    "ineffective: the last {} did not lower the spread enough (spread {}); no action until {}",
                    plural(spreads.len(), "action"),
                    spreads.join(", "),
                    crate::clock::format_rfc3339(*until)
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    Remove { pods: Vec<Removal> },
    Hold(Hold),
}

/// The decision and everything that explains it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub now: i64,
    pub namespace: String,
    pub container: String,
    pub threshold: f64,
    pub min_pods: usize,
    /// Every matched pod: eligible ones by CPU, highest first, then the excluded ones.
    pub pods: Pods,
    pub stats: Option<Stats>,
    /// Matched pods that are Running, Ready and not terminating.
    pub healthy: usize,
    /// How many pods the budget allows to remove: min(healthy − min_pods, healthy / 2).
    pub budget: usize,
    pub decision: Decision,
    /// What the partition signal says (SPEC §12); `None` without a partition answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Explanation>,
}

impl Plan {
    /// A plan that looked at no pod: `hold` is decided from the Deployment alone.
    pub fn nothing(now: i64, namespace: &str, container: &str, settings: &Settings, hold: Hold) -> Plan {
        Plan {
            now,
            namespace: namespace.to_string(),
            container: container.to_string(),
            threshold: settings.threshold,
            min_pods: settings.min_pods,
            pods: Pods::default(),
            stats: None,
            healthy: 0,
            budget: 0,
            decision: Decision::Hold(hold),
            partitions: None,
        }
    }

    /// The plan of a paused Deployment (SPEC §6.1): no pod list, no query, no statistics.
    pub fn paused(now: i64, namespace: &str, container: &str, settings: &Settings, deployment: &str) -> Plan {
        let hold = Hold::Paused {
            deployment: deployment.to_string(),
        };
        Plan::nothing(now, namespace, container, settings, hold)
    }

    pub fn removals(&self) -> &[Removal] {
        match &self.decision {
            Decision::Remove { pods } => pods,
            Decision::Hold(_) => &[],
        }
    }

    /// Eligible pods, the `n` of the statistics.
    pub fn analyzed(&self) -> usize {
        self.stats.map_or(0, |s| s.n)
    }

    /// Why pods go, in words: "spread 0.47 > threshold 0.30"; `None` without statistics.
    /// Two decimals, or as many more as it takes for the two numbers to differ.
    pub fn over_threshold(&self) -> Option<String> {
        let s = self.stats?;
        let digits = (2..=6)
            .find(|&d| format!("{:.d$}", s.spread) != format!("{:.d$}", self.threshold))
            .unwrap_or(6);
        Some(format!(
            "spread {:.digits$} > threshold {:.digits$}",
            s.spread, self.threshold
        ))
    }

    /// One sentence for a person: what the plan does and why.
    pub fn summary(&self, verb: &str) -> String {
        match (&self.decision, self.over_threshold()) {
            (Decision::Remove { pods }, Some(why)) => {
                let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
                let mut out = format!("{verb} {}: {why}", names.join(" and "));
                if pods.len() == 1 {
                    out.push_str(&format!(" ({})", self.only_one()));
                }
                out
            }
            (Decision::Remove { .. }, None) => format!("{verb} pods"),
            (Decision::Hold(hold), _) => format!("no action: {hold}"),
        }
    }

    /// Why a plan removes one pod, not two: "budget allows one removal: 4 healthy, 3 must stay".
    pub fn only_one(&self) -> String {
        format!(
            "budget allows one removal: {} healthy, {} must stay",
            self.healthy, self.min_pods
        )
    }
}

/// Why no plan can be made at all: the run fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Undecidable {
    /// No pod is the Deployment's; the list held `ignored` pods of others.
    NoPods {
        /// The label selector and namespace, for a live list.
        selector: Option<String>,
        namespace: String,
        ignored: usize,
    },
    /// No matched pod has a sample in the metrics answer.
    NoMetrics {
        container: String,
        namespace: String,
        window_secs: u64,
        /// Matched pods whose sample was there but not a valid one (NaN, ±Inf, negative).
        invalid: usize,
    },
}

impl Undecidable {
    /// Whose fault it is: the selector's (Kubernetes) or the metrics pipeline's.
    pub fn stage(&self) -> Stage {
        match self {
            Undecidable::NoPods { .. } => Stage::Kubernetes,
            Undecidable::NoMetrics { .. } => Stage::Metrics,
        }
    }
}

impl fmt::Display for Undecidable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undecidable::NoPods {
                selector,
                namespace,
                ignored,
            } => {
                // Fleet mode without KUBE_LABEL_SELECTOR lists every pod of the
                // namespace: there is no selector to name.
                if selector.as_deref() == Some("") {
                    return write!(
                        f,
                        "no pod of namespace {namespace} is the Deployment's (its controller would be a ReplicaSet named after it)"
                    );
                }
                let listed = match selector {
                    Some(selector) => format!("the label selector {selector} in namespace {namespace}"),
                    None => "the saved pod list".to_string(),
                };
                if *ignored == 0 {
                    write!(f, "no pods matched {listed}")
                } else {
                    write!(
                        f,
                        "{listed} matched {}, none of them the Deployment's (their controller is not a ReplicaSet named after it)",
                        plural(*ignored, "pod")
                    )
                }
            }
            Undecidable::NoMetrics {
                container,
                namespace,
                window_secs,
                invalid,
            } => {
                write!(
                    f,
                    "no CPU metrics for container {container} in namespace {namespace} over {}",
                    crate::clock::format_duration(*window_secs)
                )?;
                if *invalid > 0 {
                    write!(
                        f,
                        " ({} answered NaN, ±Inf or a negative number)",
                        plural(*invalid, "pod")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// How many pods may go: at most `healthy − min_pods`, and at most half the healthy pods.
pub fn budget(healthy: usize, min_pods: usize) -> usize {
    healthy.saturating_sub(min_pods).min(healthy / 2)
}

/// The decision. `Err` when the run cannot decide at all (no pods, no metrics).
///
/// With the partition signal (`partitions`, the answer of `PARTITION_QUERY`, SPEC §12):
/// partitions moving gate the fleet (§6 rule 6, after "no metrics"), and an imbalance
/// no assignment can balance is held as `Unfixable` (§6 rule 9, after "balanced",
/// before the removal budget). The plan keeps the explanation.
pub fn decide(input: Inputs) -> Result<Plan, Undecidable> {
    let Inputs {
        pods,
        samples,
        rollout,
        now,
        settings,
        container,
        namespace,
        ignored,
        selector,
        leased,
        partitions,
    } = input;
    if pods.is_empty() {
        if let Some(r) = rollout.filter(|r| r.desired == 0) {
            let hold = Hold::ScaledToZero {
                deployment: r.name.clone(),
            };
            return Ok(Plan::nothing(now, namespace, container, settings, hold));
        }
        return Err(Undecidable::NoPods {
            selector: selector.map(str::to_string),
            namespace: namespace.to_string(),
            ignored,
        });
    }
    let assessed: Vec<Assessment> = pods
        .iter()
        .map(|pod| assess(pod, samples.get(&pod.name), now, settings.window_secs))
        .collect();
    // `sample` holds the finite ones: a valid sample is one of them that is not negative.
    let any_metrics = assessed.iter().any(|a| a.sample.is_some_and(is_valid));
    let healthy = pods.iter().filter(|p| p.is_healthy()).count();
    let budget = budget(healthy, settings.min_pods);
    let mut pods = Pods::sorted(pods, assessed);
    // Over the sorted pods, so the figures do not depend on the API's order either.
    let cpus: Vec<f64> = pods.assessed.iter().filter_map(|a| a.cpu).collect();
    let stats = stats::describe(&cpus);
    let explanation = partitions.map(|answer| explain(answer, &pods, settings.threshold));

    let decision = match gate(&pods, rollout, settings.stabilization_secs, leased) {
        Some(because) => Decision::Hold(Hold::Stabilizing { because }),
        None if !any_metrics => {
            return Err(Undecidable::NoMetrics {
                container: container.to_string(),
                namespace: namespace.to_string(),
                window_secs: settings.window_secs,
                invalid: pods
                    .iter()
                    .filter(|v| v.excluded == Some(Exclusion::InvalidMetrics))
                    .count(),
            });
        }
        None => match moving(explanation.as_ref()) {
            Some(because) => Decision::Hold(Hold::Stabilizing { because }),
            None => match hold(stats, healthy, budget, settings, explanation.as_ref()) {
                Some(hold) => Decision::Hold(hold),
                None => choose(&mut pods, budget, settings.min_pods),
            },
        },
    };
    Ok(Plan {
        now,
        namespace: namespace.to_string(),
        container: container.to_string(),
        threshold: settings.threshold,
        min_pods: settings.min_pods,
        pods,
        stats,
        healthy,
        budget,
        decision,
        partitions: explanation,
    })
}

/// The partition signal over the assessed pods: the eligible ones with their CPU, the
/// others by name (their partitions mean the assignment is moving).
fn explain(answer: partition::Answer, pods: &Pods, threshold: f64) -> partition::Explanation {
    let eligible: Vec<(&str, f64)> = pods
        .iter()
        .filter_map(|v| Some((v.pod.name.as_str(), v.cpu?)))
        .collect();
    let excluded: Vec<&str> = pods
        .iter()
        .filter(|v| v.cpu.is_none())
        .map(|v| v.pod.name.as_str())
        .collect();
    partition::explain(answer, &eligible, &excluded, threshold)
}

/// Partitions moving (SPEC §6 rule 6): the group is mid-rebalance, or the answer is
/// stale; the reason names one such partition.
fn moving(explanation: Option<&Explanation>) -> Option<Vec<String>> {
    let e = explanation?;
    matches!(e.verdict, partition::Verdict::Moving { .. }).then(|| e.reasons())
}

/// What the decision makes of one pod: eligible with its CPU, or excluded with the
/// first reason that applies.
fn assess(pod: &Pod, sample: Option<f64>, now: i64, window_secs: u64) -> Assessment {
    let class = classify(pod, sample, now, window_secs);
    Assessment {
        cpu: class.ok(),
        sample: sample.filter(|c| c.is_finite()),
        age: pod.created.map(|c| now - c),
        excluded: class.err(),
        role: None,
    }
}

fn classify(pod: &Pod, sample: Option<f64>, now: i64, window_secs: u64) -> Result<f64, Exclusion> {
    pod.health()?;
    // A pod younger than the rate window has a partly empty window and looks idle.
    match pod.created {
        Some(created) if now - created >= window_secs as i64 => {}
        _ => return Err(Exclusion::TooYoung),
    }
    match sample {
        None => Err(Exclusion::NoMetrics),
        Some(c) if is_valid(c) => Ok(c),
        Some(_) => Err(Exclusion::InvalidMetrics),
    }
}

/// A CPU sample the statistics can use: finite and not negative.
fn is_valid(cores: f64) -> bool {
    cores.is_finite() && cores >= 0.0
}

/// `spread` is over `threshold`, beyond a relative tolerance: a spread that is the
/// threshold but for floating-point noise (0.30000000000000004 against 0.3) is not.
pub fn over(spread: f64, threshold: f64) -> bool {
    spread > threshold * (1.0 + SPREAD_TOLERANCE)
}

/// The fleet gate: how the fleet is changing, or `None` when it is stable. While it
/// changes, its rate windows describe no stable partition assignment. Terminating pods
/// are also the cooldown after our own removals.
fn gate(pods: &Pods, rollout: Option<&Rollout>, stabilization_secs: u64, leased: Option<i64>) -> Option<Vec<String>> {
    let mut because = Vec::new();
    if let Some(at) = leased {
        because.push(format!(
            "another run leased an action at {}",
            crate::clock::format_rfc3339(at)
        ));
    }
    if let Some(reason) = rollout.and_then(Rollout::unfinished) {
        because.push(reason);
    }
    let terminating: Vec<&str> = pods
        .iter()
        .filter(|v| v.pod.terminating)
        .map(|v| v.pod.name.as_str())
        .collect();
    if !terminating.is_empty() {
        because.push(format!(
            "{} terminating: {}",
            plural(terminating.len(), "pod"),
            terminating.join(", ")
        ));
    }
    let unknown: Vec<&str> = pods
        .iter()
        .filter(|v| v.pod.created.is_none())
        .map(|v| v.pod.name.as_str())
        .collect();
    if !unknown.is_empty() {
        because.push(format!(
            "{} without a creation time: {}",
            plural(unknown.len(), "pod"),
            unknown.join(", ")
        ));
    }
    let window = stabilization_secs as i64;
    let is_young = |v: &PodView| window > 0 && v.age.is_some_and(|a| a < window);
    if let Some(youngest) = pods.iter().filter(is_young).min_by_key(|v| v.age) {
        because.push(format!(
            "{} younger than the stabilization window {} (youngest {} is {} old)",
            plural(pods.iter().filter(is_young).count(), "pod"),
            crate::clock::format_duration(window as u64),
            youngest.pod.name,
            crate::clock::format_duration(youngest.age.unwrap_or(0).max(0) as u64),
        ));
    }
    (!because.is_empty()).then_some(because)
}

/// Why the statistics (or the partition signal) give no reason to act, or `None` when
/// they do.
fn hold(
    stats: Option<Stats>,
    healthy: usize,
    budget: usize,
    settings: &Settings,
    explanation: Option<&Explanation>,
) -> Option<Hold> {
    let min_pods = settings.min_pods;
    let Some(s) = stats else {
        return Some(Hold::TooFewPods { eligible: 0, min_pods });
    };
    if s.n < min_pods {
        Some(Hold::TooFewPods {
            eligible: s.n,
            min_pods,
        })
    } else if s.mean < IDLE_MEAN_CORES {
        Some(Hold::Idle { mean: s.mean })
    } else if !over(s.spread, settings.threshold) {
        Some(Hold::Balanced {
            spread: s.spread,
            threshold: settings.threshold,
        })
    } else if let Some(e) = explanation.filter(|e| e.unfixable()) {
        Some(Hold::Unfixable {
            best_possible_spread: e.best_possible_spread.unwrap_or(0.0),
            threshold: settings.threshold,
            because: e.reasons(),
        })
    } else if budget == 0 {
        Some(Hold::MinPods { healthy, min_pods })
    } else {
        None
    }
}

/// The hottest eligible pod, and the coldest when the budget allows two; their roles
/// are marked on `pods`. Eligible pods come first, highest first with ties by name: the
/// first is the hottest; the coldest is the lowest value, the first name among equals.
fn choose(pods: &mut Pods, budget: usize, min_pods: usize) -> Decision {
    let eligible = pods.eligible();
    let Some(lowest) = eligible.checked_sub(1).and_then(|last| pods.assessed[last].cpu) else {
        // `hold` sends a fleet without eligible pods to TooFewPods; say so here too.
        return Decision::Hold(Hold::TooFewPods { eligible: 0, min_pods });
    };
    let hottest = 0;
    let coldest = (0..eligible)
        .find(|&i| pods.assessed[i].cpu == Some(lowest))
        .unwrap_or(hottest);
    let mut chosen = vec![(hottest, Role::HighestCpu)];
    if budget >= 2 && coldest != hottest {
        chosen.push((coldest, Role::LowestCpu));
    }
    let removals = chosen
        .into_iter()
        .map(|(i, role)| {
            pods.assessed[i].role = Some(role);
            let pod = &pods.pods[i];
            Removal {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                node: pod.node.clone(),
                cpu: pods.assessed[i].cpu.unwrap_or(0.0),
                role,
            }
        })
        .collect();
    Decision::Remove { pods: removals }
}

/// Fleet mode's one budget (SPEC §13): of the targets whose plans remove pods, each
/// `(name, spread / threshold, removals)`, which act, as indices into `wanting` in the
/// order they are served: highest ratio first (ties: the name that sorts first); each
/// whose whole plan fits in what is left of `budget` acts, and serving goes on down
/// the list.
pub fn serve(wanting: &[(&str, f64, usize)], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wanting.len()).collect();
    order.sort_by(|&a, &b| {
        wanting[b]
            .1
            .total_cmp(&wanting[a].1)
            .then_with(|| wanting[a].0.cmp(wanting[b].0))
    });
    let mut left = budget;
    order.retain(|&i| {
        let fits = wanting[i].2 <= left;
        if fits {
            left -= wanting[i].2;
        }
        fits
    });
    order
}

/// "0.47 → 0.45": an action's spread before and after.
pub(crate) fn spread_change([before, after]: &[f64; 2]) -> String {
    format!("{before:.2} → {after:.2}")
}

/// "1 pod", "3 pods".
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn settings() -> Settings {
        Settings {
            window_secs: 300,
            threshold: 0.3,
            min_pods: 3,
            stabilization_secs: 600,
        }
    }

    fn pod(name: &str) -> Pod {
        Pod {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            node: Some("node-a".into()),
            phase: "Running".into(),
            ready: true,
            terminating: false,
            created: Some(NOW - HOUR),
            cpu_request: Some(1.0),
            cpu_limit: None,
        }
    }

    /// A fleet of healthy hour-old pods with these CPU numbers, named p0, p1, …
    fn fleet(cpus: &[f64]) -> (Vec<Pod>, BTreeMap<String, f64>) {
        let pods: Vec<Pod> = (0..cpus.len()).map(|i| pod(&format!("p{i}"))).collect();
        let samples = cpus.iter().enumerate().map(|(i, c)| (format!("p{i}"), *c)).collect();
        (pods, samples)
    }

    /// What the tests decide from: container c in namespace ns, selector app=c, at NOW.
    fn inputs<'a>(pods: &[Pod], samples: &'a Samples, settings: &'a Settings) -> Inputs<'a> {
        Inputs {
            pods: pods.to_vec(),
            samples,
            rollout: None,
            now: NOW,
            settings,
            container: "c",
            namespace: "ns",
            ignored: 0,
            selector: Some("app=c"),
            leased: None,
            partitions: None,
        }
    }

    fn samples_of(samples: &BTreeMap<String, f64>) -> Samples {
        samples.iter().map(|(name, cpu)| (name.as_str(), *cpu)).collect()
    }

    fn check(
        pods: &[Pod],
        samples: &BTreeMap<String, f64>,
        rollout: Option<&Rollout>,
        settings: &Settings,
    ) -> Result<Plan, Undecidable> {
        decide(Inputs {
            rollout,
            ..inputs(pods, &samples_of(samples), settings)
        })
    }

    /// `check` with a partition answer: `(pod, partition, load)`.
    fn check_with(
        pods: &[Pod],
        samples: &BTreeMap<String, f64>,
        settings: &Settings,
        owned: &[(&str, &str, f64)],
    ) -> Result<Plan, Undecidable> {
        decide(Inputs {
            partitions: Some(Answer::new(owned.iter().copied()).expect("a valid answer")),
            ..inputs(pods, &samples_of(samples), settings)
        })
    }

    /// `(pod, partition, load)` as the tests write them.
    type Owning = Vec<(String, String, f64)>;

    /// SPEC §12's first example: eight pods, p0 with the hot partition (1.25) and one
    /// more, the others two of 0.25 each; CPU 0.01 + load.
    fn key_skew() -> (Vec<Pod>, BTreeMap<String, f64>, Owning) {
        let loads = [1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
        let (pods, samples) = fleet(&loads.map(|l| 0.01 + l));
        let mut owned = vec![("p0".to_string(), "t/hot".to_string(), 1.25)];
        for i in 0..8 {
            owned.push((format!("p{i}"), format!("t/{i}a"), 0.25));
            if i > 0 {
                owned.push((format!("p{i}"), format!("t/{i}b"), 0.25));
            }
        }
        (pods, samples, owned)
    }

    fn borrowed(owned: &[(String, String, f64)]) -> Vec<(&str, &str, f64)> {
        owned.iter().map(|(p, k, l)| (p.as_str(), k.as_str(), *l)).collect()
    }

    fn removed(plan: &Plan) -> Vec<(&str, Role)> {
        plan.removals().iter().map(|r| (r.name.as_str(), r.role)).collect()
    }

    fn hold(plan: &Plan) -> &Hold {
        match &plan.decision {
            Decision::Hold(h) => h,
            d => panic!("expected no action, got {d:?}"),
        }
    }

    fn exclusion(plan: &Plan, name: &str) -> Option<Exclusion> {
        plan.pods.iter().find(|v| v.pod.name == name).and_then(|v| v.excluded)
    }

    #[test]
    fn an_imbalanced_fleet_loses_its_hottest_then_its_coldest_pod() {
        let (pods, samples) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(removed(&plan), vec![("p1", Role::HighestCpu), ("p3", Role::LowestCpu)]);
        assert_eq!(plan.removals()[0].uid, "uid-p1");
        let first = plan.pods.iter().next().unwrap();
        assert_eq!((first.pod.name.as_str(), first.role), ("p1", Some(Role::HighestCpu)));
        assert!(
            plan.summary("would evict")
                .starts_with("would evict p1 and p3: spread 0.64 > threshold 0.30")
        );
    }

    #[test]
    fn a_balanced_fleet_is_left_alone() {
        let (pods, samples) = fleet(&[1.0, 1.1, 0.9, 1.05]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert!(matches!(hold(&plan), Hold::Balanced { .. }), "{plan:?}");
        assert_eq!(plan.analyzed(), 4);
    }

    #[test]
    fn spread_equal_to_the_threshold_is_balanced() {
        // mean 1, population stddev 0.5 → spread exactly 0.5.
        let (pods, samples) = fleet(&[0.5, 1.5, 0.5, 1.5]);
        let s = Settings {
            threshold: 0.5,
            ..settings()
        };
        assert!(matches!(
            hold(&check(&pods, &samples, None, &s).unwrap()),
            Hold::Balanced { .. }
        ));
    }

    #[test]
    fn an_idle_fleet_is_left_alone() {
        let (pods, samples) = fleet(&[0.0, 0.0001, 0.0, 0.0009]);
        assert!(matches!(
            hold(&check(&pods, &samples, None, &settings()).unwrap()),
            Hold::Idle { .. }
        ));
    }

    #[test]
    fn too_few_pods_with_metrics_is_no_action() {
        let (pods, mut samples) = fleet(&[2.0, 0.1, 1.0, 1.0]);
        samples.remove("p2");
        samples.remove("p3");
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(
            hold(&plan),
            &Hold::TooFewPods {
                eligible: 2,
                min_pods: 3
            }
        );
        assert_eq!(exclusion(&plan, "p2"), Some(Exclusion::NoMetrics));
    }

    #[test]
    fn no_pods_and_no_metrics_are_errors() {
        let e = check(&[], &BTreeMap::new(), None, &settings()).unwrap_err();
        assert!(e.to_string().contains("no pods matched"), "{e}");
        let (pods, _) = fleet(&[1.0, 2.0, 3.0]);
        let e = check(&pods, &BTreeMap::new(), None, &settings()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no CPU metrics for container c in namespace ns over 5m"),
            "{e}"
        );
    }

    #[test]
    fn each_exclusion_has_its_reason_and_the_first_reason_wins() {
        let (mut pods, mut samples) = fleet(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        pods[0].phase = "Pending".into();
        pods[1].ready = false;
        pods[2].created = Some(NOW - 299);
        pods[2].phase = "Running".into();
        samples.remove("p3");
        samples.insert("p4".into(), f64::NAN);
        samples.insert("p5".into(), -0.5);
        pods[6].phase = "Failed".into();
        pods[6].ready = false;
        let s = Settings {
            stabilization_secs: 0,
            ..settings()
        };
        let plan = check(&pods, &samples, None, &s).unwrap();
        let got: Vec<Option<Exclusion>> = (0..8).map(|i| exclusion(&plan, &format!("p{i}"))).collect();
        use Exclusion::*;
        assert_eq!(
            got,
            vec![
                Some(NotRunning),
                Some(NotReady),
                Some(TooYoung),
                Some(NoMetrics),
                Some(InvalidMetrics),
                Some(InvalidMetrics),
                Some(NotRunning),
                None
            ]
        );
    }

    #[test]
    fn a_terminating_pod_gates_the_fleet() {
        let (mut pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0, 1.0]);
        pods[4].terminating = true;
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        let Hold::Stabilizing { because } = hold(&plan) else {
            panic!("{plan:?}")
        };
        assert_eq!(because, &vec!["1 pod terminating: p4".to_string()]);
        assert_eq!(exclusion(&plan, "p4"), Some(Exclusion::Terminating));
        assert!(plan.stats.is_some(), "gated runs still export statistics");
    }

    #[test]
    fn a_young_pod_gates_the_fleet() {
        let (mut pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0, 1.0]);
        pods[2].created = Some(NOW - 180);
        pods[3].created = Some(NOW - 599);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        let Hold::Stabilizing { because } = hold(&plan) else {
            panic!("{plan:?}")
        };
        assert_eq!(
            because[0],
            "2 pods younger than the stabilization window 10m (youngest p2 is 3m old)"
        );
        pods[3].created = Some(NOW - 600);
        pods[2].created = Some(NOW - 600);
        assert!(check(&pods, &samples, None, &settings()).unwrap().removals().len() == 2);
    }

    #[test]
    fn an_unfinished_rollout_gates_the_fleet() {
        let (pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0, 1.0]);
        let done = Rollout {
            name: "d".into(),
            generation: 4,
            observed_generation: 4,
            desired: 5,
            replicas: 5,
            updated: 5,
            fingerprint: "f".into(),
            ..Rollout::default()
        };
        assert_eq!(
            check(&pods, &samples, Some(&done), &settings())
                .unwrap()
                .removals()
                .len(),
            2
        );
        for (rollout, words) in [
            (
                Rollout {
                    observed_generation: 3,
                    ..done.clone()
                },
                "generation 4 not yet observed",
            ),
            (
                Rollout {
                    updated: 4,
                    ..done.clone()
                },
                "4 of 5 replicas updated",
            ),
            (
                Rollout {
                    replicas: 6,
                    ..done.clone()
                },
                "6 replicas, 5 desired",
            ),
        ] {
            let plan = check(&pods, &samples, Some(&rollout), &settings()).unwrap();
            let Hold::Stabilizing { because } = hold(&plan) else {
                panic!("{plan:?}")
            };
            assert!(because[0].contains(words), "{because:?}");
        }
    }

    #[test]
    fn a_not_ready_pod_is_never_chosen_even_when_it_is_the_extreme() {
        let (mut pods, samples) = fleet(&[9.0, 0.0, 1.0, 1.2, 0.2, 0.9, 1.0, 1.0]);
        pods[0].ready = false;
        pods[1].ready = false;
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(removed(&plan), vec![("p3", Role::HighestCpu), ("p4", Role::LowestCpu)]);
        assert_eq!(exclusion(&plan, "p0"), Some(Exclusion::NotReady));
    }

    #[test]
    fn ties_go_to_the_name_that_sorts_first() {
        let (pods, samples) = fleet(&[2.0, 2.0, 0.1, 0.1, 1.0, 1.0]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(removed(&plan), vec![("p0", Role::HighestCpu), ("p2", Role::LowestCpu)]);
        let mut reversed = pods.clone();
        reversed.reverse();
        assert_eq!(
            check(&reversed, &samples, None, &settings()).unwrap(),
            plan,
            "input order must not matter"
        );
    }

    #[test]
    fn the_fleet_budget_serves_the_worst_spread_first_and_skips_what_does_not_fit() {
        let wanting = [
            ("a", 1.5, 2),
            ("b", 3.0, 2),
            ("c", 2.0, 1),
            ("d", 2.0, 2),
            ("e", 1.1, 1),
        ];
        // b (3.0) takes 2, c (2.0, first name of the tie) 1, d (2.0) does not fit in
        // 1, a (1.5) does not either, e (1.1) takes the last.
        assert_eq!(serve(&wanting, 4), [1, 2, 4]);
        assert!(serve(&wanting, 0).is_empty());
        assert_eq!(serve(&wanting, 100), [1, 2, 3, 0, 4]);
        assert!(serve(&[], 4).is_empty());
    }

    #[test]
    fn the_budget_table() {
        // (healthy, min_pods) → pods that may go
        for (healthy, min, want) in [
            (0, 3, 0),
            (1, 1, 0),
            (2, 1, 1),
            (3, 3, 0),
            (4, 3, 1),
            (5, 3, 2),
            (6, 3, 3),
            (10, 3, 5),
            (10, 9, 1),
            (3, 1, 1),
            (4, 1, 2),
            (100, 99, 1),
            (100, 100, 0),
        ] {
            assert_eq!(budget(healthy, min), want, "healthy {healthy}, min {min}");
        }
    }

    #[test]
    fn three_pods_with_min_three_remove_nothing_four_remove_the_hottest_only() {
        let (pods, samples) = fleet(&[3.0, 0.1, 1.0]);
        assert_eq!(
            hold(&check(&pods, &samples, None, &settings()).unwrap()),
            &Hold::MinPods {
                healthy: 3,
                min_pods: 3
            }
        );
        let (pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(removed(&plan), vec![("p0", Role::HighestCpu)]);
        assert!(
            plan.summary("would evict").contains("budget allows one removal"),
            "{}",
            plan.summary("x")
        );
    }

    #[test]
    fn unhealthy_pods_do_not_count_towards_the_budget() {
        let (mut pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0, 1.0]);
        pods[4].phase = "Pending".into();
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!((plan.healthy, plan.budget), (4, 1));
        assert_eq!(removed(&plan), vec![("p0", Role::HighestCpu)]);
    }

    #[test]
    fn metrics_of_pods_that_are_not_matched_are_ignored() {
        let (pods, mut samples) = fleet(&[1.0, 1.0, 1.0]);
        samples.insert("someone-else".into(), 50.0);
        assert!(matches!(
            hold(&check(&pods, &samples, None, &settings()).unwrap()),
            Hold::Balanced { .. }
        ));
    }

    #[test]
    fn a_spread_that_is_the_threshold_but_for_rounding_is_balanced() {
        // Population stddev of 0.7, 1.3, 0.7, 1.3 is 0.30000000000000004 of a mean of 1.
        let (pods, samples) = fleet(&[0.7, 1.3, 0.7, 1.3]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        let spread = plan.stats.unwrap().spread;
        assert!(spread > 0.3, "the float noise is there: {spread}");
        assert!(matches!(hold(&plan), Hold::Balanced { .. }), "{plan:?}");
        assert!(!over(0.3 * (1.0 + 1e-10), 0.3) && over(0.3 * (1.0 + 1e-8), 0.3));
    }

    #[test]
    fn the_reason_never_prints_two_equal_numbers() {
        let (pods, samples) = fleet(&[0.696, 1.304, 0.696, 1.304]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        let why = plan.over_threshold().unwrap();
        assert_eq!(plan.stats.map(|s| format!("{:.2}", s.spread)).as_deref(), Some("0.30"));
        assert!(
            why.starts_with("spread 0.30") && why.contains("> threshold 0.30"),
            "{why}"
        );
        assert!(
            !why.starts_with("spread 0.30 "),
            "more digits where two are equal: {why}"
        );
    }

    #[test]
    fn a_mean_of_exactly_the_idle_line_is_not_idle() {
        let (pods, samples) = fleet(&[0.0005, 0.0015, 0.0005, 0.0015]);
        let plan = check(&pods, &samples, None, &settings()).unwrap();
        assert!((plan.stats.unwrap().mean - IDLE_MEAN_CORES).abs() < 1e-15);
        assert!(!matches!(plan.decision, Decision::Hold(Hold::Idle { .. })), "{plan:?}");
    }

    #[test]
    fn a_pod_without_a_creation_time_gates_even_without_a_stabilization_window() {
        let (mut pods, samples) = fleet(&[3.0, 0.1, 1.0, 1.0, 1.0]);
        pods[2].created = None;
        let s = Settings {
            stabilization_secs: 0,
            ..settings()
        };
        let plan = check(&pods, &samples, None, &s).unwrap();
        let Hold::Stabilizing { because } = hold(&plan) else {
            panic!("{plan:?}")
        };
        assert_eq!(because, &vec!["1 pod without a creation time: p2".to_string()]);
        assert_eq!(exclusion(&plan, "p2"), Some(Exclusion::TooYoung));
    }

    #[test]
    fn samples_that_are_all_invalid_are_no_metrics_at_all() {
        let (pods, mut samples) = fleet(&[1.0, 1.0, 1.0]);
        for (i, bad) in [f64::NAN, f64::INFINITY, -1.0].into_iter().enumerate() {
            samples.insert(format!("p{i}"), bad);
        }
        let e = check(&pods, &samples, None, &settings()).unwrap_err();
        assert_eq!(e.stage(), Stage::Metrics);
        assert_eq!(
            e.to_string(),
            "no CPU metrics for container c in namespace ns over 5m (3 pods answered NaN, ±Inf or a negative number)"
        );
        samples.insert("p0".into(), 0.0);
        assert!(
            check(&pods, &samples, None, &settings()).is_ok(),
            "one valid sample is enough to decide"
        );
    }

    #[test]
    fn an_imbalance_no_assignment_can_balance_is_unfixable() {
        let (pods, samples, owned) = key_skew();
        let plan = check_with(&pods, &samples, &settings(), &borrowed(&owned)).unwrap();
        let Hold::Unfixable {
            best_possible_spread,
            threshold,
            because,
        } = hold(&plan)
        else {
            panic!("{plan:?}")
        };
        assert_eq!((format!("{best_possible_spread:.2}"), *threshold), ("0.37".into(), 0.3));
        assert_eq!(
            because,
            &["partition t/hot alone burns 1.26 cores, 2.0× a fair share (key skew)".to_string()]
        );
        assert_eq!(hold(&plan).outcome(), Outcome::Unfixable);
        assert!(plan.removals().is_empty() && plan.pods.iter().all(|v| v.role.is_none()));
        assert!(
            plan.summary("x").starts_with(
                "no action: unfixable: no assignment of the partitions balances the pods (best possible spread 0.37 > threshold 0.30): partition t/hot"
            ),
            "{}",
            plan.summary("x")
        );
        let without = check(&pods, &samples, None, &settings()).unwrap();
        assert_eq!(
            removed(&without),
            vec![("p0", Role::HighestCpu), ("p1", Role::LowestCpu)]
        );
    }

    #[test]
    fn unfixable_comes_after_balanced_and_before_the_budget() {
        let (pods, samples, owned) = key_skew();
        let lenient = Settings {
            threshold: 0.6,
            ..settings()
        };
        let plan = check_with(&pods, &samples, &lenient, &borrowed(&owned)).unwrap();
        assert!(matches!(hold(&plan), Hold::Balanced { .. }), "{plan:?}");
        let strict_budget = Settings {
            min_pods: 8,
            ..settings()
        };
        let plan = check_with(&pods, &samples, &strict_budget, &borrowed(&owned)).unwrap();
        assert!(matches!(hold(&plan), Hold::Unfixable { .. }), "{plan:?}");
        assert!(matches!(
            hold(&check(&pods, &samples, None, &strict_budget).unwrap()),
            Hold::MinPods { .. }
        ));
        let too_few = Settings {
            min_pods: 9,
            ..settings()
        };
        let plan = check_with(&pods, &samples, &too_few, &borrowed(&owned)).unwrap();
        assert!(matches!(hold(&plan), Hold::TooFewPods { .. }), "{plan:?}");
    }

    #[test]
    fn partitions_moving_gate_the_fleet_after_no_metrics() {
        let (mut pods, samples, mut owned) = key_skew();
        owned.push(("p3".into(), "t/hot".into(), 1.25));
        let plan = check_with(&pods, &samples, &settings(), &borrowed(&owned)).unwrap();
        assert_eq!(
            hold(&plan),
            &Hold::Stabilizing {
                because: vec!["partitions moving: partition t/hot is owned by p0 and p3".into()]
            }
        );
        assert!(plan.stats.is_some(), "gated runs still export statistics");
        owned.pop();
        // A partition of a pod that is not eligible: stale data, or a pod on its way.
        pods[7].ready = false;
        let plan = check_with(&pods, &samples, &settings(), &borrowed(&owned)).unwrap();
        assert_eq!(
            hold(&plan),
            &Hold::Stabilizing {
                because: vec!["partitions moving: partition t/7a is owned by p7, which is not eligible".into()]
            }
        );
        // The fleet gate speaks first, and no metrics at all is still an error.
        pods[6].terminating = true;
        let plan = check_with(&pods, &samples, &settings(), &borrowed(&owned)).unwrap();
        let Hold::Stabilizing { because } = hold(&plan) else {
            panic!("{plan:?}")
        };
        assert_eq!(because, &vec!["1 pod terminating: p6".to_string()]);
        pods[6].terminating = false;
        let e = check_with(&pods, &BTreeMap::new(), &settings(), &borrowed(&owned)).unwrap_err();
        assert_eq!(e.stage(), Stage::Metrics);
    }

    #[test]
    fn a_signal_that_is_missing_unexplained_or_fixable_decides_as_without_it() {
        let (pods, samples) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
        let without = check(&pods, &samples, None, &settings()).unwrap();
        type Case<'a> = (&'a [(&'a str, &'a str, f64)], &'a str);
        let cases: [Case; 3] = [
            (&[("someone-else", "t/1", 5.0)], "missing"),
            (
                &[
                    ("p0", "t/0", 5.0),
                    ("p1", "t/1", 1.0),
                    ("p2", "t/2", 5.0),
                    ("p3", "t/3", 1.0),
                ],
                "unexplained",
            ),
            // p1 holds two busy partitions: moving one away balances the group.
            (
                &[
                    ("p0", "t/0", 0.8),
                    ("p1", "t/1", 0.9),
                    ("p1", "t/2", 1.0),
                    ("p2", "t/3", 0.8),
                    ("p3", "t/4", 0.1),
                    ("p4", "t/5", 0.8),
                ],
                "fixable",
            ),
        ];
        for (owned, verdict) in cases {
            let plan = check_with(&pods, &samples, &settings(), owned).unwrap();
            assert_eq!(
                plan.partitions.as_ref().map(|e| e.verdict.label()),
                Some(verdict),
                "{plan:?}"
            );
            assert_eq!(plan.decision, without.decision, "{verdict}");
            assert_eq!(
                Plan {
                    partitions: None,
                    ..plan
                },
                without,
                "{verdict}"
            );
        }
    }

    #[test]
    fn no_pods_names_the_selector_and_the_namespace() {
        let e = check(&[], &BTreeMap::new(), None, &settings()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no pods matched the label selector app=c in namespace ns"
        );
        assert_eq!(e.stage(), Stage::Kubernetes);
        let e = decide(Inputs {
            ignored: 8,
            ..inputs(&[], &Samples::default(), &settings())
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the label selector app=c in namespace ns matched 8 pods, none of them the Deployment's"),
            "{e}"
        );
        // Fleet mode lists the whole namespace when KUBE_LABEL_SELECTOR is unset.
        let e = decide(Inputs {
            selector: Some(""),
            ..inputs(&[], &Samples::default(), &settings())
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no pod of namespace ns is the Deployment's (its controller would be a ReplicaSet named after it)"
        );
    }
}
