#!/usr/bin/env bash
# Portico's gateway against an nginx reverse proxy on the same machine, same backend
# (shared/bench/proxy-baseline.sh: a fixed JSON backend on :9101 and nginx proxy_pass on
# :9001 with NGINX_WORKERS workers), same number of Portico worker threads.
#
#   bench/gateway.sh                 # 1 nginx worker vs 1 Portico worker thread
#   WORKERS=2 bench/gateway.sh
#   PORTICO_BIN=/path/to/portico bench/gateway.sh   # another build of Portico
#   INSTRUCTIONS=1 bench/gateway.sh  # instructions per call (callgrind), not throughput
#   COMPARE=/path/to/other/portico bench/gateway.sh   # two builds side by side (below)
#   SAME_BYTES=1 bench/gateway.sh   # against nginx forwarding the same header bytes (below)
#
# Portico runs the full pipeline: route, token (or signature) authentication, app and
# merchant checks, IP allowlist, grant check, rate limit (a limit far above the load, so
# every call is counted but none refused), forwarding, envelope check, call record.
# Ends with `portico/nginx throughput ratio: X` (median of paired wrk runs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y nginx wrk >/dev/null
# The reference harness lives in shared/bench beside the checkout.
baseline="$root/../shared/bench/proxy-baseline.sh"
pair="$root/../shared/bench/wrk-pair.sh"
[[ -f $baseline && -f $pair ]] || { echo "needs ../shared/bench (proxy-baseline.sh, wrk-pair.sh) beside the checkout"; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portico-target}"
# PORTICO_BIN runs another build (an older commit's binary, say) instead of this checkout's.
if [[ -n ${PORTICO_BIN:-} ]]; then bin=$PORTICO_BIN; else cargo build --release -p portico >/dev/null; bin="$CARGO_TARGET_DIR/release/portico"; fi
# Portico warns about PORTICO_* variables it does not know; this one is the script's.
unset PORTICO_BIN
work=$(mktemp -d)
cleanup() {
  kill "$(cat "$work/pid" 2>/dev/null)" "$(cat "$work/pid2" 2>/dev/null)" "$(cat "$work/beat.pid" 2>/dev/null)" 2>/dev/null || true
  NGINX_WORKERS=$WORKERS bash "$baseline" stop "$work/nginx" >/dev/null 2>&1 || true
  [[ -f $work/nginx/same.pid ]] && kill "$(cat "$work/nginx/same.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
NGINX_WORKERS=$WORKERS bash "$baseline" start "$work/nginx" >/dev/null

export PORTICO_DATA_DIR="$work/data" PORTICO_ADMIN_EMAIL=admin@bench.test PORTICO_ADMIN_PASSWORD="bench password 1" PORTICO_LOG__LEVEL=warn
export PORTICO_PUBLIC__ADDR=127.0.0.1:18080 PORTICO_CONSOLE__ADDR=127.0.0.1:18081 PORTICO_INTERNAL__ADDR=127.0.0.1:18082
export PORTICO_WORKER_THREADS=$WORKERS PORTICO_GATEWAY__APP_RATE_LIMIT_PER_SECOND=10000000
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
m=$("$bin" merchant create --email bench@shop.cn --password "bench password 1" --name Bench -o json | json 'd["merchant"]["id"]')
"$bin" merchant documents "$m" --company-name "Bench Ltd" --licence-number 91330100MA27XXXX1Q --contact-name Bench \
  --contact-phone 13800138000 --description bench -o json >/dev/null
"$bin" merchant submit "$m" -o json >/dev/null
"$bin" merchant approve "$m" -o json >/dev/null
read -r app key secret < <("$bin" app create --merchant "$m" --name Bench -o json |
  json '" ".join([d["app"]["id"]] + [[x["app_key"], x["app_secret"]] for x in d["secrets"] if x["environment"]=="production"][0])')
# A session of its own, as nginx has once it daemonizes (and a service under systemd has a
# cgroup of its own): with the kernel's autogroup scheduling, a process sharing this
# script's session also shares one CPU share with the wrk it is measured by.
setsid "$bin" serve >"$work/serve.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 100); do curl -fs http://127.0.0.1:18081/healthz >/dev/null && break; sleep 0.1; done
admin=$(curl -fs http://127.0.0.1:18081/api/v1/auth/token -H 'content-type: application/json' \
  -d '{"email":"admin@bench.test","password":"bench password 1"}' | json 'd["data"]["access_token"]')
api() { curl -fs -X "$1" "http://127.0.0.1:18081$2" -H "authorization: Bearer $admin" -H 'content-type: application/json' ${3:+-d "$3"}; }
api PUT /api/v1/catalog/groups/bench '{"title":"Bench"}' >/dev/null
api_id=$(api POST /api/v1/catalog/apis '{"name":"bench.order","version":"1.0","group":"bench","service":"bench","upstream_path":"/order","http_method":"GET"}' | json 'd["data"]["id"]')
api POST "/api/v1/catalog/apis/$api_id/publish" >/dev/null
api PUT "/api/v1/merchants/$m/apps/$app/scopes/bench" >/dev/null
curl -fs http://127.0.0.1:18082/registry/v1/instances -H 'content-type: application/json' \
  -d '{"id":"bench-1","service":"bench","host":"127.0.0.1","port":9101}' >/dev/null
# Beat like a registered service does (an instance that misses three beats leaves the
# rotation, and every later call would be a quick refusal instead of a proxied call).
(while sleep 10; do for p in 18082 28082; do curl -fs -X PUT "http://127.0.0.1:$p/registry/v1/instances/bench-1/heartbeat" >/dev/null 2>&1 || true; done; done) &
echo $! >"$work/beat.pid"
token=$(curl -fs -X POST -u "$key:$secret" -d grant_type=client_credentials http://127.0.0.1:18080/oauth2/token | json 'd["access_token"]')
sleep 1
curl -fs -H "authorization: Bearer $token" http://127.0.0.1:18080/api/bench/order >/dev/null || { echo "the gateway did not answer"; cat "$work/serve.log"; exit 1; }

# A signed /router/rest URL with a fresh timestamp (signatures are good for 300 s).
signed_url() {
  local ts sig
  ts=$(date +%s)
  sig=$("$bin" sign -o json --method hmac-sha256 --secret "$secret" app_key="$key" method=bench.order v=1.0 timestamp="$ts" sign_method=hmac-sha256 | json 'd["signature"]')
  echo "http://127.0.0.1:18080/router/rest?app_key=$key&method=bench.order&v=1.0&timestamp=$ts&sign_method=hmac-sha256&sign=$sig"
}

if [[ -n ${INSTRUCTIONS:-} ]]; then
  # Instructions per call instead of throughput: Portico under callgrind, counted over
  # 10 s of 8 connections after a warm-up. Counts repeat from run to run whatever else
  # the machine does, where throughput on a shared box moves by 10 % or more. Valgrind's
  # CPU has no SHA extensions: sha2 runs its portable code (about 3,460 instructions a
  # 64-byte block), shown apart.
  [[ $WORKERS == 1 ]] || { echo "INSTRUCTIONS=1 counts the one serving thread: run it with WORKERS=1"; exit 1; }
  command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
  count() {
    local label=$1 pid out n
    shift
    kill "$(cat "$work/pid")" 2>/dev/null || true
    while curl -fs http://127.0.0.1:18081/healthz >/dev/null 2>&1; do sleep 0.2; done
    rm -f "$work"/cg*
    setsid valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/cg" "$bin" serve >"$work/serve.log" 2>&1 &
    for _ in $(seq 600); do curl -fs http://127.0.0.1:18081/healthz >/dev/null && break; sleep 0.2; done
    pid=$(pgrep -nf "callgrind-out-file=$work/cg")
    echo "$pid" >"$work/pid"
    wrk -t1 -c8 -d3s "$@" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    out=$(wrk -t1 -c8 -d10s "$@")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "$label: errors during the run: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"; fi
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 100); do [[ -s $work/cg.1-01 ]] && break; sleep 0.2; done
    sleep 1
    # Thread 1 is the serving thread (one worker thread: the runtime runs on the main thread).
    local main sha
    main=$(awk '/^totals:/ {print $2}' "$work/cg.1-01")
    sha=$(callgrind_annotate --inclusive=no --auto=no --threshold=100 "$work/cg.1-01" 2>/dev/null | awk '/sha2::sha256::soft::compress/ && !seen {gsub(",", "", $1); print $1; seen = 1}')
    python3 -c "import sys; n,m,s=int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4] or 0); print(f'{sys.argv[1]}: {m/n:,.0f} instructions per call on the serving thread ({s/n:,.0f} of them portable SHA-256, {(m-s)/n:,.0f} the rest), {n} calls')" "$label" "$n" "$main" "${sha:-0}"
  }
  count "bearer token" -H "Authorization: Bearer $token" http://127.0.0.1:18080/api/bench/order
  count "HMAC-signed" "$(signed_url)"
  exit 0
fi

# Rotated short runs of A, B and nginx (N): `triples LABEL URL_A URL_B [wrk args for A and B]`,
# TRIPLES times (default 20 x COMPARE_SECONDS, 3 s); prints medians and quartiles of
# A/nginx, B/nginx and B/A, and p99 medians.
triples() {
  local label=$1 a=$2 b=$3 i who order out
  shift 3
  for p in "$a" "$b"; do curl -fs "$@" "$p" >/dev/null || { echo "$label: a call to $p failed"; exit 1; }; done
  for i in $(seq "${TRIPLES:-20}"); do
    case $((i % 3)) in 0) order="A B N" ;; 1) order="B N A" ;; 2) order="N A B" ;; esac
    for who in $order; do
      case $who in A) u=$a ;; B) u=$b ;; N) u=http://127.0.0.1:9001/order ;; esac
      if [[ $who == N ]]; then out=$(wrk -t1 -c64 -d"${COMPARE_SECONDS:-3}s" --latency "$u"); else out=$(wrk -t1 -c64 -d"${COMPARE_SECONDS:-3}s" --latency "$@" "$u"); fi
      if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "$label $who: errors during the run: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2; fi
      echo "$i $who $(awk '/Requests\/sec/ {r = $2} $1 == "99%" {p = $2} END {print r, p}' <<<"$out")"
    done
  done | python3 -c '
