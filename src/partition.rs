//! The partition signal (SPEC §12): explain an imbalance before evicting for it.
//!
//! CPU alone cannot tell an imbalance an eviction can fix (two busy partitions on one
//! pod) from one it cannot (one partition hotter than a pod's fair share; more
//! consumers than partitions). Given which partitions each pod owns and how busy each
//! is, `explain` fits `cpu = a + b × load` over the eligible pods and, when the load
//! explains the CPU, computes the most even spread any assignment of these partitions
//! could reach (`best_split`): above the threshold, no eviction can balance the group.
//!
//! Pure, like `plan.rs`, beside which it runs: the answer is read by
//! `victoria::query_partitions` through a `Reading`, made into an `Answer` (compact:
//! one 32-byte entry per owned partition beside its name), and `plan::decide` turns it
//! into an `Explanation` with the rest of the plan.

use crate::plan::{over, plural};
use crate::stats;
use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct};
use std::fmt;

/// The largest partition load an answer may hold, in whatever unit the query uses:
/// 10^9 messages or bytes a second on one partition is far beyond any broker. Summed
/// over 10,000 partitions it still leaves the fit's squares far from overflow.
pub const MAX_LOAD: f64 = 1e9;

/// The fewest eligible pods over which a fit may explain the CPU: a line through two
/// or three points says little.
pub const MIN_PODS: usize = 4;

/// The least R² at which the load explains the CPU.
pub const MIN_R2: f64 = 0.5;

/// The relative tolerance of "the next partition is no heavier than the even share":
/// a partition that is the share but for floating-point noise does not get a pod of
/// its own (and does not turn idle consumers into key skew).
const SHARE_TOLERANCE: f64 = 1e-9;

/// One series of a partition answer as it came off the wire: its `pod` label, the
/// values of the labels `PARTITION_LABELS` names (in that order, `None` where absent),
/// and the text of its value (`None` when it has no float value: a histogram).
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub pod: Option<&'a str>,
    pub labels: &'a [Option<String>],
    pub value: Option<&'a str>,
}

/// One owned partition: the owner (an index into `Answer::pods`), the load, the key.
/// 32 bytes beside the key's own bytes; the owner's name is held once per pod.
#[derive(Debug, Clone, PartialEq)]
struct Owned {
    pod: u32,
    load: f64,
    partition: Box<str>,
}

/// A partition answer being read, series by series as the body streams in. Series of
/// pods that are not matched are dropped unread (another consumer group may read the
/// same topic); the first malformed series of a matched pod is remembered, so that the
/// envelope's own verdict (an error status, `isPartial`) is still reported first.
pub struct Reading<'a> {
    labels: &'a [String],
    /// The matched pods, sorted, each once.
    matched: Vec<&'a str>,
    owned: Vec<Owned>,
    problem: Option<String>,
}

impl<'a> Reading<'a> {
    /// A reading of an answer whose partitions `labels` name, for these matched pods.
    pub fn new(labels: &'a [String], matched: impl IntoIterator<Item = &'a str>) -> Reading<'a> {
        let mut matched: Vec<&str> = matched.into_iter().collect();
        matched.sort_unstable();
        matched.dedup();
        Reading {
            labels,
            matched,
            owned: Vec::new(),
            problem: None,
        }
    }

    /// The label names that identify a partition, in order.
    pub fn labels(&self) -> &'a [String] {
        self.labels
    }

    /// Takes one series: kept when its pod is matched and it is well formed.
    pub fn add(&mut self, series: Series) {
        if self.problem.is_some() {
            return;
        }
        match self.owned_of(series) {
            Ok(Some(owned)) => self.owned.push(owned),
            Ok(None) => {}
            Err(why) => self.problem = Some(why),
        }
    }

    fn owned_of(&self, series: Series) -> Result<Option<Owned>, String> {
        let Some(pod) = series.pod.filter(|p| !p.is_empty()) else {
            return Err(format!(
                "expected every sample to carry the label pod, got one without it ({})",
                self.describe(series.labels)
            ));
        };
        let Ok(index) = self.matched.binary_search(&pod) else {
            return Ok(None);
        };
        let partition = self.key(pod, series.labels)?;
        let Some(text) = series.value else {
            return Err(format!(
                "pod {pod}, partition {partition}: expected a float sample, got none (a histogram?)"
            ));
        };
        let load = load_of(text).map_err(|why| format!("pod {pod}, partition {partition}: {why}"))?;
        Ok(Some(Owned {
            pod: index as u32,
            load,
            partition: partition.into_boxed_str(),
        }))
    }

    /// The partition's key: the values of its labels joined by '/' ("events/7").
    fn key(&self, pod: &str, values: &[Option<String>]) -> Result<String, String> {
        let mut key = String::new();
        for (i, name) in self.labels.iter().enumerate() {
            let Some(value) = values.get(i).and_then(Option::as_deref).filter(|v| !v.is_empty()) else {
                return Err(format!(
                    "pod {pod}: expected the label {name} that names a partition, got a sample without it ({})",
                    self.describe(values)
                ));
            };
            if i > 0 {
                key.push('/');
            }
            key.push_str(value);
        }
        Ok(key)
    }

    /// The partition labels a series had, for messages: `topic="events", partition absent`.
    fn describe(&self, values: &[Option<String>]) -> String {
        let shown: Vec<String> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, name)| match values.get(i).and_then(Option::as_deref) {
                Some(v) if !v.is_empty() => format!("{name}={v:?}"),
                _ => format!("{name} absent"),
            })
            .collect();
        shown.join(", ")
    }

    /// The answer read; `Err` says why the body is malformed.
    pub fn finish(self) -> Result<Answer, String> {
        if let Some(why) = self.problem {
            return Err(why);
        }
        Answer::of(&self.matched, self.owned)
    }
}

/// A partition's load from the text of its value: a number, finite, >= 0 and at most
/// `MAX_LOAD`; `Err` says which rule the text broke.
fn load_of(text: &str) -> Result<f64, String> {
    let Ok(load) = text.parse::<f64>() else {
        return Err(format!("expected a number, got {text:?}"));
    };
    if !load.is_finite() {
        Err(format!("expected a finite load, got {text:?}"))
    } else if load < 0.0 {
        Err(format!("expected a load >= 0, got {text:?}"))
    } else if load > MAX_LOAD {
        Err(format!("expected a load of at most {MAX_LOAD}, got {text:?}"))
    } else {
        // -0 is 0: a load that prints as "-0" would look negative.
        Ok(load + 0.0)
    }
}

