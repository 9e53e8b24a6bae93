//! `kv-server`: the KV relay server. Everything lives in the library (`kv_server::cli`), so
//! the whole-system tests can build a binary that is this one, line for line.

fn main() -> std::process::ExitCode {
    kv_server::cli::main()
}
