#!/usr/bin/env bash
# Crash test: EVENTS events (each with an idempotency key, so a batch whose answer was
# lost can be sent again) are published to Portico while it delivers them to a local
# receiver; Portico is killed with SIGKILL half-way.
#   - SQLite: the one instance is started again on the same file and finishes.
#   - PostgreSQL: two instances share the database; one is killed, the other finishes
#     (the killed one's leases run out after LEASE seconds).
# The receiver counts every event it saw at least once. Ends with `lost: N` (N must be 0).
#
#   bench/crash.sh                               # 100,000 events
#   EVENTS=10000 PROFILE=debug bench/crash.sh    # CI's small run
source "$(dirname "$0")/messaging-lib.sh"
EVENTS=${EVENTS:-100000}
LEASE=${LEASE:-10}
DATABASES=${DATABASES:-sqlite postgres}
total_lost=0

# kill_when_half: SIGKILL pid $1 once the receiver has seen half the events.
kill_when_half() {
  while :; do
    seen=$(curl -sf "$sink_url/stats" | json 'd["distinct"]')
    (( seen >= EVENTS / 2 )) && break
    sleep 0.05
  done
  kill -9 "$1"
  echo "  killed $1 with $seen of $EVENTS delivered"
}

for db in $DATABASES; do
  sink_port=$(free_port); sink_url="http://127.0.0.1:$sink_port"
  case $db in
    sqlite)
      url="sqlite://$work/crash.db?mode=rwc"
      start_portico a "$url" PORTICO_MESSAGING__LEASE_SECS=$LEASE
      setup "$a_console"
      start_sink
      "$msgbench" pump --internal "$a_internal" --events "$EVENTS" --batch 100 --concurrency 8 >"$work/pump.json" &
      pump=$!
      kill_when_half "$a_pid"
      sleep 1
      # Started again on the same database and ports; the pump rides it out.
      start_portico a "$url" PORTICO_MESSAGING__LEASE_SECS=$LEASE
      wait "$pump"
      ;;
    postgres)
      new_pg_database "portico_crash_$$"
      start_portico a "$url" PORTICO_MESSAGING__LEASE_SECS=$LEASE
      start_portico b "$url" PORTICO_MESSAGING__LEASE_SECS=$LEASE
      setup "$a_console"
      start_sink
      "$msgbench" pump --internal "$a_internal,$b_internal" --events "$EVENTS" --batch 100 --concurrency 8 >"$work/pump.json" &
      pump=$!
      kill_when_half "$a_pid"
      wait "$pump"
      ;;
  esac
  stats=$("$msgbench" wait --sink "$sink_url" --events "$EVENTS" --timeout 600)
  lost=$(echo "$stats" | json "$EVENTS - d['distinct']")
  echo "$db: $(echo "$stats" | json 'str(d["requests"]) + " requests for " + str(d["distinct"]) + " distinct events"'); lost $lost"
  total_lost=$((total_lost + lost))
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  unset a_ports b_ports
done
echo "lost: $total_lost"
(( total_lost == 0 ))
