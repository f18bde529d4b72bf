#!/usr/bin/env bash
# Message push throughput: events published to the internal ingress at RATE per second
# for DURATION seconds (batches of 100, durable: each answer follows the commit), each
# delivered as a signed webhook to a local receiver that verifies it (msgbench sink).
# Runs on the embedded default (SQLite) and on PostgreSQL, a fresh instance and
# database each.
#
#   bench/messaging.sh                                    # 12,000/s for 60 s
#   RATE=2000 DURATION=5 PROFILE=debug bench/messaging.sh # CI's small run
#
# Prints, per database, events accepted and delivered per second and the p50/p99 time
# from acceptance to the first attempt; ends with `delivered per second: X` (SQLite).
source "$(dirname "$0")/messaging-lib.sh"
RATE=${RATE:-12000}
DURATION=${DURATION:-60}
DATABASES=${DATABASES:-sqlite postgres}
events=$((RATE * DURATION))
first=""

for db in $DATABASES; do
  case $db in
    sqlite) url="sqlite://$work/bench-$db.db?mode=rwc" ;;
    postgres)
      new_pg_database "portico_bench_$$" ;;
  esac
  sink_port=$(free_port); sink_url="http://127.0.0.1:$sink_port"
  start_portico p "$url"
  setup "$p_console"
  start_sink
  t0=$(date +%s.%N)
  pump=$("$msgbench" pump --internal "$p_internal" --events "$events" --rate "$RATE" --batch 100 --concurrency 16)
  stats=$("$msgbench" wait --sink "$sink_url" --events "$events" --timeout 900)
  t1=$(date +%s.%N)
  python3 - "$db" "$events" "$t0" "$t1" "$pump" "$stats" <<'PY'
import json, sys
db, n, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
pump, stats = json.loads(sys.argv[5]), json.loads(sys.argv[6])
assert stats["bad_signatures"] == 0, stats
lost = n - stats["distinct"]
print(f"{db}: {n} events; accepted {pump['accepted_per_sec']:.0f}/s (request p99 {pump['request_p99_ms']} ms); "
      f"delivered {stats['distinct'] / (t1 - t0):.0f}/s; accept to first attempt p50 {stats['latency_ms']['p50']} ms, "
      f"p99 {stats['latency_ms']['p99']} ms, max {stats['latency_ms']['max']} ms; {stats['requests']} requests; missing {lost}")
if lost:
    sys.exit(1)
PY
  rate=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['distinct'] / ($t1 - $t0)))" "$stats")
  first=${first:-$rate}
  kill -9 "$p_pid" "${pids[-1]}" 2>/dev/null || true
  unset p_ports
done
echo "delivered per second: $first"
