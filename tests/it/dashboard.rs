//! The Grafana dashboard and the alert rules only query metrics the binary really
//! exports. The rules file is read by kubectl, like the other manifests (no YAML
//! crate in the tests).

use crate::manifests::{rule_groups, rules_file};
use crate::support::root;
use pod_rebalancer::outcome::Outcome;
use pod_rebalancer::report::{Counters, MemoryGauges, Run, Target, render};
use pod_rebalancer::stats::Stats;
use std::collections::BTreeSet;

/// Every metric name in the text of a run that exported everything.
fn exported() -> BTreeSet<String> {
    let run = Run {
        target: Target {
            namespace: "ns".into(),
            deployment: "d".into(),
        },
        ended: Ok(Outcome::Acted),
        matched: Some(3),
        analyzed: 3,
        deleted_highest: 1,
        deleted_lowest: 1,
        stats: Some(Stats {
            n: 3,
            mean: 1.0,
            variance: 0.25,
            stddev: 0.5,
            spread: 0.5,
        }),
        threshold: 0.3,
        duration_secs: 0.1,
        end: 1.0,
        refused: Vec::new(),
        memory: Some(MemoryGauges {
            streak: 1,
            hold_until: Some(2),
            last_effect: Some((0.9, true)),
        }),
    };
    render(&Counters::default(), &run)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
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
        names.push(tail[..end].to_string());
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

/// The `expr` of every rule of a rules file's text.
fn rule_exprs(rules: &str) -> Vec<String> {
    let groups = rule_groups(rules);
    let mut exprs = Vec::new();
    for group in groups.as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a rule without expr: {rule}"));
            exprs.push(expr.to_string());
        }
    }
    exprs
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = root().join("manifests/dashboards/pod-rebalancer.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let exported = exported();
    assert!(exported.len() >= 12, "{exported:?}");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr"));
        }
    }
    let queried =
        queried(exprs, &exported).unwrap_or_else(|wrong| panic!("{} (we export {exported:?})", wrong.join("\n")));
    for needed in [
        "rebalancer_cpu_variance_current",
        "rebalancer_cpu_variance_threshold",
        "rebalancer_cpu_usage_mean",
        "rebalancer_cpu_usage_stddev",
        "rebalancer_pods_deleted_total",
        "rebalancer_cycle_outcome",
        "rebalancer_execution_duration_seconds",
    ] {
        assert!(queried.contains(needed), "the dashboard does not show {needed}");
    }
}

#[test]
fn every_alert_rule_names_an_exported_metric() {
    let exprs = rule_exprs(&rules_file());
    assert!(exprs.len() >= 5, "the seed's five alerts at least: {exprs:?}");
    let exported = exported();
    let queried = queried(exprs.iter().map(String::as_str), &exported)
        .unwrap_or_else(|wrong| panic!("{} (we export {exported:?})", wrong.join("\n")));
    for needed in [
        "rebalancer_cycle_outcome",
        "rebalancer_pods_matched",
        "rebalancer_pods_deleted_total",
        "rebalancer_errors_total",
        "rebalancer_last_run_timestamp_seconds",
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
    assert_eq!(
        wrong,
        ["last_over_time(rebalancer_pod_matched[10m]) == 0: rebalancer_pod_matched is not exported"]
    );
}

#[test]
fn the_name_reader_finds_every_metric() {
    assert_eq!(
        metric_names("rebalancer_a + rate(rebalancer_b_total[5m])"),
        ["rebalancer_a", "rebalancer_b_total"]
    );
    assert!(metric_names("up").is_empty());
}
