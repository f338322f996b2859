#!/bin/sh
# deploy.sh: one deploy of a baton-supervised service with the releases layout
# (README: "Releases, history and rollback"). Installed by the packages as
# /usr/share/doc/baton/examples/deploy.sh; copy it and adapt it. Run it with --help.
set -eu
LC_ALL=C
export LC_ALL

usage() {
	cat <<'EOF'
Usage: deploy.sh --service NAME --root DIR [OPTIONS] -- BUILD_COMMAND [ARG...]

Deploys one release of a service that baton supervises, with the layout
  DIR/releases/<stamp>/   one directory per deploy, never changed once built
  DIR/current -> releases/<stamp>
(baton's config runs the app from DIR/current). DIR/releases may be a symlink
(releases on another disk): every path is compared resolved.

  1. creates DIR/releases/<stamp> (UTC, e.g. 20261202-140512; -02, -03, ...
     when that second's is taken) and runs BUILD_COMMAND in it, with
     RELEASE_DIR (the new directory) and PREVIOUS_RELEASE (the directory
     current pointed at, resolved, or empty) in its environment: e.g.
       -- sh -c 'git clone -q --depth 1 https://git.example/api.git . && npm ci'
  2. points DIR/current at it atomically (a new link, DIR/current.tmp.PID with
     the script's pid, renamed over the old; a stale symlink of that name is
     replaced, anything else there is a failure);
  3. reloads: systemctl reload NAME, which waits for baton's new generation
     (its output, kept to be quoted, is shown on stderr when it ends).
     When the reload command fails (a timeout, a command not found), it asks
     baton (baton status --config FILE, each second, at most 10 min) until
     no rollout is in progress, then goes by what serves: the new release
     (deployed, exit 0, saying so) or not (a failure: see below);
  4. on success, prunes DIR/releases: only the directories it made (named by
     a stamp), keeping the newest N of them, current, and every release that
     `baton history --releases` names (those of generations that served: the
     ones `baton rollback` may start again; a release only failed generations
     ran is pruned). Any other name (releases/1 made by hand) is left alone.
     A release of a failed deploy (marked by a file .deploy-failed in it) does
     not count toward N and is pruned by the next successful deploy
     (unless kept as above).
     With no answer from baton (nor its history file), prunes nothing.

On failure (build, flip or reload) it exits 1: current is pointed back at the
previous release (baton keeps serving it), the failed release directory is
left for inspection with a file .deploy-failed saying why, and the reason is
printed: baton's, when its last reload tried the new release, else the reload
command's own output and exit status (or that baton does not answer).

Interrupted (SIGINT, Ctrl-C; SIGTERM, a cancelled CI job; SIGHUP), it stops
the build or the reload command and the processes they started (SIGTERM,
SIGKILL after 5 s), then: during the build, leaves current unchanged; after
the flip, before the outcome is known, points current back as on failure.
Either way the new release is left marked .deploy-failed ("interrupted"),
the log says what was done, and the exit status is 130 (INT), 143 (TERM) or
129 (HUP). A reload that reached baton goes on without the script: baton may
still roll the new release out, so check `baton status` before deploying
again. Interrupted while pruning (deployed), it stops pruning. The lock is
released in every case.

Refused before anything is done: a DIR (or DIR/releases) whose resolved path
has a newline or another control character (baton names releases one per
line), and a DIR/current that is a directory (a build in place).

The build and the reload command run without the lock's descriptor: a process
they leave behind does not hold the lock.

Options:
  --service NAME     the systemd service (baton's config: /etc/baton/NAME.toml)
  --root DIR         the directory holding releases/ and current
  --keep N           stamp releases kept besides those named above (1 to 10000,
                     default 5)
  --config FILE      baton's config, for `baton history` and `baton status`
                     (default /etc/baton/NAME.toml)
  --reload-cmd CMD   run (sh -c) instead of `systemctl reload NAME`, e.g. outside
                     systemd: '"$BATON" reload --config /srv/api/api.toml'
  -h, --help         this help

Environment: BATON, the baton binary (default: baton in PATH); the script
exports it, so that a --reload-cmd may run "$BATON".
Exit status: 0 deployed; 1 build, flip or reload failed (current points back),
or another deploy of DIR runs, or DIR/current is a directory; 2 usage error
(or a DIR whose path has a control character); 129, 130, 143 interrupted.
EOF
}

die_usage() {
	printf '%s\n' "deploy.sh: $*" "Try deploy.sh --help" >&2
	exit 2
}

# printf, not echo: dash's echo turns a backslash in a path into an escape; never fails (a
# terminal hung up, a log reader gone: the interrupt handler goes on)
log() { printf '%s\n' "deploy.sh: $*" >&2 || true; }

service='' root='' keep=5 config='' reload_cmd=''
while [ $# -gt 0 ]; do
	case $1 in
	--service | --root | --keep | --config | --reload-cmd)
		[ $# -ge 2 ] || die_usage "$1 needs a value"
		case $1 in
		--service) service=$2 ;;
		--root) root=$2 ;;
		--keep) keep=$2 ;;
		--config) config=$2 ;;
		--reload-cmd) reload_cmd=$2 ;;
		esac
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	--)
		shift
		break
		;;
	*) die_usage "unknown argument: $1" ;;
	esac
