//! The run's metrics in the Prometheus text format: built as a string without I/O
//! (`render`), written atomically to `METRICS_FILE` (`write_atomic`); the caller also
//! POSTs the same text to `METRICS_PUSH_URL`.
//!
//! Counters carry on across runs. With a state ConfigMap they are what the run stored
//! there, and a run that stored none exports none (SPEC §11 "Counters"): an exported
//! counter never goes down. Without one, the previous metrics file's values are the
//! starting point; a previous file that cannot be parsed is ignored with a warning
//! (`read_previous`) and the counters restart, as a scraper would see after a reset.
//!
//! One text holds one run's samples for every target it served (one in single mode,
//! each target of a fleet, SPEC §13): every family is written once, with a sample per
//! target, as the exposition format wants.

use crate::error::Error;
use crate::outcome::{self, Ended, Outcome, Refusal, Stage};
use crate::stats::Stats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The largest counter a document or a previous file may hold, 2^50: far below 2^53,
/// beyond which an f64 no longer counts in ones, so that adding a run never rounds.
/// A counter stops there (a million years of runs).
pub const MAX_COUNTER: f64 = 1_125_899_906_842_624.0;

/// The counters (and the last success and failure times) that carry over from one run
/// to the next: in the state ConfigMap's document, or read back from the previous
/// metrics file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub success: f64,
    pub error: f64,
    pub analyzed: f64,
    pub deleted_highest: f64,
    pub deleted_lowest: f64,
    pub last_success: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<f64>,
    /// `rebalancer_errors_total` by stage; a stage without an entry is at 0.
    pub errors: BTreeMap<Stage, f64>,
    /// `rebalancer_removals_refused_total` by reason; a reason without an entry is at 0.
    pub refused: BTreeMap<Refusal, f64>,
}

impl Counters {
    /// These counters after `run`: what the metrics of `run` show, and what the next
    /// run carries on from.
    pub fn after(&self, run: &Run) -> Counters {
        let mut next = self.clone();
        if run.ok() {
            next.success += 1.0;
            next.last_success = Some(run.end);
        } else {
            next.error += 1.0;
            next.last_failure = Some(run.end);
        }
        if let Err(stage) = run.ended {
            *next.errors.entry(stage).or_default() += 1.0;
        }
        next.analyzed += run.analyzed as f64;
        next.deleted_highest += run.deleted_highest as f64;
        next.deleted_lowest += run.deleted_lowest as f64;
        for refusal in &run.refused {
            *next.refused.entry(*refusal).or_default() += 1.0;
        }
        for n in [
            &mut next.success,
            &mut next.error,
            &mut next.analyzed,
            &mut next.deleted_highest,
            &mut next.deleted_lowest,
        ]
        .into_iter()
        .chain(next.errors.values_mut())
        .chain(next.refused.values_mut())
        {
            *n = n.min(MAX_COUNTER);
        }
        next
    }

    /// `Err` names a counter that is not a whole number in [0, 2^50], or a time that
    /// is not finite.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("success", self.success),
            ("error", self.error),
            ("analyzed", self.analyzed),
            ("deleted_highest", self.deleted_highest),
            ("deleted_lowest", self.deleted_lowest),
        ]
        .into_iter()
        .chain(self.errors.iter().map(|(stage, n)| (stage.label(), *n)))
        .chain(self.refused.iter().map(|(r, n)| (r.label(), *n)));
        for (what, n) in counts {
            if !(n.is_finite() && (0.0..=MAX_COUNTER).contains(&n) && n.fract() == 0.0) {
                return Err(format!(
                    "expected counter {what} to be a whole number in [0, 2^50], got {n}"
                ));
            }
        }
        for (what, t) in [("last_success", self.last_success), ("last_failure", self.last_failure)] {
            if let Some(t) = t.filter(|t| !t.is_finite()) {
                return Err(format!("expected {what} to be a finite time, got {t}"));
            }
        }
        Ok(())
    }
}

/// The labels every sample of one target carries: `namespace`, `deployment` (absent
/// on samples about a fleet run rather than one target) and the constant labels of
/// `METRICS_LABELS`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Labels {
    pub namespace: String,
    pub deployment: Option<String>,
    /// `METRICS_LABELS`, in order; validated names, values without `"`, `\` or newlines.
    pub extra: Vec<(String, String)>,
}

