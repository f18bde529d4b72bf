# Shared by bench/messaging.sh and bench/crash.sh: builds Portico and msgbench, starts
# Portico instances, the webhook sink, and the benchmark's catalog and subscription.
# PROFILE=debug uses debug builds (CI's small runs reuse the test build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portico-target}"
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
  cargo build --quiet --release -p portico --bin portico --example msgbench
else
  cargo build --quiet -p portico --bin portico --example msgbench
fi
bin="$CARGO_TARGET_DIR/$PROFILE/portico"
msgbench="$CARGO_TARGET_DIR/$PROFILE/examples/msgbench"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ -n ${pg_db:-} ]]; then psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

master_key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# start_portico NAME DATABASE_URL [extra env...]: starts an instance on free ports, or
# on the ports NAME had before (a restart); sets ${NAME}_pid, ${NAME}_internal,
# ${NAME}_console.
start_portico() {
  local name=$1 db=$2; shift 2
  local pub con int ports_var="${name}_ports"
  if [[ -n ${!ports_var:-} ]]; then
    read -r pub con int <<<"${!ports_var}"
  else
    pub=$(free_port); con=$(free_port); int=$(free_port)
    printf -v "$ports_var" '%s %s %s' "$pub" "$con" "$int"
  fi
  mkdir -p "$work/$name"
  env PORTICO_DATA_DIR="$work/$name" PORTICO_DATABASE__URL="$db" PORTICO_MASTER_KEY="$master_key" \
    PORTICO_ADMIN_EMAIL=admin@bench.test PORTICO_ADMIN_PASSWORD="bench password 1" PORTICO_LOG__LEVEL=warn \
    PORTICO_PUBLIC__ADDR=127.0.0.1:$pub PORTICO_CONSOLE__ADDR=127.0.0.1:$con PORTICO_INTERNAL__ADDR=127.0.0.1:$int \
    PORTICO_MESSAGING__ALLOWED_PRIVATE_TARGETS=127.0.0.1/32 "$@" \
    "$bin" serve >>"$work/$name.log" 2>&1 &
  local pid=$!
  disown "$pid"
  pids+=("$pid")
  printf -v "${name}_pid" %s "$pid"
  printf -v "${name}_internal" %s "http://127.0.0.1:$int"
  printf -v "${name}_console" %s "http://127.0.0.1:$con"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$int/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "portico $name did not start:"; cat "$work/$name.log"; exit 1
}

# new_pg_database NAME: a fresh database on the local PostgreSQL (dropped on exit); sets $url.
new_pg_database() {
  pg_db=$1
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $pg_db" >/dev/null
  url="postgres://postgres@127.0.0.1:5432/$pg_db"
}

sink_port=$(free_port)
sink_url="http://127.0.0.1:$sink_port"

# setup CONSOLE_URL: the topic, merchant, app and subscription; sets $secret.
setup() {
  local out
  out=$("$msgbench" setup --console "$1" --admin-email admin@bench.test --admin-password "bench password 1" --callback "$sink_url/hooks")
  secret=$(echo "$out" | json 'd["secret"]')
}

start_sink() {
  "$msgbench" sink --addr "127.0.0.1:$sink_port" --secret "$secret" 2>>"$work/sink.log" &
  pids+=("$!")
  disown "$!"
  for _ in $(seq 50); do curl -sf "$sink_url/stats" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the sink did not start"; exit 1
}
