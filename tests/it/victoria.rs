//! The binary against the real VictoriaMetrics, fed what cAdvisor really exposes:
//! the query measures exactly our container in our namespace, survives counter
//! resets, keeps an endpoint's path prefix, fails loudly on the server's own errors,
//! and at 1,000 pods decides as the pure planner does on the numbers fed.
//!
//! Each test checks first, straight against the server, that its data would catch the
//! mistake it is about (a query without its namespace matcher gets other numbers, the
//! counter really falls inside the window, ...), so that none of them can pass on data
//! that proves nothing. It also holds the recorder of `fixtures/vm/` and the test that
//! the committed bodies are still what this server answers.

use crate::cycle::{DEPLOYMENT, fleet, name};
use crate::support::kube::{Fake, FakePod, pod};
use crate::support::server::{Request, Server};
use crate::support::vm::{self, Gone, Restart, RestartShape, Scrape, Vm};
use crate::support::{Output, TempDir, assert_contains, env_with, root, run_bin};
use pod_rebalancer::plan::Settings;
use pod_rebalancer::plan::{self, Decision, Inputs, Samples};
use pod_rebalancer::{kube, victoria};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// The fake Kubernetes API (plain HTTP: TLS is `cycle.rs`'s business) serving `pods`,
/// and a directory for the service account and the metrics file.
pub(crate) struct World {
    kube: Server,
    dir: TempDir,
    namespace: String,
}

impl World {
    /// `namespace` must be unique per test: the tests share one VictoriaMetrics.
    pub(crate) fn new(namespace: &str, pods: &[FakePod]) -> World {
        let fake = Fake::new(namespace, DEPLOYMENT, pods, crate::support::now());
        let kube = Server::http(fake.into_handler());
        let dir = TempDir::new(namespace);
        std::fs::create_dir_all(dir.path().join("sa")).expect("sa dir");
        World {
            kube,
            dir,
            namespace: namespace.to_string(),
        }
    }

    fn metrics_path(&self) -> std::path::PathBuf {
        self.dir.path().join("rebalancer.prom")
    }

    /// One run against `endpoint`, logging JSON at debug.
    pub(crate) fn run(&self, endpoint: &str, extra: &[(&str, &str)]) -> Output {
        let vars = [
            ("KUBE_API_URL", self.kube.url()),
            (
                "KUBE_SERVICE_ACCOUNT_DIR",
                self.dir.path().join("sa").display().to_string(),
            ),
            ("KUBE_NAMESPACE", self.namespace.clone()),
            ("DEPLOYMENT_NAME", DEPLOYMENT.to_string()),
            ("KUBE_LABEL_SELECTOR", "app=consumer".to_string()),
            ("PROMETHEUS_ENDPOINT", endpoint.to_string()),
            ("METRICS_FILE", self.metrics_path().display().to_string()),
            ("LOG_LEVEL", "debug".to_string()),
            ("LOG_FORMAT", "json".to_string()),
        ];
        run_bin(&[], &env_with(vars, extra))
    }

    /// The mutating requests that were not server-side dry runs (`dryRun=All`).
    pub(crate) fn mutations(&self) -> Vec<Request> {
        self.kube
            .mutations()
            .into_iter()
            .filter(|r| r.query("dryRun").as_deref() != Some("All"))
            .collect()
    }
}

/// The run's log lines, each a JSON object.
pub(crate) fn log_lines(out: &Output) -> Vec<Value> {
    out.stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The CPU the run logged for each matched pod that had a sample (`cpu` is null
/// for a pod without one).
pub(crate) fn logged_cpu(lines: &[Value]) -> BTreeMap<String, f64> {
    lines
        .iter()
        .filter(|l| l["msg"] == "pod")
        .filter_map(|l| {
            let pod = l["pod"].as_str().expect("pod field").to_string();
            assert!(l["cpu"].is_number() || l["cpu"].is_null(), "{l}");
            Some((pod, l["cpu"].as_f64()?))
        })
        .collect()
}

/// The pods a dry run would have evicted, in order.
fn would_evict(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("dry run: pod ") && m.ends_with(" would be evicted"))
        })
        .map(|l| l["pod"].as_str().expect("pod field").to_string())
        .collect()
}

/// The log line of the plan.
pub(crate) fn plan_line(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["msg"].as_str().is_some_and(|m| m.starts_with("plan: ")))
        .expect("a plan line")
}

