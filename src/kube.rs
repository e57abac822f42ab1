//! The Kubernetes REST API, as far as we use it: typed wire structs holding only the
//! fields the decision needs, the Deployment GET, the paged pod list, eviction or
//! deletion with a uid precondition, and the audit Event.
//!
//! Reads live here; the two mutating calls (`remove`, `post_event`) are called only
//! from `act`.

use crate::error::{Cause, Error};
use crate::http::{self, Client, Keep, encode};
use crate::plan::{Pod, Rollout};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API server is and how to reach it (README "Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// API server base URL without a trailing slash.
    pub url: String,
    /// Holds `token` and `ca.crt`.
    pub service_account_dir: PathBuf,
    pub timeout: Duration,
}

/// How a pod is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvictionMode {
    /// The Eviction API, which honours PodDisruptionBudgets.
    Evict,
    Delete,
}

impl EvictionMode {
    pub fn verb(self) -> &'static str {
        match self {
            EvictionMode::Evict => "evict",
            EvictionMode::Delete => "delete",
        }
    }

    /// The verb in the past tense: "evicted", "deleted".
    pub fn done(self) -> &'static str {
        match self {
            EvictionMode::Evict => "evicted",
            EvictionMode::Delete => "deleted",
        }
    }
}

/// A client for the API server, from the service account files, which are read on
/// every run (tokens rotate). The token is sent whenever its file exists; the CA is
/// required for https.
pub fn client(endpoint: &Endpoint) -> Result<Client, Error> {
    let dir = &endpoint.service_account_dir;
    let token_path = dir.join("token");
    let token = match std::fs::metadata(&token_path) {
        Ok(_) => Some(http::read_token(&token_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!(path:% = token_path.display(); "no service account token, sending no Authorization header");
            None
        }
        Err(e) => return Err(Error::io(format!("read bearer token {}", token_path.display()), &e)),
    };
    let roots = if endpoint.url.starts_with("https://") {
        Some(http::read_ca(&dir.join("ca.crt"))?)
    } else {
        None
    };
    Ok(Client::new(&endpoint.url, endpoint.timeout, roots, token))
}

/// Page size of the pod list: large enough that a 1,000-pod fleet is two requests,
/// small enough that a page of fat pods stays a few MiB.
pub const PAGE_LIMIT: usize = 500;

/// One page of the pod list, parsed straight into `pods`: each item becomes a `Pod`
/// as soon as it is read, so a page's wire structs never exist together and no
/// page-sized vector is made. (musl's allocator, the one in the image, hands the
/// memory of a page's worth of freed objects back to the kernel after every page;
/// BENCHMARKS.md.) The value is the continue token.
struct PodList<'p> {
    route: Route<'p>,
    /// One vector per target of `route`.
    pods: &'p mut [Vec<Pod>],
    /// Counts the pods `route` leaves out.
    ignored: &'p mut usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for PodList<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PodList<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a PodList")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let (mut metadata, mut items) = (None, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "metadata" if metadata.is_none() => metadata = Some(map.next_value::<ListMeta>()?),
                // Required and not null: a page without items is a broken page, and
                // treating it as empty would silently shrink the fleet the budget is
                // computed on. Bounded, so a page of countless tiny items fails
                // instead of exhausting memory.
                "items" if !items => {
                    items = true;
                    map.next_value_seed(Items {
                        route: self.route,
                        pods: &mut *self.pods,
                        ignored: &mut *self.ignored,
                    })?;
                }
                "metadata" | "items" => return Err(serde::de::Error::custom(format_args!("duplicate field `{key}`"))),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        if !items {
            return Err(serde::de::Error::missing_field("items"));
        }
        Ok(metadata.and_then(|m| m.next).filter(|c| !c.is_empty()))
    }
}

/// The `items` of a page, each made into a `Pod` of its target as it is parsed, or
/// counted as ignored when `route` leaves it out.
struct Items<'p> {
    route: Route<'p>,
    pods: &'p mut [Vec<Pod>],
    ignored: &'p mut usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a sequence of at most {} elements", crate::http::MAX_ITEMS)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let Items { route, pods, ignored } = self;
        crate::http::each_bounded(seq, |pod: WirePod| match route.target_of(&pod.metadata) {
            Some(i) => {
                let container = route.container(i);
                if let Some(list) = pods.get_mut(i) {
                    list.push(pod.into_pod(container));
                }
            }
            None => *ignored += 1,
        })
    }
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "continue")]
    next: Option<String>,
}

// The wire structs skip every field the decision does not read as it is parsed, and
// borrow the strings they only compare from the page buffer (a `Cow` borrows when
// the string has no escapes): a pod costs the four strings `Pod` keeps, no map.
#[derive(Deserialize)]
struct WirePod<'a> {
    #[serde(borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    spec: PodSpec<'a>,
    #[serde(default, borrow)]
    status: PodStatus<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta<'a> {
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(borrow)]
    creation_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    deletion_timestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    labels: Labels<'a>,
    /// The controller among `ownerReferences`, kept as the list is read: no vector
    /// per pod (see `Containers`).
    #[serde(
        default,
        borrow,
        rename = "ownerReferences",
        deserialize_with = "controller_reference"
    )]
    controller: Option<OwnerReference<'a>>,
}

