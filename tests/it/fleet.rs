//! Fleet mode (SPEC §13) end to end: one run serves every Deployment of a namespace
//! that `TARGET_SELECTOR` matches, against the fake API serving a Deployment list and
//! many Deployments' pods, and the real VictoriaMetrics behind a proxy that records
//! each query the run sends.
//!
//! Every world has Deployments the selector does not match, or whose pods are the
//! hottest of the namespace, or whose container is not the one measured, wherever a
//! mistake in routing, in the query or in the budget would show.

use crate::cycle::TOKEN;
use crate::dashboard::OUTCOMES;
use crate::support::kube::{Fake, STATE, fleet_deployment_json, pod, pod_json, uid_of};
use crate::support::server::{Pki, Reply, Request, Server};
use crate::support::{Output, TempDir, assert_contains, env_with, fixture, live_config, now, run_bin, vm};
use pod_rebalancer::cycle::{self, Clients, Cycle};
use pod_rebalancer::outcome::Outcome;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const SELECTOR: &str = "pod-rebalancer.io/enabled=true";
const HASH: &str = crate::support::kube::HASH;
const DAY: i64 = 24 * 3600;

/// Spread 0.64: the hottest is p1 (1.9), the coldest p3 (0.12). Spread / 0.3 = 2.1.
const IMBALANCED: [f64; 5] = [0.8, 1.9, 0.79, 0.12, 0.85];
const BALANCED: [f64; 5] = [1.0, 1.1, 0.9, 1.05, 0.95];
/// Spread 0.78 (ratio 2.6 at the default threshold): p1 hottest, p3 coldest.
const WIDE: [f64; 5] = [1.0, 3.0, 1.0, 0.1, 1.0];
/// Spread 0.38.
const TIGHT: [f64; 5] = [1.0, 1.6, 1.0, 0.4, 1.0];
/// Spread 0.32 (ratio 1.05).
const LOW: [f64; 5] = [1.0, 1.5, 1.0, 0.5, 1.0];

/// A Deployment of the namespace, as a test describes it.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    /// Its pods' CPU, one pod each: `{name}-5f7c9d8b4d-p{i}`.
    cpus: Vec<f64>,
    /// Labelled so that `TARGET_SELECTOR` matches it.
    selected: bool,
    annotations: Vec<(String, String)>,
    /// The container its pods run and VictoriaMetrics knows them by (default: its name).
    container: String,
    /// Whether VictoriaMetrics has its pods' CPU.
    fed: bool,
    /// `spec.replicas` when it is not the number of pods.
    replicas: Option<i64>,
    /// A rollout in progress (`status.updatedReplicas` behind `spec.replicas`).
    rolling: bool,
}

fn target(name: &str, cpus: &[f64]) -> Spec {
    Spec {
        name: name.to_string(),
        cpus: cpus.to_vec(),
        selected: true,
        annotations: Vec::new(),
        container: name.to_string(),
        fed: true,
        replicas: None,
        rolling: false,
    }
}

impl Spec {
    /// With the annotation `pod-rebalancer.io/{key}`.
    fn annotated(mut self, key: &str, value: &str) -> Spec {
        self.annotations
            .push((format!("pod-rebalancer.io/{key}"), value.to_string()));
        self
    }

    /// Not labelled for the selector: not a target.
    fn unselected(mut self) -> Spec {
        self.selected = false;
        self
    }

    /// Its pods run (and are measured as) `container`.
    fn running(mut self, container: &str) -> Spec {
        self.container = container.to_string();
        self
    }

    /// VictoriaMetrics has no series of its pods.
    fn unfed(mut self) -> Spec {
        self.fed = false;
        self
    }

    fn replicas(mut self, n: i64) -> Spec {
        self.replicas = Some(n);
        self
    }

    fn rolling(mut self) -> Spec {
        self.rolling = true;
        self
    }

    fn pod(&self, i: usize) -> String {
        pod_name(&self.name, i)
    }

    fn cpu(&self) -> Vec<(String, f64)> {
        self.cpus.iter().enumerate().map(|(i, c)| (self.pod(i), *c)).collect()
    }
}

fn pod_name(deployment: &str, i: usize) -> String {
    format!("{deployment}-{HASH}-p{i}")
}

/// A namespace of Deployments: the fake API serving them (over TLS, with a service
/// account directory), VictoriaMetrics fed their pods' CPU, and a proxy in front of it.
struct World {
    namespace: String,
    fake: Arc<Mutex<Fake>>,
    kube: Server,
    metrics: Server,
    dir: TempDir,
}

impl World {
    /// `namespace` must be unique per test: the tests share one VictoriaMetrics.
    fn new(namespace: &str, specs: &[Spec]) -> World {
        World::with(namespace, specs, |f| f)
    }

    fn with(namespace: &str, specs: &[Spec], change: impl FnOnce(Fake) -> Fake) -> World {
        let at = now();
        // One scrape per container: two Deployments measured under one name share it.
        let mut fed: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for s in specs.iter().filter(|s| s.fed && !s.cpus.is_empty()) {
            fed.entry(s.container.clone()).or_default().extend(s.cpu());
        }
        if !fed.is_empty() {
            vm::shared().feed_containers(namespace, &fed.into_iter().collect::<Vec<_>>());
        }
        let deployments = specs
            .iter()
            .map(|s| {
                let labels: &[(&str, &str)] = if s.selected {
                    &[("pod-rebalancer.io/enabled", "true")]
                } else {
                    &[("pod-rebalancer.io/enabled", "false")]
                };
                let annotations: Vec<(&str, &str)> =
                    s.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let replicas = s.replicas.unwrap_or(s.cpus.len() as i64);
                let mut d = fleet_deployment_json(namespace, &s.name, replicas, labels, &annotations);
                if s.rolling {
                    d["status"]["updatedReplicas"] = json!(1);
                }
                d
            })
            .collect();
        let pods = specs
            .iter()
            .flat_map(|s| {
                (0..s.cpus.len()).map(move |i| {
                    let mut p = pod_json(namespace, &s.name, &pod(&s.pod(i)), at);
                    p["spec"]["containers"][0]["name"] = json!(s.container);
                    p
                })
            })
            .collect();
        let pki = Pki::new();
        let (handler, fake) = change(Fake::fleet(namespace, deployments, pods)).into_shared();
        let kube = Server::https(&pki, handler);
        let dir = TempDir::new(namespace);
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(&sa).expect("sa dir");
        std::fs::write(sa.join("token"), format!("{TOKEN}\n")).expect("token");
        std::fs::write(sa.join("ca.crt"), &pki.ca_pem).expect("ca.crt");
        World {
            namespace: namespace.to_string(),
            fake,
            kube,
            metrics: vm::recording_proxy(vm::shared()),
            dir,
        }
    }

    fn metrics_path(&self) -> std::path::PathBuf {
        self.dir.path().join("rebalancer.prom")
    }

