//! One live run: read the memory, the cluster and the metrics, decide for each target,
//! act within the run's budget.
//!
//! A run serves its targets: one Deployment in single mode, every Deployment that
//! `TARGET_SELECTOR` matches in fleet mode (SPEC §13). Both are the same sequence, so
//! each rule has one copy: the reads happen once for all targets, each target is
//! decided alone by `plan::decide` and judged by its own memory, the targets whose
//! plans remove pods are served within one budget, one lease covers every target that
//! acts, and one end-of-run write records them all.
//!
//! `cycle` is that sequence as a function of its clients and `now`, and it returns a
//! value, `Cycle`: the memory, each target's part (its plan, what was done, how it
//! ended) and the failure the targets share, if any. `finish` turns that value into
//! the end-of-run record of the memory, the metrics, the last log line and the exit
//! code; `run` is both for `main`. This is the only place that sequences I/O; a
//! failure before acting means nothing is removed, and the memory is written before
//! anything is (the lease).

use crate::act::{self, Acted};
use crate::config::{self, Cluster, Config, Scope, TargetSettings};
use crate::error::Error;
use crate::http::{Client, Payload};
use crate::kube::{self, Involved, Kube, Route, StateObject};
use crate::memory::{self, Breaker, Judgement, Memory};
use crate::outcome::{self, EXIT_FAILED, EXIT_OK, Ended, Outcome, Stage};
use crate::plan::{self, Decision, Inputs, Plan, Role, Rollout};
use crate::report::{self, Counters, Exported, Info, Labels, MemoryGauges, Run, Sheet};
use crate::{clock, partition, victoria};
use std::collections::BTreeMap;
use std::time::Instant;

/// The two servers a run talks to.
pub struct Clients {
    pub kube: Client,
    pub metrics: Client,
}

impl Clients {
    /// Builds both clients from the files they need, read on every run (tokens rotate).
    pub fn connect(config: &Config, cluster: &Cluster) -> Result<Clients, Failure> {
        let kube = kube::client(&cluster.kube).map_err(|e| Failure::at(Stage::Kubernetes, e))?;
        let metrics =
            victoria::client(&config.prometheus, &config.prometheus.url).map_err(|e| Failure::at(Stage::Metrics, e))?;
        Ok(Clients { kube, metrics })
    }
}

/// Why a run or a target failed: the stage and the error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub stage: Stage,
    pub error: Error,
}

impl Failure {
    pub fn at(stage: Stage, error: Error) -> Failure {
        Failure { stage, error }
    }
}

/// One run: the memory, each target's part, and a failure they all share.
#[derive(Debug)]
pub struct Cycle {
    /// Fleet mode (SPEC §13).
    pub fleet: bool,
    /// The memory, once the state ConfigMap was read.
    pub ledger: Option<Ledger>,
    /// The targets, sorted by name: in single mode the one Deployment from the start,
    /// in fleet mode once the Deployment list was read.
    pub targets: Vec<Target>,
    /// A failure of the run as a whole (the state, a shared read, the lease): every
    /// target that had not ended ends with it.
    pub shared: Option<Failure>,
}

/// One target's part of a run: set as far as the run got.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    /// The Deployment, once read.
    pub rollout: Option<Rollout>,
    /// What it runs with, once its annotations were read.
    pub settings: Option<TargetSettings>,
    /// How many pods it owns, once the list was read.
    pub matched: Option<usize>,
    /// The plan, once decided (and held by the memory, when there is one).
    pub plan: Option<Plan>,
    /// Its memory's judgement of the plan.
    pub judgement: Option<Judgement>,
    /// What was done to the plan's pods.
    pub acted: Acted,
    /// How it ended; `None` while it has not.
    pub ended: Option<Result<Outcome, Failure>>,
}

impl Target {
    fn new(name: &str) -> Target {
        Target {
            name: name.to_string(),
            rollout: None,
            settings: None,
            matched: None,
            plan: None,
            judgement: None,
            acted: Acted::default(),
            ended: None,
        }
    }

    /// How it ended, as the labels see it.
    pub fn outcome(&self) -> Ended {
        match &self.ended {
            Some(Ok(outcome)) => Ok(*outcome),
            Some(Err(f)) => Err(f.stage),
            // A target is always ended by `cycle`; one that is not failed nowhere.
            None => Err(Stage::Kubernetes),
        }
    }

    fn dry_run(&self, config: &Config) -> bool {
        self.settings.as_ref().map_or(config.dry_run, |s| s.dry_run)
    }

    fn deployment(&self) -> Involved {
        let uid = self.rollout.as_ref().map_or("", |r| r.uid.as_str());
        Involved::deployment(&self.name, uid)
    }
}

impl Cycle {
    /// The one target of a single-mode run.
    pub fn single(&self) -> Option<&Target> {
        self.targets.first().filter(|_| !self.fleet)
    }

    /// How a single-mode run ended; for a fleet, its first failure or its first
    /// target's outcome.
    pub fn ended(&self) -> Ended {
        if self.targets.is_empty() {
            return Err(self.shared.as_ref().map_or(Stage::Kubernetes, |f| f.stage));
        }
        self.targets
            .iter()
            .map(Target::outcome)
            .find(Result::is_err)
            .unwrap_or_else(|| self.targets[0].outcome())
    }

