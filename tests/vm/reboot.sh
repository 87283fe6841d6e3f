#!/usr/bin/env bash
# One boot of the reboot scenario of tests/vm_reboot.rs (the VM lane, scripts/vm-lane):
#
#   scripts/vm-lane run --rwdir DIR -- tests/vm/reboot.sh BOOT TEST_EXE DIR
#
# DIR (on the host, shared read-write) is what survives between the two boots, as a
# machine's disks would: volbridge's state dir (DIR/state), the staging directories
# (DIR/staging), the targets' identities (DIR/targets/NAME.env) and backing files
# (DIR/disks/NAME.img).
#
# BOOT 1: the targets are made with fresh identities, then the test binary's guest part of
#   boot one stages volumes and "crashes": the VM ends with them staged. The backing files
#   are copied to DIR/disks after a sync, as the array's disks keep what was written.
# BOOT 2: the same targets come back (same IQN, serial, CHAP secret, NQN, NGUID, data);
#   iscsid starts and logs in by itself to the targets whose node record says
#   `node.startup = automatic` (emulated: the login is done here, before volbridge starts);
#   multipathd (started as at boot) makes a map of each of their disks; then the guest part
#   of boot two runs the reconciler and checks.
#
# Targets: iSCSI `ready` (a stage to restore), `removing` (an unstage the crash
# interrupted), `creating` (a stage the crash interrupted) and `foreign` (logged in by
# someone else, named by no record); NVMe/TCP `nvready` (a stage to restore).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=targets.sh
. "$here/targets.sh"

