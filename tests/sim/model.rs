//! The consumer-group simulation: a Deployment of Kafka consumers, its partitions and
//! an assignor, driven cycle by cycle through the same pure functions the binary runs
//! (`plan::decide`, then the memory's protocol: `memory::in_progress`, `memory::judge`,
//! `Judgement::apply`, `Judgement::lease`, `Judgement::settle`), chained as
//! `cycle::cycle` chains them. Sans-I/O and seeded: the same seed gives the same week on
//! any machine. The benchmark that prints the tables of BENCHMARKS.md "Does it help?"
//! (`tests/sim/simulate.rs`, through `tests/sim/tables.rs`) and the integration test
//! (`tests/it/simulation.rs`) both include this file with `#[path]`.
//!
//! The model, minute by minute:
//!
//! - **Load.** Every partition has a message rate, expressed as the cores its consumer
//!   burns on it, optionally swinging over the day. A running pod burns its own
//!   overhead plus the rates of its partitions, plus what is its own (a spike, a slow
//!   pod's extra), times a noise factor drawn each minute (uniform in ±`NOISE`), times a
//!   *wobble* drawn for each pod and each five-minute window (uniform in ±`wobble`, 0 in
//!   most cases): the wobble is what a rate window sees as noise.
//! - **Metrics.** At each cycle the sample of a pod is the mean of what it burned over
//!   the last `METRICS_TIME_WINDOW` (5 minutes), what `rate()` over that window
//!   reports. A pod younger than the window is excluded by `decide` itself.
//! - **Cycles.** Every five minutes, from minute 5 on (minute 0 is when the
//!   rebalancer is deployed; the group has run unchanged for a day before).
//! - **Acting.** Every removal succeeds (no PodDisruptionBudget refuses), in the plan's
//!   order. A removed pod leaves the group at once (its partitions go to the members
//!   that stay: the first rebalance), burns nothing more, and is listed once more, at
//!   the next cycle, as terminating (its `deletionTimestamp` gates that cycle). Its
//!   ReplicaSet replaces it at once with a new pod (new name, new uid, created now, the
//!   template's `pod-template-hash`) that joins the group `JOIN_SECS` later (the
//!   second rebalance), unless the sticky variant is `Sticky::AtOnce`.
//! - **Rollouts** (when a case has them): a new template (a new fingerprint and
//!   `pod-template-hash`), then a rolling update with the Deployment defaults
//!   (maxSurge and maxUnavailable 25 %): a batch of ⌈C/4⌉ new pods is created, joins a
//!   minute later, and the same number of old pods is deleted then; the next batch a
//!   minute after. While it runs, `status.updatedReplicas < spec.replicas` or
//!   `status.replicas > spec.replicas` holds the fleet gate.
//! - **HPA steps** (when a case has them): `spec.replicas` follows the daily swing,
//!   `round(C × swing)`; a step up creates pods (they join a minute later), a step down
//!   deletes the newest pods. The template does not change.
//! - **Assignors** (one topic; members sorted by member id, which sorts as the pod
//!   name: `client.id` is the pod's hostname and the coordinator appends a suffix).
//!   *Range* gives each member a contiguous range of partitions, the first `P % C`
//!   members one more; *round-robin* deals partition `p` to member `p % C`. Both are
//!   functions of the sorted member list alone (the eager protocol: every rebalance
//!   revokes everything). *Cooperative-sticky* is librdkafka's rule
//!   (`librdkafka.rs`, as a real group was recorded following it: tests/kafka/
//!   FINDINGS.md, replayed by `tests/it/assignor.rs`): on a leave the members keep
//!   theirs and the orphans go highest-numbered first to the members holding the
//!   fewest; on a join the members above quota give up their lowest-numbered
//!   partitions, by turns, to the newcomers. Earlier guesses stay as variants
//!   (`Sticky`): a member over its quota (`P / C`, one more for `P % C` of them) gives
//!   partitions up (the newest received, the lowest-numbered, the highest), then every
//!   unowned partition, by number, goes to the member holding the fewest (ties: the
//!   member id that sorts first). A sticky group starts from the range assignment of
//!   its first members, as a group does that followed Kafka's upgrade path from its
//!   default `[range, cooperative-sticky]` list (a group started on cooperative-sticky
//!   alone starts round-robin by member id).
//!
//! - **The partition signal** (SPEC §12), for the policy that reads it: what
//!   `PARTITION_QUERY` would answer, as a scrape shows it. Each pod exports the
//!   partitions it owns; it reports a new assignment once its part of a rebalance has
//!   settled (9 s after a leave, 22 s after a join: the medians recorded on Tansu), and
//!   is scraped every 30 s at its own phase, so for up to a minute after a rebalance a
//!   moved partition shows on its old owner, on both, or on neither; a removed pod's
//!   last scrape stays visible for the 5-minute lookback. Each partition's load is its
//!   message rate (2,000 messages a second a core) averaged over the rate window, as
//!   the CPU is. The answer goes to `plan::decide` as `Inputs.partitions`, built with
//!   `partition::Answer::new` as the binary builds it from a body.
//!
//! - **Measured.** The truth is the load without noise: a minute is over the threshold
//!   when the spread of what the running pods would have burned without the minute
//!   noise and the wobble is; the group is *balanced* from the start of the first hour
//!   of minutes within it. A verdict was *decided by noise* when the same protocol,
//!   given the same fleet's readings without noise (at the action and now), gives
//!   another; *by the swing* when that noise-free verdict differs from the one with
//!   the rates held where they were at the action. A removal costs the group a leave
//!   and a join, each a rebalance of one round under the eager protocol (range,
//!   round-robin) and two under the cooperative one (KIP-429: revoke, then assign).
//!
//! Left out, each of which would make a removal cost more, never less: the lag of a
//! rebalance and the catch-up burst after it, a pod that takes longer than one cycle to
//! terminate, refused evictions.

use pod_rebalancer::memory::{self, Answer, Breaker, Dropped, Memory, Verdict};
use pod_rebalancer::partition;
use pod_rebalancer::plan::{self, Decision, Hold, Inputs, Plan, Pod, Removal, Role, Rollout, Samples, Settings};
use pod_rebalancer::stats;
use std::collections::VecDeque;

#[path = "rng.rs"]
mod rng;
pub use rng::Rng;
#[path = "librdkafka.rs"]
pub mod librdkafka;

/// One minute: the resolution of the model.
pub const TICK: i64 = 60;
/// The CronJob's schedule.
pub const CYCLE: i64 = 300;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;
/// A consumer's own CPU, with no partition (cores), unless a case says otherwise.
pub const BASE_CORES: f64 = 0.01;
/// The minute-to-minute noise of each pod's CPU: uniform in ±3 %.
pub const NOISE: f64 = 0.03;
/// A new pod joins the consumer group this long after it is created (it starts, then
/// subscribes).
pub const JOIN_SECS: i64 = 60;
/// The daily swing of the rates, where a case has one: ±25 % around the mean, highest at
/// 06:00 and lowest at 18:00 of the simulated day.
pub const SWING: f64 = 0.25;
/// The baseline policy's cooldown.
pub const COOLDOWN_SECS: i64 = 3600;
/// The spike's extra CPU (cores), and for how long.
pub const SPIKE_CORES: f64 = 1.5;
pub const SPIKE_SECS: i64 = 15 * 60;
/// "Balanced" is an hour of minutes within the threshold.
pub const BALANCED_SECS: i64 = 3600;
/// The partition signal (SPEC §12) as a scrape shows it. Each pod exports which
/// partitions it owns, scraped every `SCRAPE_SECS` at its own phase; it reports a new
/// assignment once its part of the rebalance has settled: `LEAVE_SETTLE_SECS` after a
/// leave, `JOIN_SETTLE_SECS` after a join (the medians recorded on Tansu: 9.4 s and
/// 21.7 s, tests/kafka/FINDINGS.md). The series of a pod no longer scraped (removed)
/// stay visible for `LOOKBACK_SECS` after its last scrape, as an instant query's
/// lookback shows them without staleness markers.
pub const SCRAPE_SECS: i64 = 30;
pub const LEAVE_SETTLE_SECS: i64 = 9;
pub const JOIN_SETTLE_SECS: i64 = 22;
pub const LOOKBACK_SECS: i64 = 300;
/// The partitions' load is their message rate, not cores: so many messages a second
/// make a core's work (the fit finds the factor; the unit is the query's).
pub const MESSAGES_PER_CORE: f64 = 2000.0;
/// The seed of the tables in BENCHMARKS.md.
pub const SEED: u64 = 0x5eed_2026_0013_0006;

