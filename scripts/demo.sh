#!/usr/bin/env bash
# The README's main job: a local demonstration fleet on one machine. It starts a software TPM,
# creates the fleet CA, starts the collector with its embedded store, issues an enrollment
# token, provisions a terminal with it (TPM key, CSR, enrollment, data key, configuration),
# starts the agent, enrolls the first admin (TOTP confirmed with oathtool), runs a scripted POS
# shift (logins, a brute-force lockout, an admin TOTP login, a supervisor override, a cached
# transaction, a refused card number, a honeypot, a lockdown command from operations), prints
# what the collector received, verified and alerted on, verifies the terminal's journal
# offline, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/common.sh
. scripts/lib/common.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" python3

section "building posguard"
cargo build --locked --bins --quiet
BIN=$PWD/target/debug

WORK=$(mktemp -d -t posguard-demo.XXXXXX)
PIDS=()
cleanup() {
  # Stop in reverse order of start: the agent before the TPM and the collector.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
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

wait_port() {
  for _ in $(seq 1 500); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

section "1. a software TPM for the terminal (swtpm)"
mkdir -p "$WORK/tpm"
TPM_PORT=$(free_port)
swtpm socket --tpm2 --tpmstate dir="$WORK/tpm" \
  --server type=tcp,port="$TPM_PORT",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear &
PIDS+=($!)
wait_port "$TPM_PORT"
TCTI="swtpm:host=127.0.0.1,port=$TPM_PORT"
echo "TCTI $TCTI"

section "2. central operations: fleet CA, ops key, collector with its embedded store"
C="$WORK/central"
mkdir -p "$C"
"$BIN/posguard-collector" ca init --dir "$C/ca" --server-name localhost >"$C/ca.toml"
cat "$C/ca.toml" | grep -v '^#'
COLLECTOR_PORT=$(free_port)
OPS_PUBLIC=$("$BIN/posguard-collector" ops-key generate --out "$C/ops.key" --config /dev/null | grep -oE '[0-9a-f]{64}' | head -n1)
{
  echo "listen = \"127.0.0.1:$COLLECTOR_PORT\""
  echo "store = \"$C/collector.db\""
  echo "ops_public_key = \"$OPS_PUBLIC\""
  echo "silent_after_s = 3600"
  grep -v '^#' "$C/ca.toml"
} >"$C/collector.toml"
"$BIN/posguard-collector" serve --config "$C/collector.toml" &
PIDS+=($!)
wait_port "$COLLECTOR_PORT"
echo "collector listening on 127.0.0.1:$COLLECTOR_PORT (TLS 1.3, client certificates)"

section "3. operations issue a one-time enrollment token for the terminal"
DEVICE=store1-till1
TOKEN=$("$BIN/posguard-collector" enroll-token create --device-id "$DEVICE" --ttl 1h --quiet --config "$C/collector.toml")
echo "token for $DEVICE issued (shown to the technician once; stored only hashed)"

section "4. the technician provisions the terminal"
T="$WORK/terminal"
# The token on standard input: on the command line `ps` and the shell history would see it.
"$BIN/posguard-provision" init --collector "127.0.0.1:$COLLECTOR_PORT" --server-name localhost \
  --token - --fleet-ca "$C/ca/fleet-ca.pem" --device-id "$DEVICE" \
  --ops-public-key "$OPS_PUBLIC" --config-dir "$T/etc" --state-dir "$T/state" \
  --socket "$T/run/agent.sock" --tcti "$TCTI" <<<"$TOKEN"
# A quick demo: heartbeats every 2 s (default 60 s) and progressive delays capped at 2 s
# (default: 1 s doubling to 30 s). The lockout itself keeps its defaults: 10 failures, 30 min.
printf 'heartbeat_secs = 2\n\n[auth.throttle]\ndelay_max_secs = 2\n' >>"$T/etc/agent.toml"
echo
echo "running init again (no token needed) compares, and changes nothing:"
"$BIN/posguard-provision" init --collector "127.0.0.1:$COLLECTOR_PORT" --server-name localhost \
  --fleet-ca "$C/ca/fleet-ca.pem" --device-id "$DEVICE" \
  --config-dir "$T/etc" --state-dir "$T/state" --socket "$T/run/agent.sock" --tcti "$TCTI" | tail -n 2

section "5. the agent starts (systemd would start it at boot)"
RUST_LOG=warn "$BIN/posguard-agent" run --config "$T/etc/agent.toml" &
AGENT_PID=$!
PIDS+=($AGENT_PID)
for _ in $(seq 1 500); do [ -S "$T/run/agent.sock" ] && break; sleep 0.02; done
"$BIN/posguardctl" --socket "$T/run/agent.sock" status | head -n 12

section "6. the first admin: TOTP seed shown as a QR code, confirmed with a current code"
ADMIN=manager
ADMIN_PASSWORD='Till-manager-2026'
coproc PROV { "$BIN/posguard-provision" admin --admin "$ADMIN" --socket "$T/run/agent.sock" 2>&1; }
prov_pid=$PROV_PID
# Own copies of the coprocess's pipes: bash unsets PROV as soon as the tool exits, which can be
# before the last line is read.
exec {PROV_IN}>&"${PROV[1]}" {PROV_OUT}<&"${PROV[0]}"
echo "$ADMIN_PASSWORD" >&"$PROV_IN"
SECRET=
while IFS= read -r line <&"$PROV_OUT"; do
  echo "$line"
  if [[ "$line" == *"otpauth://"* ]]; then
    SECRET=$(sed -E 's/.*secret=([A-Z2-7]+).*/\1/' <<<"$line")
    CODE=$(oathtool --totp -b "$SECRET")
    echo "  (the technician's phone shows $CODE)"
    echo "$CODE" >&"$PROV_IN"
  fi
done
exec {PROV_IN}>&- {PROV_OUT}<&-
wait "$prov_pid"

section "7. a POS shift, through the agent's local API"
python3 scripts/pos_shift.py "$T/run/agent.sock" "$ADMIN" "$ADMIN_PASSWORD" "$SECRET" \
  "$BIN/posguard-collector" "$C/collector.toml" "$C/ops.key"

section "8. what the collector received and verified"
"$BIN/posguard-collector" devices --config "$C/collector.toml"
"$BIN/posguard-collector" query --device "$DEVICE" --config "$C/collector.toml" >"$WORK/events.jsonl"
python3 - "$WORK/events.jsonl" <<'PY'
import collections, json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
seqs = [e["seq"] for e in events]
print(f"{len(events)} events stored, seq {min(seqs)}..{max(seqs)}, each once: {len(set(seqs)) == len(seqs)}, no gap: {sorted(seqs) == list(range(min(seqs), max(seqs) + 1))}")
kinds = collections.Counter(e["kind"] for e in events)
for kind, n in sorted(kinds.items()):
    print(f"  {kind:<28} {n}")
PY

section "9. alerts raised by the collector"
"$BIN/posguard-collector" alerts --config "$C/collector.toml" >"$WORK/alerts.jsonl"
python3 - "$WORK/alerts.jsonl" <<'PY'
import json, sys
alerts = [json.loads(l) for l in open(sys.argv[1])]
for a in alerts:
    print(f"  [{a.get('severity', '?'):<8}] {a.get('kind', '?'):<20} {a.get('device_id', '')}  {str(a.get('detail', ''))[:90]}")
print(f"{len(alerts)} alerts")
PY

section "10. the terminal stops; its journal verifies offline"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || true
"$BIN/posguardctl" verify-journal "$T/state/journal"

section "demo finished: everything it started is stopped, scratch state removed"
