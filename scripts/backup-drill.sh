#!/usr/bin/env bash
# The backup drill (docs/runbook.md "Restore the collector from backup"), with the real binaries:
# a fleet from `ca init`, `serve`, a real terminal (the agent on a software TPM, provisioned with
# an enrollment token) and three enrolled software terminals shipping signed journals, an online
# `backup`, more records shipped after it, then stop; the real terminal keeps logging during the
# outage; destroy the store, `restore` (which re-verifies every chain), restart, and check that
# every terminal resends what the restored store lost: every seq stored once, no gap, no alert.
# Bounded in time; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh

DEVICES=3
RECORDS=20
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" sqlite3 python3

section "building the collector, the agent, the provisioning CLI and the drill client"
timeout 900 cargo build --locked -q -p posguard-collector --bin posguard-collector --example drill_client
timeout 900 cargo build --locked -q -p posguard-agent --bin posguard-agent -p posguard-provision --bin posguard-provision
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$target_dir/debug/posguard-collector"
CLIENT="$target_dir/debug/examples/drill_client"
AGENT="$target_dir/debug/posguard-agent"
PROVISION="$target_dir/debug/posguard-provision"
TILL="python3 scripts/lib/till.py"

work=$(mktemp -d)
pid=""
others=()
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  for p in "${others[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" ca init --dir "$work/pki" >"$work/pki.toml"
cat >"$work/collector.toml" <<TOML
listen = "127.0.0.1:$port"
store = "$work/store/collector.db"
rate_limit = { per_second = 100.0, burst = 100 }
$(cat "$work/pki.toml")
TOML
mkdir -m 700 "$work/store"
col() { timeout 60 "$BIN" --config "$work/collector.toml" "$@"; }
client() { timeout 120 "$CLIENT" --state "$work/terminals" --addr "127.0.0.1:$port" --ca "$work/pki/fleet-ca.pem" "$@"; }

start() {
  "$BIN" --config "$work/collector.toml" serve 2>>"$work/serve.log" &
  pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "collector exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "collector did not listen on $port within 10 s" >&2
  exit 1
}
stop() {
  kill "$pid"
  timeout 30 tail --pid="$pid" -f /dev/null
  wait "$pid" 2>/dev/null || true
  pid=""
}
count() { col query --device "$1" | wc -l; }
fail() { echo "DRILL FAILED: $*" >&2; exit 1; }

section "serve, enroll $DEVICES terminals, ingest $RECORDS records each"
start
client enroll --collector "$BIN" --config "$work/collector.toml" --devices "$DEVICES"
client ingest --records "$RECORDS"

section "a real terminal: swtpm, provisioned with an enrollment token, the agent shipping"
tpm_port=$(python3 -c 'import socket
for p in range(20000, 60000, 7):
    a, b = socket.socket(), socket.socket()
    try:
        a.bind(("127.0.0.1", p)); b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError: pass
    finally: a.close(); b.close()')
mkdir -p "$work/tpm" "$work/till"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" \
  --server type=tcp,port="$tpm_port",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear &
others+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$tpm_port") 2>/dev/null && break
  sleep 0.1
done
token=$(col enroll-token create --device-id till-01 --ttl 1h --quiet)
timeout 120 "$PROVISION" init --collector "127.0.0.1:$port" --server-name localhost \
  --token - --fleet-ca "$work/pki/fleet-ca.pem" --device-id till-01 \
  --config-dir "$work/till/etc" --state-dir "$work/till/state" \
  --socket "$work/till/agent.sock" --tcti "swtpm:host=127.0.0.1,port=$tpm_port" \
  <<<"$token" >"$work/provision.txt"
# Quick heartbeats and a short backoff cap, so that the drill does not wait long after restart.
printf 'heartbeat_secs = 1\nbackoff_max_secs = 2\n' >>"$work/till/etc/agent.toml"
RUST_LOG=warn "$AGENT" run --config "$work/till/etc/agent.toml" 2>>"$work/agent.log" &
agent_pid=$!
others+=("$agent_pid")
for _ in $(seq 1 200); do [ -S "$work/till/agent.sock" ] && break; sleep 0.05; done
[ -S "$work/till/agent.sock" ] || { cat "$work/agent.log" >&2; fail "the agent did not start"; }
$TILL "$work/till/agent.sock" traffic 30 before-backup
backed_up=$($TILL "$work/till/agent.sock" shipped 60)
echo "till-01: records 1..$backed_up shipped before the backup"

section "online backup while serving"
col backup --out "$work/backup.db" | tee "$work/backup.json"
[ "$(stat -c %a "$work/backup.db")" = 600 ] || fail "backup is not mode 0600"
if col backup --out "$work/backup.db" 2>/dev/null; then fail "backup overwrote its output"; fi
if col restore --from "$work/backup.db" --force 2>"$work/refused.txt"; then
  fail "restore ran under a serving collector"
fi
echo "refused while serving: $(cat "$work/refused.txt")"
# Records after the backup: the restored store lacks them and the terminals resend them.
client ingest --records 5
$TILL "$work/till/agent.sock" traffic 20 after-backup
lost=$($TILL "$work/till/agent.sock" shipped 60)
echo "till-01: records $((backed_up + 1))..$lost shipped after the backup (the restore loses them)"

section "stop, destroy the store, restore (re-verifies every chain); the till keeps selling"
stop
$TILL "$work/till/agent.sock" traffic 15 outage
echo "till-01: head $($TILL "$work/till/agent.sock" head) during the outage"
rm -f "$work/store/collector.db" "$work/store/collector.db-wal" "$work/store/collector.db-shm"
col restore --from "$work/backup.db" | tee "$work/restore.json"
[ "$(stat -c %a "$work/store/collector.db")" = 600 ] || fail "restored store is not mode 0600"

section "a backup with one tampered device: the others are restored, it is named"
cp "$work/backup.db" "$work/tampered.db"
sqlite3 "$work/tampered.db" \
  "UPDATE records SET raw = CAST(substr(raw, 1, length(raw) - 1)
     || CASE WHEN substr(raw, -1) = X'00' THEN X'01' ELSE X'00' END AS BLOB)
   WHERE device_id = 'drill-02' AND seq = 7;"