const DEPLOYMENT: &str = "consumer";

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

/// How the modelled cooperative-sticky assignor treats an evicted pod and its
/// replacement. `Sticky::MODEL`, librdkafka's rule as a real group was recorded
/// following it, is what every table uses unless it compares the variants; the others
/// are the model's earlier guesses, kept to show what the rule changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// librdkafka 2.16.0 (`librdkafka.rs`, tests/kafka/FINDINGS.md): a leave deals the
    /// orphans highest first to the members holding the fewest; a join makes the members
    /// above quota give up their lowest-numbered partitions, by turns, to the newcomer.
    Librdkafka,
    /// The replacement joins in the same rebalance as the evicted pod leaves, and
    /// takes the orphaned partitions (the model before leave-then-join).
    AtOnce,
    /// Leave, then join; a member over its quota gives up the partitions it received
    /// last.
    Newest,
    /// Leave, then join; the lowest-numbered ones.
    Lowest,
    /// Leave, then join; the highest-numbered ones.
    Highest,
}

impl Sticky {
    /// What a real librdkafka group does (recorded: tests/kafka/FINDINGS.md).
    pub const MODEL: Sticky = Sticky::Librdkafka;
    pub const ALL: [Sticky; 5] = [
        Sticky::Librdkafka,
        Sticky::Newest,
        Sticky::Lowest,
        Sticky::Highest,
        Sticky::AtOnce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sticky::Librdkafka => "librdkafka's rule",
            Sticky::AtOnce => "joins as it leaves",
            Sticky::Newest => "gives up the newest received",
            Sticky::Lowest => "gives up the lowest-numbered",
            Sticky::Highest => "gives up the highest-numbered",
        }
    }

    /// The word `--sticky` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Sticky::Librdkafka => "librdkafka",
            Sticky::AtOnce => "at-once",
            Sticky::Newest => "newest",
            Sticky::Lowest => "lowest",
            Sticky::Highest => "highest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky(Sticky),
}

impl Assignor {
    pub const STICKY: Assignor = Assignor::CooperativeSticky(Sticky::MODEL);
    pub const ALL: [Assignor; 3] = [Assignor::STICKY, Assignor::Range, Assignor::RoundRobin];

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
            Assignor::CooperativeSticky(_) => "cooperative-sticky",
        }
    }

    /// Rounds of one rebalance: the eager protocol revokes everything and reassigns in
    /// one; the cooperative protocol takes two (KIP-429: revoke, then assign).
    pub fn rounds(self) -> usize {
        match self {
            Assignor::Range | Assignor::RoundRobin => 1,
            Assignor::CooperativeSticky(_) => 2,
        }
    }

    /// The same assignor with another sticky variant (range and round-robin have none).
    pub fn with(self, sticky: Sticky) -> Assignor {
        match self {
            Assignor::CooperativeSticky(_) => Assignor::CooperativeSticky(sticky),
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No rebalancer at all.
    None,
    /// `decide` alone, every removal it plans carried out: the rules without memory.
    Stateless,
    /// The stateless rules, but no action within `COOLDOWN_SECS` of the last one: a
    /// baseline, not the product.
    Cooldown,
    /// `decide`, then `in_progress`, `judge`, `apply`, `lease`, `settle`: the memory
    /// carried from cycle to cycle as `cycle::cycle` carries it.
    ClosedLoop,
    /// The closed loop with the partition signal: `decide` also given what
    /// `PARTITION_QUERY` would answer (the binary's rules with it set).
    Signal,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::None,
        Policy::Stateless,
        Policy::Cooldown,
        Policy::ClosedLoop,
        Policy::Signal,
    ];
    /// The policies that act, in the order the tables show them.
    pub const ACTING: [Policy; 4] = [Policy::Stateless, Policy::Cooldown, Policy::ClosedLoop, Policy::Signal];

    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "no rebalancer",
            Policy::Stateless => "stateless",
            Policy::Cooldown => "1 h cooldown",
            Policy::ClosedLoop => "memory",
            Policy::Signal => "memory + signal",
        }
    }

    /// Whether it runs the memory's protocol (and so has verdicts to report).
    pub fn judges(self) -> bool {
        matches!(self, Policy::ClosedLoop | Policy::Signal)
    }
}

/// The partitions' mean rates (cores) as drawn from the world's stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rates {
    /// `p` partitions, partition `i` at `(0.5 − 0.4·i/(p − 1))` cores ±10 %: the heavy
    /// ones on low numbers.
    Sloped { p: usize },
    /// `p` partitions at `cores` ±`jitter`; partition `hot.0` at `hot.1` times `cores`
    /// exactly.
    Even {
        p: usize,
        cores: f64,
        jitter: f64,
        hot: Option<(usize, f64)>,
    },
}

impl Rates {
    fn draw(self, rng: &mut Rng) -> Vec<f64> {
        match self {
            Rates::Sloped { p } => (0..p)
                .map(|i| (0.5 - 0.4 * i as f64 / (p - 1) as f64) * rng.around_one(0.10))
                .collect(),
            Rates::Even { p, cores, jitter, hot } => (0..p)
                .map(|i| match hot {
                    Some((h, factor)) if h == i => cores * factor,
                    _ => cores * rng.around_one(jitter),
                })
                .collect(),
        }
    }

    pub fn partitions(self) -> usize {
        match self {
            Rates::Sloped { p } | Rates::Even { p, .. } => p,
        }
    }
}

/// What is wrong with the group, and what happens to it: one row of a table.
#[derive(Debug, Clone)]
pub struct Case {
    /// A short label, "(b)".
    pub label: String,
    pub name: String,
    /// The world's stream: every variant of a case (rollouts, HPA, another assignor)
    /// sees the same partitions and the same events.
    pub stream: u64,
    pub rates: Rates,
    pub consumers: usize,
    /// A pod's own CPU (cores).
    pub base: f64,
    /// Each pod's CPU over each five-minute window is off by a factor uniform in
    /// ±`wobble`.
    pub wobble: f64,
    /// The rates swing daily by ±`SWING` (a sine, highest at 06:00).
    pub swing: bool,
    /// With `swing`, the hot partition (of `Rates::Even`) swings a quarter of a day
    /// later than the others: its tenant lives elsewhere.
    pub hot_swings_later: bool,
    /// A hot key: `cores` more on a seeded partition until `until` (seconds).
    pub hot_key: Option<(f64, i64)>,
    /// Once a day, at a seeded minute, one seeded pod burns `SPIKE_CORES` more for
    /// `SPIKE_SECS`.
    pub spike: bool,
    /// Once a day, at a seeded minute, one seeded pod turns slow: it burns this many
    /// times its load until it is removed (its replacement is not slow).
    pub slow: Option<f64>,
    /// A rollout every so many seconds, the first half that long in.
    pub rollouts: Option<i64>,
    pub hpa: bool,
}

