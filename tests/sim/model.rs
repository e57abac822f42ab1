//! The consumer-group simulation: a Deployment of Kafka consumers, its partitions and
//! an assignor, driven cycle by cycle through the same pure functions the binary runs
//! (`plan::decide`, then the memory's protocol: `memory::judge`, `Judgement::apply`,
//! `Judgement::lease`, `Judgement::settle`), chained as `cycle::cycle` chains them. Sans-I/O and seeded: the same seed gives the same week
//! on any machine. The benchmark that prints the table of BENCHMARKS.md "Does it
//! help?" (`tests/sim/simulate.rs`) and the integration test (`tests/it/simulation.rs`)
//! both include this file with `#[path]`.
//!
//! The model, minute by minute:
//!
//! - **Load.** Every partition has a message rate, expressed as the cores its consumer
//!   burns on it. A running pod burns `BASE_CORES` (the consumer's own overhead) plus
//!   the rates of its partitions, plus its own transient load (scenario d), times a
//!   noise factor drawn each minute, uniform in ±`NOISE`.
//! - **Metrics.** At each cycle the sample of a pod is the mean of what it burned over
//!   the last `METRICS_TIME_WINDOW` (5 minutes), what `rate()` over that window
//!   reports. A pod younger than the window is excluded by `decide` itself.
//! - **Cycles.** Every five minutes, from minute 5 on (minute 0 is when the
//!   rebalancer is deployed; the group has run unchanged for a day before).
//! - **Acting.** Every removal succeeds (no PodDisruptionBudget refuses), in the plan's
//!   order: the hottest, then the coldest. A removed pod leaves the group at once,
//!   burns nothing more, and is listed once more, at the next cycle, as terminating
//!   (its `deletionTimestamp` gates that cycle). Its ReplicaSet replaces it at once
//!   with a new pod (new name, new uid, created now, the same `pod-template-hash`)
//!   that joins the group at once; the group rebalances once, as its assignor does.
//!   New pods gate the fleet for `STABILIZATION_WINDOW` as configured. The
//!   Deployment's rollout is always finished and its template never changes.
//! - **Assignors** (one topic; members sorted by member id, which sorts as the pod
//!   name: `client.id` is the pod's hostname and the coordinator appends a suffix).
//!   *Range* gives each member a contiguous range of partitions, the first `P % C`
//!   members one more; *round-robin* deals partition `p` to member `p % C`. Both are
//!   functions of the sorted member list alone: after any eviction the pods burn the
//!   same loads as before, under other names. *Cooperative-sticky* keeps every
//!   surviving member's partitions and deals the orphaned ones, by partition number,
//!   each to the member holding the fewest (ties: the member id that sorts first). It
//!   remembers history, which is why it can be unlucky and why an eviction can fix it.
//!   A sticky group starts from the range assignment of its first members, as a group
//!   does that followed Kafka's upgrade path from its default `[range,
//!   cooperative-sticky]` list: members keep the partitions they own.
//!
//! Left out, each of which would make a removal cost more, never less: the lag of a
//! rebalance and the catch-up burst after it, a consumer slow to join, a pod that
//! takes longer than one cycle to terminate.

use pod_rebalancer::memory::{self, Answer, Breaker, Memory, Verdict};
use pod_rebalancer::plan::{self, Decision, Hold, Inputs, Plan, Pod, Removal, Rollout, Samples, Settings};
use pod_rebalancer::stats;
use std::collections::VecDeque;

#[path = "rng.rs"]
mod rng;
pub use rng::Rng;

/// One minute: the resolution of the model.
pub const TICK: i64 = 60;
/// The CronJob's schedule.
pub const CYCLE: i64 = 300;
pub const DAY: i64 = 86_400;
/// A consumer's own CPU, with no partition (cores).
pub const BASE_CORES: f64 = 0.01;
/// The minute-to-minute noise of each pod's CPU: uniform in ±3 %.
pub const NOISE: f64 = 0.03;
/// Scenario (d): the extra CPU of the pod that spikes (cores), and for how long.
pub const SPIKE_CORES: f64 = 1.5;
pub const SPIKE_SECS: i64 = 15 * 60;
/// The seed of the table in BENCHMARKS.md.
pub const SEED: u64 = 0x5eed_2026_0013_0006;

