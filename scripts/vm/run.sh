#!/usr/bin/env bash
# A real boot under systemd with a TPM, and power cuts (docs/journal.md "Power cuts"): boots a
# Debian 12 VM (qemu, swtpm as its TPM), installs posguard, provisions it against a collector on
# this host, runs the checks of scripts/vm/guest/guest.sh, then CUTS times: lets the POS
# workload run, SIGKILLs qemu at a random moment, boots again. At the end every acknowledged
# event must be in the terminal's journal and at the collector exactly once, and every
# acknowledged cache record must read back.
#
# Used by scripts/vm-boot-test.sh (CI) and scripts/soak-power-cut.sh. Environment:
#   CUTS (3)            power cuts
#   LOAD_MIN/LOAD_MAX   the random moment: seconds of load before the cut (2, 15)
#   SEED                for $RANDOM (default: the time; printed to reproduce a run)
#   VM_PROFILE (release) debug for working on the harness only (installs files, not packages)
#   VM_NO_DEBS=1        install the files instead of the Debian packages
#   VM_KEEP=1           keep the work directory (console logs, results) after a success
set -euo pipefail
# The whole script is one compound command, read before it runs: a soak of half an hour must not
# pick up an edit of this file made meanwhile (bash reads scripts as it goes).
{
cd "$(dirname "$0")/../.."
# shellcheck source=../lib/common.sh
. scripts/lib/common.sh
# shellcheck source=common.sh
. scripts/vm/common.sh

CUTS=${CUTS:-3}
LOAD_MIN=${LOAD_MIN:-2}
LOAD_MAX=${LOAD_MAX:-15}
SEED=${SEED:-$(date +%s)}
RANDOM=$SEED
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
export CARGO_INCREMENTAL=0

WORK=$(mktemp -d -t posguard-vm.XXXXXX)
VM_PID=
VM_TPM_PID=
COLLECTOR_PID=
cleanup() {
  local rc=$?
  set +e
  [ -n "$VM_PID" ] && kill -KILL "$VM_PID" 2>/dev/null
  [ -n "$VM_TPM_PID" ] && kill -TERM "$VM_TPM_PID" 2>/dev/null
  [ -n "$COLLECTOR_PID" ] && kill -TERM "$COLLECTOR_PID" 2>/dev/null
  wait 2>/dev/null
  if [ "$rc" -ne 0 ] || [ -n "${VM_KEEP:-}" ]; then
    echo "work directory kept: $WORK (boot-*/console.log, results.log, acks.log; collector/)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT INT TERM
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# VM_PROFILE=debug: the debug build, for working on the harness (the RSS is then not the figure).
profile=${VM_PROFILE:-release}
section "$profile build (the agent's RSS is measured on the release build)"
flag=$([ "$profile" = release ] && echo --release || true)
nice -n 10 cargo build ${flag:+"$flag"} --locked --quiet -p posguard-agent -p posguard-collector \
  -p posguard-provision --bins
nice -n 10 cargo build ${flag:+"$flag"} --locked --quiet -p posguard-agent --example vm_pos_load
BIN=$PWD/target/$profile

section "guest image (cached in $VM_CACHE)"
vm_base_image
echo "base image $VM_BASE"
vm_pick_accel

section "collector on this host (the guest reaches it as 10.0.2.2)"
C=$WORK/collector
mkdir -p "$C"
"$BIN/posguard-collector" ca init --dir "$C/ca" --server-name localhost >"$C/ca.toml"
OPS_PUBLIC=$("$BIN/posguard-collector" ops-key generate --out "$C/ops.key" --config /dev/null | grep -oE '[0-9a-f]{64}' | head -n1)
# A random port; another one when it is taken (a free-looking port can be bound by someone else
# meanwhile: the collector then exits at once saying so).
port=
for _ in $(seq 20); do
  p=$((20000 + RANDOM % 40000))
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
  {
    echo "listen = \"127.0.0.1:$p\""
    echo "store = \"$C/collector.db\""
    echo "ops_public_key = \"$OPS_PUBLIC\""
    grep -v '^#' "$C/ca.toml"
  } >"$C/collector.toml"
  "$BIN/posguard-collector" serve --config "$C/collector.toml" >"$C/collector.log" 2>&1 &
  COLLECTOR_PID=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && port=$p && break 2
    kill -0 "$COLLECTOR_PID" 2>/dev/null || break
    sleep 0.05
  done
  grep -q 'already in use' "$C/collector.log" || fail "the collector did not start; see $C/collector.log"
done
[ -n "$port" ] && kill -0 "$COLLECTOR_PID" 2>/dev/null ||
  fail "no free TCP port found for the collector; see $C/collector.log"
DEVICE=vm-till1

section "payload (the guest's second disk)"
PL=$WORK/payload
mkdir -p "$PL/bin" "$PL/systemd"
install -m 0600 /dev/null "$PL/token"
"$BIN/posguard-collector" enroll-token create --device-id "$DEVICE" --ttl 1h --quiet \
  --config "$C/collector.toml" >"$PL/token"
cp "$C/ca/fleet-ca.pem" "$PL/"
if [ "$profile" = release ] && [ -z "${VM_NO_DEBS:-}" ]; then
  # The terminal gets what a terminal gets: the Debian packages (scripts/build-debs.sh), built
  # from the release binaries just built.
  mkdir -p "$PL/debs"
  scripts/build-debs.sh --no-build --out "$WORK/debs" 2>"$WORK/build-debs.log" |
    while IFS= read -r deb; do cp "$deb" "$PL/debs/"; done
  ls "$PL"/debs/*.deb >/dev/null 2>&1 || fail "scripts/build-debs.sh made no package; see $WORK/build-debs.log"
  echo "packages: $(cd "$PL/debs" && echo *.deb)"
else
  # VM_PROFILE=debug (packages hold release binaries) or VM_NO_DEBS=1: the files, installed as
  # docs/operations.md "Installing on a terminal" says.
  cp "$BIN"/{posguard-agent,posguardctl,posguard-provision,posguard-collector} "$PL/bin/"
  cp -r systemd/. "$PL/systemd/"
fi
cp "$BIN/examples/vm_pos_load" "$PL/bin/"
cp scripts/vm/guest/guest.sh "$PL/"
gate=$(systemd-analyze security --offline=true systemd/posguard-agent.service 2>&1 |
  sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
cat >"$PL/params.env" <<EOF
COLLECTOR=10.0.2.2:$port
SERVER_NAME=localhost
DEVICE=$DEVICE
OPS_PUBLIC=$OPS_PUBLIC
GATE_EXPOSURE=$gate
WORKERS=${WORKERS:-4}
EOF
vm_payload "$PL" "$WORK/payload.raw"
DISK=$WORK/disk.raw
cp --reflink=auto --sparse=always "$VM_BASE" "$DISK"

# results_of BOOT: prints the boot's check lines, fails the run on a failed check.
results_of() {
  local r=$WORK/boot-$1/results.log
  grep '"check"' "$r" | tr -d '\r' | while IFS= read -r line; do
    echo "  boot $1: $line"
  done
  if grep '"check"' "$r" | grep -q '"ok":false'; then
    fail "boot $1: a check failed (above); console: $WORK/boot-$1/console.log"
  fi
}

boot() { # boot N MODE: starts the VM for boot N
  vm_start_tpm "$WORK/tpm"
  vm_start "$DISK" "$WORK/payload.raw" "$WORK/tpm" "$WORK/boot-$1" "$2"
  BOOT_START=$(date +%s)
}

echo "seed $SEED, $CUTS cuts, load $LOAD_MIN..$LOAD_MAX s before each"
for n in $(seq 1 "$CUTS"); do
  mode=$([ "$n" -eq 1 ] && echo setup || echo "cut:$n")
  section "boot $n ($mode), then power cut $n"
  boot "$n" "$mode"
  vm_wait_result "$WORK/boot-$n" load_started "$BOOT_TIMEOUT" ||
    { results_of "$n"; fail "boot $n: the guest did not reach the load within ${BOOT_TIMEOUT}s; console: $WORK/boot-$n/console.log"; }
  echo "  up and checked in $(($(date +%s) - BOOT_START)) s"
  results_of "$n"
  # The cut comes at a random moment of the load, after at least one acknowledgement.
  for _ in $(seq 300); do grep -q '^ack ' "$WORK/boot-$n/acks.log" && break; sleep 0.1; done
  delay=$((LOAD_MIN + RANDOM % (LOAD_MAX - LOAD_MIN + 1))).$((RANDOM % 10))
  sleep "$delay"
  vm_kill
  grep -a '^error' "$WORK/boot-$n/acks.log" && fail "boot $n: the workload got an error (above)"
  echo "  cut $delay s after the first acknowledgement: $(grep -ac '^ack ' "$WORK/boot-$n/acks.log") events, $(grep -ac '^put ' "$WORK/boot-$n/acks.log") cache records acknowledged"
done

final=$((CUTS + 1))
section "boot $final (final): read back, drain, offline journal check"
boot "$final" final
vm_wait_result "$WORK/boot-$final" done "$BOOT_TIMEOUT" ||
  { results_of "$final"; fail "boot $final: no final result within ${BOOT_TIMEOUT}s; console: $WORK/boot-$final/console.log"; }
for _ in $(seq 600); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.1; done
vm_kill
results_of "$final"

section "every acknowledgement against the journal, the collector and the cache"
"$BIN/posguard-collector" query --device "$DEVICE" --config "$C/collector.toml" >"$WORK/collector.jsonl"
python3 scripts/vm/verify.py "$WORK" "$CUTS" "$WORK/collector.jsonl" | tee "$WORK/figures.txt"
exit
}
