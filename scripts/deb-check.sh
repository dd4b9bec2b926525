#!/usr/bin/env bash
# CI check of the Debian packages (scripts/build-debs.sh): lintian (errors fail; warnings are
# listed), the contents and control data of each .deb, then install, reinstall when provisioned,
# upgrade, remove and purge in a Debian 12 chroot, with the maintainer scripts' service
# actions recorded by a policy-rc.d (the standard Debian hook that deb-systemd-invoke consults;
# it denies them, as no systemd runs in a chroot). The systemd side of the same actions
# (a real restart on upgrade) is checked in the VM boot test.
#
#   ./scripts/deb-check.sh [--no-build]
#
# --no-build: package the release binaries already built (after scripts/build-debs.sh).
# Leaves the packages in target/debian/ and a higher version (+up1) in target/debian/upgrade/.
# The chroot's base (debootstrap, ~1 minute once) is cached in $POSGUARD_CI_CACHE
# (default /var/cache/posguard-ci/deb-chroot); each run works on a throwaway copy. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_packages "${DEB_PACKAGES[@]}" debootstrap file

if [ "$(id -u)" -ne 0 ]; then
  echo "deb-check: needs root (chroot); run it as root or in CI" >&2
  exit 1
fi
build_arg=()
case "${1:-}" in
  --no-build) build_arg=(--no-build) ;;
  "") ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 64 ;;
esac

failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}
# check DESCRIPTION COMMAND...: runs the command, a failure is recorded with the description.
check() {
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else fail "$what"; fi
}

work=$(mktemp -d)
root="$work/root"
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

