//! Fleet mode's cost (SPEC §13 "Cost"): one fleet run over T Deployments of P pods
//! beside one single-mode run over one Deployment of T·P pods, on the same server, in
//! the same rounds (their order swapped every round), with the same pod JSON. The SPEC's
//! line: the fleet run costs at most 1.5× the wall time and the memory of the single
//! run, with the same number of requests plus one.
//!
//! Both runs are checked first, at info level: single mode must name its hottest and
//! coldest pod; the fleet run must name the hottest and the coldest pod of exactly the
//! worst targets that fit in `MAX_REMOVALS_PER_RUN`, defer the other targets that want
//! removals, and count every target by outcome on its last line.

use crate::fleet::{self, Expected};
use crate::measure::{self, Sample, median, paired};
use crate::server::{Content, Counts};
use crate::{Bench, Programs, check_exit, check_ours, ms, rss};
use std::sync::Arc;

/// One binary's rounds: single mode's and fleet mode's, round by round.
pub struct Pair {
    label: String,
    single: Vec<Sample>,
    fleet: Vec<Sample>,
    /// What the server saw in the last run of each.
    single_counts: Counts,
    fleet_counts: Counts,
}

impl Pair {
    /// fleet / single, the median of the round-by-round ratios.
    fn ratio(&self, of: impl Fn(&Sample) -> f64) -> f64 {
        paired(&self.fleet, &self.single, |f, s| of(f) / of(s))
    }
}

/// The fleet case, measured.
pub struct FleetRow {
    targets: usize,
    per_target: usize,
    /// The mean bytes of a pod's JSON, single mode's and fleet mode's.
    pod_bytes: (usize, usize),
    /// Bytes of the CPU answer, single mode's and fleet mode's.
    answer_bytes: (usize, usize),
    /// What the fleet run must have done.
    expected: Expected,
    pairs: Vec<Pair>,
}

