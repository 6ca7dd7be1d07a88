#!/usr/bin/env bash
# Runs a local Kafka-protocol broker (tansu, sqlite storage) on 127.0.0.1 for the
# kafka and upsert-kafka connectors' tests and benchmarks.
#
#   scripts/kafka.sh install                      build tansu with cargo if it is not installed
#   scripts/kafka.sh start                        install if needed, start, wait until it accepts connections
#   scripts/kafka.sh stop                         stop the broker started from RSQL_KAFKA_DIR
#   scripts/kafka.sh status                       exit 0 when the broker accepts connections
#   scripts/kafka.sh create-topic NAME [PARTS]    create a topic (default 1 partition); an existing one is kept
#   scripts/kafka.sh bootstrap                    print the bootstrap address
#
# Environment: RSQL_KAFKA_DIR (data dir, default /tmp/rsql-kafka),
#              RSQL_KAFKA_PORT (default 19092),
#              RSQL_KAFKA_LOG (the broker's RUST_LOG filter, default warn).
set -euo pipefail

DIR="${RSQL_KAFKA_DIR:-/tmp/rsql-kafka}"
PORT="${RSQL_KAFKA_PORT:-19092}"
HOST=127.0.0.1
PIDFILE="$DIR/tansu.pid"
LOG="$DIR/tansu.log"

find_tansu() {
  if command -v tansu >/dev/null 2>&1; then
    command -v tansu
  elif [ -x "$HOME/.cargo/bin/tansu" ]; then
    echo "$HOME/.cargo/bin/tansu"
  else
    return 1
  fi
}

install() {
  if find_tansu >/dev/null; then
    return 0
  fi
  echo "installing tansu with cargo (takes several minutes)..." >&2
  cargo install tansu --locked --features dynostore,libsql
  find_tansu >/dev/null
}

listening() {
  # bash's /dev/tcp: succeeds when something accepts connections on the port.
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

running_pid() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid="$(cat "$PIDFILE")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "$pid"
      return 0
    fi
  fi
  return 1
}

start() {
  if listening; then
    return 0
  fi
  install
  local bin
  bin="$(find_tansu)"
  mkdir -p "$DIR"
  if ! running_pid >/dev/null; then
    (
      cd "$DIR"
      # The broker logs every request at info level; a caller's RUST_LOG must not reach it.
      RUST_LOG="${RSQL_KAFKA_LOG:-warn}" nohup "$bin" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine "sqlite://tansu.db" >>"$LOG" 2>&1 &
      echo $! >"$PIDFILE"
    )
  fi
  for _ in $(seq 1 300); do
    if listening; then
      return 0
    fi
    if ! running_pid >/dev/null; then
      echo "tansu exited during start; last lines of $LOG:" >&2
      tail -n 20 "$LOG" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "tansu did not accept connections on $HOST:$PORT within 30s; see $LOG" >&2
  return 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$PIDFILE"
}

create_topic() {
  local name="${1:?usage: scripts/kafka.sh create-topic NAME [PARTITIONS]}"
  local parts="${2:-1}"
  start
  local bin
  bin="$(find_tansu)"
  local out
  if out="$("$bin" topic create "$name" --partitions "$parts" --broker "tcp://$HOST:$PORT" 2>&1)"; then
    return 0
  fi
  if grep -q "already exists" <<<"$out"; then
    return 0
  fi
  echo "$out" >&2
  return 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) listening ;;
  create-topic) shift; create_topic "$@" ;;
  bootstrap) echo "$HOST:$PORT" ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
