//! `pod-rebalancer plan`: the decision printed for a person, from saved responses
//! (`--pods`/`--cpu`, and `--state` for the memory) or from the read-only half of a
//! live cycle. Never mutates anything; `config::plan` has validated its flags like
//! every other setting.

use crate::config::{Cluster, Config};
use crate::cycle::{self, Clients, Responses};
use crate::error::{Cause, Error};
use crate::memory::{self, Memory};
use crate::outcome::{EXIT_FAILED, EXIT_OK};
use crate::plan::{self, Inputs, Plan};
use crate::{clock, kube, logging, show, victoria};
use std::path::{Path, PathBuf};

/// A validated `plan` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub config: Config,
    pub source: Source,
    pub output: Output,
    /// Show every pod, however many.
    pub all: bool,
}

/// Where the plan's inputs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Saved responses: a pod list, a query answer, optionally a Deployment and a
    /// state ConfigMap, and the instant to judge them at (default: now).
    Saved {
        pods: PathBuf,
        cpu: PathBuf,
        deployment: Option<PathBuf>,
        state: Option<PathBuf>,
        /// A saved answer of `PARTITION_QUERY` (SPEC §12).
        partitions: Option<PathBuf>,
        now: Option<i64>,
    },
    /// The cluster, read as a live run reads it; with `save`, the responses read are
    /// written into that directory.
    Live { cluster: Cluster, save: Option<PathBuf> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// Runs the command; the exit code.
pub fn run(request: &Request) -> u8 {
    let config = &request.config;
    logging::init(config.log_level, config.log_format);
    let result = match &request.source {
        Source::Saved {
            pods,
            cpu,
            deployment,
            state,
            partitions,
            now,
        } => {
            let files = Saved {
                pods,
                cpu,
                deployment: deployment.as_deref(),
                state: state.as_deref(),
                partitions: partitions.as_deref(),
            };
            saved_plan(config, files, now.unwrap_or_else(clock::now_unix)).map(|s| Plans::One(Box::new(s)))
        }
        Source::Live { cluster, save } => live_plan(config, cluster, save.as_deref(), clock::now_unix()),
    };
    match result {
        Ok(Plans::One(shown)) => print_plan(&shown, config, request.output, request.all),
        Ok(Plans::Fleet(targets)) => print_fleet(&targets, config, request.output, request.all),
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// What a plan command shows: one plan, or in fleet mode each target's.
enum Plans {
    One(Box<Shown>),
    /// By target name: its plan, or why it has none.
    Fleet(Vec<(String, Result<Shown, Error>)>),
}

/// A plan and the memory that judged it (when there is one).
struct Shown {
    plan: Plan,
    memory: Option<memory::View>,
}

/// The JSON document of `plan --output json`: the plan with a format version, and the
/// memory when there is one.
#[derive(serde::Serialize)]
struct PlanDocument<'a> {
    version: u32,
    #[serde(flatten)]
    plan: &'a Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<&'a memory::View>,
}

/// Fleet mode: one line per target (name, pods, spread, threshold, decision), and with
/// `--all` each target's full plan; `--output json` is the list of plans.
fn print_fleet(targets: &[(String, Result<Shown, Error>)], config: &Config, output: Output, all: bool) -> u8 {
    let failed = targets.iter().any(|(_, t)| t.is_err());
    match output {
        Output::Json => {
            let documents: Vec<serde_json::Value> = targets
                .iter()
                .map(|(name, shown)| match shown {
                    Ok(shown) => {
                        let mut document = serde_json::to_value(PlanDocument {
                            version: 1,
                            plan: &shown.plan,
                            memory: shown.memory.as_ref(),
                        })
                        .unwrap_or_default();
                        document["deployment"] = serde_json::Value::String(name.clone());
                        document
                    }
                    Err(e) => serde_json::json!({"version": 1, "deployment": name, "error": e.to_string()}),
                })
                .collect();
            match serde_json::to_string_pretty(&documents) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("render plans as JSON: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        Output::Text => {
            let width = targets.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(10);
            println!(
                "{:width$}  {:>5}  {:>6}  {:>9}  decision",
                "DEPLOYMENT", "PODS", "SPREAD", "THRESHOLD"
            );
            for (name, shown) in targets {
                match shown {
                    Ok(Shown { plan, .. }) => {
                        let spread = plan.stats.map_or("-".to_string(), |s| format!("{:.2}", s.spread));
                        let decision = match &plan.decision {
                            plan::Decision::Remove { pods } => format!("remove {}", pods.len()),
                            plan::Decision::Hold(h) => h.outcome().label().to_string(),
                        };
                        println!(
                            "{name:width$}  {:>5}  {spread:>6}  {:>9.2}  {decision}",
                            plan.pods.len(),
                            plan.threshold
                        );
                    }
                    Err(e) => println!("{name:width$}  {:>5}  {:>6}  {:>9}  error: {e}", "-", "-", "-"),
                }
            }
            if all {
                for (name, shown) in targets {
                    if let Ok(shown) = shown {
                        println!("\n== {name}");
                        print_plan(shown, config, Output::Text, true);
                    }
                }
            }
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}

fn print_plan(shown: &Shown, config: &Config, output: Output, all: bool) -> u8 {
    let verb = format!("would {}", config.mode.verb());
    let plan = &shown.plan;
    match output {
        Output::Json => {
            let document = PlanDocument {
                version: 1,
                plan,
                memory: shown.memory.as_ref(),
            };
            match serde_json::to_string_pretty(&document) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("render plan as JSON: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        Output::Text => {
            use std::io::IsTerminal;
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            print!("{}", show::text(plan, &verb, show::Style { color, all }));
            if let Some(view) = &shown.memory {
                print!("{}", show::memory(view));
            }
        }
    }
    EXIT_OK
}

/// The read-only half of a live cycle, the memory included; with `save`, the responses
/// read are written there so the same decision can be replayed with `--pods/--cpu/
/// --deployment/--state/--partitions`.
fn live_plan(config: &Config, cluster: &Cluster, save: Option<&Path>, now: i64) -> Result<Plans, Error> {
    let clients = Clients::connect(config, cluster).map_err(|f| f.error)?;
    let mut responses = save.map(|_| Responses::default());
    let observed = live_read(config, cluster, &clients, now, responses.as_mut());
    let (Some(dir), Some(responses)) = (save, responses) else {
        return observed;
    };
    // What was read is saved even when the plan failed: that is when it is wanted.
    // A body cut short cannot be saved as a list, but the reading's error is the one
    // that explains the run.
    match (observed, save_responses(dir, &responses)) {
        (Ok(shown), saved) => saved.map(|()| shown),
        (Err(reading), saved) => {
            if let Err(saving) = saved {
                log::warn!(error:% = saving; "responses not saved");
            }
            Err(reading)
        }
    }
}

/// Reads the memory, the cluster and the metrics, and judges, as a run would; writes
/// nothing.
fn live_read(
    config: &Config,
    cluster: &Cluster,
    clients: &Clients,
    now: i64,
    keep: Option<&mut Responses>,
) -> Result<Plans, Error> {
    let cycle = cycle::observe(clients, config, cluster, now, keep);
    if let Some(failure) = cycle.shared {
        return Err(failure.error);
    }
    let shown = |t: cycle::Target| -> Result<Shown, Error> {
        if let Some(Err(failure)) = t.ended {
            return Err(failure.error);
        }
        let plan = t.plan.ok_or_else(|| Error::refused("plan", "no plan"))?;
        Ok(Shown {
            plan,
            memory: t.judgement.map(|j| memory::View::of(&j, &config.memory)),
        })
    };
    if cycle.fleet {
        return Ok(Plans::Fleet(
            cycle.targets.into_iter().map(|t| (t.name.clone(), shown(t))).collect(),
        ));
    }
    let target = cycle
        .targets
        .into_iter()
        .next()
        .ok_or_else(|| Error::refused("plan", "no target"))?;
    shown(target).map(|s| Plans::One(Box::new(s)))
}

fn shown(plan: Plan, memory: Option<&Memory>, fingerprint: &str, config: &Config) -> Shown {
    let (plan, judgement) = cycle::judged(plan, memory, fingerprint, config);
    Shown {
        plan,
        memory: judgement.map(|j| memory::View::of(&j, &config.memory)),
    }
}

/// Writes `deployment.json`, `pods.json` (every page's items in one list),
/// `cpu.json`, `state.json` and `partitions.json` into `dir`, each when it was read.
/// Only response bodies are written; tokens never are.
fn save_responses(dir: &Path, responses: &Responses) -> Result<(), Error> {
    let doing = format!("save responses to {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(&doing, &e))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), &e))
    };
    if !responses.deployment.is_empty() {
        write("deployment.json", &responses.deployment)?;
    }
    if !responses.deployment_pages.is_empty() {
        let items = list_items(&responses.deployment_pages).map_err(|why| Error::new(&doing, Cause::Malformed(why)))?;
        let list = serde_json::json!({"apiVersion": "apps/v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
        write("deployments.json", list.to_string().as_bytes())?;
    }
    if !responses.pod_pages.is_empty() {
        let items = list_items(&responses.pod_pages).map_err(|why| Error::new(&doing, Cause::Malformed(why)))?;
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
        write("pods.json", list.to_string().as_bytes())?;
    }
    if !responses.cpu.is_empty() {
        write("cpu.json", &responses.cpu)?;
    }
    if !responses.state.is_empty() {
        write("state.json", &responses.state)?;
    }
    if !responses.partitions.is_empty() {
        write("partitions.json", &responses.partitions)?;
    }
    log::info!(dir:% = dir.display(); "responses saved; replay with plan --pods/--cpu/--deployment/--state/--partitions");
    Ok(())
}

/// The items of every page, in order: the list as the run read it (a 410 restart
/// already forgot the pages before it), so a replay sees what the run saw, a pod
/// listed twice included. A page without an `items` list adds nothing.
fn list_items(pages: &[Vec<u8>]) -> Result<Vec<serde_json::Value>, String> {
    let mut items: Vec<serde_json::Value> = Vec::new();
    for page in pages {
        let mut page: serde_json::Value = serde_json::from_slice(page).map_err(|e| e.to_string())?;
        if let Some(serde_json::Value::Array(list)) = page.get_mut("items").map(serde_json::Value::take) {
            items.extend(list);
        }
    }
    Ok(items)
}

fn read_file(what: &str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), &e))
}

/// The saved responses a plan replays.
struct Saved<'a> {
    pods: &'a Path,
    cpu: &'a Path,
    deployment: Option<&'a Path>,
    state: Option<&'a Path>,
    partitions: Option<&'a Path>,
}

/// The decision on saved responses, judged by the saved memory when there is one.
fn saved_plan(config: &Config, files: Saved, now: i64) -> Result<Shown, Error> {
    let rollout = match files.deployment {
        Some(path) => Some(kube::parse_deployment(&read_file("deployment", path)?).map_err(|e| {
            Error::new(
                format!("parse deployment {}", path.display()),
                Cause::Malformed(format!("expected a Deployment: {e}")),
            )
        })?),
        None => None,
    };
    // Without a Deployment's name (neither DEPLOYMENT_NAME nor --deployment), every
    // pod of the file counts: there is no owner to check against.
    let deployment = config
        .deployment
        .clone()
        .or_else(|| rollout.as_ref().map(|r| r.name.clone()));
    let memory = files
        .state
        .map(|path| read_memory(path, deployment.as_deref()))
        .transpose()?;
    let container = config.container.clone().or_else(|| deployment.clone());
    let read = read_saved(config, &files, deployment.as_deref(), container.as_deref())?;
    let container = container.as_deref().unwrap_or("?");
    let paused = match &rollout {
        Some(r) => crate::config::paused(r)
            .map_err(|why| Error::refused(format!("read deployment {}", r.name), why))?
            .then(|| Plan::paused(now, &config.namespace, container, &config.decision, &r.name)),
        None => None,
    };
    let plan = match paused {
        Some(plan) => plan,
        None => plan::decide(Inputs {
            pods: read.page.pods,
            samples: &read.samples,
            rollout: rollout.as_ref(),
            now,
            settings: &config.decision,
            container,
            namespace: &config.namespace,
            ignored: read.page.ignored,
            selector: None,
            leased: memory
                .as_ref()
                .and_then(|m| memory::in_progress(m, now, &config.memory)),
            partitions: read.partitions,
        })
        .map_err(|why| Error::refused(format!("decide on {}", files.pods.display()), why.to_string()))?,
    };
    // Without the Deployment there is no template fingerprint: the memory's own is
    // taken, so no rollout is assumed.
    let fingerprint = rollout
        .map(|r| r.fingerprint)
        .or_else(|| memory.as_ref().and_then(|m| m.last_fingerprint().map(str::to_string)))
        .unwrap_or_default();
    Ok(shown(plan, memory.as_ref(), &fingerprint, config))
}

/// What the saved pod list, CPU answer and partition answer hold for `deployment`'s
/// pods (every pod of the list without a Deployment).
struct SavedReads {
    page: kube::Page,
    samples: plan::Samples,
    partitions: Option<crate::partition::Answer>,
}

fn read_saved(
    config: &Config,
    files: &Saved,
    deployment: Option<&str>,
    container: Option<&str>,
) -> Result<SavedReads, Error> {
    let owner = deployment.zip(container);
    let owners: Vec<(&str, &str)> = owner.into_iter().collect();
    let route = match owner {
        Some(_) => kube::Route::Owned(&owners),
        None => kube::Route::Every { container },
    };
    let malformed = |what: &str, path: &Path, why: String| {
        Error::new(format!("parse {what} {}", path.display()), Cause::Malformed(why))
    };
    let page = kube::parse_pod_list(&read_file("pods", files.pods)?, route)
        .map_err(|e| malformed("pods", files.pods, format!("expected a PodList: {e}")))?;
    if let Some(why) = kube::listed_twice(page.pods.iter()) {
        return Err(malformed("pods", files.pods, why));
    }
    let wanted = victoria::Wanted::pods(page.pods.iter().map(|p| (p.name.as_str(), None)));
    let samples = victoria::parse_answer_for(&read_file("CPU answer", files.cpu)?, &wanted)
        .map_err(|why| malformed("CPU answer", files.cpu, why))?;
    let partitions = match files.partitions {
        Some(path) => {
            let matched = page.pods.iter().map(|p| p.name.as_str());
            let text = read_file("partition answer", path)?;
            let answer = victoria::parse_partitions(&text, &config.partition_labels, matched);
            Some(answer.map_err(|why| malformed("partition answer", path, why))?)
        }
        None => None,
    };
    Ok(SavedReads {
        page,
        samples,
        partitions,
    })
}

/// A saved state ConfigMap's memory.
fn read_memory(path: &Path, deployment: Option<&str>) -> Result<Memory, Error> {
    let doing = format!("read state ConfigMap {}", path.display());
    let object: serde_json::Value = serde_json::from_str(&read_file("state ConfigMap", path)?)
        .map_err(|e| Error::new(&doing, Cause::Malformed(format!("expected a ConfigMap as JSON: {e}"))))?;
    let state = kube::StateObject::of(object).map_err(|why| Error::new(&doing, Cause::Malformed(why)))?;
    memory::parse(state.document.as_deref(), deployment).map_err(|why| Error::new(&doing, Cause::Malformed(why)))
}
