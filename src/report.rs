//! The run's metrics in the Prometheus text format: built as a string without I/O
//! (`render`), written atomically to `METRICS_FILE` (`write_atomic`); the caller also
//! POSTs the same text to `METRICS_PUSH_URL`.
//!
//! Counters carry on across runs: the previous file's counter values are the
//! starting point. A previous file that cannot be parsed is ignored with a warning
//! (`read_previous`) and the counters restart, as a scraper would see after a reset.

use crate::error::Error;
use crate::outcome::{self, Ended, Outcome, Refusal, Stage};
use crate::stats::Stats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The counters (and the last success time) that carry over from one run to the next:
/// in the state ConfigMap's document, or read back from the previous metrics file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub success: f64,
    pub error: f64,
    pub analyzed: f64,
    pub deleted_highest: f64,
    pub deleted_lowest: f64,
    pub last_success: Option<f64>,
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
        next
    }
}

/// What a rebalancer rebalances: the `namespace` and `deployment` labels every sample
/// carries, so that two rebalancers never share a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub namespace: String,
    pub deployment: String,
}

/// This run, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub target: Target,
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
    /// The memory's gauges; `None` without a state ConfigMap.
    pub memory: Option<MemoryGauges>,
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

const EXECUTIONS: &str = "rebalancer_executions_total";
const ANALYZED: &str = "rebalancer_pods_analyzed_total";
const DELETED: &str = "rebalancer_pods_deleted_total";
const LAST_SUCCESS: &str = "rebalancer_last_success_timestamp_seconds";
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
const REFUSED: &str = "rebalancer_removals_refused_total";
const STREAK: &str = "rebalancer_ineffective_streak";
const HOLD_UNTIL: &str = "rebalancer_breaker_open_until_timestamp_seconds";
const EFFECT: &str = "rebalancer_last_action_effect_ratio";
const HOT_SPOT: &str = "rebalancer_last_action_hot_spot_moved";
const FIT_R2: &str = "rebalancer_partition_fit_r2";
const BEST_SPREAD: &str = "rebalancer_best_possible_spread";

/// A sample's `name{labels}` without the target's labels: `x{namespace="a",deployment="b",k="v"}`
/// is `x{k="v"}`, and `x{namespace="a",deployment="b"}` is `x`.
fn without_target(key: &str) -> String {
    let Some((name, labels)) = key.strip_suffix('}').and_then(|k| k.split_once('{')) else {
        return key.to_string();
    };
    let rest: Vec<&str> = labels
        .split(',')
        .filter(|l| !l.starts_with("namespace=") && !l.starts_with("deployment="))
        .collect();
    if rest.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", rest.join(","))
    }
}

/// Reads the counters of a previous run's text. `Err` says why it is not ours.
pub fn parse_previous(text: &str) -> Result<Counters, String> {
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
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
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "line {}: expected a finite non-negative number, got {value}",
                i + 1
            ));
        }
        values.insert(without_target(key.trim()), value);
    }
    let get = |k: &str| values.get(k).copied().unwrap_or(0.0);
    let counters = Counters {
        success: get(&format!("{EXECUTIONS}{{status=\"success\"}}")),
        error: get(&format!("{EXECUTIONS}{{status=\"error\"}}")),
        analyzed: get(ANALYZED),
        deleted_highest: get(&format!("{DELETED}{{type=\"highest_cpu\"}}")),
        deleted_lowest: get(&format!("{DELETED}{{type=\"lowest_cpu\"}}")),
        last_success: values.get(LAST_SUCCESS).copied(),
        errors: Stage::ALL
            .into_iter()
            .map(|stage| (stage, get(&format!("{ERRORS}{{stage=\"{stage}\"}}"))))
            .collect(),
        refused: Refusal::ALL
            .into_iter()
            .map(|r| (r, get(&format!("{REFUSED}{{reason=\"{}\"}}", r.label()))))
            .collect(),
    };
    if !values.keys().any(|k| k.starts_with("rebalancer_")) {
        return Err("no rebalancer_ metric in it".into());
    }
    Ok(counters)
}

