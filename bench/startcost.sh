#!/usr/bin/env bash
# CPU cost of a reload, split between baton and the app, on an otherwise idle machine:
#
#   bash bench/startcost.sh [WORKERS] [RELOADS]     (default 64 workers, 5 reloads)
#
# Starts `baton run` with WORKERS example workers (readiness notify, no load), then reloads
# RELOADS times. After each reload it prints the CPU time the new generation's workers used to
# start (the sum of their /proc/PID/schedstat run times, read once they are idle and ready:
# from their creation, the child's set-up before execve included) and baton's own CPU time
# for the whole reload (schedstat of the baton process, before and after: spawning the new
# generation, READY=1, the swap, stopping and reaping the old one).
set -euo pipefail
cd "$(dirname "$0")/.."
INSTANCES=${1:-64}
RELOADS=${2:-5}

READY_TIMEOUT=30s
source bench/lib.sh

run_ns() { cut -d' ' -f1 "/proc/$1/schedstat"; }
for i in $(seq "$RELOADS"); do
  b0=$(run_ns "$BPID")
  "$BATON" reload --json --config "$CONFIG" > "$WORK/reload.json"
  # the old generation is gone: baton's share of the reload is complete
  wait_one_generation
  b1=$(run_ns "$BPID")
  pids=$(status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(str(w["pid"]) for g in s["generations"] if g["generation"]==s["serving_generation"] for w in g["workers"]))')
  python3 - "$b0" "$b1" "$WORK/reload.json" $pids <<'EOF'
import json, sys
b0, b1, reply, pids = int(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3])), sys.argv[4:]
workers = sum(int(open(f"/proc/{p}/schedstat").read().split()[0]) for p in pids)
print(f"reload: {len(pids)} workers, rollout {reply['duration_us'] / 1000:.1f} ms; "
      f"workers' start-up CPU {workers / 1e6:.1f} ms ({workers / 1e3 / len(pids):.0f} us each); "
      f"baton CPU for the whole reload {(b1 - b0) / 1e6:.2f} ms ({(b1 - b0) / 1e3 / len(pids):.0f} us per worker)")
EOF
done
