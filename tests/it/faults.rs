//! The fault matrix: one row per injected fault (an address that refuses, hangs or
//! does not resolve; a TLS problem; a status code on one request; a broken body; a
//! missing or unreadable file) with the exit code it must give, the mutating requests
//! it may still send (none, for every fault before acting), and a phrase the error or
//! warning must contain. Every row also checks that neither token leaked, nothing
//! panicked, the run ended in bounded time, and the metrics file tells the same story.
//!
//! The fleet is the same in every row and is imbalanced: without the fault, the run
//! evicts p1 (hottest) and p3 (coldest). So "no mutating request" is a claim that can
//! fail. The metrics endpoint is the real VictoriaMetrics unless the row replaces it;
//! canned metrics answers are real answers captured from it at the start, edited only
//! where no server gives the broken form.

use crate::cycle::{fleet, name};
use crate::support::kube::{Fake, deployment_json, pod_json};
use crate::support::server::{Blackhole, CertOptions, Delivery, Pki, Reply, Request, Server};
use crate::support::{TempDir, env_with, fixture, now, untargeted, vm};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const NS: &str = "faults";
const DEPLOYMENT: &str = "ingestion-consumer";
const CPUS: [f64; 5] = [0.8, 1.9, 0.79, 0.12, 0.85];
/// Recognisable tokens: no piece of either may appear in any output, and each may be
/// sent only to its own server. Random-looking, so a piece found is a leak, never chance.
pub(crate) const KUBE_TOKEN: &str = "eyKUBEqZ7x9wV3mP5rT8yL2nJ6hG4dS1fA0";
pub(crate) const PROM_TOKEN: &str = "vmPROMkX4cB7nM1qW9eR3tY6uI8oP2aZ5s";
/// The shortest piece of a token that counts as a leak: shorter than the 16-byte rows
/// of a hex dump, so a token cut across rows is still found.
const PIECE: usize = 7;
/// The timeout rows set `KUBE_TIMEOUT`/`PROMETHEUS_TIMEOUT` to this; the others to 10 s.
const SHORT: Duration = Duration::from_secs(1);
/// `resources.limits.memory` of `manifests/cronjob.yaml`: beyond it the run is
/// OOM-killed, which says nothing about why.
const MEMORY_LIMIT_KIB: i64 = 128 * 1024;
/// How far past its timeouts a run may end.
const GRACE: Duration = Duration::from_secs(2);

/// The mutating requests a row may send, in order, as "evict pN", "delete pN", "event pN".
const NONE: &[&str] = &[];
/// Both pods removed and recorded: the run acted as it would without the fault.
/// Then one Event on the Deployment for the action.
const ACTED: &[&str] = &["evict p1", "event p1", "evict p3", "event p3", "event consumer"];
/// The hottest pod's removal failed hard: nothing after it.
const STOPPED: &[&str] = &["evict p1"];
/// The hottest pod was refused (gone, replaced, protected): the coldest stays too.
const SKIPPED: &[&str] = &["evict p1"];
/// A dry run: both removals asked as server-side dry runs, no Event.
const DRY_RUN: &[&str] = &["evict p1", "evict p3"];
const DELETED: &[&str] = &["delete p1", "event p1", "delete p3", "event p3", "event consumer"];
const DELETE_STOPPED: &[&str] = &["delete p1"];
const DELETE_SKIPPED: &[&str] = &["delete p1"];

/// Where a server is, when it is not a working server of ours.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Addr {
    /// Nothing listens on the port.
    Refused,
    /// A host name under `.invalid` (RFC 2606), which never resolves.
    Unresolvable,
    /// Connections are never accepted: connect waits until the timeout.
    Blackhole,
    /// TLS, signed by a CA other than the one trusted.
    OtherCa,
    /// TLS, with a certificate that expired in 2021.
    Expired,
    /// TLS, with a certificate for another host name only.
    WrongName,
    /// An https URL, but the server speaks plain HTTP.
    PlainOnHttps,
    /// An http URL, but the server speaks TLS.
    TlsOnHttp,
}

/// The certificate faults, as (what, addr, what the run says of it): the same for every
/// server the run asks over TLS.
const CERTIFICATE_FAULTS: [(&str, Addr, &str); 3] = [
    ("signed by another CA", Addr::OtherCa, "UnknownIssuer"),
    (
        "with an expired certificate",
        Addr::Expired,
        "invalid peer certificate: certificate expired",
    ),
    (
        "with a certificate for another name",
        Addr::WrongName,
        "certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"kubernetes.example\")",
    ),
];

/// A file the run reads or writes, broken.
#[derive(Debug, Clone, Copy, PartialEq)]
enum File {
    TokenMissing,
    TokenEmpty,
    /// `token` is a directory: unreadable even for root.
    TokenUnreadable,
    /// `token` holds the token and a second word, as a pasted `Bearer …` would.
    TokenWithSpace,
    CaMissing,
    /// `ca.crt` holds this instead of PEM certificates.
    CaNot(&'static str),
    PromTokenMissing,
    PromTokenEmpty,
    PromTokenUnreadable,
    PromCaMissing,
    PromCaNot(&'static str),
    /// The directory of `METRICS_FILE` does not exist.
    MetricsDirMissing,
    /// The directory of `METRICS_FILE` is read-only (the binary runs as nobody when
    /// the tests run as root, since root writes anywhere).
    MetricsDirReadOnly,
    /// `METRICS_FILE` is a directory.
    MetricsFileIsDir,
    /// A previous metrics file with this text.
    Previous(&'static str),
}

enum Fault {
    /// The fake Kubernetes API answers this route so (see `support::kube::Fake`).
    Kube(String, Reply),
    /// The fake Kubernetes API's state is changed so.
    KubeState(fn(Fake) -> Fake),
    KubeAt(Addr),
    /// The metrics endpoint answers every request so.
    Metrics(Reply),
    MetricsAt(Addr),
    /// `METRICS_PUSH_URL` answers so.
    Push(Reply),
    PushAt(Addr),
    File(File),
    /// Nothing is broken: the sanity row that shows what an unbroken run does.
    Nothing,
}

/// A further check of a row's run.
type Check = fn(&Ran) -> Result<(), String>;

struct Row {
    name: String,
    fault: Fault,
    env: Vec<(&'static str, &'static str)>,
    code: i32,
    mutations: &'static [&'static str],
    /// A phrase of the run's error (exit 1) or of the log (exit 0).
    says: &'static str,
    /// Requests that run into `SHORT`: the run must end within their sum plus `GRACE`.
    timeouts: u32,
    /// A further check of what the run did.
    then: Option<Check>,
}

fn row(
    name: impl Into<String>,
    fault: Fault,
    code: i32,
    mutations: &'static [&'static str],
    says: &'static str,
) -> Row {
    Row {
        name: name.into(),
        fault,
        env: Vec::new(),
        code,
        mutations,
        says,
        timeouts: 0,
        then: None,
    }
}

impl Row {
    fn env(mut self, var: &'static str, value: &'static str) -> Row {
        self.env.push((var, value));
        self
    }

    /// `n` requests are expected to time out after `SHORT`.
    fn timeouts(mut self, n: u32) -> Row {
        self.timeouts = n;
        self.env("KUBE_TIMEOUT", "1s").env("PROMETHEUS_TIMEOUT", "1s")
    }

    /// A row that serves 100 MB: the binary must stay small, and its timeouts are
    /// raised so that a slow machine parsing up to the limit is not a timeout.
    fn huge(self) -> Row {
        self.env("KUBE_TIMEOUT", "60s")
            .env("PROMETHEUS_TIMEOUT", "60s")
            .then(Ran::small)
    }

