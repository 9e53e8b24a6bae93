//! `kv-tui` for the whole-system tests: the same one-line `main` as
//! client/src/bin/kv-tui.rs, built by this package so `cargo test -p kv-tests` never runs
//! a stale terminal client.

fn main() -> std::process::ExitCode {
    kv_client::tui::cli::main()
}
