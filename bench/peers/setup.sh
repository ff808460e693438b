#!/usr/bin/env bash
# Installs the systems shoal is measured beside, from Debian's packages:
# etcd 3.4 (etcd-server, etcd-client), Redis 7 (redis-server, redis-tools)
# and wrk, and a font for the figures. Needs root and apt-get; the services the packages would start
# are not started (the benchmarks start their own on loopback).
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server etcd-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server redis-tools)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# The font join_plot draws its text with.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/peers/setup.sh: needs root and apt-get to install ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own services from starting.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "bench/peers/setup.sh: $(etcd --version | head -1); $(redis-server --version); $(wrk --version 2>&1 | head -1)"