/// The partition answer of the matched pods: which partitions each pod owns and how
/// busy each is. Compact: the owners' names once, one 32-byte entry per owned
/// partition beside its key, so 10,000 partitions take about half a megabyte.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    /// The owners, sorted, each once.
    pods: Vec<Box<str>>,
    /// By owner, then heaviest first, then by key.
    owned: Vec<Owned>,
}

impl Answer {
    /// An answer from `(pod, partition, load)` triples, every pod taken as matched;
    /// `Err` as for a body: a load out of range, or a pod and partition given twice.
    pub fn new<'s>(samples: impl IntoIterator<Item = (&'s str, &'s str, f64)>) -> Result<Answer, String> {
        let samples: Vec<(&str, &str, f64)> = samples.into_iter().collect();
        let labels = ["partition".to_string()];
        let mut reading = Reading::new(&labels, samples.iter().map(|s| s.0));
        for (pod, partition, load) in &samples {
            let value = load.to_string();
            let labels = [Some(partition.to_string())];
            reading.add(Series {
                pod: Some(pod),
                labels: &labels,
                value: Some(&value),
            });
        }
        reading.finish()
    }

    /// `owned` indexes `matched`; only the pods that own a partition are kept.
    fn of(matched: &[&str], mut owned: Vec<Owned>) -> Result<Answer, String> {
        owned.sort_unstable_by(|x, y| (x.pod, &x.partition).cmp(&(y.pod, &y.partition)));
        if let Some(twice) = owned
            .windows(2)
            .find(|w| w[0].pod == w[1].pod && w[0].partition == w[1].partition)
        {
            return Err(format!(
                "pod {}, partition {}: expected one sample per pod and partition, got several",
                matched.get(twice[0].pod as usize).copied().unwrap_or("?"),
                twice[0].partition
            ));
        }
        let mut pods: Vec<Box<str>> = Vec::new();
        let mut last = None;
        for o in &mut owned {
            if last != Some(o.pod) {
                last = Some(o.pod);
                pods.push(matched.get(o.pod as usize).copied().unwrap_or("?").into());
            }
            o.pod = (pods.len() - 1) as u32;
        }
        owned.sort_by(|x, y| {
            x.pod
                .cmp(&y.pod)
                .then(y.load.total_cmp(&x.load))
                .then_with(|| x.partition.cmp(&y.partition))
        });
        Ok(Answer { pods, owned })
    }

    /// The answer split by target (fleet mode, SPEC §13: each sample goes to the
    /// target that owns its pod): `target(pod)` names each owner's target among `n`,
    /// `None` for a pod that is no target's.
    pub fn split(self, n: usize, target: impl Fn(&str) -> Option<usize>) -> Vec<Answer> {
        let mut out = vec![Answer::default(); n];
        let Answer { pods, owned } = self;
        let mut moved: Vec<Option<(usize, u32)>> = Vec::with_capacity(pods.len());
        for pod in pods {
            moved.push(target(&pod).filter(|t| *t < n).map(|t| {
                out[t].pods.push(pod);
                (t, (out[t].pods.len() - 1) as u32)
            }));
        }
        for o in owned {
            if let Some(Some((t, pod))) = moved.get(o.pod as usize) {
                out[*t].owned.push(Owned { pod: *pod, ..o });
            }
        }
        out
    }

    /// Owned partitions (a partition owned by two pods counts twice).
    pub fn len(&self) -> usize {
        self.owned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }

    /// `(pod, partition, load)`, by pod, each pod's heaviest first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.owned
            .iter()
            .map(|o| (&*self.pods[o.pod as usize], &*o.partition, o.load))
    }

    /// The partitions `pod` owns, heaviest first: `(partition, load)`.
    pub fn partitions_of(&self, pod: &str) -> impl Iterator<Item = (&str, f64)> {
        let owned: &[Owned] = match self.pods.binary_search_by(|p| (**p).cmp(pod)) {
            Ok(i) => {
                let start = self.owned.partition_point(|o| (o.pod as usize) < i);
                let end = self.owned.partition_point(|o| (o.pod as usize) <= i);
                &self.owned[start..end]
            }
            Err(_) => &[],
        };
        owned.iter().map(|o| (&*o.partition, o.load))
    }

    /// The pods that own partitions, sorted.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.pods.iter().map(|p| &**p)
    }
}

/// The least-squares line `cpu = a + b × load` and how much of the CPU it explains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    pub a: f64,
    pub b: f64,
    /// `None` when every pod's CPU is the same: R² is 0/0 there.
    pub r2: Option<f64>,
}

/// Least squares of `y = a + b × x` over `points` (`(x, y)`: load, CPU), and R²
/// (Montgomery, Peck & Vining, *Introduction to Linear Regression Analysis*, §2.2 and
/// §2.9; NIST/SEMATECH e-Handbook of Statistical Methods, §4.1.4.1), computed about
/// the means in two passes, which keeps its precision where `Σx² − n·x̄²` would not:
///
/// ```text
/// x̄ = Σx / n    ȳ = Σy / n
/// Sxx = Σ(x − x̄)²    Sxy = Σ(x − x̄)(y − ȳ)    Syy = Σ(y − ȳ)²
/// b = Sxy / Sxx    a = ȳ − b·x̄    R² = Sxy² / (Sxx·Syy)
/// ```
///
/// (For a line with an intercept, `Sxy² / (Sxx·Syy)` is `1 − SSres / SStot`.)
/// Degenerate cases, decided on purpose: fewer than two points, or every `x` equal
/// (no line through a single abscissa), have no fit (`None`); every `y` equal gives
/// the flat line `a = ȳ, b = 0` and no R² (`r2: None`: 0/0, neither 0 nor 1). R² is
/// kept within [0, 1] against rounding.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let (x0, y0) = *points.first()?;
    if points.len() < 2 || points.iter().all(|p| p.0 == x0) {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if !(sxx > 0.0 && sxx.is_finite() && sxy.is_finite() && syy.is_finite()) {
        // Distinct loads whose squares underflow or overflow: no line we can trust.
        return None;
    }
    let b = sxy / sxx;
    let a = mean_y - b * mean_x;
    let all_equal_y = points.iter().all(|p| p.1 == y0);
    let r2 = (!all_equal_y && syy > 0.0).then(|| (sxy / sxx * (sxy / syy)).clamp(0.0, 1.0));
    Some(Fit { a, b, r2 })
}

/// The most even split of partitions over pods any assignment could reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Each pod's load, heaviest first: the `alone` heaviest partitions each on a pod
    /// of its own, the rest shared evenly by `min(pods, busy) − alone` pods, then the
    /// idle pods at 0.
    pub loads: Vec<f64>,
    /// k: the partitions heavier than the even share of what is left, each alone.
    pub alone: usize,
    /// P: partitions of positive load.
    pub busy: usize,
}