impl Case {
    fn new(label: &str, name: &str, rates: Rates, consumers: usize) -> Case {
        // The stream is a function of the label, so that cases do not share draws.
        let stream = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Case {
            label: label.into(),
            name: name.into(),
            stream,
            rates,
            consumers,
            base: BASE_CORES,
            wobble: 0.0,
            swing: false,
            hot_swings_later: false,
            hot_key: None,
            spike: false,
            slow: None,
            rollouts: None,
            hpa: false,
        }
    }

    /// (a) An unlucky sticky assignment on `c` consumers, 3 partitions each: moderately
    /// uneven partitions, the heavy ones on low numbers, owned in contiguous ranges.
    pub fn unlucky(c: usize) -> Case {
        let (label, name) = match c {
            12 => ("(a)".to_string(), "unlucky assignment".to_string()),
            _ => (format!("(a{c})"), format!("unlucky assignment, {c} pods")),
        };
        Case::new(&label, &name, Rates::Sloped { p: 3 * c }, c)
    }

    /// (b) One partition at 5× the others: key skew.
    pub fn hot_partition() -> Case {
        let rates = Rates::Even {
            p: 16,
            cores: 0.25,
            jitter: 0.05,
            hot: Some((5, 5.0)),
        };
        Case::new("(b)", "hot partition", rates, 8)
    }

    /// (c) 12 consumers on 10 partitions: two are idle whatever is evicted.
    pub fn idle_consumers() -> Case {
        let rates = Rates::Even {
            p: 10,
            cores: 1.0,
            jitter: 0.05,
            hot: None,
        };
        Case::new("(c)", "idle consumers", rates, 12)
    }

    /// (d) A balanced group, and once a day a 15-minute spike on one pod.
    pub fn spike() -> Case {
        let rates = Rates::Even {
            p: 16,
            cores: 0.5,
            jitter: 0.10,
            hot: None,
        };
        Case {
            spike: true,
            ..Case::new("(d)", "15-minute spike", rates, 8)
        }
    }

    /// (e) Unfixable near the threshold: 11 consumers on 12 partitions (one consumer
    /// holds two), with ±`wobble` noise and the daily swing.
    pub fn eleven_on_twelve(wobble: f64) -> Case {
        let rates = Rates::Even {
            p: 12,
            cores: 0.5,
            jitter: 0.05,
            hot: None,
        };
        Case {
            wobble,
            swing: true,
            base: 0.05,
            ..Case::new("(e)", "11 consumers on 12 partitions", rates, 11)
        }
    }

    /// (f) Unfixable near the threshold: a hot partition at 3× (on average: it swings
    /// later than the others), ±`wobble` noise.
    pub fn hot_three(wobble: f64) -> Case {
        let rates = Rates::Even {
            p: 16,
            cores: 0.25,
            jitter: 0.05,
            hot: Some((5, 3.0)),
        };
        Case {
            wobble,
            swing: true,
            hot_swings_later: true,
            base: 0.05,
            ..Case::new("(f)", "hot partition at 3×", rates, 8)
        }
    }

    /// (g) A regime change: the unlucky assignment on `c` consumers with a hot key of
    /// `cores` on one partition for the first six hours.
    pub fn regime_change(c: usize, cores: f64) -> Case {
        Case {
            hot_key: Some((cores, 6 * HOUR)),
            ..Case::new(
                "(g)",
                &format!("hot key for 6 h, then an unlucky assignment, {c} pods"),
                Rates::Sloped { p: 3 * c },
                c,
            )
        }
    }

    /// (h) A pod-local problem: a balanced group of `c` consumers in which, once a day,
    /// one pod turns `factor` times slower (a bad node, a stuck thread) until removed.
    pub fn slow_pod(c: usize, factor: f64) -> Case {
        let rates = Rates::Even {
            p: 3 * c,
            cores: 0.3,
            jitter: 0.10,
            hot: None,
        };
        Case {
            slow: Some(factor),
            ..Case::new(&format!("(h{c})"), &format!("one slow pod, {c} pods"), rates, c)
        }
    }

    /// The same case with a rollout every `hours`.
    pub fn with_rollouts(self, hours: i64) -> Case {
        Case {
            rollouts: Some(hours * HOUR),
            ..self
        }
    }

    /// The same case with the daily swing and an HPA that follows it.
    pub fn with_hpa(self) -> Case {
        Case {
            swing: true,
            hpa: true,
            ..self
        }
    }

    pub fn with_wobble(self, wobble: f64) -> Case {
        Case { wobble, ..self }
    }

    /// The parameters, in words.
    pub fn parameters(&self) -> String {
        let c = self.consumers;
        let mut words = match self.rates {
            Rates::Sloped { p } => format!("P = {p}, C = {c}; partition p at (0.5 − 0.4·p/{}) cores ±10 %", p - 1),
            Rates::Even { p, cores, jitter, hot } => {
                let mut s = format!(
                    "P = {p}, C = {c}; partitions at {cores:?} cores ±{:.0} %",
                    100.0 * jitter
                );
                if let Some((h, factor)) = hot {
                    s.push_str(&format!(", partition {h} at {:?} cores ({factor}×)", cores * factor));
                }
                s
            }
        };
        if self.base != BASE_CORES {
            words.push_str(&format!("; {} cores a pod of its own", self.base));
        }
        if self.wobble > 0.0 {
            words.push_str(&format!("; ±{:.0} % noise a window", 100.0 * self.wobble));
        }
        if self.swing {
            words.push_str(&format!("; rates swing ±{:.0} % daily", 100.0 * SWING));
            if self.hot_swings_later {
                words.push_str(", the hot one 6 h later");
            }
        }
        if let Some((cores, until)) = self.hot_key {
            words.push_str(&format!(
                "; a hot key of {cores} cores on a seeded partition for the first {} h",
                until / HOUR
            ));
        }
        if self.spike {
            words.push_str(&format!(
                "; once a day, at a seeded minute, one pod burns {SPIKE_CORES} cores more for {} minutes",
                SPIKE_SECS / 60
            ));
        }
        if let Some(factor) = self.slow {
            words.push_str(&format!(
                "; once a day, at a seeded minute, one pod turns {factor}× slower until removed"
            ));
        }
        words
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Run {
    pub case: Case,
    pub assignor: Assignor,
    pub policy: Policy,
    pub seed: u64,
    pub days: i64,
    /// The decision's and the memory's settings (`decision_settings()` and
    /// `memory_settings()` unless a run explores others).
    pub decision: Settings,
    pub memory: memory::Settings,
    /// Stop once the group has been balanced for `BALANCED_SECS` from this time on
    /// (seconds), rather than at the end of the days.
    pub stop_when_balanced_after: Option<i64>,
    /// Times (seconds) at which to record what `PARTITION_QUERY` would answer beside
    /// the truth (`Report::scrapes`), between cycles too.
    pub scrapes: Vec<i64>,
}

impl Run {
    /// A run of `days` with the default settings.
    pub fn new(case: Case, assignor: Assignor, policy: Policy, seed: u64, days: i64) -> Run {
        Run {
            case,
            assignor,
            policy,
            seed,
            days,
            decision: decision_settings(),
            memory: memory_settings(),
            stop_when_balanced_after: None,
            scrapes: Vec::new(),
        }
    }

    /// The same run, stopped once balanced after `t` (seconds).
    pub fn until_balanced_after(self, t: i64) -> Run {
        Run {
            stop_when_balanced_after: Some(t),
            ..self
        }
    }
}

/// The memory's verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub effective: usize,
    pub partial: usize,
    pub ineffective: usize,
}

impl Verdicts {
    pub fn total(&self) -> usize {
        self.effective + self.partial + self.ineffective
    }

    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Effective => self.effective += 1,
            Verdict::Partial => self.partial += 1,
            Verdict::Ineffective => self.ineffective += 1,
        }
    }
}

