//! Does the memory help? The consumer-group simulation of BENCHMARKS.md "Does it
//! help?" (tests/sim/model.rs: the same model, the same pure functions the binary
//! runs), over a day or two with the table's seed, asserting what issue 13 says must
//! be shown rather than assumed:
//!
//! - where no eviction can help (a hot partition, idle consumers, an unlucky range
//!   assignment) the stateless rules remove dozens of pods a day, every day, and the
//!   closed loop a handful after its first hours;
//! - where evictions do help (an unlucky sticky assignment) the closed loop balances
//!   the group as soon as the stateless rules do, and removes no more;
//! - a transient spike costs both the same, and does not move the breaker.
//!
//! Each scenario is first checked to be what it says (unbalanced without a
//! rebalancer; fixable or not by the stateless rules), so a change to the model
//! cannot make an assertion pass by emptying it.

// The benchmark prints parts of the model this test does not assert on, and back.
#[allow(dead_code)]
#[path = "../sim/model.rs"]
pub(crate) mod model;

use model::{Assignor, CYCLE, Policy, Report, Run, SEED, Scenario, simulate};

fn check(scenario: Scenario, assignor: Assignor, policy: Policy, seed: u64, days: i64) -> Report {
    simulate(Run::new(scenario, assignor, policy, seed, days))
}

fn label(scenario: Scenario, assignor: Assignor) -> String {
    format!("({}) {}, {}", scenario.letter(), scenario.name(), assignor.name())
}

