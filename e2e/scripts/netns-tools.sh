#!/usr/bin/env bash
# Installs what the speaker tests use from Debian's packages: iproute2
# (`ip netns`, veth, bridge), arping and ndisc6 as layer-2 clients, tcpdump to
# read what went on the wire, and gobgpd and BIRD as BGP peers. The layer-2 tests
# build network namespaces, so they run as root.
set -euo pipefail
missing=()
for pair in ip:iproute2 arping:arping ndisc6:ndisc6 tcpdump:tcpdump gobgpd:gobgpd bird:bird2; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "netns-tools: need root to install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
echo "netns-tools: installed ${missing[*]}"
