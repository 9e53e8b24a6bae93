//! The server's Ed25519 key: made on first start, kept in the data directory.
//!
//! Every system packet the server sends is signed with it (seed §0), and SERVER_INFO hands
//! out the public half, so clients can reject forged JOIN/LEAVE/SHUTDOWN packets. The file
//! holds the raw 32-byte seed, readable by the owner only (mode 0600).

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::error::ServerError;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "server.key";

/// Loads the key from `dir`, or creates and stores a new one if there is none.
pub fn load_or_create(dir: &Path) -> Result<SigningKey, ServerError> {
    let path = dir.join(KEY_FILE);
    let err = |reason: String| ServerError::Key {
        path: path.clone(),
        reason,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| err(format!("expected 32 bytes, found {}", bytes.len())))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            // Write a temporary file and rename it, so a crash never leaves a short key.
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(|e| err(e.to_string()))?;
            f.write_all(&seed).map_err(|e| err(e.to_string()))?;
            f.sync_all().map_err(|e| err(e.to_string()))?;
            fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "created server key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn short_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), [1u8; 5]).unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(ServerError::Key { .. })
        ));
    }
}
