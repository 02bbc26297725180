#!/usr/bin/env bash
# The release binary with profile-guided optimization (about +14% requests/s with a session,
# measured in benches/README.md): an instrumented build runs one short round of
# benches/load.sh, LLVM merges what it recorded, and a second release build uses it.
# Result: target/pgo/release/portcullis, and examples/bare_proxy beside it, built the same way
# for load.sh's bare-Pingora row (trained on the same run, which measures it too). Needs what
# `make bench` needs (wrk, nginx) and rustup's llvm-tools (installed when missing). Takes two
# full release builds.
set -euo pipefail
cd "$(dirname "$0")/.."

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo: installing llvm-tools (for llvm-profdata)" >&2
  rustup component add llvm-tools
fi

profiles="$PWD/target/pgo-profiles"
build=(cargo build --release --bin portcullis --example bare_proxy)
RUSTFLAGS="-Cprofile-generate=$profiles" "${build[@]}" --target-dir target/pgo-gen
# Only what the load below records: not what build scripts wrote while building.
rm -rf "$profiles"
mkdir -p "$profiles"
echo "pgo: training on benches/load.sh (one round)" >&2
LLVM_PROFILE_FILE="$profiles/%p-%m.profraw" PORTCULLIS_BIN=target/pgo-gen/release/portcullis \
  BARE_BIN=target/pgo-gen/release/examples/bare_proxy LOAD_SECONDS=3 LOAD_ROUNDS=1 ./benches/load.sh >/dev/null
"$profdata" merge -o "$profiles/merged.profdata" "$profiles"/*.profraw
RUSTFLAGS="-Cprofile-use=$profiles/merged.profdata" "${build[@]}" --target-dir target/pgo
echo "pgo: built target/pgo/release/portcullis" >&2
