#!/usr/bin/env bash
# Builds the managed (v2) plugin bundle: OUT/config.json and OUT/rootfs with the volbridge
# binary and the host's mkfs/blkid/fsck/resize tools, each with the shared libraries it
# loads (found with ldd), so the bundle needs no base image and no network.
#
#   docker-plugin/build-rootfs.sh [--binary target/release/volbridge] [--csi] OUT
#   docker plugin create volbridge OUT && docker plugin enable volbridge
#
# --csi builds the Docker Swarm flavour instead of the volume plugin: config.json from
# docker-plugin/csi/ (CSI on $CSI_ENDPOINT, docker.csicontroller/1.0 and docker.csinode/1.0,
# PropagatedMount /data/published); see docs/swarm.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary="$here/../target/release/volbridge"
config="$here/config.json"
# The directories a flavour's config.json names: its PropagatedMount, and for Swarm the
# staging root its agent passes (/data/staged/<volume id>; the volumes' dirs volbridge makes).
dirs=(mnt/volbridge)
usage="usage: build-rootfs.sh [--binary PATH] [--csi] OUT"
while [ $# -gt 1 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --csi) config="$here/csi/config.json"; dirs=(data/published data/staged); shift ;;
    *) echo "build-rootfs.sh: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
out=$1
case "$out" in -*) echo "build-rootfs.sh: OUT '$out' looks like an option; $usage" >&2; exit 2 ;; esac
[ -x "$binary" ] || { echo "build-rootfs.sh: $binary is missing; run cargo build --release" >&2; exit 1; }

rootfs="$out/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs"/{usr/bin,usr/sbin,etc,tmp,proc,sys,dev,run/docker/plugins,run/volbridge,var/lib/volbridge}
for d in "${dirs[@]}"; do mkdir -p "$rootfs/$d"; done
chmod 1777 "$rootfs/tmp"
ln -s usr/bin "$rootfs/bin"
ln -s usr/sbin "$rootfs/sbin"

# Copies a file with its directory, following symlinks.
place() {
  local src=$1 dest=$2
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -L "$src" "$rootfs$dest"
}

# Copies the shared libraries (and the loader) an ELF file needs.
libs_of() {
  ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\/[^ ]*ld-linux/{print $1}' | while read -r lib; do
    [ -e "$rootfs$lib" ] || place "$lib" "$lib"
  done
}

place "$binary" /usr/bin/volbridge
# Debug info is most of a debug build's size; the plugin store copies the whole rootfs.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$rootfs/usr/bin/volbridge" || true
fi
libs_of "$binary"

# The node tools volbridge runs: filesystem probe, mkfs, check, grow.
tools=(blkid mkfs.ext4 mke2fs e2fsck resize2fs mkfs.xfs xfs_growfs xfs_repair mkfs.btrfs btrfs)
for t in "${tools[@]}"; do
  path=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t" || true)
  if [ -z "$path" ]; then
    echo "build-rootfs.sh: $t not found on this host; volumes needing it will fail" >&2
    continue
  fi
  place "$path" "/usr/sbin/$t"
  libs_of "$path"
done
[ -f /etc/mke2fs.conf ] && place /etc/mke2fs.conf /etc/mke2fs.conf
# CA certificates: the CSP client loads the system roots when it is built, for any
# configured backend (plain HTTP ones too), and https CSPs are verified against them.
cas=""
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem /etc/ssl/cert.pem; do
  if [ -s "$f" ]; then cas=$f; break; fi
done
if [ -n "$cas" ]; then
  place "$cas" /etc/ssl/certs/ca-certificates.crt
else
  echo "build-rootfs.sh: no CA bundle on this host (apt-get install ca-certificates); the plugin cannot reach remote CSP backends" >&2
fi
# Name resolution files are bind-mounted by Docker with host networking; passwd for tools.
printf 'root:x:0:0:root:/:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
touch "$rootfs/etc/hosts" "$rootfs/etc/resolv.conf"

cp "$config" "$out/config.json"
echo "bundle ready in $out ($(du -sh "$rootfs" | cut -f1)); next: docker plugin create volbridge $out"
