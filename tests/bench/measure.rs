//! Runs a command under GNU `time` (which reaps it with `wait4`) and reads back the
//! child's user and system CPU time and peak RSS; the wall time is ours, around the
//! whole run. No `libc` needed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// One measured run of one process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
    pub rss_kb: u64,
}

/// The median of `v`; NaN when empty.
pub fn mid(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of a ratio taken round by round: `a[i]` and `b[i]` ran back to back,
/// under the same load, so their ratio is steadier than the ratio of two medians.
pub fn paired(a: &[Sample], b: &[Sample], ratio: impl Fn(&Sample, &Sample) -> f64) -> f64 {
    mid(a.iter().zip(b).map(|(a, b)| ratio(a, b)).collect())
}

/// The median of each column separately (hyperfine-style: robust to one bad run).
pub fn median(samples: &[Sample]) -> Sample {
    Sample {
        wall: mid(samples.iter().map(|s| s.wall).collect()),
        cpu: mid(samples.iter().map(|s| s.cpu).collect()),
        rss_kb: mid(samples.iter().map(|s| s.rss_kb as f64).collect()) as u64,
    }
}

pub const TIME: &str = "/usr/bin/time";

/// Runs `program args` with exactly `env`, stdout discarded, stderr kept.
pub fn run(program: &Path, args: &[String], env: &[(String, String)], scratch: &Path) -> (Sample, Output) {
    let report = scratch.join("time.out");
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(TIME);
    cmd.arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&report)
        .arg(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {TIME} {}: {e}", program.display()));
    let wall = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    // GNU time writes "Command exited with non-zero status N" first when it fails.
    let last = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let sample = Sample {
        wall,
        cpu: num(0) + num(1),
        rss_kb: num(2) as u64,
    };
    (sample, out)
}