# Into a store of its own (same fleet), so that the drill goes on with the good restore.
sed "s#$work/store/collector.db#$work/partial/collector.db#" "$work/collector.toml" >"$work/partial.toml"
mkdir -m 700 "$work/partial"
rc=0
timeout 60 "$BIN" --config "$work/partial.toml" restore --from "$work/tampered.db" \
  >"$work/partial.json" 2>"$work/tampered.txt" || rc=$?
cat "$work/partial.json" "$work/tampered.txt"
[ "$rc" -eq 2 ] || fail "a restore that left a device out exited $rc, not 2"
grep -q "device drill-02 at seq 7" "$work/tampered.txt" || fail "the message does not name drill-02 seq 7"
grep -q '"unverified":\[{"device":"drill-02","seq":7' "$work/partial.json" || fail "summary does not list drill-02"
grep -q '"device_id":"drill-01"' "$work/partial.json" || fail "drill-01 not restored"
grep -q '"device_id":"drill-03"' "$work/partial.json" || fail "drill-03 not restored"
[ "$(sqlite3 "$work/partial/collector.db" "SELECT COUNT(*) FROM records WHERE device_id = 'drill-02'")" = 0 ] \
  || fail "drill-02's records were installed"

section "restart; heads as restored; ingest continues"
start
col devices | tee "$work/devices.json"
for n in $(seq 1 "$DEVICES"); do
  id=$(printf 'drill-%02d' "$n")
  grep -q "\"device_id\":\"$id\".*\"highest_stored\":$RECORDS" "$work/devices.json" \
    || fail "$id: head after restore is not $RECORDS"
done
client ingest --records 10 | tee "$work/after.json"
want=$((RECORDS + 5 + 10))
for n in $(seq 1 "$DEVICES"); do
  id=$(printf 'drill-%02d' "$n")
  grep -q "\"device\":\"$id\".*\"resumed_from\":$((RECORDS + 1))" "$work/after.json" \
    || fail "$id: did not resume from $((RECORDS + 1))"
  got=$(count "$id")
  [ "$got" -eq "$want" ] || fail "$id: $got records stored, expected $want"
  echo "$id: $got records, seqs 1..$want, none twice"
done
head=$($TILL "$work/till/agent.sock" shipped 60)
col query --device till-01 | $TILL - seqs "$head" || fail "till-01: the collector's records are not 1..$head each once"
echo "till-01: the agent resent $((backed_up + 1))..$lost and the outage's records"
col alerts >"$work/alerts.json"
if [ -s "$work/alerts.json" ]; then cat "$work/alerts.json"; fail "alerts raised (a chain_gap means records were not resent)"; fi
grep -q "collector holds less than it acknowledged" "$work/serve.log" \
  || fail "the collector never asked till-01 to resend"
kill -0 "$agent_pid" || fail "the agent exited"
stop

section "backup drill passed"
