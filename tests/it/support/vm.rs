//! The real VictoriaMetrics (Debian's `victoria-metrics`), started on loopback with a
//! temporary storage directory and fed cAdvisor-shaped series through
//! `/api/v1/import/prometheus`.
//!
//! A shell watchdog owns the server process and stops it (and removes its data) as
//! soon as the test process is gone, however the tests end.

use super::TempDir;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Vm {
    pub port: u16,
    _data: TempDir,
}

/// The shared server of this test process.
pub fn shared() -> &'static Vm {
    static VM: OnceLock<Vm> = OnceLock::new();
    VM.get_or_init(|| Vm::start(&[]))
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
        let script = format!(
            "{binary} {flags} >{log} 2>&1 & vm=$!; while kill -0 {pid} 2>/dev/null && kill -0 $vm 2>/dev/null; do sleep 0.3; done; kill $vm 2>/dev/null; wait $vm; rm -rf {dir}",
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

    /// One plain HTTP exchange; `None` when the server does not answer.
    fn exchange(&self, method: &str, target: &str, body: &[u8], content_type: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let body = if chunked { dechunk(body) } else { body.to_string() };
        Some((status, body))
    }

    pub fn get(&self, target: &str) -> Option<(u16, String)> {
        self.exchange("GET", target, b"", "text/plain")
    }

    /// Runs an instant query and returns the raw answer.
    pub fn query(&self, promql: &str) -> String {
        let form = format!("query={}", encode(promql));
        let (status, body) = self
            .exchange(
                "POST",
                "/api/v1/query",
                form.as_bytes(),
                "application/x-www-form-urlencoded",
            )
            .expect("query answer");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Imports exposition text with millisecond timestamps and makes it searchable.
    pub fn import(&self, text: &str) {
        let (status, body) = self
            .exchange("POST", "/api/v1/import/prometheus", text.as_bytes(), "text/plain")
            .expect("import answer");
        assert!(status == 204 || status == 200, "import: {status} {body}");
        self.get("/internal/force_flush").expect("force flush");
    }

    /// Feeds a fleet: each pod's container burns `cores` steadily over the last 15
    /// minutes at a 15 s scrape interval, as cAdvisor exposes it, and waits until the
    /// server answers for every pod. See `cadvisor_lines` for the series fed.
    pub fn feed(&self, namespace: &str, container: &str, fleet: &[(String, f64)]) {
        self.import(&cadvisor_lines(namespace, container, fleet, now_ms()));
        let want = fleet.len();
        let q =
            format!("count(container_cpu_usage_seconds_total{{namespace=\"{namespace}\",container=\"{container}\"}})");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.query(&q);
            if answer.contains(&format!("\"{want}\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "series not searchable after import: {answer}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn now_ms() -> i64 {
    super::now() * 1000
}

pub const STEP_MS: i64 = 15_000;
pub const SAMPLES: i64 = 61;

/// cAdvisor's series for these pods, 15 minutes at 15 s ending at `end_ms`: the
/// container's own series (`cores` per second), a `log-shipper` sidecar burning a
/// steady 0.05 cores, and the pod-level cgroup series (`container=""`) that sums both,
/// with the label set of a real kubelet scrape.
pub fn cadvisor_lines(namespace: &str, container: &str, fleet: &[(String, f64)], end_ms: i64) -> String {
    let mut out = String::with_capacity(fleet.len() * SAMPLES as usize * 3 * 300);
    for (i, (pod, cores)) in fleet.iter().enumerate() {
        let node = format!("ip-10-0-{}-{}.ec2.internal", i % 4, 10 + i % 200);
        let uid = super::kube::uid_of(pod).replace('-', "_");
        let cg = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice");
        let series = [
            (
                container.to_string(),
                *cores,
                format!("{cg}/cri-containerd-{i:08x}a.scope"),
                "posthog/posthog-node:9f2a1c3e",
            ),
            (
                "log-shipper".to_string(),
                0.05,
                format!("{cg}/cri-containerd-{i:08x}b.scope"),
                "fluent/fluent-bit:3.1",
            ),
            (String::new(), cores + 0.05, cg.clone(), ""),
        ];
        for (c, rate, id, image) in series {
            let labels = format!(
                "container=\"{c}\",cpu=\"total\",id=\"{id}\",image=\"{image}\",instance=\"{node}\",job=\"kubernetes-nodes-cadvisor\",name=\"\",namespace=\"{namespace}\",pod=\"{pod}\""
            );
            let base = 1000.0 + i as f64;
            for k in 0..SAMPLES {
                let t = end_ms - (SAMPLES - 1 - k) * STEP_MS;
                let v = base + rate * (k * STEP_MS) as f64 / 1000.0;
                out.push_str(&format!("container_cpu_usage_seconds_total{{{labels}}} {v} {t}\n"));
            }
        }
    }
    out
}

pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes a `Transfer-Encoding: chunked` body (VictoriaMetrics streams large answers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
