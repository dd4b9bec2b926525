#!/usr/bin/env bash
# CI gate for systemd/: the units must pass `systemd-analyze verify` without a single warning,
# sysusers.d and tmpfiles.d must apply cleanly, and `systemd-analyze security --offline=true`
# must rate each unit's overall exposure at most POSGUARD_MAX_EXPOSURE (default 1.5).
#
# No running systemd is needed (CI runs in containers where PID 1 is not systemd): everything
# is checked against a scratch root (--root=) holding systemd's own units, our units and
# files, and stub executables at the ExecStart= paths (verify insists that they exist and are
# executable; it does not run them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_packages systemd

max_exposure=${POSGUARD_MAX_EXPOSURE:-1.5}
units=(posguard-agent.service posguard-collector.service)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

section "scratch root $root"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/lib/sysusers.d" \
  "$root/usr/lib/tmpfiles.d"
# verify resolves dependencies (sysinit.target, basic.target, …) inside the root.
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
for unit in "${units[@]}"; do
  cp "systemd/$unit" "$root/etc/systemd/system/"
  # ExecStart=[-@:+!]PATH ARGS…: a stub at PATH.
  sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "systemd/$unit" | while read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\nexit 0\n' >"$root$exe"
    chmod 0755 "$root$exe"
  done
done
cp systemd/sysusers.d/*.conf "$root/usr/lib/sysusers.d/"
cp systemd/tmpfiles.d/*.conf "$root/usr/lib/tmpfiles.d/"

section "systemd-analyze verify"
# verify reports unknown keys, bad values and missing executables as warnings on stderr with
# exit status 0: any output at all fails the gate.
if ! out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1); then
  fail "systemd-analyze verify exited non-zero"
fi
if [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  fail "systemd-analyze verify printed warnings"
else
  echo "ok: ${units[*]}"
fi

section "configuration read-only inside the sandbox"
# Under ProtectSystem=strict, ConfigurationDirectory= (like ReadWritePaths=) makes the directory
# writable inside the sandbox: a unit must not be able to rewrite its own configuration, key or
# CRL. /etc/posguard comes from tmpfiles.d and each unit names it in ReadOnlyPaths=.
for unit in "${units[@]}"; do
  if grep -Eq '^ConfigurationDirectory=' "systemd/$unit"; then
    fail "$unit: ConfigurationDirectory= makes /etc/posguard writable under ProtectSystem=strict"
  fi
  if grep -E '^(ReadWritePaths|StateDirectory|RuntimeDirectory|CacheDirectory|LogsDirectory)=' \
    "systemd/$unit" | grep -q '/etc'; then
    fail "$unit: a path under /etc is writable"
  fi
  if ! grep -Eq '^ProtectSystem=strict$' "systemd/$unit"; then
    fail "$unit: ProtectSystem=strict missing"
  fi
  if grep -Eq '^ReadOnlyPaths=.*-?/etc/posguard( |$)' "systemd/$unit"; then
    echo "ok: $unit: /etc/posguard read-only"
  else
    fail "$unit: ReadOnlyPaths= does not name /etc/posguard"
  fi
done

section "memory backstop of the agent"
# docs/local-api.md documents RSS at most 64 MiB; the unit's MemoryHigh=/MemoryMax= must sit
# above that bound (a healthy agent is never throttled) and in that order.
mib() { sed -n "s/^$1=\([0-9][0-9]*\)M\$/\1/p" systemd/posguard-agent.service; }
high=$(mib MemoryHigh)
max=$(mib MemoryMax)
if [ -z "$high" ] || [ -z "$max" ]; then
  fail "posguard-agent.service needs MemoryHigh= and MemoryMax= in M"
elif [ "$high" -lt 64 ] || [ "$max" -le "$high" ]; then
  fail "posguard-agent.service: need 64 <= MemoryHigh ($high M) < MemoryMax ($max M)"
else
  echo "ok: MemoryHigh=${high}M MemoryMax=${max}M above the 64 MiB bound"
fi

section "sysusers.d and tmpfiles.d"
if ! out=$(systemd-sysusers --root="$root" 2>&1); then
  printf '%s\n' "$out" >&2
  fail "systemd-sysusers failed"
fi
printf '%s\n' "$out"
for who in posguard:user posguard-collector:user posguard-pos:group tss:group; do
  name=${who%%:*}
  file=$([ "${who#*:}" = user ] && echo passwd || echo group)
  grep -q "^$name:" "$root/etc/$file" || fail "sysusers.d did not create $file entry $name"
done
grep -Eq '^tss:[^:]*:[0-9]+:(.*,)?posguard(,|$)' "$root/etc/group" ||
  fail "posguard is not a member of tss"
if [ "$(id -u)" -eq 0 ]; then
  # Files the administrator or posguard-provision wrote: tmpfiles must fix their modes.
  mkdir -p "$root/etc/posguard"
  touch "$root/etc/posguard/agent.toml" "$root/etc/posguard/collector.key"
  chmod 0666 "$root/etc/posguard/agent.toml" "$root/etc/posguard/collector.key"
  if ! out=$(systemd-tmpfiles --root="$root" --create 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    fail "systemd-tmpfiles --create failed or warned"
  fi
  # Names as the scratch root knows them (root is 0 everywhere).
  gid_of() { if [ "$1" = root ]; then echo 0; else awk -F: -v n="$1" '$1 == n { print $3 }' "$root/etc/group"; fi; }
  check_mode() { # PATH MODE GROUP
    local got want
    got=$(stat -c '%a %u %g' "$root$1")
    want="$2 0 $(gid_of "$3")"
    if [ "$got" = "$want" ]; then echo "ok: $1 $2 root:$3"; else fail "$1 is '$got', want '$want'"; fi
  }
  check_mode /etc/posguard 755 root
  check_mode /etc/posguard/agent.toml 640 posguard
  check_mode /etc/posguard/collector.key 640 posguard-collector
else
  echo "skipped: applying tmpfiles.d needs root (chown)"
fi

section "systemd-analyze security --offline=true (overall exposure at most $max_exposure)"
for unit in "${units[@]}"; do
  if ! out=$(systemd-analyze security --offline=true --root="$root" "$unit" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze security $unit exited non-zero"
    continue
  fi
  # "→ Overall exposure level for posguard-agent.service: 1.3 OK 🙂"
  level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p')
  if [ -z "$level" ]; then
    printf '%s\n' "$out" >&2
    fail "no overall exposure level for $unit"
    continue
  fi
  if awk -v l="$level" -v m="$max_exposure" 'BEGIN { exit !(l <= m) }'; then
    echo "ok: $unit exposure $level (at most $max_exposure)"
  else
    printf '%s\n' "$out" | grep '✗' >&2 || true
    fail "$unit exposure $level is above $max_exposure"
  fi
  # Anything else on the output than the table (e.g. a parse warning) is a defect too.
  if printf '%s\n' "$out" | grep -Ev '^(  NAME|✓|✗|→|$)' | grep -q .; then
    printf '%s\n' "$out" | grep -Ev '^(  NAME|✓|✗|→|$)' >&2
    fail "systemd-analyze security printed warnings for $unit"
  fi
done

if [ "$failed" -ne 0 ]; then
  echo "systemd gate: FAILED" >&2
  exit 1
fi
echo "systemd gate: passed"
