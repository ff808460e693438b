# Shared names for the chaos scripts; sourced, not run.
#   CHAOS_ID   prefix of every namespace (default: shc), so runs can coexist
#   CHAOS_DIR  where data directories, logs and pid files live
# Hosts are namespaces $CHAOS_ID-h1..hK with 10.231.77.I on eth0, their
# other veth end on bridge br0 (or br1 while partitioned) inside the
# namespace $CHAOS_ID-br; the checker runs in $CHAOS_ID-ctl (10.231.77.200).
set -euo pipefail
CHAOS_ID=${CHAOS_ID:-shc}
CHAOS_DIR=${CHAOS_DIR:-/tmp/shoal-chaos}
BR_NS="$CHAOS_ID-br"
CTL_NS="$CHAOS_ID-ctl"
SUBNET=10.231.77
host_ns() { echo "$CHAOS_ID-h$1"; }
host_ip() { echo "$SUBNET.$1"; }
# The host's port on the bridge side (interface names are at most 15 chars).
host_port() { echo "p$1"; }
in_br() { ip netns exec "$BR_NS" "$@"; }
in_host() { local i=$1; shift; ip netns exec "$(host_ns "$i")" "$@"; }
need_root() {
    if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
        echo "chaos: needs root and iproute2 network namespaces; skipping" >&2
        exit 0
    fi
}
host_pid() { cat "$CHAOS_DIR/h$1.pid" 2>/dev/null || true; }
