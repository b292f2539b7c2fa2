#!/usr/bin/env bash
# The OS layer every Spot-AE image starts from. Uses debian:bookworm-slim when a registry is
# reachable; otherwise (air-gapped, as here) builds the same Debian release locally with
# debootstrap and `docker import`, so `make cluster-up` works online and offline alike.
# Usage: scripts/base-image.sh [--force]   (prints the tag it made)
set -euo pipefail
cd "$(dirname "$0")/.."
# One debootstrap at a time (the image build and the Ansible test both ask for the rootfs).
mkdir -p build && exec 8>build/.base-image.lock && flock 8
tag=${SPOT_AE_ROOTFS_IMAGE:-spot-ae/rootfs:bookworm}
suite=bookworm
if [[ ${1:-} != --force ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"; exit 0
fi
if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
  docker tag debian:bookworm-slim "$tag" >&2
  echo "$tag"; exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image: no registry and no debootstrap (run make setup)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
work=$(mktemp -d /tmp/spot-ae-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "base-image: no registry; debootstrap --variant=minbase $suite (about 30 s)" >&2
debootstrap --variant=minbase "$suite" "$work/root" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; echo "base-image: debootstrap failed" >&2; exit 1; }
# Same trims as the official slim image: no apt lists or caches in the layer.
rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin
tar -C "$work/root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "$tag"
