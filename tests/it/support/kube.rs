//! A fake Kubernetes API for one namespace: it serves a Deployment and pods derived
//! from recorded objects (a real kind v1.36 pod and Deployment, with their managed
//! fields, probes and volumes), pages the list, and answers evictions, deletions and
//! events. Any answer can be replaced per route to inject a fault.

use super::fixture;
use super::server::{Handler, Reply, Request};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One pod of the fleet, as a test describes it.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub name: String,
    pub age_secs: i64,
    pub phase: &'static str,
    pub ready: bool,
    pub terminating: bool,
    pub cpu_request: &'static str,
    pub owner: Owner,
    /// Without `metadata.creationTimestamp`.
    pub no_creation_time: bool,
}

/// Whose pod it is: its controller `ownerReference` and its `pod-template-hash`.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// The Deployment's current ReplicaSet, `{deployment}-5f7c9d8b4d`.
    Ours,
    /// The Deployment's previous ReplicaSet, `{deployment}-6d8f5b7c9a` (a rollout).
    OldReplicaSet,
    /// The current ReplicaSet of another Deployment of this name.
    Deployment(&'static str),
    /// No owner at all (`kubectl run`).
    Bare,
}

pub const HASH: &str = "5f7c9d8b4d";
pub const OLD_HASH: &str = "6d8f5b7c9a";

/// A healthy, hour-old pod requesting one core.
pub fn pod(name: &str) -> FakePod {
    FakePod {
        name: name.to_string(),
        age_secs: 3600,
        phase: "Running",
        ready: true,
        terminating: false,
        cpu_request: "1",
        owner: Owner::Ours,
        no_creation_time: false,
    }
}

pub fn uid_of(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 4) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// Unix seconds as the API server writes a timestamp (`2026-01-01T00:00:00Z`).
pub fn rfc3339_of(t: i64) -> String {
    // Civil-from-days (Hinnant): the same arithmetic as `pod_rebalancer::clock::format_rfc3339`,
    // copied on purpose. These timestamps are what the product's age checks parse, so the
    // tests must not make them with the product's own clock code (the bench may: fleet.rs).
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The recorded coredns pod, rewritten into one of our fleet.
pub fn pod_json(namespace: &str, deployment: &str, p: &FakePod, now: i64) -> Value {
    // Parsed once: a 1,000-pod fleet would otherwise parse the recorded list 1,000 times.
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let list: Value =
            serde_json::from_str(&fixture("k8s/podlist_kube-system_kind-v1.36.json")).expect("recorded pod list");
        list["items"][0].clone()
    });
    let mut pod = template.clone();
    let created = rfc3339_of(now - p.age_secs);
    let meta = &mut pod["metadata"];
    meta["name"] = json!(p.name);
    meta["namespace"] = json!(namespace);
    meta["uid"] = json!(uid_of(&p.name));
    // The recorded pod's controller is the ReplicaSet coredns-589f44dc88: renamed as
    // the Deployment controller would name the owner (and the pod's hash label).
    let (owner, hash) = match &p.owner {
        Owner::Ours => (Some(deployment), HASH),
        Owner::OldReplicaSet => (Some(deployment), OLD_HASH),
        Owner::Deployment(other) => (Some(*other), HASH),
        Owner::Bare => (None, HASH),
    };
    match owner {
        Some(owner) => {
            meta["ownerReferences"][0]["name"] = json!(format!("{owner}-{hash}"));
            meta["ownerReferences"][0]["uid"] = json!(uid_of(&format!("{owner}-{hash}")));
        }
        None => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("ownerReferences");
            }
        }
    }
    meta["generateName"] = json!(format!("{}-{hash}-", owner.unwrap_or(deployment)));
    meta["creationTimestamp"] = json!(created);
    if p.no_creation_time
        && let Some(m) = meta.as_object_mut()
    {
        m.remove("creationTimestamp");
    }
    meta["labels"] = json!({"app": "consumer", "pod-template-hash": hash});
    if p.terminating {
        meta["deletionTimestamp"] = json!(rfc3339_of(now));
        meta["deletionGracePeriodSeconds"] = json!(30);
    }
    let container = &mut pod["spec"]["containers"][0];
    container["name"] = json!(deployment);
    container["resources"]["requests"]["cpu"] = json!(p.cpu_request);
    pod["status"]["phase"] = json!(p.phase);
    pod["status"]["startTime"] = json!(created);
    let ready = if p.ready { "True" } else { "False" };
    for c in pod["status"]["conditions"].as_array_mut().expect("conditions") {
        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
            c["status"] = json!(ready);
        }
    }
    pod
}

