#!/usr/bin/env bash
# Soak: CUTS (default 20) power cuts of a real VM under load (scripts/vm/run.sh); the figures
# go into docs/journal.md "Power cuts". About 1.5 min per cut on 2 cores without KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
# shellcheck source=vm/common.sh
. scripts/vm/common.sh
ensure_packages "${VM_PACKAGES[@]}"
CUTS=${CUTS:-20} exec scripts/vm/run.sh