section "building the packages: the version and a higher one for the upgrade"
# Left in target/debian (and target/debian/upgrade) for the VM boot test that follows in CI.
debs=${CARGO_TARGET_DIR:-$PWD/target}/debian
mapfile -t v1 < <(./scripts/build-debs.sh "${build_arg[@]}" --out "$debs")
mapfile -t v2 < <(DEB_VERSION_SUFFIX=+up1 ./scripts/build-debs.sh --no-build --out "$debs/upgrade")
[ ${#v1[@]} -eq 2 ] && [ ${#v2[@]} -eq 2 ] || { echo "deb-check: build-debs.sh did not print two packages" >&2; exit 1; }
agent1=${v1[0]}
collector1=${v1[1]}
agent2=${v2[0]}
collector2=${v2[1]}
printf '%s\n' "${v1[@]}" "${v2[@]}"

section "lintian"
# --fail-on error: errors fail CI; warnings and info are printed for review. Overrides live in
# packaging/deb/<package>/lintian-overrides, each with its reason.
if ! lintian --fail-on error --display-info "$agent1" "$collector1" 2>&1 | tee "$work/lintian.txt"; then
  fail "lintian reports errors (E: lines above)"
fi
echo "lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors, $(grep -c '^W:' "$work/lintian.txt" || true) warnings"

section "contents"
for deb in "$agent1" "$collector1"; do
  dpkg-deb -I "$deb"
  dpkg-deb -c "$deb"
done
x="$work/x"
mkdir -p "$x"
dpkg-deb -x "$agent1" "$x/agent"
dpkg-deb -x "$collector1" "$x/collector"
for f in agent/usr/bin/posguard-agent agent/usr/bin/posguardctl agent/usr/bin/posguard-provision \
  collector/usr/bin/posguard-collector; do
  check "$f is a stripped executable" bash -c "file -b '$x/$f' | grep -q 'ELF.*executable.*, stripped'"
done
for f in agent/usr/lib/systemd/system/posguard-agent.service agent/usr/lib/sysusers.d/posguard.conf \
  agent/usr/lib/tmpfiles.d/posguard.conf agent/usr/share/man/man8/posguard-agent.8.gz \
  agent/usr/share/man/man1/posguardctl.1.gz agent/usr/share/man/man8/posguard-provision.8.gz \
  agent/usr/share/doc/posguard-agent/copyright agent/usr/share/doc/posguard-agent/operations.md \
  collector/usr/lib/systemd/system/posguard-collector.service \
  collector/usr/lib/sysusers.d/posguard-collector.conf \
  collector/usr/lib/tmpfiles.d/posguard-collector.conf \
  collector/usr/share/man/man8/posguard-collector.8.gz \
  collector/usr/share/doc/posguard-collector/copyright; do
  check "$f is in the package" test -s "$x/$f"
done
check "the units are the ones in systemd/" cmp "$x/agent/usr/lib/systemd/system/posguard-agent.service" systemd/posguard-agent.service
check "man page of posguard-provision names its commands" bash -c "zcat '$x/agent/usr/share/man/man8/posguard-provision.8.gz' | grep -q decommission"
agent_depends=$(dpkg-deb -f "$agent1" Depends)
collector_depends=$(dpkg-deb -f "$collector1" Depends)
echo "posguard-agent Depends: $agent_depends"
echo "posguard-collector Depends: $collector_depends"
# Computed by dpkg-shlibdeps from the binaries: glibc and the TSS libraries they link.
check "agent's Depends computed (libc6, libtss2-esys)" bash -c "grep -q 'libc6 (>=' <<<'$agent_depends' && grep -q 'libtss2-esys' <<<'$agent_depends'"
check "collector's Depends computed (libc6)" bash -c "grep -q 'libc6 (>=' <<<'$collector_depends'"

section "chroot: install, upgrade, remove, purge"
cache=${POSGUARD_CI_CACHE:-/var/cache/posguard-ci/deb-chroot}
if [ ! -d "$cache/tree" ]; then
  echo "==> debootstrap of Debian 12 into $cache/tree (once)"
  mkdir -p "$cache"
  rm -rf "$cache/tree.tmp"
  debootstrap --variant=minbase \
    --include=systemd,libtss2-esys-3.0.2-0,libtss2-tctildr0,libtss2-tcti-device0,tpm-udev,libssl3 \
    bookworm "$cache/tree.tmp" http://deb.debian.org/debian >/dev/null
  mv "$cache/tree.tmp" "$cache/tree"
fi
cp -a "$cache/tree" "$root"
mount -t proc proc "$root/proc"
# As on a terminal booted with systemd (the maintainer scripts branch on it); systemctl itself
# finds no manager in the chroot, and policy-rc.d denies every action after recording it.
mkdir -p "$root/run/systemd/system"
cat >"$root/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
echo "$*" >>/var/log/policy-rc.d.log
exit 101
EOF
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$agent1" "$agent2" "$collector1" "$collector2" "$root/tmp/"
in_root() { chroot "$root" "$@"; }
dpkg_i() { in_root dpkg -i "/tmp/$(basename "$1")" >/dev/null; }
actions() { cat "$root/var/log/policy-rc.d.log" 2>/dev/null || true; }
reset_actions() { rm -f "$root/var/log/policy-rc.d.log"; }
status_of() { in_root dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null || true; }

echo "-- install, not provisioned"
check "agent installs" dpkg_i "$agent1"
check "collector installs" dpkg_i "$collector1"
check "users and groups made by sysusers" bash -c "in_root() { chroot '$root' \"\$@\"; }; in_root getent passwd posguard >/dev/null && in_root getent group posguard-pos >/dev/null && in_root id -nG posguard | grep -qw tss && in_root getent passwd posguard-collector >/dev/null"
check "/etc/posguard made by tmpfiles (root:root 0755)" bash -c "[ \"\$(chroot '$root' stat -c '%U:%G %a' /etc/posguard)\" = 'root:root 755' ]"
check "agent enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/posguard-agent.service"
check "collector enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/posguard-collector.service"
check "nothing started before provisioning (service actions: '$(actions | tr '\n' ';')')" test -z "$(actions)"
check "the unit skips an unprovisioned boot" grep -qx 'ConditionPathExists=/etc/posguard/agent.toml' "$root/usr/lib/systemd/system/posguard-agent.service"

echo "-- provisioned (what posguard-provision leaves), then upgrade"
printf '# provisioned\n' >"$root/etc/posguard/agent.toml"
mkdir -p "$root/var/lib/posguard/journal"
head -c 4096 /dev/urandom >"$root/var/lib/posguard/journal/db"
sum=$(sha256sum <"$root/var/lib/posguard/journal/db")
reset_actions
check "agent upgrades to the higher version" dpkg_i "$agent2"
check "upgrade restarts the agent (actions: '$(actions | tr '\n' ';')')" grep -qx 'posguard-agent.service restart' "$root/var/log/policy-rc.d.log"
check "upgrade keeps the journal" bash -c "[ \"\$(sha256sum <'$root/var/lib/posguard/journal/db')\" = '$sum' ]"
# stat inside the chroot: its user and group names, not the host's.
check "tmpfiles gives agent.toml root:posguard 0640" bash -c "[ \"\$(chroot '$root' stat -c '%U:%G %a' /etc/posguard/agent.toml)\" = 'root:posguard 640' ]"
check "still enabled after upgrade" test -L "$root/etc/systemd/system/multi-user.target.wants/posguard-agent.service"
reset_actions
check "collector upgrades, not configured" dpkg_i "$collector2"
check "an unconfigured collector is not started by the upgrade (actions: '$(actions | tr '\n' ';')')" test -z "$(actions)"
printf '# configured\n' >"$root/etc/posguard/collector.toml"
mkdir -p "$root/var/lib/posguard-collector"
echo store >"$root/var/lib/posguard-collector/collector.db"
check "collector reinstalls, configured" dpkg_i "$collector2"
check "a configured collector is restarted (actions: '$(actions | tr '\n' ';')')" grep -qx 'posguard-collector.service restart' "$root/var/log/policy-rc.d.log"

echo "-- remove keeps state and configuration"
reset_actions
check "agent removes" in_root dpkg -r posguard-agent
check "remove stops the agent" grep -qx 'posguard-agent.service stop' "$root/var/log/policy-rc.d.log"
check "remove leaves the package config-files" bash -c "[[ '$(status_of posguard-agent)' == rc* ]]"
check "binaries gone" test ! -e "$root/usr/bin/posguard-agent"
check "remove keeps the journal" bash -c "[ \"\$(sha256sum <'$root/var/lib/posguard/journal/db')\" = '$sum' ]"
check "remove keeps agent.toml" test -f "$root/etc/posguard/agent.toml"

echo "-- reinstall on a provisioned terminal starts the agent"
reset_actions
check "agent reinstalls" dpkg_i "$agent2"
# dpkg calls postinst with the version whose configuration remained, as for an upgrade: the
# agent, stopped by the remove, must be started again.
check "reinstall when provisioned starts the agent (actions: '$(actions | tr '\n' ';')')" grep -qx 'posguard-agent.service restart' "$root/var/log/policy-rc.d.log"

echo "-- purge deletes state and configuration"
check "agent purges" in_root dpkg -P posguard-agent
check "purge deletes /var/lib/posguard" test ! -e "$root/var/lib/posguard"
check "purge deletes agent.toml" test ! -e "$root/etc/posguard/agent.toml"
check "purge forgets the package" test -z "$(status_of posguard-agent)"
check "purge leaves no enablement or mask behind" bash -c "! find '$root/etc/systemd/system' -name 'posguard-agent.service' | grep -q ."
check "users are kept (documented)" in_root getent passwd posguard
check "the agent's purge leaves /etc/posguard to the collector" test -f "$root/etc/posguard/collector.toml"
check "collector removes, keeping its store" bash -c "chroot '$root' dpkg -r posguard-collector && test -f '$root/var/lib/posguard-collector/collector.db'"
check "collector purges, deleting store and configuration" bash -c "chroot '$root' dpkg -P posguard-collector && test ! -e '$root/var/lib/posguard-collector' && test ! -e '$root/etc/posguard'"
check "dpkg's database is consistent" bash -c "[ -z \"\$(chroot '$root' dpkg --audit)\" ]"

if [ "$failed" -ne 0 ]; then
  echo "deb-check: FAILED (see FAIL lines above)" >&2
  exit 1
fi
echo "deb-check: all checks passed"