/// What a run measured. Times are seconds since the rebalancer was deployed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub days: i64,
    /// Pods removed, in all and by day.
    pub removals: usize,
    pub removals_by_day: Vec<usize>,
    /// Cycles that removed pods.
    pub actions: usize,
    /// Consumer-group rebalances the removals caused (a leave and a join each), and
    /// their rounds under the assignor's protocol.
    pub rebalances: usize,
    pub rounds: usize,
    /// Rebalances of the rollouts and the HPA's steps (a leave or a join each), and
    /// their rounds.
    pub other_rebalances: usize,
    pub other_rounds: usize,
    pub rollouts: usize,
    /// Each minute simulated: whether the spread of the load without noise (over the
    /// running pods, what each would have burned that minute without the minute noise
    /// and the wobble) was over the threshold.
    pub over: Vec<bool>,
    /// The hottest pod's CPU each minute (cores).
    pub hottest: Vec<f64>,
    /// The memory's verdicts, and how many of them noise decided: the verdict on the
    /// same fleet without noise (the spreads of what each pod would have burned
    /// without the minute noise and the wobble, at the action and now) differs.
    pub verdicts: Verdicts,
    pub noise_decided: usize,
    /// Verdicts the rates' change since the action decided: the verdict without noise
    /// differs from the one without noise with the rates as they were at the action.
    pub swing_decided: usize,
    /// Pending actions a rollout dropped.
    pub dropped_by_rollout: usize,
    /// Verdicts that said "the hot spot moved", the cycles the breaker held, probes.
    pub hot_spots: usize,
    pub held: usize,
    pub probes: usize,
    /// Of the "hot spot moved" claims, those that were right: the new hottest pod held
    /// the partition that carried the most load on the removed hottest pod (the truth,
    /// not a scrape).
    pub hot_spots_right: usize,
    /// With the partition signal: the cycles whose plan held for "partitions moving",
    /// and those it held as unfixable; and each verdict of the signal (`Verdict::label`)
    /// over the cycles that read it.
    pub moving: usize,
    pub unfixable: usize,
    pub signal: std::collections::BTreeMap<&'static str, usize>,
    /// What the signal said in the cycles that acted.
    pub signal_when_acting: std::collections::BTreeMap<&'static str, usize>,
    /// The breaker as each cycle's judgement left it: open until (seconds), when open.
    pub open_until: Vec<(i64, Option<i64>)>,
    /// Each action: when, and how many pods it removed.
    pub removed_at: Vec<(i64, usize)>,
    /// Each pod that turned slow: when, and how long it lived on (`None`: to the end).
    pub slow_lives: Vec<(i64, Option<i64>)>,
    /// What `Run::scrapes` found.
    pub scrapes: Vec<Scrape>,
}

/// A partition answer as `(pod, partition, load)` triples, before it is read.
pub type Triples = Vec<(String, String, f64)>;

/// The partition signal at one moment, beside the truth.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub at: i64,
    /// `(pod, partition, load)` as `PARTITION_QUERY` would answer.
    pub answer: Triples,
    /// The running members and what each owns now, sorted by name.
    pub owners: Vec<(String, Vec<usize>)>,
    /// Pods removed but still listed (terminating).
    pub gone: Vec<String>,
}

impl Report {
    pub fn removals_per_day(&self) -> f64 {
        self.removals as f64 / self.days as f64
    }

    /// Rounds a day the removals caused.
    pub fn rounds_per_day(&self) -> f64 {
        self.rounds as f64 / self.days as f64
    }

    pub fn minutes(&self) -> usize {
        self.over.len()
    }

    pub fn minutes_over(&self) -> usize {
        self.over.iter().filter(|o| **o).count()
    }

    pub fn share_over(&self) -> f64 {
        self.minutes_over() as f64 / self.minutes().max(1) as f64
    }

    /// The start of the first hour at or after `t` whose minutes were all within the
    /// threshold (seconds).
    pub fn balanced_after(&self, t: i64) -> Option<i64> {
        let need = (BALANCED_SECS / TICK) as usize;
        let mut run = 0;
        // Minute i ends at (i + 1)·TICK and starts at i·TICK.
        for (i, over) in self.over.iter().enumerate().skip((t / TICK).max(0) as usize) {
            run = if *over { 0 } else { run + 1 };
            if run == need {
                return Some((i + 1 - need) as i64 * TICK);
            }
        }
        None
    }

