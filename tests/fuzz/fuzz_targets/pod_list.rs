//! `kube::parse_pod_list` on arbitrary bytes: no panic, and what it accepts is sane.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::kube::parse_pod_list;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for container in [None, Some("coredns"), Some("ingestion-consumer")] {
        if let Ok((pods, next)) = parse_pod_list(text, container) {
            assert!(pods.len() <= pod_rebalancer::http::MAX_ITEMS);
            assert!(next.as_deref() != Some(""), "an empty continue token means the end");
            for p in &pods {
                for cores in [p.cpu_request, p.cpu_limit].into_iter().flatten() {
                    assert!(cores.is_finite() && cores >= 0.0, "{cores} cores");
                }
            }
        }
    }
});
