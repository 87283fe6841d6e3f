#!/usr/bin/env bash
# End-to-end checks of the kernel's iSCSI and NVMe/TCP stacks with the stock tools, run
# inside the VM lane (tests/vm_transports.rs runs it as
# `scripts/vm-lane run -- tests/vm/transports.sh`):
#
#   iscsi  LIO target over configfs (fileio LUN, 127.0.0.1:3260, ACL for this initiator's
#          IQN with CHAP); iscsid; SendTargets discovery; a login with a wrong CHAP
#          password is refused (iscsiadm exit 24), the right one logs in; the disk is found
#          by its WWID (naa.6001405… from the unit serial) under /sys/block/*/device/wwid;
#          direct I/O read back and checked against the backing file; mkfs + mount; logout
#          removes the disk; teardown.
#   nvme   nvmet over configfs (subsystem allowing this host's NQN only, file-backed
#          namespace with set NGUID/UUID, port tcp 127.0.0.1:4420); a foreign host NQN is
#          refused; `nvme connect`; the namespace is found by NGUID/UUID in sysfs; direct
#          I/O checked against the backing file; mkfs + mount; disconnect removes it.
#
#   transports.sh [iscsi] [nvme]      (default: both)
#
# Prints one line per check, `vm-check NAME: ok` or `vm-check NAME: FAILED …`, and exits
# non-zero when one failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/targets.sh
. "$here/targets.sh"
set +e

if [ "${VOLBRIDGE_IN_VM:-}" != 1 ]; then
  echo "transports.sh: runs inside the VM lane only: scripts/vm-lane run -- $0" >&2
  exit 2
fi

step() { printf '  [%6.1fs] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

# Direct I/O of 4 MiB at 8 MiB into DEV, read back, and the same bytes in the target's
# backing FILE: the data went through the transport to the target and back.
io_check() {
  local dev=$1 file=$2 work=$3
  dd if=/dev/urandom of="$work/pattern" bs=1M count=4 status=none
  dd if="$work/pattern" of="$dev" bs=1M seek=8 oflag=direct conv=fsync status=none
  dd if="$dev" of="$work/readback" bs=1M skip=8 count=4 iflag=direct status=none
  cmp "$work/pattern" "$work/readback"
  dd if="$file" of="$work/backing" bs=1M skip=8 count=4 status=none
  cmp "$work/pattern" "$work/backing"
  step "4 MiB of direct I/O read back from $dev and found in the backing file"
}

fs_check() {
  local dev=$1 work=$2
  mkfs.ext4 -q -F "$dev"
  mkdir -p "$work/mnt"
  mount "$dev" "$work/mnt"
  echo "hello from the VM lane" >"$work/mnt/hello"
  sync
  umount "$work/mnt"
  mount -o ro "$dev" "$work/mnt"
  grep -q "hello from the VM lane" "$work/mnt/hello"
  umount "$work/mnt"
  step "mkfs.ext4, mount, write, remount, read on $dev"
}

start_iscsid() {
  modprobe iscsi_tcp
  if ! pidof iscsid >/dev/null; then
    iscsid
  fi
  # iscsiadm answers 21 (no sessions) once iscsid listens; 20 before.
  local rc
  for _ in $(seq 100); do
    rc=0
    iscsiadm -m session >/dev/null 2>&1 || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 21 ] && return 0
    sleep 0.1
  done
  echo "iscsid did not come up (iscsiadm -m session: $rc)" >&2
  return 1
}

# The sdX disks whose WWID is $1.
disks_by_wwid() {
  local d
  for d in /sys/block/sd*; do
    [ -e "$d/device/wwid" ] || continue
    [ "$(cat "$d/device/wwid")" = "$1" ] && basename "$d"
  done
  return 0
}

check_iscsi() {
  set -eE
  local work
  work=$(mktemp -d /tmp/vm-iscsi.XXXXXX)
  trap 'step "failed at line $LINENO: $BASH_COMMAND"' ERR
  trap 'iscsiadm -m node -T "${ISCSI_IQN:-none}" -p 127.0.0.1:3260 --logout >/dev/null 2>&1; iscsi_down "$work" >/dev/null 2>&1' EXIT
  iscsi_up "$work" >/dev/null
  # shellcheck disable=SC1091
  . "$work/iscsi.env"
  step "LIO target $ISCSI_IQN, ACL $ISCSI_INITIATOR with CHAP, unit serial $ISCSI_UNIT_SERIAL"
  start_iscsid
  step "iscsid up"

  local out
  out=$(iscsiadm -m discovery -t sendtargets -p "$ISCSI_PORTAL" -o nonpersistent)
  grep -qx "$ISCSI_PORTAL,1 $ISCSI_IQN" <<<"$out"
  step "discovery: $out"

  local node=(iscsiadm -m node -T "$ISCSI_IQN" -p "$ISCSI_PORTAL")
  # A node record for the target with CHAP and password $1 (what volbridge's transport
  # does before each login).
  node_record() {
    "${node[@]}" -o new >/dev/null
    "${node[@]}" -o update -n node.startup -v manual
    "${node[@]}" -o update -n node.session.auth.authmethod -v CHAP
    "${node[@]}" -o update -n node.session.auth.username -v "$ISCSI_CHAP_USER"
    "${node[@]}" -o update -n node.session.auth.password -v "$1"
  }
  node_record "wrong-$ISCSI_CHAP_PASSWORD"
  local rc=0
  "${node[@]}" --login >"$work/login.out" 2>&1 || rc=$?
  [ $rc -eq 24 ] || { cat "$work/login.out"; echo "login with a wrong CHAP password: exit $rc, want 24" >&2; false; }
  local kept=kept
  "${node[@]}" >/dev/null 2>&1 || kept="deleted by iscsiadm"
  step "wrong CHAP password refused (iscsiadm exit 24); node record $kept"
  node_record "$ISCSI_CHAP_PASSWORD"
  "${node[@]}" --login >/dev/null
  step "logged in with CHAP: $(iscsiadm -m session)"

  local disks
  for _ in $(seq 100); do
    disks=$(disks_by_wwid "$ISCSI_WWID")
    [ -n "$disks" ] && break
    sleep 0.1
  done
  [ "$(wc -w <<<"$disks")" -eq 1 ] || { echo "want one disk with WWID $ISCSI_WWID, found '$disks'" >&2; false; }
  local dev=/dev/$disks
  step "disk $disks has WWID $ISCSI_WWID; vendor '$(cat /sys/block/"$disks"/device/vendor)', size $(($(cat /sys/block/"$disks"/size) / 2048)) MiB"
  # The unit serial page (VPD 0x80) carries the serial set in configfs.
  if [ -e "/sys/block/$disks/device/vpd_pg80" ]; then
    tail -c +5 "/sys/block/$disks/device/vpd_pg80" | tr -d '\0' | grep -qx "$ISCSI_UNIT_SERIAL"
    step "VPD page 0x80 is the unit serial"
  fi
  io_check "$dev" "$ISCSI_FILE" "$work"
  fs_check "$dev" "$work"

  "${node[@]}" --logout >/dev/null
  "${node[@]}" -o delete
  [ ! -e "/sys/block/$disks" ] || { echo "$disks still present after logout" >&2; false; }
  step "logged out; $disks is gone"
  trap - EXIT
  iscsi_down "$work"
  step "target removed"
}

