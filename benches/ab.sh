#!/usr/bin/env bash
# Two gateway binaries, A and B, measured alternately (A B A B ...) with a session and on a
# public path. The gateway is pinned to one core and nginx and wrk to the other (taskset), so
# that each binary's own cost sets its requests/s rather than how the scheduler shares two
# cores: a steadier A/B than benches/load.sh, which measures the real, shared case.
# usage: benches/ab.sh BIN_A BIN_B [ROUNDS]   (AB_SECONDS per measurement, default 5)
# Needs: wrk, nginx, curl, taskset, two cores. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { echo "usage: benches/ab.sh BIN_A BIN_B [ROUNDS]" >&2; exit 2; }
A=$1 B=$2 ROUNDS=${3:-3}
DURATION=${AB_SECONDS:-5}
BASE=${AB_PORT:-18870}
UPSTREAM=$((BASE + 1))
for bin in "$A" "$B"; do [ -x "$bin" ] || { echo "ab: $bin is not an executable" >&2; exit 2; }; done
. benches/common.sh
require ab wrk nginx curl taskset

NGINX_WRAP="taskset -c 0" start_nginx 1 "$(upstream_server)"

# rps URL [HEADER]: requests/s of wrk, on core 0.
rps() { taskset -c 0 wrk -t1 -c32 -d"${DURATION}s" "$@" | awk '/^Requests\/sec/ {print $2}'; }

printf '| round | binary | with a session, requests/s | public path, requests/s |\n|---|---|---:|---:|\n'
port=$((BASE + 2))
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    BIN=$A
    [ "$side" = B ] && BIN=$B
    gateway="$side$round"
    gateway_config "$gateway" "$port" "$((port + 1))"
    RUST_LOG=warn taskset -c 1 "$BIN" serve -c "$work/$gateway/portcullis.yaml" 2>>"$work/portcullis.log" &
    pid=$!
    pids+=("$pid")
    wait_ready "$((port + 1))"
    cookie=$(sign_in "$port")
    session=$(rps -H "Cookie: $cookie" "http://127.0.0.1:$port/crm/")
    public=$(rps "http://127.0.0.1:$port/static/app.css")
    printf '| %s | %s | %.0f | %.0f |\n' "$round" "$side" "$session" "$public"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    port=$((port + 2))
  done
done
echo
echo "A: $A"
echo "B: $B"
