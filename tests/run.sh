#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install what it needs, check formatting and lints,
# then run every test (unit tests, the integration tests with real processes, and the tests
# under a real systemd) against a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo fmt --check
cargo clippy --all-targets --release -- -D warnings
cargo build --release --bins --examples
cargo test --release
