//! `kv` for the whole-system tests: the same one-line `main` as client/src/bin/kv.rs, built
//! by this package so `cargo test -p kv-tests` never runs a stale headless client.

fn main() -> std::process::ExitCode {
    kv_client::cli::main()
}
