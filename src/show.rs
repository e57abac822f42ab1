//! The plan for a person: a table of pods by CPU with a bar each, the statistics and
//! the decision in one sentence. Pure: builds a `String`, the caller prints it.

use crate::plan::{Decision, Plan, Role};
use std::fmt::Write as _;

const NAME_WIDTH: usize = 34;
const BAR_WIDTH: usize = 16;

/// Shortens a long pod name from the left: the end of a pod name (the ReplicaSet
/// hash and the pod suffix) is what tells pods apart.
fn short(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

fn cores(x: f64) -> String {
    format!("{x:.3}")
}

/// Renders the plan; `verb` is "would evict" / "would delete" (or "evict").
pub fn text(plan: &Plan, verb: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pod-rebalancer plan: container {} in namespace {} at {}",
        plan.container,
        plan.namespace,
        crate::clock::format_rfc3339(plan.now)
    );
    let _ = writeln!(o);
    let width = plan
        .pods
        .iter()
        .map(|v| v.pod.name.chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, NAME_WIDTH);
    let _ = writeln!(
        o,
        "  {:<width$}  {:>6}  {:>5}  {:<BAR_WIDTH$}",
        "POD", "CORES", "%REQ", "LOAD"
    );
    let hottest = plan.pods.iter().filter_map(|v| v.cpu).fold(0.0f64, f64::max);
    for v in &plan.pods {
        let mark = match v.role {
            Some(Role::HighestCpu) => "▲",
            Some(Role::LowestCpu) => "▼",
            None => " ",
        };
        let name = short(&v.pod.name, width);
        let (cpu, pct, bar) = match v.cpu {
            Some(c) => {
                let pct = v
                    .pod
                    .cpu_request
                    .filter(|r| *r > 0.0)
                    .map_or("-".to_string(), |r| format!("{:.0}%", 100.0 * c / r));
                let filled = if hottest > 0.0 {
                    ((c / hottest) * BAR_WIDTH as f64).round() as usize
                } else {
                    0
                };
                let filled = filled.clamp(usize::from(c > 0.0), BAR_WIDTH);
                (
                    cores(c),
                    pct,
                    format!("{}{}", "█".repeat(filled), " ".repeat(BAR_WIDTH - filled)),
                )
            }
            None => ("-".to_string(), "-".to_string(), " ".repeat(BAR_WIDTH)),
        };
        let note = match (v.role, v.excluded) {
            (Some(Role::HighestCpu), _) => "highest".to_string(),
            (Some(Role::LowestCpu), _) => "lowest".to_string(),
            (None, Some(why)) => format!("excluded: {why}"),
            (None, None) => String::new(),
        };
        let line = format!("{mark} {name:<width$}  {cpu:>6}  {pct:>5}  {bar}  {note}");
        let _ = writeln!(o, "{}", line.trim_end());
    }
    let _ = writeln!(o);
    let eligible = plan.pods.iter().filter(|v| v.excluded.is_none()).count();
    let _ = writeln!(
        o,
        "pods: {} matched, {} eligible, {} healthy (Running, Ready, not terminating); budget {} (min pods {})",
        plan.pods.len(),
        eligible,
        plan.healthy,
        plan.budget,
        plan.min_pods
    );
    match plan.stats {
        Some(s) => {
            let _ = writeln!(
                o,
                "mean {} cores, stddev {} cores, spread {:.2} (threshold {:.2})",
                cores(s.mean),
                cores(s.stddev),
                s.spread,
                plan.threshold
            );
        }
        None => {
            let _ = writeln!(o, "no statistics: no eligible pod (threshold {:.2})", plan.threshold);
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "decision: {}", plan.summary(verb));
    if let Decision::Remove { pods } = &plan.decision {
        for p in pods {
            let _ = writeln!(
                o,
                "  {} {} ({} cores, {})",
                verb,
                p.name,
                cores(p.cpu),
                p.role.label().replace('_', " ")
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_distinguishing_end() {
        assert_eq!(short("ingestion-consumer-5f7c9d8b4d-7qwzt", 20), "…er-5f7c9d8b4d-7qwzt");
        assert_eq!(short("short", 20), "short");
    }
}
