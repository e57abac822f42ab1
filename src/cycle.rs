//! One live cycle: read the memory, the cluster and the metrics, decide, act.
//!
//! `cycle` is that sequence as a function of its clients and `now`, and it returns a
//! value: the outcome with its plan (`Done`), or the stage that failed, why, and how
//! far the cycle got (`Failed`). `finish` turns that value into the end-of-run write
//! of the memory, the metrics, the last log line and the exit code; `run` is both for
//! `main`. This is the only place that sequences I/O; a failure before acting means
//! nothing is removed, and the memory is written before anything is (the lease).

use crate::act::{self, Acted};
use crate::config::{Cluster, Config};
use crate::error::Error;
use crate::http::{Client, Payload};
use crate::kube::{self, Kube, StateObject};
use crate::memory::{self, Breaker, Judgement, Memory};
use crate::outcome::{self, EXIT_FAILED, EXIT_OK, Outcome, Stage};
use crate::plan::{self, Decision, Inputs, Plan, Role};
use crate::report::{self, Counters, MemoryGauges, Run};
use crate::{clock, partition, victoria};
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

/// The memory as this run holds it: the state ConfigMap as last read or written, and
/// the document the end of the run writes back.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: StateObject,
    pub memory: Memory,
}

/// A cycle that completed: how it ended, its plan, what was done to the plan's pods,
/// and the memory.
#[derive(Debug)]
pub struct Done {
    pub outcome: Outcome,
    pub plan: Plan,
    pub acted: Acted,
    pub stored: Option<Stored>,
    pub judgement: Option<Judgement>,
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
    /// What was done before the failure (boxed, as the plan is).
    pub acted: Box<Acted>,
    /// The memory, when it was read: the end of the run still writes its counters.
    pub stored: Option<Box<Stored>>,
}

impl Failed {
    fn at(stage: Stage, error: Error) -> Failed {
        Failed {
            stage,
            error,
            matched: None,
            plan: None,
            acted: Box::default(),
            stored: None,
        }
    }

    fn with(mut self, stored: &Option<Stored>) -> Failed {
        self.stored = stored.clone().map(Box::new);
        self
    }
}

/// The raw bodies a cycle read, by name, for `plan --save`; empty when not read.
#[derive(Debug, Default)]
pub struct Responses {
    pub deployment: Vec<u8>,
    pub pod_pages: Vec<Vec<u8>>,
    pub cpu: Vec<u8>,
    pub state: Vec<u8>,
    pub partitions: Vec<u8>,
}

/// One live run, for `main`: the cycle, then the end of the run.
pub fn run(config: &Config, cluster: &Cluster) -> u8 {
    run_at(config, cluster, clock::now_unix()).code
}

/// One live run at `now`: in-process tests move `now` past a hold of the breaker.
pub fn run_at(config: &Config, cluster: &Cluster, now: i64) -> Finished {
    let started = Instant::now();
    let clients = Clients::connect(config, cluster);
    let result = match &clients {
        Ok(clients) => cycle(clients, config, cluster, now),
        Err(failed) => Err(Failed::at(failed.stage, failed.error.clone())),
    };
    let kube = clients.as_ref().ok().map(|c| &c.kube);
    let timing = Timing {
        now,
        duration_secs: started.elapsed().as_secs_f64(),
        end: clock::now_unix_f64(),
    };
    finish(config, kube, result, timing)
}

/// When a run ran: its `now` (Unix seconds, what the decision and the memory judged
/// at), how long it took, and when it ended (Unix seconds, for the metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub now: i64,
    pub duration_secs: f64,
    pub end: f64,
}

/// What `finish` made of a cycle: the metrics' view of the run, and the exit code.
#[derive(Debug)]
pub struct Finished {
    pub run: Run,
    pub code: u8,
}

