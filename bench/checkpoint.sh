#!/usr/bin/env bash
# Checkpoint cost: runs bench/keyed_agg.sql (datagen -> GROUP BY -> blackhole) with checkpointing
# off, every 10 s and every 1 s, for each key count in $KEYS_LIST, and prints one line per run:
# keys, interval, seconds, rows/s, CPU seconds (user + system), checkpoints taken, mean and largest
# checkpoint size, mean and largest checkpoint duration, and the CPU cost relative to the run
# without checkpoints (CPU seconds are steadier than wall time on a shared machine).
#
#   bench/checkpoint.sh                        # KEYS_LIST="100000 1000000", ROWS=20000000
#   ROWS=5000000 KEYS_LIST=100000 bench/checkpoint.sh
#
# The state of the aggregate grows with the key count, so the size and duration columns show how
# a checkpoint scales with state. $RSQL_BIN defaults to target/release/rsql-client (build it with
# `cargo build --release -p rsql-client`). Checkpoints go to a temporary directory that is
# removed afterwards.

set -u
cd "$(dirname "$0")/.." || exit 2

RSQL_BIN=${RSQL_BIN:-target/release/rsql-client}
ROWS=${ROWS:-20000000}
KEYS_LIST=${KEYS_LIST:-100000 1000000}
INTERVALS=${INTERVALS:-off 10s 1s}

if [ ! -x "$RSQL_BIN" ]; then
    echo "$RSQL_BIN not found; build it with: cargo build --release -p rsql-client" >&2
    exit 2
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=0

printf '%-9s %-8s %8s %12s %8s %6s %12s %12s %9s %9s %9s\n' \
    keys interval seconds rows/s cpu_s ckpts mean_bytes max_bytes mean_ms max_ms cpu_vs_off
for keys in $KEYS_LIST; do
    base=""
    for interval in $INTERVALS; do
        sql="$WORK/run.sql"
        : > "$sql"
        if [ "$interval" != off ]; then
            {
                echo "SET 'execution.checkpointing.interval' = '$interval';"
                echo "SET 'execution.checkpointing.dir' = 'file://$WORK/ckpt-$keys-$interval';"
                echo "SET 'pipeline.name' = 'checkpoint-bench';"
            } >> "$sql"
        fi
        sed -e "s/\${ROWS:-[0-9]*}/$ROWS/" -e "s/\${KEYS:-[0-9]*}/$keys/" bench/keyed_agg.sql >> "$sql"
        start=$(date +%s.%N)
        RUST_LOG=info /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$RSQL_BIN" -f "$sql" > "$WORK/out" 2>&1
        rc=$?
        end=$(date +%s.%N)
        if [ $rc -ne 0 ]; then
            echo "keys=$keys interval=$interval: FAILED (exit $rc); last output:"
            tail -n 5 "$WORK/out" | sed 's/^/    /'
            STATUS=1
            continue
        fi
        secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
        rate=$(awk -v r="$ROWS" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
        cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/cpu")
        [ -z "$base" ] && [ "$interval" = off ] && base=$cpu
        # "checkpoint complete job=... id=N bytes=B ms=M path=..."
        stats=$(grep 'checkpoint complete' "$WORK/out" | sed -n 's/.* bytes=\([0-9]*\) ms=\([0-9]*\).*/\1 \2/p' |
            awk '{ n++; b += $1; if ($1 > mb) mb = $1; m += $2; if ($2 > mm) mm = $2 }
                 END { if (n) printf "%d %.0f %d %.0f %d", n, b / n, mb, m / n, mm; else print "0 - - - -" }')
        vs=$(awk -v c="$cpu" -v b="${base:-0}" 'BEGIN { if (b > 0) printf "%.2f", c / b; else print "-" }')
        read -r n mean_b max_b mean_ms max_ms <<< "$stats"
        printf '%-9s %-8s %8s %12s %8s %6s %12s %12s %9s %9s %9s\n' \
            "$keys" "$interval" "$secs" "$rate" "$cpu" "$n" "$mean_b" "$max_b" "$mean_ms" "$max_ms" "$vs"
    done
done
exit $STATUS
