#!/usr/bin/env bash
# The README's main job: a local demonstration on a software TPM. It starts swtpm, runs the
# technician's hardware self-test (identity key in the TPM, signatures checked with ring,
# sealing and tamper detection, the monotonic counter, the RNG), "reboots" the TPM and checks
# that the identity, the counter and a sealed secret survived, then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"

section "building posguard"
cargo build --locked --bins --quiet
BIN=target/debug

WORK=$(mktemp -d -t posguard-demo.XXXXXX)
SWTPM_PID=
cleanup() {
  if [ -n "$SWTPM_PID" ]; then kill "$SWTPM_PID" 2>/dev/null || true; wait "$SWTPM_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket
for _ in range(50):
    a=socket.socket(); a.bind(("127.0.0.1",0)); p=a.getsockname()[1]
    b=socket.socket()
    try:
        b.bind(("127.0.0.1",p+1)); print(p); break
    except OSError: pass
    finally: a.close(); b.close()'
}

start_swtpm() {
  PORT=$(free_port)
  swtpm socket --tpm2 --tpmstate dir="$WORK/tpm" \
    --server type=tcp,port="$PORT",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear &
  SWTPM_PID=$!
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  echo "swtpm did not start" >&2
  exit 1
}

stop_swtpm() {
  kill "$SWTPM_PID" 2>/dev/null || true
  wait "$SWTPM_PID" 2>/dev/null || true
  SWTPM_PID=
}

mkdir -p "$WORK/tpm"
section "starting a software TPM (swtpm) with an empty state"
start_swtpm
TCTI="swtpm:host=127.0.0.1,port=$PORT"
echo "TCTI: $TCTI"

section "first provisioning self-test: creates the device identity key and the counter"
"$BIN/posguard-provision" selftest --tcti "$TCTI"

section "reboot: the TPM restarts on its state; nothing may be created this time"
stop_swtpm
start_swtpm
TCTI="swtpm:host=127.0.0.1,port=$PORT"
"$BIN/posguard-provision" selftest --tcti "$TCTI" --check-only --json >"$WORK/report.json"
python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["steps"]:
    print(f"  [{' ok ' if s['ok'] else 'FAIL'}] {s['name']:<44} {s['millis']:9.2f} ms  {s['detail']}")
key = next(s for s in r["steps"] if s["name"].startswith("device identity key"))
assert key["detail"].startswith("Opened"), "the identity key must survive the reboot"
print("after reboot: identity key", "reopened, not recreated" if r["ok"] else "CHECK FAILED")
sys.exit(0 if r["ok"] else 1)
PY

section "the TPM itself, seen by tpm2-tools"
stop_swtpm
start_swtpm
TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT" tpm2_getcap handles-persistent
TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT" tpm2_readpublic -c 0x81010001 | grep -E '^(name-alg|attributes|  value|type|curve-id|scheme)' || true

section "demo finished: swtpm stopped, scratch state removed"
