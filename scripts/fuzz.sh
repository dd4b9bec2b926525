#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz layout, libFuzzer) for a bounded time each, starting from
# the seed corpus kept in the repository; a crash fails. Needs a nightly toolchain and
# cargo-fuzz, which it installs when missing. FUZZ_SECONDS (default 20) bounds each target.
# Where nightly cannot be had, it says so and relies on the property tests over arbitrary bytes
# that scripts/test.sh runs (every decoder has one).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
SECONDS_EACH=${FUZZ_SECONDS:-10}
# One target directory for every fuzz crate: their dependencies build once.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  section "installing a nightly toolchain for cargo-fuzz"
  if ! rustup toolchain install nightly --profile minimal; then
    echo "posguard: no nightly toolchain here; fuzzing falls back to the proptest decoders in scripts/test.sh" >&2
    exit 0
  fi
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  section "installing cargo-fuzz"
  # A debug build installs in a fraction of the time and does the same job.
  cargo install cargo-fuzz --locked --debug --version 0.13.2
fi

fuzz_dir() {
  local crate_dir=$1
  shift
  for target in "$@"; do
    section "fuzzing $crate_dir: $target for ${SECONDS_EACH}s"
    scratch=$(mktemp -d)
    log=$(mktemp)
    if (cd "$crate_dir" && cargo +nightly fuzz run ${FUZZ_DEV:+--dev} --sanitizer "${SANITIZER:-address}" "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1) >"$log" 2>&1; then
      grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || tail -n 3 "$log"
    else
      tail -n 60 "$log" >&2
      echo "posguard: fuzz target $target failed (crash artifacts: $crate_dir/fuzz/artifacts/$target)" >&2
      exit 1
    fi
    rm -rf "$scratch" "$log"
  done
}

FUZZ_DEV= fuzz_dir proto decode_record decode_event decode_journal_cert decode_checkpoint decode_local_api decode_uplink
# The configuration parsers pull in the whole agent and collector (tokio, sled, SQLite): built
# without AddressSanitizer, which would only instrument dependencies (our crates forbid unsafe),
# to keep CI's time down; a panic still fails the run. They build in the dev profile (a minute
# instead of three; debug assertions and overflow checks on), which runs fewer inputs in the
# time but is the larger saving for a bounded CI run. FUZZ_DEV= (empty) builds them optimised.
export FUZZ_DEV=${FUZZ_DEV-1}
SANITIZER=none fuzz_dir agent parse_config
SANITIZER=none fuzz_dir collector parse_config parse_enroll_request
