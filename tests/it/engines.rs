//! The product's query on both real engines over the same samples: VictoriaMetrics
//! (`support/vm.rs`) and Prometheus (`support/prom.rs`) hold one set of
//! cAdvisor-shaped histories, and each pod must read what it really burned on each,
//! where the two engines differ: series that start or stop inside the window (a
//! container restart, a pod younger than the window) and one container scraped by two
//! jobs, at 15 s and 30 s scrape intervals, over the default 5 m window, 290 s (no
//! whole number of scrapes) and 2 m.
//!
//! Every case also asks the query the product sent before issue 12 and prints both
//! readings (`cargo test --test it engines -- --nocapture` shows the table); where that
//! query was wrong, the test checks that the data catches it.

use crate::cycle::{DEPLOYMENT, fleet, name};
use crate::support::prom::Prom;
use crate::support::vm::{self, Born, RESTART_DOWNTIME_MS, Restart, RestartShape, Scrape};
use crate::victoria::{World, assert_measured_as_fed, log_lines, logged_cpu, near, plan_line};
use pod_rebalancer::victoria::cpu_query;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The query before issue 12: `rate` per series, one series per container. Right on
/// VictoriaMetrics, about half the truth on Prometheus after a restart.
fn before(namespace: &str, container: &str, window: i64) -> String {
    format!(
        "sum by (pod) (max by (pod, container) (rate(container_cpu_usage_seconds_total{{namespace=\"{namespace}\",container=\"{container}\"}}[{window}s])))"
    )
}

/// What happens to the case's pod (the second of three; the others run steadily).
#[derive(Debug, Clone, Copy)]
enum Event {
    Steady,
    /// Its container restarts this many seconds before the end.
    Restart(i64, RestartShape),
    /// The pod starts this many seconds before the end.
    Born(i64),
}

/// One history, in a namespace of its own, and the window it is read over.
struct Case {
    scrape: Scrape,
    window: i64,
    event: Event,
}

impl Case {
    fn new(step_secs: i64, window: i64, event: Event, two_jobs: bool, end_ms: i64) -> Case {
        let what = match event {
            Event::Steady => "steady".to_string(),
            Event::Restart(ago, RestartShape::NewSeries) => format!("restart-{ago}s-ago"),
            Event::Restart(ago, RestartShape::SameSeries) => format!("same-series-{ago}s-ago"),
            Event::Born(ago) => format!("born-{ago}s-ago"),
        };
        let jobs = if two_jobs { "-2-jobs" } else { "" };
        let namespace = format!("both-{step_secs}s-{window}s-{what}{jobs}");
        let (_, cpu) = fleet(&[0.6, 1.0, 1.4]);
        let mut scrape = Scrape {
            end_ms,
            step_ms: step_secs * 1000,
            // Samples go on after `end_ms`, as in a live cluster: the tables ask at
            // every second of the scrape interval after it, the binary "now".
            future_ms: 10 * 60_000,
            second_scraper: two_jobs,
            ..Scrape::production(&namespace, DEPLOYMENT, &cpu)
        };
        match event {
            Event::Steady => {}
            Event::Restart(secs_ago, shape) => scrape.restarts.push(Restart {
                pod: name(1),
                secs_ago,
                shape,
            }),
            Event::Born(secs_ago) => scrape.born.push(Born { pod: name(1), secs_ago }),
        }
        Case { scrape, window, event }
    }

    fn namespace(&self) -> &str {
        &self.scrape.namespace
    }
}

