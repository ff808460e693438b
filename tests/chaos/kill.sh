#!/usr/bin/env bash
# kill.sh I: kill -9 the node of host I (by its recorded PID).
source "$(dirname "$0")/env.sh"
pid=$(host_pid "${1:?I}")
[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
