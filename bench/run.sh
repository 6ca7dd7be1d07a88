#!/usr/bin/env bash
# Runs the benchmark scripts on rsql and on Apache Flink in the same run and prints one table:
# engine, script, rows, seconds, rows/s, rows per CPU-second, peak RSS, and rsql's rows/s as a
# multiple of Flink's.
#
#   bench/run.sh [--install-flink] [--rsql-only | --flink-only] [SCRIPT.sql ...]
#
# Scripts default to bench/filter_project.sql, bench/keyed_agg.sql and bench/join_agg.sql. Their
# ${NAME:-default} placeholders are filled from the environment (e.g. ROWS=2000000 bench/run.sh)
# before the same text goes to both engines.
#
# rsql:  $RSQL_BIN (default target/release/rsql-client; build it with
#        `cargo build --release -p rsql-client`) runs `-f script` under /usr/bin/time -v; seconds,
#        CPU and peak RSS are the whole process's.
# Flink: bench/run_flink.py runs the script in PyFlink's local mini-cluster, parallelism 1, after
#        a warm-up run in the same JVM; seconds and CPU cover the measured job only (see its
#        header). PyFlink is looked for in $FLINK_PYTHON, then $FLINK_VENV/bin/python (default
#        ~/.cache/rsql-bench/flink-venv), then python3; --install-flink creates that venv with
#        `pip install apache-flink==$FLINK_VERSION` (default 2.3.0, about 850 MB). Java 11 or 17
#        must be on the PATH.
#
# An engine that is missing is reported on a line of its own and skipped. Exit status: 0 when
# every run that was attempted succeeded, 1 when a run failed, 2 when neither engine is
# available.

set -u
cd "$(dirname "$0")/.." || exit 2

RSQL_BIN=${RSQL_BIN:-target/release/rsql-client}
FLINK_VENV=${FLINK_VENV:-$HOME/.cache/rsql-bench/flink-venv}
RUN_RSQL=1
RUN_FLINK=1
SCRIPTS=()

for arg in "$@"; do
    case "$arg" in
        --install-flink)
            echo "installing PyFlink into $FLINK_VENV ..."
            python3 -m venv "$FLINK_VENV" && "$FLINK_VENV/bin/pip" install --quiet "apache-flink==${FLINK_VERSION:-2.3.0}" || {
                echo "PyFlink installation failed" >&2
                exit 1
            }
            ;;
        --rsql-only) RUN_FLINK=0 ;;
        --flink-only) RUN_RSQL=0 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
        *) SCRIPTS+=("$arg") ;;
    esac
done
if [ ${#SCRIPTS[@]} -eq 0 ]; then
    SCRIPTS=(bench/filter_project.sql bench/keyed_agg.sql bench/join_agg.sql)
fi

# --- what is available ------------------------------------------------------------------------
if [ "$RUN_RSQL" = 1 ]; then
    if [ ! -x "$RSQL_BIN" ]; then
        echo "rsql:  skipped: $RSQL_BIN not found; build it with: cargo build --release -p rsql-client"
        RUN_RSQL=0
    elif [ ! -x /usr/bin/time ]; then
        echo "rsql:  skipped: /usr/bin/time is missing (apt-get install time)"
        RUN_RSQL=0
    fi
fi
FLINK_PY=""
if [ "$RUN_FLINK" = 1 ]; then
    for py in ${FLINK_PYTHON:-} "$FLINK_VENV/bin/python" python3; do
        if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && "$py" -c 'import pyflink' >/dev/null 2>&1; then
            FLINK_PY=$py
            break
        fi
    done
    if [ -z "$FLINK_PY" ]; then
        echo "flink: skipped: PyFlink is not installed; run: bench/run.sh --install-flink"
        RUN_FLINK=0
    elif ! command -v java >/dev/null 2>&1; then
        echo "flink: skipped: no java on the PATH (PyFlink needs Java 11 or 17)"
        RUN_FLINK=0
    fi
fi
if [ "$RUN_RSQL" = 0 ] && [ "$RUN_FLINK" = 0 ]; then
    echo "nothing to run"
    exit 2
fi

# --- runs -------------------------------------------------------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=0
RESULTS="$WORK/results"
: > "$RESULTS"

# seconds from /usr/bin/time's "h:mm:ss" or "m:ss.ss"
to_seconds() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.3f", s }' <<< "$1"; }

for script in "${SCRIPTS[@]}"; do
    name=$(basename "$script")
    if [ ! -f "$script" ]; then
        echo "$name: no such file" >&2
        STATUS=1
        continue
    fi
    sql="$WORK/$name"
    python3 bench/run_flink.py "$script" --substitute-only > "$sql" || { STATUS=1; continue; }
    rows=$(grep -o "'number-of-rows'[[:space:]]*=[[:space:]]*'[0-9]*'" "$sql" | grep -o "[0-9]*'$" | tr -d "'" | awk '{ s += $1 } END { print s + 0 }')

    if [ "$RUN_RSQL" = 1 ]; then
        echo "running rsql  $name ($rows rows) ..." >&2
        /usr/bin/time -v -o "$WORK/time" "$RSQL_BIN" -f "$sql" > "$WORK/rsql.out" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            echo "rsql  $name: FAILED (exit $rc); last output:"
            tail -n 5 "$WORK/rsql.out" | sed 's/^/    /'
            STATUS=1
        else
            wall=$(to_seconds "$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$WORK/time")")
            user=$(sed -n 's/.*User time (seconds): //p' "$WORK/time")
            sys=$(sed -n 's/.*System time (seconds): //p' "$WORK/time")
            rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time")
            awk -v n="$name" -v r="$rows" -v w="$wall" -v u="$user" -v s="$sys" -v k="$rss_kb" 'BEGIN {
                cpu = u + s; printf "rsql %s %d %.3f %.0f %.0f %.0f\n", n, r, w, (w > 0 ? r / w : 0), (cpu > 0 ? r / cpu : 0), k / 1024 }' >> "$RESULTS"
        fi
    fi

    if [ "$RUN_FLINK" = 1 ]; then
        echo "running flink $name ($rows rows) ..." >&2
        "$FLINK_PY" bench/run_flink.py "$sql" > "$WORK/flink.out" 2>&1
        rc=$?
        line=$(grep '^RESULT ' "$WORK/flink.out" | tail -n 1)
        if [ $rc -ne 0 ] || [ -z "$line" ]; then
            echo "flink $name: FAILED (exit $rc); last output:"
            grep -v '^[[:space:]]*at ' "$WORK/flink.out" | tail -n 5 | sed 's/^/    /'
            STATUS=1
        else
            get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$line"; }
            echo "flink $name $(get rows) $(get seconds) $(get rows_per_s) $(get rows_per_cpu_s) $(get peak_rss_mb)" >> "$RESULTS"
        fi
    fi
done

# --- table ------------------------------------------------------------------------------------
echo
printf '%-6s %-20s %12s %9s %12s %14s %9s %11s\n' engine script rows seconds rows/s rows/CPU-s "RSS MB" "rsql/flink"
awk '
    { engine[NR] = $1; script[NR] = $2; line[NR] = $0; if ($1 == "flink") flink[$2] = $5 }
    END {
        for (i = 1; i <= NR; i++) {
            split(line[i], f, " ")
            ratio = "-"
            if (f[1] == "rsql" && (f[2] in flink) && flink[f[2]] > 0) ratio = sprintf("%.2fx", f[5] / flink[f[2]])
            printf "%-6s %-20s %12d %9.2f %12.0f %14.0f %9.0f %11s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], ratio
        }
    }' "$RESULTS"
exit $STATUS
