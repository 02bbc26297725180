# The two quick-start commands: `make demo` and `make test`. Both install what is missing.
.PHONY: demo test bootstrap bench

demo:
	./scripts/bootstrap.sh
	cargo run --release -- demo

test:
	./scripts/bootstrap.sh --tests
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test

bench:
	./scripts/bootstrap.sh
	cargo bench --bench hot_path
	cargo bench --bench allowlist
	cargo bench --bench captcha
	cargo bench --bench login_storm
