//! Properties of the pure decision and the statistics, over random fleets.
//!
//! The generator is ours (`tests/sim/rng.rs`, shared with the simulation): xorshift64*
//! with a fixed seed, so every run checks the same cases and a failure names a seed
//! and a case that reproduce it (`PROPERTY_SEED=… PROPERTY_CASES=…`). No property-testing crate: the fleets are
//! easy to draw by hand and the shrinking such a crate adds would cost a dependency
//! tree for little (a failing case prints the whole fleet, rarely more than 30 pods).
//!
//! `plan::decide` is checked against a reference written from the README's "How it decides" in the
//! plainest form (filters and a sort), and against the safety properties that must
//! hold whatever the reference says: only eligible pods, at most two, never fewer than
//! MIN_PODS_REQUIRED healthy pods left, the same plan whatever the input order, and
//! nothing removed when the spread is within the threshold.

use pod_rebalancer::plan::Settings;
use pod_rebalancer::plan::{self, Decision, Inputs, Plan, Pod, Role, Rollout};
use pod_rebalancer::stats;
use std::collections::BTreeMap;
use std::time::Instant;

const SEED: u64 = 0x5eed_2026_0006_0001;
const FLEETS: usize = 50_000;
const STATS_CASES: usize = 50_000;
const NOW: i64 = 1_800_000_000;

// The simulation includes the generator (tests/sim/rng.rs); one copy per binary.
use crate::simulation::model::Rng;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One generated case: what `decide` reads.
#[derive(Debug, Clone)]
struct Fleet {
    pods: Vec<Pod>,
    samples: BTreeMap<String, f64>,
    rollout: Option<Rollout>,
    settings: Settings,
}

impl Fleet {
    fn decide(&self) -> Result<Plan, pod_rebalancer::plan::Undecidable> {
        plan::decide(Inputs {
            pods: self.pods.clone(),
            samples: &self.samples.iter().map(|(name, cpu)| (name.as_str(), *cpu)).collect(),
            rollout: self.rollout.as_ref(),
            now: NOW,
            settings: &self.settings,
            container: "c",
            namespace: "ns",
            ignored: 0,
            selector: None,
            leased: None,
            partitions: None,
        })
    }
}

/// A CPU number as the fleets of the README look: around a mean with some spread,
/// now and then an outlier, an idle pod, or equal values (ties).
fn cpu(rng: &mut Rng, mean: f64, spread: f64) -> f64 {
    match rng.below(20) {
        0 => 0.0,
        1 => mean * (2.0 + 3.0 * rng.unit()),
        2 => mean,
        _ => (mean * (1.0 + spread * (2.0 * rng.unit() - 1.0))).max(0.0),
    }
}

fn fleet(rng: &mut Rng) -> Fleet {
    let settings = Settings {
        window_secs: *rng.pick(&[60, 300, 600]),
        threshold: *rng.pick(&[0.05, 0.1, 0.3, 0.5, 1.0]),
        min_pods: 1 + rng.below(6) as usize,
        stabilization_secs: *rng.pick(&[0, 300, 600, 1200]),
    };
    // Most fleets are settled, so the decision past the gate is well covered.
    let churning = rng.chance(0.25);
    let n = match rng.below(10) {
        0 => rng.below(3) as usize,
        _ => 1 + rng.below(30) as usize,
    };
    let mean = *rng.pick(&[0.0005, 0.01, 0.5, 1.0, 4.0, 32.0]);
    let spread = *rng.pick(&[0.0, 0.05, 0.3, 0.8, 1.5]);
    let mut pods = Vec::with_capacity(n);
    let mut samples = BTreeMap::new();
    for i in 0..n {
        let name = format!("consumer-{:x}-{i}", rng.below(1 << 20));
        let old = NOW - 3600 - rng.below(86_400) as i64;
        let young = NOW - rng.below(1500) as i64;
        let pod = Pod {
            uid: format!("uid-{i}-{}", rng.next()),
            node: rng.chance(0.9).then(|| format!("node-{}", rng.below(4))),
            phase: if rng.chance(0.85) {
                "Running".into()
            } else {
                (*rng.pick(&["Pending", "Failed", "Succeeded", "Unknown", ""])).into()
            },
            ready: rng.chance(0.88),
            terminating: churning && rng.chance(0.1),
            created: if rng.chance(0.01) {
                None
            } else if churning && rng.chance(0.2) {
                Some(young)
            } else {
                Some(old)
            },
            cpu_request: rng.chance(0.8).then(|| *rng.pick(&[0.25, 0.5, 1.0, 2.0])),
            cpu_limit: None,
            name,
        };
        let sample = match rng.below(40) {
            0 | 1 => None,
            2 => Some(*rng.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])),
            3 => Some(-cpu(rng, mean, spread) - 0.001),
            _ => Some(cpu(rng, mean, spread)),
        };
        if let Some(s) = sample {
            samples.insert(pod.name.clone(), s);
        }
        pods.push(pod);
    }
    // Now and then the metrics pipeline has nothing for the fleet at all.
    if rng.chance(0.02) {
        samples.clear();
    }
    // Series of pods that are not matched (another Deployment's, an old ReplicaSet's).
    for j in 0..rng.below(3) {
        samples.insert(format!("other-{j}"), 100.0 * rng.unit());
    }
    let rollout = match rng.below(10) {
        0..=2 => None,
        3 if churning => Some(Rollout {
            name: "d".into(),
            generation: 5,
            observed_generation: 4,
            desired: n as i64,
            replicas: n as i64,
            updated: n as i64,
            fingerprint: "f".into(),
            ..Rollout::default()
        }),
        _ => Some(Rollout {
            name: "d".into(),
            generation: 5,
            observed_generation: 5,
            desired: n as i64,
            replicas: n as i64,
            updated: n as i64,
            fingerprint: "f".into(),
            ..Rollout::default()
        }),
    };
    Fleet {
        pods,
        samples,
        rollout,
        settings,
    }
}