    /// The start of the first hour within the threshold.
    pub fn first_balanced(&self) -> Option<i64> {
        self.balanced_after(0)
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

    /// Pods removed before `t` (seconds).
    pub fn removals_before(&self, t: i64) -> usize {
        self.removed_at.iter().filter(|(at, _)| *at < t).map(|(_, n)| n).sum()
    }

    /// Until when the breaker was open as of the last cycle at or before `t`, if it was.
    pub fn open_until_at(&self, t: i64) -> Option<i64> {
        self.open_until
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .and_then(|(_, u)| *u)
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

/// Cooperative-sticky, as modelled: `owned` is every member's partitions in the order
/// it received them, members sorted by id (a new member owns none), `orphans` the
/// partitions of members that left. `Sticky::Librdkafka` is `librdkafka::rebalance`;
/// under the other variants each member keeps at most its quota, `P / C`, or
/// one more for the first `P % C` members by id that own that many; beyond it, it
/// gives up partitions as `sticky` says. Then every unowned partition, in order, goes to
/// the member that holds the fewest, the first of equals. Returns how many partitions
/// were taken from members that stay.
pub fn sticky(owned: &mut [Vec<usize>], mut orphans: Vec<usize>, sticky: Sticky) -> usize {
    if sticky == Sticky::Librdkafka {
        return librdkafka::rebalance(owned, orphans);
    }
    let c = owned.len();
    if c == 0 {
        return 0;
    }
    let total = owned.iter().map(Vec::len).sum::<usize>() + orphans.len();
    let (quota, mut extra) = (total / c, total % c);
    let mut revoked = 0;
    for member in owned.iter_mut() {
        let keep = if member.len() > quota && extra > 0 {
            extra -= 1;
            quota + 1
        } else {
            quota
        };
        while member.len() > keep {
            let last = member.len() - 1;
            let at = match sticky {
                Sticky::Newest | Sticky::AtOnce | Sticky::Librdkafka => last,
                Sticky::Lowest => (0..member.len()).min_by_key(|&i| member[i]).unwrap_or(last),
                Sticky::Highest => (0..member.len()).max_by_key(|&i| member[i]).unwrap_or(last),
            };
            orphans.push(member.remove(at));
            revoked += 1;
        }
    }
    orphans.sort_unstable();
    for partition in orphans {
        let least = (0..c).min_by_key(|&k| owned[k].len()).unwrap_or(0);
        owned[least].push(partition);
    }
    revoked
}

/// A consumer pod.
struct Consumer {
    name: String,
    uid: String,
    created: i64,
    /// The template generation it was made from.
    generation: u64,
    /// When it joins the group (seconds), and whether it has.
    joins: i64,
    joined: bool,
    /// When it was removed; `None` while it runs.
    removed: Option<i64>,
    /// In the order received.
    partitions: Vec<usize>,
    /// What it reports owning, sorted, and from when (seconds): its assignment once its
    /// part of each rebalance has settled. The last few.
    reported: VecDeque<(i64, Vec<usize>)>,
    /// When within each `SCRAPE_SECS` it is scraped (seconds).
    scrape_phase: i64,
    /// Its factor for the current five-minute window.
    wobble: f64,
    /// Its CPU is this many times its load (a slow pod), since when.
    slow: f64,
    slow_since: Option<i64>,
    /// What it burned, and what it would have burned without noise: (end of the
    /// minute, cores, cores), the last few minutes.
    burned: VecDeque<(i64, f64, f64)>,
}

/// Who caused a rebalance: the rebalancer's removals, or the Deployment (a rollout, the
/// HPA).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    Removal = 0,
    Deployment = 1,
}

/// A rolling update in progress: the next step's time, the batch size, and whether
/// the step retires old pods (else it creates new ones).
#[derive(Clone, Copy)]
struct Rolling {
    at: i64,
    batch: usize,
    retire: bool,
}

/// The Deployment's pods and their consumer group.
struct Group {
    assignor: Assignor,
    /// The partitions' mean rates, and each one's swing phase (days).
    rates: Vec<f64>,
    phases: Vec<f64>,
    swing: bool,
    base: f64,
    wobble: f64,
    /// The minutes of what each pod burned to keep: the rate window's.
    keep: usize,
    /// A hot key: its partition, its extra cores, until when.
    hot_key: Option<(usize, f64, i64)>,
    /// Running pods, and removed pods until they have been listed once as terminating.
    pods: Vec<Consumer>,
    /// The pod that spikes, and from when to when.
    spike: Option<(String, i64, i64)>,
    uids: u64,
    /// The template's generation, and `spec.replicas`.
    generation: u64,
    desired: usize,
    rolling: Option<Rolling>,
    /// Rebalances and rounds, by cause.
    rebalances: [usize; 2],
    rounds: [usize; 2],
    /// Slow pods that left: when each turned slow, and how long it lived on.
    slow_lives: Vec<(i64, Option<i64>)>,
}

impl Group {
    fn new(run: &Run, world: &mut Rng, rng: &mut Rng) -> Group {
        let case = &run.case;
        let rates = case.rates.draw(world);
        let p = rates.len();
        let mut phases = vec![0.0; p];
        if let (true, Rates::Even { hot: Some((h, _)), .. }) = (case.hot_swings_later, case.rates) {
            phases[h] = 0.25;
        }
        let hot_key = case
            .hot_key
            .map(|(cores, until)| (world.below(p as u64) as usize, cores, until));
        let mut group = Group {
            assignor: run.assignor,
            rates,
            phases,
            swing: case.swing,
            base: case.base,
            wobble: case.wobble,
            keep: (run.decision.window_secs as i64 / TICK) as usize + 1,
            hot_key,
            pods: Vec::new(),
            spike: None,
            uids: 0,
            generation: 1,
            desired: case.consumers,
            rolling: None,
            rebalances: [0; 2],
            rounds: [0; 2],
            slow_lives: Vec::new(),
        };
        for _ in 0..case.consumers {
            let mut pod = group.new_pod(-DAY, -DAY, rng);
            pod.joined = true;
            group.pods.push(pod);
        }
        let members = group.members();
        let assignment = match run.assignor {
            Assignor::Range | Assignor::CooperativeSticky(_) => range(p, members.len()),
            Assignor::RoundRobin => round_robin(p, members.len()),
        };
        for (i, partitions) in members.into_iter().zip(assignment) {
            group.pods[i].reported.push_back((-DAY, partitions.clone()));
            group.pods[i].partitions = partitions;
        }
        group
    }

    /// The template's `pod-template-hash`: the first one as before, then one drawn
    /// from the generation.
    fn template_hash(generation: u64) -> String {
        if generation == 1 {
            return "7d4b9c8f5".into();
        }
        let mut rng = Rng::new(generation);
        (0..10).map(|_| name_character(&mut rng)).collect()
    }

    fn fingerprint(&self) -> String {
        format!("template-{}", self.generation)
    }

    /// A new pod of the current ReplicaSet, `consumer-<hash>-<5 characters>` as
    /// Kubernetes names them; it joins the group at `joins`.
    fn new_pod(&mut self, created: i64, joins: i64, rng: &mut Rng) -> Consumer {
        let hash = Group::template_hash(self.generation);
        let name = loop {
            let suffix: String = (0..5).map(|_| name_character(rng)).collect();
            let name = format!("{DEPLOYMENT}-{hash}-{suffix}");
            if self.pods.iter().all(|p| p.name != name) {
                break name;
            }
        };
        self.uids += 1;
        let wobble = if self.wobble > 0.0 {
            rng.around_one(self.wobble)
        } else {
            1.0
        };
        // The scrape phase comes from the uid, not from `rng`: the signal draws nothing
        // from the streams the other policies share.
        let scrape_phase = Rng::new(self.uids).below(SCRAPE_SECS as u64) as i64;
        Consumer {
            name,
            uid: format!("00000000-0000-4000-8000-{:012x}", self.uids),
            created,
            generation: self.generation,
            joins,
            joined: false,
            removed: None,
            partitions: Vec::new(),
            reported: VecDeque::new(),
            scrape_phase,
            wobble,
            slow: 1.0,
            slow_since: None,
            burned: VecDeque::new(),
        }
    }

    /// The group's members, sorted by member id: indices into `pods`.
    fn members(&self) -> Vec<usize> {
        let mut members: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].removed.is_none() && self.pods[i].joined)
            .collect();
        members.sort_by(|&a, &b| self.pods[a].name.cmp(&self.pods[b].name));
        members
    }

