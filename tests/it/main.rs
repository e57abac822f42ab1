//! The one integration test binary: the real `pod-rebalancer` binary against a
//! loopback Kubernetes API that replays recorded bodies and records every request,
//! and a real VictoriaMetrics (and Prometheus) fed cAdvisor-shaped series.

mod support;

mod assignor;
mod cycle;
mod dashboard;
mod engines;
mod explain;
mod faults;
mod fleet;
mod manifests;
mod memory;
mod outcomes;
mod plan_command;
mod properties;
mod recipes;
mod simulation;
mod target;
mod victoria;
