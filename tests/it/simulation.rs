//! Does the memory help, and the partition signal? The consumer-group simulation of
//! BENCHMARKS.md "Does it help?" (tests/sim/model.rs: the same model, the same pure
//! functions the binary runs, librdkafka's cooperative-sticky as a real group was
//! recorded following it), asserting what issues 18 and 19 say must be shown rather
//! than assumed, and pinning the honest number where a claim does not hold:
//!
//! - the first table of BENCHMARKS.md is what `cargo bench --bench simulate` prints
//!   today (regenerated here and compared);
//! - under the real assignor the unlucky assignment is fixable by some assignment but
//!   by evictions only by chance: the stateless rules get there after many removals,
//!   the memory stops first (pinned), and the partition signal, which finds it
//!   fixable, decides exactly as the memory does;
//! - where no eviction can help the memory stops the churn (a hot partition, idle
//!   consumers), rollouts and all, and with the partition signal it never starts —
//!   but not with HPA steps, which make the hot partition fixable at low replica
//!   counts (pinned), nor near the threshold under noise, where noise decides the
//!   memory's verdicts (pinned);
//! - with the signal every "hot spot moved" is right; a slow pod is acted on as the
//!   stateless rules act; the signal's scrape lags a rebalance, and the product sees
//!   partitions moving;
//! - which partitions a sticky member gives up decides whether evictions fix the
//!   unlucky assignment at all; a hot key that ends, a slow pod, a transient spike.
//!
//! Each case is first checked to be what it says (unbalanced without a rebalancer;
//! fixable or not; rollouts and HPA steps really happen), so a change to the model
//! cannot make an assertion pass by emptying it.

// The benchmark prints parts of the model this test does not assert on, and back.
#[allow(dead_code)]
#[path = "../sim/model.rs"]
pub(crate) mod model;
#[allow(dead_code)]
#[path = "../sim/tables.rs"]
pub(crate) mod tables;

use model::{Assignor, CYCLE, Case, DAY, HOUR, Policy, Report, Run, SEED, Sticky, simulate};
use std::sync::OnceLock;
use tables::{Cell, Options, SIZES, SWEEP_DAYS};

fn check(case: Case, assignor: Assignor, policy: Policy, seed: u64, days: i64) -> Report {
    simulate(Run::new(case, assignor, policy, seed, days))
}

fn sticky(case: Case, policy: Policy, days: i64) -> Report {
    check(case, Assignor::STICKY, policy, SEED, days)
}

/// Left alone for two days, the case is over the threshold every minute.
fn unbalanced_without_a_rebalancer(case: &Case, assignor: Assignor, what: &str) {
    let none = check(case.clone(), assignor, Policy::None, SEED, 2);
    assert_eq!(
        none.minutes_over(),
        none.minutes(),
        "{what}: unbalanced without a rebalancer"
    );
}

fn label(case: &Case, assignor: Assignor) -> String {
    format!("{} {}, {}", case.label, case.name, assignor.name())
}

/// The first table's runs, shared by the tests that read them.
fn sweep() -> &'static [Cell] {
    static CELLS: OnceLock<Vec<Cell>> = OnceLock::new();
    CELLS.get_or_init(|| {
        let opts = Options {
            jobs: 2,
            ..Options::default()
        };
        tables::sweep_cells(&opts, &SIZES)
    })
}

/// The first table's cell without noise (but the minute's ±3 %), or with ±10 %.
fn cell(size: usize, noise: f64, policy: Policy) -> &'static Cell {
    tables::find(sweep(), size, noise, policy)
}

/// The block of BENCHMARKS.md between `<!-- {name} -->` and `<!-- end of {name} -->`.
fn benchmarks_block(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let text = std::fs::read_to_string(path).expect("BENCHMARKS.md");
    let (begin, end) = (format!("<!-- {name} -->\n"), format!("<!-- end of {name} -->"));
    let from = text
        .find(&begin)
        .unwrap_or_else(|| panic!("BENCHMARKS.md has no {begin:?}"))
        + begin.len();
    let to = text[from..]
        .find(&end)
        .unwrap_or_else(|| panic!("BENCHMARKS.md has no {end:?}"));
    text[from..from + to].to_string()
}