    /// The first failure, the run's or a target's.
    pub fn failure(&self) -> Option<&Failure> {
        self.shared.as_ref().or_else(|| {
            self.targets
                .iter()
                .find_map(|t| t.ended.as_ref().and_then(|e| e.as_ref().err()))
        })
    }

    /// A failure shared by all is an error run for all (SPEC §13): every target that
    /// has not failed on its own ends with it.
    fn end_with_shared(&mut self) {
        if let Some(failure) = &self.shared {
            for t in self.targets.iter_mut().filter(|t| !matches!(t.ended, Some(Err(_)))) {
                t.ended = Some(Err(failure.clone()));
            }
        }
    }
}

/// The memory as one run holds it.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The state ConfigMap as last read or written: the next write carries its
    /// resourceVersion.
    pub object: StateObject,
    /// The document as read.
    pub doc: Doc,
    /// Whether the end of the run writes its record: not while another run's action is
    /// in progress, nor after a refused lease (SPEC §11).
    pub writes: bool,
}

/// A state document: single mode's, or a fleet's (one entry per target).
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    One(Memory),
    Fleet(memory::Fleet),
}

impl Doc {
    /// The memory of target `name` as read, if there is one.
    pub fn entry(&self, name: &str) -> Option<&Memory> {
        match self {
            Doc::One(memory) => Some(memory),
            Doc::Fleet(fleet) => fleet.targets.get(name),
        }
    }

    fn in_progress(&self, now: i64, settings: &memory::Settings) -> Option<i64> {
        match self {
            Doc::One(memory) => memory::in_progress(memory, now, settings),
            Doc::Fleet(fleet) => fleet.in_progress(now, settings),
        }
    }

    fn render(&self) -> String {
        match self {
            Doc::One(memory) => memory::render(memory),
            Doc::Fleet(fleet) => memory::render_fleet(fleet),
        }
    }

    /// The memory of target `name` as read, or a fresh one naming it.
    pub fn entry_or_fresh(&self, name: &str) -> Memory {
        self.entry(name).cloned().unwrap_or_else(|| Memory {
            deployment: Some(name.to_string()),
            ..Memory::default()
        })
    }

    /// This document with each target's entry replaced by `entry(target, as read)`,
    /// stamped in fleet mode as found a target at `now`.
    fn with(&self, targets: &[Target], now: i64, entry: impl Fn(&Target, Memory) -> Memory) -> Doc {
        match self {
            Doc::One(read) => Doc::One(match targets.first() {
                Some(t) => entry(t, read.clone()),
                None => read.clone(),
            }),
            Doc::Fleet(read) => {
                let mut fleet = read.clone();
                for t in targets {
                    fleet
                        .targets
                        .insert(t.name.clone(), entry(t, self.entry_or_fresh(&t.name)));
                }
                let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                fleet.keep_recent(&names, now);
                Doc::Fleet(fleet)
            }
        }
    }
}

/// The raw bodies a run read, by name, for `plan --save`; empty when not read.
#[derive(Debug, Default)]
pub struct Responses {
    pub deployment: Vec<u8>,
    pub deployment_pages: Vec<Vec<u8>>,
    pub pod_pages: Vec<Vec<u8>>,
    pub cpu: Vec<u8>,
    pub state: Vec<u8>,
    pub partitions: Vec<u8>,
}

/// One live run, for `main`: the cycle, then the end of the run.
pub fn run(config: &Config, cluster: &Cluster) -> u8 {
    if config.decision.stabilization_secs < config.decision.window_secs {
        log::warn!(
            stabilization_window = clock::format_duration(config.decision.stabilization_secs).as_str(),
            window = clock::format_duration(config.decision.window_secs).as_str();
            "STABILIZATION_WINDOW is shorter than METRICS_TIME_WINDOW: an evaluation may read rate windows from before the action"
        );
    }
    run_at(config, cluster, clock::now_unix()).code
}

/// One live run at `now`: in-process tests move `now` past a hold of the breaker.
pub fn run_at(config: &Config, cluster: &Cluster, now: i64) -> Finished {
    let started = Instant::now();
    let clients = Clients::connect(config, cluster);
    let cycle = match &clients {
        Ok(clients) => cycle(clients, config, cluster, now),
        Err(failure) => unconnected(cluster, failure.clone()),
    };
    let kube = clients.as_ref().ok().map(|c| &c.kube);
    let timing = Timing {
        now,
        duration_secs: started.elapsed().as_secs_f64(),
        end: clock::now_unix_f64(),
    };
    finish(config, kube, cycle, timing)
}

/// When a run ran: its `now` (Unix seconds, what the decision and the memory judged
/// at), how long it took, and when it ended (Unix seconds, for the metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub now: i64,
    pub duration_secs: f64,
    pub end: f64,
}

/// What `finish` made of a run: each target's samples (the metrics' view of its run
/// and the counters it exported, `None`: none), and the exit code.
#[derive(Debug)]
pub struct Finished {
    pub targets: Vec<Exported>,
    pub code: u8,
}

impl Finished {
    /// The one target of a single-mode run (the first otherwise).
    pub fn single(&self) -> &Exported {
        &self.targets[0]
    }
}

