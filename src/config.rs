//! Raw settings → a validated `Config`; every problem is reported at once.
//!
//! Stage two of the command line. Nothing runs on a half-valid configuration: a run
//! either gets a complete `Config` or exits 2 with one line per problem, before any
//! request. The names that end up in a URL path or in the PromQL query are checked
//! here to be DNS-1123 labels, so nothing can be injected through them.

use crate::cli::{PlanArgs, Raw, SETTINGS, flag_name};
use crate::kube::{self, EvictionMode};
use crate::logging;
use crate::memory;
use crate::plan;
use crate::plan_command::{self, Output, Source};
use crate::victoria;
use std::path::PathBuf;
use std::time::Duration;

/// Everything but the cluster: what `plan` on saved files needs too.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub prometheus: victoria::Endpoint,
    pub namespace: String,
    /// `KUBE_LABEL_SELECTOR`; `None` (fleet mode, unset): every pod of the namespace.
    pub selector: Option<String>,
    /// `DEPLOYMENT_NAME`: single mode's one target.
    pub deployment: Option<String>,
    /// `TARGET_SELECTOR`: fleet mode's targets, a label selector on Deployments.
    pub target_selector: Option<String>,
    /// `MAX_REMOVALS_PER_RUN`: removals across all targets of one fleet run.
    pub max_removals: usize,
    /// `QUERY_CONTAINER`; when unset, the Deployment's name is the container's.
    pub container: Option<String>,
    /// `QUERY_MATCHERS`: extra literal label matchers of the query, in order.
    pub matchers: Vec<(String, String)>,
    /// `PARTITION_QUERY`, sent as configured; `None`: no partition signal (SPEC §12).
    pub partition_query: Option<String>,
    /// `PARTITION_LABELS`: the labels that name a partition in its answer (also in a
    /// saved one, `plan --partitions`), in order.
    pub partition_labels: Vec<String>,
    pub decision: plan::Settings,
    /// `STATE_CONFIGMAP`: the ConfigMap that holds the memory; `None`: stateless.
    pub state: Option<String>,
    pub memory: memory::Settings,
    pub dry_run: bool,
    pub log_level: log::LevelFilter,
    pub log_format: logging::Format,
    pub mode: EvictionMode,
    pub metrics_file: Option<PathBuf>,
    pub push_url: Option<String>,
    /// `METRICS_LABELS`: constant labels on every metric sample, in order.
    pub metrics_labels: Vec<(String, String)>,
}

/// What a live run needs beyond `Config`: where the cluster is and which Deployments.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub scope: Scope,
    pub kube: kube::Endpoint,
}

/// Which Deployments a run serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Single mode: `DEPLOYMENT_NAME` (its measured container: `target_settings`).
    One { deployment: String },
    /// Fleet mode (SPEC §13): every Deployment matching `TARGET_SELECTOR`.
    Fleet { selector: String },
}

/// What one target runs with: the configuration, and in fleet mode its Deployment's
/// annotations (SPEC §13 "Per-target settings").
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    pub container: String,
    pub decision: plan::Settings,
    pub dry_run: bool,
}

/// The annotations a target may carry in fleet mode, beside `plan::PAUSED`.
pub const CONTAINER_ANNOTATION: &str = "pod-rebalancer.io/container";
pub const THRESHOLD_ANNOTATION: &str = "pod-rebalancer.io/threshold";
pub const MIN_PODS_ANNOTATION: &str = "pod-rebalancer.io/min-pods";
pub const DRY_RUN_ANNOTATION: &str = "pod-rebalancer.io/dry-run";

/// The settings of the target `rollout`: the configuration's, overridden in fleet mode
/// by its annotations, each validated as §3 validates the setting it overrides. A
/// global `DRY_RUN=true` cannot be undone by an annotation. `Err` names the annotation,
/// its value and what was expected.
pub fn target_settings(config: &Config, rollout: &plan::Rollout, fleet: bool) -> Result<TargetSettings, String> {
    let mut settings = TargetSettings {
        container: config.container.clone().unwrap_or_else(|| rollout.name.clone()),
        decision: config.decision.clone(),
        dry_run: config.dry_run,
    };
    if !fleet {
        return Ok(settings);
    }
    if let Some(container) = annotation(rollout, CONTAINER_ANNOTATION, DNS_LABEL, dns_label)? {
        settings.container = container;
    }
    if let Some(t) = annotation(rollout, THRESHOLD_ANNOTATION, THRESHOLD, threshold)? {
        settings.decision.threshold = t;
    }
    if let Some(n) = annotation(rollout, MIN_PODS_ANNOTATION, MIN_PODS, min_pods)? {
        settings.decision.min_pods = n;
    }
    if let Some(dry_run) = annotation(rollout, DRY_RUN_ANNOTATION, BOOLEAN, boolean)? {
        settings.dry_run |= dry_run;
    }
    Ok(settings)
}

/// The `pod-rebalancer.io/paused` annotation (SPEC §6.1; single mode reads it too):
/// `Ok(true)` pauses the rebalancer for this Deployment.
pub fn paused(rollout: &plan::Rollout) -> Result<bool, String> {
    Ok(annotation(rollout, plan::PAUSED, BOOLEAN, boolean)?.unwrap_or(false))
}

/// Annotation `key` of `rollout` read by `parse`, `None` when it is absent or empty
/// (after trimming). `Err` names the Deployment, the annotation, its value and what
/// was `expected`.
fn annotation<T>(
    rollout: &plan::Rollout,
    key: &str,
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, String> {
    let Some(v) = rollout.annotations.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    parse(v).map(Some).ok_or_else(|| {
        format!(
            "deployment {}: annotation {key}={v:?}: expected {expected}",
            rollout.name
        )
    })
}

const LOG_LEVELS: &[(&str, log::LevelFilter)] = &[
    ("error", log::LevelFilter::Error),
    ("warn", log::LevelFilter::Warn),
    ("info", log::LevelFilter::Info),
    ("debug", log::LevelFilter::Debug),
    ("trace", log::LevelFilter::Trace),
];

const THRESHOLD: &str = "a finite number > 0 such as 0.3";
const MIN_PODS: &str = "an integer >= 1";
const BOOLEAN: &str = "true, false, 1, 0, yes or no";

/// `CPU_VARIANCE_THRESHOLD`: finite and > 0.
fn threshold(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|t| t.is_finite() && *t > 0.0)
}

