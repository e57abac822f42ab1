//! Checks of the shipped manifests: what `kubectl kustomize` renders is read back
//! as JSON and held to what the README and SPEC §10 promise, so that a later edit
//! cannot silently widen the RBAC, drop a CronJob safeguard or a security-context
//! item, name a variable the program does not know, or let the alert resources
//! drift from the rules file. The README's overlays (one rebalancer; two in one
//! namespace) are rendered as printed there. kubectl is required: without it these
//! tests fail.

use crate::support::{TempDir, assert_contains, root, run_bin};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Runs kubectl, feeding it `stdin`, and returns its standard output.
fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// Runs kubectl, feeding it `stdin`, and returns what it did, failed or not.
fn kubectl_output(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl is required by the manifest tests (kubectl >= 1.27, kustomize v5): {e}"));
    let writer = stdin.map(|text| {
        let mut pipe = child.stdin.take().expect("kubectl stdin");
        let text = text.to_owned();
        std::thread::spawn(move || pipe.write_all(text.as_bytes()))
    });
    let out = child.wait_with_output().expect("wait for kubectl");
    if let Some(writer) = writer {
        writer.join().expect("stdin writer").expect("write kubectl stdin");
    }
    out
}

/// The objects of a YAML stream, as JSON. `kubectl patch --local` with an empty
/// merge patch reads the objects and prints them unchanged, with no server and no
/// YAML crate in the tests.
fn objects_of(yaml: &str) -> Vec<Value> {
    let args = [
        "patch", "--local", "-f", "-", "--type", "merge", "-p", "{}", "-o", "json",
    ];
    let json = kubectl(&args, Some(yaml));
    let objects: Vec<Value> = serde_json::Deserializer::from_str(&json)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("kubectl printed JSON objects");
    assert!(!objects.is_empty(), "no object in:\n{yaml}");
    objects
}

fn manifests() -> PathBuf {
    root().join("manifests")
}

/// `kubectl kustomize DIR`, as objects.
fn render(dir: &Path) -> Vec<Value> {
    objects_of(&kubectl(&["kustomize", &dir.display().to_string()], None))
}

/// The base, rendered once per test process: it is only read.
fn base() -> &'static [Value] {
    static BASE: OnceLock<Vec<Value>> = OnceLock::new();
    BASE.get_or_init(|| render(&manifests()))
}

/// The text of the rules file, the source of the rule resources.
pub(crate) fn rules_file() -> String {
    std::fs::read_to_string(manifests().join("alerts/pod-rebalancer.rules.yml")).expect("rules file")
}

/// The `groups` of a rules file's text, as JSON: the plain rules file as the body
/// of a made-up object, so that kubectl reads it like the others.
pub(crate) fn rule_groups(rules: &str) -> Value {
    let wrapped = format!("apiVersion: example.invalid/v1\nkind: RulesFile\nmetadata:\n  name: rules\n{rules}");
    objects_of(&wrapped).remove(0)["groups"].take()
}

/// `path` as seen from `from`; both absolute. Kustomize accepts only relative
/// paths to a base or a component.
fn relative(from: &Path, path: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let path: Vec<Component> = path.components().collect();
    let common = from.iter().zip(&path).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    out.extend(&path[common..]);
    out
}

/// The base with these components on top, as a user's overlay would have it.
fn with_components(components: &[&str]) -> Vec<Value> {
    let dir = TempDir::new("overlay");
    let overlay = dir.path().canonicalize().expect("temp dir");
    let base = manifests().canonicalize().expect("manifests/");
    let to_base = relative(&overlay, &base);
    let mut text = format!("resources:\n  - {}\ncomponents:\n", to_base.display());
    for component in components {
        text += &format!("  - {}\n", to_base.join("components").join(component).display());
    }
    std::fs::write(overlay.join("kustomization.yaml"), text).expect("write overlay");
    render(&overlay)
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().map(|o| o["kind"].as_str().unwrap_or("?")).collect()
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let one = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(objects)));
    assert!(found.next().is_none(), "more than one {kind}");
    one
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}")))
        .collect()
}

/// One grant: API group, resource, verb, and the one object it is limited to
/// (`resourceNames`), or `*` for every object of the resource.
type Grant = (String, String, String, String);

