#!/usr/bin/env bash
# Runs posguard's benchmarks (never part of CI: figures come from a quiet machine and go into
# docs/PERFORMANCE.md with the machine they ran on).
#
#   ./scripts/bench.sh            every benchmark
#   ./scripts/bench.sh ingest     collector ingest from 1,000 simulated devices
#   ./scripts/bench.sh uplink     end-to-end agent → collector shipping
#   ./scripts/bench.sh agent_memory   the agent daemon's memory with a full journal
#   ./scripts/bench.sh login_flood    a clerk's login while 64 clients flood wrong passwords
#   ./scripts/bench.sh query      one device's window and a resumed export, history 10k..1M
#   ./scripts/bench.sh hal|journal|auth|cache
#   ./scripts/bench.sh lifetime   the field-lifetime soak (scripts/soak-lifetime.sh; not in `all`)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"

which=${1:-all}
if [ "$which" = lifetime ]; then
  exec ./scripts/soak-lifetime.sh
fi
# The end-to-end benchmarks start the optimised binaries from target/release.
section "building the optimised binaries"
cargo build --locked --profile bench --bins

run() {
  section "benchmark: $1 ($2)"
  cargo bench --locked -p "$2" --bench "$1"
}
case "$which" in
  ingest | uplink | agent_memory | login_flood) run "$which" posguard-e2e ;;
  hal) run hal posguard-hal ;;
  query) run query posguard-collector ;;
  journal | auth | cache) run "$which" posguard-agent ;;
  all)
    run hal posguard-hal
    for b in journal auth cache; do run "$b" posguard-agent; done
    for b in uplink ingest agent_memory login_flood; do run "$b" posguard-e2e; done
    run query posguard-collector
    ;;
  *)
    echo "usage: $0 [all|ingest|uplink|agent_memory|login_flood|query|hal|journal|auth|cache|lifetime]" >&2
    exit 64
    ;;
esac