    /// Pods running (not removed): indices into `pods`.
    fn running(&self) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&i| self.pods[i].removed.is_none())
            .collect()
    }

    /// A partition's rate in the minute ending at `t`.
    fn rate(&self, partition: usize, t: i64) -> f64 {
        let mut rate = self.rates[partition];
        if self.swing {
            rate *= swing(t, self.phases[partition]);
        }
        if let Some((hot, cores, until)) = self.hot_key
            && hot == partition
            && t <= until
        {
            rate += cores;
        }
        rate
    }

    /// The minute ending at `t`: every running pod burns its load. Returns what each
    /// burned, and what each would have burned without noise.
    fn burn(&mut self, t: i64, rng: &mut Rng) -> (Vec<f64>, Vec<f64>) {
        let new_window = (t - TICK).rem_euclid(CYCLE) == 0;
        let loads: Vec<f64> = self
            .pods
            .iter()
            .map(|pod| pod.partitions.iter().map(|&p| self.rate(p, t)).sum::<f64>())
            .collect();
        let (mut minute, mut quiet) = (Vec::new(), Vec::new());
        for (pod, load) in self.pods.iter_mut().zip(loads) {
            if pod.removed.is_some() {
                continue;
            }
            let mut clean = (self.base + load) * pod.slow;
            if let Some((name, from, to)) = &self.spike
                && *name == pod.name
                && (from + 1..=*to).contains(&t)
            {
                clean += SPIKE_CORES;
            }
            if self.wobble > 0.0 && new_window {
                pod.wobble = rng.around_one(self.wobble);
            }
            let cores = clean * pod.wobble * rng.around_one(NOISE);
            pod.burned.push_back((t, cores, clean));
            if pod.burned.len() > self.keep {
                pod.burned.pop_front();
            }
            minute.push(cores);
            quiet.push(clean);
        }
        (minute, quiet)
    }

    /// What `decide` reads at `now`: the pods the API lists, the metrics answer (each
    /// pod's mean over the rate window), and the same answer without noise.
    fn observe(&self, now: i64, window: i64) -> (Vec<Pod>, Samples, Samples) {
        let mut pods = Vec::new();
        let mut samples = Vec::new();
        let mut quiet = Vec::new();
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
            let (sum, clean, n) = p
                .burned
                .iter()
                .filter(|(at, _, _)| *at > now - window && *at <= now)
                .fold((0.0, 0.0, 0), |(sum, clean, n), (_, c, q)| (sum + c, clean + q, n + 1));
            if n > 0 {
                samples.push((p.name.as_str().into(), sum / n as f64));
                quiet.push((p.name.as_str().into(), clean / n as f64));
            }
        }
        let answer = |s| Samples::new(s).unwrap_or_else(|dup| panic!("two pods named {dup}"));
        (pods, answer(samples), answer(quiet))
    }

    /// What each pod with a sample would burn, without noise, on its partitions now at
    /// their rates of `at` (seconds): the fleet as an action left it, had the rates not
    /// changed since.
    fn frozen(&self, at: i64) -> Samples {
        let samples = self
            .pods
            .iter()
            .filter(|p| !p.burned.is_empty())
            .map(|p| {
                let load: f64 = p.partitions.iter().map(|&q| self.rate(q, at)).sum();
                (p.name.as_str().into(), (self.base + load) * p.slow)
            })
            .collect();
        Samples::new(samples).unwrap_or_else(|dup| panic!("two pods named {dup}"))
    }

    /// The Deployment as the API shows it.
    fn rollout(&self) -> Rollout {
        let running = self.running();
        let updated = running
            .iter()
            .filter(|&&i| self.pods[i].generation == self.generation)
            .count();
        Rollout {
            name: DEPLOYMENT.into(),
            generation: self.generation as i64,
            observed_generation: self.generation as i64,
            desired: self.desired as i64,
            replicas: running.len() as i64,
            updated: updated as i64,
            fingerprint: self.fingerprint(),
            ..Rollout::default()
        }
    }

    /// The pods removed at the last cycle have now been listed once as terminating:
    /// they are gone.
    fn forget_removed(&mut self) {
        self.pods.retain(|p| p.removed.is_none());
    }

    /// The group rebalances at `at` over its members, `orphans` unowned; each member
    /// reports its new assignment `settle` seconds later.
    fn rebalance(&mut self, orphans: Vec<usize>, at: i64, settle: i64) {
        let (p, members) = (self.rates.len(), self.members());
        if members.is_empty() {
            return;
        }
        let assignment = match self.assignor {
            Assignor::Range => range(p, members.len()),
            Assignor::RoundRobin => round_robin(p, members.len()),
            Assignor::CooperativeSticky(variant) => {
                let mut owned: Vec<Vec<usize>> = members
                    .iter()
                    .map(|&i| std::mem::take(&mut self.pods[i].partitions))
                    .collect();
                sticky(&mut owned, orphans, variant);
                owned
            }
        };
        for (i, partitions) in members.into_iter().zip(assignment) {
            let pod = &mut self.pods[i];
            let mut sorted = partitions.clone();
            sorted.sort_unstable();
            if pod.reported.back().is_none_or(|(_, last)| *last != sorted) {
                pod.reported.push_back((at + settle, sorted));
                // Keep what a scrape within the lookback can still show.
                while pod.reported.len() > 2 && pod.reported[1].0 <= at - LOOKBACK_SECS - SCRAPE_SECS {
                    pod.reported.pop_front();
                }
            }
            pod.partitions = partitions;
        }
    }

    /// What `PARTITION_QUERY` answers at `now` (`window`: the rate window, seconds):
    /// `(pod, partition, load)` for every partition each listed pod reports owning at
    /// its last scrape, the load its message rate averaged over the window. The
    /// ownership lags each rebalance (the settle, then up to a scrape interval), so for
    /// a while after one a partition shows on its old owner, or on two pods.
    pub fn partition_answer(&self, now: i64, window: i64) -> Triples {
        let minutes = (window / TICK).max(1);
        let load = |q: usize| {
            let sum: f64 = (0..minutes).map(|k| self.rate(q, now - k * TICK)).sum();
            MESSAGES_PER_CORE * sum / minutes as f64
        };
        let mut out = Vec::new();
        for pod in &self.pods {
            let until = pod.removed.map_or(now, |r| r.min(now));
            let scraped = pod.scrape_phase + (until - pod.scrape_phase).div_euclid(SCRAPE_SECS) * SCRAPE_SECS;
            if now - scraped > LOOKBACK_SECS {
                continue;
            }
            let Some((_, owned)) = pod.reported.iter().rev().find(|(from, _)| *from <= scraped) else {
                continue;
            };
            for &q in owned {
                out.push((pod.name.clone(), format!("events/{q}"), load(q)));
            }
        }
        out
    }

    /// The partition running `pod` owns now (the truth) that carries the most load at
    /// `now`: what "the hot spot moved" should follow.
    fn heaviest_of(&self, pod: &str, now: i64) -> Option<usize> {
        let owner = self.pods.iter().find(|p| p.name == pod && p.removed.is_none())?;
        owner
            .partitions
            .iter()
            .copied()
            .max_by(|&a, &b| self.rate(a, now).total_cmp(&self.rate(b, now)).then(b.cmp(&a)))
    }

    /// The signal and the truth at `at` (seconds), for `Run::scrapes`.
    fn scrape(&self, at: i64, window: i64) -> Scrape {
        let mut owners: Vec<(String, Vec<usize>)> = self
            .members()
            .into_iter()
            .map(|i| {
                let mut owned = self.pods[i].partitions.clone();
                owned.sort_unstable();
                (self.pods[i].name.clone(), owned)
            })
            .collect();
        owners.sort();
        Scrape {
            at,
            answer: self.partition_answer(at, window),
            owners,
            gone: self
                .pods
                .iter()
                .filter(|p| p.removed.is_some())
                .map(|p| p.name.clone())
                .collect(),
        }
    }

    /// The running pod that owns partition `q` now (the truth).
    fn owner(&self, q: usize) -> Option<&str> {
        self.pods
            .iter()
            .find(|p| p.removed.is_none() && p.partitions.contains(&q))
            .map(|p| p.name.as_str())
    }

    /// Counts `n` rebalances under `cause`, and their rounds.
    fn count(&mut self, n: usize, cause: Cause) {
        self.rebalances[cause as usize] += n;
        self.rounds[cause as usize] += n * self.assignor.rounds();
    }

    /// Pods `leaving` are removed at `t` and leave the group: the members that stay
    /// take their partitions.
    fn leave(&mut self, leaving: &[usize], t: i64) {
        let mut orphans = Vec::new();
        for &i in leaving {
            if let Some(since) = self.pods[i].slow_since {
                self.slow_lives.push((since, Some(t - since)));
            }
            self.pods[i].removed = Some(t);
            orphans.append(&mut self.pods[i].partitions);
        }
        self.rebalance(orphans, t, LEAVE_SETTLE_SECS);
    }

    /// New pods whose join time has come (`at` or before) become members: one
    /// rebalance.
    fn join_due(&mut self, at: i64) {
        let mut any = false;
        for pod in self
            .pods
            .iter_mut()
            .filter(|p| p.removed.is_none() && !p.joined && p.joins <= at)
        {
            pod.joined = true;
            any = true;
        }
        if any {
            self.rebalance(Vec::new(), at, JOIN_SETTLE_SECS);
        }
    }

    /// Removes the plan's pods at `now`, each replaced by a new pod at once: the
    /// removed ones leave the group now, their replacements join `JOIN_SECS` later (in
    /// the same rebalance under `Sticky::AtOnce`). Every removal succeeds, so the pair
    /// rule (the coldest only after the hottest) always lets the coldest go.
    fn remove(&mut self, removals: &[Removal], now: i64, rng: &mut Rng) {
        let leaving: Vec<usize> = removals
            .iter()
            .map(|r| {
                self.pods
                    .iter()
                    .position(|p| p.name == r.name && p.removed.is_none())
                    .unwrap_or_else(|| panic!("the plan removes {}, which is not a running pod", r.name))
            })
            .collect();
        let at_once = self.assignor == Assignor::CooperativeSticky(Sticky::AtOnce);
        for _ in removals {
            let mut pod = self.new_pod(now, now + JOIN_SECS, rng);
            pod.joined = at_once;
            self.pods.push(pod);
        }
        // A leave and a join each, whether or not they share a rebalance.
        self.count(2 * removals.len(), Cause::Removal);
        self.leave(&leaving, now);
    }

    /// Starts a rollout at `at`: a new template, replaced in batches of ⌈C/4⌉.
    fn start_rollout(&mut self, at: i64) {
        self.generation += 1;
        self.rolling = Some(Rolling {
            at,
            batch: self.desired.div_ceil(4).max(1),
            retire: false,
        });
    }

    /// The rolling update's step due at `at`, if any: create a batch of new pods
    /// (they join a minute later), or retire as many old ones.
    fn roll(&mut self, at: i64, rng: &mut Rng) {
        let Some(step) = self.rolling.filter(|r| r.at <= at) else {
            return;
        };
        let mut old: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&i| self.pods[i].generation < self.generation)
            .collect();
        old.sort_by(|&a, &b| self.pods[a].name.cmp(&self.pods[b].name));
        let n = step.batch.min(old.len());
        if step.retire {
            self.count(n, Cause::Deployment);
            self.leave(&old[..n], at);
        } else {
            for _ in 0..n {
                let pod = self.new_pod(at, at + JOIN_SECS, rng);
                self.pods.push(pod);
            }
            self.count(n, Cause::Deployment);
        }
        let left = old.len() - if step.retire { n } else { 0 };
        self.rolling = (left > 0).then_some(Rolling {
            at: at + TICK,
            retire: !step.retire,
            ..step
        });
    }

    /// The HPA at `at`: `spec.replicas` follows the swing; a step up creates pods, a
    /// step down deletes the newest ones. Not while a rollout runs.
    fn scale(&mut self, at: i64, consumers: usize, rng: &mut Rng) {
        if self.rolling.is_some() {
            return;
        }
        let target = ((consumers as f64 * swing(at, 0.0)).round() as usize).max(1);
        if target > self.desired {
            for _ in self.desired..target {
                let pod = self.new_pod(at, at + JOIN_SECS, rng);
                self.pods.push(pod);
            }
            self.count(target - self.desired, Cause::Deployment);
        } else if target < self.desired {
            let mut newest = self.running();
            newest.sort_by(|&a, &b| {
                let (a, b) = (&self.pods[a], &self.pods[b]);
                b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name))
            });
            let n = (self.desired - target).min(newest.len());
            self.count(n, Cause::Deployment);
            self.leave(&newest[..n], at);
        }
        self.desired = target;
    }
}

