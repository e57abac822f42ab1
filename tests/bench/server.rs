//! A loopback HTTPS server that plays the Kubernetes API (discovery, the Deployment or
//! fleet mode's paged Deployment list, the paged pod list, dry-run evictions) and
//! VictoriaMetrics (`/api/v1/query`) from pre-serialized bytes. One thread per
//! connection, keep-alive, no JSON work per request, so what is measured is the
//! client. It counts connections, requests (and among them evictions) and bytes sent.

#[path = "../common/loopback.rs"]
mod loopback;

use crate::fleet::{DEPLOYMENT, Fleet, Items, NAMESPACE, TARGET_SELECTOR};
use loopback::{Listener, Request, read_request};
use std::borrow::Cow;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use loopback::Pki;

/// What the server did since the last `take`.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    /// Of the requests, the (dry-run) evictions: what a run reads is the rest.
    pub evictions: u64,
    pub bytes: u64,
}

impl Counts {
    /// The requests that read: the Deployment(s), the pod pages, the queries.
    pub fn reads(&self) -> u64 {
        self.requests - self.evictions
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicU64,
}

/// The bodies the server answers with; swapped between fleet sizes and modes.
pub struct Content {
    pub fleet: Fleet,
    pub token: String,
}

pub struct Server {
    listener: Listener,
    counters: Arc<Counters>,
    content: Arc<Mutex<Option<Arc<Content>>>>,
    /// Paths the server did not know, for `--verbose`.
    pub unknown: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(pki: &Pki) -> Server {
        // Choose the cipher suite as kube-apiserver (Go's crypto/tls) does on a CPU
        // with AES instructions: AES-128-GCM first, whatever the client prefers.
        use rustls::crypto::ring::{cipher_suite, default_provider};
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            ..default_provider()
        };
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key())
            .expect("server TLS config");
        config.ignore_client_order = true;
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let content: Arc<Mutex<Option<Arc<Content>>>> = Arc::new(Mutex::new(None));
        let unknown = Arc::new(Mutex::new(Vec::new()));
        let listener = {
            let (counters, content, unknown) = (counters.clone(), content.clone(), unknown.clone());
            Listener::start(move |stream| {
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let Some(content) = content.lock().expect("content").clone() else {
                    return;
                };
                serve(stream, config.clone(), &content, &counters, &unknown);
            })
        };
        Server {
            listener,
            counters,
            content,
            unknown,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.listener.port())
    }

    pub fn serve_content(&self, content: Content) {
        self.serve(Arc::new(content));
    }

    /// Serves `content` from the next connection on (a run opens its own).
    pub fn serve(&self, content: Arc<Content>) {
        *self.content.lock().expect("content") = Some(content);
    }

    /// The counts since the previous call, and zero again.
    pub fn take(&self) -> Counts {
        Counts {
            connections: self.counters.connections.swap(0, Ordering::SeqCst),
            requests: self.counters.requests.swap(0, Ordering::SeqCst),
            evictions: self.counters.evictions.swap(0, Ordering::SeqCst),
            bytes: self.counters.bytes.swap(0, Ordering::SeqCst),
        }
    }
}

/// The continue token of a page starting at `offset`: shaped like the API server's
/// (base64 of a small JSON object), with the offset readable back.
pub fn continue_token(offset: usize) -> String {
    format!("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OTAwMDAwMDAsInN0YXJ0Ijoi{offset}In0")
}

/// Which list a page is of.
#[derive(Clone, Copy)]
pub enum List {
    Pods,
    Deployments,
}

impl List {
    fn items(self, fleet: &Fleet) -> &Items {
        match self {
            List::Pods => &fleet.pods,
            List::Deployments => &fleet.deployments,
        }
    }

    /// `kind` and `apiVersion` of the list.
    fn kind(self) -> (&'static str, &'static str) {
        match self {
            List::Pods => ("PodList", "v1"),
            List::Deployments => ("DeploymentList", "apps/v1"),
        }
    }
}

/// The list of items `from..to`, as the API server pages it (a continue token and
/// the remaining count when more follow), in parts so that the items are not copied.
pub fn page(fleet: &Fleet, list: List, from: usize, to: usize) -> Vec<Cow<'_, [u8]>> {
    let items = list.items(fleet);
    let n = items.n();
    let more = if to < n {
        format!(
            ",\"continue\":\"{}\",\"remainingItemCount\":{}",
            continue_token(to),
            n - to
        )
    } else {
        String::new()
    };
    let (kind, api_version) = list.kind();
    let head = format!(
        "{{\"kind\":\"{kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{{\"resourceVersion\":\"90000000\"{more}}},\"items\":["
    );
    vec![
        Cow::Owned(head.into_bytes()),
        Cow::Borrowed(items.slice(from, to)),
        Cow::Borrowed(b"]}".as_slice()),
    ]
}