/// Every grant of a Role, one per (group, resource, verb, name), so a wildcard, an
/// extra verb or a lost `resourceNames` shows up as a grant of its own.
fn role_grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("Role rules") {
        let keys: BTreeSet<&str> = rule.as_object().expect("rule").keys().map(String::as_str).collect();
        let allowed = BTreeSet::from(["apiGroups", "resources", "verbs", "resourceNames"]);
        // nonResourceURLs has no place in a Role.
        assert!(keys.is_subset(&allowed), "unexpected fields in rule {rule}");
        let names = match &rule["resourceNames"] {
            Value::Null => vec!["*"],
            names => strings(names),
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        out.insert((group.to_owned(), resource.to_owned(), verb.to_owned(), name.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// The grants of the one Role among `objects`.
fn grants(objects: &[Value]) -> BTreeSet<Grant> {
    role_grants(the(objects, "Role"))
}

/// What the program asks of the API server (SPEC §4), the state ConfigMap named
/// `state`, with `removal` as the grant that removes pods.
fn expected_grants(removal: (&str, &str, &str), state: &str) -> BTreeSet<Grant> {
    [
        ("apps", "deployments", "get", "*"),
        ("", "pods", "list", "*"),
        (removal.0, removal.1, removal.2, "*"),
        ("", "events", "create", "*"),
        ("", "configmaps", "get", state),
        ("", "configmaps", "update", state),
    ]
    .iter()
    .map(|(g, r, v, n)| (g.to_string(), r.to_string(), v.to_string(), n.to_string()))
    .collect()
}

const EVICT: (&str, &str, &str) = ("", "pods/eviction", "create");
const DELETE: (&str, &str, &str) = ("", "pods", "delete");

fn cronjob(objects: &[Value]) -> &Value {
    the(objects, "CronJob")
}

fn pod_spec(objects: &[Value]) -> &Value {
    pod_spec_of(cronjob(objects))
}

fn pod_spec_of(cronjob: &Value) -> &Value {
    &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

/// The container's environment: the generated ConfigMap it loads, then its own
/// `env` entries (which win), by name.
fn environment(objects: &[Value]) -> (serde_json::Map<String, Value>, Vec<Value>) {
    environment_of(objects, cronjob(objects))
}

/// `environment` of one of several CronJobs.
fn environment_of(objects: &[Value], cronjob: &Value) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let containers = pod_spec_of(cronjob)["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let container = &containers[0];
    let from = container["envFrom"].as_array().expect("envFrom");
    assert_eq!(from.len(), 1, "one envFrom source: {from:?}");
    let name = from[0]["configMapRef"]["name"]
        .as_str()
        .expect("envFrom is a ConfigMap");
    let map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the CronJob loads ConfigMap {name}, which is not rendered"));
    let data = map["data"].as_object().expect("ConfigMap data").clone();
    let env = container["env"].as_array().cloned().unwrap_or_default();
    (data, env)
}

#[test]
fn base_renders_exactly_the_namespaced_objects_and_no_cluster_scope() {
    let objects = base();
    let mut got = kinds(objects);
    got.sort_unstable();
    // The settings and the (empty) state ConfigMap; no PersistentVolumeClaim.
    assert_eq!(
        got,
        [
            "ConfigMap",
            "ConfigMap",
            "CronJob",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    let namespace = &cronjob(objects)["metadata"]["namespace"];
    assert!(namespace.is_string(), "the base sets a namespace");
    for object in objects {
        assert_eq!(&object["metadata"]["namespace"], namespace, "{object}");
    }
}

#[test]
fn role_grants_exactly_the_requests_the_program_sends() {
    let objects = base();
    assert_eq!(grants(objects), expected_grants(EVICT, &state_configmap(objects)));
}

#[test]
fn delete_mode_swaps_the_eviction_grant_for_delete_and_sets_the_mode() {
    let objects = with_components(&["delete-mode"]);
    assert_eq!(grants(&objects), expected_grants(DELETE, &state_configmap(&objects)));
    let (data, _) = environment(&objects);
    assert_eq!(data["EVICTION_MODE"], "delete");
    let (base_data, _) = environment(base());
    assert_eq!(base_data["EVICTION_MODE"], "evict");
}

/// The name of the state ConfigMap the CronJob's STATE_CONFIGMAP points at, after
/// checking that it is rendered, empty, and the only ConfigMap the Role reaches.
fn state_configmap(objects: &[Value]) -> String {
    state_configmap_of(objects, cronjob(objects), the(objects, "Role"))
}

/// `state_configmap` of one of several CronJobs, whose Role is `role`.
fn state_configmap_of(objects: &[Value], cronjob: &Value, role: &Value) -> String {
    let (_, env) = environment_of(objects, cronjob);
    let name = env
        .iter()
        .find(|e| e["name"] == "STATE_CONFIGMAP")
        .and_then(|e| e["value"].as_str())
        .expect("the CronJob sets STATE_CONFIGMAP to a name")
        .to_owned();
    let map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("STATE_CONFIGMAP names {name}, which is not rendered"));
    assert!(
        map["data"].is_null() && map["binaryData"].is_null(),
        "the state ConfigMap starts empty (a fresh memory): {map}"
    );
    let reached: BTreeSet<String> = role_grants(role)
        .into_iter()
        .filter(|(_, resource, _, _)| resource == "configmaps")
        .map(|(_, _, _, object)| object)
        .collect();
    assert_eq!(reached, BTreeSet::from([name.clone()]), "the Role reaches {name} only");
    name
}

#[test]
fn the_state_configmap_is_empty_and_the_only_configmap_the_role_reaches() {
    assert_eq!(state_configmap(base()), "pod-rebalancer-state");
}

#[test]
fn role_is_bound_to_the_cronjobs_service_account_only() {
    let objects = base();
    let binding = the(objects, "RoleBinding");
    let role = the(objects, "Role");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = the(objects, "ServiceAccount");
    let subjects = binding["subjects"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], account["metadata"]["namespace"]);
    assert_eq!(pod_spec(objects)["serviceAccountName"], account["metadata"]["name"]);
}

#[test]
fn only_the_cronjobs_pod_mounts_the_service_account_token() {
    let objects = base();
    assert_eq!(the(objects, "ServiceAccount")["automountServiceAccountToken"], false);
    assert_eq!(pod_spec(objects)["automountServiceAccountToken"], true);
}

#[test]
fn cronjob_runs_one_cycle_every_five_minutes_without_overlap_or_retry() {
    let objects = base();
    let spec = &cronjob(objects)["spec"];
    assert_eq!(spec["schedule"], "*/5 * * * *");
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert_eq!(spec["suspend"], Value::Null, "the base is not suspended");
    let starting = spec["startingDeadlineSeconds"]
        .as_u64()
        .expect("startingDeadlineSeconds");
    assert!(
        (1..300).contains(&starting),
        "a late start gives up before the next schedule: {starting}"
    );
    let job = &spec["jobTemplate"]["spec"];
    assert_eq!(job["backoffLimit"], 0, "no retry inside a cycle (SPEC §9)");
    let active = job["activeDeadlineSeconds"].as_u64().expect("activeDeadlineSeconds");
    assert!(
        (1..300).contains(&active),
        "a stuck run ends before the next schedule: {active}"
    );
    let ttl = job["ttlSecondsAfterFinished"]
        .as_u64()
        .expect("ttlSecondsAfterFinished");
    assert!(ttl > 0);
    assert_eq!(job["template"]["spec"]["restartPolicy"], "Never");
    // What the README promises the history keeps: the last hour of successful runs
    // (at one run every five minutes) and some failed ones, none beyond a day.
    let successful = spec["successfulJobsHistoryLimit"]
        .as_u64()
        .expect("successfulJobsHistoryLimit");
    let failed = spec["failedJobsHistoryLimit"].as_u64().expect("failedJobsHistoryLimit");
    assert!(
        successful * 5 >= 60,
        "{successful} successful Jobs are less than an hour of runs"
    );
    assert!(failed >= 1, "failed Jobs are kept for their logs");
    assert!(ttl <= 86_400, "finished Jobs go within a day: {ttl}");
}

#[test]
fn pod_runs_unprivileged_with_a_read_only_root_and_no_capabilities() {
    let objects = base();
    let pod = pod_spec(objects);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532, "the image's user");
    assert_eq!(security["runAsGroup"], 65532);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    // No volume at all (SPEC §10): the memory is in the state ConfigMap, the
    // metrics are pushed, and no PersistentVolumeClaim pins a run to a zone.
    assert!(pod["volumes"].is_null(), "no volume: {}", pod["volumes"]);
    for container in pod["containers"].as_array().expect("containers") {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["runAsNonRoot"], true);
        assert_ne!(security["privileged"], true);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(security["capabilities"]["add"].is_null(), "no capability added");
        assert!(container["volumeMounts"].is_null(), "no volume mounted");
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        assert_ne!(security["runAsUser"], 0);
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][kind][resource].is_string(),
                    "{kind}.{resource} is set"
                );
            }
        }
    }
}

