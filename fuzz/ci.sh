#!/usr/bin/env bash
# Runs every fuzz target for a short while (default 30 s each), starting
# from its seeds in fuzz/seeds/ (if any) and a scratch corpus: what .ci/run
# does. A crash fails the run and leaves its input in fuzz/artifacts/TARGET/.
#
#   fuzz/ci.sh [SECONDS]
#
# Installs cargo-fuzz from crates.io when it is missing. Builds on the
# default (stable) toolchain with no sanitizer and with debug assertions
# (overflow checks): shoal's own code forbids `unsafe`, so what the
# fuzzer looks for here is panics. Long runs use nightly and AddressSanitizer
# (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
flags=(-O -a -s none)
# At opt-level 1 the targets build in three quarters of the time (202 s
# against 264 s here, from scratch) and run at 60-100 % of the speed: the
# better trade for runs this short. Long runs keep the default (README).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
cargo fuzz build "${flags[@]}"
for target in $(cargo fuzz list); do
    scratch=$(mktemp -d)
    corpora=("$scratch")
    if [ -d "seeds/$target" ]; then corpora+=("seeds/$target"); fi
    echo "fuzz/ci.sh: $target for $secs s"
    status=0
    cargo fuzz run "${flags[@]}" "$target" "${corpora[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$scratch.log" 2>&1 || status=$?
    grep -a -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch.log" || true
    if [ "$status" != 0 ]; then
        tail -n 40 "$scratch.log"
        echo "fuzz/ci.sh: $target failed; its input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
    rm -rf "$scratch" "$scratch.log"
done
