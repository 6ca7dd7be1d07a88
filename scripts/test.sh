#!/usr/bin/env bash
# Runs every test: installs and starts MariaDB and the Kafka-protocol broker when they are not
# running (loopback only), then runs the workspace's unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/mariadb.sh start
scripts/kafka.sh start
export RSQL_DIFF_CASES=${RSQL_DIFF_CASES:-100}
cargo build -p rsql-client
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"
