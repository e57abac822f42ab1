//! A loopback HTTP/1.1 server, plain or TLS, that answers through a handler and
//! records every request it receives. It stops when dropped.
//!
//! It can also misbehave the ways real servers and networks do, for the fault
//! matrix: a reply can be withheld, cut off, streamed without end or trickled
//! (`Delivery`); the certificate can be expired or name another host (`Pki::with`);
//! a plain server answers a TLS handshake with a 400 as Go's net/http does; and
//! `Blackhole` is an address whose connections are never accepted.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| decode(v))
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn is_mutating(&self) -> bool {
        self.method != "GET"
    }
}

pub fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Wait this long before answering (a slow server).
    pub delay: Duration,
    /// How the reply reaches the client.
    pub delivery: Delivery,
}

/// How a reply is sent: whole, or one of the ways a broken server fails.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Delivery {
    #[default]
    Whole,
    /// Reads the request and never answers, keeping the connection open.
    Never,
    /// Reads the request and closes the connection without a word.
    Close,
    /// Announces the whole body, sends the first half of it, then closes.
    CutMidBody,
    /// Announces `total` bytes: the reply's body, then `fill` repeated until `total`,
    /// written as it goes so a 100 MB body costs the test no 100 MB.
    Stream { total: u64, fill: Vec<u8> },
    /// Sends the head at once, then the body one byte at a time, this far apart.
    Trickle(Duration),
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
            delivery: Delivery::Whole,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
            delivery: Delivery::Whole,
        }
    }

    /// The same answer, delivered this way.
    pub fn delivered(mut self, delivery: Delivery) -> Reply {
        self.delivery = delivery;
        self
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A certificate authority and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    pub ca_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: Vec<u8>,
}

/// What the server certificate of a `Pki` says.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// DNS names and IP addresses the certificate is valid for.
    pub names: Vec<String>,
    /// Valid from the start of the first year to the end of the second (UTC);
    /// `None`: rcgen's default, valid from 1975 to 4096.
    pub validity: Option<(i32, i32)>,
}

impl Default for CertOptions {
    fn default() -> CertOptions {
        CertOptions {
            names: vec!["localhost".into(), "127.0.0.1".into()],
            validity: None,
        }
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki::with(CertOptions::default())
    }

    /// A fresh CA and a server certificate as `options` describe.
    pub fn with(options: CertOptions) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two CAs of one name would meet as "bad signature"
        // rather than as the "unknown issuer" a foreign CA really is.
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pod-rebalancer test CA {} {n}", std::process::id()),
        );
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        for name in &options.names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().expect("a DNS name")),
            });
        }
        if let Some((from, to)) = options.validity {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 12, 31);
        }
        let cert = params.signed_by(&server_key, &ca).expect("server certificate");
        Pki {
            ca_pem: ca.pem(),
            server_chain: vec![cert.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }
}

pub struct Server {
    addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A plain HTTP server.
    pub fn http(handler: Handler) -> Server {
        Server::start(None, handler)
    }

    /// An HTTPS server presenting a certificate of `pki`.
    pub fn https(pki: &Pki, handler: Handler) -> Server {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), key)
            .expect("server TLS config");
        Server::start(Some(Arc::new(config)), handler)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let is_tls = tls.is_some();
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, handler, tls) = (requests.clone(), handler.clone(), tls.clone());
                    std::thread::spawn(move || serve(stream, tls, handler, requests));
                }
            })
        };
        Server {
            addr,
            tls: is_tls,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.addr.port()
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests lock").clone()
    }

    pub fn mutations(&self) -> Vec<Request> {
        self.requests().into_iter().filter(Request::is_mutating).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    requests: Arc<Mutex<Vec<Request>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let tls_stream = rustls::StreamOwned::new(conn, stream);
            exchange(tls_stream, &handler, &requests);
        }
        None => exchange(stream, &handler, &requests),
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Answers requests on one connection until the client closes it.
fn exchange<S: Read + Write>(stream: S, handler: &Handler, requests: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream);
    // A TLS client talking to a plain server: answer as Go's net/http does, with a
    // plain-text 400, and close. (Behind TLS the first byte is a method's letter.)
    if reader.fill_buf().is_ok_and(|b| b.first() == Some(&TLS_HANDSHAKE)) {
        let out = reader.get_mut();
        let _ = out.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request");
        let _ = out.flush();
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = find("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let request = Request {
            method,
            target,
            headers,
            body,
        };
        requests.lock().expect("requests lock").push(request.clone());
        let reply = handler(&request);
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        if !deliver(&mut reader, &reply) {
            return;
        }
    }
}

