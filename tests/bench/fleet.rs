//! The workload: N pods of one Deployment (single mode), or T Deployments of P pods
//! each (fleet mode, SPEC §13), shaped like the recorded kind v1.36 pod (managed
//! fields, probes, volumes, env, two containers, about 6 KB of JSON each), the
//! Deployment or the Deployment list, and a VictoriaMetrics answer for the pods.
//! Everything is serialized once, up front, so the server only copies bytes. A pod's
//! keys come out sorted (serde_json's map), which none of the three clients cares
//! about; the metrics answer is written by hand because its key order does matter
//! (see there).

use crate::files::fixture;
// A benchmark may use the product's own formatter (tests keep an independent one).
use pod_rebalancer::clock::format_rfc3339 as rfc3339;
use serde_json::{Value, json};

pub const NAMESPACE: &str = "posthog";
pub const DEPLOYMENT: &str = "consumer";
pub const SELECTOR: &str = "app=consumer";
const HASH: &str = "5f7c9d8b4d";
/// Fleet mode's targets: every Deployment of the namespace so labelled.
pub const TARGET_SELECTOR: &str = "pod-rebalancer.io/enabled=true";
/// Fleet mode's removal budget (`MAX_REMOVALS_PER_RUN`, its default, set explicitly).
pub const MAX_REMOVALS: usize = 4;
/// The default `CPU_VARIANCE_THRESHOLD`, which every target keeps.
const THRESHOLD: f64 = 0.3;
/// The log shipper beside every pod's main container.
const SIDECAR: &str = "vector";

/// Serialized list items, each followed by a comma: a page is one slice.
#[derive(Default)]
pub struct Items {
    bytes: Vec<u8>,
    /// Where item `i` starts in `bytes`; `starts[n]` is the end (so `n + 1` entries).
    starts: Vec<usize>,
}

impl Items {
    fn with_capacity(n: usize, bytes_each: usize) -> Items {
        let mut starts = Vec::with_capacity(n + 1);
        starts.push(0);
        Items {
            bytes: Vec::with_capacity(n * bytes_each),
            starts,
        }
    }

    fn push(&mut self, item: &Value) {
        serde_json::to_writer(&mut self.bytes, item).expect("serialize item");
        self.bytes.push(b',');
        self.starts.push(self.bytes.len());
    }

