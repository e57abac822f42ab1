//! The cycle benchmark: the release `pod-rebalancer` binary, end to end over real TLS
//! and real paging, against a loopback Kubernetes API and VictoriaMetrics serving N
//! realistic pods, beside two references on the same server: the floor (`curl`
//! fetching the same responses over one kept-alive connection) and the peer
//! (`kubectl get pods -o json`). Then fleet mode (SPEC §13): one run over 100
//! Deployments of 100 pods beside one single-mode run over one Deployment of 10,000,
//! round by round on the same server. A measurement, not a test: it asserts no time.
//!
//!     cargo bench --bench cycle                   # N = 100, 1000, 10000, 50000; 7 runs each;
//!                                                 # the glibc build and the image's musl build;
//!                                                 # then fleet mode, 100 × 100 beside 10000
//!     cargo bench --bench cycle -- --smoke        # N = 1000 once, fleet 10 × 100 beside 1000
//!                                                 # once; checks the decisions (CI)
//!     cargo bench --bench cycle -- --fleet-only --fleet 100x100 --runs 9
//!     cargo bench --bench cycle -- --sizes 10000 --runs 5 --no-kubectl
//!     cargo bench --bench cycle -- --bin A --bin B  # two builds, round by round
//!     cargo bench --bench cycle -- --no-musl      # the glibc build only
//!     cargo bench --bench cycle -- --parse-floor  # one page: our parser vs serde_json skipping it
//!     cargo bench --bench cycle -- --serve 10000  # keep a fleet up (for perf, heaptrack)
//!     cargo bench --bench cycle -- --serve 100x100  # the same in fleet mode
//!
//! It needs GNU `time` at /usr/bin/time (Debian package `time`) for the child's CPU
//! time and peak RSS, and `curl` and `kubectl` on PATH unless told to skip them. The
//! musl build is made by `.ci/release-build.sh` (musl-tools, the Rust target and
//! cargo-auditable; `bash .ci/supply-chain.sh` installs them), as the image's is.

#[path = "../common/files.rs"]
mod files;
mod fleet;
mod fleet_mode;
mod measure;
mod server;

use files::TempDir;
use measure::{Sample, median, paired};
use pod_rebalancer::http::encode;
use pod_rebalancer::kube::PAGE_LIMIT;
use server::{Content, Counts, Pki, Server};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

struct Args {
    smoke: bool,
    runs: usize,
    sizes: Vec<usize>,
    curl: bool,
    kubectl: bool,
    verbose: bool,
    dump_pod: bool,
    parse_floor: bool,
    /// Pods to serve until killed: single mode's count, or fleet mode's shape.
    serve: Option<Serve>,
    /// Fleet mode's case: targets × pods per target, beside single mode over as many
    /// pods; `None`: not run.
    fleet: Option<(usize, usize)>,
    /// The fleet case alone (no single-mode sizes, no curl, no kubectl).
    fleet_only: bool,
    /// Beside the glibc build Cargo made, the static musl build the image ships.
    musl: bool,
    /// Binaries to measure instead of those two (A/B comparisons).
    bins: Vec<PathBuf>,
}

const USAGE: &str = "usage: cargo bench --bench cycle -- [--smoke] [--runs N] [--sizes N,N,..] [--fleet TxP | --no-fleet | --fleet-only] [--no-curl] [--no-kubectl] [--no-musl] [--verbose] [--dump-pod] [--parse-floor] [--serve N | --serve TxP] [--bin PATH]..";

