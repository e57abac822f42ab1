//! The partition signal's recipes (README.md, "Recipes for `PARTITION_QUERY`", SPEC §12) on both real engines.
//!
//! Each recipe is read from the document as written there and asked, as an instant
//! query at a fixed instant and at each second of the scrape interval after it, of the
//! real VictoriaMetrics and the real Prometheus, which hold the same thirty minutes of
//! series shaped as their projects publish them (`fixtures/README.md`, "Partition signal
//! series"): six consumer pods owning twelve partitions of known rates, one partition
//! moved to another pod halfway and one two minutes before the end, every target scraped
//! by two jobs, a lag exporter that also reports another consumer group, and that group
//! consuming the same topic in the same pods.
//!
//! The answer must hold exactly one sample per owned (pod, partition), with the labels
//! `pod` and the partition labels only, its value within 5 % of the partition's true
//! rate (see `tolerance` for the one exception), the two engines within as much of each
//! other. The same check must fail on both engines for the recipe with any of its
//! safeguards taken out (the ownership filter, the consumer-group matcher, the
//! deduplication of scrape jobs, the sum over pods, the short ownership window), so
//! that the data can catch a recipe that lacks one.

use crate::support::prom::Prom;
use crate::support::vm::{self, Vm};
use crate::support::{fixture, root};
use pod_rebalancer::victoria;
use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::PI;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the recipes are written: the tests run the queries found there.
const RECIPES: &str = "README.md";
const PARTITIONS: usize = 12;
const PODS: usize = 6;
/// How far back every history goes from its instant.
const HISTORY_MS: i64 = 30 * 60_000;
/// The counters' origin, before the history: every counter is well under way.
const ORIGIN_MS: i64 = 40 * 60_000;
/// The recipes' rate window.
const WINDOW_MS: i64 = 5 * 60_000;
const TOLERANCE: f64 = 0.05;
/// The longest scrape interval of the consumer pods (their `kubernetes-pods` job).
const SLOWEST_SCRAPE_MS: i64 = 30_000;
/// The product asks "now", anywhere between two scrapes: every recipe is asked at each
/// second of this long from the instant on (the histories go on a minute after it).
const BETWEEN_SCRAPES_S: i64 = 30;
const FUTURE_MS: i64 = 60_000;
/// The partition that moves halfway through the history, and the one that moves two
/// minutes before the end (inside the rate window, outside the ownership window).
const HALFWAY: Move = Move {
    partition: 7,
    to: 4,
    secs_ago: 900,
};
const RECENT: Move = Move {
    partition: 10,
    to: 2,
    secs_ago: 120,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// PostHog's assignment gauge and kafka_exporter's committed offsets.
    Assignment,
    /// librdkafka's statistics as node-rdkafka-prometheus publishes them.
    Librdkafka,
    /// The Java client's metrics through the JMX exporter, and kafka_exporter.
    JavaClient,
}

impl Source {
    const ALL: [Source; 3] = [Source::Assignment, Source::Librdkafka, Source::JavaClient];

    /// The heading of its recipe in `RECIPES`.
    fn heading(self) -> &'static str {
        match self {
            Source::Assignment => "### 1. An assignment gauge joined with a lag exporter",
            Source::Librdkafka => "### 2. librdkafka's per-partition statistics",
            Source::JavaClient => "### 3. The Java client's per-partition metrics joined with a lag exporter",
        }
    }

    /// The instant its recipe is asked at: fixed, so that every run feeds and asks the
    /// same; two hours apart, so that the three histories never meet.
    fn at_ms(self) -> i64 {
        // 2025-03-03T10:00:00Z
        let first = 1_740_996_000_000;
        first + 2 * 3_600_000 * Source::ALL.iter().position(|s| *s == self).unwrap_or(0) as i64
    }

    fn fixture(self) -> &'static str {
        match self {
            Source::Assignment => "partitions/posthog_assignment_and_kafka_exporter.txt",
            Source::Librdkafka => "partitions/node_rdkafka_prometheus.txt",
            Source::JavaClient => "partitions/jmx_exporter_kafka_client_and_kafka_exporter.txt",
        }
    }

    /// Our consumer group, and the other group the same pods run on the same topic.
    fn groups(self) -> (Group, Group) {
        let at_ms = self.at_ms();
        let (namespace, deployment, topic, ours, other) = match self {
            Source::Assignment | Source::Librdkafka => (
                "posthog",
                "ingestion-events",
                "events_plugin_ingestion",
                "ingestion-events",
                "ingestion-events-shadow",
            ),
            Source::JavaClient => (
                "payments",
                "ledger-writer",
                "payments_ledger",
                "ledger-writer",
                "ledger-audit",
            ),
        };
        let pods: Vec<String> = ["x2k4p", "m8q7r", "t5w9z", "b3n6v", "h7c2d", "q9f4s"]
            .iter()
            .map(|s| format!("{deployment}-7c9d8f6b5-{s}"))
            .collect();
        // Messages per second: one hot partition, the rest within ±20 %.
        let rates = [
            420.0, 380.0, 1650.0, 400.0, 350.0, 410.0, 390.0, 360.0, 440.0, 370.0, 405.0, 395.0,
        ];
        let group = |name: &'static str, speed: f64, shift: usize, moves: Vec<Move>| Group {
            namespace,
            topic,
            name,
            pods: pods.clone(),
            rates,
            speed,
            shift,
            moves,
            at_ms,
        };
        (
            group(ours, 1.0, 0, vec![HALFWAY, RECENT]),
            // Catching up on a backlog: it consumes half as fast again as the topic grows.
            group(other, 1.5, 3, Vec::new()),
        )
    }
}