#[test]
fn image_is_tagged_with_the_package_version() {
    let objects = base();
    let image = pod_spec(objects)["containers"][0]["image"].as_str().expect("image");
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image} is not the version in Cargo.toml"
    );
}

#[test]
fn environment_names_every_setting_of_the_program_and_nothing_else() {
    let objects = base();
    let (data, env) = environment(objects);
    let mut names: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    for entry in &env {
        let name = entry["name"].as_str().expect("env name");
        assert!(names.insert(name), "{name} is set twice");
    }
    let settings: BTreeSet<&str> = pod_rebalancer::cli::SETTINGS.iter().map(|s| s.var).collect();
    let unknown: Vec<&str> = names.difference(&settings).copied().collect();
    let missing: Vec<&str> = settings.difference(&names).copied().collect();
    assert!(
        unknown.is_empty() && missing.is_empty(),
        "the CronJob's environment and `pod-rebalancer --help` disagree: unknown {unknown:?}, missing {missing:?}"
    );

    let namespace = env
        .iter()
        .find(|e| e["name"] == "KUBE_NAMESPACE")
        .expect("KUBE_NAMESPACE");
    assert_eq!(
        namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace",
        "the target namespace is the one the Role grants access in"
    );
    let push = data["METRICS_PUSH_URL"].as_str().expect("METRICS_PUSH_URL");
    assert!(
        push.split('?').next().unwrap().ends_with("/api/v1/import/prometheus"),
        "the example pushes to a VictoriaMetrics import endpoint: {push}"
    );
    // Nothing to write a metrics file to (read-only root, no volume): unset.
    assert_eq!(data["METRICS_FILE"], "", "METRICS_FILE is unset in the base");
}

/// The base's environment as the container would get it, with DEPLOYMENT_NAME
/// as given and every address pointed at a closed loopback port.
fn base_environment(deployment: &str, dir: &Path) -> Vec<(String, String)> {
    let (data, plain) = environment(base());
    let mut env: Vec<(String, String)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect();
    // The container's own entries with a plain value (STATE_CONFIGMAP).
    for entry in &plain {
        if let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_str()) {
            env.push((name.to_owned(), value.to_owned()));
        }
    }
    for (key, value) in env.iter_mut() {
        match key.as_str() {
            "DEPLOYMENT_NAME" => *value = deployment.to_owned(),
            // Same path and query, a closed port instead of the cluster's service.
            "METRICS_PUSH_URL" | "PROMETHEUS_ENDPOINT" => {
                let after_scheme = value.split_once("://").expect("URL").1;
                let rest = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
                *value = format!("http://127.0.0.1:9{rest}");
            }
            "METRICS_FILE" => *value = dir.join("metrics.prom").display().to_string(),
            "KUBE_SERVICE_ACCOUNT_DIR" => *value = dir.display().to_string(),
            _ => {}
        }
    }
    env.push(("KUBE_NAMESPACE".into(), "posthog".into()));
    env.push(("KUBE_API_URL".into(), "http://127.0.0.1:9".into()));
    env
}

