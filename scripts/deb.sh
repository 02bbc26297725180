#!/usr/bin/env bash
# Builds the Debian package portcullis_<version>_<arch>.deb with dpkg-deb alone: the binary
# (stripped), /etc/portcullis/portcullis.yaml as a conffile (config/portcullis.yaml with its
# state under /var/lib/portcullis, checked with the binary's check-config), the systemd unit
# (deploy/portcullis.service) and the maintainer scripts in deploy/debian/. Prints the
# package's path. `make deb` builds the release binary first.
#
#   scripts/deb.sh [--fast] [BINARY [OUTDIR]]
#
# BINARY: target/release/portcullis by default; OUTDIR: target/debian. --fast compresses with
# gzip -1 instead of dpkg's xz (for tests). PORTCULLIS_DEB_VERSION replaces the version from
# Cargo.toml (the package test builds an upgrade with it); PORTCULLIS_DEB_MAINTAINER the
# Maintainer field.
set -euo pipefail
umask 022

compression=(-Zxz)
if [ "${1:-}" = --fast ]; then
  compression=(-Zgzip -z1)
  shift
fi
# Paths given are the caller's; the defaults are in the repository.
binary=${1:+$(realpath -m "$1")}
out=${2:+$(realpath -m "$2")}
cd "$(dirname "$0")/.."
binary=${binary:-$PWD/target/release/portcullis}
out=${out:-$PWD/target/debian}

fail() {
  echo "deb: $*" >&2
  exit 1
}

[ -x "$binary" ] || fail "no binary at $binary (cargo build --release --bin portcullis)"
cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$cargo_version" ] || fail "no version in Cargo.toml's [package]"
built=$("$binary" --version) || fail "$binary --version failed"
[ "$built" = "portcullis $cargo_version" ] ||
  fail "$binary is \`$built\`, Cargo.toml says $cargo_version: build it again"
# Cargo's pre-releases (1.0.0-rc.1) sort before the release in Debian only with `~`.
version=${PORTCULLIS_DEB_VERSION:-${cargo_version//-/\~}}
arch=$(dpkg --print-architecture)
maintainer=${PORTCULLIS_DEB_MAINTAINER:-Portcullis team <portcullis@example.com>}
# Dates in the package are the last commit's, so that a rebuild of it is the same.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps expects the tree at debian/<package> beside debian/control.
mkdir -p "$work/debian"
root=$work/debian/portcullis
doc=$root/usr/share/doc/portcullis

# config/portcullis.yaml, with the store, the secret key and the mail directory in
# /var/lib/portcullis. Every line replaced must be there, so that a change to the example is
# noticed here rather than shipped with a path under /etc.
packaged_config() {
  local example=config/portcullis.yaml line
  for line in '^  path: data/portcullis\.db' '^  secret_key_file: data/secret\.key' \
    '^  dir: data/outbox' '^# Check it with: portcullis check-config -c config/portcullis\.yaml$'; do
    grep -q "$line" "$example" || fail "$example has no line matching '$line'; update scripts/deb.sh"
  done
  sed -e 's|^\(  path: \)data/|\1/var/lib/portcullis/|' \
    -e 's|^\(  secret_key_file: \)data/|\1/var/lib/portcullis/|' \
    -e 's|^\(  dir: \)data/|\1/var/lib/portcullis/|' \
    -e 's|check-config -c config/portcullis\.yaml$|check-config -c /etc/portcullis/portcullis.yaml|' \
    -e '1i # Installed by the portcullis package. After an edit: systemctl reload portcullis (a new' \
    -e '1i # listen, admin_listen or store needs: systemctl restart portcullis).' \
    "$example"
}

install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/portcullis" "$root/lib/systemd/system" "$doc"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  -o "$root/usr/bin/portcullis" "$binary"
chmod 0755 "$root/usr/bin/portcullis"
packaged_config >"$root/etc/portcullis/portcullis.yaml"
chmod 0640 "$root/etc/portcullis/portcullis.yaml"
checked=$("$binary" check-config -c "$root/etc/portcullis/portcullis.yaml" 2>&1) ||
  fail "the packaged config is invalid: $checked"
install -m 0644 deploy/portcullis.service "$root/lib/systemd/system/portcullis.service"
install -m 0644 deploy/debian/copyright "$doc/copyright"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf '%s\n' "portcullis ($version) unstable; urgency=medium" "" \
  "  * Built from commit $commit by scripts/deb.sh." "" \
  " -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
echo /etc/portcullis/portcullis.yaml >"$root/DEBIAN/conffiles"
(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

printf 'Source: portcullis\n\nPackage: portcullis\nArchitecture: any\n' >"$work/debian/control"
if command -v dpkg-shlibdeps >/dev/null; then
  libs=$(cd "$work" && dpkg-shlibdeps -O -edebian/portcullis/usr/bin/portcullis)
  libs=${libs#shlibs:Depends=}
else
  libs="libc6 (>= 2.36), libgcc-s1"
fi
cat >"$root/DEBIAN/control" <<EOF
Package: portcullis
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $libs, adduser | passwd
Section: net
Priority: optional
Description: authenticating reverse proxy for on-premise web portals
 Portcullis stands in front of a web portal and lets nobody through without a
 session: it serves its own login page, keeps sessions, offers two-step
 verification and password recovery, and hands the portal the signed-in
 identity in request headers clients cannot forge. Built on Cloudflare's
 Pingora. Runs as the systemd service portcullis, configured in
 /etc/portcullis/portcullis.yaml, with its state in /var/lib/portcullis.
EOF

mkdir -p "$out"
deb=$out/portcullis_${version}_$arch.deb
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
