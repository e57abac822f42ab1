//! The HTTP seam: one ureq `Agent` per server, TLS roots, and status/body → `Error`.
//!
//! Everything that crosses the network goes through a typed call of `Client`
//! (`get_json`, `get_page`, `post_form`, `send_json`, `send`): each returns the parsed
//! answer of a 2xx status, and any other status becomes an `Error` carrying the code
//! and the server's own message. Every error leaves a call already redacted: no caller
//! has to remember the client's secrets. Bodies are read through a size limit and
//! parsed from the stream, or, for the pages of the pod list, read into one reused
//! buffer and parsed in place, so a hostile or broken server cannot make us buffer
//! without bound. A read can also keep the raw body it parsed (`Keep`), which is how
//! `plan --save` records what it read. Tokens are sent in a header and never appear in
//! the words that name a request.

use crate::error::{Cause, Error};
use serde::de::DeserializeOwned;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body};

/// The largest body we read. A page of 500 pods is 3 to 10 MiB (their managedFields
/// included), so this leaves room for pods of 60 KiB each. It also bounds memory: a
/// string the size of the body is held twice while parsed (serde_json's buffer and the
/// `String`), and the CronJob's limit is 128 MiB (`manifests/cronjob.yaml`). At 64 MiB
/// a 60 MB pod name took the process to 126 MB.
pub const BODY_LIMIT: u64 = 32 * 1024 * 1024;
/// The most of an error body we keep for its message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The most elements we accept in one list of an answer (pods in a page, series in a
/// metrics answer): 150,000, the most pods Kubernetes supports in a whole cluster, so
/// no real Deployment's metrics answer (one series per pod) reaches it and only a
/// broken answer does. The body limit alone does not bound memory: a parsed item
/// takes many times the room of its JSON, and a 64 MiB body of tiny items grew the
/// process past a gigabyte; 150,000 tiny items take tens of MB.
pub const MAX_ITEMS: usize = 150_000;

pub const USER_AGENT: &str = concat!("pod-rebalancer/", env!("CARGO_PKG_VERSION"));

/// A server: its agent, base URL and optional bearer token.
pub struct Client {
    agent: Agent,
    base: String,
    token: Option<String>,
    timeout: Duration,
    /// A secret this client does not send but must never print.
    also_secret: Option<String>,
}

/// A request body with its content type.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// Where a read keeps the raw body it read, for `plan --save`: the answer of a 2xx
/// status, or the start of any other answer; `None` keeps nothing.
pub type Keep<'a> = Option<&'a mut Vec<u8>>;

/// Reads the PEM certificates of `path`; an unreadable file or one without a
/// certificate is an error that names the file.
pub fn read_ca(path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let doing = format!("read CA bundle {}", path.display());
    let pem = std::fs::read(path).map_err(|e| Error::io(&doing, &e))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::new(doing, Cause::Io(format!("expected PEM certificates: {e}"))));
            }
        }
    }
    if certs.is_empty() {
        return Err(Error::new(
            doing,
            Cause::Io("expected PEM certificates, found none".into()),
        ));
    }
    Ok(certs)
}

/// Reads a bearer token file: trailing whitespace is dropped; an empty file is an error.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let doing = format!("read bearer token {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&doing, &e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::new(
            doing,
            Cause::Io("expected a token, the file is empty".into()),
        ));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Error::new(
            doing,
            Cause::Io("expected a token, the file holds whitespace or control characters".into()),
        ));
    }
    Ok(token.to_string())
}

/// Percent-encodes a query parameter or form value (RFC 3986 unreserved characters stay).
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

/// The typed calls. Each returns the parsed answer of a 2xx status, or an `Error`
/// that names the request and is already free of this client's secrets.
impl Client {
    /// `roots`: the only CAs trusted for https (`None`: Mozilla's roots, built in).
    pub fn new(
        base: &str,
        timeout: Duration,
        roots: Option<Vec<Certificate<'static>>>,
        token: Option<String>,
    ) -> Client {
        let roots = match roots {
            Some(certs) => RootCerts::Specific(Arc::new(certs)),
            None => RootCerts::WebPki,
        };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .accept("application/json")
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Client {
            agent: config.new_agent(),
            base: base.to_string(),
            token,
            timeout,
            also_secret: None,
        }
    }