/// The end of a run: the memory's counters written back (when there is a memory), the
/// metrics written and pushed, the last log line, the exit code. A state ConfigMap or
/// a metrics file that cannot be written fails the run: the metrics, the last log
/// line and the exit code all say so.
pub fn finish(config: &Config, kube: Option<&Client>, result: Result<Done, Failed>, timing: Timing) -> Finished {
    if let Err(failed) = &result {
        log::error!(error:% = failed.error; "run failed, no further action");
    }
    let mut run = metrics_of(&result, config, timing);
    let stored = match &result {
        Ok(done) => done.stored.as_ref(),
        Err(failed) => failed.stored.as_deref(),
    };
    let previous = match stored {
        Some(stored) => stored.memory.counters.clone(),
        None => config
            .metrics_file
            .as_deref()
            .map(report::read_previous)
            .unwrap_or_default(),
    };
    if let (Some(stored), Some(client)) = (stored, kube) {
        let mut memory = stored.memory.clone();
        memory.counters = previous.after(&run);
        let kube = Kube {
            client,
            namespace: &config.namespace,
        };
        if let Err(e) = kube.put_state(&stored.object, &memory::render(&memory)) {
            log::error!(error:% = e; "state not written: the counters and this run's evaluation are lost");
            if run.ok() {
                run.ended = Err(Stage::State);
            }
        }
    }
    let run = publish(config, &previous, run);
    let removed = match &result {
        Ok(done) => done.acted.removed.len(),
        Err(failed) => failed.acted.removed.len(),
    };
    log::info!(
        outcome = outcome::label(run.ended), removed, duration_seconds = act::round(timing.duration_secs);
        "run finished"
    );
    let code = if run.ok() { EXIT_OK } else { EXIT_FAILED };
    Finished { run, code }
}

/// The metrics' view of a cycle's result. Pure.
pub fn metrics_of(result: &Result<Done, Failed>, config: &Config, timing: Timing) -> Run {
    let (ended, matched, plan, acted, stored) = match result {
        Ok(done) => (
            Ok(done.outcome),
            Some(done.plan.pods.len()),
            Some(&done.plan),
            &done.acted,
            done.stored.as_ref(),
        ),
        Err(failed) => (
            Err(failed.stage),
            failed.matched,
            failed.plan.as_deref(),
            &*failed.acted,
            failed.stored.as_deref(),
        ),
    };
    // Dry-run removals were only accepted, never done.
    let deleted = |role| match ended {
        Ok(Outcome::DryRun) => 0,
        _ => acted.removed.iter().filter(|r| r.role == role).count(),
    };
    Run {
        target: report::Target {
            namespace: config.namespace.clone(),
            deployment: config.deployment.clone().unwrap_or_default(),
        },
        ended,
        matched,
        analyzed: plan.map_or(0, Plan::analyzed),
        deleted_highest: deleted(Role::HighestCpu),
        deleted_lowest: deleted(Role::LowestCpu),
        stats: plan.and_then(|p| p.stats),
        threshold: config.decision.threshold,
        duration_secs: timing.duration_secs,
        end: timing.end,
        refused: acted.refused.iter().map(|(_, why)| *why).collect(),
        memory: stored.map(|s| gauges(&s.memory, timing.now)),
        partitions: plan
            .and_then(|p| p.partitions.as_ref())
            .map(report::PartitionGauges::of),
    }
}

/// The memory's gauges at `now`.
fn gauges(memory: &Memory, now: i64) -> MemoryGauges {
    let last_effect = memory
        .actions
        .iter()
        .rev()
        .find_map(|a| a.evaluation.as_ref())
        .map(|e| (e.ratio, e.hot_spot.is_some()));
    MemoryGauges {
        streak: memory.streak,
        hold_until: memory.hold_until.filter(|until| *until > now),
        last_effect,
    }
}