done
[ -n "$service" ] || die_usage "--service is required"
[ -n "$root" ] || die_usage "--root is required"
[ $# -gt 0 ] || die_usage "no build command after --"
# digits only, and at most 5 of them before any arithmetic (`[` fails on 20 digits)
case $keep in
'' | *[!0-9]*) die_usage "--keep takes a number from 1 to 10000, not '$keep'" ;;
esac
if [ ${#keep} -gt 5 ] || [ "$keep" -lt 1 ] || [ "$keep" -gt 10000 ]; then
	die_usage "--keep takes a number from 1 to 10000, not '$keep'"
fi
: "${config:=/etc/baton/$service.toml}"
: "${reload_cmd:=systemctl reload $service}"
# exported: a --reload-cmd may run "$BATON" (baton need not be on PATH)
BATON=${BATON:-baton}
export BATON
baton=$BATON

# resolve DIR: sets $resolved to DIR's resolved path (symlinks and .. gone), kept whole
# even when it ends in a newline (a command substitution drops trailing newlines: hence the
# dot, removed with the newline before it); fails when DIR is no directory.
resolve() {
	resolved=$(cd "$1" 2>/dev/null && pwd -P && echo .) || return 1
	resolved=${resolved%?.}
}

# A path that has a newline (or another control character) cannot be compared with what
# baton says: `baton history --releases` prints one path per line, `baton status` shows
# control characters replaced. Refused before anything is done.
refuse_control() {
	case $2 in
	*[[:cntrl:]]*)
		die_usage "$1 (resolved: $2) has a newline or another control character in its" \
			"path: baton names releases one per line, so no release could be told from" \
			"another; use a path without one. Nothing was done"
		;;
	esac
}

given_root=$root
resolve "$given_root" || die_usage "no directory $given_root"
root=$resolved
refuse_control "--root $given_root" "$root"
releases=$root/releases
current=$root/current
if [ -e "$releases" ] || [ -L "$releases" ]; then
	resolve "$releases" || die_usage "$releases is not a directory (a symlink to nothing?)"
	refuse_control "$releases" "$resolved"
fi

# A build in place: current is the app's own directory, which no rename may replace. Said
# before anything is created (releases/, the lock).
if [ -e "$current" ] && [ ! -L "$current" ]; then
	log "$current is a directory, not a symlink (a build in place?): move it to" \
		"$releases/<name>, then ln -s releases/<name> $current, and deploy again;" \
		"nothing was done"
	exit 1
fi

mkdir -p "$releases"
# releases/ itself may be a symlink (releases on another disk): baton names releases by
# their resolved paths, so every comparison below is between resolved paths.
resolve "$releases"
releases_dir=$resolved

# One deploy of a root at a time: a second one would flip current under the first, and the
# first's failure would point current back over the second's success. The lock is fd 9,
# which every command the script runs that may leave a process behind (the build, the
# reload command) gets closed (9>&-): such a process would hold the lock.
lock=$root/.deploy.lock
exec 9>>"$lock"
if ! flock -n 9; then
	log "another deploy of $root is running (it holds $lock); nothing was done"
	exit 1
fi

# What current points at now: the link's own text, put back as it was on failure.
previous='' previous_dir=''
if [ -L "$current" ]; then
	previous=$(readlink "$current")
	if resolve "$current"; then
		previous_dir=$resolved
	fi
fi

# Points current at $1 (a link's text) atomically: a new link renamed over the old
# one (`ln -sfn` alone unlinks, then creates: a process starting in between finds
# no current). The new link's name has the script's pid (current.tmp.PID): no leftover
# of another run (a current.tmp an older script or a person left) is in the way. Under the
# lock no other deploy uses it: a symlink of that name is a stale one (a killed deploy's,
# the pid reused) and is replaced; anything else is refused. Fails, with the reason in
# $flip_error, leaving current as it was.
tmp_link=$current.tmp.$$
point_current() {
	flip_error=''
	if [ -L "$tmp_link" ]; then
		rm -f "$tmp_link"
	elif [ -e "$tmp_link" ]; then
		flip_error="$tmp_link is in the way and is not a symlink (remove it)"
		return 1
	fi
	# -T: never a link made inside a directory of that name
	if ! flip_error=$(ln -sT "$1" "$tmp_link" 2>&1); then
		flip_error=${flip_error:-ln -sT $1 $tmp_link failed}
		return 1
	fi
	if ! flip_error=$(mv -T "$tmp_link" "$current" 2>&1); then
		flip_error=${flip_error:-mv -T $tmp_link $current failed}
		rm -f "$tmp_link"
		return 1
	fi
}

# Children (the build, the reload command) run in the background, waited for: an interrupt
# (INT, TERM, HUP) is handled at once, not when the child ends. They keep the script's
# stdin (fd 8, a copy: a background command's stdin would be /dev/null), not the lock's
# descriptor. $child is the one running.
child=''
{ command exec 8<&0; } 2>/dev/null || exec 8</dev/null

# the pids of $1's descendants, from /proc (Linux); the command of a process (in
# parentheses) may have spaces or parentheses: its state and parent follow the last ") "
descendants() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
		{ rest = $0; if (!sub(/.*\) /, "", rest)) next; split(rest, f, " "); parent[$1] = f[2] }
		END {
			n = 1; q[1] = root
			for (k = 1; k <= n; k++) for (p in parent) if (parent[p] == q[k]) q[++n] = p
			for (k = 2; k <= n; k++) print q[k]
		}' || true
}

