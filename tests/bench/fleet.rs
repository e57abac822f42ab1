//! The workload: N pods of one Deployment, shaped like the recorded kind v1.36 pod
//! (managed fields, probes, volumes, env, two containers, about 6 KB of JSON each),
//! the Deployment itself and a VictoriaMetrics answer for the pods. Everything is
//! serialized once, up front, so the server only copies bytes. A pod's keys come out
//! sorted (serde_json's map), which none of the three clients cares about; the
//! metrics answer is written by hand because its key order does matter (see there).

use crate::files::fixture;
// A benchmark may use the product's own formatter (tests keep an independent one).
use pod_rebalancer::clock::format_rfc3339 as rfc3339;
use serde_json::{Value, json};

pub const NAMESPACE: &str = "posthog";
pub const DEPLOYMENT: &str = "consumer";
pub const SELECTOR: &str = "app=consumer";
const HASH: &str = "5f7c9d8b4d";

/// The serialized fleet and the decision it must lead to.
pub struct Fleet {
    /// Every pod's compact JSON, each followed by a comma: a page is one slice.
    pub items: Vec<u8>,
    /// Where pod `i` starts in `items`; `starts[n]` is the end (so `n + 1` entries).
    pub starts: Vec<usize>,
    pub deployment: Vec<u8>,
    pub vm_answer: Vec<u8>,
    pub hottest: String,
    pub coldest: String,
}

impl Fleet {
    /// The number of pods.
    pub fn n(&self) -> usize {
        self.starts.len() - 1
    }

    /// The items of pods `from..to`, comma-separated, without the trailing comma.
    pub fn slice(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        &self.items[self.starts[from]..self.starts[to] - 1]
    }

