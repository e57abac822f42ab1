//! The cycle called in-process, with its clients, against the loopback Kubernetes API
//! and the real VictoriaMetrics: every `Outcome` a completed cycle can have and every
//! `Stage` a failed one can fail in, each from the fleet or the fault that causes it,
//! and the metrics' view of each (`cycle::metrics_of`, `cycle::finish`).

use crate::cycle::{World, fleet, name};
use crate::support::kube::Fake;
use crate::support::server::{Reply, Server};
use crate::support::{fixture, live_config, now};
use pod_rebalancer::config::{Cluster, Config};
use pod_rebalancer::cycle::{self, Clients, Cycle};
use pod_rebalancer::outcome::{Ended, Outcome, Stage};
use std::sync::Arc;

/// The configuration a run of `world` with `extra` variables would have.
fn configure(world: &World, extra: &[(&str, &str)]) -> (Config, Cluster) {
    live_config(&world.env(extra))
}

/// One cycle of `world`, in-process.
fn cycle_of(world: &World, extra: &[(&str, &str)]) -> Cycle {
    let (config, cluster) = configure(world, extra);
    in_process(&config, &cluster)
}

/// The cycle with its clients, or the clients' failure as a cycle that got nowhere.
fn in_process(config: &Config, cluster: &Cluster) -> Cycle {
    match Clients::connect(config, cluster) {
        Ok(clients) => cycle::cycle(&clients, config, cluster, now()),
        Err(failure) => cycle::unconnected(cluster, failure),
    }
}

fn ended(cycle: &Cycle) -> Ended {
    cycle.ended()
}

fn error(cycle: &Cycle) -> Option<String> {
    cycle.failure().map(|f| f.error.to_string())
}

/// Runs one cycle of a fleet with these CPU numbers and checks how it ended.
#[track_caller]
fn check(namespace: &str, cpus: &[f64], fake: impl FnOnce(Fake) -> Fake, extra: &[(&str, &str)], want: Ended) -> World {
    let (pods, cpu) = fleet(cpus);
    let world = World::new(namespace, fake, &pods, &cpu);
    let (config, cluster) = configure(&world, extra);
    let result = in_process(&config, &cluster);
    assert_eq!(ended(&result), want, "{:?}", error(&result));
    let run = &cycle::metrics_of(&result, &config, TIMING)[0];
    assert_eq!(run.ended, want, "the metrics tell the same story");
    world
}

const IMBALANCED: [f64; 5] = [0.8, 1.9, 0.79, 0.12, 0.85];

const TIMING: cycle::Timing = cycle::Timing {
    now: 1_800_000_000,
    duration_secs: 0.5,
    end: 1_800_000_000.5,
};