import statistics as st, sys
runs = {}
for line in sys.stdin:
  i, who, rps, p99 = line.split()
  unit = next(u for u in ("us", "ms", "s") if p99.endswith(u))
  runs.setdefault(i, {})[who] = (float(rps), float(p99[: -len(unit)]) * {"us": 0.001, "ms": 1, "s": 1000}[unit])
full = [r for r in runs.values() if len(r) == 3]
def show(name, xs):
  q = st.quantiles(xs, n=4)
  print(f"  {name}: median {st.median(xs):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
print(f"{sys.argv[1]}: {len(full)} triples of {sys.argv[2]} s runs")
show("A/nginx", [r["A"][0] / r["N"][0] for r in full])
show("B/nginx", [r["B"][0] / r["N"][0] for r in full])
show("B/A", [r["B"][0] / r["A"][0] for r in full])
print("  p99 medians (ms): A %.2f, B %.2f, nginx %.2f" % tuple(st.median(r[k][1] for r in full) for k in "ABN"))
' "$label" "${COMPARE_SECONDS:-3}"
}
if [[ -n ${SAME_BYTES:-} ]]; then
  # Portico (A) against nginx forwarding the same header bytes (B, on :9002): the identity
  # headers Portico hands the service (values of the same lengths; the backend only parses
  # them), the client's Authorization header or signed call's parameters dropped as
  # Portico drops them, and the RateLimit and trace id headers Portico answers with. Plain
  # nginx (N) as ever. Says how much of the gap to plain nginx is the work those headers
  # cause the backend and wrk.
  cat >"$work/nginx/same.conf" <<CONF
