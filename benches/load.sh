#!/usr/bin/env bash
# Side-by-side load test, in one run on this machine, with wrk (see benches/README.md):
#   upstream direct | nginx pass-through | nginx + auth_request to a zero-cost auth endpoint |
#   a bare Pingora proxy (examples/bare_proxy.rs) | Portcullis public path |
#   Portcullis with a session | the same during a wrong-password storm
# Prints requests/s, p50 and p99 per scenario, and the ratios the performance targets use.
# Needs: wrk, nginx (Debian packages; `scripts/bootstrap.sh --bench` installs them), curl, and
# release builds (`cargo build --release --bin portcullis --example bare_proxy`). Only 127.0.0.1
# is used; everything started is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${LOAD_SECONDS:-10}
ROUNDS=${LOAD_ROUNDS:-3}
CONNECTIONS=${LOAD_CONNECTIONS:-32}
THREADS=${LOAD_THREADS:-1}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
BARE=${BARE_BIN:-target/release/examples/bare_proxy}
BASE=${LOAD_PORT:-18800}
UPSTREAM=$((BASE + 1)) NGINX_PROXY=$((BASE + 2)) NGINX_AUTH=$((BASE + 3)) AUTH_ENDPOINT=$((BASE + 4))
GATEWAY=$((BASE + 5)) ADMIN=$((BASE + 6)) BARE_PROXY=$((BASE + 7))

for b in "$BIN" "$BARE"; do
  [ -x "$b" ] || { echo "load: build first: cargo build --release --bin portcullis --example bare_proxy" >&2; exit 2; }
done
. benches/common.sh
require load wrk nginx curl

