//! The memory: what the rebalancer did, whether it helped, and when to stop.
//!
//! A stateless rebalancer churns forever where a pod eviction cannot help: a hot
//! partition moves with the partition to whichever pod gets it, idle consumers stay
//! idle. So every action is remembered (the `Memory` document, kept in the state
//! ConfigMap by `cycle`), and the first run after it that passes the fleet gate and
//! computes statistics measures it: `ratio = spread now / spread before`. Effective
//! actions keep the breaker closed; `MAX_INEFFECTIVE_ACTIONS` ineffective ones in a row
//! open it for `BACKOFF`, doubling with each further one (at most a day). A rollout
//! (a new pod template) starts afresh.
//!
//! `judge` is pure: the memory, this run's plan, the template fingerprint and `now` in;
//! the evaluation, the breaker and the next memory out. `apply` turns an open breaker
//! into the plan's hold. No I/O, no clock.

use crate::plan::{Decision, Hold, Plan, Role, over};
use crate::report::Counters;
use serde::{Deserialize, Serialize};

/// The version of the state document this program writes and reads.
pub const VERSION: u32 = 1;
/// The most actions the memory keeps, the newest last.
pub const MAX_ACTIONS: usize = 10;
/// The longest hold of an open breaker.
pub const MAX_HOLD_SECS: u64 = 24 * 3600;
/// The hot spot "moved" when the hottest pod after an action burns at least this share
/// of what the removed hottest pod burned.
pub const HOT_SPOT_SHARE: f64 = 0.8;

/// The state document: the `state.json` key of the state ConfigMap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `VERSION`; a document of a newer version is refused, never overwritten.
    pub version: u32,
    /// The fingerprint of the Deployment's pod template when last seen.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The last actions, oldest first, at most `MAX_ACTIONS`.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Consecutive ineffective actions.
    #[serde(default)]
    pub streak: u32,
    /// The end of the current hold (Unix seconds); `None` when the breaker never
    /// opened or was closed since.
    #[serde(default)]
    pub hold_until: Option<i64>,
    /// The metrics' counters, carried from run to run.
    #[serde(default)]
    pub counters: Counters,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            version: VERSION,
            fingerprint: None,
            actions: Vec::new(),
            streak: 0,
            hold_until: None,
            counters: Counters::default(),
        }
    }
}

/// One action: the pods removed in one run, and the fleet as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Unix seconds.
    pub at: i64,
    /// The template fingerprint the action was taken under.
    pub fingerprint: String,
    /// The spread and the mean (cores) before.
    pub spread: f64,
    pub mean: f64,
    pub removed: Vec<Removed>,
    /// Taken when a hold had ended: its verdict closes or reopens the breaker.
    #[serde(default)]
    pub probe: bool,
    /// Filled in by the run that measured it.
    #[serde(default)]
    pub evaluation: Option<Evaluation>,
    /// A rollout came before it could be measured: it never will be.
    #[serde(default)]
    pub superseded: bool,
}

impl Action {
    fn pending(&self) -> bool {
        self.evaluation.is_none() && !self.superseded
    }

    fn hottest(&self) -> Option<&Removed> {
        self.removed.iter().find(|r| r.role == Role::HighestCpu)
    }
}

/// A pod an action removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub name: String,
    pub role: Role,
    pub cpu: f64,
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
    pub effective: bool,
    /// When the hottest pod after the action is another pod burning nearly what the
    /// removed one did: the load follows a partition or a key, not a pod.
    #[serde(default)]
    pub hot_spot: Option<HotSpot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSpot {
    pub from: String,
    pub from_cpu: f64,
    pub to: String,
    pub to_cpu: f64,
}

impl std::fmt::Display for HotSpot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hot spot moved from {} ({:.3} cores) to {} ({:.3} cores): the load follows a partition or a key, not a pod",
            self.from, self.from_cpu, self.to, self.to_cpu
        )
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
    /// The evaluation this run made, of the last action, if it made one.
    pub evaluation: Option<Evaluation>,
    /// The last action was not measured and never will be: a rollout came first.
    pub rollout: bool,
    pub breaker: Breaker,
    /// The memory after this run's evaluation, before any action of its own.
    pub next: Memory,
}

