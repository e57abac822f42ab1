//! The partition signal (SPEC §12): its properties on random small consumer groups,
//! a large answer, and one live run that sends `PARTITION_QUERY` to the real server.
//!
//! The best possible spread claims that no assignment of the partitions is more even.
//! On groups small enough to try every assignment (N ≤ 5 pods, P ≤ 7 partitions: at
//! most 5^7 = 78,125), that claim is checked against all of them, and where the
//! water-filling split is itself an assignment it must be the minimum, not only a
//! bound. The verdicts are checked against their rules stated plainly, and each must
//! occur in a fair share of the cases, so no property holds vacuously. Seeded with
//! the generator `properties.rs` uses (`PROPERTY_SEED=…` reproduces a failure).

use crate::cycle::{World, fleet, name};
use crate::simulation::model::Rng;
use crate::support::{assert_contains, run_bin, vm};
use pod_rebalancer::partition::{self, Answer, Fit, Verdict, best_split, explain, predicted_spread};
use pod_rebalancer::plan::over;
use pod_rebalancer::stats;

const SEED: u64 = 0x5eed_2026_0012_0001;

fn seed() -> u64 {
    std::env::var("PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Partition loads as consumer groups have them: small whole numbers (which often
/// split evenly), continuous loads, one hot partition among light ones, all equal,
/// and idle partitions now and then.
fn loads(rng: &mut Rng, p: usize) -> Vec<f64> {
    let kind = rng.below(4);
    (0..p)
        .map(|i| {
            if rng.chance(0.1) {
                return 0.0;
            }
            match kind {
                0 => (1 + rng.below(4)) as f64,
                1 => 0.05 + 3.0 * rng.unit(),
                2 if i == 0 => 2.0 + 6.0 * rng.unit(),
                2 => 0.2 + 0.3 * rng.unit(),
                _ => 1.0,
            }
        })
        .collect()
}

/// The spread of the CPU `fit` predicts for pod loads held in a small array.
fn spread_of(fit: &Fit, pod_loads: &[f64]) -> f64 {
    let mut cpu = [0.0; 8];
    for (c, l) in cpu.iter_mut().zip(pod_loads) {
        *c = fit.a + fit.b * l;
    }
    stats::describe(&cpu[..pod_loads.len()]).map_or(0.0, |s| s.spread)
}

/// The smallest spread over every assignment of `loads` to `n` pods, and whether one
/// of them gives each pod exactly the load of `target` (sorted heaviest first).
fn every_assignment(fit: &Fit, n: usize, loads: &[f64], target: &[f64]) -> (f64, bool) {
    let p = loads.len();
    let total = (n as u64).pow(p as u32);
    let mut min = f64::INFINITY;
    let mut achieved = false;
    for code in 0..total {
        let mut pod_loads = [0.0; 8];
        let mut c = code;
        for l in loads {
            pod_loads[(c % n as u64) as usize] += l;
            c /= n as u64;
        }
        min = min.min(spread_of(fit, &pod_loads[..n]));
        if !achieved {
            let mut sorted = pod_loads[..n].to_vec();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            achieved = sorted.iter().zip(target).all(|(a, b)| (a - b).abs() <= 1e-9);
        }
    }
    (min, achieved)
}

#[test]
fn no_assignment_is_more_even_than_the_best_possible_spread() {
    let mut rng = Rng::new(seed());
    let cases = 300;
    let (mut achievable, mut uneven) = (0, 0);
    for case in 0..cases {
        let n = 1 + rng.below(5) as usize;
        let p = rng.below(8) as usize;
        let loads = loads(&mut rng, p);
        let fit = Fit {
            a: *rng.pick(&[0.0, 0.01, 0.3]),
            b: *rng.pick(&[0.5, 1.0, 2.0]),
            r2: Some(1.0),
        };
        let split = best_split(n, &loads);
        let why = format!("case {case}: {n} pods, loads {loads:?}: {split:?}");
        // What every assignment has, the split has: all the load, at most P busy pods,
        // and no partition cut in two (the heaviest sits whole on some pod).
        assert_eq!(split.loads.len(), n, "{why}");
        let total: f64 = loads.iter().sum();
        assert!(close(split.loads.iter().sum(), total), "the split loses load: {why}");
        let busy = loads.iter().filter(|l| **l > 0.0).count();
        assert_eq!(split.busy, busy, "{why}");
        assert!(split.loads.iter().filter(|l| **l > 0.0).count() <= busy, "{why}");
        let heaviest = loads.iter().copied().fold(0.0, f64::max);
        assert!(split.loads.iter().all(|l| *l >= 0.0), "{why}");
        assert!(
            split.loads.first().is_none_or(|l| *l >= heaviest - 1e-12),
            "a partition is cut: {why}"
        );
        let best = predicted_spread(&fit, &split.loads);
        let (min, achieved) = every_assignment(&fit, n, &loads, &split.loads);
        let why = format!("case {case}: {n} pods, loads {loads:?}, {fit:?}: best {best}, min {min}, {split:?}");
        assert!(
            best <= min + 1e-9 * min.max(1.0),
            "an assignment beats the bound: {why}"
        );
        if achieved {
            achievable += 1;
            assert!(
                close(best, min),
                "the split is an assignment, so it is the minimum: {why}"
            );
        }
        if min > best + 1e-6 {
            uneven += 1;
        }
    }
    // Both kinds of case occur often enough for the two checks above to mean something.
    assert!(
        achievable * 5 >= cases,
        "only {achievable} of {cases} splits were assignments"
    );
    assert!(uneven * 10 >= cases, "only {uneven} of {cases} bounds were strict");
}

/// A consumer group as `explain` sees it: eligible pods with their CPU, matched pods
/// that are not eligible, and the answer.
struct Group {
    eligible: Vec<(String, f64)>,
    excluded: Vec<String>,
    owned: Vec<(String, String, f64)>,
}

fn group(rng: &mut Rng) -> Group {
    let n = 1 + rng.below(8) as usize;
    let p = if rng.chance(0.1) { 0 } else { rng.below(13) as usize };
    let partition_loads = loads(rng, p);
    let mut owner: Vec<usize> = (0..p).map(|_| rng.below(n as u64) as usize).collect();
    if rng.chance(0.3) {
        // The assignors' usual result: round robin.
        owner = (0..p).map(|j| j % n).collect();
    }
    let mut pod_loads = vec![0.0; n];
    for (j, l) in partition_loads.iter().enumerate() {
        pod_loads[owner[j]] += l;
    }
    let (a, b) = (*rng.pick(&[0.0, 0.02, 0.2]), *rng.pick(&[0.5, 1.0, -0.5]));
    let noise = *rng.pick(&[0.0, 0.02, 0.5, 2.0]);
    let flat = rng.chance(0.05);
    let eligible: Vec<(String, f64)> = pod_loads
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let cpu = if flat {
                0.7
            } else {
                (a + b * l + noise * rng.unit()).max(0.0)
            };
            (format!("p{i}"), cpu)
        })
        .collect();
    let mut owned: Vec<(String, String, f64)> = partition_loads
        .iter()
        .enumerate()
        .map(|(j, l)| (format!("p{}", owner[j]), format!("t/{j}"), *l))
        .collect();
    let mut excluded = vec!["crashed".to_string()];
    match rng.below(20) {
        0 if p > 0 => owned.push(("crashed".into(), "t/0b".into(), 1.0)),
        1 if p > 0 && n > 1 => {
            let other = (owner[0] + 1) % n;
            owned.push((format!("p{other}"), "t/0".into(), 0.5));
        }
        // Another consumer group on the same topic: ignored whatever it says.
        2 => owned.push(("stranger".into(), "t/0".into(), 100.0)),
        _ => excluded.clear(),
    }
    Group {
        eligible,
        excluded,
        owned,
    }
}

