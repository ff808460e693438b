#!/usr/bin/env bash
# Chaos run: K namespaced hosts, faults one after another, a load
# generator, and a checker that exits non-zero on a correctness violation.
#
#   tests/chaos/run.sh [--hosts K] [--duration SECONDS] [--seed N] [--json FILE]
#                      [--faults kill-restart,kill-master,link-flap,partition,loss,delay,pause]
#
# Needs root and network namespaces (skips cleanly otherwise); installs
# iptables and curl from Debian's packages if missing. Builds shoal and the checker
# in release mode unless SHOAL_BIN and CHAOS_BIN name them. Everything it
# creates (namespaces, processes) is removed on exit, even when interrupted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hosts=5
duration=120
seed=$RANDOM
json=""
faults=""
while [ $# -gt 0 ]; do
    case "$1" in
    --hosts) hosts=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    *) echo "usage: run.sh [--hosts K] [--duration SECONDS] [--seed N] [--json FILE] [--faults LIST]" >&2; exit 2 ;;
    esac
done
export CHAOS_ID=${CHAOS_ID:-shc$$}
CHAOS_ID=${CHAOS_ID:0:8}
export CHAOS_DIR=${CHAOS_DIR:-$(mktemp -d /tmp/shoal-chaos.XXXXXX)}
source "$here/env.sh"
need_root
missing=()
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -z "${SHOAL_BIN:-}" ] || [ -z "${CHAOS_BIN:-}" ]; then
    (cd "$root" && cargo build --release -q -p shoal -p shoal-bench --bin shoal --bin chaos)
fi
SHOAL_BIN=${SHOAL_BIN:-$root/target/release/shoal}
CHAOS_BIN=${CHAOS_BIN:-$root/target/release/chaos}

cleanup() {
    "$here/cluster.sh" down || true
    echo "chaos: logs in $CHAOS_DIR" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$here/cluster.sh" up "$hosts" "$SHOAL_BIN"
args=(--hosts "$hosts" --duration "$duration" --dir "$CHAOS_DIR" --scripts "$here" --seed "$seed")
[ -n "$json" ] && args+=(--json "$json")
[ -n "$faults" ] && args+=(--faults "$faults")
echo "chaos: $hosts hosts, ${duration}s, seed $seed, namespaces $CHAOS_ID-*" >&2
ip netns exec "$CTL_NS" "$CHAOS_BIN" "${args[@]}"
