//! The Kubernetes REST API, as far as we use it: typed wire structs holding only the
//! fields the decision needs, the Deployment GET, the paged pod list, eviction or
//! deletion with a uid precondition, and the audit Event.
//!
//! Reads live here; the two mutating calls (`remove`, `post_event`) are called only
//! from `act`.

use crate::config::EvictionMode;
use crate::error::{Cause, Error};
use crate::http::{Client, Payload};
use crate::plan::{Pod, Rollout};
use serde::Deserialize;
use std::borrow::Cow;

/// Page size of the pod list: large enough that a 1,000-pod fleet is two requests,
/// small enough that a page of fat pods stays a few MiB.
pub const PAGE_LIMIT: usize = 500;

/// One page of the pod list, parsed straight into `pods`: each item becomes a `Pod`
/// as soon as it is read, so a page's wire structs never exist together and no
/// page-sized vector is made. (musl's allocator, the one in the image, hands the
/// memory of a page's worth of freed objects back to the kernel after every page;
/// BENCHMARKS.md.) The value is the continue token.
struct PodList<'p> {
    container: Option<&'p str>,
    pods: &'p mut Vec<Pod>,
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
                        container: self.container,
                        pods: &mut *self.pods,
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

/// The `items` of a page, each made into a `Pod` as it is parsed.
struct Items<'p> {
    container: Option<&'p str>,
    pods: &'p mut Vec<Pod>,
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
        crate::http::each_bounded(seq, |pod: WirePod| self.pods.push(pod.into_pod(self.container)))
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
    generation: i64,
}

#[derive(Deserialize, Default)]
struct DeploymentSpec {
    replicas: Option<i64>,
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
/// (50,000 of them at the cluster's pod limit); anything else is kept as sent.
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
        Rollout {
            name: self.metadata.name,
            generation: self.metadata.generation,
            observed_generation: self.status.observed_generation,
            desired: self.spec.replicas.unwrap_or(1),
            replicas: self.status.replicas,
            updated: self.status.updated_replicas,
        }
    }
}

/// Parses a PodList body (`kubectl get pods -o json`, one API page) into pods and
/// the continue token.
pub fn parse_pod_list(json: &str, container: Option<&str>) -> Result<(Vec<Pod>, Option<String>), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut pods = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json);
    let next = PodList {
        container,
        pods: &mut pods,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((pods, next))
}

/// Parses a Deployment body (`kubectl get deploy NAME -o json`).
pub fn parse_deployment(json: &str) -> Result<Rollout, serde_json::Error> {
    serde_json::from_str::<Deployment>(json).map(Deployment::into_rollout)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Kubernetes API of one namespace.
pub struct Kube<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
}