#[test]
fn the_first_table_of_benchmarks_is_what_the_simulation_prints_today() {
    let printed = tables::sweep_text(&Options::default(), sweep(), &SIZES);
    let pinned = benchmarks_block("pinned: cargo bench --bench simulate -- --table 1");
    assert!(
        pinned.trim_end() == printed.trim_end(),
        "BENCHMARKS.md's first table differs from what `cargo bench --bench simulate -- --table 1` prints now; \
         rerun it, paste its table between the markers and revise the text that reads it.\n\
         --- BENCHMARKS.md\n{pinned}\n--- printed now\n{printed}"
    );
}

#[test]
fn the_unlucky_assignment_is_unbalanced_fixable_by_some_assignment_and_by_evictions_only_by_chance() {
    for size in SIZES {
        let case = Case::unlucky(size);
        let none = sticky(case.clone(), Policy::None, 1);
        assert_eq!(
            none.minutes_over(),
            none.minutes(),
            "{size} pods: unbalanced all day without a rebalancer"
        );
        for noise in [0.0, 0.10] {
            // Some assignment balances it: the partition signal says so in every seed.
            for r in &cell(size, noise, Policy::Signal).reports {
                assert!(
                    r.signal.get("fixable").is_some_and(|n| *n > 0) && r.unfixable == 0,
                    "{size} pods, noise {noise}: the signal finds it fixable: {:?}",
                    r.signal
                );
            }
            // And evictions get there, but by a random walk: under librdkafka's rule the
            // replacements take the lowest-numbered (here the heaviest) partitions of
            // the members above quota, not the pooled ones. The stateless rules balance
            // it in every seed, after many removals at 40 pods (8 under the earlier
            // guess that the newcomer takes the orphans).
            for r in &cell(size, noise, Policy::Stateless).reports {
                assert!(
                    r.first_balanced().is_some(),
                    "{size} pods, noise {noise}: the stateless rules balance it within {SWEEP_DAYS} days"
                );
                assert!(
                    size == 12 || r.removals >= 40,
                    "{size} pods, noise {noise}: {} removals",
                    r.removals
                );
            }
        }
    }
}

#[test]
fn under_the_real_assignor_the_memory_stops_before_the_unlucky_assignment_is_fixed() {
    // The expectation of issue 18 (the memory balances the unlucky assignment no later
    // than a one-hour cooldown) held under the model's earlier guess; under the rule a
    // real group follows it does not, and these are the numbers (BENCHMARKS.md, table
    // 1). Each action is a random step, most are judged ineffective or partial, the
    // breaker opens, and its probes are too few to luck into a balanced assignment.
    let (memory, stateless) = (cell(40, 0.0, Policy::ClosedLoop), cell(40, 0.0, Policy::Stateless));
    for (m, s) in memory.reports.iter().zip(&stateless.reports) {
        assert_eq!(
            m.first_balanced(),
            None,
            "40 pods: the memory never balances it in 3 days"
        );
        assert!(s.first_balanced().is_some());
        assert!(
            m.verdicts.effective == 0 && m.verdicts.ineffective >= 3 && m.removals <= 30 && s.removals >= 50,
            "40 pods: memory {:?}, {} removals; stateless {} removals",
            m.verdicts,
            m.removals,
            s.removals
        );
    }
    let cooldown = tables::ratios(cell(12, 0.0, Policy::ClosedLoop), cell(12, 0.0, Policy::Cooldown));
    let never = cell(12, 0.0, Policy::ClosedLoop)
        .reports
        .iter()
        .filter(|r| r.first_balanced().is_none())
        .count();
    assert_eq!(
        (cooldown.iter().filter(|r| **r > 1.0).count(), never),
        (7, 4),
        "12 pods: the memory slower than the cooldown in 7 seeds of 10, never balanced in 4: {cooldown:?}"
    );
}

#[test]
fn in_the_fixable_cases_the_signal_balances_no_later_than_the_memory_because_it_decides_the_same() {
    // The signal finds the unlucky assignment fixable (some assignment balances it), so
    // the decision goes on as without it: the same removals at the same minutes, seed by
    // seed. It cannot know that evictions under this assignor will not get there.
    let mut balanced = 0;
    for size in SIZES {
        for noise in [0.0, 0.10] {
            let (memory, signal) = (cell(size, noise, Policy::ClosedLoop), cell(size, noise, Policy::Signal));
            for (m, s) in memory.reports.iter().zip(&signal.reports) {
                assert_eq!(m.removed_at, s.removed_at, "{size} pods, noise {noise}");
                assert_eq!(m.first_balanced(), s.first_balanced(), "{size} pods, noise {noise}");
                assert!(
                    s.signal_when_acting
                        .keys()
                        .all(|k| *k == "fixable" || *k == "unexplained")
                );
                balanced += usize::from(s.first_balanced().is_some());
            }
        }
    }
    // Not only runs that never balance: both balance in 14 runs of 20 at 12 pods, in 1
    // of 20 at 40.
    assert_eq!(balanced, 15);
}

