#!/usr/bin/env bash
# Installs the Debian packages fota needs to build, test, benchmark and run the demo.
# Idempotent: packages already present are skipped, and apt is not touched at all
# when nothing is missing. Needs root (or sudo) only when something must be installed.
set -euo pipefail

PKGS=(
  build-essential clang pkg-config
  libssl-dev openssl
  libzstd-dev zstd
  libarchive-dev libarchive-tools tar
  libcurl4-openssl-dev curl
  libdivsufsort-dev
  libjansson-dev
  libinih-dev
  libcunit1-dev
  libbz2-dev bzip2
  bsdiff xdelta3
  nginx-light
  time bc e2fsprogs jq
  cppcheck clang-tidy
  u-boot-tools libubootenv-tool grub-common   # tests of the contrib/ slot-switch hooks
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx must not keep running as a system service: tests start their own on loopback.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
if [ -f /run/nginx.pid ]; then $SUDO nginx -s stop >/dev/null 2>&1 || true; fi
echo "install-deps: done"
