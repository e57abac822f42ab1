//! `kube::parse_pod_list` on arbitrary bytes: no panic, and what it accepts is sane:
//! the pods kept and the pods ignored add up to the page, and a Deployment keeps a
//! subset of what no owner check keeps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::kube::{Select, parse_pod_list};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(all) = parse_pod_list(text, Select::default()) else {
        return;
    };
    assert_eq!(all.ignored, 0, "without a Deployment every pod is kept");
    for deployment in [None, Some("coredns"), Some("ingestion-consumer")] {
        let select = Select {
            deployment,
            container: deployment,
        };
        let page = parse_pod_list(text, select).expect("the same page parses again");
        assert!(page.pods.len() <= pod_rebalancer::http::MAX_ITEMS);
        assert_eq!(page.pods.len() + page.ignored, all.pods.len());
        assert!(page.pods.iter().all(|p| all.pods.iter().any(|a| a.name == p.name)));
        assert!(page.next.as_deref() != Some(""), "an empty continue token means the end");
        for p in &page.pods {
            for cores in [p.cpu_request, p.cpu_limit].into_iter().flatten() {
                assert!(cores.is_finite() && cores >= 0.0, "{cores} cores");
            }
        }
    }
});