impl Bench {
    /// Fleet mode's case: `targets` × `per_target` pods beside one Deployment of as
    /// many, the decisions checked, then `runs` rounds of each of our builds.
    pub fn fleet_case(
        &self,
        runs: usize,
        programs: &Programs,
        (targets, per_target): (usize, usize),
        problems: &mut Vec<String>,
    ) -> Result<FleetRow, String> {
        let n = targets * per_target;
        let single = Arc::new(Content {
            fleet: fleet::build(n, self.now),
            token: self.token.clone(),
        });
        let many = Arc::new(Content {
            fleet: fleet::build_targets(targets, per_target, self.now),
            token: self.token.clone(),
        });
        let what = format!("fleet {targets}×{per_target}");
        eprintln!(
            "{what}: {} Deployments in the list, {} pods ({} bytes of JSON each; single mode's {}), a CPU answer of {} series ({:.1} MB; single mode's {:.1} MB)",
            many.fleet.deployments.n(),
            many.fleet.pods.n(),
            many.fleet.pods.mean_bytes(),
            single.fleet.pods.mean_bytes(),
            3 * n,
            many.fleet.vm_answer.len() as f64 / 1e6,
            single.fleet.vm_answer.len() as f64 / 1e6,
        );
        for (_, bin) in &programs.bins {
            self.server.serve(single.clone());
            self.server.take();
            let (_, out) = measure::run(bin, &[], &self.ours_info, &self.dir);
            check_connections(&what, "single", self.server.take(), problems);
            check_ours(&out, &single.fleet.expected.evicted)?;
            self.server.serve(many.clone());
            let (_, out) = measure::run(bin, &[], &self.fleet_info, &self.dir);
            let counts = self.server.take();
            check_connections(&what, "fleet", counts, problems);
            check_fleet(&out, &many.fleet.expected, targets)?;
            eprintln!(
                "{what}: decisions right: single mode evicts its hottest and coldest; the fleet run {} ({} of {} targets want removals, {} deferred), {} requests",
                many.fleet.expected.evicted.join(", "),
                many.fleet.expected.wanting.len(),
                targets,
                many.fleet.expected.deferred.len(),
                counts.requests
            );
        }
        let mut pairs: Vec<Pair> = programs
            .bins
            .iter()
            .map(|(label, _)| Pair {
                label: label.clone(),
                single: Vec::new(),
                fleet: Vec::new(),
                single_counts: Counts::default(),
                fleet_counts: Counts::default(),
            })
            .collect();
        for round in 0..runs {
            for ((_, bin), pair) in programs.bins.iter().zip(&mut pairs) {
                // Each goes first every other round: neither always runs on a warmer
                // page cache or a quieter neighbour.
                let order = if round % 2 == 0 { [false, true] } else { [true, false] };
                for fleet_mode in order {
                    let (content, env) = match fleet_mode {
                        true => (&many, &self.fleet_warn),
                        false => (&single, &self.ours_warn),
                    };
                    self.server.serve(content.clone());
                    self.server.take();
                    let (s, out) = measure::run(bin, &[], env, &self.dir);
                    let counts = self.server.take();
                    check_exit(bin, &out)?;
                    if fleet_mode {
                        pair.fleet.push(s);
                        pair.fleet_counts = counts;
                    } else {
                        pair.single.push(s);
                        pair.single_counts = counts;
                    }
                }
                eprintln!(
                    "{what} round {} {}: single {:.0} ms, fleet {:.0} ms",
                    round + 1,
                    pair.label,
                    pair.single.last().map_or(f64::NAN, |s| s.wall * 1e3),
                    pair.fleet.last().map_or(f64::NAN, |s| s.wall * 1e3),
                );
            }
        }
        // Counted, not timed, so held: SPEC §13's "the same number of requests plus
        // one" for what a run reads (the evictions are the budget's, not the reads').
        for pair in &pairs {
            let (s, f) = (pair.single_counts.reads(), pair.fleet_counts.reads());
            if f > s + 1 {
                problems.push(format!(
                    "{what} {}: the fleet run read {f} times, single mode {s}: more than one more",
                    pair.label
                ));
            }
        }
        let answer_bytes = (single.fleet.vm_answer.len(), many.fleet.vm_answer.len());
        Ok(FleetRow {
            targets,
            per_target,
            pod_bytes: (single.fleet.pods.mean_bytes(), many.fleet.pods.mean_bytes()),
            answer_bytes,
            expected: many.fleet.expected.clone(),
            pairs,
        })
    }
}

/// One connection per server: a run that opens more pays handshakes it need not.
fn check_connections(what: &str, mode: &str, counts: Counts, problems: &mut Vec<String>) {
    if counts.connections > 2 {
        problems.push(format!(
            "{what}: the {mode} run opened {} connections; expected 2 (one kept alive per server)",
            counts.connections
        ));
    }
}

/// The fleet run must exit 0, name "would be evicted" exactly the expected pods (the
/// hottest and the coldest of the worst targets within the budget), log "deferred"
/// for exactly the expected targets, and count the targets by outcome on its last line.
fn check_fleet(out: &std::process::Output, expected: &Expected, targets: usize) -> Result<(), String> {
    check_ours(out, &expected.evicted)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut deferred: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("deferred: its plan does not fit"))
        .filter_map(|l| l.split_once(" deployment=").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    deferred.sort_unstable();
    if deferred != expected.deferred {
        return Err(format!(
            "expected the fleet run to defer {:?}, it deferred {deferred:?}:\n{stderr}",
            expected.deferred
        ));
    }
    let mut outcomes: Vec<(&str, usize)> = expected.outcomes.iter().copied().filter(|(_, n)| *n > 0).collect();
    outcomes.sort_unstable();
    let summary: Vec<String> = outcomes.iter().map(|(label, n)| format!("{n} {label}")).collect();
    let last = format!("run finished: {targets} target(s): {}", summary.join(", "));
    if !stderr.lines().any(|l| l.contains(&last)) {
        return Err(format!("expected the fleet run's last line to say {last:?}:\n{stderr}"));
    }
    Ok(())
}