/// The water-filling split (SPEC §12) of `loads` (one per partition) over `pods` pods.
///
/// With P partitions of positive load sorted heaviest first, total T and M = min(N, P)
/// pods that can be busy: k is the smallest count for which the next partition is no
/// heavier than the even share of the rest, `(T − l₁ − … − l_k) / (M − k)`; the k
/// heaviest get a pod each, the others share the rest evenly, N − M pods are idle.
/// No assignment's loads are more even (its load vector majorizes this one, and the
/// variance is Schur-convex: Marshall & Olkin, *Inequalities*, 1.A and 3.C), which
/// `tests/it/explain.rs` checks against every assignment of small instances.
///
/// Degenerate cases: no pod gives no loads; no busy partition gives N idle pods; k
/// stops at M − 1 at the latest (the last busy pod takes all that is left).
pub fn best_split(pods: usize, loads: &[f64]) -> Split {
    let mut busy: Vec<f64> = loads.iter().copied().filter(|l| *l > 0.0).collect();
    busy.sort_unstable_by(|a, b| b.total_cmp(a));
    let shared_by = pods.min(busy.len());
    let mut rest: f64 = busy.iter().sum();
    let mut alone = 0;
    while alone + 1 < shared_by {
        let share = rest / (shared_by - alone) as f64;
        if busy[alone] <= share * (1.0 + SHARE_TOLERANCE) {
            break;
        }
        rest -= busy[alone];
        alone += 1;
    }
    let mut split: Vec<f64> = busy[..alone].to_vec();
    if shared_by > alone {
        let share = rest.max(0.0) / (shared_by - alone) as f64;
        split.extend(std::iter::repeat_n(share, shared_by - alone));
    }
    split.resize(pods, 0.0);
    Split {
        loads: split,
        alone,
        busy: busy.len(),
    }
}

/// The spread (stddev / mean, `stats::describe`) of the CPU `fit` predicts for pods
/// carrying `loads`: `a + b × load` each.
pub fn predicted_spread(fit: &Fit, loads: &[f64]) -> f64 {
    let cpu: Vec<f64> = loads.iter().map(|l| fit.a + fit.b * l).collect();
    stats::describe(&cpu).map_or(0.0, |s| s.spread)
}

/// What the partition signal says about the imbalance.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The group is mid-rebalance or the data is stale: a partition owned by two
    /// matched pods, or by a matched pod that is not eligible (SPEC §6 rule 6).
    Moving { partition: String, owners: Vec<String> },
    /// No eligible pod owns a partition in the answer: the run decides without it.
    Missing,
    /// The load does not explain the CPU (`why`): the run decides without it.
    Unexplained { why: String },
    /// Some assignment of the partitions is balanced: the decision goes on.
    Fixable,
    /// No assignment balances the group: a partition alone is hotter than a pod's fair
    /// share. `idle` is `(pods, busy partitions)` when there are also more pods than
    /// busy partitions.
    KeySkew {
        partition: String,
        /// What a pod owning that partition alone burns, `a + b × load`, cores.
        cores: f64,
        /// `cores` over the mean CPU (`a + b × T / N`): how many fair shares it is.
        shares: f64,
        idle: Option<(usize, usize)>,
    },
    /// No assignment balances the group: more pods than busy partitions.
    IdleConsumers { pods: usize, busy: usize },
}

impl Verdict {
    /// The verdict in the plan's JSON.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Moving { .. } => "moving",
            Verdict::Missing => "missing",
            Verdict::Unexplained { .. } => "unexplained",
            Verdict::Fixable => "fixable",
            Verdict::KeySkew { .. } => "key_skew",
            Verdict::IdleConsumers { .. } => "idle_consumers",
        }
    }
}

/// One pod as the partition signal sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodLoad {
    pub name: String,
    pub eligible: bool,
    /// The sum of its partitions' loads (0 when it owns none).
    pub load: f64,
    /// How many partitions it owns.
    pub partitions: usize,
}

/// The partition signal's explanation of the imbalance, kept in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The fit over the eligible pods, when one exists (at least two pods, loads not
    /// all equal, no partition moving).
    pub fit: Option<Fit>,
    /// Only when the load explains the CPU.
    pub best_possible_spread: Option<f64>,
    /// The eligible pods in the order given, then matched pods that are not eligible
    /// but own partitions.
    pub pods: Vec<PodLoad>,
    /// Eligible pods (N) and the threshold the best possible spread was held against.
    pub eligible: usize,
    pub threshold: f64,
    answer: Answer,
}

/// Explains the CPU of the `eligible` pods (`(name, cores)`) by the partitions the
/// answer gives them; `excluded` names the matched pods that are not eligible (their
/// partitions mean the assignment is moving; the partitions of pods that are neither
/// are ignored, as the reading ignores them); `threshold` is `CPU_VARIANCE_THRESHOLD`.
/// The rules of SPEC §12 in order: partitions moving, the signal missing, the fit (at
/// least `MIN_PODS` pods, loads not all equal, `b > 0`, `R² >= MIN_R2`), then the
/// best possible spread.
pub fn explain(answer: Answer, eligible: &[(&str, f64)], excluded: &[&str], threshold: f64) -> Explanation {
    let (answer, owner_index, pods) = loads(answer, eligible, excluded);
    let moving = moving(&answer, &owner_index);
    let mut explanation = Explanation {
        verdict: Verdict::Missing,
        fit: None,
        best_possible_spread: None,
        pods,
        eligible: eligible.len(),
        threshold,
        answer,
    };
    if let Some(verdict) = moving {
        explanation.verdict = verdict;
        return explanation;
    }
    if explanation.answer.is_empty() {
        return explanation;
    }
    let points: Vec<(f64, f64)> = eligible
        .iter()
        .zip(&explanation.pods)
        .map(|((_, cpu), p)| (p.load, *cpu))
        .collect();
    let fit = self::fit(&points);
    explanation.fit = fit;
    match (fit, unexplained(&points, fit)) {
        (Some(fit), None) => {
            let (best, verdict) = verdict(&explanation.answer, &fit, eligible.len(), threshold);
            explanation.best_possible_spread = Some(best);
            explanation.verdict = verdict;
        }
        (_, why) => {
            explanation.verdict = Verdict::Unexplained {
                why: why.unwrap_or_default(),
            };
        }
    }
    explanation
}