/// `MIN_PODS_REQUIRED`: an integer >= 1.
fn min_pods(v: &str) -> Option<usize> {
    v.trim().parse::<usize>().ok().filter(|n| *n >= 1)
}

/// Collects problems instead of stopping at the first one.
struct Checker<'a> {
    raw: &'a Raw,
    problems: Vec<String>,
}

impl<'a> Checker<'a> {
    fn value(&self, var: &str) -> Option<&'a str> {
        self.raw
            .get(var)
            .or_else(|| SETTINGS.iter().find(|s| s.var == var).and_then(|s| s.default))
    }

    fn problem(&mut self, var: &str, expected: &str, got: &str) {
        self.problems.push(format!(
            "{var} (--{}): expected {expected}, got {got:?}",
            flag_name(var)
        ));
    }

    /// An optional setting: `Some(None)` when it is unset, `None` when it is invalid.
    fn optional<T>(&mut self, var: &str, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
        match self.value(var) {
            Some(_) => self.parsed(var, expected, parse).map(Some),
            None => Some(None),
        }
    }

    /// One of `words`, in any case; the problem lists them ("error, warn or info").
    fn word<T: Copy>(&mut self, var: &str, words: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let expected = match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.parsed(var, &expected, |v| {
            let v = v.to_ascii_lowercase();
            words.iter().find(|(w, _)| *w == v).map(|(_, t)| *t)
        })
    }

    fn parsed<T>(&mut self, var: &str, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        let v = self.value(var)?;
        let parsed = parse(v);
        if parsed.is_none() {
            self.problem(var, expected, v);
        }
        parsed
    }
}

/// The longest window (a leap year): the decision counts ages in i64 seconds, and a
/// window that wrapped there would be no gate at all.
const MAX_WINDOW_SECS: u64 = 366 * 24 * 3600;

const DNS_SUBDOMAIN: &str = "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)";

const DNS_LABEL: &str =
    "a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric, at most 63 characters)";

/// Validates everything `plan` on saved files uses; `DEPLOYMENT_NAME` is optional there.
pub fn offline(raw: &Raw) -> Result<Config, Vec<String>> {
    let mut c = Checker {
        raw,
        problems: Vec::new(),
    };
    let config = common(&mut c);
    match (config, c.problems.is_empty()) {
        (Some(config), true) => Ok(config),
        _ => Err(c.problems),
    }
}

/// Validates everything a live run uses.
pub fn live(raw: &Raw) -> Result<(Config, Cluster), Vec<String>> {
    let mut c = Checker {
        raw,
        problems: Vec::new(),
    };
    let config = common(&mut c);
    match (c.value("DEPLOYMENT_NAME"), c.value("TARGET_SELECTOR")) {
        (None, None) => c.problems.push(format!(
            "DEPLOYMENT_NAME (--deployment-name): required unless TARGET_SELECTOR names the targets (fleet mode), expected {DNS_LABEL}"
        )),
        (Some(_), Some(_)) => c.problems.push(
            "DEPLOYMENT_NAME and TARGET_SELECTOR: set exactly one (one Deployment, or every Deployment the selector matches)"
                .into(),
        ),
        _ => {}
    }
    let kube_url = match c.value("KUBE_API_URL") {
        Some(_) => c.parsed("KUBE_API_URL", "an http(s) URL without credentials", http_url),
        None => match (&raw.service_host, &raw.service_port) {
            (Some(host), port) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let port = port.as_deref().unwrap_or("443");
                let url = format!("https://{host}:{port}");
                let parsed = http_url(&url);
                if parsed.is_none() {
                    c.problems.push(format!(
                        "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT: expected a host and a port, got {url:?}"
                    ));
                }
                parsed
            }
            (None, _) => {
                c.problems
                    .push("KUBE_API_URL (--kube-api-url): not running in a cluster: set KUBE_API_URL".into());
                None
            }
        },
    };
    let sa_dir = c.value("KUBE_SERVICE_ACCOUNT_DIR").map(PathBuf::from);
    let kube_timeout = c.parsed("KUBE_TIMEOUT", "a duration > 0 such as 10s", positive_duration);
    let scope = config.as_ref().and_then(|c| match (&c.deployment, &c.target_selector) {
        (Some(deployment), None) => Some(Scope::One {
            deployment: deployment.clone(),
        }),
        (None, Some(selector)) => Some(Scope::Fleet {
            selector: selector.clone(),
        }),
        _ => None,
    });
    match (config, scope, kube_url, sa_dir, kube_timeout, c.problems.is_empty()) {
        (Some(config), Some(scope), Some(url), Some(service_account_dir), Some(timeout), true) => {
            let cluster = Cluster {
                scope,
                kube: kube::Endpoint {
                    url,
                    service_account_dir,
                    timeout,
                },
            };
            Ok((config, cluster))
        }
        _ => Err(c.problems),
    }
}

