//! The real Prometheus (Debian's `prometheus`), started on loopback on a TSDB that
//! `promtool tsdb create-blocks-from openmetrics` backfilled from `Scrape`s, the same
//! histories `vm.rs` feeds VictoriaMetrics, so that both engines answer over the same
//! samples.
//!
//! Prometheus takes samples over HTTP only by remote write (protobuf and snappy), so
//! its data is fixed when it starts: a test process starts one server on every scrape
//! its tests need. The same shell watchdog as VictoriaMetrics' stops it (and removes
//! its data) as soon as the test process is gone.

use super::TempDir;
use super::vm::{self, Format, Scrape};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Prom {
    pub port: u16,
    _data: TempDir,
}

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

impl Prom {
    /// Backfills a TSDB with `scrapes` and starts Prometheus on it.
    pub fn start(scrapes: &[&Scrape]) -> Prom {
        Prom::start_with(&mut |file| {
            file.write_all(b"# TYPE container_cpu_usage_seconds counter\n")
                .expect("write OpenMetrics");
            for scrape in scrapes {
                scrape.render(Format::OpenMetrics, &mut |chunk| {
                    file.write_all(chunk.as_bytes()).expect("write OpenMetrics")
                });
            }
        })
    }

    /// Backfills a TSDB with OpenMetrics samples (timestamps in seconds, each series'
    /// samples in time order, no `# EOF`) and starts Prometheus on it.
    pub fn start_openmetrics(samples: &str) -> Prom {
        Prom::start_with(&mut |file| file.write_all(samples.as_bytes()).expect("write OpenMetrics"))
    }

    /// Writes the OpenMetrics file with `write` (`# EOF` added), backfills a TSDB from
    /// it with promtool and starts Prometheus on that TSDB.
    fn start_with(write: &mut dyn FnMut(&mut dyn Write)) -> Prom {
        for tool in [PROMETHEUS, PROMTOOL] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: `apt-get install -y prometheus` (.ci/run does it)"
            );
        }
        let data = TempDir::new("prom");
        let input = data.path().join("scrapes.om");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create the OpenMetrics file"));
        write(&mut file);
        file.write_all(b"# EOF\n").expect("write OpenMetrics");
        file.flush().expect("write OpenMetrics");
        drop(file);
        let tsdb = data.path().join("tsdb");
        let out = Command::new(PROMTOOL)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&tsdb)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb create-blocks-from openmetrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // No scrape job: the server only answers queries over what was backfilled.
        let config = data.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").expect("write prometheus.yml");
        let port = vm::free_port();
        let flags = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            // Backfilled blocks may be old (a fixed recording instant): keep them.
            "--storage.tsdb.retention.time=100y".into(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=error".into(),
        ]
        .join(" ");
        vm::watch(&format!("{PROMETHEUS} {flags}"), &data, "prometheus.log");
        let prom = Prom { port, _data: data };
        let deadline = Instant::now() + Duration::from_secs(30);
        while vm::exchange(port, "GET", "/-/ready", b"", "text/plain").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prom
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant query and returns its samples by the value of `label`.
    pub fn samples(&self, promql: &str, label: &str, time: Option<i64>) -> BTreeMap<String, f64> {
        vm::samples(self.port, promql, label, time)
    }
}
