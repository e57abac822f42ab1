//! `victoria::parse_answer` on arbitrary bytes: no panic, and an accepted answer holds
//! one sample per pod, sorted by name, so lookups find every one of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::victoria::parse_answer;

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
    }
});
