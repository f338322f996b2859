#!/usr/bin/env python3
"""In which phase of a reload do the slow requests fall? (an investigation aid)

    python3 bench/phases.py [N] [MODE] [RATE] [RELOADS] [STARTUP_NICE]
        (defaults: 64 close 9600 40 -; after bench/run.sh built things; '-' = baton's default)

Starts `baton run` (under nice -n -10, as the units run it) with N example workers, drives load
at RATE req/s (16 connections), and triggers RELOADS isolated reloads 1.5 s apart. Each request
is assigned, by its start time, to a phase of the nearest reload, from `baton reload --json`
(the reply comes right after the swap):

    spawning   from the rollout's start until the last worker's spawn began
    starting   from there until the last worker's READY=1 (the swap follows within ~0.1 ms)
    drain      the first 100 ms after the swap (the old generation drains and exits)
    after      100 to 500 ms after the swap
    steady     everything else, outside [start - 0.1 s, swap + 0.5 s]

and the table shows, per phase, the time it covers, its requests, their p50 / p99 / max, how
many took longer than the steady p99 and than 2 ms, and how many of those over 2 ms a worker of
the new generation answered (a pid first seen after the reload started). With the start-ups
paced (readiness.max_starting), the last spawn begins near the end: "spawning" then covers most
of the start-up.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proof  # noqa: E402

PHASES = ("steady", "spawning", "starting", "drain", "after")


def main():
    a = sys.argv[1:] + [None] * 5
    n = int(a[0] or 64)
    mode = a[1] or "close"
    rate = float(a[2] or 9600)
    count = int(a[3] or 40)
    env = proof.make_env(None)
    env.baton_prefix = ["nice", "-n", "-10"]  # as the shipped units (Nice=-10)
    env.startup_nice = None if a[4] in (None, "-") else int(a[4])
    sc = proof.Baton(env, n, proof.free_port())
    path = os.path.join(env.work, "phases.csv")
    windows = []  # (rollout start, last spawn began, last ready, swap), load clock, seconds
    try:
        sc.start()
        load = proof.Load(env, sc.port, mode, rate, path)
        for i in range(count):
            due = 3 + i * 1.5
            if load.now() < due:
                time.sleep(due - load.now())
            info = sc.reload()
            swap = load.now()  # the reply comes right after the swap
            start = swap - info["duration_us"] / 1e6
            windows.append((start, start + info["last_spawn_us"] / 1e6,
                            start + info["last_ready_us"] / 1e6, swap))
        time.sleep(2)
        summary = load.finish()
    finally:
        sc.stop()
    rows = [line.rstrip().split(",") for line in open(path)]
    lat = {p: [] for p in PHASES}
    first_seen = {}
    for r in rows:
        if r[2] == "ok" and r[5] not in first_seen:
            first_seen[r[5]] = int(r[0]) / 1e6
    # slow requests (> 2 ms) per phase, by who answered them: a worker of the generation the
    # nearest reload started, or an older one
    slow_new = {p: 0 for p in PHASES}
    for r in rows:
        if r[2] != "ok":
            continue
        t = int(r[0]) / 1e6
        if t < 1.0:
            continue
        start, spawned, ready, swap = min(windows, key=lambda w: abs(w[0] - t))
        if t < start - 0.1 or t >= swap + 0.5:
            phase = "steady"
        elif t < spawned:
            phase = "spawning" if t >= start else "steady"  # the 0.1 s before counts as neither
        elif t < ready:
            phase = "starting"
        elif t < swap + 0.1:
            phase = "drain"
        else:
            phase = "after"
        if phase == "steady" and start - 0.1 <= t < start:
            continue
        lat[phase].append(int(r[4]) / 1000)
        if int(r[4]) > 2000 and first_seen[r[5]] >= start:
            slow_new[phase] += 1
    span = {
        "spawning": statistics.median(w[1] - w[0] for w in windows) * 1000,
        "starting": statistics.median(w[2] - w[1] for w in windows) * 1000,
        "drain": 100.0,
        "after": 400.0,
    }
    steady_p99 = proof.pct(sorted(lat["steady"]), 0.99)
    print(f"N={n} {mode} {rate:.0f} req/s, {count} reloads, startup_nice {a[4] or 'default'}: "
          f"failed {summary['failed']} {summary['failures']}")
    print("| phase | ms per reload (median) | requests | p50 ms | p99 ms | max ms "
          f"| over steady p99 ({steady_p99:.2f} ms) | over 2 ms | of those, by new workers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in PHASES:
        xs = sorted(lat[p])
        if not xs:
            continue
        over = sum(1 for x in xs if x > steady_p99)
        over2 = sum(1 for x in xs if x > 2.0)
        print(f"| {p} | {span.get(p, 0):.1f} | {len(xs)} | {proof.pct(xs, 0.5):.2f} | "
              f"{proof.pct(xs, 0.99):.2f} | {xs[-1]:.2f} | {over} ({100 * over / len(xs):.1f} %) "
              f"| {over2} ({100 * over2 / len(xs):.1f} %) | {slow_new[p]} |")
    import shutil
    shutil.rmtree(env.work, ignore_errors=True)


if __name__ == "__main__":
    main()