const DEPLOYMENT: &str = "consumer";
const TEMPLATE_HASH: &str = "7d4b9c8f5";
const FINGERPRINT: &str = "template-1";

/// The decision's settings: the defaults of README "Configuration".
pub fn decision_settings() -> Settings {
    Settings {
        window_secs: 300,
        threshold: 0.3,
        min_pods: 3,
        stabilization_secs: 600,
    }
}

/// The memory's settings: the defaults of README "Configuration".
pub fn memory_settings() -> memory::Settings {
    memory::Settings {
        min_improvement: 0.25,
        max_ineffective: 3,
        backoff_secs: 3600,
        lease_secs: 600,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    pub const ALL: [Assignor; 3] = [Assignor::CooperativeSticky, Assignor::Range, Assignor::RoundRobin];

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No rebalancer at all.
    None,
    /// `decide` alone, every removal it plans carried out: the rules without memory.
    Stateless,
    /// `decide`, then `judge`, `apply`, `lease`, `settle`: the memory carried from
    /// cycle to cycle as `cycle::cycle` carries it.
    ClosedLoop,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::None, Policy::Stateless, Policy::ClosedLoop];

    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "no rebalancer",
            Policy::Stateless => "stateless",
            Policy::ClosedLoop => "closed loop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// (a) Moderately uneven partitions, the heavy ones on low partition numbers,
    /// owned in contiguous ranges: an unlucky sticky assignment that evictions fix.
    Unlucky,
    /// (a′) The same on 40 consumers: one eviction pair moves the spread less.
    UnluckyLarge,
    /// (b) One partition at 5× the others: key skew.
    HotPartition,
    /// (c) 12 consumers on 10 partitions: two are idle whatever is evicted.
    IdleConsumers,
    /// (d) A balanced group, and once a day a 15-minute spike on one pod.
    Spike,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Unlucky,
        Scenario::UnluckyLarge,
        Scenario::HotPartition,
        Scenario::IdleConsumers,
        Scenario::Spike,
    ];

    pub fn letter(self) -> &'static str {
        match self {
            Scenario::Unlucky => "a",
            Scenario::UnluckyLarge => "a′",
            Scenario::HotPartition => "b",
            Scenario::IdleConsumers => "c",
            Scenario::Spike => "d",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Unlucky => "unlucky assignment",
            Scenario::UnluckyLarge => "unlucky assignment, 40 pods",
            Scenario::HotPartition => "hot partition",
            Scenario::IdleConsumers => "idle consumers",
            Scenario::Spike => "15-minute spike",
        }
    }

    /// The parameters, in words.
    pub fn parameters(self) -> &'static str {
        match self {
            Scenario::Unlucky => {
                "P = 36, C = 12; partition p at (0.5 − 0.4·p/35) cores ±10 %, i.e. 0.1–0.5 cores, the heavy ones on low numbers"
            }
            Scenario::UnluckyLarge => "P = 120, C = 40; partition p at (0.5 − 0.4·p/119) cores ±10 %",
            Scenario::HotPartition => "P = 16, C = 8; 15 partitions at 0.25 cores ±5 %, partition 5 at 1.25 cores",
            Scenario::IdleConsumers => "P = 10, C = 12; every partition at 1.0 core ±5 %",
            Scenario::Spike => {
                "P = 16, C = 8; every partition at 0.5 cores ±10 %; once a day, at a seeded minute, one pod burns 1.5 cores more for 15 minutes"
            }
        }
    }

    /// The assignors this scenario is run with: all three where the assignor decides
    /// whether an eviction can help, cooperative-sticky (the one with history) elsewhere.
    pub fn assignors(self) -> &'static [Assignor] {
        match self {
            Scenario::Unlucky | Scenario::HotPartition => &Assignor::ALL,
            Scenario::UnluckyLarge | Scenario::IdleConsumers | Scenario::Spike => &Assignor::ALL[..1],
        }
    }

    /// The partition rates (cores) and the number of consumers.
    fn setup(self, rng: &mut Rng) -> (Vec<f64>, usize) {
        let sloped = |p: usize, rng: &mut Rng| -> Vec<f64> {
            (0..p)
                .map(|i| (0.5 - 0.4 * i as f64 / (p - 1) as f64) * rng.around_one(0.10))
                .collect()
        };
        match self {
            Scenario::Unlucky => (sloped(36, rng), 12),
            Scenario::UnluckyLarge => (sloped(120, rng), 40),
            Scenario::HotPartition => (
                (0..16)
                    .map(|p| if p == 5 { 1.25 } else { 0.25 * rng.around_one(0.05) })
                    .collect(),
                8,
            ),
            Scenario::IdleConsumers => ((0..10).map(|_| rng.around_one(0.05)).collect(), 12),
            Scenario::Spike => ((0..16).map(|_| 0.5 * rng.around_one(0.10)).collect(), 8),
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Run {
    pub scenario: Scenario,
    pub assignor: Assignor,
    pub policy: Policy,
    pub seed: u64,
    pub days: i64,
    /// The memory's settings (`memory_settings()` unless a run explores others).
    pub memory: memory::Settings,
}

impl Run {
    /// A run of `days` with the default settings.
    pub fn new(scenario: Scenario, assignor: Assignor, policy: Policy, seed: u64, days: i64) -> Run {
        Run {
            scenario,
            assignor,
            policy,
            seed,
            days,
            memory: memory_settings(),
        }
    }
}

/// What a run measured. Times are seconds since the rebalancer was deployed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub days: i64,
    /// Pods removed, in all and by day. Each one costs the group a rebalance.
    pub removals: usize,
    pub removals_by_day: Vec<usize>,
    /// Cycles that removed pods.
    pub actions: usize,
    /// Minutes simulated, and those whose spread (over the pods not terminating, of
    /// what each burned that minute) was over the threshold.
    pub minutes: usize,
    pub minutes_over: usize,
    /// The hottest pod's CPU each minute (cores).
    pub hottest: Vec<f64>,
    /// The start of the first minute whose spread was within the threshold.
    pub first_balanced: Option<i64>,
    /// Closed loop: evaluations, the ineffective ones, those that said "the hot spot
    /// moved" (and of those, the effective ones), the cycles the breaker held, probes.
    pub evaluations: usize,
    pub ineffective: usize,
    pub hot_spots: usize,
    pub hot_spots_effective: usize,
    pub held: usize,
    pub probes: usize,
    /// Closed loop: spread after / spread before, of each evaluated action.
    pub ratios: Vec<f64>,
}

impl Report {
    pub fn removals_per_day(&self) -> f64 {
        self.removals as f64 / self.days as f64
    }

    pub fn share_over(&self) -> f64 {
        self.minutes_over as f64 / self.minutes.max(1) as f64
    }

    /// The `q`-quantile (nearest rank) of the hottest pod's CPU.
    pub fn hottest_quantile(&self, q: f64) -> f64 {
        let mut sorted = self.hottest.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => 0.0,
            n => sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
        }
    }
}

