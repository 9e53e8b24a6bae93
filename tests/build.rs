//! Finds the tools some whole-system tests need, so those tests are `#[ignore]`d with a
//! reason when a tool is missing, instead of passing without running (`make test` installs
//! them all, so CI always runs them):
//!
//! - `kv_no_tmux`: tmux (the real-terminal tests);
//! - `kv_no_pulse`: PulseAudio's `pulseaudio`, `pactl`, `paplay`, `parec` (the device tests);
//! - `kv_no_systemd_analyze`: `systemd-analyze` (the check of the systemd unit).

use std::path::PathBuf;

/// Where `tool` is on the PATH, if anywhere.
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kv_no_tmux)");
    println!("cargo::rustc-check-cfg=cfg(kv_no_pulse)");
    println!("cargo::rustc-check-cfg=cfg(kv_no_systemd_analyze)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    let found = |tools: &[&str], cfg: &str| {
        let paths: Vec<PathBuf> = tools.iter().filter_map(|t| which(t)).collect();
        for p in &paths {
            // Installed or removed later: look again.
            println!("cargo::rerun-if-changed={}", p.display());
        }
        if paths.len() < tools.len() {
            println!("cargo::rustc-cfg={cfg}");
        }
    };
    found(&["tmux"], "kv_no_tmux");
    found(&["pulseaudio", "pactl", "paplay", "parec"], "kv_no_pulse");
    found(&["systemd-analyze"], "kv_no_systemd_analyze");
}
