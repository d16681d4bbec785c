#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine for reprocheck:
#   - installs a Docker engine (docker.io) and debootstrap when they are missing (and Chromium,
#     for the HTML report's browser test, when REPROCHECK_WITH_CHROMIUM=1), and starts dockerd when no engine answers (no systemd needed);
#   - with REPROCHECK_WITH_REMOTE=1, installs what the remote-engine tests start (openssh-server,
#     docker-registry, podman); it starts none of them;
#   - with REPROCHECK_WITH_CPUS=1, puts Debian trixie's static qemu-user (10.x) in /usr/local/bin
#     (bookworm's 7.2 computes AVX2/FMA code wrongly, so it cannot stand for x86-64-v3);
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
# qemu-user for the arm64 example/test (scripts/test.sh asks for it).
if [ "${REPROCHECK_WITH_ARM64:-}" = "1" ] && [ ! -x /usr/bin/qemu-aarch64-static ]; then
  need+=(qemu-user-static binfmt-support)
fi
# The remote-engine tests' services (tests/e2e/remote_engines.py starts and stops them):
# sshd and its client, Debian's registry, Podman (scripts/test.sh asks for them).
if [ "${REPROCHECK_WITH_REMOTE:-}" = "1" ]; then
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
  command -v podman >/dev/null 2>&1 || need+=(podman)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  started=$SECONDS
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "setup: installed in $((SECONDS - started)) s"
fi
[ -x "$DOCKER" ] || DOCKER=docker

if ! $SUDO "$DOCKER" info >/dev/null 2>&1; then
  echo "setup: starting dockerd (log: /var/log/dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do $SUDO "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  $SUDO "$DOCKER" info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/dockerd.log" >&2; exit 2; }
fi

echo "setup: installing reprocheck"
started=$SECONDS
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check -e ".[test,history]"
echo "setup: reprocheck installed in $((SECONDS - started)) s"

bases=(debian:bullseye debian:bookworm debian:trixie)
arm64=0
if [ "${REPROCHECK_WITH_ARM64:-}" = "1" ]; then
  # Register qemu-aarch64 with binfmt_misc (no systemd here to do it at boot).
  mountpoint -q /proc/sys/fs/binfmt_misc || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    arm64=1
    bases+=(reprocheck/debian-arm64:bookworm)
  else
    echo "setup: WARNING: qemu-aarch64 could not be registered; arm64 tests will be skipped" >&2
  fi
fi

if [ "${REPROCHECK_SKIP_IMAGES:-}" != "1" ]; then
  echo "setup: building the example images (first time: Debian bases via debootstrap, a few minutes)"
  $SUDO env "PATH=$PATH" reprocheck images bootstrap --jobs "${#bases[@]}" "${bases[@]}"
  $SUDO env "PATH=$PATH" reprocheck images build --jobs 2
  if [ "$arm64" = "1" ]; then
    echo "setup: building the arm64 image under emulation (first time: about 6 minutes)"
    $SUDO env "PATH=$PATH" reprocheck images build --config reprocheck-arm64.toml --env bookworm-arm64
  fi
fi

# A qemu-user that emulates AVX2/FMA correctly (8.0 or later) for `cpu = "x86-64-v3"`: Debian
# trixie's qemu-user package holds static binaries; fetched once through a trixie container.
if [ "${REPROCHECK_WITH_CPUS:-}" = "1" ] && ! /usr/local/bin/qemu-x86_64 -version 2>/dev/null \
    | grep -qE 'version ([89]|[1-9][0-9])\.'; then
  echo "setup: fetching Debian trixie's qemu-user (static, about 70 MB)"
  started=$SECONDS
  tmp=$(mktemp -d)
  if $SUDO "$DOCKER" run --rm -v "$tmp:/out" debian:trixie sh -c \
      'cd /out && apt-get update -qq >/dev/null && apt-get download -qq qemu-user 2>/dev/null' \
      && dpkg-deb --fsys-tarfile "$tmp"/qemu-user_*.deb \
        | tar -x -C "$tmp" ./usr/bin/qemu-x86_64 ./usr/bin/qemu-aarch64; then
    $SUDO install -m 0755 "$tmp/usr/bin/qemu-x86_64" "$tmp/usr/bin/qemu-aarch64" /usr/local/bin/
    echo "setup: $(/usr/local/bin/qemu-x86_64 -version | head -1) in $((SECONDS - started)) s"
  else
    echo "setup: WARNING: no newer qemu-user; x86-64-v3 environments will be refused" >&2
  fi
  $SUDO rm -rf "$tmp"
fi