/// The verdict's rules in their plainest form (SPEC §12), given the explanation's own
/// fit and best possible spread; `None` where a number sits on a boundary within
/// rounding and either verdict would be right.
fn expected(g: &Group, fit: Option<Fit>, best: Option<f64>, threshold: f64) -> Option<&'static str> {
    let is_eligible = |pod: &str| g.eligible.iter().any(|(n, _)| n == pod);
    let ours: Vec<&(String, String, f64)> = g
        .owned
        .iter()
        .filter(|(pod, ..)| is_eligible(pod) || g.excluded.contains(pod))
        .collect();
    let owned_twice = ours
        .iter()
        .any(|(pod, key, _)| ours.iter().any(|(other, k, _)| k == key && other != pod));
    if owned_twice || ours.iter().any(|(pod, ..)| !is_eligible(pod)) {
        return Some("moving");
    }
    if ours.is_empty() {
        return Some("missing");
    }
    let n = g.eligible.len();
    let pod_load = |pod: &str| ours.iter().filter(|(p, ..)| p == pod).map(|(.., l)| l).sum::<f64>();
    let first = pod_load(&g.eligible[0].0);
    let loads_equal = g.eligible.iter().all(|(pod, _)| pod_load(pod) == first);
    let Some(fit) = fit else {
        // No fit: one pod, or loads all equal; anything else is a fit gone missing.
        return Some(if n < 2 || loads_equal { "unexplained" } else { "no fit" });
    };
    let near = |x: f64, line: f64| (x - line).abs() < 1e-9;
    let Some(r2) = fit.r2.filter(|_| n >= partition::MIN_PODS) else {
        return Some("unexplained");
    };
    if near(r2, partition::MIN_R2) || near(fit.b, 0.0) {
        return None;
    }
    if r2 < partition::MIN_R2 || fit.b <= 0.0 {
        return Some("unexplained");
    }
    let best = best?;
    if near(best, threshold * (1.0 + pod_rebalancer::plan::SPREAD_TOLERANCE)) {
        return None;
    }
    if !over(best, threshold) {
        return Some("fixable");
    }
    let mut busy: Vec<f64> = ours.iter().map(|(.., l)| *l).filter(|l| *l > 0.0).collect();
    busy.sort_unstable_by(|a, b| b.total_cmp(a));
    // A partition heavier than the even share of all the load over the pods that can
    // be busy needs a pod of its own: key skew. (Equal but for rounding is not heavier.)
    let fair = busy.iter().sum::<f64>() / n.min(busy.len()) as f64;
    Some(if busy[0] > fair * (1.0 + 1e-9) {
        "key_skew"
    } else {
        "idle_consumers"
    })
}