/// `metadata.ownerReferences` (a list or null): the reference whose `controller` is
/// true. Kubernetes allows one controller per object; should a list hold two, the
/// first is kept.
fn controller_reference<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<OwnerReference<'a>>, D::Error> {
    struct Controller<'a>(std::marker::PhantomData<OwnerReference<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for Controller<'a> {
        type Value = Option<OwnerReference<'a>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of owner references")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut controller = None;
            while let Some(reference) = seq.next_element::<OwnerReference<'a>>()? {
                if controller.is_none() && reference.controller == Some(true) {
                    controller = Some(reference);
                }
            }
            Ok(controller)
        }
    }
    d.deserialize_option(Controller(std::marker::PhantomData))
}

/// The one label ownership needs; the others are skipped as they are parsed.
#[derive(Deserialize, Default)]
struct Labels<'a> {
    #[serde(rename = "pod-template-hash", borrow)]
    pod_template_hash: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OwnerReference<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    controller: Option<bool>,
}

impl ObjectMeta<'_> {
    /// The Deployment the pod belongs to: its controller is the ReplicaSet the
    /// Deployment controller names `{deployment}-{pod-template-hash}`. A bare pod, a
    /// Job's pod, a ReplicaSet named otherwise: none. (Another Deployment whose name
    /// starts with ours has its own name here.)
    fn owner_deployment(&self) -> Option<&str> {
        let hash = self.labels.pod_template_hash.as_deref()?;
        let owner = self.controller.as_ref().filter(|o| o.kind == "ReplicaSet")?;
        owner
            .name
            .strip_suffix(hash)?
            .strip_suffix('-')
            .filter(|d| !d.is_empty())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec<'a> {
    node_name: Option<String>,
    #[serde(default, borrow)]
    containers: Containers<'a>,
}

/// A pod's containers, the first four without a heap allocation: a vector per pod,
/// made and freed 10,000 times a run, made musl's allocator unmap and map its
/// memory again hundreds of times (BENCHMARKS.md).
#[derive(Default)]
struct Containers<'a> {
    first: [Option<Container<'a>>; 4],
    more: Vec<Container<'a>>,
}

impl<'a> Containers<'a> {
    fn iter(&self) -> impl Iterator<Item = &Container<'a>> {
        self.first.iter().flatten().chain(&self.more)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Containers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<Containers<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Containers<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of containers")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Containers<'a>, A::Error> {
                let mut containers = Containers::default();
                let mut n = 0;
                while let Some(c) = seq.next_element()? {
                    match containers.first.get_mut(n) {
                        Some(slot) => *slot = Some(c),
                        None => containers.more.push(c),
                    }
                    n += 1;
                }
                Ok(containers)
            }
        }
        d.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    resources: Resources<'a>,
}

#[derive(Deserialize, Default)]
struct Resources<'a> {
    #[serde(borrow)]
    requests: Option<Quantities<'a>>,
    #[serde(borrow)]
    limits: Option<Quantities<'a>>,
}

/// A `requests` or `limits` map, of which only `cpu` is read.
#[derive(Deserialize, Default)]
struct Quantities<'a> {
    #[serde(borrow)]
    cpu: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct PodStatus<'a> {
    #[serde(borrow)]
    phase: Option<Cow<'a, str>>,
    /// `conditions` folded into "the Ready condition is True" as it is parsed.
    #[serde(default, rename = "conditions", deserialize_with = "ready_condition")]
    ready: bool,
}

/// `status.conditions` (a list or null): whether the `Ready` condition is `True`,
/// decided as the list is read instead of kept in a vector per pod.
fn ready_condition<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Ready;
    impl<'de> serde::de::Visitor<'de> for Ready {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of pod conditions")
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_none<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut ready = false;
            while let Some(c) = seq.next_element::<Condition>()? {
                ready |= c.kind == "Ready" && c.status == "True";
            }
            Ok(ready)
        }
    }
    d.deserialize_option(Ready)
}

#[derive(Deserialize)]
struct Condition<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
}

/// One page of `GET …/deployments`.
#[derive(Deserialize)]
struct DeploymentList {
    #[serde(default)]
    metadata: ListMeta,
    items: Vec<Deployment>,
}

#[derive(Deserialize)]
struct Deployment {
    metadata: DeploymentMeta,
    #[serde(default)]
    spec: DeploymentSpec,
    #[serde(default)]
    status: DeploymentStatus,
}

