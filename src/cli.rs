//! The command line: lexopt flags and environment variables → raw settings.
//!
//! This is stage one of two (as in ripgrep's `lowargs`/`hiargs`): it only collects
//! strings, a flag beating its variable, and knows the words of the command line.
//! `config` turns the strings into a validated `Config` and reports every problem.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// One setting: its environment variable, default and help line. Its flag is the
/// variable in kebab case (`DRY_RUN` → `--dry-run`).
pub struct Setting {
    pub var: &'static str,
    pub default: Option<&'static str>,
    pub boolean: bool,
    pub help: &'static str,
}

const fn s(var: &'static str, default: Option<&'static str>, help: &'static str) -> Setting {
    Setting {
        var,
        default,
        boolean: false,
        help,
    }
}

pub const SETTINGS: &[Setting] = &[
    s(
        "PROMETHEUS_ENDPOINT",
        Some("http://localhost:9090"),
        "VictoriaMetrics/Prometheus base URL; a path prefix is kept",
    ),
    s(
        "PROMETHEUS_TIMEOUT",
        Some("30s"),
        "bound on each metrics request, end to end",
    ),
    s(
        "PROMETHEUS_BEARER_TOKEN_FILE",
        None,
        "file holding a bearer token for the metrics endpoint",
    ),
    s(
        "PROMETHEUS_CA_FILE",
        None,
        "PEM bundle trusted for an https metrics endpoint",
    ),
    s(
        "KUBE_NAMESPACE",
        Some("posthog"),
        "namespace of the Deployment and its pods",
    ),
    s(
        "KUBE_LABEL_SELECTOR",
        Some("app=consumer"),
        "label selector of the Deployment's pods (fleet mode: none, every pod of the namespace)",
    ),
    s(
        "DEPLOYMENT_NAME",
        None,
        "the Deployment whose pods are rebalanced (required unless TARGET_SELECTOR)",
    ),
    s(
        "TARGET_SELECTOR",
        None,
        "fleet mode: every Deployment whose labels match, e.g. pod-rebalancer.io/enabled=true",
    ),
    s(
        "MAX_REMOVALS_PER_RUN",
        Some("4"),
        "fleet mode: removals across all targets in one run",
    ),
    s(
        "QUERY_CONTAINER",
        None,
        "the measured container (the query's container label) [default: DEPLOYMENT_NAME]",
    ),
    s(
        "QUERY_MATCHERS",
        None,
        "extra literal matchers of the CPU query, e.g. cluster=\"prod-eu-1\"",
    ),
    s("METRICS_TIME_WINDOW", Some("5m"), "PromQL rate window, whole seconds"),
    s(
        "CPU_VARIANCE_THRESHOLD",
        Some("0.3"),
        "act when stddev/mean of pod CPU exceeds this",
    ),
    s(
        "MIN_PODS_REQUIRED",
        Some("3"),
        "never act with fewer healthy pods than this",
    ),
    Setting {
        var: "DRY_RUN",
        default: Some("false"),
        boolean: true,
        help: "decide and log, but send no mutating request",
    },
    s("LOG_LEVEL", Some("info"), "error, warn, info, debug or trace"),
    s(
        "LOG_FORMAT",
        Some("text"),
        "text (logfmt fields) or json (one object per line)",
    ),
    s(
        "KUBE_API_URL",
        None,
        "API server URL; default from KUBERNETES_SERVICE_HOST/PORT",
    ),
    s(
        "KUBE_SERVICE_ACCOUNT_DIR",
        Some("/var/run/secrets/kubernetes.io/serviceaccount"),
        "holds token and ca.crt",
    ),
    s("KUBE_TIMEOUT", Some("10s"), "bound on each Kubernetes request"),
    s(
        "EVICTION_MODE",
        Some("evict"),
        "evict (Eviction API, honours PDBs) or delete",
    ),
    s(
        "STABILIZATION_WINDOW",
        Some("10m"),
        "no action while any pod is younger than this",
    ),
    s(
        "STATE_CONFIGMAP",
        None,
        "ConfigMap (in KUBE_NAMESPACE) that holds the memory; unset: stateless",
    ),
    s(
        "MIN_IMPROVEMENT",
        Some("0.25"),
        "an action is effective when the spread falls by this fraction",
    ),
    s(
        "MAX_INEFFECTIVE_ACTIONS",
        Some("3"),
        "ineffective actions in a row that open the breaker",
    ),
    s(
        "BACKOFF",
        Some("1h"),
        "the breaker's first hold; doubles with each further ineffective action, at most 24h",
    ),
    s(
        "PARTITION_QUERY",
        None,
        "PromQL instant query: per (pod, partition) the load of the partitions each pod owns",
    ),
    s(
        "PARTITION_LABELS",
        Some("topic,partition"),
        "labels that name a partition in the answer of PARTITION_QUERY",
    ),
    s("METRICS_FILE", None, "Prometheus textfile to write (atomically)"),
    s(
        "METRICS_PUSH_URL",
        None,
        "URL that receives the same metrics text by POST",
    ),
    s(
        "METRICS_LABELS",
        None,
        "constant labels on every metric sample, e.g. cluster=\"prod-eu-1\"",
    ),
];

