//! Credentials: binding a member's MLS leaf to a KV user (uid and Ed25519 identity key).
//!
//! A member's MLS credential is a `BasicCredential` whose identity is [`IDENTITY_LEN`] bytes:
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 1 | format, [`CREDENTIAL_VERSION`] (1) |
//! | 1 | 8 | uid, big-endian |
//! | 9 | 32 | the user's Ed25519 identity public key (`proto/src/keyfile.rs`) |
//!
//! and the leaf's MLS signature key *is* that identity key (ciphersuite
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`), so MLS itself proves possession: every leaf
//! node, key package and commit is signed with it. A peer accepts a leaf only when
//! [`verify_leaf`] holds: the identity parses, the leaf's signature key equals the key in the
//! identity, and the [`Directory`] (what the server vouches for: the key it holds for that uid
//! and verifies signed requests with) says the uid has that key. The server can refuse to
//! forward, but cannot put a key of its choosing into a group without members noticing a
//! key change (their directory pins keys, as `known_servers` pins server keys).
//!
//! Why the identity key signs MLS messages directly: no second key to certify and rotate, and
//! the check is one comparison. It cannot be confused with KV's own signatures: MLS signs
//! `SignContent` (a length-prefixed label starting "MLS 1.0 "), whose first byte is a short
//! varint (< 0x40), while KV's signed requests start with `"KV signed request v1\0"` (0x4B).

use std::collections::HashMap;

use openmls::prelude::{BasicCredential, Credential};

/// Format byte the identity starts with; anything else is refused.
pub const CREDENTIAL_VERSION: u8 = 1;
/// Length of the identity inside the `BasicCredential`.
pub const IDENTITY_LEN: usize = 1 + 8 + 32;

/// What the server vouches for: which Ed25519 key belongs to which uid. The wiring step
/// backs it with USER_INFO answers pinned on first use; tests use a `HashMap`.
pub trait Directory {
    /// True when `key` is the identity key of `uid`.
    fn vouches(&self, uid: u64, key: &[u8; 32]) -> bool;
}

impl Directory for HashMap<u64, [u8; 32]> {
    fn vouches(&self, uid: u64, key: &[u8; 32]) -> bool {
        self.get(&uid) == Some(key)
    }
}

impl<F: Fn(u64, &[u8; 32]) -> bool> Directory for F {
    fn vouches(&self, uid: u64, key: &[u8; 32]) -> bool {
        self(uid, key)
    }
}

/// Why a leaf was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a basic credential, or its identity is not [`IDENTITY_LEN`] bytes of format 1.
    #[error("credential is not a KV identity")]
    Malformed,
    /// The leaf signs with another key than the one its credential names.
    #[error("leaf of uid {0} signs with another key than its credential names")]
    KeyMismatch(u64),
    /// The directory does not know this key for this uid.
    #[error("uid {0} does not have this identity key")]
    NotVouched(u64),
}

/// The identity bytes of `uid` with identity key `key`.
pub fn encode_identity(uid: u64, key: &[u8; 32]) -> [u8; IDENTITY_LEN] {
    let mut out = [0u8; IDENTITY_LEN];
    out[0] = CREDENTIAL_VERSION;
    out[1..9].copy_from_slice(&uid.to_be_bytes());
    out[9..].copy_from_slice(key);
    out
}

/// `(uid, key)` from identity bytes, `None` unless exactly format 1.
pub fn decode_identity(bytes: &[u8]) -> Option<(u64, [u8; 32])> {
    if bytes.len() != IDENTITY_LEN || bytes[0] != CREDENTIAL_VERSION {
        return None;
    }
    let uid = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let key: [u8; 32] = bytes[9..].try_into().ok()?;
    Some((uid, key))
}

/// The MLS credential of `uid` with identity key `key`.
pub fn credential(uid: u64, key: &[u8; 32]) -> Credential {
    BasicCredential::new(encode_identity(uid, key).to_vec()).into()
}

/// `(uid, key)` of a credential, `None` when it is not a KV identity.
pub fn credential_identity(credential: &Credential) -> Option<(u64, [u8; 32])> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    decode_identity(basic.identity())
}

/// Checks one leaf (its credential and signature key) against `directory`; returns its uid.
pub fn verify_leaf(
    credential: &Credential,
    signature_key: &[u8],
    directory: &impl Directory,
) -> Result<u64, CredentialError> {
    let (uid, key) = credential_identity(credential).ok_or(CredentialError::Malformed)?;
    if signature_key != key.as_slice() {
        return Err(CredentialError::KeyMismatch(uid));
    }
    if !directory.vouches(uid, &key) {
        return Err(CredentialError::NotVouched(uid));
    }
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_rejects_other_formats() {
        let key = [7u8; 32];
        let bytes = encode_identity(42, &key);
        assert_eq!(decode_identity(&bytes), Some((42, key)));
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(decode_identity(&other), None);
        assert_eq!(decode_identity(&bytes[..40]), None);
        assert_eq!(credential_identity(&credential(42, &key)), Some((42, key)));
    }

    #[test]
    fn leaf_must_sign_with_the_vouched_key() {
        let key = [7u8; 32];
        let dir: HashMap<u64, [u8; 32]> = [(42, key)].into();
        let cred = credential(42, &key);
        assert_eq!(verify_leaf(&cred, &key, &dir), Ok(42));
        assert_eq!(
            verify_leaf(&cred, &[8u8; 32], &dir),
            Err(CredentialError::KeyMismatch(42))
        );
        let cred = credential(43, &key);
        assert_eq!(
            verify_leaf(&cred, &key, &dir),
            Err(CredentialError::NotVouched(43))
        );
        let garbage: Credential = BasicCredential::new(b"alice".to_vec()).into();
        assert_eq!(
            verify_leaf(&garbage, &key, &dir),
            Err(CredentialError::Malformed)
        );
    }
}
