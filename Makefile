# The two quick-start commands: `make demo` and `make test`. Both install what is missing.
.PHONY: demo test bootstrap bench release deb scale

# The PostgreSQL tests use this server (this machine's, trust auth); each makes and drops a
# database of its own.
export PORTCULLIS_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/test

demo:
	./scripts/bootstrap.sh
	cargo run --release -- demo

test:
	./scripts/bootstrap.sh --tests
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test

# The release binary with profile-guided optimization: target/pgo/release/portcullis.
release:
	./scripts/bootstrap.sh --bench
	./scripts/pgo-build.sh

# The Debian package target/debian/portcullis_<version>_<arch>.deb (deploy/README.md,
# Installing the package), from the plain release binary.
deb:
	./scripts/bootstrap.sh
	cargo build --release --bin portcullis
	./scripts/deb.sh

bench: release
	cargo build --release --bin portcullis --example bare_proxy
	PORTCULLIS_BIN=target/pgo/release/portcullis BARE_BIN=target/pgo/release/examples/bare_proxy \
	  ./benches/load.sh
	./benches/ab.sh target/release/portcullis target/pgo/release/portcullis
	./benches/instructions.sh
	PORTCULLIS_BIN=target/pgo/release/portcullis BARE_BIN=target/pgo/release/examples/bare_proxy \
	  ./benches/instructions.sh
	cargo bench --bench session_memory
	cargo bench --bench hot_path
	cargo bench --bench allowlist
	cargo bench --bench captcha
	cargo bench --bench login_storm

# The gateway with a big store (benches/README.md, Scale): a million users and sessions on
# SQLite, a tenth of that beside it, and two gateways on the machine's PostgreSQL. Minutes.
scale:
	./scripts/bootstrap.sh --bench
	cargo build --release --bin portcullis --example scale_client
	./benches/scale.sh