#[test]
fn every_verdict_follows_its_rule_and_each_occurs() {
    let mut rng = Rng::new(seed() ^ 0xe791);
    let cases = 4000;
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut on_a_line = 0;
    for case in 0..cases {
        let g = group(&mut rng);
        let threshold = *rng.pick(&[0.1, 0.3, 0.5]);
        let answer = Answer::new(g.owned.iter().map(|(p, k, l)| (p.as_str(), k.as_str(), *l))).expect("valid");
        let eligible: Vec<(&str, f64)> = g.eligible.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let excluded: Vec<&str> = g.excluded.iter().map(String::as_str).collect();
        let e = explain(answer, &eligible, &excluded, threshold);
        let label = e.verdict.label();
        let why = || {
            format!(
                "case {case}: {} with threshold {threshold}: {e:?}",
                serde_json::to_string(&(&g.eligible, &g.owned)).unwrap_or_default()
            )
        };
        match expected(&g, e.fit, e.best_possible_spread, threshold) {
            Some(want) => assert_eq!(label, want, "{}", why()),
            None => on_a_line += 1,
        }
        *seen.entry(label).or_default() += 1;
        // The numbers that go with each verdict, and the spread of the assignment the
        // group has now: one of all assignments, so never below the best possible.
        assert_eq!(e.best_possible_spread.is_some(), e.explains(), "{}", why());
        if let (Some(fit), Some(best)) = (e.fit, e.best_possible_spread) {
            let now: Vec<f64> = e.pods.iter().filter(|p| p.eligible).map(|p| p.load).collect();
            let spread_now = predicted_spread(&fit, &now);
            assert!(best <= spread_now + 1e-9 * spread_now.max(1.0), "{}", why());
        }
        assert_eq!(
            e.unfixable(),
            matches!(label, "key_skew" | "idle_consumers"),
            "{}",
            why()
        );
        if let Verdict::KeySkew { shares, .. } = e.verdict {
            assert!(shares > 1.0, "a hot partition is more than a fair share: {}", why());
        }
        assert_eq!(e.reasons().is_empty(), label == "fixable", "{}", why());
    }
    assert!(
        on_a_line * 100 <= cases,
        "{on_a_line} of {cases} cases sat on a boundary, unchecked"
    );
    for verdict in [
        "moving",
        "missing",
        "unexplained",
        "fixable",
        "key_skew",
        "idle_consumers",
    ] {
        let n = seen.get(verdict).copied().unwrap_or(0);
        assert!(n * 50 >= cases, "{verdict} in only {n} of {cases} cases: {seen:?}");
    }
}