#[derive(Deserialize)]
struct DeploymentMeta {
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    generation: i64,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct DeploymentSpec {
    replicas: Option<i64>,
    template: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeploymentStatus {
    #[serde(default)]
    observed_generation: i64,
    #[serde(default)]
    replicas: i64,
    #[serde(default)]
    updated_replicas: i64,
}

/// A CPU quantity (`250m`, `1`, `1.5`, `2k`) in cores; `None` if it is not one.
pub fn parse_cpu(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        _ => return None,
    };
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

impl WirePod<'_> {
    /// The decision's view of this pod; `container` picks the measured container's
    /// resources (the only container when the name is unknown or absent).
    fn into_pod(self, container: Option<&str>) -> Pod {
        let containers = &self.spec.containers;
        let measured = match container.and_then(|name| containers.iter().find(|c| c.name == name)) {
            Some(c) => Some(c),
            None if containers.iter().nth(1).is_none() => containers.iter().next(),
            None => None,
        };
        let cpu = |m: Option<&Quantities>| m.and_then(|m| m.cpu.as_deref()).and_then(parse_cpu);
        let ready = self.status.ready;
        Pod {
            cpu_request: measured.and_then(|c| cpu(c.resources.requests.as_ref())),
            cpu_limit: measured.and_then(|c| cpu(c.resources.limits.as_ref())),
            name: self.metadata.name,
            uid: self.metadata.uid,
            node: self.spec.node_name,
            phase: phase(self.status.phase.as_deref().unwrap_or_default()),
            ready,
            terminating: self.metadata.deletion_timestamp.is_some(),
            created: self
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(crate::clock::parse_rfc3339),
        }
    }
}

/// The phases the API defines are `'static`, so a pod's phase costs no allocation
/// (a 50,000-pod fleet holds 50,000 of them); anything else is kept as sent.
fn phase(sent: &str) -> Cow<'static, str> {
    match ["Pending", "Running", "Succeeded", "Failed", "Unknown", ""]
        .into_iter()
        .find(|known| *known == sent)
    {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(sent.to_string()),
    }
}

impl Deployment {
    fn into_rollout(self) -> Rollout {
        let ours = |(k, _): &(String, String)| k.starts_with(crate::plan::ANNOTATION_PREFIX);
        Rollout {
            name: self.metadata.name,
            uid: self.metadata.uid,
            annotations: self
                .metadata
                .annotations
                .unwrap_or_default()
                .into_iter()
                .filter(ours)
                .collect(),
            generation: self.metadata.generation,
            observed_generation: self.status.observed_generation,
            desired: self.spec.replicas.unwrap_or(1),
            replicas: self.status.replicas,
            updated: self.status.updated_replicas,
            fingerprint: self.spec.template.as_ref().map(fingerprint).unwrap_or_default(),
        }
    }
}

/// A stable hash of a pod template: 64-bit FNV-1a over its canonical JSON (object keys
/// sorted, no spaces), as 16 hex digits. The same template gives the same fingerprint
/// whatever the API server's field order; any change to it (an image, an env var, the
/// `restartedAt` annotation of `kubectl rollout restart`) gives another.
pub fn fingerprint(template: &serde_json::Value) -> String {
    // serde_json's map without `preserve_order` is a BTreeMap: keys come out sorted.
    let canonical = template.to_string();
    let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Which pods of a list count, whose they are, and which of their containers is
/// measured (its CPU request and limit are read; the only container when the name is
/// unknown or absent).
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// Every pod, as one target's (a saved list without a Deployment to check).
    Every { container: Option<&'a str> },
    /// The pods each Deployment owns (SPEC §4), each to its own target: `(name,
    /// container)` sorted by name, one per target. Other pods are ignored.
    Owned(&'a [(&'a str, &'a str)]),
}

impl Route<'_> {
    /// How many targets the pods go to.
    pub fn targets(&self) -> usize {
        match self {
            Route::Every { .. } => 1,
            Route::Owned(targets) => targets.len(),
        }
    }

    fn target_of(&self, meta: &ObjectMeta) -> Option<usize> {
        match self {
            Route::Every { .. } => Some(0),
            Route::Owned(targets) => {
                let owner = meta.owner_deployment()?;
                targets.binary_search_by(|(name, _)| (*name).cmp(owner)).ok()
            }
        }
    }

    fn container(&self, target: usize) -> Option<&str> {
        match self {
            Route::Every { container } => *container,
            Route::Owned(targets) => targets.get(target).map(|(_, c)| *c),
        }
    }
}

/// One page of a pod list: the pods kept, how many others it held, the continue token.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub pods: Vec<Pod>,
    /// Pods the selector returned that the Deployment does not own.
    pub ignored: usize,
    pub next: Option<String>,
}

/// Parses a PodList body (`kubectl get pods -o json`, one API page) for one target.
pub fn parse_pod_list(json: &str, route: Route) -> Result<Page, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut by_target = vec![Vec::new(); route.targets()];
    let mut page = Page {
        pods: Vec::new(),
        ignored: 0,
        next: None,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    page.next = PodList {
        route,
        pods: &mut by_target,
        ignored: &mut page.ignored,
    }
    .deserialize(&mut de)?;
    de.end()?;
    page.pods = by_target.into_iter().flatten().collect();
    Ok(page)
}

