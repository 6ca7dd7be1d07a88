#!/usr/bin/env bash
# End-to-end figures of the seed pipeline (commit -> DWS latency p50/p99 at a fixed rate,
# and the sustained change rate). Starts MariaDB (scripts/mariadb.sh) and a broker of its own,
# runs the release rsql-client on sql/demo.sql, then crates/rsql-kafka/examples/seed_latency.rs.
#   RATE=1000 SECONDS=10 ROWS=200000 bench/seed_e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/rsql-seed-bench.XXXXXX)
export RSQL_KAFKA_PORT=${RSQL_KAFKA_PORT:-19096}
export RSQL_KAFKA_DIR="$WORK/kafka"
export KAFKA_BOOTSTRAP=127.0.0.1:$RSQL_KAFKA_PORT
DB=test_bench_e2e
PID=""
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    scripts/mariadb.sh sql "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
cargo build --release -q -p rsql-client
cargo build --release -q -p rsql-kafka --example seed_latency
TARGET=${CARGO_TARGET_DIR:-target}
scripts/mariadb.sh start >/dev/null
scripts/kafka.sh start >/dev/null
for t in ods_order ods_customers dwd_order_customer_valid dws_agg_by_region; do scripts/kafka.sh create-topic "$t" >/dev/null; done
scripts/mariadb.sh sql "DROP DATABASE IF EXISTS $DB; $(grep -v '^--' sql/mysql/seed_tables.sql | sed "s/flink_cdc/$DB/g")"
"$TARGET/release/rsql-client" -f sql/demo.sql -D MYSQL_DATABASE=$DB > "$WORK/rsql.log" 2>&1 &
PID=$!
sleep 3
RSQL_MYSQL_URL="mysql://rsql:rsql@127.0.0.1:${RSQL_MYSQL_PORT:-13306}/$DB" "$TARGET/release/examples/seed_latency"