/// The end of a run, in this order: the memory's end-of-run record (with the
/// counters), the metrics file, the push, the last log line, the exit code. A state
/// ConfigMap or a metrics file that cannot be written fails the run: the metrics, the
/// last log line and the exit code all say so. With a memory, the counters exported
/// are exactly those stored; a run that stored none exports none.
pub fn finish(config: &Config, kube: Option<&Client>, cycle: Cycle, timing: Timing) -> Finished {
    if let Some(failure) = &cycle.shared {
        log::error!(error:% = failure.error; "run failed, no further action");
    }
    for t in cycle.targets.iter().filter(|_| cycle.shared.is_none()) {
        match &t.ended {
            Some(Err(failure)) if cycle.fleet => {
                log::error!(deployment = t.name.as_str(), error:% = failure.error; "target failed, no further action for it")
            }
            Some(Err(failure)) => log::error!(error:% = failure.error; "run failed, no further action"),
            _ => {}
        }
    }
    let mut runs = metrics_of(&cycle, config, timing);
    let stored = match &config.state {
        Some(_) => record(config, kube, &cycle, &mut runs, timing.now),
        None => None,
    };
    let previous = match &config.state {
        Some(_) => BTreeMap::new(),
        None => config
            .metrics_file
            .as_deref()
            .map(report::read_previous)
            .unwrap_or_default(),
    };
    let exported = |runs: &[Run]| -> Vec<Exported> {
        runs.iter()
            .map(|run| {
                let name = run.labels.deployment.clone().unwrap_or_default();
                let counters = match (&config.state, &stored) {
                    (Some(_), Some(stored)) => stored.get(&name).cloned(),
                    (Some(_), None) => None,
                    (None, _) => {
                        // A file written without target labels (an older version's)
                        // is single mode's; in fleet mode the namespace-only samples
                        // are of a run that knew no target, and are no target's.
                        let unlabelled = (!cycle.fleet).then(|| previous.get("")).flatten();
                        let before = previous.get(&name).or(unlabelled).cloned();
                        Some(before.unwrap_or_default().after(run))
                    }
                };
                Exported {
                    run: run.clone(),
                    counters,
                }
            })
            .collect()
    };
    let sheet = |runs: &[Run]| Sheet {
        targets: exported(runs),
        fleet: cycle.fleet.then(|| (fleet_labels(config), by_outcome(runs))),
    };
    let mut text = report::render(&sheet(&runs));
    if let Some(path) = &config.metrics_file
        && let Err(e) = report::write_atomic(path, &text)
    {
        log::error!(error:% = e; "metrics file not written");
        for run in runs.iter_mut().filter(|r| r.ok()) {
            run.ended = Err(Stage::Report);
        }
        text = report::render(&sheet(&runs));
    }
    push(config, &text);
    let failed = runs.iter().any(|r| !r.ok());
    last_line(&cycle, &runs, timing);
    Finished {
        targets: exported(&runs),
        code: if failed { EXIT_FAILED } else { EXIT_OK },
    }
}

/// The last log line: single mode's outcome, or the fleet's targets by outcome and
/// each failed one by name.
fn last_line(cycle: &Cycle, runs: &[Run], timing: Timing) {
    let removed: usize = cycle.targets.iter().map(|t| t.acted.removed().count()).sum();
    let duration_seconds = act::round(timing.duration_secs);
    if !cycle.fleet {
        let ended = runs.first().map_or(Err(Stage::Kubernetes), |r| r.ended);
        log::info!(outcome = outcome::label(ended), removed, duration_seconds; "run finished");
        return;
    }
    let counts = by_outcome(runs);
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.ok())
        .filter_map(|r| r.labels.deployment.as_deref())
        .collect();
    let summary: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    let outcome = if runs.iter().all(Run::ok) { "ok" } else { outcome::ERROR };
    log::info!(
        outcome, targets = cycle.targets.len(), removed, duration_seconds, failed = failed.join(",").as_str();
        "run finished: {} target(s): {}{}",
        cycle.targets.len(),
        if summary.is_empty() { "none".to_string() } else { summary.join(", ") },
        if failed.is_empty() { String::new() } else { format!("; failed: {}", failed.join(", ")) }
    );
}

/// The targets of a fleet run by outcome label.
fn by_outcome(runs: &[Run]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for run in runs.iter().filter(|r| r.labels.deployment.is_some()) {
        *counts.entry(outcome::label(run.ended)).or_default() += 1;
    }
    counts
}

fn fleet_labels(config: &Config) -> Labels {
    Labels {
        namespace: config.namespace.clone(),
        deployment: None,
        extra: config.metrics_labels.clone(),
    }
}

