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
//! or mishandles a restart gets numbers that differ from the fleet's. `prom.rs`
//! backfills Prometheus with the same `Scrape`s, rendered as OpenMetrics.

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

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts `command` (a program and its arguments, no shell quoting needed) under a
/// shell watchdog that stops it as soon as the test process is gone or `dir` is
/// removed, whichever comes first, and then removes `dir`; its output goes to the
/// file `log` in `dir`.
pub(super) fn watch(command: &str, dir: &TempDir, log: &str) {
    let script = format!(
        "{command} >{log} 2>&1 & server=$!; while kill -0 {pid} 2>/dev/null && kill -0 $server 2>/dev/null && [ -d {dir} ]; do sleep 0.3; done; kill $server 2>/dev/null; wait $server; rm -rf {dir}",
        dir = dir.path().display(),
        log = dir.path().join(log).display(),
        pid = std::process::id(),
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a server watchdog");
    // Reap the watchdog when it ends, so it never lingers as a zombie.
    std::thread::spawn(move || watchdog.wait());
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
        watch(&format!("{binary} {flags}"), &data, "vm.log");
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

    pub fn get(&self, target: &str) -> Option<(u16, String)> {
        exchange(self.port, "GET", target, b"", "text/plain")
    }

    /// An instant query as the product sends it (a form POST to `path`), at `time`
    /// (Unix seconds) or now; the status and the body exactly as the server answered.
    pub fn ask(&self, path: &str, promql: &str, time: Option<i64>) -> (u16, String) {
        ask(self.port, path, promql, time)
    }

    /// Runs an instant query now and returns the raw answer.
    pub fn query(&self, promql: &str) -> String {
        let (status, body) = self.ask("/api/v1/query", promql, None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Runs an instant query and returns its samples by the value of `label`.
    pub fn samples(&self, promql: &str, label: &str, time: Option<i64>) -> BTreeMap<String, f64> {
        samples(self.port, promql, label, time)
    }

    /// Imports exposition text with millisecond timestamps.
    pub fn import(&self, text: &str) {
        self.import_to("/api/v1/import/prometheus", text);
    }

    fn import_to(&self, target: &str, text: &str) {
        let (status, body) = exchange(self.port, "POST", target, text.as_bytes(), "text/plain").expect("import answer");
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
    pub fn feed_labelled(&self, namespace: &str, container: &str, fleet: &[(String, f64)], label: (&str, &str)) {
        self.feed_labelled_scrape(&Scrape::production(namespace, container, fleet), "", label);
    }

    /// Feeds `scrape` with `name="value"` on every series, waiting for the series that
    /// also match `more` (extra matchers, `,pod=~"…"`) to be searchable.
    fn feed_labelled_scrape(&self, scrape: &Scrape, more: &str, (name, value): (&str, &str)) {
        let target = format!(
            "/api/v1/import/prometheus?extra_label={}",
            encode(&format!("{name}={value}"))
        );
        self.feed_with(scrape, &format!(",{name}=\"{value}\"{more}"), &|chunk| {
            self.import_to(&target, chunk)
        });
    }

    /// Feeds more pods into a namespace fed before: only their own series (no
    /// neighbours, restarts or gone pods, which the first feed brought), waiting for
    /// exactly those to be searchable.
    pub fn feed_more(&self, namespace: &str, container: &str, fleet: &[(String, f64)]) {
        let pods: Vec<&str> = fleet.iter().map(|(pod, _)| pod.as_str()).collect();
        self.feed_with(
            &Scrape::more(namespace, container, fleet),
            &format!(",pod=~\"{}\"", pods.join("|")),
            &|chunk| self.import(chunk),
        );
    }

    /// `feed_more`, with one more label on every series (`feed_labelled`).
    pub fn feed_more_labelled(&self, namespace: &str, container: &str, fleet: &[(String, f64)], label: (&str, &str)) {
        let pods: Vec<&str> = fleet.iter().map(|(pod, _)| pod.as_str()).collect();
        let more = format!(",pod=~\"{}\"", pods.join("|"));
        self.feed_labelled_scrape(&Scrape::more(namespace, container, fleet), &more, label);
    }

    /// Imports a scrape history and waits until every series of it is searchable.
    pub fn feed_scrape(&self, scrape: &Scrape) {
        self.feed_with(scrape, "", &|chunk| self.import(chunk));
    }

    /// Feeds several Deployments of one namespace (fleet mode, SPEC §13): each
    /// `(container, fleet)` as `feed` feeds one, every pod's own container named
    /// `container`, beside its sidecar, pod cgroup and pause container; then waits
    /// until every series of all of them is searchable.
    pub fn feed_containers(&self, namespace: &str, fleets: &[(String, Vec<(String, f64)>)]) {
        let scrapes: Vec<Scrape> = fleets
            .iter()
            .map(|(container, fleet)| Scrape::production(namespace, container, fleet))
            .collect();
        self.feed_all(&scrapes, "", &|chunk| self.import(chunk));
    }

    /// Imports a scrape history through `import` and waits until every series of it,
    /// with the extra `matchers`, is searchable.
    fn feed_with(&self, scrape: &Scrape, matchers: &str, import: &dyn Fn(&str)) {
        self.feed_all(std::slice::from_ref(scrape), matchers, import);
    }

    /// `feed_with` for several histories, waiting once for all of their series.
    fn feed_all(&self, scrapes: &[Scrape], matchers: &str, import: &dyn Fn(&str)) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for scrape in scrapes {
            for (namespace, n) in scrape.render(Format::Prometheus, &mut |chunk| import(&chunk)) {
                *counts.entry(namespace).or_default() += n;
            }
        }
        let end_ms = scrapes.iter().map(|s| s.end_ms).max().unwrap_or_else(now_ms);
        self.get("/internal/force_flush").expect("force flush");
        let deadline = Instant::now() + Duration::from_secs(20);
        // Node cgroups (namespace "") are shared by every feed: nothing to count there.
        // `/api/v1/series` counts on a server with `-search.maxUniqueTimeseries=1` too.
        for (namespace, want) in counts.into_iter().filter(|(ns, _)| !ns.is_empty()) {
            let selector = format!("container_cpu_usage_seconds_total{{namespace=\"{namespace}\"{matchers}}}");
            let target = format!(
                "/api/v1/series?match[]={}&start={}&end={}",
                encode(&selector),
                end_ms / 1000 - 3600,
                end_ms / 1000 + 60
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

/// A loopback server in front of `vm` that forwards every request as it came and
/// records it, so a test can count the queries a run sends and read each one.
pub fn recording_proxy(vm: &'static Vm) -> super::server::Server {
    use super::server::{Handler, Reply, Request, Server};
    let port = vm.port;
    let handler: Handler = std::sync::Arc::new(move |req: &Request| {
        let content_type = req.header("content-type").unwrap_or("text/plain").to_string();
        match exchange(port, &req.method, &req.target, &req.body, &content_type) {
            Some((status, body)) => Reply::json(status, body),
            None => Reply::json(502, r#"{"status":"error","error":"proxy: no answer"}"#),
        }
    });
    Server::http(handler)
}

/// One plain HTTP exchange with a server on loopback; `None` when it does not answer.
/// HTTP/1.0, so the answer is never chunked and its body is exactly what the server wrote.
pub(super) fn exchange(
    port: u16,
    method: &str,
    target: &str,
    body: &[u8],
    content_type: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
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

/// An instant query as the product sends it (a form POST to `path`), at `time` (Unix
/// seconds) or now, to the server on `port`; the status and the body as answered.
pub fn ask(port: u16, path: &str, promql: &str, time: Option<i64>) -> (u16, String) {
    let mut form = format!("query={}", encode(promql));
    if let Some(t) = time {
        form.push_str(&format!("&time={t}"));
    }
    exchange(port, "POST", path, form.as_bytes(), "application/x-www-form-urlencoded").expect("query answer")
}

/// An instant query's samples by the value of `label`, from the server (either engine) on `port`.
pub fn samples(port: u16, promql: &str, label: &str, time: Option<i64>) -> BTreeMap<String, f64> {
    let (status, body) = ask(port, "/api/v1/query", promql, time);
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

/// The query evaluated at every whole second from `start` to `end` (Unix seconds), as
/// one `/api/v1/query_range` to the server (either engine) on `port`: for each second,
/// the samples by the value of `label`.
pub fn samples_each_second(port: u16, promql: &str, label: &str, start: i64, end: i64) -> Vec<BTreeMap<String, f64>> {
    let form = format!("query={}&start={start}&end={end}&step=1", encode(promql));
    let (status, body) = exchange(
        port,
        "POST",
        "/api/v1/query_range",
        form.as_bytes(),
        "application/x-www-form-urlencoded",
    )
    .expect("query_range answer");
    assert_eq!(status, 200, "{promql}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    let mut each = vec![BTreeMap::new(); (end - start + 1) as usize];
    for series in answer["data"]["result"].as_array().expect("a matrix") {
        let key = series["metric"][label].as_str().unwrap_or_default().to_string();
        for point in series["values"].as_array().expect("values") {
            let t = point[0].as_f64().expect("a timestamp") as i64;
            let v = point[1].as_str().and_then(|v| v.parse().ok()).expect("a number");
            each[(t - start) as usize].insert(key.clone(), v);
        }
    }
    each
}

pub fn now_ms() -> i64 {
    super::now() * 1000
}

/// The scrape interval of `Scrape::production`.
pub const STEP_MS: i64 = 15_000;
/// How far back every history goes from its `end_ms`.
pub const HISTORY_MS: i64 = 15 * 60_000;
/// The steady CPU of the `log-shipper` sidecar in every pod.
pub const SIDECAR_CORES: f64 = 0.05;
/// A restarted container is down this long before its replacement starts.
pub const RESTART_DOWNTIME_MS: i64 = 5_000;
/// How long `Scrape::production`'s history goes on after its end: a run that asks
/// "now" a little after the feed sees the fleet still running, as in a live cluster
/// (a history that stopped at the feed would read lower with every second that passes
/// on an engine that does not extrapolate).
pub const FUTURE_MS: i64 = 2 * 60_000;
/// A restarted container dies this long after its last scrape.
pub const DIES_AFTER_SCRAPE_MS: i64 = 5_000;

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
    /// The container dies `DIES_AFTER_SCRAPE_MS` after its last scrape at or before
    /// this many seconds before the end, and its replacement starts
    /// `RESTART_DOWNTIME_MS` later.
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

/// A pod of the fleet that started `secs_ago` seconds before the end: its series
/// begin then, its counter at zero.
#[derive(Debug, Clone)]
pub struct Born {
    pub pod: String,
    pub secs_ago: i64,
}

/// A scrape history to import: 15 minutes at a `step_ms` scrape interval ending at
/// `end_ms`, with the label set of a real kubelet `/metrics/cadvisor` scrape (see
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
    /// The last scrape, Unix milliseconds: "now" for every `secs_ago`.
    pub end_ms: i64,
    /// The scrape interval.
    pub step_ms: i64,
    /// The history goes on this long after `end_ms`, so that a server started on it
    /// and asked "now" a little later still sees the fleet running.
    pub future_ms: i64,
    /// Every series of our namespace is also scraped by a second job, as the
    /// kube-prometheus kubelet ServiceMonitor labels it (`job="kubelet"`, another
    /// `instance`, plus `endpoint`, `metrics_path`, `node` and `service`), at its
    /// own times: one container, two series.
    pub second_scraper: bool,
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
    pub born: Vec<Born>,
}

/// The format `Scrape::render` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus exposition text with millisecond timestamps, as VictoriaMetrics'
    /// `/api/v1/import/prometheus` takes it.
    Prometheus,
    /// OpenMetrics samples (timestamps in seconds), as `promtool tsdb
    /// create-blocks-from openmetrics` takes them; the caller writes the `# TYPE`
    /// line before and the `# EOF` line after.
    OpenMetrics,
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
            step_ms: STEP_MS,
            future_ms: FUTURE_MS,
            second_scraper: false,
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
            born: Vec::new(),
        }
    }

    /// A fleet alone, for a namespace fed before: no neighbours, restarts or gone
    /// pods, which the first feed brought.
    fn more(namespace: &str, container: &str, fleet: &[(String, f64)]) -> Scrape {
        Scrape {
            elsewhere: None,
            neighbour: None,
            restarts: Vec::new(),
            gones: Vec::new(),
            ..Scrape::production(namespace, container, fleet)
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

    fn nodes(&self) -> Vec<String> {
        (0..4)
            .map(|n| {
                let h = hash(&[&self.namespace], 7);
                format!("ip-10-{}-{}-{}.ec2.internal", h % 250, (h >> 8) % 250, 10 + n)
            })
            .collect()
    }

    /// The history of our container in the `i`th pod of the fleet.
    fn ours(&self, i: usize) -> PodHistory<'_> {
        let (pod, cores) = &self.fleet[i];
        let nodes = self.nodes();
        PodHistory {
            namespace: &self.namespace,
            pod: pod.clone(),
            container: self.container.clone(),
            cores: *cores,
            node: nodes[i % nodes.len()].clone(),
            restart: self.restarts.iter().find(|r| &r.pod == pod).cloned(),
            starts_ms: self
                .born
                .iter()
                .find(|b| &b.pod == pod)
                .map(|b| self.end_ms - b.secs_ago * 1000),
            ends_ms: None,
            full: true,
            second_scraper: self.second_scraper,
        }
    }

    /// What the container of `pod` (one of the fleet) really burned over the
    /// `window_secs` before `at_ms`, in mean cores: its cores while it ran, nothing
    /// while it was down for a restart or not yet born.
    pub fn truth(&self, pod: &str, window_secs: i64, at_ms: i64) -> f64 {
        let i = self
            .fleet
            .iter()
            .position(|(p, _)| p == pod)
            .unwrap_or_else(|| panic!("{pod} is not in the fleet"));
        let history = self.ours(i);
        let (from, to) = (at_ms - window_secs * 1000, at_ms);
        let overlap = |a: i64, b: i64| (b.min(to) - a.max(from)).max(0);
        let mut ran = overlap(history.starts_ms.unwrap_or(i64::MIN), to);
        if let Some(r) = &history.restart {
            let (died, reborn) = history.restart_times(r, self.end_ms, self.step_ms);
            ran -= overlap(died, reborn);
        }
        history.cores * ran as f64 / (window_secs * 1000) as f64
    }

    /// Writes the text in chunks of a few MiB (a 1,000-pod fleet is about 150 MiB)
    /// and returns how many series each namespace got.
    pub fn render(&self, format: Format, sink: &mut dyn FnMut(String)) -> BTreeMap<String, usize> {
        let mut w = Writer {
            out: String::new(),
            counts: BTreeMap::new(),
            end_ms: self.end_ms,
            step_ms: self.step_ms,
            future_ms: self.future_ms,
            format,
            sink,
        };
        let nodes = self.nodes();
        let peak = self.fleet.iter().map(|(_, c)| *c).fold(0.0, f64::max);
        let plain = |pod: &'_ str, container: &'_ str, cores: f64, node: usize| PodHistory {
            namespace: &self.namespace,
            pod: pod.to_string(),
            container: container.to_string(),
            cores,
            node: nodes[node % nodes.len()].clone(),
            restart: None,
            starts_ms: None,
            ends_ms: None,
            full: true,
            second_scraper: self.second_scraper,
        };
        for (i, (pod, cores)) in self.fleet.iter().enumerate() {
            w.pod(&self.ours(i));
            if let Some(elsewhere) = &self.elsewhere {
                w.pod(&PodHistory {
                    namespace: elsewhere,
                    full: false,
                    second_scraper: false,
                    ..plain(pod, &self.container, peak + 1.0 - cores, i + 1)
                });
            }
        }
        if let Some(neighbour) = &self.neighbour {
            for (k, pod) in self.neighbour_pods().iter().enumerate() {
                w.pod(&plain(pod, neighbour, 3.0, k));
            }
        }
        for (k, g) in self.gones.iter().enumerate() {
            w.pod(&PodHistory {
                ends_ms: Some(self.end_ms - g.secs_ago * 1000),
                ..plain(&g.pod, &self.container, g.cores, k)
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
    /// The pod started then (Unix ms): its series begin, counters at zero.
    starts_ms: Option<i64>,
    /// The pod is gone since then (Unix ms): its series stop.
    ends_ms: Option<i64>,
    /// With the sidecar, the pod cgroup and the pause container, or the container only.
    full: bool,
    /// Every series also comes from a second scrape job.
    second_scraper: bool,
}

impl PodHistory<'_> {
    /// The label set of one of the pod's cgroups as the node's cAdvisor job scrapes it.
    fn labels(&self, container: &str, id: &str, image: &str, name: &str) -> String {
        let (namespace, pod, node) = (self.namespace, &self.pod, &self.node);
        format!(
            "container=\"{container}\",cpu=\"total\",id=\"{id}\",image=\"{image}\",instance=\"{node}\",job=\"kubernetes-nodes-cadvisor\",name=\"{name}\",namespace=\"{namespace}\",pod=\"{pod}\""
        )
    }

    fn cgroup(&self) -> String {
        format!("/kubepods/burstable/pod{}", super::kube::uid_of(&self.pod))
    }

    /// The label set of our container's first instance.
    fn first_labels(&self) -> String {
        let first_id = hex_id(&[self.namespace, &self.pod, &self.container, "0"]);
        self.labels(
            &self.container,
            &format!("{}/{first_id}", self.cgroup()),
            APP_IMAGE,
            &first_id,
        )
    }

    /// When the first container died and when its replacement started (Unix ms): the
    /// old container's last scrape at or before the restart time, on its series'
    /// own timestamps, and `DIES_AFTER_SCRAPE_MS` later.
    fn restart_times(&self, r: &Restart, end_ms: i64, step_ms: i64) -> (i64, i64) {
        let jitter = jitter_ms(&self.first_labels());
        let target = end_ms - r.secs_ago * 1000;
        let last = target - (target - (end_ms - jitter)).rem_euclid(step_ms);
        let died = last + DIES_AFTER_SCRAPE_MS;
        (died, died + RESTART_DOWNTIME_MS)
    }
}

struct Writer<'s> {
    out: String,
    counts: BTreeMap<String, usize>,
    end_ms: i64,
    step_ms: i64,
    future_ms: i64,
    format: Format,
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
        let past = HISTORY_MS / self.step_ms;
        for k in 0..=past + self.future_ms / self.step_ms {
            let t = self.end_ms - (past - k) * self.step_ms - jitter;
            if let Some(v) = (s.value)(t) {
                let _ = match self.format {
                    Format::Prometheus => {
                        writeln!(self.out, "container_cpu_usage_seconds_total{{{}}} {v} {t}", s.labels)
                    }
                    Format::OpenMetrics => writeln!(
                        self.out,
                        "container_cpu_usage_seconds_total{{{}}} {v} {}.{:03}",
                        s.labels,
                        t.div_euclid(1000),
                        t.rem_euclid(1000)
                    ),
                };
            }
        }
        if self.out.len() > CHUNK {
            self.flush();
        }
    }

    /// The series of one label set of the pod, once per scrape job that sees it.
    fn scraped(&mut self, p: &PodHistory, labels: String, value: &dyn Fn(i64) -> Option<f64>) {
        if p.second_scraper {
            // The kube-prometheus kubelet ServiceMonitor: the node's address as the
            // instance, and labels of its own.
            let ip = format!("10.0.{}.{}", hash(&[&p.node], 3) % 250, 10 + hash(&[&p.node], 4) % 200);
            let again = labels.replace(
                &format!("instance=\"{}\",job=\"kubernetes-nodes-cadvisor\"", p.node),
                &format!(
                    "endpoint=\"https-metrics\",instance=\"{ip}:10250\",job=\"kubelet\",metrics_path=\"/metrics/cadvisor\",node=\"{}\"",
                    p.node
                ),
            ) + ",service=\"kube-prometheus-stack-kubelet\"";
            self.series(p.namespace, &Series { labels: again, value });
        }
        self.series(p.namespace, &Series { labels, value });
    }

    /// The series of one pod: its container (restarted or not), and, with `full`, the
    /// sidecar, the pod cgroup and the pause container.
    fn pod(&mut self, p: &PodHistory) {
        let (namespace, pod, container) = (p.namespace, p.pod.as_str(), p.container.as_str());
        let (cores, ends) = (p.cores, p.ends_ms);
        let start = p.starts_ms.unwrap_or(self.end_ms - HISTORY_MS - 10_000);
        let alive = move |t: i64| t >= start && ends.is_none_or(|e| t < e);
        let cgroup = p.cgroup();
        let base = if p.starts_ms.is_some() {
            0.0
        } else {
            1000.0 + (hash(&[namespace, pod], 2) % 1000) as f64
        };
        let steady = move |rate: f64| move |t: i64| alive(t).then(|| base + rate * (t - start) as f64 / 1000.0);
        let first = p.first_labels();
        match &p.restart {
            None => self.scraped(p, first, &steady(cores)),
            Some(r) => {
                let (died, reborn) = p.restart_times(r, self.end_ms, self.step_ms);
                let before = move |t: i64| (alive(t) && t < died).then(|| base + cores * (t - start) as f64 / 1000.0);
                let after = move |t: i64| (t >= died).then(|| cores * (t - reborn).max(0) as f64 / 1000.0);
                match r.shape {
                    RestartShape::SameSeries => {
                        let both = move |t: i64| before(t).or_else(|| after(t));
                        self.scraped(p, first, &both);
                    }
                    RestartShape::NewSeries => {
                        self.scraped(p, first, &before);
                        let second_id = hex_id(&[namespace, pod, container, "1"]);
                        let second = p.labels(container, &format!("{cgroup}/{second_id}"), APP_IMAGE, &second_id);
                        self.scraped(p, second, &after);
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
                p.labels(
                    "log-shipper",
                    &format!("{cgroup}/{sidecar_id}"),
                    SIDECAR_IMAGE,
                    &sidecar_id,
                ),
                SIDECAR_CORES,
            ),
            // The pod cgroup counts every container of the pod, the dead ones included.
            (p.labels("", &cgroup, "", ""), cores + SIDECAR_CORES),
            (
                p.labels("", &format!("{cgroup}/{pause_id}"), PAUSE_IMAGE, &pause_id),
                0.0001,
            ),
        ];
        for (labels, rate) in rest {
            self.scraped(p, labels, &steady(rate));
        }
    }

    /// The node's own cgroups, which belong to no namespace and no pod.
    fn node(&mut self, node: &str) {
        let start = self.end_ms - HISTORY_MS - 10_000;
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
