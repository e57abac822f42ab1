//! The real VictoriaMetrics (Debian's `victoria-metrics`), started on loopback with a
//! temporary storage directory and fed the series cAdvisor really exposes through
//! `/api/v1/import/prometheus`.
//!
//! A shell watchdog owns each server process and stops it (and removes its data) as
//! soon as the test process is gone, however the tests end, or as soon as a `Vm` a
//! test started for itself is dropped.
//!
//! What is fed is a `Scrape`: a fleet (pod → cores) and everything a production
//! cluster's cAdvisor exposes around it, placed so that a query that selects too much
//! or mishandles a restart gets numbers that differ from the fleet's.

use super::TempDir;
use pod_rebalancer::http::encode;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Vm {
    pub port: u16,
    _data: TempDir,
}

/// The shared server of this test process. Tests feed it under namespaces of their own.
pub fn shared() -> &'static Vm {
    static VM: OnceLock<Vm> = OnceLock::new();
    VM.get_or_init(|| Vm::start(&[]))
}

/// A second server that refuses any query touching more than one series, so that a
/// run against a fleet meets a real error of the real server.
pub fn limited() -> &'static Vm {
    static VM: OnceLock<Vm> = OnceLock::new();
    VM.get_or_init(|| Vm::start(&["-search.maxUniqueTimeseries=1"]))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Vm {
    pub fn start(extra_flags: &[&str]) -> Vm {
        let binary = ["/usr/bin/victoria-metrics", "/usr/bin/victoria-metrics-prod"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("victoria-metrics is not installed: `apt-get install -y victoria-metrics` (.ci/run does it)");
        let data = TempDir::new("vm");
        let port = free_port();
        let flags = [
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", data.path().join("storage").display()),
            "-retentionPeriod=100y".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ]
        .into_iter()
        .chain(extra_flags.iter().map(|f| f.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
        // The server lives while the test process does and while its directory exists:
        // dropping a `Vm` removes the directory, which stops the server.
        let script = format!(
            "{binary} {flags} >{log} 2>&1 & vm=$!; while kill -0 {pid} 2>/dev/null && kill -0 $vm 2>/dev/null && [ -d {dir} ]; do sleep 0.3; done; kill $vm 2>/dev/null; wait $vm; rm -rf {dir}",
            dir = data.path().display(),
            log = data.path().join("vm.log").display(),
            pid = std::process::id(),
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics watchdog");
        // Reap the watchdog when it ends, so it never lingers as a zombie.
        std::thread::spawn(move || watchdog.wait());
        let vm = Vm { port, _data: data };
        let deadline = Instant::now() + Duration::from_secs(30);
        while vm.get("/health").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "victoria-metrics did not become healthy on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP exchange; `None` when the server does not answer. HTTP/1.0, so
    /// the answer is never chunked and its body is exactly what the server wrote.
    fn exchange(&self, method: &str, target: &str, body: &[u8], content_type: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    pub fn get(&self, target: &str) -> Option<(u16, String)> {
        self.exchange("GET", target, b"", "text/plain")
    }

    /// An instant query as the product sends it (a form POST to `path`), at `time`
    /// (Unix seconds) or now; the status and the body exactly as the server answered.
    pub fn ask(&self, path: &str, promql: &str, time: Option<i64>) -> (u16, String) {
        let mut form = format!("query={}", encode(promql));
        if let Some(t) = time {
            form.push_str(&format!("&time={t}"));
        }
        self.exchange("POST", path, form.as_bytes(), "application/x-www-form-urlencoded")
            .expect("query answer")
    }

    /// Runs an instant query now and returns the raw answer.
    pub fn query(&self, promql: &str) -> String {
        let (status, body) = self.ask("/api/v1/query", promql, None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Runs an instant query and returns its samples by the value of `label`.
    pub fn samples(&self, promql: &str, label: &str, time: Option<i64>) -> BTreeMap<String, f64> {
        let (status, body) = self.ask("/api/v1/query", promql, time);
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
        let result = answer["data"]["result"].as_array().expect("a vector").clone();
        result
            .iter()
            .map(|s| {
                let key = s["metric"][label].as_str().unwrap_or_default().to_string();
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a number");
                (key, value)
            })
            .collect()
    }

    /// Imports exposition text with millisecond timestamps.
    pub fn import(&self, text: &str) {
        self.import_to("/api/v1/import/prometheus", text);
    }

    fn import_to(&self, target: &str, text: &str) {
        let (status, body) = self
            .exchange("POST", target, text.as_bytes(), "text/plain")
            .expect("import answer");
        assert!(status == 204 || status == 200, "import: {status} {body}");
    }

    /// Feeds a fleet: each pod's container burns `cores` steadily over the last 15
    /// minutes at a 15 s scrape interval, among the neighbours production data has
    /// (`Scrape::production`), and waits until the server answers for every series.
    pub fn feed(&self, namespace: &str, container: &str, fleet: &[(String, f64)]) {
        self.feed_scrape(&Scrape::production(namespace, container, fleet));
    }

    /// `feed`, with one more label on every series, as one VictoriaMetrics that holds
    /// several clusters has (`cluster="prod-eu-1"`).
    pub fn feed_labelled(
        &self,
        namespace: &str,
        container: &str,
        fleet: &[(String, f64)],
        (name, value): (&str, &str),
    ) {
        let target = format!(
            "/api/v1/import/prometheus?extra_label={}",
            encode(&format!("{name}={value}"))
        );
        self.feed_with(
            &Scrape::production(namespace, container, fleet),
            &format!(",{name}=\"{value}\""),
            &|chunk| self.import_to(&target, chunk),
        );
    }

    /// Feeds more pods into a namespace fed before: only their own series (no
    /// neighbours, restarts or gone pods, which the first feed brought), waiting for
    /// exactly those to be searchable.
    pub fn feed_more(&self, namespace: &str, container: &str, fleet: &[(String, f64)]) {
        let scrape = Scrape {
            elsewhere: None,
            neighbour: None,
            restarts: Vec::new(),
            gones: Vec::new(),
            ..Scrape::production(namespace, container, fleet)
        };
        let pods: Vec<&str> = fleet.iter().map(|(pod, _)| pod.as_str()).collect();
        self.feed_with(&scrape, &format!(",pod=~\"{}\"", pods.join("|")), &|chunk| {
            self.import(chunk)
        });
    }

    /// Imports a scrape history and waits until every series of it is searchable.
    pub fn feed_scrape(&self, scrape: &Scrape) {
        self.feed_with(scrape, "", &|chunk| self.import(chunk));
    }

    /// Imports a scrape history through `import` and waits until every series of it,
    /// with the extra `matchers`, is searchable.
    fn feed_with(&self, scrape: &Scrape, matchers: &str, import: &dyn Fn(&str)) {
        let counts = scrape.render(&mut |chunk| import(&chunk));
        self.get("/internal/force_flush").expect("force flush");
        let deadline = Instant::now() + Duration::from_secs(20);
        // Node cgroups (namespace "") are shared by every feed: nothing to count there.
        // `/api/v1/series` counts on a server with `-search.maxUniqueTimeseries=1` too.
        for (namespace, want) in counts.into_iter().filter(|(ns, _)| !ns.is_empty()) {
            let selector = format!("container_cpu_usage_seconds_total{{namespace=\"{namespace}\"{matchers}}}");
            let target = format!(
                "/api/v1/series?match[]={}&start={}&end={}",
                encode(&selector),
                scrape.end_ms / 1000 - 3600,
                scrape.end_ms / 1000 + 60
            );
            loop {
                let got = self
                    .get(&target)
                    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .and_then(|answer| answer["data"].as_array().map(Vec::len));
                if got == Some(want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{want} series of namespace {namespace:?} not searchable after import: {got:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

pub fn now_ms() -> i64 {
    super::now() * 1000
}

pub const STEP_MS: i64 = 15_000;
pub const SAMPLES: i64 = 61;
/// The steady CPU of the `log-shipper` sidecar in every pod.
pub const SIDECAR_CORES: f64 = 0.05;
/// A restarted container is down this long before its replacement starts.
pub const RESTART_DOWNTIME_MS: i64 = 5_000;

/// How a container restart shows in the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartShape {
    /// cAdvisor's own: the new container has a new ID, so its counter is a new series
    /// (new `id` and `name` labels) starting near zero, and the old series stops.
    NewSeries,
    /// What remains when a scrape pipeline drops `id` and `name` (a common cardinality
    /// saving): one series whose counter falls to near zero and climbs again.
    SameSeries,
}

#[derive(Debug, Clone)]
pub struct Restart {
    pub pod: String,
    /// The container dies 5 s after its last scrape at or before this many seconds
    /// before the end, and its replacement starts `RESTART_DOWNTIME_MS` later.
    pub secs_ago: i64,
    pub shape: RestartShape,
}

/// A pod that no longer exists (an old ReplicaSet's): its series stop `secs_ago`
/// seconds before the end, and no pod list names it.
#[derive(Debug, Clone)]
pub struct Gone {
    pub pod: String,
    pub cores: f64,
    pub secs_ago: i64,
}

/// A scrape history to import: 15 minutes at a 15 s step ending at `end_ms`, with the
/// label set of a real kubelet `/metrics/cadvisor` scrape (see
/// `../shared/recorded/cadvisor_container_cpu_usage_seconds_total_kubelet-v1.35_nri-kubernetes.txt`)
/// plus the `instance` and `job` labels the scraper adds. For every pod: its
/// container's series, a `log-shipper` sidecar's, the pod cgroup's (`container=""`,
/// no image, no name, the sum of its containers) and the pause container's
/// (`container=""` with the pause image). For every node: the node cgroups
/// (`namespace=""`, `pod=""`). Each series has timestamps of its own, up to 10 s
/// before the scrape, as cAdvisor stamps each container when it last looked at it.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub namespace: String,
    pub container: String,
    /// Our pods and the cores our container burns in each, steadily.
    pub fleet: Vec<(String, f64)>,
    /// The last scrape, Unix milliseconds.
    pub end_ms: i64,
    /// Another namespace running the same container in pods of the same names (as a
    /// StatefulSet's, or a Deployment copied to staging, can be), each burning
    /// `peak + 1 − cores` of its namesake: summed with ours, every pod would read
    /// `peak + 1`, a flat fleet.
    pub elsewhere: Option<String>,
    /// Another Deployment's container in our namespace whose name starts with ours
    /// (two pods of its own at 3 cores): a prefix or regex match would pick it up.
    pub neighbour: Option<String>,
    pub restarts: Vec<Restart>,
    pub gones: Vec<Gone>,
}

/// 64 hex digits derived from `parts`, the shape of a containerd container ID.
fn hex_id(parts: &[&str]) -> String {
    (0..4u64).map(|round| format!("{:016x}", hash(parts, round))).collect()
}

fn hash(parts: &[&str], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h ^ (h >> 29)
}

/// How much older than the scrape a series' samples are: cAdvisor stamps each
/// container when it last looked at it, up to 10 s before.
fn jitter_ms(labels: &str) -> i64 {
    (hash(&[labels], 1) % 10_000) as i64
}

/// One series to write: its labels and its counter over time.
struct Series<'a> {
    labels: String,
    /// Counter value at a time (ms), or `None` when the series has no sample then.
    value: &'a dyn Fn(i64) -> Option<f64>,
}

impl Scrape {
    /// A fleet among every neighbour production data has, placed so that none of
    /// them changes the fleet's numbers when the query is right: the same container
    /// in another namespace, a Deployment whose container name starts with ours, a
    /// container restart in the first pod ten minutes ago (outside the 5 m window: two
    /// series, only the new one in the window), and a gone pod at 4 cores whose series
    /// stopped two minutes ago (inside the window, so it is in the answer).
    pub fn production(namespace: &str, container: &str, fleet: &[(String, f64)]) -> Scrape {
        Scrape {
            namespace: namespace.to_string(),
            container: container.to_string(),
            fleet: fleet.to_vec(),
            end_ms: now_ms(),
            elsewhere: Some(format!("{namespace}-staging")),
            neighbour: Some(format!("{container}-overflow")),
            restarts: fleet
                .first()
                .map(|(pod, _)| Restart {
                    pod: pod.clone(),
                    secs_ago: 600,
                    shape: RestartShape::NewSeries,
                })
                .into_iter()
                .collect(),
            gones: vec![Gone {
                pod: format!("{container}-6c8f7b9d5-zq2lp"),
                cores: 4.0,
                secs_ago: 120,
            }],
        }
    }

    /// The pod name of a gone pod this scrape holds.
    pub fn gone_pods(&self) -> Vec<String> {
        self.gones.iter().map(|g| g.pod.clone()).collect()
    }

    /// The pods of the neighbour Deployment, if any.
    pub fn neighbour_pods(&self) -> Vec<String> {
        match &self.neighbour {
            Some(c) => (0..2).map(|k| format!("{c}-7b6d5c4f3-n{k}")).collect(),
            None => Vec::new(),
        }
    }

    /// Writes the exposition text in chunks of a few MiB (a 1,000-pod fleet is about
    /// 150 MiB) and returns how many series each namespace got.
    pub fn render(&self, sink: &mut dyn FnMut(String)) -> BTreeMap<String, usize> {
        let mut w = Writer {
            out: String::new(),
            counts: BTreeMap::new(),
            end_ms: self.end_ms,
            sink,
        };
        let nodes: Vec<String> = (0..4)
            .map(|n| {
                let h = hash(&[&self.namespace], 7);
                format!("ip-10-{}-{}-{}.ec2.internal", h % 250, (h >> 8) % 250, 10 + n)
            })
            .collect();
        let peak = self.fleet.iter().map(|(_, c)| *c).fold(0.0, f64::max);
        let ours = |pod: &'_ str, container: &'_ str, cores: f64, node: usize| PodHistory {
            namespace: &self.namespace,
            pod: pod.to_string(),
            container: container.to_string(),
            cores,
            node: nodes[node % nodes.len()].clone(),
            restart: None,
            ends_ms: None,
            full: true,
        };
        for (i, (pod, cores)) in self.fleet.iter().enumerate() {
            w.pod(&PodHistory {
                restart: self.restarts.iter().find(|r| &r.pod == pod).cloned(),
                ..ours(pod, &self.container, *cores, i)
            });
            if let Some(elsewhere) = &self.elsewhere {
                w.pod(&PodHistory {
                    namespace: elsewhere,
                    full: false,
                    ..ours(pod, &self.container, peak + 1.0 - cores, i + 1)
                });
            }
        }
        if let Some(neighbour) = &self.neighbour {
            for (k, pod) in self.neighbour_pods().iter().enumerate() {
                w.pod(&ours(pod, neighbour, 3.0, k));
            }
        }
        for (k, g) in self.gones.iter().enumerate() {
            w.pod(&PodHistory {
                ends_ms: Some(self.end_ms - g.secs_ago * 1000),
                ..ours(&g.pod, &self.container, g.cores, k)
            });
        }
        for node in &nodes {
            w.node(node);
        }
        w.flush();
        w.counts
    }
}

/// One pod's part of a scrape.
struct PodHistory<'a> {
    namespace: &'a str,
    pod: String,
    container: String,
    cores: f64,
    node: String,
    restart: Option<Restart>,
    /// The pod is gone since then (Unix ms): its series stop.
    ends_ms: Option<i64>,
    /// With the sidecar, the pod cgroup and the pause container, or the container only.
    full: bool,
}

struct Writer<'s> {
    out: String,
    counts: BTreeMap<String, usize>,
    end_ms: i64,
    sink: &'s mut dyn FnMut(String),
}

const CHUNK: usize = 8 << 20;
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
const APP_IMAGE: &str = "posthog/posthog-node:9f2a1c3e";
const SIDECAR_IMAGE: &str = "cr.fluentbit.io/fluent/fluent-bit:3.1.9";

impl Writer<'_> {
    fn flush(&mut self) {
        if !self.out.is_empty() {
            (self.sink)(std::mem::take(&mut self.out));
        }
    }

    fn series(&mut self, namespace: &str, s: &Series) {
        *self.counts.entry(namespace.to_string()).or_default() += 1;
        let jitter = jitter_ms(&s.labels);
        for k in 0..SAMPLES {
            let t = self.end_ms - (SAMPLES - 1 - k) * STEP_MS - jitter;
            if let Some(v) = (s.value)(t) {
                let _ = writeln!(self.out, "container_cpu_usage_seconds_total{{{}}} {v} {t}", s.labels);
            }
        }
        if self.out.len() > CHUNK {
            self.flush();
        }
    }

    /// The series of one pod: its container (restarted or not), and, with `full`, the
    /// sidecar, the pod cgroup and the pause container.
    fn pod(&mut self, p: &PodHistory) {
        let (namespace, pod, container, node) = (p.namespace, p.pod.as_str(), p.container.as_str(), p.node.as_str());
        let (cores, ends) = (p.cores, p.ends_ms);
        let start = self.end_ms - (SAMPLES - 1) * STEP_MS - 10_000;
        let alive = move |t: i64| ends.is_none_or(|e| t < e);
        let uid = super::kube::uid_of(pod);
        let cgroup = format!("/kubepods/burstable/pod{uid}");
        let base = 1000.0 + (hash(&[namespace, pod], 2) % 1000) as f64;
        let labels = |c: &str, id: &str, image: &str, name: &str| {
            format!(
                "container=\"{c}\",cpu=\"total\",id=\"{id}\",image=\"{image}\",instance=\"{node}\",job=\"kubernetes-nodes-cadvisor\",name=\"{name}\",namespace=\"{namespace}\",pod=\"{pod}\""
            )
        };
        let steady = move |rate: f64| move |t: i64| alive(t).then(|| base + rate * (t - start) as f64 / 1000.0);
        let first_id = hex_id(&[namespace, pod, container, "0"]);
        let first = labels(container, &format!("{cgroup}/{first_id}"), APP_IMAGE, &first_id);
        match &p.restart {
            None => self.series(
                namespace,
                &Series {
                    labels: first,
                    value: &steady(cores),
                },
            ),
            Some(r) => {
                // The old container's last scrape at or before the restart time, on
                // this series' own timestamps; it dies 5 s later.
                let jitter = jitter_ms(&first);
                let target = self.end_ms - r.secs_ago * 1000;
                let last = target - (target - (self.end_ms - jitter)).rem_euclid(STEP_MS);
                let died = last + 5_000;
                let reborn = died + RESTART_DOWNTIME_MS;
                let before = move |t: i64| (t < died).then(|| base + cores * (t - start) as f64 / 1000.0);
                let after = move |t: i64| (t >= died).then(|| cores * (t - reborn).max(0) as f64 / 1000.0);
                match r.shape {
                    RestartShape::SameSeries => {
                        let both = move |t: i64| before(t).or_else(|| after(t));
                        self.series(
                            namespace,
                            &Series {
                                labels: first,
                                value: &both,
                            },
                        );
                    }
                    RestartShape::NewSeries => {
                        self.series(
                            namespace,
                            &Series {
                                labels: first,
                                value: &before,
                            },
                        );
                        let second_id = hex_id(&[namespace, pod, container, "1"]);
                        let second = labels(container, &format!("{cgroup}/{second_id}"), APP_IMAGE, &second_id);
                        self.series(
                            namespace,
                            &Series {
                                labels: second,
                                value: &after,
                            },
                        );
                    }
                }
            }
        }
        if !p.full {
            return;
        }
        let sidecar_id = hex_id(&[namespace, pod, "log-shipper", "0"]);
        let pause_id = hex_id(&[namespace, pod, "POD", "0"]);
        let rest = [
            (
                labels(
                    "log-shipper",
                    &format!("{cgroup}/{sidecar_id}"),
                    SIDECAR_IMAGE,
                    &sidecar_id,
                ),
                SIDECAR_CORES,
            ),
            // The pod cgroup counts every container of the pod, the dead ones included.
            (labels("", &cgroup, "", ""), cores + SIDECAR_CORES),
            (
                labels("", &format!("{cgroup}/{pause_id}"), PAUSE_IMAGE, &pause_id),
                0.0001,
            ),
        ];
        for (labels, rate) in rest {
            self.series(
                namespace,
                &Series {
                    labels,
                    value: &steady(rate),
                },
            );
        }
    }

    /// The node's own cgroups, which belong to no namespace and no pod.
    fn node(&mut self, node: &str) {
        let start = self.end_ms - (SAMPLES - 1) * STEP_MS - 10_000;
        for (id, rate) in [
            ("/", 6.0),
            ("/kubepods", 5.0),
            ("/kubepods/burstable", 4.5),
            ("/system.slice/kubelet.service", 0.2),
        ] {
            let labels = format!(
                "container=\"\",cpu=\"total\",id=\"{id}\",image=\"\",instance=\"{node}\",job=\"kubernetes-nodes-cadvisor\",name=\"\",namespace=\"\",pod=\"\""
            );
            let value = move |t: i64| Some(50_000.0 + rate * (t - start) as f64 / 1000.0);
            self.series("", &Series { labels, value: &value });
        }
    }
}
