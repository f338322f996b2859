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
(baton's config runs the app from DIR/current).

  1. creates DIR/releases/<stamp> (UTC, e.g. 20261202-140512; -02, -03, ...
     when that second's is taken) and runs BUILD_COMMAND in it, with
     RELEASE_DIR (the new directory) and PREVIOUS_RELEASE (the directory
     current pointed at, or empty) in its environment: e.g.
       -- sh -c 'git clone -q --depth 1 https://git.example/api.git . && npm ci'
  2. points DIR/current at it atomically (a new link renamed over the old);
  3. reloads: systemctl reload NAME, which waits for baton's new generation;
  4. on success, prunes DIR/releases: only the directories it made (named by
     a stamp), keeping the newest N of them, current, and every release that
     `baton history --releases` names (those of generations that served: the
     ones `baton rollback` may start again; a release only failed generations
     ran is pruned). Any other name (releases/1 made by hand) is left alone.
     With no answer from baton (nor its history file), prunes nothing.

On failure (build or reload) it exits 1: current is pointed back at the
previous release (baton keeps serving it), the failed release directory is
left for inspection, and baton's reason is printed.

Options:
  --service NAME     the systemd service (baton's config: /etc/baton/NAME.toml)
  --root DIR         the directory holding releases/ and current
  --keep N           stamp releases kept besides those named above (default 5)
  --config FILE      baton's config, for `baton history` and `baton status`
                     (default /etc/baton/NAME.toml)
  --reload-cmd CMD   run (sh -c) instead of `systemctl reload NAME`, e.g. outside
                     systemd: 'baton reload --config /srv/api/api.toml'
  -h, --help         this help

Environment: BATON, the baton binary (default: baton in PATH).
Exit status: 0 deployed; 1 build or reload failed (current points back);
2 usage error.
EOF
}

die_usage() {
	printf '%s\n' "deploy.sh: $*" "Try deploy.sh --help" >&2
	exit 2
}

# printf, not echo: dash's echo turns a backslash in a path into an escape
log() { printf '%s\n' "deploy.sh: $*" >&2; }

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
case $keep in
'' | *[!0-9]*) die_usage "--keep takes a number, not '$keep'" ;;
esac
[ "$keep" -ge 1 ] || die_usage "--keep must be at least 1"
: "${config:=/etc/baton/$service.toml}"
: "${reload_cmd:=systemctl reload $service}"
baton=${BATON:-baton}

given_root=$root
root=$(cd "$given_root" 2>/dev/null && pwd -P) || die_usage "no directory $given_root"
releases=$root/releases
current=$root/current
mkdir -p "$releases"

# One deploy of a root at a time: a second one would flip current under the first, and the
# first's failure would point current back over the second's success.
lock=$root/.deploy.lock
exec 9>>"$lock"
if ! flock -n 9; then
	log "another deploy of $root is running (it holds $lock); nothing was done"
	exit 1
fi

# What current points at now: the link's own text, put back as it was on failure.
previous='' previous_dir=''
if [ -e "$current" ] && [ ! -L "$current" ]; then
	# a build in place: current is the app's own directory, which no rename may replace
	log "$current is a directory, not a symlink (a build in place?): move it to" \
		"$releases/<name>, then ln -s releases/<name> $current, and deploy again;" \
		"nothing was done"
	exit 1
fi
if [ -L "$current" ]; then
	previous=$(readlink "$current")
	previous_dir=$(cd "$current" 2>/dev/null && pwd -P) || previous_dir=''
fi

# Points current at $1 (a link's text) atomically: a new link renamed over the old
# one (`ln -sfn` alone unlinks, then creates: a process starting in between finds
# no current).
point_current() {
	ln -sfn "$1" "$current.tmp"
	mv -T "$current.tmp" "$current"
}

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
log "release $new (previous: ${previous:-none})"

# 2. the build, in the new directory
status=0
(cd "$new" && RELEASE_DIR=$new PREVIOUS_RELEASE=$previous_dir "$@") || status=$?
if [ "$status" -ne 0 ]; then
	log "FAILED: the build failed (exit status $status); current is unchanged" \
		"(${previous:-none}), $new is left for inspection"
	exit 1
fi

# 3. current, then the reload
point_current "releases/$stamp"
log "current -> releases/$stamp; reloading: $reload_cmd"
if ! sh -c "$reload_cmd"; then
	if [ -n "$previous" ]; then
		point_current "$previous"
		log "current pointed back -> $previous"
	else
		rm -f "$current"
		log "no previous release: current removed"
	fi
	# baton's reason: the last reload line of `baton status`
	reason=$("$baton" status --config "$config" 2>&1 | grep '^last reload' || true)
	log "FAILED: the reload failed: ${reason:-no reason from $baton status --config $config (see journalctl -u $service -n 20)}"
	log "the failed release $new is left for inspection"
	exit 1
fi
log "deployed: $new serves"

# 4. pruning. Only the script's own release directories (named by a stamp: see step 1)
# are pruned, newest first by name; any other name (releases/1 made by hand, say) is left
# alone and does not count toward --keep. The releases that baton's history names as those
# a rollback may start again (`baton history --releases`: generations that served, their
# resolved paths, one per line) are kept: the release itself, or one with a directory of it
# named. A release only failed generations ran is pruned like any other.
errors=$(mktemp)
if ! named=$("$baton" history --releases --config "$config" 2>"$errors"); then
	log "$baton history --releases --config $config did not answer" \
		"($(head -c 300 "$errors")): nothing pruned"
	rm -f "$errors"
	exit 0
fi
rm -f "$errors"
cur=$(cd "$current" && pwd -P)

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

# The script's own releases (step 1's names); the directories are not symlinks, and
# $releases is resolved: their paths are the resolved ones the history names.
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
	count=$((count + 1))
	[ "$count" -gt "$keep" ] || continue
	if [ "$path" = "$new" ] || [ "$path" = "$cur" ]; then
		continue
	fi
	if kept_by_history "$path"; then
		continue
	fi
	log "pruning $path"
	rm -rf -- "$path"
done