/// The error of a failed run.
fn failure(lines: &[Value]) -> String {
    let line = lines
        .iter()
        .find(|l| l["msg"] == "run failed, no further action")
        .expect("the failure line");
    line["error"].as_str().expect("error field").to_string()
}

/// `measured` is within `tolerance` (a fraction) of `fed`.
pub(crate) fn near(measured: f64, fed: f64, tolerance: f64) -> bool {
    (measured - fed).abs() <= tolerance * fed.abs()
}

/// Every fed pod was logged with a CPU within 5% of what it was fed.
pub(crate) fn assert_measured_as_fed(logged: &BTreeMap<String, f64>, fed: &[(String, f64)], stderr: &str) {
    for (pod, cores) in fed {
        let got = logged
            .get(pod)
            .unwrap_or_else(|| panic!("no line for {pod}:\n{stderr}"));
        assert!(
            near(*got, *cores, 0.05),
            "{pod}: fed {cores} cores, the run measured {got}\n{stderr}"
        );
    }
}

#[test]
fn the_query_measures_our_container_in_our_namespace_only() {
    let ns = "vm-exactly-ours";
    let (pods, cpu) = fleet(&[0.35, 1.2, 2.75, 0.9, 0.08, 1.6]);
    let scrape = Scrape::production(ns, DEPLOYMENT, &cpu);
    let server = vm::shared();
    server.feed_scrape(&scrape);

    // The data has teeth: each way of selecting too much gets other numbers.
    let fed: BTreeMap<String, f64> = cpu.iter().cloned().collect();
    let rate = |selector: &str| {
        server.samples(
            &format!("sum by (pod) (rate(container_cpu_usage_seconds_total{{{selector}}}[300s]))"),
            "pod",
            None,
        )
    };
    for (mistake, selector) in [
        ("no namespace matcher", format!("container=\"{DEPLOYMENT}\"")),
        ("no container matcher", format!("namespace=\"{ns}\"")),
    ] {
        let wrong = rate(&selector);
        for (pod, cores) in &fed {
            assert!(
                !near(wrong[pod], *cores, 0.05),
                "{mistake}: {pod} reads {} for {cores} fed, the data cannot catch it",
                wrong[pod]
            );
        }
    }
    let prefix = rate(&format!("namespace=\"{ns}\",container=~\"{DEPLOYMENT}.*\""));
    for neighbour in scrape.neighbour_pods() {
        assert!(prefix.contains_key(&neighbour), "a container prefix: {prefix:?}");
    }
    // The product's query sees the gone pod (its series ended inside the window) and
    // nothing of the neighbour Deployment.
    let answer = server.samples(&victoria::cpu_query(ns, Some(DEPLOYMENT), &[], 300), "pod", None);
    let mut want: Vec<String> = fed.keys().cloned().chain(scrape.gone_pods()).collect();
    want.sort();
    assert_eq!(answer.keys().cloned().collect::<Vec<_>>(), want);

    let world = World::new(ns, &pods);
    let out = world.run(&server.url(), &[("DRY_RUN", "true")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = log_lines(&out);
    let logged = logged_cpu(&lines);
    assert_measured_as_fed(&logged, &cpu, &out.stderr);
    assert_eq!(
        logged.keys().collect::<Vec<_>>(),
        fed.keys().collect::<Vec<_>>(),
        "only matched pods are measured: not the gone pod, not the neighbour's"
    );
    assert_eq!(plan_line(&lines)["eligible"], 6);
    assert_eq!(would_evict(&lines), [name(2), name(4)]);
}

#[test]
fn a_counter_reset_is_neither_negative_nor_huge() {
    let ns = "vm-reset";
    let (pods, cpu) = fleet(&[1.0, 1.5, 0.6, 1.1, 0.9]);
    let scrape = Scrape {
        restarts: vec![
            // Inside the window, as a scrape pipeline that drops `id` and `name` sees it.
            Restart {
                pod: name(1),
                secs_ago: 100,
                shape: RestartShape::SameSeries,
            },
            // Before the window, as cAdvisor shows it: a new series, the old one stopped.
            Restart {
                pod: name(3),
                secs_ago: 400,
                shape: RestartShape::NewSeries,
            },
        ],
        ..Scrape::production(ns, DEPLOYMENT, &cpu)
    };
    let server = vm::shared();
    server.feed_scrape(&scrape);

    // The counter of p1 really falls inside the window: a rate that did not
    // handle resets would be negative.
    let delta = server.samples(
        &format!(
            "delta(container_cpu_usage_seconds_total{{namespace=\"{ns}\",container=\"{DEPLOYMENT}\",pod=\"{}\"}}[300s])",
            name(1)
        ),
        "pod",
        None,
    );
    assert!(delta[&name(1)] < -1000.0, "no reset in the window: {delta:?}");

    let world = World::new(ns, &pods);
    let out = world.run(&server.url(), &[("DRY_RUN", "true")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let logged = logged_cpu(&log_lines(&out));
    assert_measured_as_fed(&logged, &cpu, &out.stderr);
    assert!(logged.values().all(|c| *c >= 0.0), "{logged:?}");
}

/// cAdvisor gives a restarted container a new series. While the old series is still
/// inside the rate window, VictoriaMetrics' `rate` measures each series over its own
/// samples, so a plain `sum by (pod)` of rates would add the old container's rate to
/// the new one's and read twice the pod's CPU; the query sums what each instance
/// burned inside the window instead (`engines.rs` holds the same case on Prometheus).
#[test]
fn a_container_restart_inside_the_window_counts_once() {
    let ns = "vm-restart-in-window";
    let (pods, cpu) = fleet(&[1.0, 1.0, 1.0, 1.0, 1.0]);
    let scrape = Scrape {
        restarts: vec![Restart {
            pod: name(2),
            secs_ago: 100,
            shape: RestartShape::NewSeries,
        }],
        ..Scrape::production(ns, DEPLOYMENT, &cpu)
    };
    let server = vm::shared();
    server.feed_scrape(&scrape);
    let world = World::new(ns, &pods);
    let out = world.run(&server.url(), &[("DRY_RUN", "true")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = log_lines(&out);
    assert_measured_as_fed(&logged_cpu(&lines), &cpu, &out.stderr);
    assert_eq!(plan_line(&lines)["decision"], "balanced", "{}", out.stderr);
}

#[test]
fn an_endpoint_with_a_path_prefix_keeps_it() {
    let ns = "vm-prefix";
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
    let server = vm::shared();
    server.feed(ns, DEPLOYMENT, &cpu);
    let world = World::new(ns, &pods);

    // Single-node VictoriaMetrics also serves the query API under /prometheus.
    for endpoint in [
        format!("{}/prometheus", server.url()),
        format!("{}/prometheus/", server.url()),
    ] {
        let out = world.run(&endpoint, &[("DRY_RUN", "true")]);
        assert_eq!(out.code, 0, "{endpoint}: {}", out.stderr);
        let lines = log_lines(&out);
        assert_measured_as_fed(&logged_cpu(&lines), &cpu, &out.stderr);
        assert_eq!(would_evict(&lines), [name(1), name(3)], "{endpoint}");
    }
    // The prefix is really sent: one the server does not know fails the run.
    let out = world.run(&format!("{}/select/0/prometheus", server.url()), &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = failure(&log_lines(&out));
    let asked = format!("query CPU (POST {}/select/0/prometheus/api/v1/query): ", server.url());
    assert!(error.starts_with(&asked), "{error}");
    assert!(
        error.contains("expected a 2xx answer, got 400: remoteAddr: ")
            && error.ends_with(r#"; unsupported path requested: "/select/0/prometheus/api/v1/query""#),
        "{error}"
    );
    assert!(world.mutations().is_empty());
}

#[test]
fn a_real_server_error_fails_the_run_with_its_own_words_and_removes_nothing() {
    let ns = "vm-too-many-series";
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
    let limited = vm::limited();
    limited.feed(ns, DEPLOYMENT, &cpu);
    let world = World::new(ns, &pods);
    let out = world.run(&limited.url(), &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(world.mutations().is_empty(), "{:?}", world.mutations());
    let error = failure(&log_lines(&out));
    assert!(
        error.starts_with(&format!(
            "query CPU (POST {}/api/v1/query): expected a 2xx answer, got 422: error when executing query=",
            limited.url()
        )),
        "{error}"
    );
    assert_contains(
        &error,
        "the number of matching timeseries exceeds 1; either narrow down the search or increase -search.max* command-line flag values at vmselect",
    );
    let metrics = std::fs::read_to_string(world.metrics_path()).expect("metrics file");
    let metrics = crate::support::untargeted(&metrics, ns, DEPLOYMENT);
    assert_contains(&metrics, "rebalancer_errors_total{stage=\"metrics\"} 1\n");
    assert_contains(&metrics, "rebalancer_cycle_outcome{outcome=\"error\"} 1\n");

    // The same fleet on a server without the limit is acted on: the limit, nothing
    // else, failed the run.
    let server = vm::shared();
    server.feed(ns, DEPLOYMENT, &cpu);
    let out = world.run(&server.url(), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let evicted: Vec<String> = world
        .mutations()
        .iter()
        .filter(|r| r.path().ends_with("/eviction"))
        .map(|r| r.path().split('/').nth_back(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(evicted, [name(1), name(3)]);
}

/// 1,000 pods, each with its own CPU between 0.2 and 1.8 cores (no two alike, so no
/// rounding can reorder them); the first ten are not Ready and the last ten have no
/// series at all.
fn thousand() -> (Vec<FakePod>, Vec<(String, f64)>) {
    let n = 1000;
    let name = |i: usize| format!("{DEPLOYMENT}-5f7c9d8b4d-{i:04}");
    let pods = (0..n)
        .map(|i| FakePod {
            ready: i >= 10,
            ..pod(&name(i))
        })
        .collect();
    // 7 is prime to 1000, so i·7 mod 1000 visits every step once.
    let cpu = (0..n - 10)
        .map(|i| (name(i), 0.2 + 1.6 * ((i * 7) % n) as f64 / n as f64))
        .collect();
    (pods, cpu)
}

#[test]
fn a_thousand_pod_fleet_gets_the_decision_of_the_pure_planner() {
    let ns = "vm-thousand";
    let (pods, cpu) = thousand();
    let server = vm::shared();
    let started = Instant::now();
    server.feed(ns, DEPLOYMENT, &cpu);
    let fed_in = started.elapsed();

    // The planner, fed the numbers we fed, the pods the fake API serves and its
    // Deployment, with the settings the run is given.
    let now = crate::support::now();
    let fake = Fake::new(ns, DEPLOYMENT, &pods, now);
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": fake.pods.clone()});
    let route = kube::Route::Owned(&[(DEPLOYMENT, DEPLOYMENT)]);
    let planner_pods = kube::parse_pod_list(&list.to_string(), route).expect("pod list").pods;
    let rollout = kube::parse_deployment(&fake.deployment.to_string()).expect("deployment");
    let samples: Samples = cpu.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let settings = Settings {
        window_secs: 300,
        threshold: 0.3,
        min_pods: 3,
        stabilization_secs: 600,
    };
    let expected = plan::decide(Inputs {
        pods: planner_pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &settings,
        container: DEPLOYMENT,
        namespace: ns,
        ignored: 0,
        selector: None,
        leased: None,
        partitions: None,
    })
    .expect("a plan");
    let Decision::Remove { pods: removals } = &expected.decision else {
        panic!("the fleet must be imbalanced enough to act on: {:?}", expected.decision)
    };
    let want: Vec<String> = removals.iter().map(|r| r.name.clone()).collect();
    let stats = expected.stats.expect("statistics");

    let world = World {
        kube: Server::http(fake.into_handler()),
        dir: TempDir::new(ns),
        namespace: ns.to_string(),
    };
    std::fs::create_dir_all(world.dir.path().join("sa")).expect("sa dir");
    let out = world.run(
        &server.url(),
        &[
            ("DRY_RUN", "true"),
            ("METRICS_TIME_WINDOW", "5m"),
            ("CPU_VARIANCE_THRESHOLD", "0.3"),
            ("MIN_PODS_REQUIRED", "3"),
            ("STABILIZATION_WINDOW", "10m"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = log_lines(&out);
    assert_eq!(would_evict(&lines), want);
    let line = plan_line(&lines);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    assert_eq!(line["decision"], "remove");
    assert_eq!(line["matched"], 1000);
    assert_eq!(line["eligible"], stats.n);
    // Rounded to 3 decimals by the run; the server's float noise may tip a last digit.
    for (field, value) in [("mean", stats.mean), ("stddev", stats.stddev), ("spread", stats.spread)] {
        let logged = line[field].as_f64().expect("a number");
        assert!(
            (logged - round(value)).abs() < 0.0011,
            "{field}: planner {value}, run {line}"
        );
    }
    // The run logs no CPU for an excluded pod, so only the Ready ones are compared.
    assert_measured_as_fed(&logged_cpu(&lines), &cpu[10..], "");
    let excluded = |reason: &str| {
        lines
            .iter()
            .filter(|l| l["msg"] == "pod" && l["excluded"] == reason)
            .count()
    };
    assert_eq!((excluded("not ready"), excluded("no metrics")), (10, 10));
    assert!(world.mutations().is_empty());
    eprintln!(
        "1,000 pods: fed in {fed_in:?}, run in {:?}, would evict {want:?}",
        out.elapsed
    );
}

/// The instant every recorded body is answered at: 2024-06-01T00:00:00Z, in the past on
/// any machine, so that each recording is the same byte for byte.
const RECORDED_AT: i64 = 1_717_200_000;

/// The scrape the recorded bodies come from: the five pods (and CPU numbers) of the
/// first recording in `../shared/recorded/SOURCES.md`, with every production neighbour;
/// the gone pod stopped six minutes before, outside the window, so the production
/// answer lists exactly the five pods.
fn recorded_scrape() -> Scrape {
    let fleet: Vec<(String, f64)> = [
        ("2xk9p", 0.8188082833333336),
        ("7qwzt", 1.9022079799999998),
        ("bd4mn", 0.7861000933333329),
        ("hv8rc", 0.12029403333333334),
        ("m2jxl", 0.8485252499999993),
    ]
    .into_iter()
    .map(|(suffix, cores)| (format!("{DEPLOYMENT}-5f7c9d8b4d-{suffix}"), cores))
    .collect();
    Scrape {
        end_ms: RECORDED_AT * 1000,
        gones: vec![Gone {
            pod: format!("{DEPLOYMENT}-6c8f7b9d5-zq2lp"),
            cores: 4.0,
            secs_ago: 360,
        }],
        ..Scrape::production("posthog", DEPLOYMENT, &fleet)
    }
}

/// A server holding `recorded_scrape`, fed once per test process.
fn recording_server(limited: bool) -> &'static Vm {
    static SHARED: std::sync::Once = std::sync::Once::new();
    static LIMITED: std::sync::Once = std::sync::Once::new();
    let (server, once) = if limited {
        (vm::limited(), &LIMITED)
    } else {
        (vm::shared(), &SHARED)
    };
    once.call_once(|| server.feed_scrape(&recorded_scrape()));
    server
}

/// One recorded body: the file under `fixtures/vm/`, how to ask for it, and the status.
struct Recipe {
    file: &'static str,
    limited: bool,
    query: String,
    status: u16,
}

fn recipes() -> Vec<Recipe> {
    let production = victoria::cpu_query("posthog", Some(DEPLOYMENT), &[], 300);
    let recipe = |file, limited, query: &str, status| Recipe {
        file,
        limited,
        query: query.to_string(),
        status,
    };
    vec![
        recipe("query_cpu_by_pod.json", false, &production, 200),
        recipe(
            "query_empty.json",
            false,
            &victoria::cpu_query("posthog-dev", Some(DEPLOYMENT), &[], 300),
            200,
        ),
        recipe(
            "query_nan_inf.json",
            false,
            r#"label_set(0/0,"pod","a") or label_set(1/0,"pod","b") or label_set(-1/0,"pod","c") or label_set(vector(0.5),"pod","d")"#,
            200,
        ),
        recipe("query_scalar.json", false, "scalar(vector(1))", 200),
        recipe(
            "query_matrix.json",
            false,
            &format!(
                "rate(container_cpu_usage_seconds_total{{namespace=\"posthog\",container=\"{DEPLOYMENT}\"}}[5m])[2m:30s]"
            ),
            200,
        ),
        recipe(
            "error_422_parse.json",
            false,
            r#"sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="posthog"[5m]))"#,
            422,
        ),
        recipe("error_422_max_unique_timeseries.json", true, &production, 422),
    ]
}

/// Asks the server each recipe; returns (file, body as it is to be stored).
fn record() -> Vec<(&'static str, String)> {
    recipes()
        .into_iter()
        .map(|r| {
            let (status, body) = recording_server(r.limited).ask("/api/v1/query", &r.query, Some(RECORDED_AT));
            assert_eq!(status, r.status, "{}: {body}", r.file);
            (r.file, body + "\n")
        })
        .collect()
}

/// Regenerates the bodies of `fixtures/vm/` that this server can give:
/// `cargo test --test it -- --ignored record_vm_fixtures`.
#[test]
#[ignore = "rewrites fixtures/vm; run by hand"]
fn record_vm_fixtures() {
    for (file, body) in record() {
        std::fs::write(root().join("fixtures/vm").join(file), body).expect("write fixture");
    }
}

#[test]
fn the_recorded_bodies_are_what_the_server_answers() {
    for (file, live) in record() {
        let path = root().join("fixtures/vm").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed, live,
            "{file} differs from what the server answers now; re-record with `cargo test --test it -- --ignored record_vm_fixtures`"
        );
    }
}
