//! One live cycle: read the memory, the cluster and the metrics, decide, act.
//!
//! `cycle` is that sequence as a function of its clients and `now`, and it returns a
//! value, `Cycle`: how far the run got (`Progress`: the pods matched, the plan, what
//! was done, the memory) and how it ended (an `Outcome`, or the `Stage` that failed
//! and why). `finish` turns that value into the end-of-run record of the memory, the
//! metrics, the last log line and the exit code; `run` is both for `main`. This is
//! the only place that sequences I/O; a failure before acting means nothing is
//! removed, and the memory is written before anything is (the lease).

use crate::act::{self, Acted};
use crate::config::{Cluster, Config};
use crate::error::Error;
use crate::http::{Client, Payload};
use crate::kube::{self, Involved, Kube, StateObject};
use crate::memory::{self, Breaker, Judgement, Memory};
use crate::outcome::{self, EXIT_FAILED, EXIT_OK, Outcome, Stage};
use crate::plan::{self, Decision, Inputs, Plan, Role};
use crate::report::{self, Counters, Info, Labels, MemoryGauges, Run, Sheet};
use crate::{clock, partition, victoria};
use std::time::Instant;

/// The two servers a cycle talks to.
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

/// Why a run failed: the stage and the error.
#[derive(Debug)]
pub struct Failure {
    pub stage: Stage,
    pub error: Error,
}

impl Failure {
    pub fn at(stage: Stage, error: Error) -> Failure {
        Failure { stage, error }
    }
}

/// One cycle: how far it got, and how it ended.
#[derive(Debug)]
pub struct Cycle {
    pub progress: Progress,
    pub ended: Result<Outcome, Failure>,
}

/// How far a cycle got: each part is set once the cycle has it.
#[derive(Debug, Default)]
pub struct Progress {
    /// How many pods the Deployment owns, once the list was read.
    pub matched: Option<usize>,
    /// The plan, once decided (and held by the memory, when there is one).
    pub plan: Option<Plan>,
    /// What was done to the plan's pods.
    pub acted: Acted,
    /// The memory, once the state ConfigMap was read.
    pub ledger: Option<Ledger>,
}

/// The memory as one run holds it.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The state ConfigMap as last read or written: the next write carries its
    /// resourceVersion.
    pub object: StateObject,
    /// The document as read.
    pub read: Memory,
    /// The memory's judgement of this run's plan, once there is a plan.
    pub judgement: Option<Judgement>,
    /// Whether the end of the run writes its record: not while another run's action is
    /// in progress, nor after a refused lease (SPEC §11).
    pub writes: bool,
}

impl Ledger {
    /// The document the end of the run writes, before its counters: what the API
    /// answered for each removal (none in a dry run), on top of the judged memory; the
    /// memory as read when the run never judged (it failed first, or was paused).
    /// `None` when this run must write nothing.
    pub fn record(&self, plan: Option<&Plan>, acted: &Acted, dry_run: bool) -> Option<Memory> {
        if !self.writes {
            return None;
        }
        Some(match (&self.judgement, plan) {
            (Some(judgement), Some(plan)) => {
                let answers = if dry_run { &[][..] } else { &acted.answers[..] };
                judgement.settle(plan, answers)
            }
            _ => self.read.clone(),
        })
    }