impl Kube<'_> {
    /// The Deployment's rollout state; 404 is "not found", said plainly.
    pub fn deployment(&self, name: &str) -> Result<Rollout, Error> {
        let path = format!("/apis/apps/v1/namespaces/{}/deployments/{name}", self.namespace);
        match self.client.json::<Deployment>("get deployment", "GET", &path, None) {
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

    /// Every pod matching `selector`, following `continue` page by page. An expired
    /// continue token (410 Gone) restarts the list from the start, once.
    pub fn pods(&self, selector: &str, container: &str) -> Result<Vec<Pod>, Error> {
        let first = format!(
            "/api/v1/namespaces/{}/pods?labelSelector={}&limit={PAGE_LIMIT}",
            self.namespace,
            encode(selector)
        );
        let mut restarted = false;
        let mut pods = Vec::new();
        let mut next: Option<String> = None;
        // One body buffer for every page: memory holds one page whatever the fleet.
        let mut buf = Vec::new();
        loop {
            let path = match &next {
                Some(token) => format!("{first}&continue={}", encode(token)),
                None => first.clone(),
            };
            let before = pods.len();
            match self.page(&path, &mut buf, container, &mut pods) {
                Ok(token) => {
                    log::debug!(pods = pods.len() - before, more = token.is_some(); "pod list page");
                    next = token;
                    if next.is_none() {
                        return Ok(pods);
                    }
                }
                Err(e) if e.status() == Some(410) && next.is_some() && !restarted => {
                    log::warn!(error:% = e; "pod list continue token expired, listing again from the start");
                    restarted = true;
                    pods.clear();
                    next = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One page of the pod list, read into `buf` and parsed from there onto `pods`;
    /// the continue token.
    fn page(
        &self,
        path: &str,
        buf: &mut Vec<u8>,
        container: &str,
        pods: &mut Vec<Pod>,
    ) -> Result<Option<String>, Error> {
        let (doing, response) = self.client.send("list pods", "GET", path, None)?;
        self.client.read_body(&doing, response.into_body(), buf)?;
        let page = PodList {
            container: Some(container),
            pods,
        };
        self.client.parse_slice_seed(&doing, buf, page)
    }

    /// Evicts or deletes one pod, only if it is still the pod with this uid.
    pub fn remove(&self, mode: EvictionMode, name: &str, uid: &str) -> Result<(), Error> {
        let ns = self.namespace;
        let (method, path, body, what) = match mode {
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
        let bytes = body.to_string().into_bytes();
        self.client.send(
            what,
            method,
            &path,
            Some(Payload {
                content_type: "application/json",
                bytes: &bytes,
            }),
        )?;
        Ok(())
    }

    /// Posts a core/v1 Event of type Normal, reason `Rebalanced`, on the pod.
    pub fn post_event(&self, name: &str, uid: &str, message: &str, now: i64) -> Result<(), Error> {
        let ns = self.namespace;
        let at = crate::clock::format_rfc3339(now);
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": uid},
            "type": "Normal",
            "reason": "Rebalanced",
            "action": "Rebalance",
            "message": message,
            "source": {"component": "pod-rebalancer"},
            "reportingComponent": "pod-rebalancer",
            "reportingInstance": "pod-rebalancer",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        });
        let bytes = body.to_string().into_bytes();
        let path = format!("/api/v1/namespaces/{ns}/events");
        self.client.send(
            "post event",
            "POST",
            &path,
            Some(Payload {
                content_type: "application/json",
                bytes: &bytes,
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_pod_list_becomes_pods() {
        let json = include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json");
        let (pods, next) = parse_pod_list(json, Some("coredns")).unwrap();
        assert_eq!(next, None);
        assert_eq!(pods.len(), 8);
        let coredns = pods.iter().find(|p| p.name.starts_with("coredns-")).unwrap();
        assert_eq!(coredns.phase, "Running");
        assert!(coredns.ready && !coredns.terminating);
        assert!(!coredns.uid.is_empty() && coredns.node.is_some() && coredns.created.is_some());
        assert_eq!(coredns.cpu_request, Some(0.1));
        assert_eq!(coredns.cpu_limit, None);
    }

    #[test]
    fn a_list_without_items_is_not_an_empty_list() {
        for body in [
            "{}",
            r#"{"kind":"PodList","items":null}"#,
            include_str!("../fixtures/vm/query_cpu_by_pod.json"),
        ] {
            assert!(parse_pod_list(body, None).is_err(), "{body}");
        }
        let empty = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"27131"},"items":[]}"#;
        assert_eq!(parse_pod_list(empty, None).unwrap().0, vec![]);
    }

    #[test]
    fn a_page_of_countless_pods_is_refused() {
        let pod = r#"{"metadata":{"name":"a"}}"#;
        let page = |n: usize| format!(r#"{{"kind":"PodList","items":[{}]}}"#, vec![pod; n].join(","));
        assert_eq!(
            parse_pod_list(&page(crate::http::MAX_ITEMS), None).unwrap().0.len(),
            crate::http::MAX_ITEMS
        );
        let e = parse_pod_list(&page(crate::http::MAX_ITEMS + 1), None).unwrap_err();
        let expected = format!("expected at most {} elements", crate::http::MAX_ITEMS);
        assert!(e.to_string().contains(&expected), "{e}");
    }

    #[test]
    fn a_failed_pod_is_not_ready() {
        let json = include_str!("../fixtures/k8s/podlist_job_pod_failed_kind-v1.36.json");
        let (pods, _) = parse_pod_list(json, None).unwrap();
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
        for i in 0..6 {
            let (pods, _) = parse_pod_list(&page, Some(&format!("c{i}"))).unwrap();
            assert_eq!(pods[0].cpu_request, Some(f64::from(i)), "c{i}");
            assert!(!pods[0].ready);
        }
        assert_eq!(parse_pod_list(&page, Some("other")).unwrap().0[0].cpu_request, None);
    }

    #[test]
    fn a_paged_list_yields_its_continue_token() {
        let json = include_str!("../fixtures/k8s/podlist_paginated_continue_aks_TRIMMED.json");
        let (pods, next) = parse_pod_list(json, None).unwrap();
        assert_eq!(pods.len(), 1);
        assert!(next.unwrap().starts_with("eyJ2Ijoi"));
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
        assert_eq!(
            encode("app=consumer,tier in (a b)"),
            "app%3Dconsumer%2Ctier%20in%20%28a%20b%29"
        );
        assert_eq!(encode("eyJ2Ijoi+/="), "eyJ2Ijoi%2B%2F%3D");
    }
}
