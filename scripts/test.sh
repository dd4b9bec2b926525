#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test of the
# workspace (unit, property, integration against real swtpm instances, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"

section "building the binaries and example drivers the end-to-end and crash tests run"
cargo build --locked --workspace --bins --examples

section "cargo test --workspace"
cargo test --locked --workspace --lib --bins --tests --examples
cargo test --locked --workspace --doc

# Benchmarks are measured with ./scripts/bench.sh on a quiet machine. Here they are compiled,
# and the end-to-end ones run as small smoke tests of the same path (without `--bench`
# they shrink themselves), so that none of them rots.
section "benchmarks: compiled; the end-to-end ones as smoke tests"
cargo test --locked --workspace --benches --no-run
cargo test --locked -p posguard-e2e --benches
