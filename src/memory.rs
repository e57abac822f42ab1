//! The memory: what the rebalancer did, whether it helped, and when to stop.
//!
//! A stateless rebalancer churns forever where a pod eviction cannot help: a hot
//! partition moves with the partition to whichever pod gets it, idle consumers stay
//! idle. So every action is remembered (the `Memory` document, kept in the state
//! ConfigMap by `cycle`), and the first run after it that passes the fleet gate and
//! computes meaningful statistics measures it: `ratio = spread now / spread before`.
//! Effective actions keep the breaker closed, partial ones leave it as it is;
//! `MAX_INEFFECTIVE_ACTIONS` ineffective ones in a row open it for `BACKOFF`, doubling
//! with each further one (at most a day).
//!
//! This module is the whole protocol, and the only copy of it: the cycle, the
//! simulation and the tests all run a cycle's memory as
//!
//! ```text
//! in_progress(memory)          → another run's lease: no action, no write
//! judge(memory, plan, …)       → Judgement: settle from the cluster, forget what
//!                                cannot be measured, clamp the hold, measure,
//!                                count the streak, derive the breaker
//! judgement.apply(plan)        → the plan as the breaker allows it
//! judgement.lease(&plan)       → the document written before any removal
//! judgement.settle(&plan, &answers)
//!                              → the document written at the end of the run
//! ```
//!
//! Everything here is pure: no I/O, no clock (`now` is the plan's).

use crate::outcome::Refusal;
use crate::plan::{Decision, Hold, IDLE_MEAN_CORES, Plan, Removal, Role, over};
use crate::report::Counters;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The version of the state document this program writes. It reads this one and
/// version 1 (upgraded on its first write).
pub const VERSION: u32 = 2;
/// The most actions the memory keeps, the newest last.
pub const MAX_ACTIONS: usize = 10;
/// The longest hold of an open breaker.
pub const MAX_HOLD_SECS: u64 = 24 * 3600;
/// An action is in progress for at least this long after its lease.
pub const MIN_LEASE_SECS: u64 = 120;
/// The hot spot "moved" when the hottest pod after an action burns at least this share
/// of what the removed hottest pod burned.
pub const HOT_SPOT_SHARE: f64 = 0.8;
/// The largest count (`streak`, an action's `n`) a document may hold.
pub const MAX_COUNT: u64 = 1_000_000_000;

/// The state document: the `state.json` key of the state ConfigMap (README "Memory").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `VERSION`; a document of a newer version is refused, never overwritten.
    pub version: u32,
    /// The Deployment whose memory this is: two rebalancers must not share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Consecutive ineffective actions.
    #[serde(default)]
    pub streak: u32,
    /// The end of the last hold (Unix seconds), kept after it ends until an effective
    /// action sets the streak to 0; `None` when no hold was recorded since.
    #[serde(default)]
    pub hold_until: Option<i64>,
    /// The last actions, oldest first, at most `MAX_ACTIONS`.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// A Warning Event said the imbalance is unfixable since the last action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unfixable_warned: bool,
    /// Fleet mode: when a run last found this Deployment a target (Unix seconds); an
    /// entry not found for `FORGET_SECS` is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_target_at: Option<i64>,
    /// The metrics' counters, carried from run to run, and the last success and
    /// failure times.
    #[serde(default)]
    pub counters: Counters,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            version: VERSION,
            deployment: None,
            streak: 0,
            hold_until: None,
            actions: Vec::new(),
            unfixable_warned: false,
            last_target_at: None,
            counters: Counters::default(),
        }
    }
}

impl Memory {
    /// The template fingerprint of the newest action, if any: what an offline plan
    /// without the Deployment takes for today's.
    pub fn last_fingerprint(&self) -> Option<&str> {
        self.actions.iter().rev().find_map(|a| a.fingerprint.as_deref())
    }
}

/// One action: the pods one run meant to remove, what became of each, and the fleet
/// as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// When it was leased, Unix seconds.
    pub at: i64,
    /// The spread, the mean (cores) and the eligible pods before it; an action without
    /// them cannot be measured and is dropped.
    #[serde(default)]
    pub spread: Option<f64>,
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub n: Option<u64>,
    /// The template fingerprint it was taken under.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// False in the lease; true once its run wrote the end-of-run record, or once a
    /// later run settled it from the cluster.
    #[serde(default = "settled_by_default")]
    pub settled: bool,
    /// Taken when a hold had ended: its verdict closes or reopens the breaker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    pub pods: Vec<ActionPod>,
    /// With the partition signal: the partition that carried the most load on the
    /// hottest pod, when the load explained the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Filled in by the run that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// Never measured, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

fn settled_by_default() -> bool {
    true
}

impl Action {
    fn removed(&self) -> bool {
        self.pods.iter().any(|p| p.result == PodResult::Removed)
    }

    /// Settled, not yet measured, not dropped.
    fn pending(&self) -> bool {
        self.settled && self.evaluation.is_none() && self.dropped.is_none()
    }

    /// The hottest pod, when it was removed and its CPU is known.
    fn hottest(&self) -> Option<(&str, f64)> {
        self.pods
            .iter()
            .find(|p| p.role == Role::HighestCpu && p.result == PodResult::Removed)
            .and_then(|p| Some((p.name.as_str(), p.cpu?)))
    }
}

/// A pod of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionPod {
    pub name: String,
    /// Empty in a document upgraded from version 1.
    #[serde(default)]
    pub uid: String,
    pub role: Role,
    pub result: PodResult,
    /// Its CPU (cores) when the action was planned.
    #[serde(default)]
    pub cpu: Option<f64>,
}

/// What became of one pod of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodResult {
    /// In the lease; after the end of the run: not removed (not asked, as under the
    /// pair rule, or settled from the cluster as still there).
    Intended,
    /// The API server answered 2xx, or the cluster shows it gone or terminating.
    Removed,
    /// The API server refused (429, 404, 409).
    Refused,
    /// No answer, or another non-2xx: it may have happened. The next run settles it.
    Unknown,
}

/// What the API server answered to one removal (`act::execute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Removed,
    Refused(Refusal),
    /// A timeout, a reset, any other failure: it may have happened.
    Unknown,
}

impl Answer {
    fn result(self) -> PodResult {
        match self {
            Answer::Removed => PodResult::Removed,
            Answer::Refused(_) => PodResult::Refused,
            Answer::Unknown => PodResult::Unknown,
        }
    }
}

/// Why an action is never measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// The pod template changed before it was measured (a rollout).
    Rollout,
    /// No pod of it was removed.
    NothingRemoved,
    /// It lacks what its measurement needs (a document edited by hand, or upgraded
    /// from version 1 while the action was pending).
    Incomplete,
    /// A later action came before it was measured.
    Superseded,
}

impl Dropped {
    pub fn words(self) -> &'static str {
        match self {
            Dropped::Rollout => "the pod template changed since (a rollout)",
            Dropped::NothingRemoved => "no pod of it was removed",
            Dropped::Incomplete => "it lacks the spread, the pod count or the fingerprint it was taken at",
            Dropped::Superseded => "a later action came first",
        }
    }
}

/// The three verdicts on an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The spread fell by `MIN_IMPROVEMENT`, or reached the threshold with a real step.
    Effective,
    /// It fell by as much as two pods of N can move it, not by `MIN_IMPROVEMENT`.
    Partial,
    Ineffective,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Effective => "effective",
            Verdict::Partial => "partial",
            Verdict::Ineffective => "ineffective",
        }
    }
}

/// What the spread did after an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Unix seconds.
    pub at: i64,
    /// The spread then.
    pub spread: f64,
    /// Spread after / spread before.
    pub ratio: f64,
    pub verdict: Verdict,
    /// When the hottest pod after the action is another pod burning nearly what the
    /// removed one did: the load follows a partition or a key, not a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_spot: Option<HotSpot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSpot {
    pub from: String,
    pub from_cpu: f64,
    pub to: String,
    pub to_cpu: f64,
    /// The partition that moved with it, when the partition signal shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

impl std::fmt::Display for HotSpot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hot spot moved from {} ({:.3} cores) to {} ({:.3} cores)",
            self.from, self.from_cpu, self.to, self.to_cpu
        )?;
        match &self.partition {
            Some(p) => write!(
                f,
                " with partition {p}: the load follows a partition or a key, not a pod"
            ),
            None => write!(f, ": the load follows a partition or a key, not a pod"),
        }
    }
}

/// The settings of the memory (README "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `MIN_IMPROVEMENT`, in (0, 1).
    pub min_improvement: f64,
    /// `MAX_INEFFECTIVE_ACTIONS`, at least 1.
    pub max_ineffective: u32,
    /// `BACKOFF`: the first hold, seconds.
    pub backoff_secs: u64,
    /// How long a lease blocks other runs: `max(STABILIZATION_WINDOW, 2m)`.
    pub lease_secs: u64,
}

/// The breaker's state in this run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Breaker {
    Closed,
    /// No action until `until` (Unix seconds).
    Open {
        until: i64,
    },
    /// A hold has ended: the next action is a probe.
    Probe,
}

/// What the memory makes of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The plan's `now`.
    pub now: i64,
    /// Another run leased an action at this time and may still be acting: this run
    /// takes no action, evaluates nothing and writes nothing.
    pub in_progress: Option<i64>,
    /// Pods of earlier actions this run settled from the cluster, with what it found.
    pub resolved: Vec<(String, PodResult)>,
    /// The last action was dropped by this run, and why.
    pub dropped: Option<Dropped>,
    /// The evaluation this run made, of the last action, if it made one.
    pub evaluation: Option<Evaluation>,
    /// The breaker opened (or reopened) in this run.
    pub opened: bool,
    pub breaker: Breaker,
    /// The memory after this run's judgement, before any action of its own.
    pub next: Memory,
    /// The template fingerprint today.
    pub fingerprint: String,
    /// With the partition signal: the partition that carries the most load on the
    /// plan's hottest pod, when the load explains the CPU (recorded in a lease).
    pub partition: Option<String>,
    /// The imbalance is unfixable (SPEC §12) for the first time since the last
    /// action: the run says so with a Warning Event on the Deployment.
    pub warn_unfixable: bool,
}