# whether any of the pids $* runs (exists and is no zombie)
any_running() {
	for pid in "$@"; do
		st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		st=${st##*) }
		case $st in
		Z* | X*) ;;
		*) return 0 ;;
		esac
	done
	return 1
}

# Stops the running child and every process it started (listed first: once the child is
# gone they are no longer its descendants): SIGTERM, then SIGKILL to those still running
# after 5 s. A process that left the tree (a daemon, double-forked) is not found.
stop_child() {
	[ -n "$child" ] || return 0
	# shellcheck disable=SC2046 # one pid a word
	set -- "$child" $(descendants "$child")
	kill -TERM "$@" 2>/dev/null || true
	waited=0
	while any_running "$@" && [ "$waited" -lt 50 ]; do
		sleep 0.1
		waited=$((waited + 1))
	done
	if any_running "$@"; then
		log "still running 5 s after SIGTERM: killing $*"
		kill -KILL "$@" 2>/dev/null || true
	fi
	wait "$child" 2>/dev/null || true
	child=''
}

# Temporary files, removed however the script ends.
reload_out='' errors=''
cleanup() {
	for f in "$reload_out" "$errors"; do
		if [ -n "$f" ]; then
			rm -f "$f"
		fi
	done
	if [ -L "$tmp_link" ]; then
		rm -f "$tmp_link"
	fi
}
trap cleanup EXIT

