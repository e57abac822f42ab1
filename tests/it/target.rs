//! Aiming at exactly one Deployment: only the pods it owns count, its container and
//! cluster are the ones measured, and a pod list or a command line that could make it
//! count something twice, loop or fall back to a default is refused.

use crate::cycle::{DEPLOYMENT, World, fleet, name};
use crate::support::kube::{Fake, FakePod, OLD_HASH, Owner, pod, pod_json};
use crate::support::server::Reply;
use crate::support::{assert_contains, now, run_bin, vm};
use serde_json::json;

/// The pod of every removal the run asked for, in order.
fn removed(world: &World) -> Vec<String> {
    world.removals().into_iter().map(|(_, pod)| pod).collect()
}

/// Pods of other owners, returned by the same label selector, burning `cores` each.
fn strangers(owner: Owner, prefix: &str, n: usize, cores: f64) -> (Vec<FakePod>, Vec<(String, f64)>) {
    let pods = (0..n)
        .map(|i| FakePod {
            owner: owner.clone(),
            ..pod(&format!("{prefix}-{i}"))
        })
        .collect();
    let cpu = (0..n).map(|i| (format!("{prefix}-{i}"), cores)).collect();
    (pods, cpu)
}

/// The README's example: `app=consumer` also matches another Deployment's 8 Ready pods.
/// With `MIN_PODS_REQUIRED=9` only the Deployment's 10 pods count: one may go, not two.
#[test]
fn pods_of_another_deployment_and_bare_pods_are_ignored_everywhere() {
    let (mut pods, mut cpu) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0, 1.0, 0.95, 1.05, 1.0, 1.0]);
    let (others, others_cpu) = strangers(
        Owner::Deployment("billing-consumer"),
        "billing-consumer-5f7c9d8b4d",
        8,
        1.0,
    );
    // A bare pod, hotter than any of ours and terminating: counted, it would be chosen
    // and it would gate the fleet.
    let bare = FakePod {
        owner: Owner::Bare,
        terminating: true,
        ..pod("debug-shell")
    };
    pods.extend(others);
    pods.push(bare);
    cpu.extend(others_cpu);
    cpu.push(("debug-shell".into(), 9.0));
    let world = World::new("owners", |f| f, &pods, &cpu);
    let out = world.run(&[("MIN_PODS_REQUIRED", "9")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        removed(&world),
        [name(1)],
        "the budget is min(10 - 9, 10 / 2) = 1: {}",
        out.stderr
    );
    assert_contains(&out.stderr, "ignored=9");
    assert_contains(&out.stderr, "matched=10 eligible=10 healthy=10 budget=1");
    assert_contains(&world.metrics(), "rebalancer_pods_matched 10\n");
}

#[test]
fn a_selector_that_matches_only_other_pods_is_an_error_that_says_so() {
    let (pods, cpu) = strangers(
        Owner::Deployment("billing-consumer"),
        "billing-consumer-5f7c9d8b4d",
        4,
        1.0,
    );
    let world = World::new("owners-none", |f| f, &pods, &cpu);
    let out = world.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(world.kube.mutations().is_empty());
    assert_contains(
        &out.stderr,
        "the label selector app=consumer in namespace owners-none matched 4 pods, none of them the Deployment's",
    );
    let (pods, cpu) = fleet(&[]);
    let wants_three = |mut f: Fake| {
        f.deployment["spec"]["replicas"] = 3.into();
        f
    };
    let world = World::new("owners-empty", wants_three, &pods, &cpu);
    let out = world.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(
        &out.stderr,
        "no pods matched the label selector app=consumer in namespace owners-empty",
    );
}

/// During a rollout the old ReplicaSet's pods are the Deployment's too: they count, and
/// the unfinished rollout gates the fleet.
#[test]
fn a_pod_of_the_previous_replica_set_counts_and_the_rollout_gates() {
    let (mut pods, mut cpu) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0]);
    pods.push(FakePod {
        owner: Owner::OldReplicaSet,
        ..pod(&format!("{DEPLOYMENT}-{OLD_HASH}-old0"))
    });
    cpu.push((format!("{DEPLOYMENT}-{OLD_HASH}-old0"), 1.0));
    let rolling = |mut f: Fake| {
        f.deployment["spec"]["replicas"] = json!(5);
        f.deployment["status"]["replicas"] = json!(6);
        f
    };
    let world = World::new("owners-rollout", rolling, &pods, &cpu);
    let out = world.run(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(world.kube.mutations().is_empty());
    assert_contains(&out.stderr, "rollout in progress: 6 replicas, 5 desired");
    assert_contains(&world.metrics(), "rebalancer_pods_matched 6\n");
}

