//! The Grafana dashboard and the alert rules against the metrics the program exports.
//!
//! `CONTRACT` is the list of metric families of SPEC §8 (issues 12 and 13): every
//! name a panel or a rule queries must be in it, with the right type. Every panel
//! and annotation is then run, with its variables substituted, against the real
//! VictoriaMetrics of the suite: once on metrics written in the contract's shape
//! (so a broken expression fails today), and once on the metrics real runs of the
//! binary pushed (the binary against the loopback Kubernetes API). The rules file
//! is read by kubectl, like the other manifests (no YAML crate in the tests).

use crate::cycle::{DEPLOYMENT, fleet};
use crate::manifests::{rule_groups, rules_file};
use crate::support::kube::Fake;
use crate::support::server::{Handler, Pki, Reply, Request, Server};
use crate::support::{TempDir, env_with, fixture, now, root, run_bin, vm};
use pod_rebalancer::http::encode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The metric families of SPEC §8 as issues 12 and 13 make them: name, type, and the
/// label beside `namespace` and `deployment` with its values (every sample carries
/// `namespace="NS",deployment="NAME"` first).
const CONTRACT: &[(&str, &str, &str, &[&str])] = &[
    ("rebalancer_build_info", "gauge", "version", &["0.1.0"]),
    (
        "rebalancer_executions_total",
        "counter",
        "status",
        &["success", "error"],
    ),
    (
        "rebalancer_errors_total",
        "counter",
        "stage",
        &["kubernetes", "metrics", "state", "act", "report"],
    ),
    ("rebalancer_pods_analyzed_total", "counter", "", &[]),
    (
        "rebalancer_pods_deleted_total",
        "counter",
        "type",
        &["highest_cpu", "lowest_cpu"],
    ),
    (
        "rebalancer_removals_refused_total",
        "counter",
        "reason",
        &["disruption_budget", "gone", "replaced"],
    ),
    ("rebalancer_pods_matched", "gauge", "", &[]),
    ("rebalancer_execution_duration_seconds", "gauge", "", &[]),
    ("rebalancer_cpu_variance_current", "gauge", "", &[]),
    ("rebalancer_cpu_variance_threshold", "gauge", "", &[]),
    ("rebalancer_cpu_usage_mean", "gauge", "", &[]),
    ("rebalancer_cpu_usage_stddev", "gauge", "", &[]),
    ("rebalancer_last_run_timestamp_seconds", "gauge", "", &[]),
    ("rebalancer_last_success_timestamp_seconds", "gauge", "", &[]),
    ("rebalancer_cycle_outcome", "gauge", "outcome", OUTCOMES),
    ("rebalancer_last_action_effect_ratio", "gauge", "", &[]),
    ("rebalancer_ineffective_streak", "gauge", "", &[]),
    ("rebalancer_breaker_open_until_timestamp_seconds", "gauge", "", &[]),
    ("rebalancer_last_action_hot_spot_moved", "gauge", "", &[]),
    ("rebalancer_last_failure_timestamp_seconds", "gauge", "", &[]),
    ("rebalancer_config_info", "gauge", "", &[]),
    // SPEC §8, read by the alert rules: the breaker's allowance of
    // PodRebalancerExcessiveDeletions, a fleet's liveness for
    // PodRebalancerNotRunning (namespace only, no deployment), and the number
    // PodRebalancerImbalanceUnfixable quotes.
    ("rebalancer_max_ineffective_actions", "gauge", "", &[]),
    ("rebalancer_targets", "gauge", "outcome", OUTCOMES),
    ("rebalancer_best_possible_spread", "gauge", "", &[]),
    ("rebalancer_partition_fit_r2", "gauge", "", &[]),
];

const OUTCOMES: &[&str] = &[
    "acted",
    "dry_run",
    "balanced",
    "stabilizing",
    "too_few_pods",
    "idle",
    "min_pods",
    "unfixable",
    "ineffective",
    "paused",
    "deferred",
    "error",
];

/// The type of a family of the contract.
fn kind_of(name: &str) -> Option<&'static str> {
    CONTRACT.iter().find(|(n, ..)| *n == name).map(|(_, kind, ..)| *kind)
}

fn exported() -> BTreeSet<String> {
    CONTRACT.iter().map(|(name, ..)| name.to_string()).collect()
}