    /// A fleet run's variables (with the memory), each of `extra` replacing its own.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let vars = [
            ("KUBE_API_URL", self.kube.url()),
            (
                "KUBE_SERVICE_ACCOUNT_DIR",
                self.dir.path().join("sa").display().to_string(),
            ),
            ("KUBE_NAMESPACE", self.namespace.clone()),
            ("TARGET_SELECTOR", SELECTOR.to_string()),
            ("PROMETHEUS_ENDPOINT", self.metrics.url()),
            ("STATE_CONFIGMAP", STATE.to_string()),
            ("METRICS_FILE", self.metrics_path().display().to_string()),
            ("LOG_LEVEL", "debug".to_string()),
        ];
        env_with(vars, extra)
    }

    /// Single mode's variables for `deployment` of the same namespace.
    fn single_env(&self, deployment: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env(&[]);
        env.retain(|(k, _)| k != "TARGET_SELECTOR");
        env_with(env, &[&[("DEPLOYMENT_NAME", deployment)], extra].concat())
    }

    /// One run of the binary with `env`.
    fn run_env(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let out = run_bin(args, env);
        assert!(
            !out.stderr.contains(TOKEN) && !out.stdout.contains(TOKEN),
            "the token leaked:\n{}",
            out.stderr
        );
        out
    }

    /// One fleet run of the binary.
    fn run(&self, extra: &[(&str, &str)]) -> Output {
        self.run_env(&[], &self.env(extra))
    }

    /// The read-only half of a run with `env` at `at`, in-process: each target's plan.
    fn observe(&self, env: &[(String, String)], at: i64) -> Cycle {
        let (config, cluster) = live_config(env);
        let clients = Clients::connect(&config, &cluster).unwrap_or_else(|f| panic!("{:?}", f.error));
        cycle::observe(&clients, &config, &cluster, at, None)
    }

    fn metrics_text(&self) -> String {
        std::fs::read_to_string(self.metrics_path()).expect("metrics file written")
    }

    /// Each target's `rebalancer_cycle_outcome` in the metrics file.
    fn outcomes(&self) -> BTreeMap<String, String> {
        outcomes(&self.metrics_text())
    }

    /// The pod of every removal asked, in order, with " (dry run)" for a dry one.
    fn removals(&self) -> Vec<String> {
        self.kube
            .mutations()
            .iter()
            .filter(|r| r.path().ends_with("/eviction") || r.method == "DELETE")
            .map(|r| match r.query("dryRun") {
                Some(_) => format!("{} (dry run)", r.pod()),
                None => r.pod(),
            })
            .collect()
    }

    /// The PUTs of the state ConfigMap.
    fn state_puts(&self) -> usize {
        self.kube.mutations().iter().filter(|r| r.method == "PUT").count()
    }

    /// Every read of the Kubernetes API, as "GET path".
    fn reads(&self) -> Vec<String> {
        self.kube
            .requests()
            .iter()
            .filter(|r| !r.is_mutating())
            .map(|r| format!("{} {}", r.method, r.path()))
            .collect()
    }

    /// The PromQL of every query the run sent to the metrics endpoint.
    fn queries(&self) -> Vec<String> {
        self.metrics
            .requests()
            .iter()
            .map(|r| r.form("query").unwrap_or_else(|| format!("{} {}", r.method, r.target)))
            .collect()
    }

    /// The state ConfigMap's document as the fake holds it.
    fn state(&self) -> Value {
        let fake = self.fake.lock().expect("fake");
        let text = fake.state.as_ref().expect("a state ConfigMap")["data"]["state.json"]
            .as_str()
            .expect("a state document")
            .to_string();
        serde_json::from_str(&text).expect("a JSON state document")
    }

    /// Kubernetes between runs: the pods of `spec` that an eviction terminated are gone,
    /// replaced by new ones (an hour old, named on from `next`) burning `cores`.
    fn replace_terminated(&self, spec: &Spec, next: usize, cores: &[f64]) {
        let mut fake = self.fake.lock().expect("fake");
        let ours = format!("{}-{HASH}-", spec.name);
        let before = fake.pods.len();
        fake.pods.retain(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            !(name.starts_with(&ours) && p["metadata"].get("deletionTimestamp").is_some())
        });
        assert_eq!(before - fake.pods.len(), cores.len(), "{}: pods terminated", spec.name);
        let cpu: Vec<(String, f64)> = cores
            .iter()
            .enumerate()
            .map(|(k, c)| (spec.pod(next + k), *c))
            .collect();
        vm::shared().feed_more(&self.namespace, &spec.container, &cpu);
        for (name, _) in &cpu {
            let mut p = pod_json(&self.namespace, &spec.name, &pod(name), now());
            p["spec"]["containers"][0]["name"] = json!(spec.container);
            fake.pods.push(p);
        }
    }

    /// Writes `document` into the state ConfigMap.
    fn remember(&self, document: &Value) {
        let mut fake = self.fake.lock().expect("fake");
        let state = fake.state.as_mut().expect("a state ConfigMap");
        state["data"] = json!({"state.json": document.to_string()});
    }
}

/// Each target's outcome in a metrics text: `rebalancer_cycle_outcome{…,deployment="d",outcome="o"} 1`.
fn outcomes(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("rebalancer_cycle_outcome{") && l.ends_with("} 1"))
        .filter_map(|l| Some((label(l, "deployment")?, label(l, "outcome")?)))
        .collect()
}

/// The value of `name` in a sample line's labels.
fn label(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// What a run logged, with the quotes logfmt escapes in a field's value read back.
fn logged(out: &Output) -> String {
    out.stderr.replace("\\\"", "\"")
}

/// The last line a run logged.
fn last_line(out: &Output) -> &str {
    out.stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Runs the binary once in fleet mode and checks its exit code and each target's
/// outcome (the targets named, and no other).
#[track_caller]
fn check(world: &World, extra: &[(&str, &str)], code: i32, want: &[(&str, &str)]) -> Output {
    let out = world.run(extra);
    assert_eq!(out.code, code, "{}", out.stderr);
    assert_eq!(world.outcomes(), map(want), "{}", out.stderr);
    out
}

#[test]
fn the_targets_are_the_deployments_the_selector_matches_each_with_the_pods_it_owns() {
    // delta is not a target, and its pods are the hottest and coldest of the namespace:
    // read as anyone's, they would be the ones removed.
    let specs = [
        target("alpha", &IMBALANCED),
        target("bravo", &BALANCED),
        target("charlie", &IMBALANCED).annotated("threshold", "abc"),
        target("delta", &[0.01, 9.0, 0.01, 0.01, 0.01]).unselected(),
    ];
    let world = World::new("fleet-targets", &specs);
    let out = check(
        &world,
        &[],
        1,
        &[("alpha", "acted"), ("bravo", "balanced"), ("charlie", "error")],
    );
    assert_eq!(world.removals(), [specs[0].pod(1), specs[0].pod(3)], "{}", out.stderr);
    assert_contains(
        &logged(&out),
        "deployment charlie: annotation pod-rebalancer.io/threshold=\"abc\": expected a finite number > 0 such as 0.3",
    );
    assert!(
        !world.metrics_text().contains("deployment=\"delta\""),
        "a Deployment the selector does not match is no target"
    );
    // The action's Event is on alpha's own Deployment.
    let on_deployments: Vec<Value> = world
        .kube
        .mutations()
        .iter()
        .filter(|r| r.path().ends_with("/events"))
        .map(Request::json)
        .filter(|e| e["involvedObject"]["kind"] == "Deployment")
        .collect();
    assert_eq!(on_deployments.len(), 1, "{on_deployments:?}");
    assert_eq!(on_deployments[0]["involvedObject"]["name"], "alpha");
    assert_eq!(
        on_deployments[0]["involvedObject"]["uid"],
        uid_of("deployment/alpha").as_str()
    );
    // The lists: Deployments by the selector; every pod of the namespace, since
    // KUBE_LABEL_SELECTOR has no default in fleet mode.
    let requests = world.kube.requests();
    let list = |suffix: &str| -> Vec<&Request> { requests.iter().filter(|r| r.path().ends_with(suffix)).collect() };
    let deployments = list("/deployments");
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].query("labelSelector").as_deref(), Some(SELECTOR));
    let pods = list("/pods");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].query("labelSelector"), None, "{}", pods[0].target);
    // Set, KUBE_LABEL_SELECTOR narrows the one list.
    world.run(&[("KUBE_LABEL_SELECTOR", "app=consumer"), ("DRY_RUN", "true")]);
    let requests = world.kube.requests();
    let last_list = requests
        .iter()
        .rfind(|r| r.path().ends_with("/pods"))
        .expect("a pod list");
    assert_eq!(last_list.query("labelSelector").as_deref(), Some("app=consumer"));
}