#[test]
fn with_the_signal_the_hot_spot_claims_are_right_in_every_verdict() {
    // "The hot spot moved" is right when the new hottest pod holds the partition that
    // carried the most load on the removed one (the truth, not a scrape). Without the
    // signal the memory says it of a runner-up too; with it, only with its partition.
    let mut memory = (0, 0);
    let mut signal = (0, 0);
    for size in SIZES {
        for noise in [0.0, 0.10] {
            for r in &cell(size, noise, Policy::ClosedLoop).reports {
                memory = (memory.0 + r.hot_spots, memory.1 + r.hot_spots_right);
            }
            for r in &cell(size, noise, Policy::Signal).reports {
                signal = (signal.0 + r.hot_spots, signal.1 + r.hot_spots_right);
            }
        }
    }
    assert_eq!((memory, signal), ((520, 195), (195, 195)), "(claimed, right)");
    // A hot key that moves with its partition.
    let signal = sticky(Case::regime_change(40, 2.0), Policy::Signal, 1);
    assert!(
        signal.hot_spots > 0 && signal.hot_spots == signal.hot_spots_right,
        "{} claimed, {} right",
        signal.hot_spots,
        signal.hot_spots_right
    );
}

#[test]
fn where_no_eviction_can_help_the_memory_stops_and_the_stateless_rules_churn() {
    let cases = [
        (Case::hot_partition(), Assignor::STICKY),
        (Case::hot_partition(), Assignor::Range),
        (Case::hot_partition(), Assignor::RoundRobin),
        (Case::idle_consumers(), Assignor::STICKY),
        // Range assigns by rank alone: evicting reproduces the same loads.
        (Case::unlucky(12), Assignor::Range),
    ];
    for (case, assignor) in cases {
        let what = label(&case, assignor);
        unbalanced_without_a_rebalancer(&case, assignor, &what);
        let stateless = check(case.clone(), assignor, Policy::Stateless, SEED, 2);
        assert_eq!(stateless.first_balanced(), None, "{what}: no eviction balances it");
        for (day, &removed) in stateless.removals_by_day.iter().enumerate() {
            assert!(
                removed >= 24,
                "{what}: the stateless rules removed {removed} pods on day {day}"
            );
        }

        let closed = check(case, assignor, Policy::ClosedLoop, SEED, 2);
        let by_day = &closed.removals_by_day;
        // Day one: the three actions that open the breaker, then a probe after each
        // hold (1 h, 2 h, 4 h, 8 h); from then on about one probe a day.
        assert!(by_day[0] <= 16, "{what}: the memory removed {by_day:?} pods by day");
        assert!(by_day[1] <= 4, "{what}: the memory removed {by_day:?} pods by day");
        assert!(
            closed.removals * 10 <= stateless.removals,
            "{what}: memory {} pods, stateless {}",
            closed.removals,
            stateless.removals
        );
        assert_eq!(
            closed.verdicts.ineffective,
            closed.verdicts.total(),
            "{what}: every action was ineffective"
        );
        assert_eq!(
            closed.actions,
            3 + closed.probes,
            "{what}: three actions open the breaker, every later one is a probe after a hold"
        );
        assert_eq!(
            closed.hot_spots,
            closed.verdicts.total(),
            "{what}: and each time the hot spot moved"
        );
        // Holding costs nothing: the hottest pod burns what it burned under churn.
        let (held, churned) = (closed.hottest_quantile(0.95), stateless.hottest_quantile(0.95));
        assert!(
            held <= churned * 1.03,
            "{what}: hottest pod p95 {held:.3} held, {churned:.3} churned"
        );
    }
}

