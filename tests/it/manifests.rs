//! Checks of the shipped manifests: what `kubectl kustomize` renders is read back
//! as JSON and held to what the README and SPEC §10 promise, so that a later edit
//! cannot silently widen the RBAC, drop a CronJob safeguard or a security-context
//! item, name a variable the program does not know, or let the alert resources
//! drift from the rules file. kubectl is required: without it these tests fail.

use crate::support::{TempDir, root, run_bin};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Runs kubectl, feeding it `stdin`, and returns its standard output.
fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
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
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
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

/// Every (API group, resource, verb) the Role grants, one triple per grant, so a
/// wildcard or an extra verb shows up as an extra triple.
fn grants(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let role = the(objects, "Role");
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("Role rules") {
        let keys: BTreeSet<&str> = rule.as_object().expect("rule").keys().map(String::as_str).collect();
        let allowed = BTreeSet::from(["apiGroups", "resources", "verbs"]);
        // resourceNames would only narrow a rule; nonResourceURLs has no place in a Role.
        assert!(keys.is_subset(&allowed), "unexpected fields in rule {rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    out
}

fn triples(list: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

fn cronjob(objects: &[Value]) -> &Value {
    the(objects, "CronJob")
}

fn pod_spec(objects: &[Value]) -> &Value {
    &cronjob(objects)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

/// The container's environment: the generated ConfigMap it loads, then its own
/// `env` entries (which win), by name.
fn environment(objects: &[Value]) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let containers = pod_spec(objects)["containers"].as_array().expect("containers");
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
    assert_eq!(
        got,
        [
            "ConfigMap",
            "CronJob",
            "PersistentVolumeClaim",
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
    assert_eq!(
        grants(base()),
        triples(&[
            ("apps", "deployments", "get"),
            ("", "pods", "list"),
            ("", "pods/eviction", "create"),
            ("", "events", "create"),
        ])
    );
}

#[test]
fn delete_mode_swaps_the_eviction_grant_for_delete_and_sets_the_mode() {
    let objects = with_components(&["delete-mode"]);
    assert_eq!(
        grants(&objects),
        triples(&[
            ("apps", "deployments", "get"),
            ("", "pods", "list"),
            ("", "pods", "delete"),
            ("", "events", "create"),
        ])
    );
    let (data, _) = environment(&objects);
    assert_eq!(data["EVICTION_MODE"], "delete");
    let (base_data, _) = environment(base());
    assert_eq!(base_data["EVICTION_MODE"], "evict");
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
    for volume in pod["volumes"].as_array().expect("volumes") {
        assert!(volume["hostPath"].is_null(), "no hostPath volume: {volume}");
    }
    for container in pod["containers"].as_array().expect("containers") {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["runAsNonRoot"], true);
        assert_ne!(security["privileged"], true);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(security["capabilities"]["add"].is_null(), "no capability added");
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
    assert_eq!(
        names, settings,
        "the CronJob's environment and `pod-rebalancer --help` disagree"
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
    // The metrics file must outlive the run for the counters to carry on.
    let file = data["METRICS_FILE"].as_str().expect("METRICS_FILE");
    let pod = pod_spec(objects);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or("?"))))
        .unwrap_or_else(|| panic!("METRICS_FILE {file} is on no mounted volume"));
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let claim = volume["persistentVolumeClaim"]["claimName"].as_str().expect("a PVC");
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "PersistentVolumeClaim" && o["metadata"]["name"] == claim),
        "PVC {claim} is rendered"
    );
}

/// The base's environment as the container would get it, with DEPLOYMENT_NAME
/// as given and every address pointed at a closed loopback port.
fn base_environment(deployment: &str, dir: &Path) -> Vec<(String, String)> {
    let (data, _) = environment(base());
    let mut env: Vec<(String, String)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect();
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