/// The recorded coredns Deployment, renamed, with a finished rollout of `replicas`.
pub fn deployment_json(namespace: &str, name: &str, replicas: i64) -> Value {
    let list: Value =
        serde_json::from_str(&fixture("k8s/deploymentlist_coredns_kind-v1.36.json")).expect("recorded deployments");
    let mut d = list["items"][0].clone();
    d["metadata"]["name"] = json!(name);
    d["metadata"]["namespace"] = json!(namespace);
    d["metadata"]["generation"] = json!(3);
    d["spec"]["replicas"] = json!(replicas);
    let s = &mut d["status"];
    s["observedGeneration"] = json!(3);
    for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        s[k] = json!(replicas);
    }
    d
}

/// The state and the scripted answers of the fake API.
pub struct Fake {
    pub namespace: String,
    pub deployment_name: String,
    pub deployment: Value,
    pub pods: Vec<Value>,
    /// The server's page size; the smaller of this and the client's `limit` is used.
    pub page_size: usize,
    /// How many continue requests are answered 410 Gone before paging works.
    pub expire_continue: usize,
    /// The Deployments the list route serves after `deployment` (fleet mode, SPEC §13).
    pub more_deployments: Vec<Value>,
    /// Replaces the answer to a route: "deployment", "deployments" (the list), "list"
    /// (every page), "list:continue" (pages after the first), "event",
    /// "evict:NAME"/"delete:NAME", "state" (a GET of the state ConfigMap) or "state:put".
    pub replies: HashMap<String, Reply>,
    /// The state ConfigMap, when there is one; its `metadata.resourceVersion` goes up
    /// with every write, and a PUT with another one is a 409, as on a real API server.
    pub state: Option<Value>,
    /// Another writer: after every GET of the state, its resourceVersion moves on.
    pub bump_after_get: bool,
    /// How many PUTs of the state succeed before the API answers 500; `None`: all.
    pub state_puts_left: Option<usize>,
}

/// The state ConfigMap's name in the fake.
pub const STATE: &str = "pod-rebalancer-state";

/// An empty state ConfigMap, as the manifests create it, in `namespace`.
pub fn state_configmap(namespace: &str) -> Value {
    let mut object: Value =
        serde_json::from_str(&fixture("k8s/constructed/configmap_state_empty.json")).expect("state ConfigMap");
    object["metadata"]["namespace"] = json!(namespace);
    object
}

impl Fake {
    pub fn new(namespace: &str, deployment: &str, pods: &[FakePod], now: i64) -> Fake {
        Fake {
            namespace: namespace.to_string(),
            deployment_name: deployment.to_string(),
            deployment: deployment_json(namespace, deployment, pods.len() as i64),
            pods: pods.iter().map(|p| pod_json(namespace, deployment, p, now)).collect(),
            more_deployments: Vec::new(),
            page_size: 500,
            expire_continue: 0,
            replies: HashMap::new(),
            state: Some(state_configmap(namespace)),
            bump_after_get: false,
            state_puts_left: None,
        }
    }

    pub fn reply(mut self, route: &str, reply: Reply) -> Fake {
        self.replies.insert(route.to_string(), reply);
        self
    }

    pub fn into_handler(self) -> Handler {
        self.into_shared().0
    }