/// A character of a generated Kubernetes name (its alphabet has no vowels and no
/// look-alike digits).
fn name_character(rng: &mut Rng) -> char {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char
}

/// The daily swing at `t` for a partition of `phase` (days): highest at 06:00 + phase.
fn swing(t: i64, phase: f64) -> f64 {
    let day = t as f64 / DAY as f64 - phase;
    1.0 + SWING * (std::f64::consts::TAU * day).sin()
}

/// One run in progress.
struct Sim {
    run: Run,
    settings: Settings,
    group: Group,
    memory: Memory,
    rng: Rng,
    world: Rng,
    report: Report,
    /// The last action's time.
    last_action: Option<i64>,
    /// Closed loop: the last action's time, and the spread without noise then.
    acted_at: i64,
    quiet_before: Option<f64>,
    /// The next rollout, and today's slow pod: when, and the rank of the member.
    next_rollout: Option<i64>,
    slow_at: Option<(i64, u64)>,
    /// The last partition answer built, and what it was built from: an `Answer` is
    /// made from text (as read off the wire), so it is rebuilt only when the
    /// assignment or the rates a scrape shows have changed.
    answer: Option<(Triples, partition::Answer)>,
    /// The partition that carried the most load on the last action's hottest pod.
    hot_partition: Option<usize>,
}

/// Runs one simulation; deterministic in `run`.
pub fn simulate(run: Run) -> Report {
    // The case's numbers come from their own stream, so that every policy and every
    // assignor of one case and seed sees the same partitions and events.
    let mut world = Rng::new(run.seed ^ run.case.stream);
    let mut rng = Rng::new(run.seed);
    let group = Group::new(&run, &mut world, &mut rng);
    let days = run.days;
    let mut sim = Sim {
        settings: run.decision.clone(),
        group,
        memory: Memory::default(),
        rng,
        world,
        report: Report {
            days,
            removals_by_day: vec![0; days as usize],
            ..Report::default()
        },
        last_action: None,
        acted_at: 0,
        quiet_before: None,
        next_rollout: run.case.rollouts.map(|every| every / 2),
        slow_at: None,
        answer: None,
        hot_partition: None,
        run,
    };
    let end = days * DAY;
    let stop_after = sim.run.stop_when_balanced_after;
    let mut quiet_since: Option<i64> = None;
    // The minutes before 0 fill the first rate window.
    let mut t = -(sim.settings.window_secs as i64) + TICK;
    while t <= end {
        sim.events(t);
        // The group now stands as it will through the minute from `t - TICK`.
        for &at in sim.run.scrapes.iter().filter(|&&p| p >= t - TICK && p < t) {
            let scrape = sim.group.scrape(at, sim.settings.window_secs as i64);
            sim.report.scrapes.push(scrape);
        }
        let (minute, quiet) = sim.group.burn(t, &mut sim.rng);
        if t > 0 {
            let over = sim.record(&minute, &quiet);
            quiet_since = match (over, quiet_since) {
                (true, _) => None,
                (false, None) if stop_after.is_some_and(|after| t - TICK >= after) => Some(t - TICK),
                (false, since) => since,
            };
            if quiet_since.is_some_and(|since| t - since >= BALANCED_SECS) {
                break;
            }
        }
        if t > 0 && t < end && t % CYCLE == 0 {
            sim.cycle(t);
        }
        t += TICK;
    }
    let r = &mut sim.report;
    r.rebalances = sim.group.rebalances[Cause::Removal as usize];
    r.rounds = sim.group.rounds[Cause::Removal as usize];
    r.other_rebalances = sim.group.rebalances[Cause::Deployment as usize];
    r.other_rounds = sim.group.rounds[Cause::Deployment as usize];
    r.slow_lives = std::mem::take(&mut sim.group.slow_lives);
    let still_slow = sim.group.pods.iter().filter(|p| p.removed.is_none());
    r.slow_lives
        .extend(still_slow.filter_map(|p| p.slow_since).map(|since| (since, None)));
    r.slow_lives.sort_unstable();
    sim.report
}

impl Sim {
    /// What happens in the minute ending at `t`, before it is burned: it starts at
    /// `t - TICK`.
    fn events(&mut self, t: i64) {
        let at = t - TICK;
        let case = &self.run.case;
        let (end, consumers) = (self.run.days * DAY, case.consumers);
        if at >= 0 && at % DAY == 0 && at < end {
            if case.spike {
                // Today's spike: at a seeded minute, on the pod at a seeded rank.
                let from = at + (60 + self.world.below(22 * 60) as i64) * TICK;
                let members = self.group.members();
                let victim = members[self.world.below(members.len() as u64) as usize];
                self.group.spike = Some((self.group.pods[victim].name.clone(), from, from + SPIKE_SECS));
            }
            if case.slow.is_some() {
                let when = at + (60 + self.world.below(22 * 60) as i64) * TICK;
                self.slow_at = Some((when, self.world.below(consumers as u64)));
            }
        }
        if let (Some(factor), Some((when, rank))) = (case.slow, self.slow_at)
            && when <= at
        {
            let members = self.group.members();
            let victim = members[rank as usize % members.len()];
            self.group.pods[victim].slow = factor;
            self.group.pods[victim].slow_since.get_or_insert(when);
            self.slow_at = None;
        }
        if let (Some(every), Some(next)) = (case.rollouts, self.next_rollout)
            && next <= at
        {
            self.group.start_rollout(at);
            self.report.rollouts += 1;
            self.next_rollout = Some(next + every);
        }
        self.group.roll(at, &mut self.rng);
        if case.hpa {
            self.group.scale(at, consumers, &mut self.rng);
        }
        self.group.join_due(at);
    }

