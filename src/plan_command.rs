//! `pod-rebalancer plan`: the decision printed for a person, from saved responses
//! (`--pods`/`--cpu`) or from the read-only half of a live cycle. Never mutates
//! anything; `config::plan` has validated its flags like every other setting.

use crate::config::{Cluster, Config};
use crate::cycle::{self, Clients, Responses};
use crate::error::{Cause, Error};
use crate::outcome::{EXIT_FAILED, EXIT_OK};
use crate::plan::{self, Inputs, Plan};
use crate::{clock, kube, logging, show, victoria};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
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
    /// Saved responses: a pod list, a query answer, optionally a Deployment, and the
    /// instant to judge them at (default: now).
    Saved {
        pods: PathBuf,
        cpu: PathBuf,
        deployment: Option<PathBuf>,
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
            now,
        } => saved_plan(
            config,
            pods,
            cpu,
            deployment.as_deref(),
            now.unwrap_or_else(clock::now_unix),
        ),
        Source::Live { cluster, save } => live_plan(config, cluster, save.as_deref(), clock::now_unix()),
    };
    match result {
        Ok(plan) => print_plan(&plan, config, request.output, request.all),
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// The JSON document of `plan --output json`: the plan with a format version.
#[derive(serde::Serialize)]
struct PlanDocument<'a> {
    version: u32,
    #[serde(flatten)]
    plan: &'a Plan,
}

fn print_plan(plan: &Plan, config: &Config, output: Output, all: bool) -> u8 {
    let verb = format!("would {}", config.mode.verb());
    match output {
        Output::Json => match serde_json::to_string_pretty(&PlanDocument { version: 1, plan }) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("render plan as JSON: {e}");
                return EXIT_FAILED;
            }
        },
        Output::Text => {
            use std::io::IsTerminal;
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            print!("{}", show::text(plan, &verb, show::Style { color, all }));
        }
    }
    EXIT_OK
}

/// The read-only half of a live cycle; with `save`, the responses read are written
/// there so the same decision can be replayed with `--pods/--cpu/--deployment`.
fn live_plan(config: &Config, cluster: &Cluster, save: Option<&Path>, now: i64) -> Result<Plan, Error> {
    let clients = Clients::connect(config, cluster).map_err(|f| f.error)?;
    let mut responses = save.map(|_| Responses::default());
    let observed = cycle::observe(config, cluster, &clients, now, responses.as_mut()).map_err(|f| f.error);
    let (Some(dir), Some(responses)) = (save, responses) else {
        return observed;
    };
    // What was read is saved even when the plan failed: that is when it is wanted.
    // A body cut short cannot be saved as a list, but the reading's error is the one
    // that explains the run.
    match (observed, save_responses(dir, &responses)) {
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
/// `cpu.json` into `dir`, each when it was read. Only response bodies are written;
/// tokens never are.
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
    if !responses.pod_pages.is_empty() {
        let items = pod_items(&responses.pod_pages).map_err(|why| Error::new(&doing, Cause::Malformed(why)))?;
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
        write("pods.json", list.to_string().as_bytes())?;
    }
    if !responses.cpu.is_empty() {
        write("cpu.json", &responses.cpu)?;
    }
    log::info!(dir:% = dir.display(); "responses saved; replay with plan --pods/--cpu/--deployment");
    Ok(())
}

/// The items of every page, each pod once: a 410 restart repeats pages, and the last
/// copy of a pod (by uid) is the one kept. A page without an `items` list adds nothing.
fn pod_items(pages: &[Vec<u8>]) -> Result<Vec<serde_json::Value>, String> {
    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut by_uid: HashMap<String, usize> = HashMap::new();
    for page in pages {
        let mut page: serde_json::Value = serde_json::from_slice(page).map_err(|e| e.to_string())?;
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
    Ok(items)
}

fn read_file(what: &str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), &e))
}

/// The decision on saved responses.
fn saved_plan(
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
    // Without a Deployment's name (neither DEPLOYMENT_NAME nor --deployment), every
    // pod of the file counts: there is no owner to check against.
    let deployment = config
        .deployment
        .clone()
        .or_else(|| rollout.as_ref().map(|r| r.name.clone()));
    let container = config.container.clone().or_else(|| deployment.clone());
    let select = kube::Select {
        deployment: deployment.as_deref(),
        container: container.as_deref(),
    };
    let page = kube::parse_pod_list(&read_file("pods", pods_path)?, select).map_err(|e| {
        Error::new(
            format!("parse pods {}", pods_path.display()),
            Cause::Malformed(format!("expected a PodList: {e}")),
        )
    })?;
    if let Some(why) = kube::listed_twice(&page.pods) {
        return Err(Error::new(
            format!("parse pods {}", pods_path.display()),
            Cause::Malformed(why),
        ));
    }
    let samples = victoria::parse_answer(&read_file("CPU answer", cpu_path)?).map_err(|why| {
        Error::new(
            format!("parse CPU answer {}", cpu_path.display()),
            Cause::Malformed(why),
        )
    })?;
    plan::decide(Inputs {
        pods: page.pods,
        samples: &samples,
        rollout: rollout.as_ref(),
        now,
        settings: &config.decision,
        container: container.as_deref().unwrap_or("?"),
        namespace: &config.namespace,
        ignored: page.ignored,
        selector: None,
    })
    .map_err(|why| Error::refused(format!("decide on {}", pods_path.display()), why.to_string()))
}
