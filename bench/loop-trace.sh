#!/bin/bash
# Shows how the kernel carries a pool volume's I/O through its two loop devices: builds the
# same stack the image pool makes (ext4 on a loop device over a file in xfs, on a loop device
# over a sparse file in the host's file system), runs one second of random 4 KiB direct reads
# with fio under the kernel's workqueue and iomap trace events, and counts who read what.
#
# On kernels whose loop driver hands every I/O to a worker (before Linux 6.19) each fio read
# shows up twice more below it, from a kworker and without NOWAIT; on later kernels the loop
# layers' reads come from fio's own context. docs/pool.md ("Why: every loop I/O ...") has a
# reading of this machine.
#
# Usage (root; needs fio, xfsprogs, e2fsprogs): bench/loop-trace.sh [DIR]   (default /var/tmp)
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "loop-trace: needs root (loop devices, mounts, tracefs)" >&2; exit 1; }
for tool in fio mkfs.xfs mkfs.ext4 losetup; do
  command -v "$tool" >/dev/null || { echo "loop-trace: $tool is missing (apt-get install fio xfsprogs e2fsprogs)" >&2; exit 1; }
done

work=$(mktemp -d "${1:-/var/tmp}/volbridge-loop-trace.XXXXXX")
trace=/sys/kernel/tracing
pool_loop="" vol_loop=""
cleanup() {
  [ -w "$trace/tracing_on" ] && { echo 0 >"$trace/tracing_on"; echo >"$trace/set_event"; }
  umount -q "$work/vol" 2>/dev/null || true
  [ -n "$vol_loop" ] && losetup -d "$vol_loop" 2>/dev/null
  umount -q "$work/pool" 2>/dev/null || true
  [ -n "$pool_loop" ] && losetup -d "$pool_loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

[ -d "$trace/events" ] || mount -t tracefs nodev "$trace"
[ -d "$trace/events/workqueue" ] && [ -d "$trace/events/iomap" ] ||
  { echo "loop-trace: this kernel has no workqueue or iomap trace events" >&2; exit 1; }

mkdir -p "$work/pool" "$work/vol"
truncate -s 4G "$work/pool.img"
pool_loop=$(losetup -f --show --direct-io=on "$work/pool.img")
mkfs.xfs -q -m reflink=1 "$pool_loop"
mount "$pool_loop" "$work/pool"
truncate -s 1G "$work/pool/volume.img"
vol_loop=$(losetup -f --show --direct-io=on "$work/pool/volume.img")
mkfs.ext4 -q "$vol_loop"
mount "$vol_loop" "$work/vol"
dd if=/dev/urandom of="$work/vol/fio.dat" bs=1M count=256 oflag=direct status=none

echo 0 >"$trace/tracing_on"
echo >"$trace/trace"
echo 16384 >"$trace/buffer_size_kb"
echo 'workqueue:workqueue_queue_work iomap:iomap_dio_rw_begin' >"$trace/set_event"
echo 1 >"$trace/tracing_on"
fio --name=trace --filename="$work/vol/fio.dat" --rw=randread --bs=4k --direct=1 \
  --ioengine=libaio --iodepth=16 --runtime=1 --time_based --output-format=terse >/dev/null
echo 0 >"$trace/tracing_on"

echo "kernel $(uname -r); devices: volume $vol_loop over pool $pool_loop"
echo "direct reads begun, by file system device and flags (fio's own are on the volume's ext4):"
grep iomap_dio_rw_begin "$trace/trace" |
  sed -E 's/.*dev ([0-9:]+).*flags ([A-Z_|]+).*/  dev \1 \2/' | sort | uniq -c
echo "who began them:"
grep iomap_dio_rw_begin "$trace/trace" | awk '{print $1}' | sed -E 's/-[0-9]+$//; s/[0-9]+$//' |
  sort | uniq -c | sort -rn
echo "work queued on the loop devices' workqueues:"
grep workqueue_queue_work "$trace/trace" | grep -o 'workqueue=loop[0-9]*' | sort | uniq -c
