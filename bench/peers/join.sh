#!/usr/bin/env bash
# Join figures in one run: shoal's catch-up runner (a joiner of a 3-node
# cluster holding N events, by snapshot), then a Redis replica's full sync
# and an etcd learner's join on the same data set; one JSON line each, then
# the ratios shoal / peer, and bench/join-<N>.png from them.
#
#   bench/peers/join.sh [N]          (default 1000000)
#
# Needs bench/peers/setup.sh (root, Debian's packages) and release builds:
#   cargo build --release -p shoal -p shoal-bench
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
target/release/catchup "$n" snapshot | tee -a "$out"
target/release/peers "$n" both | tee -a "$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
shoal = next(r for r in rows if r.get("mode") == "snapshot")
for r in rows:
    if "system" in r:
        print(json.dumps({"ratio": f"shoal/{r['system']}", "keys": r["keys"],
                          "shoal_s": round(shoal["caught_up_s"], 3),
                          "peer_s": round(r["caught_up_s"], 3),
                          "shoal_over_peer": round(shoal["caught_up_s"] / r["caught_up_s"], 2)}))
PY
# The figure the README shows (needs Debian's fonts-dejavu-core, or
# SHOAL_PLOT_FONT=/path/to/a.ttf).
label=$([ "$n" -ge 1000000 ] && echo "$((n / 1000000))m" || echo "$((n / 1000))k")
target/release/join_plot "$out" "bench/join-$label.png"