    /// The minute ending at `t`: the hottest pod as a dashboard sees it (`minute`), and
    /// whether the load's spread without noise (`quiet`) was over the threshold: the
    /// assignment's imbalance, not the noise's. Returns that.
    fn record(&mut self, minute: &[f64], quiet: &[f64]) -> bool {
        let spread = stats::describe(quiet).map_or(0.0, |s| s.spread);
        let over = plan::over(spread, self.settings.threshold);
        let r = &mut self.report;
        r.over.push(over);
        r.hottest.push(minute.iter().copied().fold(0.0, f64::max));
        over
    }

    /// One cycle at `now`: what `cycle::cycle` does, without the network.
    fn cycle(&mut self, now: i64) {
        let (pods, samples, quiet) = self.group.observe(now, self.settings.window_secs as i64);
        self.group.forget_removed();
        let removed = match self.run.policy {
            Policy::None => return,
            Policy::Stateless => {
                let plan = self.decide(pods, &samples, now, None, None);
                self.act(plan.removals(), now)
            }
            Policy::Cooldown => {
                let plan = self.decide(pods, &samples, now, None, None);
                let cooling = self.last_action.is_some_and(|at| now - at < COOLDOWN_SECS);
                if cooling {
                    Vec::new()
                } else {
                    self.act(plan.removals(), now)
                }
            }
            Policy::ClosedLoop => self.closed_loop(pods, &samples, &quiet, now, None),
            Policy::Signal => {
                let answer = self.partition_answer(now);
                self.closed_loop(pods, &samples, &quiet, now, Some(answer))
            }
        };
        if !removed.is_empty() {
            let r = &mut self.report;
            r.actions += 1;
            r.removals += removed.len();
            r.removed_at.push((now, removed.len()));
            let day = ((now / DAY) as usize).min(r.removals_by_day.len() - 1);
            r.removals_by_day[day] += removed.len();
        }
    }

    /// What `PARTITION_QUERY` answers now, as the product reads it.
    fn partition_answer(&mut self, now: i64) -> partition::Answer {
        let triples = self.group.partition_answer(now, self.settings.window_secs as i64);
        if let Some((built_from, answer)) = &self.answer
            && *built_from == triples
        {
            return answer.clone();
        }
        let answer = partition::Answer::new(triples.iter().map(|(pod, q, load)| (pod.as_str(), q.as_str(), *load)))
            .unwrap_or_else(|why| panic!("the simulated partition answer at {now} is not one: {why}"));
        self.answer = Some((triples, answer.clone()));
        answer
    }

    /// Counts what the partition signal said in this cycle's plan.
    fn count_signal(&mut self, plan: &Plan) {
        let Some(e) = &plan.partitions else { return };
        let r = &mut self.report;
        *r.signal.entry(e.verdict.label()).or_default() += 1;
        match &plan.decision {
            Decision::Hold(Hold::Unfixable { .. }) => r.unfixable += 1,
            Decision::Hold(Hold::Stabilizing { because })
                if because.iter().any(|b| b.starts_with("partitions moving")) =>
            {
                r.moving += 1
            }
            _ => {}
        }
    }

    /// Carries out the removals (every one succeeds). Returns them.
    fn act(&mut self, removals: &[Removal], now: i64) -> Vec<Removal> {
        if !removals.is_empty() {
            self.group.remove(removals, now, &mut self.rng);
            self.last_action = Some(now);
        }
        removals.to_vec()
    }

    /// The memory's part of `cycle::cycle`, through the same protocol: judge the last
    /// action, let the breaker hold the plan, lease the intended action, act, and
    /// settle what the API answered (every removal succeeds here). Beside it, the
    /// verdict the same protocol gives the same fleet without noise. Returns what was
    /// removed.
    fn closed_loop(
        &mut self,
        pods: Vec<Pod>,
        samples: &Samples,
        quiet: &Samples,
        now: i64,
        partitions: Option<partition::Answer>,
    ) -> Vec<Removal> {
        let settings = self.run.memory.clone();
        let fingerprint = self.group.fingerprint();
        let leased = memory::in_progress(&self.memory, now, &settings);
        let plan = self.decide(pods.clone(), samples, now, leased, partitions.clone());
        self.count_signal(&plan);
        let judgement = memory::judge(&self.memory, &plan, &fingerprint, &settings);
        let right = |h: &memory::HotSpot| {
            self.hot_partition
                .is_some_and(|q| self.group.owner(q) == Some(h.to.as_str()))
        };
        let hot_right = judgement
            .evaluation
            .as_ref()
            .and_then(|e| e.hot_spot.as_ref())
            .is_some_and(right);
        let r = &mut self.report;
        r.dropped_by_rollout += usize::from(judgement.dropped == Some(Dropped::Rollout));
        if let Some(e) = &judgement.evaluation {
            r.verdicts.count(e.verdict);
            r.hot_spots += usize::from(e.hot_spot.is_some());
            r.hot_spots_right += usize::from(hot_right);
            // The same protocol on the same fleet without noise, and without noise with the
            // rates as they were at the action: what noise, and what the rates' change,
            // made of the verdict.
            let mut without_noise = self.memory.clone();
            if let (Some(action), Some(before)) = (without_noise.actions.last_mut(), self.quiet_before) {
                action.spread = Some(before);
            }
            let frozen = self.group.frozen(self.acted_at);
            let verdict = |sim: &Sim, answer: &Samples| {
                let plan = sim.decide(pods.clone(), answer, now, leased, partitions.clone());
                memory::judge(&without_noise, &plan, &fingerprint, &settings)
                    .evaluation
                    .map(|e| e.verdict)
            };
            let (quiet, still) = (verdict(self, quiet), verdict(self, &frozen));
            self.report.noise_decided += usize::from(quiet != Some(e.verdict));
            self.report.swing_decided += usize::from(quiet != still);
        }
        let open = match judgement.breaker {
            Breaker::Open { until } => Some(until),
            _ => None,
        };
        self.report.open_until.push((now, open));
        let plan = judgement.apply(plan);
        if let Decision::Hold(Hold::Ineffective { .. }) = plan.decision {
            self.report.held += 1;
        }
        if !matches!(plan.decision, Decision::Remove { .. }) {
            self.memory = judgement.settle(&plan, &[]);
            return Vec::new();
        }
        self.report.probes += usize::from(judgement.breaker == Breaker::Probe);
        if let Some(e) = &plan.partitions {
            *self.report.signal_when_acting.entry(e.verdict.label()).or_default() += 1;
        }
        // The lease is what a run that died here would leave; this one does not die.
        let _lease = judgement.lease(&plan);
        self.quiet_before = self
            .decide(pods, quiet, now, leased, partitions)
            .stats
            .map(|s| s.spread);
        self.acted_at = now;
        self.hot_partition = plan
            .removals()
            .iter()
            .find(|r| r.role == Role::HighestCpu)
            .and_then(|r| self.group.heaviest_of(&r.name, now));
        let removed = self.act(plan.removals(), now);
        let answers: Vec<(Removal, Answer)> = removed.iter().map(|r| (r.clone(), Answer::Removed)).collect();
        self.memory = judgement.settle(&plan, &answers);
        removed
    }

    fn decide(
        &self,
        pods: Vec<Pod>,
        samples: &Samples,
        now: i64,
        leased: Option<i64>,
        partitions: Option<partition::Answer>,
    ) -> Plan {
        let rollout = self.group.rollout();
        let plan = plan::decide(Inputs {
            pods,
            samples,
            rollout: Some(&rollout),
            now,
            settings: &self.settings,
            container: DEPLOYMENT,
            namespace: "posthog",
            ignored: 0,
            selector: None,
            leased,
            partitions,
        });
        match plan {
            Ok(plan) => plan,
            Err(why) => panic!("the simulated fleet cannot be decided at {now}: {why}"),
        }
    }
}
