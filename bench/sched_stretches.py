#!/usr/bin/env python3
"""Who held a core, and who waited for it: a summary of `perf sched timehist`.

    perf sched record -C 0 -o storm.sched -- sleep 3
    perf sched timehist -i storm.sched > storm.th
    bench/sched_stretches.py storm.th [--cpu 0]

For each process and thread name: how often it ran, its wait for the core
once woken (the scheduling delay: p50, p99, max), how long it ran before
it gave the core up (p99, max), and how many of those runs passed 0.5 ms.
A write's commit crosses a few threads on the members' core; each waits
behind whatever runs there, and a run of milliseconds is what a slow
write met (bench/README.md, the eighth session's section).

Then, for every time a runtime worker (`tokio-rt-worker`) waited over
1 ms for the core, who held it meanwhile: the milliseconds each thread
ran inside those waits, summed (the tenth session's section).
`--cpu N` keeps one core's lines of a recording of all of them
(`perf sched record -a`).
"""

import bisect
import collections
import re
import sys

LONG_MS = 0.5
WAITED_MS = 1.0


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main(path, cpu=None):
    runs = collections.defaultdict(lambda: {"delay": [], "run": []})
    spans = []
    first = last = None
    busy = 0.0
    for line in open(path):
        fields = line.split()
        if len(fields) < 6 or not re.match(r"^\d+\.\d+$", fields[0]):
            continue
        if cpu is not None and fields[1] != f"[{cpu:04d}]":
            continue
        at = float(fields[0])
        first = first if first is not None else at
        last = at
        name = " ".join(fields[2:-3])
        delay, ran = float(fields[-2]), float(fields[-1])
        m = re.match(r"(.*)\[(\d+)(?:/(\d+))?\]", name)
        if not m or m.group(1) == "<idle>":
            continue
        comm, pid = m.group(1), m.group(3) or m.group(2)
        busy += ran
        spans.append((at - ran / 1000, at, pid, comm, delay))
        runs[(pid, comm)]["delay"].append(delay)
        runs[(pid, comm)]["run"].append(ran)
    if first is None:
        sys.exit(f"{path}: no `perf sched timehist` lines")
    span = (last - first) * 1000
    print(f"{span:.0f} ms recorded, the core busy {busy:.0f} ms ({100 * busy / span:.0f} %)")
    print(f"{'ran ms':>8} {'pid':>7} {'thread':<18} {'runs':>6} {'wait50':>7} {'wait99':>7} "
          f"{'waitmax':>7} {'run99':>7} {'runmax':>7} {'>0.5ms':>6}")
    table = []
    for (pid, comm), v in runs.items():
        long = sum(1 for r in v["run"] if r > LONG_MS)
        table.append((sum(v["run"]), pid, comm, len(v["run"]), quantile(v["delay"], 0.5),
                      quantile(v["delay"], 0.99), max(v["delay"]), quantile(v["run"], 0.99),
                      max(v["run"]), long))
    for row in sorted(table, reverse=True)[:24]:
        print("%8.1f %7s %-18s %6d %7.3f %7.3f %7.3f %7.3f %7.3f %6d" % row)
    held_while_workers_waited(spans)


def held_while_workers_waited(spans):
    """Who ran while a runtime worker, woken, waited over WAITED_MS."""
    spans.sort()
    starts = [s[0] for s in spans]
    held = collections.Counter()
    waits = 0
    for start, _, _, comm, delay in spans:
        if comm != "tokio-rt-worker" or delay <= WAITED_MS:
            continue
        waits += 1
        woken = start - delay / 1000
        # Runs that began before the worker got the core and ended after
        # it was woken; none lasts longer than a recording.
        for other in spans[max(0, bisect.bisect_left(starts, woken - 1.0)):]:
            if other[0] >= start:
                break
            overlap = min(other[1], start) - max(other[0], woken)
            if overlap > 0:
                held[(other[2], other[3])] += overlap * 1000
    print(f"\n{waits} waits of a runtime worker over {WAITED_MS} ms; who held the core meanwhile:")
    print(f"{'ms':>8} {'pid':>7} thread")
    for (pid, comm), ms in held.most_common(12):
        print(f"{ms:8.1f} {pid:>7} {comm}")


if __name__ == "__main__":
    args = sys.argv[1:]
    cpu = None
    if len(args) == 3 and args[1] == "--cpu":
        cpu = int(args[2])
        args = args[:1]
    if len(args) != 1:
        sys.exit(__doc__)
    main(args[0], cpu)
