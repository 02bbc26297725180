//! The `portcullis` binary: everything is in the library; this only hands over the exit code.

fn main() {
    std::process::exit(portcullis::cli::run());
}
