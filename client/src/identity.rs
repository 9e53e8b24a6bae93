//! Remembers the client's identity per server, so `kv join` works without `--uid`.
//!
//! The store lives in the config directory (the platform's one from `directories`, or
//! `$KV_CONFIG_DIR` so tests can isolate themselves), which is kept 0700:
//!
//! - `identities` (0600): one `SERVER UID` line per server.
//! - `keys/UID.key` (0600): the Ed25519 key of that user, in the [`kv_proto::keyfile`]
//!   format (the same as the server's `admin.key`).
//!
//! The first use against a server makes a key and signs up with it (REGISTER_KEY), so the
//! user never does anything about keys; a server without signed requests (the seed's) gets
//! a plain REGISTER. An identity stored before keys existed claims a key (SET_KEY) where
//! the server still serves it unsigned, and signs up afresh where it does not.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use kv_proto::control::features;
use kv_proto::keyfile::Identity;
use kv_proto::{ErrorCode, Perms};
use thiserror::Error;

use crate::control::{ControlClient, ControlError};

pub use crate::config_dir::{private_dir, private_file, CONFIG_DIR_ENV};
use crate::config_dir::{read_server_lines, LinesError};
const FILE_NAME: &str = "identities";
/// Directory of the key files, inside the config directory.
const KEYS_DIR: &str = "keys";
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
    /// A key file is not an identity.
    #[error("identity file {path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Who the client acts as on a server: a uid, and its key when it has one.
#[derive(Debug, Clone)]
pub struct Acting {
    /// The user.
    pub uid: u64,
    /// Its key; `None` for a key-less user (a seed server, or `--uid` without a key file).
    pub key: Option<Identity>,
}

impl Acting {
    /// The user of an identity file (`--identity FILE`, e.g. the server's `admin.key`).
    pub fn from_file(path: &Path) -> Result<Self, IdentityError> {
        let id = read_identity_file(path)?;
        Ok(Self {
            uid: id.uid,
            key: Some(id),
        })
    }

    /// `control`, signing as this user when it has a key.
    pub fn client(&self, control: &ControlClient) -> ControlClient {
        match &self.key {
            Some(k) => control.clone().with_signer(k.clone()),
            None => control.clone(),
        }
    }
}

/// Reads an identity file (`kv --identity FILE`, the server's `admin.key`).
pub fn read_identity_file(path: &Path) -> Result<Identity, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Identity::parse(&text).map_err(|e| IdentityError::BadKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A fresh random key.
pub fn new_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The uid-per-server file and the keys.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    /// Directory holding the file (created on first write).
    dir: PathBuf,
}

impl IdentityStore {
    /// The store in `$KV_CONFIG_DIR`, else in the platform's config dir for "kv".
    pub fn open_default() -> Result<Self, IdentityError> {
        crate::config_dir::config_dir()
            .map(Self::at)
            .ok_or(IdentityError::NoConfigDir)
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
        let valid_uid = |u: &str| u.parse::<u64>().ok().filter(|&u| kv_proto::is_valid_uid(u));
        read_server_lines(&path, MAX_FILE_LEN, valid_uid).map_err(|e| match e {
            LinesError::Io(source) => IdentityError::Io { path, source },
            LinesError::TooLarge => IdentityError::Malformed { path, line: 0 },
            LinesError::Malformed(line) => IdentityError::Malformed { path, line },
        })
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
        let mut text = String::from("# kv identities: SERVER UID\n");
        for (s, u) in &map {
            text.push_str(&format!("{s} {u}\n"));
        }
        private_file(&self.dir, FILE_NAME, text.as_bytes()).map_err(|e| io(&self.path(), e))
    }

