#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian 12 machine (idempotent, quiet when done).
#   apt:  systemd (systemd-notify, systemd-socket-activate, the PID 1 the systemd tests boot),
#         util-linux / bsdutils (unshare, nsenter, script for the systemd harness)
#   apt:  nodejs (tests/node.rs)
#   PyPI: gunicorn (an unchanged third-party app that takes systemd sockets)
#   packaging/build.sh --tools-only: cargo-deb, rpm, lintian, rpmlint (tests/packaging.rs)
set -euo pipefail
bash "$(dirname "$0")/need-commands.sh" systemd-notify:systemd systemd-socket-activate:systemd \
  unshare:util-linux nsenter:util-linux script:bsdutils curl:curl node:nodejs
GUNICORN_VERSION=27.0.1
if ! python3 -c "import gunicorn, sys; sys.exit(gunicorn.__version__ != '$GUNICORN_VERSION')" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "gunicorn==$GUNICORN_VERSION"
fi
# tests/packaging.rs: cargo-deb (cargo install, cached in ~/.cargo/bin), rpm, lintian, rpmlint
bash "$(dirname "$0")/../packaging/build.sh" --tools-only
