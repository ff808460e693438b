#!/usr/bin/env bash
# partition.sh split "I J ..."   move these hosts to a second bridge: two
#                                groups, each still connected inside
# partition.sh heal              every host back on the first bridge
source "$(dirname "$0")/env.sh"
case "${1:-}" in
split)
    for i in ${2:?hosts}; do
        in_br ip link set "$(host_port "$i")" master br1
    done
    ;;
heal)
    for i in $(seq 1 "$(cat "$CHAOS_DIR/hosts")"); do
        in_br ip link set "$(host_port "$i")" master br0
    done
    ;;
*) echo "usage: partition.sh split \"I J\" | heal" >&2; exit 2 ;;
esac
