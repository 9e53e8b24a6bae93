//! Trust on first use of each server's key, like SSH's `known_hosts`.
//!
//! The first SERVER_INFO from a server pins its Ed25519 key in `known_servers` in the
//! config directory (0600; one `SERVER HEXKEY` line per server, SERVER as the user wrote
//! it). From then on a different key is refused ([`ControlError::KeyChanged`]), and so is a
//! server that suddenly answers SERVER_INFO with NOIMPL or without signed system packets
//! ([`ControlError::Downgrade`]): a man in the middle cannot strip the signatures by
//! pretending to be the seed's server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kv_proto::keyfile::{hex, unhex32};

use super::error::ControlError;
use crate::config_dir::{private_file, read_server_lines, LinesError};

const FILE_NAME: &str = "known_servers";
/// A file larger than this is not ours.
const MAX_FILE_LEN: u64 = 1 << 20;

/// The pinned keys of a config directory.
#[derive(Debug, Clone)]
pub struct KnownServers {
    dir: PathBuf,
}

impl KnownServers {
    /// The pins kept in `dir`.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// The file's path, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn error(&self, detail: impl std::fmt::Display) -> ControlError {
        ControlError::Trust(format!("{}: {detail}", self.path().display()))
    }

    fn load(&self) -> Result<BTreeMap<String, [u8; 32]>, ControlError> {
        read_server_lines(&self.path(), MAX_FILE_LEN, unhex32).map_err(|e| match e {
            LinesError::Io(e) => self.error(e),
            LinesError::TooLarge => self.error("file too large"),
            LinesError::Malformed(line) => self.error(format!("line {line} is malformed")),
        })
    }

    /// The key pinned for `server`, if any.
    pub fn get(&self, server: &str) -> Result<Option<[u8; 32]>, ControlError> {
        Ok(self.load()?.get(server).copied())
    }

    /// Pins `key` for `server` (first use).
    pub fn pin(&self, server: &str, key: [u8; 32]) -> Result<(), ControlError> {
        let mut map = self.load()?;
        map.insert(server.to_string(), key);
        let mut text =
            String::from("# kv known servers: SERVER ED25519-PUBLIC-KEY (pinned on first use)\n");
        for (s, k) in &map {
            text.push_str(&format!("{s} {}\n", hex(k)));
        }
        private_file(&self.dir, FILE_NAME, text.as_bytes()).map_err(|e| self.error(e))
    }

    /// Checks what SERVER_INFO said (`offered`: its key when it has signed system packets,
    /// `None` when it answered NOIMPL or lacks them) against the pin, pinning on first use.
    /// Returns the key to trust (`None`: a seed server never pinned, trusted as is).
    pub fn check(
        &self,
        server: &str,
        offered: Option<[u8; 32]>,
    ) -> Result<Option<[u8; 32]>, ControlError> {
        match (self.get(server)?, offered) {
            (Some(pinned), Some(key)) if pinned == key => Ok(Some(key)),
            (Some(pinned), Some(key)) => Err(ControlError::KeyChanged {
                addr: server.to_string(),
                pinned: hex(&pinned),
                offered: hex(&key),
                file: self.path(),
            }),
            (Some(_), None) => Err(ControlError::Downgrade {
                addr: server.to_string(),
                file: self.path(),
            }),
            (None, Some(key)) => {
                self.pin(server, key)?;
                tracing::info!(server, key = %hex(&key), "pinned the server's key (first use)");
                Ok(Some(key))
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_on_first_use_then_refuses_changes_and_downgrades() {
        let dir = tempfile::tempdir().unwrap();
        let k = KnownServers::at(dir.path().join("cfg"));
        assert_eq!(
            k.check("a:1", None).unwrap(),
            None,
            "a seed server, never pinned"
        );
        assert_eq!(k.check("a:1", Some([1; 32])).unwrap(), Some([1; 32]));
        assert_eq!(k.check("a:1", Some([1; 32])).unwrap(), Some([1; 32]));
        let changed = k.check("a:1", Some([2; 32])).unwrap_err();
        assert!(
            matches!(changed, ControlError::KeyChanged { .. }),
            "{changed}"
        );
        assert!(changed.to_string().contains("known_servers"), "{changed}");
        let down = k.check("a:1", None).unwrap_err();
        assert!(matches!(down, ControlError::Downgrade { .. }), "{down}");
        assert_eq!(k.check("b:2", Some([2; 32])).unwrap(), Some([2; 32]));
        assert_eq!(
            KnownServers::at(dir.path().join("cfg")).get("a:1").unwrap(),
            Some([1; 32])
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(k.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
