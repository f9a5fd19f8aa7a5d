#!/usr/bin/env bash
# Make sure the tools the tests drive are present: tmux (the real-terminal chat test) and
# bubblewrap (the no-Docker local sandbox, which the backend and red-team tests also exercise).
#
# - Present: do nothing. Else, as root on Debian/Ubuntu: install the missing ones with apt (printed
#   first), as ensure_docker.sh does for the engine. Else: say what is missing and exit 0; the tests
#   that need a missing tool then skip with that reason (in CI, RAGCODER_REQUIRE_DOCKER=1, they fail).
set -euo pipefail

say() { echo "ensure_test_tools: $*" >&2; }

missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != "0" ] || [ ! -f /etc/debian_version ]; then
  say "missing ${missing[*]}; the tests that need them will skip (install them: apt-get install ${missing[*]})"
  exit 0
fi
say "installing ${missing[*]}: apt-get install -y --no-install-recommends ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || say "apt-get update failed; trying the install anyway"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
