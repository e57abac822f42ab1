//! Does the rebalancer help? Simulated consumer groups (tests/sim/model.rs) under each
//! policy, printed as the Markdown tables of BENCHMARKS.md "Does it help?"
//! (tests/sim/tables.rs builds them). Seeded, without I/O or clocks: the numbers are the
//! same on every machine and with any number of threads. It asserts nothing;
//! tests/it/simulation.rs asserts what the tables must show, and compares the first
//! table with BENCHMARKS.md.
//!
//!     cargo bench --bench simulate                          # every table of BENCHMARKS.md
//!     cargo bench --bench simulate -- --table 1             # the fleet-size sweep alone
//!     cargo bench --bench simulate -- --seed 7 --days 2 --seeds 3
//!     cargo bench --bench simulate -- --sticky newest       # another cooperative-sticky variant
//!     cargo bench --bench simulate -- --min-improvement 0.05
//!     cargo bench --bench simulate -- --window 15          # METRICS_TIME_WINDOW 15m
//!     cargo bench --bench simulate -- --table 1 --noise 20 # the sweep with ±20 % noise beside none

#[allow(dead_code)]
mod model;
#[allow(dead_code)]
mod tables;

use model::Sticky;
use tables::Options;

const USAGE: &str = "usage: cargo bench --bench simulate -- [--table N] [--seed N] [--days N] [--seeds N] [--min-improvement X] [--sticky librdkafka|newest|lowest|highest|at-once] [--window MINUTES] [--noise PERCENT] [--jobs N]";

/// A table's Markdown, from the options.
type Table = fn(&Options) -> String;

/// The tables, in BENCHMARKS.md's order, with their headings.
const TABLES: [(&str, Table); 8] = [
    ("1. Time to balance, by fleet size", tables::sweep),
    ("2. Unfixable, near the threshold", tables::near_threshold),
    ("3. Rollouts and HPA steps", tables::rollouts),
    ("4. Which partitions a member gives up", tables::variants),
    ("5. A regime change", tables::regime_change),
    ("6. A pod-local problem", tables::pod_local),
    ("7. A week of the basic cases", tables::week),
    ("8. What the partition signal changes", tables::signal),
];

fn parse_args() -> Result<(Options, Option<usize>), String> {
    let mut opts = Options {
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..Options::default()
    };
    let mut table = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg}: expected {what}"));
        let number = |v: String, what: &str| -> Result<u64, String> {
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
            .ok_or(format!("expected {what}, got {v:?}"))
        };
        match arg.as_str() {
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "--seed" => opts.seed = number(value("a seed")?, "a seed (decimal or 0x…)")?,
            "--days" => opts.days = number(value("days")?, "a number of days from 1 to 365")?.clamp(1, 365) as i64,
            "--seeds" => opts.seeds = number(value("seeds")?, "a number of seeds")?.max(1),
            "--window" => {
                opts.window_secs = 60 * number(value("minutes")?, "a METRICS_TIME_WINDOW in minutes")?.clamp(1, 60)
            }
            "--noise" => {
                opts.noise = number(value("a percentage")?, "a noise in percent, 0 to 50")?.min(50) as f64 / 100.0;
            }
            "--jobs" => opts.jobs = number(value("jobs")?, "a number of threads")?.max(1) as usize,
            "--table" => {
                let n = number(value("a table")?, "a table number")? as usize;
                if !(1..=TABLES.len()).contains(&n) {
                    return Err(format!("--table: expected 1 to {}", TABLES.len()));
                }
                table = Some(n);
            }
            "--sticky" => {
                let v = value("a variant")?;
                opts.sticky = Sticky::ALL.into_iter().find(|s| s.flag() == v).ok_or(format!(
                    "--sticky: expected librdkafka, newest, lowest, highest or at-once, got {v:?}"
                ))?;
            }
            "--min-improvement" => {
                opts.min_improvement = value("a number")?
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x > 0.0 && *x < 1.0)
                    .ok_or("--min-improvement: expected a number in (0, 1)")?
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((opts, table))
}

fn main() {
    let (opts, table) = match parse_args() {
        Ok(parsed) => parsed,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("{why}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    for (i, (heading, build)) in TABLES.iter().enumerate() {
        if table.is_some_and(|t| t != i + 1) {
            continue;
        }
        let started = std::time::Instant::now();
        let text = build(&opts);
        println!("### {heading}\n\n{text}");
        eprintln!("table {}: {:.1} s", i + 1, started.elapsed().as_secs_f64());
    }
}
