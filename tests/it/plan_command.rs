//! `pod-rebalancer plan` on saved responses: the bundled demo snapshot, JSON output,
//! and that it never opens a connection.

use crate::support::kube::{FakePod, deployment_json, pod, pod_json};
use crate::support::server::{Reply, Request, Server};
use crate::support::{Output, assert_contains, root, run_bin, vm};
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
        assert_contains(&text, line);
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
    assert_contains(
        &out.stdout,
        "decision: no action: balanced: spread 0.47 <= threshold 0.50",
    );
    let out = plan(&["--min-pods-required", "9"], &[]);
    assert_contains(&out.stdout, "decision: would evict 1 pod: spread 0.47 > threshold 0.30");
    assert_contains(&out.stdout, "  only one: 10 healthy pods, 9 must stay");
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
    assert_contains(&missing.stderr, "read pods /nonexistent/pods.json");
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

#[test]
fn the_demos_partitions_show_an_imbalance_no_eviction_can_fix() {
    let out = plan(&["--partitions", &demo("partitions.json")], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    for line in [
        "partitions: 20 owned by the matched pods, heaviest first",
        "  7qwzt       1872     2  events/7 1800, events/19 71.9",
        "  hv8rc       69.7     2  events/18 38.5, events/9 31.2",
        "decision: no action: unfixable: no assignment of the partitions balances the",
    ] {
        assert_contains(&text, line);
    }
    assert!(text.contains("partition events/7 alone burns 1.85 cores"), "{text}");
    assert!(
        !text.contains("▲") && !text.contains("zq2lp") && !text.contains("billing"),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}");
    }
    let json = plan(&["--partitions", &demo("partitions.json"), "--output", "json"], &[]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    assert_eq!(json["decision"]["reason"], "unfixable");
    assert_eq!(json["partitions"]["verdict"], "key_skew");
    assert!(json["partitions"]["r2"].as_f64().is_some_and(|r2| r2 > 0.9), "{json}");
    assert_eq!(json["partitions"]["pods"][0]["partitions"][0]["partition"], "events/7");
    // With a threshold the best possible spread meets, the plan acts as without it.
    let lenient = plan(
        &["--partitions", &demo("partitions.json")],
        &[("CPU_VARIANCE_THRESHOLD", "0.4")],
    );
    assert_contains(
        &lenient.stdout,
        "decision: would evict 2 pods: spread 0.47 > threshold 0.40",
    );
    assert_contains(&lenient.stdout, "(fixable)");
}

#[test]
fn a_partition_answer_that_is_not_one_names_the_file() {
    let cpu = demo("cpu.json");
    let out = plan(&["--partitions", &cpu], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(
        &out.stderr,
        &format!(
            "parse partition answer {cpu}: unexpected answer: pod ingestion-consumer-5f7c9d8b4d-2xk9p: expected the label topic that names a partition"
        ),
    );
    let missing = plan(&["--partitions", "/nonexistent/partitions.json"], &[]);
    assert_eq!(missing.code, 1);
    assert_contains(&missing.stderr, "read partition answer /nonexistent/partitions.json");
    // Saved responses only: a live plan reads the partitions with PARTITION_QUERY.
    let live = run_bin(&["plan", "--partitions", &demo("partitions.json")], &[]);
    assert_eq!(live.code, 2, "{}", live.stderr);
    assert_contains(&live.stderr, "--partitions and --now replay saved responses");
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
    let answer = vm.query(&pod_rebalancer::victoria::cpu_query(
        ns,
        Some(DEMO_DEPLOYMENT),
        &[],
        300,
    ));
    std::fs::write(dir.join("cpu.json"), answer + "\n").unwrap();
}

/// Compares `actual` with `tests/it/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn check_snapshot(name: &str, actual: &str) {
    let path = root().join("tests/it/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (UPDATE_SNAPSHOTS=1 cargo test --test it creates it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (UPDATE_SNAPSHOTS=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn snapshots_of_the_picture_and_the_document() {
    /// (snapshot file, extra arguments, settings)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let state = demo("state.json");
    let partitions = demo("partitions.json");
    let cases: &[Case] = &[
        ("demo.txt", &[], &[]),
        ("demo.json", &["--output", "json"], &[]),
        ("balanced.txt", &[], &[("CPU_VARIANCE_THRESHOLD", "0.5")]),
        ("one_pod_fits_the_budget.txt", &[], &[("MIN_PODS_REQUIRED", "9")]),
        ("gated.txt", &["--now", "2026-11-26T06:40:00Z"], &[]),
        ("all_excluded.txt", &[], &[("METRICS_TIME_WINDOW", "5h")]),
        (
            "gated.json",
            &["--now", "2026-11-26T06:40:00Z", "--output", "json"],
            &[],
        ),
        // The demo's state ConfigMap: three actions that each moved the hot spot.
        ("demo_memory.txt", &["--state", &state], &[]),
        ("demo_memory.json", &["--state", &state, "--output", "json"], &[]),
        // The demo's partitions: one of them alone is two fair shares (key skew).
        ("demo_partitions.txt", &["--partitions", &partitions], &[]),
        (
            "demo_partitions.json",
            &["--partitions", &partitions, "--output", "json"],
            &[],
        ),
    ];
    for (name, args, env) in cases {
        let out = plan(args, env);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        check_snapshot(name, &out.stdout);
    }
}

#[test]
fn a_large_fleet_folds_to_its_top_and_bottom_rows() {
    let dir = crate::support::TempDir::new("large-fleet");
    let n = 40;
    let mut cpu: Vec<(String, f64)> = (0..n)
        .map(|i| (format!("{DEMO_DEPLOYMENT}-7d9f-{i:03}"), 0.6 + (i % 7) as f64 * 0.05))
        .collect();
    cpu[17].1 = 2.5;
    cpu[23].1 = 0.05;
    let items: Vec<serde_json::Value> = cpu
        .iter()
        .map(|(p, _)| pod_json(DEMO_NS, DEMO_DEPLOYMENT, &pod(p), DEMO_NOW_UNIX))
        .collect();
    let pods_path = dir.path().join("pods.json");
    std::fs::write(
        &pods_path,
        serde_json::json!({"kind": "List", "apiVersion": "v1", "items": items}).to_string(),
    )
    .unwrap();
    let vm = vm::shared();
    vm.feed("large-fleet", DEMO_DEPLOYMENT, &cpu);
    let cpu_path = dir.path().join("cpu.json");
    std::fs::write(
        &cpu_path,
        vm.query(&pod_rebalancer::victoria::cpu_query(
            "large-fleet",
            Some(DEMO_DEPLOYMENT),
            &[],
            300,
        )),
    )
    .unwrap();
    let args = |all: bool| {
        let mut a = vec![
            "plan",
            "--pods",
            pods_path.to_str().unwrap(),
            "--cpu",
            cpu_path.to_str().unwrap(),
            "--now",
            DEMO_NOW,
        ];
        if all {
            a.push("--all");
        }
        run_bin(&a, &[("DEPLOYMENT_NAME".into(), DEMO_DEPLOYMENT.into())])
    };
    let folded = args(false);
    assert_eq!(folded.code, 0, "{}", folded.stderr);
    let rows = |text: &str| text.lines().filter(|l| l.contains("%  ")).count();
    assert_eq!(
        rows(&folded.stdout),
        20,
        "ten on top and ten below (the coldest is last):\n{}",
        folded.stdout
    );
    assert_contains(&folded.stdout, "… 20 more pods (--all shows every pod)");
    assert!(
        folded.stdout.lines().any(|l| l.starts_with("▲ 017 ")),
        "{}",
        folded.stdout
    );
    assert!(
        folded.stdout.lines().any(|l| l.starts_with("▼ 023 ")),
        "{}",
        folded.stdout
    );
    let all = args(true);
    assert_eq!(rows(&all.stdout), n, "{}", all.stdout);
}

#[test]
fn a_live_plan_reads_like_a_run_changes_nothing_and_saves_a_replayable_snapshot() {
    use crate::cycle::{TOKEN, World, fleet, name};
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85, 1.0, 0.9]);
    let world = World::new(
        "live-plan",
        |mut f| {
            f.page_size = 3;
            f
        },
        &pods,
        &cpu,
    );
    let saved = world.dir.path().join("snapshot");
    let with_memory = [("STATE_CONFIGMAP", crate::support::kube::STATE)];
    let live = run_bin(&["plan", "--save", saved.to_str().unwrap()], &world.env(&with_memory));
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert!(
        world.kube.mutations().is_empty(),
        "a plan sends no mutating request and no Event"
    );
    let verbs: Vec<String> = world
        .kube
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert_eq!(verbs.len(), 5, "the state, the deployment and three pages: {verbs:?}");
    assert_contains(
        &live.stdout,
        "memory: 0 of 3 ineffective actions in a row; breaker closed",
    );
    assert_contains(
        &live.stdout,
        "decision: would evict 2 pods: spread 0.53 > threshold 0.30",
    );
    assert_contains(&live.stdout, &format!("  {} (1.900 cores, highest cpu)", name(1)));
    for file in ["pods.json", "cpu.json", "deployment.json", "state.json"] {
        let text = std::fs::read_to_string(saved.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!text.contains(TOKEN), "{file} holds the token");
    }
    let saved_pods: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("pods.json")).unwrap()).unwrap();
    assert_eq!(
        saved_pods["items"].as_array().unwrap().len(),
        7,
        "all pages in one list"
    );
    // Replayed later from the files, the decision is the same.
    let at = crate::support::kube::rfc3339_of(crate::support::now());
    let p = |f: &str| saved.join(f).display().to_string();
    let replay = run_bin(
        &[
            "plan",
            "--pods",
            &p("pods.json"),
            "--cpu",
            &p("cpu.json"),
            "--deployment",
            &p("deployment.json"),
            "--state",
            &p("state.json"),
            "--now",
            &at,
        ],
        &[],
    );
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let decision = |text: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("decision:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(decision(&replay.stdout), decision(&live.stdout));
}

