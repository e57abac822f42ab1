//! pod-rebalancer as a library: the same modules the binary runs, exposed so that
//! property tests, fuzz targets and benchmarks call the real parsers and the real
//! decision. `main.rs` only maps the command line to a run and an exit code.

pub mod act;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cycle;
pub mod error;
pub mod http;
pub mod kube;
pub mod logging;
pub mod plan;
pub mod report;
pub mod show;
pub mod stats;
pub mod victoria;
