//! Remembers the client's uid per server, so `kv join` works without `--uid`.
//!
//! The store is one small text file, `identities`, in the config directory (the platform's
//! one from `directories`, or `$KV_CONFIG_DIR` so tests can isolate themselves). Each line
//! is `SERVER UID`. The first use against a server registers a new user and writes it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use kv_proto::Perms;
use thiserror::Error;

use crate::control::{ControlClient, ControlError};

/// Environment variable that overrides the config directory.
pub const CONFIG_DIR_ENV: &str = "KV_CONFIG_DIR";
const FILE_NAME: &str = "identities";
/// A store larger than this is not ours; refuse rather than read it into memory.
const MAX_FILE_LEN: u64 = 1 << 20;

/// Why the identity could not be loaded or stored.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// No config directory: no `$KV_CONFIG_DIR` and no home directory.
    #[error("no config directory (set {CONFIG_DIR_ENV})")]
    NoConfigDir,
    /// Reading or writing the store failed.
    #[error("identity store {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line of the store is not `SERVER UID`.
    #[error("identity store {path} line {line} is malformed")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// Registering a new user failed.
    #[error("could not register: {0}")]
    Register(#[from] ControlError),
}

/// The uid-per-server file.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    /// Directory holding the file (created on first write).
    dir: PathBuf,
}

impl IdentityStore {
    /// The store in `$KV_CONFIG_DIR`, else in the platform's config dir for "kv".
    pub fn open_default() -> Result<Self, IdentityError> {
        if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::at(dir));
        }
        let dirs =
            directories::ProjectDirs::from("", "", "kv").ok_or(IdentityError::NoConfigDir)?;
        Ok(Self::at(dirs.config_dir()))
    }

    /// A store in `dir`.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Path of the file, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn load(&self) -> Result<BTreeMap<String, u64>, IdentityError> {
        let path = self.path();
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io(e)),
        };
        if meta.len() > MAX_FILE_LEN {
            return Err(IdentityError::Malformed {
                path: path.clone(),
                line: 0,
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(s, u)| Some((s.to_string(), u.trim().parse::<u64>().ok()?)));
            match parsed {
                Some((server, uid)) if kv_proto::is_valid_uid(uid) => {
                    map.insert(server, uid);
                }
                _ => {
                    return Err(IdentityError::Malformed {
                        path: path.clone(),
                        line: i + 1,
                    })
                }
            }
        }
        Ok(map)
    }

    /// The uid stored for `server`, if any.
    pub fn get(&self, server: &str) -> Result<Option<u64>, IdentityError> {
        Ok(self.load()?.get(server).copied())
    }

    /// Stores `uid` for `server`, replacing any earlier one. Written to a temporary file
    /// and renamed, so a crash never leaves a half-written store.
    pub fn set(&self, server: &str, uid: u64) -> Result<(), IdentityError> {
        let mut map = self.load()?;
        map.insert(server.to_string(), uid);
        let io = |path: &Path, source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut text = String::from("# kv identities: SERVER UID\n");
        for (s, u) in &map {
            text.push_str(&format!("{s} {u}\n"));
        }
        let tmp = self
            .dir
            .join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, self.path()).map_err(|e| io(&self.path(), e))
    }

    /// The stored uid for the client's server, registering (and storing) a new user on
    /// first use.
    pub fn uid_for(&self, client: &ControlClient) -> Result<u64, IdentityError> {
        if let Some(uid) = self.get(client.addr())? {
            return Ok(uid);
        }
        let uid = client.register(0, Perms::NONE)?;
        tracing::info!(server = client.addr(), uid, "registered new identity");
        self.set(client.addr(), uid)?;
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_per_server_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = IdentityStore::at(dir.path().join("nested"));
        assert_eq!(s.get("a:1").unwrap(), None);
        s.set("a:1", 42).unwrap();
        s.set("b:2", 43).unwrap();
        s.set("a:1", 44).unwrap();
        let again = IdentityStore::at(dir.path().join("nested"));
        assert_eq!(again.get("a:1").unwrap(), Some(44));
        assert_eq!(again.get("b:2").unwrap(), Some(43));
    }

    #[test]
    fn malformed_store_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "srv notanumber\n").unwrap();
        let err = IdentityStore::at(dir.path()).get("srv").unwrap_err();
        assert!(
            matches!(err, IdentityError::Malformed { line: 1, .. }),
            "{err}"
        );
    }
}
