#!/usr/bin/env bash
# delay.sh on I MS | off I: delay every message host I sends by MS. This
# kernel has no netem, so the node does it (its test-only fault-injection
# endpoint, enabled by --fault-injection, which cluster.sh passes).
source "$(dirname "$0")/env.sh"
i=${2:?I}
case "${1:-}" in
on) ms=${3:?MS} ;;
off) ms=0 ;;
*) echo "usage: delay.sh on I MS | off I" >&2; exit 2 ;;
esac
ip netns exec "$CTL_NS" curl -sf -X POST \
    -H "Authorization: Bearer $(cat "$CHAOS_DIR/token")" \
    "http://$(host_ip "$i"):4101/v1/fault/delay?ms=$ms" >/dev/null
