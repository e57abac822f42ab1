//! The one integration test binary: the real `pod-rebalancer` binary against a
//! loopback Kubernetes API that replays recorded bodies and a real VictoriaMetrics.

mod manifests;
