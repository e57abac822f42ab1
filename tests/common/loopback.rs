//! What the two loopback HTTP/1.1 servers have in common: the integration tests'
//! (tests/it/support/server.rs) and the cycle benchmark's (tests/bench/server.rs).
//! Both include this file with `#[path]`. It holds a throw-away PKI, the accept loop
//! (a thread per connection, stopped on drop) and the reading of one request. What a
//! server answers, how, and under which TLS settings stays with that server.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// A certificate authority and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    pub ca_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
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
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pod-rebalancer loopback CA {} {n}", std::process::id()),
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

    /// The private key of the server certificate, for a `rustls::ServerConfig`.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()))
    }
}

/// A listener on 127.0.0.1 (a port of its own) that hands every connection to
/// `serve` on a thread of its own. It stops accepting when dropped.
pub struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(stream));
                }
            })
        };
        Listener {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
}

/// Percent- and plus-decodes a query value; an escape that is not two hex digits
/// gives `?`.
pub(crate) fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                out.push(hex.and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(b'?'));
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

/// Reads one request, its body by `Content-Length` or chunked; `None` when the
/// connection ends first or the request line makes no sense.
pub fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return None;
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = request.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        request.body.resize(len, 0);
        reader.read_exact(&mut request.body).ok()?;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(request)
}