/// The answer kept to the matched pods' partitions, each owner as an eligible pod's
/// index (or `None`), and each pod's load: the eligible pods in the order given, then
/// the matched pods that are not eligible but own partitions.
fn loads(
    mut answer: Answer,
    eligible: &[(&str, f64)],
    excluded: &[&str],
) -> (Answer, Vec<Option<usize>>, Vec<PodLoad>) {
    let mut by_name: Vec<(&str, usize)> = eligible.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
    by_name.sort_unstable();
    let index_of = |pod: &str| {
        by_name
            .binary_search_by(|(n, _)| (*n).cmp(pod))
            .ok()
            .map(|i| by_name[i].1)
    };
    let mut excluded = excluded.to_vec();
    excluded.sort_unstable();
    let owner_index: Vec<Option<usize>> = answer.pods.iter().map(|p| index_of(p)).collect();
    let matched: Vec<bool> = answer
        .pods
        .iter()
        .zip(&owner_index)
        .map(|(p, i)| i.is_some() || excluded.binary_search(&&**p).is_ok())
        .collect();
    answer.owned.retain(|o| matched[o.pod as usize]);
    let load = |name: &str, eligible: bool| PodLoad {
        name: name.to_string(),
        eligible,
        load: 0.0,
        partitions: 0,
    };
    let mut pods: Vec<PodLoad> = eligible.iter().map(|(name, _)| load(name, true)).collect();
    let mut others: Vec<PodLoad> = Vec::new();
    for owned in &answer.owned {
        let at = match owner_index[owned.pod as usize] {
            Some(i) => &mut pods[i],
            None => {
                let name = &answer.pods[owned.pod as usize];
                if others.last().is_none_or(|p| *p.name != **name) {
                    others.push(load(name, false));
                }
                let last = others.len() - 1;
                &mut others[last]
            }
        };
        at.load += owned.load;
        at.partitions += 1;
    }
    pods.extend(others);
    (answer, owner_index, pods)
}

/// The best possible spread of `n` eligible pods over the answer's partitions under
/// `fit`, and the verdict it gives against `threshold`.
fn verdict(answer: &Answer, fit: &Fit, n: usize, threshold: f64) -> (f64, Verdict) {
    let loads: Vec<f64> = answer.owned.iter().map(|o| o.load).collect();
    let split = best_split(n, &loads);
    let best = predicted_spread(fit, &split.loads);
    if !over(best, threshold) || (split.alone == 0 && split.busy >= n) {
        return (best, Verdict::Fixable);
    }
    let idle = (split.busy < n).then_some((n, split.busy));
    let heaviest = answer
        .owned
        .iter()
        .min_by(|x, y| y.load.total_cmp(&x.load).then_with(|| x.partition.cmp(&y.partition)));
    let verdict = match heaviest {
        Some(heaviest) if split.alone > 0 => {
            let cores = fit.a + fit.b * heaviest.load;
            let mean = fit.a + fit.b * loads.iter().sum::<f64>() / n as f64;
            Verdict::KeySkew {
                partition: heaviest.partition.to_string(),
                cores,
                shares: if mean > 0.0 { cores / mean } else { 0.0 },
                idle,
            }
        }
        _ => Verdict::IdleConsumers {
            pods: n,
            busy: split.busy,
        },
    };
    (best, verdict)
}

/// A partition owned by two matched pods, or by a matched pod that is not eligible;
/// `owner_index` maps the answer's owners to eligible pods. The first such partition
/// by key names the verdict.
fn moving(answer: &Answer, owner_index: &[Option<usize>]) -> Option<Verdict> {
    let mut keys: Vec<(&str, u32)> = answer.owned.iter().map(|o| (&*o.partition, o.pod)).collect();
    keys.sort_unstable();
    let name = |pod: u32| answer.pods[pod as usize].to_string();
    if let Some(w) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
        let owners: Vec<String> = keys.iter().filter(|k| k.0 == w[0].0).map(|k| name(k.1)).collect();
        return Some(Verdict::Moving {
            partition: w[0].0.to_string(),
            owners,
        });
    }
    keys.iter()
        .find(|k| owner_index[k.1 as usize].is_none())
        .map(|k| Verdict::Moving {
            partition: k.0.to_string(),
            owners: vec![name(k.1)],
        })
}

/// Why the fit does not explain the CPU of these points, or `None` when it does.
fn unexplained(points: &[(f64, f64)], fit: Option<Fit>) -> Option<String> {
    const WORDS: &str = "partition load does not explain CPU";
    if points.len() < MIN_PODS {
        return Some(format!(
            "{WORDS}: {} eligible, at least {MIN_PODS} needed",
            plural(points.len(), "pod")
        ));
    }
    let Some(fit) = fit else {
        return Some(format!("{WORDS}: every pod's load is the same"));
    };
    let Some(r2) = fit.r2 else {
        return Some(format!("{WORDS}: every pod's CPU is the same, R² undefined"));
    };
    if fit.b <= 0.0 {
        return Some(format!(
            "{WORDS}: CPU does not grow with the load (b {}), R² {r2:.2}",
            significant(fit.b)
        ));
    }
    (r2 < MIN_R2).then(|| format!("{WORDS}, R² {r2:.2}"))
}

/// Three significant digits, without an exponent: 0.00123, 1.23, 1230.
pub fn significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 12) as usize;
    let text = format!("{x:.decimals$}");
    // 0.0099999 rounds to 0.01000 at five decimals: one significant digit too many.
    match text.parse::<f64>() {
        Ok(rounded) if decimals > 0 && rounded.abs() >= 10f64.powi(magnitude + 1) => {
            format!("{x:.prec$}", prec = decimals - 1)
        }
        _ => text,
    }
}