/// One cycle with these clients at `now`: read the memory, read and decide, let the
/// memory judge, write the lease, act (as server-side dry runs under `DRY_RUN`).
pub fn cycle(clients: &Clients, config: &Config, cluster: &Cluster, now: i64) -> Result<Done, Failed> {
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    let mut stored = match &config.state {
        Some(name) => Some(read_state(&kube, name, None)?),
        None => {
            log::info!("no STATE_CONFIGMAP: no memory, every run judges the fleet alone");
            None
        }
    };
    let (plan, fingerprint) = observe(config, cluster, clients, now, None).map_err(|f| f.with(&stored))?;
    let (plan, judgement) = judged(plan, stored.as_ref().map(|s| &s.memory), &fingerprint, config, now);
    log_plan(&plan, config);
    let Decision::Remove { .. } = &plan.decision else {
        let outcome = match &plan.decision {
            Decision::Hold(hold) => hold.outcome(),
            Decision::Remove { .. } => Outcome::Acted,
        };
        if let (Some(s), Some(j)) = (stored.as_mut(), &judgement) {
            s.memory = j.next.clone();
        }
        return Ok(Done {
            outcome,
            plan,
            acted: Acted::default(),
            stored,
            judgement,
        });
    };
    let probe = judgement.as_ref().is_some_and(|j| j.breaker == Breaker::Probe);
    if let (Some(s), Some(j)) = (&stored, &judgement) {
        let intended = (!config.dry_run).then_some((&plan, probe, fingerprint.as_str()));
        stored = Some(lease(&kube, s, j, intended)?);
    }
    let mode = act::Mode {
        eviction: config.mode,
        dry_run: config.dry_run,
    };
    let mut acted = act::execute(&kube, &plan, mode, now);
    // The memory keeps what was removed, not what was meant to be: the document as
    // judged, before the lease added the intended action, plus what really went.
    if let (Some(s), Some(j)) = (stored.as_mut(), &judgement)
        && !config.dry_run
    {
        s.memory = j.next.clone();
        memory::remember(&mut s.memory, &plan, &acted.removed, probe, &fingerprint);
    }
    let outcome = if config.dry_run {
        Outcome::DryRun
    } else {
        Outcome::Acted
    };
    match acted.error.take() {
        None => Ok(Done {
            outcome,
            plan,
            acted,
            stored,
            judgement,
        }),
        Some(error) => Err(Failed {
            stage: Stage::Act,
            error,
            matched: Some(plan.pods.len()),
            plan: Some(Box::new(plan)),
            acted: Box::new(acted),
            stored: stored.map(Box::new),
        }),
    }
}

/// The lease: the evaluation and the intended action (none in a dry run) are written
/// before any removal, with the resourceVersion read; of two runs, one gets a 409
/// here. A failed lease fails the run with nothing removed and nothing more written.
fn lease(
    kube: &Kube,
    stored: &Stored,
    judgement: &Judgement,
    intended: Option<(&Plan, bool, &str)>,
) -> Result<Stored, Failed> {
    let mut next = judgement.next.clone();
    if let Some((plan, probe, fingerprint)) = intended {
        memory::remember(&mut next, plan, plan.removals(), probe, fingerprint);
    }
    let object = kube
        .put_state(&stored.object, &memory::render(&next))
        .map_err(|e| Failed::at(Stage::State, e))?;
    Ok(Stored { object, memory: next })
}

/// The state ConfigMap and its document. A missing ConfigMap, or a document that
/// cannot be read (malformed, a newer version), fails the run: nothing is removed and
/// nothing is overwritten.
pub fn read_state(kube: &Kube, name: &str, keep: Option<&mut Vec<u8>>) -> Result<Stored, Failed> {
    let object = kube.get_state(name, keep).map_err(|e| Failed::at(Stage::State, e))?;
    let memory = memory::parse(object.document.as_deref()).map_err(|why| {
        let doing = format!(
            "read the state document {}/{} (data.{})",
            kube.namespace,
            name,
            kube::STATE_KEY
        );
        Failed::at(Stage::State, Error::new(doing, crate::error::Cause::Malformed(why)))
    })?;
    Ok(Stored { object, memory })
}

/// The plan as the memory allows it, and the memory's judgement; the plan unchanged
/// without a memory.
pub fn judged(
    plan: Plan,
    memory: Option<&Memory>,
    fingerprint: &str,
    config: &Config,
    now: i64,
) -> (Plan, Option<Judgement>) {
    let Some(memory) = memory else {
        return (plan, None);
    };
    let judgement = memory::judge(
        memory,
        &plan,
        fingerprint,
        now,
        config.decision.threshold,
        &config.memory,
    );
    log_judgement(&judgement);
    (memory::apply(plan, &judgement), Some(judgement))
}

