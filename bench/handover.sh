#!/usr/bin/env bash
# The cost of handover = "bind" (issue 15): capacity of examples/hello (4 workers) under
# `baton run` with handover = "fds" against "bind", ROUNDS rounds alternated (default 3), loadgen
# flat out (16 connections, SECS seconds each, default 8) in keep-alive and connection-per-request
# mode. Prints one line per run:
#   round MODE LOADMODE REQ/S FAILED
# The per-worker start-up cost of the trap is measured by a test of its own:
#   cargo test --release --test bind -- --ignored --nocapture spawn_cost
# A benchmark, not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --examples -q
B=$PWD/target/release
work=$(mktemp -d /tmp/baton-handover.XXXXXX)
trap 'rm -rf "$work"' EXIT
for round in $(seq "${ROUNDS:-3}"); do
  for mode in fds bind; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    kind=notify
    [ "$mode" = bind ] && kind=listen
    cat > "$work/$mode.toml" <<EOT
command = ["$B/examples/hello"]
instances = 4
handover = "$mode"
control = "$work/$mode.sock"
[env]
HELLO_LISTEN = "127.0.0.1:$port"
[sockets]
http = "127.0.0.1:$port"
[readiness]
kind = "$kind"
EOT
    "$B/baton" run --config "$work/$mode.toml" > "$work/$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      "$B/baton" status --control "$work/$mode.sock" > /dev/null 2>&1 && break
      sleep 0.1
    done
    for load in keepalive close; do
      "$B/examples/loadgen" --addr "127.0.0.1:$port" --mode "$load" --concurrency 16 --rate 0 \
        --duration "${SECS:-8}s" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $mode $load', int(d['rps']), d['failed'])"
    done
    kill -TERM "$pid"
    wait "$pid" || true
  done
done