#[test]
fn a_live_plan_that_fails_reading_says_why_though_its_responses_cannot_all_be_saved() {
    use crate::cycle::{World, fleet};
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85, 1.0, 0.9]);
    let world = World::new(
        "live-plan-cut",
        |mut f| {
            f.page_size = 3;
            // The second page stops halfway: the run fails on it, and a half page
            // cannot be saved as part of a list either.
            let half = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"na"#;
            f.replies.insert("list:continue".into(), Reply::json(200, half));
            f
        },
        &pods,
        &cpu,
    );
    let saved = world.dir.path().join("snapshot");
    let out = run_bin(&["plan", "--save", saved.to_str().unwrap()], &world.env(&[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert_contains(error, "list pods (GET ");
    assert_contains(error, "expected JSON of the documented shape: EOF while parsing");
    assert_contains(&out.stderr, "responses not saved");
    assert!(saved.join("deployment.json").exists(), "what could be saved is");
    assert!(world.kube.mutations().is_empty());
}

#[test]
fn a_live_plan_saves_without_panicking_when_a_page_is_not_a_list() {
    use crate::cycle::{World, fleet};
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
    let world = World::new(
        "live-plan-array",
        |mut f| {
            f.replies.insert("list".into(), Reply::json(200, "[]"));
            f
        },
        &pods,
        &cpu,
    );
    let saved = world.dir.path().join("snapshot");
    let out = run_bin(&["plan", "--save", saved.to_str().unwrap()], &world.env(&[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(&out.stderr, "error: list pods (GET ");
    assert!(saved.join("deployment.json").exists(), "what could be saved is");
}

/// A metrics endpoint that refuses the query: the plan fails, and its answer is saved
/// as received, for the bug report.
#[test]
fn a_live_plan_saves_the_metrics_endpoints_refusal_as_received() {
    use crate::cycle::{World, fleet};
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85]);
    let world = World::new("live-plan-422", |f| f, &pods, &cpu);
    let refusal = crate::support::fixture("vm/error_422_parse.json");
    let body = refusal.clone();
    let vm = Server::http(Arc::new(move |_: &Request| Reply::json(422, body.clone())));
    let saved = world.dir.path().join("snapshot");
    let out = run_bin(
        &["plan", "--save", saved.to_str().unwrap()],
        &world.env(&[("PROMETHEUS_ENDPOINT", &vm.url())]),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(&out.stderr, "query CPU (POST ");
    assert_eq!(
        std::fs::read_to_string(saved.join("cpu.json")).expect("cpu.json saved"),
        refusal,
        "the body as received"
    );
    assert!(saved.join("pods.json").exists() && saved.join("deployment.json").exists());
}

/// The saved list is the list as the run read it: after a 410 restart, the pages of
/// the second listing only; a pod the server listed twice, twice, so that a replay
/// meets what the run met.
#[test]
fn a_live_plan_saves_the_pod_list_as_the_run_read_it() {
    use crate::cycle::{World, fleet, name};
    let (pods, cpu) = fleet(&[0.8, 1.9, 0.79, 0.12, 0.85, 1.0, 0.9]);
    let saved_names = |world: &World| -> Vec<String> {
        let text = std::fs::read_to_string(world.dir.path().join("snapshot/pods.json")).expect("pods.json saved");
        let list: serde_json::Value = serde_json::from_str(&text).expect("a list");
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let save = |world: &World| {
        let saved = world.dir.path().join("snapshot");
        run_bin(&["plan", "--save", saved.to_str().unwrap()], &world.env(&[]))
    };
    let restarted = World::new(
        "live-plan-restart",
        |mut f| {
            f.page_size = 3;
            f.expire_continue = 1;
            f
        },
        &pods,
        &cpu,
    );
    let out = save(&restarted);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(saved_names(&restarted), (0..7).map(name).collect::<Vec<_>>());

    let mut twice = pods.clone();
    twice.push(pods[2].clone());
    let doubled = World::new("live-plan-twice", |f| f, &twice, &cpu);
    let out = save(&doubled);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_contains(&out.stderr, &format!("pod name {} is listed twice", name(2)));
    let names = saved_names(&doubled);
    assert_eq!(names.iter().filter(|n| **n == name(2)).count(), 2, "{names:?}");
}
