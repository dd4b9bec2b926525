# Shared helpers for posguard's scripts. Source it; do not run it.
# shellcheck shell=bash

# ensure_packages PKG...: installs the Debian packages that are missing. As root it runs
# apt-get itself; otherwise it prints the exact command and stops.
ensure_packages() {
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "posguard: missing system packages: ${missing[*]}" >&2
    echo "install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "==> installing system packages: ${missing[*]}"
  if [ -z "${POSGUARD_APT_UPDATED:-}" ]; then
    apt-get update -qq
    export POSGUARD_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The packages every build and test needs. (prometheus: its promtool judges the collector's
# metrics exposition and the example alerting rules, collector/tests/metrics.rs.)
BUILD_PACKAGES=(pkg-config libtss2-dev gcc libc6-dev)
# Building and checking the Debian packages (scripts/build-debs.sh, scripts/deb-check.sh).
DEB_PACKAGES=(dpkg-dev help2man lintian)
TEST_PACKAGES=(swtpm swtpm-tools tpm2-tools openssl libtss2-tcti-swtpm0 oathtool faketime e2fsprogs tpm2-abrmd libtss2-tcti-tabrmd0 dbus prometheus)
# The VM step (scripts/vm-boot-test.sh, scripts/soak-power-cut.sh): qemu and the guest's tree.
VM_PACKAGES=(qemu-system-x86 debootstrap e2fsprogs swtpm python3)

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "posguard: cargo is not installed; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
  fi
}

section() {
  printf '\n==> %s  [%s]\n' "$*" "$(date +%T)"
}
