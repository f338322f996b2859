#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian 12 machine (idempotent, quiet when done).
#   apt:  systemd (systemd-notify, systemd-socket-activate, the PID 1 the systemd tests boot),
#         util-linux / bsdutils (unshare, nsenter, script for the systemd harness)
#   apt:  gcc (tests/seccomp.rs builds an i386-ABI test program)
#   apt:  nodejs (tests/node.rs, tests/runtimes.rs), golang-go (tests/runtimes.rs builds a static
#         Go server), openjdk-17-jdk-headless (tests/runtimes.rs compiles and runs a Java server)
#   PyPI: gunicorn for the python3 on PATH (tests/gunicorn.rs: an unchanged third-party app)
#   PyPI: gunicorn + uvicorn in the venv /opt/baton-tests/venv of Debian's python3
#         (tests/runtimes.rs: under the units' ProtectHome=yes an interpreter or venv under /home
#         or /root, e.g. pyenv's, is hidden)
#   npm:  express, pinned by tests/apps/express/package-lock.json, in /opt/baton-tests/node
#         (tests/bind.rs runs the Express server of a common zero-downtime guide)
#   packaging/build.sh --tools-only: cargo-deb, rpm, lintian, rpmlint (tests/packaging.rs)
#   apt:  haproxy, openssh-server, python3-apt (tests/fleet.rs: HAProxy in front of three booted
#         hosts, each running sshd; Ansible's apt module needs python3-apt on the targets);
#         no sshd is started or enabled on the host (see below)
#   PyPI: ansible-core and ansible-lint in the venv /opt/baton-tests/ansible (tests/fleet.rs runs
#         packaging/ansible's playbooks with it and lints them)
set -euo pipefail
bash "$(dirname "$0")/need-commands.sh" systemd-notify:systemd systemd-socket-activate:systemd \
  unshare:util-linux nsenter:util-linux script:bsdutils curl:curl node:nodejs go:golang-go \
  javac:openjdk-17-jdk-headless npm:npm gcc:gcc
GUNICORN_VERSION=27.0.1
if ! python3 -c "import gunicorn, sys; sys.exit(gunicorn.__version__ != '$GUNICORN_VERSION')" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "gunicorn==$GUNICORN_VERSION"
fi
VENV=/opt/baton-tests/venv
VENV_PINS=(click==8.5.1 gunicorn==27.0.1 h11==0.16.0 uvicorn==0.54.0)
if [ "$("$VENV/bin/python" -m pip freeze 2>/dev/null | sort | tr '\n' ' ')" != "$(printf '%s\n' "${VENV_PINS[@]}" | sort | tr '\n' ' ')" ]; then
  dpkg -s python3-venv >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${VENV_PINS[@]}"
fi
# tests/bind.rs: express from npm, exactly as the lockfile says, outside /root and the repo
EXPRESS_SRC="$(dirname "$0")/apps/express"
EXPRESS_DIR=/opt/baton-tests/node
if ! cmp -s "$EXPRESS_SRC/package-lock.json" "$EXPRESS_DIR/package-lock.json" \
  || ! cmp -s "$EXPRESS_SRC/package.json" "$EXPRESS_DIR/package.json" \
  || [ ! -f "$EXPRESS_DIR/node_modules/express/package.json" ]; then
  mkdir -p "$EXPRESS_DIR"
  cp "$EXPRESS_SRC/package.json" "$EXPRESS_SRC/package-lock.json" "$EXPRESS_DIR/"
  (cd "$EXPRESS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# tests/packaging.rs: cargo-deb (cargo install, cached in ~/.cargo/bin), rpm, lintian, rpmlint
bash "$(dirname "$0")/../packaging/build.sh" --tools-only
# tests/fleet.rs: sshd is started by the test inside each booted host, never on the host. The
# package's postinst would start one on 0.0.0.0:22 (invoke-rc.d; PID 1 is not systemd in CI):
# a policy-rc.d refuses that during the install, and ssh.service / ssh.socket are masked so
# that the booted containers (overlays of this root) start no sshd on :22 at boot.
if ! dpkg -s openssh-server haproxy python3-apt >/dev/null 2>&1; then
  OWN_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    OWN_POLICY=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssh-server haproxy python3-apt >/dev/null
  if [ $OWN_POLICY = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
for u in ssh.service ssh.socket haproxy.service; do
  [ "$(readlink "/etc/systemd/system/$u" 2>/dev/null)" = /dev/null ] || systemctl mask -q "$u" 2>/dev/null \
    || ln -sf /dev/null "/etc/systemd/system/$u"
done
ANSIBLE_VENV=/opt/baton-tests/ansible
ANSIBLE_PINS=(ansible-core==2.19.14 ansible-lint==26.10.1)
ANSIBLE_FROZEN=$("$ANSIBLE_VENV/bin/python" -m pip freeze 2>/dev/null || true)
if ! grep -qx "${ANSIBLE_PINS[0]}" <<<"$ANSIBLE_FROZEN" || ! grep -qx "${ANSIBLE_PINS[1]}" <<<"$ANSIBLE_FROZEN"; then
  dpkg -s python3-venv >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  /usr/bin/python3 -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/python" -m pip install -q --disable-pip-version-check "${ANSIBLE_PINS[@]}"
fi