/// A partition's owner changes `secs_ago` seconds before the instant.
#[derive(Debug, Clone, Copy)]
struct Move {
    partition: usize,
    to: usize,
    secs_ago: i64,
}

/// A consumer group: its pods, its partitions' rates, who owned which partition when.
#[derive(Debug, Clone)]
struct Group {
    namespace: &'static str,
    topic: &'static str,
    name: &'static str,
    pods: Vec<String>,
    /// Mean messages per second produced to each partition.
    rates: [f64; PARTITIONS],
    /// How fast the group consumes, as a multiple of the rate produced: above 1 for a
    /// group catching up on a backlog.
    speed: f64,
    /// Partition `p` starts on pod `(p + shift) % PODS`.
    shift: usize,
    moves: Vec<Move>,
    at_ms: i64,
}

impl Group {
    fn origin(&self) -> i64 {
        self.at_ms - ORIGIN_MS
    }

    /// Messages produced to partition `p` by `t` (ms): its rate, ±10 % over a few
    /// minutes, as traffic wanders.
    fn produced(&self, p: usize, t: i64) -> f64 {
        let (r, s) = (self.rates[p], (t - self.origin()) as f64 / 1000.0);
        let period = 420.0 + 30.0 * p as f64;
        8.0e9 + 1.0e8 * p as f64 + r * s + 0.1 * r * period / (2.0 * PI) * (2.0 * PI * s / period + p as f64).sin()
    }

    /// The group's position on partition `p` at `t`: two seconds behind the log end,
    /// or, for a group catching up, a backlog that shrinks at `speed - 1` times the rate.
    fn position(&self, p: usize, t: i64) -> f64 {
        let (r, s) = (self.rates[p], (t - self.origin()) as f64 / 1000.0);
        let backlog = if self.speed > 1.0 {
            r * (ORIGIN_MS as f64 / 1000.0 * 1.2 - (self.speed - 1.0) * s)
        } else {
            0.0
        };
        self.produced(p, t) - 2.0 * r - backlog
    }

    /// The committed offset at `t`: the position at the last commit (every 5 s).
    fn committed(&self, p: usize, t: i64) -> f64 {
        self.position(p, t - (t - self.origin()).rem_euclid(5_000)).floor()
    }

    fn owner(&self, p: usize, t: i64) -> usize {
        self.moves
            .iter()
            .filter(|m| m.partition == p && t >= self.at_ms - m.secs_ago * 1000)
            .map(|m| m.to)
            .next_back()
            .unwrap_or((p + self.shift) % PODS)
    }

    /// Whether pod `i` owned `p` at any time up to `t` (its gauge exists then).
    fn owned_by_then(&self, i: usize, p: usize, t: i64) -> bool {
        (p + self.shift) % PODS == i
            || self
                .moves
                .iter()
                .any(|m| m.partition == p && m.to == i && t >= self.at_ms - m.secs_ago * 1000)
    }

    /// What pod `i` consumed of partition `p` from the origin to `t`.
    fn carried(&self, i: usize, p: usize, t: i64) -> f64 {
        let mut changes: Vec<(i64, usize)> = vec![(self.origin(), (p + self.shift) % PODS)];
        let mut moves: Vec<&Move> = self.moves.iter().filter(|m| m.partition == p).collect();
        moves.sort_by_key(|m| -m.secs_ago);
        changes.extend(moves.iter().map(|m| (self.at_ms - m.secs_ago * 1000, m.to)));
        let mut total = 0.0;
        for (k, (from, owner)) in changes.iter().enumerate() {
            let until = changes.get(k + 1).map_or(t, |(next, _)| (*next).min(t));
            if *owner == i && until > *from {
                total += self.position(p, until) - self.position(p, *from);
            }
        }
        total
    }