    /// The number of items.
    pub fn n(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The items `from..to`, comma-separated, without the trailing comma.
    pub fn slice(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        &self.bytes[self.starts[from]..self.starts[to] - 1]
    }

    pub fn mean_bytes(&self) -> usize {
        self.bytes.len() / self.n().max(1)
    }
}

/// The serialized workload and the decision it must lead to.
pub struct Fleet {
    pub pods: Items,
    /// The `labelSelector` the pod list is asked with: single mode's `SELECTOR`;
    /// none in fleet mode, which lists the namespace (`KUBE_LABEL_SELECTOR` unset).
    pub pod_selector: Option<&'static str>,
    /// Single mode's Deployment (empty in fleet mode).
    pub deployment: Vec<u8>,
    /// Fleet mode's Deployments, listed with `TARGET_SELECTOR` (none in single mode).
    pub deployments: Items,
    pub vm_answer: Vec<u8>,
    pub expected: Expected,
}

impl Fleet {
    /// Fleet mode (SPEC §13): the server lists Deployments, not one.
    pub fn fleet_mode(&self) -> bool {
        self.deployments.n() > 0
    }
}

/// What a dry run over the workload must do.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// The pods named "would be evicted", sorted.
    pub evicted: Vec<String>,
    /// Fleet mode: the targets whose plans did not fit in the budget, sorted.
    pub deferred: Vec<String>,
    /// Fleet mode: how many targets end in each outcome (the last log line's words).
    pub outcomes: Vec<(&'static str, usize)>,
    /// Fleet mode: each target that wants removals, worst first, with its spread.
    pub wanting: Vec<(String, f64)>,
    /// Fleet mode: the largest spread of a target that wants none.
    pub calm: f64,
}

/// splitmix64: a deterministic stream of numbers, so every run serves the same fleet.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The ReplicaSet's five-character suffix alphabet (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A unique pod name of `deployment` for index `i` (27^5 names, scrambled so
/// neighbours differ).
fn pod_name(deployment: &str, hash: &str, i: usize) -> String {
    let mut k = (i as u64).wrapping_mul(2_654_435_761) % 14_348_907;
    let mut suffix = [0u8; 5];
    for s in suffix.iter_mut().rev() {
        *s = ALPHABET[(k % 27) as usize];
        k /= 27;
    }
    format!("{deployment}-{hash}-{}", std::str::from_utf8(&suffix).expect("ascii"))
}

fn uid(mix: &mut Mix) -> String {
    let (a, b) = (mix.next(), mix.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

fn hex64(mix: &mut Mix) -> String {
    (0..4).map(|_| format!("{:016x}", mix.next())).collect()
}

/// The recorded JSON of `fixtures/{path}`.
fn read_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).unwrap_or_else(|e| panic!("parse fixtures/{path}: {e}"))
}

/// The recorded coredns pod (`recorded`) turned into the template of a two-container
/// pod of `deployment`, whose main container has the Deployment's name.
fn template(recorded: &Value, deployment: &str) -> Value {
    let mut pod = recorded.clone();
    let spec = pod["spec"].as_object_mut().expect("spec");
    spec.remove("affinity");
    spec.remove("priorityClassName");
    spec["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    ]);
    spec["serviceAccountName"] = json!(deployment);
    spec["serviceAccount"] = json!(deployment);
    spec["volumes"][0] = json!({"name": "config", "configMap": {"name": "consumer-config", "defaultMode": 420}});

    // The main container: the recorded one (probes, security context, mounts), renamed,
    // with the env and resources of an application pod.
    let mut main = spec["containers"][0].clone();
    main["name"] = json!(deployment);
    main["image"] = json!("ghcr.io/posthog/consumer:2026.06.1");
    main["args"] = json!(["--config", "/etc/consumer/config.yaml"]);
    main["ports"] = json!([
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}
    ]);
    main["env"] = json!([
        {"name": "KAFKA_HOSTS", "value": "kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092"},
        {"name": "CONSUMER_GROUP", "value": "ingestion"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}
    ]);
    main["resources"] = json!({"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}});
    main["volumeMounts"][0] = json!({"name": "config", "readOnly": true, "mountPath": "/etc/consumer"});
    main["livenessProbe"]["httpGet"]["port"] = json!("http");
    main["readinessProbe"]["httpGet"]["port"] = json!("http");
    // A log shipper sidecar: small, no probes.
    let sidecar = json!({
        "name": SIDECAR,
        "image": "timberio/vector:0.46.1-distroless-libc",
        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "config", "readOnly": true, "mountPath": "/etc/vector"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    });
    spec["containers"] = json!([main, sidecar]);

    // Managed fields: the controller-manager's entry is the recorded one shortened to
    // the containers' keys; the scheduler's and the kubelet's status entries are kept.
    let managed = pod["metadata"]["managedFields"].as_array_mut().expect("managedFields");
    let mut containers = serde_json::Map::new();
    containers.insert(
        format!("k:{{\"name\":\"{deployment}\"}}"),
        json!({".": {}, "f:args": {}, "f:env": {}, "f:image": {}, "f:livenessProbe": {}, "f:name": {}, "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}, "f:volumeMounts": {}}),
    );
    containers.insert(
        format!("k:{{\"name\":\"{SIDECAR}\"}}"),
        json!({".": {}, "f:image": {}, "f:name": {}, "f:resources": {}, "f:volumeMounts": {}}),
    );
    managed[0]["fieldsV1"]["f:spec"] = json!({
        "f:containers": containers,
        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:serviceAccountName": {}, "f:tolerations": {}, "f:volumes": {}
    });
    managed[0]["fieldsV1"]["f:metadata"]["f:labels"] = json!({".": {}, "f:app": {}, "f:pod-template-hash": {}});
    // The kubelet's entry without the per-condition detail, the scheduler's dropped:
    // that brings the pod to about 6 KB, the size the issue asks for.
    let condition = json!({".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}});
    managed[2]["fieldsV1"] = json!({"f:status": {
        "f:conditions": {
            "k:{\"type\":\"ContainersReady\"}": condition,
            "k:{\"type\":\"Initialized\"}": condition,
            "k:{\"type\":\"Ready\"}": condition
        },
        "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {},
        "f:podIPs": {".": {}, "k:{\"ip\":\"10.244.0.3\"}": {".": {}, "f:ip": {}}}, "f:startTime": {}
    }});
    managed.remove(1);

    let status = &mut pod["status"];
    let mut statuses = status["containerStatuses"][0].clone();
    statuses["name"] = json!(deployment);
    statuses["image"] = json!("ghcr.io/posthog/consumer:2026.06.1");
    for field in ["volumeMounts", "user", "allocatedResources", "resources"] {
        statuses.as_object_mut().expect("status").remove(field);
    }
    let mut vector = statuses.clone();
    vector["name"] = json!(SIDECAR);
    vector["image"] = json!("docker.io/timberio/vector:0.46.1-distroless-libc");
    status["containerStatuses"] = json!([statuses, vector]);
    for field in ["allocatedResources", "resources"] {
        status.as_object_mut().expect("status").remove(field);
    }
    pod
}

/// One Deployment's pod factory: its names, its ReplicaSet and its pod template.
struct Owner {
    deployment: String,
    hash: String,
    rs_uid: String,
    template: Value,
}

impl Owner {
    fn new(recorded: &Value, deployment: &str, hash: &str, mix: &mut Mix) -> Owner {
        Owner {
            deployment: deployment.to_string(),
            hash: hash.to_string(),
            rs_uid: uid(mix),
            template: template(recorded, deployment),
        }
    }

    fn pod_name(&self, i: usize) -> String {
        pod_name(&self.deployment, &self.hash, i)
    }

    /// Pod `i` of this Deployment, Running, Ready and an hour or more old; `unique`
    /// numbers it among every pod served (its node, IPs and timestamps).
    fn pod(&self, i: usize, unique: usize, now: i64, mix: &mut Mix) -> Value {
        let (deployment, hash) = (&self.deployment, &self.hash);
        let u = unique;
        let created = now - 3600 - (u as i64 % 86_400);
        let node = format!("ip-10-{}-{}-{}.ec2.internal", u % 7, (u / 7) % 250, 10 + u % 200);
        let ip = format!("10.{}.{}.{}", 100 + u % 50, (u / 50) % 250, 2 + u % 250);
        let host_ip = format!("10.0.{}.{}", (u / 30) % 250, 10 + u % 200);
        let mut pod = self.template.clone();
        let meta = &mut pod["metadata"];
        meta["name"] = json!(self.pod_name(i));
        meta["generateName"] = json!(format!("{deployment}-{hash}-"));
        meta["namespace"] = json!(NAMESPACE);
        meta["uid"] = json!(uid(mix));
        meta["resourceVersion"] = json!((90_000_000 + u * 7).to_string());
        meta["creationTimestamp"] = json!(rfc3339(created));
        meta["labels"] = json!({"app": deployment, "pod-template-hash": hash});
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deployment}-{hash}"),
            "uid": self.rs_uid, "controller": true, "blockOwnerDeletion": true
        }]);
        for m in meta["managedFields"].as_array_mut().expect("managedFields") {
            m["time"] = json!(rfc3339(created + 2));
        }
        pod["spec"]["nodeName"] = json!(node);
        let status = &mut pod["status"];
        status["hostIP"] = json!(host_ip);
        status["hostIPs"] = json!([{"ip": host_ip}]);
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
        status["startTime"] = json!(rfc3339(created + 1));
        for c in status["conditions"].as_array_mut().expect("conditions") {
            c["lastTransitionTime"] = json!(rfc3339(created + 3));
        }
        for c in status["containerStatuses"].as_array_mut().expect("containerStatuses") {
            c["containerID"] = json!(format!("containerd://{}", hex64(mix)));
            c["state"]["running"]["startedAt"] = json!(rfc3339(created + 2));
        }
        pod
    }

    /// The recorded coredns Deployment as this one, finished rolling out `n` pods.
    fn deployment(&self, recorded: &Value, n: usize) -> Value {
        let mut deployment = recorded.clone();
        deployment["metadata"]["name"] = json!(self.deployment);
        deployment["metadata"]["namespace"] = json!(NAMESPACE);
        deployment["metadata"]["generation"] = json!(3);
        deployment["spec"]["replicas"] = json!(n);
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
            deployment["status"][k] = json!(n);
        }
        deployment["status"]["observedGeneration"] = json!(3);
        deployment
    }
}

fn recorded_pod() -> Value {
    read_json("k8s/podlist_kube-system_kind-v1.36.json")["items"][0].clone()
}

fn recorded_deployment() -> Value {
    read_json("k8s/deploymentlist_coredns_kind-v1.36.json")["items"][0].clone()
}

/// A VictoriaMetrics answer holding `series`. Written by hand to keep VictoriaMetrics'
/// key order (`resultType` before `result`); serde_json's map would sort the keys.
fn vm_answer(series: &[String]) -> Vec<u8> {
    format!(
        r#"{{"status":"success","isPartial":false,"data":{{"resultType":"vector","result":[{}]}},"stats":{{"seriesFetched":"{}","executionTimeMsec":12}}}}"#,
        series.join(","),
        series.len()
    )
    .into_bytes()
}

/// Single mode: a fleet of `n` pods of one Deployment, all Running, Ready and an hour
/// or more old, whose CPU spread is far above the default threshold: pod `n/3` is
/// made the coldest and pod `2n/3` the hottest, so the decision is known in advance.
/// Callers ask for `n >= 10` (two pods at least keep the two apart). The answer has
/// one series per pod, as the query names the container (`sum by (pod)`).
pub fn build(n: usize, now: i64) -> Fleet {
    let recorded = recorded_pod();
    let mut mix = Mix(0x5eed_0000 + n as u64);
    let owner = Owner::new(&recorded, DEPLOYMENT, HASH, &mut mix);
    let (cold, hot) = (n / 3, 2 * n / 3);
    let mut pods = Items::with_capacity(n, 6200);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        pods.push(&owner.pod(i, i, now, &mut mix));
        let cpu = match i {
            _ if i == hot => 3.5,
            _ if i == cold => 0.01,
            _ => 0.2 + 1.6 * mix.unit(),
        };
        let name = owner.pod_name(i);
        samples.push(format!(r#"{{"metric":{{"pod":"{name}"}},"value":[{now},"{cpu}"]}}"#));
    }
    let mut evicted = vec![owner.pod_name(hot), owner.pod_name(cold)];
    evicted.sort_unstable();
    Fleet {
        pods,
        pod_selector: Some(SELECTOR),
        deployment: serde_json::to_vec(&owner.deployment(&recorded_deployment(), n)).expect("deployment"),
        deployments: Items::default(),
        vm_answer: vm_answer(&samples),
        expected: Expected {
            evicted,
            ..Expected::default()
        },
    }
}

/// The name of fleet target `t`.
pub fn target_name(t: usize) -> String {
    format!("{DEPLOYMENT}-{t:02}")
}

/// A population coefficient of variation, the spread SPEC §6 compares with the
/// threshold; written out here so that the check does not lean on the code it checks.
fn spread(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    variance.sqrt() / mean
}

/// Fleet mode: `targets` Deployments labelled `TARGET_SELECTOR`, `per_target` pods
/// each (`per_target >= 10`), every pod as single mode's. Each target's main
/// container bears its name (the default container, no annotation). Its pods burn
/// `1 + a·d` cores: `d` drawn from [-0.5, 0.5], its pod `P/3` at -0.6 (the coldest)
/// and `2P/3` at 2.5 (the hottest); `a` from [0.1, 0.5] (balanced: spread 0.19 at
/// most at 100 × 100) except for every fourth target, `a` from [1.0, 1.5] (spread
/// 0.37 to 0.56 at 100 × 100, wanting the hottest and the coldest pod removed); none
/// within 0.05 of the threshold, which is asserted. The budget serves the worst of
/// those first (spread / threshold; all at the default threshold): the first
/// `MAX_REMOVALS / 2` act, the others are deferred.
///
/// The answer is that of the query without a container matcher (`sum by (pod,
/// container)`), per pod three series as cAdvisor on containerd gives them: the main
/// container, the sidecar, and one without a `container` label (the pod's cgroup and
/// its pause container, whose `container` is empty).
pub fn build_targets(targets: usize, per_target: usize, now: i64) -> Fleet {
    let (recorded, recorded_deployment) = (recorded_pod(), recorded_deployment());
    let mut mix = Mix(0xf1ee_7000 + (targets * per_target) as u64);
    let mut pods = Items::with_capacity(targets * per_target, 6200);
    let mut deployments = Items::with_capacity(targets, 7000);
    let mut series = Vec::with_capacity(3 * targets * per_target);
    let mut wanting: Vec<(String, f64, [String; 2])> = Vec::new();
    let mut calm = 0.0_f64;
    let (cold, hot) = (per_target / 3, 2 * per_target / 3);
    for t in 0..targets {
        let name = target_name(t);
        let hash: String = (0..10)
            .map(|_| ALPHABET[(mix.next() % ALPHABET.len() as u64) as usize] as char)
            .collect();
        let owner = Owner::new(&recorded, &name, &hash, &mut mix);
        let mut deployment = owner.deployment(&recorded_deployment, per_target);
        deployment["metadata"]["uid"] = json!(uid(&mut mix));
        deployment["metadata"]["labels"] = json!({"app": name, "pod-rebalancer.io/enabled": "true"});
        deployment["spec"]["selector"] = json!({"matchLabels": {"app": name}});
        deployment["spec"]["template"]["metadata"]["labels"] = json!({"app": name});
        deployment["spec"]["template"]["spec"]["containers"][0]["name"] = json!(name);
        deployments.push(&deployment);
        let a = if t % 4 == 1 {
            1.0 + 0.5 * mix.unit()
        } else {
            0.1 + 0.4 * mix.unit()
        };
        let mut cpus = Vec::with_capacity(per_target);
        for i in 0..per_target {
            pods.push(&owner.pod(i, t * per_target + i, now, &mut mix));
            let d = match i {
                _ if i == hot => 2.5,
                _ if i == cold => -0.6,
                _ => mix.unit() - 0.5,
            };
            let cpu = 1.0 + a * d;
            let sidecar = 0.02 + 0.04 * mix.unit();
            let pod = owner.pod_name(i);
            series.push(format!(
                r#"{{"metric":{{"container":"{name}","pod":"{pod}"}},"value":[{now},"{cpu}"]}}"#
            ));
            series.push(format!(
                r#"{{"metric":{{"container":"{SIDECAR}","pod":"{pod}"}},"value":[{now},"{sidecar}"]}}"#
            ));
            series.push(format!(
                r#"{{"metric":{{"pod":"{pod}"}},"value":[{now},"{}"]}}"#,
                cpu + sidecar + 0.0005
            ));
            cpus.push(cpu);
        }
        let s = spread(&cpus);
        // The workload must be unambiguous: no target near the threshold.
        assert!(
            (s - THRESHOLD).abs() > 0.05,
            "target {name}: spread {s} too near {THRESHOLD}"
        );
        if s > THRESHOLD {
            wanting.push((name, s, [owner.pod_name(hot), owner.pod_name(cold)]));
        } else {
            calm = calm.max(s);
        }
    }
    // Worst first (spread / threshold, one threshold for all); ties by name.
    wanting.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let acting = (MAX_REMOVALS / 2).min(wanting.len());
    let mut evicted: Vec<String> = wanting[..acting].iter().flat_map(|w| w.2.clone()).collect();
    evicted.sort_unstable();
    let mut deferred: Vec<String> = wanting[acting..].iter().map(|w| w.0.clone()).collect();
    deferred.sort_unstable();
    let outcomes = vec![
        ("balanced", targets - wanting.len()),
        ("deferred", deferred.len()),
        ("dry_run", acting),
    ];
    Fleet {
        pods,
        pod_selector: None,
        deployment: Vec::new(),
        deployments,
        vm_answer: vm_answer(&series),
        expected: Expected {
            evicted,
            deferred,
            outcomes,
            wanting: wanting.into_iter().map(|w| (w.0, w.1)).collect(),
            calm,
        },
    }
}