/// Fleet mode's case by default: SPEC §13's 100 targets of 100 pods.
const FLEET: (usize, usize) = (100, 100);

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        smoke: false,
        runs: 7,
        sizes: vec![100, 1_000, 10_000, 50_000],
        curl: true,
        kubectl: true,
        verbose: false,
        dump_pod: false,
        parse_floor: false,
        serve: None,
        fleet: Some(FLEET),
        fleet_only: false,
        musl: true,
        bins: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "--smoke" => args.smoke = true,
            "--no-curl" => args.curl = false,
            "--no-kubectl" => args.kubectl = false,
            "--no-musl" => args.musl = false,
            "--verbose" => args.verbose = true,
            "--dump-pod" => args.dump_pod = true,
            "--parse-floor" => args.parse_floor = true,
            "--no-fleet" => args.fleet = None,
            "--fleet-only" => args.fleet_only = true,
            "--fleet" => {
                let v = it.next().unwrap_or_default();
                args.fleet = Some(shape(&v).ok_or(format!(
                    "--fleet: expected targets x pods (pods >= 10) such as 100x100, got {v:?}"
                ))?);
            }
            "--bin" => args.bins.push(
                it.next()
                    .ok_or("--bin: expected the path of a pod-rebalancer binary")?
                    .into(),
            ),
            "--serve" => {
                let v = it.next().unwrap_or_default();
                let serve = match v.contains('x') {
                    true => shape(&v).map(|(t, p)| Serve::Fleet(t, p)),
                    false => v.parse().ok().filter(|&n| n >= 10).map(Serve::Single),
                };
                args.serve = Some(serve.ok_or(format!(
                    "--serve: expected a pod count >= 10, or targets x pods (pods >= 10), got {v:?}"
                ))?);
            }
            "--runs" => {
                args.runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .ok_or("--runs: expected a count >= 1")?;
            }
            "--sizes" => {
                let v = it.next().ok_or("--sizes: expected a list such as 1000,10000")?;
                args.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().ok().filter(|&n| n >= 10))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("--sizes: expected pod counts >= 10, got {v:?}"))?;
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.smoke {
        args.sizes = vec![1_000];
        args.runs = 1;
        args.curl = false;
        args.kubectl = false;
        args.fleet = Some((10, 100));
    }
    if args.fleet_only {
        if args.fleet.is_none() {
            return Err("--fleet-only and --no-fleet: nothing to run".into());
        }
        args.sizes.clear();
        args.curl = false;
        args.kubectl = false;
    }
    Ok(args)
}

/// What `--serve` keeps up.
#[derive(Clone, Copy)]
enum Serve {
    /// One Deployment of this many pods.
    Single(usize),
    /// Fleet mode: targets × pods.
    Fleet(usize, usize),
}

/// `TxP`, targets × pods per target (at least 1 × 10).
fn shape(v: &str) -> Option<(usize, usize)> {
    let (t, p) = v.split_once('x')?;
    let (t, p): (usize, usize) = (t.parse().ok()?, p.parse().ok()?);
    (t >= 1 && p >= 10).then_some((t, p))
}

/// The runs of one fleet size, round by round.
struct Row {
    n: usize,
    pages: usize,
    pod_bytes: usize,
    /// One per binary measured.
    ours: Vec<Ours>,
    curl: Option<(Vec<Sample>, Counts)>,
    kubectl: Option<(Vec<Sample>, Counts)>,
}

/// One binary's runs at one fleet size.
struct Ours {
    label: String,
    runs: Vec<Sample>,
    /// What the server saw in the last run.
    counts: Counts,
    ratios: Ratios,
}

/// The median of the round-by-round ratios to the references that ran.
struct Ratios {
    /// ours / curl, wall time.
    curl_wall: Option<f64>,
    /// kubectl / ours, wall time.
    kubectl_wall: Option<f64>,
    /// kubectl / ours, peak RSS.
    kubectl_rss: Option<f64>,
}

