//! The Grafana dashboard only queries metrics the binary really exports.

use crate::support::root;
use pod_rebalancer::report::{Carried, Run, render};
use pod_rebalancer::stats::Stats;
use std::collections::BTreeSet;

/// Every metric name in the text of a run that exported everything.
fn exported() -> BTreeSet<String> {
    let run = Run {
        ok: true,
        outcome: "acted",
        failed_stage: None,
        matched: Some(3),
        analysed: 3,
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
    };
    render(&Carried::default(), &run)
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

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = root().join("manifests/dashboards/pod-rebalancer.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let exported = exported();
    assert!(exported.len() >= 12, "{exported:?}");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries no metric of ours");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{expr}: {name} is not exported (we export {exported:?})"
                );
                queried.insert(name);
            }
        }
    }
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
fn the_name_reader_finds_every_metric() {
    assert_eq!(
        metric_names("rebalancer_a + rate(rebalancer_b_total[5m])"),
        ["rebalancer_a", "rebalancer_b_total"]
    );
    assert!(metric_names("up").is_empty());
}
