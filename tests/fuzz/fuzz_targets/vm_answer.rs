//! `victoria::parse_answer` on arbitrary bytes: no panic, and an accepted answer holds
//! finite numbers or one of the three non-finite words, one sample per pod.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::plan::Sample;
use pod_rebalancer::victoria::parse_answer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(samples) = parse_answer(text) {
        assert!(samples.len() <= pod_rebalancer::http::MAX_ITEMS);
        for (pod, sample) in &samples {
            assert!(!pod.is_empty());
            match sample {
                Sample::Cores(c) => assert!(c.is_finite(), "{pod}: {c}"),
                Sample::NotFinite(word) => {
                    assert!(["NaN", "+Inf", "-Inf", "Inf"].contains(&word.as_str()), "{word}")
                }
            }
        }
    }
});