impl Ratios {
    fn of(ours: &[Sample], curl: Option<&[Sample]>, kubectl: Option<&[Sample]>) -> Ratios {
        Ratios {
            curl_wall: curl.map(|c| paired(ours, c, |o, c| o.wall / c.wall)),
            kubectl_wall: kubectl.map(|k| paired(ours, k, |o, k| k.wall / o.wall)),
            kubectl_rss: kubectl.map(|k| paired(ours, k, |o, k| k.rss_kb as f64 / o.rss_kb as f64)),
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("{why}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if args.dump_pod {
        // One generated pod, to see what the server sends.
        let fleet = fleet::build(10, 1_790_000_000);
        println!("{}", String::from_utf8_lossy(fleet.pods.slice(0, 1)));
        return;
    }
    if args.parse_floor {
        parse_floor();
        return;
    }
    if let Err(why) = run(&args) {
        eprintln!("bench failed: {why}");
        std::process::exit(1);
    }
}

fn tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(format!("{name} not found on PATH (or pass --no-{name})"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A fresh random-enough token: the server checks it, and it is never printed.
fn token() -> String {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let mut x = seed | 1;
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The programs a benchmark compares: ours (one build or more, with labels) and,
/// when asked for, curl and kubectl.
struct Programs {
    bins: Vec<(String, PathBuf)>,
    curl: Option<PathBuf>,
    kubectl: Option<PathBuf>,
}

/// The scratch directory, the loopback server and what each program is run with.
struct Bench {
    _scratch: TempDir,
    dir: PathBuf,
    server: Server,
    url: String,
    ca: PathBuf,
    token: String,
    /// Unix seconds: the fleets' ages are relative to it.
    now: i64,
    /// Ours at info (the dry-run lines the decision check reads) and at warn (timed),
    /// in single mode and in fleet mode.
    ours_info: Vec<(String, String)>,
    ours_warn: Vec<(String, String)>,
    fleet_info: Vec<(String, String)>,
    fleet_warn: Vec<(String, String)>,
    kubectl_args: Vec<String>,
    kubectl_env: Vec<(String, String)>,
}

fn run(args: &Args) -> Result<(), String> {
    if !Path::new(measure::TIME).is_file() {
        return Err(format!(
            "{} not found: install GNU time (Debian/Ubuntu: apt-get install time)",
            measure::TIME
        ));
    }
    let programs = programs(args)?;
    let bench = Bench::start()?;
    if let Some(serve) = args.serve {
        bench.serve_forever(serve);
    }
    print_header(args, &programs.bins)?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for &n in &args.sizes {
        rows.push(bench.size(args, &programs, n, &mut problems)?);
    }
    let fleet = match args.fleet {
        Some(shape) => Some(bench.fleet_case(args.runs, &programs, shape, &mut problems)?),
        None => None,
    };
    if !rows.is_empty() {
        print_table(&rows);
        print_targets(&rows);
    }
    if let Some(fleet) = &fleet {
        fleet_mode::print(fleet);
    }
    for p in &problems {
        println!("- PROBLEM: {p}");
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(())
}

/// Ours (the glibc build and the image's musl build, or what --bin names), curl and
/// kubectl as asked.
fn programs(args: &Args) -> Result<Programs, String> {
    let bins = if args.bins.is_empty() {
        let mut bins = vec![("glibc".to_string(), PathBuf::from(env!("CARGO_BIN_EXE_pod-rebalancer")))];
        if args.musl && args.serve.is_none() {
            bins.push(("musl (image)".to_string(), musl_build()?));
        }
        bins
    } else {
        args.bins.iter().map(|b| (b.display().to_string(), b.clone())).collect()
    };
    Ok(Programs {
        bins,
        curl: if args.curl { Some(tool("curl")?) } else { None },
        kubectl: if args.kubectl { Some(tool("kubectl")?) } else { None },
    })
}

impl Bench {
    /// A scratch directory with the service account, the Authorization header for
    /// curl and a kubeconfig, and the loopback HTTPS server.
    fn start() -> Result<Bench, String> {
        let scratch = TempDir::new("scratch");
        let dir = scratch.path().to_path_buf();
        for sub in ["sa", "home"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let pki = Pki::new();
        let token = token();
        let ca = dir.join("sa/ca.crt");
        write(&ca, &pki.ca_pem)?;
        write(&dir.join("sa/token"), &token)?;
        write(&dir.join("auth.header"), &format!("Authorization: Bearer {token}\n"))?;
        let server = Server::start(&pki);
        let url = server.url();
        let kubeconfig = dir.join("kubeconfig");
        write(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: bench\n  user:\n    token: {token}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\n    namespace: {}\ncurrent-context: bench\n",
                ca.display(),
                fleet::NAMESPACE
            ),
        )?;
        // Single mode names its Deployment and pod selector; fleet mode its targets'
        // selector and the run's removal budget, and lists the namespace's pods.
        let max_removals = fleet::MAX_REMOVALS.to_string();
        let single: &[(&str, &str)] = &[
            ("KUBE_LABEL_SELECTOR", fleet::SELECTOR),
            ("DEPLOYMENT_NAME", fleet::DEPLOYMENT),
        ];
        let many: &[(&str, &str)] = &[
            ("TARGET_SELECTOR", fleet::TARGET_SELECTOR),
            ("MAX_REMOVALS_PER_RUN", &max_removals),
        ];
        let env = |mode: &[(&str, &str)], level: &str| -> Vec<(String, String)> {
            let (sa, ca) = (dir.join("sa").display().to_string(), ca.display().to_string());
            [
                ("KUBE_API_URL", url.as_str()),
                ("KUBE_SERVICE_ACCOUNT_DIR", &sa),
                ("KUBE_NAMESPACE", fleet::NAMESPACE),
            ]
            .iter()
            .chain(mode)
            .chain(&[
                ("PROMETHEUS_ENDPOINT", url.as_str()),
                ("PROMETHEUS_CA_FILE", &ca),
                ("DRY_RUN", "true"),
                ("LOG_LEVEL", level),
            ])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let kubectl_args = [
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "get",
            "pods",
            "-n",
            fleet::NAMESPACE,
            "-l",
            fleet::SELECTOR,
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let kubectl_env = vec![
            ("HOME".to_string(), dir.join("home").display().to_string()),
            ("PATH".to_string(), std::env::var("PATH").unwrap_or_default()),
        ];
        Ok(Bench {
            ours_info: env(single, "info"),
            ours_warn: env(single, "warn"),
            fleet_info: env(many, "info"),
            fleet_warn: env(many, "warn"),
            kubectl_args,
            kubectl_env,
            now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            _scratch: scratch,
            dir,
            server,
            url,
            ca,
            token,
        })
    }

    /// For profiling by hand: serves one fleet of pods until killed, and prints the
    /// environment a run of ours needs.
    fn serve_forever(&self, serve: Serve) -> ! {
        let (fleet, env) = match serve {
            Serve::Single(n) => (fleet::build(n, self.now), &self.ours_warn),
            Serve::Fleet(t, p) => (fleet::build_targets(t, p, self.now), &self.fleet_warn),
        };
        let n = fleet.pods.n();
        self.server.serve_content(Content {
            fleet,
            token: self.token.clone(),
        });
        for (k, v) in env {
            println!("export {k}='{v}'");
        }
        println!("export KUBECONFIG='{}'", self.dir.join("kubeconfig").display());
        eprintln!(
            "serving {n} pods at {}; stop with Ctrl-C (scratch files stay in {})",
            self.url,
            self.dir.display()
        );
        loop {
            std::thread::park();
        }
    }

    /// One fleet size: the decision checked, the warm-ups, then `args.runs` rounds.
    fn size(&self, args: &Args, programs: &Programs, n: usize, problems: &mut Vec<String>) -> Result<Row, String> {
        let fleet = fleet::build(n, self.now);
        let evicted = fleet.expected.evicted.clone();
        let pod_bytes = fleet.pods.mean_bytes();
        let pages = n.div_ceil(PAGE_LIMIT);
        self.server.serve_content(Content {
            fleet,
            token: self.token.clone(),
        });
        eprintln!("N={n}: {pod_bytes} bytes of JSON per pod, {pages} pages of {PAGE_LIMIT}");
        self.check_decisions(programs, n, &evicted, problems)?;
        let curl_args = curl_args(&self.url, &self.ca, &self.dir.join("auth.header"), n);
        self.warm_up(programs, &curl_args, args.verbose)?;
        let rounds = self.rounds(args.runs, programs, &curl_args, n)?;
        Ok(rounds.into_row(n, pages, pod_bytes, programs))
    }

    /// Each of our builds, at info level, names the hottest and the coldest pod.
    fn check_decisions(
        &self,
        programs: &Programs,
        n: usize,
        evicted: &[String],
        problems: &mut Vec<String>,
    ) -> Result<(), String> {
        for (_, bin) in &programs.bins {
            self.server.take();
            let (_, out) = measure::run(bin, &[], &self.ours_info, &self.dir);
            let counts = self.server.take();
            check_ours(&out, evicted)?;
            if counts.connections > 2 {
                problems.push(format!(
                    "N={n}: {} opened {} connections; expected 2 (one kept alive per server)",
                    bin.display(),
                    counts.connections
                ));
            }
            eprintln!(
                "N={n}: decision right (would evict {}), {} connections, {} requests",
                evicted.join(" and "),
                counts.connections,
                counts.requests
            );
        }
        Ok(())
    }

    /// Warm-ups, not counted: the page cache, and kubectl's discovery cache (a user
    /// running it twice has one).
    fn warm_up(&self, programs: &Programs, curl_args: &[String], verbose: bool) -> Result<(), String> {
        for (program, a, env) in [
            (programs.curl.as_ref(), curl_args, &[][..]),
            (programs.kubectl.as_ref(), &self.kubectl_args[..], &self.kubectl_env[..]),
        ] {
            if let Some(p) = program {
                let (_, out) = measure::run(p, a, env, &self.dir);
                check_exit(p, &out)?;
            }
        }
        self.server.take();
        if verbose {
            for u in self.server.unknown.lock().expect("unknown").drain(..) {
                eprintln!("  404 for {u}");
            }
        }
        Ok(())
    }

    /// `runs` rounds, each running every program once, interleaved.
    fn rounds(&self, runs: usize, programs: &Programs, curl_args: &[String], n: usize) -> Result<Rounds, String> {
        let mut r = Rounds {
            ours: vec![Vec::new(); programs.bins.len()],
            ours_counts: vec![Counts::default(); programs.bins.len()],
            ..Rounds::default()
        };
        for round in 0..runs {
            for (i, (_, bin)) in programs.bins.iter().enumerate() {
                let (s, out) = measure::run(bin, &[], &self.ours_warn, &self.dir);
                r.ours_counts[i] = self.server.take();
                check_exit(bin, &out)?;
                r.ours[i].push(s);
            }
            if let Some(p) = &programs.curl {
                let (s, out) = measure::run(p, curl_args, &[], &self.dir);
                r.curl_counts = self.server.take();
                check_exit(p, &out)?;
                r.curl.push(s);
            }
            if let Some(p) = &programs.kubectl {
                let (s, out) = measure::run(p, &self.kubectl_args, &self.kubectl_env, &self.dir);
                r.kubectl_counts = self.server.take();
                check_exit(p, &out)?;
                r.kubectl.push(s);
            }
            eprintln!("N={n} round {}: {}", round + 1, r.last());
        }
        Ok(r)
    }
}

/// What the rounds of one size measured.
#[derive(Default)]
struct Rounds {
    ours: Vec<Vec<Sample>>,
    ours_counts: Vec<Counts>,
    curl: Vec<Sample>,
    curl_counts: Counts,
    kubectl: Vec<Sample>,
    kubectl_counts: Counts,
}

impl Rounds {
    /// The last round, for the progress line.
    fn last(&self) -> String {
        format!(
            "ours {}{}{}",
            self.ours
                .iter()
                .map(|o| format!("{:.0} ms", s_ms(o.last())))
                .collect::<Vec<_>>()
                .join(" / "),
            self.curl
                .last()
                .map_or(String::new(), |s| format!(", curl {:.0} ms", s.wall * 1e3)),
            self.kubectl
                .last()
                .map_or(String::new(), |s| format!(", kubectl {:.0} ms", s.wall * 1e3)),
        )
    }

    fn into_row(self, n: usize, pages: usize, pod_bytes: usize, programs: &Programs) -> Row {
        let by_curl = programs.curl.as_ref().map(|_| self.curl);
        let by_kubectl = programs.kubectl.as_ref().map(|_| self.kubectl);
        Row {
            n,
            pages,
            pod_bytes,
            ours: programs
                .bins
                .iter()
                .zip(self.ours)
                .zip(&self.ours_counts)
                .map(|(((label, _), runs), c)| Ours {
                    label: label.clone(),
                    ratios: Ratios::of(&runs, by_curl.as_deref(), by_kubectl.as_deref()),
                    runs,
                    counts: *c,
                })
                .collect(),
            curl: by_curl.map(|c| (c, self.curl_counts)),
            kubectl: by_kubectl.map(|k| (k, self.kubectl_counts)),
        }
    }
}

/// The machine, the builds and the method, above the table.
fn print_header(args: &Args, bins: &[(String, PathBuf)]) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# pod-rebalancer cycle benchmark");
    println!();
    println!("- machine: {cores} cores, {}", cpu_model());
    for (label, bin) in bins {
        let size = std::fs::metadata(bin)
            .map_err(|e| format!("{}: {e}", bin.display()))?
            .len();
        let label = if bins.len() > 1 {
            format!(" {label}")
        } else {
            String::new()
        };
        println!(
            "- binary{label}: {} ({size} bytes = {:.2} MB)",
            bin.display(),
            size as f64 / 1e6
        );
    }
    println!(
        "- runs per size: {}, interleaved (ours, curl, kubectl); times and RSS are medians, ratios the median of the round-by-round ratios",
        args.runs
    );
    println!(
        "- ours with DRY_RUN=true LOG_LEVEL=warn; server: loopback HTTPS (rustls), thread per connection, keep-alive"
    );
    println!(
        "- load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// The static musl binary the image ships, built the way it is released
/// (`.ci/release-build.sh`: vendored, offline, cargo-auditable; a no-op when it is
/// up to date), so that the table shows what users run beside the glibc build.
fn musl_build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join(".ci/release-build.sh");
    eprintln!(
        "building the musl binary: bash {} x86_64-unknown-linux-musl",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("x86_64-unknown-linux-musl")
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("run bash {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(path) if out.status.success() && Path::new(path).is_file() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "the musl build failed ({} {}): it needs musl-tools, the x86_64-unknown-linux-musl target and cargo-auditable (bash .ci/supply-chain.sh installs them); --no-musl measures the glibc build alone",
            script.display(),
            out.status
        )),
    }
}

fn s_ms(s: Option<&Sample>) -> f64 {
    s.map_or(f64::NAN, |s| s.wall * 1e3)
}

/// One `curl` fetching what the binary fetches (the Deployment, every page, the
/// query) over one kept-alive connection, to /dev/null.
fn curl_args(url: &str, ca: &Path, header: &Path, n: usize) -> Vec<String> {
    let ca = ca.display().to_string();
    let header = format!("@{}", header.display());
    let common = |v: &mut Vec<String>| {
        v.extend(["-sS", "--fail", "--cacert", &ca, "-H", &header].map(String::from));
    };
    let mut v = Vec::new();
    common(&mut v);
    let list = format!(
        "{url}/api/v1/namespaces/{}/pods?labelSelector={}&limit={PAGE_LIMIT}",
        fleet::NAMESPACE,
        encode(fleet::SELECTOR)
    );
    let mut urls = vec![format!(
        "{url}/apis/apps/v1/namespaces/{}/deployments/{}",
        fleet::NAMESPACE,
        fleet::DEPLOYMENT
    )];
    urls.push(list.clone());
    for offset in (PAGE_LIMIT..n).step_by(PAGE_LIMIT) {
        urls.push(format!("{list}&continue={}", server::continue_token(offset)));
    }
    for u in urls {
        v.extend(["-o".to_string(), "/dev/null".to_string(), u]);
    }
    v.push("--next".into());
    common(&mut v);
    // The binary's query and form, byte for byte: the bench leaves METRICS_TIME_WINDOW
    // unset, so the window is its default, 5m.
    let query = pod_rebalancer::victoria::cpu_query(fleet::NAMESPACE, Some(fleet::DEPLOYMENT), &[], 300);
    v.extend([
        "--data-raw".to_string(),
        format!("query={}", encode(&query)),
        "-o".to_string(),
        "/dev/null".to_string(),
    ]);
    v.push(format!("{url}/api/v1/query"));
    v
}

fn check_exit(program: &Path, out: &Output) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} exited with {}: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The binary must exit 0 and log "dry run: pod X would be evicted" for exactly the
/// `expected` pods (sorted): in single mode the hottest and the coldest of the fleet.
fn check_ours(out: &Output, expected: &[String]) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("pod-rebalancer exited with {}: {}", out.status, stderr.trim()));
    }
    let mut named: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.split_once("dry run: pod ")
                .and_then(|(_, rest)| rest.split_once(" would be evicted"))
        })
        .map(|(pod, _)| pod)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    named.sort_unstable();
    if named != expected {
        return Err(format!(
            "expected the dry run to name {expected:?} (hottest and coldest), it named {named:?}:\n{stderr}"
        ));
    }
    Ok(())
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn rss(s: &Sample) -> String {
    mb(s.rss_kb as f64 * 1024.0)
}

fn ms(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else {
        format!("{:.2} s", secs)
    }
}

fn print_table(rows: &[Row]) {
    let ab = rows.iter().any(|r| r.ours.len() > 1);
    println!();
    println!(
        "| pods | pages | received |{} ours wall | ours CPU | ours RSS | curl wall | curl CPU | curl RSS | kubectl wall | kubectl CPU | kubectl RSS | ours / curl wall | kubectl / ours wall | kubectl / ours RSS |",
        if ab { " binary |" } else { "" }
    );
    println!(
        "|---:|---:|---:|{}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        if ab { "---|" } else { "" }
    );
    // A reference's median wall, CPU and RSS, or dashes when it did not run.
    let columns = |runs: Option<&(Vec<Sample>, Counts)>| {
        runs.map_or(["-".to_string(), "-".into(), "-".into()], |(runs, _)| {
            let m = median(runs);
            [ms(m.wall), ms(m.cpu), rss(&m)]
        })
    };
    let times = |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |x| format!("{x:.digits$}×"));
    for r in rows {
        let [cw, cc, cr] = columns(r.curl.as_ref());
        let [kw, kc, kr] = columns(r.kubectl.as_ref());
        for o in &r.ours {
            let ours = median(&o.runs);
            println!(
                "| {} | {} | {} |{} {} | {} | {} | {cw} | {cc} | {cr} | {kw} | {kc} | {kr} | {} | {} | {} |",
                r.n,
                r.pages,
                mb(o.counts.bytes as f64),
                if ab { format!(" {} |", o.label) } else { String::new() },
                ms(ours.wall),
                ms(ours.cpu),
                rss(&ours),
                times(o.ratios.curl_wall, 2),
                times(o.ratios.kubectl_wall, 0),
                times(o.ratios.kubectl_rss, 0),
            );
        }
    }
    println!();
    for r in rows {
        let counts = &r.ours[0].counts;
        let mut line = format!(
            "- {} pods ({} bytes of JSON each): ours {} connections / {} requests",
            r.n, r.pod_bytes, counts.connections, counts.requests
        );
        if let Some((_, c)) = &r.curl {
            line += &format!("; curl {} / {}", c.connections, c.requests);
        }
        if let Some((_, k)) = &r.kubectl {
            line += &format!("; kubectl {} / {} ({})", k.connections, k.requests, mb(k.bytes as f64));
        }
        println!("{line}");
    }
}

/// The targets, judged for each binary: ratios to curl and kubectl round by
/// round, the rest on medians.
fn print_targets(rows: &[Row]) {
    let count = rows.first().map_or(0, |r| r.ours.len());
    for i in 0..count {
        print_targets_of(rows, i);
    }
}

fn print_targets_of(rows: &[Row], i: usize) {
    let find = |n| rows.iter().find(|r| r.n == n);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    if find(10_000).is_none() && find(50_000).is_none() {
        return;
    }
    println!();
    if let Some(label) = rows
        .first()
        .map(|r| &r.ours[i].label)
        .filter(|_| rows[0].ours.len() > 1)
    {
        println!("{label}:");
    }
    if let Some(r) = find(10_000) {
        let Ours { runs, ratios, .. } = &r.ours[i];
        let ours = median(runs);
        if let Some(x) = ratios.curl_wall {
            println!("- 10k wall ≤ 2× curl floor: {x:.2}× — {}", verdict(x <= 2.0));
        }
        println!("- 10k wall ≤ 0.4 s: {} — {}", ms(ours.wall), verdict(ours.wall <= 0.4));
        println!(
            "- 10k peak RSS ≤ 16 MB: {} — {}",
            rss(&ours),
            verdict(ours.rss_kb as f64 * 1024.0 <= 16e6)
        );
        if let (Some(w), Some(m)) = (ratios.kubectl_wall, ratios.kubectl_rss) {
            println!("- 10k ≥ 20× faster than kubectl: {w:.1}× — {}", verdict(w >= 20.0));
            println!("- 10k ≥ 20× less memory than kubectl: {m:.1}× — {}", verdict(m >= 20.0));
        }
    }
    if let Some(r) = find(50_000) {
        let ours = median(&r.ours[i].runs);
        if let Some(x) = r.ours[i].ratios.curl_wall {
            println!("- 50k wall ≤ 2× curl floor: {x:.2}× — {}", verdict(x <= 2.0));
        }
        println!(
            "- 50k peak RSS ≤ 32 MB: {} — {}",
            rss(&ours),
            verdict(ours.rss_kb as f64 * 1024.0 <= 32e6)
        );
        if let Some(t) = find(10_000) {
            let x = ours.wall / median(&t.ours[i].runs).wall;
            println!("- wall(50k) / wall(10k) ≤ 6: {x:.2} (medians) — {}", verdict(x <= 6.0));
        }
    }
}

/// In process, no network: the time to parse one page of 500 generated pods with the
/// binary's own parser, beside serde_json skipping the same page without keeping
/// anything (`IgnoredAny`), the least any serde_json-based client can spend on it.
fn parse_floor() {
    use std::time::Instant;
    let fleet = fleet::build(PAGE_LIMIT, 1_790_000_000);
    let page = String::from_utf8(server::page(&fleet, server::List::Pods, 0, PAGE_LIMIT).concat()).expect("UTF-8 page");
    let time = |what: &str, f: &dyn Fn()| {
        f();
        let rounds = 200;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..rounds {
                f();
            }
            best = best.min(started.elapsed().as_secs_f64() / rounds as f64);
        }
        println!(
            "- {what}: {:.2} ms per page of {PAGE_LIMIT} pods ({:.2} MB), {:.0} MB/s",
            best * 1e3,
            page.len() as f64 / 1e6,
            page.len() as f64 / best / 1e6
        );
    };
    time("pod_rebalancer::kube::parse_pod_list", &|| {
        let route = pod_rebalancer::kube::Route::Owned(&[(fleet::DEPLOYMENT, fleet::DEPLOYMENT)]);
        let parsed = pod_rebalancer::kube::parse_pod_list(&page, route).expect("page");
        std::hint::black_box(parsed);
    });
    time("serde_json, skipping everything (IgnoredAny)", &|| {
        let skipped: serde::de::IgnoredAny = serde_json::from_str(&page).expect("page");
        std::hint::black_box(skipped);
    });
}
