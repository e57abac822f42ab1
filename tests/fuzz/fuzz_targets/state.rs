//! `memory::parse` on arbitrary text, then the memory judged against a fixed plan: no
//! panic; what it accepts is version 1 with at most ten actions and reads back the
//! same once rendered; judging it never holds longer than a day nor acts on an open
//! breaker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::memory::{self, Breaker, MAX_ACTIONS, MAX_HOLD_SECS, Settings};
use pod_rebalancer::plan::{self, Decision, Inputs, Pod, Samples};

const NOW: i64 = 1_800_000_000;

fn pod(name: &str) -> Pod {
    Pod {
        name: name.into(),
        uid: name.into(),
        node: None,
        phase: "Running".into(),
        ready: true,
        terminating: false,
        created: Some(NOW - 3600),
        cpu_request: None,
        cpu_limit: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(state) = memory::parse(Some(text)) else {
        return;
    };
    assert_eq!(state.version, memory::VERSION);
    assert!(state.actions.len() <= MAX_ACTIONS);
    assert_eq!(
        memory::parse(Some(&memory::render(&state))).as_ref(),
        Ok(&state),
        "reads back"
    );
    let names = ["a", "b", "c", "d", "e"];
    let samples: Samples = names
        .iter()
        .zip([1.9, 1.0, 1.0, 1.0, 0.1])
        .map(|(n, c)| (*n, c))
        .collect();
    let decided = plan::decide(Inputs {
        pods: names.iter().map(|n| pod(n)).collect(),
        samples: &samples,
        rollout: None,
        now: NOW,
        settings: &plan::Settings {
            window_secs: 300,
            threshold: 0.3,
            min_pods: 3,
            stabilization_secs: 600,
        },
        container: "c",
        namespace: "ns",
        ignored: 0,
        selector: None,
    })
    .expect("a plan");
    let settings = Settings {
        min_improvement: 0.25,
        max_ineffective: 3,
        backoff_secs: 3600,
    };
    for fingerprint in ["f", state.fingerprint.as_deref().unwrap_or("g")] {
        let judgement = memory::judge(&state, &decided, fingerprint, NOW, 0.3, &settings);
        if let Some(until) = judgement.next.hold_until {
            assert!(until - NOW <= MAX_HOLD_SECS as i64, "a hold of {}s", until - NOW);
        }
        let applied = memory::apply(decided.clone(), &judgement);
        if let Breaker::Open { .. } = judgement.breaker {
            assert!(
                !matches!(applied.decision, Decision::Remove { .. }),
                "an open breaker removes nothing"
            );
        }
    }
});