#[test]
fn the_deployment_list_is_paged_and_filtered_by_the_selector() {
    // Seven targets among three that are not, two to a page: four pages of targets.
    let specs: Vec<_> = (0..10)
        .map(|i| {
            let s = target(&format!("paged-{i}"), &BALANCED);
            if i % 3 == 1 { s.unselected() } else { s }
        })
        .collect();
    let world = World::with("fleet-paged", &specs, |mut f| {
        f.deployments_page_size = 2;
        f
    });
    let want: Vec<(&str, &str)> = specs
        .iter()
        .filter(|s| s.selected)
        .map(|s| (s.name.as_str(), "balanced"))
        .collect();
    check(&world, &[], 0, &want);
    let tokens: Vec<Option<String>> = world
        .kube
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/deployments"))
        .map(|r| r.query("continue"))
        .collect();
    assert_eq!(
        tokens,
        [
            None,
            Some("deployments-2".into()),
            Some("deployments-4".into()),
            Some("deployments-6".into())
        ]
    );
}

/// What one fleet run of `n` imbalanced targets (and a Deployment that is not one)
/// asks: the reads of the Kubernetes API, the queries, the PUTs of the state.
fn requests_of_a_run(namespace: &str, n: usize) -> (Vec<String>, Vec<String>, usize, usize) {
    let mut specs: Vec<Spec> = (0..n).map(|i| target(&format!("t{i:02}"), &IMBALANCED)).collect();
    specs.push(target("other", &IMBALANCED).unselected());
    let world = World::new(namespace, &specs);
    let partitions = format!("kafka_consumer_assignment{{namespace=\"{namespace}\"}}");
    let out = world.run(&[("MAX_REMOVALS_PER_RUN", "4"), ("PARTITION_QUERY", &partitions)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let outcomes = world.outcomes();
    assert_eq!(outcomes.len(), n, "{outcomes:?}");
    assert_eq!(outcomes.values().filter(|o| *o == "acted").count(), 2, "{outcomes:?}");
    let ns = format!("/namespaces/{namespace}/");
    let reads = world
        .reads()
        .iter()
        .map(|r| r.replace(&ns, "/namespaces/NS/"))
        .collect();
    let queries = world.queries().iter().map(|q| q.replace(namespace, "NS")).collect();
    (reads, queries, world.state_puts(), world.removals().len())
}

#[test]
fn the_requests_of_a_run_do_not_grow_with_the_number_of_targets() {
    let (reads, queries, puts, removals) = requests_of_a_run("fleet-reads-3", 3);
    assert_eq!(
        reads,
        [
            "GET /api/v1/namespaces/NS/configmaps/pod-rebalancer-state",
            "GET /apis/apps/v1/namespaces/NS/deployments",
            "GET /api/v1/namespaces/NS/pods",
        ]
    );
    assert_eq!(queries.len(), 2, "one CPU query, one partition query: {queries:#?}");
    assert_eq!(queries[1], "kafka_consumer_assignment{namespace=\"NS\"}");
    // The CPU query serves every target: no container matcher, literal matchers only.
    let cpu = &queries[0];
    assert_contains(cpu, "container_cpu_usage_seconds_total{namespace=\"NS\"}");
    assert!(
        !cpu.contains("container=") && !cpu.contains("=~") && !cpu.contains("!~"),
        "{cpu}"
    );
    assert_eq!(
        (puts, removals),
        (2, 4),
        "the lease and the end-of-run write; the budget"
    );
    assert_eq!(
        requests_of_a_run("fleet-reads-12", 12),
        (reads, queries, puts, removals)
    );
}

/// The parts of a plan a decision is made of, numbers rounded to 6 places (two reads
/// of the same series a moment apart may differ in the last bits).
fn decided(plan: &pod_rebalancer::plan::Plan) -> Value {
    fn rounded(v: Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => json!((n.as_f64().unwrap_or(0.0) * 1e6).round() / 1e6),
            Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
            Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, rounded(v))).collect()),
            other => other,
        }
    }
    let mut v = serde_json::to_value(plan).expect("a plan as JSON");
    if let Some(fields) = v.as_object_mut() {
        fields.remove("now");
    }
    rounded(v)
}

/// A target, the variables single mode needs to decide its Deployment alike, and the
/// decision both must come to.
type Case = (Spec, Vec<(&'static str, &'static str)>, &'static str);

#[test]
fn each_target_is_decided_as_single_mode_decides_its_deployment() {
    // Each target, and the variables a single-mode run needs to decide alike (single
    // mode reads no annotation but `paused`).
    let cases: Vec<Case> = vec![
        (target("acts", &IMBALANCED), vec![], "remove"),
        (target("even", &BALANCED), vec![], "balanced"),
        (
            target("few", &IMBALANCED).annotated("min-pods", "6"),
            vec![("MIN_PODS_REQUIRED", "6")],
            "too_few_pods",
        ),
        (
            target("loose", &IMBALANCED).annotated("threshold", "0.9"),
            vec![("CPU_VARIANCE_THRESHOLD", "0.9")],
            "balanced",
        ),
        (target("rolling", &IMBALANCED).rolling(), vec![], "stabilizing"),
        (target("idle", &[0.0, 0.0002, 0.0, 0.0001]), vec![], "idle"),
        (target("three", &[1.9, 0.1, 1.0]), vec![], "min_pods"),
        (target("zero", &[]).replicas(0), vec![], "idle"),
        (target("off", &IMBALANCED).annotated("paused", "yes"), vec![], "paused"),
        (
            target("renamed", &WIDE)
                .running("worker")
                .annotated("container", "worker"),
            vec![("QUERY_CONTAINER", "worker")],
            "remove",
        ),
    ];
    let specs: Vec<Spec> = cases.iter().map(|(s, _, _)| s.clone()).collect();
    let world = World::new("fleet-same", &specs);
    let at = now();
    let fleet = world.observe(&world.env(&[]), at);
    assert!(fleet.shared.is_none(), "{:?}", fleet.shared);
    assert_eq!(fleet.targets.len(), cases.len());
    for (spec, vars, want) in &cases {
        let ours = fleet.targets.iter().find(|t| t.name == spec.name).expect("a target");
        let single = world.observe(&world.single_env(&spec.name, vars), at);
        let theirs = &single.targets[0];
        let (Some(ours), Some(theirs)) = (&ours.plan, &theirs.plan) else {
            panic!("{}: no plan: {:?} / {:?}", spec.name, ours.ended, theirs.ended)
        };
        assert_eq!(decided(ours), decided(theirs), "{}", spec.name);
        let decision = match &ours.decision {
            pod_rebalancer::plan::Decision::Remove { .. } => "remove",
            pod_rebalancer::plan::Decision::Hold(h) => h.outcome().label(),
        };
        assert_eq!(decision, *want, "{}", spec.name);
    }
    // Each pod's CPU is its own container's (not the sidecar's, not the pod cgroup's).
    let renamed = fleet
        .targets
        .iter()
        .find(|t| t.name == "renamed")
        .and_then(|t| t.plan.as_ref());
    let hottest = renamed.and_then(|p| p.pods.iter().next()).expect("a pod");
    assert_eq!(hottest.pod.name, pod_name("renamed", 1));
    assert!(
        hottest.sample.is_some_and(|c| (c - 3.0).abs() < 0.05),
        "{:?}",
        hottest.sample
    );
    assert!(world.kube.mutations().is_empty(), "observing changes nothing");
    // Single mode reads no annotation but `paused`: the loose threshold is the fleet's.
    let single = world.observe(&world.single_env("loose", &[]), at);
    assert!(
        matches!(
            single.targets[0].plan.as_ref().map(|p| &p.decision),
            Some(pod_rebalancer::plan::Decision::Remove { .. })
        ),
        "{:?}",
        single.targets[0].plan
    );
}

#[test]
fn the_budget_serves_the_highest_spread_over_threshold_first_and_dry_runs_count() {
    // By spread alone the order would be wide, mid, tight, low; by spread / threshold
    // it is tight (0.38 / 0.1), wide, mid, low. tight is dry: its two removals count.
    let specs = [
        target("mid", &IMBALANCED),
        target("low", &LOW),
        target("tight", &TIGHT)
            .annotated("threshold", "0.1")
            .annotated("dry-run", "true"),
        target("wide", &WIDE),
    ];
    let world = World::new("fleet-budget", &specs);
    let out = check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "4")],
        0,
        &[
            ("low", "deferred"),
            ("mid", "deferred"),
            ("tight", "dry_run"),
            ("wide", "acted"),
        ],
    );
    assert_eq!(
        world.removals(),
        [
            format!("{} (dry run)", specs[2].pod(1)),
            format!("{} (dry run)", specs[2].pod(3)),
            specs[3].pod(1),
            specs[3].pod(3),
        ],
        "{}",
        out.stderr
    );
    assert_contains(
        &logged(&out),
        "deferred: its plan does not fit in what is left of MAX_REMOVALS_PER_RUN",
    );
    assert_contains(
        last_line(&out),
        "run finished: 4 target(s): 1 acted, 2 deferred, 1 dry_run",
    );
}