/// Kafka's RangeAssignor for one topic of `p` partitions: member `k` of `c` (sorted
/// by member id) gets a contiguous range, the first `p % c` members one more.
pub fn range(p: usize, c: usize) -> Vec<Vec<usize>> {
    let (each, extra) = (p / c, p % c);
    (0..c)
        .map(|k| {
            let start = k * each + k.min(extra);
            (start..start + each + usize::from(k < extra)).collect()
        })
        .collect()
}

/// Kafka's RoundRobinAssignor for one topic: partition `i` to member `i % c`.
pub fn round_robin(p: usize, c: usize) -> Vec<Vec<usize>> {
    (0..c).map(|k| (k..p).step_by(c).collect()).collect()
}

/// Cooperative-sticky, as modelled: `owned` is every member's partitions, members
/// sorted by id (a new member owns none); each orphaned partition, in order, goes to
/// the member that holds the fewest, the first of equals.
pub fn sticky(owned: &mut [Vec<usize>], mut orphans: Vec<usize>) {
    orphans.sort_unstable();
    for partition in orphans {
        let least = (0..owned.len()).min_by_key(|&k| owned[k].len()).unwrap_or(0);
        owned[least].push(partition);
    }
}

/// A consumer pod.
struct Consumer {
    name: String,
    uid: String,
    created: i64,
    /// When it was removed; `None` while it runs.
    removed: Option<i64>,
    partitions: Vec<usize>,
    /// What it burned: (end of the minute, cores), the last few minutes.
    burned: VecDeque<(i64, f64)>,
}

