//! One run, end to end: read the cluster and the metrics, decide, act (unless dry
//! run), report. Also the offline `plan` command over saved responses.
//!
//! This is the only place that sequences I/O; it turns every outcome into an exit
//! code and the metrics of the run. A failure before acting means nothing is removed.

use crate::act;
use crate::cli::{PlanArgs, Raw};
use crate::config;
use crate::config::{Cluster, Config, EvictionMode};
use crate::error::{Cause, Error};
use crate::http::{self, Client};
use crate::kube::{self, Kube};
use crate::plan::{self, Decision, Inputs, Plan};
use crate::report::{self, Carried, Run};
use crate::{clock, show, victoria};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
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

impl Tally {
    /// A run that has not got anywhere yet: an error in the first stage.
    fn new() -> Tally {
        Tally {
            outcome: "error",
            stage: "kubernetes",
            matched: None,
            plan: None,
            removed: Vec::new(),
        }
    }
}

/// One live cycle. Returns the exit code.
pub fn run(config: &Config, cluster: &Cluster) -> u8 {
    let started = Instant::now();
    let mut tally = Tally::new();
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

/// A client for `url` on the metrics side: the query endpoint or the push URL. The
/// push usually goes to the same VictoriaMetrics (or its vmauth): same CA bundle and
/// timeout, and the query's token, but only to the same origin, so a Pushgateway
/// elsewhere never receives that credential.
fn metrics_client(config: &Config, url: &str) -> Result<Client, Error> {
    let p = &config.prometheus;
    let token = p.token_file.as_deref().map(http::read_token).transpose()?;
    let roots = p.ca_file.as_deref().map(http::read_ca).transpose()?;
    Ok(match token {
        Some(token) if origin(url) != origin(&p.url) => Client::new(url, p.timeout, roots, None).hiding(token),
        token => Client::new(url, p.timeout, roots, token),
    })
}

/// The clients of one run, built from the files they need (read on every run).
struct Clients {
    kube: Client,
    metrics: Client,
}

fn clients(config: &Config, cluster: &Cluster, tally: &mut Tally) -> Result<Clients, Error> {
    tally.stage = "kubernetes";
    let kube = kube_client(cluster)?;
    tally.stage = "metrics";
    let metrics = metrics_client(config, &config.prometheus.url)?;
    Ok(Clients { kube, metrics })
}

/// Reads the cluster and the metrics and decides: the read-only half of a cycle,
/// shared by the live run and the live `plan`.
fn observe(config: &Config, cluster: &Cluster, clients: &Clients, now: i64, tally: &mut Tally) -> Result<Plan, Error> {
    tally.stage = "kubernetes";
    let kube = Kube {
        client: &clients.kube,
        namespace: &config.namespace,
    };
    let rollout = kube.deployment(&cluster.deployment)?;
    let pods = kube.pods(&config.selector, &cluster.deployment)?;
    log::debug!(matched = pods.len(); "pods listed");
    tally.matched = Some(pods.len());
    tally.stage = "metrics";
    let query = victoria::cpu_query(&config.namespace, &cluster.deployment, config.decision.window_secs);
    log::debug!(query = query.as_str(); "querying CPU");
    let samples = victoria::query_cpu(&clients.metrics, &query)?;

    // `decide` fails only for "no pods matched" (the selector's fault) and "no CPU
    // metrics" (the metrics pipeline's), so the stage to blame is known up front.
    tally.stage = if pods.is_empty() { "kubernetes" } else { "metrics" };
    plan::decide(Inputs {
        pods,
        samples: &samples,
        rollout: Some(&rollout),
        now,
        settings: &config.decision,
        container: &cluster.deployment,
        namespace: &config.namespace,
    })
}

fn cycle(config: &Config, cluster: &Cluster, tally: &mut Tally) -> Result<(), Error> {
    let now = clock::now_unix();
    let clients = clients(config, cluster, tally)?;
    let plan = observe(config, cluster, &clients, now, tally)?;
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
            let kube = Kube {
                client: &clients.kube,
                namespace: &config.namespace,
            };
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
    // A line per pod only when it is printed: at 50,000 pods the formatting alone
    // would cost a run at info level for nothing.
    if log::log_enabled!(log::Level::Debug) {
        for v in plan.pods.iter() {
            // Usage as a share of the request, SPEC §5; absent without either number.
            let of_request = match (v.sample, v.pod.cpu_request) {
                (Some(c), Some(r)) if r > 0.0 => Some(format!("{:.0}%", 100.0 * c / r)),
                _ => None,
            };
            log::debug!(
                pod = v.pod.name.as_str(),
                cpu = v.sample.map(act::round),
                cpu_request = v.pod.cpu_request,
                cpu_limit = v.pod.cpu_limit,
                of_request = of_request.as_deref(),
                eligible = v.excluded.is_none(),
                excluded = v.excluded.map(|e| e.to_string()).unwrap_or_default().as_str();
                "pod"
            );
        }
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
        let pushed = metrics_client(config, url).and_then(|client| {
            let payload = http::Payload {
                content_type: "text/plain; version=0.0.4",
                bytes: text.as_bytes(),
            };
            client.send("push metrics", "POST", "", Some(payload)).map(|_| ())
        });
        if let Err(e) = pushed {
            log::warn!(error:% = e; "metrics push failed");
        }
    }
    wrote
}

/// `scheme://host:port` of a validated URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
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

/// `pod-rebalancer plan`: the decision printed for a person, from saved responses
/// (`--pods`/`--cpu`) or from a read-only live cycle. Never mutates anything.
pub fn plan_command(raw: &Raw, args: &PlanArgs) -> u8 {
    let output = args.output.as_deref().unwrap_or("text").to_ascii_lowercase();
    let mut problems = Vec::new();
    if output != "text" && output != "json" {
        problems.push(format!("--output: expected text or json, got {output:?}"));
    }
    let offline = args.pods.is_some() || args.cpu.is_some();
    if offline && (args.pods.is_none() || args.cpu.is_none()) {
        problems.push("plan: --pods and --cpu go together (or neither, for a live plan)".to_string());
    }
    if offline && args.save.is_some() {
        problems.push("plan: --save records a live plan; it does not go with --pods/--cpu".to_string());
    }
    if !offline && (args.deployment.is_some() || args.now.is_some()) {
        problems.push("plan: --deployment and --now replay saved responses; they need --pods and --cpu".to_string());
    }
    let now = match &args.now {
        Some(text) => clock::parse_rfc3339(text).unwrap_or_else(|| {
            problems.push(format!(
                "--now: expected an RFC 3339 time such as 2026-01-01T00:00:00Z, got {text:?}"
            ));
            0
        }),
        None => clock::now_unix(),
    };
    let configs = if offline {
        config::offline(raw).map(|c| (c, None))
    } else {
        config::live(raw).map(|(c, k)| (c, Some(k)))
    };
    let (config, cluster) = match configs {
        Ok(ok) if problems.is_empty() => ok,
        Ok(_) => return usage(&problems),
        Err(more) => {
            problems.extend(more);
            return usage(&problems);
        }
    };
    crate::logging::init(config.log_level, config.log_format);
    let result = match (&args.pods, &args.cpu, &cluster) {
        (Some(pods), Some(cpu), _) => offline_plan(&config, pods, cpu, args.deployment.as_deref(), now),
        (_, _, Some(cluster)) => live_plan(&config, cluster, args.save.as_deref(), now),
        _ => Err(Error::refused(
            "plan",
            "expected --pods and --cpu, or a live configuration",
        )),
    };
    match result {
        Ok(plan) => print_plan(&plan, &config, &output, args.all),
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// Prints configuration problems, one a line; exit 2.
pub fn usage(problems: &[String]) -> u8 {
    for p in problems {
        eprintln!("configuration: {p}");
    }
    eprintln!("(pod-rebalancer --help lists every setting)");
    EXIT_USAGE
}

/// The JSON document of `plan --output json`: the plan with a format version.
#[derive(serde::Serialize)]
struct PlanDocument<'a> {
    version: u32,
    #[serde(flatten)]
    plan: &'a Plan,
}

fn print_plan(plan: &Plan, config: &Config, output: &str, all: bool) -> u8 {
    let verb = format!("would {}", config.mode.verb());
    if output == "json" {
        match serde_json::to_string_pretty(&PlanDocument { version: 1, plan }) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("render plan as JSON: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        use std::io::IsTerminal;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        print!("{}", show::text(plan, &verb, show::Style { color, all }));
    }
    EXIT_OK
}

/// The read-only half of a live cycle; with `save`, the responses read are written
/// there so the same decision can be replayed with `--pods/--cpu/--deployment`.
fn live_plan(config: &Config, cluster: &Cluster, save: Option<&Path>, now: i64) -> Result<Plan, Error> {
    let mut tally = Tally::new();
    let mut clients = clients(config, cluster, &mut tally)?;
    if save.is_some() {
        clients.kube = clients.kube.with_tap();
        clients.metrics = clients.metrics.with_tap();
    }
    let observed = observe(config, cluster, &clients, now, &mut tally);
    let Some(dir) = save else { return observed };
    // What was read is saved even when the plan failed: that is when it is wanted.
    // A body cut short cannot be saved as a list, but the reading's error is the one
    // that explains the run.
    match (observed, save_responses(dir, &clients)) {
        (Ok(plan), saved) => saved.map(|()| plan),
        (Err(reading), saved) => {
            if let Err(saving) = saved {
                log::warn!(error:% = saving; "responses not saved");
            }
            Err(reading)
        }
    }
}

/// Writes `deployment.json`, `pods.json` (every page's items in one list) and
/// `cpu.json` into `dir`. Only response bodies are written; tokens never are.
fn save_responses(dir: &Path, clients: &Clients) -> Result<(), Error> {
    let doing = format!("save responses to {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(&doing, &e))?;
    let kube = clients.kube.tapped();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), &e))
    };
    if let Some(deployment) = kube.first() {
        write("deployment.json", deployment)?;
    }
    // A 410 restart repeats pages: keep each pod once, by uid, the last copy.
    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut by_uid: HashMap<String, usize> = HashMap::new();
    for page in kube.iter().skip(1) {
        let mut page: serde_json::Value =
            serde_json::from_slice(page).map_err(|e| Error::new(&doing, Cause::Malformed(e.to_string())))?;
        let Some(serde_json::Value::Array(list)) = page.get_mut("items").map(serde_json::Value::take) else {
            continue;
        };
        for item in list {
            match by_uid.entry(item["metadata"]["uid"].to_string()) {
                Entry::Occupied(at) => items[*at.get()] = item,
                Entry::Vacant(at) => {
                    at.insert(items.len());
                    items.push(item);
                }
            }
        }
    }
    if kube.len() > 1 {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
        write("pods.json", list.to_string().as_bytes())?;
    }
    if let Some(cpu) = clients.metrics.tapped().first() {
        write("cpu.json", cpu)?;
    }
    log::info!(dir:% = dir.display(); "responses saved; replay with plan --pods/--cpu/--deployment");
    Ok(())
}

fn offline_plan(
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
    plan::decide(Inputs {
        pods,
        samples: &samples,
        rollout: rollout.as_ref(),
        now,
        settings: &config.decision,
        container: if container.is_empty() { "?" } else { &container },
        namespace: &config.namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_scheme_host_and_port() {
        assert_eq!(
            origin("http://vm:8428/api/v1/import/prometheus?extra_label=a"),
            "http://vm:8428"
        );
        assert_eq!(
            origin("https://vmauth.example/select/0/prometheus"),
            "https://vmauth.example"
        );
        assert_eq!(origin("http://vm:8428?x=1"), "http://vm:8428");
        assert_ne!(origin("http://vm:8428/x"), origin("http://pushgateway:9091/x"));
        assert_ne!(origin("http://vm:8428"), origin("https://vm:8428"));
    }
}
