#!/usr/bin/env bash
# A local MariaDB for the mysql-cdc connector: installed from Debian's packages when missing,
# run as a plain process on 127.0.0.1 with a row-based binary log.
#
#   scripts/mariadb.sh start        install if needed, start (does nothing when already running)
#   scripts/mariadb.sh stop         stop the server
#   scripts/mariadb.sh status       exit 0 when running
#   scripts/mariadb.sh sql "..."    run SQL as root over the server's socket
#
# Environment: RSQL_MYSQL_PORT (default 13306), RSQL_MYSQL_DIR (default /tmp/rsql-mariadb).
# Users: root over the socket in the data dir (no password); rsql/rsql from 127.0.0.1 with the
# grants the mysql-cdc connector needs, plus ALL on databases named test% and flink_cdc.
set -euo pipefail

PORT="${RSQL_MYSQL_PORT:-13306}"
DIR="${RSQL_MYSQL_DIR:-/tmp/rsql-mariadb}"
DATA="$DIR/data"
SOCK="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
LOG="$DIR/mysqld.log"
export PATH="$PATH:/usr/sbin:/sbin"

find_bin() {
    for b in "$@"; do
        if command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return 0
        fi
    done
    return 1
}

ensure_installed() {
    if find_bin mariadbd mysqld >/dev/null && find_bin mariadb mysql >/dev/null; then
        return 0
    fi
    echo "mariadb.sh: installing mariadb-server and mariadb-client from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package scripts from starting a system-wide server.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ] && [ -w /usr/sbin ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    apt-get update
    apt-get install -y mariadb-server mariadb-client
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
}

client() {
    "$(find_bin mariadb mysql)" --no-defaults --socket="$SOCK" -uroot "$@"
}

running() {
    [ -S "$SOCK" ] && client -N -e "SELECT 1" >/dev/null 2>&1
}

start() {
    ensure_installed
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
    if running; then
        print_facts
        return 0
    fi
    local mariadbd
    mariadbd="$(find_bin mariadbd mysqld)"
    local user_args=()
    if [ "$(id -u)" = 0 ]; then
        user_args=(--user=root)
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "mariadb.sh: port $PORT is taken by another process (a server with another RSQL_MYSQL_DIR?); set RSQL_MYSQL_PORT to a free port" >&2
        exit 1
    fi
    if [ ! -d "$DATA/mysql" ]; then
        mkdir -p "$DATA"
        "$(find_bin mariadb-install-db mysql_install_db)" --no-defaults --datadir="$DATA" \
            --auth-root-authentication-method=normal --skip-test-db "${user_args[@]}" >"$DIR/install.log" 2>&1 || {
            cat "$DIR/install.log" >&2
            echo "mariadb.sh: mariadb-install-db failed (log above)" >&2
            exit 1
        }
    fi
    rm -f "$SOCK"
    setsid "$mariadbd" --no-defaults "${user_args[@]}" \
        --datadir="$DATA" --socket="$SOCK" --pid-file="$PIDFILE" --log-error="$LOG" \
        --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve \
        --log-bin="$DATA/binlog" --binlog-format=ROW --binlog-row-image=FULL --server-id=1 \
        --max-connections=500 --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
        --sync-binlog=0 --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        </dev/null >/dev/null 2>&1 9>&- &
    local pid=$! i
    for i in $(seq 1 120); do
        if running; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            echo "mariadb.sh: MariaDB exited while starting (log above: $LOG)" >&2
            exit 1
        fi
        if [ "$i" = 120 ]; then
            tail -n 30 "$LOG" >&2 || true
            echo "mariadb.sh: MariaDB did not start within 60 s on port $PORT (log above: $LOG)" >&2
            exit 1
        fi
        sleep 0.5
    done
    client -e "
        CREATE USER IF NOT EXISTS 'rsql'@'127.0.0.1' IDENTIFIED BY 'rsql';
        CREATE USER IF NOT EXISTS 'rsql'@'localhost' IDENTIFIED BY 'rsql';
        GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rsql'@'127.0.0.1', 'rsql'@'localhost';
        GRANT ALL ON \`test%\`.* TO 'rsql'@'127.0.0.1', 'rsql'@'localhost';
        GRANT ALL ON \`flink_cdc\`.* TO 'rsql'@'127.0.0.1', 'rsql'@'localhost';
        FLUSH PRIVILEGES;"
    print_facts
}

print_facts() {
    echo "MariaDB running: host 127.0.0.1 port $PORT user rsql password rsql"
    echo "  root: $(find_bin mariadb mysql) --socket=$SOCK -uroot"
    echo "  data dir: $DATA  log: $LOG"
}

stop() {
    if running; then
        "$(find_bin mariadb-admin mysqladmin)" --no-defaults --socket="$SOCK" -uroot shutdown
        echo "MariaDB on port $PORT stopped"
    elif [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill "$(cat "$PIDFILE")"
        echo "MariaDB on port $PORT stopped"
    else
        echo "MariaDB on port $PORT is not running"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) running ;;
    sql)
        shift
        client -e "$*"
        ;;
    *)
        echo "usage: $0 start | stop | status | sql \"STATEMENTS\"" >&2
        exit 2
        ;;
esac
