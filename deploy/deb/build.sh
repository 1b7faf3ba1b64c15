#!/usr/bin/env bash
# Builds the taskd Debian package with dpkg-deb: deploy/deb/build.sh [OUTDIR] (default bin).
# Writes OUTDIR/taskd_VERSION_ARCH.deb and prints its path. Needs go, git and dpkg-deb;
# downloads nothing. The package tree is staged in a temporary directory (under $TMPDIR),
# removed on exit.
#
# Environment: GO (default go); VERSION (default: git describe, as the Makefile's); GOARCH
# (default: go env GOARCH) picks the architecture; DEB_MAINTAINER sets the Maintainer field;
# SOURCE_DATE_EPOCH (default: the last commit's time) sets the files' dates.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${1:-bin}"
GO="${GO:-go}"

command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found: install dpkg (Debian, Ubuntu) and retry" >&2; exit 1; }

version="${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}"
# A Debian version must start with a digit, and "-" separates the Debian revision: v1.2.0-3-gabc
# becomes 1.2.0+3.gabc; a version without a tag (a bare commit such as 59aef44, or dev) becomes
# 0~59aef44, which sorts before any tagged release.
debversion="${version#v}"
if ! [[ "$debversion" =~ ^[0-9]+\.[0-9] ]]; then
	debversion="0~$debversion"
fi
debversion="$(printf '%s' "$debversion" | sed -e 's/-/+/' -e 's/-/./g' -e 's/[^A-Za-z0-9.+~]/./g')"

goarch="$(GOOS=linux "$GO" env GOARCH)"
case "$goarch" in
amd64 | arm64 | s390x | riscv64 | ppc64 | loong64) arch="$goarch" ;;
386) arch=i386 ;;
ppc64le) arch=ppc64el ;;
mips64le) arch=mips64el ;;
mipsle) arch=mipsel ;;
arm) if [ "$(GOOS=linux GOARCH=arm "$GO" env GOARM)" = 5 ]; then arch=armel; else arch=armhf; fi ;;
*) echo "build.sh: no Debian architecture known for GOARCH=$goarch" >&2; exit 1 ;;
esac

maintainer="${DEB_MAINTAINER:-The taskd authors <https://github.com/taskd-dev/taskd/issues>}"

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

stage="$(mktemp -d "${TMPDIR:-/tmp}/taskd-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/taskd"

# Static binaries: no libc needed, so the package depends on nothing.
export CGO_ENABLED=0 GOOS=linux GOARCH="$goarch"
"$GO" build -trimpath -ldflags "-X main.version=$version" -o "$pkg/usr/bin/" ./cmd/taskd ./cmd/taskctl
# The example config's one interface runs this worker, so the installed service works as is.
"$GO" build -trimpath -o "$pkg/usr/lib/taskd/echo-worker" ./examples/echo

# The units of deploy/systemd, pointed at where this package installs things (they are
# written for binaries installed by hand under /usr/local).
install -d "$pkg/usr/lib/systemd/system"
for unit in deploy/systemd/*.service deploy/systemd/*.socket; do
	[ -e "$unit" ] || continue
	sed -e 's|/usr/local/bin/|/usr/bin/|g' \
		-e 's|/usr/local/lib/taskd|/usr/lib/taskd|g' \
		-e 's|/usr/local/share/doc/taskd/|/usr/share/doc/taskd/docs/|g' \
		-e 's|Install: see README.md beside this file.|Installed by the taskd Debian package; see /usr/share/doc/taskd/systemd.md.|' \
		"$unit" >"$pkg/usr/lib/systemd/system/$(basename "$unit")"
done
units="$(cd "$pkg/usr/lib/systemd/system" && ls)"
install -D -m 0644 deploy/systemd/taskd.sysusers "$pkg/usr/lib/sysusers.d/taskd.conf"
install -D -m 0644 deploy/systemd/taskd.tmpfiles "$pkg/usr/lib/tmpfiles.d/taskd.conf"
install -D -m 0644 deploy/deb/taskd.yaml "$pkg/etc/taskd/taskd.yaml"

doc="$pkg/usr/share/doc/taskd"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 deploy/systemd/README.md "$doc/systemd.md"
install -D -m 0644 -t "$doc/docs" docs/*.md
{
	cat deploy/deb/copyright
	# The Go modules linked into the binaries, each with its licence text, indented.
	"$GO" version -m "$pkg/usr/bin/taskd" "$pkg/usr/bin/taskctl" "$pkg/usr/lib/taskd/echo-worker" |
		awk '$1 == "dep" { print $2 " " $3 }' | sort -u |
		while read -r mod ver; do
			dir="$("$GO" list -m -f '{{.Dir}}' "$mod" 2>/dev/null || true)"
			lic="$(ls "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* 2>/dev/null | head -n 1 || true)"
			printf '\n%s %s\n' "$mod" "$ver"
			if [ -n "$lic" ]; then
				sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$lic"
			else
				echo " (no licence file found in the module; see its source)"
			fi
		done
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

install -d "$pkg/DEBIAN"
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: taskd
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Section: admin
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Homepage: https://github.com/taskd-dev/taskd
Description: pools of long-lived worker processes with exclusive checkouts
 taskd runs code that blocks, leaks, crashes, keeps per-process state or is
 written in another language in pools of worker processes, and gives
 applications exclusive checkouts of a worker. This package holds the daemon
 (taskd), its command-line client (taskctl), a systemd service and an example
 worker (echo) that the example configuration in /etc/taskd serves.
CONTROL
echo /etc/taskd/taskd.yaml >"$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	sed -e "s|@UNITS@|$(echo $units)|" "deploy/deb/$script" >"$pkg/DEBIAN/$script"
	chmod 0755 "$pkg/DEBIAN/$script"
done

mkdir -p "$out"
deb="$out/taskd_${debversion}_${arch}.deb"
# xz at level 1: every dpkg reads it, and it takes seconds where the default level takes ~20 s
# on 2 cores for a package 6% smaller.
dpkg-deb --root-owner-group -Zxz -z1 --build "$pkg" "$deb" >/dev/null
echo "$deb"