#[test]
fn the_budget_goes_on_down_the_list_to_a_plan_that_fits() {
    // wide takes 2 of 3; mid wants 2 and is deferred; one (4 pods, one removal) fits.
    let specs = [
        target("mid", &IMBALANCED),
        target("one", &[1.0, 1.8, 1.0, 0.7]),
        target("wide", &WIDE),
    ];
    let world = World::new("fleet-budget-fit", &specs);
    check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "3")],
        0,
        &[("mid", "deferred"), ("one", "acted"), ("wide", "acted")],
    );
    assert_eq!(world.removals(), [specs[2].pod(1), specs[2].pod(3), specs[1].pod(1)]);
}

#[test]
fn the_budget_breaks_a_tie_by_name() {
    let specs = [target("tie-b", &IMBALANCED), target("tie-a", &IMBALANCED)];
    let world = World::new("fleet-budget-tie", &specs);
    // The tie is real: both spreads are the same number, to the last bit.
    let observed = world.observe(&world.env(&[]), now());
    let spreads: Vec<Option<f64>> = observed
        .targets
        .iter()
        .map(|t| t.plan.as_ref().and_then(|p| p.stats).map(|s| s.spread))
        .collect();
    assert_eq!(spreads[0], spreads[1], "not a tie");
    check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "2")],
        0,
        &[("tie-a", "acted"), ("tie-b", "deferred")],
    );
    assert_eq!(world.removals(), [specs[1].pod(1), specs[1].pod(3)]);
}

#[test]
fn a_target_held_by_its_breaker_takes_no_budget() {
    // held's breaker is open for another hour: its plan would act, the breaker holds
    // it, and the two removals left go to calm's lower ratio.
    let specs = [target("held", &WIDE), target("calm", &IMBALANCED)];
    let world = World::new("fleet-held", &specs);
    world.remember(&json!({"version": 2, "targets": {"held": {"streak": 3, "hold_until": now() + 3600}}}));
    check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "2")],
        0,
        &[("calm", "acted"), ("held", "ineffective")],
    );
    assert_eq!(world.removals(), [specs[1].pod(1), specs[1].pod(3)]);
}

