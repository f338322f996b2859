#!/usr/bin/env python3
"""Latency over time across one reload, baton versus its peers (from bench/proof.py's results).

    python3 bench/plot.py results.json latency.png

One panel per scenario (rows) and load mode (columns): per 10 ms of request start time, the
median and the maximum latency of the successful requests (log scale), the failed requests
(red, right axis), the reload itself (shaded: trigger to done) and the run's steady p99 (dotted).
t = 0 is the trigger of the run's second reload.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["baton", "naive", "ssa", "pm2", "gunicorn"]
MODES = [("keepalive", "keep-alive"), ("close", "connection per request")]


def main(src, dst):
    res = json.load(open(src))
    rows = {(r["scenario"], r["mode"]): r for r in res["comparison"] if "plot" in r}
    scen = [s for s in ORDER if any((s, m) in rows for m, _ in MODES)]
    fig, axes = plt.subplots(len(scen), 2, figsize=(13, 2.3 * len(scen) + 0.8), sharex=True, squeeze=False)
    for i, s in enumerate(scen):
        for j, (mode, mname) in enumerate(MODES):
            ax = axes[i][j]
            r = rows.get((s, mode))
            if r is None:
                ax.set_visible(False)
                continue
            p = r["plot"]
            t = [b[0] for b in p["series"]]
            p50 = [b[2] / 1000 if b[2] else None for b in p["series"]]
            mx = [b[4] / 1000 if b[4] else None for b in p["series"]]
            nf = [b[5] for b in p["series"]]
            ax.axvspan(0, max(p["reload_len_s"], 0.004), color="#f2c14e", alpha=0.35, lw=0)
            ax.plot(t, mx, color="#1f3b73", lw=0.9, label="max per 10 ms")
            ax.plot(t, p50, color="#7fa7d9", lw=0.9, label="median per 10 ms")
            if r["steady"]["p99_us"]:
                ax.axhline(r["steady"]["p99_us"] / 1000, color="k", ls=":", lw=0.8, label="steady p99")
            ax.set_yscale("log")
            ax.set_ylim(0.01, 3000)
            ax.grid(True, which="major", alpha=0.3)
            failed_here = sum(nf)
            if failed_here:
                ax2 = ax.twinx()
                ax2.bar(t, nf, width=p["bin_s"], align="edge", color="#d62728", alpha=0.8, label="failed")
                ax2.set_ylabel("failed / 10 ms", color="#d62728", fontsize=7)
                ax2.tick_params(axis="y", labelsize=7, colors="#d62728")
            kinds = ", ".join(f"{k} {v}" for k, v in r["failures"].items()) or "none"
            ax.set_title(f"{r['label']}, {mname}, N={r['n']}, {r['rate']:.0f} req/s — failed in run: "
                         f"{r['failed']} ({kinds})", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("latency ms", fontsize=8)
            if i == len(scen) - 1:
                ax.set_xlabel("s since reload trigger (shaded: until the reload is done)", fontsize=8)
    h, l = axes[0][0].get_legend_handles_labels()
    fig.legend(h, l, loc="upper right", fontsize=8, ncol=3)
    fig.suptitle("Latency across a reload under 70 % load (bench/proof.py)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
