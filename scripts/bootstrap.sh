#!/usr/bin/env bash
# Installs what building and testing Portcullis needs and is missing on a fresh Debian machine:
# cmake (Pingora builds C code with it), and for the test suite Chromium and the Playwright
# driver for it, tesseract (a test checks that off-the-shelf OCR cannot read the CAPTCHA) and
# promtool, from Debian's `prometheus` package (tests check the metrics and the alert rules),
# PostgreSQL's client and server programs (cluster tests) and oathtool (the two-step
# verification tests compute TOTP codes with it, independently of the gateway's own code) and
# Debian's aiosmtpd (the password recovery tests run a real SMTP server with Debian's Python),
# and systemd-analyze (the package test checks the unit with it).
# With --bench: wrk and nginx for the load tests (benches/load.sh, ab.sh, scale.sh), valgrind for
# benches/instructions.sh, taskset (util-linux) for ab.sh and psql for scale.sh (which uses the
# machine's PostgreSQL server, as the tests do).
# Safe to run again: it only installs what is not there.
set -euo pipefail
need_tests=${1:-}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root to install $*" >&2; exit 1; fi
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(gcc)
if [ "$need_tests" = "--tests" ]; then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs npm)
  command -v tesseract >/dev/null || missing+=(tesseract-ocr)
  command -v oathtool >/dev/null || missing+=(oathtool)
  command -v testssl >/dev/null || missing+=(testssl.sh)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
  # The cluster tests: psql, and initdb/pg_ctl for a private server they stop and start.
  command -v psql >/dev/null || missing+=(postgresql-client)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
fi
if [ "$need_tests" = "--bench" ]; then
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || missing+=(nginx)
  command -v valgrind >/dev/null || missing+=(valgrind)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v psql >/dev/null || missing+=(postgresql-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool alone: installing the `prometheus` package would also start a Prometheus server
# (on 9090, the gateway's default admin port), so take the tool out of the package instead.
if [ "$need_tests" = "--tests" ] && ! command -v promtool >/dev/null; then
  echo "bootstrap: installing promtool (from Debian's prometheus package)"
  unpack=$(mktemp -d)
  as_root apt-get update -qq
  (cd "$unpack" && apt-get -o APT::Sandbox::User=root download -qq prometheus >/dev/null && dpkg-deb -x prometheus_*.deb root)
  as_root install -m 0755 "$unpack/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$unpack"
fi

if [ "$need_tests" = "--tests" ] && [ ! -d tests/e2e/node_modules/playwright-core ]; then
  echo "bootstrap: installing the browser driver (playwright-core, no browser download)"
  (cd tests/e2e && npm ci --no-audit --no-fund --silent)
fi