#[test]
fn base_environment_is_a_valid_configuration_once_deployment_name_is_set() {
    let dir = TempDir::new("manifest-env");
    let out = run_bin(&[], &base_environment("ingestion-consumer", dir.path()));
    // Exit 1: the configuration was accepted and the run failed on the closed
    // port; a rejected setting would be exit 2.
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stderr.contains("configuration"), "{}", out.stderr);
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);
}

#[test]
fn placeholder_deployment_name_stops_every_run_before_any_request() {
    let dir = TempDir::new("manifest-placeholder");
    let out = run_bin(&[], &base_environment("CHANGE-ME", dir.path()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    // The base logs JSON: so are the configuration problems, one object a line.
    let problems: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!problems.is_empty(), "{}", out.stderr);
    for line in problems {
        let msg = line["msg"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("configuration: DEPLOYMENT_NAME"),
            "only the placeholder is wrong: {line}"
        );
        assert_eq!(line["level"], "error");
    }
}

#[test]
fn rule_resources_carry_the_rules_files_groups() {
    let groups = &rule_groups(&rules_file());
    assert!(
        groups[0]["rules"].as_array().is_some_and(|r| r.len() >= 5),
        "the seed's five alerts at least: {groups}"
    );

    let objects = with_components(&["prometheusrule", "vmrule"]);
    for (kind, api_version) in [
        ("PrometheusRule", "monitoring.coreos.com/v1"),
        ("VMRule", "operator.victoriametrics.com/v1beta1"),
    ] {
        let resource = the(&objects, kind);
        assert_eq!(resource["apiVersion"], api_version);
        assert_eq!(
            &resource["spec"]["groups"], groups,
            "{kind} differs from the rules file: run .ci/packaging.sh regenerate-rules"
        );
    }
}

/// The files the README prints: every ```yaml block whose first line is a comment
/// naming its file (`# ingestion/kustomization.yaml`, `# install/metrics-credentials.yaml`),
/// by that path.
fn readme_files() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut block, line.trim()) {
            (None, "```yaml") => block = Some(Vec::new()),
            (Some(lines), "```") => {
                let path = lines
                    .first()
                    .and_then(|l| l.strip_prefix("# "))
                    .and_then(|l| l.split_whitespace().next())
                    .filter(|p| p.contains('/') && p.ends_with(".yaml"));
                if let Some(path) = path {
                    out.push((path.to_owned(), lines.join("\n") + "\n"));
                }
                block = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    out
}

/// The README file at `path`.
fn readme_overlay(path: &str) -> String {
    let overlays = readme_files();
    overlays
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, text)| text.clone())
        .unwrap_or_else(|| {
            panic!(
                "the README prints no file {path}; it has {:?}",
                overlays.iter().map(|(p, _)| p).collect::<Vec<_>>()
            )
        })
}

/// A directory laid out as the README's overlays expect: `pod-rebalancer/` (a
/// checkout of this repository; here a symbolic link to it) beside the overlays,
/// which are written at `files`' paths.
/// The README's overlay `dir/kustomization.yaml`, and what it renders alone beside
/// the checkout.
fn render_readme_overlay(dir: &str) -> (String, Vec<Value>) {
    let path = format!("{dir}/kustomization.yaml");
    let text = readme_overlay(&path);
    let tree = overlay_tree(&[(path, text.clone())]);
    let objects = render(&tree.path().join(dir));
    (text, objects)
}

fn overlay_tree(files: &[(String, String)]) -> TempDir {
    let dir = TempDir::new("readme-overlay");
    std::os::unix::fs::symlink(root(), dir.path().join("pod-rebalancer")).expect("link the checkout");
    for (path, text) in files {
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a directory")).expect("overlay directory");
        std::fs::write(&file, text).expect("write overlay");
    }
    dir
}

/// The value of `NAME=value` among a kustomization's literals.
fn literal<'a>(kustomization: &'a str, name: &str) -> &'a str {
    let prefix = format!("- {name}=");
    kustomization
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} literal in\n{kustomization}"))
}

