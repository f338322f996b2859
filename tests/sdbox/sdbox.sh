#!/bin/bash
# sdbox.sh -- boot a REAL systemd as PID 1 of a fresh set of Linux namespaces
# (pid, mount, uts, ipc, cgroup; net shared with the host by default) on a
# throw-away copy-on-write overlay of the host's own root filesystem, so that
# baton's unit files can be tested against the host's own systemd
# (/lib/systemd/systemd; Debian 12: v252) on a host whose PID 1 is not
# systemd (a CI container or VM).  No image, no nspawn, no VM.  Needs root.
#
# Usage:  tests/sdbox/sdbox.sh [options] <command> [args...]
#
#   up             boot; waits until `systemctl is-system-running --wait`
#                  answers (running or degraded).  Prints PID 1's host PID.
#   exec CMD...    run CMD inside the container (all its namespaces, its root,
#                  a clean environment; stdin/stdout/stderr and the exit status
#                  pass through).  CMD is NOT a child of the container's
#                  systemd and not in its cgroups: use
#                  `exec systemd-run --wait --pipe --quiet CMD` for that.
#   cp SRC DST     copy a host file into the container (DST: path inside;
#                  parent directories are created, the mode is kept).
#   status         whether it is up, its PIDs, `systemctl status` inside.
#   down           poweroff (SIGRTMIN+4 to PID 1), wait, SIGKILL PID 1 if it
#                  hangs, remove the container's cgroups and state dir.
#
# Options (or the environment variable shown):
#   --name NAME        container name and hostname (SDBOX_NAME, default sdbox);
#                      several containers may run at once under distinct names
#   --bind SRC[:DST]   bind-mount a host directory read-write into the
#                      container; repeatable (SDBOX_BINDS, newline separated)
#   --net host|private share the host's network namespace (default: the host
#                      reaches the container's sockets on 127.0.0.1, so pick
#                      free ports; CAP_NET_ADMIN is dropped inside) or get a
#                      private one with only lo (SDBOX_NET)
#   --boot-timeout S   seconds to wait for boot (SDBOX_BOOT_TIMEOUT, 60)
#   --state-dir DIR    base dir for state (SDBOX_STATE, /tmp/baton-sdbox)
#
# Everything the container writes goes to a tmpfs upper layer that exists only
# in the container's private mount namespace and disappears with it.  The
# host's live root is the lower layer: files changed on the host while the
# container runs may or may not be seen inside (overlayfs), so copy binaries
# in with `cp` (a snapshot) or `--bind` a directory (live).
#
# Teardown only ever signals PIDs this script recorded itself (PID 1 of the
# container; the `script` and `unshare` launcher processes), after checking
# that their command line still matches.  Killing PID 1 of a PID namespace
# makes the kernel kill every other process inside it.  Not a security
# boundary.

set -euo pipefail

SELF=$(readlink -f "$0")
NAME=${SDBOX_NAME:-sdbox}
NET=${SDBOX_NET:-host}
BINDS=${SDBOX_BINDS:-}
BOOT_TIMEOUT=${SDBOX_BOOT_TIMEOUT:-60}
BASE=${SDBOX_STATE:-/tmp/baton-sdbox}
INNER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "sdbox: error: $*" >&2; exit 1; }
log() { echo "sdbox: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

# ---------------------------------------------------------------- options
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2;;
    --name=*) NAME=${1#*=}; shift;;
    --net) NET=$2; shift 2;;
    --net=*) NET=${1#*=}; shift;;
    --bind) BINDS+=${BINDS:+$'\n'}$2; shift 2;;
    --bind=*) BINDS+=${BINDS:+$'\n'}${1#*=}; shift;;
    --boot-timeout) BOOT_TIMEOUT=$2; shift 2;;
    --boot-timeout=*) BOOT_TIMEOUT=${1#*=}; shift;;
    --state-dir) BASE=$2; shift 2;;
    --state-dir=*) BASE=${1#*=}; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    --) shift; break;;
    -*) die "unknown option $1";;
    *) break;;
  esac
