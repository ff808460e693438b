#!/usr/bin/env bash
# What each host has sent and received on its link so far, one line each:
#   traffic.sh  ->  I SENT_BYTES RECEIVED_BYTES SENT_PACKETS RECEIVED_PACKETS
# Read on the bridge side of each host's veth (what the bridge port
# receives, the host sent), so every byte on the wire counts: gossip
# relays, libp2p's own traffic, mDNS, and the checker's requests.
source "$(dirname "$0")/env.sh"
k=$(cat "$CHAOS_DIR/hosts")
for i in $(seq 1 "$k"); do
    d=/sys/class/net/$(host_port "$i")/statistics
    in_br sh -c "echo $i \$(cat $d/rx_bytes) \$(cat $d/tx_bytes) \$(cat $d/rx_packets) \$(cat $d/tx_packets)"
done
