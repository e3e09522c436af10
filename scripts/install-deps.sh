#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing and the demo need,
# and only those that are missing. Safe to run again.
set -euo pipefail

packages=(
  # build
  cmake ninja-build pkg-config gcc make
  libssl-dev libxml2-dev libsystemd-dev libcurl4-openssl-dev
  libinih-dev libsqlite3-dev libjson-c-dev libhttp-parser-dev libpq-dev
  libmicrohttpd-dev libargon2-dev  # the console's HTTPS listener and password hashing
  # tests and fuzzing
  libcmocka-dev clang libclang-rt-14-dev clang-format openssl python3 procps iproute2 nftables
  chromium chromium-driver  # the web console's browser tests (headless)
  postgresql  # initdb and pg_ctl for the throwaway database of the PostgreSQL store tests
  systemd  # systemd-analyze, systemd-sysusers and systemd-tmpfiles in the packaging tests
  squid  # agent-https-squid: the HTTPS fallback through a stock squid
  # packaging tests: rpmbuild, lintian, debootstrap; dpkg-shlibdeps and file for CPack DEB
  rpm lintian debootstrap dpkg-dev file
  # container test (tests/container/): podman with runc (crun refuses hybrid
  # cgroups), CNI bridge, DNS and firewall for the compose network, and both
  # compose programs Debian 12 ships
  podman runc containernetworking-plugins golang-github-containernetworking-plugin-dnsname
  iptables podman-compose docker-compose
  curl  # the packaging test fetches the installed console's files
  # the demo prints through these
  ca-certificates
)
if [ -n "${TETHER_EXTRA_PACKAGES:-}" ]; then
  read -r -a extra <<<"$TETHER_EXTRA_PACKAGES"
  packages+=("${extra[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps: missing packages (${missing[*]}) and not root: run as root or install sudo" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
