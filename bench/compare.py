#!/usr/bin/env python3
"""Compare baton's target and scale figures across result directories of bench/proof.py.

    python3 bench/compare.py bench/results/0e7f3ef/full bench/results/40c732c/full bench/results/full
    (earlier runs are in git history: git archive 65cbd18 bench/results | tar -x -C DIR)

Prints one markdown table of the target runs (per mode and N: overhead, rollout, baton's
run-queue wait, p99 ratio, max while reloading) and one of the scale runs (per worker count:
rollout, overhead, baton's CPU per reload), one column group per directory.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proof  # noqa: E402


def label(d, r):
    m = r["machine"]
    argv = r.get("argv", [])
    # runs made before --baton-prefix had a default ran baton at nice 0
    prefix = r.get("baton_prefix", argv[argv.index("--baton-prefix") + 1] if "--baton-prefix" in argv else "")
    return f"{m.get('baton_commit', os.path.basename(os.path.dirname(d)))}" + (f" ({prefix})" if prefix else " (nice 0)")


def main(dirs):
    runs = [(d, json.load(open(os.path.join(d, "results.json")))) for d in dirs]
    names = [label(d, r) for d, r in runs]
    print("| mode | N | " + " | ".join(f"{n}: overhead / rollout / run-queue wait ms, p99 ratio, max ms" for n in names) + " |")
    print("|---|---|" + "---|" * len(runs))
    keys = []
    for _, r in runs:
        for t in r["target"]:
            if (t["mode"], t["n"]) not in keys:
                keys.append((t["mode"], t["n"]))
    for mode, n in keys:
        cells = []
        for _, r in runs:
            t = next((t for t in r["target"] if (t["mode"], t["n"]) == (mode, n)
                      and t.get("kind", "back-to-back") == "back-to-back"), None)
            if t is None:
                cells.append("–")
                continue
            rl = t["reloads"]
            over = statistics.median(proof.overhead_ms(x) for x in rl)
            roll = statistics.median(x["duration_us"] / 1000 for x in rl)
            runq = statistics.median(x["baton_runq_us"] / 1000 for x in rl) if "baton_runq_us" in rl[0] else float("nan")
            ratio = t["reload"]["p99_us"] / t["steady"]["p99_us"]
            cells.append(f"{over:.2f} / {roll:.1f} / {runq:.1f}, {ratio:.2f}, {t['reload']['max_us'] / 1000:.0f}")
        print(f"| {mode} | {n} | " + " | ".join(cells) + " |")
    if any(r["scale"] for _, r in runs):
        print()
        print("| workers | " + " | ".join(f"{n}: rollout / overhead ms, CPU ticks per reload" for n in names) + " |")
        print("|---|" + "---|" * len(runs))
        ns = sorted({s["n"] for _, r in runs for s in r["scale"]})
        for n in ns:
            cells = []
            for _, r in runs:
                s = next((s for s in r["scale"] if s["n"] == n), None)
                cells.append("–" if s is None else f"{s['rollout_ms']:.1f} / {s['overhead_ms']:.2f}, {s['ticks_per_reload']:.1f}")
            print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