/// The fleet case's table: each build's medians in both modes, and the ratios.
pub fn print(row: &FleetRow) {
    let (t, p) = (row.targets, row.per_target);
    println!();
    println!(
        "## Fleet mode: {t} targets × {p} pods beside one Deployment of {} pods",
        t * p
    );
    println!();
    println!(
        "Pods' JSON {} bytes each in single mode, {} in fleet mode (container and Deployment names are longer); CPU answer {:.2} MB ({} series, one per pod) and {:.2} MB ({} series, three per pod: the main container, the sidecar, the pod's cgroup). {} of {t} targets want removals (spread {:.2} to {:.2}; the others' at most {:.2}); MAX_REMOVALS_PER_RUN={}: {} act (dry run), {} deferred.",
        row.pod_bytes.0,
        row.pod_bytes.1,
        row.answer_bytes.0 as f64 / 1e6,
        t * p,
        row.answer_bytes.1 as f64 / 1e6,
        3 * t * p,
        row.expected.wanting.len(),
        row.expected.wanting.last().map_or(f64::NAN, |w| w.1),
        row.expected.wanting.first().map_or(f64::NAN, |w| w.1),
        row.expected.calm,
        fleet::MAX_REMOVALS,
        row.expected.wanting.len() - row.expected.deferred.len(),
        row.expected.deferred.len(),
    );
    let ab = row.pairs.len() > 1;
    println!();
    println!(
        "| mode |{} targets | pods | received | requests (reads + evictions) | wall | CPU | peak RSS |",
        if ab { " binary |" } else { "" }
    );
    println!(
        "|---|{}---:|---:|---:|---:|---:|---:|---:|",
        if ab { "---|" } else { "" }
    );
    for pair in &row.pairs {
        for (mode, targets, runs, c) in [
            ("single", 1, &pair.single, &pair.single_counts),
            ("fleet", t, &pair.fleet, &pair.fleet_counts),
        ] {
            let m = median(runs);
            println!(
                "| {mode} |{} {targets} | {} | {:.1} MB | {} ({} + {}) | {} | {} | {} |",
                if ab {
                    format!(" {} |", pair.label)
                } else {
                    String::new()
                },
                t * p,
                c.bytes as f64 / 1e6,
                c.requests,
                c.reads(),
                c.evictions,
                ms(m.wall),
                ms(m.cpu),
                rss(&m),
            );
        }
    }
    // The SPEC's line is drawn at its shape; other shapes show the ratios alone.
    let spec = (t, p) == crate::FLEET;
    let verdict = |ok: bool| match (spec, ok) {
        (false, _) => "",
        (true, true) => " — met",
        (true, false) => " — NOT met",
    };
    for pair in &row.pairs {
        println!();
        if ab {
            println!("{}:", pair.label);
        }
        let wall = pair.ratio(|s| s.wall);
        let mem = pair.ratio(|s| s.rss_kb as f64);
        let cpu = pair.ratio(|s| s.cpu);
        println!("- fleet / single wall ≤ 1.5: {wall:.2}×{}", verdict(wall <= 1.5));
        println!("- fleet / single peak RSS ≤ 1.5: {mem:.2}×{}", verdict(mem <= 1.5));
        if cpu.is_finite() {
            println!("- fleet / single CPU: {cpu:.2}× (10 ms steps)");
        }
        let (s, f) = (pair.single_counts.reads(), pair.fleet_counts.reads());
        println!(
            "- reads ≤ single + 1: single {s} (the Deployment, {} pages, the query), fleet {f} (the Deployment list, {} pages, the query): +{}{}",
            s.saturating_sub(2),
            f.saturating_sub(2),
            f as i64 - s as i64,
            verdict(f <= s + 1)
        );
        println!(
            "- evictions (server-side dry runs): single {}, fleet {} ({} targets of 2 within MAX_REMOVALS_PER_RUN={})",
            pair.single_counts.evictions,
            pair.fleet_counts.evictions,
            fleet::MAX_REMOVALS / 2,
            fleet::MAX_REMOVALS
        );
    }
}