/// The labels of the recording rule `pod_rebalancer:expected` of a rule resource:
/// the (namespace, deployment) its PodRebalancerNotRunning expects to hear from.
fn expected_target(rule_resource: &Value) -> (String, String) {
    let rule = rule_resource["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .find(|r| r["record"] == "pod_rebalancer:expected")
        .unwrap_or_else(|| panic!("no pod_rebalancer:expected in {rule_resource}"));
    let label = |k: &str| rule["labels"][k].as_str().expect("label").to_owned();
    (label("namespace"), label("deployment"))
}

#[test]
fn readme_overlay_installs_one_rebalancer_from_a_relative_path() {
    let (text, objects) = render_readme_overlay("ingestion");
    for object in &objects {
        assert_eq!(object["metadata"]["namespace"], "ingestion", "{object}");
    }
    // What the text says to set reaches the CronJob, in place of the base's values.
    let (data, _) = environment(&objects);
    let (base_data, _) = environment(base());
    for name in [
        "DEPLOYMENT_NAME",
        "KUBE_LABEL_SELECTOR",
        "PROMETHEUS_ENDPOINT",
        "METRICS_PUSH_URL",
    ] {
        assert_eq!(data[name], literal(&text, name), "{name}");
        assert_ne!(data[name], base_data[name], "{name} is still the base's");
    }
    assert_eq!(grants(&objects), expected_grants(EVICT, &state_configmap(&objects)));
    // The alert rules expect this rebalancer, in either component.
    let target = ("ingestion".to_owned(), literal(&text, "DEPLOYMENT_NAME").to_owned());
    assert_eq!(expected_target(the(&objects, "VMRule")), target);
    let prometheus = text.replace("components/vmrule", "components/prometheusrule");
    assert_ne!(prometheus, text, "the README overlay includes components/vmrule");
    let tree = overlay_tree(&[("ingestion/kustomization.yaml".into(), prometheus)]);
    let objects = render(&tree.path().join("ingestion"));
    assert_eq!(expected_target(the(&objects, "PrometheusRule")), target);

    // As the README says, kustomize refuses the same overlay with an absolute path.
    let absolute = text.replace(
        "../pod-rebalancer/manifests",
        &root().join("manifests").display().to_string(),
    );
    assert_ne!(absolute, text, "the README overlay names ../pod-rebalancer/manifests");
    let tree = overlay_tree(&[("absolute/kustomization.yaml".into(), absolute)]);
    let out = kubectl_output(
        &["kustomize", &tree.path().join("absolute").display().to_string()],
        None,
    );
    assert!(!out.status.success(), "kustomize took an absolute path");
    assert_contains(&String::from_utf8_lossy(&out.stderr), "cannot be absolute");
}

#[test]
fn readme_overlays_install_two_rebalancers_in_one_namespace_without_collisions() {
    // The README prints the namespace's overlay and ingestion-consumer's, and says
    // events-consumer's is the same with its own name.
    let parent = readme_overlay("consumers/kustomization.yaml");
    let ingestion = readme_overlay("consumers/ingestion-consumer/kustomization.yaml");
    let events = ingestion.replace("ingestion-consumer", "events-consumer");
    let tree = overlay_tree(&[
        ("consumers/kustomization.yaml".into(), parent),
        ("consumers/ingestion-consumer/kustomization.yaml".into(), ingestion),
        ("consumers/events-consumer/kustomization.yaml".into(), events),
    ]);
    let objects = render(&tree.path().join("consumers"));

    let mut seen = BTreeSet::new();
    for object in &objects {
        let id = (object["kind"].to_string(), object["metadata"]["name"].to_string());
        assert!(seen.insert(id.clone()), "two objects are {id:?}");
        assert_eq!(object["metadata"]["namespace"], "consumers", "{object}");
    }

    let cronjobs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "CronJob").collect();
    assert_eq!(cronjobs.len(), 2);
    let rule_resources: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "VMRule").collect();
    let mut targets = BTreeSet::new();
    for cronjob in cronjobs {
        // CronJob → ServiceAccount → RoleBinding → Role: the Role this run acts with.
        let account = &pod_spec_of(cronjob)["serviceAccountName"];
        let binding = objects
            .iter()
            .find(|o| o["kind"] == "RoleBinding" && o["subjects"][0]["name"] == *account)
            .unwrap_or_else(|| panic!("no RoleBinding for {account}"));
        assert_eq!(binding["subjects"].as_array().map(Vec::len), Some(1));
        let role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == binding["roleRef"]["name"])
            .expect("the bound Role");
        // Its own state ConfigMap, rendered and empty, and the only one its Role reaches.
        let state = state_configmap_of(&objects, cronjob, role);
        assert_eq!(role_grants(role), expected_grants(EVICT, &state));

        let (data, _) = environment_of(&objects, cronjob);
        let deployment = data["DEPLOYMENT_NAME"].as_str().expect("DEPLOYMENT_NAME").to_owned();
        assert!(
            state.starts_with(&deployment),
            "{deployment}'s state ConfigMap is {state}"
        );
        // Its metrics are labelled with its own target, and its rules expect it.
        let target = ("consumers".to_owned(), deployment);
        assert!(
            targets.insert(target.clone()),
            "two rebalancers label their metrics {target:?}"
        );
        assert!(
            rule_resources.iter().any(|r| expected_target(r) == target),
            "no rule resource expects {target:?}"
        );
    }
    assert_eq!(
        targets,
        BTreeSet::from([
            ("consumers".to_owned(), "events-consumer".to_owned()),
            ("consumers".to_owned(), "ingestion-consumer".to_owned()),
        ])
    );
}

// Fleet mode (SPEC §13, components/fleet) ------------------------------------

/// What fleet mode needs of a rendering, as a list of what is wrong: the targets
/// chosen by label, no DEPLOYMENT_NAME, no pod selector, the removal budget shown,
/// and `list` on every Deployment instead of `get`. Empty when all is right.
fn fleet_problems(objects: &[Value]) -> Vec<String> {
    let (data, _) = environment(objects);
    let mut problems = Vec::new();
    for (name, wanted) in [
        ("TARGET_SELECTOR", "pod-rebalancer.io/enabled=true"),
        ("DEPLOYMENT_NAME", ""),
        ("KUBE_LABEL_SELECTOR", ""),
        ("MAX_REMOVALS_PER_RUN", "4"),
    ] {
        let got = data.get(name).and_then(Value::as_str);
        if got != Some(wanted) {
            problems.push(format!("{name} is {got:?}, not {wanted:?}"));
        }
    }
    let on_deployments: BTreeSet<(String, String)> = grants(objects)
        .into_iter()
        .filter(|(group, resource, _, _)| group == "apps" && resource == "deployments")
        .map(|(_, _, verb, name)| (verb, name))
        .collect();
    if on_deployments != BTreeSet::from([("list".to_owned(), "*".to_owned())]) {
        problems.push(format!(
            "the Role grants {on_deployments:?} on deployments, not list on every one"
        ));
    }
    problems
}