/// Why a list holds a pod twice (by name or by uid), or `None`. Such a list is
/// malformed: counted twice, the pod would skew the budget and the statistics.
pub fn listed_twice<'a>(pods: impl Iterator<Item = &'a Pod> + Clone) -> Option<String> {
    let twice = |mut keys: Vec<&str>, what: &str| {
        keys.sort_unstable();
        keys.windows(2)
            .find(|w| w[0] == w[1])
            .map(|w| format!("pod {what} {} is listed twice", w[0]))
    };
    twice(pods.clone().map(|p| p.name.as_str()).collect(), "name").or_else(|| {
        let uids = pods.map(|p| p.uid.as_str()).filter(|u| !u.is_empty());
        twice(uids.collect(), "uid")
    })
}

/// Parses a Deployment body (`kubectl get deploy NAME -o json`).
pub fn parse_deployment(json: &str) -> Result<Rollout, serde_json::Error> {
    serde_json::from_str::<Deployment>(json).map(Deployment::into_rollout)
}

/// The most pages a list may take: 300 pages of 500 are 150,000 pods, the most
/// Kubernetes supports in a whole cluster.
pub const MAX_PAGES: usize = 300;

/// The pods a list kept, by target, and how many others the selector returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listed {
    pub by_target: Vec<Vec<Pod>>,
    pub ignored: usize,
}

impl Listed {
    /// How many pods were kept, all targets together.
    pub fn kept(&self) -> usize {
        self.by_target.iter().map(Vec::len).sum()
    }
}

/// The data key of the state ConfigMap that holds the memory's document.
pub const STATE_KEY: &str = "state.json";

/// The state ConfigMap as the API server last gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateObject {
    pub object: serde_json::Value,
    pub resource_version: String,
    /// `data["state.json"]`, when present.
    pub document: Option<String>,
}

