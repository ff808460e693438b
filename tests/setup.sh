#!/usr/bin/env bash
# Installs what the tests need beyond cargo: Debian's chromium, for the
# dashboard's end-to-end test. Needs root and apt; says so and does
# nothing where they are missing (that test then skips outside CI).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup.sh: not root or no apt-get; not installing chromium" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "tests/setup.sh: installed $(chromium --version)"
