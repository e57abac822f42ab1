//! The command line and the environment (`cli::parse`, then `config::live` or
//! `config::plan`) on arbitrary input: no panic, and a configuration that is
//! accepted obeys the README's configuration rules; one that is refused says why, one line per problem.
//!
//! Input: one entry per line. `KEY=VALUE` sets a variable (a KEY that is a number
//! picks the setting of that index, so the fuzzer reaches every variable quickly);
//! any other non-empty line is a command-line argument (non-UTF-8 bytes kept).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_rebalancer::{cli, config};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    let mut args = Vec::new();
    let mut env = BTreeMap::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        match text.split_once('=') {
            Some((key, value)) if !key.starts_with('-') && !key.is_empty() => {
                let key = match key.parse::<usize>() {
                    Ok(i) => cli::SETTINGS[i % cli::SETTINGS.len()].var.to_string(),
                    Err(_) => key.to_string(),
                };
                env.insert(key, value.to_string());
            }
            _ => args.push(OsString::from_vec(line.to_vec())),
        }
    }
    let command = cli::parse(args, |k| env.get(k).cloned());
    let checked = match command {
        Ok(cli::Command::Run(raw)) => config::live(&raw).map(|(c, cluster)| {
            assert!(cluster.kube.url.starts_with("http://") || cluster.kube.url.starts_with("https://"));
            assert!(!cluster.kube.timeout.is_zero());
            match &cluster.scope {
                config::Scope::One { deployment } => {
                    let container = c.container.as_deref().unwrap_or(deployment);
                    assert!(config::dns_label(deployment).is_some() && config::dns_label(container).is_some());
                    assert!(
                        c.target_selector.is_none(),
                        "one of DEPLOYMENT_NAME and TARGET_SELECTOR"
                    );
                }
                config::Scope::Fleet { selector } => {
                    assert!(!selector.is_empty() && c.deployment.is_none());
                }
            }
            assert!(c.max_removals >= 1);
            c
        }),
        Ok(cli::Command::Plan(raw, args)) => config::plan(&raw, &args).map(|request| request.config),
        Ok(cli::Command::Help | cli::Command::Version) => return,
        Err(usage) => Err(usage.problems),
    };
    match checked {
        Ok(c) => {
            let d = &c.decision;
            assert!(
                d.threshold.is_finite() && d.threshold > 0.0,
                "threshold {}",
                d.threshold
            );
            assert!(d.min_pods >= 1 && d.window_secs > 0);
            // The decision counts seconds in i64 (ages, `now - created`): a window
            // beyond that would wrap, and a wrapped stabilization window is no gate.
            assert!(
                i64::try_from(d.window_secs).is_ok(),
                "METRICS_TIME_WINDOW {}s",
                d.window_secs
            );
            assert!(
                i64::try_from(d.stabilization_secs).is_ok(),
                "STABILIZATION_WINDOW {}s",
                d.stabilization_secs
            );
            assert!(!c.prometheus.timeout.is_zero());
            assert!(c.prometheus.url.starts_with("http://") || c.prometheus.url.starts_with("https://"));
            let authority = c.prometheus.url.split("://").nth(1).and_then(|r| r.split('/').next());
            assert!(!authority.is_some_and(|a| a.contains('@')), "no credentials in a URL");
            assert!(config::dns_label(&c.namespace).is_some());
            assert!(c.selector.as_deref().is_none_or(|s| !s.is_empty()));
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "a refusal says why");
            assert!(problems.iter().all(|p| !p.trim().is_empty()));
        }
    }
});
