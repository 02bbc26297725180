#!/usr/bin/env bash
# The gateway with a big store (benches/README.md, Scale). For each size N (users and live
# sessions N, remember-me tokens N/10, events 10·N; SCALE_SIZES, default "100000 1000000", so
# that each figure shows beside the one for a tenth of the work), on SQLite, one run measures:
#   start-up (to /healthz) and the first authenticated request; one pass over 10 000 distinct
#   sessions right after the start (cold: each a store read) and again (warm), requests/s and
#   p99; resident memory with 10 000 and with N sessions cached; `audit` by user, by time and by
#   address block; a revocation storm: `user dismiss --stdin` of 5 000 users while other
#   sessions keep coming, how long the command takes, the p99 of the others meanwhile, and how
#   long until the gateway refuses every dismissed session; a reload that brings 100 000 IP
#   ranges into `network.allow`, how long it takes and what a warm pass costs afterwards.
# Then two gateways on one PostgreSQL store of SCALE_PG_SIZE (default 100000) users and
# sessions: store queries per authenticated request with warm caches, the requests/s of each
# while a login storm runs against both, and the dismissal storm seen by both.
# Only 127.0.0.1; everything started is stopped at the end, the PostgreSQL database dropped.
# Needs release binaries (`make scale` builds them), nginx, wrk (the login storm), psql and
# python3. Not in `make test`: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PORTCULLIS_BIN:-target/release/portcullis}
CLIENT=${SCALE_CLIENT:-target/release/examples/scale_client}
SIZES=${SCALE_SIZES:-"100000 1000000"}
PG_SIZE=${SCALE_PG_SIZE:-100000}
POSTGRES=${PORTCULLIS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
BASE=${SCALE_PORT:-18900}
UPSTREAM=$((BASE + 1)) GATEWAY=$((BASE + 2)) ADMIN=$((BASE + 3))
GATEWAY2=$((BASE + 4)) ADMIN2=$((BASE + 5))
CONNECTIONS=${SCALE_CONNECTIONS:-32}
STORM_USERS=5000
# shellcheck source=benches/common.sh
source benches/common.sh
require scale nginx wrk curl psql python3
[ -x "$BIN" ] && [ -x "$CLIENT" ] ||
  { echo "scale: build first: cargo build --release --bin portcullis --example scale_client" >&2; exit 2; }
start_nginx 1 "$(upstream_server)"

# pass PORT FIRST LAST [WANT]: one pass over those session cookies (examples/scale_client.rs,
# one thread, $CONNECTIONS keep-alive connections) through the gateway on PORT; prints
# "PASS requests=… wrong=… rps=… p99_ms=…".
pass() {
  local out
  out=$("$CLIENT" "127.0.0.1:$1" "$tokens" "$2" "$3" "${4:-200}" "$CONNECTIONS")
  echo "  pass $*: $out" >&2
  echo "$out"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# median FIELD PASS_LINE...: the middle value of that field over the passes given.
median() {
  local name=$1 line
  shift
  for line in "$@"; do field "$name" "$line"; done | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# wrongs PASS_LINE...: answers not as wanted, over all the passes given.
wrongs() {
  local line n=0
  for line in "$@"; do n=$((n + $(field wrong "$line"))); done
  echo "$n"
}
rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
timed() { local t0; t0=$(now); "$@" >/dev/null; since "$t0"; }
metric() { curl -fs "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# start CONFIG ADMIN LOG: starts a gateway, waits for /healthz; sets $started_pid.
start() {
  RUST_LOG=warn "$BIN" serve -c "$1" 2>"$3" &
  started_pid=$!
  pids+=("$started_pid")
  wait_ready "$2"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# dismiss_storm CONFIG PORT...: dismisses users 0..STORM_USERS-1 in one command; prints the
# command's seconds and the seconds until every gateway given refuses all their sessions.
dismiss_storm() {
  local config=$1 t0 took port
  shift
  t0=$(now)
  seq 0 $((STORM_USERS - 1)) | sed 's/.*/user&@example.com/' |
    "$BIN" user dismiss --stdin -c "$config" >/dev/null
  took=$(since "$t0")
  for port in "$@"; do
    until [ "$(field wrong "$(pass "$port" 0 $((STORM_USERS - 1)) refused)")" = 0 ]; do
      [ "$(since "$t0" | cut -d. -f1)" -lt 120 ] || { echo "$took never"; return; }
    done
  done
  echo "$took $(since "$t0")"
}

# 100 000 ranges for network.allow (127.0.0.0/8 among them, so the load still gets through).
allow_ranges() {
  python3 - <<'EOF'
import random
r = random.Random(7)
print("  allow:")
print("    - 127.0.0.0/8")
for i in range(99999):
    a, b, c, d = (r.getrandbits(8) | 128, r.getrandbits(8), r.getrandbits(8), r.getrandbits(8))
    print(f"    - {a}.{b}.{c}.{d}/32" if i % 2 else f"    - {a}.{b}.{c}.0/24")
EOF
}

hash=$(echo 'scale-password-1' | "$BIN" hash-password)
report=()
for n in $SIZES; do
  dir=$work/size-$n tokens=$work/size-$n/tokens config=$work/size-$n/portcullis.yaml
  mkdir -p "$dir"
  cat >"$config" <<EOF
listen: 127.0.0.1:$GATEWAY
admin_listen: 127.0.0.1:$ADMIN
upstream: http://127.0.0.1:$UPSTREAM
store:
  path: data/portcullis.db
session:
  idle_timeout: 12h
  cache_capacity: $((2 * n))
audit:
  retention: 0
EOF
  "$BIN" audit --since 1s -c "$config" >/dev/null # makes the schema
  echo "scale: N=$n: filling the store" >&2
  python3 benches/scale_fill.py "$dir/data/portcullis.db" "$n" "$n" $((n / 10)) $((n * 10)) \
    "$hash" "$tokens" >&2
  size_mb=$(du -m "$dir/data/portcullis.db" | cut -f1)

  t0=$(now)
  start "$config" "$ADMIN" "$dir/gateway.log"
  gw=$started_pid startup=$(since "$t0")
  first_ms=$(curl -s -o /dev/null -w '%{time_total}' -H "Cookie: portcullis_session=$(head -1 "$tokens")" \
    "http://127.0.0.1:$GATEWAY/scale" | awk '{ printf "%.1f", $1 * 1000 }')
  echo "scale: N=$n: passes" >&2
  # Three of each, medians reported: the machine is shared with the client and nginx.
  cold=() warm=()
  for first in 1 10001 20001; do cold+=("$(pass "$GATEWAY" "$first" $((first + 9999)))"); done
  for _ in 1 2 3; do warm+=("$(pass "$GATEWAY" 1 10000)"); done
  rss_10k=$(rss_mb "$gw")
  all=$(pass "$GATEWAY" 0 $((n - 1)))
  rss_all=$(rss_mb "$gw")

  echo "scale: N=$n: audit" >&2
  audit_user=$(timed "$BIN" audit --user "USER4242@example.com" --since 1d -c "$config")
  audit_since=$(timed "$BIN" audit --since 1h -c "$config")
  audit_ip=$(timed "$BIN" audit --ip 10.1.2.0/24 -c "$config")

  # The storm: users 0..4999 leave while sessions of others keep coming (a pass over a quarter
  # of the store, all cached: it outlasts the storm).
  echo "scale: N=$n: dismissal storm" >&2
  pass "$GATEWAY" $((n / 2)) $((n / 2 + n / 4)) >"$dir/others" &
  load_pid=$!
  read -r dismiss_s refused_after < <(dismiss_storm "$config" "$GATEWAY")
  wait "$load_pid"
  others=$(cat "$dir/others")

  echo "scale: N=$n: reload with 100 000 ranges" >&2
  { echo "network:"; allow_ranges; } >>"$config"
  reloads=$(metric "$ADMIN" 'portcullis_config_reloads_total{result="ok"}')
  t0=$(now)
  kill -HUP "$gw"
  until [ "$(metric "$ADMIN" 'portcullis_config_reloads_total{result="ok"}')" != "$reloads" ]; do
    [ "$(since "$t0" | cut -d. -f1)" -lt 60 ] || { echo "scale: the reload did not happen" >&2; exit 1; }
    sleep 0.01
  done
  reload_s=$(since "$t0")
  allowed=$(pass "$GATEWAY" $((n / 2)) $((n / 2 + 9999)))
  stop "$gw"

  report+=("$(printf '| %s | %s MB | %s s | %s ms | %s / %s ms | %s / %s ms | %s / %s MB | %s / %s / %s s | %s s, others %s / %s ms, all refused after %s s | %s s, then %s / %s ms | %s |' \
    "$n" "$size_mb" "$startup" "$first_ms" \
    "$(median rps "${cold[@]}")" "$(median p99_ms "${cold[@]}")" \
    "$(median rps "${warm[@]}")" "$(median p99_ms "${warm[@]}")" \
    "$rss_10k" "$rss_all" "$audit_user" "$audit_since" "$audit_ip" \
    "$dismiss_s" "$(field rps "$others")" "$(field p99_ms "$others")" "$refused_after" \
    "$reload_s" "$(field rps "$allowed")" "$(field p99_ms "$allowed")" \
    "$(wrongs "${cold[@]}" "${warm[@]}" "$all" "$others" "$allowed")")")
  rm -rf "$dir"
done

# Two gateways on PostgreSQL.
n=$PG_SIZE dir=$work/postgres tokens=$work/postgres/tokens
db=portcullis_scale_$$
PGOPTIONS=--client-min-messages=warning psql -q "$POSTGRES" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
pg_url=${POSTGRES%/*}/$db
drop_db() { psql -q "$POSTGRES" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'cleanup; drop_db' EXIT
mkdir -p "$dir"
for g in 1 2; do
  port=$((g == 1 ? GATEWAY : GATEWAY2)) admin=$((g == 1 ? ADMIN : ADMIN2))
  cat >"$dir/gateway$g.yaml" <<EOF
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
upstream: http://127.0.0.1:$UPSTREAM
store:
  kind: postgres
  url: $pg_url
session:
  idle_timeout: 12h
throttle:
  ip_attempts_per_minute: 0
  password_checks_per_second: 0
audit:
  retention: 0
EOF
done
"$BIN" audit --since 1s -c "$dir/gateway1.yaml" >/dev/null
echo "scale: PostgreSQL N=$n: filling the store" >&2
python3 benches/scale_fill.py "$pg_url" "$n" "$n" $((n / 10)) $((n * 10)) "$hash" "$tokens" >&2
start "$dir/gateway1.yaml" "$ADMIN" "$dir/gateway1.log"
gw1=$started_pid
start "$dir/gateway2.yaml" "$ADMIN2" "$dir/gateway2.log"
gw2=$started_pid
# Both caches warm with the sessions 10 000..19 999.
pass "$GATEWAY" 10000 19999 >/dev/null
pass "$GATEWAY2" 10000 19999 >/dev/null

# Store reads per authenticated request, two ways: the gateways' own count of session cache
# misses (each one a read of the session and its user), and the table reads PostgreSQL counts
# in the database (sequential and index scans, background work included). A backend reports
# its statistics within PGSTAT_IDLE_INTERVAL (10 s) of going idle: settle 11 s before each.
misses() {
  echo $(($(metric "$ADMIN" 'portcullis_session_cache_total{result="miss"}') + \
    $(metric "$ADMIN2" 'portcullis_session_cache_total{result="miss"}')))
}
store_reads() {
  sleep 11
  psql -Atq "$pg_url" -c "SELECT pg_stat_clear_snapshot()" \
    -c "SELECT sum(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_user_tables" | tail -1
}
q0=$(store_reads) m0=$(misses)
warm1=$(pass "$GATEWAY" 10000 19999)
warm2=$(pass "$GATEWAY2" 10000 19999)
q1=$(store_reads) m1=$(misses)
# The same over 20 000 requests of sessions neither gateway has seen: what a cold read costs.
pass "$GATEWAY" 20000 29999 >/dev/null
pass "$GATEWAY2" 30000 39999 >/dev/null
q2=$(store_reads) m2=$(misses)
ratio() { awk -v d="$1" 'BEGIN { printf "%.4f", d / 20000 }'; }

# A login storm against both (users from n/2 on, the right password, 4 connections each,
# no per-address or per-gateway rate limit: only the hashing pool limits) while each serves
# its warm sessions.
# login_storm PORT FIRST OUT: 20 s of sign-ins of users FIRST, FIRST+1, … (4 connections).
login_storm() {
  cat >"$work/logins-$1.lua" <<EOF
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  i = i + 1
  return wrk.format(nil, nil, nil,
    '{"login":"user' .. ($2 + i) .. '@example.com","password":"scale-password-1"}')
end
EOF
  wrk -t1 -c4 -d20s -s "$work/logins-$1.lua" "http://127.0.0.1:$1/_portcullis/api/login" >"$3"
}
login_storm "$GATEWAY" $((n / 2)) "$work/logins1" &
storm1=$!
login_storm "$GATEWAY2" $((n / 2 + n / 4)) "$work/logins2" &
storm2=$!
sleep 2
during1=$(pass "$GATEWAY" 10000 19999)
during2=$(pass "$GATEWAY2" 10000 19999)
wait "$storm1" "$storm2"
# Signed in per second (answers 200), and how many were refused (the hashing queue full).
logins() {
  awk '/requests in/ { n = $1; s = $4 + 0 } /Non-2xx/ { bad = $5 }
    END { printf "%.0f (%d refused)", (n - bad) / s, bad }' "$1"
}
logins1=$(logins "$work/logins1") logins2=$(logins "$work/logins2")

echo "scale: PostgreSQL N=$n: dismissal storm" >&2
read -r pg_dismiss_s pg_refused_after < <(dismiss_storm "$dir/gateway1.yaml" "$GATEWAY" "$GATEWAY2")
pg_rss1=$(rss_mb "$gw1") pg_rss2=$(rss_mb "$gw2")
stop "$gw1"
stop "$gw2"

echo
echo "SQLite, one gateway ($CONNECTIONS connections, one client thread; req/s / p99):"
echo
echo "| N (users = sessions) | store | start-up | first request | cold 10k (median of 3) | warm 10k (median of 3) | RSS 10k / N cached | audit user / since 1h / ip /24 | dismiss 5 000 | reload 100 000 ranges, then warm 10k | failed |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${report[@]}"
echo
echo "PostgreSQL, two gateways, N = $n:"
echo
echo "| | gateway 1 | gateway 2 |"
echo "|---|---|---|"
echo "| warm 10k: req/s / p99 | $(field rps "$warm1") / $(field p99_ms "$warm1") ms | $(field rps "$warm2") / $(field p99_ms "$warm2") ms |"
echo "| session reads from the store per request, warm (both gateways' cache misses) | $(ratio $((m1 - m0))) ($((m1 - m0)) in 20 000) | |"
echo "| PostgreSQL table reads per request, warm (background work included) | $(ratio $((q1 - q0))) ($((q1 - q0)) in 20 000) | |"
echo "| the same two, cold (sessions not yet cached) | $(ratio $((m2 - m1))) / $(ratio $((q2 - q1))) | |"
echo "| warm 10k during a login storm: req/s / p99 | $(field rps "$during1") / $(field p99_ms "$during1") ms | $(field rps "$during2") / $(field p99_ms "$during2") ms |"
echo "| sign-ins/s of the storm (4 connections each) | $logins1 | $logins2 |"
echo "| dismiss 5 000 (one command) / all refused by both after | $pg_dismiss_s s / $pg_refused_after s | |"
echo "| RSS | $pg_rss1 MB | $pg_rss2 MB |"
echo "| failed requests | $(wrongs "$warm1" "$during1") | $(wrongs "$warm2" "$during2") |"
