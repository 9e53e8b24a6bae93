//! `kv`: the headless KV client. Everything lives in the library (`kv_client::cli`), so the
//! whole-system tests build a binary that is this one, line for line.

fn main() -> std::process::ExitCode {
    kv_client::cli::main()
}
