//! The Grafana dashboard and the alert rules against the metrics the program exports.
//!
//! `CONTRACT` is the list of metric families of SPEC §8 (issues 12 and 13): every
//! name a panel or a rule queries must be in it, with the right type. Every panel
//! and annotation is then run, with its variables resolved as Grafana resolves them,
//! against the real VictoriaMetrics of the suite: once on metrics written in the
//! contract's shape without a `cluster` label (so a broken expression fails today),
//! and once on the metrics real runs of the binary pushed (the binary against the
//! loopback Kubernetes API: dry, live, failed, without its state, with a partition
//! signal, and a fleet run over two Deployments), with the `cluster` label of
//! METRICS_LABELS and another cluster's rebalancer of the same names in the same
//! store. The log query of the last actions is read as Loki reads it, over the lines
//! those runs logged. The rules file is read by kubectl, like the other manifests (no
//! YAML crate in the tests).

use crate::cycle::{DEPLOYMENT, fleet};
use crate::manifests::{rule_groups, rules_file};
use crate::support::kube::{Fake, HASH, deployment_json, pod, pod_json, uid_of};
use crate::support::server::{Handler, Pki, Reply, Request, Server};
use crate::support::{TempDir, env_with, fixture, now, root, run_bin, vm};
use pod_rebalancer::http::encode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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

/// Every outcome label, written out here rather than taken from the program: the
/// dashboard's timeline and `rebalancer_targets` (tests/it/fleet.rs) must name each.
pub(crate) const OUTCOMES: &[&str] = &[
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

/// Every selector of a per-target query names the target by these three variables,
/// in this order; a query about a fleet run (`rebalancer_targets`) by the first two.
const TARGET: &str = "{cluster=\"$cluster\",namespace=\"$namespace\",deployment=\"$deployment\"";
const FLEET_RUN: &str = "{cluster=\"$cluster\",namespace=\"$namespace\"}";
/// What every aggregation of a per-target query keeps first, so that two clusters'
/// (or two targets') series never add up: the alert rules' keys.
const BY: &str = "cluster, namespace, deployment";

/// A gauge of the target as the panels read it: the duplicates two scrapes of one
/// series make are one.
fn gauge(name: &str) -> String {
    format!("max by ({BY}) ({name}{TARGET}}})")
}

/// The query language of a dashboard query, by its data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    /// `${datasource}`: VictoriaMetrics or Prometheus.
    PromQL,
    /// `${loki}`: the Jobs' logs.
    LogQL,
}

/// One query of the dashboard: a panel's target or an annotation.
struct Query {
    /// The panel's title, or `annotation: NAME`.
    title: String,
    panel: Value,
    expr: String,
    lang: Lang,
}

fn lang_of(datasource: &Value, what: &str) -> Lang {
    match (datasource["type"].as_str(), datasource["uid"].as_str()) {
        (Some("prometheus"), Some("${datasource}")) => Lang::PromQL,
        (Some("loki"), Some("${loki}")) => Lang::LogQL,
        _ => panic!("{what}: neither on ${{datasource}} nor on ${{loki}}: {datasource}"),
    }
}

fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title").to_owned();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let lang = lang_of(&panel["datasource"], &title);
        for target in targets {
            assert_eq!(
                lang_of(&target["datasource"], &title),
                lang,
                "{title}: one data source per panel"
            );
            out.push(Query {
                title: title.clone(),
                panel: panel.clone(),
                expr: target["expr"].as_str().expect("expr").to_owned(),
                lang,
            });
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().expect("annotations") {
        if let Some(expr) = annotation["expr"].as_str() {
            let title = format!("annotation: {}", annotation["name"]);
            out.push(Query {
                lang: lang_of(&annotation["datasource"], &title),
                title,
                panel: annotation.clone(),
                expr: expr.to_owned(),
            });
        }
    }
    out
}

fn promql(dashboard: &Value) -> Vec<Query> {
    queries(dashboard)
        .into_iter()
        .filter(|q| q.lang == Lang::PromQL)
        .collect()
}

/// The dashboard's variables by name.
fn variables(dashboard: &Value) -> BTreeMap<String, Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| (v["name"].as_str().expect("name").to_owned(), v.clone()))
        .collect()
}

/// The per-pod CPU panel's expression: the program's own query, with the dashboard's
/// variables for the namespace, the container and the window of
/// `rebalancer_config_info`, and the cluster as `QUERY_MATCHERS`. The window is a
/// number to the program: rendered at one no setting has, then replaced by the
/// variable. The one place the test takes the query from.
fn program_cpu_query() -> String {
    const MARK: u64 = 987_654_321;
    let matchers = [("cluster".to_owned(), "$cluster".to_owned())];
    let query = pod_rebalancer::victoria::cpu_query("$namespace", Some("$container"), &matchers, MARK);
    assert_eq!(
        query.matches(&MARK.to_string()).count(),
        4,
        "the window is in three ranges and one division: {query}"
    );
    query.replace(&MARK.to_string(), "${window}")
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let dashboard = dashboard();
    let queries = promql(&dashboard);
    let exported = exported();
    let ours = queries
        .iter()
        .map(|q| q.expr.as_str())
        .filter(|e| *e != program_cpu_query());
    let queried =
        queried(ours, &exported).unwrap_or_else(|wrong| panic!("{} (we export {exported:?})", wrong.join("\n")));
    // Every family but the count of pods analysed, which says nothing a panel needs.
    for name in exported.iter().filter(|n| *n != "rebalancer_pods_analyzed_total") {
        assert!(queried.contains(name), "the dashboard does not show {name}");
    }
}

/// The label lists of the `by (…)`, `on (…)`, `ignoring (…)` and `without (…)`
/// clauses of an expression.
fn groupings(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for keyword in ["by", "on", "ignoring", "without"] {
        let pattern = format!("{keyword} (");
        let mut rest = expr;
        while let Some(i) = rest.find(&pattern) {
            let boundary = rest[..i]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let tail = &rest[i + pattern.len()..];
            let list = &tail[..tail.find(')').expect("a closed label list")];
            if boundary {
                out.push((keyword.to_owned(), list.to_owned()));
            }
            rest = tail;
        }
    }
    out
}

