# Shared by the load scripts in benches/ (sourced, not run). Every script uses only 127.0.0.1
# and stops everything it started when it exits.

# require NAME TOOL...: exits 2 naming the first missing tool.
require() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: $tool is missing (scripts/bootstrap.sh --bench)" >&2; exit 2; }
  done
}

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_nginx WORKERS SERVERS: one nginx with the given server blocks; `$upstream_server`
# holds the portal's (a small fixed page, as a portal's cheapest response) for PORT $UPSTREAM.
start_nginx() {
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<EOF
worker_processes $1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
$2
}
EOF
  ${NGINX_WRAP:-} nginx -c "$work/nginx.conf" -p "$work/nginx"
}
upstream_server() {
  echo "  server {
    listen 127.0.0.1:$UPSTREAM;
    location / { default_type text/html; return 200 \"<html><body>portal page</body></html>\\n\"; }
  }"
}

# gateway_config NAME GATEWAY ADMIN [EXTRA_YAML]: a config in $work/NAME/ in front of $UPSTREAM,
# with the user bench@example.com (password load-test-password) added.
gateway_config() {
  mkdir -p "$work/$1"
  cat >"$work/$1/portcullis.yaml" <<EOF
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
upstream: http://127.0.0.1:$UPSTREAM
store:
  path: data/portcullis.db
public_paths: [/static/]
${4:-}
EOF
  echo 'load-test-password' | "$BIN" user add bench@example.com --email bench@example.com \
    --password-stdin -c "$work/$1/portcullis.yaml" >/dev/null
}

# wait_ready ADMIN: until the gateway answers /healthz (a minute at most, for valgrind).
wait_ready() {
  local _
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "${0##*/}: the gateway did not start" >&2
  exit 1
}

# sign_in GATEWAY: prints the session cookie (name=value) of bench@example.com.
sign_in() {
  local cookie
  cookie=$(curl -fs -D - -o /dev/null -H 'Content-Type: application/json' \
    -d '{"login":"bench@example.com","password":"load-test-password"}' \
    "http://127.0.0.1:$1/_portcullis/api/login" | tr -d '\r' |
    sed -n 's/^[Ss]et-[Cc]ookie: \(portcullis_session=[^;]*\).*/\1/p')
  [ -n "$cookie" ] || { echo "${0##*/}: could not sign in" >&2; exit 1; }
  echo "$cookie"
}
