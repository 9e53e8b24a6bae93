//! SIGNED (type 17): a request wrapped in an envelope signed by the acting user's key.
//!
//! The seed's plan was that "each CMD_* that requires authorization will be using a signing
//! scheme, so that the server can verify source of the request"; this is that scheme. The
//! envelope is
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 4 | type: u32 = 17 |
//! | 4 | 8 | signer: u64 — the uid whose key signs (0: the key inside a REGISTER_KEY sign-up) |
//! | 12 | 32 | server_key — the server's Ed25519 public key (SERVER_INFO), so it cannot be replayed to another server |
//! | 44 | 8 | timestamp: u64 — unix milliseconds when signed |
//! | 52 | 16 | nonce — random, never reused |
//! | 68 | 8 | len: u64 — length of the inner request, at most [`MAX_PLAIN_REQUEST_LEN`] |
//! | 76 | len | inner — a whole unpadded request (any type but SIGNED) |
//! | 76+len | 64 | signature — Ed25519 over [`DOMAIN`] followed by bytes 0..76+len |
//!
//! Decoding here only checks the shape; the server checks the key, the time window, the
//! signature and the nonce (and that the signer is the request's actor).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::{put_u32, put_u64, Reader};
use crate::control::{CommandType, ControlRequest, MAX_PLAIN_REQUEST_LEN};
use crate::error::DecodeError;

/// Prefix of every signed message, so a KV key's signature over a request can never be
/// taken for a signature over anything else (a system packet, another protocol).
pub const DOMAIN: &[u8] = b"KV signed request v1\0";
/// Bytes before the inner request.
pub const HEADER_LEN: usize = 4 + 8 + 32 + 8 + NONCE_LEN + 8;
/// Bytes of the Ed25519 signature at the end.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of the random nonce.
pub const NONCE_LEN: usize = 16;
/// How far a request's timestamp may be from the server's clock, either way. Requests
/// outside it are refused; inside it the server remembers every nonce it accepted.
pub const WINDOW_MS: u64 = 60_000;

/// A decoded SIGNED envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Whose key signs: a uid, or 0 for a REGISTER_KEY sign-up signed by its own key.
    pub signer: u64,
    /// The server the request is meant for.
    pub server_key: [u8; 32],
    /// Unix milliseconds when it was signed.
    pub timestamp_ms: u64,
    /// Random, unique per request.
    pub nonce: [u8; NONCE_LEN],
    /// The request inside.
    pub inner: ControlRequest,
    /// The signature.
    pub signature: [u8; SIGNATURE_LEN],
    /// The exact bytes the signature covers after [`DOMAIN`] (header and inner request).
    signed_bytes: Vec<u8>,
}

impl SignedRequest {
    /// Wraps `inner` and signs it with `key` for the server whose public key is
    /// `server_key`. Fails when `inner` cannot be encoded or is itself SIGNED.
    pub fn sign(
        inner: ControlRequest,
        signer: u64,
        key: &SigningKey,
        server_key: [u8; 32],
        timestamp_ms: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self, DecodeError> {
        if matches!(inner, ControlRequest::Signed(_)) {
            return Err(DecodeError::Invalid(
                "a signed request cannot be signed again",
            ));
        }
        let mut body = Vec::new();
        inner.encode(&mut body)?;
        let mut signed_bytes = Vec::with_capacity(HEADER_LEN + body.len());
        put_u32(&mut signed_bytes, CommandType::Signed as u32);
        put_u64(&mut signed_bytes, signer);
        signed_bytes.extend_from_slice(&server_key);
        put_u64(&mut signed_bytes, timestamp_ms);
        signed_bytes.extend_from_slice(&nonce);
        put_u64(&mut signed_bytes, body.len() as u64);
        signed_bytes.extend_from_slice(&body);
        let signature = key.sign(&message(&signed_bytes)).to_bytes();
        Ok(Self {
            signer,
            server_key,
            timestamp_ms,
            nonce,
            inner,
            signature,
            signed_bytes,
        })
    }

    /// Appends the envelope's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_bytes);
        out.extend_from_slice(&self.signature);
    }

