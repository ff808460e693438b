#!/usr/bin/env bash
# loss.sh on I PERCENT | off I: drop packets to and from host I at random
# (iptables' statistic match; this kernel has no netem).
source "$(dirname "$0")/env.sh"
i=${2:?I}
case "${1:-}" in
on)
    p=$(awk "BEGIN{print ${3:?PERCENT}/100}")
    for chain in INPUT OUTPUT; do
        in_host "$i" iptables -A "$chain" -m statistic --mode random --probability "$p" -j DROP
    done
    ;;
off)
    in_host "$i" iptables -F
    ;;
*) echo "usage: loss.sh on I PERCENT | off I" >&2; exit 2 ;;
esac