/// The end-of-run record: the memory with each target's counters, written back. The
/// counters stored by target, or `None` when the run stored none (no memory read,
/// another run's action in progress, a refused lease, no target known, a failed
/// write: then every run fails in the state stage).
fn record(
    config: &Config,
    kube: Option<&Client>,
    cycle: &Cycle,
    runs: &mut [Run],
    now: i64,
) -> Option<BTreeMap<String, Counters>> {
    let ledger = cycle.ledger.as_ref().filter(|l| l.writes)?;
    let client = kube?;
    if cycle.targets.is_empty() {
        return None;
    }
    let run_of = |name: &str| runs.iter().find(|r| r.labels.deployment.as_deref() == Some(name));
    let doc = ledger.doc.with(&cycle.targets, now, |t, read| {
        let mut memory = match (&t.judgement, &t.plan) {
            (Some(judgement), Some(plan)) => {
                let answers = if t.dry_run(config) {
                    &[][..]
                } else {
                    &t.acted.answers[..]
                };
                judgement.settle(plan, answers)
            }
            _ => read,
        };
        if let Some(run) = run_of(&t.name) {
            memory.counters = memory.counters.after(run);
        }
        memory
    });
    let kube = Kube {
        client,
        namespace: &config.namespace,
    };
    match kube.put_state(&ledger.object, &doc.render()) {
        Ok(_) => Some(
            cycle
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), doc.entry(&t.name)?.counters.clone())))
                .collect(),
        ),
        Err(e) => {
            log::error!(error:% = e; "state not written: this run's counters and evaluations are lost; a leased action stays recorded for the next run");
            for run in runs.iter_mut().filter(|r| r.ok()) {
                run.ended = Err(Stage::State);
            }
            None
        }
    }
}

/// POSTs the metrics text to `METRICS_PUSH_URL`; a failed push is a warning.
fn push(config: &Config, text: &str) {
    let Some(url) = &config.push_url else { return };
    let payload = Payload {
        content_type: "text/plain; version=0.0.4",
        bytes: text.as_bytes(),
    };
    let pushed =
        victoria::client(&config.prometheus, url).and_then(|client| client.send("push metrics", "POST", "", payload));
    if let Err(e) = pushed {
        log::warn!(error:% = e; "metrics push failed");
    }
}

/// The metrics' view of a run: one `Run` per target, or one labelled with the
/// namespace only for a fleet run that failed before it knew its targets. Pure.
pub fn metrics_of(cycle: &Cycle, config: &Config, timing: Timing) -> Vec<Run> {
    if cycle.targets.is_empty() {
        let failure = cycle.shared.as_ref().map_or(Stage::Kubernetes, |f| f.stage);
        return vec![Run {
            labels: fleet_labels(config),
            ended: Err(failure),
            matched: None,
            analyzed: 0,
            deleted_highest: 0,
            deleted_lowest: 0,
            stats: None,
            threshold: config.decision.threshold,
            duration_secs: timing.duration_secs,
            end: timing.end,
            refused: Vec::new(),
            memory: None,
            info: None,
            partitions: None,
        }];
    }
    cycle
        .targets
        .iter()
        .map(|t| target_run(t, cycle, config, timing))
        .collect()
}

fn target_run(t: &Target, cycle: &Cycle, config: &Config, timing: Timing) -> Run {
    let dry_run = t.dry_run(config);
    // Dry-run removals were only accepted, never done, whatever the run's end.
    let deleted = |role| match dry_run {
        true => 0,
        false => t.acted.removed().filter(|r| r.role == role).count(),
    };
    let settings = t.settings.clone().unwrap_or_else(|| TargetSettings {
        container: config.container.clone().unwrap_or_else(|| t.name.clone()),
        decision: config.decision.clone(),
        dry_run,
    });
    let memory = cycle.ledger.as_ref().and_then(|l| {
        let memory = t.judgement.as_ref().map(|j| &j.next).or_else(|| l.doc.entry(&t.name))?;
        Some(gauges(memory, timing.now))
    });
    Run {
        labels: Labels {
            namespace: config.namespace.clone(),
            deployment: Some(t.name.clone()),
            extra: config.metrics_labels.clone(),
        },
        ended: t.outcome(),
        matched: t.matched,
        analyzed: t.plan.as_ref().map_or(0, Plan::analyzed),
        deleted_highest: deleted(Role::HighestCpu),
        deleted_lowest: deleted(Role::LowestCpu),
        stats: t.plan.as_ref().and_then(|p| p.stats),
        threshold: settings.decision.threshold,
        duration_secs: timing.duration_secs,
        end: timing.end,
        refused: t.acted.refused().collect(),
        memory,
        info: Some(Info {
            dry_run,
            eviction_mode: config.mode.verb(),
            container: settings.container.clone(),
            window_secs: settings.decision.window_secs,
            threshold: settings.decision.threshold,
            min_pods: settings.decision.min_pods,
            max_ineffective: config.memory.max_ineffective,
        }),
        partitions: t
            .plan
            .as_ref()
            .and_then(|p| p.partitions.as_ref())
            .map(report::PartitionGauges::of),
    }
}