    /// Decodes an envelope from the start of `buf` (which begins with the type) and returns
    /// it with the bytes it used. Only the shape is checked, not the signature.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        if r.u32()? != CommandType::Signed as u32 {
            return Err(DecodeError::Invalid("not a signed request"));
        }
        let signer = r.u64()?;
        let mut server_key = [0u8; 32];
        server_key.copy_from_slice(r.bytes(32)?);
        let timestamp_ms = r.u64()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(r.bytes(NONCE_LEN)?);
        let len = r.u64()?;
        if len > MAX_PLAIN_REQUEST_LEN as u64 {
            return Err(DecodeError::Invalid("signed request too long"));
        }
        let body = r.bytes(len as usize)?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(r.bytes(SIGNATURE_LEN)?);
        let used = r.position();
        // The inner request is complete now: it must decode to exactly its length.
        let inner = match ControlRequest::decode(body) {
            Ok((ControlRequest::Signed(_), _)) => {
                return Err(DecodeError::Invalid("nested signed request"))
            }
            Ok((inner, n)) if n == body.len() => inner,
            Ok(_) => return Err(DecodeError::Invalid("bytes after the signed request")),
            Err(DecodeError::Incomplete) => {
                return Err(DecodeError::Invalid("signed request cut short"))
            }
            Err(e) => return Err(e),
        };
        Ok((
            Self {
                signer,
                server_key,
                timestamp_ms,
                nonce,
                inner,
                signature,
                signed_bytes: buf[..HEADER_LEN + body.len()].to_vec(),
            },
            used,
        ))
    }

    /// True when the signature is `key`'s over this envelope (strict verification: no
    /// malleable or small-order forms).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&message(&self.signed_bytes), &sig)
            .is_ok()
    }
}

/// What is signed: the domain prefix and the envelope's bytes up to the signature.
fn message(signed_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + signed_bytes.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(signed_bytes);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn sample(inner: ControlRequest) -> SignedRequest {
        SignedRequest::sign(inner, 42, &key(1), [9; 32], 1_700_000_000_000, [7; 16]).unwrap()
    }

    #[test]
    fn round_trips_and_verifies() {
        let s = sample(ControlRequest::Join {
            uid: 42,
            juid: 42,
            chid: 5,
        });
        let req = ControlRequest::Signed(Box::new(s.clone()));
        let mut buf = Vec::new();
        req.encode(&mut buf).unwrap();
        assert!(buf.len() <= crate::control::MAX_REQUEST_LEN);
        let (back, used) = ControlRequest::decode(&buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(back, req);
        assert_eq!(back.reply_type(), CommandType::Join);
        assert_eq!(back.actor(), Some(42));
        assert!(s.verify(&key(1).verifying_key()));
        assert!(!s.verify(&key(2).verifying_key()));
        for cut in 0..buf.len() {
            assert_eq!(
                ControlRequest::decode(&buf[..cut]),
                Err(DecodeError::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_signed_byte_matters() {
        let s = sample(ControlRequest::Create { uid: 42 });
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let pk = key(1).verifying_key();
        for at in 4..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 1;
            if let Ok((ControlRequest::Signed(t), _)) = ControlRequest::decode(&bad) {
                assert!(!t.verify(&pk), "flipping byte {at} still verifies");
            }
        }
    }

    #[test]
    fn malformed_envelopes() {
        let s = sample(ControlRequest::Create { uid: 42 });
        let mut buf = Vec::new();
        s.encode(&mut buf);
        // Length beyond the bound.
        let mut long = buf.clone();
        long[68..76].copy_from_slice(&1000u64.to_be_bytes());
        assert!(matches!(
            ControlRequest::decode(&long),
            Err(DecodeError::Invalid(_))
        ));
        // Inner request shorter than its length says (a Create needs 12 bytes).
        let mut short = buf[..HEADER_LEN].to_vec();
        short[68..76].copy_from_slice(&6u64.to_be_bytes());
        short.extend_from_slice(&[0, 0, 0, 0, 1, 2]);
        short.extend_from_slice(&[0; 64]);
        assert!(matches!(
            ControlRequest::decode(&short),
            Err(DecodeError::Invalid(_))
        ));
        // Unknown inner type: NOIMPL, like an unknown plain request.
        let mut unknown = buf[..HEADER_LEN].to_vec();
        unknown[68..76].copy_from_slice(&4u64.to_be_bytes());
        unknown.extend_from_slice(&99u32.to_be_bytes());
        unknown.extend_from_slice(&[0; 64]);
        assert_eq!(
            ControlRequest::decode(&unknown),
            Err(DecodeError::UnknownCommand(99))
        );
        // Nested envelope.
        let mut nested = buf[..HEADER_LEN].to_vec();
        nested[68..76].copy_from_slice(&(buf.len() as u64).to_be_bytes());
        nested.extend_from_slice(&buf);
        nested.extend_from_slice(&[0; 64]);
        assert!(ControlRequest::decode(&nested).is_err());
        assert!(SignedRequest::sign(
            ControlRequest::Signed(Box::new(s)),
            1,
            &key(1),
            [0; 32],
            0,
            [0; 16]
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn random_envelopes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = 17u32.to_be_bytes().to_vec();
            buf.extend_from_slice(&tail);
            if let Ok((ControlRequest::Signed(s), _)) = ControlRequest::decode(&buf) {
                let _ = s.verify(&key(1).verifying_key());
            }
        }
    }
}
