#!/usr/bin/env bash
# Throughput of the OAuth2 server on this machine, to compare with Ory Hydra's published
# figures (about 510 client-credentials tokens/s and 5,100 introspections/s on 2 CPUs).
#
#   bench/oauth.sh            # embedded SQLite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench bench/oauth.sh
#
# Builds the release binary, starts `portico serve` on loopback ports, creates an active
# merchant and an app with the CLI, then runs wrk (1 thread, 32 connections, 10 s) on
#   POST /oauth2/token       grant_type=client_credentials, HTTP Basic
#   POST /oauth2/introspect  one valid access token (the cached path)
# Needs wrk (apt-get install -y wrk); installs it when missing and root.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portico-target}"
cargo build --release -p portico >/dev/null
bin="$CARGO_TARGET_DIR/release/portico"
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
export PORTICO_DATA_DIR="$work/data" PORTICO_ADMIN_PASSWORD="bench password 1" PORTICO_LOG__LEVEL=warn
export PORTICO_PUBLIC__ADDR=127.0.0.1:18080 PORTICO_CONSOLE__ADDR=127.0.0.1:18081 PORTICO_INTERNAL__ADDR=127.0.0.1:18082
# A wrk run must not trip the brute-force limiter (it never fails here anyway).
export PORTICO_OAUTH__FAILURE_LIMIT=1000000
if [[ -n "${DATABASE_URL:-}" ]]; then
  export PORTICO_DATABASE_URL="$DATABASE_URL" PORTICO_MASTER_KEY=$(openssl rand -hex 32)
fi
m=$("$bin" merchant create --email bench@shop.cn --password "bench password 1" --name Bench -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["merchant"]["id"])')
"$bin" merchant documents "$m" --company-name "Bench Ltd" --licence-number 91330100MA27XXXX1Q --contact-name Bench \
  --contact-phone 13800138000 --description bench -o json >/dev/null
"$bin" merchant submit "$m" -o json >/dev/null
"$bin" merchant approve "$m" -o json >/dev/null
read -r key secret < <("$bin" app create --merchant "$m" --name Bench -o json |
  python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["secrets"] if x["environment"]=="production"][0]; print(s["app_key"], s["app_secret"])')
"$bin" serve >"$work/serve.log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 100); do curl -fs http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done

basic=$(printf '%s:%s' "$key" "$secret" | base64 -w0)
cat >"$work/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
token=$(curl -fs -X POST -u "$key:$secret" -d grant_type=client_credentials http://127.0.0.1:18080/oauth2/token |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
cat >"$work/introspect.lua" <<LUA
wrk.method = "POST"
wrk.body = "token=$token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
run() { wrk -t1 -c32 -d10s --latency -s "$2" "$1" | tee -a /dev/stderr | awk '/Requests\/sec/ {print $2}'; }
echo "== client_credentials token issuance" >&2
tokens=$(run http://127.0.0.1:18080/oauth2/token "$work/token.lua")
echo "== introspection of a cached token" >&2
intro=$(run http://127.0.0.1:18082/oauth2/introspect "$work/introspect.lua")
engine=${DATABASE_URL:+postgres}
echo "engine: ${engine:-sqlite}"
echo "client_credentials tokens per second: $tokens"
echo "introspections per second: $intro"
