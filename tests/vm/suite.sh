#!/usr/bin/env bash
# What tests/vm_transports.rs runs in one boot of the VM lane:
#
#   scripts/vm-lane run -- tests/vm/suite.sh TEST_EXE [GUEST_TEST...]
#
# the stock-tool checks of transports.sh (iscsi, nvme), then each GUEST_TEST of the Rust
# test binary TEST_EXE (built on the host: the guest sees the host's root filesystem), run
# alone with VOLBRIDGE_IN_VM=1 so it takes its in-VM branch. Each part ends with a line
# `vm-check NAME: ok` or `vm-check NAME: FAILED …`; the exit status is non-zero when one
# failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: suite.sh TEST_EXE [GUEST_TEST...]" >&2; exit 2; }
exe=$1
shift

failed=0
"$here/transports.sh" iscsi nvme || failed=1

for t in "$@"; do
  echo "== $t"
  start=$(cut -d' ' -f1 /proc/uptime)
  # Leftovers of a failed part must not confuse the next one.
  iscsiadm -m node --logoutall=all >/dev/null 2>&1
  out=$(mktemp)
  RUST_BACKTRACE=1 "$exe" --exact "$t" --nocapture --test-threads=1 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  # A name that matches nothing runs no test and passes: that is a failure here.
  if [ "$rc" -eq 0 ] && ! grep -q 'test result: ok. 1 passed' "$out"; then
    echo "no test named $t ran"
    rc=1
  fi
  rm -f "$out"
  took=$(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -eq 0 ]; then
    echo "vm-check $t: ok (${took}s)"
  else
    echo "vm-check $t: FAILED (exit $rc, ${took}s)"
    failed=1
  fi
done
exit $failed