/// Evaluates the last action against this run's plan and runs the breaker. Pure.
pub fn judge(
    memory: &Memory,
    plan: &Plan,
    fingerprint: &str,
    now: i64,
    threshold: f64,
    settings: &Settings,
) -> Judgement {
    let mut next = memory.clone();
    let rollout = next.fingerprint.as_deref().is_some_and(|f| f != fingerprint);
    if rollout {
        // A new template: what was learnt of the old one does not hold.
        next.streak = 0;
        next.hold_until = None;
        for action in next.actions.iter_mut().filter(|a| a.pending()) {
            action.superseded = true;
        }
    }
    next.fingerprint = Some(fingerprint.to_string());
    // No hold lasts more than a day, whatever a hand-edited document says.
    let longest = now.saturating_add(MAX_HOLD_SECS as i64);
    next.hold_until = next.hold_until.map(|until| until.min(longest));
    let gated = matches!(plan.decision, Decision::Hold(Hold::Stabilizing { .. }));
    let evaluation = match (next.actions.last_mut(), plan.stats) {
        (Some(action), Some(stats)) if !gated && action.pending() && action.fingerprint == fingerprint => {
            let evaluation = evaluate(action, stats.spread, plan, now, threshold, settings);
            action.evaluation = Some(evaluation.clone());
            Some(evaluation)
        }
        _ => None,
    };
    if let Some(e) = &evaluation {
        if e.effective {
            next.streak = 0;
            next.hold_until = None;
        } else {
            next.streak += 1;
            if next.streak >= settings.max_ineffective {
                next.hold_until = Some(now.saturating_add(hold_secs(next.streak, settings) as i64));
            }
        }
    }
    let breaker = match next.hold_until {
        Some(until) if until > now => Breaker::Open { until },
        _ if next.streak >= settings.max_ineffective => Breaker::Probe,
        _ => Breaker::Closed,
    };
    Judgement {
        evaluation,
        rollout: rollout && memory.actions.last().is_some_and(Action::pending),
        breaker,
        next,
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

fn evaluate(action: &Action, spread: f64, plan: &Plan, now: i64, threshold: f64, settings: &Settings) -> Evaluation {
    let ratio = if action.spread > 0.0 {
        spread / action.spread
    } else {
        1.0
    };
    let effective = !over(spread, threshold) || ratio <= 1.0 - settings.min_improvement;
    let hot_spot = match (action.hottest(), plan.pods.hottest()) {
        (Some(from), Some((to, to_cpu))) if to != from.name && to_cpu >= HOT_SPOT_SHARE * from.cpu => Some(HotSpot {
            from: from.name.clone(),
            from_cpu: from.cpu,
            to: to.to_string(),
            to_cpu,
        }),
        _ => None,
    };
    Evaluation {
        at: now,
        spread,
        ratio,
        effective,
        hot_spot,
    }
}

/// The plan as the breaker allows it: an open breaker holds a plan that would remove
/// pods or that only the budget held (it comes before the budget, after "balanced").
pub fn apply(mut plan: Plan, judgement: &Judgement) -> Plan {
    let Breaker::Open { until } = judgement.breaker else {
        return plan;
    };
    if !matches!(
        plan.decision,
        Decision::Remove { .. } | Decision::Hold(Hold::MinPods { .. })
    ) {
        return plan;
    }
    let streak = judgement.next.streak as usize;
    let spreads = judgement
        .next
        .actions
        .iter()
        .filter_map(|a| a.evaluation.as_ref().map(|e| [a.spread, e.spread]))
        .rev()
        .take(streak)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    plan.pods.clear_roles();
    plan.decision = Decision::Hold(Hold::Ineffective { until, spreads });
    plan
}

/// Remembers this run's action: the pods `removed` from the fleet `plan` describes.
pub fn remember(memory: &mut Memory, plan: &Plan, removed: &[crate::plan::Removal], probe: bool, fingerprint: &str) {
    let Some(stats) = plan.stats else { return };
    if removed.is_empty() {
        return;
    }
    memory.actions.push(Action {
        at: plan.now,
        fingerprint: fingerprint.to_string(),
        spread: stats.spread,
        mean: stats.mean,
        removed: removed
            .iter()
            .map(|r| Removed {
                name: r.name.clone(),
                role: r.role,
                cpu: r.cpu,
            })
            .collect(),
        probe,
        evaluation: None,
        superseded: false,
    });
    let extra = memory.actions.len().saturating_sub(MAX_ACTIONS);
    memory.actions.drain(..extra);
}

/// Reads a state document; an empty one (no `state.json`) is a fresh memory. `Err`
/// says why it cannot be read: not JSON of this shape, or a newer version.
pub fn parse(document: Option<&str>) -> Result<Memory, String> {
    let Some(text) = document.filter(|t| !t.trim().is_empty()) else {
        return Ok(Memory::default());
    };
    #[derive(Deserialize)]
    struct Versioned {
        version: serde_json::Value,
    }
    let versioned: Versioned =
        serde_json::from_str(text).map_err(|e| format!("expected a JSON object with a version: {e}"))?;
    match versioned.version.as_u64() {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) if v > u64::from(VERSION) => {
            return Err(format!(
                "version {v} is newer than this program's {VERSION}: upgrade pod-rebalancer (the document is left as it is)"
            ));
        }
        _ => return Err(format!("expected version {VERSION}, got {}", versioned.version)),
    }
    let memory: Memory =
        serde_json::from_str(text).map_err(|e| format!("expected the state document of version {VERSION}: {e}"))?;
    if memory.actions.len() > MAX_ACTIONS {
        return Err(format!(
            "expected at most {MAX_ACTIONS} actions, got {}",
            memory.actions.len()
        ));
    }
    Ok(memory)
}

/// The document as it is written: pretty JSON, so `kubectl get configmap -o
/// jsonpath='{.data.state\.json}'` reads well.
pub fn render(memory: &Memory) -> String {
    // Serializing plain structs of numbers, strings and vectors cannot fail.
    serde_json::to_string_pretty(memory).unwrap_or_default()
}

/// The memory as `plan` shows it (text, and `memory` in `--output json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub breaker: Breaker,
    pub streak: u32,
    pub max_ineffective: u32,
    /// The last action was not evaluated: a rollout came first.
    pub rollout: bool,
    /// Oldest first, each with its evaluation when it has one.
    pub actions: Vec<Action>,
}

