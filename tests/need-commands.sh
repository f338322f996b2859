#!/usr/bin/env bash
# need-commands.sh CMD:PACKAGE ... — apt-get install the Debian packages whose command is missing
# (idempotent, quiet). Shared by tests/setup.sh and bench/setup.sh.
set -euo pipefail
need_apt=()
for c in "$@"; do
  command -v "${c%%:*}" >/dev/null 2>&1 || need_apt+=("${c#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
