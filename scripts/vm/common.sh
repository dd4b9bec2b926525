# Shared by scripts/vm-boot-test.sh and scripts/soak-power-cut.sh: the cached Debian 12 tree,
# the per-run disk, swtpm and qemu. Source it; do not run it.
# shellcheck shell=bash

# The guest's packages (FACTS: what a real boot with the TPM needs; libtss2 and libssl for the
# agent and posguard-provision). The cache key is a hash of this list and the suite, so a change
# here builds a new tree on the next run.
VM_SUITE=bookworm
VM_MIRROR=${VM_MIRROR:-http://deb.debian.org/debian}
VM_INCLUDE=systemd,systemd-sysv,dbus,udev,tpm-udev,libtss2-esys-3.0.2-0,libtss2-tctildr0,libtss2-tcti-device0,libtss2-mu0,libtss2-sys1,libssl3,linux-image-cloud-amd64,initramfs-tools,procps
VM_CACHE=${VM_CACHE:-/var/cache/posguard-ci/vm}
VM_KEY=$(printf '%s %s %s' "$VM_SUITE" "$VM_MIRROR" "$VM_INCLUDE" | sha256sum | cut -c1-16)
VM_TREE=$VM_CACHE/tree-$VM_KEY

# vm_tree: builds the Debian tree once (about a minute) and keeps it under $VM_CACHE; a run
# that was interrupted while building leaves no tree behind (built in a temporary directory and
# renamed when complete).
vm_tree() {
  [ -f "$VM_TREE/.complete" ] && return 0
  mkdir -p "$VM_CACHE"
  local tmp=$VM_CACHE/building-$VM_KEY.$$
  rm -rf "$tmp"
  echo "building the guest's Debian tree in $VM_TREE (first run on this machine)"
  if ! debootstrap --variant=minbase --include="$VM_INCLUDE" "$VM_SUITE" "$tmp" "$VM_MIRROR" \
    >"$VM_CACHE/debootstrap-$VM_KEY.log" 2>&1; then
    echo "FAIL: debootstrap failed; see $VM_CACHE/debootstrap-$VM_KEY.log" >&2
    rm -rf "$tmp"
    return 1
  fi
  # Nothing downloaded needs to stay in the image.
  rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
  touch "$tmp/.complete"
  rm -rf "$VM_TREE"
  mv "$tmp" "$VM_TREE"
}

# vm_base_image: the tree plus the harness's own files (guest/base/: network, the
# posguard-vm.service that runs the payload's guest script) as a raw ext4 image, cached next
# to the tree and keyed by the tree and those files. Each run boots a copy of it.
vm_base_image() {
  local harness_key
  harness_key=$(cd scripts/vm/guest/base && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  VM_BASE=$VM_CACHE/base-$VM_KEY-$harness_key.raw
  [ -f "$VM_BASE" ] && return 0
  vm_tree
  # Older base images (other harness files) are not used again: 3 GiB sparse each.
  rm -f "$VM_CACHE"/base-*.raw
  local tmp=$VM_CACHE/base-building.$$
  rm -rf "$tmp" "$tmp.raw"
  cp -a "$VM_TREE" "$tmp"
  rm -f "$tmp/.complete"
  cp -a scripts/vm/guest/base/. "$tmp/"
  mkdir -p "$tmp/etc/systemd/system/multi-user.target.wants" "$tmp/mnt/payload"
  ln -sf /etc/systemd/system/posguard-vm.service "$tmp/etc/systemd/system/multi-user.target.wants/"
  ln -sf /lib/systemd/system/systemd-networkd.service "$tmp/etc/systemd/system/multi-user.target.wants/"
  echo "posguard-vm" >"$tmp/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$tmp/etc/fstab"
  truncate -s 3G "$tmp.raw"
  mkfs.ext4 -q -F -L posguard-vm -d "$tmp" "$tmp.raw"
  rm -rf "$tmp"
  mv "$tmp.raw" "$VM_BASE"
}

# vm_payload DIR IMAGE: DIR (binaries, units, the guest scripts, the run's parameters) as a
# small ext4 image, the guest's second disk (/dev/vdb, mounted read-only at /mnt/payload).
vm_payload() {
  local size
  size=$(du -sm "$1" | cut -f1)
  rm -f "$2"
  truncate -s $((size * 2 + 32))M "$2"
  mkfs.ext4 -q -F -d "$1" "$2"
}

# vm_start_tpm STATE: swtpm for one boot (the TPM's state persists in STATE across boots, as
# its NV memory does across power cuts). Sets VM_TPM_PID.
vm_start_tpm() {
  mkdir -p "$1"
  rm -f "$1/sock"
  swtpm socket --tpm2 --tpmstate dir="$1" --ctrl type=unixio,path="$1/sock" \
    --log file="$1/swtpm.log" &
  VM_TPM_PID=$!
  local _
  for _ in $(seq 200); do
    [ -S "$1/sock" ] && return 0
    sleep 0.05
  done
  echo "FAIL: swtpm did not create $1/sock; see $1/swtpm.log" >&2
  return 1
}

# vm_pick_accel: KVM when it works, TCG otherwise (docs/operations.md "A real boot under
# systemd"): on some hosts /dev/kvm exists but `-cpu host` aborts or the guest hangs before the
# kernel banner. A KVM boot of the kernel alone must print its banner within 10 s. Sets
# VM_ACCEL and VM_CPU unless already set.
vm_pick_accel() {
  [ -n "${VM_ACCEL:-}" ] && return 0
  VM_ACCEL=tcg VM_CPU=max
  if [ -w /dev/kvm ]; then
    local log pid _ kernel
    log=$(mktemp)
    kernel=$(ls "$VM_TREE"/boot/vmlinuz-* | head -n1)
    qemu-system-x86_64 -accel kvm -cpu host -m 256 -nographic -no-reboot -kernel "$kernel" \
      -append "console=ttyS0 panic=-1" -serial file:"$log" -monitor none </dev/null >/dev/null 2>&1 &
    pid=$!
    # (bash's own report of qemu's abort is not the result: silenced)
    {
      for _ in $(seq 100); do
        if grep -q 'Linux version' "$log"; then
          VM_ACCEL=kvm VM_CPU=host
          break
        fi
        kill -0 "$pid" || break
        sleep 0.1
      done
      kill -KILL "$pid" || true
      wait "$pid" || true
    } 2>/dev/null
    rm -f "$log"
  fi
  echo "accelerator: $VM_ACCEL (-cpu $VM_CPU)"
}

# vm_start DISK PAYLOAD TPMSTATE OUTDIR MODE: boots the guest in the background (vm_pick_accel
# first). The console goes to OUTDIR/console.log, the guest's check results (JSON lines) to
# OUTDIR/results.log, the workload's acknowledgements to OUTDIR/acks.log. MODE reaches the
# guest's script on the kernel command line (posguard.vm=MODE). Sets VM_PID.
vm_start() {
  local disk=$1 payload=$2 tpm=$3 out=$4 mode=$5
  local kernel initrd
  kernel=$(ls "$VM_TREE"/boot/vmlinuz-* | head -n1)
  initrd=$(ls "$VM_TREE"/boot/initrd.img-* | head -n1)
  mkdir -p "$out"
  : >"$out/results.log"
  : >"$out/acks.log"
  qemu-system-x86_64 -accel "$VM_ACCEL" -cpu "$VM_CPU" -smp 2 -m 1024 \
    -nographic -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=/dev/vda rw console=ttyS0 quiet posguard.vm=$mode systemd.show_status=0" \
    -drive file="$disk",if=virtio,format=raw,cache=writeback \
    -drive file="$payload",if=virtio,format=raw,readonly=on \
    -netdev user,id=n -device virtio-net-pci,netdev=n \
    -device virtio-rng-pci \
    -chardev socket,id=tpmc,path="$tpm/sock" -tpmdev emulator,id=tpm0,chardev=tpmc \
    -device tpm-tis,tpmdev=tpm0 \
    -serial file:"$out/console.log" -serial file:"$out/results.log" -serial file:"$out/acks.log" \
    -monitor none </dev/null >"$out/qemu.log" 2>&1 &
  VM_PID=$!
}

# vm_wait_result OUTDIR CHECK SECONDS: waits until the guest reported CHECK (a line
# {"check":"CHECK",…} in results.log) or qemu ended; 1 on time-out or an early end.
vm_wait_result() {
  local deadline=$(($(date +%s) + $3))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -q "\"check\":\"$2\"" "$1/results.log" 2>/dev/null && return 0
    # The guest gave up (a failed setup reports done with ok false): no use waiting.
    grep -q '"check":"done"' "$1/results.log" 2>/dev/null && return 1
    kill -0 "$VM_PID" 2>/dev/null || {
      grep -q "\"check\":\"$2\"" "$1/results.log" 2>/dev/null && return 0
      return 1
    }
    sleep 0.2
  done
  return 1
}

# vm_kill: the power cut: SIGKILL qemu (the guest's page cache and everything in flight is
# gone), then the TPM's power goes too.
vm_kill() {
  kill -KILL "$VM_PID" 2>/dev/null || true
  wait "$VM_PID" 2>/dev/null || true
  kill -TERM "$VM_TPM_PID" 2>/dev/null || true
  wait "$VM_TPM_PID" 2>/dev/null || true
}
