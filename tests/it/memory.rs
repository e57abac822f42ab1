//! The memory end to end: runs of the cycle in-process against the fake API (which
//! keeps the state ConfigMap with resourceVersions, marks evicted pods terminating and
//! honours `dryRun`) and the real VictoriaMetrics, with the test standing in for
//! Kubernetes between runs: it replaces the pods an eviction terminated with new ones,
//! which burn what the scenario says (a hot spot that moves, or a fleet that evens out).

use crate::support::kube::{Fake, FakePod, STATE, pod, state_configmap};
use crate::support::server::{Handler, Pki, Reply, Request, Server};
use crate::support::{TempDir, env_with, fixture, live_config, now, vm};
use pod_rebalancer::config::{Cluster, Config};
use pod_rebalancer::cycle::{self, Finished};
use pod_rebalancer::memory::{self, Memory, PodResult, Verdict};
use pod_rebalancer::outcome::{Outcome, Stage};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

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
    pause: Arc<Pause>,
}

/// Which request a pause holds.
type Matcher = Box<dyn Fn(&Request) -> bool + Send>;

/// A point where the fake API holds one request until the test lets it go: how a test
/// interleaves two runs at an exact request of one of them.
#[derive(Default)]
struct Pause {
    /// The request to hold, once armed; disarmed when it comes.
    when: Mutex<Option<Matcher>>,
    /// Told when the held request arrives; then waited on to answer it.
    reached: Mutex<Option<mpsc::Sender<()>>>,
    go: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Pause {
    /// Holds `req` if it is the armed request.
    fn hold(&self, req: &Request) {
        let matched = {
            let mut when = self.when.lock().expect("pause");
            let matched = when.as_ref().is_some_and(|w| w(req));
            if matched {
                *when = None;
            }
            matched
        };
        if !matched {
            return;
        }
        if let Some(reached) = self.reached.lock().expect("pause").take() {
            let _ = reached.send(());
        }
        if let Some(go) = self.go.lock().expect("pause").take() {
            let _ = go.recv_timeout(Duration::from_secs(60));
        }
    }
}

impl Fleet {
    /// `cores` pods named `<ns>-0`, `<ns>-1`, …, an hour old, burning `cores`.
    fn new(namespace: &str, cores: &[f64], change: impl FnOnce(Fake) -> Fake) -> Fleet {
        let pki = Pki::new();
        let fake = change(Fake::new(namespace, DEPLOYMENT, &[], now()));
        let (inner, fake) = fake.into_shared();
        let pause = Arc::new(Pause::default());
        let held = pause.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            held.hold(req);
            inner(req)
        });
        let kube = Server::https(&pki, handler);
        let dir = TempDir::new(namespace);
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).expect("ca.crt");
        let mut fleet = Fleet {
            namespace: namespace.to_string(),
            fake,
            kube,
            dir,
            created: 0,
            pause,
        };
        fleet.add(cores);
        fleet
    }

    /// Arms the pause: the next request `when` matches is held until the returned
    /// sender says go; the returned receiver hears when it arrives.
    fn pause_at(&self, when: impl Fn(&Request) -> bool + Send + 'static) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (reached_tx, reached_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        *self.pause.reached.lock().expect("pause") = Some(reached_tx);
        *self.pause.go.lock().expect("pause") = Some(go_rx);
        *self.pause.when.lock().expect("pause") = Some(Box::new(when));
        (reached_rx, go_tx)
    }

    /// A run at `at` in a thread of its own.
    fn spawn_run(&self, at: i64, extra: &[(&str, &str)]) -> std::thread::JoinHandle<Finished> {
        let (config, cluster) = self.configure(extra);
        std::thread::spawn(move || cycle::run_at(&config, &cluster, at))
    }

    /// How many requests the API has received so far.
    fn seen(&self) -> usize {
        self.kube.requests().len()
    }

    /// The mutating requests received after the first `from`, as "METHOD path".
    fn mutations_since(&self, from: usize) -> Vec<String> {
        self.kube.requests()[from..]
            .iter()
            .filter(|r| r.is_mutating())
            .map(|r| format!("{} {}", r.method, r.path()))
            .collect()
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
    assert_eq!(
        (finished.single().run.ended, finished.code),
        (want, code),
        "{:?}",
        finished.single().run
    );
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
    let gauges = held.single().run.memory.expect("the memory's gauges");
    assert_eq!((gauges.streak, gauges.hold_until), (2, Some(start + 1800 + HOUR)));
    let warnings: Vec<String> = fleet
        .kube
        .mutations()
        .iter()
        .filter(|r| r.path().ends_with("/events") && r.json()["reason"] == "RebalancerBreakerOpen")
        .map(|r| r.json()["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("2 actions in a row did not lower the spread enough (latest first: ")
            && warnings[0].matches('→').count() == 2,
        "the Event quotes the streak's spreads: {}",
        warnings[0]
    );

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
        let failed = cycle.failure().expect(namespace).clone();
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
    assert_eq!(finished.single().counters, None, "and none is exported");
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

/// Two runs of one Deployment, interleaved at every point of the first one's action:
/// whatever the second run reads, removals never exceed one action's, the second run
/// never writes over the first one's record, and no action is lost.
#[test]
fn two_runs_interleaved_at_every_point_act_once() {
    let eviction = |r: &Request| r.path().ends_with("/eviction");
    // (where run A is held, what run B must do)
    struct Point {
        name: &'static str,
        hold: fn(&Request) -> bool,
        /// The eviction requests A has sent when B runs (the held one included).
        evictions_before: usize,
    }
    let points = [
        Point {
            name: "memory-mid-lease",
            // B's GET lands after A's lease, before A's first eviction is answered.
            hold: |r| r.path().ends_with("/eviction"),
            evictions_before: 1,
        },
        Point {
            name: "memory-mid-act",
            // B's GET lands after A's first eviction, before its second is answered.
            hold: |r| r.path().ends_with("/eviction") && r.pod().ends_with("-004"),
            evictions_before: 2,
        },
    ];
    for point in points {
        let fleet = Fleet::new(point.name, &SKEWED, |f| f);
        let start = now();
        let (reached, go) = fleet.pause_at(point.hold);
        let a = fleet.spawn_run(start, &[]);
        reached
            .recv_timeout(Duration::from_secs(30))
            .expect("run A reached the point");
        let before = fleet.seen();
        let b = fleet.run(start + 30, &[]);
        check(&b, Ok(Outcome::Stabilizing), 0);
        assert_eq!(
            fleet.mutations_since(before),
            Vec::<String>::new(),
            "{}: B writes nothing",
            point.name
        );
        assert_eq!(
            b.single().counters,
            None,
            "{}: B stored no counters, so it exports none",
            point.name
        );
        assert_eq!(
            fleet.evictions().len(),
            point.evictions_before,
            "{}: B removed nothing",
            point.name
        );
        go.send(()).expect("release A");
        let a = a.join().expect("run A");
        check(&a, Ok(Outcome::Acted), 0);
        assert_eq!(fleet.evictions().len(), 2, "{}: one action in all", point.name);
        let memory = fleet.memory();
        assert_eq!(memory.actions.len(), 1);
        assert!(memory.actions[0].settled, "{}: A's end-of-run write landed", point.name);
        assert_eq!(memory.counters.success, 1.0, "{}: only A counted", point.name);
    }

    // B's GET lands after A's end-of-run write: the action is settled, its pods are
    // terminating, B holds at the gate and records its run.
    let fleet = Fleet::new("memory-after-end", &SKEWED, |f| f);
    let start = now();
    check(&fleet.run(start, &[]), Ok(Outcome::Acted), 0);
    let b = fleet.run(start + 30, &[]);
    check(&b, Ok(Outcome::Stabilizing), 0);
    assert_eq!(fleet.evictions().len(), 2);
    assert_eq!(fleet.memory().counters.success, 2.0);
    assert!(b.single().counters.is_some());

    // B's GET lands before A's lease: both decide to act, and only the lease that
    // lands first may. A's lease, held, then carries a stale resourceVersion: 409.
    let fleet = Fleet::new("memory-before-lease", &SKEWED, |f| f);
    let start = now();
    let (reached, go) = fleet.pause_at(|r| r.method == "PUT");
    let a = fleet.spawn_run(start, &[]);
    reached
        .recv_timeout(Duration::from_secs(30))
        .expect("run A reached its lease");
    let b = fleet.run(start + 30, &[]);
    check(&b, Ok(Outcome::Acted), 0);
    go.send(()).expect("release A");
    let a = a.join().expect("run A");
    check(&a, Err(Stage::State), 1);
    assert_eq!(
        a.single().counters,
        None,
        "A's lease was refused: it stores and exports no counter"
    );
    assert_eq!(fleet.evictions().len(), 2, "one action in all: {:?}", fleet.evictions());
    assert!(fleet.evictions().iter().all(|(pod, _)| !pod.is_empty()));
    let memory = fleet.memory();
    assert_eq!((memory.actions.len(), memory.counters.success), (1, 1.0));
    let _ = eviction;
}

/// A run that dies after its lease leaves an intended action; a run whose eviction
/// timed out leaves an unknown one. The next run after the lease's window settles
/// each from the cluster: never lost, never scored on numbers that did not change.
#[test]
fn a_dead_runs_lease_and_an_unknown_answer_are_settled_from_the_cluster() {
    let mut fleet = Fleet::new("memory-dead", &SKEWED, |f| f);
    let hottest = fleet.name(0);
    let coldest = fleet.name(4);
    let start = now();
    // The hottest pod's eviction is committed, but the answer never arrives in time.
    {
        let mut fake = fleet.fake.lock().expect("fake");
        fake.replies.insert(
            format!("evict:{hottest}"),
            Reply::json(201, fixture("k8s/constructed/status_201_eviction_success.json"))
                .delayed(Duration::from_secs(3)),
        );
    }
    let finished = fleet.run(start, &[("KUBE_TIMEOUT", "1s")]);
    check(&finished, Err(Stage::Act), 1);
    let memory = fleet.memory();
    let pods: Vec<(String, PodResult)> = memory.actions[0]
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.result))
        .collect();
    assert_eq!(
        pods,
        [
            (hottest.clone(), PodResult::Unknown),
            (coldest.clone(), PodResult::Intended)
        ],
        "the eviction may have happened; the coldest was never asked"
    );
    // Kubernetes did evict it: it terminates and is replaced.
    {
        let mut fake = fleet.fake.lock().expect("fake");
        fake.replies.clear();
        for pod in fake
            .pods
            .iter_mut()
            .filter(|p| p["metadata"]["name"] == hottest.as_str())
        {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
    }
    fleet.replace_terminated(&[1.0]);
    check(&fleet.run(start + 900, &[]), Ok(Outcome::Acted), 0);
    let memory = fleet.memory();
    assert_eq!(
        memory.actions[0].pods[0].result,
        PodResult::Removed,
        "settled from the cluster"
    );
    assert!(memory.actions[0].evaluation.is_some(), "and measured");

    // A lease whose run died: one pod gone, one still there, leased 20 minutes ago.
    let fleet = Fleet::new("memory-lease-dead", &SKEWED, |f| f);
    let start = now();
    let listed = fleet.name(4);
    let document = json!({
        "version": 2,
        "deployment": DEPLOYMENT,
        "actions": [{
            "at": start - 1200, "spread": 0.6, "mean": 1.0, "n": 5, "fingerprint": "f", "settled": false,
            "pods": [
                {"name": "gone-pod", "uid": "uid-of-a-pod-that-is-gone", "role": "highest_cpu", "result": "intended", "cpu": 1.9},
                {"name": listed, "uid": crate::support::kube::uid_of(&listed), "role": "lowest_cpu", "result": "intended", "cpu": 0.1}
            ]
        }]
    });
    fleet.fake.lock().expect("fake").state.as_mut().expect("state")["data"] =
        json!({"state.json": document.to_string()});
    fleet.run(start, &[]);
    let memory = fleet.memory();
    let action = &memory.actions[0];
    assert!(action.settled);
    assert_eq!(
        action.pods.iter().map(|p| p.result).collect::<Vec<_>>(),
        [PodResult::Removed, PodResult::Intended]
    );
    // Inside its window the same lease blocks the run instead.
    let fleet = Fleet::new("memory-lease-young", &SKEWED, |f| f);
    let young = document
        .to_string()
        .replace(&(start - 1200).to_string(), &(start - 60).to_string());
    fleet.fake.lock().expect("fake").state.as_mut().expect("state")["data"] = json!({"state.json": young});
    let before = fleet.seen();
    check(&fleet.run(start, &[]), Ok(Outcome::Stabilizing), 0);
    assert!(fleet.mutations_since(before).is_empty());
}

/// The counters a run exports are those it stored: on every failure path where it
/// stored none, the metrics have no counter family, and across a sequence of runs no
/// exported counter ever goes down.
#[test]
fn no_counter_is_exported_unless_stored_and_none_ever_goes_down() {
    let status = |code: u16, file: &str| Reply::json(code, fixture(file));
    type Break = Box<dyn Fn(&mut Fake)>;
    type Failure<'a> = (&'a str, &'a [(&'a str, &'a str)], Break);
    let failures: Vec<Failure> = vec![
        (
            "state GET 500",
            &[],
            Box::new(move |f| {
                f.replies.insert(
                    "state".into(),
                    status(500, "k8s/constructed/status_500_internal_error.json"),
                );
            }),
        ),
        (
            "state GET 401",
            &[],
            Box::new(move |f| {
                f.replies
                    .insert("state".into(), status(401, "k8s/status_401_unauthorized.json"));
            }),
        ),
        (
            "state GET timeout",
            &[("KUBE_TIMEOUT", "1s")],
            Box::new(|f| {
                let slow =
                    Reply::json(200, f.state.clone().unwrap_or_default().to_string()).delayed(Duration::from_secs(3));
                f.replies.insert("state".into(), slow);
            }),
        ),
        ("lease 409", &[], Box::new(|f| f.bump_after_get = true)),
        ("lease 500", &[], Box::new(|f| f.state_puts_left = Some(0))),
        ("end-of-run write 500", &[], Box::new(|f| f.state_puts_left = Some(1))),
    ];
    let mut fleet = Fleet::new("memory-counters", &SKEWED, |f| f);
    // Every run wants to act (the hot spot moves, the breaker never opens): each
    // failure hits the write it names.
    let acting = [("MAX_INEFFECTIVE_ACTIONS", "100")];
    let metrics = fleet.dir.path().join("metrics.prom");
    let file = metrics.display().to_string();
    let mut at = now();
    let mut exported: Vec<pod_rebalancer::report::Counters> = Vec::new();
    let mut ok = |finished: &Finished, what: &str| {
        let text = std::fs::read_to_string(&metrics).expect("metrics file");
        match &finished.single().counters {
            Some(c) => {
                assert!(text.contains("rebalancer_executions_total{"), "{what}: {text}");
                if let Some(last) = exported.last() {
                    for (before, after) in [
                        (last.success, c.success),
                        (last.error, c.error),
                        (last.analyzed, c.analyzed),
                        (last.deleted_highest, c.deleted_highest),
                        (last.deleted_lowest, c.deleted_lowest),
                    ] {
                        assert!(after >= before, "{what}: a counter went down, {before} → {after}");
                    }
                }
                exported.push(c.clone());
            }
            None => {
                for family in [
                    "rebalancer_executions_total",
                    "rebalancer_errors_total",
                    "rebalancer_pods_analyzed_total",
                    "rebalancer_pods_deleted_total",
                    "rebalancer_removals_refused_total",
                ] {
                    assert!(!text.contains(family), "{what}: {family} exported:\n{text}");
                }
                assert!(text.contains("rebalancer_cycle_outcome{"), "{what}: the gauges are");
            }
        }
    };
    let run = |fleet: &Fleet, at: i64, extra: &[(&str, &str)]| {
        let mut vars = vec![("METRICS_FILE", file.as_str())];
        vars.extend_from_slice(&acting);
        vars.extend_from_slice(extra);
        fleet.run(at, &vars)
    };
    // Kubernetes between runs: what terminated is replaced, the hot spot on the first.
    let replace = |fleet: &mut Fleet| {
        let terminated = fleet
            .fake
            .lock()
            .expect("fake")
            .pods
            .iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_some())
            .count();
        fleet.replace_terminated(&[1.9, 0.1][..terminated]);
    };
    // A first run acts and stores its counters.
    let first = run(&fleet, at, &[]);
    check(&first, Ok(Outcome::Acted), 0);
    ok(&first, "first run");
    replace(&mut fleet);
    for (what, extra, broken) in &failures {
        at += 900;
        let saved = fleet.fake.lock().expect("fake").state.clone();
        broken(&mut fleet.fake.lock().expect("fake"));
        let failed = run(&fleet, at, extra);
        assert_eq!(failed.code, 1, "{what}: {:?}", failed.single().run);
        assert_eq!(failed.single().run.ended.err(), Some(Stage::State), "{what}");
        assert_eq!(failed.single().counters, None, "{what}");
        ok(&failed, what);
        {
            let mut fake = fleet.fake.lock().expect("fake");
            fake.replies.clear();
            fake.bump_after_get = false;
            fake.state_puts_left = None;
            if *what != "end-of-run write 500" {
                fake.state = saved;
            }
        }
        // Whatever it removed terminates; the next run settles and goes on.
        replace(&mut fleet);
        at += 900;
        let next = run(&fleet, at, &[]);
        assert_eq!(next.single().run.ended, Ok(Outcome::Acted), "after {what}");
        assert!(
            next.single().counters.is_some(),
            "after {what}: {:?}",
            next.single().run
        );
        ok(&next, &format!("the run after {what}"));
        replace(&mut fleet);
    }
    // An unreadable token: the run fails before it reads anything.
    std::fs::create_dir_all(fleet.dir.path().join("token")).expect("a directory where the token is");
    let failed = run(&fleet, at + 900, &[]);
    assert_eq!((failed.code, failed.single().counters.clone()), (1, None));
    ok(&failed, "token unreadable");
}

/// A dry run never counts a deletion, even when its second dry-run request fails.
#[test]
fn a_dry_run_counts_no_deletion_whatever_its_end() {
    let fleet = Fleet::new("memory-dry-fail", &SKEWED, |f| f);
    let coldest = fleet.name(4);
    fleet.fake.lock().expect("fake").replies.insert(
        format!("evict:{coldest}"),
        Reply::json(500, fixture("k8s/constructed/status_500_internal_error.json")),
    );
    let finished = fleet.run(now(), &[("DRY_RUN", "true")]);
    check(&finished, Err(Stage::Act), 1);
    assert_eq!(
        (
            finished.single().run.deleted_highest,
            finished.single().run.deleted_lowest
        ),
        (0, 0)
    );
    let counters = finished.single().counters.clone().expect("stored");
    assert_eq!((counters.deleted_highest, counters.deleted_lowest), (0.0, 0.0));
    assert!(fleet.memory().actions.is_empty(), "a dry run records no action");
}

/// The end of a run writes the state, then the metrics file: when the file cannot be
/// written the run fails, its outcome says error, and the counters it exports are the
/// ones it stored.
#[test]
fn the_state_is_written_before_the_metrics_file_and_the_ends_agree() {
    let fleet = Fleet::new("memory-order", &[1.0, 1.0, 1.0, 1.0, 1.0], |f| f);
    let dir = fleet.dir.path().join("a-directory");
    std::fs::create_dir_all(&dir).expect("directory");
    let finished = fleet.run(now(), &[("METRICS_FILE", &dir.display().to_string())]);
    check(&finished, Err(Stage::Report), 1);
    let stored = fleet.memory().counters;
    assert_eq!(stored.success, 1.0, "the state was written first, as a success");
    assert_eq!(
        finished.single().counters,
        Some(stored),
        "the counters exported are the stored ones"
    );
}

/// A version-1 document is this Deployment's memory, written back as version 2; a
/// lowered MAX_INEFFECTIVE_ACTIONS opens the breaker, which says so on the Deployment.
#[test]
fn a_version_1_document_is_upgraded_and_a_lowered_setting_opens_the_breaker() {
    let document = json!({"version": 1, "streak": 2, "counters": {"success": 5.0}}).to_string();
    let fleet = Fleet::new("memory-upgrade", &SKEWED, move |mut f| {
        if let Some(state) = f.state.as_mut() {
            state["data"] = json!({ "state.json": document });
        }
        f
    });
    let finished = fleet.run(now(), &[]);
    check(&finished, Ok(Outcome::Ineffective), 0);
    let text = fleet.fake.lock().expect("fake").state.clone().expect("state")["data"]["state.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("\"version\": 2"), "{text}");
    let memory = fleet.memory();
    assert_eq!((memory.streak, memory.counters.success), (2, 6.0));
    assert!(
        memory.hold_until.is_some(),
        "MAX_INEFFECTIVE_ACTIONS 2 <= streak 2: held"
    );
    let warnings: Vec<Value> = fleet
        .kube
        .mutations()
        .iter()
        .filter(|r| r.path().ends_with("/events"))
        .map(|r| r.json())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (
            &warnings[0]["type"],
            &warnings[0]["involvedObject"]["kind"],
            &warnings[0]["involvedObject"]["name"]
        ),
        (&json!("Warning"), &json!("Deployment"), &json!(DEPLOYMENT))
    );
    assert!(fleet.evictions().is_empty());
}