impl Labels {
    fn render(&self) -> String {
        let mut out = format!("namespace=\"{}\"", self.namespace);
        if let Some(d) = &self.deployment {
            let _ = write!(out, ",deployment=\"{d}\"");
        }
        for (k, v) in &self.extra {
            let _ = write!(out, ",{k}=\"{v}\"");
        }
        out
    }
}

/// The settings a target ran with: `rebalancer_config_info`'s labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub dry_run: bool,
    pub eviction_mode: &'static str,
    pub container: String,
    pub window_secs: u64,
    pub threshold: f64,
    pub min_pods: usize,
    pub max_ineffective: u32,
}

/// One target's run, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub labels: Labels,
    /// The outcome of a completed run, or the stage a failed run failed in.
    pub ended: Ended,
    /// Pods the label selector matched, when the list was read.
    pub matched: Option<usize>,
    pub analyzed: usize,
    pub deleted_highest: usize,
    pub deleted_lowest: usize,
    pub stats: Option<Stats>,
    pub threshold: f64,
    pub duration_secs: f64,
    /// Unix seconds at the end of the run.
    pub end: f64,
    /// Removals the API server refused, dry runs included.
    pub refused: Vec<Refusal>,
    /// The memory's gauges; `None` without a state ConfigMap (or without a readable one).
    pub memory: Option<MemoryGauges>,
    /// The settings it ran with; `None` for a fleet run that failed before it knew
    /// its targets.
    pub info: Option<Info>,
    /// The partition signal's gauges; `None` without a partition answer.
    pub partitions: Option<PartitionGauges>,
}

/// What the partition signal exports (SPEC §12): R² whenever a fit exists (and the
/// pods' CPU is not all equal), the best possible spread only when the load explains
/// the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PartitionGauges {
    pub r2: Option<f64>,
    pub best_possible_spread: Option<f64>,
}

impl PartitionGauges {
    pub fn of(explanation: &crate::partition::Explanation) -> PartitionGauges {
        PartitionGauges {
            r2: explanation.r2(),
            best_possible_spread: explanation.best_possible_spread.filter(|_| explanation.explains()),
        }
    }
}

/// What the memory exports (README "Memory").
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MemoryGauges {
    pub streak: u32,
    /// The end of the current hold; `None` when the breaker is closed.
    pub hold_until: Option<i64>,
    /// Of the last evaluated action: spread after / before, and whether the hot spot
    /// moved to another pod. `None` before any action was evaluated.
    pub last_effect: Option<(f64, bool)>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.ended.is_ok()
    }
}

/// One target's samples: its run, and the counters it exports (`None`: none, the run
/// stored none).
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub run: Run,
    pub counters: Option<Counters>,
}

/// Everything one text holds: a sample set per target and, in fleet mode, the count of
/// targets by outcome (`rebalancer_targets`, labelled without a deployment).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sheet {
    pub targets: Vec<Exported>,
    pub fleet: Option<(Labels, BTreeMap<&'static str, usize>)>,
}

impl Sheet {
    /// The sheet of one target.
    pub fn single(run: Run, counters: Option<Counters>) -> Sheet {
        Sheet {
            targets: vec![Exported { run, counters }],
            fleet: None,
        }
    }
}

const EXECUTIONS: &str = "rebalancer_executions_total";
const ANALYZED: &str = "rebalancer_pods_analyzed_total";
const DELETED: &str = "rebalancer_pods_deleted_total";
const LAST_SUCCESS: &str = "rebalancer_last_success_timestamp_seconds";
const LAST_FAILURE: &str = "rebalancer_last_failure_timestamp_seconds";
const ERRORS: &str = "rebalancer_errors_total";
const MATCHED: &str = "rebalancer_pods_matched";
const DURATION: &str = "rebalancer_execution_duration_seconds";
const SPREAD: &str = "rebalancer_cpu_variance_current";
const THRESHOLD: &str = "rebalancer_cpu_variance_threshold";
const MEAN: &str = "rebalancer_cpu_usage_mean";
const STDDEV: &str = "rebalancer_cpu_usage_stddev";
const LAST_RUN: &str = "rebalancer_last_run_timestamp_seconds";
const OUTCOME: &str = "rebalancer_cycle_outcome";
const BUILD_INFO: &str = "rebalancer_build_info";
const CONFIG_INFO: &str = "rebalancer_config_info";
const MAX_INEFFECTIVE: &str = "rebalancer_max_ineffective_actions";
const REFUSED: &str = "rebalancer_removals_refused_total";
const STREAK: &str = "rebalancer_ineffective_streak";
const HOLD_UNTIL: &str = "rebalancer_breaker_open_until_timestamp_seconds";
const EFFECT: &str = "rebalancer_last_action_effect_ratio";
const HOT_SPOT: &str = "rebalancer_last_action_hot_spot_moved";
const FIT_R2: &str = "rebalancer_partition_fit_r2";
const BEST_SPREAD: &str = "rebalancer_best_possible_spread";
const TARGETS: &str = "rebalancer_targets";

