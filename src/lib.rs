//! pod-rebalancer as a library: the same modules the binary runs, exposed so that
//! integration tests, fuzz targets and benchmarks call the real parsers, the real
//! decision and the real cycle (in-process, against loopback servers).

pub mod act;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cycle;
pub mod error;
pub mod http;
pub mod kube;
pub mod logging;
pub mod memory;
pub mod outcome;
pub mod partition;
pub mod plan;
pub mod plan_command;
pub mod report;
pub mod show;
pub mod stats;
pub mod victoria;