    /// The config directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key_path(&self, uid: u64) -> PathBuf {
        self.dir.join(KEYS_DIR).join(format!("{uid}.key"))
    }

    /// The key stored for `uid`, if any.
    pub fn key(&self, uid: u64) -> Result<Option<Identity>, IdentityError> {
        let path = self.key_path(uid);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdentityError::Io { path, source }),
        }
        let id = read_identity_file(&path)?;
        if id.uid != uid {
            return Err(IdentityError::BadKey {
                path,
                reason: format!("holds the key of user {}", id.uid),
            });
        }
        Ok(Some(id))
    }

    /// Stores a key (`keys/UID.key`, 0600).
    pub fn save_key(&self, id: &Identity) -> Result<(), IdentityError> {
        let dir = self.dir.join(KEYS_DIR);
        private_dir(&self.dir).map_err(|source| IdentityError::Io {
            path: self.dir.clone(),
            source,
        })?;
        private_file(&dir, &format!("{}.key", id.uid), id.to_text().as_bytes()).map_err(|source| {
            IdentityError::Io {
                path: self.key_path(id.uid),
                source,
            }
        })
    }

    /// `uid` with its stored key, if there is one (for `--uid`).
    pub fn acting(&self, uid: u64) -> Result<Acting, IdentityError> {
        Ok(Acting {
            uid,
            key: self.key(uid)?,
        })
    }

    /// The stored identity for the client's server: signing up (with a new key, stored
    /// first) on first use, and giving a key to an identity stored before keys.
    pub fn identity_for(&self, client: &ControlClient) -> Result<Acting, IdentityError> {
        let server = client.addr();
        let signed = server_signs(client)?;
        if let Some(uid) = self.get(server)? {
            if let Some(key) = self.key(uid)? {
                return Ok(Acting {
                    uid,
                    key: Some(key),
                });
            }
            if !signed {
                return Ok(Acting { uid, key: None });
            }
            // Stored before keys: claim one (a server with --allow-unsigned still takes
            // the unsigned SET_KEY of a key-less user), else start over.
            let key = Identity {
                uid,
                key: new_key(),
            };
            match client.set_key(uid, uid, key.key.verifying_key().to_bytes()) {
                Ok(()) => {
                    self.save_key(&key)?;
                    tracing::info!(server, uid, "gave the stored identity a key");
                    return Ok(Acting {
                        uid,
                        key: Some(key),
                    });
                }
                Err(e) if matches!(e.code(), Some(ErrorCode::Access | ErrorCode::Param)) => {
                    tracing::warn!(server, old = uid, error = %e, "stored identity unusable; signing up again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.sign_up(client, signed)
    }

    /// Signs up a new user for the client's server and stores it (replacing any earlier
    /// identity for that server).
    pub fn sign_up(&self, client: &ControlClient, signed: bool) -> Result<Acting, IdentityError> {
        let acting = if signed {
            let key = new_key();
            let uid = client.register_key(&key)?;
            let id = Identity { uid, key };
            self.save_key(&id)?;
            Acting { uid, key: Some(id) }
        } else {
            Acting {
                uid: client.register(0, Perms::NONE)?,
                key: None,
            }
        };
        tracing::info!(
            server = client.addr(),
            uid = acting.uid,
            "registered new identity"
        );
        self.set(client.addr(), acting.uid)?;
        Ok(acting)
    }

    /// The stored uid for the client's server, registering (and storing) a new user on
    /// first use. See [`IdentityStore::identity_for`] for the key.
    pub fn uid_for(&self, client: &ControlClient) -> Result<u64, IdentityError> {
        Ok(self.identity_for(client)?.uid)
    }
}

/// Signs up a new keyed user (REGISTER_KEY) without storing it: for the demo's and the
/// benchmark's own users.
pub fn keyed_user(client: &ControlClient) -> Result<Acting, ControlError> {
    let key = new_key();
    let uid = client.register_key(&key)?;
    Ok(Acting {
        uid,
        key: Some(Identity { uid, key }),
    })
}

/// True when the server takes signed requests (its SERVER_INFO says so; checked against
/// the pinned key when `client` has a trust store). A seed server (NOIMPL) does not.
pub fn server_signs(client: &ControlClient) -> Result<bool, ControlError> {
    match client.server_info() {
        Ok(info) => Ok(info.features & features::SIGNED_REQUESTS != 0),
        Err(e) if e.code() == Some(ErrorCode::NoImpl) => Ok(false),
        Err(e) => Err(e),
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
        let id = Identity {
            uid: 44,
            key: new_key(),
        };
        assert!(again.key(44).unwrap().is_none());
        again.save_key(&id).unwrap();
        let back = again.key(44).unwrap().unwrap();
        assert_eq!(back.key.to_bytes(), id.key.to_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("nested")), 0o700);
        assert_eq!(mode(&again.path()), 0o600);
        assert_eq!(mode(&dir.path().join("nested/keys/44.key")), 0o600);
        // A key file holding another user's key is refused.
        std::fs::copy(
            dir.path().join("nested/keys/44.key"),
            dir.path().join("nested/keys/45.key"),
        )
        .unwrap();
        assert!(again.key(45).is_err());
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