[ $# -eq 3 ] || { echo "usage: reboot.sh 1|2 TEST_EXE DIR" >&2; exit 2; }
boot=$1 exe=$2 dir=$3
[ "${VOLBRIDGE_IN_VM:-}" = 1 ] || { log "refusing to run outside the VM lane"; exit 2; }
ISCSI_LUNS="ready removing creating foreign"
PORTAL=127.0.0.1:3260
# The backing files live on a tmpfs while the VM runs (see targets.sh: nvmet and O_DIRECT
# on the guest's overlayfs), copied from and to DIR/disks.
live=/tmp/reboot-disks

step() { echo "  [$(cut -d' ' -f1 /proc/uptime)s] $*"; }

disks_in() {
  mkdir -p "$live" "$dir/disks" "$dir/targets"
  mountpoint -q "$live" || mount -t tmpfs -o size=1g reboot-disks "$live"
  local f
  for f in "$dir"/disks/*.img; do
    [ -e "$f" ] && cp --sparse=always "$f" "$live/"
  done
  return 0
}

disks_out() {
  sync
  local f
  for f in "$live"/*.img; do
    cp --sparse=always "$f" "$dir/disks/"
  done
  sync
}

# The identities of target NAME: those of the first boot, or new ones.
identity() {
  local name=$1 kind=$2 env=$dir/targets/$1.env
  if [ ! -e "$env" ]; then
    if [ "$kind" = iscsi ]; then
      local serial
      serial=$(hex 32)
      {
        echo "IQN=iqn.2003-01.org.linux-iscsi.vmreboot:$name"
        echo "SERIAL=$serial"
        echo "WWID=$(lio_naa "$serial")"
        echo "CHAP_USER=reboot-$name"
        echo "CHAP_PASSWORD=$(hex 16)"
      } >"$env"
    else
      {
        echo "NQN=nqn.2014-08.org.vmreboot:$name"
        echo "NGUID=$(as_uuid "$(hex 32)")"
        echo "UUID=$(as_uuid "$(hex 32)")"
        echo "SERIAL=vmreboot$(hex 8)"
        echo "HOSTNQN=$(host_nqn)"
      } >"$env"
    fi
  fi
  cat "$env"
}

iscsi_target() {
  local name=$1
  local IQN SERIAL CHAP_USER CHAP_PASSWORD WWID
  eval "$(identity "$name" iscsi)"
  local file=$live/$name.img initiator
  initiator=$(initiator_iqn)
  [ -e "$file" ] || truncate -s "${SIZE_MB}M" "$file"
  local bs=$CFG/target/core/fileio_0/$name
  mkdir -p "$bs"
  echo "fd_dev_name=$file,fd_dev_size=$((SIZE_MB * 1024 * 1024))" >"$bs/control"
  echo "$SERIAL" >"$bs/wwn/vpd_unit_serial"
  echo 1 >"$bs/enable"
  local tpg=$CFG/target/iscsi/$IQN/tpgt_1
  mkdir -p "$tpg/lun/lun_0"
  ln -s "$bs" "$tpg/lun/lun_0/$name"
  mkdir "$tpg/np/$PORTAL"
  echo 0 >"$tpg/attrib/generate_node_acls"
  echo 1 >"$tpg/attrib/authentication"
  mkdir -p "$tpg/acls/$initiator/lun_0"
  ln -s "$tpg/lun/lun_0" "$tpg/acls/$initiator/lun_0/$name"
  echo -n "$CHAP_USER" >"$tpg/acls/$initiator/auth/userid"
  echo -n "$CHAP_PASSWORD" >"$tpg/acls/$initiator/auth/password"
  echo 1 >"$tpg/enable"
  step "iSCSI target $name: $IQN, WWID $WWID"
}

nvme_target() {
  local name=$1 port=1
  local NQN NGUID UUID SERIAL HOSTNQN
  eval "$(identity "$name" nvme)"
  local file=$live/$name.img
  [ -e "$file" ] || truncate -s "${SIZE_MB}M" "$file"
  local n=$CFG/nvmet sub=$CFG/nvmet/subsystems/$NQN
  mkdir "$sub"
  echo 0 >"$sub/attr_allow_any_host"
  echo "$SERIAL" >"$sub/attr_serial"
  mkdir -p "$n/hosts/$HOSTNQN"
  ln -s "$n/hosts/$HOSTNQN" "$sub/allowed_hosts/$HOSTNQN"
  mkdir "$sub/namespaces/1"
  echo -n "$file" >"$sub/namespaces/1/device_path"
  echo "$NGUID" >"$sub/namespaces/1/device_nguid"
  echo "$UUID" >"$sub/namespaces/1/device_uuid"
  echo 1 >"$sub/namespaces/1/buffered_io"
  echo 1 >"$sub/namespaces/1/enable"
  mkdir -p "$n/ports/$port"
  echo tcp >"$n/ports/$port/addr_trtype"
  echo ipv4 >"$n/ports/$port/addr_adrfam"
  echo 127.0.0.1 >"$n/ports/$port/addr_traddr"
  echo 4420 >"$n/ports/$port/addr_trsvcid"
  ln -s "$sub" "$n/ports/$port/subsystems/$NQN"
  step "NVMe/TCP subsystem $name: $NQN, NGUID $NGUID"
}

start_iscsid() {
  modprobe iscsi_tcp
  pidof iscsid >/dev/null || iscsid
  # iscsiadm makes its lock directory on first use with a racy mkdir: two started at once
  # on a fresh /run fail with "Could not open /run/lock/iscsi: File exists" (exit 6). The
  # parallel automatic logins of boot 2 must not trip on that.
  mkdir -p /run/lock/iscsi
  local i
  for i in $(seq 100); do
    iscsiadm -m session >/dev/null 2>&1 && return 0
    [ $? -eq 21 ] && return 0
    sleep 0.1
  done
  log "iscsid did not answer"
  return 1
}

# What iscsid does at boot for a node record with node.startup = automatic: it logs in on
# its own, before any volbridge runs. Here the record is made as it would have been kept
# in /etc/iscsi/nodes (which the lane's overlay does not keep across boots).
auto_login() {
  local name=$1 IQN SERIAL CHAP_USER CHAP_PASSWORD WWID
  eval "$(cat "$dir/targets/$name.env")"
  local node=(iscsiadm -m node -T "$IQN" -p "$PORTAL")
  "${node[@]}" -o new >/dev/null
  "${node[@]}" -o update -n node.startup -v automatic
  "${node[@]}" -o update -n node.session.auth.authmethod -v CHAP
  "${node[@]}" -o update -n node.session.auth.username -v "$CHAP_USER"
  "${node[@]}" -o update -n node.session.auth.password -v "$CHAP_PASSWORD"
  "${node[@]}" --login >/dev/null
  local i
  for i in $(seq 200); do
    grep -qx "$WWID" /sys/block/sd*/device/wwid 2>/dev/null && break
    sleep 0.1
  done
  step "iscsid logged in to $name by itself (node.startup automatic): $(grep -lx "$WWID" /sys/block/sd*/device/wwid | cut -d/ -f4)"
}

# multipathd as a distribution starts it at boot, taking every SCSI disk (find_multipaths
# no: Debian's default, strict, would want the WWID listed in /etc/multipath/wwids).
start_multipathd() {
  printf 'defaults {\n    user_friendly_names yes\n    find_multipaths no\n}\n' >/etc/multipath.conf
  modprobe dm_multipath
  pidof multipathd >/dev/null || multipathd
  local i
  for i in $(seq 100); do
    multipathd show daemon 2>/dev/null | grep -q 'idle\|running' && return 0
    sleep 0.1
  done
  log "multipathd did not start"
  return 1
}

# Waits for multipathd's map over the disk of target NAME.
wait_map() {
  local name=$1 IQN SERIAL CHAP_USER CHAP_PASSWORD WWID
  eval "$(cat "$dir/targets/$name.env")"
  local uuid=mpath-3${WWID#naa.} i
  for i in $(seq 300); do
    if grep -qx "$uuid" /sys/block/dm-*/dm/uuid 2>/dev/null; then
      step "multipathd made $(grep -lx "$uuid" /sys/block/dm-*/dm/uuid | cut -d/ -f4) ($uuid) of $name's disk"
      return 0
    fi
    sleep 0.1
  done
  log "no multipath map for $name ($uuid)"
  return 1
}

run_guest() {
  local test=$1 rc=0
  VOLBRIDGE_REBOOT_DIR=$dir RUST_BACKTRACE=1 "$exe" --exact "$test" --nocapture --test-threads=1 || rc=$?
  return $rc
}

ensure_configfs
modprobe -a target_core_mod target_core_file iscsi_target_mod nvmet nvmet_tcp nvme_tcp
disks_in
for t in $ISCSI_LUNS; do iscsi_target "$t"; done
nvme_target nvready
start_iscsid

case $boot in
  1)
    echo "== boot1"
    rc=0
    run_guest boot_one_stages_then_the_machine_dies || rc=$?
    disks_out
    if [ $rc -eq 0 ]; then
      echo "vm-check boot1: ok"
    else
      echo "vm-check boot1: FAILED (exit $rc)"
    fi
    # No unstage, no logout: the machine dies here.
    exit $rc
    ;;
  2)
    echo "== boot2"
    start_multipathd
    # In parallel, as iscsid logs in to all its automatic nodes at once.
    pids=()
    for t in removing creating foreign; do auto_login "$t" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    for t in removing creating foreign; do wait_map "$t"; done
    rc=0
    run_guest boot_two_reconciles || rc=$?
    if [ $rc -eq 0 ]; then
      echo "vm-check boot2: ok"
    else
      echo "vm-check boot2: FAILED (exit $rc)"
    fi
    exit $rc
    ;;
  *)
    echo "unknown boot $boot" >&2
    exit 2
    ;;
esac
