#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable for the same binary and
# inputs whatever else the machine is doing, unlike requests/s on a shared 2-core machine. Used
# to find and check per-request costs (see benches/README.md).
# The release gateway runs under callgrind in front of nginx; a keep-alive client sends
# $COUNT requests per scenario, and callgrind's counters are dumped between scenarios. The bare
# Pingora proxy of load.sh (examples/bare_proxy.rs) is counted the same way, as the floor.
# Needs: valgrind, nginx, curl, python3 and release builds. Only 127.0.0.1 is used.
# INSTR_KEEP=DIR keeps the profiles (DIR/session.txt, public.txt, bare.txt: inclusive counts per
# function; *.callgrind: the raw dumps, for `callgrind_annotate --tree=calling`) for finding
# where the instructions go.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${INSTR_REQUESTS:-2000}
BIN=${PORTCULLIS_BIN:-target/release/portcullis}
BARE=${BARE_BIN:-target/release/examples/bare_proxy}
BASE=${INSTR_PORT:-18850}
UPSTREAM=$((BASE + 1)) GATEWAY=$((BASE + 2)) ADMIN=$((BASE + 3)) BARE_PROXY=$((BASE + 4))

for b in "$BIN" "$BARE"; do
  [ -x "$b" ] || { echo "instructions: build first: cargo build --release --bin portcullis --example bare_proxy" >&2; exit 2; }
done
. benches/common.sh
require instructions valgrind callgrind_control callgrind_annotate nginx curl python3

start_nginx 1 "$(upstream_server)"
gateway_config gateway "$GATEWAY" "$ADMIN"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$BIN" serve -c "$work/gateway/portcullis.yaml" 2>"$work/portcullis.log" &
gateway=$!
pids+=("$gateway")
valgrind --tool=callgrind --callgrind-out-file="$work/bare.out" \
  "$BARE" "127.0.0.1:$BARE_PROXY" "127.0.0.1:$UPSTREAM" 2>"$work/bare.log" &
bare=$!
pids+=("$bare")
wait_ready "$ADMIN"
cookie=$(sign_in "$GATEWAY")

for _ in $(seq 600); do
  curl -fs -o /dev/null "http://127.0.0.1:$BARE_PROXY/crm/" && break
  sleep 0.1
done

# send PORT N PATH [COOKIE]: N requests on one keep-alive connection, each checked to answer 200.
send() {
  python3 - "$@" <<'EOF'
import http.client, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
headers = {"Cookie": sys.argv[4]} if len(sys.argv) > 4 else {}
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for _ in range(n):
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"instructions: {path} answered {response.status}")
EOF
}

# Warm up (connections, caches, lazy statics), then count each scenario from zero.
send "$GATEWAY" 200 /crm/ "$cookie"
send "$GATEWAY" 200 /static/app.css
send "$BARE_PROXY" 200 /crm/
callgrind_control --zero "$gateway" >/dev/null
callgrind_control --zero "$bare" >/dev/null
send "$GATEWAY" "$COUNT" /crm/ "$cookie"
callgrind_control --dump=session "$gateway" >/dev/null
send "$GATEWAY" "$COUNT" /static/app.css
callgrind_control --dump=public "$gateway" >/dev/null
send "$BARE_PROXY" "$COUNT" /crm/
callgrind_control --dump=bare "$bare" >/dev/null

# inclusive FILE PATTERN: the inclusive instruction count of the first function matching.
inclusive() { awk -v p="$2" 'index($0, p) { gsub(",", "", $1); print $1; exit }' "$1"; }
per() { awk -v n="${1:-0}" -v c="$COUNT" 'BEGIN { printf "%.0f", n / c }'; }

echo
echo "Instructions per request, $COUNT requests per scenario, one keep-alive connection:"
echo
printf '| scenario | all threads | request_filter | upstream_request_filter |\n|---|---:|---:|---:|\n'
for scenario in session public bare; do
  dump=$(grep -l "^desc: Trigger: dump $scenario\$" "$work"/callgrind.out.* "$work"/bare.out.*)
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null >"$work/$scenario.txt"
  total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$work/$scenario.txt")
  filter=$(inclusive "$work/$scenario.txt" 'ProxyHttp>::request_filter::{{closure}}')
  upstream=$(inclusive "$work/$scenario.txt" 'ProxyHttp>::upstream_request_filter::{{closure}}')
  printf '| %s | %s | %s | %s |\n' "$scenario" "$(per "$total")" "$(per "$filter")" "$(per "$upstream")"
done
if [ -n "${INSTR_KEEP:-}" ]; then
  mkdir -p "$INSTR_KEEP"
  cp "$work"/session.txt "$work"/public.txt "$work"/bare.txt "$INSTR_KEEP"/
  for scenario in session public bare; do
    dump=$(grep -l "^desc: Trigger: dump $scenario\$" "$work"/callgrind.out.* "$work"/bare.out.*)
    cp "$dump" "$INSTR_KEEP/$scenario.callgrind"
    callgrind_annotate "$dump" 2>/dev/null >"$INSTR_KEEP/$scenario.self.txt"
  done
fi
