#!/usr/bin/env bash
# The gateway with a big SQLite store (benches/README.md, Scale): for each size N (users and
# live sessions N, remember-me tokens N/10, events 10·N; SCALE_SIZES, default "100000 1000000",
# so that each figure shows beside the one for a tenth of the work), one run measures:
#   start-up (to /healthz) and the first authenticated request; one pass over 10 000 distinct
#   sessions right after the start (cold: each a store read) and again (warm), requests/s and
#   p99; resident memory with 10 000 and with N sessions cached; `audit` by user, by time and by
#   address block; and a revocation storm: `user dismiss --stdin` of 5 000 users while other
#   sessions keep coming, how long the command takes, the p99 of the others meanwhile, and how
#   long until the gateway refuses every dismissed session.
# Only 127.0.0.1; everything started is stopped at the end. Needs a release binary
# (`make scale` builds it), wrk, nginx and python3. Not in `make test`: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PORTCULLIS_BIN:-target/release/portcullis}
SIZES=${SCALE_SIZES:-"100000 1000000"}
BASE=${SCALE_PORT:-18900}
UPSTREAM=$((BASE + 1)) GATEWAY=$((BASE + 2)) ADMIN=$((BASE + 3))
CONNECTIONS=${SCALE_CONNECTIONS:-32}
# shellcheck source=benches/common.sh
source benches/common.sh
require scale wrk nginx curl python3
[ -x "$BIN" ] || { echo "scale: build first: cargo build --release --bin portcullis" >&2; exit 2; }
start_nginx 1 "$(upstream_server)"

# pass FIRST LAST [WANT]: one wrk pass over those session cookies; prints its PASS line.
pass() {
  wrk -t1 -c"$CONNECTIONS" -d120s --latency -s benches/scale_pass.lua \
    "http://127.0.0.1:$GATEWAY/scale" -- "$tokens" "$1" "$2" "${3:-200}" | grep '^PASS'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$gateway_pid/status"; }
seconds() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }
timed() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; seconds "$t0"; }

hash=$(echo 'scale-password-1' | "$BIN" hash-password)
report=()
for n in $SIZES; do
  dir=$work/size-$n tokens=$work/size-$n/tokens
  mkdir -p "$dir"
  cat >"$dir/portcullis.yaml" <<EOF
listen: 127.0.0.1:$GATEWAY
admin_listen: 127.0.0.1:$ADMIN
upstream: http://127.0.0.1:$UPSTREAM
store:
  path: data/portcullis.db
session:
  idle_timeout: 12h
audit:
  retention: 0
EOF
  "$BIN" audit --since 1s -c "$dir/portcullis.yaml" >/dev/null # makes the schema
  python3 benches/scale_fill.py "$dir/data/portcullis.db" "$n" "$n" $((n / 10)) $((n * 10)) \
    "$hash" "$tokens"
  size_mb=$(du -m "$dir/data/portcullis.db" | cut -f1)

  t0=$(date +%s.%N)
  RUST_LOG=warn "$BIN" serve -c "$dir/portcullis.yaml" 2>"$dir/gateway.log" &
  gateway_pid=$!
  pids+=("$gateway_pid")
  wait_ready "$ADMIN"
  startup=$(seconds "$t0")
  first_ms=$(curl -s -o /dev/null -w '%{time_total}' -H "Cookie: portcullis_session=$(head -1 "$tokens")" \
    "http://127.0.0.1:$GATEWAY/scale" | awk '{ printf "%.1f", $1 * 1000 }')
  cold=$(pass 1 10000)
  warm=$(pass 1 10000)
  rss_10k=$(rss_mb)
  all=$(pass 0 $((n - 1)))
  rss_all=$(rss_mb)

  audit_user=$(timed "$BIN" audit --user "USER4242@example.com" -c "$dir/portcullis.yaml")
  audit_since=$(timed "$BIN" audit --since 1h -c "$dir/portcullis.yaml")
  audit_ip=$(timed "$BIN" audit --ip 10.1.2.0/24 -c "$dir/portcullis.yaml")

  # The storm: users 0..4999 leave while sessions of others keep coming.
  others_first=10000 others_last=$((10000 + n / 4 < n - 1 ? 10000 + n / 4 : n - 1))
  pass "$others_first" "$others_last" >"$dir/others" &
  load_pid=$!
  sleep 1
  t0=$(date +%s.%N)
  seq 0 4999 | sed 's/.*/user&@example.com/' | "$BIN" user dismiss --stdin -c "$dir/portcullis.yaml" >/dev/null
  dismiss_s=$(seconds "$t0")
  refused_after=""
  for _ in $(seq 100); do
    out=$(pass 0 4999 refused)
    if [ "$(field wrong "$out")" = 0 ]; then refused_after=$(seconds "$t0"); break; fi
    sleep 0.2
  done
  wait "$load_pid"
  others=$(cat "$dir/others")
  kill "$gateway_pid"
  wait "$gateway_pid" 2>/dev/null || true

  report+=("$(printf '| %s | %s MB | %s s | %s ms | %s / %s ms | %s / %s ms | %s / %s MB | %s / %s / %s s | %s s, others p99 %s ms, all refused after %s s | %s wrong |' \
    "$n" "$size_mb" "$startup" "$first_ms" \
    "$(field rps "$cold")" "$(field p99_ms "$cold")" "$(field rps "$warm")" "$(field p99_ms "$warm")" \
    "$rss_10k" "$rss_all" "$audit_user" "$audit_since" "$audit_ip" \
    "$dismiss_s" "$(field p99_ms "$others")" "${refused_after:-never}" \
    "$(( $(field wrong "$cold") + $(field wrong "$warm") + $(field wrong "$all") ))")")
  rm -rf "$dir"
done

echo
echo "| N (users = sessions) | store | start-up | first request | cold 10k: req/s / p99 | warm 10k: req/s / p99 | RSS 10k / N cached | audit user / since 1h / ip /24 | dismiss 5 000 | failed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${report[@]}"