/// Eligibility (README "How it decides", step 2), written out: the pod's CPU if it is eligible.
fn eligible_cpu(f: &Fleet, p: &Pod) -> Option<f64> {
    let old_enough = p.created.is_some_and(|c| NOW - c >= f.settings.window_secs as i64);
    if p.terminating || p.phase != "Running" || !p.ready || !old_enough {
        return None;
    }
    f.samples.get(&p.name).copied().filter(|c| c.is_finite() && *c >= 0.0)
}

fn healthy(f: &Fleet) -> usize {
    f.pods
        .iter()
        .filter(|p| p.phase == "Running" && p.ready && !p.terminating)
        .count()
}

/// The population mean and standard deviation, two-pass, the textbook way.
fn naive(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, variance, variance.sqrt())
}

/// What the README's "How it decides" says the decision is.
#[derive(Debug)]
struct Expected {
    /// The outcome label (`remove` for a plan that removes).
    outcome: &'static str,
    /// The pods removed, in order.
    removed: Vec<(String, Role)>,
    /// Whether the reference's spread is too close to the threshold (or its mean to the
    /// idle floor) for f64 to tell which side it is on: Welford and two-pass may round
    /// differently there. Only a decision that got as far as the statistics can be.
    on_the_edge: bool,
}

impl Expected {
    fn hold(outcome: &'static str) -> Expected {
        Expected {
            outcome,
            removed: vec![],
            on_the_edge: false,
        }
    }
}

/// What the README's "How it decides" says the decision is; `Err` names the error a run ends in.
fn reference(f: &Fleet) -> Result<Expected, &'static str> {
    if f.pods.is_empty() {
        // A Deployment that wants no replicas is scaled to zero, not broken.
        if f.rollout.as_ref().is_some_and(|r| r.desired == 0) {
            return Ok(Expected::hold("idle"));
        }
        return Err("no pods matched");
    }
    let unfinished = f
        .rollout
        .as_ref()
        .is_some_and(|r| r.observed_generation < r.generation || r.updated < r.desired || r.replicas > r.desired);
    let window = f.settings.stabilization_secs as i64;
    let young = f
        .pods
        .iter()
        .any(|p| p.created.is_none() || (window > 0 && p.created.is_some_and(|c| NOW - c < window)));
    if unfinished || young || f.pods.iter().any(|p| p.terminating) {
        return Ok(Expected::hold("stabilizing"));
    }
    let valid = |c: &f64| c.is_finite() && *c >= 0.0;
    if !f.pods.iter().any(|p| f.samples.get(&p.name).is_some_and(valid)) {
        return Err("no CPU metrics");
    }
    let mut eligible: Vec<(String, f64)> = f
        .pods
        .iter()
        .filter_map(|p| eligible_cpu(f, p).map(|c| (p.name.clone(), c)))
        .collect();
    if eligible.len() < f.settings.min_pods {
        return Ok(Expected::hold("too_few_pods"));
    }
    let cpus: Vec<f64> = eligible.iter().map(|(_, c)| *c).collect();
    let (mean, _, stddev) = naive(&cpus);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let on_the_edge = mean > 0.0 && (close(stddev / mean, f.settings.threshold) || close(mean, plan::IDLE_MEAN_CORES));
    let hold = |outcome| Expected {
        on_the_edge,
        ..Expected::hold(outcome)
    };
    if mean < plan::IDLE_MEAN_CORES {
        return Ok(hold("idle"));
    }
    if stddev / mean <= f.settings.threshold {
        return Ok(hold("balanced"));
    }
    let healthy = healthy(f);
    let budget = (healthy.saturating_sub(f.settings.min_pods)).min(healthy / 2);
    if budget == 0 {
        return Ok(hold("min_pods"));
    }
    // Highest first, ties by name; the coldest is the lowest value, first name among equals.
    eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let hottest = eligible[0].clone();
    let lowest = eligible[eligible.len() - 1].1;
    let coldest = eligible.iter().find(|(_, c)| *c == lowest).cloned().expect("one");
    let mut removed = vec![(hottest.0.clone(), Role::HighestCpu)];
    if budget >= 2 && coldest.0 != hottest.0 {
        removed.push((coldest.0, Role::LowestCpu));
    }
    Ok(Expected {
        outcome: "remove",
        removed,
        on_the_edge,
    })
}

