#!/usr/bin/env bash
# Builds the Debian packages posguard-agent and posguard-collector from the workspace:
# release binaries (stripped), units, sysusers.d, tmpfiles.d, man pages
# made from --help (help2man), maintainer scripts from packaging/deb/, and the dependencies
# dpkg-shlibdeps computes from the binaries. Why dpkg-deb and not cargo-deb or debhelper:
# docs/operations.md, "Packages".
#
#   ./scripts/build-debs.sh [--version VERSION] [--out DIR] [--no-build]
#
# VERSION defaults to the workspace's version (Cargo.toml), with $DEB_VERSION_SUFFIX appended
# (e.g. DEB_VERSION_SUFFIX=+up1 builds a higher version, for upgrade tests). DIR defaults to
# target/debian. --no-build packages the release binaries already in the target directory.
# Prints the paths of the two .deb files, one a line, on stdout (everything else on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${DEB_PACKAGES[@]}"

usage() {
  echo "usage: $0 [--version VERSION] [--out DIR] [--no-build]" >&2
  exit 64
}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
version=""
out="$target_dir/debian"
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --version) [ $# -ge 2 ] || usage; version=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage ;;
    *) echo "build-debs: unknown argument '$1'" >&2; usage ;;
  esac
done
if [ -z "$version" ]; then
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
  version="$version${DEB_VERSION_SUFFIX:-}"
fi
# Debian's version syntax (native package: no revision); dpkg-deb would refuse it later anyway,
# with a less clear message.
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "build-debs: '$version' is not a Debian native version (digits first, then letters, digits, . + ~): fix --version or DEB_VERSION_SUFFIX" >&2
  exit 64
fi
arch=$(dpkg --print-architecture)
bin_dir="$target_dir/release"

if [ "$build" = 1 ]; then
  section "release build" >&2
  CARGO_INCREMENTAL=0 cargo build --release --locked --bins \
    -p posguard-agent -p posguard-provision -p posguard-collector >&2
fi
for b in posguard-agent posguardctl posguard-provision posguard-collector; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "build-debs: $bin_dir/$b is missing: run without --no-build" >&2
    exit 1
  fi
done

# Reproducible: timestamps of the files and the changelog come from the last commit.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# install_bin DEST BIN...: the release binaries, stripped as dh_strip does. The release profile
# strips too, but not the collector: its per-package override (opt-level 3, Cargo.toml) leaves
# its symbol table in (seen with cargo 1.95; lintian's unstripped-binary-or-object).
install_bin() {
  local dest=$1 b
  shift
  for b in "$@"; do
    install -m 0755 "$bin_dir/$b" "$dest/$b"
    strip --remove-section=.comment --remove-section=.note "$dest/$b"
  done
}

# man_page BIN SECTION DESCRIPTION DEST_DIR: a man page from the binary's --help and --version.
man_page() {
  local bin=$1 sect=$2 desc=$3 dest=$4
  mkdir -p "$dest/usr/share/man/man$sect"
  help2man --no-info --no-discard-stderr --section="$sect" --name="$desc" \
    --source="posguard $version" "$bin_dir/$bin" >"$work/$bin.$sect"
  gzip -9n <"$work/$bin.$sect" >"$dest/usr/share/man/man$sect/$bin.$sect.gz"
}

# stage PKG: the common part of a package tree (docs, changelog, copyright, lintian overrides).
stage_common() {
  local pkg=$1 root=$2
  local doc="$root/usr/share/doc/$pkg"
  mkdir -p "$doc" "$root/DEBIAN"
  install -m 0644 packaging/deb/copyright "$doc/copyright"
  install -m 0644 docs/operations.md "$doc/operations.md"
  {
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the posguard workspace, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    echo " -- posguard maintainers <maintainers@posguard.example>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n >"$doc/changelog.gz"
  if [ -f "packaging/deb/$pkg/lintian-overrides" ]; then
    mkdir -p "$root/usr/share/lintian/overrides"
    install -m 0644 "packaging/deb/$pkg/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"
  fi
  local s
  for s in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$pkg/$s" "$root/DEBIAN/$s"
  done
}

# finish PKG ROOT BIN...: control file with the computed dependencies, md5sums, the .deb.
finish() {
  local pkg=$1 root=$2
  shift 2
  local shl_args=() b
  # -eFILE, attached: a separate "-e" "FILE" is read as an empty -e and a plain argument.
  for b in "$@"; do shl_args+=("-e$root/usr/bin/$b"); done
  # dpkg-shlibdeps runs in a source tree (it reads debian/control; the package's tree is
  # debian/<package>, where dpkg-shlibdeps expects it).
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/$pkg/debian/control"
  local shlibs
  shlibs=$(cd "$work/$pkg" && dpkg-shlibdeps -O "${shl_args[@]}" | sed -n 's/^shlibs:Depends=//p')
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
    -e "s/@SHLIBS@/$shlibs/" "packaging/deb/$pkg/control.in" >"$root/DEBIAN/control"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
  chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb="$out/${pkg}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
  realpath "$deb"
}

section "posguard-agent $version" >&2
a="$work/posguard-agent/debian/posguard-agent"
mkdir -p "$a/usr/bin" "$a/usr/lib/systemd/system" "$a/usr/lib/sysusers.d" "$a/usr/lib/tmpfiles.d"
install_bin "$a/usr/bin" posguard-agent posguardctl posguard-provision
install -m 0644 systemd/posguard-agent.service "$a/usr/lib/systemd/system/"
install -m 0644 systemd/sysusers.d/posguard.conf "$a/usr/lib/sysusers.d/"
install -m 0644 systemd/tmpfiles.d/posguard.conf "$a/usr/lib/tmpfiles.d/"
man_page posguard-agent 8 "posguard security agent for POS terminals" "$a"
man_page posguardctl 1 "posguard agent's local operator CLI" "$a"
man_page posguard-provision 8 "posguard field provisioning CLI for technicians" "$a"
stage_common posguard-agent "$a"
install -m 0644 docs/provisioning.md docs/local-api.md docs/runbook.md "$a/usr/share/doc/posguard-agent/"
finish posguard-agent "$a" posguard-agent posguardctl posguard-provision

section "posguard-collector $version" >&2
c="$work/posguard-collector/debian/posguard-collector"
mkdir -p "$c/usr/bin" "$c/usr/lib/systemd/system" "$c/usr/lib/sysusers.d" "$c/usr/lib/tmpfiles.d"
install_bin "$c/usr/bin" posguard-collector
install -m 0644 systemd/posguard-collector.service "$c/usr/lib/systemd/system/"
install -m 0644 systemd/sysusers.d/posguard-collector.conf "$c/usr/lib/sysusers.d/"
install -m 0644 systemd/tmpfiles.d/posguard-collector.conf "$c/usr/lib/tmpfiles.d/"
man_page posguard-collector 8 "posguard central collector" "$c"
stage_common posguard-collector "$c"
install -m 0644 docs/collector.md "$c/usr/share/doc/posguard-collector/"
finish posguard-collector "$c" posguard-collector