/// A body of `n` series: pods p0…p99 own `n` partitions round robin; as many series of
/// another consumer group come with them.
fn large_body(n: usize, strangers: usize) -> String {
    let mut result: Vec<String> = (0..n)
        .map(|j| {
            format!(
                r#"{{"metric":{{"__name__":"kafka_partition_rate","pod":"p{}","topic":"events","partition":"{j}","group":"ingestion"}},"value":[1796000105,"{}.5"]}}"#,
                j % 100,
                j % 17
            )
        })
        .collect();
    result.extend((0..strangers).map(|j| {
        format!(r#"{{"metric":{{"pod":"billing-{j}","topic":"events","partition":"{j}"}},"value":[1796000105,"NaN"]}}"#)
    }));
    format!(
        r#"{{"status":"success","isPartial":false,"data":{{"resultType":"vector","result":[{}]}}}}"#,
        result.join(",")
    )
}

#[test]
fn an_answer_of_ten_thousand_partitions_parses_and_a_countless_one_is_refused() {
    let labels = ["topic".to_string(), "partition".to_string()];
    let pods: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let matched = || pods.iter().map(String::as_str);
    let answer = pod_rebalancer::victoria::parse_partitions(&large_body(10_000, 10_000), &labels, matched())
        .expect("10,000 partitions");
    assert_eq!(answer.len(), 10_000, "another group's 10,000 series are not kept");
    assert_eq!(answer.owners().count(), 100);
    let p7: Vec<(&str, f64)> = answer.partitions_of("p7").collect();
    assert_eq!(p7.len(), 100);
    assert_eq!(p7[0].1, 16.5, "heaviest first");
    let e = explain(
        answer,
        &pods.iter().map(|p| (p.as_str(), 1.0)).collect::<Vec<_>>(),
        &[],
        0.3,
    );
    assert_eq!(e.partition_count(), 10_000);
    let limit = pod_rebalancer::http::MAX_ITEMS;
    let refused = pod_rebalancer::victoria::parse_partitions(&large_body(10_000, limit - 9_999), &labels, matched())
        .expect_err("more series than any answer may hold");
    assert!(
        refused.contains(&format!("expected at most {limit} elements")),
        "{refused}"
    );
}

#[test]
fn a_run_with_the_partition_query_holds_an_imbalance_no_eviction_can_fix() {
    // SPEC §12's first example on eight pods: p0 owns the hot partition.
    let ns = "partition-signal";
    let mut owned: Vec<(usize, usize, f64)> = vec![(0, 0, 1.25), (0, 1, 0.25)];
    owned.extend((1..8).flat_map(|i| [(i, 2 * i, 0.25), (i, 2 * i + 1, 0.25)]));
    let mut loads = [0.0; 8];
    for (pod, _, l) in &owned {
        loads[*pod] += l;
    }
    let (pods, cpu) = fleet(&loads.map(|l| 0.01 + l));
    let world = World::new(ns, |f| f, &pods, &cpu);
    let vm = vm::shared();
    let at = vm::now_ms() - 15_000;
    let mut text = String::new();
    for (pod, partition, load) in &owned {
        text.push_str(&format!(
            "kafka_partition_rate{{namespace=\"{ns}\",pod=\"{}\",topic=\"events\",partition=\"{partition}\"}} {load} {at}\n",
            name(*pod)
        ));
    }
    // Another consumer group reads the same topic: not ours, never a problem.
    text.push_str(&format!(
        "kafka_partition_rate{{namespace=\"{ns}\",pod=\"billing-0\",topic=\"events\",partition=\"0\"}} 99 {at}\n"
    ));
    vm.import(&text);
    vm.get("/internal/force_flush").expect("flush");
    let query = format!("kafka_partition_rate{{namespace=\"{ns}\"}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while vm.samples(&query, "partition", None).len() < 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "the partition series never became searchable"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = world.run(&[("PARTITION_QUERY", &query)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_contains(&out.stderr, "partition events/0 alone burns");
    assert_contains(&out.stderr, "(key skew)");
    assert!(world.removals().is_empty(), "{:?}", world.removals());
    let metrics = world.metrics();
    assert_contains(&metrics, "rebalancer_cycle_outcome{outcome=\"unfixable\"} 1\n");
    assert_contains(&metrics, "rebalancer_partition_fit_r2 ");
    let best: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rebalancer_best_possible_spread "))
        .and_then(|v| v.parse().ok())
        .expect("the best possible spread is exported");
    assert!((best - 0.37).abs() < 0.02, "{best}");
    // A live plan reads the same and saves the answer; replayed, it decides the same.
    let saved = world.dir.path().join("snapshot");
    let live = run_bin(
        &["plan", "--save", saved.to_str().unwrap()],
        &world.env(&[("PARTITION_QUERY", &query)]),
    );
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_contains(&live.stdout, "partitions: 16 owned by the matched pods, heaviest first");
    let file = |f: &str| saved.join(f).display().to_string();
    let answer = std::fs::read_to_string(file("partitions.json")).expect("partitions.json saved");
    assert!(
        answer.contains("billing-0"),
        "saved as received, another group's series too"
    );
    let at = crate::support::kube::rfc3339_of(crate::support::now());
    let replay = run_bin(
        &[
            "plan",
            "--pods",
            &file("pods.json"),
            "--cpu",
            &file("cpu.json"),
            "--deployment",
            &file("deployment.json"),
            "--partitions",
            &file("partitions.json"),
            "--now",
            &at,
        ],
        &[],
    );
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let decision = |text: &str| text.lines().find(|l| l.starts_with("decision:")).map(str::to_string);
    assert_eq!(decision(&replay.stdout), decision(&live.stdout));
    assert!(
        decision(&live.stdout).is_some_and(|d| d.starts_with("decision: no action: unfixable")),
        "{}",
        live.stdout
    );
    // The same run without the signal evicts the hottest and the coldest pod.
    let blind = world.run(&[("DRY_RUN", "true")]);
    assert_eq!(blind.code, 0, "{}", blind.stderr);
    assert_contains(&world.metrics(), "rebalancer_cycle_outcome{outcome=\"dry_run\"} 1\n");
    assert!(!world.metrics().contains("rebalancer_partition_fit_r2"));
    let asked = world.removals().len();
    assert_eq!(asked, 2, "the dry run asks for the pair: {:?}", world.removals());
    // A query the server refuses fails the run in the metrics stage, nothing removed.
    let broken = world.run(&[("PARTITION_QUERY", "kafka_partition_rate{")]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    assert_contains(&broken.stderr, "query partitions");
    assert_contains(&world.metrics(), "rebalancer_errors_total{stage=\"metrics\"} 1\n");
    assert_eq!(world.removals().len(), asked, "nothing asked after the failed query");
    // With a memory, the first run to find it unfixable says so on the Deployment, as
    // a Warning; the next one does not repeat it.
    let remembering = [
        ("PARTITION_QUERY", query.as_str()),
        ("STATE_CONFIGMAP", crate::support::kube::STATE),
    ];
    let unfixable = |world: &World| -> Vec<serde_json::Value> {
        world
            .events_on("Deployment")
            .iter()
            .map(|r| r.json())
            .filter(|e| e["reason"] == "RebalancerUnfixable")
            .collect()
    };
    let first = world.run(&remembering);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let said = unfixable(&world);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["type"], "Warning");
    assert_eq!(said[0]["involvedObject"]["name"], crate::cycle::DEPLOYMENT);
    assert!(
        said[0]["message"].as_str().is_some_and(|m| m.contains("(key skew)")),
        "{}",
        said[0]
    );
    let second = world.run(&remembering);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(unfixable(&world).len(), 1, "said once until the next action");
}
