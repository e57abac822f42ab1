//! `memory::parse_fleet` on arbitrary text (what it accepts reads back), and
//! `memory::parse` on it, then the memory's whole protocol against a fixed
//! plan: no panic; what it accepts is version 2 with at most ten actions and reads
//! back the same once rendered; and so does every document the protocol writes from
//! it (the judged memory, the lease, the end-of-run record with any answers). Judging
//! it never holds longer than a day, never acts on an open breaker, and changes
//! nothing while another run's action is in progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::memory::{self, Answer, Breaker, MAX_ACTIONS, MAX_HOLD_SECS, Memory, Settings};
use pod_rebalancer::outcome::Refusal;
use pod_rebalancer::plan::{self, Decision, Inputs, Pod, Removal, Samples};

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

/// What the protocol wrote reads back as itself, within the document's limits.
fn reads_back(what: &str, memory: &Memory) {
    assert!(
        memory.actions.len() <= MAX_ACTIONS,
        "{what}: {} actions",
        memory.actions.len()
    );
    let text = memory::render(memory);
    assert_eq!(
        memory::parse(Some(&text), None).as_ref(),
        Ok(memory),
        "{what} does not read back:\n{text}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The same text as a fleet's document (SPEC §13): what it accepts reads back.
    if let Ok(fleet) = memory::parse_fleet(Some(text)) {
        let rendered = memory::render_fleet(&fleet);
        assert_eq!(
            memory::parse_fleet(Some(&rendered)).as_ref(),
            Ok(&fleet),
            "a fleet document does not read back:\n{rendered}"
        );
    }
    let Ok(state) = memory::parse(Some(text), None) else {
        return;
    };
    assert_eq!(state.version, memory::VERSION);
    reads_back("the parsed document", &state);
    let names = ["a", "b", "c", "d", "e"];
    let samples: Samples = names
        .iter()
        .zip([1.9, 1.0, 1.0, 1.0, 0.1])
        .map(|(n, c)| (*n, c))
        .collect();
    let settings = Settings {
        min_improvement: 0.25,
        max_ineffective: 3,
        backoff_secs: 3600,
        lease_secs: 600,
    };
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
        leased: memory::in_progress(&state, NOW, &settings),
        partitions: None,
    })
    .expect("a plan");
    let fingerprints = ["f".to_string(), state.last_fingerprint().unwrap_or("g").to_string()];
    for fingerprint in &fingerprints {
        let judgement = memory::judge(&state, &decided, fingerprint, &settings);
        if let Some(until) = judgement.next.hold_until {
            assert!(until - NOW <= MAX_HOLD_SECS as i64, "a hold of {}s", until - NOW);
        }
        if judgement.in_progress.is_some() {
            assert_eq!(judgement.evaluation, None);
            assert_eq!(
                judgement.next.actions, state.actions,
                "an action in progress is left alone"
            );
        }
        reads_back("the judged memory", &judgement.next);
        let applied = judgement.apply(decided.clone());
        if let Breaker::Open { .. } = judgement.breaker {
            assert!(
                !matches!(applied.decision, Decision::Remove { .. }),
                "an open breaker removes nothing"
            );
        }
        if let Some(lease) = judgement.lease(&applied) {
            reads_back("the lease", &lease);
        }
        let removals: &[Removal] = applied.removals();
        for answer in [Answer::Removed, Answer::Unknown, Answer::Refused(Refusal::Gone)] {
            let answers: Vec<(Removal, Answer)> = removals.iter().map(|r| (r.clone(), answer)).collect();
            reads_back("the end-of-run record", &judgement.settle(&applied, &answers));
        }
    }
});