#[test]
fn a_removal_answered_500_stops_the_run_and_defers_the_targets_not_yet_served() {
    // Served in order wide, mid, low. wide's hottest is refused by a disruption budget
    // (no failure: its coldest is kept by the pair rule); mid's hottest answers 500.
    let specs = [target("low", &LOW), target("mid", &IMBALANCED), target("wide", &WIDE)];
    let world = World::with("fleet-stop", &specs, |f| {
        f.reply(
            &format!("evict:{}", pod_name("wide", 1)),
            Reply::json(429, fixture("k8s/constructed/status_429_eviction_pdb.json")),
        )
        .reply(
            &format!("evict:{}", pod_name("mid", 1)),
            Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json")),
        )
    });
    let out = check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "10")],
        1,
        &[("low", "deferred"), ("mid", "error"), ("wide", "acted")],
    );
    assert_eq!(world.removals(), [specs[2].pod(1), specs[1].pod(1)], "{}", out.stderr);
    assert_contains(
        &world.metrics_text(),
        &format!(
            "rebalancer_removals_refused_total{{namespace=\"{}\",deployment=\"wide\",reason=\"disruption_budget\"}} 1",
            world.namespace
        ),
    );
    assert_contains(last_line(&out), "; failed: mid");
    assert_contains(
        &out.stderr,
        "deferred: a removal of this run failed, so no further pod is removed deployment=low",
    );
    // The memory: one lease covered all three, the end-of-run record keeps what
    // happened. mid's hottest may have gone (unknown, settled by the next run); wide
    // removed nothing and low was never asked: no action is recorded for them.
    assert_eq!(world.state_puts(), 2);
    let state = world.state();
    let results = |name: &str| -> Vec<String> {
        state["targets"][name]["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .flat_map(|a| a["pods"].as_array().cloned().unwrap_or_default())
            .map(|p| p["result"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(results("mid"), ["unknown", "intended"], "{state}");
    assert_eq!(results("wide"), Vec::<String>::new(), "{state}");
    assert_eq!(results("low"), Vec::<String>::new(), "{state}");
    let lease: Value = world
        .kube
        .mutations()
        .iter()
        .find(|r| r.method == "PUT")
        .map(|r| serde_json::from_str(r.json()["data"]["state.json"].as_str().unwrap_or("{}")).expect("a document"))
        .expect("a lease");
    for name in ["low", "mid", "wide"] {
        let action = &lease["targets"][name]["actions"][0];
        assert_eq!(action["settled"], false, "{name} is in the lease: {lease}");
    }
}

#[test]
fn a_target_without_cpu_metrics_for_its_container_fails_alone() {
    // bravo's pods have no series; charlie's are measured under a container its
    // annotation does not name.
    let specs = [
        target("alpha", &IMBALANCED),
        target("bravo", &IMBALANCED).unfed(),
        target("charlie", &IMBALANCED).annotated("container", "worker"),
    ];
    let world = World::new("fleet-nometrics", &specs);
    let out = check(
        &world,
        &[],
        1,
        &[("alpha", "acted"), ("bravo", "error"), ("charlie", "error")],
    );
    assert_eq!(world.removals(), [specs[0].pod(1), specs[0].pod(3)]);
    for container in ["bravo", "worker"] {
        assert_contains(
            &logged(&out),
            &format!("no CPU metrics for container {container} in namespace fleet-nometrics"),
        );
    }
    assert_contains(last_line(&out), "; failed: bravo, charlie");
}

#[test]
fn a_target_without_pods_fails_alone_and_says_so() {
    // empty wants three replicas and owns no pod of the namespace; zero wants none.
    let specs = [
        target("alpha", &IMBALANCED),
        target("empty", &[]).replicas(3),
        target("zero", &[]).replicas(0),
    ];
    let world = World::new("fleet-nopods", &specs);
    let out = check(
        &world,
        &[],
        1,
        &[("alpha", "acted"), ("empty", "error"), ("zero", "idle")],
    );
    assert_eq!(world.removals(), [specs[0].pod(1), specs[0].pod(3)]);
    assert_contains(
        &logged(&out),
        "decide deployment empty: no pod of namespace fleet-nopods is the Deployment's",
    );
    assert!(!out.stderr.contains("label selector  in"), "{}", out.stderr);
}

#[test]
fn each_target_reads_the_partitions_its_own_pods_own() {
    // Two consumer groups read the same topic, partitions events/0 to events/15 each.
    // skewed is SPEC §12's first example (events/0 alone is two fair shares): no
    // eviction can balance it. fair's p0 owns four partitions and p1 none: evicting
    // both can. Read as one group, every partition would be owned twice: "moving".
    let ns = "fleet-partitions";
    let skewed: Vec<(usize, usize, f64)> = [(0, 0, 1.25), (0, 1, 0.25)]
        .into_iter()
        .chain((1..8).flat_map(|i| [(i, 2 * i, 0.25), (i, 2 * i + 1, 0.25)]))
        .collect();
    let fair: Vec<(usize, usize, f64)> = (0..4)
        .map(|k| (0, k, 0.25))
        .chain((2..8).flat_map(|i| [(i, 2 * i, 0.25), (i, 2 * i + 1, 0.25)]))
        .collect();
    let cpu = |owned: &[(usize, usize, f64)]| {
        let mut loads = [0.01; 8];
        for (pod, _, load) in owned {
            loads[*pod] += load;
        }
        loads
    };
    let specs = [target("fair", &cpu(&fair)), target("skewed", &cpu(&skewed))];
    let world = World::new(ns, &specs);
    let vm = vm::shared();
    let at = vm::now_ms() - 15_000;
    let mut text = String::new();
    for (spec, owned) in [(&specs[0], &fair), (&specs[1], &skewed)] {
        for (pod, partition, load) in owned {
            text.push_str(&format!(
                "kafka_partition_rate{{namespace=\"{ns}\",pod=\"{}\",topic=\"events\",partition=\"{partition}\"}} {load} {at}\n",
                spec.pod(*pod)
            ));
        }
    }
    vm.import(&text);
    vm.get("/internal/force_flush").expect("flush");
    let query = format!("kafka_partition_rate{{namespace=\"{ns}\"}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let count = format!("count({query})");
    while vm.samples(&count, "", None).get("").copied() != Some((fair.len() + skewed.len()) as f64) {
        assert!(
            std::time::Instant::now() < deadline,
            "the partition series never became searchable"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = check(
        &world,
        &[("PARTITION_QUERY", &query)],
        0,
        &[("fair", "acted"), ("skewed", "unfixable")],
    );
    assert_eq!(world.removals(), [specs[0].pod(0), specs[0].pod(1)], "{}", out.stderr);
    assert_contains(&out.stderr, "partition events/0 alone burns");
    assert_eq!(world.queries().len(), 2, "one CPU query, one partition query");
    let text = world.metrics_text();
    assert_contains(
        &text,
        &format!("rebalancer_best_possible_spread{{namespace=\"{ns}\",deployment=\"skewed\"}} 0.37"),
    );
}

/// A world of two imbalanced targets whose run fails in a read they share.
#[track_caller]
fn check_shared_failure(
    namespace: &str,
    change: impl FnOnce(Fake) -> Fake,
    extra: &[(&str, &str)],
    phrase: &str,
) -> World {
    let specs = [target("alpha", &IMBALANCED), target("bravo", &WIDE)];
    let world = World::with(namespace, &specs, change);
    let out = world.run(extra);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(&logged(&out), phrase);
    assert_eq!(world.removals(), Vec::<String>::new(), "nothing removed");
    assert!(
        world.kube.mutations().iter().all(|r| r.method == "PUT"),
        "only the state's end-of-run record: {:?}",
        world.kube.mutations()
    );
    assert_contains(last_line(&out), "outcome=error");
    world
}

#[test]
fn a_failure_shared_by_all_targets_fails_every_one_and_removes_nothing() {
    let both_failed = map(&[("alpha", "error"), ("bravo", "error")]);
    let status = |code, file: &str| Reply::json(code, fixture(file));
    // The Deployment list: no target is known, the run's samples carry the namespace only.
    let forbidden = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden: User \"system:serviceaccount:fleet-shared-list:pod-rebalancer\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"fleet-shared-list\"","reason":"Forbidden","details":{"group":"apps","kind":"deployments"},"code":403}"#;
    let world = check_shared_failure(
        "fleet-shared-list",
        |f| f.reply("deployments", Reply::json(403, forbidden)),
        &[],
        "cannot list resource \"deployments\" in API group \"apps\"",
    );
    let text = world.metrics_text();
    assert!(outcomes(&text).is_empty(), "{text}");
    assert_contains(
        &text,
        "rebalancer_cycle_outcome{namespace=\"fleet-shared-list\",outcome=\"error\"} 1",
    );
    for outcome in OUTCOMES {
        assert_contains(
            &text,
            &format!("rebalancer_targets{{namespace=\"fleet-shared-list\",outcome=\"{outcome}\"}} 0\n"),
        );
    }
    assert!(
        world.reads().iter().all(|r| !r.ends_with("/pods")),
        "no pod list without targets"
    );
    // The pod list.
    let world = check_shared_failure(
        "fleet-shared-pods",
        |f| f.reply("list", status(403, "k8s/status_403_forbidden_list_pods.json")),
        &[],
        "403",
    );
    assert_eq!(world.outcomes(), both_failed);
    assert!(world.queries().is_empty(), "no query without pods");
    // The CPU query.
    let broken = Server::http(Arc::new(|_: &Request| {
        Reply::json(
            503,
            r#"{"status":"error","errorType":"unavailable","error":"vmselect: no storage node"}"#,
        )
    }));
    let world = check_shared_failure(
        "fleet-shared-cpu",
        |f| f,
        &[("PROMETHEUS_ENDPOINT", &broken.url())],
        "no storage node",
    );
    assert_eq!(world.outcomes(), both_failed);
    // The state.
    let world = check_shared_failure(
        "fleet-shared-state",
        |mut f| {
            f.state = None;
            f
        },
        &[],
        "state ConfigMap pod-rebalancer-state not found in namespace fleet-shared-state",
    );
    assert_eq!(world.state_puts(), 0);
    // The lease, refused with 409: another writer moved the state on meanwhile.
    let world = check_shared_failure(
        "fleet-shared-lease",
        |mut f| {
            f.bump_after_get = true;
            f
        },
        &[],
        "another run wrote the state ConfigMap pod-rebalancer-state meanwhile (409",
    );
    assert_eq!(world.outcomes(), both_failed);
    assert_eq!(world.state_puts(), 1, "the refused lease, and no end-of-run write");
}

#[test]
fn no_deployment_matching_the_selector_is_an_error_run_naming_it() {
    let specs = [target("delta", &IMBALANCED).unselected()];
    let world = World::new("fleet-none", &specs);
    let out = world.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(
        &logged(&out),
        "no deployment matches TARGET_SELECTOR pod-rebalancer.io/enabled=true in namespace fleet-none",
    );
    assert!(world.kube.mutations().is_empty(), "{:?}", world.kube.mutations());
    assert!(world.queries().is_empty());
}

#[test]
fn the_metrics_have_a_sample_set_per_target_and_the_targets_by_outcome() {
    let specs = [
        target("alpha", &IMBALANCED),
        target("bravo", &BALANCED),
        target("charlie", &IMBALANCED).annotated("min-pods", "0"),
        target("delta", &IMBALANCED).unselected(),
    ];
    let world = World::new("fleet-metrics", &specs);
    check(
        &world,
        &[],
        1,
        &[("alpha", "acted"), ("bravo", "balanced"), ("charlie", "error")],
    );
    let text = world.metrics_text();
    let ns = "namespace=\"fleet-metrics\"";
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("rebalancer_targets{") {
            let (labels, value) = rest.split_once("} ").expect("a sample");
            let outcome = label(line, "outcome").expect("an outcome");
            assert_eq!(labels, format!("{ns},outcome=\"{outcome}\""), "namespace only: {line}");
            targets.insert(outcome, value.to_string());
            continue;
        }
        let deployment = label(line, "deployment").unwrap_or_else(|| panic!("no deployment: {line}"));
        assert!(line.contains(&format!("{{{ns},deployment=")), "{line}");
        *per_target.entry(deployment).or_default() += 1;
    }
    let names: Vec<&String> = per_target.keys().collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    let mut want: BTreeMap<String, String> = OUTCOMES.iter().map(|o| (o.to_string(), "0".to_string())).collect();
    for o in ["acted", "balanced", "error"] {
        want.insert(o.to_string(), "1".to_string());
    }
    assert_eq!(targets, want);
    // Each target's own settings: charlie's container, alpha's threshold.
    assert_contains(
        &text,
        &format!("rebalancer_cpu_variance_threshold{{{ns},deployment=\"alpha\"}} 0.3"),
    );
    assert_contains(&text, "deployment=\"bravo\",dry_run=\"false\"");
    assert_contains(&text, "container=\"bravo\"");
    // METRICS_LABELS go on every sample, the fleet's count of targets included.
    world.run(&[("METRICS_LABELS", "cluster=\"prod-eu-1\"")]);
    let text = world.metrics_text();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.contains("cluster=\"prod-eu-1\""), "{line}");
        assert_eq!(
            line.contains("deployment="),
            !line.starts_with("rebalancer_targets{"),
            "{line}"
        );
    }
}

#[test]
fn the_last_log_line_counts_the_targets_by_outcome_and_names_each_failure() {
    let specs = [
        target("alpha", &IMBALANCED),
        target("bravo", &BALANCED),
        target("charlie", &IMBALANCED).annotated("dry-run", "maybe"),
        target("delta", &IMBALANCED).annotated("paused", "please"),
    ];
    let world = World::new("fleet-last-line", &specs);
    let out = check(
        &world,
        &[],
        1,
        &[
            ("alpha", "acted"),
            ("bravo", "balanced"),
            ("charlie", "error"),
            ("delta", "error"),
        ],
    );
    let last = last_line(&out);
    assert_contains(
        last,
        "run finished: 4 target(s): 1 acted, 1 balanced, 2 error; failed: charlie, delta",
    );
    assert_contains(last, "outcome=error");
    assert_contains(
        &logged(&out),
        "annotation pod-rebalancer.io/dry-run=\"maybe\": expected true, false, 1, 0, yes or no",
    );
    assert_contains(
        &logged(&out),
        "annotation pod-rebalancer.io/paused=\"please\": expected true, false, 1, 0, yes or no",
    );
    // Nothing failed: the line says so.
    let calm = World::new("fleet-last-line-ok", &[target("bravo", &BALANCED)]);
    let out = check(&calm, &[], 0, &[("bravo", "balanced")]);
    let last = last_line(&out);
    assert_contains(last, "run finished: 1 target(s): 1 balanced");
    assert!(!last.contains("failed:") && last.contains("outcome=ok"), "{last}");
}

#[test]
fn the_fleet_state_has_an_entry_per_target_and_forgets_a_former_one_after_seven_days() {
    let specs = [target("alpha", &IMBALANCED), target("bravo", &BALANCED)];
    let world = World::new("fleet-state", &specs);
    let before = now();
    let former = |days: i64| json!({"deployment": "x", "streak": 1, "last_target_at": before - days * DAY});
    let mut retired = former(8);
    retired["deployment"] = json!("retired");
    let mut resting = former(6);
    resting["deployment"] = json!("resting");
    world.remember(&json!({"version": 2, "targets": {"retired": retired, "resting": resting.clone()}}));
    check(&world, &[], 0, &[("alpha", "acted"), ("bravo", "balanced")]);
    let after = now();
    assert_eq!(world.state_puts(), 2, "the lease and the end-of-run record");
    let state = world.state();
    assert_eq!(state["version"], 2);
    let entries: Vec<&String> = state["targets"].as_object().expect("targets").keys().collect();
    assert_eq!(
        entries,
        ["alpha", "bravo", "resting"],
        "retired was last a target 8 days ago"
    );
    assert_eq!(state["targets"]["resting"]["last_target_at"], resting["last_target_at"]);
    for name in ["alpha", "bravo"] {
        let entry = &state["targets"][name];
        assert!(entry.get("version").is_none(), "{entry}");
        assert_eq!(
            entry["deployment"], name,
            "a new target's entry names it, as a read one does"
        );
        let at = entry["last_target_at"].as_i64().expect("last_target_at");
        assert!((before..=after).contains(&at), "{name}: {at}");
        assert_eq!(entry["counters"]["success"], 1.0, "{name}: {entry}");
    }
    let alpha = &state["targets"]["alpha"];
    assert_eq!(alpha["counters"]["deleted_highest"], 1.0);
    assert_eq!(alpha["counters"]["analyzed"], 5.0);
    let actions = alpha["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{alpha}");
    assert_eq!(actions[0]["settled"], true);
    let pods: Vec<(&str, &str)> = actions[0]["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or(""), p["result"].as_str().unwrap_or("")))
        .collect();
    let (hot, cold) = (specs[0].pod(1), specs[0].pod(3));
    assert_eq!(pods, [(hot.as_str(), "removed"), (cold.as_str(), "removed")]);
    assert_eq!(state["targets"]["bravo"]["actions"], json!([]));
}

#[test]
fn a_fleet_run_adopts_a_single_mode_document_as_its_deployments_entry() {
    let specs = [target("alpha", &BALANCED), target("bravo", &BALANCED)];
    let world = World::new("fleet-adopt", &specs);
    world.remember(&json!({
        "version": 2,
        "deployment": "alpha",
        "streak": 2,
        "hold_until": 1_700_000_000,
        "counters": {"success": 41.0, "error": 1.0, "analyzed": 200.0, "deleted_highest": 3.0, "deleted_lowest": 2.0},
    }));
    check(&world, &[], 0, &[("alpha", "balanced"), ("bravo", "balanced")]);
    let state = world.state();
    assert_eq!(state["version"], 2);
    assert!(state.get("deployment").is_none(), "{state}");
    let alpha = &state["targets"]["alpha"];
    assert_eq!(
        (alpha["streak"].as_u64(), alpha["hold_until"].as_i64()),
        (Some(2), Some(1_700_000_000))
    );
    assert_eq!(alpha["counters"]["success"], 42.0, "carried on: {alpha}");
    assert_eq!(alpha["counters"]["deleted_highest"], 3.0);
    assert_eq!(state["targets"]["bravo"]["counters"]["success"], 1.0);
    // The metrics export what was stored: alpha's counters go on from 41.
    assert_contains(
        &world.metrics_text(),
        "rebalancer_executions_total{namespace=\"fleet-adopt\",deployment=\"alpha\",status=\"success\"} 42",
    );
}

#[test]
fn each_target_is_judged_by_its_own_memory() {
    // Both act; then alpha's replacements even it out and bravo's hot spot moves to a
    // replacement. The second run judges each action by its own target's numbers.
    let specs = [target("alpha", &WIDE), target("bravo", &IMBALANCED)];
    let world = World::new("fleet-judged", &specs);
    let (config, cluster) = live_config(&world.env(&[]));
    let start = now();
    let first = cycle::run_at(&config, &cluster, start);
    assert_eq!(first.code, 0);
    assert_eq!(world.outcomes(), map(&[("alpha", "acted"), ("bravo", "acted")]));
    world.replace_terminated(&specs[0], 5, &[1.0, 1.0]);
    world.replace_terminated(&specs[1], 5, &[1.9, 0.12]);
    let second = cycle::run_at(&config, &cluster, start + 900);
    assert_eq!(second.code, 0);
    assert_eq!(world.outcomes(), map(&[("alpha", "balanced"), ("bravo", "acted")]));
    let state = world.state();
    let entry = |name: &str| state["targets"][name].clone();
    let verdict = |name: &str| entry(name)["actions"][0]["evaluation"]["verdict"].clone();
    assert_eq!(
        (verdict("alpha"), entry("alpha")["streak"].clone()),
        (json!("effective"), json!(0)),
        "{state}"
    );
    assert_eq!(
        (verdict("bravo"), entry("bravo")["streak"].clone()),
        (json!("ineffective"), json!(1)),
        "{state}"
    );
    assert!(
        entry("bravo")["actions"][0]["evaluation"]["hot_spot"].is_object(),
        "{state}"
    );
    assert_eq!(
        entry("bravo")["actions"].as_array().map(Vec::len),
        Some(2),
        "bravo acted again"
    );
    let gauges = |name: &str| {
        second
            .targets
            .iter()
            .find(|e| e.run.labels.deployment.as_deref() == Some(name))
            .and_then(|e| e.run.memory)
            .map(|m| m.streak)
    };
    assert_eq!((gauges("alpha"), gauges("bravo")), (Some(0), Some(1)));
}

#[test]
fn an_adopted_single_mode_document_of_a_deployment_not_yet_a_target_is_kept() {
    // The way from N single-mode CronJobs to one: the memory of a Deployment not yet
    // labelled for the fleet is not lost on the fleet's first run.
    let specs = [target("alpha", &BALANCED), target("bravo", &BALANCED).unselected()];
    let world = World::new("fleet-adopt-later", &specs);
    let document = json!({"version": 2, "deployment": "bravo", "streak": 2, "hold_until": 1_700_000_000});
    world.remember(&document);
    let before = now();
    check(&world, &[], 0, &[("alpha", "balanced")]);
    let state = world.state();
    let bravo = &state["targets"]["bravo"];
    assert_eq!(bravo["streak"], 2, "{state}");
    assert!(
        bravo["last_target_at"].as_i64().is_some_and(|at| at >= before),
        "kept for FORGET_SECS from now: {bravo}"
    );
    // Labelled later, it carries its memory on.
    world.fake.lock().expect("fake").deployments[1]["metadata"]["labels"]["pod-rebalancer.io/enabled"] = json!("true");
    check(&world, &[], 0, &[("alpha", "balanced"), ("bravo", "balanced")]);
    assert_eq!(world.state()["targets"]["bravo"]["streak"], 2);
}

#[test]
fn a_single_mode_run_refuses_a_fleet_document() {
    let specs = [target("alpha", &IMBALANCED)];
    let world = World::new("fleet-refused", &specs);
    let document = json!({"version": 2, "targets": {"alpha": {"streak": 0}, "bravo": {"streak": 1}}});
    world.remember(&document);
    let out = world.run_env(&[], &world.single_env("alpha", &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(
        &logged(&out),
        "it holds the memory of other deployments (a fleet document, SPEC §13): a single-mode rebalancer must not share a fleet's state ConfigMap",
    );
    assert!(world.kube.mutations().is_empty(), "{:?}", world.kube.mutations());
    assert_eq!(world.state(), document, "nothing overwritten");
    // The fleet reads its own document, and acts.
    check(&world, &[], 0, &[("alpha", "acted")]);
}

#[test]
fn plan_in_fleet_mode_prints_a_line_per_target_every_plan_with_all_and_a_json_list() {
    let specs = [
        target("alpha", &IMBALANCED),
        target("bravo", &BALANCED),
        target("charlie", &IMBALANCED).annotated("threshold", "-1"),
        target("delta", &IMBALANCED).unselected(),
    ];
    let world = World::new("fleet-plan", &specs);
    let env = world.env(&[]);
    let text = world.run_env(&["plan"], &env);
    assert_eq!(text.code, 1, "charlie failed:\n{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and a line per target:\n{}", text.stdout);
    assert!(
        lines[0].starts_with("DEPLOYMENT") && lines[0].contains("SPREAD"),
        "{}",
        lines[0]
    );
    let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(row(1), ["alpha", "5", "0.64", "0.30", "remove", "2"]);
    assert_eq!(row(2)[..4], ["bravo", "5", "0.07", "0.30"]);
    assert_eq!(row(2)[4], "balanced");
    assert_eq!(row(3)[..5], ["charlie", "-", "-", "-", "error:"]);
    assert_contains(lines[3], "annotation pod-rebalancer.io/threshold=\"-1\"");
    let all = world.run_env(&["plan", "--all"], &env);
    for name in ["alpha", "bravo"] {
        assert_contains(&all.stdout, &format!("\n== {name}\n"));
    }
    assert_eq!(all.stdout.matches("\ndecision: ").count(), 2, "{}", all.stdout);
    assert_contains(
        &all.stdout,
        "decision: would evict 2 pods: spread 0.64 > threshold 0.30",
    );
    let json = world.run_env(&["plan", "--output", "json"], &env);
    let list: Value = serde_json::from_str(&json.stdout).expect("a JSON list");
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["deployment"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    assert_eq!(list[0]["decision"]["action"], "remove");
    assert_eq!(
        list[0]["decision"]["pods"].as_array().map(Vec::len),
        Some(2),
        "{}",
        list[0]
    );
    assert!(
        list[2]["error"].as_str().is_some_and(|e| e.contains("threshold")),
        "{}",
        list[2]
    );
    assert!(world.kube.mutations().is_empty(), "a plan changes nothing");
}

#[test]
fn exactly_one_of_deployment_name_and_target_selector_is_set() {
    let kube = Server::http(Arc::new(|_: &Request| Reply::json(500, "{}")));
    let env = |extra: &[(&str, &str)]| {
        env_with(
            [
                ("KUBE_API_URL", kube.url()),
                ("KUBE_NAMESPACE", "fleet-config".to_string()),
            ],
            extra,
        )
    };
    let both = run_bin(
        &[],
        &env(&[("DEPLOYMENT_NAME", "alpha"), ("TARGET_SELECTOR", SELECTOR)]),
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert_contains(&both.stderr, "DEPLOYMENT_NAME and TARGET_SELECTOR: set exactly one");
    let neither = run_bin(&[], &env(&[]));
    assert_eq!(neither.code, 2, "{}", neither.stderr);
    assert_contains(&neither.stderr, "required unless TARGET_SELECTOR names the targets");
    let zero = run_bin(
        &[],
        &env(&[("TARGET_SELECTOR", SELECTOR), ("MAX_REMOVALS_PER_RUN", "0")]),
    );
    assert_eq!(zero.code, 2, "{}", zero.stderr);
    assert_contains(
        &zero.stderr,
        "MAX_REMOVALS_PER_RUN (--max-removals-per-run): expected an integer >= 1",
    );
    let plan = run_bin(
        &["plan"],
        &env(&[("DEPLOYMENT_NAME", "alpha"), ("TARGET_SELECTOR", SELECTOR)]),
    );
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert!(kube.requests().is_empty(), "no request on a configuration error");
    // Negative control: the selector alone is a valid configuration that asks the API.
    let one = run_bin(&[], &env(&[("TARGET_SELECTOR", SELECTOR)]));
    assert_eq!(one.code, 1, "{}", one.stderr);
    assert!(!kube.requests().is_empty());
}

/// A fleet document whose entry for `bravo` holds an action leased `age` seconds ago
/// and never settled (its run may still be acting, or died).
fn leased(age: i64) -> Value {
    let at = now() - age;
    json!({"version": 2, "targets": {"bravo": {
        "last_target_at": at,
        "actions": [{
            "at": at, "spread": 0.64, "mean": 0.892, "n": 5, "fingerprint": "f", "settled": false,
            "pods": [
                {"name": pod_name("bravo", 1), "uid": uid_of(&pod_name("bravo", 1)), "role": "highest_cpu", "result": "intended"},
            ],
        }],
    }}})
}

#[test]
fn an_unsettled_lease_in_one_entry_holds_every_target() {
    let specs = [target("alpha", &IMBALANCED), target("bravo", &BALANCED)];
    let world = World::new("fleet-lease", &specs);
    world.remember(&leased(60));
    let out = check(&world, &[], 0, &[("alpha", "stabilizing"), ("bravo", "stabilizing")]);
    assert!(
        world.kube.mutations().is_empty(),
        "no removal, no write: {:?}",
        world.kube.mutations()
    );
    assert_contains(&logged(&out), "another run leased an action and may still be acting");
    // Negative control: a lease older than the stabilization window holds nothing.
    let world = World::new("fleet-lease-old", &specs);
    world.remember(&leased(3600));
    check(&world, &[], 0, &[("alpha", "acted"), ("bravo", "balanced")]);
    let bravo = &world.state()["targets"]["bravo"];
    assert_eq!(
        bravo["actions"][0]["settled"], true,
        "settled from the cluster: {bravo}"
    );
}

#[test]
fn per_target_annotations_override_the_settings_and_an_invalid_one_fails_that_target_alone() {
    let specs = [
        target("live", &IMBALANCED),
        target("dry", &IMBALANCED).annotated("dry-run", "Yes"),
        target("loose", &IMBALANCED).annotated("threshold", "0.9"),
        target("few", &IMBALANCED).annotated("min-pods", "6"),
        target("off", &IMBALANCED).annotated("paused", "1"),
        target("blank", &IMBALANCED)
            .annotated("threshold", " ")
            .annotated("paused", ""),
        target("bad-min", &IMBALANCED).annotated("min-pods", "2.5"),
        target("bad-container", &IMBALANCED).annotated("container", "Not_A_Label"),
    ];
    let world = World::new("fleet-annotations", &specs);
    let out = check(
        &world,
        &[("MAX_REMOVALS_PER_RUN", "10")],
        1,
        &[
            ("bad-container", "error"),
            ("bad-min", "error"),
            ("blank", "acted"),
            ("dry", "dry_run"),
            ("few", "too_few_pods"),
            ("live", "acted"),
            ("loose", "balanced"),
            ("off", "paused"),
        ],
    );
    let dry: Vec<String> = world
        .removals()
        .into_iter()
        .filter(|r| r.ends_with("(dry run)"))
        .collect();
    assert_eq!(
        dry,
        [
            format!("{} (dry run)", specs[1].pod(1)),
            format!("{} (dry run)", specs[1].pod(3))
        ]
    );
    assert_contains(
        &logged(&out),
        "deployment bad-min: annotation pod-rebalancer.io/min-pods=\"2.5\": expected an integer >= 1",
    );
    assert_contains(
        &logged(&out),
        "deployment bad-container: annotation pod-rebalancer.io/container=\"Not_A_Label\": expected",
    );
    let text = world.metrics_text();
    assert_contains(
        &text,
        "rebalancer_cpu_variance_threshold{namespace=\"fleet-annotations\",deployment=\"loose\"} 0.9",
    );
    assert!(
        text.lines().any(|l| l.starts_with("rebalancer_config_info{")
            && l.contains("deployment=\"dry\"")
            && l.contains("dry_run=\"true\"")),
        "{text}"
    );
    // A global DRY_RUN=true is not undone by an annotation.
    let undo = [target("undo", &IMBALANCED).annotated("dry-run", "false")];
    let world = World::new("fleet-annotations-dry", &undo);
    check(&world, &[("DRY_RUN", "true")], 0, &[("undo", "dry_run")]);
    assert_eq!(
        world.removals(),
        [
            format!("{} (dry run)", undo[0].pod(1)),
            format!("{} (dry run)", undo[0].pod(3))
        ]
    );
    assert_eq!(
        world.state_puts(),
        1,
        "a dry run takes no lease: only the end-of-run record"
    );
    assert_eq!(
        world.state()["targets"]["undo"]["actions"],
        json!([]),
        "and records no action"
    );
}

#[test]
fn without_an_annotation_a_targets_container_is_query_container_else_its_name() {
    let specs = [
        target("shared", &WIDE).running("worker"),
        target("own", &IMBALANCED).annotated("container", "own"),
    ];
    let world = World::new("fleet-query-container", &specs);
    let fleet = world.observe(&world.env(&[("QUERY_CONTAINER", "worker")]), now());
    let hottest = |name: &str| {
        let t = fleet.targets.iter().find(|t| t.name == name).expect("a target");
        let plan = t.plan.as_ref().unwrap_or_else(|| panic!("{name}: {:?}", t.ended));
        let top = plan.pods.iter().next().expect("a pod");
        (plan.container.clone(), top.sample.map(|c| (c * 100.0).round() / 100.0))
    };
    assert_eq!(hottest("shared"), ("worker".to_string(), Some(3.0)));
    assert_eq!(hottest("own"), ("own".to_string(), Some(1.9)));
    // Without QUERY_CONTAINER, shared's container is its name, which no series has.
    let fleet = world.observe(&world.env(&[]), now());
    let shared = fleet.targets.iter().find(|t| t.name == "shared").expect("a target");
    assert!(
        shared
            .ended
            .as_ref()
            .and_then(|e| e.as_ref().err())
            .is_some_and(|f| f.error.to_string().contains("no CPU metrics for container shared")),
        "{:?}",
        shared.ended
    );
}

#[test]
fn a_fleet_run_in_process_ends_each_target_as_its_metrics_say() {
    let specs = [target("alpha", &IMBALANCED), target("bravo", &BALANCED)];
    let world = World::new("fleet-in-process", &specs);
    let (config, cluster) = live_config(&world.env(&[]));
    let finished = cycle::run_at(&config, &cluster, now());
    assert_eq!(finished.code, 0);
    let ended: Vec<(Option<String>, _)> = finished
        .targets
        .iter()
        .map(|e| (e.run.labels.deployment.clone(), e.run.ended))
        .collect();
    assert_eq!(
        ended,
        [
            (Some("alpha".to_string()), Ok(Outcome::Acted)),
            (Some("bravo".to_string()), Ok(Outcome::Balanced))
        ]
    );
    assert_eq!(world.outcomes(), map(&[("alpha", "acted"), ("bravo", "balanced")]));
}

/// A paused target is decided from its Deployment alone; with every target paused
/// the run lists no pod and sends no query (README "Pause one").
#[test]
fn a_fleet_whose_every_target_is_paused_lists_no_pod_and_sends_no_query() {
    let specs = [
        target("alpha", &IMBALANCED).annotated("paused", "true"),
        target("bravo", &BALANCED).annotated("paused", "yes"),
    ];
    let world = World::new("fleet-all-paused", &specs);
    check(&world, &[], 0, &[("alpha", "paused"), ("bravo", "paused")]);
    let paths: Vec<String> = world.kube.requests().iter().map(|r| r.path().to_string()).collect();
    assert!(paths.iter().all(|p| !p.ends_with("/pods")), "{paths:?}");
    assert_eq!(world.queries(), Vec::<String>::new());
}
