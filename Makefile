# The two quick-start commands: `make demo` and `make test`. Both install what is missing.
.PHONY: demo test bootstrap bench

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

bench:
	./scripts/bootstrap.sh --bench
	cargo build --release
	./benches/load.sh
	cargo bench --bench session_memory
	cargo bench --bench hot_path
	cargo bench --bench allowlist
	cargo bench --bench captcha
	cargo bench --bench login_storm
