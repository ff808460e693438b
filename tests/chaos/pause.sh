#!/usr/bin/env bash
# pause.sh stop|cont I: SIGSTOP or SIGCONT the node of host I.
source "$(dirname "$0")/env.sh"
pid=$(host_pid "${2:?I}")
case "${1:-}" in
stop) kill -STOP "$pid" ;;
cont) kill -CONT "$pid" ;;
*) echo "usage: pause.sh stop|cont I" >&2; exit 2 ;;
esac
