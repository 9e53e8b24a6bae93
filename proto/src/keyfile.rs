//! Identity files: a uid and the Ed25519 secret key that acts as it.
//!
//! The server writes the admin's (`admin.key` in its data directory) and the clients keep
//! one per identity; `kv --identity FILE` reads either. The format is three text lines, so
//! a person can see whose key a file holds:
//!
//! ```text
//! # KV identity: whoever reads this file can act as this user. Keep it private (0600).
//! uid 13093277591569618514
//! secret 0a1b…(64 hex digits: the 32-byte Ed25519 seed)
//! ```
//!
//! Only parsing and formatting live here (no I/O); callers write the file with mode 0600.

use ed25519_dalek::SigningKey;

/// A uid and its key.
#[derive(Clone)]
pub struct Identity {
    /// The user.
    pub uid: u64,
    /// Its secret key.
    pub key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("uid", &self.uid)
            .field("public_key", &hex(self.key.verifying_key().as_bytes()))
            .finish()
    }
}

/// Why an identity file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// No `uid N` line, or an invalid uid.
    #[error("no valid `uid` line")]
    Uid,
    /// No `secret HEX` line with 64 hex digits.
    #[error("no valid `secret` line (64 hex digits)")]
    Secret,
}

impl Identity {
    /// The file's text.
    pub fn to_text(&self) -> String {
        format!(
            "# KV identity: whoever reads this file can act as this user. Keep it private (0600).\n\
             uid {}\nsecret {}\n",
            self.uid,
            hex(&self.key.to_bytes())
        )
    }

    /// Parses a file's text (blank lines and `#` comments ignored, any line order).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let (mut uid, mut key) = (None, None);
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("uid ") {
                uid = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&u| crate::is_valid_uid(u));
                uid.ok_or(KeyFileError::Uid)?;
            } else if let Some(v) = line.strip_prefix("secret ") {
                key = Some(unhex32(v.trim()).ok_or(KeyFileError::Secret)?);
            }
        }
        Ok(Self {
            uid: uid.ok_or(KeyFileError::Uid)?,
            key: SigningKey::from_bytes(&key.ok_or(KeyFileError::Secret)?),
        })
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let id = Identity {
            uid: 12345,
            key: SigningKey::from_bytes(&[3; 32]),
        };
        let back = Identity::parse(&id.to_text()).unwrap();
        assert_eq!(back.uid, 12345);
        assert_eq!(back.key.to_bytes(), [3; 32]);
        assert!(
            !format!("{id:?}").contains(&hex(&[3; 32])),
            "Debug hides the secret"
        );
        assert!(matches!(
            Identity::parse("uid 5\n"),
            Err(KeyFileError::Secret)
        ));
        assert!(Identity::parse("uid 0\nsecret 00").is_err());
        assert!(Identity::parse(&format!("uid 7\nsecret {}", "zz".repeat(32))).is_err());
        assert_eq!(unhex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(unhex32("é".repeat(32).as_str()), None);
    }
}
