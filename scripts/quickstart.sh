#!/usr/bin/env bash
# The seed demo in one command: installs what is missing (MariaDB, the Kafka-protocol broker
# tansu, a release build of rsql-client), starts MariaDB and the broker on loopback in a temp dir,
# creates the seed's source tables and topics, runs sql/demo.sql, inserts the seed's three rows,
# and prints the four layers (ODS orders and customers, DWD, DWS) read back from the topics.
# The pipeline keeps running; Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

WORK=$(mktemp -d /tmp/rsql-quickstart.XXXXXX)
export RSQL_MYSQL_PORT=${RSQL_MYSQL_PORT:-13316}
export RSQL_MYSQL_DIR="$WORK/mariadb"
export RSQL_KAFKA_PORT=${RSQL_KAFKA_PORT:-19192}
export RSQL_KAFKA_DIR="$WORK/kafka"
export MYSQL_PORT=$RSQL_MYSQL_PORT
export KAFKA_BOOTSTRAP=127.0.0.1:$RSQL_KAFKA_PORT

RSQL_PID=""
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "== stopping"
    if [ -n "$RSQL_PID" ] && kill -0 "$RSQL_PID" 2>/dev/null; then
        kill -TERM "$RSQL_PID" 2>/dev/null || true
        wait "$RSQL_PID" 2>/dev/null || true
    fi
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    scripts/mariadb.sh stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup INT TERM EXIT

echo "== building rsql-client (release)"
cargo build --release -q -p rsql-client
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rsql-client"

echo "== starting MariaDB on 127.0.0.1:$RSQL_MYSQL_PORT and the broker on $KAFKA_BOOTSTRAP"
scripts/mariadb.sh start >/dev/null
scripts/kafka.sh start >/dev/null

echo "== Step 1: source tables in MariaDB"
scripts/mariadb.sh sql "$(grep -v '^--' sql/mysql/seed_tables.sql)"
echo "== Step 2: topics"
for t in ods_order ods_customers dwd_order_customer_valid dws_agg_by_region; do
    scripts/kafka.sh create-topic "$t" >/dev/null
done

echo "== Step 4: rsql-client -f sql/demo.sql"
"$BIN" -f sql/demo.sql > "$WORK/demo.log" 2>&1 &
RSQL_PID=$!
sleep 3
if ! kill -0 "$RSQL_PID" 2>/dev/null; then
    cat "$WORK/demo.log"
    echo "rsql-client stopped; see the messages above" >&2
    exit 1
fi

echo "== Step 6: inserting the seed's rows"
scripts/mariadb.sh sql "$(grep -v '^--' sql/mysql/seed_rows.sql)"

show() { "$BIN" -f sql/show_layers.sql 2>&1 | grep -v '^\[INFO\]'; }
for _ in $(seq 1 60); do
    out=$(show || true)
    if echo "$out" | grep -q "beijing .*| *2 | *20"; then break; fi
    sleep 1
done
echo "== The four layers, read back from the topics"
show

cat <<MSG

The pipeline is running (log: $WORK/demo.log). Try:
  RSQL_MYSQL_DIR=$RSQL_MYSQL_DIR scripts/mariadb.sh sql "INSERT INTO flink_cdc.orders VALUES (3, 5, 'shanghai', 1)"
  KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP $BIN -f sql/show_layers.sql
Press Ctrl-C to stop everything.
MSG
wait "$RSQL_PID"