# What an interrupt does depends on how far the deploy went ($phase):
#   start     no release made: nothing to undo;
#   build     the release is being built: it is left, marked .deploy-failed, current is
#             unchanged;
#   reload    current was flipped, no decision yet (the reload command, or asking baton):
#             current is pointed back (as on failure) and the release marked, but baton may
#             have the reload and go on rolling the release out: `baton status` says;
#   failing   the failure path runs (short): signals are ignored until it exits 1;
#   pruning   deployed; pruning stops where it is.
# The child (build, reload command) is stopped first; exit status 128 + the signal's number.
phase=start
interrupted() {
	trap '' INT TERM HUP
	# a log reader gone: writing fails, not kills
	trap '' PIPE
	stop_child
	case $phase in
	start)
		log "INTERRUPTED (SIG$1) before a release was made: nothing was done"
		;;
	build)
		mark_failed "interrupted (SIG$1) during the build"
		log "INTERRUPTED (SIG$1) during the build: current is unchanged" \
			"(${previous:-none}); $new is left for inspection, marked .deploy-failed"
		;;
	reload)
		if [ -s "$reload_out" ]; then
			cat "$reload_out" >&2 || true
		fi
		if point_back; then
			mark_failed "interrupted (SIG$1) during the reload: current pointed back"
			undone="current pointed back (${previous:-none})"
		else
			mark_failed "interrupted (SIG$1) during the reload: current could not be pointed back"
			undone="current still points at releases/$stamp"
		fi
		log "INTERRUPTED (SIG$1) during the reload of $new: the reload command was stopped," \
			"$undone, and the release is left marked .deploy-failed. baton may still be" \
			"rolling the release out (or serve it): check $baton status --config $config," \
			"then deploy again or roll back"
		;;
	pruning)
		log "interrupted (SIG$1) while pruning: $new was deployed and serves; the rest of" \
			"the pruning is left to the next deploy"
		;;
	esac
	cleanup
	exit "$2"
}
trap 'interrupted INT 130' INT
trap 'interrupted TERM 143' TERM
trap 'interrupted HUP 129' HUP

# 1. a new release directory; mkdir (not -p) fails when it exists: unique even
# for two deploys within one second.
base=$(date -u +%Y%m%d-%H%M%S)
stamp=$base
n=1
until mkdir "$releases/$stamp" 2>/dev/null; do
	n=$((n + 1))
	[ "$n" -le 99 ] || {
		log "cannot create a release directory $releases/$base-NN"
		exit 1
	}
	stamp=$base-$(printf %02d "$n")
done
new=$releases/$stamp
phase=build
# the new release as baton will name it
new_dir=$releases_dir/$stamp
log "release $new (previous: ${previous:-none})"

# A failed deploy's release is left for inspection with this file, which says why; it does
# not count toward --keep (step 4).
mark_failed() {
	printf '%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC'): $*" >"$new/.deploy-failed" || true
}

# 2. the build, in the new directory, without the lock's descriptor
status=0
(cd "$new" && RELEASE_DIR=$new PREVIOUS_RELEASE=$previous_dir "$@") <&8 8<&- 9>&- &
child=$!
wait "$child" || status=$?
child=''
if [ "$status" -ne 0 ]; then
	phase=failing
	trap '' INT TERM HUP
	mark_failed "the build failed (exit status $status)"
	log "FAILED: the build failed (exit status $status); current is unchanged" \
		"(${previous:-none}), $new is left for inspection"
	exit 1
fi