    /// The handler, and the fake itself, which a test may change between runs (replace
    /// the pods an eviction terminated, roll the Deployment out, break the state).
    pub fn into_shared(self) -> (Handler, Arc<Mutex<Fake>>) {
        let state = Arc::new(Mutex::new(self));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |req: &Request| state.lock().expect("fake state").answer(req));
        (handler, shared)
    }

    fn answer(&mut self, req: &Request) -> Reply {
        let ns = format!("/namespaces/{}/", self.namespace);
        let path = req.path().to_string();
        let deployment_path = format!("/apis/apps/v1{ns}deployments/{}", self.deployment_name);
        let pods_path = format!("/api/v1{ns}pods");
        let events_path = format!("/api/v1{ns}events");
        if req.method == "GET" && path == deployment_path {
            return self
                .replies
                .get("deployment")
                .cloned()
                .unwrap_or_else(|| Reply::json(200, self.deployment.to_string()));
        }
        if req.method == "GET" && path == format!("/apis/apps/v1{ns}deployments") {
            return self
                .replies
                .get("deployments")
                .cloned()
                .unwrap_or_else(|| self.deployments());
        }
        if req.method == "GET" && path == pods_path {
            return self.list(req);
        }
        if path == format!("/api/v1{ns}configmaps/{STATE}") {
            return self.state(req);
        }
        if req.method == "POST" && path == events_path {
            return self
                .replies
                .get("event")
                .cloned()
                .unwrap_or_else(|| Reply::json(201, String::from_utf8_lossy(&req.body)));
        }
        if let Some(rest) = path.strip_prefix(&format!("{pods_path}/")) {
            if let (Some(name), "POST") = (rest.strip_suffix("/eviction"), req.method.as_str()) {
                if let Some(reply) = self.replies.get(&format!("evict:{name}")) {
                    return reply.clone();
                }
                // A real eviction deletes the pod gracefully: it lists as terminating.
                // A server-side dry run (`dryRun=All`) changes nothing.
                if req.query("dryRun").is_none() {
                    self.terminate(name);
                }
                return Reply::json(201, fixture("k8s/constructed/status_201_eviction_success.json"));
            }
            if req.method == "DELETE" && !rest.contains('/') {
                if let Some(reply) = self.replies.get(&format!("delete:{rest}")) {
                    return reply.clone();
                }
                let pod = self.pods.iter().find(|p| p["metadata"]["name"] == rest).cloned();
                return match pod {
                    Some(mut pod) => {
                        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                        if req.query("dryRun").is_none() {
                            self.terminate(rest);
                        }
                        Reply::json(200, pod.to_string())
                    }
                    None => Reply::json(404, fixture("k8s/status_404_notfound_pod.json")),
                };
            }
        }
        Reply::json(404, fixture("k8s/status_404_notfound_pod.json"))
    }

    /// The Deployment list of fleet mode (SPEC §13): `deployment` and
    /// `more_deployments`, on one page, whatever the label selector (as the pod list
    /// serves every pod).
    fn deployments(&self) -> Reply {
        let items: Vec<&Value> = std::iter::once(&self.deployment)
            .chain(&self.more_deployments)
            .collect();
        Reply::json(
            200,
            json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "85783"}, "items": items})
                .to_string(),
        )
    }

    /// Marks a pod as terminating, as a graceful deletion does.
    fn terminate(&mut self, name: &str) {
        for pod in self.pods.iter_mut().filter(|p| p["metadata"]["name"] == name) {
            pod["metadata"]["deletionTimestamp"] = json!(rfc3339_of(super::now()));
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        }
    }

    /// GET and PUT of the state ConfigMap, with resourceVersion conflicts.
    fn state(&mut self, req: &Request) -> Reply {
        let route = if req.method == "GET" { "state" } else { "state:put" };
        if let Some(reply) = self.replies.get(route) {
            return reply.clone();
        }
        let Some(current) = &mut self.state else {
            return Reply::json(404, fixture("k8s/constructed/status_404_notfound_configmap.json"));
        };
        match req.method.as_str() {
            "GET" => {
                let reply = Reply::json(200, current.to_string());
                if self.bump_after_get {
                    let next = current["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    current["metadata"]["resourceVersion"] = json!(next.to_string());
                }
                reply
            }
            "PUT" => {
                if let Some(left) = &mut self.state_puts_left {
                    if *left == 0 {
                        return Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json"));
                    }
                    *left -= 1;
                }
                let Ok(mut sent) = serde_json::from_slice::<Value>(&req.body) else {
                    return Reply::json(400, r#"{"kind":"Status","code":400,"message":"fake: not JSON"}"#);
                };
                if sent["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return Reply::json(409, fixture("k8s/status_409_conflict.json"));
                }
                let next: u64 = current["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
                    + 1;
                sent["metadata"]["resourceVersion"] = json!(next.to_string());
                *current = sent;
                Reply::json(200, current.to_string())
            }
            _ => Reply::json(
                405,
                r#"{"kind":"Status","code":405,"message":"fake: method not allowed"}"#,
            ),
        }
    }

    fn list(&mut self, req: &Request) -> Reply {
        if let Some(reply) = self.replies.get("list") {
            return reply.clone();
        }
        if req.query("continue").is_some()
            && let Some(reply) = self.replies.get("list:continue")
        {
            return reply.clone();
        }
        let limit = req
            .query("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
            .min(self.page_size);
        let offset = match req.query("continue") {
            Some(token) => {
                if self.expire_continue > 0 {
                    self.expire_continue -= 1;
                    return Reply::json(410, fixture("k8s/constructed/status_410_expired_continue.json"));
                }
                token
                    .strip_prefix("page-")
                    .and_then(|o| o.parse::<usize>().ok())
                    .unwrap_or(0)
            }
            None => 0,
        };
        let end = (offset + limit).min(self.pods.len());
        let items: Vec<Value> = self.pods[offset.min(end)..end].to_vec();
        let mut metadata = json!({"resourceVersion": "85783"});
        if end < self.pods.len() {
            metadata["continue"] = json!(format!("page-{end}"));
            metadata["remainingItemCount"] = json!(self.pods.len() - end);
        }
        Reply::json(
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}).to_string(),
        )
    }
}