/// The cases every pod of which must read within 5 % of the truth on both engines,
/// whenever the query falls between two scrapes: steady pods, scraped by one job or
/// two, at every interval and window; and, over the default 5m window at a 15 s
/// scrape, a restart well inside the window.
fn within_5_percent(end_ms: i64) -> Vec<Case> {
    use Event::*;
    use RestartShape::*;
    let mut cases = Vec::new();
    // 290 s is no whole number of scrapes: VictoriaMetrics' `increase` then spans one
    // scrape more or less than the window, its `rate` does not.
    for (step, window) in [(15, 300), (30, 300), (15, 120), (30, 120), (15, 290), (30, 290)] {
        cases.push(Case::new(step, window, Steady, false, end_ms));
        cases.push(Case::new(step, window, Steady, true, end_ms));
    }
    for ago in [150, 45] {
        cases.push(Case::new(15, 300, Restart(ago, NewSeries), false, end_ms));
    }
    cases.push(Case::new(15, 300, Restart(150, NewSeries), true, end_ms));
    cases.push(Case::new(15, 300, Restart(150, SameSeries), false, end_ms));
    cases
}

/// The restarts that one engine or the other does not read within 5 % at every moment
/// between two scrapes: near the window's edges, at a 30 s scrape, over a short window.
fn edges(end_ms: i64) -> Vec<Case> {
    use Event::*;
    use RestartShape::*;
    let mut cases = Vec::new();
    for (step, window, agos) in [
        (15, 300, &[285, 270, 240, 10][..]),
        (30, 300, &[270, 150, 30][..]),
        (15, 120, &[105, 60, 15][..]),
        (30, 120, &[60][..]),
    ] {
        for ago in agos {
            cases.push(Case::new(step, window, Restart(*ago, NewSeries), false, end_ms));
        }
    }
    cases.push(Case::new(30, 300, Restart(150, NewSeries), true, end_ms));
    cases
}

/// Pods younger than the window (the decision excludes them; the query must answer).
fn young(end_ms: i64) -> Vec<Case> {
    vec![
        Case::new(15, 300, Event::Born(150), false, end_ms),
        Case::new(30, 300, Event::Born(150), false, end_ms),
        Case::new(15, 120, Event::Born(60), false, end_ms),
    ]
}

/// The fleet the binary runs against: five pods at 1 core, both jobs scraping them,
/// the third restarted two minutes before the end, three before the engines start
/// (the case).
fn run_case(end_ms: i64) -> Case {
    let mut case = Case::new(15, 300, Event::Steady, true, end_ms);
    case.scrape.fleet = fleet(&[1.0; 5]).1;
    case.scrape.namespace = "both-run-restarted-pod".into();
    case.scrape.elsewhere = Some("both-run-restarted-pod-staging".into());
    case.scrape.restarts.push(Restart {
        pod: name(2),
        secs_ago: 120,
        shape: RestartShape::NewSeries,
    });
    case.event = Event::Restart(120, RestartShape::NewSeries);
    case
}

/// Both engines, holding every case; started and fed once per test process.
struct Engines {
    vm: &'static vm::Vm,
    prom: Prom,
    within: Vec<Case>,
    edges: Vec<Case>,
    young: Vec<Case>,
    run: Case,
}

fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        // A minute ago, so that every instant the tables ask about is past (an engine
        // may read a query about the future as one about now); the histories go on.
        let end_ms = vm::now_ms() - 60_000;
        let (within, edges, young, run) = (within_5_percent(end_ms), edges(end_ms), young(end_ms), run_case(end_ms));
        let scrapes: Vec<&Scrape> = within
            .iter()
            .chain(&edges)
            .chain(&young)
            .chain([&run])
            .map(|c| &c.scrape)
            .collect();
        let prom = Prom::start(&scrapes);
        let vm = vm::shared();
        for scrape in &scrapes {
            vm.feed_scrape(scrape);
        }
        Engines {
            vm,
            prom,
            within,
            edges,
            young,
            run,
        }
    })
}

/// How one engine read one pod of one case, asked at every whole second of one scrape
/// interval from the end of the history on (the product asks "now", which falls
/// anywhere between two scrapes; one `query_range` with a 1 s step answers what an
/// instant query at each of those seconds would): the product's query, and the one
/// before issue 12.
struct Reading {
    engine: &'static str,
    pod: String,
    /// (truth, read) at each instant; `None` when the engine gave the pod no value.
    now: Vec<(f64, Option<f64>)>,
    before: Vec<(f64, Option<f64>)>,
}

