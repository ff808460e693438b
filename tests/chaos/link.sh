#!/usr/bin/env bash
# link.sh down|up I: take host I's link off the network, or put it back.
source "$(dirname "$0")/env.sh"
in_br ip link set "$(host_port "${2:?I}")" "${1:?down|up}"