/// Validates `pod-rebalancer plan`: its own flags, then what a plan on saved files or
/// a live plan needs; every problem at once, the flags' first.
pub fn plan(raw: &Raw, args: &PlanArgs) -> Result<plan_command::Request, Vec<String>> {
    let mut problems = Vec::new();
    let output = args.output.as_deref().unwrap_or("text").to_ascii_lowercase();
    let output = match output.as_str() {
        "text" => Some(Output::Text),
        "json" => Some(Output::Json),
        _ => {
            problems.push(format!("--output: expected text or json, got {output:?}"));
            None
        }
    };
    let offline = args.pods.is_some() || args.cpu.is_some();
    if offline && (args.pods.is_none() || args.cpu.is_none()) {
        problems.push("plan: --pods and --cpu go together (or neither, for a live plan)".to_string());
    }
    if offline && args.save.is_some() {
        problems.push("plan: --save records a live plan; it does not go with --pods/--cpu".to_string());
    }
    if !offline
        && (args.deployment.is_some() || args.now.is_some() || args.state.is_some() || args.partitions.is_some())
    {
        problems.push(
            "plan: --deployment, --state, --partitions and --now replay saved responses; they need --pods and --cpu"
                .to_string(),
        );
    }
    let now = args.now.as_deref().and_then(|text| {
        let now = crate::clock::parse_rfc3339(text);
        if now.is_none() {
            problems.push(format!(
                "--now: expected an RFC 3339 time such as 2026-01-01T00:00:00Z, got {text:?}"
            ));
        }
        now
    });
    let configs = if offline {
        self::offline(raw).map(|c| (c, None))
    } else {
        live(raw).map(|(c, k)| (c, Some(k)))
    };
    let (config, cluster) = match configs {
        Ok(ok) if problems.is_empty() => ok,
        Ok(_) => return Err(problems),
        Err(more) => {
            problems.extend(more);
            return Err(problems);
        }
    };
    let source = match (cluster, &args.pods, &args.cpu) {
        (Some(cluster), _, _) => Source::Live {
            cluster,
            save: args.save.clone(),
        },
        (None, Some(pods), Some(cpu)) => Source::Saved {
            pods: pods.clone(),
            cpu: cpu.clone(),
            deployment: args.deployment.clone(),
            state: args.state.clone(),
            partitions: args.partitions.clone(),
            now,
        },
        (None, _, _) => return Err(vec!["plan: expected --pods and --cpu, or a live configuration".into()]),
    };
    Ok(plan_command::Request {
        config,
        source,
        output: output.unwrap_or(Output::Text),
        all: args.all,
    })
}

/// Every setting but the cluster's; `None` when one of them is invalid (each problem
/// is in `c`). Every setting is read before any `?`, so all problems are reported.
fn common(c: &mut Checker) -> Option<Config> {
    let prometheus = prometheus(c);
    let namespace = c.parsed("KUBE_NAMESPACE", DNS_LABEL, dns_label);
    let target_selector = c.optional(
        "TARGET_SELECTOR",
        "a non-empty label selector on Deployments such as pod-rebalancer.io/enabled=true",
        label_selector,
    );
    // Fleet mode lists every pod of the namespace unless KUBE_LABEL_SELECTOR narrows it.
    let fleet = c.raw.get("TARGET_SELECTOR").is_some();
    let selector = if fleet && c.raw.get("KUBE_LABEL_SELECTOR").is_none() {
        Some(None)
    } else {
        c.parsed(
            "KUBE_LABEL_SELECTOR",
            "a non-empty label selector such as app=consumer",
            label_selector,
        )
        .map(Some)
    };
    let deployment = c.optional("DEPLOYMENT_NAME", DNS_LABEL, dns_label);
    let max_removals = c.parsed("MAX_REMOVALS_PER_RUN", MIN_PODS, min_pods);
    let container = c.optional("QUERY_CONTAINER", DNS_LABEL, dns_label);
    let matchers = c.optional("QUERY_MATCHERS", MATCHERS, query_matchers);
    let partition_query = c.optional("PARTITION_QUERY", "a PromQL instant query (not only spaces)", |v| {
        (!v.trim().is_empty()).then(|| v.to_string())
    });
    let partition_labels = c.parsed("PARTITION_LABELS", PARTITION_LABELS, partition_labels);
    let decision = decision(c);
    let state = c.optional("STATE_CONFIGMAP", DNS_SUBDOMAIN, dns_subdomain);
    let memory = memory_settings(c);
    let dry_run = c.parsed("DRY_RUN", BOOLEAN, boolean);
    let log_level = c.word("LOG_LEVEL", LOG_LEVELS);
    let log_format = c.word(
        "LOG_FORMAT",
        &[("text", logging::Format::Text), ("json", logging::Format::Json)],
    );
    let mode = c.word(
        "EVICTION_MODE",
        &[("evict", EvictionMode::Evict), ("delete", EvictionMode::Delete)],
    );
    let metrics_file = c.value("METRICS_FILE").map(PathBuf::from);
    let metrics_labels = c.optional("METRICS_LABELS", METRICS_LABELS, metrics_labels);
    let push_url = c.optional(
        "METRICS_PUSH_URL",
        "an http(s) URL without credentials, optionally with a query such as ?extra_label=job=pod-rebalancer",
        push_url,
    );
    Some(Config {
        prometheus: prometheus?,
        namespace: namespace?,
        selector: selector?,
        deployment: deployment?,
        target_selector: target_selector?,
        max_removals: max_removals?,
        container: container?,
        matchers: matchers?.unwrap_or_default(),
        memory: memory::Settings {
            lease_secs: decision.as_ref()?.stabilization_secs.max(memory::MIN_LEASE_SECS),
            ..memory?
        },
        partition_query: partition_query?,
        partition_labels: partition_labels?,
        decision: decision?,
        state: state?,
        dry_run: dry_run?,
        log_level: log_level?,
        log_format: log_format?,
        mode: mode?,
        metrics_file,
        push_url: push_url?,
        metrics_labels: metrics_labels?.unwrap_or_default(),
    })
}

fn prometheus(c: &mut Checker) -> Option<victoria::Endpoint> {
    let url = c.parsed("PROMETHEUS_ENDPOINT", "an http(s) URL without credentials", http_url);
    let timeout = c.parsed("PROMETHEUS_TIMEOUT", "a duration > 0 such as 30s", positive_duration);
    Some(victoria::Endpoint {
        url: url?,
        timeout: timeout?,
        token_file: c.value("PROMETHEUS_BEARER_TOKEN_FILE").map(PathBuf::from),
        ca_file: c.value("PROMETHEUS_CA_FILE").map(PathBuf::from),
    })
}

