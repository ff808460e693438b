#!/usr/bin/env bash
# What each node of a K-host cluster holds open and sends, per role:
#   sockets.sh K [BIN]  ->  one JSON line per role, then one for the cluster
# Starts K namespaced hosts at once (`cluster.sh up`), waits until AT
# seconds after the start (SOCKETS_AT, default 150: formed and settled),
# then reads each host's link counters (`traffic.sh`) and its TCP sockets
# on the node's port (`ss -tni` inside its namespace) twice, WINDOW
# seconds apart (SOCKETS_WINDOW, default 30), asks each node its role and
# state hash, and takes the cluster down. Per role: sockets (p50, max),
# TCP payload sent and received on the sockets open at both reads (KB/s),
# and bytes and packets on the wire (KB/s, packets/s), each a median over
# the role's hosts. The raw reads stay in $CHAOS_DIR/sockets.
source "$(dirname "$0")/env.sh"
need_root
k=${1:?usage: sockets.sh K [BIN]}
bin=${2:-target/release/shoal}
at=${SOCKETS_AT:-150}
window=${SOCKETS_WINDOW:-30}
here=$(dirname "$0")
out=$CHAOS_DIR/sockets
trap '"$here/cluster.sh" down >/dev/null 2>&1 || true' EXIT

read_hosts() { # read_hosts N: link counters and sockets of every host
    "$here/traffic.sh" >"$out/traffic.$1"
    for i in $(seq 1 "$k"); do
        in_host "$i" ss -tniH state established '( sport = :4100 or dport = :4100 )' \
            >"$out/ss.$1.$i"
    done
    date +%s.%N >"$out/at.$1"
}

"$here/cluster.sh" up "$k" "$bin"
start=$(date +%s)
rm -rf "$out"
mkdir -p "$out"
sleep $((at - ($(date +%s) - start)))
read_hosts 0
sleep "$window"
read_hosts 1
token=$(cat "$CHAOS_DIR/token")
for i in $(seq 1 "$k"); do
    ip netns exec "$CTL_NS" curl -s -m 5 -H "Authorization: Bearer $token" \
        "http://$(host_ip "$i"):4101/v1/status" >"$out/status.$i" || true
done
"$here/cluster.sh" down

# One line per host: I ROLE SOCKETS PAYLOAD_B/S WIRE_B/S PACKETS/S HASH
dt=$(awk '{ t[NR] = $1 } END { print t[2] - t[1] }' "$out/at.0" "$out/at.1")
# The first value of a field in a node's status (a string or a number).
field() { grep -o "\"$2\":\"\{0,1\}[^\",}]*" "$out/status.$1" | head -1 | sed 's/.*:"\{0,1\}//'; }
for i in $(seq 1 "$k"); do
    role=$(field "$i" role)
    hash="$(field "$i" applied_index)/$(field "$i" state_hash)"
    # A socket is its address line; its counters are on the line after.
    payload=$(awk -v dt="$dt" '
        /^[0-9]/ { key = $(NF - 1) " " $NF; next }
        {
            a = 0; r = 0
            for (j = 1; j <= NF; j++) {
                if ($j ~ /^bytes_acked:/) { split($j, x, ":"); a = x[2] }
                if ($j ~ /^bytes_received:/) { split($j, x, ":"); r = x[2] }
            }
            if (FILENAME ~ /ss[.]0[.]/) { first[key] = a + r } else { last[key] = a + r; n++ }
        }
        END {
            for (s in last) if (s in first) sum += last[s] - first[s]
            printf "%d %.0f\n", n, sum / dt
        }' "$out/ss.0.$i" "$out/ss.1.$i")
    wire=$(awk -v i="$i" -v dt="$dt" '
        $1 == i && FILENAME ~ /traffic.0$/ { b0 = $2 + $3; p0 = $4 + $5 }
        $1 == i && FILENAME ~ /traffic.1$/ { b1 = $2 + $3; p1 = $4 + $5 }
        END { printf "%.0f %.0f\n", (b1 - b0) / dt, (p1 - p0) / dt }' \
        "$out/traffic.0" "$out/traffic.1")
    echo "$i ${role:-unknown} $payload $wire $hash"
done >"$out/hosts"

awk -v k="$k" '
    function median(list,    v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    {
        n[$2]++; socks[$2] = socks[$2] " " $3; pay[$2] = pay[$2] " " $4
        wire[$2] = wire[$2] " " $5; pk[$2] = pk[$2] " " $6
        if ($3 > most[$2]) most[$2] = $3
        hashes[$7] = 1
    }
    END {
        for (r in n)
            printf "{\"hosts\":%d,\"role\":\"%s\",\"nodes\":%d,\"sockets_p50\":%s,\"sockets_max\":%d,\"payload_kb_s_p50\":%.1f,\"wire_kb_s_p50\":%.1f,\"wire_packets_s_p50\":%.0f}\n", \
                k, r, n[r], median(socks[r]), most[r], median(pay[r]) / 1000, median(wire[r]) / 1000, median(pk[r])
        for (h in hashes) distinct++
        printf "{\"hosts\":%d,\"distinct_applied_and_hash\":%d}\n", k, distinct
    }' "$out/hosts"
