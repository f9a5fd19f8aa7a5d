#!/usr/bin/env bash
# Build the sandbox image (default tag ragcoder-sandbox:latest).
#
#   build_image.sh [--force] [TAG]
#
# Skips when the image exists (unless --force). Uses sandbox/image/Dockerfile when a registry
# answers; otherwise (the usual case here: no registry) builds offline:
#   debootstrap --variant=minbase --include=python3 bookworm ROOTFS
#   + user `sandbox` uid/gid 10001, owned /work
#   + tar | docker import -c 'USER 10001' -c 'WORKDIR /work' ...
# The rootfs folder is removed afterwards, also on failure.
set -euo pipefail

FORCE=0
TAG="ragcoder-sandbox:latest"
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) TAG="$arg" ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE_DIR="$HERE/../image"
SUITE="${RAGCODER_DEBIAN_SUITE:-bookworm}"
MIRROR="${RAGCODER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "build_image: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers: start Docker (or run sandbox/scripts/ensure_docker.sh as root)."
  exit 1
fi

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  say "$TAG already exists; nothing to do (use --force to rebuild)."
  exit 0
fi

registry_reachable() {
  # Any HTTP answer (401 is normal) from Docker Hub means a registry is reachable.
  local code
  code="$(curl -s -o /dev/null -m 5 -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null || true)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

if [ "${RAGCODER_OFFLINE_IMAGE:-0}" != 1 ] && registry_reachable; then
  say "registry reachable: docker build -t $TAG $IMAGE_DIR"
  if docker build -t "$TAG" "$IMAGE_DIR"; then
    exit 0
  fi
  say "docker build failed; falling back to the offline debootstrap route"
fi

if [ "$(id -u)" != "0" ]; then
  say "the offline route needs root (debootstrap); run as root or on a machine with a registry."
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap: apt-get install -y --no-install-recommends debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOTFS="$(mktemp -d /tmp/ragcoder-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$ROOTFS"; }
trap cleanup EXIT

say "debootstrap --variant=minbase --include=python3 $SUITE $ROOTFS $MIRROR (about a minute)"
debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  say "debootstrap failed; last lines:"; tail -n 20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"

say "adding user sandbox (uid 10001) and /work"
chroot "$ROOTFS" groupadd --gid 10001 sandbox
chroot "$ROOTFS" useradd --uid 10001 --gid 10001 --no-create-home --home-dir /work \
  --shell /usr/sbin/nologin sandbox
mkdir -p "$ROOTFS/work"
chown 10001:10001 "$ROOTFS/work"
chmod 0755 "$ROOTFS/work"
# Slim it: caches, docs and apt lists are not needed to run Python.
rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
  "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*

say "docker import -> $TAG"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
  -c 'USER 10001' -c 'WORKDIR /work' \
  -c 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/work PATH=/usr/local/bin:/usr/bin:/bin' \
  -c 'LABEL ragcoder.image=1' -c 'CMD ["python3"]' \
  - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
