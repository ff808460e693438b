#!/usr/bin/env bash
# write.sh I KEY   one increment of chaos-minority sent from inside host I
#                  (reachable while the checker is cut off from it), under
#                  idempotency key KEY; prints the response body, then the
#                  HTTP status on a line of its own (000: no answer in 3 s)
source "$(dirname "$0")/env.sh"
i=${1:?host}
token=$(cat "$CHAOS_DIR/token")
in_host "$i" curl -s -m 3 -w '\n%{http_code}\n' -X POST \
    -H "Authorization: Bearer $token" -H "Idempotency-Key: ${2:?key}" \
    "http://$(host_ip "$i"):4101/v1/kv/chaos-minority/incr" || true
