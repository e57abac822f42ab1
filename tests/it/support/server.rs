//! A loopback HTTP/1.1 server, plain or TLS, that answers through a handler and
//! records every request it receives. It stops when dropped.
//!
//! It can also misbehave the ways real servers and networks do, for the fault
//! matrix: a reply can be withheld, cut off, streamed without end or trickled
//! (`Delivery`); the certificate can be expired or name another host (`Pki::with`);
//! a plain server answers a TLS handshake with a 400 as Go's net/http does; and
//! `Blackhole` is an address whose connections are never accepted.

#[path = "../../common/loopback.rs"]
mod loopback;

pub use loopback::{CertOptions, Pki, Request};
use loopback::{Listener, read_request};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn is_mutating(&self) -> bool {
        self.method != "GET"
    }

    /// A field of a form-encoded body (`query=…&time=…`), percent-decoded.
    pub fn form(&self, name: &str) -> Option<String> {
        String::from_utf8_lossy(&self.body).split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| loopback::decode(v))
        })
    }

    /// The pod a removal names: `…/pods/NAME/eviction` or `…/pods/NAME`.
    pub fn pod(&self) -> String {
        let path = self.path();
        let path = path.strip_suffix("/eviction").unwrap_or(path);
        path.rsplit('/').next().unwrap_or_default().to_string()
    }
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

    /// The same answer, after `delay` (a server slower than the client's timeout).
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// The same answer, delivered this way.
    pub fn delivered(mut self, delivery: Delivery) -> Reply {
        self.delivery = delivery;
        self
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct Server {
    listener: Listener,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// A plain HTTP server.
    pub fn http(handler: Handler) -> Server {
        Server::start(None, handler)
    }

    /// An HTTPS server presenting a certificate of `pki`.
    pub fn https(pki: &Pki, handler: Handler) -> Server {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key())
            .expect("server TLS config");
        Server::start(Some(Arc::new(config)), handler)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let is_tls = tls.is_some();
        let listener = {
            let requests = requests.clone();
            Listener::start(move |stream| serve(stream, tls.clone(), &handler, &requests))
        };
        Server {
            listener,
            tls: is_tls,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.listener.port()
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests lock").clone()
    }

    pub fn mutations(&self) -> Vec<Request> {
        self.requests().into_iter().filter(Request::is_mutating).collect()
    }
}

fn serve(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, handler: &Handler, requests: &Mutex<Vec<Request>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let tls_stream = rustls::StreamOwned::new(conn, stream);
            exchange(tls_stream, handler, requests);
        }
        None => exchange(stream, handler, requests),
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
    while let Some(request) = read_request(&mut reader) {
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