    fn then(mut self, check: Check) -> Row {
        self.then = Some(check);
        self
    }
}

fn kube(route: &str, reply: Reply) -> Fault {
    Fault::Kube(route.to_string(), reply)
}

fn status(code: u16, fixture_path: &str) -> Reply {
    Reply::json(code, fixture(fixture_path))
}

/// A reply that is never sent.
fn hang() -> Reply {
    Reply::json(200, "{}").delivered(Delivery::Never)
}

/// The connection closes without an answer.
fn hang_up() -> Reply {
    Reply::json(200, "{}").delivered(Delivery::Close)
}

/// 100 MB: `head`, then `fill` again and again.
fn huge(code: u16, head: &str, fill: &str) -> Reply {
    Reply::json(code, head).delivered(Delivery::Stream {
        total: 100_000_000,
        fill: fill.as_bytes().to_vec(),
    })
}

/// The body cut at half, announced as such (a proxy that truncated it).
fn truncated(body: &str) -> Reply {
    Reply::json(200, &body[..body.len() / 2])
}

/// The whole body announced, half of it sent, then the connection closes.
fn cut(body: &str) -> Reply {
    Reply::json(200, body).delivered(Delivery::CutMidBody)
}

/// The ways any JSON body arrives broken, as (what, reply, what the run says of it).
fn broken_bodies(body: &str) -> [(&'static str, Reply, &'static str); 4] {
    [
        ("empty", Reply::json(200, ""), "EOF while parsing"),
        (
            "not JSON",
            Reply::text(200, "<html><body>Sign in to continue</body></html>"),
            "expected JSON of the documented shape",
        ),
        ("truncated", truncated(body), "EOF while parsing"),
        ("cut off mid-body", cut(body), "reading the body failed"),
    ]
}

/// The body, one byte every 50 ms: each read makes progress, the whole never arrives in time.
fn trickle(body: &str) -> Reply {
    Reply::json(200, body).delivered(Delivery::Trickle(Duration::from_millis(50)))
}

/// What the Kubernetes API returns for the fleet, before any fault.
fn pods_json() -> Vec<Value> {
    let (pods, _) = fleet(&CPUS);
    let now = now();
    pods.iter().map(|p| pod_json(NS, DEPLOYMENT, p, now)).collect()
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "85783"}, "items": items})
}

fn deployment() -> Value {
    deployment_json(NS, DEPLOYMENT, CPUS.len() as i64)
}

/// Real VictoriaMetrics answers, captured once from the shared server after the
/// fleet's series were fed.
struct Answers {
    good: String,
    error_422: Reply,
    /// The real server's answer to a wrong path prefix.
    wrong_prefix: Reply,
    matrix: String,
    duplicates: String,
    negative: String,
    infinite: String,
}

fn answers() -> &'static Answers {
    static ANSWERS: OnceLock<Answers> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let vm = vm::shared();
        let (_, cpu) = fleet(&CPUS);
        vm.feed(NS, DEPLOYMENT, &cpu);
        let query = pod_rebalancer::victoria::cpu_query(NS, Some(DEPLOYMENT), &[], 300);
        let selector = format!("container_cpu_usage_seconds_total{{namespace=\"{NS}\",container=\"{DEPLOYMENT}\"}}");
        let ask = |path: &str, promql: &str| -> Reply {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut response = agent
                .post(&format!("{}{path}", vm.url()))
                .send_form([("query", promql)])
                .expect("VictoriaMetrics answers");
            let code = response.status().as_u16();
            let body = response.body_mut().read_to_string().expect("answer body");
            Reply::json(code, body)
        };
        let body = |promql: &str| {
            let reply = ask("/api/v1/query", promql);
            assert_eq!(reply.status, 200, "{promql}: {}", String::from_utf8_lossy(&reply.body));
            String::from_utf8(reply.body).expect("UTF-8 answer")
        };
        let answers = Answers {
            good: body(&query),
            error_422: ask("/api/v1/query", "sum(rate("),
            wrong_prefix: ask("/no/such/prefix/api/v1/query", &query),
            matrix: body(&format!("({query})[5m:1m]")),
            duplicates: body(&format!(
                "sum by (pod, container) (rate(container_cpu_usage_seconds_total{{namespace=\"{NS}\"}}[300s]))"
            )),
            negative: body(&format!("-1 * {query}")),
            infinite: body(&format!("sum by (pod) (rate({selector}[300s])) / 0")),
        };
        // The feed may add series of pods that are not the fleet's (an old ReplicaSet):
        // the run ignores those, so only the fleet's own pods are required.
        for (pod, _) in &cpu {
            assert!(
                answers.good.contains(&format!("\"{pod}\"")),
                "{pod} missing from {}",
                answers.good
            );
        }
        answers
    })
}

/// The good answer with `edit` applied to its JSON.
fn edited(edit: impl Fn(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&answers().good).expect("JSON");
    edit(&mut v);
    v.to_string()
}