/// The time of another run's lease that may still be acting, if there is one: the
/// newest action is unsettled and leased less than `lease_secs` ago (or ahead, within
/// as much: two runs' clocks may differ).
pub fn in_progress(memory: &Memory, now: i64, settings: &Settings) -> Option<i64> {
    let last = memory.actions.last()?;
    let window = settings.lease_secs.max(MIN_LEASE_SECS) as i64;
    (!last.settled && now.saturating_sub(last.at).saturating_abs() < window).then_some(last.at)
}

/// Judges this run's plan against the memory. Pure; in named steps.
pub fn judge(memory: &Memory, plan: &Plan, fingerprint: &str, settings: &Settings) -> Judgement {
    let now = plan.now;
    let mut judgement = Judgement {
        now,
        in_progress: in_progress(memory, now, settings),
        resolved: Vec::new(),
        dropped: None,
        evaluation: None,
        opened: false,
        breaker: Breaker::Closed,
        next: Memory {
            version: VERSION,
            ..memory.clone()
        },
        fingerprint: fingerprint.to_string(),
        partition: heaviest_on_hottest(plan),
        warn_unfixable: false,
    };
    if judgement.in_progress.is_some() {
        // Nothing is settled, measured or counted: the acting run's end-of-run write
        // records its action, and a write here would make that write fail.
        clamp_hold(&mut judgement.next, now);
        judgement.breaker = breaker(&judgement.next, now, settings);
        return judgement;
    }
    judgement.resolved = settle_from_cluster(&mut judgement.next, plan);
    judgement.dropped = forget_unmeasurable(&mut judgement.next, fingerprint);
    clamp_hold(&mut judgement.next, now);
    judgement.evaluation = measure(&mut judgement.next, plan, settings);
    let was_open = matches!(breaker(&judgement.next, now, settings), Breaker::Open { .. });
    if let Some(verdict) = judgement.evaluation.as_ref().map(|e| e.verdict) {
        count_streak(&mut judgement.next, verdict, now, settings);
    }
    judgement.opened = open_when_lowered(&mut judgement.next, now, settings);
    judgement.warn_unfixable = warn_once_unfixable(&mut judgement.next, plan);
    judgement.breaker = breaker(&judgement.next, now, settings);
    judgement.opened |= !was_open && matches!(judgement.breaker, Breaker::Open { .. });
    judgement
}

/// The partition that carries the most load on the plan's hottest pod, when the
/// partition signal explains the CPU: what a lease records, for "the hot spot moved".
fn heaviest_on_hottest(plan: &Plan) -> Option<String> {
    let explained = plan.partitions.as_ref().filter(|e| e.explains())?;
    let (hottest, _) = plan.pods.hottest()?;
    explained.heaviest_partition(hottest).map(str::to_string)
}

/// Whether this run is the first since the last action to find the imbalance
/// unfixable; it remembers that it said so.
fn warn_once_unfixable(memory: &mut Memory, plan: &Plan) -> bool {
    let unfixable = matches!(plan.decision, Decision::Hold(Hold::Unfixable { .. }));
    let first = unfixable && !memory.unfixable_warned;
    memory.unfixable_warned |= unfixable;
    first
}

/// Resolves, from the pods the plan lists, every pod of an unsettled action (its run
/// died after its lease) and every pod answered `unknown`: gone or terminating means
/// removed; still there, not. Unsettled actions become settled.
fn settle_from_cluster(memory: &mut Memory, plan: &Plan) -> Vec<(String, PodResult)> {
    let unresolved = |a: &Action| !a.settled || a.pods.iter().any(|p| p.result == PodResult::Unknown);
    if !memory.actions.iter().any(unresolved) {
        return Vec::new();
    }
    let listed: HashMap<&str, bool> = plan
        .pods
        .iter()
        .filter(|v| !v.pod.uid.is_empty())
        .map(|v| (v.pod.uid.as_str(), v.pod.terminating))
        .collect();
    let mut resolved = Vec::new();
    for action in memory.actions.iter_mut().filter(|a| unresolved(a)) {
        let settling = !action.settled;
        for pod in &mut action.pods {
            let open = pod.result == PodResult::Unknown || (settling && pod.result == PodResult::Intended);
            if !open {
                continue;
            }
            let gone = match listed.get(pod.uid.as_str()) {
                None => true,
                Some(terminating) => *terminating,
            };
            pod.result = if gone { PodResult::Removed } else { PodResult::Intended };
            resolved.push((pod.name.clone(), pod.result));
        }
        action.settled = true;
    }
    resolved
}

/// Marks what can never be measured: a pending action with no removed pod, one that
/// lacks its numbers, one taken under another pod template (a rollout since: the
/// streak and the hold stay as they are), and any pending action but the newest.
/// Returns why the newest was dropped, if it was just now.
fn forget_unmeasurable(memory: &mut Memory, fingerprint: &str) -> Option<Dropped> {
    let newest = memory.actions.len().checked_sub(1)?;
    let mut dropped_newest = None;
    for (i, action) in memory.actions.iter_mut().enumerate() {
        if !action.pending() {
            continue;
        }
        let why = if i != newest {
            Dropped::Superseded
        } else if !action.removed() {
            Dropped::NothingRemoved
        } else if action.spread.is_none_or(|s| s <= 0.0) || action.n.is_none_or(|n| n == 0) {
            Dropped::Incomplete
        } else if action.fingerprint.as_deref() != Some(fingerprint) {
            Dropped::Rollout
        } else {
            continue;
        };
        action.dropped = Some(why);
        if i == newest {
            dropped_newest = Some(why);
        }
    }
    dropped_newest
}

/// No hold lasts more than a day from now, whatever a hand-edited document says.
fn clamp_hold(memory: &mut Memory, now: i64) {
    let longest = now.saturating_add(MAX_HOLD_SECS as i64);
    memory.hold_until = memory.hold_until.map(|until| until.min(longest));
}

/// Whether this run's statistics can measure an action: the fleet gate passed and they
/// are meaningful (at least `MIN_PODS_REQUIRED` eligible pods, not idle).
fn qualifies(plan: &Plan) -> bool {
    let gated = matches!(plan.decision, Decision::Hold(Hold::Stabilizing { .. }));
    !gated
        && plan
            .stats
            .is_some_and(|s| s.n >= plan.min_pods && s.mean >= IDLE_MEAN_CORES)
}

/// Measures the newest action, when it is pending and this run qualifies.
fn measure(memory: &mut Memory, plan: &Plan, settings: &Settings) -> Option<Evaluation> {
    let action = memory.actions.last_mut().filter(|a| a.pending())?;
    let stats = plan.stats.filter(|_| qualifies(plan))?;
    let evaluation = evaluate(action, stats.spread, plan, settings);
    action.evaluation = Some(evaluation.clone());
    Some(evaluation)
}

/// The verdict on `action` at `spread` (this run's): SPEC §11 "Effect".
fn evaluate(action: &Action, spread: f64, plan: &Plan, settings: &Settings) -> Evaluation {
    // `forget_unmeasurable` dropped actions without a positive spread or a count.
    let before = action.spread.unwrap_or(f64::MAX);
    let n = action.n.unwrap_or(1).max(1) as f64;
    // A spread before that is tiny but positive (a hand-edited 5e-324) would make the
    // ratio infinite: it is capped so that every document written reads back.
    let ratio = (spread / before).min(f64::MAX);
    let step = 1.0 - 1.0 / n;
    let verdict = if ratio <= 1.0 - settings.min_improvement || (!over(spread, plan.threshold) && ratio <= step) {
        Verdict::Effective
    } else if ratio <= step {
        Verdict::Partial
    } else {
        Verdict::Ineffective
    };
    Evaluation {
        at: plan.now,
        spread,
        ratio,
        verdict,
        hot_spot: hot_spot(action, plan),
    }
}

/// The hottest pod now is another one, burning nearly what the removed hottest did.
/// With the partition signal, when both runs had a load that explains the CPU: only
/// when the new hottest pod owns the partition that carried the most load on the old.
fn hot_spot(action: &Action, plan: &Plan) -> Option<HotSpot> {
    let (from, from_cpu) = action.hottest()?;
    let (to, to_cpu) = plan.pods.hottest()?;
    if to == from || to_cpu < HOT_SPOT_SHARE * from_cpu {
        return None;
    }
    let explained = plan.partitions.as_ref().filter(|e| e.explains());
    let partition = match (&action.partition, explained) {
        (Some(partition), Some(explained)) => {
            // The hottest pod now burns as much, but does it hold what burned on the
            // old one? If not, it is a runner-up, not the hot spot moving.
            if explained.owner_of(partition) != Some(to) {
                return None;
            }
            Some(partition.clone())
        }
        _ => None,
    };
    Some(HotSpot {
        from: from.to_string(),
        from_cpu,
        to: to.to_string(),
        to_cpu,
        partition,
    })
}

/// Effective sets the streak to 0 and forgets the hold; partial leaves both as they
/// are; ineffective adds one, and at `MAX_INEFFECTIVE_ACTIONS` or more holds for
/// `BACKOFF × 2^(streak − MAX_INEFFECTIVE_ACTIONS)`.
fn count_streak(memory: &mut Memory, verdict: Verdict, now: i64, settings: &Settings) {
    match verdict {
        Verdict::Effective => {
            memory.streak = 0;
            memory.hold_until = None;
        }
        Verdict::Partial => {}
        Verdict::Ineffective => {
            memory.streak = memory.streak.saturating_add(1).min(MAX_COUNT as u32);
            if memory.streak >= settings.max_ineffective {
                memory.hold_until = Some(now.saturating_add(hold_secs(memory.streak, settings) as i64));
            }
        }
    }
}

/// A streak at or above `MAX_INEFFECTIVE_ACTIONS` with no hold recorded (the setting
/// was lowered) opens the breaker for `BACKOFF`. Whether it did.
fn open_when_lowered(memory: &mut Memory, now: i64, settings: &Settings) -> bool {
    if memory.streak >= settings.max_ineffective && memory.hold_until.is_none() {
        memory.hold_until = Some(now.saturating_add(settings.backoff_secs.min(MAX_HOLD_SECS) as i64));
        return true;
    }
    false
}

