#!/usr/bin/env bash
# What a reboot does to the local CSP's network exports, for tests/vm/two_hosts.rs: every
# volbridge object in the kernel's target configuration (LIO targets and fileio backstores
# named io.volbridge / vb.*, nvmet subsystems named io.volbridge and the ports left serving
# nothing) removed by hand, as if the array's kernel had started afresh. VM lane only.
#
#   kernel-exports.sh wipe
set -uo pipefail
[ "${1:-}" = wipe ] || { echo "usage: kernel-exports.sh wipe" >&2; exit 2; }
[ "${VOLBRIDGE_IN_VM:-}" = 1 ] || { echo "refusing to run outside the VM lane" >&2; exit 2; }
CFG=/sys/kernel/config

for t in "$CFG"/target/iscsi/iqn.*io.volbridge*; do
  [ -d "$t" ] || continue
  for tpg in "$t"/tpgt_*; do
    echo 0 >"$tpg/enable" 2>/dev/null
    for acl in "$tpg"/acls/*; do
      [ -d "$acl" ] || continue
      find "$acl"/lun_* -maxdepth 1 -type l -delete
      rmdir "$acl"/lun_* "$acl"
    done
    for np in "$tpg"/np/*; do [ -d "$np" ] && rmdir "$np"; done
    for lun in "$tpg"/lun/lun_*; do
      [ -d "$lun" ] || continue
      find "$lun" -maxdepth 1 -type l -delete
      rmdir "$lun"
    done
    rmdir "$tpg"
  done
  rmdir "$t"
done
for bs in "$CFG"/target/core/fileio_*/vb.*; do
  [ -d "$bs" ] && rmdir "$bs"
done

for sub in "$CFG"/nvmet/subsystems/nqn.*io.volbridge*; do
  [ -d "$sub" ] || continue
  nqn=$(basename "$sub")
  for port in "$CFG"/nvmet/ports/*; do
    [ -L "$port/subsystems/$nqn" ] || continue
    rm "$port/subsystems/$nqn"
    [ -z "$(ls -A "$port/subsystems")" ] && rmdir "$port"
  done
  for ns in "$sub"/namespaces/*; do
    [ -d "$ns" ] || continue
    echo 0 >"$ns/enable"
    rmdir "$ns"
  done
  find "$sub/allowed_hosts" -maxdepth 1 -type l -delete
  rmdir "$sub"
done
exit 0