#[test]
fn every_query_is_filtered_by_the_cluster_namespace_and_deployment_variables() {
    let dashboard = dashboard();
    let variables = variables(&dashboard);
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    assert_eq!(variables["loki"]["type"], "datasource");
    assert_eq!(variables["loki"]["query"], "loki");
    let config = "rebalancer_config_info{cluster=\"$cluster\",namespace=\"$namespace\",deployment=\"$deployment\"}";
    // In the order Grafana resolves them: each names only those before it.
    let chain = [
        ("namespace", "label_values(rebalancer_last_run_timestamp_seconds, namespace)".to_owned()),
        (
            "cluster",
            "label_values(rebalancer_last_run_timestamp_seconds{namespace=\"$namespace\"}, cluster)".to_owned(),
        ),
        (
            "deployment",
            "label_values(rebalancer_last_run_timestamp_seconds{cluster=\"$cluster\",namespace=\"$namespace\"}, deployment)"
                .to_owned(),
        ),
        ("container", format!("label_values({config}, container)")),
        ("window", format!("label_values({config}, window)")),
    ];
    let names: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        chain.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "the query variables, in order"
    );
    for (name, definition) in &chain {
        let v = &variables[*name];
        assert_eq!(v["definition"], definition.as_str(), "{name}");
        assert_eq!(v["query"]["query"], definition.as_str(), "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["multi"], false, "{name}: the queries match with =");
        assert_eq!(v["includeAll"], false, "{name}: the queries match with =");
    }
    // The binary writes window="300s"; the query wants the seconds alone.
    assert_eq!(variables["window"]["regex"], "/^(\\d+)s$/");

    let mut wrong = Vec::new();
    for query in queries(&dashboard) {
        let title = &query.title;
        if query.lang == Lang::LogQL {
            for label in ["cluster=\"$cluster\"", "namespace=\"$namespace\""] {
                if !query.expr.starts_with('{') || !query.expr[..query.expr.find('}').unwrap_or(0)].contains(label) {
                    wrong.push(format!("{title}: the stream selector lacks {label}"));
                }
            }
            if !query.expr.contains("deployment=\"$deployment\"") {
                wrong.push(format!("{title}: the lines are not those of $deployment"));
            }
            continue;
        }
        if query.expr == program_cpu_query() {
            continue;
        }
        // Every selector of a metric of ours names the target by the variables.
        let fleet_run = metric_names(&query.expr).iter().all(|n| n == "rebalancer_targets");
        let mut rest = query.expr.as_str();
        while let Some(i) = rest.find("rebalancer_") {
            let selector = &rest[i..rest[i..].find(['}', ')', ' ']).map_or(rest.len(), |e| i + e + 1)];
            let (name, labels) = selector.split_at(selector.find('{').unwrap_or(selector.len()));
            let good = if name == "rebalancer_targets" {
                labels == FLEET_RUN
            } else {
                labels.starts_with(TARGET)
            };
            if !good {
                wrong.push(format!("{title}: {selector} is not filtered"));
            }
            rest = &rest[i + "rebalancer_".len()..];
        }
        let key = if fleet_run { "cluster, namespace" } else { BY };
        for (keyword, list) in groupings(&query.expr) {
            let ok = keyword != "without"
                && (list == key || list.starts_with(&format!("{key}, ")))
                && (!fleet_run || !list.contains("deployment"));
            if !ok {
                wrong.push(format!("{title}: {keyword} ({list}) does not keep {key} first"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_grouping_reader_finds_every_clause() {
    assert_eq!(
        groupings("max by (a, b) (x) * on (a) group_left sum without (c) (y) or sum(by_z) / ignoring (d) z"),
        [
            ("by".to_owned(), "a, b".to_owned()),
            ("on".to_owned(), "a".to_owned()),
            ("ignoring".to_owned(), "d".to_owned()),
            ("without".to_owned(), "c".to_owned()),
        ]
    );
}

#[test]
fn the_per_pod_cpu_panel_shows_the_programs_own_query_and_the_threshold_band() {
    let dashboard = dashboard();
    let queries = promql(&dashboard);
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
    let mean = gauge("rebalancer_cpu_usage_mean");
    let threshold = gauge("rebalancer_cpu_variance_threshold");
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
fn the_spread_panel_shows_the_spread_the_best_possible_spread_and_the_threshold() {
    let dashboard = dashboard();
    let spread = gauge("rebalancer_cpu_variance_current");
    let panel = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["targets"][0]["expr"] == spread.as_str())
        .expect("a spread panel");
    let exprs: Vec<&str> = panel["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["expr"].as_str().expect("expr"))
        .collect();
    assert_eq!(
        exprs,
        [
            spread.clone(),
            gauge("rebalancer_best_possible_spread"),
            gauge("rebalancer_cpu_variance_threshold")
        ],
        "issue 19: spread, best possible spread, threshold"
    );
    assert_eq!(panel["title"], "Spread, best possible spread, threshold");
}

/// The panel whose first query names `family`.
fn panel_of<'a>(dashboard: &'a Value, family: &str) -> &'a Value {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| metric_names(e).iter().any(|n| n == family))
        })
        .unwrap_or_else(|| panic!("no panel shows {family}"))
}

/// The labels of `rebalancer_config_info` (SPEC §8), in the order the binary writes them.
const CONFIG_LABELS: &[&str] = &[
    "dry_run",
    "eviction_mode",
    "container",
    "window",
    "threshold",
    "min_pods",
    "max_ineffective_actions",
    "version",
];

#[test]
fn the_config_shows_dry_or_live_at_a_glance_and_every_setting() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    // Dry or live: 1 or 0, at the top left.
    let mode = &panels[0];
    assert_eq!(mode["type"], "stat");
    assert_eq!(
        (mode["gridPos"]["x"].as_u64(), mode["gridPos"]["y"].as_u64()),
        (Some(0), Some(0))
    );
    let info = |dry: &str| format!("max by ({BY}) (rebalancer_config_info{TARGET},dry_run=\"{dry}\"}})");
    assert_eq!(
        mode["targets"][0]["expr"],
        format!("{} or {} * 0", info("true"), info("false"))
    );
    let shown = &mode["fieldConfig"]["defaults"]["mappings"][0]["options"];
    assert_eq!(
        (&shown["1"]["text"], &shown["0"]["text"]),
        (&json!("DRY RUN"), &json!("LIVE"))
    );
    // Every setting: one row per combination the runs of the range used.
    let table = &panels[1];
    assert_eq!(table["type"], "table");
    assert_eq!(
        table["targets"][0]["expr"],
        format!(
            "max by ({BY}, {}) (last_over_time(rebalancer_config_info{TARGET}}}[$__range]))",
            CONFIG_LABELS.join(", ")
        )
    );
    assert_eq!(table["targets"][0]["format"], "table");
}

#[test]
fn panels_keep_gauges_and_counters_apart_in_their_units() {
    let dashboard = dashboard();
    let mut wrong = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        if panel["datasource"]["type"] == "loki" {
            continue;
        }
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
        // A counter is shown as whole increases over exactly one bar's interval, and
        // a bar is one run of the CronJob (every 5 minutes).
        for expr in &exprs {
            let counters = metric_names(expr).iter().any(|n| kind_of(n) == Some("counter"));
            if counters && !(expr.starts_with(&format!("round(max by ({BY}, ")) && expr.ends_with("[$__interval])))")) {
                wrong.push(format!(
                    "{title}: {expr} is not round(max by ({BY}, …) (increase(…[$__interval])))"
                ));
            }
        }
        if kinds.contains("counter") && panel["interval"].as_str().is_none_or(|i| i != "5m") {
            wrong.push(format!("{title}: a counter panel's bars are one run, 5 minutes"));
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
    let panel = panel_of(&dashboard, "rebalancer_cycle_outcome");
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

/// The log query of the panel of the last actions, and of its annotation.
fn log_queries(dashboard: &Value) -> (String, String) {
    let logs: Vec<Query> = queries(dashboard)
        .into_iter()
        .filter(|q| q.lang == Lang::LogQL)
        .collect();
    let panel: Vec<&Query> = logs.iter().filter(|q| !q.title.starts_with("annotation")).collect();
    let annotation: Vec<&Query> = logs.iter().filter(|q| q.title.starts_with("annotation")).collect();
    assert_eq!(
        (panel.len(), annotation.len()),
        (1, 1),
        "one logs panel and one logs annotation"
    );
    (panel[0].expr.clone(), annotation[0].expr.clone())
}

#[test]
fn removals_are_annotations_from_the_metrics_and_with_pod_names_from_the_logs() {
    let dashboard = dashboard();
    let annotations = dashboard["annotations"]["list"].as_array().expect("annotations");
    assert!(
        annotations.iter().any(|a| a["expr"]
            .as_str()
            .is_some_and(|e| e.contains("rebalancer_pods_deleted_total"))),
        "{annotations:?}"
    );
    // The annotation marks the lines the panel lists, each named by its pod.
    let (panel, annotation) = log_queries(&dashboard);
    let (selects, format) = panel
        .rsplit_once(" | line_format ")
        .expect("the panel formats its lines");
    assert_eq!(annotation, selects);
    let marked = annotations
        .iter()
        .find(|a| a["expr"] == annotation.as_str())
        .expect("logs annotation");
    for (key, label) in [("titleFormat", "removed"), ("textFormat", "cpu"), ("tagKeys", "role")] {
        assert!(
            marked[key].as_str().is_some_and(|f| f.contains(label)),
            "{key}: {marked}"
        );
    }
    let query = LogQuery::parse(&panel);
    let fields = query.extracted();
    assert!(format.contains("{{.removed}}"), "{format}");
    for (label, key) in [("removed", "pod"), ("role", "role"), ("cpu", "cpu")] {
        assert_eq!(fields.get(label).map(String::as_str), Some(key), "{fields:?}");
    }
    // The stream selector names the container the manifests run.
    let container = cronjob_container();
    assert!(
        query.selector.contains(&("container".to_owned(), container.clone())),
        "{:?} is not container {container}",
        query.selector
    );
}

/// The name of the CronJob's container in `manifests/cronjob.yaml`: the `container`
/// label a Kubernetes log agent gives the Jobs' lines.
fn cronjob_container() -> String {
    let text = std::fs::read_to_string(root().join("manifests/cronjob.yaml")).expect("cronjob.yaml");
    let after = &text[text.find("containers:").expect("containers")..];
    after
        .lines()
        .find_map(|l| l.trim().strip_prefix("- name: "))
        .expect("a container name")
        .to_owned()
}

// ---------------------------------------------------------------------------------
// The log query, read the way Loki reads it: the part of LogQL the dashboard uses
// (a stream selector of `=` matchers, `|=` line filters, `json` with named fields,
// `!=`/`=`/`=~` label filters and `line_format`). Anything else fails the test, so
// that a new stage comes with its reading here.

#[derive(Debug)]
enum Stage {
    /// `|= "text"`
    Contains(String),
    /// `| json label="field", …`
    Json(Vec<(String, String)>),
    /// `| label OP "value"`, OP one of `=`, `!=`, `=~`.
    Filter(String, String, String),
    /// `| line_format "template"`
    LineFormat(String),
}

#[derive(Debug)]
struct LogQuery {
    selector: Vec<(String, String)>,
    stages: Vec<Stage>,
}

/// The tokens of a LogQL pipeline: `|=`, `|`, `,`, operators, names, and Go strings
/// (unquoted).
fn logql_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '"' => {
                let mut s = String::from('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => s.push(chars.next().expect("an escaped character")),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                tokens.push(s);
            }
            '|' | '!' | '=' => {
                let mut op = c.to_string();
                if let Some(&next) = chars.peek().filter(|n| ['=', '~'].contains(n)) {
                    op.push(next);
                    chars.next();
                }
                tokens.push(op);
            }
            ',' => tokens.push(",".into()),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut name = c.to_string();
                while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                    name.push(n);
                    chars.next();
                }
                tokens.push(name);
            }
            c => panic!("LogQL this test does not read: {c:?} in {text}"),
        }
    }
    tokens
}