/// Sends `reply` as its `delivery` says; `false` when the connection is done.
fn deliver<S: Read + Write>(reader: &mut BufReader<S>, reply: &Reply) -> bool {
    let total = match &reply.delivery {
        Delivery::Stream { total, .. } => *total,
        _ => reply.body.len() as u64,
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {total}\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
    );
    match &reply.delivery {
        Delivery::Whole => {
            let out = reader.get_mut();
            out.write_all(head.as_bytes())
                .and_then(|()| out.write_all(&reply.body))
                .and_then(|()| out.flush())
                .is_ok()
        }
        Delivery::Never => {
            // Hold the connection until the client gives up on it (or a minute passes).
            let started = std::time::Instant::now();
            let mut byte = [0u8; 1];
            while started.elapsed() < Duration::from_secs(60) {
                match reader.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            false
        }
        Delivery::Close => false,
        Delivery::CutMidBody => {
            let out = reader.get_mut();
            let _ = out
                .write_all(head.as_bytes())
                .and_then(|()| out.write_all(&reply.body[..reply.body.len() / 2]))
                .and_then(|()| out.flush());
            false
        }
        Delivery::Stream { fill, .. } => {
            let out = reader.get_mut();
            if out
                .write_all(head.as_bytes())
                .and_then(|()| out.write_all(&reply.body))
                .is_err()
            {
                return false;
            }
            let mut sent = reply.body.len() as u64;
            // Whole copies of `fill` in a block of about 64 KiB (or `fill` itself, if larger).
            let copies = (64 * 1024 / fill.len().max(1)).max(1);
            let block = fill.repeat(copies);
            while sent < total && !block.is_empty() {
                let n = (total - sent).min(block.len() as u64) as usize;
                if out.write_all(&block[..n]).is_err() {
                    return false;
                }
                sent += n as u64;
            }
            let _ = out.flush();
            false
        }
        Delivery::Trickle(every) => {
            let out = reader.get_mut();
            if out.write_all(head.as_bytes()).and_then(|()| out.flush()).is_err() {
                return false;
            }
            for b in &reply.body {
                std::thread::sleep(*every);
                if out.write_all(&[*b]).and_then(|()| out.flush()).is_err() {
                    return false;
                }
            }
            true
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// An address that never accepts a connection: its listen queue is full, so the
/// kernel drops new SYNs and a client's connect waits until its own timeout, as it
/// would for a firewalled or vanished host. (A blackholed remote address would do
/// the same, but whether one exists depends on the machine's network.)
pub struct Blackhole {
    listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use std::os::fd::AsRawFd;
        unsafe extern "C" {
            /// POSIX `listen(2)`: called again on a listening socket, it sets a new backlog.
            fn listen(socket: i32, backlog: i32) -> i32;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        // SAFETY: the descriptor is a valid, listening socket owned by `listener`.
        let rc = unsafe { listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen(fd, 0)");
        let addr = listener.local_addr().expect("local addr");
        // Fill the queue: with backlog 0 the kernel still queues one connection.
        let mut queued = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
        }
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "the blackhole accepted a connection after {} queued",
            queued.len()
        );
        Blackhole {
            listener,
            _queued: queued,
        }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("local addr").port()
    }
}