# whether $1, a release as baton names it (resolved), is the new release or a directory in it
is_new() {
	case $1 in
	"$new_dir" | "$new_dir"/*) return 0 ;;
	esac
	return 1
}

# baton's status as text: sets $state (serving, rolling-out, ...), $serving_release (the
# release of the serving generation, or empty), $others (how many workers of generations
# other than the serving one: one retiring, or the next one of a rollout) and $last (the
# `last reload:` line without its label). Fails when baton does not answer (the output
# is then in $status_text).
ask_baton() {
	status_text=$("$baton" status --config "$config" 2>&1 9>&-) || return 1
	state=$(printf '%s\n' "$status_text" | sed -n '1s/^baton pid [0-9]* — \([a-z-]*\) — .*/\1/p')
	serving_release=$(printf '%s\n' "$status_text" |
		sed -n 's/^generation [0-9]* (serving): release //p' | head -n 1)
	others=$(printf '%s\n' "$status_text" |
		awk 'table && NF && $2 != "serving" { n++ } /^GEN +ROLE/ { table = 1 } END { print n + 0 }')
	last=$(printf '%s\n' "$status_text" | sed -n 's/^last reload: //p' | head -n 1)
}

# Whether baton's last reload tried the new release and rolled it back ("generation N
# (release NEW) rolled back: ..."), from $last.
tried_new() {
	case $last in
	"FAILED "*"(release $new_dir) rolled back: "* | "FAILED "*"(release $new_dir/"*") rolled back: "*)
		return 0
		;;
	esac
	return 1
}

# The reload command failed (it timed out, or could not run): asks baton until no rollout
# is in progress (at most 10 min), then sets $outcome: "new" (the new release serves),
# "old" (it does not), or "silent" (baton does not answer). A reload waiting for an old
# generation's drain starts once it is gone: the wait goes on while one is left, unless the
# new release serves or was rolled back; else an outcome of "old" is asked twice, a second
# apart (a queued reload reads its config in between).
settle() {
	waited=0 confirmed=0
	while :; do
		if ! ask_baton; then
			outcome=silent
			return 0
		fi
		if [ "$state" != rolling-out ] && [ -n "$serving_release" ] && is_new "$serving_release"; then
			outcome=new
			return 0
		fi
		if [ "$state" != rolling-out ] && tried_new; then
			outcome=old
			return 0
		fi
		if [ "$waited" -ge 600 ]; then
			log "baton's rollout did not end within 10 min (state: ${state:-unknown})"
			outcome=old
			return 0
		fi
		if [ "$state" != rolling-out ] && [ "$others" -eq 0 ]; then
			if [ "$confirmed" -eq 1 ]; then
				outcome=old
				return 0
			fi
			confirmed=1
		else
			confirmed=0
			case $waited in
			0) log "waiting for baton's rollout to end (at most 10 min): $baton status --config $config" ;;
			*0) log "still waiting for baton (${waited}s; state: ${state:-unknown})" ;;
			esac
		fi
		sleep 1
		waited=$((waited + 1))
	done
}

# Points current back at the previous release (or removes it when there was none); says
# so, or why it could not (and how to do it by hand), and then fails.
point_back() {
	if [ -n "$previous" ]; then
		if point_current "$previous"; then
			log "current pointed back -> $previous"
		else
			log "could not point current back ($flip_error): it still points at" \
				"releases/$stamp; point it back by hand: ln -sfn $previous $current"
			return 1
		fi
	elif rm -f "$current"; then
		log "no previous release: current removed"
	else
		log "no previous release, and current could not be removed: remove $current"
		return 1
	fi
}

# 3. current, then the reload (without the lock's descriptor); its output is kept to be
# quoted when it fails, and shown as it is. From the flip on, an interrupt points current
# back (phase reload); a failure of the flip itself leaves current as it was.
reload_out=$(mktemp)
phase=reload
if ! point_current "releases/$stamp"; then
	phase=failing
	trap '' INT TERM HUP
	mark_failed "current could not be pointed at it: $flip_error"
	log "FAILED: current could not be pointed at releases/$stamp: $flip_error;" \
		"current is unchanged (${previous:-none}), $new is left for inspection"
	exit 1
