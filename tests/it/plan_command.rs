//! `pod-rebalancer plan` on saved responses: the bundled demo snapshot, JSON output,
//! and that it never opens a connection.

use crate::support::kube::{FakePod, deployment_json, pod, pod_json};
use crate::support::server::{Reply, Request, Server};
use crate::support::{Output, root, run_bin, vm};
use std::sync::Arc;

/// The demo's "now": every age in the snapshot is relative to it.
const DEMO_NOW: &str = "2026-11-26T07:00:00Z";
const DEMO_NOW_UNIX: i64 = 1_795_676_400;
const DEMO_NS: &str = "posthog";
const DEMO_DEPLOYMENT: &str = "ingestion-consumer";

fn demo(file: &str) -> String {
    root().join("fixtures/demo").join(file).display().to_string()
}

fn plan(extra_args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["plan", "--pods", "", "--cpu", "", "--deployment", "", "--now", DEMO_NOW];
    let (pods, cpu, deployment) = (demo("pods.json"), demo("cpu.json"), demo("deployment.json"));
    args[2] = &pods;
    args[4] = &cpu;
    args[6] = &deployment;
    args.extend_from_slice(extra_args);
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    run_bin(&args, &env)
}

#[test]
fn the_demo_shows_a_real_decision() {
    let out = plan(&[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    for line in [
        "pod names start with ingestion-consumer-5f7c9d8b4d- (shortened below)",
        "pods: 12 matched, 10 eligible, 10 healthy; may remove 5 (min pods 3)",
        "cpu: mean 0.883 cores, stddev 0.412 cores, spread 0.47 (threshold 0.30)",
        "decision: would evict 2 pods: spread 0.47 > threshold 0.30",
        "  ingestion-consumer-5f7c9d8b4d-7qwzt (1.920 cores, highest cpu)",
        "  ingestion-consumer-5f7c9d8b4d-hv8rc (0.120 cores, lowest cpu)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("▲ 7qwzt ") && l.ends_with("highest")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("▼ hv8rc ") && l.ends_with("lowest")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  crash1 ") && l.ends_with("excluded: not ready")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  pend1 ") && l.ends_with("excluded: not running")),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}");
    }
}

#[test]
fn the_plan_is_available_as_json() {
    let out = plan(&["--output", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON plan");
    assert_eq!(json["decision"]["action"], "remove");
    let removed: Vec<&str> = json["decision"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        removed,
        [
            "ingestion-consumer-5f7c9d8b4d-7qwzt",
            "ingestion-consumer-5f7c9d8b4d-hv8rc"
        ]
    );
    assert_eq!(json["stats"]["n"], 10);
    assert_eq!(json["pods"].as_array().unwrap().len(), 12);
    assert_eq!(json["pods"][11]["excluded"], "not_running");
}

#[test]
fn the_decision_settings_apply_to_the_plan() {
    let out = plan(&[], &[("CPU_VARIANCE_THRESHOLD", "0.5")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("decision: no action: balanced: spread 0.47 <= threshold 0.50"),
        "{}",
        out.stdout
    );
    let out = plan(&["--min-pods-required", "9"], &[]);
    assert!(
        out.stdout
            .contains("decision: would evict 1 pod: spread 0.47 > threshold 0.30"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  only one: 10 healthy pods, 9 must stay"),
        "{}",
        out.stdout
    );
}

#[test]
fn plan_never_opens_a_connection() {
    let server = Server::http(Arc::new(|_: &Request| Reply::text(500, "no")));
    let url = server.url();
    let out = plan(
        &[],
        &[
            ("PROMETHEUS_ENDPOINT", &url),
            ("KUBE_API_URL", &url),
            ("METRICS_PUSH_URL", &url),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(server.requests().is_empty());
}

#[test]
fn plan_errors_name_the_file() {
    let missing = run_bin(
        &["plan", "--pods", "/nonexistent/pods.json", "--cpu", &demo("cpu.json")],
        &[],
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("read pods /nonexistent/pods.json"),
        "{}",
        missing.stderr
    );
    let swapped = run_bin(&["plan", "--pods", &demo("cpu.json"), "--cpu", &demo("pods.json")], &[]);
    assert_eq!(swapped.code, 1);
    assert!(
        swapped.stderr.contains("parse pods") && swapped.stderr.contains("expected a PodList"),
        "{}",
        swapped.stderr
    );
    let bad_now = plan(&["--now", "yesterday"], &[]);
    assert_eq!(bad_now.code, 2, "{}", bad_now.stderr);
    let no_files = run_bin(&["plan"], &[]);
    assert_eq!(no_files.code, 2, "{}", no_files.stderr);
}

/// The demo fleet: ten healthy pods, one crash-looping (Running, not Ready), one stuck
/// Pending; `(pod, cores)` for those with metrics.
fn demo_fleet() -> (Vec<FakePod>, Vec<(String, f64)>) {
    let named = |suffix: &str| format!("{DEMO_DEPLOYMENT}-5f7c9d8b4d-{suffix}");
    let cpu: Vec<(String, f64)> = [
        ("7qwzt", 1.92),
        ("m2jxl", 0.85),
        ("2xk9p", 0.82),
        ("bd4mn", 0.79),
        ("q8r2v", 0.88),
        ("t5n7w", 0.93),
        ("x3c6z", 0.76),
        ("k9d2f", 0.95),
        ("w4h8s", 0.81),
        ("hv8rc", 0.12),
        ("crash1", 0.02),
    ]
    .iter()
    .map(|(s, c)| (named(s), *c))
    .collect();
    let mut pods: Vec<FakePod> = cpu.iter().map(|(n, _)| pod(n)).collect();
    for (i, p) in pods.iter_mut().enumerate() {
        p.age_secs = 3 * 3600 + 97 * i as i64;
        p.cpu_request = "1";
    }
    pods[10].ready = false;
    let mut pending = pod(&named("pend1"));
    pending.phase = "Pending";
    pending.ready = false;
    pending.age_secs = 25 * 60;
    pods.push(pending);
    (pods, cpu)
}

/// Regenerates `fixtures/demo/` from the recorded kind pod and Deployment and a real
/// VictoriaMetrics answer: `cargo test --test it -- --ignored record_demo`.
#[test]
#[ignore = "rewrites fixtures/demo; run by hand"]
fn record_demo() {
    let (pods, cpu) = demo_fleet();
    let items: Vec<serde_json::Value> = pods
        .iter()
        .map(|p| pod_json(DEMO_NS, DEMO_DEPLOYMENT, p, DEMO_NOW_UNIX))
        .collect();
    let list =
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
    let dir = root().join("fixtures/demo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pods.json"),
        serde_json::to_string_pretty(&list).unwrap() + "\n",
    )
    .unwrap();
    let deployment = deployment_json(DEMO_NS, DEMO_DEPLOYMENT, pods.len() as i64);
    std::fs::write(
        dir.join("deployment.json"),
        serde_json::to_string_pretty(&deployment).unwrap() + "\n",
    )
    .unwrap();
    // A real answer: fed into the real server under a namespace of its own, then
    // asked with the production query, and the namespace written back as posthog.
    let vm = vm::shared();
    let ns = "demo-record";
    vm.feed(ns, DEMO_DEPLOYMENT, &cpu);
    let answer = vm.query(&pod_rebalancer::victoria::cpu_query(ns, DEMO_DEPLOYMENT, 300));
    std::fs::write(dir.join("cpu.json"), answer + "\n").unwrap();
}