fn decision(c: &mut Checker) -> Option<plan::Settings> {
    let window = c.parsed(
        "METRICS_TIME_WINDOW",
        "a duration > 0 in whole seconds, at most 8784h, such as 5m",
        |v| {
            let d = positive_duration(v)?;
            (d.subsec_nanos() == 0 && d.as_secs() <= MAX_WINDOW_SECS).then_some(d.as_secs())
        },
    );
    let threshold = c.parsed("CPU_VARIANCE_THRESHOLD", THRESHOLD, threshold);
    let min_pods = c.parsed("MIN_PODS_REQUIRED", MIN_PODS, min_pods);
    let stabilization = c.parsed(
        "STABILIZATION_WINDOW",
        "a duration >= 0, at most 8784h, such as 10m",
        |v| {
            parse_duration(v)
                .and_then(|d| d.as_secs().checked_add(u64::from(d.subsec_nanos() > 0)))
                .filter(|s| *s <= MAX_WINDOW_SECS)
        },
    );
    Some(plan::Settings {
        window_secs: window?,
        threshold: threshold?,
        min_pods: min_pods?,
        stabilization_secs: stabilization?,
    })
}

const MATCHERS: &str = "name=\"value\" pairs separated by commas, such as cluster=\"prod-eu-1\" (label names [a-zA-Z_][a-zA-Z0-9_]*, not namespace, container, pod or __…; values without '\"', '\\' or line breaks; each name once)";

/// `QUERY_MATCHERS`: `name="value"` pairs separated by commas, each a literal `=`
/// matcher. The names the query sets itself (`namespace`, `container`, `pod`) and the
/// reserved `__…` names are refused, as is anything that is not a plain quoted value,
/// so no setting can widen the query or change the metric it reads.
pub fn query_matchers(v: &str) -> Option<Vec<(String, String)>> {
    label_pairs(v, &["namespace", "container", "pod"])
}

const METRICS_LABELS: &str = "name=\"value\" pairs separated by commas, such as cluster=\"prod-eu-1\" (label names [a-zA-Z_][a-zA-Z0-9_]*, not __… nor a label the metrics use: namespace, deployment, status, type, reason, outcome, stage, version, dry_run, eviction_mode, container, window, threshold, min_pods, max_ineffective_actions; values without '\"', '\\' or line breaks; each name once)";

/// `METRICS_LABELS`: constant labels added to every sample, with the syntax of
/// `QUERY_MATCHERS`; a name the metrics already use is refused, so no sample can carry
/// a label twice.
pub fn metrics_labels(v: &str) -> Option<Vec<(String, String)>> {
    label_pairs(
        v,
        &[
            "namespace",
            "deployment",
            "status",
            "type",
            "reason",
            "outcome",
            "stage",
            "version",
            "dry_run",
            "eviction_mode",
            "container",
            "window",
            "threshold",
            "min_pods",
            "max_ineffective_actions",
        ],
    )
}