impl StateObject {
    /// `Err` says why `object` is not a ConfigMap we can write back.
    pub fn of(object: serde_json::Value) -> Result<StateObject, String> {
        if object["kind"] != "ConfigMap" || !object["metadata"]["name"].is_string() {
            return Err("expected a ConfigMap with a name".into());
        }
        let Some(resource_version) = object["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()) else {
            return Err("expected metadata.resourceVersion, got none".into());
        };
        let document = match &object["data"] {
            serde_json::Value::Null => None,
            serde_json::Value::Object(data) => match data.get(STATE_KEY) {
                None => None,
                Some(serde_json::Value::String(text)) => Some(text.clone()),
                Some(other) => return Err(format!("expected data.{STATE_KEY} to be a string, got {other}")),
            },
            other => return Err(format!("expected data to be an object, got {other}")),
        };
        Ok(StateObject {
            resource_version: resource_version.to_string(),
            document,
            object,
        })
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Involved {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn pod(name: &str, uid: &str) -> Involved {
        Involved {
            api_version: "v1",
            kind: "Pod",
            name: name.to_string(),
            uid: uid.to_string(),
        }
    }

    pub fn deployment(name: &str, uid: &str) -> Involved {
        Involved {
            api_version: "apps/v1",
            kind: "Deployment",
            name: name.to_string(),
            uid: uid.to_string(),
        }
    }
}

/// The Kubernetes API of one namespace.
pub struct Kube<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
}

impl Kube<'_> {
    /// The Deployment's rollout state; 404 is "not found", said plainly. With `keep`,
    /// the body read is kept there.
    pub fn deployment(&self, name: &str, keep: Keep) -> Result<Rollout, Error> {
        let path = format!("/apis/apps/v1/namespaces/{}/deployments/{name}", self.namespace);
        match self.client.get_json::<Deployment>("get deployment", &path, keep) {
            Ok(d) => Ok(d.into_rollout()),
            Err(e) if e.status() == Some(404) => {
                let Cause::Status { message, .. } = &e.cause else {
                    return Err(e);
                };
                Err(Error::new(
                    e.doing.clone(),
                    Cause::Refused(format!(
                        "deployment {name} not found in namespace {} (404: {message})",
                        self.namespace
                    )),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Follows a list's `continue` tokens from `first` (a path with its query), page by
    /// page: `read(path, restarted)` reads one page and returns its token. An expired
    /// continue token (410 Gone) restarts the list from the start, once, and tells
    /// `read` so (it forgets what it kept). A token that repeats, or more than
    /// `MAX_PAGES` pages, make the list malformed: never an endless loop.
    fn each_page(
        &self,
        what: &str,
        first: &str,
        mut read: impl FnMut(&str, bool) -> Result<Option<String>, Error>,
    ) -> Result<(), Error> {
        let malformed = |why: String| {
            Error::new(
                format!("{what} (GET {})", self.client.url(first)),
                Cause::Malformed(why),
            )
        };
        let mut restarted = false;
        let mut fresh = false;
        // The continue tokens sent since the list (re)started, in order.
        let mut sent: Vec<String> = Vec::new();
        loop {
            let path = match sent.last() {
                Some(token) => format!("{first}&continue={}", encode(token)),
                None => first.to_string(),
            };
            match read(&path, std::mem::take(&mut fresh)) {
                Ok(next) => {
                    let Some(token) = next else { return Ok(()) };
                    if sent.contains(&token) {
                        return Err(malformed(format!(
                            "the server repeated a continue token after {} pages: the list would never end",
                            sent.len() + 1
                        )));
                    }
                    if sent.len() + 1 >= MAX_PAGES {
                        let items = what.strip_prefix("list ").unwrap_or("items");
                        return Err(malformed(format!(
                            "expected at most {MAX_PAGES} pages of {PAGE_LIMIT} {items}, the server offers more"
                        )));
                    }
                    sent.push(token);
                }
                Err(e) if e.status() == Some(410) && !sent.is_empty() && !restarted => {
                    log::warn!(error:% = e; "{what}: continue token expired, listing again from the start");
                    restarted = true;
                    fresh = true;
                    sent.clear();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The pods matching `selector` (every pod of the namespace when `None`), each
    /// kept for the target `route` gives it, following `continue` page by page (see
    /// `each_page`). A pod listed twice makes the list malformed: counted twice, it
    /// would skew the budget and the statistics. With `pages`, a copy of every page
    /// of the list as it ended is kept there (a restart forgets the earlier ones).
    pub fn pods(
        &self,
        selector: Option<&str>,
        route: Route,
        mut pages: Option<&mut Vec<Vec<u8>>>,
    ) -> Result<Listed, Error> {
        let first = match selector {
            Some(selector) => format!(
                "/api/v1/namespaces/{}/pods?labelSelector={}&limit={PAGE_LIMIT}",
                self.namespace,
                encode(selector)
            ),
            None => format!("/api/v1/namespaces/{}/pods?limit={PAGE_LIMIT}", self.namespace),
        };
        let empty = || Listed {
            by_target: vec![Vec::new(); route.targets()],
            ignored: 0,
        };
        let mut listed = empty();
        // One body buffer for every page: memory holds one page whatever the fleet.
        let mut buf = Vec::new();
        self.each_page("list pods", &first, |path, restarted| {
            if restarted {
                listed = empty();
                if let Some(pages) = pages.as_deref_mut() {
                    pages.clear();
                }
            }
            let mut copy = Vec::new();
            let keep = pages.is_some().then_some(&mut copy);
            let (before, ignored_before) = (listed.kept(), listed.ignored);
            let seed = PodList {
                route,
                pods: &mut listed.by_target,
                ignored: &mut listed.ignored,
            };
            let page = self.client.get_page("list pods", path, &mut buf, keep, seed);
            // A page as read, parsed or not; not the Status of a refused request.
            if let Some(pages) = pages.as_deref_mut()
                && !copy.is_empty()
                && page.as_ref().err().and_then(Error::status).is_none()
            {
                pages.push(copy);
            }
            if let Ok(next) = &page {
                log::debug!(
                    pods = listed.kept() - before, ignored = listed.ignored - ignored_before, more = next.is_some();
                    "pod list page"
                );
            }
            page
        })?;
        match listed_twice(listed.by_target.iter().flatten()) {
            Some(why) => Err(Error::new(
                format!("list pods (GET {})", self.client.url(&first)),
                Cause::Malformed(why),
            )),
            None => Ok(listed),
        }
    }

    /// The Deployments matching `selector` (fleet mode's targets, SPEC §13), sorted by
    /// name, paged like the pod list (and its pages kept alike).
    pub fn deployments(&self, selector: &str, mut keep: Option<&mut Vec<Vec<u8>>>) -> Result<Vec<Rollout>, Error> {
        let first = format!(
            "/apis/apps/v1/namespaces/{}/deployments?labelSelector={}&limit={PAGE_LIMIT}",
            self.namespace,
            encode(selector)
        );
        let mut rollouts = Vec::new();
        self.each_page("list deployments", &first, |path, restarted| {
            if restarted {
                rollouts.clear();
                if let Some(pages) = keep.as_deref_mut() {
                    pages.clear();
                }
            }
            let mut copy = Vec::new();
            let page: DeploymentList = self.client.get_json("list deployments", path, Some(&mut copy))?;
            if let Some(pages) = keep.as_deref_mut() {
                pages.push(copy);
            }
            rollouts.extend(page.items.into_iter().map(Deployment::into_rollout));
            Ok(page.metadata.next.filter(|c| !c.is_empty()))
        })?;
        rollouts.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(twice) = rollouts.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::new(
                format!("list deployments (GET {})", self.client.url(&first)),
                Cause::Malformed(format!("deployment {} is listed twice", twice[0].name)),
            ));
        }
        Ok(rollouts)
    }

    /// The state ConfigMap as read: the whole object (a PUT sends it back with only
    /// the document changed, so its labels and other keys stay), its resourceVersion,
    /// and the `state.json` document (`None` when the key is absent: a fresh memory).
    pub fn get_state(&self, name: &str, keep: Keep) -> Result<StateObject, Error> {
        let path = self.configmap_path(name);
        let object: serde_json::Value = match self.client.get_json("get state ConfigMap", &path, keep) {
            Ok(object) => object,
            Err(e) if e.status() == Some(404) => {
                return Err(Error::new(
                    e.doing,
                    Cause::Refused(format!(
                        "state ConfigMap {name} not found in namespace {}: the manifests create it",
                        self.namespace
                    )),
                ));
            }
            Err(e) => return Err(e),
        };
        StateObject::of(object).map_err(|why| {
            Error::new(
                format!("get state ConfigMap ({})", self.client.url(&path)),
                Cause::Malformed(why),
            )
        })
    }

    /// Writes `document` into the state ConfigMap with the resourceVersion last read or
    /// written: optimistic concurrency, so that of two runs only one writes. Returns the
    /// object as written (with its new resourceVersion). 409 means another run wrote it
    /// meanwhile.
    pub fn put_state(&self, state: &StateObject, document: &str) -> Result<StateObject, Error> {
        let mut object = state.object.clone();
        object["data"][STATE_KEY] = serde_json::Value::String(document.to_string());
        object["metadata"]["resourceVersion"] = serde_json::Value::String(state.resource_version.clone());
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let path = self.configmap_path(&name);
        let written: serde_json::Value = match self.client.send_json_for(
            "update state ConfigMap",
            "PUT",
            &path,
            &object,
        ) {
            Ok(written) => written,
            Err(e) if e.status() == Some(409) => {
                let Cause::Status { message, .. } = &e.cause else {
                    return Err(e);
                };
                return Err(Error::new(
                    e.doing.clone(),
                    Cause::Refused(format!(
                        "another run wrote the state ConfigMap {name} meanwhile (409: {message}); is a second rebalancer aimed at this Deployment?"
                    )),
                ));
            }
            Err(e) => return Err(e),
        };
        StateObject::of(written).map_err(|why| {
            Error::new(
                format!("update state ConfigMap ({})", self.client.url(&path)),
                Cause::Malformed(why),
            )
        })
    }

    fn configmap_path(&self, name: &str) -> String {
        format!("/api/v1/namespaces/{}/configmaps/{name}", self.namespace)
    }

    /// Evicts or deletes one pod, only if it is still the pod with this uid. With
    /// `dry_run`, as a server-side dry run (`dryRun=All`): the API server checks RBAC,
    /// admission and PodDisruptionBudgets and removes nothing.
    pub fn remove(&self, mode: EvictionMode, name: &str, uid: &str, dry_run: bool) -> Result<(), Error> {
        let ns = self.namespace;
        let (method, path, mut body, what) = match mode {
            EvictionMode::Evict => (
                "POST",
                format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
                serde_json::json!({
                    "apiVersion": "policy/v1",
                    "kind": "Eviction",
                    "metadata": {"name": name, "namespace": ns},
                    "deleteOptions": {"preconditions": {"uid": uid}},
                }),
                "evict pod",
            ),
            EvictionMode::Delete => (
                "DELETE",
                format!("/api/v1/namespaces/{ns}/pods/{name}"),
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "preconditions": {"uid": uid},
                }),
                "delete pod",
            ),
        };
        if !dry_run {
            return self.client.send_json(what, method, &path, &body);
        }
        let options = match mode {
            EvictionMode::Evict => &mut body["deleteOptions"],
            EvictionMode::Delete => &mut body,
        };
        options["dryRun"] = serde_json::json!(["All"]);
        let what = format!("{what} (dry run)");
        self.client
            .send_json(&what, method, &format!("{path}?dryRun=All"), &body)
    }

    /// Posts a core/v1 Event on `object`: `kind` Normal or Warning, with its reason and
    /// message, from `pod-rebalancer`.
    pub fn post_event(
        &self,
        object: &Involved,
        kind: &str,
        reason: &str,
        message: &str,
        now: i64,
    ) -> Result<(), Error> {
        let ns = self.namespace;
        let at = crate::clock::format_rfc3339(now);
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{}.", object.name), "namespace": ns},
            "involvedObject": {
                "apiVersion": object.api_version,
                "kind": object.kind,
                "name": object.name,
                "namespace": ns,
                "uid": object.uid,
            },
            "type": kind,
            "reason": reason,
            "action": "Rebalance",
            "message": message,
            "source": {"component": "pod-rebalancer"},
            "reportingComponent": "pod-rebalancer",
            "reportingInstance": "pod-rebalancer",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        });
        self.client
            .send_json("post event", "POST", &format!("/api/v1/namespaces/{ns}/events"), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_pod() -> Route<'static> {
        Route::Every { container: None }
    }

    #[test]
    fn a_recorded_pod_list_becomes_pods() {
        let json = include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json");
        let page = parse_pod_list(json, every_pod()).unwrap();
        assert_eq!((page.next, page.ignored), (None, 0));
        assert_eq!(page.pods.len(), 8);
        let coredns = page.pods.iter().find(|p| p.name.starts_with("coredns-")).unwrap();
        assert_eq!(coredns.phase, "Running");
        assert!(coredns.ready && !coredns.terminating);
        assert!(!coredns.uid.is_empty() && coredns.node.is_some() && coredns.created.is_some());
        assert_eq!(coredns.cpu_request, Some(0.1));
        assert_eq!(coredns.cpu_limit, None);
    }

    /// The recorded kube-system list holds two pods of the Deployment coredns (their
    /// controller is the ReplicaSet coredns-589f44dc88), DaemonSet pods and static pods.
    #[test]
    fn only_the_deployments_own_pods_are_kept() {
        let json = include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json");
        let check = |deployment: &str, kept: &[&str], ignored: usize| {
            let page = parse_pod_list(json, Route::Owned(&[(deployment, "")])).unwrap();
            let names: Vec<&str> = page.pods.iter().map(|p| p.name.as_str()).collect();
            assert_eq!((names.as_slice(), page.ignored), (kept, ignored), "{deployment}");
        };
        check("coredns", &["coredns-589f44dc88-4fpns", "coredns-589f44dc88-lxdzt"], 6);
        // A Deployment whose name is a prefix of the owner's, or the owner's whole
        // ReplicaSet name, owns none of them; nor does a DaemonSet's name.
        check("core", &[], 8);
        check("coredns-589f44dc88", &[], 8);
        check("kindnet", &[], 8);
        // A real pod of a GKE cluster, owned by the ReplicaSet nginx-7fb78fb6d8.
        let pod = include_str!("../fixtures/k8s/pod_replicaset_owned_gke_k9s.json");
        let list = format!(r#"{{"kind":"PodList","items":[{pod}]}}"#);
        let nginx = Route::Owned(&[("nginx", "")]);
        assert_eq!(parse_pod_list(&list, nginx).unwrap().pods.len(), 1);
        let unlabelled = list.replace(
            r#""pod-template-hash": "7fb78fb6d8""#,
            r#""pod-template-hash": "other""#,
        );
        assert_ne!(unlabelled, list);
        assert_eq!(
            parse_pod_list(&unlabelled, nginx).unwrap().ignored,
            1,
            "the hash must match the owner's name"
        );
        let not_controller = list.replace(r#""controller": true"#, r#""controller": false"#);
        assert_ne!(not_controller, list);
        assert_eq!(parse_pod_list(&not_controller, nginx).unwrap().ignored, 1);
    }

    #[test]
    fn each_pod_goes_to_the_target_that_owns_it() {
        let json = include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json");
        let mut by_target = vec![Vec::new(), Vec::new()];
        let mut ignored = 0;
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(json);
        PodList {
            route: Route::Owned(&[("coredns", "coredns"), ("kindnet", "kindnet-cni")]),
            pods: &mut by_target,
            ignored: &mut ignored,
        }
        .deserialize(&mut de)
        .unwrap();
        let names = |pods: &Vec<Pod>| pods.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&by_target[0]),
            ["coredns-589f44dc88-4fpns", "coredns-589f44dc88-lxdzt"]
        );
        assert!(by_target[1].is_empty(), "kindnet is a DaemonSet's");
        assert_eq!(ignored, 6);
        assert_eq!(
            by_target[0][0].cpu_request,
            Some(0.1),
            "the target's container is measured"
        );
    }

    #[test]
    fn a_pod_listed_twice_is_found() {
        let json = include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json");
        let mut pods = parse_pod_list(json, every_pod()).unwrap().pods;
        assert_eq!(listed_twice(pods.iter()), None);
        let mut again = pods[3].clone();
        again.uid = "another-uid".into();
        pods.push(again);
        assert!(
            listed_twice(pods.iter()).unwrap().contains("name"),
            "{:?}",
            listed_twice(pods.iter())
        );
        let mut renamed = pods[2].clone();
        renamed.name = "another-name".into();
        pods.pop();
        pods.push(renamed);
        assert!(
            listed_twice(pods.iter()).unwrap().contains("uid"),
            "{:?}",
            listed_twice(pods.iter())
        );
    }

    #[test]
    fn a_list_without_items_is_not_an_empty_list() {
        for body in [
            "{}",
            r#"{"kind":"PodList","items":null}"#,
            include_str!("../fixtures/vm/query_cpu_by_pod.json"),
        ] {
            assert!(parse_pod_list(body, every_pod()).is_err(), "{body}");
        }
        let empty = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"27131"},"items":[]}"#;
        assert_eq!(parse_pod_list(empty, every_pod()).unwrap().pods, vec![]);
    }

    #[test]
    fn a_page_of_countless_pods_is_refused() {
        let pod = r#"{"metadata":{"name":"a"}}"#;
        let page = |n: usize| format!(r#"{{"kind":"PodList","items":[{}]}}"#, vec![pod; n].join(","));
        assert_eq!(
            parse_pod_list(&page(crate::http::MAX_ITEMS), every_pod())
                .unwrap()
                .pods
                .len(),
            crate::http::MAX_ITEMS
        );
        let e = parse_pod_list(&page(crate::http::MAX_ITEMS + 1), every_pod()).unwrap_err();
        let expected = format!("expected at most {} elements", crate::http::MAX_ITEMS);
        assert!(e.to_string().contains(&expected), "{e}");
        // The error comes at the element too many, not at the end of the body.
        let endless = format!(
            r#"{{"kind":"PodList","items":[{},"#,
            vec![pod; crate::http::MAX_ITEMS + 5].join(",")
        );
        let e = parse_pod_list(&endless, every_pod()).unwrap_err();
        assert!(e.to_string().contains(&expected), "{e}");
    }

    #[test]
    fn a_failed_pod_is_not_ready() {
        let json = include_str!("../fixtures/k8s/podlist_job_pod_failed_kind-v1.36.json");
        let pods = parse_pod_list(json, every_pod()).unwrap().pods;
        assert_eq!((&*pods[0].phase, pods[0].ready), ("Failed", false));
    }

    #[test]
    fn the_measured_container_is_found_among_many() {
        // Six containers: the first four are kept inline, the rest in `more`.
        let containers: Vec<String> = (0..6)
            .map(|i| format!(r#"{{"name":"c{i}","resources":{{"requests":{{"cpu":"{i}"}}}}}}"#))
            .collect();
        let page = format!(
            r#"{{"items":[{{"metadata":{{"name":"a"}},"spec":{{"containers":[{}]}},"status":{{"conditions":null}}}}]}}"#,
            containers.join(",")
        );
        let measuring = |container: &str| {
            parse_pod_list(
                &page,
                Route::Every {
                    container: Some(container),
                },
            )
            .unwrap()
            .pods
        };
        for i in 0..6 {
            let pods = measuring(&format!("c{i}"));
            assert_eq!(pods[0].cpu_request, Some(f64::from(i)), "c{i}");
            assert!(!pods[0].ready);
        }
        assert_eq!(measuring("other")[0].cpu_request, None);
    }

    #[test]
    fn a_paged_list_yields_its_continue_token() {
        let json = include_str!("../fixtures/k8s/podlist_paginated_continue_aks_TRIMMED.json");
        let page = parse_pod_list(json, every_pod()).unwrap();
        assert_eq!(page.pods.len(), 1);
        assert!(page.next.unwrap().starts_with("eyJ2Ijoi"));
    }

    #[test]
    fn recorded_deployments_become_rollouts() {
        let list: serde_json::Value = serde_json::from_str(include_str!(
            "../fixtures/k8s/deploymentlist_kube-system_troubleshoot.json"
        ))
        .unwrap();
        let rollouts: Vec<Rollout> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| parse_deployment(&d.to_string()).unwrap())
            .collect();
        let coredns = rollouts.iter().find(|r| r.name == "coredns").unwrap();
        assert_eq!(coredns.unfinished(), None);
        let metrics = rollouts.iter().find(|r| r.name == "metrics-server").unwrap();
        assert_eq!(
            metrics.unfinished().unwrap(),
            "deployment metrics-server rollout in progress: 2 replicas, 1 desired"
        );
        let created = parse_deployment(include_str!("../fixtures/k8s/deployment_created_kind-v1.36.json")).unwrap();
        assert!(
            created.unfinished().unwrap().contains("not yet observed"),
            "{created:?}"
        );
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("250m"), Some(0.25));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert_eq!(parse_cpu("1.5"), Some(1.5));
        assert_eq!(parse_cpu("100000000n"), Some(0.1));
        assert_eq!(parse_cpu("1e3m"), Some(1.0));
        assert_eq!(parse_cpu("lots"), None);
        assert_eq!(parse_cpu("-1"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        use crate::http::encode;
        assert_eq!(
            encode("app=consumer,tier in (a b)"),
            "app%3Dconsumer%2Ctier%20in%20%28a%20b%29"
        );
        assert_eq!(encode("eyJ2Ijoi+/="), "eyJ2Ijoi%2B%2F%3D");
    }

    #[test]
    fn the_template_fingerprint_follows_the_template_only() {
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/k8s/deploymentlist_coredns_kind-v1.36.json")).unwrap();
        let deployment = list["items"][0].clone();
        let of = |d: &serde_json::Value| parse_deployment(&d.to_string()).unwrap().fingerprint;
        let base = of(&deployment);
        assert_eq!(base.len(), 16);
        assert_eq!(base, fingerprint(&deployment["spec"]["template"]));
        let mut scaled = deployment.clone();
        scaled["spec"]["replicas"] = 7.into();
        scaled["status"]["replicas"] = 7.into();
        assert_eq!(of(&scaled), base, "a replica count is no rollout");
        let mut restarted = deployment.clone();
        restarted["spec"]["template"]["metadata"]["annotations"] =
            serde_json::json!({"kubectl.kubernetes.io/restartedAt": "2026-11-29T10:00:00Z"});
        assert_ne!(of(&restarted), base, "kubectl rollout restart is a rollout");
        let mut image = deployment.clone();
        image["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/coredns/coredns:v9".into();
        assert_ne!(of(&image), base);
        // The same template with its keys in another order: the same fingerprint.
        let text = deployment["spec"]["template"].to_string();
        let reordered: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(fingerprint(&reordered), base);
        // Pinned: a change of the hash (or of the canonical form) would reset every
        // breaker in the field on upgrade, so it must be a decision, not an accident.
        assert_eq!(
            fingerprint(&serde_json::json!({"b": 1, "a": [true, null]})),
            "6a79a0d90cbae5e2"
        );
    }
}