impl Explanation {
    /// The load explains the CPU: the verdict is fixable or unfixable.
    pub fn explains(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Fixable | Verdict::KeySkew { .. } | Verdict::IdleConsumers { .. }
        )
    }

    /// No assignment of the partitions balances the group (SPEC §6 rule 9).
    pub fn unfixable(&self) -> bool {
        matches!(self.verdict, Verdict::KeySkew { .. } | Verdict::IdleConsumers { .. })
    }

    /// R², when a fit exists and the CPU is not all equal: the gauge's value.
    pub fn r2(&self) -> Option<f64> {
        self.fit.and_then(|f| f.r2)
    }

    /// The heaviest partition `pod` owns (the first by key among equals).
    pub fn heaviest_partition(&self, pod: &str) -> Option<&str> {
        self.answer.partitions_of(pod).next().map(|(partition, _)| partition)
    }

    /// The matched pod that owns `partition`; `None` when none does, or several do.
    pub fn owner_of(&self, partition: &str) -> Option<&str> {
        let mut owners = self
            .answer
            .iter()
            .filter(|(_, p, _)| *p == partition)
            .map(|(pod, ..)| pod);
        let first = owners.next()?;
        owners.next().is_none().then_some(first)
    }

    /// The partitions `pod` owns, heaviest first: `(partition, load)`.
    pub fn partitions_of(&self, pod: &str) -> impl Iterator<Item = (&str, f64)> {
        self.answer.partitions_of(pod)
    }

    /// Owned partitions in the answer.
    pub fn partition_count(&self) -> usize {
        self.answer.len()
    }

    /// The verdict's reasons in words, one for each thing it found: "partition
    /// events/7 alone burns 1.85 cores, 2.1× a fair share (key skew)" and, when also
    /// true, "12 pods share 10 busy partitions: 2 are idle whatever is evicted".
    pub fn reasons(&self) -> Vec<String> {
        match &self.verdict {
            Verdict::Moving { partition, owners } => vec![moving_words(partition, owners)],
            Verdict::Missing => {
                vec!["the partition query answered no partition of an eligible pod (signal missing)".to_string()]
            }
            Verdict::Unexplained { why } => vec![why.clone()],
            Verdict::Fixable => Vec::new(),
            Verdict::KeySkew {
                partition,
                cores,
                shares,
                idle,
            } => {
                let mut why = vec![format!(
                    "partition {partition} alone burns {cores:.2} cores, {shares:.1}× a fair share (key skew)"
                )];
                if let Some((pods, busy)) = idle {
                    why.push(idle_words(*pods, *busy));
                }
                why
            }
            Verdict::IdleConsumers { pods, busy } => vec![idle_words(*pods, *busy)],
        }
    }
}

fn moving_words(partition: &str, owners: &[String]) -> String {
    match owners {
        [one] => format!("partitions moving: partition {partition} is owned by {one}, which is not eligible"),
        _ => format!(
            "partitions moving: partition {partition} is owned by {}",
            owners.join(" and ")
        ),
    }
}

fn idle_words(pods: usize, busy: usize) -> String {
    format!(
        "{pods} pods share {}: {} idle whatever is evicted",
        plural(busy, "busy partition"),
        if pods - busy == 1 {
            "1 is".to_string()
        } else {
            format!("{} are", pods - busy)
        }
    )
}

/// The explanation in one sentence: the fit, the best possible spread and the verdict.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons = self.reasons().join("; ");
        match (&self.verdict, self.fit, self.best_possible_spread) {
            (Verdict::Fixable | Verdict::KeySkew { .. } | Verdict::IdleConsumers { .. }, Some(fit), Some(best)) => {
                write!(
                    f,
                    "fit cpu = {} + {} × load, R² {:.2} over {}; best possible spread {best:.2}",
                    significant(fit.a),
                    significant(fit.b),
                    fit.r2.unwrap_or(0.0),
                    plural(self.eligible, "pod"),
                )?;
                if self.unfixable() {
                    write!(
                        f,
                        " > threshold {:.2}: no assignment balances the pods, no eviction can (unfixable): {reasons}",
                        self.threshold
                    )
                } else {
                    write!(
                        f,
                        " <= threshold {:.2}: an assignment that balances the pods exists (fixable)",
                        self.threshold
                    )
                }
            }
            (Verdict::Unexplained { .. } | Verdict::Missing, ..) => write!(f, "{reasons}: deciding on CPU alone"),
            _ => write!(f, "{reasons}"),
        }
    }
}

/// The plan's JSON `partitions`: the verdict and its reasons, the fit (`a`, `b`, `r2`),
/// the best possible spread, and each pod's load and partitions, heaviest first.
impl Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Explanation", 7)?;
        s.serialize_field("verdict", self.verdict.label())?;
        s.serialize_field("why", &self.reasons())?;
        s.serialize_field("a", &self.fit.map(|f| f.a))?;
        s.serialize_field("b", &self.fit.map(|f| f.b))?;
        s.serialize_field("r2", &self.r2())?;
        s.serialize_field("best_possible_spread", &self.best_possible_spread)?;
        s.serialize_field("pods", &PodsJson(self))?;
        s.end()
    }
}

struct PodsJson<'a>(&'a Explanation);

impl Serialize for PodsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Pod<'a> {
            name: &'a str,
            eligible: bool,
            load: f64,
            partitions: PartitionsJson<'a>,
        }
        let mut seq = serializer.serialize_seq(Some(self.0.pods.len()))?;
        for p in &self.0.pods {
            seq.serialize_element(&Pod {
                name: &p.name,
                eligible: p.eligible,
                load: p.load,
                partitions: PartitionsJson(self.0, &p.name),
            })?;
        }
        seq.end()
    }
}

struct PartitionsJson<'a>(&'a Explanation, &'a str);