done
[ $# -ge 1 ] || die "missing command (up, exec, cp, status, down; see --help)"
CMD=$1; shift
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$ ]] || die "bad --name '$NAME'"
case "$NET" in host|private) ;; *) die "--net must be host or private";; esac
STATE=$BASE/$NAME
CGNAME=sdbox-$NAME
# the later phases re-run this script (through script/unshare): pass the options on
export SDBOX_NAME=$NAME SDBOX_NET=$NET SDBOX_BINDS=$BINDS SDBOX_STATE=$BASE

# ---------------------------------------------------------------- helpers
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, cgroups)"; }

# Only check: a test harness must not install packages behind the user's back.
check_prereqs() {
  need_root
  local missing=() c
  for c in unshare nsenter setpriv findmnt pivot_root script systemctl journalctl; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ -x /lib/systemd/systemd ] || missing+=(/lib/systemd/systemd)
  [ ${#missing[@]} = 0 ] || die "missing: ${missing[*]} (Debian: apt-get install systemd util-linux bsdutils)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "kernel lacks overlayfs"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# pid_matches PID PATTERN: PID alive and its cmdline contains PATTERN
pid_matches() {
  pid_alive "$1" || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -qF -- "$2"
}
read_pid() { [ -s "$STATE/$1" ] && cat "$STATE/$1" || true; }
# our container's PID 1: alive, in another PID namespace, and either systemd
# or still our setup script (`__inner2`) on its way to exec'ing systemd
is_ours_pid1() {
  [ -n "${1:-}" ] && pid_alive "$1" && \
    [ "$(readlink "/proc/$1/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] && \
    { pid_matches "$1" "/lib/systemd/systemd --show-status" || pid_matches "$1" "$SELF __inner"; }
}
is_up() {
  local p; p=$(read_pid pid1)
  is_ours_pid1 "$p" && pid_matches "$p" "/lib/systemd/systemd --show-status"
}

# Run a command in all of the container's namespaces + its root and cwd, with
# a clean environment (nothing of the caller's leaks in).
in_ct() {
  local p; p=$(read_pid pid1)
  is_up || die "container '$NAME' is not running (use: $0 --name $NAME up)"
  nsenter --target "$p" --all --root --wd -- \
    /usr/bin/env -i PATH=$INNER_PATH HOME=/root TERM=dumb LANG=C.UTF-8 \
    SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# Where each cgroup hierarchy is mounted (host view), e.g.
#   /sys/fs/cgroup/cpu  cgroup  rw,cpu
cgroup_mounts() {
  awk '{ for (i = 7; $i != "-"; i++); fstype = $(i+1); opts = $(i+3);
         if ((fstype == "cgroup" || fstype == "cgroup2") && $5 ~ /^\/sys\/fs\/cgroup/)
           print $5, fstype, opts }' /proc/self/mountinfo
}

# Create a child cgroup "$CGNAME" below our current cgroup in every hierarchy
# (systemd needs a cgroup subtree it owns: it becomes the root of the
# container's cgroup namespace); list the directories in $STATE/cgroups so
# that `down` removes exactly those.
make_cgroups() {
  : > "$STATE/cgroups"
  local hid ctrls path mp m fstype opts d want ok parent
  while IFS=: read -r hid ctrls path; do
    mp=
    while read -r m fstype opts; do
      if [ -z "$ctrls" ]; then
        [ "$fstype" = cgroup2 ] && { mp=$m; break; }
      else
        [ "$fstype" = cgroup ] || continue
        ok=1
        for want in ${ctrls//,/ }; do
          [[ ",$opts," == *",$want,"* ]] || { ok=0; break; }
        done
        [ $ok = 1 ] && { mp=$m; break; }
      fi
    done < <(cgroup_mounts)
    [ -n "$mp" ] || continue
    parent=$mp${path%/}
    d=$parent/$CGNAME
    mkdir -p "$d"
    # cgroup v1 cpuset: a new cgroup starts with no CPUs/memory nodes, and no
    # process can join it until they are filled in
    if [ -f "$d/cpuset.cpus" ] && [ ! -s "$d/cpuset.cpus" ]; then
      cat "$parent/cpuset.cpus" > "$d/cpuset.cpus"
      cat "$parent/cpuset.mems" > "$d/cpuset.mems"
    fi
    echo "$d" >> "$STATE/cgroups"
  done < /proc/self/cgroup
  [ -s "$STATE/cgroups" ] || die "found no cgroup hierarchy under /sys/fs/cgroup"
}

remove_cgroups() {
  [ -s "$STATE/cgroups" ] || return 0
  local d i left
  # the kernel frees a cgroup only once its last process is reaped: retry
  for i in 1 2 3 4 5 6 7 8 9 10; do
    left=0
    while read -r d; do
      [ -d "$d" ] || continue
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$d" ] && left=1
    done < "$STATE/cgroups"
    [ $left = 0 ] && return 0
    sleep 0.2
  done
  log "warning: could not remove all cgroups: $(tr '\n' ' ' < "$STATE/cgroups")"
}

# ---------------------------------------------------------------- phase 2:
# runs under `script` (which provides a pty that becomes /dev/console) in the
# host namespaces.  The unshare parent stays in the host's cgroups: a process
# in the container's cgroup root that is invisible in its PID namespace shows
# up as PID 0 in cgroup.procs and makes systemd fail with EIO.
launch() {
  echo $$ > "$STATE/unshare.pid"
  local flags=(--pid --fork --mount --uts --ipc --propagation private)
  [ "$NET" = private ] && flags+=(--net)
  exec unshare "${flags[@]}" -- "$SELF" __inner
}

# ---------------------------------------------------------------- phase 3:
# PID 1 of the new PID namespace, in a private copy of the host mount ns.
inner() {
  local hostpid _ d
  read -r hostpid _ < /proc/self/stat      # /proc is still the host's here
  echo "$hostpid" > "$STATE/pid1"
  # join our fresh cgroups ("0" = the writing process), then make them the
  # root of a new cgroup namespace; exec keeps the PID (1 in the new pid ns)
  while read -r d; do echo 0 > "$d/cgroup.procs"; done < "$STATE/cgroups"
  exec unshare --cgroup -- "$SELF" __inner2
}

inner2() {
  local hostpid R O console p m fstype opts mopts o
  hostpid=$(read_pid pid1)
  console=$(tty 2>/dev/null || true)
  R=$STATE/root O=$STATE/ovl
  mkdir -p "$R" "$O"
  # nothing we mount below may propagate back to the host
  mount --make-rprivate /
  # writable layer: tmpfs, private to this mount namespace
  mount -t tmpfs -o mode=755 sdbox-upper "$O"
  mkdir -p "$O/upper" "$O/work"
  mount -t overlay sdbox-root -o "lowerdir=/,upperdir=$O/upper,workdir=$O/work" "$R"

  # API file systems (roughly what systemd-nspawn provides).  A fresh /proc for
  # the new PID namespace; its global knobs read-only.
  mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
  mount --bind "$R/proc/sys" "$R/proc/sys"
  mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
  for p in sysrq-trigger irq bus fs; do
    [ -e "$R/proc/$p" ] || continue
    mount --bind "$R/proc/$p" "$R/proc/$p" && mount -o remount,bind,ro "$R/proc/$p" || true
  done
  # read-only /sys keeps udev (ConditionPathIsReadWrite=/sys) and friends off
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
  # cgroup file systems as on the host (e.g. hybrid v1 + v2); mounted inside
  # our cgroup namespace, so their root is our $CGNAME cgroup
  mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$R/sys/fs/cgroup"
  while read -r m fstype opts; do
    mopts=
    for o in ${opts//,/ }; do
      case "$o" in rw|ro) ;; *) mopts+=${mopts:+,}$o;; esac
    done
    [ "$fstype" = cgroup ] && [ -z "$mopts" ] && mopts=none
    mkdir -p "$R$m"
    mount -t "$fstype" -o "nosuid,nodev,noexec${mopts:+,$mopts}" "$fstype" "$R$m"
  done < <(cgroup_mounts)
  for m in /sys/fs/cgroup/*; do               # e.g. cpu -> cpu,cpuacct
    [ -L "$m" ] && ln -s "$(readlink "$m")" "$R$m"
  done

  # a minimal /dev: only harmless device nodes, a private devpts, the pty
  # from `script` as /dev/console (systemd writes its status there)
  mount -t tmpfs -o mode=755,nosuid dev "$R/dev"
  for p in null zero full random urandom tty fuse net/tun; do
    [ -c "/dev/$p" ] || continue
    mkdir -p "$(dirname "$R/dev/$p")"; touch "$R/dev/$p"; mount --bind "/dev/$p" "$R/dev/$p"
  done
  mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5,nosuid,noexec devpts "$R/dev/pts"
  ln -s pts/ptmx "$R/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
  if [ -n "$console" ] && [ -c "$console" ]; then
    touch "$R/dev/console"; mount --bind "$console" "$R/dev/console"
  fi
  # an empty /run, as at boot (the host's sockets must not be visible inside)
  mount -t tmpfs -o mode=755,nosuid,nodev run "$R/run"

  local b src dst
  while IFS= read -r b; do
    [ -n "$b" ] || continue
    src=${b%%:*}; dst=${b#*:}; [ "$b" = "$src" ] && dst=$src
    [ -d "$src" ] || { echo "bind source $src is not a directory" >&2; exit 1; }
    mkdir -p "$R$dst"; mount --rbind "$src" "$R$dst"
  done <<< "$BINDS"

  # ---- configuration, written to the tmpfs upper layer only
  echo "$NAME" > "$R/etc/hostname"
  tr -d '-' < /proc/sys/kernel/random/uuid > "$R/etc/machine-id"   # fresh journal
  hostname "$NAME"
  # units the host's admin enabled (databases, timers, gettys) must not start inside
  rm -f "$R"/etc/systemd/system/*.wants/* 2>/dev/null || true
  local u
  for u in console-getty.service getty-static.service getty@.service \
           systemd-modules-load.service systemd-timesyncd.service \
           apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done
  ln -sf /lib/systemd/system/multi-user.target "$R/etc/systemd/system/default.target"
  mkdir -p "$R/etc/tmpfiles.d" "$R/etc/systemd/journald.conf.d"
  # the stock "D /tmp" would hide the host's /tmp (via whiteouts) at boot
  echo "d /tmp 1777 root root -" > "$R/etc/tmpfiles.d/tmp.conf"
  # tests read the journal: keep everything (no rate limit), in memory
  printf '[Journal]\nRateLimitBurst=0\nStorage=volatile\n' > "$R/etc/systemd/journald.conf.d/sdbox.conf"

  # ---- capabilities like nspawn's default set (keep net_admin only with a
  # private netns: with the host's network it could reconfigure the host)
  local drop=sys_module,sys_time,sys_rawio,sys_pacct,syslog,wake_alarm,block_suspend,mac_admin,mac_override
  [ "$NET" = host ] && drop+=,net_admin

  # ---- rlimits like a real boot (the host's hard RLIMIT_NOFILE may be low, and
  # services inherit it as their ceiling); soft 1024 as PID 1 would get
  local nr; nr=$(cat /proc/sys/fs/nr_open); [ "$nr" -gt 524288 ] && nr=524288
  ulimit -Hn "$nr" 2>/dev/null || true; ulimit -Sn 1024 2>/dev/null || true
  ulimit -c 0 2>/dev/null || true

  # ---- switch root and become systemd; container=... makes systemd behave
  # as in a container (no hardware setup, SIGRTMIN+4 = poweroff, ...)
  cd "$R"
  mkdir -p .sdbox-oldroot
  pivot_root . .sdbox-oldroot
  cd /
  umount -l /.sdbox-oldroot
  rmdir /.sdbox-oldroot
  exec setpriv --bounding-set "-${drop//,/,-}" -- /usr/bin/env -i container=sdbox \
       container_host_pid="$hostpid" TERM=linux SYSTEMD_COLORS=0 LANG=C.UTF-8 \
       /lib/systemd/systemd --show-status=yes
}

# ---------------------------------------------------------------- phase 1
up() {
  check_prereqs
  if is_up; then log "container '$NAME' already running (PID 1 = $(read_pid pid1))"; read_pid pid1; return 0; fi
  [ -d "$STATE" ] && cleanup_state
  mkdir -p "$STATE"
  local t0; t0=$(now)
  make_cgroups
  # `script` gives us a pty for /dev/console and logs it to console.log;
  # setsid: the container must not share our session / controlling terminal
  SHELL=/bin/sh setsid script -qfe -c "$(printf '%q ' "$SELF" __launch)" "$STATE/console.log" \
        </dev/null >/dev/null 2>&1 &
  echo $! > "$STATE/launcher.pid"
  local i p=
  for i in $(seq 1 200); do
    p=$(read_pid pid1); [ -n "$p" ] && break
    pid_alive "$(read_pid launcher.pid)" || break
    sleep 0.05
  done
  [ -n "$p" ] || { tail -n 30 "$STATE/console.log" >&2 || true; down_quiet; die "container did not start"; }
  # wait for the manager's private socket, then for boot to finish
  local deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  until [ -S "/proc/$p/root/run/systemd/private" ]; do
    pid_alive "$p" || { tail -n 30 "$STATE/console.log" >&2 || true; down_quiet; die "systemd died during boot"; }
    [ "$(date +%s)" -lt $deadline ] || { down_quiet; die "timeout waiting for systemd"; }
    sleep 0.05
  done
  local st
  st=$(timeout "$BOOT_TIMEOUT" nsenter -t "$p" -a -r -w /usr/bin/env -i PATH=$INNER_PATH \
         systemctl is-system-running --wait 2>/dev/null || true)
  log "booted '$NAME' in $(elapsed "$t0")s: state=${st:-unknown}, PID 1 = host PID $p"
  case "$st" in
    running) ;;
    degraded) log "degraded; failed units:"; in_ct systemctl --failed --no-legend >&2 || true;;
    *) log "boot did not finish (state '$st')"; tail -n 30 "$STATE/console.log" >&2 || true
       down_quiet; return 1;;
  esac
  echo "$p"
}

cleanup_state() {
  remove_cgroups
  rm -rf --one-file-system "$STATE"
}

down() {
  need_root
  [ -d "$STATE" ] || { log "container '$NAME' not running"; return 0; }
  local t0 p l u i
  t0=$(now)
  p=$(read_pid pid1); l=$(read_pid launcher.pid); u=$(read_pid unshare.pid)
  if is_ours_pid1 "$p"; then
    kill -s RTMIN+4 "$p" 2>/dev/null || true          # = systemctl poweroff
    for i in $(seq 1 300); do pid_alive "$p" || break; sleep 0.05; done
    if pid_alive "$p"; then
      log "PID 1 ($p) still alive after 15s, SIGKILL (kills the whole PID namespace)"
      kill -s KILL "$p" 2>/dev/null || true
    fi
  fi
  # the launchers exit by themselves once PID 1 is gone; signal them (after
  # checking they are still ours) only if they hang
  for i in $(seq 1 100); do
    { pid_matches "$u" unshare || pid_matches "$l" script; } || break
    sleep 0.05
  done
  pid_matches "$u" "$SELF" && kill -s KILL "$u" 2>/dev/null || true
  pid_matches "$l" "$STATE/console.log" && kill -s TERM "$l" 2>/dev/null || true
  cp "$STATE/console.log" "$BASE/$NAME.console.log" 2>/dev/null || true
  cleanup_state
  log "down '$NAME' in $(elapsed "$t0")s (console log kept in $BASE/$NAME.console.log)"
}
down_quiet() { down >/dev/null 2>&1 || true; }

status() {
  if is_up; then
    echo "container '$NAME' is up: PID 1 = host PID $(read_pid pid1), state dir $STATE"
    in_ct systemctl status --no-pager 2>&1 | head -n 40 || true
  else
    echo "container '$NAME' is not running"; return 3
  fi
}

cp_in() {
  [ $# = 2 ] || die "usage: cp SRC DST"
  [ -f "$1" ] || die "$1: not a file"
  in_ct /bin/sh -c 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"' sh "$2" \
    "$(stat -c %a "$1")" < "$1"
}

# ---------------------------------------------------------------- main
case "$CMD" in
  __launch) launch;;
  __inner) inner;;
  __inner2) inner2;;
  up) up;;
  down) down;;
  status) status;;
  exec) [ $# -ge 1 ] || die "usage: exec CMD..."; in_ct "$@";;
  cp) cp_in "$@";;
  *) die "unknown command '$CMD' (try --help)";;
esac
