//! The memory end to end: runs of the cycle in-process against the fake API (which
//! keeps the state ConfigMap with resourceVersions, marks evicted pods terminating and
//! honours `dryRun`) and the real VictoriaMetrics, with the test standing in for
//! Kubernetes between runs: it replaces the pods an eviction terminated with new ones,
//! which burn what the scenario says (a hot spot that moves, or a fleet that evens out).

use crate::support::kube::{Fake, FakePod, STATE, pod, state_configmap};
use crate::support::server::{Pki, Reply, Server};
use crate::support::{TempDir, env_with, fixture, live_config, now, vm};
use pod_rebalancer::config::{Cluster, Config};
use pod_rebalancer::cycle::{self, Finished};
use pod_rebalancer::memory::{self, Memory, PodResult, Verdict};
use pod_rebalancer::outcome::{Outcome, Stage};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const DEPLOYMENT: &str = "ingestion-consumer";
const HOUR: i64 = 3600;

/// A Deployment's fleet, its API and the metrics, between runs of the cycle.
struct Fleet {
    namespace: String,
    fake: Arc<Mutex<Fake>>,
    kube: Server,
    dir: TempDir,
    /// How many pods the test has created so far (the names of the next ones).
    created: usize,
}

impl Fleet {
    /// `cores` pods named `<ns>-0`, `<ns>-1`, …, an hour old, burning `cores`.
    fn new(namespace: &str, cores: &[f64], change: impl FnOnce(Fake) -> Fake) -> Fleet {
        let pki = Pki::new();
        let fake = change(Fake::new(namespace, DEPLOYMENT, &[], now()));
        let (handler, fake) = fake.into_shared();
        let kube = Server::https(&pki, handler);
        let dir = TempDir::new(namespace);
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).expect("ca.crt");
        let mut fleet = Fleet {
            namespace: namespace.to_string(),
            fake,
            kube,
            dir,
            created: 0,
        };
        fleet.add(cores);
        fleet
    }

    fn name(&self, i: usize) -> String {
        format!("{DEPLOYMENT}-5f7c9d8b4d-{i:03}")
    }

    /// New pods, an hour old (the time a replacement needs to pass every gate), fed
    /// into VictoriaMetrics burning `cores`.
    fn add(&mut self, cores: &[f64]) -> Vec<String> {
        let names: Vec<String> = (self.created..self.created + cores.len())
            .map(|i| self.name(i))
            .collect();
        self.created += cores.len();
        let cpu: Vec<(String, f64)> = names.iter().cloned().zip(cores.iter().copied()).collect();
        if self.created == cores.len() {
            vm::shared().feed(&self.namespace, DEPLOYMENT, &cpu);
        } else {
            vm::shared().feed_more(&self.namespace, DEPLOYMENT, &cpu);
        }
        let mut fake = self.fake.lock().expect("fake");
        for n in &names {
            let p: FakePod = pod(n);
            let json = crate::support::kube::pod_json(&self.namespace, DEPLOYMENT, &p, now());
            fake.pods.push(json);
        }
        fake.deployment["spec"]["replicas"] = json!(fake.pods.len());
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
            fake.deployment["status"][k] = json!(fake.pods.len());
        }
        names
    }

    /// Kubernetes between runs: the terminated pods are gone and replaced by new pods
    /// burning `cores`, one each, in the order they went.
    fn replace_terminated(&mut self, cores: &[f64]) -> Vec<String> {
        let gone: Vec<String> = {
            let mut fake = self.fake.lock().expect("fake");
            let gone = fake
                .pods
                .iter()
                .filter(|p| p["metadata"].get("deletionTimestamp").is_some())
                .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
                .collect();
            fake.pods.retain(|p| p["metadata"].get("deletionTimestamp").is_none());
            gone
        };
        assert_eq!(gone.len(), cores.len(), "pods terminated: {gone:?}");
        self.add(cores)
    }

    /// The removals the API server received (dry runs included), as pod names.
    fn evictions(&self) -> Vec<(String, bool)> {
        self.kube
            .mutations()
            .iter()
            .filter(|r| r.path().ends_with("/eviction"))
            .map(|r| (r.pod(), r.query("dryRun").is_some()))
            .collect()
    }

    /// The resourceVersion each PUT of the state carried, in order.
    fn leases(&self) -> Vec<String> {
        self.kube
            .mutations()
            .iter()
            .filter(|r| r.method == "PUT")
            .map(|r| {
                r.json()["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// The state ConfigMap's document as the fake holds it.
    fn memory(&self) -> Memory {
        let fake = self.fake.lock().expect("fake");
        let state = fake.state.as_ref().expect("a state ConfigMap");
        memory::parse(state["data"]["state.json"].as_str(), Some(DEPLOYMENT)).expect("a readable document")
    }

    fn configure(&self, extra: &[(&str, &str)]) -> (Config, Cluster) {
        let vars = [
            ("KUBE_API_URL", self.kube.url()),
            ("KUBE_SERVICE_ACCOUNT_DIR", self.dir.path().display().to_string()),
            ("KUBE_NAMESPACE", self.namespace.clone()),
            ("DEPLOYMENT_NAME", DEPLOYMENT.to_string()),
            ("PROMETHEUS_ENDPOINT", vm::shared().url()),
            ("STATE_CONFIGMAP", STATE.to_string()),
            ("MAX_INEFFECTIVE_ACTIONS", "2".to_string()),
            ("MIN_PODS_REQUIRED", "3".to_string()),
        ];
        live_config(&env_with(vars, extra))
    }

    /// One run at `now`.
    fn run(&self, at: i64, extra: &[(&str, &str)]) -> Finished {
        let (config, cluster) = self.configure(extra);
        cycle::run_at(&config, &cluster, at)
    }
}

/// The hottest pod burns 1.9 cores, the coldest 0.1, three burn 1.0: spread 0.51.
const SKEWED: [f64; 5] = [1.9, 1.0, 1.0, 1.0, 0.1];

#[track_caller]
fn check(finished: &Finished, want: Result<Outcome, Stage>, code: u8) {
    assert_eq!((finished.run.ended, finished.code), (want, code), "{:?}", finished.run);
}

/// A hot partition: whichever pod gets it burns 1.9 cores. Every eviction moves it,
/// nothing improves, and after MAX_INEFFECTIVE_ACTIONS (2 here) the breaker opens:
/// the runs after it remove nothing, exit 0 and say `ineffective`. When the hold is
/// over, one probe; it helps no more, and the hold doubles.
#[test]
fn a_hot_spot_that_moves_opens_the_breaker_and_a_failed_probe_doubles_the_hold() {
    let mut fleet = Fleet::new("memory-moves", &SKEWED, |f| f);
    let start = now();
    check(&fleet.run(start, &[]), Ok(Outcome::Acted), 0);
    let first = fleet.evictions();
    assert_eq!(first.len(), 2, "the hottest and the coldest: {first:?}");
    assert_eq!(fleet.memory().actions.len(), 1);

    // The hot partition lands on one of the replacements.
    fleet.replace_terminated(&[1.9, 0.1]);
    check(&fleet.run(start + 900, &[]), Ok(Outcome::Acted), 0);
    let memory = fleet.memory();
    assert_eq!(memory.streak, 1);
    let evaluation = memory.actions[0]
        .evaluation
        .clone()
        .expect("the first action was measured");
    assert!(
        evaluation.verdict == Verdict::Ineffective && (evaluation.ratio - 1.0).abs() < 0.05,
        "{evaluation:?}"
    );
    assert!(evaluation.hot_spot.is_some(), "the hot spot moved: {evaluation:?}");

    fleet.replace_terminated(&[1.9, 0.1]);
    let held = fleet.run(start + 1800, &[]);
    check(&held, Ok(Outcome::Ineffective), 0);
    assert_eq!(
        fleet.evictions().len(),
        4,
        "the run that opened the breaker removed nothing"
    );
    let memory = fleet.memory();
    assert_eq!((memory.streak, memory.hold_until), (2, Some(start + 1800 + HOUR)));
    let gauges = held.run.memory.expect("the memory's gauges");
    assert_eq!((gauges.streak, gauges.hold_until), (2, Some(start + 1800 + HOUR)));

    check(&fleet.run(start + 2700, &[]), Ok(Outcome::Ineffective), 0);
    assert_eq!(fleet.evictions().len(), 4, "held");

    // The hold is over: one probe, which moves the hot spot again.
    check(&fleet.run(start + 1800 + HOUR, &[]), Ok(Outcome::Acted), 0);
    assert_eq!(fleet.evictions().len(), 6);
    assert!(fleet.memory().actions.last().is_some_and(|a| a.probe));
    fleet.replace_terminated(&[1.9, 0.1]);
    let at = start + 1800 + HOUR + 900;
    check(&fleet.run(at, &[]), Ok(Outcome::Ineffective), 0);
    let memory = fleet.memory();
    assert_eq!(
        (memory.streak, memory.hold_until),
        (3, Some(at + 2 * HOUR)),
        "twice as long"
    );
}

/// An unlucky assignment an eviction fixes: the spread falls, the streak stays 0.
#[test]
fn an_action_that_evens_the_fleet_out_keeps_the_streak_at_zero() {
    let mut fleet = Fleet::new("memory-helps", &SKEWED, |f| f);
    let start = now();
    check(&fleet.run(start, &[]), Ok(Outcome::Acted), 0);
    fleet.replace_terminated(&[1.0, 1.0]);
    check(&fleet.run(start + 900, &[]), Ok(Outcome::Balanced), 0);
    let memory = fleet.memory();
    assert_eq!(memory.streak, 0);
    let e = memory.actions[0].evaluation.clone().expect("measured");
    assert!(
        e.verdict == Verdict::Effective && e.ratio < 0.2 && e.hot_spot.is_none(),
        "{e:?}"
    );
    assert_eq!(memory.counters.success, 2.0, "the counters live in the state");
}

/// A rollout (a new pod template) drops the action it came before, but keeps the
/// streak and the hold: it rarely fixes key skew, and a team that deploys hourly must
/// not restart the churn. A replica count change is no rollout.
#[test]
fn a_rollout_drops_the_pending_action_and_keeps_the_streak_and_the_hold() {
    let mut fleet = Fleet::new("memory-rollout", &SKEWED, |f| f);
    let start = now();
    let once = [("MAX_INEFFECTIVE_ACTIONS", "1")];
    check(&fleet.run(start, &once), Ok(Outcome::Acted), 0);
    fleet.replace_terminated(&[1.9, 0.1]);
    check(&fleet.run(start + 900, &once), Ok(Outcome::Ineffective), 0);
    let held = fleet.memory();
    assert_eq!(held.streak, 1);
    // A scale by one pod: still held.
    fleet.add(&[1.0]);
    check(&fleet.run(start + 1200, &once), Ok(Outcome::Ineffective), 0);
    {
        let mut fake = fleet.fake.lock().expect("fake");
        fake.deployment["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-11-29T10:00:00Z"});
    }
    check(&fleet.run(start + 1500, &once), Ok(Outcome::Ineffective), 0);
    let memory = fleet.memory();
    assert_eq!((memory.streak, memory.hold_until), (held.streak, held.hold_until));
    // The hold over, the probe acts under the new template; a rollout before its
    // evaluation drops it, and the streak stays where it was.
    let after = held.hold_until.expect("a hold") + 1;
    check(&fleet.run(after, &once), Ok(Outcome::Acted), 0);
    fleet.replace_terminated(&[1.0, 1.0]);
    {
        let mut fake = fleet.fake.lock().expect("fake");
        fake.deployment["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-11-29T11:00:00Z"});
    }
    fleet.run(after + 900, &once);
    let memory = fleet.memory();
    assert_eq!(
        memory.actions.last().and_then(|a| a.dropped),
        Some(memory::Dropped::Rollout)
    );
    assert_eq!(memory.streak, 1);
}

/// Under DRY_RUN the removals are asked as server-side dry runs, no Event is posted,
/// and the state is written (counters) with no action recorded.
#[test]
fn a_dry_run_asks_dry_runs_and_records_no_action() {
    let fleet = Fleet::new("memory-dry", &SKEWED, |f| f);
    check(&fleet.run(now(), &[("DRY_RUN", "true")]), Ok(Outcome::DryRun), 0);
    let evictions = fleet.evictions();
    assert_eq!(evictions.len(), 2);
    assert!(evictions.iter().all(|(_, dry)| *dry), "{evictions:?}");
    assert!(fleet.kube.mutations().iter().all(|r| !r.path().ends_with("/events")));
    let memory = fleet.memory();
    assert!(memory.actions.is_empty());
    assert_eq!(memory.counters.success, 1.0);
    let puts = fleet.leases();
    assert_eq!(
        puts,
        ["1000"],
        "no lease: only the end-of-run write, with the resourceVersion read"
    );
}

/// Every way the state can fail before acting ends the run with nothing removed and
/// nothing overwritten.
#[test]
fn a_state_that_cannot_be_read_or_written_removes_nothing() {
    type Change = Box<dyn Fn(Fake) -> Fake>;
    let with_document = |namespace: &'static str, document: &'static str| -> Change {
        Box::new(move |mut f: Fake| {
            let mut state = state_configmap(namespace);
            state["data"] = json!({ "state.json": document });
            f.state = Some(state);
            f
        })
    };
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "memory-404",
            Box::new(|mut f: Fake| {
                f.state = None;
                f
            }),
            "state ConfigMap pod-rebalancer-state not found in namespace memory-404: the manifests create it",
        ),
        (
            "memory-get-500",
            Box::new(|f: Fake| {
                f.reply(
                    "state",
                    Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json")),
                )
            }),
            "get state ConfigMap (GET ",
        ),
        (
            "memory-malformed",
            with_document("memory-malformed", r#"{"version": 2, "actions": 7}"#),
            "expected the state document of version 2",
        ),
        (
            "memory-not-json",
            with_document("memory-not-json", "streak: 2"),
            "expected a JSON object",
        ),
        (
            "memory-newer",
            with_document("memory-newer", r#"{"version": 3, "whatever": true}"#),
            "version 3 is newer than this program's 2",
        ),
        (
            "memory-put-409",
            Box::new(|f: Fake| f.reply("state:put", Reply::json(409, fixture("k8s/status_409_conflict.json")))),
            "another run wrote the state ConfigMap pod-rebalancer-state meanwhile (409: buildconfig",
        ),
        (
            "memory-put-500",
            Box::new(|f: Fake| {
                f.reply(
                    "state:put",
                    Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json")),
                )
            }),
            "update state ConfigMap (PUT ",
        ),
    ];
    for (namespace, change, words) in cases {
        let fleet = Fleet::new(namespace, &SKEWED, change);
        let before: Option<Value> = fleet.fake.lock().expect("fake").state.clone();
        let (config, cluster) = fleet.configure(&[]);
        let clients = cycle::Clients::connect(&config, &cluster)
            .map_err(|f| f.error)
            .expect("clients");
        let cycle = cycle::cycle(&clients, &config, &cluster, now());
        let failed = cycle.ended.as_ref().expect_err(namespace);
        assert_eq!(failed.stage, Stage::State, "{namespace}");
        let error = failed.error.to_string();
        assert!(error.contains(words), "{namespace}: {error}");
        let finished = cycle::finish(&config, Some(&clients.kube), cycle, TIMING);
        check(&finished, Err(Stage::State), 1);
        assert!(fleet.evictions().is_empty(), "{namespace}: {:?}", fleet.evictions());
        let after: Option<Value> = fleet.fake.lock().expect("fake").state.clone();
        assert_eq!(after, before, "{namespace}: nothing overwritten");
        let puts = fleet.leases().len();
        assert!(puts <= 1, "{namespace}: a refused lease is the last write: {puts} PUTs");
    }
}

const TIMING: cycle::Timing = cycle::Timing {
    now: 1_800_000_000,
    duration_secs: 0.1,
    end: 1_800_000_000.1,
};

/// Two runs for one Deployment at once: the other run writes the state between our
/// GET and our lease, so our lease carries a stale resourceVersion, gets a 409, and
/// our run removes nothing.
#[test]
fn of_two_runs_only_the_one_that_wrote_the_lease_acts() {
    let fleet = Fleet::new("memory-two", &SKEWED, |mut f| {
        f.bump_after_get = true;
        f
    });
    let finished = fleet.run(now(), &[]);
    check(&finished, Err(Stage::State), 1);
    assert!(fleet.evictions().is_empty(), "{:?}", fleet.evictions());
    let puts = fleet.leases();
    assert_eq!(
        puts,
        ["1000"],
        "one lease, with the resourceVersion it read, and nothing after the 409"
    );
}

/// The end-of-run write carries the counters and what was removed: when it fails
/// after acting, the run fails (exit 1), as an unwritable metrics file does.
#[test]
fn a_failed_end_of_run_write_fails_the_run_after_acting() {
    let fleet = Fleet::new("memory-end-write", &SKEWED, |mut f| {
        f.state_puts_left = Some(1);
        f
    });
    let finished = fleet.run(now(), &[]);
    check(&finished, Err(Stage::State), 1);
    assert_eq!(fleet.evictions().len(), 2, "the lease was written, so the run acted");
    let memory = fleet.memory();
    assert_eq!(memory.actions.len(), 1, "the lease holds the action");
    assert!(!memory.actions[0].settled, "as intended: the next run settles it");
    assert!(memory.actions[0].pods.iter().all(|p| p.result == PodResult::Intended));
    assert_eq!(memory.counters.success, 0.0, "the counters were not written");
    assert_eq!(finished.counters, None, "and none is exported");
}

/// A full memory whose next action is refused by a PodDisruptionBudget: the lease
/// recorded the intended action (dropping the oldest), but the end of the run keeps
/// the ten actions it had, since nothing was removed.
#[test]
fn a_refused_action_leaves_a_full_memory_as_it_was() {
    let actions: Vec<Value> = (0..10)
        .map(|i| {
            json!({"at": 1_700_000_000 + i, "fingerprint": "old", "spread": 0.5, "mean": 1.0,
                   "removed": [{"name": format!("gone-{i}"), "role": "highest_cpu", "cpu": 1.9}],
                   "evaluation": {"at": 1_700_000_100 + i, "spread": 0.2, "ratio": 0.4, "effective": true}})
        })
        .collect();
    let document = json!({"version": 1, "actions": actions}).to_string();
    let fleet = Fleet::new("memory-full", &SKEWED, move |mut f| {
        if let Some(state) = f.state.as_mut() {
            state["data"] = json!({ "state.json": document });
        }
        let hottest = format!("{DEPLOYMENT}-5f7c9d8b4d-000");
        f.reply(
            &format!("evict:{hottest}"),
            Reply::json(429, fixture("k8s/constructed/status_429_eviction_pdb.json")),
        )
    });
    check(&fleet.run(now(), &[]), Ok(Outcome::Acted), 0);
    let memory = fleet.memory();
    assert_eq!(memory.actions.len(), 10);
    assert_eq!(memory.actions[0].pods[0].name, "gone-0", "the oldest is still there");
    assert_eq!(memory.counters.refused.values().sum::<f64>(), 1.0);
}
