#!/usr/bin/env bash
# Reload cost, memory and idle CPU of baton, measured on this machine.
#
#   bash bench/reload.sh [RELOADS] [IDLE_SECONDS] [INSTANCES]     (defaults: 100 60 2)
#
# Starts `baton run` with the example worker on a free port, drives keep-alive and
# connection-per-request load with the project's load client, runs RELOADS `baton reload --json`
# one after the other (waiting for each old generation to exit), and prints:
#   * per reload: baton's rollout time (reload start -> swap), the slowest new worker's own
#     start-up (fork -> the kernel receiving its READY=1), and their difference: baton's own overhead; plus the wall
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

cargo build --release --bins --examples -q
BATON=$PWD/target/release/baton
HELLO=$PWD/target/release/examples/hello
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d /tmp/baton-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/bench.toml" <<TOML
command   = ["$HELLO"]
instances = $INSTANCES
control   = "$WORK/ctl.sock"
[sockets]
http = "127.0.0.1:$PORT"
[readiness]
kind    = "notify"
timeout = "10s"
[drain]
timeout = "10s"
TOML

cleanup() {
  [ -n "${LOAD1:-}" ] && kill "$LOAD1" 2>/dev/null || true
  [ -n "${LOAD2:-}" ] && kill "$LOAD2" 2>/dev/null || true
  [ -n "${BPID:-}" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BATON" run --config "$WORK/bench.toml" 2>"$WORK/baton.log" &
BPID=$!
until "$BATON" status --json --config "$WORK/bench.toml" 2>/dev/null | grep -q '"state":"serving"'; do
  kill -0 $BPID || { cat "$WORK/baton.log"; exit 1; }
  sleep 0.05
done

"$LOADGEN" --addr 127.0.0.1:$PORT --mode keepalive --concurrency 4 --rate 1000 --json > "$WORK/keep.json" 2>/dev/null &
LOAD1=$!
"$LOADGEN" --addr 127.0.0.1:$PORT --mode close --concurrency 4 --rate 500 --json > "$WORK/close.json" 2>/dev/null &
LOAD2=$!
sleep 1   # let the load reach its steady rate before the first reload

: > "$WORK/reloads.jsonl"
for i in $(seq 1 "$RELOADS"); do
  t0=$(date +%s%N)
  "$BATON" reload --json --config "$WORK/bench.toml" >> "$WORK/reloads.jsonl"
  t1=$(date +%s%N)
  echo "{\"wall_us\": $(( (t1 - t0) / 1000 ))}" >> "$WORK/wall.jsonl"
  # wait until the old generation has exited before the next reload
  until "$BATON" status --json --config "$WORK/bench.toml" | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["generations"])==1 else 1)'; do
    sleep 0.01
  done
done
sleep 1
kill -TERM $LOAD1 $LOAD2
wait $LOAD1 $LOAD2 || true
LOAD1= LOAD2=

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
over = [d - s for d, s in zip(dur, start)]
def row(name, xs):
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    print(f"| {name} | {statistics.median(xs)/1000:.3f} | {p(0.9)/1000:.3f} | {p(0.99)/1000:.3f} | {xs[-1]/1000:.3f} |")
print(f"reloads: {len(rel)}, instances: {inst}")
print("| per reload (ms) | median | p90 | p99 | max |")
print("|---|---|---|---|---|")
row("baton rollout (reload start -> swap)", dur)
row("slowest worker start-up (fork -> READY=1 received)", start)
row("baton's own overhead (rollout - start-up)", over)
row("`baton reload` wall time (incl. CLI process)", wall)
for name in ("keep", "close"):
    s = json.load(open(os.path.join(work, name + ".json")))
    print(f"load {name}: {s['ok']} ok, {s['failed']} failed {s['failures']}, p50 {s['latency_us']['p50']} us, p99 {s['latency_us']['p99']} us")
    assert s["failed"] == 0, "failed requests"
print(f"baton memory after the reloads: {rss}")
print(f"baton CPU over {idle} s idle: {int(t1) - int(t0)} ticks (CLK_TCK={os.sysconf('SC_CLK_TCK')})")
print(f"stripped binary: {int(size)/1e6:.2f} MB")
PY
