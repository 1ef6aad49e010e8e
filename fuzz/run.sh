#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another, on one core.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: fuzz/run.sh [SECONDS]; logs in fuzz/logs/, crashes in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
mkdir -p logs
for t in ${TARGETS:-storage_frame proxy_frame client_frame bucket envelope resp}; do
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        > "logs/$t.log" 2>&1 || { echo "$t FAILED (see fuzz/logs/$t.log)"; exit 1; }
    grep -E "^Done|stat::number_of_executed_units" "logs/$t.log" | tail -2
done