/// The rows. Adding a fault is adding a line here.
fn rows() -> Vec<Row> {
    let a = answers();
    let hottest = name(1);
    let evict_hottest = format!("evict:{hottest}");
    let delete_hottest = format!("delete:{hottest}");
    let list_body = pod_list(pods_json()).to_string();
    let deployment_body = deployment().to_string();
    let gone = |code| status(code, "k8s/constructed/status_410_expired_continue.json");
    let mut rows = Vec::new();

    rows.push(row("nothing is broken", Fault::Nothing, 0, ACTED, "pod removed"));
    rows.push(
        row(
            "nothing is broken, delete mode",
            Fault::Nothing,
            0,
            DELETED,
            "pod removed",
        )
        .env("EVICTION_MODE", "delete"),
    );

    // Status codes, on each request type. Bodies are recorded Status objects where
    // one exists, and constructed ones (fixtures/k8s/constructed) where none does.
    let kube_statuses: [(u16, Reply); 9] = [
        (401, status(401, "k8s/status_401_unauthorized.json")),
        (403, status(403, "k8s/status_403_forbidden_get_pod.json")),
        (404, status(404, "k8s/status_404_notfound_pod.json")),
        (409, status(409, "k8s/status_409_conflict.json")),
        (410, gone(410)),
        (422, status(422, "k8s/status_422_invalid_required.json")),
        // kube-apiserver's max-in-flight filter answers in plain text (http.Error).
        (429, Reply::text(429, "Too many requests, please try again later.\n")),
        (500, status(500, "k8s/constructed/status_500_internal_error.json")),
        // HAProxy's own page when no API server behind it is up.
        (503, Reply::text(503, HAPROXY_503)),
    ];
    for (code, reply) in &kube_statuses {
        let says: &'static str = match code {
            401 => "get deployment (GET https://127.0.0.1:",
            404 => "deployment ingestion-consumer not found in namespace faults (404: pods \"grafana\" not found)",
            _ => leak(format!("got {code}: ")),
        };
        rows.push(row(
            format!("deployment GET answered {code}"),
            kube("deployment", reply.clone()),
            1,
            NONE,
            says,
        ));
    }
    let list_forbidden = status(403, "k8s/status_403_forbidden_list_pods.json");
    for (code, reply) in &kube_statuses {
        let reply = if *code == 403 {
            list_forbidden.clone()
        } else {
            reply.clone()
        };
        let says = "list pods (GET https://127.0.0.1:";
        let r = row(format!("pod list answered {code}"), kube("list", reply), 1, NONE, says);
        rows.push(r.then(match code {
            401 => |r: &Ran| r.error_has("got 401: Unauthorized"),
            403 => |r: &Ran| r.error_has("got 403: pods is forbidden: User \"system:serviceaccount:bluezero:default\""),
            404 => |r: &Ran| r.error_has("got 404: pods \"grafana\" not found"),
            410 => |r: &Ran| r.error_has("got 410: The provided continue parameter is too old"),
            500 => |r: &Ran| r.error_has("got 500: Internal error occurred: etcdserver: request timed out"),
            _ => |r: &Ran| r.error_has("expected a 2xx answer, got "),
        }));
    }
    rows.push(row(
        "a continue token expired once",
        Fault::KubeState(|f| Fake {
            page_size: 2,
            expire_continue: 1,
            ..f
        }),
        0,
        ACTED,
        "listing again from the start",
    ));
    rows.push(row(
        "a continue token expired twice in a row",
        Fault::KubeState(|f| Fake {
            page_size: 2,
            expire_continue: 2,
            ..f
        }),
        1,
        NONE,
        "got 410: The provided continue parameter is too old",
    ));
    rows.push(row(
        "the second page answered 500",
        Fault::KubeState(|f| {
            Fake { page_size: 2, ..f }.reply(
                "list:continue",
                status(500, "k8s/constructed/status_500_internal_error.json"),
            )
        }),
        1,
        NONE,
        "got 500: Internal error occurred",
    ));
    state_rows(&mut rows);
    for (code, reply) in &kube_statuses {
        let (mutations, says) = match code {
            404 => (SKIPPED, "the pod is already gone"),
            409 => (SKIPPED, "the pod was replaced or changed"),
            429 => (SKIPPED, "a PodDisruptionBudget does not allow it now"),
            _ => (STOPPED, leak(format!("got {code}: "))),
        };
        let reply = if *code == 429 {
            status(429, "k8s/constructed/status_429_eviction_pdb.json")
        } else {
            reply.clone()
        };
        // A refusal is not a failed run; any other answer stops acting and fails it.
        let exit = if matches!(code, 404 | 409 | 429) { 0 } else { 1 };
        rows.push(row(
            format!("eviction answered {code}"),
            kube(&evict_hottest, reply),
            exit,
            mutations,
            says,
        ));
    }
    for (code, reply) in &kube_statuses {
        let (mutations, says) = match code {
            404 => (DELETE_SKIPPED, "the pod is already gone"),
            409 => (DELETE_SKIPPED, "the pod was replaced or changed"),
            429 => (DELETE_SKIPPED, "a PodDisruptionBudget does not allow it now"),
            _ => (DELETE_STOPPED, leak(format!("got {code}: "))),
        };
        let exit = if matches!(code, 404 | 409 | 429) { 0 } else { 1 };
        rows.push(
            row(
                format!("deletion answered {code}"),
                kube(&delete_hottest, reply.clone()),
                exit,
                mutations,
                says,
            )
            .env("EVICTION_MODE", "delete"),
        );
    }
    for (code, reply) in &kube_statuses {
        rows.push(row(
            format!("event answered {code}"),
            kube("event", reply.clone()),
            0,
            ACTED,
            "could not record the removal as an Event",
        ));
    }
    let metrics_statuses: [(u16, Reply); 9] = [
        (401, Reply::text(401, "Unauthorized")),
        (403, Reply::text(403, "Forbidden")),
        // Go's net/http NotFound, as vmauth and most Go proxies send it.
        (404, Reply::text(404, "404 page not found\n")),
        (409, Reply::text(409, "Conflict")),
        (410, Reply::text(410, "Gone")),
        (422, a.error_422.clone()),
        (429, Reply::text(429, "Too Many Requests")),
        (500, Reply::text(500, "Internal Server Error")),
        (503, status(503, "prom/error_internal_tsdb_not_ready.json")),
    ];
    for (code, reply) in &metrics_statuses {
        let says = match code {
            404 => "got 404: 404 page not found",
            422 => "got 422: error when executing query=\"sum(rate(\"",
            503 => "got 503: TSDB not ready (internal)",
            _ => "query CPU (POST http://127.0.0.1:",
        };
        rows.push(row(
            format!("metrics query answered {code}"),
            Fault::Metrics(reply.clone()),
            1,
            NONE,
            says,
        ));
    }
    for (code, reply) in &metrics_statuses {
        rows.push(row(
            format!("metrics push answered {code}"),
            Fault::Push(reply.clone()),
            0,
            ACTED,
            "metrics push failed",
        ));
    }
    rows.push(row(
        "metrics endpoint with a wrong path prefix",
        Fault::Metrics(a.wrong_prefix.clone()),
        1,
        NONE,
        "got 400: remoteAddr: ",
    ));
    rows.push(row(
        "a redirect is not followed",
        kube("list", Reply::text(307, "").delivered(Delivery::Whole)),
        1,
        NONE,
        "got 307",
    ));

    // Transport: each server unreachable, unresolvable, silent, or hanging up.
    for (what, addr, says, timeouts) in [
        ("refused", Addr::Refused, "Connection refused", 0),
        ("unresolvable", Addr::Unresolvable, "kubernetes.invalid", 0),
        ("never accepting", Addr::Blackhole, "timed out after 1s", 1),
    ] {
        rows.push(row(format!("Kubernetes API {what}"), Fault::KubeAt(addr), 1, NONE, says).timeouts(timeouts));
    }
    for (what, addr, says, timeouts) in [
        ("refused", Addr::Refused, "Connection refused", 0),
        ("unresolvable", Addr::Unresolvable, "metrics.invalid", 0),
        ("never accepting", Addr::Blackhole, "timed out after 1s", 1),
    ] {
        rows.push(
            row(
                format!("metrics endpoint {what}"),
                Fault::MetricsAt(addr),
                1,
                NONE,
                says,
            )
            .timeouts(timeouts),
        );
        rows.push(
            row(
                format!("metrics push {what}"),
                Fault::PushAt(addr),
                0,
                ACTED,
                "metrics push failed",
            )
            .timeouts(timeouts),
        );
    }
    rows.push(
        row(
            "deployment GET never answered",
            kube("deployment", hang()),
            1,
            NONE,
            "get deployment (GET https://127.0.0.1:",
        )
        .timeouts(1),
    );
    rows.push(
        row(
            "pod list never answered",
            kube("list", hang()),
            1,
            NONE,
            "timed out after 1s",
        )
        .timeouts(1),
    );
    rows.push(row(
        "pod list hung up",
        kube("list", hang_up()),
        1,
        NONE,
        "list pods (GET https://127.0.0.1:",
    ));
    rows.push(
        row(
            "pod list trickled",
            kube("list", trickle(&list_body)),
            1,
            NONE,
            "no answer: timed out after 1s while reading the body",
        )
        .timeouts(1),
    );
    rows.push(
        row(
            "eviction never answered",
            kube(&evict_hottest, hang()),
            1,
            STOPPED,
            "timed out after 1s",
        )
        .timeouts(1),
    );
    rows.push(row(
        "eviction hung up",
        kube(&evict_hottest, hang_up()),
        1,
        STOPPED,
        "evict pod (POST https://127.0.0.1:",
    ));
    rows.push(
        row(
            "events never answered",
            kube("event", hang()),
            0,
            ACTED,
            "could not record the removal as an Event",
        )
        .timeouts(2),
    );
    rows.push(
        row(
            "metrics query never answered",
            Fault::Metrics(hang()),
            1,
            NONE,
            "timed out after 1s",
        )
        .timeouts(1),
    );
    rows.push(row(
        "metrics query hung up",
        Fault::Metrics(hang_up()),
        1,
        NONE,
        "query CPU (POST http://127.0.0.1:",
    ));
    rows.push(
        row(
            "metrics answer trickled",
            Fault::Metrics(trickle(&a.good)),
            1,
            NONE,
            "no answer: timed out after 1s while reading the body",
        )
        .timeouts(1),
    );
    rows.push(
        row(
            "metrics push never answered",
            Fault::Push(hang()),
            0,
            ACTED,
            "metrics push failed",
        )
        .timeouts(1),
    );

    // TLS.
    for (what, addr, says) in CERTIFICATE_FAULTS.into_iter().chain([
        (
            "speaking plain HTTP on an https URL",
            Addr::PlainOnHttps,
            "get deployment (GET https://127.0.0.1:",
        ),
        (
            "speaking TLS on an http URL",
            Addr::TlsOnHttp,
            "get deployment (GET http://127.0.0.1:",
        ),
    ]) {
        rows.push(row(
            format!("Kubernetes API {what}"),
            Fault::KubeAt(addr),
            1,
            NONE,
            says,
        ));
    }
    for (what, addr, says) in CERTIFICATE_FAULTS.into_iter().chain([
        (
            "speaking plain HTTP on an https URL",
            Addr::PlainOnHttps,
            "query CPU (POST https://127.0.0.1:",
        ),
        (
            "speaking TLS on an http URL",
            Addr::TlsOnHttp,
            "query CPU (POST http://127.0.0.1:",
        ),
    ]) {
        rows.push(row(
            format!("metrics endpoint {what}"),
            Fault::MetricsAt(addr),
            1,
            NONE,
            says,
        ));
    }
    rows.push(row(
        "metrics push to a server signed by another CA",
        Fault::PushAt(Addr::OtherCa),
        0,
        ACTED,
        "UnknownIssuer",
    ));

    // Bodies: the Deployment.
    let deployment_with = |edit: fn(&mut Value)| {
        let mut d = deployment();
        edit(&mut d);
        Reply::json(200, d.to_string())
    };
    for (what, reply, says) in broken_bodies(&deployment_body).into_iter().chain([
        (
            "a Status",
            Reply::json(200, fixture("k8s/status_403_forbidden_get_pod.json")),
            "missing field `name`",
        ),
        (
            "with numbers as strings",
            deployment_with(|d| d["spec"]["replicas"] = json!("5")),
            "invalid type: string \"5\"",
        ),
        (
            "without metadata",
            deployment_with(|d| drop(d.as_object_mut().map(|o| o.remove("metadata")))),
            "missing field `metadata`",
        ),
        (
            "100 MB",
            huge(200, "{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"", "a"),
            "limit",
        ),
    ]) {
        let r = row(
            format!("deployment body {what}"),
            kube("deployment", reply),
            1,
            NONE,
            says,
        );
        rows.push(if what.starts_with("100 MB") { r.huge() } else { r });
    }
    rows.push(row(
        "deployment body with unknown fields",
        kube(
            "deployment",
            deployment_with(|d| {
                d["spec"]["futureField"] = json!({"nested": [1, 2, 3]});
                d["status"]["terminatingReplicas"] = json!(0);
                d["kind2"] = json!("x");
            }),
        ),
        0,
        ACTED,
        "pod removed",
    ));

    // Bodies: the pod list.
    let list_with = |edit: fn(&mut Value)| {
        let mut l = pod_list(pods_json());
        edit(&mut l);
        Reply::json(200, l.to_string())
    };
    let fat_pod = format!("{},", pods_json()[0]);
    for (what, reply, says) in broken_bodies(&list_body).into_iter().chain([
        (
            "a Status",
            Reply::json(200, fixture("k8s/status_403_forbidden_list_pods.json")),
            "missing field `items`",
        ),
        (
            "with items null",
            list_with(|l| l["items"] = Value::Null),
            "invalid type: null, expected a sequence",
        ),
        (
            "with a pod without metadata",
            list_with(|l| drop(l["items"][2].as_object_mut().map(|o| o.remove("metadata")))),
            "missing field `metadata`",
        ),
        (
            "with a number as a string",
            list_with(|l| l["items"][0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(1)),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "100 MB of pods",
            huge(200, "{\"kind\":\"PodList\",\"metadata\":{},\"items\":[", &fat_pod),
            "limit",
        ),
        (
            "100 MB of tiny pods",
            huge(
                200,
                "{\"kind\":\"PodList\",\"metadata\":{},\"items\":[",
                "{\"metadata\":{\"name\":\"a\"}},",
            ),
            // A page is read whole before it is parsed: the body limit comes first.
            "limit",
        ),
        (
            "100 MB of one pod name",
            huge(
                200,
                "{\"kind\":\"PodList\",\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"",
                "a",
            ),
            "limit",
        ),
        (
            "100 MB, a 60 MB pod name then more",
            huge(
                200,
                "{\"kind\":\"PodList\",\"metadata\":{},\"items\":[{\"metadata\":{\"name\":\"",
                &format!("{}\"}}}},{{\"metadata\":{{\"name\":\"", "a".repeat(60_000_000)),
            ),
            "limit",
        ),
        (
            "100 MB of one ignored field",
            huge(200, "{\"kind\":\"PodList\",\"metadata\":{},\"x\":\"", "a"),
            "limit",
        ),
        (
            "100 MB of whitespace",
            huge(200, "{\"kind\":\"PodList\",\"metadata\":{},\"items\":[", " "),
            "limit",
        ),
        (
            "100 MB error page",
            huge(500, "<html><body><h1>500</h1>", "<p>lorem ipsum</p>"),
            "got 500: <html><body><h1>500</h1><p>lorem ipsum</p>",
        ),
    ]) {
        let r = row(format!("pod list body {what}"), kube("list", reply), 1, NONE, says);
        rows.push(if what.starts_with("100 MB") { r.huge() } else { r });
    }
    rows.push(row(
        "pod list body with an empty list",
        kube("list", Reply::json(200, fixture("k8s/podlist_empty.json"))),
        1,
        NONE,
        "no pods matched the label selector app=consumer in namespace faults",
    ));
    rows.push(row(
        "pod list body with unknown fields",
        kube(
            "list",
            list_with(|l| {
                l["metadata"]["remainingItemCount"] = json!(0);
                l["futureField"] = json!({"a": [null, true]});
                for p in l["items"].as_array_mut().into_iter().flatten() {
                    p["metadata"]["futureMeta"] = json!("x");
                    p["status"]["resize"] = json!("Proposed");
                    p["spec"]["containers"][0]["resources"]["claims"] = json!([{"name": "gpu"}]);
                }
            }),
        ),
        0,
        ACTED,
        "pod removed",
    ));
    rows.push(
        row(
            "eviction answered 201 with a 100 MB body",
            kube(&evict_hottest, huge(201, "{\"kind\":\"Status\",\"x\":\"", "a")),
            0,
            ACTED,
            "pod removed",
        )
        .huge(),
    );

    // Bodies: the metrics answer.
    let isp: Value = serde_json::from_str(&fixture("vm/cluster_query_vector_isPartial_false.json")).expect("JSON");
    let mut partial = isp.clone();
    partial["isPartial"] = json!(true);
    for (what, reply, says) in broken_bodies(&a.good).into_iter().chain([
        (
            "status error with 200",
            status(200, "prom/error_internal_tsdb_not_ready.json"),
            "status \"error\": TSDB not ready (internal)",
        ),
        (
            "isPartial true",
            Reply::json(200, partial.to_string()),
            "isPartial is true",
        ),
        (
            "a matrix",
            Reply::json(200, a.matrix.clone()),
            "expected resultType vector, got matrix",
        ),
        (
            "a scalar",
            status(200, "prom/query_scalar_openapi.json"),
            "expected resultType vector, got scalar",
        ),
        // No server at hand answers with a string; the shape is the Prometheus API's.
        (
            "a string",
            Reply::json(
                200,
                r#"{"status":"success","data":{"resultType":"string","result":[1767436620,"42"]}}"#,
            ),
            "expected resultType vector, got string",
        ),
        (
            "duplicate series for a pod",
            Reply::json(200, a.duplicates.clone()),
            "expected one series per pod, got several",
        ),
        (
            "a value that is not a number",
            Reply::json(200, edited(|v| v["data"]["result"][0]["value"][1] = json!("1,9"))),
            "expected a number, got \"1,9\"",
        ),
        (
            "a value as a JSON number",
            Reply::json(200, edited(|v| v["data"]["result"][0]["value"][1] = json!(1.9))),
            "invalid type: floating point `1.9`, expected a string",
        ),
        (
            "without data",
            Reply::json(200, r#"{"status":"success"}"#),
            "expected data with a vector result, got no data",
        ),
        (
            "100 MB of samples",
            huge(
                200,
                "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[",
                "{\"metric\":{\"pod\":\"x\"},\"value\":[1,\"1\"]},",
            ),
            "expected at most 150000 elements in a list, got more",
        ),
        (
            "100 MB of one label",
            huge(
                200,
                "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"pod\":\"",
                "x",
            ),
            "limit",
        ),
    ]) {
        let r = row(format!("metrics answer {what}"), Fault::Metrics(reply), 1, NONE, says);
        rows.push(if what.starts_with("100 MB") { r.huge() } else { r });
    }
    rows.push(
        row(
            "metrics answer with negative CPU",
            Fault::Metrics(Reply::json(200, a.negative.clone())),
            1,
            NONE,
            "no CPU metrics for container ingestion-consumer",
        )
        .then(|r| r.log_has("(5 pods answered NaN, ±Inf or a negative number)")),
    );
    rows.push(
        row(
            "metrics answer with +Inf for every pod",
            Fault::Metrics(Reply::json(200, a.infinite.clone())),
            1,
            NONE,
            "no CPU metrics for container ingestion-consumer",
        )
        .then(|r| r.log_has("(5 pods answered NaN, ±Inf or a negative number)")),
    );
    rows.push(row(
        "metrics answer with unknown fields",
        Fault::Metrics(Reply::json(
            200,
            edited(|v| {
                v["isPartial"] = json!(false);
                v["stats"] = isp["stats"].clone();
                v["warnings"] = json!(["future warning"]);
                v["data"]["futureField"] = json!(1);
                for s in v["data"]["result"].as_array_mut().into_iter().flatten() {
                    s["futureSampleField"] = json!({});
                }
            }),
        )),
        0,
        ACTED,
        "pod removed",
    ));

    // Files.
    for (what, file, code, mutations, says) in [
        (
            "service account token missing",
            File::TokenMissing,
            0,
            ACTED,
            "no service account token, sending no Authorization header",
        ),
        (
            "service account token empty",
            File::TokenEmpty,
            1,
            NONE,
            "expected a token, the file is empty",
        ),
        (
            "service account token unreadable",
            File::TokenUnreadable,
            1,
            NONE,
            "Is a directory",
        ),
        ("ca.crt missing", File::CaMissing, 1, NONE, "No such file or directory"),
        (
            "ca.crt not PEM",
            File::CaNot("this is not a certificate\n"),
            1,
            NONE,
            "expected PEM certificates, found none",
        ),
        (
            "ca.crt holding only a key",
            File::CaNot(PRIVATE_KEY_PEM),
            1,
            NONE,
            "expected PEM certificates, found none",
        ),
        (
            "ca.crt with broken base64",
            File::CaNot("-----BEGIN CERTIFICATE-----\nMIIB!!!!notbase64\n-----END CERTIFICATE-----\n"),
            1,
            NONE,
            "expected PEM certificates",
        ),
        (
            "metrics token file missing",
            File::PromTokenMissing,
            1,
            NONE,
            "read bearer token",
        ),
        (
            "metrics token file empty",
            File::PromTokenEmpty,
            1,
            NONE,
            "expected a token, the file is empty",
        ),
        (
            "metrics token file unreadable",
            File::PromTokenUnreadable,
            1,
            NONE,
            "Is a directory",
        ),
        (
            "metrics CA file missing",
            File::PromCaMissing,
            1,
            NONE,
            "read CA bundle",
        ),
        (
            "metrics CA file not PEM",
            File::PromCaNot("not PEM at all"),
            1,
            NONE,
            "expected PEM certificates, found none",
        ),
        (
            "metrics file directory missing",
            File::MetricsDirMissing,
            1,
            ACTED,
            "metrics file not written",
        ),
        (
            "metrics file directory read-only",
            File::MetricsDirReadOnly,
            1,
            ACTED,
            "metrics file not written",
        ),
        (
            "metrics file is a directory",
            File::MetricsFileIsDir,
            1,
            ACTED,
            "metrics file not written",
        ),
        (
            "previous metrics file corrupt",
            File::Previous("rebalancer_executions_total{status=\"success\"} 12\ngarbage\n"),
            0,
            ACTED,
            "previous metrics file ignored, counters restart",
        ),
        (
            "previous metrics file of another program",
            File::Previous("node_load1 0.5\n"),
            0,
            ACTED,
            "previous metrics file ignored, counters restart",
        ),
    ] {
        let mut r = row(what, Fault::File(file), code, mutations, says);
        r = match file {
            File::TokenMissing => r.then(|r| match r.kube.iter().find(|q| q.header("authorization").is_some()) {
                Some(q) => Err(format!("{} {} carried an Authorization header", q.method, q.target)),
                None => Ok(()),
            }),
            File::Previous(_) => r.then(|r| r.metrics_has("rebalancer_executions_total{status=\"success\"} 1\n")),
            // The decision stands (both pods went); the pushed copy reports the failure.
            // The log's last line, the exit code and the pushed metrics agree.
            File::MetricsDirMissing | File::MetricsDirReadOnly | File::MetricsFileIsDir => r
                .then(|r| r.pushed_has("rebalancer_errors_total{stage=\"report\"} 1\n"))
                .then(|r| r.pushed_has("rebalancer_cycle_outcome{outcome=\"error\"} 1\n"))
                .then(|r| match r.stderr.lines().last() {
                    Some(last) if last.contains("run finished") && last.contains("outcome=error") => Ok(()),
                    last => Err(format!("the last log line is {last:?}")),
                }),
            _ => r,
        };
        rows.push(r);
    }
    rows
}

const HAPROXY_503: &str =
    "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";

/// A private key in PEM, no certificate: what a mixed-up Secret mount gives.
const PRIVATE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

/// The fake with a state ConfigMap holding `document`.
fn with_document(mut f: Fake, document: &str) -> Fake {
    let mut state = crate::support::kube::state_configmap(NS);
    state["data"] = json!({ "state.json": document });
    f.state = Some(state);
    f
}

/// The memory (README "Memory"): with `STATE_CONFIGMAP` set, the state ConfigMap is read
/// first and written before any removal (the lease) and at the end. Every way it can
/// fail before acting fails the run with nothing removed; a refused lease is the last
/// request that writes anything.
fn state_rows(rows: &mut Vec<Row>) {
    const STATE: &str = "pod-rebalancer-state";
    const LEASE: &[&str] = &["put state"];
    const STATEFUL: &[&str] = &[
        "put state",
        "evict p1",
        "event p1",
        "evict p3",
        "event p3",
        "event consumer",
        "put state",
    ];
    let stateful = |r: Row| r.env("STATE_CONFIGMAP", STATE);
    rows.push(stateful(
        row(
            "with a memory, nothing broken",
            Fault::Nothing,
            0,
            STATEFUL,
            "pod removed",
        )
        .then(|r| r.log_has("run finished")),
    ));
    rows.push(stateful(row(
        "state ConfigMap answered 404",
        kube(
            "state",
            status(404, "k8s/constructed/status_404_notfound_configmap.json"),
        ),
        1,
        NONE,
        "state ConfigMap pod-rebalancer-state not found in namespace faults: the manifests create it",
    )));
    rows.push(stateful(row(
        "state ConfigMap answered 403",
        kube("state", status(403, "k8s/status_403_forbidden_get_pod.json")),
        1,
        NONE,
        "get state ConfigMap (GET https://127.0.0.1:",
    )));
    rows.push(stateful(row(
        "state ConfigMap answered 500",
        kube("state", status(500, "k8s/constructed/status_500_internal_error.json")),
        1,
        NONE,
        "got 500: Internal error occurred",
    )));
    rows.push(stateful(row(
        "state ConfigMap answered a list",
        kube("state", Reply::json(200, "[]")),
        1,
        NONE,
        "expected a ConfigMap with a name",
    )));
    rows.push(stateful(row(
        "state document not JSON",
        Fault::KubeState(|f| with_document(f, "streak=2")),
        1,
        NONE,
        "expected a JSON object",
    )));
    rows.push(stateful(row(
        "state document of a newer version",
        Fault::KubeState(|f| with_document(f, r#"{"version": 9}"#)),
        1,
        NONE,
        "version 9 is newer than this program's 2",
    )));
    rows.push(stateful(row(
        "state document with a wrong field",
        Fault::KubeState(|f| with_document(f, r#"{"version": 1, "streak": "two"}"#)),
        1,
        NONE,
        "expected the state document of version 1",
    )));
    rows.push(stateful(row(
        "state lease answered 409",
        kube("state:put", status(409, "k8s/status_409_conflict.json")),
        1,
        LEASE,
        "another run wrote the state ConfigMap pod-rebalancer-state meanwhile",
    )));
    rows.push(stateful(row(
        "state lease answered 500",
        kube(
            "state:put",
            status(500, "k8s/constructed/status_500_internal_error.json"),
        ),
        1,
        LEASE,
        "update state ConfigMap (PUT https://127.0.0.1:",
    )));
    rows.push(
        stateful(row(
            "state lease never answered",
            kube("state:put", hang()),
            1,
            LEASE,
            "timed out after 1s",
        ))
        .timeouts(1),
    );
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// What one run did.
pub(crate) struct Ran {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
    /// Peak resident set of the binary, KiB.
    pub(crate) peak_rss_kib: i64,
    pub(crate) kube: Vec<Request>,
    pub(crate) metrics: Vec<Request>,
    pub(crate) pushed: Vec<Request>,
    pub(crate) metrics_file: Option<String>,
}

/// Whether `text` (a log line or the whole log) contains `phrase`, as is or as logfmt
/// and JSON logs escape it inside a quoted value.
fn says(text: &str, phrase: &str) -> bool {
    let quoted = serde_json::to_string(phrase).expect("a string serializes");
    text.contains(phrase) || text.contains(&quoted[1..quoted.len() - 1])
}

impl Ran {
    /// The line of the error that failed the run (or of the metrics file failure).
    fn error_line(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find(|l| l.contains("run failed") || l.contains("metrics file not written"))
    }

    fn error_has(&self, phrase: &str) -> Result<(), String> {
        match self.error_line() {
            Some(l) if says(l, phrase) => Ok(()),
            Some(l) => Err(format!("the error does not say {phrase:?}: {l}")),
            None => Err(format!("no error line (wanted {phrase:?})")),
        }
    }

    fn log_has(&self, phrase: &str) -> Result<(), String> {
        if says(&self.stderr, phrase) {
            Ok(())
        } else {
            Err(format!("the log does not say {phrase:?}"))
        }
    }

    fn metrics_has(&self, text: &str) -> Result<(), String> {
        match &self.metrics_file {
            Some(m) if m.contains(text) => Ok(()),
            Some(m) => Err(format!("the metrics file lacks {text:?}:\n{m}")),
            None => Err("no metrics file".into()),
        }
    }

    fn pushed_has(&self, text: &str) -> Result<(), String> {
        match self.pushed.last() {
            Some(p) if untargeted(&String::from_utf8_lossy(&p.body), NS, DEPLOYMENT).contains(text) => Ok(()),
            Some(p) => Err(format!(
                "the push lacks {text:?}:\n{}",
                String::from_utf8_lossy(&p.body)
            )),
            None => Err("nothing was pushed".into()),
        }
    }

    /// The body was refused by the limit, not held in memory: 100 MB went by and the
    /// binary stayed below three quarters of the CronJob's memory limit.
    fn small(&self) -> Result<(), String> {
        if self.peak_rss_kib > MEMORY_LIMIT_KIB * 3 / 4 {
            return Err(format!("peak RSS {} KiB", self.peak_rss_kib));
        }
        Ok(())
    }

    /// The mutating requests to the Kubernetes API, as "evict pN", "delete pN", "event pN".
    fn mutations(&self) -> Vec<String> {
        let short = |pod: &str| pod.rsplit('-').next().unwrap_or(pod).to_string();
        self.kube
            .iter()
            .filter(|r| r.is_mutating())
            .map(|r| {
                if r.path().ends_with("/events") {
                    let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                    format!(
                        "event {}",
                        short(body["involvedObject"]["name"].as_str().unwrap_or("?"))
                    )
                } else if let Some(p) = r.path().strip_suffix("/eviction") {
                    format!("evict {}", short(p))
                } else {
                    format!("{} {}", r.method.to_lowercase(), short(r.path()))
                }
            })
            .collect()
    }
}

/// The servers, files and variables of one row.
struct Scenario {
    dir: TempDir,
    kube: Option<Server>,
    metrics: Option<Server>,
    push: Option<Server>,
    _blackholes: Vec<Blackhole>,
    env: Vec<(String, String)>,
    /// Run the binary as nobody (the read-only directory row, when we are root).
    as_nobody: bool,
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").port()
}

/// A TLS server for `addr` (one of the TLS faults) and the CA PEM the client is given.
fn tls_server(addr: Addr, handler: crate::support::server::Handler) -> (Server, String) {
    let pki = match addr {
        Addr::Expired => Pki::with(CertOptions {
            validity: Some((2020, 2021)),
            ..CertOptions::default()
        }),
        Addr::WrongName => Pki::with(CertOptions {
            names: vec!["kubernetes.example".into()],
            ..CertOptions::default()
        }),
        _ => Pki::new(),
    };
    let trusted = if addr == Addr::OtherCa {
        Pki::new().ca_pem
    } else {
        pki.ca_pem.clone()
    };
    (Server::https(&pki, handler), trusted)
}

/// The URL of a broken address; `server` is the handler a listening fault serves with.
fn broken_url(
    addr: Addr,
    host: &str,
    handler: crate::support::server::Handler,
    blackholes: &mut Vec<Blackhole>,
) -> (String, Option<Server>, Option<String>) {
    match addr {
        Addr::Refused => (format!("http://127.0.0.1:{}", closed_port()), None, None),
        Addr::Unresolvable => (format!("http://{host}.invalid:8080"), None, None),
        Addr::Blackhole => {
            let b = Blackhole::new();
            let url = format!("http://127.0.0.1:{}", b.port());
            blackholes.push(b);
            (url, None, None)
        }
        Addr::PlainOnHttps => {
            let s = Server::http(handler);
            (s.url().replacen("http://", "https://", 1), Some(s), None)
        }
        Addr::TlsOnHttp => {
            let (s, ca) = tls_server(Addr::OtherCa, handler);
            (s.url().replacen("https://", "http://", 1), Some(s), Some(ca))
        }
        Addr::OtherCa | Addr::Expired | Addr::WrongName => {
            let (s, ca) = tls_server(addr, handler);
            (s.url(), Some(s), Some(ca))
        }
    }
}

fn canned(reply: Reply) -> crate::support::server::Handler {
    Arc::new(move |_: &Request| reply.clone())
}

/// Whether this process may write into a directory without write permission.
fn privileged() -> bool {
    static PRIVILEGED: OnceLock<bool> = OnceLock::new();
    *PRIVILEGED.get_or_init(|| {
        let dir = TempDir::new("probe");
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).expect("probe dir");
        set_mode(&ro, 0o555);
        let writable = std::fs::write(ro.join("x"), "x").is_ok();
        set_mode(&ro, 0o755);
        writable
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Scenario {
    fn new(tag: &str, fault: &Fault) -> Scenario {
        let answers = answers();
        let dir = TempDir::new(tag);
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(&sa).expect("sa dir");
        std::fs::write(sa.join("token"), format!("{KUBE_TOKEN}\n")).expect("token");
        let prom_token = dir.path().join("vm-token");
        std::fs::write(&prom_token, PROM_TOKEN).expect("metrics token");
        let mut blackholes = Vec::new();
        let (pods, _) = fleet(&CPUS);

        let mut fake = Fake::new(NS, DEPLOYMENT, &pods, now());
        match fault {
            Fault::Kube(route, reply) => fake = fake.reply(route, reply.clone()),
            Fault::KubeState(change) => fake = change(fake),
            _ => {}
        }
        let handler = fake.into_handler();
        let (kube_url, kube, ca) = match fault {
            Fault::KubeAt(addr) => {
                let (url, server, ca) = broken_url(*addr, "kubernetes", handler, &mut blackholes);
                (url, server, ca)
            }
            _ => {
                let pki = Pki::new();
                let server = Server::https(&pki, handler);
                (server.url(), Some(server), Some(pki.ca_pem))
            }
        };
        // An https Kubernetes URL needs ca.crt; a broken address without TLS gets one anyway.
        std::fs::write(sa.join("ca.crt"), ca.unwrap_or_else(|| Pki::new().ca_pem)).expect("ca.crt");

        let good_metrics = canned(Reply::json(200, answers.good.clone()));
        let (prometheus_url, metrics, prom_ca) = match fault {
            Fault::Metrics(reply) => {
                let s = Server::http(canned(reply.clone()));
                (s.url(), Some(s), None)
            }
            Fault::MetricsAt(addr) => broken_url(*addr, "metrics", good_metrics, &mut blackholes),
            _ => (vm::shared().url(), None, None),
        };
        let (push_url, push, push_ca) = match fault {
            Fault::Push(reply) => {
                let s = Server::http(canned(reply.clone()));
                (s.url(), Some(s), None)
            }
            Fault::PushAt(addr) => broken_url(*addr, "push", canned(Reply::text(204, "")), &mut blackholes),
            _ => {
                let s = Server::http(canned(Reply::text(204, "")));
                (s.url(), Some(s), None)
            }
        };
        let metrics_path = dir.path().join("metrics").join("rebalancer.prom");
        std::fs::create_dir_all(metrics_path.parent().expect("parent")).expect("metrics dir");

        let mut env: Vec<(String, String)> = [
            ("KUBE_API_URL", kube_url),
            ("KUBE_SERVICE_ACCOUNT_DIR", sa.display().to_string()),
            ("KUBE_NAMESPACE", NS.to_string()),
            ("DEPLOYMENT_NAME", DEPLOYMENT.to_string()),
            ("KUBE_LABEL_SELECTOR", "app=consumer".to_string()),
            ("KUBE_TIMEOUT", "10s".to_string()),
            ("PROMETHEUS_ENDPOINT", prometheus_url),
            ("PROMETHEUS_TIMEOUT", "10s".to_string()),
            ("PROMETHEUS_BEARER_TOKEN_FILE", prom_token.display().to_string()),
            ("METRICS_FILE", metrics_path.display().to_string()),
            ("METRICS_PUSH_URL", push_url),
            ("LOG_LEVEL", "debug".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(ca) = prom_ca.or(push_ca) {
            let path = dir.path().join("vm-ca.pem");
            std::fs::write(&path, ca).expect("metrics CA");
            env.push(("PROMETHEUS_CA_FILE".into(), path.display().to_string()));
        }
        let mut as_nobody = false;
        if let Fault::File(file) = fault {
            let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
                env.retain(|(n, _)| n != k);
                env.push((k.to_string(), v));
            };
            match file {
                File::TokenMissing => std::fs::remove_file(sa.join("token")).expect("rm token"),
                File::TokenEmpty => std::fs::write(sa.join("token"), "").expect("empty token"),
                File::TokenUnreadable => {
                    std::fs::remove_file(sa.join("token")).expect("rm token");
                    std::fs::create_dir(sa.join("token")).expect("token dir");
                }
                File::TokenWithSpace => {
                    std::fs::write(sa.join("token"), format!("Bearer {KUBE_TOKEN}\n")).expect("token")
                }
                File::CaMissing => std::fs::remove_file(sa.join("ca.crt")).expect("rm ca.crt"),
                File::CaNot(text) => std::fs::write(sa.join("ca.crt"), text).expect("ca.crt"),
                File::PromTokenMissing => std::fs::remove_file(&prom_token).expect("rm token"),
                File::PromTokenEmpty => std::fs::write(&prom_token, "\n").expect("empty token"),
                File::PromTokenUnreadable => {
                    std::fs::remove_file(&prom_token).expect("rm token");
                    std::fs::create_dir(&prom_token).expect("token dir");
                }
                File::PromCaMissing => set(
                    &mut env,
                    "PROMETHEUS_CA_FILE",
                    dir.path().join("no-such-ca.pem").display().to_string(),
                ),
                File::PromCaNot(text) => {
                    let path = dir.path().join("vm-ca.pem");
                    std::fs::write(&path, text).expect("metrics CA");
                    set(&mut env, "PROMETHEUS_CA_FILE", path.display().to_string());
                }
                File::MetricsDirMissing => set(
                    &mut env,
                    "METRICS_FILE",
                    dir.path().join("no-such-dir/rebalancer.prom").display().to_string(),
                ),
                File::MetricsDirReadOnly => {
                    set_mode(metrics_path.parent().expect("parent"), 0o555);
                    as_nobody = privileged();
                }
                File::MetricsFileIsDir => std::fs::create_dir(&metrics_path).expect("dir"),
                File::Previous(text) => std::fs::write(&metrics_path, text).expect("previous"),
            }
        }
        Scenario {
            dir,
            kube,
            metrics,
            push,
            _blackholes: blackholes,
            env,
            as_nobody,
        }
    }

    fn run(&self, extra: &[(&str, &str)]) -> Ran {
        let env = env_with(self.env.clone(), extra);
        let (code, stdout, stderr, elapsed, peak_rss_kib) = run_measured(&env, self.as_nobody);
        let metrics_file = env
            .iter()
            .find(|(k, _)| k == "METRICS_FILE")
            .and_then(|(_, p)| std::fs::read_to_string(p).ok())
            .map(|m| untargeted(&m, NS, DEPLOYMENT));
        Ran {
            code,
            stdout,
            stderr,
            elapsed,
            peak_rss_kib,
            kube: self.kube.as_ref().map(Server::requests).unwrap_or_default(),
            metrics: self.metrics.as_ref().map(Server::requests).unwrap_or_default(),
            pushed: self.push.as_ref().map(Server::requests).unwrap_or_default(),
            metrics_file,
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Let TempDir remove what the binary may have left read-only.
        let ro = self.dir.path().join("metrics");
        if ro.exists() {
            set_mode(&ro, 0o755);
        }
    }
}

/// Runs the binary with exactly `env`, sampling its peak RSS (`VmHWM` in
/// `/proc/PID/status`) every 2 ms while it runs. (`wait4`'s `ru_maxrss` would not do:
/// it counts the forking test process's own memory, which a spawned child inherits
/// in its accounting until exec.)
fn run_measured(env: &[(String, String)], as_nobody: bool) -> (i32, String, String, Duration, i64) {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pod-rebalancer"));
    command
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if as_nobody {
        command.uid(65534).gid(65534);
    }
    let mut child = command.spawn().expect("start pod-rebalancer");
    let status_path = format!("/proc/{}/status", child.id());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = started + Duration::from_secs(90);
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        let hwm = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        });
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    (
        status.code().unwrap_or(-1),
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
        elapsed,
        peak_kib,
    )
}

/// Checks one row; `Err` lists what is wrong.
fn check(row: &Row, ran: &Ran) -> Result<(), Vec<String>> {
    let mut wrong = Vec::new();
    if ran.code != row.code {
        wrong.push(format!("exit {} (expected {})", ran.code, row.code));
    }
    let mutations = ran.mutations();
    if mutations != row.mutations {
        wrong.push(format!(
            "mutating requests {mutations:?} (expected {:?})",
            row.mutations
        ));
    }
    let said = if row.code == 0 {
        says(&ran.stderr, row.says)
    } else {
        ran.error_line().is_some_and(|l| says(l, row.says))
    };
    if !said {
        wrong.push(format!("does not say {:?}", row.says));
    }
    if ran.stderr.contains("panicked") || ran.code == 101 {
        wrong.push("panicked".into());
    }
    let bound = SHORT * row.timeouts
        + GRACE
        + if row.timeouts == 0 {
            // No timeout expected: only a hang detector, generous for slow machines.
            Duration::from_secs(28)
        } else {
            Duration::ZERO
        };
    if ran.elapsed > bound {
        wrong.push(format!("took {:?} (bound {bound:?})", ran.elapsed));
    }
    if row.timeouts > 0 && ran.elapsed < SHORT * row.timeouts {
        wrong.push(format!("ended after {:?}, before its timeouts", ran.elapsed));
    }
    wrong.extend(leaks(ran));
    // The metrics file, when written, tells the same story as the exit code.
    if let Some(m) = &ran.metrics_file {
        let failed = m.contains("rebalancer_cycle_outcome{outcome=\"error\"} 1\n");
        if failed != (row.code == 1) {
            wrong.push(format!("the metrics file says error={failed} for exit {}", ran.code));
        }
    }
    if let Some(then) = row.then
        && let Err(e) = then(ran)
    {
        wrong.push(e);
    }
    if wrong.is_empty() { Ok(()) } else { Err(wrong) }
}

/// Where the tokens went that they should not have.
pub(crate) fn leaks(ran: &Ran) -> Vec<String> {
    let mut wrong = Vec::new();
    let pushed: Vec<String> = ran
        .pushed
        .iter()
        .map(|p| format!("{} {}", p.target, String::from_utf8_lossy(&p.body)))
        .collect();
    for (what, text) in [
        ("stderr", ran.stderr.as_str()),
        ("stdout", ran.stdout.as_str()),
        ("the metrics file", ran.metrics_file.as_deref().unwrap_or("")),
    ]
    .into_iter()
    .chain(pushed.iter().map(|p| ("the pushed body", p.as_str())))
    {
        if let Some(piece) = leaked_piece(text) {
            wrong.push(format!("a piece of a token ({piece:?}) leaked into {what}"));
        }
    }
    // Each token goes to its own server only, and only in the Authorization header.
    let bearer = |t: &str| format!("Bearer {t}");
    for r in &ran.kube {
        if r.header("authorization").is_some_and(|h| h != bearer(KUBE_TOKEN)) {
            wrong.push(format!(
                "{} {} carried a foreign Authorization header",
                r.method, r.target
            ));
        }
    }
    for r in ran.metrics.iter().chain(&ran.pushed) {
        if r.header("authorization").is_some_and(|h| h != bearer(PROM_TOKEN)) {
            wrong.push(format!(
                "{} {} carried a foreign Authorization header",
                r.method, r.target
            ));
        }
    }
    for r in ran.kube.iter().chain(&ran.metrics).chain(&ran.pushed) {
        let body = String::from_utf8_lossy(&r.body);
        if [KUBE_TOKEN, PROM_TOKEN]
            .iter()
            .any(|t| body.contains(t) || r.target.contains(t))
        {
            wrong.push(format!("{} {} carried a token outside the header", r.method, r.target));
        }
    }
    wrong
}

/// One line of the matrix's report: the row, what the run did, and what it said.
fn report_line(index: usize, row: &Row, ran: &Ran) -> String {
    let said = ran
        .stderr
        .lines()
        .find(|l| l.contains(" ERROR ") && l.contains("run failed"))
        .or_else(|| {
            ran.stderr
                .lines()
                .find(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        })
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m))
        .unwrap_or("");
    format!(
        "{index:3} exit {} {:5.1}s {:6} KiB {:?} {:?}: {said}",
        ran.code,
        ran.elapsed.as_secs_f64(),
        ran.peak_rss_kib,
        row.name,
        ran.mutations()
    )
}

/// The first piece of `PIECE` characters of either token found in `text`.
fn leaked_piece(text: &str) -> Option<&'static str> {
    [KUBE_TOKEN, PROM_TOKEN]
        .into_iter()
        .flat_map(|t| (0..=t.len() - PIECE).map(move |i| &t[i..i + PIECE]))
        .find(|piece| text.contains(piece))
}

fn run_row(row: &Row, index: usize) -> Result<(String, i64), String> {
    let scenario = Scenario::new(&format!("fault-{index}"), &row.fault);
    let ran = scenario.run(&row.env);
    match check(row, &ran) {
        Ok(()) => Ok((report_line(index, row, &ran), ran.peak_rss_kib)),
        Err(wrong) => Err(format!(
            "row {index} {:?}:\n  - {}\n  stderr:\n{}",
            row.name,
            wrong.join("\n  - "),
            ran.stderr
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// Rows run on a few threads: most of their time is spent waiting on sockets.
const WORKERS: usize = 3;

/// Runs every row (or those whose name contains `FAULT_ROW`); with `FAULT_REPORT`
/// set, prints one line per row: exit code, time, peak RSS, mutations, the error.
#[test]
fn every_fault_fails_safe_and_says_why() {
    let started = Instant::now();
    let rows = rows();
    let only = std::env::var("FAULT_ROW").ok();
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    let passed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("next");
                        *n += 1;
                        *n - 1
                    };
                    let Some(row) = rows.get(i) else { break };
                    if only.as_deref().is_some_and(|o| !row.name.contains(o)) {
                        continue;
                    }
                    match run_row(row, i) {
                        Ok(line) => passed.lock().expect("passed").push((i, line)),
                        Err(e) => failures.lock().expect("failures").push(e),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    let mut passed = passed.into_inner().expect("passed");
    passed.sort_by_key(|(i, _)| *i);
    if std::env::var_os("FAULT_REPORT").is_some() {
        for (_, (line, _)) in &passed {
            eprintln!("{line}");
        }
    }
    eprintln!(
        "fault matrix: {} rows, {} failed, largest peak RSS {} KiB, in {:.1}s",
        passed.len() + failures.len(),
        failures.len(),
        passed.iter().map(|(_, (_, rss))| *rss).max().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Where the error-path checks of `check` would not notice: a row whose fault does
/// not fire must fail the matrix. Run one row with its fault removed.
#[test]
fn a_row_whose_fault_does_not_fire_fails() {
    let r = row(
        "pod list answered 500, but not really",
        Fault::Nothing,
        1,
        NONE,
        "got 500",
    );
    let scenario = Scenario::new("fault-meta", &r.fault);
    let ran = scenario.run(&r.env);
    let wrong = check(&r, &ran).expect_err("the check must notice");
    assert!(wrong.iter().any(|w| w.starts_with("exit 0")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.starts_with("mutating requests")), "{wrong:?}");
}

/// Paths through a run where a token could escape: success, dry run, each kind of
/// failure, and servers that echo the token back in an error or a body field.
fn secret_rows() -> Vec<Row> {
    let echo_kube = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"invalid bearer token {KUBE_TOKEN}","reason":"Unauthorized","code":401}}"#
    );
    let echo_prom = format!("invalid token \"{PROM_TOKEN}\"\n");
    let mut deployment = deployment();
    deployment["spec"]["replicas"] = json!(KUBE_TOKEN);
    let answer = edited(|v| v["data"]["result"][0]["value"][1] = json!(PROM_TOKEN));
    vec![
        row("acted", Fault::Nothing, 0, ACTED, "pod removed"),
        row("dry run", Fault::Nothing, 0, DRY_RUN, "would be evicted").env("DRY_RUN", "true"),
        row(
            "list forbidden",
            kube("list", status(403, "k8s/status_403_forbidden_list_pods.json")),
            1,
            NONE,
            "got 403",
        ),
        row(
            "eviction failed",
            kube(
                &format!("evict:{}", name(1)),
                status(500, "k8s/constructed/status_500_internal_error.json"),
            ),
            1,
            STOPPED,
            "got 500",
        ),
        row(
            "event failed",
            kube("event", status(403, "k8s/status_403_forbidden_get_pod.json")),
            0,
            ACTED,
            "could not record",
        ),
        row(
            "metrics timed out",
            Fault::Metrics(hang()),
            1,
            NONE,
            "timed out after 1s",
        )
        .timeouts(1),
        row(
            "metrics TLS refused",
            Fault::MetricsAt(Addr::OtherCa),
            1,
            NONE,
            "UnknownIssuer",
        ),
        row(
            "push refused",
            Fault::PushAt(Addr::Refused),
            0,
            ACTED,
            "metrics push failed",
        ),
        row(
            "metrics file unwritable",
            Fault::File(File::MetricsDirMissing),
            1,
            ACTED,
            "metrics file not written",
        ),
        row(
            "token with a second word",
            Fault::File(File::TokenWithSpace),
            1,
            NONE,
            "whitespace or control characters",
        ),
        row(
            "Kubernetes API echoes the token",
            kube("list", Reply::json(401, echo_kube)),
            1,
            NONE,
            "got 401: invalid bearer token",
        ),
        row(
            "metrics endpoint echoes the token",
            Fault::Metrics(Reply::text(401, echo_prom.clone())),
            1,
            NONE,
            "got 401: invalid token",
        ),
        row(
            "push target echoes the token",
            Fault::Push(Reply::text(401, echo_prom)),
            0,
            ACTED,
            "got 401: invalid token",
        ),
        row(
            "a Deployment field holds the token",
            kube("deployment", Reply::json(200, deployment.to_string())),
            1,
            NONE,
            "invalid type: string",
        ),
        row(
            "a metrics value holds the token",
            Fault::Metrics(Reply::json(200, answer)),
            1,
            NONE,
            "expected a number, got",
        ),
    ]
}

/// Runs every secret row with these log settings; the failures, one per row.
fn secret_failures(level: &'static str, format: &'static str) -> Vec<String> {
    secret_rows()
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.env("LOG_LEVEL", level).env("LOG_FORMAT", format);
            run_row(&r, 1000 + i).err()
        })
        .collect()
}

#[test]
fn no_token_appears_in_any_log_error_metrics_or_push_at_debug() {
    for format in ["text", "json"] {
        let failures = secret_failures("debug", format);
        assert!(failures.is_empty(), "LOG_FORMAT={format}:\n{}", failures.join("\n\n"));
    }
}

/// At trace, ureq_proto hex-dumps every request it writes, the Authorization header
/// included: the logger must keep the libraries' records out (see `logging.rs`).
#[test]
fn no_token_appears_in_any_log_error_metrics_or_push_at_trace() {
    for format in ["text", "json"] {
        let failures = secret_failures("trace", format);
        assert!(failures.is_empty(), "LOG_FORMAT={format}:\n{}", failures.join("\n\n"));
    }
}