    /// Also redacts `secret` from errors, though this client never sends it.
    pub fn redacting(mut self, secret: String) -> Client {
        self.also_secret = Some(secret);
        self
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// GETs a JSON answer, parsed from the stream through `BODY_LIMIT`; with `keep`,
    /// read into it first and parsed from there.
    pub fn get_json<T: DeserializeOwned>(&self, what: &str, path: &str, keep: Keep) -> Result<T, Error> {
        self.call(what, "GET", path, None, keep, |doing, body, keep| {
            self.parse(doing, body, keep)
        })
    }

    /// GETs a JSON answer into `buf` (emptied first, its capacity kept, so one buffer
    /// serves every page of a list) and parses it in place: the value may borrow
    /// strings from `buf`. With `keep`, a copy of the bytes read goes there too. The
    /// `seed` makes the value as the body is parsed (the pod list makes its pods so,
    /// without a page-sized vector of wire structs in between).
    ///
    /// Parsing from memory takes half the CPU of parsing from the stream (10,000 pods:
    /// 88 ms instead of 189 ms in `cargo bench --bench cycle`), and lets the wire
    /// structs borrow the strings they only compare.
    pub fn get_page<'b, S: serde::de::DeserializeSeed<'b>>(
        &self,
        what: &str,
        path: &str,
        buf: &'b mut Vec<u8>,
        keep: Keep,
        seed: S,
    ) -> Result<S::Value, Error> {
        buf.clear();
        let doing = self.call(what, "GET", path, None, keep, |doing, body, keep| {
            let read = self.read_into(doing, body, buf);
            if let Some(keep) = keep {
                keep.extend_from_slice(buf);
            }
            read.map(|()| doing.to_string())
        })?;
        let page: &'b [u8] = buf;
        self.parse_slice_seed(&doing, page, seed)
    }

    /// POSTs a form and parses the JSON answer, then hands it to `check`, whose `Err`
    /// (why the answer is not what the API promises) becomes a malformed-answer error.
    pub fn post_form<T: DeserializeOwned, U>(
        &self,
        what: &str,
        path: &str,
        form: &str,
        keep: Keep,
        check: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<U, Error> {
        self.post_form_seed(what, path, form, keep, std::marker::PhantomData::<T>, check)
    }

    /// `post_form` with a seed: the answer is made by `seed` as the body is parsed
    /// (from the stream, or with `keep` from the copy read there), so what the seed
    /// knows (which pods are ours, which labels to keep) bounds what is held.
    pub fn post_form_seed<S, V, U>(
        &self,
        what: &str,
        path: &str,
        form: &str,
        keep: Keep,
        seed: S,
        check: impl FnOnce(V) -> Result<U, String>,
    ) -> Result<U, Error>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = V>,
    {
        let payload = Payload {
            content_type: "application/x-www-form-urlencoded",
            bytes: form.as_bytes(),
        };
        self.call(what, "POST", path, Some(payload), keep, |doing, body, keep| {
            let answer = match keep {
                Some(buf) => {
                    self.read_into(doing, body, buf)?;
                    self.parse_slice_seed(doing, buf, seed)?
                }
                None => self.parse_body_seed(doing, body, seed)?,
            };
            check(answer).map_err(|why| Error::new(doing, Cause::Malformed(why)))
        })
    }

    /// Sends a mutating request with a JSON body; the answer is drained, not parsed.
    pub fn send_json(&self, what: &str, method: &str, path: &str, body: &serde_json::Value) -> Result<(), Error> {
        let bytes = body.to_string().into_bytes();
        self.send(
            what,
            method,
            path,
            Payload {
                content_type: "application/json",
                bytes: &bytes,
            },
        )
    }

    /// Sends a mutating request with a JSON body and parses the JSON answer.
    pub fn send_json_for<T: DeserializeOwned>(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Error> {
        let bytes = body.to_string().into_bytes();
        let payload = Payload {
            content_type: "application/json",
            bytes: &bytes,
        };
        self.call(what, method, path, Some(payload), None, |doing, body, keep| {
            self.parse(doing, body, keep)
        })
    }

    /// Sends `payload` with `method` to `path`; the answer's body is read (up to a
    /// limit) and dropped, so that the connection is kept for the next request.
    pub fn send(&self, what: &str, method: &str, path: &str, payload: Payload) -> Result<(), Error> {
        self.call(what, method, path, Some(payload), None, |_, body, _| {
            let mut rest = body.into_with_config().limit(ERROR_BODY_LIMIT).reader();
            // An answer we do not read cannot fail the request it answers.
            let _ = std::io::copy(&mut rest, &mut std::io::sink());
            Ok(())
        })
    }

    /// One exchange: a 2xx answer's body is handed to `read` with the words that name
    /// the request; every error leaves without this client's secrets.
    fn call<U>(
        &self,
        what: &str,
        method: &str,
        path_and_query: &str,
        payload: Option<Payload>,
        mut keep: Keep,
        read: impl FnOnce(&str, Body, Keep) -> Result<U, Error>,
    ) -> Result<U, Error> {
        self.exchange(what, method, path_and_query, payload, keep.as_deref_mut())
            .and_then(|(doing, response)| read(&doing, response.into_body(), keep))
            .map_err(|e| self.redact(e))
    }

    /// `e` without this client's secrets, should the server have echoed one: see `Error::redact`.
    fn redact(&self, e: Error) -> Error {
        [&self.token, &self.also_secret]
            .into_iter()
            .flatten()
            .fold(e, |e, secret| e.redact(secret))
    }

    fn exchange(
        &self,
        what: &str,
        method: &str,
        path_and_query: &str,
        payload: Option<Payload>,
        keep: Keep,
    ) -> Result<(String, ureq::http::Response<Body>), Error> {
        let url = self.url(path_and_query);
        let doing = format!("{what} ({method} {url})");
        log::trace!(method, url = url.as_str(); "request");
        let builder = ureq::http::Request::builder().method(method).uri(&url);
        let builder = match &self.token {
            Some(token) => builder.header("Authorization", format!("Bearer {token}")),
            None => builder,
        };
        let result = match payload {
            Some(p) => builder
                .header("Content-Type", p.content_type)
                .body(p.bytes.to_vec())
                .map_err(|e| Error::new(&doing, Cause::Transport(e.to_string())))
                .and_then(|req| self.agent.run(req).map_err(|e| self.transport(&doing, e))),
            None => builder
                .body(())
                .map_err(|e| Error::new(&doing, Cause::Transport(e.to_string())))
                .and_then(|req| self.agent.run(req).map_err(|e| self.transport(&doing, e))),
        };
        let mut response = result?;
        let code = response.status().as_u16();
        log::trace!(method, url = url.as_str(), status = code; "response");
        if (200..300).contains(&code) {
            return Ok((doing, response));
        }
        let mut text = String::new();
        let _ = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_string(&mut text);
        // An error answer is kept too: it is what `plan --save` was run to capture.
        if let Some(keep) = keep {
            keep.clear();
            keep.extend_from_slice(text.as_bytes());
        }
        Err(Error::new(
            doing,
            Cause::Status {
                code,
                message: server_message(&text),
            },
        ))
    }

    fn transport(&self, doing: &str, e: ureq::Error) -> Error {
        let why = match e {
            ureq::Error::Timeout(_) => self.timed_out(),
            ureq::Error::Io(io) => format!("{io}"),
            other => other.to_string(),
        };
        // rustls's words for "the server does not speak TLS" say nothing of the cause.
        let why = if why.contains("InvalidContentType") || why.contains("corrupt message") {
            format!("{why} (is the server plain HTTP? check http:// against https://)")
        } else {
            why
        };
        Error::new(doing, Cause::Transport(why))
    }

    fn timed_out(&self) -> String {
        format!(
            "timed out after {}",
            crate::clock::format_duration(self.timeout.as_secs().max(1))
        )
    }

    /// Why a body could not be parsed. A body that stopped arriving in time is a
    /// timeout, said as for any other request, not a reading error.
    fn body_error(&self, doing: &str, e: serde_json::Error) -> Error {
        if !e.is_io() {
            return Error::new(
                doing,
                Cause::Malformed(format!("expected JSON of the documented shape: {e}")),
            );
        }
        self.read_error(doing, &std::io::Error::from(e))
    }

    fn read_error(&self, doing: &str, io: &std::io::Error) -> Error {
        match io.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
            Some(ureq::Error::Timeout(_)) => Error::new(
                doing,
                Cause::Transport(format!("{} while reading the body", self.timed_out())),
            ),
            _ => Error::new(doing, Cause::Malformed(format!("reading the body failed: {io}"))),
        }
    }

    /// Parses a JSON body: from the stream, or with `keep`, from a copy read into it.
    fn parse<T: DeserializeOwned>(&self, doing: &str, body: Body, keep: Keep) -> Result<T, Error> {
        match keep {
            Some(buf) => {
                self.read_into(doing, body, buf)?;
                self.parse_slice(doing, buf)
            }
            None => self.parse_body(doing, body),
        }
    }

    /// Reads a body into `buf` through the size limit, emptied first, its capacity kept.
    fn read_into(&self, doing: &str, body: Body, buf: &mut Vec<u8>) -> Result<(), Error> {
        buf.clear();
        if let Some(len) = body.content_length() {
            // Exactly one page, rather than the doubling growth would give.
            buf.reserve_exact(len.min(BODY_LIMIT) as usize);
        }
        body.into_with_config()
            .limit(BODY_LIMIT)
            .reader()
            .read_to_end(buf)
            .map(drop)
            .map_err(|e| self.redact(self.read_error(doing, &e)))
    }

    /// Parses a body held in memory; the value may borrow strings from it. The body is
    /// checked to be UTF-8 (as JSON must be) in one pass first, which is cheaper than
    /// serde_json checking every string it keeps: 3% of a 10,000-pod run's CPU.
    fn parse_slice<'a, T: serde::Deserialize<'a>>(&self, doing: &str, body: &'a [u8]) -> Result<T, Error> {
        self.parse_slice_seed(doing, body, std::marker::PhantomData)
    }

    /// `parse_slice` with a seed: the value is made as the body is parsed.
    fn parse_slice_seed<'a, S: serde::de::DeserializeSeed<'a>>(
        &self,
        doing: &str,
        body: &'a [u8],
        seed: S,
    ) -> Result<S::Value, Error> {
        let text = std::str::from_utf8(body)
            .map_err(|e| Error::new(doing, Cause::Malformed(format!("expected JSON in UTF-8: {e}"))))?;
        let mut de = serde_json::Deserializer::from_str(text);
        seed.deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value))
            .map_err(|e| self.redact(self.body_error(doing, e)))
    }