/// The memory's removals a day over a week in `case`, after checking that rollouts or
/// HPA steps happened as the case says.
fn week_with_disturbance(case: Case) -> Report {
    let memory = sticky(case.clone(), Policy::ClosedLoop, 7);
    if let Some(every) = case.rollouts {
        let expected = ((7 * DAY - every / 2) / every + 1) as usize;
        assert_eq!(
            memory.rollouts,
            expected,
            "{}: a rollout every {} h",
            case.name,
            every / HOUR
        );
        assert_eq!(
            memory.other_rebalances,
            expected * 2 * case.consumers,
            "{}: each rollout replaces every pod, a join and a leave each",
            case.name
        );
    }
    if case.hpa {
        assert!(
            memory.other_rebalances >= 7 * 4,
            "{}: the HPA steps several times a day",
            case.name
        );
    }
    memory
}

#[test]
fn rollouts_do_not_restart_the_churn_but_hourly_ones_cost_a_repeated_probe() {
    for base in [Case::hot_partition(), Case::idle_consumers()] {
        let quiet = week_with_disturbance(base.clone());
        assert_eq!(
            quiet.actions, 13,
            "{}: 3 actions, then a probe after each hold",
            base.name
        );
        for hours in [2, 4, 8, 24] {
            let r = week_with_disturbance(base.clone().with_rollouts(hours));
            assert!(
                r.removals_per_day() <= 4.0,
                "{} with a rollout every {hours} h: {:.1} removals a day",
                base.name,
                r.removals_per_day()
            );
            assert_eq!(
                r.verdicts.ineffective,
                r.verdicts.total(),
                "{}: {:?}",
                base.name,
                r.verdicts
            );
        }
        // Hourly: a rollout lands between a probe and its evaluation three times a week;
        // the probe is dropped (streak and hold kept), the breaker is still at "probe",
        // and the next action probes again: 16 actions instead of 13, 4.6 pods a day,
        // above the 4 (BENCHMARKS.md, "Rollouts and HPA steps").
        let hourly = week_with_disturbance(base.clone().with_rollouts(1));
        assert_eq!(
            (hourly.actions, hourly.dropped_by_rollout, hourly.verdicts.total()),
            (16, 3, 13),
            "{}: hourly rollouts",
            base.name
        );
        assert!((4.5..4.7).contains(&hourly.removals_per_day()));
    }
}

#[test]
fn near_the_threshold_under_noise_the_memory_does_not_stop_and_noise_decides_its_verdicts() {
    // The cases are what they say: without noise, 11 consumers on 12 partitions are
    // within the threshold and the rules never act; the hot partition at 3× is over it
    // for part of each day (the swing), whatever is evicted.
    let calm = sticky(Case::eleven_on_twelve(0.0), Policy::Stateless, 2);
    assert_eq!((calm.removals, calm.minutes_over()), (0, 0), "11 on 12 without noise");
    let none = sticky(Case::hot_three(0.10), Policy::None, 2);
    let share = none.share_over();
    assert!(
        (0.2..0.7).contains(&share),
        "hot partition at 3×: over {share:.2} of the time"
    );
    let stateless = sticky(Case::hot_three(0.10), Policy::Stateless, 2);
    assert!(
        (stateless.share_over() - share).abs() < 0.05,
        "no eviction helps: {:.2} against {share:.2}",
        stateless.share_over()
    );
    // ±20 % noise: the rules act when noise lifts the spread over 0.3, the next reading
    // falls back (regression to the mean), and the memory calls most actions
    // effective, resetting the streak: far more than 4 removals a day, most verdicts
    // other than what the same fleet without noise would have earned.
    for case in [Case::eleven_on_twelve(0.20), Case::hot_three(0.20)] {
        let memory = sticky(case.clone(), Policy::ClosedLoop, 2);
        let v = memory.verdicts;
        assert!(
            memory.removals_per_day() > 20.0 && v.effective * 3 > v.total() && memory.noise_decided * 2 > v.total(),
            "{}: {:.1} removals a day, verdicts {v:?}, {} decided by noise",
            case.name,
            memory.removals_per_day(),
            memory.noise_decided
        );
    }
}

