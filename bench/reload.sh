#!/usr/bin/env bash
# Reload cost, memory and idle CPU of baton, measured on this machine.
#
#   bash bench/reload.sh [RELOADS] [IDLE_SECONDS] [INSTANCES]     (defaults: 100 60 2)
#
# Starts `baton run` with the example worker on a free port, drives keep-alive and
# connection-per-request load with the project's load client, runs RELOADS `baton reload --json`
# one after the other (waiting for each old generation to exit), and prints:
#   * per reload: baton's rollout time (reload start -> swap), the slowest new worker's own
#     start-up (spawn -> the kernel receiving its READY=1), and baton's own overhead (the part of the
#     rollout in which no worker was starting, from the reply's app_starting_us); plus the wall
#     time of the `baton reload` command;
#   * failed requests of the load (must be 0);
#   * baton's RSS (VmRSS, VmHWM) after the reloads;
#   * baton's CPU ticks (utime+stime, 1 tick = 1/CLK_TCK s) over IDLE_SECONDS with no traffic;
#   * the stripped binary's size.
# A benchmark, not a test: it reports numbers, it asserts nothing but zero failed requests.
set -euo pipefail
cd "$(dirname "$0")/.."
RELOADS=${1:-100}
IDLE=${2:-60}
INSTANCES=${3:-2}

source bench/lib.sh

"$LOADGEN" --addr 127.0.0.1:$PORT --mode keepalive --concurrency 4 --rate 1000 --json > "$WORK/keep.json" 2>/dev/null &
LOAD1=$!
"$LOADGEN" --addr 127.0.0.1:$PORT --mode close --concurrency 4 --rate 500 --json > "$WORK/close.json" 2>/dev/null &
LOAD2=$!
KILL_AT_EXIT+=("$LOAD1" "$LOAD2")
sleep 1   # let the load reach its steady rate before the first reload

: > "$WORK/reloads.jsonl"
for i in $(seq 1 "$RELOADS"); do
  t0=$(date +%s%N)
  "$BATON" reload --json --config "$CONFIG" >> "$WORK/reloads.jsonl"
  t1=$(date +%s%N)
  echo "{\"wall_us\": $(( (t1 - t0) / 1000 ))}" >> "$WORK/wall.jsonl"
  # wait until the old generation has exited before the next reload
  wait_one_generation
done
sleep 1
kill -TERM $LOAD1 $LOAD2
wait $LOAD1 $LOAD2 || true
KILL_AT_EXIT=()

RSS=$(grep -E 'VmRSS|VmHWM' /proc/$BPID/status | tr -s ' \t' ' ' | paste -sd ';')
TICKS0=$(awk '{print $14+$15}' /proc/$BPID/stat)
sleep "$IDLE"
TICKS1=$(awk '{print $14+$15}' /proc/$BPID/stat)
cp "$BATON" "$WORK/baton.stripped" && strip "$WORK/baton.stripped"
SIZE=$(stat -c %s "$WORK/baton.stripped")

python3 - "$WORK" "$RSS" "$TICKS0" "$TICKS1" "$IDLE" "$SIZE" "$INSTANCES" <<'PY'
import json, statistics, sys, os
work, rss, t0, t1, idle, size, inst = sys.argv[1:]
rel = [json.loads(l) for l in open(os.path.join(work, "reloads.jsonl"))]
wall = [json.loads(l)["wall_us"] for l in open(os.path.join(work, "wall.jsonl"))]
assert all(r["ok"] for r in rel), "a reload failed"
dur = [r["duration_us"] for r in rel]
start = [r["slowest_start_us"] for r in rel]
# baton's own time: the part of the rollout in which no worker was starting
over = [d - r.get("app_starting_us", s) for d, s, r in zip(dur, start, rel)]
def row(name, xs):
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    print(f"| {name} | {statistics.median(xs)/1000:.3f} | {p(0.9)/1000:.3f} | {p(0.99)/1000:.3f} | {xs[-1]/1000:.3f} |")
print(f"reloads: {len(rel)}, instances: {inst}")
print("| per reload (ms) | median | p90 | p99 | max |")
print("|---|---|---|---|---|")
row("baton rollout (reload start -> swap)", dur)
row("slowest worker start-up (spawn -> READY=1 received)", start)
row("baton's own overhead (rollout - time with a worker starting)", over)
row("`baton reload` wall time (incl. CLI process)", wall)
for name in ("keep", "close"):
    s = json.load(open(os.path.join(work, name + ".json")))
    print(f"load {name}: {s['ok']} ok, {s['failed']} failed {s['failures']}, p50 {s['latency_us']['p50']} us, p99 {s['latency_us']['p99']} us")
    assert s["failed"] == 0, "failed requests"
print(f"baton memory after the reloads: {rss}")
print(f"baton CPU over {idle} s idle: {int(t1) - int(t0)} ticks (CLK_TCK={os.sysconf('SC_CLK_TCK')})")
print(f"stripped binary: {int(size)/1e6:.2f} MB")
PY
