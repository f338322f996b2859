#!/usr/bin/env bash
# Install what bench/proof.py needs on a fresh Debian 12 machine (idempotent, quiet when done):
#   apt:  systemd (systemd-socket-activate), nodejs + npm (PM2's runtime), binutils (strip)
#   npm:  pm2 7.0.4, into bench/.peers/ (not global)
#   PyPI: gunicorn 27.0.1, matplotlib 3.11.2 (the plot)
set -euo pipefail
cd "$(dirname "$0")"
bash ../tests/need-commands.sh systemd-socket-activate:systemd node:nodejs npm:npm strip:binutils
PM2_VERSION=7.0.4
# (the version from package.json: any `pm2` command would spawn a daemon)
if [ "$(node -p "require('./.peers/node_modules/pm2/package.json').version" 2>/dev/null)" != "$PM2_VERSION" ]; then
  mkdir -p .peers
  npm install --prefix .peers --no-audit --no-fund --loglevel=error "pm2@$PM2_VERSION" >/dev/null
fi
pip_pkgs=()
python3 -c "import gunicorn, sys; sys.exit(gunicorn.__version__ != '27.0.1')" 2>/dev/null || pip_pkgs+=("gunicorn==27.0.1")
python3 -c "import matplotlib, sys; sys.exit(matplotlib.__version__ != '3.11.2')" 2>/dev/null || pip_pkgs+=("matplotlib==3.11.2")
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_pkgs[@]}"
fi
