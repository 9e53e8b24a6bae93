//! The server's Ed25519 key: made on first start, kept in the data directory.
//!
//! Every system packet the server sends is signed with it (seed §0), and SERVER_INFO hands
//! out the public half, so clients can reject forged JOIN/LEAVE/SHUTDOWN packets. The file
//! holds the raw 32-byte seed, readable by the owner only (mode 0600).
//!
//! The admin is a keyed identity too: its key is kept in `admin.key` beside the server's
//! (mode 0600, the [`kv_proto::keyfile`] format, so `kv --identity admin.key …` acts as
//! the admin). Whoever can read that file is the admin; the admin's uid alone grants
//! nothing.

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::error::ServerError;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "server.key";

/// File name of the admin's identity inside the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// A fresh random Ed25519 key.
pub fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The admin identity stored in `dir`, if there is one.
pub fn read_admin(dir: &Path) -> Result<Option<kv_proto::keyfile::Identity>, ServerError> {
    let path = dir.join(ADMIN_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => kv_proto::keyfile::Identity::parse(&text)
            .map(Some)
            .map_err(|e| ServerError::Key {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServerError::Key {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Stores the admin identity in `dir` (mode 0600).
pub fn write_admin(dir: &Path, id: &kv_proto::keyfile::Identity) -> Result<(), ServerError> {
    let path = dir.join(ADMIN_KEY_FILE);
    crate::files::write_private(&path, id.to_text().as_bytes()).map_err(|e| ServerError::Key {
        path,
        reason: e.to_string(),
    })
}

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
            // A temporary file and a rename, so a crash never leaves a short key.
            crate::files::write_private(&path, &seed).map_err(|e| err(e.to_string()))?;
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
    fn admin_identity_round_trips_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_admin(dir.path()).unwrap().is_none());
        let id = kv_proto::keyfile::Identity {
            uid: 77,
            key: new_key(),
        };
        write_admin(dir.path(), &id).unwrap();
        let back = read_admin(dir.path()).unwrap().unwrap();
        assert_eq!((back.uid, back.key.to_bytes()), (77, id.key.to_bytes()));
        let mode = fs::metadata(dir.path().join(ADMIN_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(dir.path().join(ADMIN_KEY_FILE), "garbage").unwrap();
        assert!(read_admin(dir.path()).is_err());
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