fn log_judgement(j: &Judgement) {
    if j.rollout {
        log::info!(
            "the last action is not evaluated: the pod template changed since (a rollout); the streak starts again"
        );
    }
    if let (Some(e), Some(action)) = (&j.evaluation, j.next.actions.last()) {
        let verdict = if e.effective { "effective" } else { "ineffective" };
        log::info!(
            spread_before = act::round(action.spread), spread_after = act::round(e.spread), ratio = act::round(e.ratio),
            verdict, streak = j.next.streak;
            "last action evaluated: {verdict}"
        );
        if let Some(moved) = &e.hot_spot {
            log::info!(from = moved.from.as_str(), to = moved.to.as_str(); "{moved}");
        }
    }
    match j.breaker {
        Breaker::Open { until } => {
            log::info!(until = clock::format_rfc3339(until).as_str(), streak = j.next.streak; "breaker open: no action until the hold ends")
        }
        Breaker::Probe => log::info!(streak = j.next.streak; "breaker half-open: the next action is a probe"),
        Breaker::Closed => {}
    }
}

/// Reads the cluster and the metrics and decides: the read-only half of a cycle,
/// shared by the live run and the live `plan`. With `keep`, the bodies read are kept.
/// Returns the plan and the fingerprint of the Deployment's pod template.
pub fn observe(
    config: &Config,
    cluster: &Cluster,
    clients: &Clients,
    now: i64,
    mut keep: Option<&mut Responses>,
) -> Result<(Plan, String), Failed> {
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
    let samples =
        victoria::query_cpu(&clients.metrics, &query, keep.as_deref_mut().map(|r| &mut r.cpu)).map_err(|e| Failed {
            matched,
            ..Failed::at(Stage::Metrics, e)
        })?;
    let partitions = match &config.partition_query {
        Some(query) => {
            log::debug!(query = query.as_str(); "querying partitions");
            let names = listed.pods.iter().map(|p| p.name.as_str());
            let keep = keep.map(|r| &mut r.partitions);
            let answer = victoria::query_partitions(&clients.metrics, query, &config.partition_labels, names, keep);
            Some(answer.map_err(|e| Failed {
                matched,
                ..Failed::at(Stage::Metrics, e)
            })?)
        }
        None => None,
    };
    let inputs = Inputs {
        pods: listed.pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &config.decision,
        container: &cluster.container,
        namespace: &config.namespace,
        ignored: listed.ignored,
        selector: Some(&config.selector),
    };
    let plan = plan::decide_with_partitions(inputs, partitions).map_err(|why| Failed {
        matched,
        ..Failed::at(why.stage(), Error::refused("decide", why.to_string()))
    })?;
    if let (Some(query), Some(e)) = (&config.partition_query, &plan.partitions) {
        match e.verdict {
            partition::Verdict::Missing => log::warn!(query = query.as_str(); "partitions: {e}"),
            _ => log::info!(verdict = e.verdict.label(), r2 = e.r2().map(act::round); "partitions: {e}"),
        }
    }
    Ok((plan, rollout.fingerprint))
}

fn log_plan(plan: &Plan, config: &Config) {
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
    let verb = if config.dry_run {
        format!("would {}", config.mode.verb())
    } else {
        config.mode.verb().to_string()
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

/// Writes and pushes the metrics of `run` on top of `previous`; the run as published,
/// which failed in the report stage when the metrics file could not be written.
fn publish(config: &Config, previous: &Counters, mut run: Run) -> Run {
    let mut text = report::render(previous, &run);
    if let Some(path) = &config.metrics_file
        && let Err(e) = report::write_atomic(path, &text)
    {
        log::error!(error:% = e; "metrics file not written");
        if run.ok() {
            run.ended = Err(Stage::Report);
        }
        text = report::render(previous, &run);
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