    /// The answer a recipe must give at `at` (ms): (pod, topic, partition) → the
    /// messages per second the group consumed of the partition over the window,
    /// whoever consumed them.
    fn truth(&self, at: i64) -> BTreeMap<Key, f64> {
        let from = at - WINDOW_MS;
        (0..PARTITIONS)
            .map(|p| {
                let i = self.owner(p, at);
                let consumed = self.position(p, at) - self.position(p, from);
                let key = Key {
                    pod: self.pods[i].clone(),
                    topic: self.topic.to_string(),
                    partition: p.to_string(),
                };
                (key, consumed / (WINDOW_MS as f64 / 1000.0))
            })
            .collect()
    }
}

/// One owned partition as an answer names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    pod: String,
    topic: String,
    partition: String,
}

/// A value of a series at a scrape time (ms), or `None` where the series does not exist.
type Value<'a> = Box<dyn Fn(i64) -> Option<f64> + 'a>;

/// One series of a metrics page: its name, its labels as the page writes them.
struct Series<'a> {
    name: &'static str,
    labels: Labels,
    value: Value<'a>,
}

/// Labels as a page or a scrape job writes them.
type Labels = Vec<(&'static str, String)>;

/// A scrape job reading a page: the target labels it adds, its interval and its
/// offset within the interval (ms).
struct Job {
    labels: Labels,
    step_ms: i64,
    offset_ms: i64,
}

/// A metrics page and the scrape jobs that read it.
struct Page<'a> {
    jobs: Vec<Job>,
    series: Vec<Series<'a>>,
}

fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The two jobs that scrape a consumer pod: its PodMonitor at 15 s and the
/// annotation-based `kubernetes-pods` job at 30 s, each at an offset of its own.
fn pod_jobs(group: &Group, i: usize, deployment: &str, port: u16) -> Vec<Job> {
    let pod = &group.pods[i];
    let instance = format!("10.42.{}.{}:{port}", 1 + i % 4, 10 + hash(pod) % 200);
    let offset = (hash(pod) % 15_000) as i64;
    vec![
        Job {
            labels: vec![
                ("container", deployment.to_string()),
                ("endpoint", "metrics".into()),
                ("instance", instance.clone()),
                ("job", format!("{}/{deployment}", group.namespace)),
                ("namespace", group.namespace.into()),
                ("pod", pod.clone()),
            ],
            step_ms: 15_000,
            offset_ms: offset,
        },
        Job {
            labels: vec![
                ("instance", instance),
                ("job", "kubernetes-pods".into()),
                ("namespace", group.namespace.into()),
                ("pod", pod.clone()),
            ],
            step_ms: 30_000,
            offset_ms: (offset * 7 + 4_000) % 30_000,
        },
    ]
}

/// kafka_exporter's page: every partition's log end offset, and the committed offset
/// and lag of both groups, read from Kafka at each scrape; scraped by its ServiceMonitor
/// and by the `kubernetes-pods` job, both at 30 s (the chart's interval).
fn kafka_exporter<'a>(groups: [&'a Group; 2]) -> Page<'a> {
    let pod = "kafka-exporter-6d4b8c7f9-x7k2p".to_string();
    let offset = (hash(groups[0].namespace) % 30_000) as i64;
    let instance = "10.42.7.21:9308".to_string();
    let jobs = vec![
        Job {
            labels: vec![
                ("container", "kafka-exporter".into()),
                ("endpoint", "metrics".into()),
                ("instance", instance.clone()),
                ("job", "kafka-exporter".into()),
                ("namespace", "kafka".into()),
                ("pod", pod.clone()),
                ("service", "kafka-exporter".into()),
            ],
            step_ms: 30_000,
            offset_ms: offset,
        },
        Job {
            labels: vec![
                ("instance", instance),
                ("job", "kubernetes-pods".into()),
                ("namespace", "kafka".into()),
                ("pod", pod),
            ],
            step_ms: 30_000,
            offset_ms: (offset + 12_000) % 30_000,
        },
    ];
    let mut series = Vec::new();
    let topic = groups[0].topic;
    for p in 0..PARTITIONS {
        let g = groups[0];
        series.push(Series {
            name: "kafka_topic_partition_current_offset",
            labels: vec![("partition", p.to_string()), ("topic", topic.into())],
            value: Box::new(move |t| Some(g.produced(p, t).floor())),
        });
    }
    for g in groups {
        for p in 0..PARTITIONS {
            let labels = vec![
                ("consumergroup", g.name.to_string()),
                ("partition", p.to_string()),
                ("topic", topic.to_string()),
            ];
            series.push(Series {
                name: "kafka_consumergroup_current_offset",
                labels: labels.clone(),
                value: Box::new(move |t| Some(g.committed(p, t))),
            });
            series.push(Series {
                name: "kafka_consumergroup_lag",
                labels,
                value: Box::new(move |t| Some(g.produced(p, t).floor() - g.committed(p, t))),
            });
        }
    }
    Page { jobs, series }
}