/// Turns `DRY_RUN` into `dry-run`.
pub fn flag_name(var: &str) -> String {
    var.to_ascii_lowercase().replace('_', "-")
}

/// Setting values as strings, keyed by variable name. Flags have replaced variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    pub values: BTreeMap<&'static str, String>,
    /// `KUBERNETES_SERVICE_HOST` and `_PORT`, which are not settings but locate the API.
    pub service_host: Option<String>,
    pub service_port: Option<String>,
}

impl Raw {
    /// The value given, or `None` when unset (an empty variable counts as unset).
    pub fn get(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `LOG_FORMAT` asks for JSON lines, so that even configuration problems are JSON.
    pub fn json_logs(&self) -> bool {
        self.get("LOG_FORMAT")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("json"))
    }
}

/// Files and switches of `pod-rebalancer plan`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanArgs {
    pub pods: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub deployment: Option<PathBuf>,
    /// A saved state ConfigMap.
    pub state: Option<PathBuf>,
    /// A saved answer of `PARTITION_QUERY`.
    pub partitions: Option<PathBuf>,
    pub now: Option<String>,
    pub output: Option<String>,
    /// Live plan only: write the responses read into this directory.
    pub save: Option<PathBuf>,
    /// Show every pod, however many.
    pub all: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Version,
    /// One live cycle.
    Run(Raw),
    /// The decision on saved responses, printed for a person.
    Plan(Raw, PlanArgs),
}

/// A command line that cannot be run: why, and whether the problems should be
/// written as JSON lines (`LOG_FORMAT=json`, from the variable or a flag read before
/// the problem).
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub problems: Vec<String>,
    pub json: bool,
}

/// Reads the command line and the environment.
pub fn parse(args: impl IntoIterator<Item = OsString>, env: impl Fn(&str) -> Option<String>) -> Result<Command, Usage> {
    let mut raw = Raw::default();
    for setting in SETTINGS {
        if let Some(v) = env(setting.var) {
            raw.values.insert(setting.var, v);
        }
    }
    raw.service_host = env("KUBERNETES_SERVICE_HOST").filter(|v| !v.is_empty());
    raw.service_port = env("KUBERNETES_SERVICE_PORT").filter(|v| !v.is_empty());
    let mut plan: Option<PlanArgs> = None;
    match parse_args(lexopt::Parser::from_args(args), &mut raw, &mut plan) {
        Ok(Some(command)) => Ok(command),
        Ok(None) => Ok(match plan {
            Some(p) => Command::Plan(raw, p),
            None => Command::Run(raw),
        }),
        Err(problem) => Err(Usage {
            problems: vec![problem],
            json: raw.json_logs(),
        }),
    }
}

/// Reads the arguments into `raw` and `plan`; `Some` for `--help` and `--version`.
fn parse_args(
    mut parser: lexopt::Parser,
    raw: &mut Raw,
    plan: &mut Option<PlanArgs>,
) -> Result<Option<Command>, String> {
    use lexopt::prelude::*;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Some(Command::Help)),
            Short('V') | Long("version") => return Ok(Some(Command::Version)),
            Value(v) if plan.is_none() && v == "plan" => *plan = Some(PlanArgs::default()),
            Long(name) => {
                let name = name.to_string();
                if let Some(p) = plan.as_mut()
                    && plan_flag(&mut parser, &name, p)?
                {
                    continue;
                }
                let Some(setting) = SETTINGS.iter().find(|s| flag_name(s.var) == name) else {
                    return Err(format!("unknown flag --{name} (see --help)"));
                };
                let value = match parser.optional_value() {
                    None if setting.boolean => "true".to_string(),
                    None => text(parser.value().map_err(|e| e.to_string())?, &name)?,
                    Some(v) => text(v, &name)?,
                };
                if value.is_empty() {
                    return Err(format!(
                        "{} (--{name}): expected a value, got an empty one (an empty flag never means the default: leave the flag out)",
                        setting.var
                    ));
                }
                raw.values.insert(setting.var, value);
            }
            Short(c) => return Err(format!("unknown flag -{c} (see --help)")),
            Value(v) => return Err(format!("unexpected argument {v:?} (see --help)")),
        }
    }
    Ok(None)
}

