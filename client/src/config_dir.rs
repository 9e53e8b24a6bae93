//! Where the client keeps its files (identities, keys, known servers, the TUI's settings
//! and log): the one place that decides it, for `kv` and `kv-tui` alike.

use std::path::PathBuf;

/// Environment variable that overrides the config directory (tests isolate themselves
/// with it). Empty counts as unset.
pub const CONFIG_DIR_ENV: &str = "KV_CONFIG_DIR";

/// `$KV_CONFIG_DIR` when set and not empty, else the platform's config dir for "kv"
/// (`~/.config/kv` on Linux); `None` without either (no home directory).
pub fn config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "kv").map(|d| d.config_dir().to_path_buf())
}
