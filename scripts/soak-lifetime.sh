#!/usr/bin/env bash
# The field-lifetime soak (issue 15, point 11; docs/PERFORMANCE.md "Field lifetime"): the same
# scenario as `cargo test -p posguard-e2e --test lifetime`, at full size and with the optimised
# binaries (whose memory bound, 24 MiB, is the one docs/PERFORMANCE.md states): a terminal's
# years in accelerated time on a real swtpm and a real collector.
#
#   ./scripts/soak-lifetime.sh                 3,000 agent starts (about eight simulated years)
#   STARTS=10000 ./scripts/soak-lifetime.sh    longer
#   SEED=1234 ./scripts/soak-lifetime.sh       replay the draws of an earlier run
#
# Prints a progress line every ten simulated days and the figures at the end; exits non-zero
# with every finding listed if anything was lost, stored twice, alerted without cause, over its
# memory bound or unverifiable.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" python3

export POSGUARD_LIFETIME_STARTS=${STARTS:-3000}
export POSGUARD_LIFETIME_EVENTS=${EVENTS:-16}
if [ -n "${SEED:-}" ]; then export POSGUARD_LIFETIME_SEED=$SEED; fi

section "building the optimised binaries"
cargo build --locked --release --workspace --bins

section "field lifetime: $POSGUARD_LIFETIME_STARTS agent starts, $POSGUARD_LIFETIME_EVENTS POS events each"
# The scenario code runs as a debug test; the agent and the collector it starts are the
# optimised binaries.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
POSGUARD_E2E_BIN_DIR="$target_dir/release" \
  cargo test --locked -p posguard-e2e --test lifetime -- --nocapture
