#!/usr/bin/env python3
"""Where do the slow requests of a baton reload phase come from? (an investigation aid)

    python3 bench/slowreq.py [N] [RATE]        (defaults: 1 70000; after bench/run.sh built things)

Starts `baton run` with N example workers, drives keep-alive load at RATE req/s (16
connections), runs 60 reloads 0.25 s apart, then prints every successful request slower than
50 ms with the nearest reload (start, end, duration) and the pids of the generation it
replaced, so that one can tell a stall of one connection from a stall of all of them, and a
stall caused by a reload from one that merely happened near it.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proof  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 70000
    env = proof.make_env(None)
    env.baton_prefix = ["nice", "-n", "-10"]  # as the shipped units (Nice=-10)
    sc = proof.Baton(env, n, proof.free_port())
    path = os.path.join(env.work, "slow.csv")
    reloads = []
    try:
        sc.start()
        load = proof.Load(env, sc.port, "keepalive", rate, path)
        for i in range(60):
            due = 3 + i * 0.25
            if load.now() < due:
                time.sleep(due - load.now())
            before = sorted(sc.worker_pids())
            t0 = load.now()
            info = sc.reload()
            reloads.append((t0, load.now(), info, before))
        time.sleep(2)
        summary = load.finish()
    finally:
        sc.stop()
    print(f"failed: {summary['failed']} {summary['failures']}")
    rows = [line.rstrip().split(",") for line in open(path)]
    slow = [r for r in rows if r[2] == "ok" and int(r[4]) > 50000]
    print(f"slower than 50 ms: {len(slow)} of {len(rows)} requests")
    for r in slow:
        t = int(r[0]) / 1e6
        t0, t1, info, old = min(reloads, key=lambda x: abs(x[0] - t))
        print(f"t={t:.4f} s latency={int(r[4]) / 1000:.1f} ms pid={r[5]}: nearest reload {t0:.4f}-{t1:.4f} s "
              f"(request at {t - t0:+.4f} s), rollout {info['duration_us'] / 1000:.1f} ms, replaced pids {old}")
    import shutil
    shutil.rmtree(env.work, ignore_errors=True)


if __name__ == "__main__":
    main()
