#!/usr/bin/env bash
# Supply-chain checks (CI): cargo-deny (licences, bans, sources, duplicates, advisories from the
# offline snapshot in ../shared/advisory-db), a CycloneDX SBOM per binary, and a secret scan
# of the repository and the built binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages git python3

if ! command -v cargo-deny >/dev/null 2>&1; then
  section "installing cargo-deny"
  # A debug build installs in half the time; the check itself takes seconds either way.
  cargo install cargo-deny --locked --debug --version 0.19.4
fi

section "advisory database from the offline snapshot"
SNAPSHOT=${POSGUARD_ADVISORY_SNAPSHOT:-../shared/advisory-db}
if [ ! -d "$SNAPSHOT/crates" ]; then
  echo "posguard: no advisory snapshot at $SNAPSHOT (expected ../shared/advisory-db)" >&2
  exit 1
fi
# cargo-deny keeps each database in <db-path>/<name>-<hash of its URL>; this is the directory
# for the default RustSec URL in deny.toml. With --offline it opens it as a git repository.
REPO=/tmp/posguard-advisory-db/dbs/advisory-db-3157b0e258782691
rm -rf /tmp/posguard-advisory-db
mkdir -p "$REPO"
cp -r "$SNAPSHOT"/. "$REPO"/
git -C "$REPO" init -q
git -C "$REPO" -c user.name=ci -c user.email=ci@localhost add -A
GIT_COMMITTER_DATE="$(date -R)" git -C "$REPO" -c user.name=ci -c user.email=ci@localhost commit -qm "snapshot: $(head -n1 "$SNAPSHOT/SNAPSHOT" 2>/dev/null || echo unknown)"
export POSGUARD_ADVISORY_DB_PATH=/tmp/posguard-advisory-db/dbs
head -n1 "$SNAPSHOT/SNAPSHOT" || true

section "cargo deny check"
cargo fetch --locked >/dev/null
cargo deny --offline --locked check advisories bans licenses sources

section "SBOM (CycloneDX) per binary"
mkdir -p target/sbom
python3 scripts/sbom.py target/sbom

section "secret scan"
python3 scripts/secret-scan.py