fn breaker(memory: &Memory, now: i64, settings: &Settings) -> Breaker {
    match memory.hold_until {
        Some(until) if until > now => Breaker::Open { until },
        _ if memory.streak >= settings.max_ineffective => Breaker::Probe,
        _ => Breaker::Closed,
    }
}

/// `BACKOFF × 2^(streak − MAX_INEFFECTIVE_ACTIONS)`, at most a day.
pub fn hold_secs(streak: u32, settings: &Settings) -> u64 {
    let doublings = streak.saturating_sub(settings.max_ineffective).min(32);
    settings
        .backoff_secs
        .saturating_mul(1u64 << doublings)
        .min(MAX_HOLD_SECS)
}

impl Judgement {
    /// The plan as the breaker allows it: an open breaker holds a plan that would
    /// remove pods or that only the budget held (it comes after "balanced" and
    /// "unfixable", before the budget).
    pub fn apply(&self, mut plan: Plan) -> Plan {
        let Breaker::Open { until } = self.breaker else {
            return plan;
        };
        if !matches!(
            plan.decision,
            Decision::Remove { .. } | Decision::Hold(Hold::MinPods { .. })
        ) {
            return plan;
        }
        plan.pods.clear_roles();
        plan.decision = Decision::Hold(Hold::Ineffective {
            until,
            spreads: self.streak_spreads(),
        });
        plan
    }

    /// The spread before and after each ineffective action of the streak, oldest
    /// first: what the hold, its log line and its Warning Event quote.
    pub fn streak_spreads(&self) -> Vec<[f64; 2]> {
        let mut spreads: Vec<[f64; 2]> = self
            .next
            .actions
            .iter()
            .rev()
            .filter_map(|a| {
                let e = a.evaluation.as_ref().filter(|e| e.verdict == Verdict::Ineffective)?;
                Some([a.spread?, e.spread])
            })
            .take(self.next.streak as usize)
            .collect();
        spreads.reverse();
        spreads
    }

    /// The document written before any removal: the judged memory and the intended
    /// action, unsettled, each pod with its name and uid. `None` when the plan removes
    /// nothing.
    pub fn lease(&self, plan: &Plan) -> Option<Memory> {
        self.with_action(plan, None)
    }

    /// The document written at the end of the run: the judged memory and what the API
    /// server answered for each removal (`answers`; a pod not in it was not asked). An
    /// action with nothing removed and nothing unknown is not recorded. A dry run
    /// passes no answers: it records no action.
    pub fn settle(&self, plan: &Plan, answers: &[(Removal, Answer)]) -> Memory {
        self.with_action(plan, Some(answers))
            .unwrap_or_else(|| self.next.clone())
    }

    fn with_action(&self, plan: &Plan, answers: Option<&[(Removal, Answer)]>) -> Option<Memory> {
        let stats = plan.stats?;
        let removals = plan.removals();
        if removals.is_empty() {
            return None;
        }
        let pods: Vec<ActionPod> = removals
            .iter()
            .map(|r| ActionPod {
                name: r.name.clone(),
                uid: r.uid.clone(),
                role: r.role,
                result: answers
                    .and_then(|a| a.iter().find(|(asked, _)| asked.name == r.name))
                    .map_or(PodResult::Intended, |(_, answer)| answer.result()),
                cpu: Some(r.cpu),
            })
            .collect();
        let happened = |p: &ActionPod| matches!(p.result, PodResult::Removed | PodResult::Unknown);
        if answers.is_some() && !pods.iter().any(happened) {
            return None;
        }
        let mut next = self.next.clone();
        next.actions.push(Action {
            at: plan.now,
            spread: Some(stats.spread),
            mean: Some(stats.mean),
            n: Some(stats.n as u64),
            fingerprint: Some(self.fingerprint.clone()),
            settled: answers.is_some(),
            probe: self.breaker == Breaker::Probe,
            pods,
            partition: self.partition.clone(),
            evaluation: None,
            dropped: None,
        });
        let extra = next.actions.len().saturating_sub(MAX_ACTIONS);
        next.actions.drain(..extra);
        next.unfixable_warned = false;
        Some(next)
    }
}

/// Why a document cannot be read, and how to start afresh.
fn unreadable(why: impl std::fmt::Display) -> String {
    format!("{why}; to start afresh, remove the {} key", crate::kube::STATE_KEY)
}

/// Reads a state document for `deployment` (when known); an empty one (no
/// `state.json`) is a fresh memory, a version-1 one is upgraded. `Err` says why it
/// cannot be read (not JSON of this shape, a newer version, another Deployment's, a
/// fleet's, a value out of range) and how to start afresh.
pub fn parse(document: Option<&str>, deployment: Option<&str>) -> Result<Memory, String> {
    let Some(text) = document.filter(|t| !t.trim().is_empty()) else {
        return Ok(Memory {
            deployment: deployment.map(str::to_string),
            ..Memory::default()
        });
    };
    let top: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| unreadable(format!("expected a JSON object: {e}")))?;
    let version = top.get("version").cloned().unwrap_or(serde_json::Value::Null);
    let Some(v) = version.as_u64() else {
        return Err(unreadable(format!("expected version {VERSION}, got {version}")));
    };
    if v > u64::from(VERSION) {
        return Err(unreadable(format!(
            "version {v} is newer than this program's {VERSION}: upgrade pod-rebalancer (the document is left as it is)"
        )));
    }
    if top.contains_key("targets") {
        return Err(unreadable(
            "it holds the memory of other deployments (a fleet document, SPEC §13): a single-mode rebalancer must not share a fleet's state ConfigMap",
        ));
    }
    let memory = match v {
        2 => serde_json::from_str::<Memory>(text)
            .map_err(|e| unreadable(format!("expected the state document of version {VERSION}: {e}")))?,
        1 => serde_json::from_str::<v1::Memory>(text)
            .map_err(|e| unreadable(format!("expected the state document of version 1: {e}")))?
            .upgrade(),
        _ => return Err(unreadable(format!("expected version {VERSION}, got {version}"))),
    };
    check(&memory).map_err(unreadable)?;
    match (deployment, &memory.deployment) {
        (Some(ours), Some(theirs)) if ours != theirs => Err(unreadable(format!(
            "it holds the memory of deployment {theirs}: two rebalancers must not share one"
        ))),
        (Some(ours), _) => Ok(Memory {
            deployment: Some(ours.to_string()),
            ..memory
        }),
        (None, _) => Ok(memory),
    }
}

/// The ranges of SPEC §11: counts whole and at most 10^9, spreads and CPU finite and
/// not negative, at most `MAX_ACTIONS` actions.
fn check(memory: &Memory) -> Result<(), String> {
    let number = |what: &str, x: f64| {
        if x.is_finite() && x >= 0.0 {
            Ok(())
        } else {
            Err(format!("expected {what} to be a finite number >= 0, got {x}"))
        }
    };
    if u64::from(memory.streak) > MAX_COUNT {
        return Err(format!("expected streak <= {MAX_COUNT}, got {}", memory.streak));
    }
    if memory.actions.len() > MAX_ACTIONS {
        return Err(format!(
            "expected at most {MAX_ACTIONS} actions, got {}",
            memory.actions.len()
        ));
    }
    for (i, a) in memory.actions.iter().enumerate() {
        let at = |what: &str| format!("actions[{i}].{what}");
        for (what, x) in [("spread", a.spread), ("mean", a.mean)] {
            if let Some(x) = x {
                number(&at(what), x)?;
            }
        }
        if let Some(n) = a.n.filter(|n| *n > MAX_COUNT) {
            return Err(format!("expected {} <= {MAX_COUNT}, got {n}", at("n")));
        }
        for (j, p) in a.pods.iter().enumerate() {
            if let Some(cpu) = p.cpu {
                number(&at(&format!("pods[{j}].cpu")), cpu)?;
            }
        }
        if let Some(e) = &a.evaluation {
            number(&at("evaluation.spread"), e.spread)?;
            number(&at("evaluation.ratio"), e.ratio)?;
            if let Some(h) = &e.hot_spot {
                number(&at("evaluation.hot_spot.from_cpu"), h.from_cpu)?;
                number(&at("evaluation.hot_spot.to_cpu"), h.to_cpu)?;
            }
        }
    }
    memory.counters.check()
}

/// The document as it is written: pretty JSON, so `kubectl get configmap -o
/// jsonpath='{.data.state\.json}'` reads well.
pub fn render(memory: &Memory) -> String {
    // Serializing plain structs of finite numbers, strings and vectors cannot fail.
    serde_json::to_string_pretty(memory).unwrap_or_default()
}

/// An entry of a fleet document not found a target for this long is dropped.
pub const FORGET_SECS: i64 = 7 * 24 * 3600;

/// The fleet's state document (SPEC §13): `{"version": 2, "targets": {NAME: ENTRY}}`,
/// each entry the single-mode document's fields without `version`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    pub targets: std::collections::BTreeMap<String, Memory>,
}

impl Fleet {
    /// The newest lease of any entry that may still be acting: in fleet mode the lease
    /// is the fleet's, and it holds every target.
    pub fn in_progress(&self, now: i64, settings: &Settings) -> Option<i64> {
        self.targets
            .values()
            .filter_map(|m| in_progress(m, now, settings))
            .max()
    }

    /// The entries a run writes at `now`: those of its `targets` (stamped as found
    /// now), and those of former targets found within `FORGET_SECS`. An entry no
    /// fleet run has stamped (a single-mode document adopted for a Deployment not yet
    /// a target, an entry written by hand) starts its `FORGET_SECS` now: dropping it
    /// at once would lose a memory on the way from N single-mode CronJobs to one.
    pub fn keep_recent(&mut self, targets: &[&str], now: i64) {
        for name in targets {
            if let Some(entry) = self.targets.get_mut(*name) {
                entry.last_target_at = Some(now);
            }
        }
        self.targets.retain(|_, entry| {
            let at = *entry.last_target_at.get_or_insert(now);
            now.saturating_sub(at) <= FORGET_SECS
        });
    }
}

