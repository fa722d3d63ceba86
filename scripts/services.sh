#!/usr/bin/env bash
# Installs (Debian packages) and starts on loopback the real services the tests need:
# MariaDB, Redis (benchmark yardstick) and headless Chromium (UI test). Everything lives under
# .services/ in the repository; `stop` ends what `start` began. Later issues extend `start_*`.
#
#   scripts/services.sh install   # apt-get install what is missing (root or sudo)
#   scripts/services.sh start     # start them; prints `export VAR=...` lines (also in .services/env)
#   scripts/services.sh stop      # stop them
#   scripts/services.sh running   # exit 0 when they are up
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/.services"
PACKAGES=(mariadb-server mariadb-client redis-server chromium fonts-dejavu-core)
DB_USER=narrative
DB_PASSWORD=narrative-test

log() { echo "services: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && { log "packages present"; return 0; }
  log "installing: $missing"
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() {  # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.5
  done
}

mariadb_bin() {  # mariadbd lives in /usr/sbin on Debian
  command -v mariadbd || echo /usr/sbin/mariadbd
}

start_mariadb() {
  local dir="$RUN/mariadb" port
  port=$(free_port)
  mkdir -p "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
      || { cat "$dir/install.log" >&2; return 1; }
  fi
  "$(mariadb_bin)" --no-defaults --user="$(id -un)" --datadir="$dir/data" \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --bind-address=127.0.0.1 \
    --port="$port" --local-infile=1 --max-allowed-packet=256M --innodb-buffer-pool-size=256M \
    --innodb-flush-log-at-trx-commit=2 --log-error="$dir/error.log" 2>>"$dir/stderr.log" &
  wait_for 60 mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e 'SELECT 1' \
    || { log "MariaDB did not start"; cat "$dir/error.log" >&2; return 1; }
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'localhost';
CREATE DATABASE IF NOT EXISTS narrative_test CHARACTER SET utf8mb4;
SQL
  {
    echo "export NARRATIVE_TEST_MYSQL_URL='mysql+pymysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$port/narrative_test'"
    echo "export NARRATIVE_TEST_MYSQL_PORT=$port"
  } >>"$RUN/env"
  log "MariaDB on 127.0.0.1:$port"
}

start_redis() {
  local dir="$RUN/redis" port
  port=$(free_port)
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
  wait_for 20 redis-cli -p "$port" ping || { log "Redis did not start"; return 1; }
  echo "export REDIS_URL='redis://127.0.0.1:$port/0'" >>"$RUN/env"
  log "Redis on 127.0.0.1:$port"
}

start_chromium() {  # nothing to start: the UI test launches it; export where it is
  local path
  path=$(command -v chromium || true)
  [ -n "$path" ] || { log "chromium missing"; return 1; }
  echo "export NARRATIVE_CHROMIUM='$path'" >>"$RUN/env"
}

running() {  # services started earlier and still alive: reuse them
  [ -f "$RUN/env" ] && [ -f "$RUN/mariadb/mysqld.pid" ] && kill -0 "$(cat "$RUN/mariadb/mysqld.pid")" 2>/dev/null \
    && [ -f "$RUN/redis/redis.pid" ] && kill -0 "$(cat "$RUN/redis/redis.pid")" 2>/dev/null
}

start() {
  if running; then log "already running, reusing"; cat "$RUN/env"; return 0; fi
  stop >/dev/null 2>&1 || true
  mkdir -p "$RUN"
  : >"$RUN/env"
  start_mariadb
  start_redis
  start_chromium
  cat "$RUN/env"
}

stop_pidfile() {  # stop_pidfile FILE NAME
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $2"
  fi
  rm -f "$1"
}

stop() {
  stop_pidfile "$RUN/mariadb/mysqld.pid" MariaDB
  stop_pidfile "$RUN/redis/redis.pid" Redis
  rm -f "$RUN/env"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  running) running ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