worker_processes $WORKERS;
pid $work/nginx/same.pid;
error_log $work/nginx/same-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:9101; keepalive 256; }
  server {
    listen 127.0.0.1:9002;
    # Signed calls: the single entry's parameters stay here, as Portico keeps them.
    rewrite ^/router/rest /order? last;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header x-portico-app-id $app;
      proxy_set_header x-portico-merchant-id $m;
      proxy_set_header x-portico-scope bench;
      proxy_set_header x-portico-environment production;
      proxy_set_header x-trace-id 01a2373b32a040580601fdbe6a1ddee3;
      proxy_set_header x-portico-timestamp 1796222956;
      proxy_set_header x-portico-identity 94c5t4XiEuE5mlxmr2NZ/nPyQ1lCbe6NZKH/8OQeLnw=;
      add_header ratelimit-limit 10000000;
      add_header ratelimit-remaining 9999999;
      add_header x-trace-id 01a2373b32a040580601fdbe6a1ddee3;
    }
  }
}
CONF
  nginx -c "$work/nginx/same.conf"
  sleep 0.5
  echo "== A: Portico ($bin), B: nginx forwarding the same header bytes"
  triples "bearer token" http://127.0.0.1:18080/api/bench/order http://127.0.0.1:9002/order -H "Authorization: Bearer $token"
  signed=$(signed_url)
  triples "HMAC-signed" "$signed" "${signed/18080/9002}"
  exit 0
