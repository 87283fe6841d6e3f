#!/usr/bin/env bash
# Kernel storage targets for the VM lane (scripts/vm-lane), set up by writing configfs
# directly: no targetcli, no nvmetcli. Runs inside the VM only (it loads modules and
# changes the kernel's target configuration).
#
#   targets.sh iscsi-up DIR      LIO iSCSI target: fileio LUN 0 on a sparse file in DIR,
#                                portal 127.0.0.1:3260 (or those of $VM_ISCSI_PORTALS,
#                                space-separated), an ACL for this initiator's IQN with
#                                CHAP; prints KEY=VALUE lines (see below) and saves them in
#                                DIR/iscsi.env
#   targets.sh iscsi-down DIR    removes what iscsi-up made
#   targets.sh nvme-up DIR       nvmet subsystem allowing this host's NQN only, file-backed
#                                namespace 1 with a set NGUID/UUID, port tcp 127.0.0.1:4420;
#                                prints KEY=VALUE lines, saved in DIR/nvme.env
#   targets.sh nvme-down DIR     removes what nvme-up made
#
# Sourced (`. targets.sh`) it only defines the functions.
set -euo pipefail

CFG=/sys/kernel/config
SIZE_MB=${VM_TARGET_SIZE_MB:-64}

log() { echo "targets: $*" >&2; }

ensure_configfs() {
  modprobe configfs
  mountpoint -q "$CFG" || mount -t configfs configfs "$CFG"
}

# A random hex string of N digits.
hex() { od -An -N"$(($1 / 2))" -tx1 /dev/urandom | tr -d ' \n'; }

initiator_iqn() {
  sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi | head -n 1
}

# LIO's fileio WWN for a unit serial (drivers/target/target_core_spc.c,
# spc_gen_naa_6h_vendor_specific): NAA 6, IEEE company ID 0x001405 (OpenFabrics), then the
# first 25 hex digits of the serial, other characters skipped.
lio_naa() {
  local digits
  digits=$(printf '%s' "$1" | tr -cd '0-9a-fA-F' | tr 'A-F' 'a-f')
  printf 'naa.6001405%s\n' "${digits:0:25}"
}

# A tmpfs for the backing files under DIR: the VM's /tmp is overlayfs, on which nvmet's
# file backend computes a zero capacity (the namespace shows as size 0).
store() {
  local dir=$1/store
  mkdir -p "$dir"
  mountpoint -q "$dir" || mount -t tmpfs -o size=1g vmlane-store "$dir"
  echo "$dir"
}

unstore() {
  local dir=$1/store
  if mountpoint -q "$dir" && [ -z "$(ls -A "$dir")" ]; then
    umount "$dir" && rmdir "$dir"
  fi
  return 0
}

iscsi_up() {
  local dir=$1
  mkdir -p "$dir"
  ensure_configfs
  modprobe -a target_core_mod target_core_file iscsi_target_mod
  local name=vmlane
  local serial iqn initiator user=vmlane-user password
  serial=$(hex 32)
  password=$(hex 16)
  iqn=iqn.2003-01.org.linux-iscsi.vmlane:$(hex 8)
  initiator=${VM_INITIATOR_IQN:-$(initiator_iqn)}
  [ -n "$initiator" ] || { log "no InitiatorName in /etc/iscsi/initiatorname.iscsi"; return 1; }

  local file
  file=$(store "$dir")/iscsi-lun0.img
  truncate -s "${SIZE_MB}M" "$file"

  local bs=$CFG/target/core/fileio_0/$name
  mkdir -p "$bs"
  echo "fd_dev_name=$file,fd_dev_size=$((SIZE_MB * 1024 * 1024))" >"$bs/control"
  echo "$serial" >"$bs/wwn/vpd_unit_serial"
  echo 1 >"$bs/enable"

  local tpg=$CFG/target/iscsi/$iqn/tpgt_1
  mkdir -p "$tpg/lun/lun_0"
  ln -s "$bs" "$tpg/lun/lun_0/$name"
  # One portal per address of $VM_ISCSI_PORTALS (two give two paths to the LUN, for
  # multipath); the first is where discovery goes.
  local portal portals=${VM_ISCSI_PORTALS:-127.0.0.1:3260}
  for portal in $portals; do
    mkdir "$tpg/np/$portal"
  done
  # Only the named initiator, with CHAP.
  echo 0 >"$tpg/attrib/generate_node_acls"
  echo 1 >"$tpg/attrib/authentication"
  mkdir -p "$tpg/acls/$initiator/lun_0"
  ln -s "$tpg/lun/lun_0" "$tpg/acls/$initiator/lun_0/$name"
  # Without a newline: LIO keeps it as part of the name ("CHAP_N values do not match!").
  echo -n "$user" >"$tpg/acls/$initiator/auth/userid"
  echo -n "$password" >"$tpg/acls/$initiator/auth/password"
  echo 1 >"$tpg/enable"

  local wwid
  wwid=$(lio_naa "$serial")
  {
    echo "ISCSI_IQN=$iqn"
    echo "ISCSI_PORTAL=${portals%% *}"
    echo "ISCSI_PORTALS=\"$portals\""
    echo "ISCSI_INITIATOR=$initiator"
    echo "ISCSI_CHAP_USER=$user"
    echo "ISCSI_CHAP_PASSWORD=$password"
    echo "ISCSI_UNIT_SERIAL=$serial"
    echo "ISCSI_WWID=$wwid"
    echo "ISCSI_FILE=$file"
  } | tee "$dir/iscsi.env"
}