/// The Deployment's pods and their consumer group.
struct Group {
    assignor: Assignor,
    rates: Vec<f64>,
    /// Running pods, and removed pods until they have been listed once as terminating.
    pods: Vec<Consumer>,
    /// Scenario (d): the pod that spikes, and from when to when.
    spike: Option<(String, i64, i64)>,
    uids: u64,
}

impl Group {
    fn new(assignor: Assignor, rates: Vec<f64>, consumers: usize, rng: &mut Rng) -> Group {
        let mut group = Group {
            assignor,
            rates,
            pods: Vec::new(),
            spike: None,
            uids: 0,
        };
        for _ in 0..consumers {
            let pod = group.new_pod(-DAY, rng);
            group.pods.push(pod);
        }
        let (p, members) = (group.rates.len(), group.members());
        let assignment = match assignor {
            Assignor::Range | Assignor::CooperativeSticky => range(p, members.len()),
            Assignor::RoundRobin => round_robin(p, members.len()),
        };
        for (i, partitions) in members.into_iter().zip(assignment) {
            group.pods[i].partitions = partitions;
        }
        group
    }

    /// A new pod of the ReplicaSet, `consumer-<hash>-<5 characters>` as Kubernetes
    /// names them (from its alphabet without vowels and look-alike digits).
    fn new_pod(&mut self, created: i64, rng: &mut Rng) -> Consumer {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let name = loop {
            let suffix: String = (0..5)
                .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
                .collect();
            let name = format!("{DEPLOYMENT}-{TEMPLATE_HASH}-{suffix}");
            if self.pods.iter().all(|p| p.name != name) {
                break name;
            }
        };
        self.uids += 1;
        Consumer {
            name,
            uid: format!("00000000-0000-4000-8000-{:012x}", self.uids),
            created,
            removed: None,
            partitions: Vec::new(),
            burned: VecDeque::new(),
        }
    }