#[test]
fn which_partitions_a_sticky_member_gives_up_decides_whether_evictions_fix_the_unlucky_assignment() {
    let case = Case::unlucky(40);
    let run = |sticky: Sticky, policy: Policy| {
        let assignor = Assignor::CooperativeSticky(sticky);
        simulate(Run::new(case.clone(), assignor, policy, SEED, 3).until_balanced_after(0)).first_balanced()
    };
    // Giving up the newest received hands the pooled partitions back to the
    // replacements: each action is a directed step, the memory keeps up.
    assert_eq!(
        run(Sticky::Newest, Policy::ClosedLoop),
        run(Sticky::Newest, Policy::Stateless)
    );
    // Giving up the lowest-numbered (the heaviest here) makes each action a random
    // step: the stateless rules get there in hours, the memory stops them for good. So
    // does librdkafka's rule, which gives up the lowest-numbered by turns.
    for variant in [Sticky::Lowest, Sticky::Librdkafka] {
        let stateless = run(variant, Policy::Stateless);
        assert!(stateless.is_some_and(|t| t < 24 * HOUR), "{variant:?}: {stateless:?}");
        assert_eq!(run(variant, Policy::ClosedLoop), None, "{variant:?}");
    }
}

#[test]
fn after_a_hot_key_the_memory_probes_once_its_hold_ends() {
    let case = Case::regime_change(40, 2.0);
    let until = case.hot_key.map_or(0, |(_, until)| until);
    let run = |policy, sticky| {
        let assignor = Assignor::CooperativeSticky(sticky);
        simulate(Run::new(case.clone(), assignor, policy, SEED, 2).until_balanced_after(until))
    };
    // Where evictions fix what the hot key hid (the newcomer takes what it is given
    // back: `Sticky::Newest`), the memory fixes it within an hour of its hold's end.
    let stateless = run(Policy::Stateless, Sticky::Newest);
    assert_eq!(
        stateless.balanced_after(0),
        stateless.balanced_after(until),
        "not balanced while the key is hot"
    );
    let memory = run(Policy::ClosedLoop, Sticky::Newest);
    let open = memory
        .open_until_at(until)
        .expect("the breaker is open when the key cools");
    let (fixed, memory_fixed) = (stateless.balanced_after(until), memory.balanced_after(until));
    let (Some(fixed), Some(memory_fixed)) = (fixed, memory_fixed) else {
        panic!("never balanced after the hot key: stateless {fixed:?}, memory {memory_fixed:?}");
    };
    assert!(
        fixed < until + HOUR,
        "fixable: the stateless rules balance it at {fixed}"
    );
    assert!(
        memory_fixed >= open && memory_fixed <= open + HOUR,
        "the memory balances it within an hour of its hold's end ({open}), at {memory_fixed}"
    );
    // Under librdkafka's rule the unlucky assignment under the key is itself a random
    // walk: the stateless rules get there, the memory (with or without the signal, which
    // finds it fixable) does not within 2 days (BENCHMARKS.md, table 5).
    let stateless = run(Policy::Stateless, Sticky::Librdkafka);
    assert!(stateless.balanced_after(until).is_some());
    for policy in [Policy::ClosedLoop, Policy::Signal] {
        let r = run(policy, Sticky::Librdkafka);
        assert!(r.open_until_at(until).is_some(), "{}", policy.name());
        assert_eq!(r.balanced_after(until), None, "{}", policy.name());
    }
}

#[test]
fn with_the_signal_a_hot_partition_and_idle_consumers_cost_no_removal_from_the_first_day() {
    let cases = [
        (Case::hot_partition(), Assignor::STICKY),
        (Case::hot_partition(), Assignor::Range),
        (Case::hot_partition(), Assignor::RoundRobin),
        (Case::idle_consumers(), Assignor::STICKY),
        (Case::hot_partition().with_rollouts(2), Assignor::STICKY),
        (Case::idle_consumers().with_rollouts(24), Assignor::STICKY),
    ];
    for (case, assignor) in cases {
        let what = label(&case, assignor);
        unbalanced_without_a_rebalancer(&case, assignor, &what);
        // The memory alone: three actions open the breaker, then probes after the holds.
        let memory = check(case.clone(), assignor, Policy::ClosedLoop, SEED, 2);
        assert_eq!(memory.removals_by_day, vec![14, 2], "{what}: the memory alone");
        let signal = check(case.clone(), assignor, Policy::Signal, SEED, 2);
        assert_eq!(signal.removals, 0, "{what}: no removal with the signal");
        assert_eq!(signal.verdicts.total(), 0, "{what}");
        // Every cycle was held as unfixable (key skew: a partition hotter than a fair
        // share, or more pods than busy partitions), but those a rollout gated.
        let cycles = (2 * DAY / CYCLE - 1) as usize;
        let key_skew = signal.signal.get("key_skew").copied().unwrap_or(0);
        let moving = signal.signal.get("moving").copied().unwrap_or(0);
        assert_eq!(key_skew + moving, cycles, "{what}: {:?}", signal.signal);
        if case.rollouts.is_none() {
            assert_eq!(signal.unfixable, cycles, "{what}");
        } else {
            assert!(signal.unfixable > cycles / 2, "{what}: {}", signal.unfixable);
        }
        // Rollouts: the new pods own partitions while too young, which the signal calls
        // "partitions moving"; the fleet gate has held those cycles already.
        assert_eq!(
            signal.signal.contains_key("moving"),
            case.rollouts.is_some(),
            "{what}: {:?}",
            signal.signal
        );
        assert_eq!(signal.moving, 0, "{what}: the fleet gate comes first");
    }
}