/// The label names a metric family gives its samples beside the target's: the only
/// labels a previous file's sample keeps when it is read back.
const FAMILY_LABELS: [&str; 4] = ["status", "type", "stage", "reason"];

/// A sample's key as `parse_previous` files it: `name{family labels}`, without the
/// target's and the constant labels, and the value of its `deployment` label.
fn key_of(key: &str) -> (String, String) {
    let Some((name, labels)) = key.strip_suffix('}').and_then(|k| k.split_once('{')) else {
        return (key.to_string(), String::new());
    };
    let mut deployment = String::new();
    let mut kept = Vec::new();
    for label in labels.split(',') {
        let Some((k, v)) = label.split_once('=') else { continue };
        if k == "deployment" {
            deployment = v.trim_matches('"').to_string();
        } else if FAMILY_LABELS.contains(&k) {
            kept.push(label);
        }
    }
    let key = if kept.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", kept.join(","))
    };
    (key, deployment)
}

/// Reads the counters of a previous run's text, by the `deployment` label of their
/// samples ("" for samples without one). `Err` says why it is not ours.
pub fn parse_previous(text: &str) -> Result<BTreeMap<String, Counters>, String> {
    let mut values: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            return Err(format!("line {}: expected `name value`, got {line:?}", i + 1));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| format!("line {}: expected a number, got {value:?}", i + 1))?;
        if !value.is_finite() || !(0.0..=MAX_COUNTER).contains(&value) {
            return Err(format!(
                "line {}: expected a finite number in [0, 2^50], got {value}",
                i + 1
            ));
        }
        let (key, deployment) = key_of(key.trim());
        values.entry(deployment).or_default().insert(key, value);
    }
    if !values
        .values()
        .flat_map(|v| v.keys())
        .any(|k| k.starts_with("rebalancer_"))
    {
        return Err("no rebalancer_ metric in it".into());
    }
    Ok(values
        .into_iter()
        .map(|(deployment, values)| (deployment, counters_of(&values)))
        .collect())
}

fn counters_of(values: &BTreeMap<String, f64>) -> Counters {
    // Counters are whole: a fraction (hand-written, or not ours) is cut, not carried.
    let get = |k: &str| values.get(k).copied().unwrap_or(0.0).trunc();
    Counters {
        success: get(&format!("{EXECUTIONS}{{status=\"success\"}}")),
        error: get(&format!("{EXECUTIONS}{{status=\"error\"}}")),
        analyzed: get(ANALYZED),
        deleted_highest: get(&format!("{DELETED}{{type=\"highest_cpu\"}}")),
        deleted_lowest: get(&format!("{DELETED}{{type=\"lowest_cpu\"}}")),
        last_success: values.get(LAST_SUCCESS).copied(),
        last_failure: values.get(LAST_FAILURE).copied(),
        errors: Stage::ALL
            .into_iter()
            .map(|stage| (stage, get(&format!("{ERRORS}{{stage=\"{stage}\"}}"))))
            .collect(),
        refused: Refusal::ALL
            .into_iter()
            .map(|r| (r, get(&format!("{REFUSED}{{reason=\"{}\"}}", r.label()))))
            .collect(),
    }
}

/// The exposition text being written: each family's `# HELP` and `# TYPE`, then one
/// sample per target, each with the target's labels first, without timestamps.
struct Text<'a> {
    out: String,
    /// Each target's rendered labels, beside its samples.
    targets: Vec<(String, &'a Exported)>,
}