impl View {
    pub fn of(judgement: &Judgement, settings: &Settings) -> View {
        View {
            breaker: judgement.breaker,
            streak: judgement.next.streak,
            max_ineffective: settings.max_ineffective,
            rollout: judgement.rollout,
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
        let samples: Samples = cpus.iter().map(|(n, c)| (*n, *c)).collect();
        crate::plan::decide(Inputs {
            pods: cpus.iter().map(|(n, _)| pod(n)).collect(),
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

    fn borrowed(pods: &[(String, f64)]) -> Vec<(&str, f64)> {
        pods.iter().map(|(n, c)| (n.as_str(), *c)).collect()
    }

    /// One run: judge, apply, and remember what the plan removes.
    fn run(memory: &Memory, cpus: &[(String, f64)], now: i64) -> (Judgement, Plan, Memory) {
        let plan = plan_of(&borrowed(cpus), now);
        let judgement = judge(memory, &plan, TEMPLATE, now, 0.3, &settings());
        let plan = apply(plan, &judgement);
        let mut next = judgement.next.clone();
        let probe = judgement.breaker == Breaker::Probe;
        remember(&mut next, &plan, plan.removals(), probe, TEMPLATE);
        (judgement, plan, next)
    }

    #[test]
    fn an_action_that_lowers_the_spread_is_effective() {
        let (j, plan, memory) = run(&Memory::default(), &skewed(0), NOW);
        assert_eq!((j.evaluation, j.breaker), (None, Breaker::Closed));
        assert_eq!(plan.removals().len(), 1, "4 pods, min 3: the hottest only");
        assert_eq!(memory.actions.len(), 1);
        let balanced: Vec<(String, f64)> = (0..4).map(|i| (format!("b{i}"), 1.0)).collect();
        let (j, plan, memory) = run(&memory, &balanced, NOW + 900);
        let e = j.evaluation.expect("the first ungated run evaluates");
        assert!(e.effective && e.spread < 0.01 && e.ratio < 0.01, "{e:?}");
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
            assert_eq!(plan.removals().len(), 1);
            memory = next;
            now += 900;
        }
        assert_eq!(memory.streak, 2);
        let (j, plan, memory) = run(&memory, &skewed(3), now);
        let e = j.evaluation.clone().expect("evaluated");
        assert!(!e.effective && (e.ratio - 1.0).abs() < 1e-9, "{e:?}");
        assert_eq!(memory.streak, 3);
        assert_eq!(j.breaker, Breaker::Open { until: now + HOUR });
        let Decision::Hold(Hold::Ineffective { until, spreads }) = &plan.decision else {
            panic!("{:?}", plan.decision)
        };
        assert_eq!((*until, spreads.len()), (now + HOUR, 3));
        assert!(
            plan.pods.iter().all(|v| v.role.is_none()),
            "no pod is marked for removal"
        );
        assert_eq!(memory.actions.len(), 3, "a held run remembers no action");
        let moved = e.hot_spot.expect("the hot spot moved");
        assert_eq!((moved.from.as_str(), moved.to.as_str()), ("g2-0", "g3-0"));
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
            actions: Vec::new(),
            fingerprint: Some(TEMPLATE.into()),
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
            (again.streak, j.breaker),
            (
                4,
                Breaker::Open {
                    until: NOW + 900 + 2 * HOUR
                }
            )
        );
        // The probe helped: closed.
        let balanced: Vec<(String, f64)> = (0..4).map(|i| (format!("b{i}"), 1.0)).collect();
        let (j, _, closed) = run(&memory, &balanced, NOW + 900);
        assert_eq!(
            (closed.streak, closed.hold_until, j.breaker),
            (0, None, Breaker::Closed)
        );
    }

    #[test]
    fn a_new_template_resets_the_breaker_and_leaves_the_last_action_unmeasured() {
        let mut memory = Memory::default();
        let (_, _, next) = run(&memory, &skewed(0), NOW);
        memory = next;
        memory.streak = 5;
        memory.hold_until = Some(NOW + 10 * HOUR);
        let plan = plan_of(&borrowed(&skewed(1)), NOW + 900);
        let j = judge(&memory, &plan, "fedcba9876543210", NOW + 900, 0.3, &settings());
        assert!(j.rollout && j.evaluation.is_none());
        assert_eq!(
            (j.next.streak, j.next.hold_until, j.breaker),
            (0, None, Breaker::Closed)
        );
        assert!(j.next.actions[0].superseded);
        assert_eq!(j.next.fingerprint.as_deref(), Some("fedcba9876543210"));
    }

    #[test]
    fn a_gated_run_does_not_evaluate() {
        let (_, _, memory) = run(&Memory::default(), &skewed(0), NOW);
        let mut plan = plan_of(&borrowed(&skewed(1)), NOW + 300);
        plan.decision = Decision::Hold(Hold::Stabilizing {
            because: vec!["1 pod terminating".into()],
        });
        let j = judge(&memory, &plan, TEMPLATE, NOW + 300, 0.3, &settings());
        assert_eq!(j.evaluation, None);
        assert!(j.next.actions[0].evaluation.is_none(), "still pending");
    }

    #[test]
    fn an_open_breaker_holds_what_comes_after_balanced_only() {
        let open = Judgement {
            evaluation: None,
            rollout: false,
            breaker: Breaker::Open { until: NOW + HOUR },
            next: Memory::default(),
        };
        let balanced: Vec<(String, f64)> = (0..4).map(|i| (format!("b{i}"), 1.0)).collect();
        let plan = apply(plan_of(&borrowed(&balanced), NOW), &open);
        assert!(matches!(plan.decision, Decision::Hold(Hold::Balanced { .. })));
        let three = [("a", 1.9), ("b", 1.0), ("c", 0.1)];
        let plan = apply(plan_of(&three, NOW), &open);
        assert!(
            matches!(plan.decision, Decision::Hold(Hold::Ineffective { .. })),
            "not min_pods"
        );
    }

    #[test]
    fn the_memory_keeps_the_last_ten_actions() {
        let mut memory = Memory::default();
        for generation in 0..12 {
            let plan = plan_of(&borrowed(&skewed(generation)), NOW + generation as i64);
            remember(&mut memory, &plan, plan.removals(), false, TEMPLATE);
        }
        assert_eq!(memory.actions.len(), MAX_ACTIONS);
        assert_eq!(memory.actions[0].removed[0].name, "g2-0");
        let plan = plan_of(&borrowed(&skewed(20)), NOW);
        remember(&mut memory, &plan, &[], false, TEMPLATE);
        assert_eq!(memory.actions.len(), MAX_ACTIONS, "nothing removed, nothing remembered");
    }

    #[test]
    fn the_document_reads_back_and_refuses_what_it_cannot_read() {
        assert_eq!(parse(None), Ok(Memory::default()));
        assert_eq!(parse(Some("  ")), Ok(Memory::default()));
        let (_, _, memory) = run(&Memory::default(), &skewed(0), NOW);
        assert_eq!(parse(Some(&render(&memory))), Ok(memory));
        assert!(parse(Some(r#"{"version": 2}"#)).unwrap_err().contains("newer"));
        for bad in [
            "[]",
            "{}",
            r#"{"version": "1"}"#,
            r#"{"version": 0}"#,
            r#"{"version": 1, "streak": -1}"#,
            r#"{"version": 1, "actions": {}}"#,
            "{",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
        let eleven = format!(
            r#"{{"version": 1, "actions": [{}]}}"#,
            [r#"{"at":1,"fingerprint":"f","spread":0.5,"mean":1,"removed":[]}"#; 11].join(",")
        );
        assert!(parse(Some(&eleven)).unwrap_err().contains("at most 10"));
        assert_eq!(
            parse(Some(r#"{"version": 1}"#)),
            Ok(Memory::default()),
            "every field but the version may be left out"
        );
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
    fn a_document_reads_back_as_the_same_numbers_once_rendered() {
        // Found by the fuzz target: serde_json's default float parser put this long
        // literal one unit in the last place away from what its rendering parses to.
        let long = "6222222222222222222222222222222222222222222222222222222220";
        let text = format!(r#"{{"version": 1, "counters": {{"analyzed": {long}}}}}"#);
        let first = parse(Some(&text)).expect("a document");
        assert_eq!(parse(Some(&render(&first))).expect("rendered"), first);
    }
}