/// The memory's gauges at `now`.
pub fn gauges(memory: &Memory, now: i64) -> MemoryGauges {
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

/// A run that could not build its clients (a token or CA file unreadable): it failed
/// before any read.
pub fn unconnected(cluster: &Cluster, failure: Failure) -> Cycle {
    let mut cycle = empty(cluster);
    cycle.shared = Some(failure);
    cycle.end_with_shared();
    cycle
}

/// A run before any read: its targets as far as the configuration names them.
fn empty(cluster: &Cluster) -> Cycle {
    let (fleet, targets) = match &cluster.scope {
        Scope::One { deployment } => (false, vec![Target::new(deployment)]),
        Scope::Fleet { .. } => (true, Vec::new()),
    };
    Cycle {
        fleet,
        ledger: None,
        targets,
        shared: None,
    }
}

/// One run with these clients at `now`: read and decide for every target, then the
/// Warning Events, the budget, the lease, and the removals (as server-side dry runs
/// for a dry target).
pub fn cycle(clients: &Clients, config: &Config, cluster: &Cluster, now: i64) -> Cycle {
    let mut cycle = observe(clients, config, cluster, now, None);
    if cycle.shared.is_none() {
        let kube = Kube {
            client: &clients.kube,
            namespace: &config.namespace,
        };
        warn(&kube, &cycle, config, now);
        if let Err(failure) = act_within_budget(&kube, &mut cycle, config, now) {
            cycle.shared = Some(failure);
        }
    }
    cycle.end_with_shared();
    cycle
}

/// The read-only half of a run, shared by the live run and the live `plan`: the
/// memory, the targets, the pods and the metrics, read once for all targets, and each
/// target decided and judged. With `keep`, the bodies read are kept. Every target that
/// can be decided has its plan; one that cannot has ended.
pub fn observe(clients: &Clients, config: &Config, cluster: &Cluster, now: i64, keep: Option<&mut Responses>) -> Cycle {
    let mut cycle = empty(cluster);
    if let Err(failure) = read(&mut cycle, clients, config, cluster, now, keep) {
        cycle.shared = Some(failure);
    }
    cycle.end_with_shared();
    cycle
}

/// The reads and the decisions of `observe`, in order.
fn read(
    cycle: &mut Cycle,
    clients: &Clients,
    config: &Config,
    cluster: &Cluster,
    now: i64,
    mut keep: Option<&mut Responses>,
) -> Result<(), Failure> {
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    match &config.state {
        Some(name) => {
            let single = cycle.single().map(|t| t.name.clone());
            let keep = keep.as_deref_mut().map(|r| &mut r.state);
            cycle.ledger = Some(read_state(&kube, name, single.as_deref(), config, now, keep)?);
        }
        None => log::info!("no STATE_CONFIGMAP: no memory, every run judges the fleet alone"),
    }
    let leased = cycle
        .ledger
        .as_ref()
        .and_then(|l| l.doc.in_progress(now, &config.memory));
    read_targets(cycle, &kube, config, cluster, now, keep.as_deref_mut())?;
    let live: Vec<usize> = (0..cycle.targets.len())
        .filter(|&i| cycle.targets[i].ended.is_none())
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let reads = read_pods_and_metrics(cycle, &live, &kube, &clients.metrics, config, keep)?;
    for (i, (pods, partitions)) in live.into_iter().zip(reads.pods.into_iter().zip(reads.partitions)) {
        decide_target(
            cycle,
            i,
            pods,
            partitions,
            &reads.samples,
            reads.ignored,
            leased,
            config,
            now,
        );
    }
    Ok(())
}

/// The targets and their settings: single mode's Deployment, or fleet mode's list.
/// A target whose annotations are invalid fails alone; a paused one is decided from
/// its Deployment alone.
fn read_targets(
    cycle: &mut Cycle,
    kube: &Kube,
    config: &Config,
    cluster: &Cluster,
    now: i64,
    keep: Option<&mut Responses>,
) -> Result<(), Failure> {
    let rollouts = match &cluster.scope {
        Scope::One { deployment } => {
            let keep = keep.map(|r| &mut r.deployment);
            vec![
                kube.deployment(deployment, keep)
                    .map_err(|e| Failure::at(Stage::Kubernetes, e))?,
            ]
        }
        Scope::Fleet { selector } => {
            let keep = keep.map(|r| &mut r.deployment_pages);
            let rollouts = kube
                .deployments(selector, keep)
                .map_err(|e| Failure::at(Stage::Kubernetes, e))?;
            if rollouts.is_empty() {
                return Err(Failure::at(
                    Stage::Kubernetes,
                    Error::refused(
                        "list deployments",
                        format!(
                            "no deployment matches TARGET_SELECTOR {selector} in namespace {}",
                            config.namespace
                        ),
                    ),
                ));
            }
            cycle.targets = rollouts.iter().map(|r| Target::new(&r.name)).collect();
            log::info!(targets = rollouts.len(), selector = selector.as_str(); "targets listed");
            rollouts
        }
    };
    for (t, rollout) in cycle.targets.iter_mut().zip(rollouts) {
        let settings = config::target_settings(config, &rollout, cycle.fleet)
            .and_then(|s| config::paused(&rollout).map(|paused| (s, paused)));
        match settings {
            Err(why) => {
                let doing = format!("read deployment {}/{}", config.namespace, t.name);
                t.ended = Some(Err(Failure::at(Stage::Kubernetes, Error::refused(doing, why))));
            }
            Ok((settings, true)) => {
                t.plan = Some(Plan::paused(
                    now,
                    &config.namespace,
                    &settings.container,
                    &settings.decision,
                    &t.name,
                ));
                t.settings = Some(settings);
                t.ended = Some(Ok(Outcome::Paused));
            }
            Ok((settings, false)) => t.settings = Some(settings),
        }
        t.rollout = Some(rollout);
    }
    Ok(())
}

/// What the shared reads gave the live targets: each one's pods and partition answer
/// (in the order of `live`), the CPU samples of all, and how many listed pods no
/// target owns.
struct Reads {
    pods: Vec<Vec<plan::Pod>>,
    partitions: Vec<Option<partition::Answer>>,
    samples: plan::Samples,
    ignored: usize,
}

/// The pod list and the queries, once for every live target.
fn read_pods_and_metrics(
    cycle: &mut Cycle,
    live: &[usize],
    kube: &Kube,
    metrics: &Client,
    config: &Config,
    mut keep: Option<&mut Responses>,
) -> Result<Reads, Failure> {
    let container_of = |i: usize| cycle.targets[i].settings.as_ref().map_or("", |s| s.container.as_str());
    // Targets are sorted by name, and so is `live`: the route's order.
    let owners: Vec<(&str, &str)> = live
        .iter()
        .map(|&i| (cycle.targets[i].name.as_str(), container_of(i)))
        .collect();
    let listed = kube
        .pods(
            config.selector.as_deref(),
            Route::Owned(&owners),
            keep.as_deref_mut().map(|r| &mut r.pod_pages),
        )
        .map_err(|e| Failure::at(Stage::Kubernetes, e))?;
    if listed.ignored > 0 {
        log::info!(ignored = listed.ignored; "pods the selector returned that no target owns are ignored");
    }
    let containers: Vec<String> = owners.iter().map(|(_, c)| c.to_string()).collect();
    drop(owners);
    for (&i, pods) in live.iter().zip(&listed.by_target) {
        cycle.targets[i].matched = Some(pods.len());
        log::debug!(deployment = cycle.targets[i].name.as_str(), matched = pods.len(); "pods listed");
    }
    // A consumer scaled to zero has nothing to measure: no query.
    if listed.kept() == 0 {
        return Ok(Reads {
            partitions: vec![None; live.len()],
            pods: listed.by_target,
            samples: plan::Samples::default(),
            ignored: listed.ignored,
        });
    }
    let fleet = cycle.fleet;
    let one = (!fleet).then(|| containers[0].as_str());
    let query = victoria::cpu_query(&config.namespace, one, &config.matchers, config.decision.window_secs);
    log::debug!(query = query.as_str(); "querying CPU");
    let wanted = victoria::Wanted::pods(
        listed
            .by_target
            .iter()
            .zip(&containers)
            .flat_map(|(pods, c)| pods.iter().map(move |p| (p.name.as_str(), fleet.then_some(c.as_str())))),
    );
    let samples = victoria::query_cpu(metrics, &query, &wanted, keep.as_deref_mut().map(|r| &mut r.cpu))
        .map_err(|e| Failure::at(Stage::Metrics, e))?;
    drop(wanted);
    let partitions = partitions_by_target(metrics, config, &listed.by_target, keep.map(|r| &mut r.partitions))?;
    Ok(Reads {
        pods: listed.by_target,
        partitions,
        samples,
        ignored: listed.ignored,
    })
}

/// `PARTITION_QUERY`'s answer, once for every target (when it is set), each sample
/// going to the target that owns its pod.
fn partitions_by_target(
    metrics: &Client,
    config: &Config,
    by_target: &[Vec<plan::Pod>],
    keep: Option<&mut Vec<u8>>,
) -> Result<Vec<Option<partition::Answer>>, Failure> {
    let Some(query) = &config.partition_query else {
        return Ok(vec![None; by_target.len()]);
    };
    log::debug!(query = query.as_str(); "querying partitions");
    let names = by_target.iter().flatten().map(|p| p.name.as_str());
    let answer = victoria::query_partitions(metrics, query, &config.partition_labels, names, keep)
        .map_err(|e| Failure::at(Stage::Metrics, e))?;
    let owner: BTreeMap<&str, usize> = by_target
        .iter()
        .enumerate()
        .flat_map(|(t, pods)| pods.iter().map(move |p| (p.name.as_str(), t)))
        .collect();
    Ok(answer
        .split(by_target.len(), |pod| owner.get(pod).copied())
        .into_iter()
        .map(Some)
        .collect())
}

/// One target decided as single mode decides (SPEC §6, §11, §12), and judged by its
/// own memory.
#[allow(clippy::too_many_arguments)]
fn decide_target(
    cycle: &mut Cycle,
    i: usize,
    pods: Vec<plan::Pod>,
    partitions: Option<partition::Answer>,
    samples: &plan::Samples,
    ignored: usize,
    leased: Option<i64>,
    config: &Config,
    now: i64,
) {
    let fleet = cycle.fleet;
    let memory = cycle
        .ledger
        .as_ref()
        .map(|l| l.doc.entry_or_fresh(&cycle.targets[i].name));
    let t = &mut cycle.targets[i];
    let (Some(settings), Some(rollout)) = (&t.settings, &t.rollout) else {
        return;
    };
    let decided = plan::decide(Inputs {
        pods,
        samples,
        rollout: Some(rollout),
        now,
        settings: &settings.decision,
        container: &settings.container,
        namespace: &config.namespace,
        // In fleet mode the list is the namespace's: another target's pods are not
        // "ignored" by this one's selector.
        ignored: if fleet { 0 } else { ignored },
        selector: Some(config.selector.as_deref().unwrap_or("")),
        leased,
        partitions,
    });
    let plan = match decided {
        Ok(plan) => plan,
        Err(why) => {
            let doing = if fleet {
                format!("decide deployment {}", t.name)
            } else {
                "decide".to_string()
            };
            t.ended = Some(Err(Failure::at(why.stage(), Error::refused(doing, why.to_string()))));
            return;
        }
    };
    if let (Some(query), Some(e)) = (&config.partition_query, &plan.partitions) {
        match e.verdict {
            partition::Verdict::Missing => {
                log::warn!(deployment = t.name.as_str(), query = query.as_str(); "partitions: {e}")
            }
            _ => {
                log::info!(deployment = t.name.as_str(), verdict = e.verdict.label(), r2 = e.r2().map(act::round); "partitions: {e}")
            }
        }
    }
    let (plan, judgement) = judged(plan, memory.as_ref(), &rollout.fingerprint, config);
    log_plan(&plan, config, settings.dry_run, fleet.then_some(t.name.as_str()));
    t.judgement = judgement;
    t.plan = Some(plan);
}

/// The plan as the memory allows it, and the memory's judgement (logged); the plan
/// unchanged without a memory, or for a paused Deployment (no pods were read: nothing
/// to judge).
pub fn judged(plan: Plan, memory: Option<&Memory>, fingerprint: &str, config: &Config) -> (Plan, Option<Judgement>) {
    let Some(memory) = memory else {
        return (plan, None);
    };
    if matches!(plan.decision, Decision::Hold(plan::Hold::Paused { .. })) {
        return (plan, None);
    }
    let judgement = memory::judge(memory, &plan, fingerprint, &config.memory);
    log_judgement(&judgement);
    (judgement.apply(plan), Some(judgement))
}

/// The Warning Events on the Deployments: a breaker that opened, an imbalance found
/// unfixable for the first time since the last action. Never for a dry target.
fn warn(kube: &Kube, cycle: &Cycle, config: &Config, now: i64) {
    for t in cycle.targets.iter().filter(|t| !t.dry_run(config)) {
        let (Some(judgement), Some(plan)) = (&t.judgement, &t.plan) else {
            continue;
        };
        if judgement.opened {
            let message = breaker_message(judgement, plan);
            act::announce(kube, &t.deployment(), "Warning", "RebalancerBreakerOpen", &message, now);
        }
        if judgement.warn_unfixable {
            let message = format!(
                "pod-rebalancer: no eviction can balance this group: {}",
                plan.summary("evict")
            );
            act::announce(kube, &t.deployment(), "Warning", "RebalancerUnfixable", &message, now);
        }
    }
}

/// The budget, the lease and the removals. The targets whose plans remove pods are
/// served within `MAX_REMOVALS_PER_RUN` (fleet mode; single mode has one target and no
/// such budget); one lease covers every target that acts; then each acts in turn. A
/// removal that fails past a refusal stops every further one: the targets not yet
/// served are deferred.
fn act_within_budget(kube: &Kube, cycle: &mut Cycle, config: &Config, now: i64) -> Result<(), Failure> {
    let wanting: Vec<usize> = (0..cycle.targets.len())
        .filter(|&i| cycle.targets[i].ended.is_none())
        .filter(|&i| cycle.targets[i].plan.as_ref().is_some_and(|p| !p.removals().is_empty()))
        .collect();
    for t in cycle.targets.iter_mut().filter(|t| t.ended.is_none()) {
        if let Some(Decision::Hold(hold)) = t.plan.as_ref().map(|p| &p.decision) {
            t.ended = Some(Ok(hold.outcome()));
        }
    }
    let budget = if cycle.fleet { config.max_removals } else { usize::MAX };
    let asks: Vec<(&str, f64, usize)> = wanting
        .iter()
        .map(|&i| {
            let t = &cycle.targets[i];
            let plan = t.plan.as_ref();
            let ratio = plan.and_then(|p| Some(p.stats?.spread / p.threshold)).unwrap_or(0.0);
            (t.name.as_str(), ratio, plan.map_or(0, |p| p.removals().len()))
        })
        .collect();
    let acting: Vec<usize> = plan::serve(&asks, budget).into_iter().map(|k| wanting[k]).collect();
    for &i in wanting.iter().filter(|i| !acting.contains(i)) {
        log::info!(deployment = cycle.targets[i].name.as_str(); "deferred: its plan does not fit in what is left of MAX_REMOVALS_PER_RUN");
        cycle.targets[i].ended = Some(Ok(Outcome::Deferred));
    }
    lease(kube, cycle, &acting, config, now)?;
    let mut stopped = false;
    for i in acting {
        let t = &mut cycle.targets[i];
        if stopped {
            log::info!(deployment = t.name.as_str(); "deferred: a removal of this run failed, so no further pod is removed");
            t.ended = Some(Ok(Outcome::Deferred));
            continue;
        }
        let dry_run = t.dry_run(config);
        let mode = act::Mode {
            eviction: config.mode,
            dry_run,
        };
        let deployment = t.deployment();
        if let Some(plan) = &t.plan {
            t.acted = act::execute(kube, plan, mode, &deployment, now);
        }
        t.ended = Some(match t.acted.error.take() {
            Some(error) => {
                stopped = true;
                Err(Failure::at(Stage::Act, error))
            }
            None if dry_run => Ok(Outcome::DryRun),
            None => Ok(Outcome::Acted),
        });
    }
    Ok(())
}

/// The lease: the judged memory of every target and the intended action of every
/// target that acts (none for a dry one), written before any removal, with the
/// resourceVersion read; of two runs, one gets a 409 here. A refused lease fails the
/// run with nothing removed and nothing more written.
fn lease(kube: &Kube, cycle: &mut Cycle, acting: &[usize], config: &Config, now: i64) -> Result<(), Failure> {
    let live: Vec<usize> = acting
        .iter()
        .copied()
        .filter(|&i| !cycle.targets[i].dry_run(config))
        .collect();
    let Some(ledger) = cycle.ledger.as_ref() else {
        return Ok(());
    };
    if live.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = live.iter().map(|&i| cycle.targets[i].name.as_str()).collect();
    let doc = ledger.doc.with(&cycle.targets, now, |t, read| {
        let Some(judgement) = &t.judgement else {
            return read;
        };
        match (names.contains(&t.name.as_str()), &t.plan) {
            (true, Some(plan)) => judgement.lease(plan).unwrap_or_else(|| judgement.next.clone()),
            _ => judgement.next.clone(),
        }
    });
    match kube.put_state(&ledger.object, &doc.render()) {
        Ok(object) => {
            if let Some(ledger) = cycle.ledger.as_mut() {
                ledger.object = object;
            }
            Ok(())
        }
        Err(e) => {
            if let Some(ledger) = cycle.ledger.as_mut() {
                ledger.writes = false;
            }
            Err(Failure::at(Stage::State, e))
        }
    }
}

/// Why the breaker opened, for the Warning Event on the Deployment.
fn breaker_message(judgement: &Judgement, plan: &Plan) -> String {
    let until = match judgement.breaker {
        Breaker::Open { until } => clock::format_rfc3339(until),
        _ => "the hold ends".to_string(),
    };
    let spreads: Vec<String> = judgement
        .streak_spreads()
        .iter()
        .rev()
        .map(plan::spread_change)
        .collect();
    format!(
        "pod-rebalancer: breaker open until {until}: {} in a row did not lower the spread enough (latest first: {}); threshold {:.2}. Evictions do not help this imbalance: see the plan (pod-rebalancer plan) and the partition signal",
        plan::plural(judgement.next.streak as usize, "action"),
        spreads.join(", "),
        plan.threshold,
    )
}

/// The state ConfigMap and its document: single mode's for `deployment`, or the
/// fleet's (`deployment` is `None`). A missing ConfigMap, or a document that cannot be
/// read (malformed, a newer version, another Deployment's, a fleet's in single mode),
/// fails the run: nothing is removed and nothing is overwritten.
pub fn read_state(
    kube: &Kube,
    name: &str,
    deployment: Option<&str>,
    config: &Config,
    now: i64,
    keep: Option<&mut Vec<u8>>,
) -> Result<Ledger, Failure> {
    let object = kube.get_state(name, keep).map_err(|e| Failure::at(Stage::State, e))?;
    let text = object.document.as_deref();
    let doc = match deployment {
        Some(deployment) => memory::parse(text, Some(deployment)).map(Doc::One),
        None => memory::parse_fleet(text).map(Doc::Fleet),
    };
    let doc = doc.map_err(|why| {
        let doing = format!(
            "read the state document {}/{} (data.{})",
            kube.namespace,
            name,
            kube::STATE_KEY
        );
        Failure::at(Stage::State, Error::new(doing, crate::error::Cause::Malformed(why)))
    })?;
    let leased = doc.in_progress(now, &config.memory);
    if let Some(at) = leased {
        log::info!(leased_at = clock::format_rfc3339(at).as_str(); "another run leased an action and may still be acting: this run acts on nothing and writes nothing");
    }
    Ok(Ledger {
        object,
        doc,
        writes: leased.is_none(),
    })
}

fn log_judgement(j: &Judgement) {
    for (pod, result) in &j.resolved {
        let found = match result {
            memory::PodResult::Removed => "gone or terminating: it was removed",
            _ => "still there: it was not removed",
        };
        log::info!(pod = pod.as_str(); "an earlier removal settled from the cluster: {found}");
    }
    if let Some(why) = j.dropped {
        log::info!(reason = why.words(); "the last action is not evaluated: {}", why.words());
    }
    if let (Some(e), Some(action)) = (&j.evaluation, j.next.actions.last()) {
        let verdict = e.verdict.label();
        log::info!(
            spread_before = action.spread.map(act::round), spread_after = act::round(e.spread), ratio = act::round(e.ratio),
            verdict, streak = j.next.streak;
            "last action evaluated: {verdict}"
        );
        if let Some(moved) = &e.hot_spot {
            log::info!(from = moved.from.as_str(), to = moved.to.as_str(); "{moved}");
        }
    }
    match j.breaker {
        Breaker::Open { until } => {
            let spreads: Vec<String> = j.streak_spreads().iter().map(plan::spread_change).collect();
            log::info!(
                until = clock::format_rfc3339(until).as_str(), streak = j.next.streak, spreads = spreads.join(", ").as_str();
                "breaker open: no action until the hold ends"
            )
        }
        Breaker::Probe => log::info!(streak = j.next.streak; "breaker half-open: the next action is a probe"),
        Breaker::Closed => {}
    }
}

fn log_plan(plan: &Plan, config: &Config, dry_run: bool, deployment: Option<&str>) {
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
        deployment, decision, matched = plan.pods.len(), eligible = n, healthy = plan.healthy, budget = plan.budget,
        mean = act::round(mean), stddev = act::round(stddev), spread = act::round(spread), threshold = plan.threshold;
        "plan: {}", plan.summary(&verb)
    );
}