/// Helm names the container after the chart: `QUERY_CONTAINER` says which one is
/// ours. `CONTAINER_NAME`, which container platforms and CI runners set for their own
/// use, is not read.
#[test]
fn the_container_name_is_a_setting_of_its_own() {
    let ns = "container-name";
    let (pods, cpu) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0]);
    vm::shared().feed(ns, "consumer", &cpu);
    let world = World::new(ns, |f| f, &pods, &[]);
    let out = world.run(&[]);
    assert_eq!(
        out.code, 1,
        "the container is not named after the Deployment: {}",
        out.stderr
    );
    assert_contains(&out.stderr, "no CPU metrics for container ingestion-consumer");
    let out = world.run(&[("CONTAINER_NAME", "consumer")]);
    assert_eq!(
        out.code, 1,
        "CONTAINER_NAME is the platform's, not ours: {}",
        out.stderr
    );
    assert_contains(&out.stderr, "no CPU metrics for container ingestion-consumer");
    assert!(world.kube.mutations().is_empty());
    let out = world.run(&[("QUERY_CONTAINER", "consumer"), ("CONTAINER_NAME", "runner-7")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(removed(&world), [name(1), name(3)]);
    assert_contains(&out.stderr, r#"container=\"consumer\""#);
}

/// One VictoriaMetrics holds two clusters with the same namespace and pod names; only
/// `QUERY_MATCHERS` tells them apart.
#[test]
fn query_matchers_pick_the_cluster() {
    let ns = "two-clusters";
    let (pods, imbalanced) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0]);
    let (_, balanced) = fleet(&[1.0, 1.0, 1.0, 1.0, 1.0]);
    let server = vm::shared();
    server.feed_labelled(ns, DEPLOYMENT, &imbalanced, ("cluster", "prod-eu-1"));
    server.feed_labelled(ns, DEPLOYMENT, &balanced, ("cluster", "prod-us-1"));
    let world = World::new(ns, |f| f, &pods, &[]);
    let out = world.run(&[("QUERY_MATCHERS", r#"cluster="prod-us-1""#), ("DRY_RUN", "true")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_contains(&out.stderr, "no action: balanced");
    let out = world.run(&[("QUERY_MATCHERS", r#"cluster="prod-eu-1""#), ("DRY_RUN", "true")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_contains(&out.stderr, &format!("dry run: pod {} would be evicted", name(1)));
    let asked = world.kube.requests().len();
    let out = world.run(&[("QUERY_MATCHERS", r#"cluster=~"prod.*""#)]);
    assert_eq!(out.code, 2, "only literal matchers: {}", out.stderr);
    assert_contains(&out.stderr, "QUERY_MATCHERS (--query-matchers): expected name=");
    assert_eq!(
        world.kube.requests().len(),
        asked,
        "a refused configuration asks nothing"
    );
}

/// The pod list, each way a server could make it endless or count a pod twice.
#[test]
fn a_list_that_repeats_a_token_runs_past_300_pages_or_holds_a_pod_twice_is_refused() {
    let check = |namespace: &str, fake: &dyn Fn(Fake) -> Fake, pods: &[FakePod], phrase: &str, max_lists: usize| {
        let world = World::new(namespace, fake, pods, &[]);
        let out = world.run(&[]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_contains(&out.stderr, phrase);
        assert!(world.kube.mutations().is_empty());
        let lists = world
            .kube
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/pods"))
            .count();
        assert!(lists <= max_lists, "{lists} list requests");
    };
    let (pods, _) = fleet(&[1.0; 6]);
    // The second page names the first page's token again.
    let repeat = |mut f: Fake| {
        f.page_size = 2;
        let page = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"continue": "page-2"}, "items": [f.pods[2], f.pods[3]]});
        f.reply("list:continue", Reply::json(200, page.to_string()))
    };
    check(
        "list-repeat",
        &repeat,
        &pods,
        "repeated a continue token after 2 pages",
        2,
    );
    // 301 pages of one pod.
    let many: Vec<FakePod> = (0..302).map(|i| pod(&name(i))).collect();
    let one_a_page = |mut f: Fake| {
        f.page_size = 1;
        f
    };
    check(
        "list-pages",
        &one_a_page,
        &many,
        "expected at most 300 pages of 500 pods",
        300,
    );
    // The same pod on two pages.
    let twice = |mut f: Fake| {
        f.page_size = 3;
        let first = f.pods[0].clone();
        f.pods.push(first);
        f
    };
    check(
        "list-twice",
        &twice,
        &pods,
        &format!("pod name {} is listed twice", name(0)),
        3,
    );
}

#[test]
fn an_empty_flag_is_a_configuration_error_never_the_default() {
    let (pods, cpu) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0]);
    let world = World::new("empty-flags", |f| f, &pods, &cpu);
    for (args, extra, var) in [
        (vec!["--dry-run="], vec![("DRY_RUN", "true")], "DRY_RUN (--dry-run)"),
        (
            vec!["--kube-namespace="],
            vec![("KUBE_NAMESPACE", "empty-flags")],
            "KUBE_NAMESPACE (--kube-namespace)",
        ),
        (
            vec!["--kube-namespace", ""],
            vec![],
            "KUBE_NAMESPACE (--kube-namespace)",
        ),
    ] {
        let out = run_bin(&args, &world.env(&extra));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_contains(&out.stderr, &format!("{var}: expected a value, got an empty one"));
    }
    assert!(world.kube.requests().is_empty(), "{:?}", world.kube.requests());
}

#[test]
fn configuration_errors_are_json_lines_when_the_logs_are() {
    let out = run_bin(
        &[],
        &[
            ("LOG_FORMAT".into(), "json".into()),
            ("MIN_PODS_REQUIRED".into(), "0".into()),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(lines.iter().all(|l| l["level"] == "error"));
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().is_some_and(|m| m.contains("MIN_PODS_REQUIRED")))
    );
    let out = run_bin(&["--log-format=json", "--nope"], &[]);
    assert_eq!(out.code, 2);
    let line: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("one JSON line");
    assert_contains(line["msg"].as_str().unwrap_or_default(), "unknown flag --nope");
}

/// A pod the API gives no creation time might be a minute old: it gates the fleet.
#[test]
fn a_pod_without_a_creation_time_gates_the_fleet() {
    let (mut pods, cpu) = fleet(&[1.0, 1.9, 1.0, 0.1, 1.0]);
    pods[4].no_creation_time = true;
    let world = World::new("no-creation-time", |f| f, &pods, &cpu);
    let out = world.run(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(world.kube.mutations().is_empty());
    assert_contains(&out.stderr, &format!("1 pod without a creation time: {}", name(4)));
    let served = pod_json("ns", DEPLOYMENT, &pods[4], now());
    assert!(served["metadata"].get("creationTimestamp").is_none(), "{served}");
}