    /// Parses a JSON body from the stream, through the size limit.
    fn parse_body<T: DeserializeOwned>(&self, doing: &str, body: Body) -> Result<T, Error> {
        self.parse_body_seed(doing, body, std::marker::PhantomData)
    }

    /// `parse_body` with a seed: the value is made as the body streams in.
    fn parse_body_seed<S, V>(&self, doing: &str, body: Body, seed: S) -> Result<V, Error>
    where
        S: for<'de> serde::de::DeserializeSeed<'de, Value = V>,
    {
        let reader = body.into_with_config().limit(BODY_LIMIT).reader();
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
        seed.deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value))
            .map_err(|e| self.redact(self.body_error(doing, e)))
    }
}

/// Hands each element of a sequence to `each` as it is parsed, failing at the element
/// past `MAX_ITEMS`, before the rest of the body is read: the visitors of the pod list
/// and of the metrics answer make each element into what they keep.
pub fn each_bounded<'de, A, T>(seq: A, each: impl FnMut(T)) -> Result<(), A::Error>
where
    A: serde::de::SeqAccess<'de>,
    T: serde::Deserialize<'de>,
{
    each_bounded_seed(seq, std::marker::PhantomData, each)
}

/// `each_bounded` with a seed that makes each element (a copy of `seed` each time).
pub fn each_bounded_seed<'de, A, S>(mut seq: A, seed: S, mut each: impl FnMut(S::Value)) -> Result<(), A::Error>
where
    A: serde::de::SeqAccess<'de>,
    S: serde::de::DeserializeSeed<'de> + Clone,
{
    let mut count = 0;
    while let Some(item) = seq.next_element_seed(seed.clone())? {
        if count == MAX_ITEMS {
            return Err(serde::de::Error::custom(format_args!(
                "expected at most {MAX_ITEMS} elements in a list, got more"
            )));
        }
        count += 1;
        each(item);
    }
    Ok(())
}