/// Reads a flag of `plan` into `p`; `false` when `name` is not one of them.
fn plan_flag(parser: &mut lexopt::Parser, name: &str, p: &mut PlanArgs) -> Result<bool, String> {
    if name == "all" {
        p.all = true;
        return Ok(true);
    }
    if ![
        "pods",
        "cpu",
        "deployment",
        "state",
        "partitions",
        "save",
        "now",
        "output",
    ]
    .contains(&name)
    {
        return Ok(false);
    }
    let value = text(parser.value().map_err(|e| e.to_string())?, name)?;
    if value.is_empty() {
        return Err(format!("--{name}: expected a value, got an empty one"));
    }
    match name {
        "pods" => p.pods = Some(PathBuf::from(value)),
        "cpu" => p.cpu = Some(PathBuf::from(value)),
        "deployment" => p.deployment = Some(PathBuf::from(value)),
        "state" => p.state = Some(PathBuf::from(value)),
        "partitions" => p.partitions = Some(PathBuf::from(value)),
        "save" => p.save = Some(PathBuf::from(value)),
        "now" => p.now = Some(value),
        _ => p.output = Some(value),
    }
    Ok(true)
}

fn text(v: OsString, flag: &str) -> Result<String, String> {
    v.into_string()
        .map_err(|v| format!("--{flag}: expected UTF-8 text, got {v:?}"))
}

