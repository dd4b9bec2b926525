#!/usr/bin/env bash
# CI: a real boot under systemd with a TPM (qemu + swtpm), the checks of
# scripts/vm/guest/guest.sh, and a few power cuts (CUTS, default 3). See docs/operations.md
# "A real boot under systemd" and docs/journal.md "Power cuts". The Debian tree and base image
# are cached in /var/cache/posguard-ci/vm (VM_CACHE); the first run on a machine builds them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
# shellcheck source=vm/common.sh
. scripts/vm/common.sh
ensure_packages "${VM_PACKAGES[@]}"

# The one reason to skip: qemu cannot start a machine at all here (a paused empty machine that
# is still running after 3 s started; anything else is the reason, printed).
rc=0
out=$(timeout 3 qemu-system-x86_64 -accel tcg -machine none -display none -monitor none \
  -serial none -S </dev/null 2>&1) || rc=$?
if [ "$rc" -ne 124 ]; then
  echo "SKIP: qemu-system-x86_64 cannot start here (exit $rc): $out"
  exit 0
fi
CUTS=${CUTS:-3} LOAD_MAX=${LOAD_MAX:-10} exec scripts/vm/run.sh