# nvmeXnY block devices whose nguid is $1.
namespaces_by_nguid() {
  local d
  for d in /sys/block/nvme*; do
    # Not the hidden per-path nodes (nvme0c0n1) of native multipath.
    [[ $(basename "$d") =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
    [ -e "$d/nguid" ] || continue
    [ "$(cat "$d/nguid")" = "$1" ] && basename "$d"
  done
  return 0
}

check_nvme() {
  set -eE
  local work
  work=$(mktemp -d /tmp/vm-nvme.XXXXXX)
  trap 'step "failed at line $LINENO: $BASH_COMMAND"' ERR
  trap 'nvme disconnect -n "${NVME_NQN:-none}" >/dev/null 2>&1; nvme_down "$work" >/dev/null 2>&1' EXIT
  nvme_up "$work" >/dev/null
  # shellcheck disable=SC1091
  . "$work/nvme.env"
  step "nvmet subsystem $NVME_NQN for host $NVME_HOSTNQN, namespace NGUID $NVME_NGUID"
  modprobe nvme_tcp

  local rc=0
  nvme connect -t tcp -a "$NVME_ADDR" -s "$NVME_PORT" -n "$NVME_NQN" \
    --hostnqn nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000 >"$work/connect.out" 2>&1 || rc=$?
  [ $rc -ne 0 ] || { echo "a host NQN not allowed on the subsystem connected" >&2; false; }
  step "foreign host NQN refused (exit $rc: $(tail -n 1 "$work/connect.out"))"

  nvme connect -t tcp -a "$NVME_ADDR" -s "$NVME_PORT" -n "$NVME_NQN" --hostnqn "$NVME_HOSTNQN"
  local ns
  for _ in $(seq 100); do
    ns=$(namespaces_by_nguid "$NVME_NGUID")
    [ -n "$ns" ] && break
    sleep 0.1
  done
  [ "$(wc -w <<<"$ns")" -eq 1 ] || { echo "want one namespace with NGUID $NVME_NGUID, found '$ns'" >&2; false; }
  [ "$(cat "/sys/block/$ns/uuid")" = "$NVME_UUID" ]
  step "namespace $ns: nguid $NVME_NGUID, uuid $NVME_UUID, wwid $(cat "/sys/block/$ns/wwid")"
  local sys_ctrl
  for sys_ctrl in /sys/class/nvme/nvme*; do
    if [ "$(cat "$sys_ctrl/subsysnqn")" = "$NVME_NQN" ]; then
      [ "$(tr -d ' ' <"$sys_ctrl/serial")" = "$NVME_SERIAL" ]
      step "controller $(basename "$sys_ctrl"): transport $(cat "$sys_ctrl/transport"), address $(cat "$sys_ctrl/address"), serial $NVME_SERIAL, state $(cat "$sys_ctrl/state")"
    fi
  done
  io_check "/dev/$ns" "$NVME_FILE" "$work"
  fs_check "/dev/$ns" "$work"

  nvme disconnect -n "$NVME_NQN" >/dev/null
  for _ in $(seq 50); do
    [ -e "/sys/block/$ns" ] || break
    sleep 0.1
  done
  [ ! -e "/sys/block/$ns" ] || { echo "$ns still present after disconnect" >&2; false; }
  step "disconnected; $ns is gone"
  trap - EXIT
  nvme_down "$work"
  step "target removed"
}

checks=("$@")
((${#checks[@]})) || checks=(iscsi nvme)
failed=0
for c in "${checks[@]}"; do
  echo "== $c"
  start=$(cut -d' ' -f1 /proc/uptime)
  case $c in
    iscsi) (check_iscsi) ;;
    nvme) (check_nvme) ;;
    *) echo "unknown check $c" >&2; false ;;
  esac
  rc=$?
  took=$(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    echo "vm-check $c: ok (${took}s)"
  else
    echo "vm-check $c: FAILED (exit $rc, ${took}s)"
    failed=1
  fi
done
exit $failed
