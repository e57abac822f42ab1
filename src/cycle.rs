//! One run, end to end: read the cluster and the metrics, decide, act (unless dry
//! run), report. Also the offline `plan` command over saved responses.
//!
//! This is the only place that sequences I/O; it turns every outcome into an exit
//! code and the metrics of the run. A failure before acting means nothing is removed.

use crate::act;
use crate::cli::PlanArgs;
use crate::config::{Cluster, Config, EvictionMode};
use crate::error::{Cause, Error};
use crate::http::{self, Client};
use crate::kube::{self, Kube};
use crate::plan::{self, Decision, Inputs, Plan};
use crate::report::{self, Carried, Run};
use crate::{clock, show, victoria};
use std::path::Path;
use std::time::Instant;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// What the metrics need to know of a run, filled in as it goes.
struct Tally {
    outcome: &'static str,
    /// The stage under way, blamed if the run fails (one of `report::STAGES`).
    stage: &'static str,
    matched: Option<usize>,
    plan: Option<Plan>,
    removed: Vec<plan::Removal>,
}

/// One live cycle. Returns the exit code.
pub fn run(config: &Config, cluster: &Cluster) -> u8 {
    let started = Instant::now();
    let mut tally = Tally {
        outcome: "error",
        stage: "kubernetes",
        matched: None,
        plan: None,
        removed: Vec::new(),
    };
    let result = cycle(config, cluster, &mut tally);
    let ok = match &result {
        Ok(()) => true,
        Err(e) => {
            log::error!(error:% = e; "run failed, no further action");
            false
        }
    };
    let count = |role| tally.removed.iter().filter(|r| r.role == role).count();
    let run = Run {
        ok,
        outcome: if ok { tally.outcome } else { "error" },
        failed_stage: (!ok).then_some(tally.stage),
        matched: tally.matched,
        analysed: tally.plan.as_ref().map_or(0, Plan::analysed),
        deleted_highest: count(plan::Role::HighestCpu),
        deleted_lowest: count(plan::Role::LowestCpu),
        stats: tally.plan.as_ref().and_then(|p| p.stats),
        threshold: config.decision.threshold,
        duration_secs: started.elapsed().as_secs_f64(),
        end: clock::now_unix_f64(),
    };
    let wrote = publish(config, &run);
    log::info!(
        outcome = run.outcome, removed = tally.removed.len(), duration_seconds = act::round(run.duration_secs);
        "run finished"
    );
    if ok && wrote { EXIT_OK } else { EXIT_FAILED }
}