impl Reading {
    /// The smallest and largest error, as fractions of the truth; `None` when a value
    /// was missing.
    fn range(readings: &[(f64, Option<f64>)]) -> Option<(f64, f64)> {
        readings
            .iter()
            .try_fold((f64::MAX, f64::MIN), |(lo, hi), (truth, read)| {
                let e = read.map(|v| (v - truth) / truth)?;
                Some((lo.min(e), hi.max(e)))
            })
    }
}

impl Engines {
    /// Asks both engines `case`'s queries; one `Reading` per engine and pod.
    fn read(&self, case: &Case) -> Vec<Reading> {
        let (query, old) = (
            cpu_query(case.namespace(), Some(DEPLOYMENT), &[], case.window as u64),
            before(case.namespace(), DEPLOYMENT, case.window),
        );
        let start = case.scrape.end_ms / 1000;
        let end = start + case.scrape.step_ms / 1000 - 1;
        let instants: Vec<i64> = (start..=end).map(|t| t * 1000).collect();
        let mut readings = Vec::new();
        for (engine, port) in [("VictoriaMetrics", self.vm.port), ("Prometheus", self.prom.port)] {
            let ask = |promql: &str| vm::samples_each_second(port, promql, "pod", start, end);
            let (now, before) = (ask(&query), ask(&old));
            for (pod, _) in &case.scrape.fleet {
                let each = |answers: &[BTreeMap<String, f64>]| {
                    instants
                        .iter()
                        .zip(answers)
                        .map(|(at, a)| (case.scrape.truth(pod, case.window, *at), a.get(pod).copied()))
                        .collect()
                };
                readings.push(Reading {
                    engine,
                    pod: pod.clone(),
                    now: each(&now),
                    before: each(&before),
                });
            }
        }
        readings
    }
}

/// One table line: the case's pod `name(1)` on one engine, errors as min..max.
fn table(case: &Case, readings: &[Reading]) {
    let show = |r: &[(f64, Option<f64>)]| match Reading::range(r) {
        Some((lo, hi)) => format!("{:+6.1} % .. {:+6.1} %", lo * 100.0, hi * 100.0),
        None => "no value".into(),
    };
    for r in readings.iter().filter(|r| r.pod == name(1)) {
        eprintln!(
            "{:<15} {:<36} truth {:.3}  read {}   before issue 12 {}",
            r.engine,
            case.namespace(),
            r.now[0].0,
            show(&r.now),
            show(&r.before)
        );
    }
}