#[test]
fn with_hpa_steps_a_hot_partition_is_fixable_at_low_replica_counts_and_the_signal_lets_the_rules_act() {
    // The expectation (no removal from the first day) does not hold with HPA steps: at
    // 6 or 7 pods the hot partition is 1.5 to 1.75 fair shares, some assignment
    // balances the group (the best possible spread is under 0.3), the signal says
    // fixable and the rules act; evictions do not find that assignment.
    let case = Case::hot_partition().with_hpa();
    let signal = sticky(case.clone(), Policy::Signal, 1);
    let memory = sticky(case, Policy::ClosedLoop, 1);
    assert!(
        signal.signal.get("fixable").is_some_and(|n| *n > 0),
        "{:?}",
        signal.signal
    );
    assert!(
        signal.signal.get("key_skew").is_some_and(|n| *n > 0),
        "{:?}",
        signal.signal
    );
    assert_eq!(
        signal.signal_when_acting.keys().collect::<Vec<_>>(),
        vec![&"fixable"],
        "it acts only where the signal finds an assignment that balances"
    );
    assert_eq!((memory.removals, signal.removals), (32, 26));
}

#[test]
fn on_a_slow_pod_the_signal_acts_as_the_stateless_rules_do() {
    let case = Case::slow_pod(12, 3.0);
    let stateless = sticky(case.clone(), Policy::Stateless, 2);
    let signal = sticky(case, Policy::Signal, 2);
    assert!(stateless.removals > 0 && !stateless.slow_lives.is_empty());
    assert_eq!(signal.removed_at, stateless.removed_at);
    assert_eq!(signal.slow_lives, stateless.slow_lives);
    // The load does not explain the CPU of a slow pod (R² under 0.5), so the signal
    // lets the decision go on as without it.
    assert_eq!(
        signal.signal_when_acting.keys().collect::<Vec<_>>(),
        vec![&"unexplained"],
        "{:?}",
        signal.signal_when_acting
    );
}

