//! Does the rebalancer help? A simulated week of a Kafka consumer group in each
//! scenario, with each assignor and each policy (tests/sim/model.rs), printed as the
//! Markdown of BENCHMARKS.md "Does it help?". Seeded, without I/O or clocks: the
//! numbers are the same on every machine. It asserts nothing; tests/it/simulation.rs
//! asserts what the table must show.
//!
//!     cargo bench --bench simulate                          # the tables of BENCHMARKS.md
//!     cargo bench --bench simulate -- --seed 7 --days 2
//!     cargo bench --bench simulate -- --seeds 0             # the first table only
//!     cargo bench --bench simulate -- --min-improvement 0.05

#[allow(dead_code)]
mod model;

use model::{Assignor, Policy, Report, Run, SEED, Scenario, simulate};

const USAGE: &str = "usage: cargo bench --bench simulate -- [--seed N] [--days N] [--seeds N] [--min-improvement X]";

struct Args {
    seed: u64,
    days: i64,
    seeds: u64,
    min_improvement: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: SEED,
        days: 7,
        seeds: 100,
        min_improvement: model::memory_settings().min_improvement,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => v.parse().ok(),
                })
                .ok_or(format!("{arg}: expected {what}"))
        };
        match arg.as_str() {
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "--seed" => args.seed = number("a seed (decimal or 0x…)")?,
            "--days" => args.days = number("a number of days from 1 to 365")?.clamp(1, 365) as i64,
            "--seeds" => args.seeds = number("a number of seeds")?,
            "--min-improvement" => {
                args.min_improvement = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|x: &f64| *x > 0.0 && *x < 1.0)
                    .ok_or("--min-improvement: expected a number in (0, 1)")?
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("{why}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    week(&args);
    if args.seeds > 0 {
        println!();
        seeds(&args);
    }
}

fn days(n: i64) -> String {
    if n == 1 { "1 day".into() } else { format!("{n} days") }
}

fn run(args: &Args, scenario: Scenario, assignor: Assignor, policy: Policy, seed: u64) -> Report {
    let mut run = Run::new(scenario, assignor, policy, seed, args.days);
    run.memory.min_improvement = args.min_improvement;
    simulate(run)
}

/// Every scenario, assignor and policy with `--seed`.
fn week(args: &Args) {
    println!(
        "Seed `{:#x}`, {}; threshold 0.3, MIN_PODS_REQUIRED 3, window 5m, stabilization 10m, MIN_IMPROVEMENT {}, MAX_INEFFECTIVE_ACTIONS 3, BACKOFF 1h.\n",
        args.seed,
        days(args.days),
        args.min_improvement
    );
    for scenario in Scenario::ALL {
        println!(
            "- ({}) {}: {}.",
            scenario.letter(),
            scenario.name(),
            scenario.parameters()
        );
    }
    println!();
    println!(
        "| scenario | assignor | policy | removals / day | first day, last day | time over threshold | hottest pod p50 | hottest pod p95 | first balanced | evaluated / ineffective / hot spot moved | cycles held |"
    );
    println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    let mut ratios = Vec::new();
    for scenario in Scenario::ALL {
        for &assignor in scenario.assignors() {
            for policy in Policy::ALL {
                let r = run(args, scenario, assignor, policy, args.seed);
                println!("{}", row(scenario, assignor, policy, &r));
                if !r.ratios.is_empty() {
                    ratios.push((scenario, assignor, r.ratios));
                }
            }
        }
    }
    println!(
        "\nThe closed loop's evaluations, spread after / spread before each action (effective at ≤ {:.2} or once the spread is within the threshold):\n",
        1.0 - args.min_improvement
    );
    for (scenario, assignor, ratios) in ratios {
        let shown: Vec<String> = ratios.iter().take(7).map(|r| format!("{r:.2}")).collect();
        let more = if ratios.len() > 7 { ", …" } else { "" };
        println!(
            "- ({}) {}, {}: {}{more}",
            scenario.letter(),
            scenario.name(),
            assignor.name(),
            shown.join(", ")
        );
    }
}

fn row(scenario: Scenario, assignor: Assignor, policy: Policy, r: &Report) -> String {
    let (memory, held) = if policy == Policy::ClosedLoop {
        (
            format!("{} / {} / {}", r.evaluations, r.ineffective, r.hot_spots),
            r.held.to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    let (first, last) = (r.removals_by_day[0], r.removals_by_day[r.removals_by_day.len() - 1]);
    format!(
        "| ({}) {} | {} | {} | {:.1} | {first}, {last} | {:.1} % | {:.2} | {:.2} | {} | {memory} | {held} |",
        scenario.letter(),
        scenario.name(),
        assignor.name(),
        policy.name(),
        r.removals_per_day(),
        100.0 * r.share_over(),
        r.hottest_quantile(0.5),
        r.hottest_quantile(0.95),
        match r.first_balanced {
            Some(0) => "from the start".into(),
            Some(t) => format!("{} min", t / 60),
            None => "never".into(),
        },
    )
}

/// Stateless beside closed loop over `--seeds` seeds, cooperative-sticky: how much of
/// the first table is its seed's.
fn seeds(args: &Args) {
    let last = args.seed.wrapping_add(args.seeds - 1);
    println!(
        "Over {} seeds (`{:#x}` to `{last:#x}`), cooperative-sticky, {} each; median [min–max]:\n",
        args.seeds,
        args.seed,
        days(args.days),
    );
    println!(
        "| scenario | policy | removals / day | time over threshold | first balanced | seeds where the closed loop balanced later |"
    );
    println!("|---|---|--:|--:|--:|--:|");
    for scenario in Scenario::ALL {
        let (mut stateless, mut closed) = (Vec::new(), Vec::new());
        for i in 0..args.seeds {
            let seed = args.seed.wrapping_add(i);
            stateless.push(run(
                args,
                scenario,
                Assignor::CooperativeSticky,
                Policy::Stateless,
                seed,
            ));
            closed.push(run(
                args,
                scenario,
                Assignor::CooperativeSticky,
                Policy::ClosedLoop,
                seed,
            ));
        }
        let later: Vec<Option<i64>> = stateless
            .iter()
            .zip(&closed)
            .filter_map(|(s, c)| match (s.first_balanced, c.first_balanced) {
                (Some(s), Some(c)) if c > s => Some(Some(c - s)),
                (Some(_), None) => Some(None),
                _ => None,
            })
            .collect();
        let later = if later.is_empty() {
            "0".to_string()
        } else if later.contains(&None) {
            format!(
                "{} (in {} never)",
                later.len(),
                later.iter().filter(|l| l.is_none()).count()
            )
        } else {
            let worst = later.iter().flatten().max().copied().unwrap_or(0);
            format!("{} (at worst by {} min)", later.len(), worst / 60)
        };
        for (policy, rs, later) in [
            (Policy::Stateless, &stateless, ""),
            (Policy::ClosedLoop, &closed, &*later),
        ] {
            println!(
                "| ({}) {} | {} | {} | {} | {} | {later} |",
                scenario.letter(),
                scenario.name(),
                policy.name(),
                summary(rs.iter().map(Report::removals_per_day).collect(), 1, ""),
                summary(rs.iter().map(|r| 100.0 * r.share_over()).collect(), 1, " %"),
                balanced(rs),
            );
        }
    }
}

fn balanced(rs: &[Report]) -> String {
    let never = rs.iter().filter(|r| r.first_balanced.is_none()).count();
    if never == rs.len() {
        return "never".into();
    }
    let minutes: Vec<f64> = rs
        .iter()
        .filter_map(|r| r.first_balanced)
        .map(|t| t as f64 / 60.0)
        .collect();
    if minutes.iter().all(|m| *m == 0.0) && never == 0 {
        return "from the start".into();
    }
    let mut s = summary(minutes, 0, " min");
    if never > 0 {
        s.push_str(&format!(", never in {never}"));
    }
    s
}

/// "median [min–max]" with `digits` decimals and a unit.
fn summary(mut values: Vec<f64>, digits: usize, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    format!(
        "{median:.digits$}{unit} [{:.digits$}–{:.digits$}]",
        values[0],
        values[n - 1]
    )
}