/// A Prometheus API `errorType` as text: the string itself, or the JSON of another value.
pub fn error_type_text(error_type: &serde_json::Value) -> String {
    match error_type.as_str() {
        Some(t) => t.to_string(),
        None => error_type.to_string(),
    }
}

/// The explanation in an error body: a Kubernetes `Status.message`, a Prometheus
/// `error`, or else the start of the body as text.
pub fn server_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Explained {
        message: Option<String>,
        error: Option<String>,
        #[serde(rename = "errorType")]
        error_type: Option<serde_json::Value>,
    }
    if let Ok(e) = serde_json::from_str::<Explained>(body) {
        match (e.message, e.error, e.error_type) {
            (Some(m), _, _) => return m,
            (None, Some(err), Some(t)) => return format!("{err} ({})", error_type_text(&t)),
            (None, Some(err), None) => return err,
            _ => {}
        }
    }
    let text: String = body
        .trim()
        .chars()
        .take(1000)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.is_empty() {
        "empty body".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_status_and_prometheus_bodies() {
        let forbidden = include_str!("../fixtures/k8s/status_403_forbidden_list_pods.json");
        assert!(server_message(forbidden).starts_with(
            "pods is forbidden: User \"system:serviceaccount:bluezero:default\" cannot list resource \"pods\""
        ));
        let vm = include_str!("../fixtures/vm/error_422_parse.json");
        let m = server_message(vm);
        assert!(
            m.starts_with("error when executing query=") && m.ends_with("(422)"),
            "{m}"
        );
        assert_eq!(
            server_message("<html>\n502 Bad Gateway</html>"),
            "<html> 502 Bad Gateway</html>"
        );
        assert_eq!(server_message(""), "empty body");
    }

    #[test]
    fn a_body_past_the_limit_is_refused_as_it_streams() {
        let client = Client::new("http://127.0.0.1:1", Duration::from_secs(1), None, None);
        let endless = std::io::repeat(b' ').take(BODY_LIMIT + 1);
        let body = ureq::Body::builder().reader(std::io::Cursor::new(b"{}".to_vec()).chain(endless));
        let e = client.parse_body::<serde_json::Value>("read", body).unwrap_err();
        assert!(
            e.to_string().contains("reading the body failed") && e.to_string().contains("limit"),
            "{e}"
        );
        // A full page of the recorded kind pod (managedFields and all) is far below it.
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/k8s/podlist_kube-system_kind-v1.36.json")).unwrap();
        let page = serde_json::json!({"items": vec![list["items"][0].clone(); crate::kube::PAGE_LIMIT]}).to_string();
        assert!((page.len() as u64) < BODY_LIMIT / 4, "{} bytes", page.len());
        let body = ureq::Body::builder().data(page);
        assert!(client.parse_body::<serde_json::Value>("read", body).is_ok());
    }

    #[test]
    fn a_token_the_server_echoes_back_is_not_repeated() {
        const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.s3cr3t";
        // A server that echoes the token in its 401.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let body = format!("invalid bearer token {TOKEN}");
            let head = format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n", body.len());
            reader.get_mut().write_all((head + &body).as_bytes()).unwrap();
        });
        let client = Client::new(&base, Duration::from_secs(5), None, Some(TOKEN.to_string()));
        let e = client
            .get_json::<serde_json::Value>("list pods", "/", None)
            .unwrap_err();
        assert_eq!(e.status(), Some(401));
        assert!(
            e.to_string().ends_with("got 401: invalid bearer token [redacted]"),
            "{e}"
        );
        // A body field that holds the token and fails to parse.
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Spec {
            replicas: i64,
        }
        let body = ureq::Body::builder().data(format!(r#"{{"replicas":"{TOKEN}"}}"#));
        let e = client.parse_body::<Spec>("get deployment", body).unwrap_err();
        assert!(
            !e.to_string().contains(TOKEN) && e.to_string().contains("[redacted]"),
            "{e}"
        );
    }

    #[test]
    fn a_body_that_stops_arriving_is_a_timeout() {
        struct Stalled;
        impl Read for Stalled {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                // What ureq's body reader returns when the global timeout passes.
                Err(std::io::Error::other(ureq::Error::Timeout(ureq::Timeout::Global)))
            }
        }
        let client = Client::new("http://127.0.0.1:1", Duration::from_secs(10), None, None);
        let body = ureq::Body::builder().reader(std::io::Cursor::new(b"{\"items\":[".to_vec()).chain(Stalled));
        let e = client.parse_body::<serde_json::Value>("list pods", body).unwrap_err();
        assert_eq!(
            e.to_string(),
            "list pods: no answer: timed out after 10s while reading the body"
        );
        let cut = std::io::Cursor::new(b"{\"items\":[".to_vec()).chain(std::io::Cursor::new(Vec::new()));
        let e = client
            .parse_body::<serde_json::Value>("list pods", ureq::Body::builder().reader(cut))
            .unwrap_err();
        assert!(
            e.to_string().contains("expected JSON of the documented shape: EOF"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_token_or_ca_file_is_named_and_said_as_a_file_problem() {
        let dir = std::env::temp_dir().join(format!("pod-rebalancer-http-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let empty = file("empty-token", "\n");
        assert_eq!(
            read_token(&empty).unwrap_err().to_string(),
            format!(
                "read bearer token {}: expected a token, the file is empty",
                empty.display()
            )
        );
        let two_words = file("two-words", "Bearer abc\n");
        assert!(
            read_token(&two_words)
                .unwrap_err()
                .to_string()
                .ends_with(": expected a token, the file holds whitespace or control characters")
        );
        assert_eq!(read_token(&file("token", "abc.def\n")).unwrap(), "abc.def");
        let not_pem = file("ca.crt", "not a certificate");
        assert_eq!(
            read_ca(&not_pem).unwrap_err().to_string(),
            format!(
                "read CA bundle {}: expected PEM certificates, found none",
                not_pem.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_page_that_is_not_utf8_is_malformed_even_where_nothing_is_read() {
        let client = Client::new("http://127.0.0.1:1", Duration::from_secs(1), None, None);
        let fine = r#"{"a":"\u00e9 é"}"#;
        assert!(
            client
                .parse_slice::<serde::de::IgnoredAny>("list pods", fine.as_bytes())
                .is_ok()
        );
        let e = client
            .parse_slice::<serde::de::IgnoredAny>("list pods", b"{\"ignored\":\"\xff\"}")
            .unwrap_err();
        assert!(e.to_string().contains("expected JSON in UTF-8"), "{e}");
    }
}