    pub fn mean_pod_bytes(&self) -> usize {
        self.items.len() / self.n().max(1)
    }
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

/// A unique pod name for index `i` (27^5 names, scrambled so neighbours differ).
pub fn pod_name(i: usize) -> String {
    let mut k = (i as u64).wrapping_mul(2_654_435_761) % 14_348_907;
    let mut suffix = [0u8; 5];
    for s in suffix.iter_mut().rev() {
        *s = ALPHABET[(k % 27) as usize];
        k /= 27;
    }
    format!("{DEPLOYMENT}-{HASH}-{}", std::str::from_utf8(&suffix).expect("ascii"))
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

/// The recorded coredns pod turned into the template of a two-container consumer pod.
fn template() -> Value {
    let list = read_json("k8s/podlist_kube-system_kind-v1.36.json");
    let mut pod = list["items"][0].clone();
    let spec = pod["spec"].as_object_mut().expect("spec");
    spec.remove("affinity");
    spec.remove("priorityClassName");
    spec["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    ]);
    spec["serviceAccountName"] = json!(DEPLOYMENT);
    spec["serviceAccount"] = json!(DEPLOYMENT);
    spec["volumes"][0] = json!({"name": "config", "configMap": {"name": "consumer-config", "defaultMode": 420}});

    // The main container: the recorded one (probes, security context, mounts), renamed,
    // with the env and resources of an application pod.
    let mut main = spec["containers"][0].clone();
    main["name"] = json!(DEPLOYMENT);
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
        "name": "vector",
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
    managed[0]["fieldsV1"]["f:spec"] = json!({
        "f:containers": {
            "k:{\"name\":\"consumer\"}": {".": {}, "f:args": {}, "f:env": {}, "f:image": {}, "f:livenessProbe": {}, "f:name": {}, "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}, "f:volumeMounts": {}},
            "k:{\"name\":\"vector\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}, "f:volumeMounts": {}}
        },
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
    statuses["name"] = json!(DEPLOYMENT);
    statuses["image"] = json!("ghcr.io/posthog/consumer:2026.06.1");
    for field in ["volumeMounts", "user", "allocatedResources", "resources"] {
        statuses.as_object_mut().expect("status").remove(field);
    }
    let mut vector = statuses.clone();
    vector["name"] = json!("vector");
    vector["image"] = json!("docker.io/timberio/vector:0.46.1-distroless-libc");
    status["containerStatuses"] = json!([statuses, vector]);
    for field in ["allocatedResources", "resources"] {
        status.as_object_mut().expect("status").remove(field);
    }
    pod
}

/// Builds a fleet of `n` pods, all Running, Ready and an hour or more old, whose CPU
/// spread is far above the default threshold: pod `n/3` is made the coldest and pod
/// `2n/3` the hottest, so the decision is known in advance. Callers ask for `n >= 10`
/// (two pods at least keep the two apart).
pub fn build(n: usize, now: i64) -> Fleet {
    let template = template();
    let mut mix = Mix(0x5eed_0000 + n as u64);
    let (cold, hot) = (n / 3, 2 * n / 3);
    let rs_uid = uid(&mut mix);
    let mut items = Vec::with_capacity(n * 6200);
    let mut starts = Vec::with_capacity(n + 1);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let name = pod_name(i);
        let created = now - 3600 - (i as i64 % 86_400);
        let node = format!("ip-10-{}-{}-{}.ec2.internal", i % 7, (i / 7) % 250, 10 + i % 200);
        let ip = format!("10.{}.{}.{}", 100 + i % 50, (i / 50) % 250, 2 + i % 250);
        let host_ip = format!("10.0.{}.{}", (i / 30) % 250, 10 + i % 200);
        let mut pod = template.clone();
        let meta = &mut pod["metadata"];
        meta["name"] = json!(name);
        meta["generateName"] = json!(format!("{DEPLOYMENT}-{HASH}-"));
        meta["namespace"] = json!(NAMESPACE);
        meta["uid"] = json!(uid(&mut mix));
        meta["resourceVersion"] = json!((90_000_000 + i * 7).to_string());
        meta["creationTimestamp"] = json!(rfc3339(created));
        meta["labels"] = json!({"app": DEPLOYMENT, "pod-template-hash": HASH});
        meta["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{DEPLOYMENT}-{HASH}"),
            "uid": rs_uid, "controller": true, "blockOwnerDeletion": true
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
            c["containerID"] = json!(format!("containerd://{}", hex64(&mut mix)));
            c["state"]["running"]["startedAt"] = json!(rfc3339(created + 2));
        }
        starts.push(items.len());
        serde_json::to_writer(&mut items, &pod).expect("serialize pod");
        items.push(b',');

        let cpu = match i {
            _ if i == hot => 3.5,
            _ if i == cold => 0.01,
            _ => 0.2 + 1.6 * mix.unit(),
        };
        samples.push(format!(r#"{{"metric":{{"pod":"{name}"}},"value":[{now},"{cpu}"]}}"#));
    }
    starts.push(items.len());

    let mut deployment = read_json("k8s/deploymentlist_coredns_kind-v1.36.json")["items"][0].clone();
    deployment["metadata"]["name"] = json!(DEPLOYMENT);
    deployment["metadata"]["namespace"] = json!(NAMESPACE);
    deployment["metadata"]["generation"] = json!(3);
    deployment["spec"]["replicas"] = json!(n);
    for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        deployment["status"][k] = json!(n);
    }
    deployment["status"]["observedGeneration"] = json!(3);
    // Written by hand to keep VictoriaMetrics' key order (`resultType` before
    // `result`); serde_json's map would sort the keys.
    let vm = format!(
        r#"{{"status":"success","isPartial":false,"data":{{"resultType":"vector","result":[{}]}},"stats":{{"seriesFetched":"{n}","executionTimeMsec":12}}}}"#,
        samples.join(",")
    );
    Fleet {
        items,
        starts,
        deployment: serde_json::to_vec(&deployment).expect("deployment"),
        vm_answer: vm.into_bytes(),
        hottest: pod_name(hot),
        coldest: pod_name(cold),
    }
}
