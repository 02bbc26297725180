//! The `portcullis` binary: everything is in the library; this only hands over the exit code.

/// mimalloc: measured faster than the system allocator on the proxy path (benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(portcullis::cli::run());
}