#[test]
fn where_no_eviction_can_help_the_closed_loop_stops_and_the_stateless_rules_churn() {
    let cases = [
        (Scenario::HotPartition, Assignor::CooperativeSticky),
        (Scenario::HotPartition, Assignor::Range),
        (Scenario::HotPartition, Assignor::RoundRobin),
        (Scenario::IdleConsumers, Assignor::CooperativeSticky),
        // Range assigns by rank alone: evicting reproduces the same loads.
        (Scenario::Unlucky, Assignor::Range),
    ];
    for (scenario, assignor) in cases {
        let what = label(scenario, assignor);
        let none = check(scenario, assignor, Policy::None, SEED, 2);
        assert_eq!(
            none.minutes_over, none.minutes,
            "{what}: unbalanced without a rebalancer"
        );
        let stateless = check(scenario, assignor, Policy::Stateless, SEED, 2);
        assert_eq!(stateless.first_balanced, None, "{what}: no eviction balances it");
        for (day, &removed) in stateless.removals_by_day.iter().enumerate() {
            assert!(
                removed >= 24,
                "{what}: the stateless rules removed {removed} pods on day {day}"
            );
        }

        let closed = check(scenario, assignor, Policy::ClosedLoop, SEED, 2);
        let by_day = &closed.removals_by_day;
        // Day one: the three actions that open the breaker, then a probe after each
        // hold (1 h, 2 h, 4 h, 8 h); from then on about one probe a day.
        assert!(
            by_day[0] <= 16,
            "{what}: the closed loop removed {by_day:?} pods by day"
        );
        assert!(by_day[1] <= 4, "{what}: the closed loop removed {by_day:?} pods by day");
        assert!(
            closed.removals * 10 <= stateless.removals,
            "{what}: closed loop {} pods, stateless {}",
            closed.removals,
            stateless.removals
        );
        assert_eq!(
            closed.ineffective, closed.evaluations,
            "{what}: every action was ineffective"
        );
        assert_eq!(
            closed.actions,
            3 + closed.probes,
            "{what}: three actions open the breaker, every later one is a probe after a hold"
        );
        assert_eq!(
            closed.hot_spots, closed.evaluations,
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

#[test]
fn where_evictions_help_the_closed_loop_balances_as_soon_as_the_stateless_rules() {
    for seed in SEED..SEED + 5 {
        let (scenario, assignor) = (Scenario::Unlucky, Assignor::CooperativeSticky);
        let what = format!("{} seed {seed:#x}", label(scenario, assignor));
        let none = check(scenario, assignor, Policy::None, seed, 1);
        assert_eq!(none.first_balanced, None, "{what}: unbalanced without a rebalancer");
        let stateless = check(scenario, assignor, Policy::Stateless, seed, 1);
        let closed = check(scenario, assignor, Policy::ClosedLoop, seed, 1);
        let Some(fixed) = stateless.first_balanced else {
            panic!("{what}: the stateless rules never balanced it: the scenario is not fixable");
        };
        let Some(closed_fixed) = closed.first_balanced else {
            panic!("{what}: the closed loop never balanced it (the stateless rules did at {fixed} s)");
        };
        assert!(
            closed_fixed <= fixed + 2 * CYCLE,
            "{what}: balanced at {closed_fixed} s by the closed loop, at {fixed} s by the stateless rules"
        );
        assert!(
            closed.removals <= stateless.removals,
            "{what}: closed loop {} pods, stateless {}",
            closed.removals,
            stateless.removals
        );
        // Nor does it spend longer over the threshold (noise near it included).
        assert!(
            closed.minutes_over <= stateless.minutes_over + 10,
            "{what}: {} minutes over the threshold with the closed loop, {} with the stateless rules",
            closed.minutes_over,
            stateless.minutes_over
        );
    }
}

#[test]
fn on_forty_pods_the_closed_loop_balances_later_but_the_same_day() {
    // One eviction pair moves 2 of 40 pods: each action lowers the spread by ~7 %,
    // under MIN_IMPROVEMENT, so the breaker opens and the probe after the hold
    // finishes the job (BENCHMARKS.md reads this row).
    let (scenario, assignor) = (Scenario::UnluckyLarge, Assignor::CooperativeSticky);
    let stateless = check(scenario, assignor, Policy::Stateless, SEED, 1);
    let closed = check(scenario, assignor, Policy::ClosedLoop, SEED, 1);
    let (Some(fixed), Some(closed_fixed)) = (stateless.first_balanced, closed.first_balanced) else {
        panic!("never balanced: stateless {stateless:?}, closed loop {closed:?}");
    };
    assert!(closed_fixed <= fixed + 2 * 3600, "{closed_fixed} s against {fixed} s");
    assert!(closed.removals <= stateless.removals);
}

#[test]
fn a_transient_spike_costs_both_rules_the_same_and_never_opens_the_breaker() {
    let (scenario, assignor) = (Scenario::Spike, Assignor::CooperativeSticky);
    let none = check(scenario, assignor, Policy::None, SEED, 2);
    assert!(none.minutes_over > 0, "the spike lifts the spread over the threshold");
    let stateless = check(scenario, assignor, Policy::Stateless, SEED, 2);
    let closed = check(scenario, assignor, Policy::ClosedLoop, SEED, 2);
    assert_eq!(
        stateless.removals_by_day,
        vec![2, 2],
        "the spiking pod and the coldest, once a day"
    );
    assert_eq!(closed.removals_by_day, stateless.removals_by_day);
    assert_eq!((closed.ineffective, closed.held), (0, 0));
    assert!(closed.minutes_over < none.minutes_over);
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
    model::sticky(&mut owned, vec![11, 0, 1, 2, 9, 10]);
    assert_eq!(
        owned,
        vec![vec![3, 4, 5], vec![0, 2, 10], vec![6, 7, 8], vec![1, 9, 11]]
    );
}

#[test]
fn the_simulation_is_a_function_of_its_seed() {
    let run = |seed| {
        check(
            Scenario::HotPartition,
            Assignor::CooperativeSticky,
            Policy::ClosedLoop,
            seed,
            1,
        )
    };
    let (a, b, c) = (run(SEED), run(SEED), run(SEED + 1));
    assert_eq!(a.hottest, b.hottest);
    assert_eq!(a.removals_by_day, b.removals_by_day);
    assert_ne!(a.hottest, c.hottest);
}