fi
log "current -> releases/$stamp; reloading: $reload_cmd"
rc=0
sh -c "$reload_cmd" >"$reload_out" 2>&1 <&8 8<&- 9>&- &
child=$!
wait "$child" || rc=$?
child=''
cat "$reload_out" >&2
if [ "$rc" -ne 0 ]; then
	said=$(tail -n 3 "$reload_out")
	log "the reload command failed (exit status $rc); asking baton what serves"
	settle
	case $outcome in
	new)
		log "the reload command failed (exit status $rc), but baton serves the new" \
			"release: deployed"
		;;
	silent)
		phase=failing
		trap '' INT TERM HUP
		point_back || true
		mark_failed "the reload command failed (exit status $rc) and baton did not answer"
		log "FAILED: the reload command failed (exit status $rc: ${said:-no output}), and" \
			"baton does not answer ($baton status --config $config: $status_text)"
		log "the failed release $new is left for inspection"
		exit 1
		;;
	old)
		phase=failing
		trap '' INT TERM HUP
		point_back || true
		# baton's reason, when its last reload tried the new release ("generation N (release
		# NEW) rolled back: ..."); else it says nothing of this deploy (a reload that never
		# reached baton, a rejected config): the command's own output says why
		if tried_new; then
			mark_failed "baton rolled it back: $last"
			log "FAILED: the reload failed: last reload: $last"
		else
			mark_failed "the reload command failed (exit status $rc): $said"
			log "FAILED: the reload command failed (exit status $rc): ${said:-no output}" \
				"(baton does not serve the new release; serving: ${serving_release:-none})"
		fi
		log "the failed release $new is left for inspection"
		exit 1
		;;
	esac
fi
phase=pruning
log "deployed: $new serves"

# 4. pruning. Only the script's own release directories (named by a stamp: see step 1)
# are pruned, newest first by name; any other name (releases/1 made by hand, say) is left
# alone and does not count toward --keep, nor does the release of a failed deploy (its
# .deploy-failed file), which is pruned. The releases that baton's history names as those
# a rollback may start again (`baton history --releases`: generations that served, their
# resolved paths, one per line) are kept: the release itself, or one with a directory of it
# named. A release only failed generations ran is pruned like any other. Every comparison
# is between resolved paths: releases/ may be a symlink.
errors=$(mktemp)
if ! named=$("$baton" history --releases --config "$config" 2>"$errors" 9>&-); then
	log "$baton history --releases --config $config did not answer" \
		"($(head -c 300 "$errors")): nothing pruned"
	rm -f "$errors"
	exit 0
fi
rm -f "$errors"
errors=''
cur=''
if resolve "$current"; then
	cur=$resolved
fi

# kept_by_history DIR: whether $named has DIR, or a path under it, as a line
kept_by_history() {
	while IFS= read -r line; do
		case $line in
		"$1" | "$1"/*) return 0 ;;
		esac
	done <<EOF
$named
EOF
	return 1
}

# The script's own releases (step 1's names); a symlink is not one of them.
stamps='' others=0
for path in "$releases"/*; do
	if [ ! -d "$path" ] || [ -L "$path" ]; then
		continue
	fi
	name=${path##*/}
	case $name in
	[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9] | \
		[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9])
		stamps="$stamps$name
"
		;;
	*) others=$((others + 1)) ;;
	esac
done
case $others in
0) ;;
1) log "1 hand-made directory (its name is not a stamp) left alone in $releases" ;;
*) log "$others hand-made directories (their names are not stamps) left alone in $releases" ;;
esac
count=0
# newest first: the stamps sort by time (a second deploy in one second, -02, after the first)
for name in $(printf '%s' "$stamps" | sort -r); do
	path=$releases/$name
	resolve "$path" || continue
	real=$resolved
	if [ ! -e "$path/.deploy-failed" ]; then
		count=$((count + 1))
		[ "$count" -gt "$keep" ] || continue
	fi
	if [ "$real" = "$new_dir" ] || [ "$real" = "$cur" ]; then
		continue
	fi
	if kept_by_history "$real"; then
		continue
	fi
	log "pruning $path"
	rm -rf -- "$path"
done