/// The exposition text being written: each family's `# HELP` and `# TYPE`, then its
/// samples, each with the target's labels first, without timestamps.
struct Text {
    out: String,
    /// `namespace="…",deployment="…"`: validated DNS-1123 names, nothing to escape.
    target: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Text {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    fn sample(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Text {
        let _ = writeln!(self.out, "{name}{{{}}} {value}", self.target);
        self
    }

    /// A sample with one label more, `name{namespace="…",deployment="…",label="value"}`.
    fn labelled(&mut self, name: &str, (label, value): (&str, &str), sample: impl std::fmt::Display) -> &mut Text {
        let _ = writeln!(self.out, "{name}{{{},{label}=\"{value}\"}} {sample}", self.target);
        self
    }
}

/// The exposition text of this run on top of the carried counters.
pub fn render(prev: &Counters, run: &Run) -> String {
    let mut text = Text {
        out: String::with_capacity(4096),
        target: format!(
            "namespace=\"{}\",deployment=\"{}\"",
            run.target.namespace, run.target.deployment
        ),
    };
    text.family(
        BUILD_INFO,
        "gauge",
        "1, labelled with the version of pod-rebalancer that ran.",
    )
    .labelled(BUILD_INFO, ("version", env!("CARGO_PKG_VERSION")), 1);
    let totals = prev.after(run);
    counters(&mut text, &totals);
    gauges(&mut text, &totals, run);
    if let Some(m) = &run.memory {
        memory(&mut text, m);
    }
    if let Some(p) = &run.partitions {
        partitions(&mut text, p);
    }
    text.out
}

/// The partition signal's gauges, each only when it has a value.
fn partitions(t: &mut Text, p: &PartitionGauges) {
    if let Some(r2) = p.r2 {
        t.family(
            FIT_R2,
            "gauge",
            "R² of cpu = a + b × load over eligible pods: how much of their CPU their partitions' load explains.",
        )
        .sample(FIT_R2, r2);
    }
    if let Some(best) = p.best_possible_spread {
        t.family(
            BEST_SPREAD,
            "gauge",
            "The most even spread any assignment of the partitions could reach (when their load explains the CPU).",
        )
        .sample(BEST_SPREAD, best);
    }
}

/// The counters: the previous run's values plus this run's.
fn counters(t: &mut Text, totals: &Counters) {
    t.family(EXECUTIONS, "counter", "Runs of pod-rebalancer by result.")
        .labelled(EXECUTIONS, ("status", "success"), totals.success)
        .labelled(EXECUTIONS, ("status", "error"), totals.error);
    t.family(ERRORS, "counter", "Failed runs by the stage that failed.");
    for stage in Stage::ALL {
        let n = totals.errors.get(&stage).copied().unwrap_or(0.0);
        t.labelled(ERRORS, ("stage", stage.label()), n);
    }
    t.family(ANALYZED, "counter", "Eligible pods whose CPU was analyzed.")
        .sample(ANALYZED, totals.analyzed);
    t.family(
        DELETED,
        "counter",
        "Pods removed (evicted or deleted) by pod-rebalancer; never counts dry runs.",
    )
    .labelled(DELETED, ("type", "highest_cpu"), totals.deleted_highest)
    .labelled(DELETED, ("type", "lowest_cpu"), totals.deleted_lowest);
    t.family(
        REFUSED,
        "counter",
        "Removals the API server refused, dry runs included, by reason.",
    );
    for refusal in Refusal::ALL {
        let n = totals.refused.get(&refusal).copied().unwrap_or(0.0);
        t.labelled(REFUSED, ("reason", refusal.label()), n);
    }
}

/// The memory's gauges, when there is a memory.
fn memory(t: &mut Text, m: &MemoryGauges) {
    t.family(STREAK, "gauge", "Consecutive actions that did not lower the spread.")
        .sample(STREAK, m.streak);
    t.family(
        HOLD_UNTIL,
        "gauge",
        "End of the current hold of the breaker, Unix seconds; 0 when it is closed.",
    )
    .sample(HOLD_UNTIL, m.hold_until.unwrap_or(0));
    if let Some((ratio, moved)) = m.last_effect {
        t.family(
            EFFECT,
            "gauge",
            "Spread after / spread before, of the last evaluated action.",
        )
        .sample(EFFECT, ratio);
        t.family(
            HOT_SPOT,
            "gauge",
            "1 when the last evaluated action's hot spot moved to another pod, else 0.",
        )
        .sample(HOT_SPOT, u8::from(moved));
    }
}

/// The gauges: this run's figures; the statistics only when the run computed them.
fn gauges(t: &mut Text, totals: &Counters, run: &Run) {
    if let Some(matched) = run.matched {
        t.family(MATCHED, "gauge", "Pods the label selector matched in the last run.")
            .sample(MATCHED, matched);
    }
    t.family(DURATION, "gauge", "Duration of the last run.")
        .sample(DURATION, run.duration_secs);
    if let Some(s) = run.stats {
        t.family(SPREAD, "gauge", "Spread of pod CPU: stddev / mean over eligible pods.")
            .sample(SPREAD, s.spread);
    }
    t.family(
        THRESHOLD,
        "gauge",
        "Configured spread threshold (CPU_VARIANCE_THRESHOLD).",
    )
    .sample(THRESHOLD, run.threshold);
    if let Some(s) = run.stats {
        t.family(MEAN, "gauge", "Mean CPU of eligible pods, cores.")
            .sample(MEAN, s.mean);
        t.family(
            STDDEV,
            "gauge",
            "Population standard deviation of eligible pods' CPU, cores.",
        )
        .sample(STDDEV, s.stddev);
    }
    t.family(LAST_RUN, "gauge", "End of the last run, Unix seconds.")
        .sample(LAST_RUN, run.end);
    if let Some(end) = totals.last_success {
        t.family(LAST_SUCCESS, "gauge", "End of the last successful run, Unix seconds.")
            .sample(LAST_SUCCESS, end);
    }
    t.family(OUTCOME, "gauge", "1 for the outcome of the last run, 0 for the others.");
    let this_run = outcome::label(run.ended);
    for label in Outcome::ALL.map(Outcome::label).into_iter().chain([outcome::ERROR]) {
        t.labelled(OUTCOME, ("outcome", label), u8::from(label == this_run));
    }
}

/// The counters of the previous run's metrics file: a missing file is a first run;
/// one that cannot be read or parsed is ignored with a warning, and counters restart.
pub fn read_previous(path: &Path) -> Counters {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_previous(&text).unwrap_or_else(|why| {
            log::warn!(path:% = path.display(), reason = why.as_str(); "previous metrics file ignored, counters restart");
            Counters::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counters::default(),
        Err(e) => {
            log::warn!(path:% = path.display(), error:% = e; "previous metrics file unreadable, counters restart");
            Counters::default()
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
            target: Target {
                namespace: "ns".into(),
                deployment: "d".into(),
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
            partitions: None,
        }
    }

    /// The text without the target's labels, after checking every sample has them.
    fn plain(text: &str) -> String {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{namespace=\"ns\",deployment=\"d\""), "{line}");
        }
        text.replace("{namespace=\"ns\",deployment=\"d\"}", "")
            .replace("namespace=\"ns\",deployment=\"d\",", "")
    }

    #[test]
    fn every_family_has_help_and_type_and_every_label_is_present() {
        let text = plain(&render(&Counters::default(), &run()));
        for name in [
            EXECUTIONS,
            ANALYZED,
            DELETED,
            "rebalancer_execution_duration_seconds",
            "rebalancer_cpu_variance_current",
            "rebalancer_cpu_variance_threshold",
            "rebalancer_cpu_usage_mean",
            "rebalancer_cpu_usage_stddev",
            "rebalancer_last_run_timestamp_seconds",
            LAST_SUCCESS,
            "rebalancer_cycle_outcome",
            ERRORS,
            "rebalancer_pods_matched",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.contains("rebalancer_executions_total{status=\"error\"} 0\n"));
        assert!(text.contains("rebalancer_cycle_outcome{outcome=\"acted\"} 1\n"));
        assert!(text.contains("rebalancer_cycle_outcome{outcome=\"error\"} 0\n"));
        assert!(text.contains("rebalancer_cycle_outcome{outcome=\"unfixable\"} 0\n"));
        assert!(text.contains("rebalancer_pods_deleted_total{type=\"lowest_cpu\"} 1\n"));
    }

    #[test]
    fn counters_carry_over_and_gauges_do_not() {
        let first = render(&Counters::default(), &run());
        assert_eq!(
            parse_previous(&plain(&first)),
            parse_previous(&first),
            "older files without the labels read the same"
        );
        let prev = parse_previous(&first).unwrap();
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
        let second = plain(&render(&prev, &failed));
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
        assert!(second.contains("rebalancer_last_run_timestamp_seconds 1800000300\n"));
        assert!(
            !second.contains("rebalancer_cpu_usage_mean"),
            "no statistics were computed"
        );
        let third = plain(&render(&parse_previous(&second).unwrap(), &run()));
        assert!(third.contains("rebalancer_pods_deleted_total{type=\"highest_cpu\"} 2\n"));
    }

    #[test]
    fn the_partition_gauges_are_there_when_they_have_a_value() {
        let text = |partitions| plain(&render(&Counters::default(), &Run { partitions, ..run() }));
        let none = text(None);
        assert!(!none.contains(FIT_R2) && !none.contains(BEST_SPREAD), "{none}");
        let both = text(Some(PartitionGauges {
            r2: Some(0.97),
            best_possible_spread: Some(0.37),
        }));
        assert!(both.contains("# TYPE rebalancer_partition_fit_r2 gauge\nrebalancer_partition_fit_r2 0.97\n"));
        assert!(both.contains("# TYPE rebalancer_best_possible_spread gauge\nrebalancer_best_possible_spread 0.37\n"));
        let unexplained = text(Some(PartitionGauges {
            r2: Some(0.12),
            best_possible_spread: None,
        }));
        assert!(unexplained.contains("rebalancer_partition_fit_r2 0.12\n"));
        assert!(!unexplained.contains(BEST_SPREAD), "{unexplained}");
        let unfixable = plain(&render(
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
            "",
            "other_metric 1",
        ] {
            assert!(parse_previous(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_sample_has_a_timestamp() {
        for line in render(&Counters::default(), &run())
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            assert_eq!(line.split(' ').count(), 2, "{line}");
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
            errors: [(Stage::Kubernetes, 1.0), (Stage::Metrics, 2.0)].into_iter().collect(),
            refused: [(Refusal::Gone, 4.0)].into_iter().collect(),
        };
        let failed_in_act = Run {
            ended: Err(Stage::Act),
            deleted_lowest: 0,
            ..run()
        };
        let text = plain(&render(&prev, &failed_in_act));
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
        let back = parse_previous(&text).unwrap();
        assert_eq!((back.success, back.error, back.analyzed), (7.0, 4.0, 16.0));
        assert_eq!(back.errors.get(&Stage::Act), Some(&1.0));
    }
}
