#!/usr/bin/env bash
# Builds baton's distro packages from a checkout: target/packages/baton_V-R_amd64.deb
# (cargo-deb) and target/packages/baton-V-R.x86_64.rpm (rpmbuild -bb packaging/baton.spec),
# then runs lintian and rpmlint on them. Installs its own tools first (idempotent):
#   cargo-deb (cargo install --locked, pinned; cached in ~/.cargo/bin)
#   rpm (rpm, rpmbuild), lintian, rpmlint, dpkg-dev (dpkg-shlibdeps), binutils (strip) via apt
#
# Usage: packaging/build.sh [--tools-only] [--no-build] [--no-lint] [--revision N] [--out DIR]
#   --tools-only  only install the tools (tests/setup.sh uses this)
#   --no-build    package the existing release build (target/release/baton and
#                 target/release/examples/hello) instead of running cargo build first
#   --no-lint     skip lintian and rpmlint (tests/packaging.rs runs them itself)
#   --revision N  package revision: Debian revision and RPM Release (default 1)
#   --out DIR     where the packages go (default target/packages)
# Environment: BATON_MAINTAINER="Name <email>" (Maintainer / Packager; default a placeholder),
#   SOURCE_DATE_EPOCH (changelog dates; default: the last commit's date).
# Prints the paths of the two packages, one a line, as its last two lines.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
MAINTAINER=${BATON_MAINTAINER:-The baton developers <baton@example.org>}
TOOLS_ONLY=0 BUILD=1 LINT=1 REVISION=1 OUT=target/packages
while [ $# -gt 0 ]; do
  case "$1" in
    --tools-only) TOOLS_ONLY=1; shift;;
    --no-build) BUILD=0; shift;;
    --no-lint) LINT=0; shift;;
    --revision) REVISION=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 2;;
  esac
done
[[ $REVISION =~ ^[0-9]+$ ]] || { echo "build.sh: --revision must be a number" >&2; exit 2; }
log() { echo "build.sh: $*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
for c in rpmbuild:rpm rpm:rpm lintian:lintian rpmlint:rpmlint dpkg-shlibdeps:dpkg-dev \
         dpkg-deb:dpkg strip:binutils gzip:gzip; do
  command -v "${c%%:*}" >/dev/null 2>&1 || need_apt+=("${c#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  log "installing cargo-deb $CARGO_DEB_VERSION (cargo install, about a minute)"
  cargo install --quiet --locked "cargo-deb@$CARGO_DEB_VERSION"
fi
[ $TOOLS_ONLY = 1 ] && exit 0

# ---------------------------------------------------------------- binaries
if [ $BUILD = 1 ]; then
  cargo build --release --locked --bins --examples
fi
BATON=target/release/baton HELLO=target/release/examples/hello
for f in "$BATON" "$HELLO"; do
  [ -x "$f" ] || { echo "build.sh: $f is missing: run cargo build --release --bins --examples" >&2; exit 1; }
done
VERSION=$("$BATON" --version | awk '{print $2}')
[ -n "$VERSION" ] || { echo "build.sh: cannot read the version from $BATON --version" >&2; exit 1; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# ---------------------------------------------------------------- generated files
# (paths referenced by [package.metadata.deb] in Cargo.toml and by packaging/baton.spec)
GEN=target/packages/gen
rm -rf "$GEN"
mkdir -p "$GEN" "$OUT"
"$BATON" generate man --out "$GEN/man"
"$BATON" generate completions bash zsh fish --out "$GEN/completions"
cat > "$GEN/changelog" <<EOF
baton ($VERSION-$REVISION) unstable; urgency=medium

  * Package of baton $VERSION (packaging/build.sh --revision $REVISION).

 -- $MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# ---------------------------------------------------------------- .deb
DEB=$(cargo deb --no-build --quiet --locked --deb-revision "$REVISION" --maintainer "$MAINTAINER" \
        --output "$OUT/" | tail -n 1)
[ -f "$DEB" ] || { echo "build.sh: cargo deb did not report its output ($DEB)" >&2; exit 1; }
# cargo-deb writes no md5sums control file; add it (dpkg --verify and debsums use it).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
dpkg-deb -R "$DEB" "$T/deb"
touch -d "@$SOURCE_DATE_EPOCH" "$T/deb"
(cd "$T/deb" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
   | xargs -0 md5sum) > "$T/deb/DEBIAN/md5sums"
chmod 644 "$T/deb/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz -b "$T/deb" "$DEB" >/dev/null

# ---------------------------------------------------------------- .rpm
STAGE=$GEN/rpm-stage
mkdir -p "$STAGE/man" "$STAGE/completions"
strip --strip-unneeded -o "$STAGE/baton" "$BATON"
strip --strip-unneeded -o "$STAGE/hello-worker" "$HELLO"
cp "$GEN"/man/*.1 "$GEN"/man/*.5 "$STAGE/man/" && gzip -9n "$STAGE"/man/*.1 "$STAGE"/man/*.5
cp "$GEN"/completions/* "$STAGE/completions/"
rpmbuild -bb --quiet \
  --define "_topdir $T/rpmbuild" \
  --define "_rpmdir $(realpath "$OUT")" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "baton_version $VERSION" \
  --define "baton_release $REVISION" \
  --define "baton_maintainer $MAINTAINER" \
  --define "baton_date $(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')" \
  --define "stage $(realpath "$STAGE")" \
  --define "srcdir $(pwd)" \
  packaging/baton.spec
RPM=$OUT/baton-$VERSION-$REVISION.$(rpm --eval '%_arch').rpm
[ -f "$RPM" ] || { echo "build.sh: rpmbuild did not write $RPM" >&2; exit 1; }

# ---------------------------------------------------------------- lint
if [ $LINT = 1 ]; then
  lintian --fail-on error,warning --display-info "$DEB" || { log "lintian failed"; exit 1; }
  rpmlint -c packaging/rpmlint.toml "$RPM" || { log "rpmlint failed"; exit 1; }
fi
echo "$DEB"
echo "$RPM"