    /// The running pods, sorted by member id: indices into `pods`.
    fn members(&self) -> Vec<usize> {
        let mut members: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].removed.is_none())
            .collect();
        members.sort_by(|&a, &b| self.pods[a].name.cmp(&self.pods[b].name));
        members
    }

    /// The minute ending at `t`: every running pod burns its load. Returns what each
    /// burned.
    fn burn(&mut self, t: i64, rng: &mut Rng) -> Vec<f64> {
        let mut minute = Vec::new();
        for pod in self.pods.iter_mut().filter(|p| p.removed.is_none()) {
            let mut load = BASE_CORES + pod.partitions.iter().map(|&p| self.rates[p]).sum::<f64>();
            if let Some((name, from, to)) = &self.spike
                && *name == pod.name
                && (from + 1..=*to).contains(&t)
            {
                load += SPIKE_CORES;
            }
            let cores = load * rng.around_one(NOISE);
            pod.burned.push_back((t, cores));
            if pod.burned.len() > 10 {
                pod.burned.pop_front();
            }
            minute.push(cores);
        }
        minute
    }

    /// What `decide` reads at `now`: the pods the API lists, and the metrics answer
    /// (each pod's mean over the rate window).
    fn observe(&self, now: i64, window: i64) -> (Vec<Pod>, Samples) {
        let mut pods = Vec::new();
        let mut samples = Vec::new();
        for p in &self.pods {
            pods.push(Pod {
                name: p.name.clone(),
                uid: p.uid.clone(),
                node: None,
                phase: "Running".into(),
                ready: true,
                terminating: p.removed.is_some(),
                created: Some(p.created),
                cpu_request: Some(1.0),
                cpu_limit: None,
            });
            let (sum, n) = p
                .burned
                .iter()
                .filter(|(at, _)| *at > now - window && *at <= now)
                .fold((0.0, 0), |(sum, n), (_, c)| (sum + c, n + 1));
            if n > 0 {
                samples.push((p.name.clone(), sum / n as f64));
            }
        }
        (pods, samples.into_iter().collect())
    }

    /// The pods removed at the last cycle have now been listed once as terminating:
    /// they are gone.
    fn forget_removed(&mut self) {
        self.pods.retain(|p| p.removed.is_none());
    }

    /// Removes the plan's pods, in its order, each replaced by a new pod at once; the
    /// group rebalances once. Every removal succeeds, so the pair rule (the coldest
    /// only after the hottest) always lets the coldest go. Returns what was removed.
    fn remove(&mut self, removals: &[Removal], now: i64, rng: &mut Rng) -> Vec<Removal> {
        let mut orphans = Vec::new();
        for r in removals {
            let Some(pod) = self.pods.iter_mut().find(|p| p.name == r.name && p.removed.is_none()) else {
                panic!("the plan removes {}, which is not a running pod", r.name);
            };
            pod.removed = Some(now);
            orphans.append(&mut pod.partitions);
        }
        for _ in removals {
            let pod = self.new_pod(now, rng);
            self.pods.push(pod);
        }
        let (p, members) = (self.rates.len(), self.members());
        let assignment = match self.assignor {
            Assignor::Range => range(p, members.len()),
            Assignor::RoundRobin => round_robin(p, members.len()),
            Assignor::CooperativeSticky => {
                let mut owned: Vec<Vec<usize>> = members.iter().map(|&i| self.pods[i].partitions.clone()).collect();
                sticky(&mut owned, orphans);
                owned
            }
        };
        for (i, partitions) in members.into_iter().zip(assignment) {
            self.pods[i].partitions = partitions;
        }
        removals.to_vec()
    }
}

/// One run in progress.
struct Sim {
    run: Run,
    settings: Settings,
    rollout: Rollout,
    group: Group,
    memory: Memory,
    rng: Rng,
    report: Report,
}

/// Runs one simulation; deterministic in `run`.
pub fn simulate(run: Run) -> Report {
    // The scenario's numbers come from their own stream, so that every policy and
    // every assignor of one scenario and seed sees the same partitions and spikes.
    let mut world = Rng::new(run.seed ^ ((run.scenario as u64 + 1) << 56));
    let (rates, consumers) = run.scenario.setup(&mut world);
    let mut rng = Rng::new(run.seed);
    let group = Group::new(run.assignor, rates, consumers, &mut rng);
    let days = run.days;
    let mut sim = Sim {
        settings: decision_settings(),
        rollout: Rollout {
            name: DEPLOYMENT.into(),
            generation: 1,
            observed_generation: 1,
            desired: consumers as i64,
            replicas: consumers as i64,
            updated: consumers as i64,
            fingerprint: FINGERPRINT.into(),
            ..Rollout::default()
        },
        group,
        run,
        memory: Memory::default(),
        rng,
        report: Report {
            days,
            removals_by_day: vec![0; days as usize],
            ..Report::default()
        },
    };
    let (end, spikes) = (sim.run.days * DAY, sim.run.scenario == Scenario::Spike);
    // The minutes before 0 fill the first rate window.
    let mut t = -(sim.settings.window_secs as i64) + TICK;
    while t <= end {
        if spikes && t % DAY == 0 && t < end {
            // Today's spike: at a seeded minute, on the pod at a seeded rank.
            let from = t + (60 + world.below(22 * 60) as i64) * TICK;
            let members = sim.group.members();
            let victim = members[world.below(members.len() as u64) as usize];
            sim.group.spike = Some((sim.group.pods[victim].name.clone(), from, from + SPIKE_SECS));
        }
        let minute = sim.group.burn(t, &mut sim.rng);
        if t > 0 {
            sim.record(t, &minute);
        }
        if t > 0 && t < end && t % CYCLE == 0 {
            sim.cycle(t);
        }
        t += TICK;
    }
    sim.report
}