/// Reads a fleet's state document; an empty one is a fresh memory for every target.
/// A single-mode document naming its Deployment is read as that Deployment's entry
/// (the way from N single-mode CronJobs to one). `Err` says why it cannot be read and
/// how to start afresh.
pub fn parse_fleet(document: Option<&str>) -> Result<Fleet, String> {
    let Some(text) = document.filter(|t| !t.trim().is_empty()) else {
        return Ok(Fleet::default());
    };
    let top: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| unreadable(format!("expected a JSON object: {e}")))?;
    let Some(targets) = top.get("targets") else {
        let single = parse(Some(text), None)?;
        let Some(name) = single.deployment.clone() else {
            return Err(unreadable(
                "a single-mode document that names no deployment cannot be one target's memory in a fleet",
            ));
        };
        return Ok(Fleet {
            targets: [(name, single)].into_iter().collect(),
        });
    };
    let version = top.get("version").and_then(serde_json::Value::as_u64);
    if let Some(v) = version.filter(|v| *v > u64::from(VERSION)) {
        return Err(unreadable(format!(
            "version {v} is newer than this program's {VERSION}: upgrade pod-rebalancer (the document is left as it is)"
        )));
    }
    if version != Some(u64::from(VERSION)) {
        return Err(unreadable(format!("expected version {VERSION} beside targets")));
    }
    let serde_json::Value::Object(entries) = targets else {
        return Err(unreadable("expected targets to be an object of entries by deployment"));
    };
    let mut fleet = Fleet::default();
    for (name, entry) in entries {
        let mut entry = entry.clone();
        let serde_json::Value::Object(fields) = &mut entry else {
            return Err(unreadable(format!("targets.{name}: expected an object")));
        };
        fields.insert("version".into(), VERSION.into());
        let memory: Memory = serde_json::from_value(entry)
            .map_err(|e| unreadable(format!("targets.{name}: expected the fields of a state document: {e}")))?;
        check(&memory).map_err(|why| unreadable(format!("targets.{name}: {why}")))?;
        if memory.deployment.as_deref().is_some_and(|d| d != name) {
            return Err(unreadable(format!(
                "targets.{name}: it names deployment {:?}",
                memory.deployment
            )));
        }
        fleet.targets.insert(
            name.clone(),
            Memory {
                deployment: Some(name.clone()),
                ..memory
            },
        );
    }
    Ok(fleet)
}

/// The fleet document as it is written: pretty JSON, each entry without `version`.
pub fn render_fleet(fleet: &Fleet) -> String {
    let targets: serde_json::Map<String, serde_json::Value> = fleet
        .targets
        .iter()
        .map(|(name, memory)| {
            let mut entry = serde_json::to_value(memory).unwrap_or_default();
            if let serde_json::Value::Object(fields) = &mut entry {
                fields.remove("version");
            }
            (name.clone(), entry)
        })
        .collect();
    let document = serde_json::json!({"version": VERSION, "targets": targets});
    // Serializing plain values of finite numbers and strings cannot fail.
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// The version-1 document (SPEC §11 before its revision), read to be upgraded.
mod v1 {
    use crate::plan::Role;
    use crate::report::Counters;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Memory {
        #[serde(default)]
        fingerprint: Option<String>,
        #[serde(default)]
        actions: Vec<Action>,
        #[serde(default)]
        streak: u32,
        #[serde(default)]
        hold_until: Option<i64>,
        #[serde(default)]
        counters: Counters,
    }

    #[derive(Deserialize)]
    struct Action {
        at: i64,
        fingerprint: String,
        spread: f64,
        mean: f64,
        removed: Vec<Removed>,
        #[serde(default)]
        probe: bool,
        #[serde(default)]
        evaluation: Option<Evaluation>,
        #[serde(default)]
        superseded: bool,
    }

    #[derive(Deserialize)]
    struct Removed {
        name: String,
        role: Role,
        cpu: f64,
    }

    #[derive(Deserialize)]
    struct Evaluation {
        at: i64,
        spread: f64,
        ratio: f64,
        effective: bool,
        #[serde(default)]
        hot_spot: Option<super::HotSpot>,
    }

    impl Memory {
        /// Version 2 of the same memory. Version 1 kept no pod count, so an action
        /// still pending is dropped as incomplete by the next judgement.
        pub fn upgrade(self) -> super::Memory {
            let _ = self.fingerprint;
            super::Memory {
                streak: self.streak,
                hold_until: self.hold_until,
                counters: self.counters,
                actions: self
                    .actions
                    .into_iter()
                    .map(|a| super::Action {
                        at: a.at,
                        spread: Some(a.spread),
                        mean: Some(a.mean),
                        n: None,
                        fingerprint: Some(a.fingerprint),
                        settled: true,
                        probe: a.probe,
                        pods: a
                            .removed
                            .into_iter()
                            .map(|r| super::ActionPod {
                                name: r.name,
                                uid: String::new(),
                                role: r.role,
                                result: super::PodResult::Removed,
                                cpu: Some(r.cpu),
                            })
                            .collect(),
                        partition: None,
                        evaluation: a.evaluation.map(|e| super::Evaluation {
                            at: e.at,
                            spread: e.spread,
                            ratio: e.ratio,
                            verdict: if e.effective {
                                super::Verdict::Effective
                            } else {
                                super::Verdict::Ineffective
                            },
                            hot_spot: e.hot_spot,
                        }),
                        dropped: a.superseded.then_some(super::Dropped::Rollout),
                    })
                    .collect(),
                ..super::Memory::default()
            }
        }
    }
}

/// The memory as `plan` shows it (text, and `memory` in `--output json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub breaker: Breaker,
    pub streak: u32,
    pub max_ineffective: u32,
    /// Another run's lease that may still be acting (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<i64>,
    /// The last action was dropped by this judgement, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
    /// Oldest first, each with its evaluation when it has one.
    pub actions: Vec<Action>,
}