/// A string token's text.
fn string(token: &str) -> String {
    token
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("not a string: {token}"))
        .to_owned()
}

impl LogQuery {
    fn parse(expr: &str) -> LogQuery {
        let close = expr.find('}').expect("a stream selector");
        let tokens = logql_tokens(&expr[1..close]);
        let selector = tokens
            .split(|t| t == ",")
            .map(|m| match m {
                [name, op, value] if op == "=" => (name.clone(), string(value)),
                _ => panic!("a stream matcher this test does not read: {m:?}"),
            })
            .collect();
        let tokens = logql_tokens(&expr[close + 1..]);
        let mut stages = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let end = (i + 1..tokens.len())
                .find(|&j| tokens[j] == "|" || tokens[j] == "|=")
                .unwrap_or(tokens.len());
            let stage = &tokens[i + 1..end];
            stages.push(match (tokens[i].as_str(), stage) {
                ("|=", [text]) => Stage::Contains(string(text)),
                ("|", [name, rest @ ..]) if name == "json" => Stage::Json(
                    rest.split(|t| t == ",")
                        .map(|f| match f {
                            [label, eq, field] if eq == "=" => (label.clone(), string(field)),
                            _ => panic!("a json field this test does not read: {f:?}"),
                        })
                        .collect(),
                ),
                ("|", [name, template]) if name == "line_format" => Stage::LineFormat(string(template)),
                ("|", [label, op, value]) if ["=", "!=", "=~"].contains(&op.as_str()) => {
                    Stage::Filter(label.clone(), op.clone(), string(value))
                }
                _ => panic!("a stage this test does not read: {:?} {stage:?}", tokens[i]),
            });
            i = end;
        }
        LogQuery { selector, stages }
    }

    /// The labels the `json` stages extract, and from which field.
    fn extracted(&self) -> BTreeMap<String, String> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Json(fields) => Some(fields.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Runs the pipeline on one line, with variables already substituted: the labels
    /// extracted and the line shown, or `None` when a stage drops it.
    fn run(&self, line: &str) -> Option<(BTreeMap<String, String>, String)> {
        let mut labels = BTreeMap::new();
        let mut shown = line.to_owned();
        for stage in &self.stages {
            match stage {
                Stage::Contains(text) => {
                    if !line.contains(text.as_str()) {
                        return None;
                    }
                }
                // A line that is not a JSON object gets `__error__` and no field.
                Stage::Json(fields) => {
                    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) {
                        for (label, field) in fields {
                            match object.get(field) {
                                Some(Value::String(s)) => labels.insert(label.clone(), s.clone()),
                                Some(Value::Null) | None => None,
                                Some(v) => labels.insert(label.clone(), v.to_string()),
                            };
                        }
                    }
                }
                Stage::Filter(label, op, value) => {
                    let have = labels.get(label).map_or("", String::as_str);
                    let keep = match op.as_str() {
                        "=" => have == value,
                        "!=" => have != value,
                        _ => regex_matches(value, have),
                    };
                    if !keep {
                        return None;
                    }
                }
                Stage::LineFormat(template) => {
                    let mut out = template.clone();
                    while let Some(i) = out.find("{{.") {
                        let end = i + out[i..].find("}}").expect("a closed template action");
                        let label = &out[i + 3..end];
                        assert!(
                            labels.contains_key(label) || self.extracted().contains_key(label),
                            "line_format names {label}, which no stage extracts"
                        );
                        out.replace_range(i..end + 2, labels.get(label).map_or("", String::as_str));
                    }
                    shown = out;
                }
            }
        }
        Some((labels, shown))
    }
}

