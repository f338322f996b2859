# Sourced by bench/reload.sh and bench/startcost.sh: builds in release mode, then runs
# `baton run` with $INSTANCES example workers (readiness notify, $READY_TIMEOUT, drain 10 s) on a
# free port of 127.0.0.1, in a scratch directory that is removed on exit.
#
# Sets BATON HELLO LOADGEN WORK PORT CONFIG BPID. Processes whose pids are added to KILL_AT_EXIT
# are killed on exit, before baton. Functions: status (baton status --json), wait_one_generation
# (until the old generation of the last reload has exited).
cargo build --release --bins --examples -q
BATON=$PWD/target/release/baton
HELLO=$PWD/target/release/examples/hello
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d /tmp/baton-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONFIG=$WORK/bench.toml
cat > "$CONFIG" <<TOML
command   = ["$HELLO"]
instances = $INSTANCES
control   = "$WORK/ctl.sock"
[sockets]
http = "127.0.0.1:$PORT"
[readiness]
kind    = "notify"
timeout = "${READY_TIMEOUT:-10s}"
[drain]
timeout = "10s"
TOML

KILL_AT_EXIT=()
cleanup() {
  for p in "${KILL_AT_EXIT[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  [ -n "${BPID:-}" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

status() { "$BATON" status --json --config "$CONFIG"; }

wait_one_generation() {
  until status | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["generations"])==1 else 1)'; do
    sleep 0.01
  done
}

"$BATON" run --config "$CONFIG" 2>"$WORK/baton.log" &
BPID=$!
until status 2>/dev/null | grep -q '"state":"serving"'; do
  kill -0 $BPID || { cat "$WORK/baton.log"; exit 1; }
  sleep 0.05
done