#[test]
fn the_partition_answer_lags_a_rebalance_so_the_product_sees_partitions_moving() {
    use pod_rebalancer::partition;
    use std::collections::BTreeMap;
    // The first action of the stateless rules on the hot partition: at the first cycle.
    let case = Case::hot_partition();
    let first = sticky(case.clone(), Policy::Stateless, 1);
    let t0 = first.removed_at[0].0;
    let mut run = Run::new(case, Assignor::STICKY, Policy::Stateless, SEED, 1);
    let offsets = [5, 45, 75, 115, 330];
    run.scrapes = offsets.iter().map(|s| t0 + s).collect();
    let scrapes = simulate(run).scrapes;
    assert_eq!(scrapes.iter().map(|s| s.at - t0).collect::<Vec<_>>(), offsets);
    // Partition → the pods the answer shows owning it; and its owner in truth.
    let shown = |s: &model::Scrape| {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pod, q, _) in &s.answer {
            by.entry(q.clone()).or_default().push(pod.clone());
        }
        by
    };
    let truth = |s: &model::Scrape| -> BTreeMap<String, Vec<String>> {
        s.owners
            .iter()
            .flat_map(|(pod, qs)| qs.iter().map(move |q| (format!("events/{q}"), vec![pod.clone()])))
            .collect()
    };
    let verdict = |s: &model::Scrape| {
        let answer =
            partition::Answer::new(s.answer.iter().map(|(p, q, l)| (p.as_str(), q.as_str(), *l))).expect("an answer");
        // Each running pod's CPU as its partitions make it (the loads are messages a
        // second, MESSAGES_PER_CORE of them a core).
        let cpu = |pod: &str| {
            let load: f64 = s.answer.iter().filter(|(p, ..)| p == pod).map(|(.., l)| l).sum();
            model::BASE_CORES + load / model::MESSAGES_PER_CORE
        };
        let eligible: Vec<(&str, f64)> = s.owners.iter().map(|(p, _)| (p.as_str(), cpu(p))).collect();
        let gone: Vec<&str> = s.gone.iter().map(String::as_str).collect();
        partition::explain(answer, &eligible, &gone, 0.3).verdict
    };
    let [leave, settled, joining, joined, later] = [0, 1, 2, 3, 4].map(|i| &scrapes[i]);
    // 5 s after the two pods left: they still show their partitions, and only they.
    assert_eq!(leave.gone.len(), 2);
    assert_ne!(shown(leave), truth(leave));
    assert!(shown(leave).values().all(|pods| pods.len() == 1));
    // 45 s after (the leave settled, every pod scraped since): the survivors show the
    // orphans, and the removed pods' last scrape still does: owned twice.
    assert!(shown(settled).values().any(|pods| pods.len() == 2));
    assert!(
        matches!(verdict(settled), partition::Verdict::Moving { .. }),
        "{:?}",
        verdict(settled)
    );
    // 15 s after the replacements joined: nothing of the join shows yet.
    let newcomers: Vec<&String> = joining
        .owners
        .iter()
        .filter(|(pod, qs)| !qs.is_empty() && !shown(joining).values().any(|pods| pods.contains(pod)))
        .map(|(pod, _)| pod)
        .collect();
    assert_eq!(newcomers.len(), 2, "{:?}", joining.owners);
    // 55 s after the join (settled, scraped): the running pods show the truth; the
    // removed ones are still within the lookback.
    let running: BTreeMap<String, Vec<String>> = shown(joined)
        .into_iter()
        .map(|(q, pods)| (q, pods.into_iter().filter(|p| !joined.gone.contains(p)).collect()))
        .collect();
    assert_eq!(running, truth(joined));
    // Past the lookback: the answer is the truth.
    assert_eq!(shown(later), truth(later));
    assert_eq!(verdict(later).label(), "key_skew");
}

#[test]
fn a_slow_pod_is_removed_within_minutes_on_twelve_pods_and_unseen_on_a_hundred() {
    let none = sticky(Case::slow_pod(12, 3.0), Policy::None, 2);
    assert!(
        none.slow_lives.len() == 2 && none.slow_lives.iter().all(|(_, life)| life.is_none()),
        "a slow pod stays slow: {:?}",
        none.slow_lives
    );
    assert!(none.share_over() > 0.5, "and lifts the spread over the threshold");
    for policy in Policy::ACTING {
        let r = sticky(Case::slow_pod(12, 3.0), policy, 2);
        assert!(
            r.slow_lives
                .iter()
                .all(|(_, life)| life.is_some_and(|l| l <= 2 * CYCLE)),
            "{}: {:?}",
            policy.name(),
            r.slow_lives
        );
        assert_eq!(
            r.removals,
            4,
            "{}: the slow pod and the coldest, once a day",
            policy.name()
        );
    }
    // On 100 pods one pod at 3× lifts the spread to about 0.2: under the threshold, so
    // no rule sees it (BENCHMARKS.md, "A pod-local problem").
    let large = sticky(Case::slow_pod(100, 3.0), Policy::ClosedLoop, 1);
    assert_eq!((large.removals, large.minutes_over()), (0, 0), "{:?}", large.slow_lives);
}

#[test]
fn a_transient_spike_costs_both_rules_the_same_and_never_opens_the_breaker() {
    let none = sticky(Case::spike(), Policy::None, 2);
    assert!(none.minutes_over() > 0, "the spike lifts the spread over the threshold");
    let stateless = sticky(Case::spike(), Policy::Stateless, 2);
    let closed = sticky(Case::spike(), Policy::ClosedLoop, 2);
    assert_eq!(
        stateless.removals_by_day,
        vec![2, 2],
        "the spiking pod and the coldest, once a day"
    );
    assert_eq!(closed.removals_by_day, stateless.removals_by_day);
    assert_eq!((closed.verdicts.ineffective, closed.held), (0, 0));
    assert!(closed.minutes_over() < none.minutes_over());
}

