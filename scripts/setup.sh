#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine for reprocheck:
#   - installs a Docker engine (docker.io) and debootstrap when they are missing (and Chromium,
#     for the HTML report's browser test, when REPROCHECK_WITH_CHROMIUM=1), and starts dockerd when no engine answers (no systemd needed);
#   - installs reprocheck with its test extras;
#   - builds the example's environment images (Debian bases are bootstrapped from the archive
#     when no registry can provide them).
# Needs root (or sudo) for apt-get, dockerd and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
DOCKER=/usr/bin/docker   # Debian's client; /usr/local/bin/docker may be another one

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# Chromium only for the HTML report's browser test (scripts/test.sh asks for it).
if [ "${REPROCHECK_WITH_CHROMIUM:-}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x "$DOCKER" ] || DOCKER=docker

if ! $SUDO "$DOCKER" info >/dev/null 2>&1; then
  echo "setup: starting dockerd (log: /var/log/dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do $SUDO "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  $SUDO "$DOCKER" info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/dockerd.log" >&2; exit 2; }
fi

echo "setup: installing reprocheck"
python3 -m pip install -q --disable-pip-version-check -e ".[test,history]"

if [ "${REPROCHECK_SKIP_IMAGES:-}" != "1" ]; then
  echo "setup: building the example images (first time: Debian bases via debootstrap, a few minutes)"
  $SUDO env "PATH=$PATH" reprocheck images bootstrap --jobs 3 debian:bullseye debian:bookworm debian:trixie
  $SUDO env "PATH=$PATH" reprocheck images build --jobs 2
fi