/// Every property of one fleet; `Err` says which one failed, `Ok` is what the
/// reference expected (for the tally of outcomes).
fn check(f: &Fleet, rng: &mut Rng) -> Result<Result<Expected, &'static str>, String> {
    let want = reference(f);
    let (plan, expected) = match (f.decide(), &want) {
        (Err(e), Err(why)) => {
            return if e.to_string().contains(why) {
                Ok(want)
            } else {
                Err(format!("error {e}, expected one saying {why:?}"))
            };
        }
        (Err(e), Ok(w)) => return Err(format!("error {e}, expected {w:?}")),
        (Ok(p), Err(why)) => return Err(format!("a plan {:?}, expected an error saying {why:?}", p.decision)),
        (Ok(p), Ok(w)) => (p, w),
    };
    let removals = plan.removals();

    // Safety, whatever the reference says.
    if removals.len() > 2 {
        return Err(format!("removes {} pods", removals.len()));
    }
    for r in removals {
        let pod = f
            .pods
            .iter()
            .find(|p| p.name == r.name)
            .ok_or_else(|| format!("removes {}, which is not a matched pod", r.name))?;
        if eligible_cpu(f, pod).is_none() {
            return Err(format!("removes {}, which is not eligible: {pod:?}", r.name));
        }
        if r.uid != pod.uid {
            return Err(format!("removes {} with the uid of another pod", r.name));
        }
    }
    if removals.len() == 2 && removals[0].name == removals[1].name {
        return Err("removes one pod twice".into());
    }
    let healthy = healthy(f);
    let left = healthy - removals.len().min(healthy);
    if !removals.is_empty() && (left < f.settings.min_pods || removals.len() > healthy / 2) {
        return Err(format!(
            "leaves {left} healthy pods of {healthy} (min {})",
            f.settings.min_pods
        ));
    }
    if let Some(s) = plan.stats {
        if [s.mean, s.variance, s.stddev, s.spread].iter().any(|x| !x.is_finite()) {
            return Err(format!("statistics not finite: {s:?}"));
        }
        if s.spread <= f.settings.threshold && !removals.is_empty() {
            return Err(format!("removes pods at spread {} <= threshold", s.spread));
        }
    }
    if plan.pods.len() != f.pods.len() {
        return Err(format!(
            "{} pods in the plan, {} matched",
            plan.pods.len(),
            f.pods.len()
        ));
    }

    // Every matched pod once, with its own numbers, in the documented order: eligible
    // pods by CPU, highest first, then the excluded ones; ties by name.
    let by_name: BTreeMap<&str, &Pod> = f.pods.iter().map(|p| (p.name.as_str(), p)).collect();
    for v in plan.pods.iter() {
        let pod = by_name
            .get(v.pod.name.as_str())
            .ok_or_else(|| format!("plans {}, which is not a matched pod", v.pod.name))?;
        let sample = f.samples.get(&pod.name).copied().filter(|c| c.is_finite());
        if v.pod != *pod || v.cpu != eligible_cpu(f, pod) || v.sample != sample {
            return Err(format!("{} is planned with another pod's numbers: {v:?}", pod.name));
        }
    }
    let views: Vec<_> = plan.pods.iter().collect();
    for pair in views.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let in_order = match (a.cpu, b.cpu) {
            (Some(x), Some(y)) => x > y || (x == y && a.pod.name < b.pod.name),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a.pod.name < b.pod.name,
        };
        if !in_order {
            return Err(format!("{} is planned before {}", a.pod.name, b.pod.name));
        }
    }

    // The same plan, whatever order the API listed the pods in.
    let mut shuffled = f.clone();
    rng.shuffle(&mut shuffled.pods);
    let again = shuffled.decide().map_err(|e| format!("shuffled: {e}"))?;
    if again != plan {
        return Err(format!(
            "another input order gave another plan: {:?} vs {:?}",
            again.decision, plan.decision
        ));
    }

    // The decision the README describes.
    if expected.on_the_edge {
        return Ok(want);
    }
    let Expected {
        outcome,
        removed: want_removed,
        ..
    } = expected;
    let got_outcome = match &plan.decision {
        Decision::Remove { .. } => "remove",
        Decision::Hold(h) => h.outcome().label(),
    };
    let got_removed: Vec<(String, Role)> = removals.iter().map(|r| (r.name.clone(), r.role)).collect();
    if got_outcome != *outcome || got_removed != *want_removed {
        return Err(format!(
            "decided {got_outcome} {got_removed:?}, the README says {outcome} {want_removed:?}"
        ));
    }
    Ok(want)
}