/// The `rebalancer_…` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rebalancer_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `pod_rebalancer:…` is a recording rule of ours, not a metric.
        if !rest[..i].ends_with("pod_") {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The metrics these queries name, or what is wrong with them: a query that names no
/// metric of ours, or a name that is not `exported`.
fn queried<'a>(
    exprs: impl IntoIterator<Item = &'a str>,
    exported: &BTreeSet<String>,
) -> Result<BTreeSet<String>, Vec<String>> {
    let mut queried = BTreeSet::new();
    let mut wrong = Vec::new();
    for expr in exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            wrong.push(format!("{expr} queries no metric of ours"));
        }
        for name in names {
            if !exported.contains(&name) {
                wrong.push(format!("{expr}: {name} is not exported"));
            }
            queried.insert(name);
        }
    }
    if wrong.is_empty() { Ok(queried) } else { Err(wrong) }
}

/// The `expr` of every alerting rule of a rules file's text (the recording rules
/// name the rebalancers expected, not a metric).
fn rule_exprs(rules: &str) -> Vec<String> {
    let groups = rule_groups(rules);
    let mut exprs = Vec::new();
    for group in groups.as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            if rule["record"].is_string() {
                continue;
            }
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a rule without expr: {rule}"));
            exprs.push(expr.to_string());
        }
    }
    exprs
}

fn dashboard() -> Value {
    let path = root().join("manifests/dashboards/pod-rebalancer.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON")
}

/// One query of the dashboard: a panel's target or an annotation.
struct Query {
    /// The panel's title, or `annotation: NAME`.
    title: String,
    panel: Value,
    expr: String,
}

fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            out.push(Query {
                title: panel["title"].as_str().expect("title").to_owned(),
                panel: panel.clone(),
                expr: target["expr"].as_str().expect("expr").to_owned(),
            });
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().expect("annotations") {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push(Query {
                title: format!("annotation: {}", annotation["name"]),
                panel: annotation.clone(),
                expr: expr.to_owned(),
            });
        }
    }
    out
}

/// The per-pod CPU panel's expression: the program's own query, for the dashboard's
/// variables and the default METRICS_TIME_WINDOW. The one place the test takes it
/// from.
fn program_cpu_query() -> String {
    pod_rebalancer::victoria::cpu_query("$namespace", Some("$deployment"), &[], 300)
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let exported = exported();
    let ours = queries
        .iter()
        .map(|q| q.expr.as_str())
        .filter(|e| *e != program_cpu_query());
    let queried =
        queried(ours, &exported).unwrap_or_else(|wrong| panic!("{} (we export {exported:?})", wrong.join("\n")));
    for needed in [
        "rebalancer_cpu_variance_current",
        "rebalancer_cpu_variance_threshold",
        "rebalancer_cpu_usage_mean",
        "rebalancer_cpu_usage_stddev",
        "rebalancer_pods_deleted_total",
        "rebalancer_removals_refused_total",
        "rebalancer_cycle_outcome",
        "rebalancer_execution_duration_seconds",
        "rebalancer_ineffective_streak",
        "rebalancer_breaker_open_until_timestamp_seconds",
        "rebalancer_last_action_effect_ratio",
        "rebalancer_build_info",
    ] {
        assert!(queried.contains(needed), "the dashboard does not show {needed}");
    }
}

