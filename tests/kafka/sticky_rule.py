#!/usr/bin/env python3
"""What librdkafka's cooperative-sticky computes, restated, and checked against the recordings.

`assign()` restates `rd_kafka_sticky_assignor_assign_cb` (librdkafka 2.16.0,
src/rdkafka_sticky_assignor.c, a port of Kafka's AbstractStickyAssignor "general"
algorithm) for the case the simulator has: one topic of P partitions, every member
subscribed to it, no rack ids, every member reporting the partitions it owns (so no
partition is claimed twice and no "previous owner" is ever known). The group leader,
a librdkafka client, runs it; the broker only relays the result.

`rebalance()` adds the cooperative protocol around it (`rd_kafka_cooperative_protocol_
adjust_assignment` in src/rdkafka_cgrp.c, KIP-429): a partition the assignor moves from
one member to another is first only revoked from its owner; the owner rejoins, and a
second rebalance assigns it from the group's new state.

`leave_rule()` and `join_rule()` are the same thing said as two plain rules (see
FINDINGS.md); `model_sticky()` is what tests/sim/model.rs does today. Run

    python3 tests/kafka/sticky_rule.py [fixtures/kafka/cooperative_sticky_*.json]

to replay every recorded step through `rebalance()`, the plain rules and the model
(standard library only; no Kafka needed).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def assign(owned: dict[str, list[int]], partitions: int) -> dict[str, list[int]]:
    """One run of the sticky assignor. `owned`: member id -> partitions it owns now
    (a new member owns none). Returns member id -> assigned partitions (sorted)."""
    members = sorted(owned)  # strcmp order of member ids
    cur = {m: sorted(owned[m]) for m in members}
    owner = {p: m for m in members for p in cur[m]}
    if len(members) == 1:
        return {members[0]: list(range(partitions))}
    fresh = not owner
    if fresh:
        # nobody owns anything (a new group, or every owner gone): by partition number
        sorted_partitions = list(range(partitions))
    else:
        # sortPartitions(): round robin over the owned partitions, always from the member
        # with the most not yet listed (ties: the member id that sorts LAST), taking its
        # lowest-numbered one ...
        remaining = {m: list(cur[m]) for m in members if cur[m]}
        sorted_partitions = []
        while any(remaining.values()):
            m = max(remaining, key=lambda k: (len(remaining[k]), k))
            sorted_partitions.append(remaining[m].pop(0))
        # ... then every other partition in the iteration order of librdkafka's hash
        # map partition2AllPotentialConsumers: the reverse of insertion, P-1 down to 0.
        sorted_partitions += [p for p in range(partitions - 1, -1, -1) if p not in owner]
    unassigned = [p for p in sorted_partitions if p not in owner]

    def fewest():
        return min(members, key=lambda k: (len(cur[k]), k))

    def balanced():
        counts = [len(cur[k]) for k in members]
        return min(counts) >= max(counts) - 1

    # maybeAssign(): each unowned partition, in that order, to the member holding the
    # fewest (ties: the member id that sorts first).
    for p in unassigned:
        m = fewest()
        cur[m].append(p)
        owner[p] = m
    pre_balance = {k: list(v) for k, v in cur.items()}

    movements: dict[int, tuple[str, str]] = {}  # partition -> (first src, dst)
    by_pair: dict[tuple[str, str], list[int]] = {}

    def move(p, new):
        old = owner[p]
        if p in movements:
            src, _ = movements.pop(p)
            by_pair[(src, old)].remove(p)
            if not by_pair[(src, old)]:
                del by_pair[(src, old)]
            if src != new:
                movements[p] = (src, new)
                by_pair.setdefault((src, new), []).append(p)
        else:
            movements[p] = (old, new)
            by_pair.setdefault((old, new), []).append(p)
        cur[old].remove(p)
        cur[new].append(p)
        owner[p] = new

    def reassign(p, new):
        # PartitionMovements_getTheActualPartitionToBeMoved()
        old = owner[p]
        if p in movements:
            old = movements[p][0]
        reverse = by_pair.get((new, old))
        move(reverse[0] if reverse else p, new)

    def perform(reassignable):
        performed = False
        while True:
            modified = False
            for p in reassignable:
                if balanced():
                    break
                o = owner[p]
                # some other member holds at least two fewer: move it to the member
                # holding the fewest (ties: the member id that sorts first)
                if len(cur[o]) > min(len(cur[k]) for k in members if k != o) + 1:
                    reassign(p, fewest())
                    performed = modified = True
            if not modified:
                return performed

    if unassigned:
        perform(list(unassigned))
    performed = perform(sorted_partitions)

    def score(a):
        sizes = [len(v) for v in a.values()]
        return sum(abs(x - y) for i, x in enumerate(sizes) for y in sizes[i + 1:])

    if not fresh and performed and score(cur) >= score(pre_balance):
        cur = pre_balance
    return {k: sorted(v) for k, v in cur.items()}


def rebalance(owned: dict[str, list[int]], partitions: int) -> dict[str, list[int]]:
    """Cooperative rebalances until the assignor moves nothing that another member owns."""
    owned = {k: sorted(v) for k, v in owned.items()}
    for _ in range(10):
        target = assign(owned, partitions)
        owner = {p: m for m, ps in owned.items() for p in ps}
        # a member gets at once what it owns already and what nobody owns; a partition
        # that another member owns is only revoked from that owner in this round
        given = {m: sorted(p for p in ps if owner.get(p, m) == m) for m, ps in target.items()}
        if given == target:
            return target
        owned = given
    raise RuntimeError("no fixed point")


def leave_rule(owned: dict[str, list[int]], leaving: list[str], partitions: int) -> dict[str, list[int]]:
    """The plain rule for a leave from a balanced group: the survivors keep theirs; the
    orphans, highest partition number first, each go to the member holding the fewest
    (ties: the member id that sorts first). Lowest number first instead when no
    survivor owns any partition (only where partitions < members)."""
    cur = {k: list(v) for k, v in owned.items() if k not in leaving}
    orphans = sorted((p for k in leaving for p in owned[k]), reverse=any(cur.values()))
    for p in orphans:
        m = min(cur, key=lambda k: (len(cur[k]), k))
        cur[m].append(p)
    return {k: sorted(v) for k, v in cur.items()}


def join_rule(owned: dict[str, list[int]], joining: list[str], partitions: int) -> dict[str, list[int]]:
    """The plain rule for a join to a balanced group. The owned partitions are lined up
    by taking turns: the member with the most partitions not yet lined up (ties: the
    member id that sorts LAST) puts up its lowest-numbered one. Walking that line, a
    partition is given up when its owner holds at least two more than the member
    holding the fewest, until the group is balanced (most - fewest <= 1). The
    partitions given up then go, highest number first, each to the member holding the
    fewest (ties: the member id that sorts first): the newcomers."""
    cur = {k: sorted(v) for k, v in owned.items()}
    for j in joining:
        cur[j] = []
    counts = {k: len(v) for k, v in cur.items()}
    offered = {k: list(v) for k, v in cur.items() if v}
    line = []
    while any(offered.values()):
        m = max(offered, key=lambda k: (len(offered[k]), k))
        line.append((m, offered[m].pop(0)))
    given_up = []
    for m, p in line:
        if max(counts.values()) - min(counts.values()) <= 1:
            break
        if counts[m] > min(c for k, c in counts.items() if k != m) + 1:
            counts[m] -= 1
            counts[min(counts, key=lambda k: (counts[k], k))] += 1
            cur[m].remove(p)
            given_up.append(p)
    for p in sorted(given_up, reverse=True):
        n = min(cur, key=lambda k: (len(cur[k]), k))
        cur[n].append(p)
    return {k: sorted(v) for k, v in cur.items()}


def model_sticky(owned: dict[str, list[int]], leaving: list[str], joining: list[str]) -> dict[str, list[int]]:
    """tests/sim/model.rs `sticky` as of this branch: leave and join in ONE rebalance;
    survivors keep theirs; the orphans, lowest number first, each to the member holding
    the fewest (ties: the member id that sorts first); nobody gives anything up."""
    cur = {k: list(v) for k, v in owned.items() if k not in leaving}
    for j in joining:
        cur[j] = []
    for p in sorted(p for k in leaving for p in owned[k]):
        m = min(cur, key=lambda k: (len(cur[k]), k))
        cur[m].append(p)
    return {k: sorted(v) for k, v in cur.items()}


def by_id(step):
    return {step["member_ids"][n]: ps for n, ps in step["assignment"].items()}


def check(paths: list[Path]) -> bool:
    ok = True
    totals = {"steps": 0, "port": 0, "split": 0, "rules": 0, "rules_n": 0}
    evictions = {"n": 0, "model": 0, "inherit_real": 0, "inherit_model": 0}
    for path in paths:
        fixture = json.loads(path.read_text())
        p = fixture["topic"]["partitions"]
        line = {"steps": 0, "port": 0, "split": 0, "rules": 0, "rules_n": 0, "skipped": 0,
                "runs": 0, "runs_ok": 0, "runs_stale": 0}
        for run in fixture["runs"]:
            steps = run["steps"]
            ids: dict[str, str] = {}
            for i, step in enumerate(steps):
                before = by_id(steps[i - 1]) if i else {}
                ids.update(step["member_ids"])
                who = [ids[n] for n in step["members"]]
                # every run of the leader's assignor in the step: from what the members
                # owned then, does assign() give what it gave?
                state = dict(before)
                for run_ in step.get("assignor_runs", []):
                    # a member that reports owning nothing owns nothing (one that rejoined
                    # before its last assignment reached it reports the older, empty list)
                    owned_k = {m: state.get(m, []) if c else [] for m, c in run_["owned_counts"].items()}
                    line["runs"] += 1
                    if any(len(owned_k[m]) != c for m, c in run_["owned_counts"].items()):
                        line["runs_stale"] += 1  # the leader saw other owned partitions than we know of
                        owned_k = None
                    elif assign(owned_k, p) == {m: sorted(v) for m, v in run_["target"].items()}:
                        line["runs_ok"] += 1
                    else:
                        ok = False
                        print(f"{path.name}: step {i}: assignor run from {owned_k} gave {run_['target']}, "
                              f"assign() says {assign(owned_k, p)}")
                    target = {m: sorted(v) for m, v in run_["target"].items()}
                    holder = {q: m for m, ps in (owned_k or {}).items() for q in ps}
                    state = {m: [q for q in ps if holder.get(q, m) == m] for m, ps in target.items()}
                if step.get("member_id_changed") or (i and steps[i - 1].get("member_id_changed")):
                    # the coordinator dropped a member and took it back under a new id
                    line["skipped"] += 1
                    continue
                if step["action"] == "leave":
                    owned = {k: v for k, v in before.items() if k not in who}
                else:
                    owned = dict(before)
                    for w in who:
                        owned[w] = []
                runs_ = step.get("assignor_runs", [])
                if step["action"] == "start" and not (len(runs_) == 1 and set(runs_[0]["owned_counts"]) == set(who)):
                    # members joining at once, assigned over several generations: the
                    # result depends on who the coordinator had at each
                    line["skipped"] += 1
                    continue
                got = by_id(step)
                line["steps"] += 1
                want = rebalance(owned, p)
                others = [m for m in want if m not in who]
                if want == got:
                    line["port"] += 1
                elif (step["action"] == "join" and len(who) > 1
                      and all(want[m] == got[m] for m in others)
                      and sorted(q for w in who for q in want[w]) == sorted(q for w in who for q in got[w])):
                    # the right partitions, split otherwise between members that joined
                    # together: a coordinator without a join barrier (Tansu) hands the
                    # revoked partitions out one generation at a time
                    line["split"] += 1
                else:
                    ok = False
                    print(f"{path.name}: step {i} {step['action']} {step['members']}: port predicts\n  {want}\n  recorded\n  {got}")
                if i:
                    counts = [len(v) for v in before.values()]
                    if max(counts) - min(counts) <= 1:
                        line["rules_n"] += 1
                        rule = (leave_rule(before, who, p) if step["action"] == "leave"
                                else join_rule(before, who, p))
                        if rule == want:  # the plain rules say what the port says
                            line["rules"] += 1
                # an eviction: a leave and the join after it
                if step["action"] == "join" and i >= 2 and steps[i - 1]["action"] == "leave":
                    start = by_id(steps[i - 2])
                    gone = [ids[n] for n in steps[i - 1]["members"]]
                    model = model_sticky(start, gone, who)
                    evictions["n"] += 1
                    evictions["model"] += model == got
                    lost = sorted(q for g in gone for q in start[g])
                    evictions["inherit_real"] += sorted(q for w in who for q in got[w]) == lost
                    evictions["inherit_model"] += sorted(q for w in who for q in model[w]) == lost
        print(f"{path.name}: {line['runs_ok']}/{line['runs']} assignor runs reproduced by assign()"
              + (f" ({line['runs_stale']} from owned partitions other than the members held)" if line["runs_stale"] else "")
              + f"; {line['port']}/{line['steps']} steps as the port predicts"
              + (f" ({line['split']} more with the newcomers' partitions right but split otherwise between them)"
                 if line["split"] else "") + "; "
              f"{line['rules']}/{line['rules_n']} leaves and joins from a balanced group as the plain rules say"
              + (f"; {line['skipped']} steps not predicted (members starting at once but assigned over "
                 f"several generations, or a member re-admitted under a new id)" if line["skipped"] else ""))
        for k in totals:
            totals[k] += line[k]
    print(f"all: {totals['port']}/{totals['steps']} steps as the port predicts"
          + (f" ({totals['split']} more split otherwise between members joining together)" if totals["split"] else "")
          + f"; the plain rules say what the port says in {totals['rules']}/{totals['rules_n']} leaves and joins from a balanced group")
    print(f"evictions (a leave, then a join): {evictions['n']}; the model's one-rebalance sticky gives the "
          f"recorded result in {evictions['model']}; the newcomers end up with exactly the evicted "
          f"member's partitions in {evictions['inherit_real']} recorded, {evictions['inherit_model']} in the model")
    stats(paths)
    return ok and totals["rules"] == totals["rules_n"]


def stats(paths: list[Path]):
    """Per broker: tries, failures, how long steps took to settle, assignor runs."""
    import statistics
    brokers: dict[str, dict] = {}
    for path in paths:
        fixture = json.loads(path.read_text())
        b = brokers.setdefault(fixture["broker"].split(" (")[0], {
            "runs": 0, "failed": 0, "errors": [], "steps": 0, "leave": [], "join": [], "start": [],
            "assignor_runs": 0, "stale": 0})
        b["runs"] += len(fixture["runs"])
        b["failed"] += len(fixture["failed_tries"])
        b["errors"] += [f["error"][:160] for f in fixture["failed_tries"]]
        for run in fixture["runs"]:
            steps = run["steps"]
            for i, step in enumerate(steps):
                b["steps"] += 1
                b[step["action"]].append(step["settled_after_s"])
                state = by_id(steps[i - 1]) if i else {}
                for r in step.get("assignor_runs", []):
                    b["assignor_runs"] += 1
                    if any(len(state.get(m, [])) != c for m, c in r["owned_counts"].items()):
                        b["stale"] += 1
                    holder = {q: m for m, ps in state.items() for q in ps}
                    state = {m: [q for q in ps if holder.get(q, m) == m] for m, ps in r["target"].items()}
    for name, b in brokers.items():
        med = {k: statistics.median(b[k]) if b[k] else None for k in ("leave", "join", "start")}
        print(f"{name}: {b['runs']} runs settled, {b['failed']} tries abandoned; {b['steps']} steps; "
              f"median settle: leave {med['leave']} s, join {med['join']} s; "
              f"{b['assignor_runs']} assignor runs, {b['stale']} of them from owned lists the members no longer had")
        for e in b["errors"]:
            print(f"   abandoned: {e}")


def self_test(trials: int = 2000) -> bool:
    """The plain rules agree with the port on random balanced groups."""
    rng = random.Random(7)
    for _ in range(trials):
        p, c = rng.randint(1, 40), rng.randint(2, 14)
        ids = [f"m{rng.randrange(10**6):06d}" for _ in range(c)]
        if len(set(ids)) < c:
            continue
        perm = list(range(p))
        rng.shuffle(perm)
        owned = {m: sorted(perm[k::c]) for k, m in enumerate(ids)}  # balanced, scattered
        leaving = rng.sample(ids, rng.randint(1, min(2, c - 1)))
        left = rebalance({k: v for k, v in owned.items() if k not in leaving}, p)
        if left != leave_rule(owned, leaving, p):
            print("leave rule differs", owned, leaving, left)
            return False
        joining = [f"n{rng.randrange(10**6):06d}" for _ in range(rng.randint(1, 2))]
        owned2 = dict(left)
        for j in joining:
            owned2[j] = []
        joined = rebalance(owned2, p)
        if joined != join_rule(left, joining, p):
            print("join rule differs", left, joining, joined, join_rule(left, joining, p))
            return False
    print(f"self-test: the plain rules equal the port on {trials} random balanced groups")
    return True


if __name__ == "__main__":
    here = Path(__file__).resolve().parents[2] / "fixtures" / "kafka"
    paths = [Path(a) for a in sys.argv[1:]] or sorted(here.glob("cooperative_sticky_*.json"))
    good = self_test()
    good = check(paths) and good
    sys.exit(0 if good else 1)
