#!/usr/bin/env python3
"""How the real cooperative-sticky moves scenario (a) of BENCHMARKS.md "Does it help?".

No noise, no clock, no rebalancer rules: the group of scenario (a) (36 partitions at
0.5 - 0.4*p/35 cores on 12 consumers, range start) and (a') (120 on 40), and the
same eviction repeated: the hottest and the coldest pod go, two new pods come. The
spread (population stddev / mean of the pods' loads, what `decide` compares with
the threshold 0.3) after each pair, under

- the model's `sticky` (leave and join in one rebalance, newcomers take the orphans),
- the real rule (`sticky_rule.rebalance`) in the orders a Kubernetes eviction can
  produce: both pods leave in one rebalance then both replacements join in one; or
  each step its own rebalance, in the two orders.

Pod names are drawn as Kubernetes draws them; the median over 200 draws is printed
(the spread hardly depends on them), and the share of draws whose spread was at or
below 0.3 after some pair. Standard library only; about 12 s.
"""

import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sticky_rule import model_sticky, rebalance  # noqa: E402

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod(rng):
    return "consumer-7d4b9c8f5-" + "".join(rng.choice(ALPHABET) for _ in range(5))


def spread(assignment, rates):
    loads = [0.01 + sum(rates[p] for p in ps) for ps in assignment.values()]
    return statistics.pstdev(loads) / statistics.mean(loads)


def evict(variant, asg, hot, cold, a, b, p):
    if variant == "model: one rebalance":
        return model_sticky(asg, [hot, cold], [a, b])
    if variant == "both leave; both join":
        s = rebalance({k: v for k, v in asg.items() if k not in (hot, cold)}, p)
        return rebalance({**s, a: [], b: []}, p)
    if variant == "hot leaves, A joins, cold leaves, B joins":
        s = rebalance({k: v for k, v in asg.items() if k != hot}, p)
        s = rebalance({**s, a: []}, p)
        s = rebalance({k: v for k, v in s.items() if k != cold}, p)
        return rebalance({**s, b: []}, p)
    if variant == "hot leaves, cold leaves, A joins, B joins":
        s = rebalance({k: v for k, v in asg.items() if k != hot}, p)
        s = rebalance({k: v for k, v in s.items() if k != cold}, p)
        s = rebalance({**s, a: []}, p)
        return rebalance({**s, b: []}, p)
    raise ValueError(variant)


VARIANTS = ["model: one rebalance", "both leave; both join",
            "hot leaves, A joins, cold leaves, B joins", "hot leaves, cold leaves, A joins, B joins"]


def main(pairs=6, draws=200):
    for p, c in ((36, 12), (120, 40)):
        rates = [0.5 - 0.4 * q / (p - 1) for q in range(p)]
        print(f"P = {p}, C = {c}: spread after each hottest+coldest eviction pair, median of {draws} name draws")
        print(f"  {'pairs evicted:':45s} " + " ".join(f"{k:>5d}" for k in range(pairs + 1))
              + "   draws at or below 0.3 after some pair")
        for variant in VARIANTS:
            table = []
            for seed in range(draws):
                rng = random.Random(seed)
                names = set()
                while len(names) < c:
                    names.add(pod(rng))
                names = sorted(names)
                e, x = divmod(p, c)
                asg, start = {}, 0
                for k, n in enumerate(names):
                    size = e + (k < x)
                    asg[n] = list(range(start, start + size))
                    start += size
                row = [spread(asg, rates)]
                for _ in range(pairs):
                    load = {n: sum(rates[q] for q in ps) for n, ps in asg.items()}
                    hot, cold = max(asg, key=load.get), min(asg, key=load.get)
                    a = b = None
                    while a in asg or a is None:
                        a = pod(rng)
                    while b in asg or b is None or b == a:
                        b = pod(rng)
                    asg = evict(variant, asg, hot, cold, a, b, p)
                    row.append(spread(asg, rates))
                table.append(row)
            med = [statistics.median(r[k] for r in table) for k in range(pairs + 1)]
            below = sum(any(v <= 0.3 for v in r[1:]) for r in table) / len(table)
            print(f"  {variant:45s} " + " ".join(f"{v:5.3f}" for v in med) + f"   {below:4.0%}")


if __name__ == "__main__":
    main()