/// The `--help` text, generated from `SETTINGS` so it cannot drift from the code.
pub fn help() -> String {
    let mut out = String::from(
        "pod-rebalancer: evicts the hottest and the coldest pod of a Deployment when its CPU load
is spread too unevenly, so the consumer group reassigns its partitions. One run, one cycle.

USAGE:
    pod-rebalancer [FLAGS]
        One cycle against the cluster: read, decide, act (unless --dry-run), report.
    pod-rebalancer plan [--save DIR] [--output text|json] [--all] [FLAGS]
        The read-only half of a cycle: reads the cluster and the metrics like a run,
        prints the plan for a person, sends no mutating request and no Event.
        --save DIR writes the responses read (pods.json, deployment.json, cpu.json,
        state.json, partitions.json).
    pod-rebalancer plan --pods FILE --cpu FILE [--deployment FILE] [--state FILE]
                        [--partitions FILE] [--now RFC3339] [--output text|json] [--all]
        The same picture from saved responses (`kubectl get pods -o json`, the JSON
        answer of /api/v1/query, `kubectl get deploy -o json`, `kubectl get configmap
        STATE_CONFIGMAP -o json`, the JSON answer of PARTITION_QUERY). No connection.

SETTINGS (flag beats variable; an empty variable is unset):
",
    );
    for s in SETTINGS {
        let flag = format!("--{}", flag_name(s.var));
        let value = if s.boolean { "[=BOOL]" } else { " VALUE" };
        out.push_str(&format!("    {flag}{value}\n        ${}: {}", s.var, s.help));
        match s.default {
            Some(d) => out.push_str(&format!(" [default: {d}]\n")),
            None => out.push('\n'),
        }
    }
    out.push_str(
        "
    -h, --help       print this help
    -V, --version    print the version

Durations use Go syntax (30s, 5m, 1h30m, 500ms). Booleans: true/false/1/0/yes/no.
EXIT STATUS: 0 the cycle completed (acted or chose not to), 1 the cycle failed,
2 the configuration or command line is invalid.
",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], env: &[(&str, &str)]) -> Result<Command, Usage> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(OsString::from), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn raw_of(cmd: Result<Command, Usage>) -> Raw {
        match cmd {
            Ok(Command::Run(raw)) | Ok(Command::Plan(raw, _)) => raw,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn a_flag_beats_its_variable() {
        let raw = raw_of(check(&["--kube-namespace", "flag-ns"], &[("KUBE_NAMESPACE", "env-ns")]));
        assert_eq!(raw.get("KUBE_NAMESPACE"), Some("flag-ns"));
        let raw = raw_of(check(&["--kube-namespace=eq-ns"], &[]));
        assert_eq!(raw.get("KUBE_NAMESPACE"), Some("eq-ns"));
    }

    #[test]
    fn a_boolean_flag_alone_means_true() {
        assert_eq!(
            raw_of(check(&["--dry-run"], &[("DRY_RUN", "false")])).get("DRY_RUN"),
            Some("true")
        );
        assert_eq!(raw_of(check(&["--dry-run=no"], &[])).get("DRY_RUN"), Some("no"));
    }

    #[test]
    fn an_empty_variable_is_unset() {
        assert_eq!(
            raw_of(check(&[], &[("DEPLOYMENT_NAME", "")])).get("DEPLOYMENT_NAME"),
            None
        );
    }

    #[test]
    fn every_setting_the_help_names_is_a_flag_the_parser_takes() {
        let help = help();
        for s in SETTINGS {
            let flag = format!("--{}", flag_name(s.var));
            assert!(help.contains(&flag), "{flag} is not in --help");
            // What the help promises: the flag sets its variable, over the environment.
            let raw = raw_of(check(&[&format!("{flag}=from-flag")], &[(s.var, "from-env")]));
            assert_eq!(raw.get(s.var), Some("from-flag"), "{flag}");
            let raw = raw_of(check(&["plan", &format!("{flag}=x")], &[]));
            assert_eq!(raw.get(s.var), Some("x"), "plan {flag}");
        }
        for plan_flag in [
            "--pods",
            "--cpu",
            "--deployment",
            "--state",
            "--partitions",
            "--now",
            "--output",
            "--save",
        ] {
            assert!(help.contains(plan_flag), "{plan_flag} is not in --help");
            let cmd = check(&["plan", plan_flag, "x"], &[]);
            assert!(matches!(cmd, Ok(Command::Plan(..))), "plan {plan_flag}: {cmd:?}");
        }
        assert!(matches!(
            check(&["plan", "--all"], &[]),
            Ok(Command::Plan(_, PlanArgs { all: true, .. }))
        ));
    }

    #[test]
    fn plan_takes_its_files() {
        let cmd = check(
            &[
                "plan",
                "--pods",
                "p.json",
                "--cpu",
                "c.json",
                "--now",
                "2024-01-01T00:00:00Z",
                "--min-pods-required",
                "4",
            ],
            &[],
        );
        let Ok(Command::Plan(raw, args)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(args.pods, Some(PathBuf::from("p.json")));
        assert_eq!(args.cpu, Some(PathBuf::from("c.json")));
        assert_eq!(args.now.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(raw.get("MIN_PODS_REQUIRED"), Some("4"));
    }

    #[test]
    fn unknown_words_are_refused() {
        assert!(check(&["--nope"], &[]).unwrap_err().problems[0].contains("--nope"));
        assert!(check(&["evict"], &[]).unwrap_err().problems[0].contains("evict"));
        assert!(check(&["--pods", "x"], &[]).is_err(), "--pods belongs to plan only");
        assert!(check(&["--kube-namespace"], &[]).is_err(), "a value is required");
        assert_eq!(check(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(check(&["-V"], &[]), Ok(Command::Version));
    }

    #[test]
    fn an_empty_flag_is_a_problem_not_the_default() {
        for args in [
            &["--dry-run="][..],
            &["--kube-namespace="],
            &["--kube-namespace", ""],
            &["plan", "--now", ""],
            &["plan", "--pods="],
        ] {
            let usage = check(args, &[("DRY_RUN", "true"), ("KUBE_NAMESPACE", "prod")]).unwrap_err();
            assert!(
                usage.problems[0].contains("expected a value, got an empty one"),
                "{args:?}: {usage:?}"
            );
        }
        assert!(
            check(&["--log-format=json", "--kube-namespace="], &[])
                .unwrap_err()
                .json
        );
        assert!(
            check(&["--kube-namespace="], &[("LOG_FORMAT", "JSON")])
                .unwrap_err()
                .json
        );
        assert!(!check(&["--kube-namespace="], &[]).unwrap_err().json);
    }
}
