//! One live cycle: read the cluster and the metrics, decide, act (unless dry run).
//!
//! `cycle` is that sequence as a function of its clients and `now`, and it returns a
//! value: the outcome with its plan (`Done`), or the stage that failed, why, and how
//! far the cycle got (`Failed`). `run` wraps it for `main`: it builds the clients, then
//! turns the value into the last log line, the metrics and the exit code. This is the
//! only place that sequences I/O; a failure before acting means nothing is removed.

use crate::act::{self, Acted};
use crate::config::{Cluster, Config};
use crate::error::Error;
use crate::http::{Client, Payload};
use crate::kube::{self, EvictionMode, Kube};
use crate::outcome::{self, EXIT_FAILED, EXIT_OK, Outcome, Stage};
use crate::plan::{self, Decision, Inputs, Plan, Removal, Role};
use crate::report::{self, Run};
use crate::{clock, victoria};
use std::time::Instant;

/// The two servers a cycle talks to.
pub struct Clients {
    pub kube: Client,
    pub metrics: Client,
}

impl Clients {
    /// Builds both clients from the files they need, read on every run (tokens rotate).
    pub fn connect(config: &Config, cluster: &Cluster) -> Result<Clients, Failed> {
        let kube = kube::client(&cluster.kube).map_err(|e| Failed::at(Stage::Kubernetes, e))?;
        let metrics =
            victoria::client(&config.prometheus, &config.prometheus.url).map_err(|e| Failed::at(Stage::Metrics, e))?;
        Ok(Clients { kube, metrics })
    }
}

/// A cycle that completed: how it ended, its plan, and what was done to the plan's pods.
#[derive(Debug)]
pub struct Done {
    pub outcome: Outcome,
    pub plan: Plan,
    pub acted: Acted,
}

/// A cycle that failed: the stage, the error, and how far it got.
#[derive(Debug)]
pub struct Failed {
    pub stage: Stage,
    pub error: Error,
    /// How many pods the label selector matched, when the list was read.
    pub matched: Option<usize>,
    /// The plan, when the failure came after the decision (boxed: a `Result` carries
    /// its error by value, and most failures come before any plan).
    pub plan: Option<Box<Plan>>,
    /// Pods removed before the failure.
    pub removed: Vec<Removal>,
}

impl Failed {
    fn at(stage: Stage, error: Error) -> Failed {
        Failed {
            stage,
            error,
            matched: None,
            plan: None,
            removed: Vec::new(),
        }
    }
}

/// The raw bodies a cycle read, by name, for `plan --save`; empty when not read.
#[derive(Debug, Default)]
pub struct Responses {
    pub deployment: Vec<u8>,
    pub pod_pages: Vec<Vec<u8>>,
    pub cpu: Vec<u8>,
}

/// One live run, for `main`: the cycle, then its log line, metrics and exit code.
pub fn run(config: &Config, cluster: &Cluster) -> u8 {
    let started = Instant::now();
    let result =
        Clients::connect(config, cluster).and_then(|clients| cycle(&clients, config, cluster, clock::now_unix()));
    finish(config, &result, started.elapsed().as_secs_f64(), clock::now_unix_f64()).code
}

/// What `finish` made of a cycle: the metrics' view of the run, and the exit code.
#[derive(Debug)]
pub struct Finished {
    pub run: Run,
    pub code: u8,
}

/// Logs a cycle's result, writes and pushes its metrics, and gives its exit code. A
/// metrics file that cannot be written fails the run in the report stage: the pushed
/// metrics, the last log line and the exit code all say so.
pub fn finish(config: &Config, result: &Result<Done, Failed>, duration_secs: f64, end: f64) -> Finished {
    if let Err(failed) = result {
        log::error!(error:% = failed.error; "run failed, no further action");
    }
    let run = publish(config, metrics_of(result, config, duration_secs, end));
    let removed = match result {
        Ok(done) => done.acted.removed.len(),
        Err(failed) => failed.removed.len(),
    };
    log::info!(
        outcome = outcome::label(run.ended), removed, duration_seconds = act::round(duration_secs);
        "run finished"
    );
    let code = if run.ok() { EXIT_OK } else { EXIT_FAILED };
    Finished { run, code }
}

/// The metrics' view of a cycle's result. Pure.
pub fn metrics_of(result: &Result<Done, Failed>, config: &Config, duration_secs: f64, end: f64) -> Run {
    let (ended, matched, plan, removed) = match result {
        Ok(done) => (
            Ok(done.outcome),
            Some(done.plan.pods.len()),
            Some(&done.plan),
            &done.acted.removed,
        ),
        Err(failed) => (
            Err(failed.stage),
            failed.matched,
            failed.plan.as_deref(),
            &failed.removed,
        ),
    };
    let count = |role| removed.iter().filter(|r| r.role == role).count();
    Run {
        target: report::Target {
            namespace: config.namespace.clone(),
            deployment: config.deployment.clone().unwrap_or_default(),
        },
        ended,
        matched,
        analyzed: plan.map_or(0, Plan::analyzed),
        deleted_highest: count(Role::HighestCpu),
        deleted_lowest: count(Role::LowestCpu),
        stats: plan.and_then(|p| p.stats),
        threshold: config.decision.threshold,
        duration_secs,
        end,
    }
}