/// Every page of a source's world.
fn pages<'a>(source: Source, ours: &'a Group, other: &'a Group) -> Vec<Page<'a>> {
    let mut pages = Vec::new();
    for i in 0..PODS {
        let mut series = Vec::new();
        match source {
            // PostHog's consumer sets its gauge to 1 on assignment and to 0 on
            // revocation; the series exists from the first assignment on. The gauge's
            // own `pod` label is the pod's hostname.
            Source::Assignment => {
                for g in [ours, other] {
                    for p in 0..PARTITIONS {
                        series.push(Series {
                            name: "kafka_consumer_assignment",
                            labels: vec![
                                ("group_id", g.name.into()),
                                ("partition_id", p.to_string()),
                                ("pod", g.pods[i].clone()),
                                ("topic_name", g.topic.into()),
                            ],
                            value: Box::new(move |t| {
                                g.owned_by_then(i, p, t)
                                    .then(|| if g.owner(p, t) == i { 1.0 } else { 0.0 })
                            }),
                        });
                    }
                }
            }
            // librdkafka lists every partition of the topic (and -1, its unassigned
            // queue) in each client's statistics, emitted every 5 s; the gauges keep
            // the last statistics' values. The same client also produces to another
            // topic under the same client.id.
            Source::Librdkafka => {
                let stats = move |t: i64| t - (t - (hash(&ours.pods[i]) % 5_000) as i64).rem_euclid(5_000);
                for (g, handle) in [
                    (ours, "ingestion-events#consumer-1"),
                    (other, "ingestion-events-shadow#consumer-2"),
                ] {
                    for p in -1..PARTITIONS as i64 {
                        let labels = vec![
                            ("handle", handle.to_string()),
                            ("partition", p.to_string()),
                            ("topic", g.topic.to_string()),
                            ("type", "consumer".to_string()),
                        ];
                        let owns = move |t: i64| p >= 0 && g.owner(p as usize, stats(t)) == i;
                        let state = move |t: i64| Some(if owns(t) { 5.0 } else { 0.0 });
                        let consumed = move |t: i64| {
                            Some(if p < 0 {
                                0.0
                            } else {
                                g.carried(i, p as usize, stats(t)).floor()
                            })
                        };
                        series.push(Series {
                            name: "rdkafka_topic_partition_desired",
                            labels: labels.clone(),
                            value: Box::new(move |t| Some(if owns(t) { 1.0 } else { 0.0 })),
                        });
                        series.push(Series {
                            name: "rdkafka_topic_partition_fetch_state",
                            labels: labels.clone(),
                            value: Box::new(state),
                        });
                        series.push(Series {
                            name: "rdkafka_topic_partition_msgs",
                            labels,
                            value: Box::new(consumed),
                        });
                    }
                }
                for p in 0..PARTITIONS {
                    let labels = vec![
                        ("handle", "ingestion-events#producer-3".to_string()),
                        ("partition", p.to_string()),
                        ("topic", "clickhouse_events_json".to_string()),
                        ("type", "producer".to_string()),
                    ];
                    series.push(Series {
                        name: "rdkafka_topic_partition_desired",
                        labels: labels.clone(),
                        value: Box::new(|_| Some(0.0)),
                    });
                    // What this pod produced: its share of the events it consumed.
                    series.push(Series {
                        name: "rdkafka_topic_partition_msgs",
                        labels,
                        value: Box::new(move |t| {
                            let t = stats(t);
                            Some(((0..PARTITIONS).map(|q| ours.carried(i, q, t)).sum::<f64>() / 12.0).floor())
                        }),
                    });
                }
            }
            // The Java client's per-partition metrics exist while the partition is
            // assigned: registered on the first fetch, removed on revocation.
            Source::JavaClient => {
                for (g, client) in [(ours, "consumer-ledger-writer-1"), (other, "consumer-ledger-audit-2")] {
                    for p in 0..PARTITIONS {
                        series.push(Series {
                            name: "kafka_consumer_consumer_fetch_manager_metrics_records_lag",
                            labels: vec![
                                ("client_id", client.into()),
                                ("client_type", "consumer".into()),
                                ("partition", p.to_string()),
                                ("topic", g.topic.into()),
                            ],
                            value: Box::new(move |t| {
                                (g.owner(p, t) == i).then(|| (g.produced(p, t) - g.position(p, t)).floor())
                            }),
                        });
                    }
                }
            }
        }
        let (deployment, port) = match source {
            Source::Assignment | Source::Librdkafka => ("ingestion-events", 6738),
            Source::JavaClient => ("ledger-writer", 9404),
        };
        pages.push(Page {
            jobs: pod_jobs(ours, i, deployment, port),
            series,
        });
    }
    if source != Source::Librdkafka {
        pages.push(kafka_exporter([ours, other]));
    }
    pages
}