# One nginx serves the upstream, the plain pass-through proxy, the auth_request proxy and its
# zero-cost auth endpoint.
start_nginx auto "$(upstream_server)
  upstream portal { server 127.0.0.1:$UPSTREAM; keepalive 64; }
  upstream auth { server 127.0.0.1:$AUTH_ENDPOINT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PROXY;
    location / {
      proxy_pass http://portal;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }
  server {
    listen 127.0.0.1:$AUTH_ENDPOINT;
    location / { return 204; }
  }
  server {
    listen 127.0.0.1:$NGINX_AUTH;
    location = /_auth {
      internal;
      proxy_pass http://auth;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_pass_request_body off;
      proxy_set_header Content-Length \"\";
    }
    location / {
      auth_request /_auth;
      proxy_pass http://portal;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"

# Every wrong password of the storm is hashed: the harshest case for the proxy path.
gateway_config gateway "$GATEWAY" "$ADMIN" 'throttle:
  ip_attempts_per_minute: 0
  captcha_after: 0
  lock_after: 0'
RUST_LOG=warn "$BIN" serve -c "$work/gateway/portcullis.yaml" 2>"$work/portcullis.log" &
pids+=($!)
"$BARE" "127.0.0.1:$BARE_PROXY" "127.0.0.1:$UPSTREAM" 2>"$work/bare.log" &
pids+=($!)
wait_ready "$ADMIN"
cookie=$(sign_in "$GATEWAY")
# Every scenario must answer 200, or the numbers mean nothing.
check() { [ "$(curl -s -o /dev/null -w '%{http_code}' "${@:2}" "$1")" = 200 ] || { echo "load: $1 does not answer 200" >&2; exit 1; }; }
check "http://127.0.0.1:$UPSTREAM/crm/"
check "http://127.0.0.1:$NGINX_PROXY/crm/"
check "http://127.0.0.1:$NGINX_AUTH/crm/"
check "http://127.0.0.1:$BARE_PROXY/crm/"
check "http://127.0.0.1:$GATEWAY/static/app.css"
check "http://127.0.0.1:$GATEWAY/crm/" -H "Cookie: $cookie"

# wrk's summary as "requests/s p50_ms p99_ms non-2xx".
measure() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@")
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") ${bad:-0}"
}
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# The storm: wrong passwords as fast as 8 connections can send them, for the whole scenario.
cat >"$work/storm.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"login":"bench@example.com","password":"wrong-password"}'
EOF

SCENARIOS=(upstream nginx_proxy nginx_auth_request pingora_bare portcullis_public portcullis_session session_during_storm)
declare -A result
run() {
  local name=$1 round=$2
  shift 2
  result[$name.$round]=$(measure "$@")
  printf '  round %s  %-22s %s\n' "$round" "$name" "${result[$name.$round]}" >&2
}

# Every scenario runs once per round, always in the same order, so that the ratios of a round
# compare runs made a minute apart at most; the report gives medians over rounds and ranges.
echo "load: $ROUNDS round(s), ${DURATION}s per scenario, $CONNECTIONS connections, $THREADS wrk thread(s)" >&2
storm_rps=()
for round in $(seq "$ROUNDS"); do
  run upstream "$round" "http://127.0.0.1:$UPSTREAM/crm/"
  run nginx_proxy "$round" "http://127.0.0.1:$NGINX_PROXY/crm/"
  run nginx_auth_request "$round" "http://127.0.0.1:$NGINX_AUTH/crm/"
  run pingora_bare "$round" "http://127.0.0.1:$BARE_PROXY/crm/"
  run portcullis_public "$round" "http://127.0.0.1:$GATEWAY/static/app.css"
  run portcullis_session "$round" "http://127.0.0.1:$GATEWAY/crm/" -H "Cookie: $cookie"
  wrk -t1 -c8 -d"$((DURATION + 2))s" -s "$work/storm.lua" "http://127.0.0.1:$GATEWAY/_portcullis/api/login" >"$work/storm.out" &
  storm=$!
  sleep 1
  run session_during_storm "$round" "http://127.0.0.1:$GATEWAY/crm/" -H "Cookie: $cookie"
  wait "$storm" || true
  storm_rps+=("$(awk '/^Requests\/sec/ {print $2}' "$work/storm.out")")
done

# field NAME ROUND N: the Nth number of a scenario's summary in one round.
field() { awk -v n="$3" '{print $n}' <<<"${result[$1.$2]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# " (min–max)" of the arguments, when there is more than one.
spread() { [ $# -lt 2 ] || printf ' (%s–%s)' "$(printf '%s\n' "$@" | sort -g | head -1)" "$(printf '%s\n' "$@" | sort -g | tail -1)"; }
over_rounds() { local r; for r in $(seq "$ROUNDS"); do field "$1" "$r" "$2"; done; }

echo
echo "Medians over $ROUNDS round(s):"
echo
printf '| scenario | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|\n'
for name in "${SCENARIOS[@]}"; do
  mapfile -t rps < <(over_rounds "$name" 1)
  mapfile -t p50 < <(over_rounds "$name" 2)
  mapfile -t p99 < <(over_rounds "$name" 3)
  bad=$(over_rounds "$name" 4 | awk '{ s += $1 } END { print s + 0 }')
  printf '| %s | %.0f | %s | %s | %s |\n' "$name" "$(median "${rps[@]}")" "$(median "${p50[@]}")" "$(median "${p99[@]}")" "$bad"
done
echo
echo "wrong-password storm: $(median "${storm_rps[@]}") attempts/s answered while it ran"
echo
# show_ratio LABEL TARGET A FIELD B FIELD: the ratio A/B of each round, as median (range).
show_ratio() {
  local values=() r
  for r in $(seq "$ROUNDS"); do values+=("$(ratio "$(field "$3" "$r" "$4")" "$(field "$5" "$r" "$6")")"); done
  printf '| %s | %s%s | %s |\n' "$1" "$(median "${values[@]}")" "$(spread "${values[@]}")" "$2"
}
echo "Ratios, taken within each round: median (range over rounds)."
echo
printf '| ratio | measured | target |\n|---|---:|---|\n'
show_ratio 'session / nginx pass-through' '>= 0.6 (aim 1.0)' portcullis_session 1 nginx_proxy 1
show_ratio 'session / nginx + auth_request' '>= 1.0 (aim 2.0)' portcullis_session 1 nginx_auth_request 1
show_ratio 'session / Portcullis public path' '>= 0.9 (aim 0.97)' portcullis_session 1 portcullis_public 1
show_ratio 'p99 during storm / calm p99' '<= 3 (aim 1.5)' session_during_storm 3 portcullis_session 3
echo
echo "The floor: Pingora forwarding with nothing in it, built and set up as Portcullis is."
echo
printf '| ratio | measured | target |\n|---|---:|---|\n'
show_ratio 'bare Pingora / nginx pass-through' 'none: reference' pingora_bare 1 nginx_proxy 1
show_ratio 'bare Pingora / nginx + auth_request' 'none: reference' pingora_bare 1 nginx_auth_request 1
show_ratio 'session / bare Pingora' 'none: reference' portcullis_session 1 pingora_bare 1
