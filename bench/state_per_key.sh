#!/usr/bin/env bash
# Aggregate state per key: runs bench/state_per_key.sql (COUNT(*), SUM(INT), MAX(INT) GROUP BY a
# key -> blackhole) with 10 keys and with $KEYS keys (default 1 M) over the same number of rows,
# and prints each run's peak RSS (/usr/bin/time -v) and (rss_many - rss_10) / keys, the bytes one
# more key costs: the aggregate's state including the key and the growth slack of its vectors
# and hash index. One line per key type: INT, BIGINT (the INT widened) and VARCHAR
# ('user-' || the INT, 10 to 12 characters).
#
#   bench/state_per_key.sh                      # ROWS=16000000 KEYS=1000000 TYPES="int bigint varchar"
#   TYPES=int bench/state_per_key.sh
#
# ROWS must be large enough that every key is drawn (16 M draws over 1 M keys miss none in all
# likelihood). $RSQL_BIN defaults to target/release/rsql-client (build it with
# `cargo build --release -p rsql-client`).

set -u
cd "$(dirname "$0")/.." || exit 2

RSQL_BIN=${RSQL_BIN:-${CARGO_TARGET_DIR:-target}/release/rsql-client}
ROWS=${ROWS:-16000000}
KEYS=${KEYS:-1000000}
TYPES=${TYPES:-int bigint varchar}

if [ ! -x "$RSQL_BIN" ]; then
    echo "$RSQL_BIN not found; build it with: cargo build --release -p rsql-client" >&2
    exit 2
fi
if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time is missing (apt-get install time)" >&2
    exit 2
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=0

# Peak RSS in KB of one run with $1 keys, key type $2 and key expression $3; empty on failure.
peak_kb() {
    sed -e "s/\${ROWS:-[0-9]*}/$ROWS/" -e "s/\${KEYS:-[0-9]*}/$1/" \
        -e "s/\${KEY_TYPE:-[A-Z]*}/$2/" -e "s/\${KEY_EXPR:-[a-z_]*}/$3/" \
        bench/state_per_key.sql > "$WORK/run.sql"
    if ! /usr/bin/time -v -o "$WORK/time" "$RSQL_BIN" -f "$WORK/run.sql" > "$WORK/out" 2>&1; then
        echo "keys=$1 type=$2: FAILED; last output:" >&2
        tail -n 5 "$WORK/out" | sed 's/^/    /' >&2
        return 1
    fi
    sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time"
}

printf '%-8s %10s %10s %14s %14s %10s\n' key rows keys "RSS 10 keys" "RSS many keys" bytes/key
for t in $TYPES; do
    case "$t" in
        int) ty=INT; expr=user_id ;;
        bigint) ty=BIGINT; expr="CAST(user_id AS BIGINT)" ;;
        varchar) ty=STRING; expr="CONCAT('user-', CAST(user_id AS STRING))" ;;
        *) echo "unknown key type $t (int, bigint, varchar)" >&2; STATUS=1; continue ;;
    esac
    few=$(peak_kb 10 "$ty" "$expr") || { STATUS=1; continue; }
    many=$(peak_kb "$KEYS" "$ty" "$expr") || { STATUS=1; continue; }
    awk -v t="$t" -v r="$ROWS" -v k="$KEYS" -v a="$few" -v b="$many" 'BEGIN {
        printf "%-8s %10d %10d %11.1f MB %11.1f MB %10.1f\n", t, r, k, a / 1024, b / 1024, (b - a) * 1024 / k }'
done
exit $STATUS