/// `expected_grants` as fleet mode needs them: `list` deployments in place of `get`.
fn expected_fleet_grants(removal: (&str, &str, &str), state: &str) -> BTreeSet<Grant> {
    let mut out = expected_grants(removal, state);
    let get = ("apps".into(), "deployments".into(), "get".into(), "*".into());
    assert!(out.remove(&get));
    out.insert(("apps".into(), "deployments".into(), "list".into(), "*".into()));
    out
}

#[test]
fn fleet_component_selects_targets_by_label_and_lists_deployments_instead_of_getting_one() {
    let objects = with_components(&["fleet"]);
    assert_eq!(fleet_problems(&objects), Vec::<String>::new());
    assert_eq!(
        grants(&objects),
        expected_fleet_grants(EVICT, &state_configmap(&objects))
    );

    // The environment is the base's with the fleet's settings on top, nothing else.
    let (data, env) = environment(&objects);
    let (base_data, base_env) = environment(base());
    let names: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = base_data.keys().map(String::as_str).collect();
    assert_eq!(names, wanted);
    for (name, value) in &base_data {
        if !["DEPLOYMENT_NAME", "KUBE_LABEL_SELECTOR", "TARGET_SELECTOR"].contains(&name.as_str()) {
            assert_eq!(&data[name], value, "{name} differs from the base's");
        }
    }
    assert_eq!(env, base_env, "the container's own env entries are the base's");

    // The CronJob is the base's but for the name of its generated settings.
    let settings_name =
        |objects: &[Value]| pod_spec(objects)["containers"][0]["envFrom"][0]["configMapRef"]["name"].clone();
    let mut fleet_cronjob = cronjob(&objects).clone();
    let mut base_cronjob = cronjob(base()).clone();
    assert_ne!(settings_name(&objects), settings_name(base()), "the settings changed");
    for cronjob in [&mut fleet_cronjob, &mut base_cronjob] {
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["envFrom"] = Value::Null;
    }
    assert_eq!(fleet_cronjob, base_cronjob);
}

#[test]
fn the_fleet_checks_fail_on_the_single_mode_base() {
    let problems = fleet_problems(base());
    // The base carries MAX_REMOVALS_PER_RUN at its default too (it names every
    // setting), so that check passes on it.
    for name in [
        "TARGET_SELECTOR",
        "DEPLOYMENT_NAME",
        "KUBE_LABEL_SELECTOR",
        "deployments",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(name)),
            "the base passes the fleet check on {name}: {problems:?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:?}");
}

#[test]
fn fleet_component_combines_with_delete_mode() {
    for components in [["fleet", "delete-mode"], ["delete-mode", "fleet"]] {
        let objects = with_components(&components);
        assert_eq!(fleet_problems(&objects), Vec::<String>::new(), "{components:?}");
        assert_eq!(
            grants(&objects),
            expected_fleet_grants(DELETE, &state_configmap(&objects)),
            "{components:?}"
        );
        assert_eq!(environment(&objects).0["EVICTION_MODE"], "delete");
    }
}

#[test]
fn fleet_rule_resources_expect_the_namespace_without_a_deployment_in_either_order() {
    for (components, kind) in [
        (["fleet", "vmrule"], "VMRule"),
        (["vmrule", "fleet"], "VMRule"),
        (["fleet", "prometheusrule"], "PrometheusRule"),
        (["prometheusrule", "fleet"], "PrometheusRule"),
    ] {
        let objects = with_components(&components);
        let resource = the(&objects, kind);
        assert_eq!(
            expected_target(resource),
            ("posthog".to_owned(), String::new()),
            "{components:?}"
        );
        // Only that label differs from the rules file.
        let mut groups = resource["spec"]["groups"].clone();
        groups[0]["rules"][0]["labels"]["deployment"] = "CHANGE-ME".into();
        assert_eq!(groups, rule_groups(&rules_file()), "{components:?}");
    }
}

/// Runs promtool (Debian's `prometheus` package) in `dir`.
fn promtool(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool is required by the rule tests (apt-get install prometheus): {e}"))
}

/// `promtool test rules` of `tests`, a unit-test file whose `rule_files` is
/// `[rules.yml]`, with the rule groups `groups` (as a rule resource's `spec.groups`)
/// written as `rules.yml` (JSON is YAML).
fn promtool_test(groups: &Value, tests: &str) {
    let dir = TempDir::new("promtool");
    let rules = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join("rules.yml"), rules.to_string()).expect("write rules");
    std::fs::write(dir.path().join("tests.yml"), tests).expect("write tests");
    let out = promtool(dir.path(), &["test", "rules", "tests.yml"]);
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\n{tests}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const NOT_RUNNING_RUNBOOK: &str =
    "https://github.com/pod-rebalancer/pod-rebalancer/blob/main/README.md#podrebalancernotrunning";

