#!/usr/bin/env bash
# Checks the runtime stage of the Dockerfile without a Docker engine: builds the same root file
# system as `FROM debian:bookworm-slim` + `apt-get install ca-certificates` with debootstrap
# (cached under ~/.cache/rsql-image), puts rsql-client and sql/ where the Dockerfile's COPY lines
# put them, and runs the seed demo from inside it with chroot, configured only by -e style
# environment variables, against MariaDB and the broker on loopback (what `docker run
# --network host` does). Prints the root's size and the DWS layer read back from the topic.
# Needs root (debootstrap, chroot, mount) and Debian's package mirror.
#   scripts/image_check.sh [path/to/rsql-client]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)

if [ "$(id -u)" != 0 ]; then
    echo "image_check: needs root for debootstrap and chroot" >&2
    exit 2
fi
if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap"
    apt-get install -y -q debootstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
fi

BASE=${RSQL_IMAGE_CACHE:-$HOME/.cache/rsql-image}/bookworm-slim
if [ ! -x "$BASE/usr/sbin/update-ca-certificates" ]; then
    echo "== building the base root (debian bookworm, minbase, ca-certificates) in $BASE"
    rm -rf "$BASE.tmp"
    mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$BASE.tmp" http://deb.debian.org/debian >/dev/null
    # What the slim variant leaves out: package lists, documentation, manuals, translations.
    rm -rf "$BASE.tmp/var/lib/apt/lists/"* "$BASE.tmp/var/cache/apt/"*.bin "$BASE.tmp/var/cache/apt/archives/"*.deb \
        "$BASE.tmp/usr/share/doc/"* "$BASE.tmp/usr/share/man/"* "$BASE.tmp/usr/share/locale/"* "$BASE.tmp/usr/share/info/"*
    mv "$BASE.tmp" "$BASE"
fi

BIN=${1:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/rsql-client}
if [ ! -x "$BIN" ]; then
    echo "== building rsql-client (release)"
    cargo build --release -q -p rsql-client
fi

WORK=$(mktemp -d /tmp/rsql-image.XXXXXX)
IMG="$WORK/root"
export RSQL_MYSQL_PORT=${RSQL_MYSQL_PORT:-13326}
export RSQL_MYSQL_DIR="$WORK/mariadb"
export RSQL_KAFKA_PORT=${RSQL_KAFKA_PORT:-19292}
export RSQL_KAFKA_DIR="$WORK/kafka"
export KAFKA_BOOTSTRAP=127.0.0.1:$RSQL_KAFKA_PORT
export MYSQL_PORT=$RSQL_MYSQL_PORT
PID=""
cleanup() {
    trap - INT TERM EXIT
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    umount "$IMG/proc" 2>/dev/null || true
    scripts/kafka.sh stop >/dev/null 2>&1 || true
    scripts/mariadb.sh stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup INT TERM EXIT

echo "== the image's root: base + COPY rsql-client + COPY sql"
cp -a "$BASE" "$IMG"
install -m 755 "$BIN" "$IMG/usr/local/bin/rsql-client"
strip "$IMG/usr/local/bin/rsql-client" 2>/dev/null || true
cp -r sql "$IMG/sql"
mount -t proc proc "$IMG/proc" 2>/dev/null || echo "   (no /proc inside the root: mount refused)"
echo "   root size $(du -sh --exclude=proc "$IMG" | cut -f1), rsql-client $(du -h "$IMG/usr/local/bin/rsql-client" | cut -f1)"
in_image() { chroot "$IMG" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
echo "   $(in_image /usr/local/bin/rsql-client --version)"

echo "== services on loopback"
scripts/mariadb.sh start >/dev/null
scripts/kafka.sh start >/dev/null
scripts/mariadb.sh sql "DROP DATABASE IF EXISTS flink_cdc; $(grep -v '^--' sql/mysql/seed_tables.sql)"
for t in ods_order ods_customers dwd_order_customer_valid dws_agg_by_region; do
    scripts/kafka.sh create-topic "$t" >/dev/null
done

echo "== inside the image: rsql-client -f /sql/demo.sql, placeholders from the environment"
in_image MYSQL_HOST=127.0.0.1 MYSQL_PORT="$RSQL_MYSQL_PORT" MYSQL_USER=rsql MYSQL_PASSWORD=rsql \
    KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" /usr/local/bin/rsql-client -f /sql/demo.sql > "$WORK/demo.log" 2>&1 &
PID=$!
sleep 3
if ! kill -0 "$PID" 2>/dev/null; then
    cat "$WORK/demo.log" >&2
    echo "image_check: rsql-client stopped inside the image" >&2
    exit 1
fi
scripts/mariadb.sh sql "$(grep -v '^--' sql/mysql/seed_rows.sql)"
show() { in_image KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" /usr/local/bin/rsql-client -f /sql/show_layers.sql 2>&1 | grep -v '^\[INFO\]'; }
for _ in $(seq 1 60); do
    out=$(show || true)
    if echo "$out" | grep -q "beijing .*| *2 | *20"; then
        echo "$out" | sed -n '/dws_agg_by_region\|order_cnt/,$p' | head -8
        echo "image_check: ok (DWS beijing | 2 | 20.0 read back inside the image)"
        exit 0
    fi
    sleep 1
done
echo "$out"
tail -20 "$WORK/demo.log" >&2
echo "image_check: the DWS layer did not reach beijing | 2 | 20 within 60 s" >&2
exit 1
