#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# - If one answers: do nothing (on a user's machine this script never installs anything).
# - Else, as root on Debian/Ubuntu: install docker.io when dockerd is missing (apt), then start
#   `dockerd --iptables=false --bridge=none` in the background (setsid, log in $DOCKERD_LOG)
#   and wait up to $DOCKER_WAIT_S seconds for it. Every action is printed first.
# - Else (not root, or not Debian): print one line saying to start Docker and exit 1.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/ragcoder-dockerd.log}"
DOCKER_WAIT_S="${DOCKER_WAIT_S:-30}"

say() { echo "ensure_docker: $*" >&2; }

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "Docker engine answers; nothing to do."
  exit 0
fi

if [ "$(id -u)" != "0" ] || [ ! -f /etc/debian_version ]; then
  say "no Docker engine answers: start Docker (e.g. \`sudo systemctl start docker\`) and retry, or use --sandbox local."
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  say "dockerd missing; running: apt-get install -y --no-install-recommends docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || say "apt-get update failed; trying the install anyway"
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

say "starting: dockerd --iptables=false --bridge=none (log: $DOCKERD_LOG)"
mkdir -p "$(dirname "$DOCKERD_LOG")"
# The daemon outlives this script: it must not keep the caller's other open files (a lock held by
# `flock make test`, the pipe of `make demo | tee log`), or they stay held until dockerd exits.
(
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
  done
  exec setsid dockerd --iptables=false --bridge=none >>"$DOCKERD_LOG" 2>&1 </dev/null
) &

for _ in $(seq 1 "$((DOCKER_WAIT_S * 2))"); do
  if docker info >/dev/null 2>&1; then
    say "Docker engine is up."
    exit 0
  fi
  sleep 0.5
done
say "dockerd did not answer within ${DOCKER_WAIT_S}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
