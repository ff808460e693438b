#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against /v1/openapi.json of a live one-node
# cluster on 127.0.0.1: every documented operation with generated valid and
# invalid requests, checking no 5xx, documented status codes and shapes,
# valid requests accepted, invalid ones refused. About three minutes.
#
#   tests/api/run.sh [--max-examples N]     (default 20)
#
# Uses $SHOAL_BIN (default target/debug/shoal; build it first) and installs
# schemathesis with pip if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${SHOAL_BIN:-target/debug/shoal}
examples=20
if [ "${1:-}" = "--max-examples" ]; then examples=$2; fi
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet schemathesis
fi
dir=$(mktemp -d)
port=$((40000 + RANDOM % 20000))
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
"$bin" up --data-dir "$dir/data" --listen "/ip4/127.0.0.1/tcp/$((port + 1))" \
    --api "127.0.0.1:$port" --no-mdns --api-token "$token" >"$dir/node.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 100); do
    if curl -fs "$url/v1/status" 2>/dev/null | grep -q '"role":"master"'; then break; fi
    sleep 0.2
done
schemathesis --config-file tests/api/schemathesis.toml run "$url/v1/openapi.json" \
    --url "$url" -H "Authorization: Bearer $token" \
    --max-examples "$examples" --exclude-path /v1/leave