#[test]
fn readme_fleet_overlay_renders_fleet_mode_and_its_rules_fire_once_for_a_dead_fleet() {
    let (text, objects) = render_readme_overlay("fleet");
    for object in &objects {
        assert_eq!(object["metadata"]["namespace"], "consumers", "{object}");
    }
    assert_eq!(fleet_problems(&objects), Vec::<String>::new());
    assert_eq!(
        grants(&objects),
        expected_fleet_grants(EVICT, &state_configmap(&objects))
    );
    let (data, _) = environment(&objects);
    for name in ["PROMETHEUS_ENDPOINT", "METRICS_PUSH_URL"] {
        assert_eq!(data[name], literal(&text, name), "{name}");
    }
    let push = data["METRICS_PUSH_URL"].as_str().expect("METRICS_PUSH_URL");
    assert!(
        push.split('?').next().unwrap().ends_with("/api/v1/import/prometheus"),
        "the fleet example pushes to VictoriaMetrics' import: {push}"
    );
    let rules = the(&objects, "VMRule");
    assert_eq!(expected_target(rules), ("consumers".to_owned(), String::new()));

    // Its own rule resource under promtool: two targets, the fleet's CronJob dies
    // after the run at 60 minutes; one alert, for the namespace, 20 minutes later.
    let tests = format!(
        r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 5m
    input_series:
      - series: 'rebalancer_targets{{namespace="consumers",outcome="balanced"}}'
        values: '2x12'
      - series: 'rebalancer_targets{{namespace="consumers",outcome="error"}}'
        values: '0x12'
      - series: 'rebalancer_last_run_timestamp_seconds{{namespace="consumers",deployment="orders-consumer"}}'
        values: '0+300x12'
      - series: 'rebalancer_last_run_timestamp_seconds{{namespace="consumers",deployment="events-consumer"}}'
        values: '0+300x12'
    alert_rule_test:
      - eval_time: 80m
        alertname: PodRebalancerNotRunning
        exp_alerts: []
      - eval_time: 81m
        alertname: PodRebalancerNotRunning
        exp_alerts:
          - exp_labels:
              severity: warning
              namespace: consumers
            exp_annotations:
              summary: the fleet pod-rebalancer of namespace consumers has written no metrics for 20 minutes
              description: 'No run of the rebalancer of the Deployments labelled with its TARGET_SELECTOR in namespace consumers has pushed its metrics in the last 20 minutes, or none ever has. Look at its CronJob and Jobs: suspended, image pull, exit 2 on the configuration, OOM, deadline, or the push to METRICS_PUSH_URL failing.'
              runbook_url: {NOT_RUNNING_RUNBOOK}
"#
    );
    promtool_test(&rules["spec"]["groups"], &tests);
}

// Several clusters in one store (METRICS_LABELS) ------------------------------

