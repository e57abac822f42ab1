//! `kube::parse_pod_list` on arbitrary bytes: no panic, and what it accepts is sane:
//! the pods kept and the pods ignored add up to the page, and a Deployment keeps a
//! subset of what no owner check keeps, and so do several Deployments at once (fleet
//! mode), each pod going to one of them at most.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::kube::{Route, parse_pod_list};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(all) = parse_pod_list(text, Route::Every { container: None }) else {
        return;
    };
    assert_eq!(all.ignored, 0, "without a Deployment every pod is kept");
    const COREDNS: &[(&str, &str)] = &[("coredns", "coredns")];
    const OURS: &[(&str, &str)] = &[("ingestion-consumer", "ingestion-consumer")];
    const BOTH: &[(&str, &str)] = &[("coredns", "coredns"), ("ingestion-consumer", "ingestion-consumer")];
    for route in [
        Route::Every { container: None },
        Route::Owned(COREDNS),
        Route::Owned(OURS),
        Route::Owned(BOTH),
    ] {
        let page = parse_pod_list(text, route).expect("the same page parses again");
        assert!(page.pods.len() <= pod_rebalancer::http::MAX_ITEMS);
        assert_eq!(page.pods.len() + page.ignored, all.pods.len());
        assert!(page.pods.iter().all(|p| all.pods.iter().any(|a| a.name == p.name)));
        assert!(
            page.next.as_deref() != Some(""),
            "an empty continue token means the end"
        );
        for p in &page.pods {
            for cores in [p.cpu_request, p.cpu_limit].into_iter().flatten() {
                assert!(cores.is_finite() && cores >= 0.0, "{cores} cores");
            }
        }
    }
});
