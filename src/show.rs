//! The plan for a person: a table of pods by CPU with a bar each, the statistics, the
//! partition signal when there is one, and the decision in a sentence, in 80 columns.
//! Pure: builds a `String`, the caller prints.

use crate::memory::{Action, Breaker, PodResult, View};
use crate::partition::{self, Explanation, Verdict};
use crate::plan::{Decision, Plan, PodView, Role};
use std::fmt::Write as _;

const WIDTH: usize = 80;
const NAME_WIDTH: usize = 24;
const BAR_WIDTH: usize = 16;
/// Fleets larger than this show their top and bottom rows only (unless `all`).
const FOLD_ABOVE: usize = 24;
const FOLD_KEEP: usize = 10;

/// How to render: ANSI colour (only for a terminal without `NO_COLOR`), every pod.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
    pub all: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The longest prefix, ending with '-', that every name shares. Pods of one
/// Deployment share `DEPLOYMENT-HASH-`; what is left tells them apart.
pub fn common_prefix<'a>(names: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut names = names.peekable();
    let Some(first) = names.peek().copied() else {
        return String::new();
    };
    let mut len = first.len();
    for name in names.clone() {
        len = len.min(first.bytes().zip(name.bytes()).take_while(|(a, b)| a == b).count());
    }
    // Keep the whole last name out of the prefix, so no pod shows as empty.
    if names.clone().any(|n| n.len() == len) {
        len = len.saturating_sub(1);
    }
    // `len` counts bytes and may fall inside a character; a '-' never does.
    match first.as_bytes()[..len].iter().rposition(|&b| b == b'-') {
        Some(dash) => first[..=dash].to_string(),
        None => String::new(),
    }
}

/// The width of a table's POD column: its longest shown name, within 3 ..= NAME_WIDTH.
fn name_width(shown: &[&str]) -> usize {
    shown
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, NAME_WIDTH)
}