#[test]
fn the_assignors_are_kafkas() {
    // RangeAssignor: 7 partitions, 3 members: 3, 2, 2, contiguous.
    assert_eq!(model::range(7, 3), vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
    // 10 partitions, 12 members: the last two members sorted get nothing.
    assert_eq!(model::range(10, 12).iter().filter(|p| p.is_empty()).count(), 2);
    assert!(model::range(10, 12)[10].is_empty());
    // RoundRobinAssignor deals in order.
    assert_eq!(model::round_robin(7, 3), vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    // Cooperative-sticky keeps what survivors own; orphans go to the fewest, first of
    // equals: two new members (empty) get the six orphans of the two removed ones.
    let mut owned = vec![vec![3, 4, 5], vec![], vec![6, 7, 8], vec![]];
    let revoked = model::sticky(&mut owned, vec![11, 0, 1, 2, 9, 10], Sticky::AtOnce);
    assert_eq!(
        (owned, revoked),
        (vec![vec![3, 4, 5], vec![0, 2, 10], vec![6, 7, 8], vec![1, 9, 11]], 0)
    );
}

#[test]
fn under_leave_then_join_the_survivors_absorb_then_give_up_what_the_variant_says() {
    // Four members of three; one leaves: the survivors absorb its partitions, the
    // first by member id of those holding the fewest first.
    let mut owned = vec![vec![0, 1, 2], vec![3, 4, 5], vec![9, 10, 11]];
    assert_eq!(model::sticky(&mut owned, vec![8, 6, 7], Sticky::Newest), 0);
    assert_eq!(owned, vec![vec![0, 1, 2, 6], vec![3, 4, 5, 7], vec![9, 10, 11, 8]]);
    // Its replacement joins: quota 3 each, so each survivor gives one up.
    for (variant, given) in [
        (Sticky::Newest, [6, 7, 8]),
        (Sticky::Lowest, [0, 3, 8]),
        (Sticky::Highest, [6, 7, 11]),
    ] {
        let mut now = owned.clone();
        now.push(Vec::new());
        assert_eq!(model::sticky(&mut now, Vec::new(), variant), 3, "{variant:?}");
        assert_eq!(now[3], given.to_vec(), "{variant:?}");
        assert!(now.iter().all(|p| p.len() == 3), "{variant:?}: {now:?}");
    }
    // Eleven partitions on four: 3, 3, 3, 2; the first members by id keep the extra.
    let mut uneven = vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10], vec![]];
    assert_eq!(model::sticky(&mut uneven, Vec::new(), Sticky::Newest), 2);
    assert_eq!(uneven, vec![vec![0, 1, 2], vec![4, 5, 6], vec![8, 9, 10], vec![3, 7]]);
}

#[test]
fn a_removal_costs_a_leave_and_a_join_two_rounds_each_under_the_cooperative_protocol() {
    let stateless = sticky(Case::unlucky(12), Policy::Stateless, 1);
    assert_eq!(
        (stateless.rebalances, stateless.rounds),
        (2 * stateless.removals, 4 * stateless.removals)
    );
    let eager = check(Case::hot_partition(), Assignor::Range, Policy::Stateless, SEED, 1);
    assert_eq!(
        (eager.rebalances, eager.rounds),
        (2 * eager.removals, 2 * eager.removals)
    );
    assert_eq!(eager.other_rebalances, 0, "no rollout, no HPA");
}

#[test]
fn the_simulation_is_a_function_of_its_seed() {
    let run = |seed| check(Case::hot_three(0.2), Assignor::STICKY, Policy::ClosedLoop, seed, 1);
    let (a, b, c) = (run(SEED), run(SEED), run(SEED + 1));
    assert_eq!(a.hottest, b.hottest);
    assert_eq!(a.removals_by_day, b.removals_by_day);
    assert_ne!(a.hottest, c.hottest);
    // And of nothing else: the tables' threads do not change a report.
    let opts = |jobs| Options {
        jobs,
        seeds: 2,
        days: 1,
        ..Options::default()
    };
    assert_eq!(tables::pod_local(&opts(1)), tables::pod_local(&opts(2)));
}