fi

if [[ -n ${COMPARE:-} ]]; then
  # Two builds side by side: this one (A) and $COMPARE (B), each on its own copy of the
  # same data directory (ports 18080 and 28080), and nginx (N), in short wrk runs in
  # rotated order (A B N, B N A, N A B), TRIPLES times. On a host whose speed drifts by a
  # quarter from one 8 s run to the next, runs a few seconds apart pair far better than
  # two separate runs of this script; the medians of B/A say whether a change moved
  # anything.
  pid=$(cat "$work/pid")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  cp -r "$work/data" "$work/data2"
  setsid "$bin" serve >"$work/serve.log" 2>&1 &
  echo $! >"$work/pid"
  PORTICO_DATA_DIR="$work/data2" PORTICO_PUBLIC__ADDR=127.0.0.1:28080 PORTICO_CONSOLE__ADDR=127.0.0.1:28081 PORTICO_INTERNAL__ADDR=127.0.0.1:28082 \
    setsid "$COMPARE" serve >"$work/serve2.log" 2>&1 &
  echo $! >"$work/pid2"
  for p in 18081 28081; do for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done; done
  for p in 18082 28082; do
    curl -fs "http://127.0.0.1:$p/registry/v1/instances" -H 'content-type: application/json' -d '{"id":"bench-1","service":"bench","host":"127.0.0.1","port":9101}' >/dev/null
  done
  sleep 1
  echo "== A: $bin, B: $COMPARE"
  triples "bearer token" http://127.0.0.1:18080/api/bench/order http://127.0.0.1:28080/api/bench/order -H "Authorization: Bearer $token"
  signed=$(signed_url)
  triples "HMAC-signed" "$signed" "${signed/18080/28080}"
  exit 0
fi

echo "== token authentication: Portico (A) vs nginx (B), $WORKERS worker(s)"
out=$(bash "$pair" http://127.0.0.1:18080/api/bench/order http://127.0.0.1:9001/order "$ROUNDS" -- -H "Authorization: Bearer $token")
echo "$out"
ratio=$(awk '/median ratio/ {print $NF}' <<<"$out")

echo "== HMAC-signed requests (parameter style, /router/rest): Portico (A) vs nginx (B)"
signed=$(signed_url)
curl -fs "$signed" >/dev/null || { echo "signed call failed"; curl -s "$signed"; exit 1; }
bash "$pair" "$signed" http://127.0.0.1:9001/order "$ROUNDS"
# CPU per request, two ways, during one wrk run against each proxy, divided by the
# requests served: what the proxy's processes spent (user + system, all threads), and what
# the whole box spent (busy time of every CPU in /proc/stat: wrk, the backend, the proxy
# and softirq alike). The second is the one to compare: on loopback a send runs the
# receiver's TCP input as a softirq inside the sender, and whether that lands in the
# sender's system time or in the box's softirq column depends on where timer ticks fall.
echo "== CPU per request (token authentication for Portico), one ${WRK_SECONDS:-8} s wrk run each"
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
box_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
cpu_per_request() {
  local name=$1 url=$2; shift 2
  local pids=() t0 t1 b0 b1 out n
  if [[ $name == nginx ]]; then mapfile -t pids < <(pgrep -P "$(cat "$work/nginx/proxy.pid")"); else pids=("$(cat "$work/pid")"); fi
  t0=$(ticks "${pids[@]}"); b0=$(box_ticks)
  out=$(wrk -t1 -c64 -d"${WRK_SECONDS:-8}s" "$@" "$url")
  t1=$(ticks "${pids[@]}"); b1=$(box_ticks)
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "$name: errors during the run: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"; fi
  python3 -c "import os,sys; t=os.sysconf('SC_CLK_TCK'); a=[int(x) for x in sys.argv[2:7]]; print(f'{sys.argv[1]}: {(a[1]-a[0])/t/a[4]*1e6:.1f} us of CPU per request in its processes, {(a[3]-a[2])/t/a[4]*1e6:.1f} us on the whole box')" "$name" "$t0" "$t1" "$b0" "$b1" "$n"
}
cpu_per_request portico http://127.0.0.1:18080/api/bench/order -H "Authorization: Bearer $token"
cpu_per_request nginx http://127.0.0.1:9001/order
echo "portico/nginx throughput ratio: $ratio"
