#!/usr/bin/env bash
# Proof under load (issue 4), one command:
#
#   bash bench/run.sh            # full run, about 40 min on 2 vCPUs; results in bench/results/full/
#   bash bench/run.sh --quick    # a few minutes (N=4 only, fewer reloads, 10 s idle)
#
# Installs the peers (bench/setup.sh), builds baton and the example worker / load client in
# release mode, then runs bench/proof.py, which prints markdown tables and writes
# results.json, table.md and latency.png (bench/plot.py) into the output directory.
# A benchmark, not a test: it asserts nothing, it reports (misses of baton's targets included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
cargo build --release --bins --examples -q
exec python3 bench/proof.py "$@"