fn offset_of(token: &str) -> Option<usize> {
    token
        .strip_prefix("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OTAwMDAwMDAsInN0YXJ0Ijoi")?
        .strip_suffix("In0")?
        .parse()
        .ok()
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    content: &Content,
    counters: &Counters,
    unknown: &Mutex<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, stream));
    while let Some(request) = read_request(&mut reader) {
        counters.requests.fetch_add(1, Ordering::SeqCst);
        let authorized =
            request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")) == Some(content.token.as_str());
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let answer = route(&request, authorized, content);
        if let Answer::Eviction = answer {
            counters.evictions.fetch_add(1, Ordering::SeqCst);
        }
        if let Answer::NotFound = answer {
            unknown
                .lock()
                .expect("unknown")
                .push(format!("{} {}", request.method, request.target));
        }
        let (status, parts) = answer.parts(content);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        // Counted before writing: the client may exit the moment it has the last byte.
        counters.bytes.fetch_add((head.len() + len) as u64, Ordering::SeqCst);
        let out = reader.get_mut();
        let mut result = out.write_all(head.as_bytes());
        for p in &parts {
            result = result.and_then(|()| out.write_all(p));
        }
        if result.and_then(|()| out.flush()).is_err() {
            return;
        }
        if close {
            out.conn.send_close_notify();
            let _ = out.flush();
            return;
        }
    }
}

enum Answer {
    Static(&'static str, String),
    Deployment,
    Page {
        list: List,
        from: usize,
        to: usize,
    },
    /// A dry-run eviction, accepted.
    Eviction,
    Query,
    Unauthorized,
    NotFound,
}

impl Answer {
    fn parts<'c>(&self, c: &'c Content) -> (&'static str, Vec<Cow<'c, [u8]>>) {
        use Cow::{Borrowed, Owned};
        match self {
            Answer::Static(status, body) => (status, vec![Owned(body.clone().into_bytes())]),
            Answer::Deployment => ("200 OK", vec![Borrowed(&c.fleet.deployment)]),
            Answer::Query => ("200 OK", vec![Borrowed(&c.fleet.vm_answer)]),
            Answer::Page { list, from, to } => ("200 OK", page(&c.fleet, *list, *from, *to)),
            Answer::Eviction => (
                "201 Created",
                vec![Borrowed(
                    br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}"#.as_slice(),
                )],
            ),
            Answer::Unauthorized => (
                "401 Unauthorized",
                vec![Borrowed(
                    br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.as_slice(),
                )],
            ),
            Answer::NotFound => (
                "404 Not Found",
                vec![Borrowed(
                    br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#.as_slice(),
                )],
            ),
        }
    }
}

fn route(request: &Request, authorized: bool, c: &Content) -> Answer {
    let (method, path) = (request.method.as_str(), request.path());
    if method == "POST" && path == "/api/v1/query" {
        return Answer::Query;
    }
    if !authorized {
        return Answer::Unauthorized;
    }
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let deployments = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
    let deployment = format!("{deployments}/{DEPLOYMENT}");
    let fleet_mode = c.fleet.fleet_mode();
    match (method, path) {
        ("GET", p) if p == pods => paged(request, List::Pods, c.fleet.pod_selector, c),
        ("GET", p) if p == deployments && fleet_mode => paged(request, List::Deployments, Some(TARGET_SELECTOR), c),
        ("GET", p) if p == deployment && !fleet_mode => Answer::Deployment,
        // A dry run asks its removals as server-side dry runs: accepted, nothing removed.
        ("POST", p)
            if p.starts_with(&format!("{pods}/"))
                && p.ends_with("/eviction")
                && request.query("dryRun").as_deref() == Some("All") =>
        {
            Answer::Eviction
        }
        ("GET", "/version") => Answer::Static(
            "200 OK",
            r#"{"major":"1","minor":"36","gitVersion":"v1.36.0","gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","buildDate":"2026-04-01T00:00:00Z","goVersion":"go1.25.0","compiler":"gc","platform":"linux/amd64"}"#.into(),
        ),
        ("GET", "/api") => Answer::Static(
            "200 OK",
            r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}"#.into(),
        ),
        ("GET", "/apis") => Answer::Static(
            "200 OK",
            r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apps","versions":[{"groupVersion":"apps/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apps/v1","version":"v1"}}]}"#.into(),
        ),
        ("GET", "/api/v1") => Answer::Static(
            "200 OK",
            r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":["po"],"categories":["all"]},{"name":"pods/eviction","singularName":"","namespaced":true,"group":"policy","version":"v1","kind":"Eviction","verbs":["create"]},{"name":"events","singularName":"event","namespaced":true,"kind":"Event","verbs":["create","get","list"],"shortNames":["ev"]}]}"#.into(),
        ),
        ("GET", "/apis/apps/v1") => Answer::Static(
            "200 OK",
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"apps/v1","resources":[{"name":"deployments","singularName":"deployment","namespaced":true,"kind":"Deployment","verbs":["create","delete","get","list","patch","update","watch"],"shortNames":["deploy"],"categories":["all"]}]}"#.into(),
        ),
        _ => Answer::NotFound,
    }
}

/// A page of `list`, which must be asked with `selector` as its `labelSelector`
/// (`None`: without one), by `limit` and `continue` as the API server pages.
fn paged(request: &Request, list: List, selector: Option<&str>, c: &Content) -> Answer {
    if request.query("labelSelector").as_deref() != selector {
        return Answer::Static(
            "400 Bad Request",
            "{\"kind\":\"Status\",\"code\":400,\"message\":\"bench: unexpected labelSelector\"}".into(),
        );
    }
    let n = list.items(&c.fleet).n();
    let from = match request.query("continue").filter(|t| !t.is_empty()) {
        Some(token) => match offset_of(&token) {
            Some(o) => o.min(n),
            None => {
                return Answer::Static(
                    "410 Gone",
                    "{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\",\"message\":\"bench: unknown continue token\"}".into(),
                );
            }
        },
        None => 0,
    };
    let limit = request
        .query("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(n);
    Answer::Page {
        list,
        from,
        to: from.saturating_add(limit).min(n),
    }
}