iscsi_down() {
  local dir=$1 name=vmlane
  [ -e "$dir/iscsi.env" ] || return 0
  # shellcheck disable=SC1091
  . "$dir/iscsi.env"
  local tpg=$CFG/target/iscsi/$ISCSI_IQN/tpgt_1
  if [ -d "$tpg" ]; then
    echo 0 >"$tpg/enable" || true
    rm -f "$tpg/acls/$ISCSI_INITIATOR/lun_0/$name"
    rmdir "$tpg/acls/$ISCSI_INITIATOR/lun_0" "$tpg/acls/$ISCSI_INITIATOR" 2>/dev/null || true
    local portal
    for portal in $ISCSI_PORTALS; do
      rmdir "$tpg/np/$portal" 2>/dev/null || true
    done
    rm -f "$tpg/lun/lun_0/$name"
    rmdir "$tpg/lun/lun_0" "$tpg" "$CFG/target/iscsi/$ISCSI_IQN"
  fi
  local bs=$CFG/target/core/fileio_0/$name
  [ -d "$bs" ] && rmdir "$bs" "$CFG/target/core/fileio_0"
  rm -f "$ISCSI_FILE" "$dir/iscsi.env"
  unstore "$dir"
}

host_nqn() {
  if [ -s /etc/nvme/hostnqn ]; then
    cat /etc/nvme/hostnqn
  else
    nvme gen-hostnqn
  fi
}

# A UUID in the kernel's %pU form from 32 hex digits.
as_uuid() {
  local h=$1
  echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
}

nvme_up() {
  local dir=$1
  mkdir -p "$dir"
  ensure_configfs
  modprobe -a nvmet nvmet_tcp
  local nqn hostnqn nguid uuid serial
  nqn=nqn.2014-08.org.vmlane:$(hex 8)
  hostnqn=${VM_HOST_NQN:-$(host_nqn)}
  nguid=$(as_uuid "$(hex 32)")
  uuid=$(as_uuid "$(hex 32)")
  serial=vmlane$(hex 8)

  local file
  file=$(store "$dir")/nvme-ns1.img
  truncate -s "${SIZE_MB}M" "$file"

  local n=$CFG/nvmet
  local sub=$n/subsystems/$nqn
  mkdir "$sub"
  echo 0 >"$sub/attr_allow_any_host"
  echo "$serial" >"$sub/attr_serial"
  mkdir -p "$n/hosts/$hostnqn"
  ln -s "$n/hosts/$hostnqn" "$sub/allowed_hosts/$hostnqn"
  mkdir "$sub/namespaces/1"
  echo -n "$file" >"$sub/namespaces/1/device_path"
  echo "$nguid" >"$sub/namespaces/1/device_nguid"
  echo "$uuid" >"$sub/namespaces/1/device_uuid"
  # Buffered: the file sits on tmpfs, which refuses O_DIRECT (EINVAL on enable).
  echo 1 >"$sub/namespaces/1/buffered_io"
  echo 1 >"$sub/namespaces/1/enable"

  local port=$n/ports/1
  mkdir "$port"
  echo tcp >"$port/addr_trtype"
  echo ipv4 >"$port/addr_adrfam"
  echo 127.0.0.1 >"$port/addr_traddr"
  echo 4420 >"$port/addr_trsvcid"
  ln -s "$sub" "$port/subsystems/$nqn"

  {
    echo "NVME_NQN=$nqn"
    echo "NVME_ADDR=127.0.0.1"
    echo "NVME_PORT=4420"
    echo "NVME_HOSTNQN=$hostnqn"
    echo "NVME_NGUID=$nguid"
    echo "NVME_UUID=$uuid"
    echo "NVME_SERIAL=$serial"
    echo "NVME_FILE=$file"
  } | tee "$dir/nvme.env"
}

nvme_down() {
  local dir=$1
  [ -e "$dir/nvme.env" ] || return 0
  # shellcheck disable=SC1091
  . "$dir/nvme.env"
  local n=$CFG/nvmet sub=$CFG/nvmet/subsystems/$NVME_NQN
  rm -f "$n/ports/1/subsystems/$NVME_NQN"
  rmdir "$n/ports/1" 2>/dev/null || true
  if [ -d "$sub" ]; then
    echo 0 >"$sub/namespaces/1/enable" || true
    rmdir "$sub/namespaces/1" 2>/dev/null || true
    rm -f "$sub/allowed_hosts/$NVME_HOSTNQN"
    rmdir "$sub"
  fi
  rmdir "$n/hosts/$NVME_HOSTNQN" 2>/dev/null || true
  rm -f "$NVME_FILE" "$dir/nvme.env"
  unstore "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  [ "${VOLBRIDGE_IN_VM:-}" = 1 ] || { log "refusing to run outside the VM lane (scripts/vm-lane run -- $0 ...)"; exit 2; }
  case ${1:-} in
    iscsi-up) iscsi_up "$2" ;;
    iscsi-down) iscsi_down "$2" ;;
    nvme-up) nvme_up "$2" ;;
    nvme-down) nvme_down "$2" ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
fi