/// One cycle with these clients at `now`: read, decide, log the plan, act unless dry run.
pub fn cycle(clients: &Clients, config: &Config, cluster: &Cluster, now: i64) -> Result<Done, Failed> {
    let plan = observe(config, cluster, clients, now, None)?;
    log_plan(&plan, config.mode, config.dry_run);
    let done = |outcome, plan| Done {
        outcome,
        plan,
        acted: Acted::default(),
    };
    match &plan.decision {
        Decision::Hold(hold) => return Ok(done(hold.outcome(), plan)),
        Decision::Remove { pods } if config.dry_run => {
            for p in pods {
                log::info!(pod = p.name.as_str(), role = p.role.label(), cpu = act::round(p.cpu); "dry run: would {} pod {}", config.mode.verb(), p.name);
            }
            return Ok(done(Outcome::DryRun, plan));
        }
        Decision::Remove { .. } => {}
    }
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    let mut acted = act::execute(&kube, &plan, config.mode, now);
    match acted.error.take() {
        None => Ok(Done {
            outcome: Outcome::Acted,
            plan,
            acted,
        }),
        Some(error) => Err(Failed {
            stage: Stage::Act,
            error,
            matched: Some(plan.pods.len()),
            plan: Some(Box::new(plan)),
            removed: acted.removed,
        }),
    }
}

/// Reads the cluster and the metrics and decides: the read-only half of a cycle,
/// shared by the live run and the live `plan`. With `keep`, the bodies read are kept.
pub fn observe(
    config: &Config,
    cluster: &Cluster,
    clients: &Clients,
    now: i64,
    mut keep: Option<&mut Responses>,
) -> Result<Plan, Failed> {
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    let rollout = kube
        .deployment(&cluster.deployment, keep.as_deref_mut().map(|r| &mut r.deployment))
        .map_err(|e| Failed::at(Stage::Kubernetes, e))?;
    let select = kube::Select {
        deployment: Some(&cluster.deployment),
        container: Some(&cluster.container),
    };
    let listed = kube
        .pods(&config.selector, select, keep.as_deref_mut().map(|r| &mut r.pod_pages))
        .map_err(|e| Failed::at(Stage::Kubernetes, e))?;
    if listed.ignored > 0 {
        log::info!(ignored = listed.ignored, deployment = cluster.deployment.as_str(); "pods the selector returned that the Deployment does not own are ignored");
    }
    log::debug!(matched = listed.pods.len(); "pods listed");
    let matched = Some(listed.pods.len());
    let query = victoria::cpu_query(
        &config.namespace,
        &cluster.container,
        &config.matchers,
        config.decision.window_secs,
    );
    log::debug!(query = query.as_str(); "querying CPU");
    let samples = victoria::query_cpu(&clients.metrics, &query, keep.map(|r| &mut r.cpu)).map_err(|e| Failed {
        matched,
        ..Failed::at(Stage::Metrics, e)
    })?;
    plan::decide(Inputs {
        pods: listed.pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &config.decision,
        container: &cluster.container,
        namespace: &config.namespace,
        ignored: listed.ignored,
        selector: Some(&config.selector),
    })
    .map_err(|why| Failed {
        matched,
        ..Failed::at(why.stage(), Error::refused("decide", why.to_string()))
    })
}

fn log_plan(plan: &Plan, mode: EvictionMode, dry_run: bool) {
    // A line per pod only when it is printed: at 50,000 pods the formatting alone
    // would cost a run at info level for nothing.
    if log::log_enabled!(log::Level::Debug) {
        for v in plan.pods.iter() {
            log::debug!(
                pod = v.pod.name.as_str(),
                cpu = v.sample.map(act::round),
                cpu_request = v.pod.cpu_request,
                cpu_limit = v.pod.cpu_limit,
                of_request = v.share_of_request().as_deref(),
                eligible = v.excluded.is_none(),
                excluded = v.excluded.map(|e| e.to_string()).unwrap_or_default().as_str();
                "pod"
            );
        }
    }
    let verb = if dry_run {
        format!("would {}", mode.verb())
    } else {
        mode.verb().to_string()
    };
    let (n, mean, stddev, spread) = plan
        .stats
        .map_or((0, 0.0, 0.0, 0.0), |s| (s.n, s.mean, s.stddev, s.spread));
    let decision = match &plan.decision {
        Decision::Remove { .. } => "remove",
        Decision::Hold(h) => h.outcome().label(),
    };
    log::info!(
        decision, matched = plan.pods.len(), eligible = n, healthy = plan.healthy, budget = plan.budget,
        mean = act::round(mean), stddev = act::round(stddev), spread = act::round(spread), threshold = plan.threshold;
        "plan: {}", plan.summary(&verb)
    );
}

/// Writes and pushes the metrics of `run`; the run as published, which failed in the
/// report stage when the metrics file could not be written.
fn publish(config: &Config, mut run: Run) -> Run {
    let previous = config
        .metrics_file
        .as_deref()
        .map(report::read_previous)
        .unwrap_or_default();
    let mut text = report::render(&previous, &run);
    if let Some(path) = &config.metrics_file
        && let Err(e) = report::write_atomic(path, &text)
    {
        log::error!(error:% = e; "metrics file not written");
        run.ended = Err(Stage::Report);
        text = report::render(&previous, &run);
    }
    if let Some(url) = &config.push_url {
        let payload = Payload {
            content_type: "text/plain; version=0.0.4",
            bytes: text.as_bytes(),
        };
        let pushed = victoria::client(&config.prometheus, url)
            .and_then(|client| client.send("push metrics", "POST", "", payload));
        if let Err(e) = pushed {
            log::warn!(error:% = e; "metrics push failed");
        }
    }
    run
}
