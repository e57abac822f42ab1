//! `report::parse_previous` on arbitrary text: no panic; what it accepts carries
//! finite, whole, non-negative counters, and rendering them and reading them back
//! gives the same counters plus this run's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::outcome::{Outcome, Refusal, Stage};
use pod_rebalancer::report::{Counters, Labels, MAX_COUNTER, Run, Sheet, parse_previous, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(by_deployment) = parse_previous(text) else {
        return;
    };
    let counters = |c: &Counters| {
        let mut v = vec![c.success, c.error, c.analyzed, c.deleted_highest, c.deleted_lowest];
        v.extend(Stage::ALL.map(|stage| c.errors.get(&stage).copied().unwrap_or(0.0)));
        v.extend(Refusal::ALL.map(|r| c.refused.get(&r).copied().unwrap_or(0.0)));
        v
    };
    for previous in by_deployment.values() {
        assert_eq!(previous.check(), Ok(()), "{previous:?}");
        for x in counters(previous) {
            assert!(x.is_finite() && x >= 0.0, "{x}");
        }
    }
    let previous = by_deployment.get("d").cloned().unwrap_or_default();
    let run = Run {
        labels: Labels {
            namespace: "ns".into(),
            deployment: Some("d".into()),
            extra: vec![("cluster".into(), "c1".into())],
        },
        ended: Ok(Outcome::Acted),
        matched: Some(5),
        analyzed: 5,
        deleted_highest: 1,
        deleted_lowest: 1,
        stats: None,
        threshold: 0.3,
        duration_secs: 0.5,
        end: 1_800_000_000.0,
        refused: Vec::new(),
        memory: None,
        info: None,
        partitions: None,
    };
    let rendered = render(&Sheet::single(run.clone(), Some(previous.after(&run))));
    let again = parse_previous(&rendered).expect("our own text reads back");
    let again = again.get("d").expect("the target's counters");
    let plus = [1.0, 0.0, 5.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    for ((before, after), inc) in counters(&previous).into_iter().zip(counters(again)).zip(plus) {
        assert_eq!(after, (before + inc).min(MAX_COUNTER), "a counter did not carry over");
    }
    assert_eq!(again.last_success, Some(run.end));
});