#[test]
fn every_panel_is_filtered_by_the_datasource_namespace_and_deployment_variables() {
    let dashboard = dashboard();
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| (v["name"].as_str().expect("name"), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    assert_eq!(
        variables["namespace"]["definition"],
        "label_values(rebalancer_last_run_timestamp_seconds, namespace)"
    );
    assert_eq!(
        variables["deployment"]["definition"],
        "label_values(rebalancer_last_run_timestamp_seconds{namespace=\"$namespace\"}, deployment)"
    );
    for name in ["namespace", "deployment"] {
        assert_eq!(variables[name]["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(variables[name]["multi"], false, "{name}: the queries match with =");
    }

    let mut wrong = Vec::new();
    for query in queries(&dashboard) {
        if query.panel["datasource"]["uid"] != "${datasource}" {
            wrong.push(format!("{}: not on ${{datasource}}", query.title));
        }
        // Every selector of a metric of ours names the target by both variables.
        let mut rest = query.expr.as_str();
        while let Some(i) = rest.find("rebalancer_") {
            let selector = &rest[i..rest[i..].find(['}', ')', ' ']).map_or(rest.len(), |e| i + e)];
            if !selector.contains("{namespace=\"$namespace\",deployment=\"$deployment\"") {
                wrong.push(format!("{}: {selector} is not filtered", query.title));
            }
            rest = &rest[i + "rebalancer_".len()..];
        }
        if query.expr.contains("container_cpu_usage_seconds_total")
            && !query
                .expr
                .contains("{namespace=\"$namespace\",container=\"$deployment\"")
        {
            wrong.push(format!("{}: the CPU query is not filtered", query.title));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_per_pod_cpu_panel_shows_the_programs_own_query_and_the_threshold_band() {
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let cpu: Vec<&Query> = queries
        .iter()
        .filter(|q| q.expr.contains("container_cpu_usage_seconds_total"))
        .collect();
    assert_eq!(cpu.len(), 1, "one panel queries the pods' CPU");
    assert_eq!(
        cpu[0].expr,
        program_cpu_query(),
        "the panel must show the signal the decision is made on: src/victoria.rs cpu_query"
    );
    let panel_exprs: Vec<&str> = queries
        .iter()
        .filter(|q| q.title == cpu[0].title)
        .map(|q| q.expr.as_str())
        .collect();
    let mean = "rebalancer_cpu_usage_mean{namespace=\"$namespace\",deployment=\"$deployment\"}";
    let threshold = "rebalancer_cpu_variance_threshold{namespace=\"$namespace\",deployment=\"$deployment\"}";
    for band in [
        format!("{mean} * (1 + {threshold})"),
        format!("clamp_min({mean} * (1 - {threshold}), 0)"),
    ] {
        assert!(
            panel_exprs.contains(&band.as_str()),
            "no band {band} in {panel_exprs:?}"
        );
    }
    assert_eq!(cpu[0].panel["fieldConfig"]["defaults"]["unit"], "suffix: cores");
}

#[test]
fn panels_keep_gauges_and_counters_apart_in_their_units() {
    let dashboard = dashboard();
    let mut wrong = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        let exprs: Vec<&str> = panel["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .map(|t| t["expr"].as_str().expect("expr"))
            .collect();
        let kinds: BTreeSet<&str> = exprs
            .iter()
            .flat_map(|e| metric_names(e))
            .filter_map(|n| kind_of(&n))
            .collect();
        if kinds.len() > 1 {
            wrong.push(format!("{title}: gauges and counters in one panel"));
        }
        // A counter is shown as whole increases over exactly one bar's interval.
        for expr in &exprs {
            let counters = metric_names(expr).iter().any(|n| kind_of(n) == Some("counter"));
            if counters && !(expr.starts_with("round(") && expr.ends_with("[$__interval])))")) {
                wrong.push(format!("{title}: {expr} is not round(… increase(…[$__interval]))"));
            }
        }
        if kinds.contains("counter") && panel["interval"].as_str().is_none_or(|i| i != "1h") {
            wrong.push(format!("{title}: a counter panel's bars are at least an hour"));
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        let cores = exprs
            .iter()
            .any(|e| e.contains("rebalancer_cpu_usage_") || e.contains("container_cpu_usage_seconds_total"));
        if cores && unit != "suffix: cores" {
            wrong.push(format!("{title}: cores, but the unit is {unit:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_outcome_is_a_state_timeline_that_names_every_outcome() {
    let dashboard = dashboard();
    let panel = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("rebalancer_cycle_outcome"))
        })
        .expect("an outcome panel");
    assert_eq!(panel["type"], "state-timeline");
    assert_eq!(outcome_codes(panel).into_values().collect::<Vec<_>>(), OUTCOMES);
}

/// The outcome panel's value mappings (number → outcome), after checking that its
/// query gives each outcome the number its mapping names.
fn outcome_codes(panel: &Value) -> BTreeMap<u32, String> {
    let mut codes = BTreeMap::new();
    for mapping in panel["fieldConfig"]["defaults"]["mappings"]
        .as_array()
        .expect("mappings")
    {
        for (value, shown) in mapping["options"].as_object().expect("options") {
            codes.insert(
                value.parse().expect("a number"),
                shown["text"].as_str().expect("text").to_owned(),
            );
        }
    }
    let expr = panel["targets"][0]["expr"].as_str().expect("expr");
    for (code, outcome) in &codes {
        assert!(
            expr.contains(&format!("outcome=\"{outcome}\"}}) * {code}")),
            "{outcome} is not {code} in {expr}"
        );
    }
    codes
}

#[test]
fn removals_are_annotations() {
    let dashboard = dashboard();
    let annotations = dashboard["annotations"]["list"].as_array().expect("annotations");
    assert!(
        annotations.iter().any(|a| a["expr"]
            .as_str()
            .is_some_and(|e| e.contains("rebalancer_pods_deleted_total"))),
        "{annotations:?}"
    );
}

#[test]
fn every_alert_rule_names_an_exported_metric() {
    let exprs = rule_exprs(&rules_file());
    assert!(exprs.len() >= 8, "the seed's five alerts and three more: {exprs:?}");
    let exported = exported();
    let queried = queried(exprs.iter().map(String::as_str), &exported)
        .unwrap_or_else(|wrong| panic!("{} (we export {exported:?})", wrong.join("\n")));
    for needed in [
        "rebalancer_cycle_outcome",
        "rebalancer_pods_matched",
        "rebalancer_pods_deleted_total",
        "rebalancer_removals_refused_total",
        "rebalancer_errors_total",
        "rebalancer_last_run_timestamp_seconds",
        "rebalancer_last_action_hot_spot_moved",
    ] {
        assert!(queried.contains(needed), "no alert watches {needed}");
    }
}

#[test]
fn a_misspelled_metric_in_a_rule_is_caught() {
    let rules = rules_file();
    let misspelled = rules.replacen("rebalancer_pods_matched[10m]", "rebalancer_pod_matched[10m]", 1);
    assert_ne!(
        misspelled, rules,
        "the rules file no longer has the expression this test misspells"
    );
    let wrong = queried(rule_exprs(&misspelled).iter().map(String::as_str), &exported())
        .expect_err("a misspelled metric passes");
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].ends_with(": rebalancer_pod_matched is not exported"),
        "{wrong:?}"
    );
}

#[test]
fn the_name_reader_finds_every_metric() {
    assert_eq!(
        metric_names("rebalancer_a + rate(rebalancer_b_total[5m]) unless pod_rebalancer:expected"),
        ["rebalancer_a", "rebalancer_b_total"]
    );
    assert!(metric_names("up").is_empty());
}

#[test]
fn the_families_the_binary_writes_have_the_contracts_types() {
    // A run against a closed port fails after writing the metrics of a failed run.
    let dir = TempDir::new("contract-types");
    let file = dir.path().join("metrics.prom");
    let env = [
        ("KUBE_API_URL", "http://127.0.0.1:9".to_owned()),
        ("KUBE_SERVICE_ACCOUNT_DIR", dir.path().display().to_string()),
        ("DEPLOYMENT_NAME", DEPLOYMENT.to_owned()),
        ("METRICS_FILE", file.display().to_string()),
    ];
    let out = run_bin(&[], &env_with(env, &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).expect("metrics file");
    let families = families(&text);
    assert!(families.len() >= 8, "{families:?}");
    for (name, kind) in &families {
        assert_eq!(
            kind_of(name),
            Some(kind.as_str()),
            "{name} is a {kind}, not in the contract as such"
        );
    }
}

/// `# TYPE` lines of a metrics text: name → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------
// Every panel against the real VictoriaMetrics.

/// What the runs behind the data did, so the answers can be checked.
struct Runs {
    namespace: String,
    /// The pods of the fleet, whose CPU the per-pod panel must show.
    pods: Vec<String>,
    /// The outcome of each run, in order.
    outcomes: Vec<&'static str>,
    /// Unix seconds before the first run and after the last.
    start: i64,
    end: i64,
}

/// A range query as Grafana sends it, over the runs at a one-second step; the
/// `matrix` of the answer, after checking that the server accepted the query.
fn query_range(vm: &vm::Vm, promql: &str, runs: &Runs) -> Vec<Value> {
    let target = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=1s",
        encode(promql),
        runs.start,
        runs.end
    );
    let (status, body) = vm.get(&target).expect("query_range answer");
    assert_eq!(status, 200, "{promql}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"));
    assert_eq!(answer["status"], "success", "{promql}: {body}");
    assert_eq!(answer["data"]["resultType"], "matrix", "{promql}: {body}");
    answer["data"]["result"].as_array().expect("result").clone()
}

/// The dashboard's variables for this target, as Grafana substitutes them.
fn substitute(expr: &str, runs: &Runs) -> String {
    expr.replace("$namespace", &runs.namespace)
        .replace("$deployment", DEPLOYMENT)
        .replace("$__interval", "1h")
}

/// Runs every query of the dashboard (and its variables) against `vm` and checks that
/// each answers, non-empty and of the right shape, for the target of `runs`.
fn check_every_panel(vm: &vm::Vm, runs: &Runs) {
    vm.get("/internal/force_flush").expect("force flush");
    let dashboard = dashboard();
    let mut wrong = Vec::new();

    // The variables offer this target.
    for (label, selector, want) in [
        (
            "namespace",
            "rebalancer_last_run_timestamp_seconds".to_owned(),
            runs.namespace.as_str(),
        ),
        (
            "deployment",
            format!(
                "rebalancer_last_run_timestamp_seconds{{namespace=\"{}\"}}",
                runs.namespace
            ),
            DEPLOYMENT,
        ),
    ] {
        let target = format!(
            "/api/v1/label/{label}/values?match[]={}&start={}&end={}",
            encode(&selector),
            runs.start,
            runs.end
        );
        let body = vm.get(&target).expect("label values").1;
        let values: Value = serde_json::from_str(&body).expect("JSON");
        if !values["data"].as_array().is_some_and(|v| v.iter().any(|v| v == want)) {
            wrong.push(format!("variable {label} does not offer {want}: {body}"));
        }
    }

    for query in queries(&dashboard) {
        let promql = substitute(&query.expr, runs);
        let series = query_range(vm, &promql, runs);
        let points: Vec<(&Value, f64)> = series
            .iter()
            .flat_map(|s| {
                s["values"].as_array().expect("values").iter().map(move |p| {
                    (
                        &s["metric"],
                        p[1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
                    )
                })
            })
            .collect();
        let title = &query.title;
        if points.is_empty() {
            wrong.push(format!("{title}: no answer to {promql}"));
            continue;
        }
        if let Some((_, v)) = points.iter().find(|(_, v)| !v.is_finite()) {
            wrong.push(format!("{title}: {v} in the answer to {promql}"));
        }
        let is_counter = metric_names(&query.expr).iter().any(|n| kind_of(n) == Some("counter"));
        if is_counter
            && !query.title.starts_with("annotation")
            && let Some((_, v)) = points.iter().find(|(_, v)| *v < 0.0 || v.fract() != 0.0)
        {
            wrong.push(format!("{title}: {v} is not a whole count in the answer to {promql}"));
        }
        if query.title.starts_with("annotation") && points.iter().all(|(_, v)| *v <= 0.0) {
            wrong.push(format!("{title}: no removal marked by {promql}"));
        }
        if query.panel["type"] == "state-timeline" {
            let codes = outcome_codes(&query.panel);
            let shown: BTreeSet<String> = points
                .iter()
                .map(|(_, v)| {
                    codes
                        .get(&(*v as u32))
                        .cloned()
                        .unwrap_or_else(|| format!("unmapped {v}"))
                })
                .collect();
            let ran: BTreeSet<String> = runs.outcomes.iter().map(|o| o.to_string()).collect();
            if shown != ran {
                wrong.push(format!("{title}: shows {shown:?}, the runs ended {ran:?}"));
            }
        }
        if query.expr == program_cpu_query() {
            let pods: BTreeSet<&str> = series.iter().filter_map(|s| s["metric"]["pod"].as_str()).collect();
            for pod in &runs.pods {
                if !pods.contains(pod.as_str()) {
                    wrong.push(format!("{title}: no series for pod {pod} (got {pods:?})"));
                }
            }
        }
        if query.expr.contains("rebalancer_build_info")
            && !points.iter().all(|(m, _)| m["version"] == env!("CARGO_PKG_VERSION"))
        {
            wrong.push(format!("{title}: not version {}", env!("CARGO_PKG_VERSION")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The metrics of one run in the contract's shape, at `at_ms`.
fn contract_run(namespace: &str, at_ms: i64, run: usize, outcome: &str) -> String {
    let target = format!("namespace=\"{namespace}\",deployment=\"{DEPLOYMENT}\"");
    let n = run as f64;
    let value = |name: &str, label: &str, v: &str| -> f64 {
        match (name, label, v) {
            ("rebalancer_build_info", ..) => 1.0,
            ("rebalancer_cycle_outcome", _, o) => f64::from(u8::from(o == outcome)),
            // the fourth run fails, the second removes two pods
            ("rebalancer_executions_total", _, "success") => n - f64::from(u8::from(run >= 4)),
            ("rebalancer_executions_total", _, _) | ("rebalancer_errors_total", _, "metrics") => {
                f64::from(u8::from(run >= 4))
            }
            ("rebalancer_pods_deleted_total", ..) => f64::from(u8::from(run >= 2)),
            ("rebalancer_removals_refused_total", _, "disruption_budget") => 1.0,
            ("rebalancer_pods_analyzed_total", ..) => 5.0 * n,
            ("rebalancer_pods_matched", ..) => 5.0,
            ("rebalancer_execution_duration_seconds", ..) => 0.05,
            ("rebalancer_cpu_variance_current", ..) => 0.54,
            ("rebalancer_cpu_variance_threshold", ..) => 0.3,
            ("rebalancer_cpu_usage_mean", ..) => 1.0,
            ("rebalancer_cpu_usage_stddev", ..) => 0.54,
            ("rebalancer_last_run_timestamp_seconds", ..) | ("rebalancer_last_success_timestamp_seconds", ..) => {
                at_ms as f64 / 1000.0
            }
            ("rebalancer_last_action_effect_ratio", ..) => 1.0,
            ("rebalancer_ineffective_streak", ..) => 1.0,
            ("rebalancer_breaker_open_until_timestamp_seconds", ..) => at_ms as f64 / 1000.0 + 3600.0,
            _ => 0.0,
        }
    };
    let mut text = String::new();
    for (name, _, label, values) in CONTRACT {
        // A fleet's count of targets is about the run: namespace only.
        let target = if *name == "rebalancer_targets" {
            format!("namespace=\"{namespace}\"")
        } else {
            target.clone()
        };
        if values.is_empty() {
            text += &format!("{name}{{{target}}} {} {at_ms}\n", value(name, "", ""));
        }
        for v in *values {
            text += &format!("{name}{{{target},{label}=\"{v}\"}} {} {at_ms}\n", value(name, label, v));
        }
    }
    text
}

#[test]
fn every_panel_answers_on_metrics_written_in_the_contracts_shape() {
    let vm = vm::shared();
    let namespace = "dashboard-contract";
    let (_, cpu) = fleet(&[1.9, 1.0, 1.0, 0.9, 0.2]);
    vm.feed(namespace, DEPLOYMENT, &cpu);
    let outcomes = vec!["dry_run", "acted", "ineffective", "error", "ineffective"];
    let first_ms = (now() - 40) * 1000;
    for (run, outcome) in outcomes.iter().enumerate() {
        vm.import(&contract_run(
            namespace,
            first_ms + run as i64 * 5_000,
            run + 1,
            outcome,
        ));
    }
    let runs = Runs {
        namespace: namespace.to_owned(),
        pods: cpu.iter().map(|(pod, _)| pod.clone()).collect(),
        outcomes,
        start: first_ms / 1000 - 5,
        end: first_ms / 1000 + 30,
    };
    check_every_panel(vm, &runs);
}

/// The fake API (with its state ConfigMap), whose evictions a PodDisruptionBudget
/// refuses while `refuse` is set, and which otherwise accepts them without the pods
/// ever terminating: each run sees the same fleet, so an action's evaluation finds the
/// same spread and the breaker opens.
fn kube_with_state(fake: Fake, refuse: Arc<AtomicBool>) -> Handler {
    let inner = fake.into_handler();
    Arc::new(move |req: &Request| {
        if req.method == "POST" && req.path().ends_with("/eviction") {
            return if refuse.load(Ordering::SeqCst) {
                Reply::json(429, fixture("k8s/constructed/status_429_eviction_pdb.json"))
            } else {
                Reply::json(201, fixture("k8s/constructed/status_201_eviction_success.json"))
            };
        }
        inner(req)
    })
}

/// One run of the binary in `every_panel_answers_on_the_metrics_real_runs_pushed`.
struct Run {
    /// Settings beside the common ones.
    extra: &'static [(&'static str, &'static str)],
    /// Evictions are refused by a PodDisruptionBudget.
    refused: bool,
    code: i32,
    outcome: &'static str,
}

#[test]
fn every_panel_answers_on_the_metrics_real_runs_pushed() {
    let vm = vm::shared();
    let namespace = "dashboard-runs";
    let (pods, cpu) = fleet(&[1.9, 1.0, 1.0, 0.9, 0.2]);
    vm.feed(namespace, DEPLOYMENT, &cpu);
    let refuse = Arc::new(AtomicBool::new(false));
    let pki = Pki::new();
    let kube = Server::https(
        &pki,
        kube_with_state(Fake::new(namespace, DEPLOYMENT, &pods, now()), refuse.clone()),
    );
    let dir = TempDir::new(namespace);
    std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).expect("ca.crt");
    let file = dir.path().join("metrics.prom");
    let env = env_with(
        [
            ("KUBE_API_URL", kube.url()),
            ("KUBE_SERVICE_ACCOUNT_DIR", dir.path().display().to_string()),
            ("KUBE_NAMESPACE", namespace.to_owned()),
            ("DEPLOYMENT_NAME", DEPLOYMENT.to_owned()),
            ("KUBE_LABEL_SELECTOR", "app=consumer".to_owned()),
            ("PROMETHEUS_ENDPOINT", vm.url()),
            ("METRICS_PUSH_URL", format!("{}/api/v1/import/prometheus", vm.url())),
            ("METRICS_FILE", file.display().to_string()),
            ("STATE_CONFIGMAP", "pod-rebalancer-state".to_owned()),
            // The same numbers after the removal: the first evaluation opens the breaker.
            ("MAX_INEFFECTIVE_ACTIONS", "1".to_owned()),
        ],
        &[],
    );
    let start = now() - 2;
    let plan = [
        Run {
            extra: &[("DRY_RUN", "true")],
            refused: true,
            code: 0,
            outcome: "dry_run",
        },
        Run {
            extra: &[],
            refused: false,
            code: 0,
            outcome: "acted",
        },
        Run {
            extra: &[],
            refused: false,
            code: 0,
            outcome: "ineffective",
        },
        Run {
            extra: &[("PROMETHEUS_ENDPOINT", "http://127.0.0.1:9")],
            refused: false,
            code: 1,
            outcome: "error",
        },
        Run {
            extra: &[],
            refused: false,
            code: 0,
            outcome: "ineffective",
        },
    ];
    let mut texts = Vec::new();
    for run in &plan {
        refuse.store(run.refused, Ordering::SeqCst);
        let out = run_bin(&[], &env_with(env.clone(), run.extra));
        let text = std::fs::read_to_string(&file).expect("metrics file");
        texts.push((out, text, run.code, run.outcome));
        // One run per second at least, so that a one-second step sees every run.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }

    // First what issues 12 and 13 add: every family, every sample naming its target.
    // These single-mode runs have no partition signal and are no fleet: the
    // families only those write are looked for in the runs that have them.
    let mut missing: BTreeSet<String> = exported();
    for only_elsewhere in [
        "rebalancer_best_possible_spread",
        "rebalancer_partition_fit_r2",
        "rebalancer_targets",
    ] {
        missing.remove(only_elsewhere);
    }
    let target = format!("{{namespace=\"{namespace}\",deployment=\"{DEPLOYMENT}\"");
    let mut unlabelled = BTreeSet::new();
    for (_, text, ..) in &texts {
        for (name, kind) in families(text) {
            assert_eq!(kind_of(&name), Some(kind.as_str()), "{name} is a {kind}");
            missing.remove(&name);
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let series = line.split(' ').next().unwrap_or_default();
            if !series.contains(&target) {
                unlabelled.insert(series.split('{').next().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(
        missing.is_empty() && unlabelled.is_empty(),
        "the binary does not write the metrics of issues 12 and 13 yet: families missing {missing:?}; samples without {target}…}}: {unlabelled:?}"
    );
    for (out, text, code, outcome) in &texts {
        assert_eq!(out.code, *code, "{}", out.stderr);
        assert!(
            text.contains(&format!("rebalancer_cycle_outcome{target},outcome=\"{outcome}\"}} 1")),
            "not {outcome}:\n{text}\n{}",
            out.stderr
        );
    }

    let runs = Runs {
        namespace: namespace.to_owned(),
        pods: cpu.iter().map(|(pod, _)| pod.clone()).collect(),
        outcomes: plan.iter().map(|run| run.outcome).collect(),
        start,
        end: now() + 1,
    };
    check_every_panel(vm, &runs);
}
