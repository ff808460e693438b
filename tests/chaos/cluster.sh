#!/usr/bin/env bash
# The namespaced cluster.
#   cluster.sh up K SHOAL_BIN    K hosts on one private bridge, `shoal up` in each
#   cluster.sh down              stop every node, remove every namespace
#   cluster.sh start I           (re)start the node of host I
# Discovery is mDNS across the bridge; every node gets the same API token
# ($CHAOS_DIR/token) and listens for its API on its own address.
source "$(dirname "$0")/env.sh"

start_node() {
    local i=$1
    local bin
    bin=$(cat "$CHAOS_DIR/bin")
    local ns
    ns=$(host_ns "$i")
    # Setsid: the node gets its own session; its pid is recorded by PID.
    NO_COLOR=1 ip netns exec "$ns" setsid "$bin" up \
        --data-dir "$CHAOS_DIR/h$i" \
        --listen "/ip4/$(host_ip "$i")/tcp/4100" \
        --api "$(host_ip "$i"):4101" \
        --api-token-file "$CHAOS_DIR/token" \
        --fault-injection \
        ${CHAOS_NODE_ARGS:-} \
        >>"$CHAOS_DIR/h$i.log" 2>&1 </dev/null &
    echo $! >"$CHAOS_DIR/h$i.pid"
}

case "${1:-}" in
up)
    need_root
    k=${2:?K}
    bin=${3:?SHOAL_BIN}
    mkdir -p "$CHAOS_DIR"
    echo "$bin" >"$CHAOS_DIR/bin"
    echo "$k" >"$CHAOS_DIR/hosts"
    # Every host resolves every other: K * K neighbour entries, and the
    # kernel's ARP table is one for all namespaces (1024 entries by
    # default, about 32 hosts). Raise it for the run; `down` restores it.
    t=/proc/sys/net/ipv4/neigh/default
    need=$((k * k * 2))
    if [ "$(cat $t/gc_thresh3)" -lt "$need" ] && [ ! -f "$CHAOS_DIR/neigh" ]; then
        cat $t/gc_thresh1 $t/gc_thresh2 $t/gc_thresh3 >"$CHAOS_DIR/neigh"
        echo $((need / 4)) >$t/gc_thresh1
        echo $((need / 2)) >$t/gc_thresh2
        echo "$need" >$t/gc_thresh3
    fi
    [ -f "$CHAOS_DIR/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CHAOS_DIR/token"
    ip netns add "$BR_NS"
    in_br ip link set lo up
    for br in br0 br1; do
        in_br ip link add "$br" type bridge mcast_snooping 0
        in_br ip link set "$br" up
    done
    ip netns add "$CTL_NS"
    ip link add ctl0 netns "$CTL_NS" type veth peer name pctl netns "$BR_NS"
    ip netns exec "$CTL_NS" ip link set lo up
    ip netns exec "$CTL_NS" ip addr add "$SUBNET.200/24" dev ctl0
    ip netns exec "$CTL_NS" ip link set ctl0 up
    in_br ip link set pctl master br0 up
    for i in $(seq 1 "$k"); do
        ns=$(host_ns "$i")
        ip netns add "$ns"
        ip link add eth0 netns "$ns" type veth peer name "$(host_port "$i")" netns "$BR_NS"
        in_host "$i" ip link set lo up
        in_host "$i" ip addr add "$(host_ip "$i")/24" dev eth0
        in_host "$i" ip link set eth0 up
        in_br ip link set "$(host_port "$i")" master br0 up
    done
    # CHAOS_START_GAP=S starts the hosts S seconds apart (a rolling start);
    # by default all start at once, as after a power cut.
    for i in $(seq 1 "$k"); do
        start_node "$i"
        sleep "${CHAOS_START_GAP:-0}"
    done
    ;;
start)
    start_node "${2:?I}"
    ;;
down)
    for f in "$CHAOS_DIR"/h*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill -CONT "$pid" 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$CHAOS_ID-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -f "$CHAOS_DIR/neigh" ]; then
        t=/proc/sys/net/ipv4/neigh/default
        { read -r a; read -r b; read -r c; } <"$CHAOS_DIR/neigh"
        echo "$a" >$t/gc_thresh1
        echo "$b" >$t/gc_thresh2
        echo "$c" >$t/gc_thresh3
        rm -f "$CHAOS_DIR/neigh"
    fi
    ;;
*)
    echo "usage: cluster.sh up K SHOAL_BIN | down | start I" >&2
    exit 2
    ;;
esac
