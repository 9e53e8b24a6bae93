//! Where the client keeps its files (identities, keys, known servers, the TUI's settings
//! and log), for `kv` and `kv-tui` alike, and how the private ones are read and written
//! (0700 directory, 0600 files written atomically, size-checked `SERVER VALUE` lines).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

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

/// Creates `dir` (and parents) if missing and makes it 0700. A shared directory (sticky
/// bit, like `/tmp`) is refused rather than closed to everyone else.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.permissions().mode() & 0o1000 != 0 {
            return Err(std::io::Error::new(
                ErrorKind::PermissionDenied,
                "is a shared directory (sticky bit); use a directory of its own",
            ));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// What [`read_server_lines`] found wrong.
#[derive(Debug)]
pub(crate) enum LinesError {
    /// The file could not be read.
    Io(std::io::Error),
    /// Larger than the limit: not ours.
    TooLarge,
    /// This line (1-based) is not `SERVER VALUE`, or its value does not parse.
    Malformed(usize),
}

/// Reads a small config file of `SERVER VALUE` lines (blank lines and `#` comments
/// skipped) into a map, parsing each value with `parse`. A missing file is an empty map.
/// Shared by the identity store and the pinned server keys.
pub(crate) fn read_server_lines<T>(
    path: &Path,
    max_len: u64,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<BTreeMap<String, T>, LinesError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max_len => return Err(LinesError::TooLarge),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(LinesError::Io(e)),
    }
    let text = std::fs::read_to_string(path).map_err(LinesError::Io)?;
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (server, value) = line
            .split_once(char::is_whitespace)
            .and_then(|(s, v)| Some((s.to_string(), parse(v.trim())?)))
            .ok_or(LinesError::Malformed(i + 1))?;
        map.insert(server, value);
    }
    Ok(map)
}

/// Writes `dir/name` with mode 0600 through a temporary file and a rename (a crash never
/// leaves a half-written file), creating `dir` 0700.
pub fn private_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    private_dir(dir)?;
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}