impl Sim {
    /// The minute ending at `t`, as a dashboard sees it.
    fn record(&mut self, t: i64, minute: &[f64]) {
        let spread = stats::describe(minute).map_or(0.0, |s| s.spread);
        let r = &mut self.report;
        r.minutes += 1;
        if plan::over(spread, self.settings.threshold) {
            r.minutes_over += 1;
        } else {
            r.first_balanced.get_or_insert(t - TICK);
        }
        r.hottest.push(minute.iter().copied().fold(0.0, f64::max));
    }

    /// One cycle at `now`: what `cycle::cycle` does, without the network.
    fn cycle(&mut self, now: i64) {
        let (pods, samples) = self.group.observe(now, self.settings.window_secs as i64);
        self.group.forget_removed();
        let removed = match self.run.policy {
            Policy::None => return,
            Policy::Stateless => {
                let plan = self.decide(pods, &samples, now, None);
                self.group.remove(plan.removals(), now, &mut self.rng)
            }
            Policy::ClosedLoop => self.closed_loop(pods, &samples, now),
        };
        if !removed.is_empty() {
            let r = &mut self.report;
            r.actions += 1;
            r.removals += removed.len();
            let day = ((now / DAY) as usize).min(r.removals_by_day.len() - 1);
            r.removals_by_day[day] += removed.len();
        }
    }

    /// The memory's part of `cycle::cycle`, through the same protocol: judge the last
    /// action, let the breaker hold the plan, lease the intended action, act, and
    /// settle what the API answered (every removal succeeds here). Returns what was
    /// removed.
    fn closed_loop(&mut self, pods: Vec<Pod>, samples: &Samples, now: i64) -> Vec<Removal> {
        let leased = memory::in_progress(&self.memory, now, &self.run.memory);
        let plan = self.decide(pods, samples, now, leased);
        let judgement = memory::judge(&self.memory, &plan, FINGERPRINT, &self.run.memory);
        if let Some(e) = &judgement.evaluation {
            let r = &mut self.report;
            let effective = e.verdict == Verdict::Effective;
            r.evaluations += 1;
            r.ineffective += usize::from(e.verdict == Verdict::Ineffective);
            r.hot_spots += usize::from(e.hot_spot.is_some());
            r.hot_spots_effective += usize::from(e.hot_spot.is_some() && effective);
            r.ratios.push(e.ratio);
        }
        let plan = judgement.apply(plan);
        if let Decision::Hold(Hold::Ineffective { .. }) = plan.decision {
            self.report.held += 1;
        }
        if !matches!(plan.decision, Decision::Remove { .. }) {
            self.memory = judgement.settle(&plan, &[]);
            return Vec::new();
        }
        self.report.probes += usize::from(judgement.breaker == Breaker::Probe);
        // The lease is what a run that died here would leave; this one does not die.
        let _lease = judgement.lease(&plan);
        let removed = self.group.remove(plan.removals(), now, &mut self.rng);
        let answers: Vec<(Removal, Answer)> = removed.iter().map(|r| (r.clone(), Answer::Removed)).collect();
        self.memory = judgement.settle(&plan, &answers);
        removed
    }

    fn decide(&self, pods: Vec<Pod>, samples: &Samples, now: i64, leased: Option<i64>) -> Plan {
        let plan = plan::decide(Inputs {
            pods,
            samples,
            rollout: Some(&self.rollout),
            now,
            settings: &self.settings,
            container: DEPLOYMENT,
            namespace: "posthog",
            ignored: 0,
            selector: None,
            leased,
            partitions: None,
        });
        match plan {
            Ok(plan) => plan,
            Err(why) => panic!("the simulated fleet cannot be decided at {now}: {why}"),
        }
    }
}