#[test]
fn the_decision_is_safe_deterministic_and_as_specified_on_random_fleets() {
    let seed = env_or("PROPERTY_SEED", SEED);
    let cases = env_or("PROPERTY_CASES", FLEETS as u64) as usize;
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for case in 0..cases {
        let f = fleet(&mut rng);
        let expected = match check(&f, &mut rng) {
            Ok(expected) => expected,
            Err(why) => panic!("PROPERTY_SEED={seed} case {case}: {why}\nfleet: {f:#?}"),
        };
        let outcome = match expected {
            Ok(Expected { outcome, removed, .. }) => format!(
                "{outcome}{}",
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(" {}", removed.len())
                }
            ),
            Err(e) => e.to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!(
        "properties: {cases} fleets (seed {seed:#x}) in {:.1}s: {outcomes:?}",
        started.elapsed().as_secs_f64()
    );
    // The generator must reach every outcome, or a property would hold vacuously.
    for outcome in [
        "remove 1",
        "remove 2",
        "balanced",
        "idle",
        "too_few_pods",
        "min_pods",
        "stabilizing",
        "no pods matched",
        "no CPU metrics",
    ] {
        let seen = outcomes.get(outcome).copied().unwrap_or(0);
        assert!(
            seen * 200 >= cases,
            "only {seen} of {cases} fleets end in {outcome:?}: {outcomes:?}"
        );
    }
}

/// Values that a pod's CPU can take: well-conditioned (0.001 to 100 cores, and not
/// all nearly equal, so the relative comparison of the variance means something).
fn well_conditioned(rng: &mut Rng) -> Vec<f64> {
    let n = 1 + rng.below(200) as usize;
    let scale = *rng.pick(&[0.001, 0.1, 1.0, 10.0, 100.0]);
    loop {
        let v: Vec<f64> = (0..n).map(|_| scale * (0.01 + rng.unit())).collect();
        let (mean, _, stddev) = naive(&v);
        if n == 1 || stddev / mean > 1e-3 {
            return v;
        }
    }
}

/// Anything an upstream bug could pass: NaN, infinities, negatives, zeros, extremes.
fn hostile(rng: &mut Rng) -> Vec<f64> {
    let n = rng.below(50) as usize;
    (0..n)
        .map(|_| {
            let any = rng.unit() * 1e6;
            *rng.pick(&[
                0.0,
                -0.0,
                1.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MAX,
                f64::MIN,
                f64::MIN_POSITIVE,
                5e-324,
                1e300,
                1e-300,
                any,
            ])
        })
        .collect()
}

#[test]
fn the_statistics_match_a_naive_reference_and_are_never_nan() {
    let seed = env_or("PROPERTY_SEED", SEED);
    let cases = env_or("PROPERTY_CASES", STATS_CASES as u64) as usize;
    let started = Instant::now();
    let mut rng = Rng::new(seed ^ 0x57a7);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    for case in 0..cases {
        let v = well_conditioned(&mut rng);
        let s = stats::describe(&v).expect("non-empty");
        let (mean, variance, stddev) = naive(&v);
        let ok = s.n == v.len()
            && close(s.mean, mean)
            && close(s.variance, variance)
            && close(s.stddev, stddev)
            && close(s.spread, stddev / mean);
        assert!(
            ok,
            "PROPERTY_SEED={seed} case {case}: {s:?} vs mean {mean} variance {variance} stddev {stddev} for {v:?}"
        );

        let v = hostile(&mut rng);
        match stats::describe(&v) {
            None => assert!(
                v.iter().all(|x| !x.is_finite()),
                "PROPERTY_SEED={seed} case {case}: no statistics for {v:?}"
            ),
            Some(s) => {
                assert_eq!(s.n, v.iter().filter(|x| x.is_finite()).count(), "{v:?}");
                for x in [s.mean, s.variance, s.stddev, s.spread] {
                    assert!(x.is_finite(), "PROPERTY_SEED={seed} case {case}: {s:?} for {v:?}");
                }
                assert!(
                    s.variance >= 0.0 && s.stddev >= 0.0 && s.spread >= 0.0,
                    "{s:?} for {v:?}"
                );
            }
        }
    }
    eprintln!(
        "properties: {cases} well-conditioned and {cases} hostile samples (seed {seed:#x}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
