//! `kv-server` for the whole-system tests: the same one-line `main` as server/src/main.rs,
//! built by this package so `cargo test -p kv-tests` never runs a stale server binary.

fn main() -> std::process::ExitCode {
    kv_server::cli::main()
}