/// `name="value"` pairs separated by commas; names `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// `__…`, not one of `refused`, each once; values without `"`, `\` or line breaks.
fn label_pairs(v: &str, refused: &[&str]) -> Option<Vec<(String, String)>> {
    let mut matchers: Vec<(String, String)> = Vec::new();
    let mut rest = v.trim();
    loop {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        let mut chars = name.chars();
        let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__")
            && !refused.contains(&name)
            && !matchers.iter().any(|(n, _)| n == name);
        let (value, after) = after.trim_start().strip_prefix('"')?.split_once('"')?;
        if !name_ok || value.contains(['\\', '\n', '\r']) {
            return None;
        }
        matchers.push((name.to_string(), value.to_string()));
        rest = after.trim_start();
        if rest.is_empty() {
            return Some(matchers);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

const PARTITION_LABELS: &str =
    "one or more distinct label names [a-zA-Z_][a-zA-Z0-9_]* separated by commas, not pod, such as topic,partition";

/// `PARTITION_LABELS`: the label names that identify a partition in the answer of
/// `PARTITION_QUERY`, in order (their values, joined by '/', are the partition's key).
/// `pod` names the owner, so it cannot also name the partition; a name given twice
/// or an empty one is a typo.
pub fn partition_labels(v: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for name in v.split(',').map(str::trim) {
        let mut chars = name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name != "pod"
            && !names.iter().any(|n| n == name);
        if !ok {
            return None;
        }
        names.push(name.to_string());
    }
    Some(names)
}

fn memory_settings(c: &mut Checker) -> Option<memory::Settings> {
    let min_improvement = c.parsed("MIN_IMPROVEMENT", "a number > 0 and < 1 such as 0.25", |v| {
        v.trim().parse::<f64>().ok().filter(|f| *f > 0.0 && *f < 1.0)
    });
    let max_ineffective = c.parsed("MAX_INEFFECTIVE_ACTIONS", "an integer >= 1", |v| {
        v.trim().parse::<u32>().ok().filter(|n| *n >= 1)
    });
    let backoff = c.parsed("BACKOFF", "a duration > 0, at most 24h, such as 1h", |v| {
        let d = positive_duration(v)?;
        let secs = d.as_secs().checked_add(u64::from(d.subsec_nanos() > 0))?;
        (secs <= memory::MAX_HOLD_SECS).then_some(secs)
    });
    Some(memory::Settings {
        min_improvement: min_improvement?,
        max_ineffective: max_ineffective?,
        backoff_secs: backoff?,
        // Set from STABILIZATION_WINDOW by `common`.
        lease_secs: memory::MIN_LEASE_SECS,
    })
}

/// Lowercase DNS labels joined by '.', at most 253 characters: a ConfigMap's name.
pub fn dns_subdomain(v: &str) -> Option<String> {
    let ok = v.len() <= 253 && v.split('.').all(|label| dns_label(label).is_some());
    ok.then(|| v.to_string())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns_label(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    ok.then(|| v.to_string())
}

/// A label selector is validated by the API server; here we only refuse what can
/// never be one (empty, control characters), so a typo fails before any request.
fn label_selector(v: &str) -> Option<String> {
    let v = v.trim();
    let ok = !v.is_empty() && !v.chars().any(char::is_control) && v.split(',').all(|req| !req.trim().is_empty());
    ok.then(|| v.to_string())
}

/// An http(s) URL with a host, no credentials, no query or fragment; returned without
/// a trailing slash. Credentials are refused so that no URL we print can hold a secret.
pub fn http_url(v: &str) -> Option<String> {
    let v = v.trim();
    let rest = v.strip_prefix("http://").or_else(|| v.strip_prefix("https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || v.contains(['?', '#']) || v.contains(char::is_whitespace) {
        return None;
    }
    if !valid_authority(authority) {
        return None;
    }
    ureq::http::Uri::try_from(v).ok()?;
    Some(v.trim_end_matches('/').to_string())
}

/// `host[:port]` with a DNS name or IPv4 address, or `[IPv6][:port]`.
fn valid_authority(authority: &str) -> bool {
    // The host, and what follows it: nothing, or ':' and the port.
    let (host_ok, rest) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, rest)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let (host, rest) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            let label_ok = |label: &str| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            (host.split('.').all(label_ok), rest)
        }
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.parse::<u16>().is_ok_and(|n| n > 0),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

/// `http_url`, plus an optional query string: VictoriaMetrics' import endpoint takes
/// `?extra_label=job=pod-rebalancer`, which keeps two rebalancers' series apart.
pub fn push_url(v: &str) -> Option<String> {
    match v.trim().split_once('?') {
        None => http_url(v),
        Some((base, query)) => {
            let ok = !query.is_empty() && !query.contains(['#', '?']) && !query.contains(char::is_whitespace);
            let url = format!("{}?{query}", http_url(base)?);
            (ok && ureq::http::Uri::try_from(url.as_str()).is_ok()).then_some(url)
        }
    }
}

pub fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn positive_duration(v: &str) -> Option<Duration> {
    parse_duration(v).filter(|d| !d.is_zero())
}

/// Go's `time.ParseDuration` for non-negative values: `300ms`, `1.5h`, `2h45m`, `0`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let mut s = v.trim();
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total_nanos: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int, rest) = s.split_at(int_len);
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = int.checked_mul(unit_nanos)?;
        let mut scale = unit_nanos;
        for d in frac.bytes().take(18) {
            scale /= 10;
            nanos = nanos.checked_add(u128::from(d - b'0') * scale)?;
        }
        total_nanos = total_nanos.checked_add(nanos)?;
        s = rest;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn raw(pairs: &[(&'static str, &str)]) -> Raw {
        let values: BTreeMap<&'static str, String> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Raw {
            values,
            service_host: None,
            service_port: None,
        }
    }

    /// A live configuration from these settings plus a deployment and an API URL.
    fn check(pairs: &[(&'static str, &str)]) -> Result<(Config, Cluster), Vec<String>> {
        let mut all = vec![
            ("DEPLOYMENT_NAME", "ingestion-consumer"),
            ("KUBE_API_URL", "https://127.0.0.1:6443"),
        ];
        all.extend_from_slice(pairs);
        live(&raw(&all))
    }

    fn problem(pairs: &[(&'static str, &str)]) -> String {
        let problems = check(pairs).expect_err("expected a problem");
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].clone()
    }

    #[test]
    fn defaults_are_the_specs() {
        let (c, cluster) = check(&[]).unwrap();
        assert_eq!(c.prometheus.url, "http://localhost:9090");
        assert_eq!(c.prometheus.timeout, Duration::from_secs(30));
        assert_eq!(c.namespace, "posthog");
        assert_eq!(c.selector.as_deref(), Some("app=consumer"));
        assert_eq!(
            c.decision,
            plan::Settings {
                window_secs: 300,
                threshold: 0.3,
                min_pods: 3,
                stabilization_secs: 600
            }
        );
        assert!(!c.dry_run);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.log_format, logging::Format::Text);
        assert_eq!(c.mode, EvictionMode::Evict);
        assert_eq!((c.metrics_file, c.push_url), (None, None));
        assert_eq!(cluster.kube.timeout, Duration::from_secs(10));
        assert_eq!(
            cluster.kube.service_account_dir,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount")
        );
    }

    #[test]
    fn every_setting_is_read() {
        let (c, cluster) = check(&[
            ("PROMETHEUS_ENDPOINT", "http://vmselect:8481/select/0/prometheus/"),
            ("PROMETHEUS_TIMEOUT", "1m30s"),
            ("PROMETHEUS_BEARER_TOKEN_FILE", "/t"),
            ("PROMETHEUS_CA_FILE", "/ca"),
            ("KUBE_NAMESPACE", "kafka"),
            ("KUBE_LABEL_SELECTOR", "app in (a,b),tier!=x"),
            ("METRICS_TIME_WINDOW", "2m"),
            ("CPU_VARIANCE_THRESHOLD", "0.25"),
            ("MIN_PODS_REQUIRED", "5"),
            ("DRY_RUN", "YES"),
            ("LOG_LEVEL", "Debug"),
            ("LOG_FORMAT", "JSON"),
            ("KUBE_SERVICE_ACCOUNT_DIR", "/sa"),
            ("KUBE_TIMEOUT", "500ms"),
            ("EVICTION_MODE", "Delete"),
            ("STABILIZATION_WINDOW", "0"),
            ("METRICS_FILE", "/m/rebalancer.prom"),
            ("METRICS_PUSH_URL", "http://vm:8428/api/v1/import/prometheus"),
        ])
        .unwrap();
        assert_eq!(c.prometheus.url, "http://vmselect:8481/select/0/prometheus");
        assert_eq!(c.prometheus.timeout, Duration::from_secs(90));
        assert_eq!(c.prometheus.token_file, Some(PathBuf::from("/t")));
        assert_eq!(c.prometheus.ca_file, Some(PathBuf::from("/ca")));
        assert_eq!(c.namespace, "kafka");
        assert_eq!(c.selector.as_deref(), Some("app in (a,b),tier!=x"));
        assert_eq!(
            c.decision,
            plan::Settings {
                window_secs: 120,
                threshold: 0.25,
                min_pods: 5,
                stabilization_secs: 0
            }
        );
        assert!(c.dry_run);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.log_format, logging::Format::Json);
        assert_eq!(c.mode, EvictionMode::Delete);
        assert_eq!(c.metrics_file, Some(PathBuf::from("/m/rebalancer.prom")));
        assert_eq!(c.push_url.as_deref(), Some("http://vm:8428/api/v1/import/prometheus"));
        assert_eq!(cluster.kube.service_account_dir, PathBuf::from("/sa"));
        assert_eq!(cluster.kube.timeout, Duration::from_millis(500));
    }

    #[test]
    fn each_bad_value_is_named_with_what_was_expected() {
        let cases: &[(&'static str, &str, &str)] = &[
            ("PROMETHEUS_ENDPOINT", "vm:8428", "http(s) URL"),
            (
                "PROMETHEUS_ENDPOINT",
                "http://user:secret@vm:8428",
                "without credentials",
            ),
            ("PROMETHEUS_ENDPOINT", "ftp://vm", "http(s) URL"),
            ("PROMETHEUS_ENDPOINT", "http://gv0(1/x", "http(s) URL"),
            ("PROMETHEUS_ENDPOINT", "http://vm:99999", "http(s) URL"),
            ("PROMETHEUS_ENDPOINT", "http://vm:", "http(s) URL"),
            ("KUBE_API_URL", "https://[fd00::1/x", "http(s) URL"),
            ("PROMETHEUS_TIMEOUT", "0s", "duration > 0"),
            ("PROMETHEUS_TIMEOUT", "30", "duration > 0"),
            ("KUBE_NAMESPACE", "Posthog", "DNS-1123"),
            ("KUBE_NAMESPACE", "a\"}or", "DNS-1123"),
            ("KUBE_LABEL_SELECTOR", " ", "label selector"),
            ("KUBE_LABEL_SELECTOR", "a=b,", "label selector"),
            ("DEPLOYMENT_NAME", "consumer\",namespace=~\".*", "DNS-1123"),
            ("DEPLOYMENT_NAME", &"a".repeat(64), "DNS-1123"),
            ("METRICS_TIME_WINDOW", "90500ms", "whole seconds"),
            ("METRICS_TIME_WINDOW", "-5m", "whole seconds"),
            ("CPU_VARIANCE_THRESHOLD", "0", "> 0"),
            ("CPU_VARIANCE_THRESHOLD", "NaN", "finite"),
            ("CPU_VARIANCE_THRESHOLD", "inf", "finite"),
            ("MIN_PODS_REQUIRED", "0", ">= 1"),
            ("MIN_PODS_REQUIRED", "2.5", ">= 1"),
            ("DRY_RUN", "maybe", "true, false"),
            ("LOG_LEVEL", "verbose", "error, warn"),
            ("LOG_FORMAT", "logfmt", "text or json"),
            ("KUBE_API_URL", "127.0.0.1:8001", "http(s) URL"),
            ("KUBE_TIMEOUT", "never", "duration > 0"),
            ("EVICTION_MODE", "kill", "evict or delete"),
            ("STABILIZATION_WINDOW", "ten minutes", "duration >= 0"),
            ("STABILIZATION_WINDOW", "9223372036854775808s", "at most 8784h"),
            ("METRICS_TIME_WINDOW", "8785h", "at most 8784h"),
            ("STABILIZATION_WINDOW", "18446744073709551615.5s", "at most 8784h"),
            (
                "STABILIZATION_WINDOW",
                "340282366920938463463374607431.9s",
                "at most 8784h",
            ),
            ("METRICS_PUSH_URL", "vm/api", "http(s) URL"),
            (
                "METRICS_PUSH_URL",
                "http://vm:8428/api/v1/import/prometheus?",
                "http(s) URL",
            ),
            ("METRICS_PUSH_URL", "http://vm:8428/import?a=b#frag", "http(s) URL"),
        ];
        for (var, value, expected) in cases {
            let p = problem(&[(var, value)]);
            assert!(p.starts_with(&format!("{var} (--{})", flag_name(var))), "{p}");
            assert!(p.contains(expected), "{var}={value}: {p}");
        }
    }

    #[test]
    fn the_push_url_may_carry_a_query() {
        let (c, _) = check(&[(
            "METRICS_PUSH_URL",
            "http://vm:8428/api/v1/import/prometheus?extra_label=job=pod-rebalancer",
        )])
        .unwrap();
        assert_eq!(
            c.push_url.as_deref(),
            Some("http://vm:8428/api/v1/import/prometheus?extra_label=job=pod-rebalancer")
        );
        assert!(
            check(&[("PROMETHEUS_ENDPOINT", "http://vm:8428?x=1")]).is_err(),
            "only the push URL takes a query"
        );
        assert!(check(&[("METRICS_PUSH_URL", "http://u:p@vm:8428/import?a=b")]).is_err());
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let problems = live(&raw(&[
            ("KUBE_NAMESPACE", "A"),
            ("DRY_RUN", "x"),
            ("MIN_PODS_REQUIRED", "0"),
        ]))
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("DEPLOYMENT_NAME") && p.contains("required"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("not running in a cluster: set KUBE_API_URL"))
        );
    }

    #[test]
    fn the_in_cluster_address_comes_from_the_service_variables() {
        let mut r = raw(&[("DEPLOYMENT_NAME", "c")]);
        r.service_host = Some("10.96.0.1".into());
        r.service_port = Some("443".into());
        assert_eq!(live(&r).unwrap().1.kube.url, "https://10.96.0.1:443");
        r.service_host = Some("fd00::1".into());
        assert_eq!(live(&r).unwrap().1.kube.url, "https://[fd00::1]:443");
        r.values.insert("KUBE_API_URL", "https://[fd00::1]/".into());
        assert_eq!(live(&r).unwrap().1.kube.url, "https://[fd00::1]");
        r.values
            .insert("KUBE_API_URL", "https://kubernetes.default.svc:443".into());
        assert_eq!(live(&r).unwrap().1.kube.url, "https://kubernetes.default.svc:443");
        r.values.insert("KUBE_API_URL", "http://127.0.0.1:8001/".into());
        assert_eq!(live(&r).unwrap().1.kube.url, "http://127.0.0.1:8001");
    }

    #[test]
    fn offline_plans_need_no_cluster() {
        let c = offline(&raw(&[])).unwrap();
        assert_eq!(c.deployment, None);
        assert!(offline(&raw(&[("DEPLOYMENT_NAME", "Bad")])).is_err());
    }

    #[test]
    fn durations_follow_go() {
        let d = |s| parse_duration(s);
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("2us"), Some(Duration::from_micros(2)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "1h-5m",
            "-1s",
            "5 m",
            "1..5s",
            "99999999999999999999h",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_with_dashes_and_underscores_are_the_ones_clusters_use() {
        for url in [
            "http://vm-select.monitoring.svc:8481",
            "http://vm_select:8481/select/0/prometheus",
            "http://10.0.0.7:8428",
        ] {
            let (c, _) = check(&[("PROMETHEUS_ENDPOINT", url)]).unwrap_or_else(|p| panic!("{url}: {p:?}"));
            assert_eq!(c.prometheus.url, url);
        }
        for (url, why) in [
            ("http://vm:8428/prometheus?x=1", "a query after a path"),
            ("http://vm:8428/prometheus#top", "a fragment after a path"),
            ("http://vm:0", "port 0"),
            ("http://vm..svc:8428", "an empty label"),
        ] {
            assert!(check(&[("PROMETHEUS_ENDPOINT", url)]).is_err(), "{why}: {url}");
        }
    }

    #[test]
    fn every_log_level_is_a_word_in_any_case() {
        for (word, level) in [
            ("error", log::LevelFilter::Error),
            ("WARN", log::LevelFilter::Warn),
            ("Info", log::LevelFilter::Info),
            ("debug", log::LevelFilter::Debug),
            ("trace", log::LevelFilter::Trace),
        ] {
            assert_eq!(check(&[("LOG_LEVEL", word)]).unwrap().0.log_level, level, "{word}");
        }
        assert!(problem(&[("LOG_LEVEL", "warning")]).contains("expected error, warn, info, debug or trace"));
    }

    #[test]
    fn windows_at_their_bounds() {
        let window = |v| check(&[("METRICS_TIME_WINDOW", v)]).map(|(c, _)| c.decision.window_secs);
        assert_eq!(window("8784h"), Ok(8784 * 3600), "the documented maximum, whole");
        assert!(window("8784h1s").is_err());
        let stabilization = |v| check(&[("STABILIZATION_WINDOW", v)]).map(|(c, _)| c.decision.stabilization_secs);
        assert_eq!(stabilization("1500ms"), Ok(2), "a fraction of a second rounds up");
        assert_eq!(stabilization("1500ns"), Ok(1));
        assert_eq!(stabilization("0"), Ok(0));
        assert_eq!(parse_duration("1500ns"), Some(Duration::from_nanos(1500)));
    }

    /// The container single mode measures: its target's settings.
    fn container(config: &Config, cluster: &Cluster) -> String {
        let Scope::One { deployment } = &cluster.scope else {
            panic!("fleet mode")
        };
        let rollout = plan::Rollout {
            name: deployment.clone(),
            ..plan::Rollout::default()
        };
        target_settings(config, &rollout, false).expect("settings").container
    }

    #[test]
    fn the_container_is_the_deployments_unless_named() {
        let (c, cluster) = check(&[]).unwrap();
        assert_eq!(
            (c.container.clone(), container(&c, &cluster).as_str()),
            (None, "ingestion-consumer")
        );
        let (c, cluster) = check(&[("QUERY_CONTAINER", "consumer")]).unwrap();
        assert_eq!(container(&c, &cluster), "consumer");
        assert!(problem(&[("QUERY_CONTAINER", "Consumer")]).contains("DNS-1123"));
        // The platform's own CONTAINER_NAME (CI runners, container platforms) is not ours.
        let (c, cluster) = check(&[("CONTAINER_NAME", "runner-7")]).unwrap();
        assert_eq!(
            (c.container.clone(), container(&c, &cluster).as_str()),
            (None, "ingestion-consumer")
        );
    }

    #[test]
    fn fleet_mode_takes_a_target_selector_instead_of_a_deployment() {
        let fleet = |extra: &[(&'static str, &str)]| {
            let mut pairs: Vec<(&'static str, &str)> = vec![
                ("KUBE_API_URL", "http://127.0.0.1:8001"),
                ("TARGET_SELECTOR", "pod-rebalancer.io/enabled=true"),
            ];
            pairs.extend_from_slice(extra);
            live(&raw(&pairs))
        };
        let (c, cluster) = fleet(&[]).unwrap();
        assert_eq!(
            cluster.scope,
            Scope::Fleet {
                selector: "pod-rebalancer.io/enabled=true".into()
            }
        );
        assert_eq!((c.selector, c.max_removals), (None, 4), "no pod selector by default");
        let (c, _) = fleet(&[("KUBE_LABEL_SELECTOR", "tier=consumer"), ("MAX_REMOVALS_PER_RUN", "2")]).unwrap();
        assert_eq!((c.selector.as_deref(), c.max_removals), (Some("tier=consumer"), 2));
        let both = fleet(&[("DEPLOYMENT_NAME", "a")]).unwrap_err().join("\n");
        assert!(both.contains("set exactly one"), "{both}");
        let neither = live(&raw(&[("KUBE_API_URL", "http://127.0.0.1:8001")]))
            .unwrap_err()
            .join("\n");
        assert!(neither.contains("required unless TARGET_SELECTOR"), "{neither}");
        assert!(fleet(&[("MAX_REMOVALS_PER_RUN", "0")]).unwrap_err()[0].contains("MAX_REMOVALS_PER_RUN"));
    }

    #[test]
    fn a_targets_annotations_override_its_settings_as_section_3_validates_them() {
        let (c, _) = check(&[("DRY_RUN", "false")]).unwrap();
        let rollout = |pairs: &[(&str, &str)]| plan::Rollout {
            name: "billing".into(),
            annotations: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..plan::Rollout::default()
        };
        let plain = target_settings(&c, &rollout(&[]), true).unwrap();
        assert_eq!((plain.container.as_str(), plain.dry_run), ("billing", false));
        let set = rollout(&[
            (CONTAINER_ANNOTATION, "worker"),
            (THRESHOLD_ANNOTATION, "0.5"),
            (MIN_PODS_ANNOTATION, "4"),
            (DRY_RUN_ANNOTATION, "YES"),
        ]);
        let s = target_settings(&c, &set, true).unwrap();
        assert_eq!(
            (
                s.container.as_str(),
                s.decision.threshold,
                s.decision.min_pods,
                s.dry_run
            ),
            ("worker", 0.5, 4, true)
        );
        assert_eq!(
            target_settings(&c, &set, false).unwrap().decision.threshold,
            0.3,
            "single mode reads only the pause"
        );
        for (key, bad, expected) in [
            (CONTAINER_ANNOTATION, "Worker", "DNS-1123"),
            (THRESHOLD_ANNOTATION, "-1", "finite number > 0"),
            (MIN_PODS_ANNOTATION, "0", "integer >= 1"),
            (DRY_RUN_ANNOTATION, "maybe", "true, false"),
        ] {
            let e = target_settings(&c, &rollout(&[(key, bad)]), true).unwrap_err();
            assert!(e.contains(key) && e.contains(bad) && e.contains(expected), "{e}");
        }
        // A global DRY_RUN=true cannot be undone by an annotation.
        let (dry, _) = check(&[("DRY_RUN", "true")]).unwrap();
        let undo = rollout(&[(DRY_RUN_ANNOTATION, "false")]);
        assert!(target_settings(&dry, &undo, true).unwrap().dry_run);
    }

    #[test]
    fn metrics_labels_are_constant_pairs_that_never_shadow_ours() {
        let (c, _) = check(&[("METRICS_LABELS", r#"cluster="prod-eu-1", region="eu""#)]).unwrap();
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            c.metrics_labels,
            vec![pair("cluster", "prod-eu-1"), pair("region", "eu")]
        );
        for bad in [
            r#"deployment="x""#,
            r#"outcome="x""#,
            r#"window="x""#,
            r#"__name__="x""#,
            r#"cluster="a"b""#,
            r#"cluster="a",cluster="b""#,
            "cluster=prod",
        ] {
            assert!(problem(&[("METRICS_LABELS", bad)]).contains("METRICS_LABELS"), "{bad}");
        }
    }

    #[test]
    fn the_partition_signal_is_off_unless_a_query_is_set() {
        let (c, _) = check(&[]).unwrap();
        assert_eq!(c.partition_query, None);
        assert_eq!(c.partition_labels, ["topic", "partition"]);
        let query = "sum by (pod, topic, partition) (rate(kafka_consumer_records_consumed_total[5m]))";
        let (c, _) = check(&[
            ("PARTITION_QUERY", query),
            ("PARTITION_LABELS", " topic , partition,group_id "),
        ])
        .unwrap();
        assert_eq!(c.partition_query.as_deref(), Some(query), "sent as configured");
        assert_eq!(c.partition_labels, ["topic", "partition", "group_id"]);
        assert!(
            problem(&[("PARTITION_QUERY", "  ")]).starts_with("PARTITION_QUERY (--partition-query): expected a PromQL")
        );
    }

    #[test]
    fn partition_labels_are_distinct_label_names_other_than_pod() {
        assert_eq!(partition_labels("partition"), Some(vec!["partition".to_string()]));
        assert_eq!(
            partition_labels("_t,p2"),
            Some(vec!["_t".to_string(), "p2".to_string()])
        );
        for bad in [
            "",
            " ",
            "topic,",
            "topic,,partition",
            "topic,topic",
            "pod",
            "topic,pod",
            "2topic",
            "topic-name",
            "topic partition",
            "tópico",
        ] {
            assert_eq!(partition_labels(bad), None, "{bad:?}");
        }
        let p = problem(&[("PARTITION_LABELS", "topic,pod")]);
        assert!(
            p.starts_with("PARTITION_LABELS (--partition-labels): expected one or more distinct label names")
                && p.ends_with("got \"topic,pod\""),
            "{p}"
        );
    }

    #[test]
    fn query_matchers_are_literal_and_cannot_widen_the_query() {
        let m = |v| query_matchers(v);
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(m(r#"cluster="prod-eu-1""#), Some(vec![pair("cluster", "prod-eu-1")]));
        assert_eq!(
            m(r#" cluster = "a b,c" , _region2="eu""#),
            Some(vec![pair("cluster", "a b,c"), pair("_region2", "eu")])
        );
        for bad in [
            "",
            "cluster=prod",
            r#"cluster=~"prod.*""#,
            r#"cluster!="prod""#,
            r#"namespace="other""#,
            r#"container="other""#,
            r#"pod="p""#,
            r#"__name__="up""#,
            r#"2cluster="a""#,
            r#"cluster="a",cluster="b""#,
            r#"cluster="a","#,
            r#"cluster="a" region="b""#,
            r#"cluster="a\"b""#,
            "cluster=\"a\nb\"",
            r#"cluster="a"}"#,
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
        let (c, _) = check(&[("QUERY_MATCHERS", r#"cluster="prod-eu-1""#)]).unwrap();
        assert_eq!(c.matchers, vec![pair("cluster", "prod-eu-1")]);
        assert!(problem(&[("QUERY_MATCHERS", r#"namespace="x""#)]).starts_with("QUERY_MATCHERS (--query-matchers)"));
    }
}