#[test]
fn every_outcome_of_a_completed_cycle() {
    let same = |f| f;
    let world = check("o-acted", &IMBALANCED, same, &[], Ok(Outcome::Acted));
    assert_eq!(
        world.kube.mutations().len(),
        5,
        "two removals, an Event on each pod and one on the Deployment"
    );
    let world = check("o-dry", &IMBALANCED, same, &[("DRY_RUN", "true")], Ok(Outcome::DryRun));
    let mutations = world.kube.mutations();
    assert_eq!(mutations.len(), 2, "two server-side dry runs, no Event");
    assert!(mutations.iter().all(|r| r.query("dryRun").as_deref() == Some("All")));
    check("o-balanced", &[1.0, 1.1, 0.9, 1.05], same, &[], Ok(Outcome::Balanced));
    check("o-idle", &[0.0, 0.0002, 0.0, 0.0001], same, &[], Ok(Outcome::Idle));
    // Scaled to zero: no pods, and the Deployment wants none. No query is sent.
    let world = check("o-zero", &[], same, &[], Ok(Outcome::Idle));
    assert!(world.kube.mutations().is_empty());
    // The owning team's off switch on the Deployment: decided from it alone.
    let paused = |mut f: Fake| {
        f.deployment["metadata"]["annotations"] = serde_json::json!({"pod-rebalancer.io/paused": "True"});
        f
    };
    let world = check("o-paused", &IMBALANCED, paused, &[], Ok(Outcome::Paused));
    assert!(world.kube.mutations().is_empty());
    assert!(
        world.kube.requests().iter().all(|r| !r.path().ends_with("/pods")),
        "no pod list for a paused Deployment"
    );
    let not_a_boolean = |mut f: Fake| {
        f.deployment["metadata"]["annotations"] = serde_json::json!({"pod-rebalancer.io/paused": "please"});
        f
    };
    check("o-paused-bad", &IMBALANCED, not_a_boolean, &[], Err(Stage::Kubernetes));
    check("o-min", &[1.9, 0.1, 1.0], same, &[], Ok(Outcome::MinPods));
    check(
        "o-few",
        &IMBALANCED,
        same,
        &[("MIN_PODS_REQUIRED", "6")],
        Ok(Outcome::TooFewPods),
    );
    let rollout = |mut f: Fake| {
        f.deployment["status"]["updatedReplicas"] = 1.into();
        f
    };
    check("o-rollout", &IMBALANCED, rollout, &[], Ok(Outcome::Stabilizing));
    // The memory's breaker, open for another hour: the plan that would act holds.
    let held = |mut f: Fake| {
        let document = format!(r#"{{"version": 2, "streak": 3, "hold_until": {}}}"#, now() + 3600);
        if let Some(state) = f.state.as_mut() {
            state["data"] = serde_json::json!({ "state.json": document });
        }
        f
    };
    let world = check("o-held", &IMBALANCED, held, WITH_MEMORY, Ok(Outcome::Ineffective));
    assert!(
        world.kube.mutations().iter().all(|r| r.method == "PUT"),
        "only the state is written: {:?}",
        world.kube.mutations()
    );
}

/// The runs that keep a memory in the fake's state ConfigMap.
const WITH_MEMORY: &[(&str, &str)] = &[("STATE_CONFIGMAP", crate::support::kube::STATE)];

#[test]
fn every_stage_a_cycle_can_fail_in() {
    let status = |code, file: &str| Reply::json(code, fixture(file));
    // Kubernetes: an answer that is not 2xx, and a selector that matches nothing.
    let forbidden = |f: Fake| f.reply("list", status(403, "k8s/status_403_forbidden_list_pods.json"));
    check("s-kube", &IMBALANCED, forbidden, &[], Err(Stage::Kubernetes));
    let wants_three = |mut f: Fake| {
        f.deployment["spec"]["replicas"] = 3.into();
        f
    };
    let world = check("s-nopods", &[], wants_three, &[], Err(Stage::Kubernetes));
    assert!(world.kube.mutations().is_empty());
    // Metrics: a failing endpoint, and an answer without our pods.
    let (pods, cpu) = fleet(&IMBALANCED);
    let world = World::new("s-metrics", |f| f, &pods, &cpu);
    let broken = Server::http(Arc::new(|_: &_| Reply::json(503, "{}")));
    let result = cycle_of(&world, &[("PROMETHEUS_ENDPOINT", &broken.url())]);
    assert_eq!(ended(&result), Err(Stage::Metrics));
    assert_eq!(result.targets[0].matched, Some(5), "the list was read");
    let (pods, _) = fleet(&IMBALANCED);
    let world = World::new("s-nometrics", |f| f, &pods, &[]);
    let result = cycle_of(&world, &[]);
    assert_eq!(ended(&result), Err(Stage::Metrics));
    assert!(error(&result).is_some_and(|e| e.contains("no CPU metrics")));
    // Act: the hottest pod's eviction fails hard; nothing after it.
    let refuse = |f: Fake| {
        f.reply(
            &format!("evict:{}", name(1)),
            status(500, "k8s/constructed/status_500_internal_error.json"),
        )
    };
    let world = check("s-act", &IMBALANCED, refuse, &[], Err(Stage::Act));
    assert_eq!(world.kube.mutations().len(), 1);
    // State: the state ConfigMap the settings name does not exist.
    let missing = |mut f: Fake| {
        f.state = None;
        f
    };
    let world = check("s-state", &IMBALANCED, missing, WITH_MEMORY, Err(Stage::State));
    assert!(world.kube.mutations().is_empty());
}

#[test]
fn a_metrics_file_that_cannot_be_written_fails_the_run_in_the_report_stage() {
    let (pods, cpu) = fleet(&[1.0, 1.1, 0.9, 1.05]);
    let world = World::new("s-report", |f| f, &pods, &cpu);
    let dir = world.dir.path().join("not-a-file");
    std::fs::create_dir_all(&dir).expect("directory");
    let (config, cluster) = configure(&world, &[("METRICS_FILE", &dir.display().to_string())]);
    let finished = cycle::run_at(&config, &cluster, now());
    assert_eq!(finished.code, 1);
    assert_eq!(finished.single().run.ended, Err(Stage::Report));
}

#[test]
fn the_metrics_view_of_a_failure_after_acting_keeps_what_was_done() {
    let refuse_coldest = |f: Fake| {
        f.reply(
            &format!("evict:{}", name(3)),
            Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json")),
        )
    };
    let (pods, cpu) = fleet(&IMBALANCED);
    let world = World::new("s-partial", refuse_coldest, &pods, &cpu);
    let (config, cluster) = configure(&world, &[]);
    let result = in_process(&config, &cluster);
    let run = &cycle::metrics_of(&result, &config, TIMING)[0];
    assert_eq!(run.ended, Err(Stage::Act));
    assert_eq!((run.deleted_highest, run.deleted_lowest), (1, 0));
    assert_eq!((run.matched, run.analyzed), (Some(5), 5));
    assert!(run.stats.is_some(), "the plan's statistics are exported");
}
