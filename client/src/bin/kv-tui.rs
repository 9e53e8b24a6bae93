//! `kv-tui`: the terminal voice client. Everything lives in `kv_client::tui::cli`.

fn main() -> std::process::ExitCode {
    kv_client::tui::cli::main()
}
