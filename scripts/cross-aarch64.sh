#!/usr/bin/env bash
# Builds the workspace for aarch64 terminals with Debian's cross toolchain and multiarch
# libtss2 (no Docker needed), then runs the hal tests under qemu-aarch64 against swtpm.
# Used by .ci/run; `cross.toml` covers the same targets on machines with Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust

TARGET=aarch64-unknown-linux-gnu
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "posguard: arm64 multiarch is not enabled; run: sudo dpkg --add-architecture arm64 && sudo apt-get update" >&2
    exit 1
  fi
  dpkg --add-architecture arm64
  unset POSGUARD_APT_UPDATED
fi
ensure_packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross libtss2-dev:arm64 \
  libtss2-tcti-swtpm0:arm64 qemu-user-static "${TEST_PACKAGES[@]}"
if ! rustup target list --installed | grep -qx "$TARGET"; then
  section "adding the Rust target $TARGET"
  rustup target add "$TARGET"
fi

section "building the workspace for $TARGET"
cargo build --locked --workspace --target "$TARGET" --bins
section "running the hal tests for $TARGET under qemu-aarch64 (against swtpm)"
cargo test --locked -p posguard-hal --target "$TARGET"