impl Serialize for PartitionsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct One<'a> {
            partition: &'a str,
            load: f64,
        }
        serializer.collect_seq(
            self.0
                .partitions_of(self.1)
                .map(|(partition, load)| One { partition, load }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn labels() -> Vec<String> {
        vec!["topic".to_string(), "partition".to_string()]
    }

    /// One series of a test body: `(pod, topic, partition, value)`; `None` leaves a label out.
    type Wire<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);

    /// `(pod, partition, load)` as the tests write them.
    type Owning = Vec<(String, String, f64)>;

    /// A body of these series.
    fn body(series: &[Wire]) -> String {
        let result: Vec<String> = series
            .iter()
            .map(|(pod, topic, partition, value)| {
                let mut metric = vec![r#""__name__":"kafka_partition_rate""#.to_string()];
                for (name, v) in [("pod", pod), ("topic", topic), ("partition", partition)] {
                    if let Some(v) = v {
                        metric.push(format!(r#""{name}":"{v}""#));
                    }
                }
                format!(
                    r#"{{"metric":{{{}}},"value":[1796000105,"{value}"]}}"#,
                    metric.join(",")
                )
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        )
    }

    fn parse(json: &str, matched: &[&str]) -> Result<Answer, String> {
        crate::victoria::parse_partitions(json, &labels(), matched.iter().copied())
    }

    /// `(pod, partition, load)` for a fleet of pods named by `owned`'s first elements.
    fn answer(owned: &[(&str, &str, f64)]) -> Answer {
        Answer::new(owned.iter().copied()).expect("a valid answer")
    }

    // The parse rules.

    #[test]
    fn an_answer_splits_by_target_and_keeps_its_order() {
        let answer = Answer::new([
            ("a", "t/1", 1.0),
            ("b", "t/2", 2.0),
            ("a", "t/3", 3.0),
            ("c", "t/4", 4.0),
        ])
        .expect("an answer");
        let target = |pod: &str| match pod {
            "a" | "c" => Some(1),
            "b" => Some(0),
            _ => None,
        };
        let split = answer.split(2, target);
        let triples = |a: &Answer| {
            a.iter()
                .map(|(p, k, l)| (p.to_string(), k.to_string(), l))
                .collect::<Vec<_>>()
        };
        assert_eq!(triples(&split[0]), [("b".into(), "t/2".into(), 2.0)]);
        assert_eq!(
            triples(&split[1]),
            [
                ("a".into(), "t/3".into(), 3.0),
                ("a".into(), "t/1".into(), 1.0),
                ("c".into(), "t/4".into(), 4.0)
            ]
        );
        assert_eq!(split[1].partitions_of("c").count(), 1);
    }

    #[test]
    fn each_sample_is_a_pods_partition_keyed_by_its_labels() {
        let a = parse(
            &body(&[
                (Some("p0"), Some("events"), Some("7"), "1.25"),
                (Some("p0"), Some("events"), Some("3"), "0.25"),
                (Some("p1"), Some("events"), Some("1"), "0"),
            ]),
            &["p0", "p1"],
        )
        .unwrap();
        let got: Vec<(&str, &str, f64)> = a.iter().collect();
        assert_eq!(
            got,
            vec![
                ("p0", "events/7", 1.25),
                ("p0", "events/3", 0.25),
                ("p1", "events/1", 0.0)
            ]
        );
        assert_eq!(a.owners().collect::<Vec<_>>(), ["p0", "p1"]);
    }

    #[test]
    fn samples_of_pods_that_are_not_matched_are_ignored_unread() {
        let a = parse(
            &body(&[
                (Some("p0"), Some("events"), Some("7"), "2"),
                // Another consumer group: broken values and missing labels say nothing.
                (Some("other-0"), Some("events"), Some("7"), "NaN"),
                (Some("other-1"), None, Some("7"), "-5"),
                (Some("other-2"), Some("events"), Some("7"), "1e99"),
            ]),
            &["p0"],
        )
        .unwrap();
        assert_eq!(a.len(), 1);
        assert!(
            parse(&body(&[(Some("x"), Some("t"), Some("1"), "1")]), &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_sample_without_pod_or_a_partition_label_is_malformed() {
        for (series, words) in [
            (
                (None, Some("events"), Some("7"), "1"),
                "expected every sample to carry the label pod, got one without it (topic=\"events\", partition=\"7\")",
            ),
            ((Some(""), Some("events"), Some("7"), "1"), "the label pod"),
            (
                (Some("p0"), None, Some("7"), "1"),
                "pod p0: expected the label topic that names a partition, got a sample without it (topic absent, partition=\"7\")",
            ),
            (
                (Some("p0"), Some("events"), Some(""), "1"),
                "expected the label partition",
            ),
        ] {
            let e = parse(&body(&[series]), &["p0"]).unwrap_err();
            assert!(e.contains(words), "{words}: {e}");
        }
    }

    #[test]
    fn a_matched_pods_load_is_a_finite_number_from_0_to_a_billion() {
        for (value, words) in [
            ("x", "expected a number, got \"x\""),
            ("1,5", "expected a number"),
            ("NaN", "expected a finite load, got \"NaN\""),
            ("+Inf", "expected a finite load"),
            ("-Inf", "expected a finite load"),
            ("1e999", "expected a finite load"),
            ("-0.001", "expected a load >= 0, got \"-0.001\""),
            ("1000000000.5", "expected a load of at most 1000000000"),
        ] {
            let e = parse(&body(&[(Some("p0"), Some("events"), Some("7"), value)]), &["p0"]).unwrap_err();
            assert!(e.contains(words), "{value}: {e}");
            assert!(e.starts_with("pod p0, partition events/7: "), "{e}");
        }
        for (value, load) in [("1000000000", 1e9), ("0", 0.0), ("-0", 0.0), ("2.5e-3", 0.0025)] {
            let a = parse(&body(&[(Some("p0"), Some("events"), Some("7"), value)]), &["p0"]).unwrap();
            let got = a.iter().next().map(|s| s.2);
            assert_eq!(got, Some(load), "{value}");
            assert!(got.is_some_and(|l| l.is_sign_positive()), "-0 is 0");
        }
    }

    #[test]
    fn a_histogram_or_a_sample_given_twice_is_malformed() {
        let histogram = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"p0","topic":"t","partition":"1"},"histogram":[1,{"count":"1"}]}]}}"#;
        assert!(
            parse(histogram, &["p0"])
                .unwrap_err()
                .contains("pod p0, partition t/1: expected a float sample, got none")
        );
        let twice = body(&[
            (Some("p0"), Some("t"), Some("1"), "1"),
            (Some("p0"), Some("t"), Some("1"), "2"),
        ]);
        assert!(
            parse(&twice, &["p0"])
                .unwrap_err()
                .contains("pod p0, partition t/1: expected one sample per pod and partition, got several")
        );
        let two_pods = body(&[
            (Some("p0"), Some("t"), Some("1"), "1"),
            (Some("p1"), Some("t"), Some("1"), "2"),
        ]);
        assert_eq!(
            parse(&two_pods, &["p0", "p1"]).unwrap().len(),
            2,
            "two pods owning one partition is the gate's to judge, not a malformed body"
        );
    }

    #[test]
    fn the_envelope_is_judged_before_the_samples() {
        for (body, words) in [
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                "parse error (bad_data)",
            ),
            (
                r#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
                "isPartial",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "expected resultType vector, got matrix",
            ),
            ("[]", "expected a Prometheus query answer"),
        ] {
            let e = parse(body, &["p0"]).unwrap_err();
            assert!(e.contains(words), "{words}: {e}");
        }
        // Whichever comes first on the wire.
        let reversed = r#"{"data":{"result":[{"metric":{"pod":"p0","topic":"t","partition":"1"},"value":[1,"4"]}],"resultType":"vector"},"status":"success"}"#;
        assert_eq!(
            parse(reversed, &["p0"]).unwrap().iter().next(),
            Some(("p0", "t/1", 4.0))
        );
    }

    #[test]
    fn labels_are_any_names_in_their_order() {
        let json = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"partition":"3","pod":"p0","group":"g","topic":"t"},"value":[1,"2"]}]}}"#;
        let labels = ["group".to_string(), "topic".to_string(), "partition".to_string()];
        let a = crate::victoria::parse_partitions(json, &labels, ["p0"]).unwrap();
        assert_eq!(a.iter().next(), Some(("p0", "g/t/3", 2.0)));
    }

    #[test]
    fn an_owned_partition_takes_32_bytes_beside_its_key() {
        assert!(std::mem::size_of::<Owned>() <= 32, "{}", std::mem::size_of::<Owned>());
    }

    // The fit.

    #[test]
    fn the_fit_of_a_line_is_the_line() {
        let points: Vec<(f64, f64)> = (0..6).map(|i| (i as f64, 0.5 + 2.0 * i as f64)).collect();
        let f = fit(&points).unwrap();
        assert!(close(f.a, 0.5) && close(f.b, 2.0), "{f:?}");
        assert!(close(f.r2.unwrap(), 1.0));
    }

    #[test]
    fn r_squared_is_a_textbook_value() {
        // x 1..5, y 2,4,5,4,5: b = 0.6, a = 2.2, R² = 3.6 / 6.0 = 0.6.
        let f = fit(&[(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)]).unwrap();
        assert!(close(f.b, 0.6) && close(f.a, 2.2), "{f:?}");
        assert!(close(f.r2.unwrap(), 0.6), "{f:?}");
    }

    #[test]
    fn the_fits_degenerate_cases() {
        assert_eq!(fit(&[]), None, "no point");
        assert_eq!(fit(&[(1.0, 2.0)]), None, "one point");
        assert_eq!(fit(&[(0.1, 1.0), (0.1, 2.0), (0.1, 3.0)]), None, "one abscissa");
        let flat = fit(&[(1.0, 0.7), (2.0, 0.7), (3.0, 0.7)]).unwrap();
        assert_eq!((flat.b, flat.r2), (0.0, None), "equal CPU: R² undefined");
        assert!(close(flat.a, 0.7));
        // Large loads close together keep their precision about the means.
        let f = fit(&[(1e9, 1.0), (1e9 + 1.0, 2.0), (1e9 + 2.0, 3.0)]).unwrap();
        assert!(close(f.b, 1.0) && close(f.r2.unwrap(), 1.0), "{f:?}");
        let anti = fit(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]).unwrap();
        assert!(anti.b < 0.0 && close(anti.r2.unwrap(), 1.0), "R² is blind to the sign");
    }

    // The best split.

    #[test]
    fn water_filling_gives_the_heavy_partitions_a_pod_each() {
        // SPEC §12's first example: T = 5, fair 0.625; 1.25 alone, 3.75 over 7 pods.
        let mut loads = vec![0.25; 15];
        loads.push(1.25);
        let s = best_split(8, &loads);
        assert_eq!((s.alone, s.busy), (1, 16));
        assert_eq!(s.loads[0], 1.25);
        assert!(s.loads[1..].iter().all(|l| close(*l, 3.75 / 7.0)), "{s:?}");
        // The second: ten busy partitions, twelve pods.
        let s = best_split(12, &[1.0; 10]);
        assert_eq!((s.alone, s.busy), (0, 10));
        assert_eq!(s.loads, [vec![1.0; 10], vec![0.0; 2]].concat());
    }

    #[test]
    fn the_splits_degenerate_cases() {
        assert_eq!(best_split(0, &[1.0, 2.0]).loads, Vec::<f64>::new(), "no pod");
        let s = best_split(3, &[0.0, 0.0]);
        assert_eq!((s.loads, s.alone, s.busy), (vec![0.0; 3], 0, 0), "nothing busy");
        let s = best_split(1, &[5.0, 1.0]);
        assert_eq!((s.loads, s.alone), (vec![6.0], 0), "one pod takes everything");
        let s = best_split(2, &[9.0, 1.0, 1.0]);
        assert_eq!((s.loads, s.alone), (vec![9.0, 2.0], 1), "k stops before the last pod");
        let s = best_split(3, &[0.1; 6]);
        assert_eq!(
            s.alone, 0,
            "a partition that is the share but for rounding is not alone"
        );
        assert!(s.loads.iter().all(|l| close(*l, 0.2)), "{s:?}");
    }

    // The explanation.

    /// Pods p0… with CPU `0.01 + load` from the partitions `owned` gives them.
    fn fleet(n: usize, owned: &[(usize, f64)]) -> (Vec<String>, Vec<f64>, Owning) {
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let mut load = vec![0.0; n];
        let samples: Vec<(String, String, f64)> = owned
            .iter()
            .enumerate()
            .map(|(j, (pod, l))| {
                load[*pod] += l;
                (names[*pod].clone(), format!("t/{j}"), *l)
            })
            .collect();
        let cpu = load.iter().map(|l| 0.01 + l).collect();
        (names, cpu, samples)
    }

    fn explained(names: &[String], cpu: &[f64], samples: &[(String, String, f64)]) -> Explanation {
        let answer = answer(
            &samples
                .iter()
                .map(|(p, k, l)| (p.as_str(), k.as_str(), *l))
                .collect::<Vec<_>>(),
        );
        let eligible: Vec<(&str, f64)> = names.iter().map(String::as_str).zip(cpu.iter().copied()).collect();
        explain(answer, &eligible, &[], 0.3)
    }

    #[test]
    fn eight_pods_on_sixteen_partitions_one_hot_is_key_skew() {
        // 15 at 0.25 and one at 1.25: p0 holds the hot one and one more, the others two.
        let mut owned = vec![(0, 1.25), (0, 0.25)];
        owned.extend((1..8).flat_map(|p| [(p, 0.25), (p, 0.25)]));
        let (names, cpu, samples) = fleet(8, &owned);
        let e = explained(&names, &cpu, &samples);
        let f = e.fit.unwrap();
        assert!(
            close(f.a, 0.01) && close(f.b, 1.0) && close(f.r2.unwrap(), 1.0),
            "{f:?}"
        );
        let best = e.best_possible_spread.unwrap();
        assert_eq!(format!("{best:.2}"), "0.37");
        let Verdict::KeySkew {
            partition, cores, idle, ..
        } = &e.verdict
        else {
            panic!("{e:?}")
        };
        assert_eq!((partition.as_str(), idle), ("t/0", &None));
        assert!(close(*cores, 1.26));
        assert_eq!(
            e.reasons(),
            ["partition t/0 alone burns 1.26 cores, 2.0× a fair share (key skew)"]
        );
        assert!(e.unfixable() && e.explains());
    }

    #[test]
    fn twelve_pods_on_ten_partitions_are_idle_consumers() {
        let owned: Vec<(usize, f64)> = (0..10).map(|p| (p, 1.0)).collect();
        let (names, cpu, samples) = fleet(12, &owned);
        let e = explained(&names, &cpu, &samples);
        assert_eq!(format!("{:.2}", e.best_possible_spread.unwrap()), "0.44");
        assert_eq!(e.verdict, Verdict::IdleConsumers { pods: 12, busy: 10 });
        assert_eq!(
            e.reasons(),
            ["12 pods share 10 busy partitions: 2 are idle whatever is evicted"]
        );
        assert_eq!(e.verdict.label(), "idle_consumers");
    }

    #[test]
    fn a_hot_partition_on_too_few_partitions_says_both() {
        // Four busy partitions, one of them hot, on six pods.
        let (names, cpu, samples) = fleet(6, &[(0, 4.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
        let e = explained(&names, &cpu, &samples);
        assert!(
            matches!(e.verdict, Verdict::KeySkew { idle: Some((6, 4)), .. }),
            "{e:?}"
        );
        let why = e.reasons();
        assert_eq!(why.len(), 2, "{why:?}");
        assert_eq!(why[1], "6 pods share 4 busy partitions: 2 are idle whatever is evicted");
    }

    #[test]
    fn two_busy_partitions_on_one_pod_are_fixable() {
        let (names, cpu, samples) = fleet(4, &[(0, 1.0), (0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
        let e = explained(&names, &cpu, &samples);
        assert_eq!(e.verdict, Verdict::Fixable, "{e:?}");
        assert!(e.best_possible_spread.unwrap() < 0.3);
        assert!(e.to_string().contains("(fixable)"), "{e}");
    }

    #[test]
    fn a_load_that_does_not_explain_the_cpu_says_why() {
        let names: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
        let samples: Vec<(String, String, f64)> = (0..4)
            .map(|i| (names[i].clone(), format!("t/{i}"), [1.0, 2.0, 3.0, 4.0][i]))
            .collect();
        for (cpu, words) in [
            (vec![0.2, 1.0, 0.2, 1.0], "partition load does not explain CPU, R² 0.20"),
            (
                vec![4.0, 3.0, 2.0, 1.0],
                "partition load does not explain CPU: CPU does not grow with the load (b -1.00), R² 1.00",
            ),
            (
                vec![1.0; 4],
                "partition load does not explain CPU: every pod's CPU is the same, R² undefined",
            ),
        ] {
            let e = explained(&names, &cpu, &samples);
            assert_eq!(e.verdict, Verdict::Unexplained { why: words.into() }, "{cpu:?}");
            assert_eq!(e.best_possible_spread, None);
        }
        let same: Vec<(String, String, f64)> = (0..4).map(|i| (names[i].clone(), format!("t/{i}"), 2.0)).collect();
        let e = explained(&names, &[1.0, 2.0, 3.0, 4.0], &same);
        assert_eq!(
            e.reasons(),
            ["partition load does not explain CPU: every pod's load is the same"]
        );
        assert_eq!(e.fit, None);
        let e = explained(&names[..3], &[1.0, 2.0, 3.0], &samples[..3]);
        assert_eq!(
            e.reasons(),
            ["partition load does not explain CPU: 3 pods eligible, at least 4 needed"]
        );
        assert!(e.r2().is_some(), "a fit exists, and its R² is exported");
    }

    #[test]
    fn no_partition_of_an_eligible_pod_is_the_signal_missing() {
        let names = ["p0".to_string(), "p1".to_string()];
        let e = explained(&names, &[1.0, 2.0], &[]);
        assert_eq!((e.verdict.label(), e.fit), ("missing", None));
        assert!(
            e.to_string().ends_with("(signal missing): deciding on CPU alone"),
            "{e}"
        );
    }

    #[test]
    fn a_partition_owned_twice_or_by_an_ineligible_pod_is_moving() {
        let samples = answer(&[("p0", "t/1", 1.0), ("p1", "t/1", 1.0), ("p1", "t/2", 1.0)]);
        let e = explain(samples, &[("p0", 1.0), ("p1", 2.0)], &[], 0.3);
        assert_eq!(
            e.verdict,
            Verdict::Moving {
                partition: "t/1".into(),
                owners: vec!["p0".into(), "p1".into()]
            }
        );
        assert_eq!(e.reasons(), ["partitions moving: partition t/1 is owned by p0 and p1"]);
        assert_eq!(e.owner_of("t/1"), None, "owned twice: no one owner");
        assert_eq!(e.owner_of("t/2"), Some("p1"));
        let samples = answer(&[("p0", "t/1", 1.0), ("crashed", "t/2", 1.0), ("stranger", "t/3", 1.0)]);
        let e = explain(samples, &[("p0", 1.0), ("p1", 2.0)], &["crashed"], 0.3);
        assert_eq!(
            e.reasons(),
            ["partitions moving: partition t/2 is owned by crashed, which is not eligible"]
        );
        assert_eq!(
            e.pods.last().map(|p| (p.name.as_str(), p.eligible)),
            Some(("crashed", false))
        );
    }

    #[test]
    fn the_caller_can_follow_a_partition() {
        let (names, cpu, samples) = fleet(4, &[(0, 3.0), (0, 5.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
        let e = explained(&names, &cpu, &samples);
        assert_eq!(e.heaviest_partition("p0"), Some("t/1"));
        assert_eq!(e.owner_of("t/1"), Some("p0"));
        assert_eq!(e.heaviest_partition("nobody"), None);
        assert_eq!(e.owner_of("t/99"), None);
        assert_eq!(e.pods[0].load, 8.0);
        assert_eq!(e.pods[0].partitions, 2);
    }

    #[test]
    fn the_json_carries_the_fit_the_verdict_and_each_pods_partitions() {
        let (names, cpu, samples) = fleet(4, &[(0, 3.0), (0, 5.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
        let json = serde_json::to_value(explained(&names, &cpu, &samples)).unwrap();
        assert_eq!(json["verdict"], "key_skew");
        assert!(
            json["a"].is_f64() && json["b"].is_f64() && json["r2"].is_f64(),
            "{json}"
        );
        assert!(json["best_possible_spread"].as_f64().is_some_and(|b| b > 0.3));
        assert_eq!(json["pods"][0]["name"], "p0");
        assert_eq!(json["pods"][0]["load"], 8.0);
        assert_eq!(json["pods"][0]["partitions"][0]["partition"], "t/1");
        assert_eq!(json["pods"][0]["partitions"][1]["load"], 3.0);
        assert_eq!(
            json["why"][0],
            "partition t/1 alone burns 5.01 cores, 1.8× a fair share (key skew)"
        );
    }

    #[test]
    fn significant_digits_without_exponents() {
        assert_eq!(significant(0.001), "0.00100");
        assert_eq!(significant(1.2345), "1.23");
        assert_eq!(significant(1234.5), "1234");
        assert_eq!(significant(-0.5), "-0.500");
        assert_eq!(significant(0.0), "0");
        assert_eq!(significant(0.0099999999), "0.0100", "rounding up adds no digit");
        assert_eq!(significant(999.9), "1000");
    }
}