    /// The memory as this run leaves it (for the gauges).
    fn memory(&self) -> &Memory {
        self.judgement.as_ref().map_or(&self.read, |j| &j.next)
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
        Err(failure) => Cycle {
            progress: Progress::default(),
            ended: Err(Failure::at(failure.stage, failure.error.clone())),
        },
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

/// What `finish` made of a cycle: the metrics' view of the run, the counters it
/// exported (`None`: none), and the exit code.
#[derive(Debug)]
pub struct Finished {
    pub run: Run,
    pub counters: Option<Counters>,
    pub code: u8,
}

/// The end of a run, in this order: the memory's end-of-run record (with the
/// counters), the metrics file, the push, the last log line, the exit code. A state
/// ConfigMap or a metrics file that cannot be written fails the run: the metrics, the
/// last log line and the exit code all say so. With a memory, the counters exported
/// are exactly those stored; a run that stored none exports none.
pub fn finish(config: &Config, kube: Option<&Client>, cycle: Cycle, timing: Timing) -> Finished {
    if let Err(failure) = &cycle.ended {
        log::error!(error:% = failure.error; "run failed, no further action");
    }
    let mut run = metrics_of(&cycle, config, timing);
    let counters = match &config.state {
        Some(_) => record(config, kube, &cycle, &mut run),
        None => {
            let previous = config.metrics_file.as_deref().map(report::read_previous);
            let deployment = config.deployment.clone().unwrap_or_default();
            let previous = previous
                .and_then(|mut p| p.remove(&deployment).or_else(|| p.remove("")))
                .unwrap_or_default();
            Some(previous)
        }
    };
    let stateless = config.state.is_none();
    let exported = |run: &Run| match &counters {
        Some(previous) if stateless => Some(previous.after(run)),
        stored => stored.clone(),
    };
    let mut text = report::render(&Sheet::single(run.clone(), exported(&run)));
    if let Some(path) = &config.metrics_file
        && let Err(e) = report::write_atomic(path, &text)
    {
        log::error!(error:% = e; "metrics file not written");
        if run.ok() {
            run.ended = Err(Stage::Report);
        }
        text = report::render(&Sheet::single(run.clone(), exported(&run)));
    }
    push(config, &text);
    let removed = cycle.progress.acted.removed().count();
    log::info!(
        outcome = outcome::label(run.ended), removed, duration_seconds = act::round(timing.duration_secs);
        "run finished"
    );
    let code = if run.ok() { EXIT_OK } else { EXIT_FAILED };
    let counters = exported(&run);
    Finished { run, counters, code }
}

/// The end-of-run record: the memory with this run's counters, written back. The
/// counters stored, or `None` when the run stored none (no memory read, another run's
/// action in progress, a refused lease, a failed write: then `run` fails in the state
/// stage).
fn record(config: &Config, kube: Option<&Client>, cycle: &Cycle, run: &mut Run) -> Option<Counters> {
    let ledger = cycle.progress.ledger.as_ref()?;
    let mut memory = ledger.record(cycle.progress.plan.as_ref(), &cycle.progress.acted, config.dry_run)?;
    let client = kube?;
    memory.counters = memory.counters.after(run);
    let kube = Kube {
        client,
        namespace: &config.namespace,
    };
    match kube.put_state(&ledger.object, &memory::render(&memory)) {
        Ok(_) => Some(memory.counters),
        Err(e) => {
            log::error!(error:% = e; "state not written: this run's counters and evaluation are lost; a leased action stays recorded for the next run");
            if run.ok() {
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

/// The metrics' view of a cycle. Pure.
pub fn metrics_of(cycle: &Cycle, config: &Config, timing: Timing) -> Run {
    let Progress {
        matched,
        plan,
        acted,
        ledger,
    } = &cycle.progress;
    let ended = cycle.ended.as_ref().map(|o| *o).map_err(|f| f.stage);
    // Dry-run removals were only accepted, never done, whatever the run's end.
    let deleted = |role| match config.dry_run {
        true => 0,
        false => acted.removed().filter(|r| r.role == role).count(),
    };
    let container = config
        .container
        .clone()
        .or_else(|| config.deployment.clone())
        .unwrap_or_default();
    Run {
        labels: Labels {
            namespace: config.namespace.clone(),
            deployment: Some(config.deployment.clone().unwrap_or_default()),
            extra: config.metrics_labels.clone(),
        },
        ended,
        matched: *matched,
        analyzed: plan.as_ref().map_or(0, Plan::analyzed),
        deleted_highest: deleted(Role::HighestCpu),
        deleted_lowest: deleted(Role::LowestCpu),
        stats: plan.as_ref().and_then(|p| p.stats),
        threshold: config.decision.threshold,
        duration_secs: timing.duration_secs,
        end: timing.end,
        refused: acted.refused().collect(),
        memory: ledger.as_ref().map(|l| gauges(l.memory(), timing.now)),
        info: Some(Info {
            dry_run: config.dry_run,
            eviction_mode: config.mode.verb(),
            container,
            window_secs: config.decision.window_secs,
            threshold: config.decision.threshold,
            min_pods: config.decision.min_pods,
            max_ineffective: config.memory.max_ineffective,
        }),
        partitions: plan
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

/// One cycle with these clients at `now`: read the memory, read and decide, let the
/// memory judge, write the lease, act (as server-side dry runs under `DRY_RUN`).
pub fn cycle(clients: &Clients, config: &Config, cluster: &Cluster, now: i64) -> Cycle {
    let mut progress = Progress::default();
    let ended = steps(clients, config, cluster, now, &mut progress);
    Cycle { progress, ended }
}

/// The story of a run; each step records in `p` what it got.
fn steps(
    clients: &Clients,
    config: &Config,
    cluster: &Cluster,
    now: i64,
    p: &mut Progress,
) -> Result<Outcome, Failure> {
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    match &config.state {
        Some(name) => p.ledger = Some(read_state(&kube, name, Some(&cluster.deployment), config, now, None)?),
        None => log::info!("no STATE_CONFIGMAP: no memory, every run judges the fleet alone"),
    }
    let leased = p
        .ledger
        .as_ref()
        .and_then(|l| memory::in_progress(&l.read, now, &config.memory));
    let observed = observe(config, cluster, clients, now, leased, None, &mut p.matched)?;
    let deployment = observed.deployment;
    let plan = match p.ledger.as_mut() {
        Some(ledger) => {
            let (plan, judgement) = judged(observed.plan, Some(&ledger.read), &observed.fingerprint, config);
            ledger.judgement = judgement;
            plan
        }
        None => observed.plan,
    };
    log_plan(&plan, config);
    let plan = &*p.plan.insert(plan);
    if let Some(judgement) = p.ledger.as_ref().and_then(|l| l.judgement.as_ref())
        && judgement.opened
        && !config.dry_run
    {
        act::announce(
            &kube,
            &deployment,
            "Warning",
            "RebalancerBreakerOpen",
            &breaker_message(judgement, plan),
            now,
        );
    }
    let Decision::Remove { .. } = &plan.decision else {
        return Ok(match &plan.decision {
            Decision::Hold(hold) => hold.outcome(),
            Decision::Remove { .. } => Outcome::Acted,
        });
    };
    if !config.dry_run
        && let Some(ledger) = p.ledger.as_mut()
    {
        lease(&kube, ledger, plan)?;
    }
    let mode = act::Mode {
        eviction: config.mode,
        dry_run: config.dry_run,
    };
    p.acted = act::execute(&kube, plan, mode, &deployment, now);
    match p.acted.error.take() {
        Some(error) => Err(Failure::at(Stage::Act, error)),
        None if config.dry_run => Ok(Outcome::DryRun),
        None => Ok(Outcome::Acted),
    }
}

/// Why the breaker opened, for the Warning Event on the Deployment.
fn breaker_message(judgement: &Judgement, plan: &Plan) -> String {
    let until = match judgement.breaker {
        Breaker::Open { until } => clock::format_rfc3339(until),
        _ => "the hold ends".to_string(),
    };
    let spreads: Vec<String> = judgement
        .next
        .actions
        .iter()
        .filter_map(|a| Some(format!("{:.2} → {:.2}", a.spread?, a.evaluation.as_ref()?.spread)))
        .rev()
        .take(judgement.next.streak as usize)
        .collect();
    format!(
        "pod-rebalancer: breaker open until {until}: {} in a row did not lower the spread enough (latest first: {}); threshold {:.2}. Evictions do not help this imbalance: see the plan (pod-rebalancer plan) and the partition signal",
        plan::plural(judgement.next.streak as usize, "action"),
        spreads.join(", "),
        plan.threshold,
    )
}

/// The lease: the judged memory and the intended action written before any removal,
/// with the resourceVersion read; of two runs, one gets a 409 here. A refused lease
/// fails the run with nothing removed and nothing more written.
fn lease(kube: &Kube, ledger: &mut Ledger, plan: &Plan) -> Result<(), Failure> {
    let Some(leased) = ledger.judgement.as_ref().and_then(|j| j.lease(plan)) else {
        return Ok(());
    };
    match kube.put_state(&ledger.object, &memory::render(&leased)) {
        Ok(object) => {
            ledger.object = object;
            Ok(())
        }
        Err(e) => {
            ledger.writes = false;
            Err(Failure::at(Stage::State, e))
        }
    }
}

/// The state ConfigMap and its document for `deployment`. A missing ConfigMap, or a
/// document that cannot be read (malformed, a newer version, another Deployment's),
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
    let read = memory::parse(object.document.as_deref(), deployment).map_err(|why| {
        let doing = format!(
            "read the state document {}/{} (data.{})",
            kube.namespace,
            name,
            kube::STATE_KEY
        );
        Failure::at(Stage::State, Error::new(doing, crate::error::Cause::Malformed(why)))
    })?;
    let leased = memory::in_progress(&read, now, &config.memory);
    if let Some(at) = leased {
        log::info!(leased_at = clock::format_rfc3339(at).as_str(); "another run leased an action and may still be acting: this run acts on nothing and writes nothing");
    }
    Ok(Ledger {
        object,
        read,
        judgement: None,
        writes: leased.is_none(),
    })
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
            let spreads: Vec<String> = j
                .next
                .actions
                .iter()
                .filter_map(|a| Some(format!("{:.2} → {:.2}", a.spread?, a.evaluation.as_ref()?.spread)))
                .collect();
            log::info!(
                until = clock::format_rfc3339(until).as_str(), streak = j.next.streak, spreads = spreads.join(", ").as_str();
                "breaker open: no action until the hold ends"
            )
        }
        Breaker::Probe => log::info!(streak = j.next.streak; "breaker half-open: the next action is a probe"),
        Breaker::Closed => {}
    }
}

/// What the read-only half of a cycle saw: the plan, the template fingerprint, the
/// Deployment (for the Events about it).
#[derive(Debug)]
pub struct Observed {
    pub plan: Plan,
    pub fingerprint: String,
    pub deployment: Involved,
}

/// Reads the cluster and the metrics and decides: the read-only half of a cycle,
/// shared by the live run and the live `plan`. A paused Deployment is decided from the
/// Deployment alone. With `keep`, the bodies read are kept; `matched` is set once the
/// pod list was read.
pub fn observe(
    config: &Config,
    cluster: &Cluster,
    clients: &Clients,
    now: i64,
    leased: Option<i64>,
    mut keep: Option<&mut Responses>,
    matched: &mut Option<usize>,
) -> Result<Observed, Failure> {
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    let rollout = kube
        .deployment(&cluster.deployment, keep.as_deref_mut().map(|r| &mut r.deployment))
        .map_err(|e| Failure::at(Stage::Kubernetes, e))?;
    let deployment = Involved::deployment(&rollout.name, &rollout.uid);
    let paused = rollout.paused().map_err(|why| {
        let doing = format!("read deployment {}/{}", config.namespace, cluster.deployment);
        Failure::at(Stage::Kubernetes, Error::refused(doing, why))
    })?;
    if paused {
        return Ok(Observed {
            plan: Plan::paused(
                now,
                &config.namespace,
                &cluster.container,
                &config.decision,
                &rollout.name,
            ),
            fingerprint: rollout.fingerprint,
            deployment,
        });
    }
    let select = kube::Select {
        deployment: Some(&cluster.deployment),
        container: Some(&cluster.container),
    };
    let listed = kube
        .pods(&config.selector, select, keep.as_deref_mut().map(|r| &mut r.pod_pages))
        .map_err(|e| Failure::at(Stage::Kubernetes, e))?;
    if listed.ignored > 0 {
        log::info!(ignored = listed.ignored, deployment = cluster.deployment.as_str(); "pods the selector returned that the Deployment does not own are ignored");
    }
    log::debug!(matched = listed.pods.len(); "pods listed");
    *matched = Some(listed.pods.len());
    // A consumer scaled to zero has nothing to measure: no query.
    let (samples, partitions) = if listed.pods.is_empty() {
        (plan::Samples::default(), None)
    } else {
        let query = victoria::cpu_query(
            &config.namespace,
            &cluster.container,
            &config.matchers,
            config.decision.window_secs,
        );
        log::debug!(query = query.as_str(); "querying CPU");
        let samples = victoria::query_cpu(&clients.metrics, &query, keep.as_deref_mut().map(|r| &mut r.cpu))
            .map_err(|e| Failure::at(Stage::Metrics, e))?;
        let partitions = match &config.partition_query {
            Some(query) => {
                log::debug!(query = query.as_str(); "querying partitions");
                let names = listed.pods.iter().map(|p| p.name.as_str());
                let keep = keep.map(|r| &mut r.partitions);
                let answer = victoria::query_partitions(&clients.metrics, query, &config.partition_labels, names, keep);
                Some(answer.map_err(|e| Failure::at(Stage::Metrics, e))?)
            }
            None => None,
        };
        (samples, partitions)
    };
    let plan = plan::decide(Inputs {
        pods: listed.pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &config.decision,
        container: &cluster.container,
        namespace: &config.namespace,
        ignored: listed.ignored,
        selector: Some(&config.selector),
        leased,
        partitions,
    })
    .map_err(|why| Failure::at(why.stage(), Error::refused("decide", why.to_string())))?;
    if let (Some(query), Some(e)) = (&config.partition_query, &plan.partitions) {
        match e.verdict {
            partition::Verdict::Missing => log::warn!(query = query.as_str(); "partitions: {e}"),
            _ => log::info!(verdict = e.verdict.label(), r2 = e.r2().map(act::round); "partitions: {e}"),
        }
    }
    Ok(Observed {
        plan,
        fingerprint: rollout.fingerprint,
        deployment,
    })
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
