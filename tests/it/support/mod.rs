//! Test support: temporary directories, the binary under test, a loopback
//! HTTP(S) server that records requests, the fake Kubernetes API built on recorded
//! bodies, and the real VictoriaMetrics and Prometheus.

pub mod kube;
pub mod prom;
pub mod server;
pub mod vm;

#[path = "../../common/files.rs"]
mod files;

pub use files::{TempDir, fixture, root};

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The variables `vars`, each of `extra` replacing the variable of its name (or added).
pub fn env_with<K: ToString>(
    vars: impl IntoIterator<Item = (K, String)>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// The live configuration a run with exactly these variables (and no arguments) has:
/// what in-process tests hand the cycle.
pub fn live_config(env: &[(String, String)]) -> (pod_rebalancer::config::Config, pod_rebalancer::config::Cluster) {
    let command = pod_rebalancer::cli::parse(Vec::<std::ffi::OsString>::new(), |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    });
    let Ok(pod_rebalancer::cli::Command::Run(raw)) = command else {
        panic!("{command:?}")
    };
    pod_rebalancer::config::live(&raw).expect("a valid configuration")
}

/// `text` (a log, an output, a metrics file) contains `phrase`.
#[track_caller]
pub fn assert_contains(text: &str, phrase: &str) {
    assert!(text.contains(phrase), "expected {phrase:?} in:\n{text}");
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the binary with exactly these variables (the test's own environment is not
/// inherited, so a developer's KUBERNETES_SERVICE_HOST cannot leak in).
pub fn run_bin(args: &[&str], env: &[(String, String)]) -> Output {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pod-rebalancer"))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pod-rebalancer");
    // Drain both pipes while the run goes on: a run that logs more than a pipe holds
    // (a 1,000-pod fleet at debug) would otherwise block on its next write.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    // A hung run must fail the test, not the CI job.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().expect("wait");
    Output {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

/// Metrics text with the target's labels taken out, after checking that every sample
/// carries them first: `x{namespace="ns",deployment="d",k="v"} 1` becomes `x{k="v"} 1`
/// and `x{namespace="ns",deployment="d"} 1` becomes `x 1`. Tests then read the
/// numbers as the README lists them.
#[track_caller]
pub fn untargeted(text: &str, namespace: &str, deployment: &str) -> String {
    let target = format!("{{namespace=\"{namespace}\",deployment=\"{deployment}\"");
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else {
            let at = line
                .find('{')
                .unwrap_or_else(|| panic!("a sample without labels: {line:?}"));
            let (name, rest) = line.split_at(at);
            let rest = rest
                .strip_prefix(&target)
                .unwrap_or_else(|| panic!("a sample without {target}…}}: {line:?}"));
            out.push_str(name);
            match rest.strip_prefix(',') {
                Some(labels) => {
                    out.push('{');
                    out.push_str(labels);
                }
                None => out.push_str(rest.strip_prefix('}').unwrap_or(rest)),
            }
        }
        out.push('\n');
    }
    out
}
