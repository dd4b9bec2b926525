#!/bin/sh
# The checks inside the VM (run by posguard-vm.service, from the payload disk). One JSON line
# per check goes to /dev/ttyS1: {"check":NAME,"ok":true|false,"detail":TEXT}; the POS
# workload's acknowledgements go to /dev/ttyS2 as they happen. The host (scripts/vm/run.sh)
# parses both. The mode comes from the kernel command line, posguard.vm=MODE:
#   setup      first boot: install, provision against the host's collector, all checks, load
#   cut:N      after power cut N-1: the agent came up at boot; cache read back; load again
#   final      after the last cut: drain to the collector, offline journal check, power off
set -u
P=/mnt/payload
. $P/params.env
MODE=$(sed -n 's/.*posguard\.vm=\([^ ]*\).*/\1/p' /proc/cmdline)
RES=/dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null
LOAD=/usr/local/bin/vm_pos_load
FAILED=0

# report NAME OK DETAIL: one result line (the detail without quotes or backslashes).
report() {
  detail=$(printf '%s' "$3" | tr -d '"\\' | tr '\n\t' '  ' | cut -c1-600)
  printf '{"check":"%s","ok":%s,"detail":"%s"}\n' "$1" "$2" "$detail" >$RES
  [ "$2" = true ] || FAILED=1
}
check() { # check NAME DETAIL COMMAND...: ok when COMMAND succeeds
  name=$1 detail=$2
  shift 2
  if out=$("$@" 2>&1); then report "$name" true "$detail"; else report "$name" false "$detail: $out"; fi
}
agent_pid() { systemctl show -p MainPID --value posguard-agent; }
# wait_for SECONDS COMMAND...: polls COMMAND every 0.5 s until it succeeds.
wait_for() {
  t=$(($1 * 2))
  shift
  while [ "$t" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
    t=$((t - 1))
  done
  return 1
}
serving() { $LOAD status >/dev/null; }

install_posguard() {
  if ls $P/debs/*.deb >/dev/null 2>&1; then
    # The packages (scripts/build-debs.sh); their dependencies are in the image already.
    dpkg -i $P/debs/*.deb >/tmp/dpkg.log 2>&1 || { report install false "$(tail -n 5 /tmp/dpkg.log)"; return 1; }
  else
    install -m 0755 $P/bin/posguard-agent $P/bin/posguardctl $P/bin/posguard-provision \
      $P/bin/posguard-collector /usr/bin/
    install -m 0644 $P/systemd/*.service /usr/lib/systemd/system/
    mkdir -p /usr/lib/sysusers.d /usr/lib/tmpfiles.d
    install -m 0644 $P/systemd/sysusers.d/*.conf /usr/lib/sysusers.d/
    install -m 0644 $P/systemd/tmpfiles.d/*.conf /usr/lib/tmpfiles.d/
    systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload
  fi
  install -m 0755 $P/bin/vm_pos_load $LOAD
  report install true "$(ls $P/debs 2>/dev/null | tr '\n' ' ')"
}

setup() {
  install_posguard || return 1
  useradd -M -s /usr/sbin/nologin -G posguard-pos pos-app
  useradd -M -s /usr/sbin/nologin -G posguard-pos pos-other
  useradd -M -s /usr/sbin/nologin outsider
  start=$(date +%s)
  if ! out=$(posguard-provision init --collector "$COLLECTOR" --server-name "$SERVER_NAME" \
    --token-file $P/token --fleet-ca $P/fleet-ca.pem --device-id "$DEVICE" \
    --ops-public-key "$OPS_PUBLIC" 2>&1); then
    report provision false "$out"
    return 1
  fi
  report provision true "in $(($(date +%s) - start)) s: $(printf '%s' "$out" | tail -n 1)"
  # The POS application's user is allowed; pos-other is in the group but not on the list.
  sed -i "s|^\(socket = .*\)$|\1\nallowed_uids = [0, $(id -u pos-app)]|" /etc/posguard/agent.toml
  # A collector on the terminal too, so that its unit is checked under systemd as well.
  mkdir -p /etc/posguard/collector-ca
  posguard-collector ca init --dir /etc/posguard/collector-ca --server-name localhost >/tmp/ca.toml
  {
    echo 'listen = "127.0.0.1:8443"'
    echo 'store = "/var/lib/posguard-collector/collector.db"'
    echo "ops_public_key = \"$OPS_PUBLIC\""
    grep -v '^#' /tmp/ca.toml
  } >/etc/posguard/collector.toml
  # Readable by the collector's user (docs/operations.md "Where things live"); keys only by it.
  chgrp -R posguard-collector /etc/posguard/collector-ca /etc/posguard/collector.toml
  chmod 0640 /etc/posguard/collector.toml /etc/posguard/collector-ca/*
  chown posguard-collector /etc/posguard/collector-ca/*.key
  chmod 0600 /etc/posguard/collector-ca/*.key
  chmod 0750 /etc/posguard/collector-ca
  systemctl enable posguard-agent posguard-collector >/dev/null 2>&1
  check agent_start "systemctl start returned after READY=1" systemctl start posguard-agent
  systemctl start posguard-collector
}

# The checks of every boot: the units are up (the agent's Type=notify: active means READY=1
# was received), and the agent serves.
boot_checks() {
  state=
  for prop in ActiveState SubState NRestarts Type; do
    state="$state$(systemctl show -p $prop --value posguard-agent) "
  done
  ready=$(systemctl show -p ActiveEnterTimestampMonotonic --value posguard-agent)
  case "$state" in
    "active running 0 notify "*) report agent_ready true "$state; ready ${ready}us after boot" ;;
    *) report agent_ready false "posguard-agent: $state (want active running 0 notify)" ;;
  esac
  if wait_for 30 systemctl is-active posguard-collector && wait_for 30 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8443'; then
    report collector_ready true "$(systemctl show -p ActiveState,SubState --value posguard-collector | tr '\n' ' ')"
  else
    report collector_ready false "$(systemctl status posguard-collector 2>&1 | tail -n 5)"
  fi
  if s=$($LOAD status 2>&1); then report serving true "$s"; else report serving false "$s"; fi
  report boot_time true "$(systemd-analyze time 2>&1 | head -n 1)"
}

sandbox_checks() {
  pid=$(agent_pid)
  w=
  # Writes inside the agent's own mount namespace (as root: only the mounts can refuse).
  for path in /var/lib/posguard /run/posguard /etc/posguard /etc /usr/bin /var/lib /root /home; do
    if nsenter -t "$pid" -m sh -c "touch $path/.pg-probe && rm -f $path/.pg-probe" 2>/dev/null; then
      w="$w $path:writable"
    else
      w="$w $path:read-only"
    fi
  done
  want=" /var/lib/posguard:writable /run/posguard:writable /etc/posguard:read-only /etc:read-only /usr/bin:read-only /var/lib:read-only /root:read-only /home:read-only"
  if [ "$w" = "$want" ]; then report sandbox true "$w"; else report sandbox false "got$w; want$want"; fi
  online=$(systemd-analyze security posguard-agent.service 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  offline=$(systemd-analyze security --offline=true /usr/lib/systemd/system/posguard-agent.service 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [ -n "$online" ] && [ "$online" = "$offline" ] && [ "$online" = "$GATE_EXPOSURE" ]; then
    report exposure true "running unit $online = offline $offline = gate $GATE_EXPOSURE"
  else
    report exposure false "running unit '$online', offline '$offline', gate (docs/operations.md) '$GATE_EXPOSURE'"
  fi
}

journald_checks() {
  j=$(journalctl -u posguard-agent -b -o json --no-pager)
  missing=
  for field in MESSAGE PRIORITY SYSLOG_IDENTIFIER TARGET CODE_FILE CODE_LINE _SYSTEMD_UNIT; do
    printf '%s' "$j" | grep -q "\"$field\":" || missing="$missing $field"
  done
  printf '%s' "$j" | grep -q '"SYSLOG_IDENTIFIER":"posguard-agent"' || missing="$missing SYSLOG_IDENTIFIER=posguard-agent"
  printf '%s' "$j" | grep -q '"POSGUARD_[A-Z_]*":' || missing="$missing POSGUARD_*"
  n=$(printf '%s\n' "$j" | grep -c '"SYSLOG_IDENTIFIER":"posguard-agent"')
  if [ -z "$missing" ]; then
    report journald true "$n entries; fields: $(printf '%s' "$j" | grep -o '"POSGUARD_[A-Z_]*"' | sort -u | tr '\n' ' ')"
  else
    report journald false "missing:$missing"
  fi
}

socket_checks() {
  if out=$(runuser -u pos-app -- posguardctl status 2>&1); then
    report socket_pos_app true "pos-app (group posguard-pos, on allowed_uids) served"
  else
    report socket_pos_app false "$out"
  fi
  out=$(runuser -u outsider -- posguardctl status 2>&1) && rc=0 || rc=$?
  case "$out" in
    *posguard-pos*) report socket_outsider true "exit $rc: $out" ;;
    *) report socket_outsider false "exit $rc, no clear refusal naming the group: $out" ;;
  esac
  out=$(runuser -u pos-other -- posguardctl status 2>&1) && rc=0 || rc=$?
  case "$rc:$out" in
    [1-9]*forbidden*allowed_uids*) report socket_not_allowed true "exit $rc: $out" ;;
    *) report socket_not_allowed false "exit $rc: $out" ;;
  esac
}

watchdog_check() {
  pid=$(agent_pid)
  kill -STOP "$pid"
  start=$(date +%s)
  # WatchdogSec=30s: killed with SIGABRT, restarted after RestartSec=5s.
  if wait_for 90 sh -c "[ \"\$(systemctl show -p MainPID --value posguard-agent)\" != $pid ] && systemctl is-active posguard-agent && $LOAD status"; then
    report watchdog true "stopped pid $pid; a new agent ($(agent_pid)) serves after $(($(date +%s) - start)) s; $(systemctl show -p NRestarts posguard-agent)"
  else
    report watchdog false "after kill -STOP $pid: $(systemctl status posguard-agent 2>&1 | tail -n 5)"
  fi
}

# The resident set now and its peak since the process started (VmHWM: the load included).
rss() { report rss true "$(grep -E 'VmRSS|VmHWM' /proc/"$(agent_pid)"/status | tr -s ' \t\n' '  ') ($1)"; }

# One line per record prefix (`cache prefix c3-1 412`, `cache bad ID`) for the host, which
# compares them with the acknowledgements; then the check's own line.
cache_check() {
  if out=$($LOAD check 2>&1); then
    printf '%s\n' "$out" | sed 's/^/cache /' >$RES
    bad=$(printf '%s\n' "$out" | grep -c '^bad')
    report cache_readback "$([ "$bad" -eq 0 ] && echo true || echo false)" \
      "$(printf '%s\n' "$out" | grep -c '^prefix') prefixes read back, $bad records with another value"
  else
    report cache_readback false "$out"
  fi
}

load() {
  report load_started true "tag $1"
  # As the POS application's user, as a till would; the acknowledgements leave on ttyS2.
  exec runuser -u pos-app -- $LOAD load --tag "$1" --workers "${WORKERS:-4}" >/dev/ttyS2
}

case "$MODE" in
  setup)
    setup || { report done false "setup failed"; exit 1; }
    boot_checks
    sandbox_checks
    journald_checks
    socket_checks
    watchdog_check
    rss "after the checks"
    load 1
    ;;
  cut:*)
    wait_for 60 serving
    boot_checks
    cache_check
    load "${MODE#cut:}"
    ;;
  final)
    wait_for 60 serving
    boot_checks
    cache_check
    # The resident set under the unit after 10 s of the full load (its records are not counted).
    timeout 10 runuser -u pos-app -- $LOAD load --tag final --workers "${WORKERS:-4}" >/dev/null
    rss "after 10 s of full load"
    # Everything journaled reaches the collector: shipped_seq catches up with head_seq.
    if wait_for 120 sh -c "$LOAD status | awk '{ exit !(\$1 == \$2) }'"; then
      report drained true "$($LOAD status)"
    else
      report drained false "$($LOAD status 2>&1)"
    fi
    rss "after the last boot's checks and the drain"
    systemctl stop posguard-agent
    posguardctl verify-journal /var/lib/posguard/journal >/tmp/verify.txt 2>&1 && rc=0 || rc=$?
    report verify_journal "$([ $rc -eq 0 ] && echo true || echo false)" "exit $rc: $(tail -n 3 /tmp/verify.txt)"
    # Every POS event of the journal, for the host to compare with the acknowledgements.
    posguardctl journal-events /var/lib/posguard/journal 2>/dev/null |
      awk '{
        if (!match($0, /"reference":"a[0-9]+-[0-9]+-[0-9]+"/)) next
        ref = substr($0, RSTART + 13, RLENGTH - 14)
        # the seq of the record itself: the last one of the line (the event comes first)
        line = $0; seq = ""
        while (match(line, /"seq":[0-9]+/)) { seq = substr(line, RSTART + 6, RLENGTH - 6); line = substr(line, RSTART + RLENGTH) }
        print "jev", seq, ref
      }' >$RES
    report done "$([ $FAILED -eq 0 ] && echo true || echo false)" "final"
    systemctl poweroff
    ;;
  *) report done false "unknown mode '$MODE'" ;;
esac
