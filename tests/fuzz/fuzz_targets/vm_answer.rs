//! The metrics answers on arbitrary bytes: no panic. `victoria::parse_answer` (the CPU
//! query's): an accepted answer holds one sample per pod, sorted by name, so lookups
//! find every one of them, and reading only some pods' series accepts whatever reading
//! them all accepts. `victoria::parse_partitions` (`PARTITION_QUERY`'s, SPEC §12): an
//! accepted answer holds only matched pods, loads finite in [0, 10^9], each pod's
//! partitions heaviest first; and the same bytes as either answer never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::partition::MAX_LOAD;
use pod_rebalancer::victoria::{Wanted, parse_answer, parse_answer_for, parse_partitions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(samples) = parse_answer(text) {
        assert!(samples.len() <= pod_rebalancer::http::MAX_ITEMS);
        let mut previous: Option<&str> = None;
        for (pod, cpu) in samples.iter() {
            assert!(!pod.is_empty());
            assert!(previous.is_none_or(|p| p < pod), "{previous:?} then {pod}");
            assert_eq!(samples.get(pod).map(f64::to_bits), Some(cpu.to_bits()), "{pod}");
            previous = Some(pod);
        }
        let first: Vec<&str> = samples.iter().map(|(pod, _)| pod).take(1).collect();
        let some = parse_answer_for(text, &Wanted::pods(first.iter().map(|p| (*p, None))));
        assert!(
            some.is_ok(),
            "reading fewer series refused what reading all accepted: {some:?}"
        );
    }
    let labels = ["topic".to_string(), "partition".to_string()];
    let matched = ["a", "b", "consumer-0", "p1"];
    if let Ok(answer) = parse_partitions(text, &labels, matched) {
        let mut last: Option<(&str, f64)> = None;
        for (pod, _, load) in answer.iter() {
            assert!(matched.contains(&pod), "{pod} is not matched");
            assert!(load.is_finite() && (0.0..=MAX_LOAD).contains(&load), "{load}");
            if let Some((p, l)) = last
                && p == pod
            {
                assert!(l >= load, "{pod}: {l} then {load}");
            }
            last = Some((pod, load));
        }
    }
});
