#!/usr/bin/env bash
# Runs every test: installs and starts MariaDB and the Kafka-protocol broker when they are not
# running (loopback only), then runs the workspace's unit, integration and end-to-end tests and
# prints one closing line with the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/mariadb.sh start
scripts/kafka.sh start
export RSQL_DIFF_CASES=${RSQL_DIFF_CASES:-100}
cargo build -p rsql-client
cargo build --workspace --examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast --lib --bins --tests -- --test-threads=2 "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