impl View {
    pub fn of(judgement: &Judgement, settings: &Settings) -> View {
        View {
            breaker: judgement.breaker,
            streak: judgement.next.streak,
            max_ineffective: settings.max_ineffective,
            in_progress: judgement.in_progress,
            dropped: judgement.dropped,
            actions: judgement.next.actions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Inputs, Pod, Samples};

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;
    const TEMPLATE: &str = "0123456789abcdef";

    fn settings() -> Settings {
        Settings {
            min_improvement: 0.25,
            max_ineffective: 3,
            backoff_secs: 3600,
            lease_secs: 600,
        }
    }

    fn pod(name: &str) -> Pod {
        Pod {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            node: None,
            phase: "Running".into(),
            ready: true,
            terminating: false,
            created: Some(NOW - 10 * HOUR),
            cpu_request: Some(1.0),
            cpu_limit: None,
        }
    }

    /// The plan for pods named by `cpus`' keys, at `now`.
    fn plan_of(cpus: &[(&str, f64)], now: i64) -> Plan {
        plan_with(cpus.iter().map(|(n, _)| pod(n)).collect(), cpus, None, now)
    }

    /// The plan for `pods` burning `cpus`, whose partitions are `partitions`.
    fn plan_with(pods: Vec<Pod>, cpus: &[(&str, f64)], partitions: Option<crate::partition::Answer>, now: i64) -> Plan {
        let samples: Samples = cpus.iter().map(|(n, c)| (*n, *c)).collect();
        crate::plan::decide(Inputs {
            pods,
            samples: &samples,
            rollout: None,
            now,
            settings: &crate::plan::Settings {
                window_secs: 300,
                threshold: 0.3,
                min_pods: 3,
                stabilization_secs: 600,
            },
            container: "c",
            namespace: "ns",
            ignored: 0,
            selector: None,
            leased: None,
            partitions,
        })
        .expect("a plan")
    }

    /// A hot spot that moves: the hottest pod burns 1.9 whatever is evicted.
    fn skewed(generation: usize) -> Vec<(String, f64)> {
        let mut pods: Vec<(String, f64)> = (0..4).map(|i| (format!("g{generation}-{i}"), 1.0)).collect();
        pods[0].1 = 1.9;
        pods[3].1 = 0.1;
        pods
    }

    fn balanced() -> Vec<(String, f64)> {
        (0..4).map(|i| (format!("b{i}"), 1.0)).collect()
    }

    fn borrowed(pods: &[(String, f64)]) -> Vec<(&str, f64)> {
        pods.iter().map(|(n, c)| (n.as_str(), *c)).collect()
    }

    /// Every removal of the plan answered 2xx.
    fn all_removed(plan: &Plan) -> Vec<(Removal, Answer)> {
        plan.removals().iter().map(|r| (r.clone(), Answer::Removed)).collect()
    }

    /// One run through the protocol: judge, apply, lease, act (every removal
    /// succeeds), settle.
    fn run(memory: &Memory, cpus: &[(String, f64)], now: i64) -> (Judgement, Plan, Memory) {
        let plan = plan_of(&borrowed(cpus), now);
        let judgement = judge(memory, &plan, TEMPLATE, &settings());
        let plan = judgement.apply(plan);
        let answers = all_removed(&plan);
        let next = judgement.settle(&plan, &answers);
        (judgement, plan, next)
    }

    /// A memory whose one action, taken on `n` pods at spread `before`, awaits its
    /// evaluation.
    fn pending(before: f64, n: u64) -> Memory {
        Memory {
            actions: vec![Action {
                at: NOW - HOUR,
                spread: Some(before),
                mean: Some(1.0),
                n: Some(n),
                fingerprint: Some(TEMPLATE.into()),
                settled: true,
                probe: false,
                pods: vec![ActionPod {
                    name: "gone".into(),
                    uid: "uid-gone".into(),
                    role: Role::HighestCpu,
                    result: PodResult::Removed,
                    cpu: Some(2.0),
                }],
                partition: None,
                evaluation: None,
                dropped: None,
            }],
            ..Memory::default()
        }
    }

    /// Eight pods whose spread is `spread` (mean 1): four at 1 − s, four at 1 + s.
    fn spread_of(spread: f64) -> Vec<(String, f64)> {
        (0..8)
            .map(|i| (format!("s{i}"), if i % 2 == 0 { 1.0 - spread } else { 1.0 + spread }))
            .collect()
    }

    fn verdict(memory: &Memory, now: &[(String, f64)]) -> Verdict {
        let plan = plan_of(&borrowed(now), NOW);
        judge(memory, &plan, TEMPLATE, &settings())
            .evaluation
            .expect("evaluated")
            .verdict
    }

    #[test]
    fn an_action_that_lowers_the_spread_is_effective() {
        let (j, plan, memory) = run(&Memory::default(), &skewed(0), NOW);
        assert_eq!((j.evaluation, j.breaker), (None, Breaker::Closed));
        assert_eq!(plan.removals().len(), 1, "4 pods, min 3: the hottest only");
        assert_eq!(memory.actions.len(), 1);
        let action = &memory.actions[0];
        assert!(action.settled);
        assert_eq!(action.n, Some(4));
        assert_eq!(action.pods[0].uid, "uid-g0-0");
        assert_eq!(action.pods[0].result, PodResult::Removed);
        let (j, plan, memory) = run(&memory, &balanced(), NOW + 900);
        let e = j.evaluation.expect("the first ungated run evaluates");
        assert!(
            e.verdict == Verdict::Effective && e.spread < 0.01 && e.ratio < 0.01,
            "{e:?}"
        );
        assert_eq!((memory.streak, j.breaker), (0, Breaker::Closed));
        assert!(matches!(plan.decision, Decision::Hold(Hold::Balanced { .. })));
        assert_eq!(memory.actions[0].evaluation, Some(e));
    }

    #[test]
    fn ineffective_actions_open_the_breaker_in_the_run_that_counts_the_last_one() {
        let mut memory = Memory::default();
        let mut now = NOW;
        for generation in 0..3 {
            let (j, plan, next) = run(&memory, &skewed(generation), now);
            assert_eq!(j.breaker, Breaker::Closed, "generation {generation}");
            assert!(!j.opened);
            assert_eq!(plan.removals().len(), 1);
            memory = next;
            now += 900;
        }
        assert_eq!(memory.streak, 2);
        let (j, plan, memory) = run(&memory, &skewed(3), now);
        let e = j.evaluation.clone().expect("evaluated");
        assert!(
            e.verdict == Verdict::Ineffective && (e.ratio - 1.0).abs() < 1e-9,
            "{e:?}"
        );
        assert_eq!(memory.streak, 3);
        assert_eq!(j.breaker, Breaker::Open { until: now + HOUR });
        assert!(j.opened, "the run that opens it says so (a Warning Event)");
        let Decision::Hold(Hold::Ineffective { until, spreads }) = &plan.decision else {
            panic!("{:?}", plan.decision)
        };
        assert_eq!((*until, spreads.len()), (now + HOUR, 3));
        assert!(
            plan.pods.iter().all(|v| v.role.is_none()),
            "no pod is marked for removal"
        );
        assert_eq!(memory.actions.len(), 3, "a held run records no action");
        let moved = e.hot_spot.expect("the hot spot moved");
        assert_eq!((moved.from.as_str(), moved.to.as_str()), ("g2-0", "g3-0"));
        let (j, _, _) = run(&memory, &skewed(4), now + 300);
        assert!(!j.opened, "held runs do not say it again");
    }

    #[test]
    fn the_hold_doubles_with_each_ineffective_action_and_stops_at_a_day() {
        let s = settings();
        let holds: Vec<u64> = (3..=10).map(|streak| hold_secs(streak, &s)).collect();
        assert_eq!(holds, [3600, 7200, 14400, 28800, 57600, 86400, 86400, 86400]);
        assert_eq!(hold_secs(u32::MAX, &s), 86400, "no overflow");
    }

    #[test]
    fn after_the_hold_a_probe_closes_the_breaker_or_reopens_it_for_twice_as_long() {
        let held = Memory {
            streak: 3,
            hold_until: Some(NOW),
            ..Memory::default()
        };
        let (j, plan, memory) = run(&held, &skewed(0), NOW - 1);
        assert_eq!(j.breaker, Breaker::Open { until: NOW });
        assert!(plan.removals().is_empty());
        let (j, plan, memory) = run(&memory, &skewed(0), NOW);
        assert_eq!(j.breaker, Breaker::Probe, "the hold is over");
        assert_eq!(plan.removals().len(), 1);
        assert!(memory.actions[0].probe);
        // The probe did not help: held again, for twice as long.
        let (j, _, again) = run(&memory, &skewed(1), NOW + 900);
        assert_eq!(
            (again.streak, j.breaker, j.opened),
            (
                4,
                Breaker::Open {
                    until: NOW + 900 + 2 * HOUR
                },
                true
            )
        );
        // The probe helped: closed.
        let (j, _, closed) = run(&memory, &balanced(), NOW + 900);
        assert_eq!(
            (closed.streak, closed.hold_until, j.breaker),
            (0, None, Breaker::Closed)
        );
    }

    #[test]
    fn a_partial_probe_opens_no_new_hold_and_the_next_action_is_a_probe_again() {
        let mut memory = pending(0.5, 8);
        memory.streak = 3;
        memory.hold_until = Some(NOW - HOUR);
        memory.actions[0].probe = true;
        // 0.5 → 0.42: ratio 0.84, between 1 − 0.25 and 1 − 1/8.
        let plan = plan_of(&borrowed(&spread_of(0.42)), NOW);
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        assert_eq!(j.evaluation.as_ref().map(|e| e.verdict), Some(Verdict::Partial));
        assert_eq!((j.next.streak, j.next.hold_until), (3, Some(NOW - HOUR)));
        assert_eq!((j.breaker, j.opened), (Breaker::Probe, false));
        let plan = j.apply(plan);
        assert_eq!(plan.removals().len(), 2, "the next action may follow");
        assert!(j.lease(&plan).expect("a lease").actions[1].probe);
    }

    #[test]
    fn the_verdict_at_its_boundaries() {
        let s = settings();
        // Exactly 1 − MIN_IMPROVEMENT: effective; just above it, and above 1 − 1/N
        // (N = 4 gives 0.75 too): ineffective.
        assert_eq!(verdict(&pending(0.8, 4), &spread_of(0.6)), Verdict::Effective);
        assert_eq!(verdict(&pending(0.8, 4), &spread_of(0.6001)), Verdict::Ineffective);
        // N = 8: 1 − 1/N = 0.875. Exactly that: partial; just above: ineffective.
        assert_eq!(verdict(&pending(0.8, 8), &spread_of(0.7)), Verdict::Partial);
        assert_eq!(verdict(&pending(0.8, 8), &spread_of(0.7001)), Verdict::Ineffective);
        assert_eq!(verdict(&pending(0.8, 8), &spread_of(0.6001)), Verdict::Partial);
        // Reaching the threshold counts only with a real step (ratio <= 1 − 1/N).
        assert_eq!(verdict(&pending(0.32, 8), &spread_of(0.28)), Verdict::Effective);
        assert_eq!(verdict(&pending(0.31, 8), &spread_of(0.29)), Verdict::Ineffective);
        assert_eq!(verdict(&pending(0.31, 100), &spread_of(0.29)), Verdict::Effective);
        // A spread of 0 before: never measured (dropped), never a division by zero.
        let plan = plan_of(&borrowed(&spread_of(0.5)), NOW);
        let j = judge(&pending(0.0, 8), &plan, TEMPLATE, &s);
        assert_eq!((j.evaluation, j.dropped), (None, Some(Dropped::Incomplete)));
    }

    #[test]
    fn the_smallest_positive_spread_before_gives_a_ratio_that_reads_back() {
        let plan = plan_of(&borrowed(&spread_of(0.5)), NOW);
        let j = judge(&pending(5e-324, 8), &plan, TEMPLATE, &settings());
        let e = j.evaluation.clone().expect("evaluated");
        assert!(e.ratio.is_finite() && e.verdict == Verdict::Ineffective, "{e:?}");
        let text = render(&j.next);
        assert_eq!(parse(Some(&text), None), Ok(j.next.clone()), "{text}");
        // And a spread now of 0 is as effective as it gets.
        let flat = plan_of(&borrowed(&balanced()), NOW);
        let j = judge(&pending(5e-324, 8), &flat, TEMPLATE, &settings());
        assert_eq!(j.evaluation.map(|e| e.verdict), Some(Verdict::Effective));
    }

    #[test]
    fn the_hot_spot_moved_only_when_the_new_hottest_burns_four_fifths() {
        // The removed hottest burned 2.0 cores.
        for (hottest_now, moved) in [(1.6, true), (1.59, false)] {
            let mut cpus = spread_of(0.5);
            cpus[1].1 = hottest_now;
            let plan = plan_of(&borrowed(&cpus), NOW);
            let e = judge(&pending(0.9, 8), &plan, TEMPLATE, &settings())
                .evaluation
                .expect("evaluated");
            assert_eq!(e.hot_spot.is_some(), moved, "{hottest_now}");
        }
    }

    /// A plan of pods `cpus` whose partitions are `owned` (pod, partition, load).
    fn plan_owning(cpus: &[(&str, f64)], owned: &[(&str, &str, f64)], now: i64) -> Plan {
        let answer = crate::partition::Answer::new(owned.iter().copied()).expect("an answer");
        plan_with(cpus.iter().map(|(n, _)| pod(n)).collect(), cpus, Some(answer), now)
    }

    /// (pod, partition, load) of an answer.
    type Owned = Vec<(&'static str, &'static str, f64)>;

    /// Pods at 0.01 cores plus the load of the partitions each owns: t/hot at 0.9
    /// cores, t/0 … t/8 at 0.3.
    fn owning(by_pod: &[(&'static str, &[&'static str])]) -> (Vec<(&'static str, f64)>, Owned) {
        let load = |p: &str| if p == "t/hot" { 0.9 } else { 0.3 };
        let cpus = by_pod
            .iter()
            .map(|(pod, parts)| (*pod, 0.01 + parts.iter().map(|p| load(p)).sum::<f64>()))
            .collect();
        let owned = by_pod
            .iter()
            .flat_map(|(pod, parts)| parts.iter().map(move |p| (*pod, *p, load(p))))
            .collect();
        (cpus, owned)
    }

    #[test]
    fn with_the_partition_signal_the_hot_spot_moved_only_with_its_partition() {
        // Fixable (the best split is within the threshold), and a holds t/hot.
        let (cpus, owned) = owning(&[
            ("a", &["t/hot", "t/0", "t/1"]),
            ("b", &["t/2", "t/3"]),
            ("c", &["t/4", "t/5"]),
            ("d", &["t/6"]),
            ("e", &["t/7"]),
            ("f", &["t/8"]),
        ]);
        let before = plan_owning(&cpus, &owned, NOW - HOUR);
        let j = judge(&Memory::default(), &before, TEMPLATE, &settings());
        assert_eq!(j.partition.as_deref(), Some("t/hot"));
        let before = j.apply(before);
        assert_eq!(before.removals()[0].name, "a", "{:?}", before.decision);
        let leased = j.settle(&before, &all_removed(&before));
        assert_eq!(leased.actions[0].partition.as_deref(), Some("t/hot"));
        // Now c holds t/hot and is the hottest: the hot spot moved, with its partition.
        let (cpus, owned) = owning(&[
            ("b", &["t/2", "t/3"]),
            ("c", &["t/hot", "t/4", "t/5"]),
            ("e", &["t/7", "t/0"]),
            ("f", &["t/8", "t/1"]),
            ("g", &["t/6"]),
            ("h", &[]),
        ]);
        let e = judge(&leased, &plan_owning(&cpus, &owned, NOW), TEMPLATE, &settings())
            .evaluation
            .expect("evaluated");
        let moved = e.hot_spot.expect("moved");
        assert_eq!((moved.to.as_str(), moved.partition.as_deref()), ("c", Some("t/hot")));
        assert!(moved.to_string().contains("with partition t/hot"));
        // The hottest burns as much but t/hot is on another pod: a runner-up.
        let (cpus, owned) = owning(&[
            ("b", &["t/hot", "t/2"]),
            ("c", &["t/0", "t/1", "t/4", "t/5", "t/6"]),
            ("e", &["t/7"]),
            ("f", &["t/8"]),
            ("g", &["t/3"]),
            ("h", &[]),
        ]);
        let now = plan_owning(&cpus, &owned, NOW);
        assert_eq!(now.pods.hottest().map(|(n, _)| n), Some("c"));
        let e = judge(&leased, &now, TEMPLATE, &settings())
            .evaluation
            .expect("evaluated");
        assert_eq!(e.hot_spot, None, "c burns as much, but t/hot is on b");
        // Without the signal now, the CPU alone decides, as before.
        let e = judge(&leased, &plan_of(&cpus, NOW), TEMPLATE, &settings())
            .evaluation
            .expect("evaluated");
        assert_eq!(e.hot_spot.map(|h| h.to), Some("c".to_string()));
    }

    #[test]
    fn an_unfixable_imbalance_is_said_once_until_the_next_action() {
        // Eight pods, one partition at 1.25 and fifteen at 0.25 (SPEC §12's example).
        let mut cpus = Vec::new();
        let mut owned = Vec::new();
        let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
        let keys = [
            ["t/hot", "t/0a"],
            ["t/1a", "t/1b"],
            ["t/2a", "t/2b"],
            ["t/3a", "t/3b"],
            ["t/4a", "t/4b"],
            ["t/5a", "t/5b"],
            ["t/6a", "t/6b"],
            ["t/7a", "t/7b"],
        ];
        for (i, n) in names.iter().enumerate() {
            let hot = i == 0;
            let load = if hot { 1.5 } else { 0.5 };
            cpus.push((*n, 0.01 + load));
            owned.push((*n, keys[i][0], if hot { 1.25 } else { 0.25 }));
            owned.push((*n, keys[i][1], 0.25));
        }
        let plan = plan_owning(&cpus, &owned, NOW);
        assert!(
            matches!(plan.decision, Decision::Hold(Hold::Unfixable { .. })),
            "{:?}",
            plan.decision
        );
        let j = judge(&Memory::default(), &plan, TEMPLATE, &settings());
        assert!(j.warn_unfixable);
        let j = judge(&j.next, &plan_owning(&cpus, &owned, NOW + 300), TEMPLATE, &settings());
        assert!(!j.warn_unfixable, "said once");
        // An action since: it may be said again.
        let (_, _, acted) = run(&j.next, &skewed(0), NOW + 600);
        assert!(!acted.unfixable_warned);
    }

    #[test]
    fn a_rollout_drops_the_pending_action_and_keeps_the_streak_and_the_hold() {
        let mut memory = pending(0.9, 4);
        memory.streak = 2;
        memory.hold_until = Some(NOW - HOUR);
        let plan = plan_of(&borrowed(&skewed(1)), NOW);
        let j = judge(&memory, &plan, "fedcba9876543210", &settings());
        assert_eq!((j.evaluation, j.dropped), (None, Some(Dropped::Rollout)));
        assert_eq!((j.next.streak, j.next.hold_until), (2, Some(NOW - HOUR)));
        assert_eq!(j.next.actions[0].dropped, Some(Dropped::Rollout));
        assert_eq!(j.breaker, Breaker::Closed);
    }

    #[test]
    fn a_lowered_setting_opens_the_breaker_for_the_backoff() {
        let memory = Memory {
            streak: 4,
            ..Memory::default()
        };
        let plan = plan_of(&borrowed(&skewed(0)), NOW);
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        assert_eq!((j.breaker, j.opened), (Breaker::Open { until: NOW + HOUR }, true));
        assert!(j.apply(plan).removals().is_empty());
    }

    #[test]
    fn a_gated_or_meaningless_run_does_not_evaluate() {
        let (_, _, memory) = run(&Memory::default(), &skewed(0), NOW);
        let mut plan = plan_of(&borrowed(&skewed(1)), NOW + 300);
        plan.decision = Decision::Hold(Hold::Stabilizing {
            because: vec!["1 pod terminating".into()],
        });
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        assert_eq!(j.evaluation, None);
        assert!(j.next.actions[0].pending(), "still pending");
        let two = plan_of(&[("a", 1.9), ("b", 0.1)], NOW + 900);
        let j = judge(&memory, &two, TEMPLATE, &settings());
        assert_eq!(j.evaluation, None, "fewer eligible pods than MIN_PODS_REQUIRED");
        let idle = plan_of(&[("a", 0.0), ("b", 0.0001), ("c", 0.0)], NOW + 900);
        assert_eq!(judge(&memory, &idle, TEMPLATE, &settings()).evaluation, None);
    }

    #[test]
    fn an_open_breaker_holds_what_comes_after_balanced_only() {
        let open = Memory {
            streak: 3,
            hold_until: Some(NOW + HOUR),
            ..Memory::default()
        };
        let plan = plan_of(&borrowed(&balanced()), NOW);
        let j = judge(&open, &plan, TEMPLATE, &settings());
        assert!(matches!(j.apply(plan).decision, Decision::Hold(Hold::Balanced { .. })));
        let three = plan_of(&[("a", 1.9), ("b", 1.0), ("c", 0.1)], NOW);
        assert!(matches!(three.decision, Decision::Hold(Hold::MinPods { .. })));
        let j = judge(&open, &three, TEMPLATE, &settings());
        assert!(
            matches!(j.apply(three).decision, Decision::Hold(Hold::Ineffective { .. })),
            "not min_pods"
        );
    }

    #[test]
    fn a_lease_blocks_other_runs_until_its_window_ends() {
        let plan = plan_of(&borrowed(&skewed(0)), NOW);
        let j = judge(&Memory::default(), &plan, TEMPLATE, &settings());
        let plan = j.apply(plan);
        let leased = j.lease(&plan).expect("a lease");
        let action = leased.actions.last().expect("the intended action");
        assert!(!action.settled);
        assert_eq!(action.pods[0].result, PodResult::Intended);
        assert_eq!(action.pods[0].uid, "uid-g0-0");
        let s = settings();
        for (now, blocked) in [
            (NOW, true),
            (NOW + 599, true),
            (NOW - 599, true),
            (NOW + 600, false),
            (NOW - 600, false),
        ] {
            assert_eq!(in_progress(&leased, now, &s).is_some(), blocked, "{}", now - NOW);
        }
        // A second run inside the window judges nothing and changes nothing.
        let other = plan_of(&borrowed(&skewed(0)), NOW + 60);
        let j2 = judge(&leased, &other, TEMPLATE, &s);
        assert_eq!(j2.in_progress, Some(NOW));
        assert_eq!((j2.evaluation, j2.next.clone()), (None, leased.clone()));
        // The window is at least two minutes, whatever the stabilization window.
        let short = Settings { lease_secs: 0, ..s };
        assert!(in_progress(&leased, NOW + 119, &short).is_some());
        assert!(in_progress(&leased, NOW + 120, &short).is_none());
        // A settled action is never in progress.
        assert!(in_progress(&j.settle(&plan, &all_removed(&plan)), NOW, &s).is_none());
    }

    #[test]
    fn a_dead_runs_lease_is_settled_from_the_cluster() {
        // The run evicted the hottest of five and died before its end-of-run write.
        let cpus = [("a", 2.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 0.1)];
        let plan = plan_of(&cpus, NOW);
        let j = judge(&Memory::default(), &plan, TEMPLATE, &settings());
        let plan = j.apply(plan);
        assert_eq!(plan.removals().len(), 2);
        let leased = j.lease(&plan).expect("a lease");
        // Later: a is gone (its replacement f is listed), e is still there.
        let later = plan_of(
            &[("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 0.1), ("f", 1.9)],
            NOW + 1200,
        );
        let j = judge(&leased, &later, TEMPLATE, &settings());
        assert_eq!(
            j.resolved,
            vec![
                ("a".to_string(), PodResult::Removed),
                ("e".to_string(), PodResult::Intended)
            ]
        );
        let action = &j.next.actions[0];
        assert!(action.settled);
        assert!(j.evaluation.is_some(), "evaluated once settled: a pod went");
        // A terminating pod counts as removed too; a lease that removed nothing is
        // dropped, never counted in the streak.
        let mut e_terminating = pod("e");
        e_terminating.terminating = true;
        let mut gated_pods: Vec<Pod> = ["a", "b", "c", "d"].into_iter().map(pod).collect();
        gated_pods.push(e_terminating);
        let gated = plan_with(gated_pods, &cpus, None, NOW + 1200);
        let j = judge(&leased, &gated, TEMPLATE, &settings());
        assert_eq!(
            j.resolved,
            vec![
                ("a".to_string(), PodResult::Intended),
                ("e".to_string(), PodResult::Removed)
            ]
        );
        let untouched = plan_of(&cpus, NOW + 1200);
        let j = judge(&leased, &untouched, TEMPLATE, &settings());
        assert_eq!((j.dropped, j.next.streak), (Some(Dropped::NothingRemoved), 0));
    }

    #[test]
    fn an_unknown_answer_is_settled_by_the_next_run() {
        let plan = plan_of(&borrowed(&skewed(0)), NOW);
        let j = judge(&Memory::default(), &plan, TEMPLATE, &settings());
        let plan = j.apply(plan);
        let timed_out: Vec<(Removal, Answer)> = plan.removals().iter().map(|r| (r.clone(), Answer::Unknown)).collect();
        let recorded = j.settle(&plan, &timed_out);
        assert_eq!(
            recorded.actions.len(),
            1,
            "an unknown answer is kept: it may have happened"
        );
        assert_eq!(recorded.actions[0].pods[0].result, PodResult::Unknown);
        // g0-0 is gone: the eviction had happened.
        let later = plan_of(&[("g0-1", 1.0), ("g0-2", 1.0), ("g0-3", 0.1), ("n", 1.0)], NOW + 900);
        let j = judge(&recorded, &later, TEMPLATE, &settings());
        assert_eq!(j.resolved, vec![("g0-0".to_string(), PodResult::Removed)]);
        assert!(j.evaluation.is_some());
    }

    #[test]
    fn refused_and_dry_run_actions_are_not_recorded() {
        let mut memory = Memory::default();
        for generation in 0..MAX_ACTIONS {
            memory = run(&memory, &skewed(generation), NOW + 900 * generation as i64).2;
            memory.streak = 0;
            memory.hold_until = None;
        }
        assert_eq!(memory.actions.len(), MAX_ACTIONS);
        let plan = plan_of(&borrowed(&skewed(20)), NOW + HOUR * 10);
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        let plan = j.apply(plan);
        let refused: Vec<(Removal, Answer)> = plan
            .removals()
            .iter()
            .map(|r| (r.clone(), Answer::Refused(Refusal::DisruptionBudget)))
            .collect();
        let next = j.settle(&plan, &refused);
        assert_eq!(next.actions.first(), j.next.actions.first(), "the oldest action stays");
        assert_eq!(next.actions.len(), MAX_ACTIONS);
        assert_eq!(j.settle(&plan, &[]), j.next, "a dry run records no action");
    }

    #[test]
    fn the_memory_keeps_the_last_ten_actions() {
        let mut memory = Memory::default();
        for generation in 0..12 {
            memory = run(&memory, &skewed(generation), NOW + 900 * generation as i64).2;
            memory.hold_until = None;
            memory.streak = 0;
        }
        assert_eq!(memory.actions.len(), MAX_ACTIONS);
        assert_eq!(memory.actions[0].pods[0].name, "g2-0");
    }

    #[test]
    fn the_document_reads_back_and_refuses_what_it_cannot_read() {
        assert_eq!(parse(None, None), Ok(Memory::default()));
        assert_eq!(parse(Some("  "), None), Ok(Memory::default()));
        let (_, _, memory) = run(&Memory::default(), &skewed(0), NOW);
        assert_eq!(parse(Some(&render(&memory)), None), Ok(memory));
        assert!(parse(Some(r#"{"version": 3}"#), None).unwrap_err().contains("newer"));
        let action = r#"{"at":1,"spread":0.5,"mean":1,"n":4,"fingerprint":"f","settled":true,"pods":[{"name":"a","uid":"u","role":"highest_cpu","result":"removed","cpu":1}]}"#;
        for (bad, why) in [
            ("[]", "expected a JSON object"),
            ("{}", "expected version 2"),
            (r#"{"version": "2"}"#, "expected version 2"),
            (r#"{"version": 0}"#, "expected version 2"),
            (r#"{"version": 2, "streak": -1}"#, "invalid value"),
            (r#"{"version": 2, "streak": 1.5}"#, "invalid type"),
            (r#"{"version": 2, "streak": 4294967295}"#, "streak <= 1000000000"),
            (r#"{"version": 2, "actions": {}}"#, "invalid type"),
            (&action.replace("0.5", "-0.5"), "actions[0].spread"),
            (&action.replace("\"n\":4", "\"n\":4.5"), "invalid type"),
            (&action.replace("\"n\":4", "\"n\":1000000001"), "actions[0].n"),
            (&action.replace("removed", "vanished"), "unknown variant"),
            (&action.replace("highest_cpu", "warmest"), "unknown variant"),
            (&action.replace("\"cpu\":1", "\"cpu\":1e999"), "number out of range"),
            (r#"{"version": 2, "counters": {"success": -1}}"#, "counter success"),
            (r#"{"version": 2, "targets": {}}"#, "other deployments"),
            ("{", "expected a JSON object"),
        ] {
            let text = if bad.starts_with("{\"at\"") {
                format!(r#"{{"version": 2, "actions": [{bad}]}}"#)
            } else {
                bad.to_string()
            };
            let e = parse(Some(&text), None).expect_err(&text);
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("remove the state.json key"), "{e}");
        }
        let eleven = format!(r#"{{"version": 2, "actions": [{}]}}"#, [action; 11].join(","));
        assert!(parse(Some(&eleven), None).unwrap_err().contains("at most 10"));
        assert_eq!(
            parse(Some(r#"{"version": 2}"#), None),
            Ok(Memory::default()),
            "every field but the version may be left out"
        );
        let theirs = r#"{"version": 2, "deployment": "other"}"#;
        assert!(
            parse(Some(theirs), Some("mine"))
                .unwrap_err()
                .contains("deployment other")
        );
        assert_eq!(
            parse(Some(r#"{"version": 2}"#), Some("mine")).map(|m| m.deployment),
            Ok(Some("mine".into()))
        );
    }

    #[test]
    fn a_version_1_document_is_read_as_ours_and_written_as_version_2() {
        let v1 = r#"{"version": 1, "fingerprint": "f", "streak": 2, "hold_until": 1800000000,
            "actions": [{"at": 5, "fingerprint": "f", "spread": 0.6, "mean": 1.0,
                "removed": [{"name": "a", "role": "highest_cpu", "cpu": 2.0}],
                "evaluation": {"at": 9, "spread": 0.6, "ratio": 1.0, "effective": false}}],
            "counters": {"success": 7}}"#;
        let memory = parse(Some(v1), Some("d")).expect("a version-1 document");
        assert_eq!((memory.version, memory.streak, memory.counters.success), (2, 2, 7.0));
        assert_eq!(memory.hold_until, Some(1_800_000_000), "the hold carries over");
        assert_eq!(memory.deployment.as_deref(), Some("d"));
        let action = &memory.actions[0];
        assert_eq!(action.pods[0].result, PodResult::Removed);
        assert_eq!(
            action.evaluation.as_ref().map(|e| e.verdict),
            Some(Verdict::Ineffective)
        );
        let text = render(&memory);
        assert!(text.contains("\"version\": 2"), "{text}");
        assert_eq!(parse(Some(&text), Some("d")), Ok(memory));
    }

    #[test]
    fn no_hold_lasts_more_than_a_day_whatever_the_document_says() {
        // Found by the fuzz target: a hand-edited hold years away, and a streak below
        // the maximum, so that no evaluation would set the hold again.
        let held = Memory {
            hold_until: Some(NOW + 100 * 24 * HOUR),
            ..Memory::default()
        };
        let (j, _, _) = run(&held, &skewed(0), NOW);
        assert_eq!(j.next.hold_until, Some(NOW + 24 * HOUR));
        assert_eq!(j.breaker, Breaker::Open { until: NOW + 24 * HOUR });
    }

    #[test]
    fn the_streak_stops_at_its_range_and_still_reads_back() {
        let mut memory = pending(0.9, 8);
        memory.streak = MAX_COUNT as u32;
        let plan = plan_of(&borrowed(&spread_of(0.9)), NOW);
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        assert_eq!(j.next.streak, MAX_COUNT as u32);
        assert!(matches!(j.breaker, Breaker::Open { .. }));
        assert_eq!(parse(Some(&render(&j.next)), None), Ok(j.next));
    }

    #[test]
    fn the_words_and_labels_are_the_documents_own() {
        for v in [Verdict::Effective, Verdict::Partial, Verdict::Ineffective] {
            assert_eq!(serde_json::to_value(v).ok(), Some(serde_json::Value::from(v.label())));
        }
        assert_eq!(Dropped::Rollout.words(), "the pod template changed since (a rollout)");
        assert!(Dropped::NothingRemoved.words().contains("no pod"));
        // An action without `settled` (written by hand) is a settled one: it blocks
        // nothing.
        let text = r#"{"version": 2, "actions": [{"at": 1, "pods": []}]}"#;
        assert!(parse(Some(text), None).expect("a document").actions[0].settled);
        // The newest fingerprint an action was taken under.
        let mut memory = pending(0.5, 4);
        assert_eq!(memory.last_fingerprint(), Some(TEMPLATE));
        memory.actions[0].fingerprint = None;
        assert_eq!(memory.last_fingerprint(), None);
        // A judged memory is of this program's version, whatever it was given.
        let old = Memory {
            version: 1,
            ..Memory::default()
        };
        let plan = plan_of(&borrowed(&balanced()), NOW);
        assert_eq!(judge(&old, &plan, TEMPLATE, &settings()).next.version, VERSION);
    }

    #[test]
    fn the_ranges_end_where_they_say() {
        let at = |streak: u64, n: u64| {
            format!(r#"{{"version": 2, "streak": {streak}, "actions": [{{"at": 1, "n": {n}, "pods": []}}]}}"#)
        };
        assert!(parse(Some(&at(MAX_COUNT, MAX_COUNT)), None).is_ok(), "10^9 is in range");
        assert!(parse(Some(&at(MAX_COUNT + 1, 1)), None).is_err());
        assert!(parse(Some(&at(1, MAX_COUNT + 1)), None).is_err());
        // An empty document is a fresh memory of the Deployment it is read for.
        assert_eq!(parse(None, Some("d")).map(|m| m.deployment), Ok(Some("d".to_string())));
        // Seven days, to the second.
        assert_eq!(FORGET_SECS, 604_800);
        // Ten actions are the most a document holds.
        let actions = |k: usize| {
            let one = r#"{"at": 1, "pods": []}"#;
            format!(r#"{{"version": 2, "actions": [{}]}}"#, vec![one; k].join(","))
        };
        assert!(parse(Some(&actions(MAX_ACTIONS)), None).is_ok());
        assert!(parse(Some(&actions(MAX_ACTIONS + 1)), None).is_err());
    }

    #[test]
    fn a_fleet_document_reads_back_adopts_a_single_one_and_refuses_what_it_cannot_read() {
        assert_eq!(parse_fleet(None), Ok(Fleet::default()));
        let mut fleet = Fleet::default();
        fleet.targets.insert(
            "a".into(),
            Memory {
                deployment: Some("a".into()),
                streak: 2,
                last_target_at: Some(NOW),
                ..pending(0.5, 4)
            },
        );
        fleet.targets.insert(
            "b".into(),
            Memory {
                deployment: Some("b".into()),
                ..Memory::default()
            },
        );
        let text = render_fleet(&fleet);
        assert!(
            text.contains("\"targets\"") && !text.contains("\"version\": 2,\n      "),
            "{text}"
        );
        let entries: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(entries["targets"]["a"].get("version"), None, "entries carry no version");
        assert_eq!(parse_fleet(Some(&text)), Ok(fleet));
        // An entry is its key's, whether it says so or not.
        let bare = parse_fleet(Some(r#"{"version": 2, "targets": {"x": {}}}"#)).expect("an entry");
        assert_eq!(bare.targets["x"].deployment.as_deref(), Some("x"));
        // A single-mode document naming its Deployment becomes that entry.
        let single = render(&Memory {
            deployment: Some("orders".into()),
            streak: 3,
            ..Memory::default()
        });
        let adopted = parse_fleet(Some(&single)).expect("adopted");
        assert_eq!(adopted.targets.keys().collect::<Vec<_>>(), ["orders"]);
        assert_eq!(adopted.targets["orders"].streak, 3);
        for (bad, why) in [
            (r#"{"version": 2, "streak": 1}"#.to_string(), "names no deployment"),
            (r#"{"version": 3, "targets": {}}"#.to_string(), "newer"),
            (
                r#"{"version": 2, "targets": []}"#.to_string(),
                "expected targets to be an object",
            ),
            (r#"{"targets": {}}"#.to_string(), "expected version 2"),
            (r#"{"version": 1, "targets": {}}"#.to_string(), "expected version 2"),
            (
                r#"{"version": 2, "targets": {"a": 7}}"#.to_string(),
                "targets.a: expected an object",
            ),
            (
                r#"{"version": 2, "targets": {"a": {"streak": -1}}}"#.to_string(),
                "targets.a",
            ),
            (
                r#"{"version": 2, "targets": {"a": {"deployment": "b"}}}"#.to_string(),
                "names deployment",
            ),
            (
                r#"{"version": 2, "targets": {"a": {"streak": 4294967295}}}"#.to_string(),
                "streak <=",
            ),
        ] {
            let e = parse_fleet(Some(&bad)).expect_err(&bad);
            assert!(e.contains(why) && e.contains("remove the state.json key"), "{bad}: {e}");
        }
    }

    #[test]
    fn in_a_fleet_the_newest_lease_in_progress_holds_every_target() {
        let leased = |at: i64| Memory {
            actions: vec![Action {
                settled: false,
                at,
                ..pending(0.5, 4).actions[0].clone()
            }],
            ..Memory::default()
        };
        let fleet = Fleet {
            targets: [
                ("a".to_string(), Memory::default()),
                ("b".to_string(), leased(NOW - 100)),
                ("c".to_string(), leased(NOW - 30)),
                ("d".to_string(), leased(NOW - 9000)),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(fleet.in_progress(NOW, &settings()), Some(NOW - 30));
        let quiet = Fleet {
            targets: [
                ("a".to_string(), Memory::default()),
                ("d".to_string(), leased(NOW - 9000)),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(quiet.in_progress(NOW, &settings()), None);
    }

    #[test]
    fn the_hold_quotes_the_ineffective_actions_of_the_streak_not_a_partial_one_between() {
        // Ineffective, partial (the streak stays), ineffective, then one to evaluate.
        let evaluated = |before: f64, after: f64, verdict: Verdict, hours: i64| Action {
            at: NOW - hours * HOUR,
            spread: Some(before),
            evaluation: Some(Evaluation {
                at: NOW - hours * HOUR + 600,
                spread: after,
                ratio: after / before,
                verdict,
                hot_spot: None,
            }),
            ..pending(before, 8).actions[0].clone()
        };
        let mut memory = pending(0.9, 8);
        memory.streak = 2;
        memory.actions.splice(
            0..0,
            [
                evaluated(0.8, 0.79, Verdict::Ineffective, 4),
                evaluated(0.7, 0.6, Verdict::Partial, 3),
                evaluated(0.6, 0.61, Verdict::Ineffective, 2),
            ],
        );
        let j = judge(
            &memory,
            &plan_of(&borrowed(&spread_of(0.9)), NOW),
            TEMPLATE,
            &settings(),
        );
        assert!(j.opened, "{:?}", j.breaker);
        let spreads = j.streak_spreads();
        assert_eq!(spreads.len(), 3, "{spreads:?}");
        assert_eq!(spreads[..2], [[0.8, 0.79], [0.6, 0.61]]);
        assert_eq!(spreads[2][0], 0.9);
        let plan = j.apply(plan_of(&borrowed(&spread_of(0.9)), NOW));
        assert!(
            matches!(&plan.decision, Decision::Hold(Hold::Ineffective { spreads: held, .. }) if *held == spreads),
            "{:?}",
            plan.decision
        );
    }

    /// An action's pods: "hot" (2.0 cores, the hottest) and "cold" (0.1, the coldest).
    fn hot_and_cold(hot: PodResult, cold: PodResult) -> Vec<ActionPod> {
        let pod = |name: &str, role, result, cpu| ActionPod {
            name: name.into(),
            uid: format!("uid-{name}"),
            role,
            result,
            cpu: Some(cpu),
        };
        vec![
            pod("hot", Role::HighestCpu, hot, 2.0),
            pod("cold", Role::LowestCpu, cold, 0.1),
        ]
    }

    #[test]
    fn a_settled_actions_unasked_pod_is_not_settled_again() {
        // The hottest's eviction got no answer and the coldest was never asked (the
        // pair rule). Both are gone now: only the hottest's answer was open.
        let mut memory = pending(0.9, 8);
        memory.actions[0].pods = hot_and_cold(PodResult::Unknown, PodResult::Intended);
        let plan = plan_of(&borrowed(&spread_of(0.5)), NOW);
        let j = judge(&memory, &plan, TEMPLATE, &settings());
        assert_eq!(j.resolved, vec![("hot".to_string(), PodResult::Removed)]);
        assert_eq!(j.next.actions[0].pods[1].result, PodResult::Intended);
    }

    #[test]
    fn without_its_hottest_removed_an_action_names_no_hot_spot() {
        // Settled from the cluster: the hottest still there, the coldest gone.
        let mut memory = pending(0.9, 8);
        memory.actions[0].pods = hot_and_cold(PodResult::Intended, PodResult::Removed);
        let mut cpus = spread_of(0.5);
        cpus[1].1 = 1.9;
        let e = judge(&memory, &plan_of(&borrowed(&cpus), NOW), TEMPLATE, &settings())
            .evaluation
            .expect("evaluated: a pod went");
        assert_eq!(e.hot_spot, None, "the coldest's CPU is no hot spot's");
    }

    #[test]
    fn a_fleet_forgets_a_former_target_after_seven_days_and_an_unstamped_entry_from_now() {
        let now = 1_800_000_000;
        let entry = |at: Option<i64>| Memory {
            last_target_at: at,
            ..Memory::default()
        };
        let mut fleet = Fleet {
            targets: [
                ("current", entry(Some(now - 30 * 24 * 3600))),
                ("recent", entry(Some(now - FORGET_SECS))),
                ("old", entry(Some(now - FORGET_SECS - 1))),
                ("adopted", entry(None)),
            ]
            .into_iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect(),
        };
        fleet.keep_recent(&["current"], now);
        let kept: Vec<(&str, Option<i64>)> = fleet
            .targets
            .iter()
            .map(|(n, m)| (n.as_str(), m.last_target_at))
            .collect();
        assert_eq!(
            kept,
            [
                ("adopted", Some(now)),
                ("current", Some(now)),
                ("recent", Some(now - FORGET_SECS))
            ]
        );
    }

    #[test]
    fn a_document_reads_back_as_the_same_numbers_once_rendered() {
        // Found by the fuzz target: serde_json's default float parser put this long
        // literal one unit in the last place away from what its rendering parses to.
        let long = "6222222222222222222222222222222222222222222222222222222220";
        let text = format!(r#"{{"version": 2, "actions": [{{"at": 1, "spread": {long}.5, "pods": []}}]}}"#);
        let first = parse(Some(&text), None).expect("a document");
        assert_eq!(parse(Some(&render(&first)), None).expect("rendered"), first);
    }
}