#[test]
fn both_engines_read_every_pod_within_5_percent_of_what_it_burned() {
    let engines = engines();
    let mut failures = Vec::new();
    for case in &engines.within {
        let readings = engines.read(case);
        table(case, &readings);
        for r in &readings {
            match Reading::range(&r.now) {
                Some((lo, hi)) if lo >= -0.05 && hi <= 0.05 => {}
                range => failures.push(format!("{} {} {}: {range:?}", r.engine, case.namespace(), r.pod)),
            }
            // The data has teeth: after a restart inside the window, the query before
            // issue 12 misreads the restarted pod on Prometheus.
            if let (Event::Restart(_, RestartShape::NewSeries), "Prometheus") = (case.event, r.engine)
                && r.pod == name(1)
            {
                let (lo, _) = Reading::range(&r.before).unwrap_or((-1.0, 0.0));
                assert!(
                    lo < -0.05,
                    "{}: the query before issue 12 reads the restarted pod within 5 % on Prometheus: the data cannot catch it",
                    case.namespace()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where a container instance has few scrapes inside the window, neither engine knows
/// all it burned: Prometheus's `increase` drops a series with one sample and
/// extrapolates half a scrape interval past a series' end; VictoriaMetrics counts
/// from the sample before the window to the last one, so what it adds up spans the
/// window give or take a scrape interval when the pod's samples come from two series;
/// and no engine sees what a container burned between its last scrape and its end.
/// The restarted pod then reads low by at most two scrape intervals and the downtime,
/// and high by at most one scrape interval, over the window.
#[test]
fn near_a_restart_a_pod_reads_within_two_scrape_intervals_of_what_it_burned() {
    let engines = engines();
    let mut failures = Vec::new();
    for case in &engines.edges {
        let readings = engines.read(case);
        table(case, &readings);
        let (cores, step) = (case.scrape.fleet[1].1, case.scrape.step_ms as f64);
        let below = cores * (2.0 * step + RESTART_DOWNTIME_MS as f64) / (case.window * 1000) as f64;
        let above = cores * step / (case.window * 1000) as f64;
        for r in readings.iter().filter(|r| r.pod == name(1)) {
            for (truth, read) in &r.now {
                match read {
                    Some(v) if *v >= truth - below && *v <= truth * 1.01 + above => {}
                    _ => failures.push(format!(
                        "{} {}: truth {truth:.3}, expected {:.3} to {:.3}, read {read:?}",
                        r.engine,
                        case.namespace(),
                        truth - below,
                        truth * 1.01 + above
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A pod younger than the window: the decision excludes it (too young), but the query
/// must still answer. Prometheus reads its CPU seconds over the whole window;
/// VictoriaMetrics, whose `rate` spans the series' own samples, its cores.
#[test]
fn a_pod_younger_than_the_window_still_reads_a_number() {
    let engines = engines();
    for case in &engines.young {
        let readings = engines.read(case);
        table(case, &readings);
        let cores = case.scrape.fleet[1].1;
        let step = case.scrape.step_ms as f64 / 1000.0;
        for r in readings.iter().filter(|r| r.pod == name(1)) {
            for (truth, read) in &r.now {
                let lowest = truth - cores * step / case.window as f64;
                assert!(
                    read.is_some_and(|v| v >= lowest && v <= cores * 1.05),
                    "{} {}: truth {truth:.3}, cores {cores}, read {read:?}",
                    r.engine,
                    case.namespace()
                );
            }
        }
    }
}

/// The case end to end: the binary against the real Prometheus (and the real
/// VictoriaMetrics, same samples), five pods at 1 core, both jobs scraping them, one
/// restarted three minutes before. The query before issue 12 read about 0.6 cores
/// for it on Prometheus; the run must see a balanced fleet.
#[test]
fn the_binary_reads_a_restarted_pod_right_on_prometheus_and_on_victoriametrics() {
    let engines = engines();
    let case = &engines.run;
    let ns = case.namespace();
    let (pods, _) = fleet(&[1.0; 5]);
    let world = World::new(ns, &pods);
    for (engine, url) in [
        ("Prometheus", engines.prom.url()),
        ("VictoriaMetrics", engines.vm.url()),
    ] {
        let out = world.run(&url, &[("DRY_RUN", "true")]);
        assert_eq!(out.code, 0, "{engine}: {}", out.stderr);
        let lines = log_lines(&out);
        assert_measured_as_fed(&logged_cpu(&lines), &case.scrape.fleet, &out.stderr);
        assert_eq!(plan_line(&lines)["decision"], "balanced", "{engine}: {}", out.stderr);
    }
    // The data has teeth at the time of the runs: the restart is still inside the
    // window, and the query before issue 12 misreads it on Prometheus.
    let old = engines.prom.samples(&before(ns, DEPLOYMENT, 300), "pod", None);
    let read = old.get(&name(2)).copied().unwrap_or(0.0);
    assert!(
        !near(read, 1.0, 0.05),
        "the query before issue 12 reads {read} for the restarted pod now: the data cannot catch it"
    );
    assert!(world.mutations().is_empty());
}