/// Shortens from the left: the end of a pod name is what tells pods apart.
fn short(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

/// Wraps `text` at `WIDTH` columns; continuation lines are indented by `indent`.
fn wrap(out: &mut String, text: &str, indent: usize) {
    let lead = text.len() - text.trim_start().len();
    let mut line = " ".repeat(lead);
    for word in text.trim_start().split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = " ".repeat(indent);
        } else if !line.is_empty() && !line.chars().all(|c| c == ' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

/// Renders the plan; `verb` is "would evict", "would delete", "evict" or "delete".
pub fn text(plan: &Plan, verb: &str, style: Style) -> String {
    let mut o = String::new();
    let prefix = common_prefix(plan.pods.iter().map(|v| v.pod.name.as_str()));
    header(&mut o, plan, &prefix);
    let _ = writeln!(o);
    table(&mut o, plan, &prefix, style);
    let _ = writeln!(o);
    figures(&mut o, plan);
    let _ = writeln!(o);
    if let Some(explanation) = &plan.partitions {
        partitions(&mut o, explanation, &prefix, style);
        let _ = writeln!(o);
    }
    decision(&mut o, plan, verb);
    o
}

/// How many of a pod's partitions its row names.
const HEAVIEST_SHOWN: usize = 3;

/// The partition signal: each pod's load, how many partitions it owns and the heaviest
/// of them (in the table's order; large fleets folded the same way), then the fit, the
/// best possible spread and the verdict in one sentence.
fn partitions(o: &mut String, e: &Explanation, prefix: &str, style: Style) {
    if e.verdict == Verdict::Missing {
        wrap(o, &format!("partitions: {e}"), 2);
        return;
    }
    wrap(
        o,
        &format!(
            "partitions: {} owned by the matched pods, heaviest first",
            e.partition_count()
        ),
        2,
    );
    let shown: Vec<&str> = e
        .pods
        .iter()
        .map(|p| p.name.strip_prefix(prefix).unwrap_or(&p.name))
        .collect();
    let width = name_width(&shown);
    let _ = writeln!(o, "  {:<width$}  {:>9}  {:>4}  HEAVIEST", "POD", "LOAD", "OWNS");
    let n = e.pods.len();
    let fold = !style.all && n > FOLD_ABOVE;
    let mut hidden = 0;
    for (i, (p, name)) in e.pods.iter().zip(&shown).enumerate() {
        if fold && i >= FOLD_KEEP && i < n - FOLD_KEEP {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            let _ = writeln!(o, "  … {hidden} more pods (--all shows every pod)");
            hidden = 0;
        }
        let mut heaviest: Vec<String> = e
            .partitions_of(&p.name)
            .take(HEAVIEST_SHOWN)
            .map(|(key, load)| format!("{key} {}", load_text(load)))
            .collect();
        if p.partitions > HEAVIEST_SHOWN {
            heaviest.push("…".to_string());
        }
        let note = if p.eligible { "" } else { " (not eligible)" };
        let line = format!(
            "  {:<width$}  {:>9}  {:>4}  {}{note}",
            short(name, width),
            load_text(p.load),
            p.partitions,
            heaviest.join(", ")
        );
        let _ = writeln!(o, "{}", cut(line.trim_end(), WIDTH));
    }
    wrap(o, &format!("  {e}"), 4);
}

/// A load in few characters: three significant digits, millions as "1.23M".
fn load_text(load: f64) -> String {
    if load >= 1e6 {
        format!("{:.2}M", load / 1e6)
    } else {
        partition::significant(load)
    }
}

/// `text` cut to `width` characters, ending with '…' when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(width - 1).collect();
    kept.push('…');
    kept
}

/// Where and when, and the prefix the table leaves out.
fn header(o: &mut String, plan: &Plan, prefix: &str) {
    wrap(
        o,
        &format!(
            "namespace {}, container {}, at {}",
            plan.namespace,
            plan.container,
            crate::clock::format_rfc3339(plan.now)
        ),
        2,
    );
    if !prefix.is_empty() {
        wrap(o, &format!("pod names start with {prefix} (shortened below)"), 2);
    }
}

/// A row per pod (large fleets folded to their top and bottom rows), by CPU.
fn table(o: &mut String, plan: &Plan, prefix: &str, style: Style) {
    let shown: Vec<&str> = plan.pods.iter().map(|v| &v.pod.name[prefix.len()..]).collect();
    let width = name_width(&shown);
    let _ = writeln!(o, "  {:<width$}  {:>6}  {:>5}  LOAD", "POD", "CORES", "%REQ");
    let hottest = plan.pods.iter().filter_map(|v| v.cpu).fold(0.0f64, f64::max);
    let n = plan.pods.len();
    let fold = !style.all && n > FOLD_ABOVE;
    let mut hidden = 0;
    for (i, (v, name)) in plan.pods.iter().zip(&shown).enumerate() {
        // Large fleets: the hottest and coldest rows, and every marked pod, stay.
        if fold && i >= FOLD_KEEP && i < n - FOLD_KEEP && v.role.is_none() {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            let _ = writeln!(o, "  … {hidden} more pods (--all shows every pod)");
            hidden = 0;
        }
        let _ = writeln!(o, "{}", row(&v, name, width, hottest, style));
    }
}

/// One pod's row: its mark, name, cores, share of its request, bar and note.
fn row(v: &PodView, name: &str, width: usize, hottest: f64, style: Style) -> String {
    let mark = match v.role {
        Some(Role::HighestCpu) => style.paint("1;31", "▲"),
        Some(Role::LowestCpu) => style.paint("1;34", "▼"),
        None => " ".to_string(),
    };
    let (cpu, pct, bar) = match v.cpu {
        Some(c) => {
            let filled = if hottest > 0.0 {
                ((c / hottest) * BAR_WIDTH as f64).round() as usize
            } else {
                0
            };
            let filled = filled.clamp(usize::from(c > 0.0), BAR_WIDTH);
            (
                format!("{c:.3}"),
                v.share_of_request().unwrap_or_else(|| "-".to_string()),
                format!("{}{}", "█".repeat(filled), " ".repeat(BAR_WIDTH - filled)),
            )
        }
        // An excluded pod shows what the query answered for it, without a bar.
        None => (
            v.sample.map_or("-".to_string(), |c| format!("{c:.3}")),
            "-".to_string(),
            " ".repeat(BAR_WIDTH),
        ),
    };
    let note = match (v.role, v.excluded) {
        (Some(role), _) => role.mark().to_string(),
        (None, Some(why)) => format!("excluded: {why}"),
        (None, None) => String::new(),
    };
    let line = format!("{:<width$}  {cpu:>6}  {pct:>5}  {bar}  {note}", short(name, width));
    let line = line.trim_end();
    let line = if v.excluded.is_some() {
        style.paint("2", line)
    } else {
        line.to_string()
    };
    format!("{mark} {line}")
}

/// The counts, the budget and the statistics.
fn figures(o: &mut String, plan: &Plan) {
    wrap(
        o,
        &format!(
            "pods: {} matched, {} eligible, {} healthy; may remove {} (min pods {})",
            plan.pods.len(),
            plan.analyzed(),
            plan.healthy,
            plan.budget,
            plan.min_pods
        ),
        2,
    );
    match plan.stats {
        Some(s) => wrap(
            o,
            &format!(
                "cpu: mean {:.3} cores, stddev {:.3} cores, spread {:.2} (threshold {:.2})",
                s.mean, s.stddev, s.spread, plan.threshold
            ),
            2,
        ),
        None => wrap(
            o,
            &format!("cpu: no eligible pod, no statistics (threshold {:.2})", plan.threshold),
            2,
        ),
    }
}

/// The decision in a sentence, and the pods it removes.
fn decision(o: &mut String, plan: &Plan, verb: &str) {
    let (Decision::Remove { pods }, Some(why)) = (&plan.decision, plan.over_threshold()) else {
        wrap(o, &format!("decision: {}", plan.summary(verb)), 2);
        return;
    };
    wrap(
        o,
        &format!("decision: {verb} {}: {why}", crate::plan::plural(pods.len(), "pod")),
        2,
    );
    for p in pods {
        wrap(o, &format!("  {} ({:.3} cores, {})", p.name, p.cpu, p.role.words()), 4);
    }
    if pods.len() == 1 {
        wrap(
            o,
            &format!("  only one: {} healthy pods, {} must stay", plan.healthy, plan.min_pods),
            4,
        );
    }
}

/// The memory under the decision: the breaker, the streak and the last actions with
/// the spread before and after and the verdict.
pub fn memory(view: &View) -> String {
    let mut o = String::new();
    let _ = writeln!(o);
    let breaker = match view.breaker {
        Breaker::Closed => "breaker closed".to_string(),
        Breaker::Open { until } => format!("breaker open until {}", crate::clock::format_rfc3339(until)),
        Breaker::Probe => "breaker half-open: the next action is a probe".to_string(),
    };
    wrap(
        &mut o,
        &format!(
            "memory: {} of {} ineffective actions in a row; {breaker}",
            view.streak, view.max_ineffective
        ),
        2,
    );
    if let Some(at) = view.in_progress {
        wrap(
            &mut o,
            &format!(
                "  an action is in progress: another run leased it at {} and may still be acting",
                crate::clock::format_rfc3339(at)
            ),
            4,
        );
    }
    if let Some(why) = view.dropped {
        wrap(
            &mut o,
            &format!("  the last action is not evaluated: {}", why.words()),
            4,
        );
    }
    if view.actions.is_empty() {
        wrap(&mut o, "  no action remembered", 4);
    }
    for action in &view.actions {
        action_line(&mut o, action);
    }
    o
}

fn action_line(o: &mut String, action: &Action) {
    let pods: Vec<String> = action
        .pods
        .iter()
        .map(|p| {
            let cpu = p.cpu.map_or(String::new(), |c| format!("{c:.3} cores, "));
            let result = match p.result {
                PodResult::Removed => "removed",
                PodResult::Refused => "refused",
                PodResult::Unknown => "no answer yet",
                PodResult::Intended if action.settled => "not removed",
                PodResult::Intended => "intended",
            };
            format!("{} ({cpu}{}, {result})", p.name, p.role.mark())
        })
        .collect();
    let probe = if action.probe { " (a probe)" } else { "" };
    let leased = if action.settled { "" } else { " [leased, unsettled]" };
    wrap(
        o,
        &format!(
            "  {}: {}{probe}{leased}",
            crate::clock::format_rfc3339(action.at),
            pods.join(" and ")
        ),
        6,
    );
    let before = action.spread.map_or("?".to_string(), |s| format!("{s:.2}"));
    let verdict = match (&action.evaluation, action.dropped) {
        (Some(e), _) => format!(
            "spread {before} → {:.2} (×{:.2}): {}",
            e.spread,
            e.ratio,
            e.verdict.label()
        ),
        (None, Some(why)) => format!("spread {before} → not evaluated: {}", why.words()),
        (None, None) => format!("spread {before} → not evaluated yet"),
    };
    wrap(o, &format!("    {verdict}"), 6);
    if let Some(moved) = action.evaluation.as_ref().and_then(|e| e.hot_spot.as_ref()) {
        wrap(o, &format!("    {moved}"), 6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_distinguishing_end() {
        assert_eq!(short("ingestion-consumer-5f7c9d8b4d-7qwzt", 20), "…er-5f7c9d8b4d-7qwzt");
        assert_eq!(short("short", 20), "short");
    }

    #[test]
    fn the_common_prefix_ends_at_a_dash_and_never_swallows_a_name() {
        let p = |names: &[&str]| common_prefix(names.iter().copied());
        assert_eq!(p(&["c-5f7c-aaa", "c-5f7c-abb"]), "c-5f7c-");
        assert_eq!(p(&["c-5f7c-aaa", "c-6d8e-aaa"]), "c-");
        assert_eq!(p(&["c-5f7c-aaa"]), "c-5f7c-");
        assert_eq!(p(&["c-5f7c", "c-5f7c-x"]), "c-");
        assert_eq!(p(&["alpha", "beta"]), "");
        assert_eq!(p(&[]), "");
        // Names that part inside a character: 'é' and 'è' share their first byte.
        assert_eq!(p(&["aé-x", "aè-y"]), "");
        assert_eq!(p(&["n-é-x", "n-è-y"]), "n-");
    }

    #[test]
    fn loads_and_long_rows_stay_short() {
        assert_eq!(load_text(1870.0), "1870");
        assert_eq!(load_text(0.25), "0.250");
        assert_eq!(load_text(0.0), "0");
        assert_eq!(load_text(12_345_678.0), "12.35M");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }

    #[test]
    fn the_partition_signal_shows_each_pods_load_and_the_verdict() {
        use crate::partition::{Answer, explain};
        let owned = [
            ("c-p0", "events/7", 1.25),
            ("c-p0", "events/1", 0.25),
            ("c-p0", "events/2", 0.25),
            ("c-p0", "events/3", 0.25),
            ("c-p0", "a-topic-with-a-name-much-longer-than-a-row-can-hold/12", 0.25),
            ("c-p1", "events/4", 0.5),
            ("c-p2", "events/5", 0.5),
            ("c-p3", "events/6", 0.5),
        ];
        let answer = Answer::new(owned).unwrap();
        let eligible = [
            ("c-p0", 2.26),
            ("c-p1", 0.51),
            ("c-p2", 0.51),
            ("c-p3", 0.51),
            ("c-p4", 0.01),
        ];
        let e = explain(answer, &eligible, &[], 0.3);
        let mut o = String::new();
        partitions(&mut o, &e, "c-", Style::default());
        assert!(o.lines().all(|l| l.chars().count() <= WIDTH), "{o}");
        assert!(
            o.starts_with("partitions: 8 owned by the matched pods, heaviest first\n"),
            "{o}"
        );
        assert!(
            o.contains("\n  p0        2.25     5  events/7 1.25, a-topic-with-a-name"),
            "{o}"
        );
        assert!(o.lines().any(|l| l.starts_with("  p0 ") && l.ends_with('…')), "{o}");
        assert!(o.contains("\n  p4           0     0\n"), "{o}");
        assert!(o.contains("(key skew)"), "{o}");
        assert!(o.contains("fit cpu = 0.0100 + 1.00 × load, R² 1.00 over 5 pods"), "{o}");
        let mut missing = String::new();
        partitions(
            &mut missing,
            &explain(Answer::default(), &eligible, &[], 0.3),
            "c-",
            Style::default(),
        );
        assert_eq!(
            missing,
            "partitions: the partition query answered no partition of an eligible pod (signal\n  missing): deciding on CPU alone\n"
        );
    }

    #[test]
    fn wrapping_keeps_to_eighty_columns() {
        let mut out = String::new();
        wrap(&mut out, &"word ".repeat(40), 2);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(out.lines().skip(1).all(|l| l.starts_with("  word")), "{out}");
    }
}