fn kube_client(cluster: &Cluster) -> Result<Client, Error> {
    let dir = &cluster.kube.service_account_dir;
    let token_path = dir.join("token");
    // Tokens rotate: read the file on every run; send it whenever it exists.
    let token = match std::fs::metadata(&token_path) {
        Ok(_) => Some(http::read_token(&token_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!(path:% = token_path.display(); "no service account token, sending no Authorization header");
            None
        }
        Err(e) => return Err(Error::io(format!("read bearer token {}", token_path.display()), &e)),
    };
    let roots = if cluster.kube.url.starts_with("https://") {
        Some(http::read_ca(&dir.join("ca.crt"))?)
    } else {
        None
    };
    Ok(Client::new(&cluster.kube.url, cluster.kube.timeout, roots, token))
}

fn prometheus_client(config: &Config) -> Result<Client, Error> {
    let p = &config.prometheus;
    let token = p.token_file.as_deref().map(http::read_token).transpose()?;
    let roots = p.ca_file.as_deref().map(http::read_ca).transpose()?;
    Ok(Client::new(&p.url, p.timeout, roots, token))
}

fn cycle(config: &Config, cluster: &Cluster, tally: &mut Tally) -> Result<(), Error> {
    let now = clock::now_unix();
    tally.stage = "kubernetes";
    let kube_client = kube_client(cluster)?;
    tally.stage = "metrics";
    let metrics_client = prometheus_client(config)?;
    tally.stage = "kubernetes";
    let kube = Kube {
        client: &kube_client,
        namespace: &config.namespace,
    };

    let rollout = kube.deployment(&cluster.deployment)?;
    let pods = kube.pods(&config.selector, &cluster.deployment)?;
    log::debug!(matched = pods.len(); "pods listed");
    tally.matched = Some(pods.len());
    tally.stage = "metrics";
    let query = victoria::cpu_query(&config.namespace, &cluster.deployment, config.decision.window_secs);
    log::debug!(query = query.as_str(); "querying CPU");
    let samples = victoria::query_cpu(&metrics_client, &query)?;

    // `decide` fails only for "no pods matched" (the selector's fault) and "no CPU
    // metrics" (the metrics pipeline's), so the stage to blame is known up front.
    tally.stage = if pods.is_empty() { "kubernetes" } else { "metrics" };
    let plan = plan::decide(&Inputs {
        pods: &pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &config.decision,
        container: &cluster.deployment,
        namespace: &config.namespace,
    })?;
    log_plan(&plan, config.mode, config.dry_run);
    tally.plan = Some(plan);
    let Some(plan) = tally.plan.as_ref() else { return Ok(()) };

    match &plan.decision {
        Decision::Hold(hold) => tally.outcome = hold.outcome(),
        Decision::Remove { pods } if config.dry_run => {
            tally.outcome = "dry_run";
            for p in pods {
                log::info!(pod = p.name.as_str(), role = p.role.label(), cpu = act::round(p.cpu); "dry run: would {} pod {}", config.mode.verb(), p.name);
            }
        }
        Decision::Remove { .. } => {
            tally.outcome = "acted";
            tally.stage = "act";
            let acted = act::execute(&kube, plan, config.mode, now);
            tally.removed = acted.removed;
            if let Some(e) = acted.error {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn log_plan(plan: &Plan, mode: EvictionMode, dry_run: bool) {
    for v in &plan.pods {
        let request = v.pod.cpu_request.unwrap_or(f64::NAN);
        let of_request = match (v.cpu, v.pod.cpu_request) {
            (Some(c), Some(r)) if r > 0.0 => format!("{:.0}%", 100.0 * c / r),
            _ => "-".into(),
        };
        log::debug!(
            pod = v.pod.name.as_str(),
            cpu = v.cpu.map_or(-1.0, act::round),
            cpu_request = if request.is_nan() { -1.0 } else { request },
            of_request = of_request.as_str(),
            eligible = v.excluded.is_none(),
            excluded = v.excluded.map(|e| e.to_string()).unwrap_or_default().as_str();
            "pod"
        );
    }
    let verb = if dry_run {
        format!("would {}", mode.verb())
    } else {
        mode.verb().to_string()
    };
    let (n, mean, stddev, spread) = plan
        .stats
        .map_or((0, 0.0, 0.0, 0.0), |s| (s.n, s.mean, s.stddev, s.spread));
    let decision = match &plan.decision {
        Decision::Remove { .. } => "remove",
        Decision::Hold(h) => h.outcome(),
    };
    log::info!(
        decision, matched = plan.pods.len(), eligible = n, healthy = plan.healthy, budget = plan.budget,
        mean = act::round(mean), stddev = act::round(stddev), spread = act::round(spread), threshold = plan.threshold;
        "plan: {}", plan.summary(&verb)
    );
}

/// Writes and pushes the metrics; `false` when the metrics file could not be written.
fn publish(config: &Config, run: &Run) -> bool {
    let previous = match &config.metrics_file {
        Some(path) => read_previous(path),
        None => Carried::default(),
    };
    let mut text = report::render(&previous, run);
    let mut wrote = true;
    if let Some(path) = &config.metrics_file
        && let Err(e) = report::write_atomic(path, &text)
    {
        log::error!(error:% = e; "metrics file not written");
        wrote = false;
        // The run fails for it, so the pushed copy says so.
        let failed = Run {
            ok: false,
            outcome: "error",
            failed_stage: Some("report"),
            ..run.clone()
        };
        text = report::render(&previous, &failed);
    }
    if let Some(url) = &config.push_url {
        let client = Client::new(url, config.prometheus.timeout, None, None);
        let payload = http::Payload {
            content_type: "text/plain; version=0.0.4",
            bytes: text.as_bytes(),
        };
        if let Err(e) = client.send("push metrics", "POST", "", Some(payload)) {
            log::warn!(error:% = e; "metrics push failed");
        }
    }
    wrote
}

fn read_previous(path: &Path) -> Carried {
    match std::fs::read_to_string(path) {
        Ok(text) => report::parse_previous(&text).unwrap_or_else(|why| {
            log::warn!(path:% = path.display(), reason = why.as_str(); "previous metrics file ignored, counters restart");
            Carried::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Carried::default(),
        Err(e) => {
            log::warn!(path:% = path.display(), error:% = e; "previous metrics file unreadable, counters restart");
            Carried::default()
        }
    }
}

fn read_file(what: &str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), &e))
}

/// `pod-rebalancer plan` on saved responses: prints the plan, never connects.
pub fn offline_plan(config: &Config, args: &PlanArgs) -> u8 {
    let output = args.output.as_deref().unwrap_or("text").to_ascii_lowercase();
    if output != "text" && output != "json" {
        eprintln!("--output: expected text or json, got {output:?}");
        return EXIT_USAGE;
    }
    let (Some(pods_path), Some(cpu_path)) = (&args.pods, &args.cpu) else {
        eprintln!("plan: expected --pods FILE and --cpu FILE (see --help)");
        return EXIT_USAGE;
    };
    let now = match &args.now {
        Some(text) => match clock::parse_rfc3339(text) {
            Some(t) => t,
            None => {
                eprintln!("--now: expected an RFC 3339 time such as 2026-01-01T00:00:00Z, got {text:?}");
                return EXIT_USAGE;
            }
        },
        None => clock::now_unix(),
    };
    match offline(config, pods_path, cpu_path, args.deployment.as_deref(), now) {
        Ok(plan) => {
            let verb = format!("would {}", config.mode.verb());
            if output == "json" {
                match serde_json::to_string_pretty(&plan) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("render plan as JSON: {e}");
                        return EXIT_FAILED;
                    }
                }
            } else {
                print!("{}", show::text(&plan, &verb));
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn offline(
    config: &Config,
    pods_path: &Path,
    cpu_path: &Path,
    deployment_path: Option<&Path>,
    now: i64,
) -> Result<Plan, Error> {
    let rollout = match deployment_path {
        Some(path) => Some(kube::parse_deployment(&read_file("deployment", path)?).map_err(|e| {
            Error::new(
                format!("parse deployment {}", path.display()),
                Cause::Malformed(format!("expected a Deployment: {e}")),
            )
        })?),
        None => None,
    };
    let container = config
        .deployment
        .clone()
        .or_else(|| rollout.as_ref().map(|r| r.name.clone()))
        .unwrap_or_default();
    let (pods, _) = kube::parse_pod_list(
        &read_file("pods", pods_path)?,
        Some(&container).filter(|c| !c.is_empty()).map(String::as_str),
    )
    .map_err(|e| {
        Error::new(
            format!("parse pods {}", pods_path.display()),
            Cause::Malformed(format!("expected a PodList: {e}")),
        )
    })?;
    let samples = victoria::parse_answer(&read_file("CPU answer", cpu_path)?).map_err(|why| {
        Error::new(
            format!("parse CPU answer {}", cpu_path.display()),
            Cause::Malformed(why),
        )
    })?;
    plan::decide(&Inputs {
        pods: &pods,
        samples: &samples,
        rollout: rollout.as_ref(),
        now,
        settings: &config.decision,
        container: if container.is_empty() { "?" } else { &container },
        namespace: &config.namespace,
    })
}