impl<'a> Text<'a> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A family with one sample per target that has a value for it (none: the family
    /// is left out).
    fn each<V: std::fmt::Display>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        value: impl Fn(&'a Exported) -> Option<V>,
    ) {
        let values: Vec<(usize, V)> = (self.targets.iter().enumerate())
            .filter_map(|(i, (_, e))| Some((i, value(e)?)))
            .collect();
        if values.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for (i, v) in values {
            let _ = writeln!(self.out, "{name}{{{}}} {v}", self.targets[i].0);
        }
    }

    /// A family with one sample per target and value of `label`, for the targets that
    /// have values for it.
    fn each_labelled<V: std::fmt::Display>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        label: &str,
        values: impl Fn(&'a Exported) -> Option<Vec<(String, V)>>,
    ) {
        let rows: Vec<(usize, Vec<(String, V)>)> = (self.targets.iter().enumerate())
            .filter_map(|(i, (_, e))| Some((i, values(e)?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for (i, values) in rows {
            for (value, sample) in values {
                let _ = writeln!(self.out, "{name}{{{},{label}=\"{value}\"}} {sample}", self.targets[i].0);
            }
        }
    }
}

/// The exposition text of a sheet.
pub fn render(sheet: &Sheet) -> String {
    let mut text = Text {
        out: String::with_capacity(4096 * sheet.targets.len().max(1)),
        targets: sheet.targets.iter().map(|e| (e.run.labels.render(), e)).collect(),
    };
    text.each_labelled(
        (
            BUILD_INFO,
            "gauge",
            "1, labelled with the version of pod-rebalancer that ran.",
        ),
        "version",
        |_| Some(vec![(env!("CARGO_PKG_VERSION").to_string(), 1)]),
    );
    counters(&mut text);
    gauges(&mut text);
    memory(&mut text);
    if let Some((labels, counts)) = &sheet.fleet {
        text.family(TARGETS, "gauge", "Targets of this fleet run by outcome.");
        let labels = labels.render();
        for label in Outcome::ALL.map(Outcome::label).into_iter().chain([outcome::ERROR]) {
            let n = counts.get(label).copied().unwrap_or(0);
            let _ = writeln!(text.out, "{TARGETS}{{{labels},outcome=\"{label}\"}} {n}");
        }
    }
    text.out
}

/// The counters, of the targets that export them.
fn counters<'a>(t: &mut Text<'a>) {
    let c = |e: &'a Exported| e.counters.as_ref();
    t.each_labelled(
        (EXECUTIONS, "counter", "Runs of pod-rebalancer by result."),
        "status",
        |e| c(e).map(|c| vec![("success".into(), c.success), ("error".into(), c.error)]),
    );
    t.each_labelled(
        (ERRORS, "counter", "Failed runs by the stage that failed."),
        "stage",
        |e| {
            c(e).map(|c| {
                Stage::ALL
                    .map(|s| (s.label().to_string(), c.errors.get(&s).copied().unwrap_or(0.0)))
                    .to_vec()
            })
        },
    );
    t.each((ANALYZED, "counter", "Eligible pods whose CPU was analyzed."), |e| {
        c(e).map(|c| c.analyzed)
    });
    t.each_labelled(
        (
            DELETED,
            "counter",
            "Pods removed (evicted or deleted) by pod-rebalancer; never counts dry runs.",
        ),
        "type",
        |e| {
            c(e).map(|c| {
                vec![
                    ("highest_cpu".into(), c.deleted_highest),
                    ("lowest_cpu".into(), c.deleted_lowest),
                ]
            })
        },
    );
    t.each_labelled(
        (
            REFUSED,
            "counter",
            "Removals the API server refused, dry runs included, by reason.",
        ),
        "reason",
        |e| {
            c(e).map(|c| {
                Refusal::ALL
                    .map(|r| (r.label().to_string(), c.refused.get(&r).copied().unwrap_or(0.0)))
                    .to_vec()
            })
        },
    );
}

/// The memory's gauges, of the targets that have a memory.
fn memory(t: &mut Text) {
    let m = |e: &Exported| e.run.memory;
    t.each(
        (STREAK, "gauge", "Consecutive actions that did not lower the spread."),
        |e| m(e).map(|m| m.streak),
    );
    t.each(
        (
            HOLD_UNTIL,
            "gauge",
            "End of the current hold of the breaker, Unix seconds; 0 when it is closed.",
        ),
        |e| m(e).map(|m| m.hold_until.unwrap_or(0)),
    );
    t.each(
        (
            EFFECT,
            "gauge",
            "Spread after / spread before, of the last evaluated action.",
        ),
        |e| m(e).and_then(|m| m.last_effect).map(|(ratio, _)| ratio),
    );
    t.each(
        (
            HOT_SPOT,
            "gauge",
            "1 when the last evaluated action's hot spot moved to another pod, else 0.",
        ),
        |e| m(e).and_then(|m| m.last_effect).map(|(_, moved)| u8::from(moved)),
    );
}

/// The gauges: this run's figures; the statistics only when the run computed them.
fn gauges(t: &mut Text) {
    t.each(
        (MATCHED, "gauge", "Pods the label selector matched in the last run."),
        |e| e.run.matched,
    );
    t.each((DURATION, "gauge", "Duration of the last run."), |e| {
        Some(e.run.duration_secs)
    });
    let stats = |e: &Exported| e.run.stats;
    t.each(
        (SPREAD, "gauge", "Spread of pod CPU: stddev / mean over eligible pods."),
        |e| stats(e).map(|s| s.spread),
    );
    t.each(
        (
            THRESHOLD,
            "gauge",
            "Configured spread threshold (CPU_VARIANCE_THRESHOLD).",
        ),
        |e| e.run.info.as_ref().map(|_| e.run.threshold),
    );
    t.each((MEAN, "gauge", "Mean CPU of eligible pods, cores."), |e| {
        stats(e).map(|s| s.mean)
    });
    t.each(
        (
            STDDEV,
            "gauge",
            "Population standard deviation of eligible pods' CPU, cores.",
        ),
        |e| stats(e).map(|s| s.stddev),
    );
    t.each(
        (
            BEST_SPREAD,
            "gauge",
            "The most even spread any assignment of the partitions could reach (when their load explains the CPU).",
        ),
        |e| e.run.partitions.and_then(|p| p.best_possible_spread),
    );
    t.each(
        (
            FIT_R2,
            "gauge",
            "R² of cpu = a + b × load over eligible pods: how much of their CPU their partitions' load explains.",
        ),
        |e| e.run.partitions.and_then(|p| p.r2),
    );
    t.each((LAST_RUN, "gauge", "End of the last run, Unix seconds."), |e| {
        Some(e.run.end)
    });
    last_times(t);
    t.each_labelled(
        (OUTCOME, "gauge", "1 for the outcome of the last run, 0 for the others."),
        "outcome",
        |e| {
            let this_run = outcome::label(e.run.ended);
            Some(
                Outcome::ALL
                    .map(Outcome::label)
                    .into_iter()
                    .chain([outcome::ERROR])
                    .map(|label| (label.to_string(), u8::from(label == this_run)))
                    .collect(),
            )
        },
    );
    config(t);
}

/// The last success and failure: as stored with the counters, else this run's.
fn last_times(t: &mut Text) {
    let last = |e: &Exported, ok: bool| match &e.counters {
        Some(c) if ok => c.last_success,
        Some(c) => c.last_failure,
        None => (e.run.ok() == ok).then_some(e.run.end),
    };
    t.each(
        (LAST_SUCCESS, "gauge", "End of the last successful run, Unix seconds."),
        |e| last(e, true),
    );
    t.each(
        (LAST_FAILURE, "gauge", "End of the last failed run, Unix seconds."),
        |e| last(e, false),
    );
}

/// `rebalancer_config_info` and `rebalancer_max_ineffective_actions`.
fn config<'a>(t: &mut Text<'a>) {
    let rows: Vec<(usize, &Info)> = (t.targets.iter().enumerate())
        .filter_map(|(n, (_, e))| Some((n, e.run.info.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    t.family(CONFIG_INFO, "gauge", "1, labelled with the settings this run used.");
    for &(n, i) in &rows {
        let labels = &t.targets[n].0;
        let _ = writeln!(
            t.out,
            "{CONFIG_INFO}{{{labels},dry_run=\"{}\",eviction_mode=\"{}\",container=\"{}\",window=\"{}s\",threshold=\"{}\",min_pods=\"{}\",max_ineffective_actions=\"{}\",version=\"{}\"}} 1",
            i.dry_run,
            i.eviction_mode,
            i.container,
            i.window_secs,
            i.threshold,
            i.min_pods,
            i.max_ineffective,
            env!("CARGO_PKG_VERSION"),
        );
    }
    t.family(
        MAX_INEFFECTIVE,
        "gauge",
        "MAX_INEFFECTIVE_ACTIONS: ineffective actions in a row that open the breaker.",
    );
    for &(n, i) in &rows {
        let _ = writeln!(t.out, "{MAX_INEFFECTIVE}{{{}}} {}", t.targets[n].0, i.max_ineffective);
    }
}

/// The counters of the previous run's metrics file, by deployment: a missing file is
/// a first run; one that cannot be read or parsed is ignored with a warning, and
/// counters restart.
pub fn read_previous(path: &Path) -> BTreeMap<String, Counters> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_previous(&text).unwrap_or_else(|why| {
            log::warn!(path:% = path.display(), reason = why.as_str(); "previous metrics file ignored, counters restart");
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            log::warn!(path:% = path.display(), error:% = e; "previous metrics file unreadable, counters restart");
            BTreeMap::new()
        }
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    let doing = format!("write metrics file {}", path.display());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(doing, &e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        Run {
            labels: Labels {
                namespace: "ns".into(),
                deployment: Some("d".into()),
                extra: Vec::new(),
            },
            ended: Ok(Outcome::Acted),
            matched: Some(6),
            analyzed: 5,
            deleted_highest: 1,
            deleted_lowest: 1,
            stats: Some(Stats {
                n: 5,
                mean: 0.9,
                variance: 0.3,
                stddev: 0.55,
                spread: 0.61,
            }),
            threshold: 0.3,
            duration_secs: 0.25,
            end: 1_800_000_000.5,
            refused: vec![Refusal::DisruptionBudget],
            memory: None,
            info: Some(Info {
                dry_run: false,
                eviction_mode: "evict",
                container: "c".into(),
                window_secs: 300,
                threshold: 0.3,
                min_pods: 3,
                max_ineffective: 3,
            }),
            partitions: None,
        }
    }

    /// The text of `run` with `counters` on top of `prev`, as a run without a state
    /// ConfigMap writes it.
    fn text(prev: &Counters, run: &Run) -> String {
        render(&Sheet::single(run.clone(), Some(prev.after(run))))
    }

    /// The text without the target's labels, after checking every sample has them.
    fn plain(text: &str) -> String {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{namespace=\"ns\",deployment=\"d\""), "{line}");
        }
        text.replace("{namespace=\"ns\",deployment=\"d\"}", "")
            .replace("namespace=\"ns\",deployment=\"d\",", "")
    }

    fn previous(text: &str) -> Counters {
        parse_previous(text).unwrap().remove("d").unwrap_or_default()
    }

    #[test]
    fn every_family_has_help_and_type_and_every_label_is_present() {
        let text = plain(&text(&Counters::default(), &run()));
        for name in [
            EXECUTIONS,
            ANALYZED,
            DELETED,
            DURATION,
            SPREAD,
            THRESHOLD,
            MEAN,
            STDDEV,
            LAST_RUN,
            LAST_SUCCESS,
            OUTCOME,
            ERRORS,
            MATCHED,
            CONFIG_INFO,
            MAX_INEFFECTIVE,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.contains("rebalancer_executions_total{status=\"error\"} 0\n"));
        assert!(text.contains("rebalancer_cycle_outcome{outcome=\"acted\"} 1\n"));
        for outcome in ["error", "paused", "unfixable", "deferred"] {
            assert!(text.contains(&format!("rebalancer_cycle_outcome{{outcome=\"{outcome}\"}} 0\n")));
        }
        assert!(text.contains("rebalancer_pods_deleted_total{type=\"lowest_cpu\"} 1\n"));
        assert!(text.contains("rebalancer_max_ineffective_actions 3\n"));
        assert!(text.contains(
            "rebalancer_config_info{dry_run=\"false\",eviction_mode=\"evict\",container=\"c\",window=\"300s\",threshold=\"0.3\",min_pods=\"3\",max_ineffective_actions=\"3\",version=\"0.1.0\"} 1\n"
        ));
        assert!(!text.contains(LAST_FAILURE), "no run failed yet");
    }

    #[test]
    fn a_run_that_stored_no_counters_exports_none_and_only_its_own_times() {
        let failed = Run {
            ended: Err(Stage::State),
            ..run()
        };
        let text = plain(&render(&Sheet::single(failed, None)));
        for family in [EXECUTIONS, ERRORS, ANALYZED, DELETED, REFUSED] {
            assert!(!text.contains(family), "{family} in\n{text}");
        }
        assert!(text.contains("rebalancer_last_failure_timestamp_seconds 1800000000.5\n"));
        assert!(!text.contains(LAST_SUCCESS), "unknown: the state was not read");
        assert!(text.contains("rebalancer_cycle_outcome{outcome=\"error\"} 1\n"));
    }

    #[test]
    fn counters_carry_over_and_gauges_do_not() {
        let first = text(&Counters::default(), &run());
        assert_eq!(
            previous(&first),
            parse_previous(&plain(&first)).unwrap().remove("").unwrap(),
            "older files without the labels read the same"
        );
        let prev = previous(&first);
        let failed = Run {
            ended: Err(Stage::Metrics),
            matched: None,
            analyzed: 0,
            deleted_highest: 0,
            deleted_lowest: 0,
            stats: None,
            end: 1_800_000_300.0,
            ..run()
        };
        let second_text = text(&prev, &failed);
        let second = plain(&second_text);
        assert!(second.contains("rebalancer_executions_total{status=\"success\"} 1\n"));
        assert!(second.contains("rebalancer_executions_total{status=\"error\"} 1\n"));
        assert!(second.contains("rebalancer_pods_analyzed_total 5\n"));
        assert!(second.contains("rebalancer_errors_total{stage=\"metrics\"} 1\n"));
        assert!(second.contains("rebalancer_errors_total{stage=\"kubernetes\"} 0\n"));
        assert!(!second.contains("rebalancer_pods_matched"), "the list was not read");
        assert!(second.contains("rebalancer_pods_deleted_total{type=\"highest_cpu\"} 1\n"));
        assert!(
            second.contains("rebalancer_last_success_timestamp_seconds 1800000000.5\n"),
            "the last success is kept"
        );
        assert!(second.contains("rebalancer_last_failure_timestamp_seconds 1800000300\n"));
        assert!(second.contains("rebalancer_last_run_timestamp_seconds 1800000300\n"));
        assert!(
            !second.contains("rebalancer_cpu_usage_mean"),
            "no statistics were computed"
        );
        let third = plain(&text(&previous(&second_text), &run()));
        assert!(third.contains("rebalancer_pods_deleted_total{type=\"highest_cpu\"} 2\n"));
        assert!(
            third.contains("rebalancer_last_failure_timestamp_seconds 1800000300\n"),
            "the last failure is kept"
        );
    }

    #[test]
    fn the_partition_gauges_are_there_when_they_have_a_value() {
        let with = |partitions| plain(&text(&Counters::default(), &Run { partitions, ..run() }));
        let none = with(None);
        assert!(!none.contains(FIT_R2) && !none.contains(BEST_SPREAD), "{none}");
        let both = with(Some(PartitionGauges {
            r2: Some(0.97),
            best_possible_spread: Some(0.37),
        }));
        assert!(both.contains("# TYPE rebalancer_partition_fit_r2 gauge\nrebalancer_partition_fit_r2 0.97\n"));
        assert!(both.contains("# TYPE rebalancer_best_possible_spread gauge\nrebalancer_best_possible_spread 0.37\n"));
        let unexplained = with(Some(PartitionGauges {
            r2: Some(0.12),
            best_possible_spread: None,
        }));
        assert!(unexplained.contains("rebalancer_partition_fit_r2 0.12\n"));
        assert!(!unexplained.contains(BEST_SPREAD), "{unexplained}");
        let unfixable = plain(&text(
            &Counters::default(),
            &Run {
                ended: Ok(Outcome::Unfixable),
                ..run()
            },
        ));
        assert!(unfixable.contains("rebalancer_cycle_outcome{outcome=\"unfixable\"} 1\n"));
        assert!(unfixable.contains("rebalancer_cycle_outcome{outcome=\"acted\"} 0\n"));
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused() {
        for bad in [
            "garbage",
            "rebalancer_pods_analyzed_total x",
            "rebalancer_pods_analyzed_total -1",
            "rebalancer_pods_analyzed_total 1e300",
            "",
            "other_metric 1",
        ] {
            assert!(parse_previous(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_sample_has_a_timestamp() {
        for line in text(&Counters::default(), &run())
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            assert_eq!(
                line.rsplit_once(' ').map(|(k, _)| k.contains(' ')),
                Some(false),
                "{line}"
            );
        }
    }

    #[test]
    fn every_counter_is_the_previous_value_plus_this_run() {
        let prev = Counters {
            success: 7.0,
            error: 3.0,
            analyzed: 11.0,
            deleted_highest: 2.0,
            deleted_lowest: 5.0,
            last_success: Some(1_700_000_000.0),
            last_failure: None,
            errors: [(Stage::Kubernetes, 1.0), (Stage::Metrics, 2.0)].into_iter().collect(),
            refused: [(Refusal::Gone, 4.0)].into_iter().collect(),
        };
        let failed_in_act = Run {
            ended: Err(Stage::Act),
            deleted_lowest: 0,
            ..run()
        };
        let text = plain(&text(&prev, &failed_in_act));
        for line in [
            "rebalancer_executions_total{status=\"success\"} 7\n",
            "rebalancer_executions_total{status=\"error\"} 4\n",
            "rebalancer_errors_total{stage=\"kubernetes\"} 1\n",
            "rebalancer_errors_total{stage=\"metrics\"} 2\n",
            "rebalancer_errors_total{stage=\"act\"} 1\n",
            "rebalancer_errors_total{stage=\"report\"} 0\n",
            "rebalancer_pods_analyzed_total 16\n",
            "rebalancer_pods_deleted_total{type=\"highest_cpu\"} 3\n",
            "rebalancer_pods_deleted_total{type=\"lowest_cpu\"} 5\n",
            "rebalancer_last_success_timestamp_seconds 1700000000\n",
            "rebalancer_cycle_outcome{outcome=\"error\"} 1\n",
            "rebalancer_cycle_outcome{outcome=\"acted\"} 0\n",
            "rebalancer_build_info{version=\"0.1.0\"} 1\n",
            "rebalancer_removals_refused_total{reason=\"disruption_budget\"} 1\n",
            "rebalancer_removals_refused_total{reason=\"gone\"} 4\n",
            "rebalancer_removals_refused_total{reason=\"replaced\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let back = parse_previous(&text).unwrap().remove("").unwrap();
        assert_eq!((back.success, back.error, back.analyzed), (7.0, 4.0, 16.0));
        assert_eq!(back.errors.get(&Stage::Act), Some(&1.0));
    }

    #[test]
    fn constant_labels_follow_the_targets_and_are_not_read_back_as_counters() {
        let mut r = run();
        r.labels.extra = vec![("cluster".into(), "prod-eu-1".into())];
        let text = text(&Counters::default(), &r);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.contains("{namespace=\"ns\",deployment=\"d\",cluster=\"prod-eu-1\""),
                "{line}"
            );
        }
        let back = previous(&text);
        assert_eq!((back.success, back.deleted_highest), (1.0, 1.0));
    }

    #[test]
    fn a_fleet_text_has_each_family_once_with_a_sample_per_target() {
        let other = Run {
            labels: Labels {
                deployment: Some("e".into()),
                ..run().labels
            },
            ended: Ok(Outcome::Balanced),
            ..run()
        };
        let sheet = Sheet {
            targets: vec![
                Exported {
                    run: run(),
                    counters: Some(Counters::default().after(&run())),
                },
                Exported {
                    counters: Some(Counters::default().after(&other)),
                    run: other,
                },
            ],
            fleet: Some((
                Labels {
                    namespace: "ns".into(),
                    deployment: None,
                    extra: Vec::new(),
                },
                [("acted", 1), ("balanced", 1)].into_iter().collect(),
            )),
        };
        let text = render(&sheet);
        assert_eq!(text.matches("# TYPE rebalancer_cycle_outcome gauge").count(), 1);
        assert!(text.contains("rebalancer_cycle_outcome{namespace=\"ns\",deployment=\"e\",outcome=\"balanced\"} 1\n"));
        assert!(text.contains("rebalancer_targets{namespace=\"ns\",outcome=\"acted\"} 1\n"));
        assert!(text.contains("rebalancer_targets{namespace=\"ns\",outcome=\"error\"} 0\n"));
        let back = parse_previous(&text).unwrap();
        assert_eq!(back.get("d").map(|c| c.deleted_highest), Some(1.0));
        assert_eq!(back.get("e").map(|c| c.success), Some(1.0));
    }

    #[test]
    fn counters_out_of_range_are_refused() {
        for bad in [
            Counters {
                success: -1.0,
                ..Counters::default()
            },
            Counters {
                analyzed: 0.5,
                ..Counters::default()
            },
            Counters {
                error: f64::INFINITY,
                ..Counters::default()
            },
            Counters {
                last_success: Some(f64::NAN),
                ..Counters::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert_eq!(Counters::default().check(), Ok(()));
    }
}