/// The `(name, value)` pairs of a `METRICS_LABELS` value: `cluster="prod-eu-1",…`.
fn metrics_labels(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .map(|pair| {
            let (name, quoted) = pair.split_once('=').expect("name=\"value\"");
            let value = quoted
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("a quoted value");
            (name.trim().to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn readme_cluster_overlay_expects_its_rebalancer_with_the_cluster_its_metrics_carry() {
    let (_, objects) = render_readme_overlay("prod-eu-1");
    let (data, _) = environment(&objects);
    let labels = metrics_labels(data["METRICS_LABELS"].as_str().expect("METRICS_LABELS"));
    assert_eq!(labels, [("cluster".to_owned(), "prod-eu-1".to_owned())]);
    let rules = the(&objects, "VMRule");
    let expected = &rules["spec"]["groups"][0]["rules"][0];
    assert_eq!(expected["record"], "pod_rebalancer:expected");
    assert_eq!(expected["labels"]["cluster"], "prod-eu-1");
    assert_eq!(
        expected_target(rules),
        ("ingestion".to_owned(), "ingestion-consumer".to_owned())
    );

    // Under promtool: its own rebalancer running with the label is not
    // NotRunning, whatever another cluster does; the same rebalancer without the
    // label (METRICS_LABELS forgotten) is.
    let tests = format!(
        r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 5m
    input_series:
      - series: 'rebalancer_last_run_timestamp_seconds{{cluster="prod-eu-1",namespace="ingestion",deployment="ingestion-consumer"}}'
        values: '0+300x24'
      - series: 'rebalancer_last_run_timestamp_seconds{{cluster="prod-us-1",namespace="ingestion",deployment="ingestion-consumer"}}'
        values: '0'
    alert_rule_test:
      - eval_time: 2h
        alertname: PodRebalancerNotRunning
        exp_alerts: []
  - interval: 5m
    input_series:
      - series: 'rebalancer_last_run_timestamp_seconds{{namespace="ingestion",deployment="ingestion-consumer"}}'
        values: '0+300x24'
    alert_rule_test:
      - eval_time: 10m
        alertname: PodRebalancerNotRunning
        exp_alerts:
          - exp_labels:
              severity: warning
              cluster: prod-eu-1
              namespace: ingestion
              deployment: ingestion-consumer
            exp_annotations:
              summary: pod-rebalancer for ingestion/ingestion-consumer has written no metrics for 20 minutes
              description: 'No run of the rebalancer of Deployment ingestion-consumer in namespace ingestion has pushed its metrics in the last 20 minutes, or none ever has. Look at its CronJob and Jobs: suspended, image pull, exit 2 on the configuration, OOM, deadline, or the push to METRICS_PUSH_URL failing.'
              runbook_url: {NOT_RUNNING_RUNBOOK}
"#
    );
    promtool_test(&rules["spec"]["groups"], &tests);
}

/// Every `by (…)`/`on (…)` list of the alert expressions that does not start with
/// `cluster, namespace`, and every `without`/`ignoring`; and every annotation query
/// that does not select `cluster`.
fn key_problems(rules: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for group in rule_groups(rules).as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let Some(expr) = rule["expr"].as_str() else { continue };
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?");
            for keyword in ["without", "ignoring"] {
                if expr.contains(keyword) {
                    problems.push(format!("{name}: {keyword}"));
                }
            }
            for keyword in ["by (", "on ("] {
                for (i, _) in expr.match_indices(keyword) {
                    let list = &expr[i + keyword.len()..];
                    let list = &list[..list.find(')').expect("a closing parenthesis")];
                    if !list.starts_with("cluster, namespace") {
                        problems.push(format!("{name}: {keyword}{list})"));
                    }
                }
            }
            for text in rule["annotations"].as_object().into_iter().flat_map(|a| a.values()) {
                let text = text.as_str().unwrap_or_default();
                for (i, _) in text.match_indices("{namespace=") {
                    problems.push(format!("{name}: a query without cluster at {i}"));
                }
            }
        }
    }
    problems
}

#[test]
fn every_aggregation_and_match_of_the_rules_keeps_the_cluster_label() {
    let rules = rules_file();
    assert_eq!(key_problems(&rules), Vec::<String>::new());
    // The check finds a rule that drops it.
    let dropped = rules.replacen(
        "by (cluster, namespace, deployment) (last_over_time(rebalancer_pods_matched[10m]))",
        "by (namespace, deployment) (last_over_time(rebalancer_pods_matched[10m]))",
        1,
    );
    assert_ne!(
        dropped, rules,
        "the rules no longer have the expression this test changes"
    );
    assert_eq!(key_problems(&dropped).len(), 1, "{:?}", key_problems(&dropped));
}

/// The rules file and its promtool tests, as files in a new directory, after `edit`.
fn rules_and_tests(edit: impl Fn(&str) -> String) -> TempDir {
    let dir = TempDir::new("rules");
    for name in ["pod-rebalancer.rules.yml", "pod-rebalancer.rules.test.yml"] {
        let text = std::fs::read_to_string(manifests().join("alerts").join(name)).expect("rules");
        std::fs::write(dir.path().join(name), edit(&text)).expect("write rules");
    }
    dir
}

#[test]
fn the_rules_pass_their_promtool_tests_and_still_do_with_the_cluster_label_renamed() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert_contains(
        &readme,
        "sed 's/cluster/k8s_cluster/g' manifests/alerts/pod-rebalancer.rules.yml",
    );
    for (what, dir) in [
        ("as shipped", rules_and_tests(str::to_owned)),
        (
            "renamed as the README says",
            rules_and_tests(|text| text.replace("cluster", "k8s_cluster")),
        ),
    ] {
        let out = promtool(dir.path(), &["test", "rules", "pod-rebalancer.rules.test.yml"]);
        assert!(
            out.status.success(),
            "the rules {what} fail their tests:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// The README's install (issue 21) ----------------------------------------------

#[test]
fn readme_install_overlay_mounts_the_metrics_credentials_read_only_and_pins_the_image_by_digest() {
    let files = ["install/kustomization.yaml", "install/metrics-credentials.yaml"]
        .map(|path| (path.to_owned(), readme_overlay(path)));
    let text = files[0].1.clone();
    let tree = overlay_tree(&files);
    let objects = render(&tree.path().join("install"));
    for object in &objects {
        assert_eq!(object["metadata"]["namespace"], "ingestion", "{object}");
    }
    assert_eq!(grants(&objects), expected_grants(EVICT, &state_configmap(&objects)));

    // The image by digest, in place of the base's tag.
    let pod = pod_spec(&objects);
    let container = &pod["containers"][0];
    let image = container["image"].as_str().expect("image");
    let digest = image
        .strip_prefix("registry.internal/pod-rebalancer@sha256:")
        .unwrap_or_else(|| panic!("{image} is not pinned by digest"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{image}"
    );

    // One volume, the Secret, mounted read-only where the settings look.
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["secret"]["secretName"], "pod-rebalancer-metrics");
    assert_eq!(volumes[0]["secret"]["defaultMode"], 0o444);
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["name"], volumes[0]["name"]);
    assert_eq!(mounts[0]["readOnly"], true);
    let mount = mounts[0]["mountPath"].as_str().expect("mountPath");
    let (data, _) = environment(&objects);
    for name in ["PROMETHEUS_CA_FILE", "PROMETHEUS_BEARER_TOKEN_FILE"] {
        let path = data[name].as_str().expect(name);
        assert_eq!(path, literal(&text, name));
        assert!(
            path.starts_with(&format!("{mount}/")),
            "{name}={path} is not in the mounted Secret {mount}"
        );
    }

    // The hardened security context is the base's, untouched.
    let base_pod = pod_spec(base());
    assert_eq!(pod["securityContext"], base_pod["securityContext"]);
    assert_eq!(
        container["securityContext"],
        base_pod["containers"][0]["securityContext"]
    );
    assert_eq!(container["resources"], base_pod["containers"][0]["resources"]);

    // A Pushgateway overwrites the labels of its grouping key in every sample:
    // they must be this install's namespace and DEPLOYMENT_NAME.
    let push = data["METRICS_PUSH_URL"].as_str().expect("METRICS_PUSH_URL");
    let key = push.split_once("/metrics/").expect("a Pushgateway URL").1;
    let segments: Vec<&str> = key.split('/').collect();
    assert_eq!(
        segments,
        [
            "job",
            "pod-rebalancer",
            "namespace",
            "ingestion",
            "deployment",
            data["DEPLOYMENT_NAME"].as_str().expect("DEPLOYMENT_NAME"),
        ]
    );
    assert_eq!(
        expected_target(the(&objects, "PrometheusRule")),
        ("ingestion".to_owned(), "ingestion-consumer".to_owned())
    );
}