/// An anchored match (as LogQL's `=~`) of the regular expressions the dashboard uses:
/// literal characters and `[a-z0-9]+`.
fn regex_matches(pattern: &str, text: &str) -> bool {
    const CLASS: &str = "[a-z0-9]+";
    if let Some(rest) = pattern.strip_prefix(CLASS) {
        let run = text
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .count();
        return (1..=run).any(|n| regex_matches(rest, &text[n..]));
    }
    match pattern.chars().next() {
        None => text.is_empty(),
        Some(c) => {
            assert!(
                !".*+?()|[]{}^$\\".contains(c),
                "a regular expression this test does not read: {pattern}"
            );
            text.starts_with(c) && regex_matches(&pattern[c.len_utf8()..], &text[c.len_utf8()..])
        }
    }
}

#[test]
fn the_log_query_reader_reads_what_loki_would() {
    let query = LogQuery::parse(
        "{namespace=\"ns\", container=\"c\"} |= \"\\\"role\\\":\" | json removed=\"pod\", role=\"role\" | role!=\"\" | removed=~\"app-[a-z0-9]+-[a-z0-9]+\" | line_format \"{{.removed}}: {{.role}}\"",
    );
    assert_eq!(
        query.selector,
        [
            ("namespace".to_owned(), "ns".to_owned()),
            ("container".to_owned(), "c".to_owned())
        ]
    );
    let line = |pod: &str, role: &str| {
        format!("{{\"msg\":\"pod removed\",\"pod\":\"{pod}\",\"role\":\"{role}\",\"cpu\":1.9}}")
    };
    assert_eq!(
        query.run(&line("app-5f7c9d8b4d-x2x9z", "highest_cpu")).map(|(_, l)| l),
        Some("app-5f7c9d8b4d-x2x9z: highest_cpu".to_owned())
    );
    assert!(query.run(&line("app-5f7c9d8b4d-x2x9z", "")).is_none(), "no role");
    assert!(
        query.run(&line("app-web-5f7c9d8b4d-x2x9z", "lowest_cpu")).is_none(),
        "another Deployment"
    );
    assert!(
        query.run(&line("app-5f7c9d8b4d", "lowest_cpu")).is_none(),
        "not a pod name"
    );
    assert!(
        query
            .run("INFO pod removed pod=app-5f7c9d8b4d-x2x9z role=highest_cpu")
            .is_none(),
        "not JSON"
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

/// Where the runs behind the data ran.
struct Runs {
    /// The `cluster` label of their metrics ("" for none), and every cluster whose
    /// rebalancers report in this namespace (the variable must offer exactly those).
    cluster: String,
    clusters: Vec<String>,
    namespace: String,
    /// The targets of the namespace in this cluster (the variable must offer them).
    deployments: Vec<String>,
    /// Unix seconds before the first run and after the last.
    start: i64,
    end: i64,
    /// Every line the runs logged (`None`: no real run, no log to read).
    logs: Option<Vec<String>>,
    /// The removals the API server accepted, in order: pod, and whether it was a
    /// server-side dry run.
    accepted: Vec<(String, bool)>,
}

/// One target the dashboard is looked at for, and what its runs did.
struct Shown {
    deployment: String,
    /// The container its runs query (what the variable `container` must resolve to).
    container: String,
    /// Its pods with their cores, which the per-pod panel must show.
    pods: Vec<(String, f64)>,
    /// The outcome of each run that served it, in order.
    outcomes: Vec<&'static str>,
    /// 1 for runs that were dry, 0 for live ones.
    modes: BTreeSet<u8>,
    /// Pods removed by role over the runs, when its counters were 0 at the first run:
    /// what the per-run bars add up to.
    removed: Option<BTreeMap<&'static str, f64>>,
    /// The families its runs exported for it (or for its namespace): the queries of
    /// other families have nothing to show for it.
    families: BTreeSet<String>,
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

/// The dashboard's variables and Grafana's own, substituted as Grafana does. In the
/// tests a run is at least a second after the one before, and the step is a second:
/// `$__interval` is one run, as the 5-minute bars are one run of the CronJob.
fn substitute(expr: &str, variables: &BTreeMap<String, String>, runs: &Runs) -> String {
    let mut out = expr
        .replace("$__interval", "1s")
        .replace("$__range", &format!("{}s", runs.end - runs.start));
    for (name, value) in variables {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// Resolves the query variables in order, as Grafana does (label values over the
/// time range, then the variable's regex), checking that each offers what it must:
/// this namespace, exactly its clusters, its targets, and one container and one
/// window, those of `shown`'s runs.
fn resolve_variables(vm: &vm::Vm, runs: &Runs, shown: &Shown, wrong: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut resolved = BTreeMap::new();
    for variable in dashboard()["templating"]["list"].as_array().expect("variables") {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().expect("name");
        let definition = variable["definition"].as_str().expect("definition");
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: {definition}"));
        let (selector, label) = inner
            .rsplit_once(", ")
            .unwrap_or_else(|| panic!("{name}: {definition}"));
        let selector = substitute(selector, &resolved, runs);
        let target = format!(
            "/api/v1/label/{label}/values?match[]={}&start={}&end={}",
            encode(&selector),
            runs.start,
            runs.end
        );
        let body = vm.get(&target).expect("label values").1;
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        let mut values: Vec<String> = answer["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {body}"))
            .iter()
            .map(|v| v.as_str().expect("a label value").to_owned())
            .collect();
        match variable["regex"].as_str() {
            None | Some("") => {}
            Some("/^(\\d+)s$/") => {
                values = values
                    .iter()
                    .filter_map(|v| v.strip_suffix('s').filter(|n| n.chars().all(|c| c.is_ascii_digit())))
                    .map(str::to_owned)
                    .collect();
            }
            Some(other) => panic!("{name}: a regex this test does not read: {other}"),
        }
        let (want, good) = match name {
            "namespace" => (runs.namespace.clone(), values.contains(&runs.namespace)),
            // No option at all is Grafana's None, the empty value: the series
            // without the label.
            "cluster" => (runs.cluster.clone(), values == runs.clusters),
            "deployment" => (
                shown.deployment.clone(),
                runs.deployments.iter().all(|d| values.contains(d)),
            ),
            "container" => (shown.container.clone(), values == [shown.container.clone()]),
            "window" => ("300".to_owned(), values == ["300"]),
            other => panic!("a variable this test does not know: {other}"),
        };
        if !good {
            wrong.push(format!("variable {name} offers {values:?}: {want} wanted"));
        }
        resolved.insert(name.to_owned(), want);
    }
    resolved
}

/// Runs every query of the dashboard (and its variables) against `vm`, for the
/// target `shown`, and checks that each answers, non-empty and of the right shape,
/// and that what it shows is what the runs did.
fn check_every_panel(vm: &vm::Vm, runs: &Runs, shown: &Shown) {
    vm.get("/internal/force_flush").expect("force flush");
    let dashboard = dashboard();
    let mut wrong = Vec::new();
    let variables = resolve_variables(vm, runs, shown, &mut wrong);
    let target = &shown.deployment;

    for query in queries(&dashboard) {
        let title = &query.title;
        if query.lang == Lang::LogQL {
            if let Some(logs) = &runs.logs {
                check_log_query(
                    &substitute(&query.expr, &variables, runs),
                    logs,
                    runs,
                    shown,
                    &mut wrong,
                );
            }
            continue;
        }
        if !metric_names(&query.expr).iter().all(|n| shown.families.contains(n)) {
            continue;
        }
        let promql = substitute(&query.expr, &variables, runs);
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
        if points.is_empty() {
            wrong.push(format!("{title} ({target}): no answer to {promql}"));
            continue;
        }
        if let Some((_, v)) = points.iter().find(|(_, v)| !v.is_finite()) {
            wrong.push(format!("{title}: {v} in the answer to {promql}"));
        }
        // Never another cluster's series, nor another target's (the per-pod CPU
        // keeps no such label: its numbers tell, below).
        for s in series.iter().filter(|_| query.expr != program_cpu_query()) {
            let label = |name: &str| s["metric"][name].as_str().unwrap_or("").to_owned();
            if label("cluster") != runs.cluster
                || s["metric"]["deployment"].is_string() && label("deployment") != *target
            {
                wrong.push(format!("{title}: a series of another rebalancer: {}", s["metric"]));
            }
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
            let seen: BTreeSet<String> = points
                .iter()
                .map(|(_, v)| {
                    codes
                        .get(&(*v as u32))
                        .cloned()
                        .unwrap_or_else(|| format!("unmapped {v}"))
                })
                .collect();
            let ran: BTreeSet<String> = shown.outcomes.iter().map(|o| o.to_string()).collect();
            if seen != ran {
                wrong.push(format!("{title}: shows {seen:?}, the runs of {target} ended {ran:?}"));
            }
        }
        if query.expr == program_cpu_query() {
            for (pod, cores) in &shown.pods {
                let last = series
                    .iter()
                    .filter(|s| s["metric"]["pod"] == pod.as_str())
                    .filter_map(|s| s["values"].as_array()?.last()?[1].as_str()?.parse::<f64>().ok())
                    .next();
                if !last.is_some_and(|v| (v - cores).abs() <= 0.05 * cores) {
                    wrong.push(format!("{title}: pod {pod} at {last:?} cores, not {cores}"));
                }
            }
        }
        if query.expr.contains("rebalancer_build_info")
            && !points.iter().all(|(m, _)| m["version"] == env!("CARGO_PKG_VERSION"))
        {
            wrong.push(format!("{title}: not version {}", env!("CARGO_PKG_VERSION")));
        }
        if query.expr.contains("dry_run=\"true\"") {
            let seen: BTreeSet<u8> = points.iter().map(|(_, v)| *v as u8).collect();
            if seen != shown.modes {
                wrong.push(format!("{title}: shows {seen:?}, the runs were {:?}", shown.modes));
            }
        }
        if query.panel["type"] == "table" {
            for s in &series {
                let m = &s["metric"];
                if let Some(label) = CONFIG_LABELS.iter().find(|l| m[**l].as_str().is_none_or(str::is_empty)) {
                    wrong.push(format!("{title}: no {label} in {m}"));
                }
                if m["container"] != shown.container.as_str() || m["window"] != "300s" {
                    wrong.push(format!("{title}: {m} is not the container and window of the runs"));
                }
            }
        }
        if query.title.starts_with("Pods removed")
            && let Some(removed) = &shown.removed
        {
            for (role, want) in removed {
                let bars: Vec<f64> = points
                    .iter()
                    .filter(|(m, _)| m["type"] == *role)
                    .map(|(_, v)| *v)
                    .collect();
                let sum: f64 = bars.iter().sum();
                // One bar per run: at most one pod of each role.
                if sum != *want || bars.iter().any(|b| *b > 1.0) {
                    wrong.push(format!("{title}: {role} bars {bars:?}, the runs removed {want}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The log query (variables substituted) over every line the runs logged: it must
/// select exactly the removals the API server accepted for the target's pods, dry
/// runs included, in order, each with its role and CPU.
fn check_log_query(expr: &str, logs: &[String], runs: &Runs, shown: &Shown, wrong: &mut Vec<String>) {
    let query = LogQuery::parse(expr);
    for (label, want) in [("namespace", &runs.namespace), ("cluster", &runs.cluster)] {
        if !query.selector.contains(&(label.to_owned(), want.clone())) {
            wrong.push(format!("{expr}: the stream selector is not {label} {want}"));
        }
    }
    let mut selected = Vec::new();
    for line in logs {
        if let Some((labels, shown_line)) = query.run(line) {
            let pod = labels.get("removed").cloned().unwrap_or_default();
            let role = labels.get("role").map_or("", String::as_str);
            let cpu = labels.get("cpu").and_then(|c| c.parse::<f64>().ok());
            if !["highest_cpu", "lowest_cpu"].contains(&role) || cpu.is_none() || !shown_line.contains(&pod) {
                wrong.push(format!("{expr}: {line} shows as {shown_line:?}"));
            }
            selected.push(pod);
        }
    }
    let ours: BTreeSet<&str> = shown.pods.iter().map(|(p, _)| p.as_str()).collect();
    let accepted: Vec<String> = runs
        .accepted
        .iter()
        .filter(|(pod, _)| ours.contains(pod.as_str()))
        .map(|(pod, _)| pod.clone())
        .collect();
    if selected != accepted {
        wrong.push(format!(
            "{expr}: lists {selected:?}, the API server accepted the removals of {accepted:?}"
        ));
    }
}

/// The metrics of one run in the contract's shape, at `at_ms`, with a `cluster`
/// label when given.
fn contract_run(namespace: &str, cluster: Option<&str>, at_ms: i64, run: usize, outcome: &str) -> String {
    let run_labels = format!(
        "namespace=\"{namespace}\"{}",
        cluster.map(|c| format!(",cluster=\"{c}\"")).unwrap_or_default()
    );
    let target = format!("{run_labels},deployment=\"{DEPLOYMENT}\"");
    let n = run as f64;
    let value = |name: &str, label: &str, v: &str| -> f64 {
        match (name, label, v) {
            ("rebalancer_build_info", ..) | ("rebalancer_config_info", ..) => 1.0,
            ("rebalancer_cycle_outcome", _, o) | ("rebalancer_targets", _, o) => f64::from(u8::from(o == outcome)),
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
            ("rebalancer_best_possible_spread", ..) => 0.2,
            ("rebalancer_partition_fit_r2", ..) => 0.9,
            ("rebalancer_cpu_usage_mean", ..) => 1.0,
            ("rebalancer_cpu_usage_stddev", ..) => 0.54,
            ("rebalancer_max_ineffective_actions", ..) => 3.0,
            ("rebalancer_last_run_timestamp_seconds", ..)
            | ("rebalancer_last_success_timestamp_seconds", ..)
            | ("rebalancer_last_failure_timestamp_seconds", ..) => at_ms as f64 / 1000.0,
            ("rebalancer_last_action_effect_ratio", ..) => 1.0,
            ("rebalancer_ineffective_streak", ..) => 1.0,
            ("rebalancer_breaker_open_until_timestamp_seconds", ..) => at_ms as f64 / 1000.0 + 3600.0,
            _ => 0.0,
        }
    };
    let mut text = String::new();
    for (name, _, label, values) in CONTRACT {
        // A fleet's count of targets is about the run: no deployment.
        let labels = if *name == "rebalancer_targets" {
            &run_labels
        } else {
            &target
        };
        // The settings as the binary labels them; the first run is dry.
        let labels = if *name == "rebalancer_config_info" {
            &format!(
                "{labels},dry_run=\"{}\",eviction_mode=\"evict\",container=\"{DEPLOYMENT}\",window=\"300s\",threshold=\"0.3\",min_pods=\"3\",max_ineffective_actions=\"3\",version=\"{}\"",
                outcome == "dry_run",
                env!("CARGO_PKG_VERSION")
            )
        } else {
            labels
        };
        if values.is_empty() {
            text += &format!("{name}{{{labels}}} {} {at_ms}\n", value(name, "", ""));
        }
        for v in *values {
            text += &format!("{name}{{{labels},{label}=\"{v}\"}} {} {at_ms}\n", value(name, label, v));
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
            None,
            first_ms + run as i64 * 5_000,
            run + 1,
            outcome,
        ));
    }
    // Without a cluster label: the variable offers none, and its empty value selects
    // the series without the label.
    let runs = Runs {
        cluster: String::new(),
        clusters: Vec::new(),
        namespace: namespace.to_owned(),
        deployments: vec![DEPLOYMENT.to_owned()],
        start: first_ms / 1000 - 5,
        end: first_ms / 1000 + 30,
        logs: None,
        accepted: Vec::new(),
    };
    let shown = Shown {
        deployment: DEPLOYMENT.to_owned(),
        container: DEPLOYMENT.to_owned(),
        pods: cpu,
        outcomes,
        modes: BTreeSet::from([0, 1]),
        removed: Some(BTreeMap::from([("highest_cpu", 1.0), ("lowest_cpu", 1.0)])),
        families: exported(),
    };
    check_every_panel(vm, &runs, &shown);
}

/// The fake API (with its state ConfigMap) whose evictions a PodDisruptionBudget
/// refuses while `refuse` is set, and which otherwise accepts them (recording each in
/// `accepted`, with whether it was a dry run) without the pods ever terminating: each
/// run sees the same fleet, so an action's evaluation finds the same spread and the
/// breaker opens. While `break_state` is set, the state ConfigMap cannot be read.
fn kube_with_state(
    fake: Fake,
    refuse: Arc<AtomicBool>,
    break_state: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(String, bool)>>>,
) -> Handler {
    let inner = fake.into_handler();
    Arc::new(move |req: &Request| {
        if req.method == "POST"
            && let Some(pod) = req.path().strip_suffix("/eviction")
        {
            if refuse.load(Ordering::SeqCst) {
                return Reply::json(429, fixture("k8s/constructed/status_429_eviction_pdb.json"));
            }
            let pod = pod.rsplit('/').next().unwrap_or_default().to_owned();
            accepted
                .lock()
                .expect("accepted")
                .push((pod, req.query("dryRun").is_some()));
            return Reply::json(201, fixture("k8s/constructed/status_201_eviction_success.json"));
        }
        if req.method == "GET" && req.path().contains("/configmaps/") && break_state.load(Ordering::SeqCst) {
            return Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json"));
        }
        inner(req)
    })
}

/// One run of the binary in `every_panel_answers_on_the_metrics_real_runs_pushed`.
struct Run {
    /// Settings beside the common ones.
    extra: Vec<(&'static str, String)>,
    /// Evictions are refused by a PodDisruptionBudget.
    refused: bool,
    /// The state ConfigMap cannot be read: the run exports no counter.
    state_broken: bool,
    /// The partition answer is fed before the run.
    partitions: bool,
    code: i32,
    /// The outcome of the Deployment `DEPLOYMENT`.
    outcome: &'static str,
}

/// The second target of the fleet run: its Deployment's name, and its pods with
/// their cores (spread 0.52: the run removes the hottest and the coldest).
const OTHER: &str = "events-consumer";

fn other_fleet() -> Vec<(String, f64)> {
    [1.8, 1.0, 1.0, 0.3]
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{OTHER}-{HASH}-q{i}"), *c))
        .collect()
}

/// The partition answer of `PARTITION_QUERY` for the fleet (1.9, 1.0, 1.0, 0.9, 0.2
/// cores): each pod's partitions carry its CPU less 0.01 cores, the first pod's in a
/// single partition of 1.89, almost two fair shares (0.99): key skew, best possible
/// spread 0.45 > 0.3, unfixable (SPEC §12).
fn partition_answer(namespace: &str, at_ms: i64) -> String {
    let owned: [(usize, &[f64]); 5] = [
        (0, &[1.89]),
        (1, &[0.5, 0.49]),
        (2, &[0.5, 0.49]),
        (3, &[0.45, 0.44]),
        (4, &[0.19]),
    ];
    let mut text = String::new();
    let mut partition = 0;
    for (pod, loads) in owned {
        for load in loads {
            text += &format!(
                "kafka_partition_rate{{namespace=\"{namespace}\",pod=\"{}\",topic=\"events\",partition=\"{partition}\"}} {load} {at_ms}\n",
                crate::cycle::name(pod)
            );
            partition += 1;
        }
    }
    text
}

/// Waits until `selector` finds `want` series.
fn wait_searchable(vm: &vm::Vm, selector: &str, want: usize) {
    vm.get("/internal/force_flush").expect("force flush");
    let target = format!("/api/v1/series?match[]={}&start={}", encode(selector), now() - 600);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = vm
            .get(&target)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|answer| answer["data"].as_array().map(Vec::len));
        if found == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{selector}: {found:?} series, not {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn every_panel_answers_on_the_metrics_real_runs_pushed() {
    let vm = vm::shared();
    let namespace = "dashboard-runs";
    let cluster = "prod-eu-1";
    let (pods, cpu) = fleet(&[1.9, 1.0, 1.0, 0.9, 0.2]);
    vm.feed_labelled(namespace, DEPLOYMENT, &cpu, ("cluster", cluster));
    let other = other_fleet();
    vm.feed_more_labelled(namespace, OTHER, &other, ("cluster", cluster));
    // Another cluster's rebalancer of the same namespace and Deployment in the same
    // store, its pods of the same names a core busier: a panel that mixed the
    // clusters would show its numbers or its outcome (paused, which no run here has).
    let intruder = "prod-us-1";
    let busier: Vec<(String, f64)> = cpu.iter().map(|(pod, c)| (pod.clone(), c + 1.0)).collect();
    vm.feed_labelled(namespace, DEPLOYMENT, &busier, ("cluster", intruder));

    let mut fake = Fake::new(namespace, DEPLOYMENT, &pods, now());
    let mut deployment = deployment_json(namespace, OTHER, other.len() as i64);
    deployment["metadata"]["uid"] = json!(uid_of(OTHER));
    // The fleet run's targets: both Deployments, opted in by label.
    for d in [&mut fake.deployment, &mut deployment] {
        d["metadata"]["labels"]["pod-rebalancer.io/enabled"] = json!("true");
    }
    fake.deployments = vec![fake.deployment.clone(), deployment];
    for (name, _) in &other {
        fake.pods.push(pod_json(namespace, OTHER, &pod(name), now()));
    }
    let refuse = Arc::new(AtomicBool::new(false));
    let break_state = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let pki = Pki::new();
    let kube = Server::https(
        &pki,
        kube_with_state(fake, refuse.clone(), break_state.clone(), accepted.clone()),
    );
    let dir = TempDir::new(namespace);
    std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).expect("ca.crt");
    let file = dir.path().join("metrics.prom");
    let labels = format!("cluster=\"{cluster}\"");
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
            // One store for two clusters, as README "Metrics of several clusters in
            // one store" sets it up.
            ("METRICS_LABELS", labels.clone()),
            ("QUERY_MATCHERS", labels.clone()),
            // As the manifests set it: the log panel reads JSON lines.
            ("LOG_FORMAT", "json".to_owned()),
        ],
        &[],
    );
    let partition_query = format!("kafka_partition_rate{{namespace=\"{namespace}\"}}");
    let run = |outcome: &'static str| Run {
        extra: Vec::new(),
        refused: false,
        state_broken: false,
        partitions: false,
        code: 0,
        outcome,
    };
    let plan = [
        Run {
            extra: vec![("DRY_RUN", "true".to_owned())],
            refused: true,
            ..run("dry_run")
        },
        Run {
            extra: vec![("DRY_RUN", "true".to_owned())],
            ..run("dry_run")
        },
        // A run that exports no counter: its bars are missing, not 0 nor a drop.
        Run {
            state_broken: true,
            code: 1,
            ..run("error")
        },
        run("acted"),
        run("ineffective"),
        Run {
            extra: vec![("PROMETHEUS_ENDPOINT", "http://127.0.0.1:9".to_owned())],
            code: 1,
            ..run("error")
        },
        run("ineffective"),
        Run {
            extra: vec![("PARTITION_QUERY", partition_query.clone())],
            partitions: true,
            ..run("unfixable")
        },
        // A fleet run over both Deployments: the breaker of the first is still open,
        // the second acts.
        Run {
            extra: vec![
                ("DEPLOYMENT_NAME", String::new()),
                ("TARGET_SELECTOR", "pod-rebalancer.io/enabled=true".to_owned()),
            ],
            ..run("ineffective")
        },
    ];
    let start = now() - 2;
    let mut texts = Vec::new();
    for run in &plan {
        refuse.store(run.refused, Ordering::SeqCst);
        break_state.store(run.state_broken, Ordering::SeqCst);
        if run.partitions {
            vm.import(&partition_answer(namespace, vm::now_ms() - 1_000));
            vm.get("/internal/force_flush").expect("flush");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while vm.samples(&partition_query, "partition", None).len() < 8 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the partition series never became searchable"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let extra: Vec<(&str, &str)> = run.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run_bin(&[], &env_with(env.clone(), &extra));
        let text = std::fs::read_to_string(&file).expect("metrics file");
        texts.push((out, text, run));
        // One run per second at least, so that a one-second step sees every run.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // The other cluster's runs, over the same time.
    for k in 0..4 {
        vm.import(&contract_run(
            namespace,
            Some(intruder),
            (start + 1 + 2 * k) * 1000,
            k as usize + 1,
            "paused",
        ));
    }

    // First what the binary writes: every family of the contract, every sample naming
    // its cluster and namespace, and its target unless it is about a fleet run.
    let mut missing: BTreeSet<String> = exported();
    let mut unlabelled = BTreeSet::new();
    let mut exported_for: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, text, _) in &texts {
        for (name, kind) in families(text) {
            assert_eq!(kind_of(&name), Some(kind.as_str()), "{name} is a {kind}");
            missing.remove(&name);
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let series = line.split(' ').next().unwrap_or_default();
            let name = series.split('{').next().unwrap_or_default().to_owned();
            let deployment = series.split("deployment=\"").nth(1).and_then(|d| d.split('"').next());
            let about_the_run = name == "rebalancer_targets";
            if !series.contains(&format!("{{namespace=\"{namespace}\""))
                || !series.contains(&format!(",cluster=\"{cluster}\""))
                || deployment.is_some() == about_the_run
            {
                unlabelled.insert(name.clone());
            }
            for d in [DEPLOYMENT, OTHER] {
                if deployment.is_none_or(|x| x == d) {
                    exported_for.entry(d.to_owned()).or_default().insert(name.clone());
                }
            }
        }
    }
    assert!(
        missing.is_empty() && unlabelled.is_empty(),
        "families missing {missing:?}; samples without cluster, namespace or their target: {unlabelled:?}"
    );
    for (out, text, run) in &texts {
        assert_eq!(out.code, run.code, "{}", out.stderr);
        let target = format!("{{namespace=\"{namespace}\",deployment=\"{DEPLOYMENT}\",cluster=\"{cluster}\"");
        assert!(
            text.contains(&format!(
                "rebalancer_cycle_outcome{target},outcome=\"{}\"}} 1",
                run.outcome
            )),
            "not {}:\n{text}\n{}",
            run.outcome,
            out.stderr
        );
        if run.state_broken {
            assert!(
                !text.contains("_total{"),
                "a run without its state exports no counter:\n{text}"
            );
        }
    }
    let fleet_run = &texts.last().expect("the fleet run").1;
    assert!(
        fleet_run.contains(&format!("rebalancer_cycle_outcome{{namespace=\"{namespace}\",deployment=\"{OTHER}\",cluster=\"{cluster}\",outcome=\"acted\"}} 1")),
        "{fleet_run}"
    );

    // Series the server saw first in the last runs take a moment to be searchable.
    for selector in [
        format!("rebalancer_targets{{namespace=\"{namespace}\",cluster=\"{cluster}\"}}"),
        format!("rebalancer_cycle_outcome{{namespace=\"{namespace}\",deployment=\"{OTHER}\",cluster=\"{cluster}\"}}"),
        format!("rebalancer_cycle_outcome{{namespace=\"{namespace}\",cluster=\"{intruder}\"}}"),
    ] {
        wait_searchable(vm, &selector, OUTCOMES.len());
    }

    let logs: Vec<String> = texts
        .iter()
        .flat_map(|(out, ..)| out.stderr.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let accepted = accepted.lock().expect("accepted").clone();
    assert!(
        accepted.iter().any(|(_, dry)| *dry) && accepted.iter().any(|(_, dry)| !dry),
        "dry and live removals: {accepted:?}"
    );
    let runs = Runs {
        cluster: cluster.to_owned(),
        clusters: vec![cluster.to_owned(), intruder.to_owned()],
        namespace: namespace.to_owned(),
        deployments: vec![DEPLOYMENT.to_owned(), OTHER.to_owned()],
        start,
        // A few steps after the last run: VictoriaMetrics leaves out a series whose
        // only sample falls on the range's last step (the fleet run's new series).
        end: now() + 3,
        logs: Some(logs),
        accepted,
    };
    let dry = |run: &Run| run.extra.iter().any(|(k, v)| *k == "DRY_RUN" && v == "true");
    check_every_panel(
        vm,
        &runs,
        &Shown {
            deployment: DEPLOYMENT.to_owned(),
            container: DEPLOYMENT.to_owned(),
            pods: cpu,
            outcomes: plan.iter().map(|run| run.outcome).collect(),
            modes: plan.iter().map(|run| u8::from(dry(run))).collect(),
            removed: Some(BTreeMap::from([("highest_cpu", 1.0), ("lowest_cpu", 1.0)])),
            families: exported_for[DEPLOYMENT].clone(),
        },
    );
    assert_eq!(
        exported_for[DEPLOYMENT],
        exported(),
        "the first target's runs exported every family"
    );
    // The fleet run's second target, picked from the variable that lists the targets.
    check_every_panel(
        vm,
        &runs,
        &Shown {
            deployment: OTHER.to_owned(),
            container: OTHER.to_owned(),
            pods: other,
            outcomes: vec!["acted"],
            modes: BTreeSet::from([0]),
            removed: None,
            families: exported_for[OTHER].clone(),
        },
    );
}