/// The labels of a scraped sample: the target's, and the page's, a page label that
/// clashes with a target label renamed `exported_…` (Prometheus' `honor_labels: false`).
fn scraped(target: &Labels, page: &Labels) -> String {
    let mut labels: BTreeMap<String, &str> = target.iter().map(|(k, v)| (k.to_string(), v.as_str())).collect();
    for (k, v) in page {
        let name = if labels.contains_key(*k) {
            format!("exported_{k}")
        } else {
            k.to_string()
        };
        labels.insert(name, v);
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// A world's samples, as VictoriaMetrics imports them and as promtool backfills them,
/// and how many series of each name it has.
#[derive(Default)]
struct Feed {
    prometheus: String,
    openmetrics: String,
    series: BTreeMap<&'static str, usize>,
}

impl Feed {
    fn add(&mut self, source: Source) {
        let (ours, other) = source.groups();
        let at = source.at_ms();
        for page in pages(source, &ours, &other) {
            for job in &page.jobs {
                for s in &page.series {
                    let labels = scraped(&job.labels, &s.labels);
                    let mut any = false;
                    let first = at - HISTORY_MS + job.offset_ms;
                    for t in (0..)
                        .map(|k| first + k * job.step_ms)
                        .take_while(|t| *t <= at + FUTURE_MS)
                    {
                        if let Some(v) = (s.value)(t) {
                            let _ = writeln!(self.prometheus, "{}{{{labels}}} {v} {t}", s.name);
                            let _ = writeln!(
                                self.openmetrics,
                                "{}{{{labels}}} {v} {}.{:03}",
                                s.name,
                                t / 1000,
                                t % 1000
                            );
                            any = true;
                        }
                    }
                    *self.series.entry(s.name).or_default() += usize::from(any);
                }
            }
        }
    }

    /// Imports the samples into VictoriaMetrics and waits until every series is searchable.
    fn feed(&self, vm: &Vm) {
        let mut chunk = String::new();
        for line in self.prometheus.lines() {
            chunk.push_str(line);
            chunk.push('\n');
            if chunk.len() > 4 << 20 {
                vm.import(&std::mem::take(&mut chunk));
            }
        }
        vm.import(&chunk);
        vm.get("/internal/force_flush").expect("force flush");
        let (start, end) = (
            Source::ALL[0].at_ms() / 1000 - 3 * 3600,
            Source::ALL[2].at_ms() / 1000 + 60,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for (name, want) in &self.series {
            let target = format!(
                "/api/v1/series?match[]={}&start={start}&end={end}",
                pod_rebalancer::http::encode(&format!("{{__name__=\"{name}\"}}"))
            );
            loop {
                let got = vm
                    .get(&target)
                    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|answer| answer["data"].as_array().map(Vec::len));
                if got == Some(*want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{want} series {name} not searchable: {got:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One scrape of the pages a source's fixture shows (the pod that lost the recently
/// moved partition, and kafka_exporter where the source has it): what each page says
/// at its first job's last scrape before the instant, as exposition text.
fn exposition(source: Source) -> String {
    let (ours, other) = source.groups();
    let at = source.at_ms();
    let shown = ours.owner(RECENT.partition, at - RECENT.secs_ago * 1000 - 1);
    let mut text = String::new();
    for (k, page) in pages(source, &ours, &other).iter().enumerate() {
        if k != shown && k < PODS {
            continue;
        }
        let job = &page.jobs[0];
        let t = at - HISTORY_MS + job.offset_ms + (HISTORY_MS - job.offset_ms) / job.step_ms * job.step_ms;
        let label = |name: &str| {
            job.labels
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let _ = writeln!(
            text,
            "# The page of {} as job {:?} scraped it at {t} (Unix ms); written by tests/it/recipes.rs.",
            label("pod"),
            label("job")
        );
        let mut series: Vec<&Series> = page.series.iter().collect();
        series.sort_by_key(|s| s.name);
        let mut family = "";
        for s in series {
            let Some(v) = (s.value)(t) else { continue };
            if s.name != family {
                family = s.name;
                let _ = writeln!(text, "# TYPE {family} gauge");
            }
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let _ = writeln!(text, "{}{{{}}} {v}", s.name, labels.join(","));
        }
    }
    text
}

/// Both engines, holding the three worlds; started and fed once per test process.
struct Engines {
    vm: Vm,
    prom: Prom,
}

fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let mut feed = Feed::default();
        for source in Source::ALL {
            feed.add(source);
        }
        let prom = Prom::start_openmetrics(&feed.openmetrics);
        // A server of its own: the names these series use are nobody else's business.
        let vm = Vm::start(&[]);
        feed.feed(&vm);
        Engines { vm, prom }
    })
}

/// The recipe of `source` as `RECIPES` writes it: its query and its partition labels.
fn recipe(source: Source) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join(RECIPES)).expect("the recipes document");
    let section = text
        .split_once(&format!("{}\n", source.heading()))
        .unwrap_or_else(|| panic!("{RECIPES} has no heading {:?}", source.heading()))
        .1;
    let query = section
        .split_once("```promql\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("{RECIPES}: no promql block under {:?}", source.heading()))
        .0;
    let labels = section
        .lines()
        .find_map(|l| l.strip_prefix("PARTITION_LABELS="))
        .unwrap_or_else(|| panic!("{RECIPES}: no PARTITION_LABELS= under {:?}", source.heading()));
    (query.to_string(), labels.split(',').map(str::to_string).collect())
}

#[derive(Debug, Clone, Copy)]
enum Engine {
    VictoriaMetrics,
    Prometheus,
}

impl Engine {
    const ALL: [Engine; 2] = [Engine::VictoriaMetrics, Engine::Prometheus];

    fn port(self) -> u16 {
        match self {
            Engine::VictoriaMetrics => engines().vm.port,
            Engine::Prometheus => engines().prom.port,
        }
    }
}

/// The samples of an instant query's answer, each with all its labels, or why the
/// engine refused the query.
type Answer = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// Each partition's load as an engine read it and as it truly was.
type Judged = BTreeMap<Key, (f64, f64)>;

fn ask(engine: Engine, promql: &str, at_ms: i64) -> Answer {
    let (status, body) = vm::ask(engine.port(), "/api/v1/query", promql, Some(at_ms / 1000));
    if status != 200 {
        return Err(format!("refused ({status}): {body}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    let result = answer["data"]["result"].as_array().expect("a vector");
    let samples: Vec<(BTreeMap<String, String>, f64)> = result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a number");
            (labels, value)
        })
        .collect();
    same_as_the_product_reads(&body, &samples)?;
    Ok(samples)
}

/// What the binary's own parser (`victoria::parse_partitions`, with the default
/// `PARTITION_LABELS`) makes of the body: the same samples, keyed `topic/partition`.
fn same_as_the_product_reads(body: &str, samples: &[(BTreeMap<String, String>, f64)]) -> Result<(), String> {
    let labels = ["topic".to_string(), "partition".to_string()];
    if samples
        .iter()
        .any(|(l, _)| !l.contains_key("topic") || !l.contains_key("partition"))
    {
        return Ok(()); // a recipe with one safeguard taken out; judged elsewhere
    }
    let pods: BTreeSet<&str> = samples
        .iter()
        .filter_map(|(l, _)| l.get("pod").map(String::as_str))
        .collect();
    let product = victoria::parse_partitions(body, &labels, pods.iter().copied())
        .map_err(|e| format!("the binary refuses the answer: {e}"))?;
    let theirs: BTreeSet<(String, String, u64)> = product
        .iter()
        .map(|(pod, partition, load)| (pod.to_string(), partition.to_string(), load.to_bits()))
        .collect();
    let ours: BTreeSet<(String, String, u64)> = samples
        .iter()
        .filter_map(|(l, v)| {
            Some((
                l.get("pod")?.clone(),
                format!("{}/{}", l["topic"], l["partition"]),
                v.to_bits(),
            ))
        })
        .collect();
    if theirs != ours {
        return Err(format!("the binary reads {theirs:?}, the test {ours:?}"));
    }
    Ok(())
}

/// What the recipe must answer for `source` at `at` (ms): every owned (pod,
/// partition) and its load.
fn truth(source: Source, at: i64) -> BTreeMap<Key, f64> {
    source.groups().0.truth(at)
}

/// How far a partition's load may be read from the truth at `at` (ms), as a fraction
/// of it: `TOLERANCE`; except that where the load is the sum of each pod's own counter
/// (librdkafka), a partition that moved inside the window is read as two pieces, each
/// over its own samples rather than the window (neither engine can do better: one
/// extrapolates a ramp, the other does not), each off by up to a scrape interval.
fn tolerance(source: Source, partition: &str, at: i64) -> f64 {
    let moved = [HALFWAY, RECENT]
        .iter()
        .any(|m| m.partition.to_string() == partition && source.at_ms() - m.secs_ago * 1000 > at - WINDOW_MS);
    if source == Source::Librdkafka && moved {
        2.0 * SLOWEST_SCRAPE_MS as f64 / WINDOW_MS as f64
    } else {
        TOLERANCE
    }
}

/// Judges the answer at `at` (ms): exactly one sample per owned (pod, partition),
/// labelled `pod` and `labels` only, each within `tolerance` of the truth. Each
/// partition's load as read and as it truly was, or what is wrong.
fn judge(source: Source, labels: &[String], answer: Answer, at: i64) -> Result<Judged, String> {
    let truth = truth(source, at);
    let names: BTreeSet<&str> = labels.iter().map(String::as_str).chain(["pod"]).collect();
    let mut read = BTreeMap::new();
    let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
    for (sample, value) in answer? {
        let have: BTreeSet<&str> = sample.keys().map(String::as_str).collect();
        if have != names {
            return Err(format!("a sample labelled {have:?}, not {names:?}"));
        }
        let key = Key {
            pod: sample["pod"].clone(),
            topic: sample[labels[0].as_str()].clone(),
            partition: sample[labels[1].as_str()].clone(),
        };
        if let Some(first) = owners.insert((key.topic.clone(), key.partition.clone()), key.pod.clone()) {
            return Err(format!(
                "partition {}/{} answered twice: by {first} and by {}",
                key.topic, key.partition, key.pod
            ));
        }
        read.insert(key, value);
    }
    let (want, got): (BTreeSet<&Key>, BTreeSet<&Key>) = (truth.keys().collect(), read.keys().collect());
    if want != got {
        return Err(format!(
            "owned but not answered: {:?}; answered but not owned: {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>()
        ));
    }
    let mut judged = BTreeMap::new();
    for (key, value) in read {
        let true_load = truth[&key];
        if ((value - true_load) / true_load).abs() > tolerance(source, &key.partition, at) {
            return Err(format!(
                "{}/{} on {}: read {value:.1}/s, truly {true_load:.1}/s",
                key.topic, key.partition, key.pod
            ));
        }
        judged.insert(key, (value, true_load));
    }
    Ok(judged)
}

/// The recipe of `source` on `engine`, judged at each second between two scrapes from
/// the instant on: the readings, one per second, or the first thing wrong.
fn check(source: Source, engine: Engine) -> Result<Vec<Judged>, String> {
    let (query, labels) = recipe(source);
    (0..BETWEEN_SCRAPES_S)
        .map(|s| {
            let at = source.at_ms() + s * 1000;
            judge(source, &labels, ask(engine, &query, at), at).map_err(|e| format!("{s} s after the instant: {e}"))
        })
        .collect()
}

/// The recipe with one safeguard taken out: in turn, every occurrence of each text
/// replaced by the other, the text always occurring.
struct Without {
    what: &'static str,
    swaps: &'static [(&'static str, &'static str)],
}

/// Proves a recipe: right on both engines, the engines within `TOLERANCE` of each
/// other, and wrong on both once any of its safeguards is taken out.
fn prove(source: Source, withouts: &[Without]) {
    let mut readings = Vec::new();
    for engine in Engine::ALL {
        let each = check(source, engine).unwrap_or_else(|e| panic!("{source:?} on {engine:?}: {e}"));
        let errors: Vec<f64> = each
            .iter()
            .flat_map(|r| {
                r.iter()
                    .filter(|(k, _)| tolerance(source, &k.partition, source.at_ms()) == TOLERANCE)
                    .map(|(_, (read, truth))| (read - truth) / truth)
            })
            .collect();
        let (lo, hi) = errors.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), e| {
            (lo.min(*e), hi.max(*e))
        });
        let mean = errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64;
        eprintln!(
            "{source:?} on {engine:?}: {} partitions at each of {BETWEEN_SCRAPES_S} s; held to 5 %: errors {:+.2} % .. {:+.2} %, mean |error| {:.2} %",
            each[0].len(),
            lo * 100.0,
            hi * 100.0,
            mean * 100.0
        );
        for m in [HALFWAY, RECENT] {
            let errors: Vec<f64> = each
                .iter()
                .flat_map(|r| r.iter().filter(|(k, _)| k.partition == m.partition.to_string()))
                .map(|(_, (read, truth))| (read - truth) / truth)
                .collect();
            let (lo, hi) = errors.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), e| {
                (lo.min(*e), hi.max(*e))
            });
            eprintln!(
                "    partition {} (moved {} s before the instant): errors {:+.2} % .. {:+.2} %",
                m.partition,
                m.secs_ago,
                lo * 100.0,
                hi * 100.0
            );
        }
        readings.push(each);
    }
    for (s, (vm, prom)) in readings[0].iter().zip(&readings[1]).enumerate() {
        let at = source.at_ms() + s as i64 * 1000;
        for (key, (read, truth)) in vm {
            let other = prom[key].0;
            assert!(
                ((read - other) / truth).abs() <= tolerance(source, &key.partition, at),
                "{source:?}: {key:?} reads {read} on VictoriaMetrics, {other} on Prometheus"
            );
        }
    }
    let (query, labels) = recipe(source);
    for without in withouts {
        let naive = without.swaps.iter().fold(query.clone(), |naive, (from, to)| {
            assert!(
                naive.contains(from),
                "{source:?}: the recipe has no {from:?} to take out"
            );
            naive.replace(from, to)
        });
        for engine in Engine::ALL {
            match judge(source, &labels, ask(engine, &naive, source.at_ms()), source.at_ms()) {
                Ok(_) => panic!(
                    "{source:?} without {} is right on {engine:?} too: the data cannot catch it\n{naive}",
                    without.what
                ),
                Err(wrong) => eprintln!("{source:?} without {} on {engine:?}: {wrong}", without.what),
            }
        }
    }
}

#[test]
fn the_assignment_gauge_recipe_answers_each_owned_partition_once_with_the_groups_rate() {
    prove(
        Source::Assignment,
        &[
            Without {
                what: "the filter on the gauge's value (revoked partitions read 0)",
                swaps: &[(" == 1", "")],
            },
            Without {
                what: "the group_id matcher (the shadow group in the same pods)",
                swaps: &[(", group_id=\"ingestion-events\"", "")],
            },
            Without {
                what: "the consumergroup matcher (a faster group on the same topic)",
                swaps: &[("{consumergroup=\"ingestion-events\"}", "")],
            },
        ],
    );
}

#[test]
fn the_librdkafka_recipe_answers_each_owned_partition_once_with_the_groups_rate() {
    prove(
        Source::Librdkafka,
        &[
            Without {
                what: "the filter on desired (every pod lists every partition)",
                swaps: &[(" == 1", " >= 0")],
            },
            Without {
                what: "the handle matcher (the shadow group's client in the same pods)",
                swaps: &[("handle=~\"ingestion-events#consumer-[0-9]+\", ", "")],
            },
            Without {
                what: "max across the two scrape jobs (sum doubles the load)",
                swaps: &[("max by (pod, topic, partition)", "sum by (pod, topic, partition)")],
            },
            Without {
                what: "the sum over the group's pods (a moved partition reads its new owner's share)",
                swaps: &[
                    ("on (topic, partition)", "on (pod, topic, partition)"),
                    ("sum by (topic, partition)", "sum by (pod, topic, partition)"),
                ],
            },
        ],
    );
}

#[test]
fn the_java_client_recipe_answers_each_owned_partition_once_with_the_groups_rate() {
    prove(
        Source::JavaClient,
        &[
            Without {
                what: "the one-minute ownership window (series without staleness markers)",
                swaps: &[("last_over_time(", "("), ("[1m])", ")")],
            },
            Without {
                what: "the client_id matcher (the audit group in the same pods)",
                swaps: &[(", client_id=~\"consumer-ledger-writer-[0-9]+\"", "")],
            },
            Without {
                what: "max across the two scrape jobs of the exporter",
                swaps: &[(
                    "max by (topic, partition) (\n  rate(kafka_consumergroup_current_offset{consumergroup=\"ledger-writer\"}[5m])\n)",
                    "rate(kafka_consumergroup_current_offset{consumergroup=\"ledger-writer\"}[5m])",
                )],
            },
        ],
    );
}

/// The fixtures show what the engines are fed: one scrape of each kind of page, as the
/// generator writes it now. Re-record with
/// `cargo test --test it -- --ignored record_partition_fixtures`.
#[test]
fn the_partition_fixtures_are_one_scrape_of_what_the_engines_are_fed() {
    for source in Source::ALL {
        let (recorded, now) = (fixture(source.fixture()), exposition(source));
        let first = recorded.lines().zip(now.lines()).position(|(a, b)| a != b);
        assert!(
            recorded == now,
            "{} drifted from the generator (first at line {:?}): re-record it",
            source.fixture(),
            first.map(|n| n + 1)
        );
    }
}

#[test]
#[ignore = "writes fixtures/partitions/"]
fn record_partition_fixtures() {
    for source in Source::ALL {
        let path = root().join("fixtures").join(source.fixture());
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("create fixtures/partitions");
        std::fs::write(&path, exposition(source)).expect("write a fixture");
    }
}
