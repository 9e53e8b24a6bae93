//! UDP datagrams: every one is exactly [`PACKET_SIZE`] bytes (WIRE.md §2).
//!
//! A *regular* packet is the sender's uid (`u64`) and 504 bytes the server never reads.
//! A *system* packet starts with `FF FF FF FF`, an `i32` operation, a uid, an ackid and a
//! CRC-32 of bytes 0..20. What the 488 reserved bytes carry depends on the operation: the
//! binding handshake and the session MAC of server packets are in [`crate::session`]
//! (PROTOCOL.md, "Binding and sessions").
//!
//! [`SystemPacket::encode_signed`] and [`verify_signed`] are the earlier format, an Ed25519
//! signature per packet over header, channel and time, which bound neither the recipient
//! nor the session (a recorded LEAVE could be replayed into the victim's next session).
//! The server no longer sends it and clients no longer accept it; it stays so tests can
//! show that:
//!
//! | offset | len | field |
//! |---|---|---|
//! | 24 | 64 | Ed25519 signature over bytes 0..24 followed by bytes 88..512 |
//! | 88 | 8 | channel id |
//! | 96 | 8 | server time, unix milliseconds |
//! | 104 | 408 | zero |

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;

/// Size of every KV datagram.
pub const PACKET_SIZE: usize = 512;
/// Bytes of client data in a regular packet.
pub const DATA_SIZE: usize = PACKET_SIZE - 8;
/// First four bytes of a system packet.
pub const SYSTEM_MAGIC: u32 = 0xFFFF_FFFF;

const SIG_AT: usize = 24;
const SIG_END: usize = SIG_AT + 64;
const CHID_AT: usize = SIG_END;
const TIME_AT: usize = CHID_AT + 8;

/// System packet operations (the seed's `enum system_operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum SystemOp {
    /// Client → server: "I am here"; with a non-zero ackid it asks for an ACK.
    KeepAlive = i32::MIN,
    /// Server → members: `uid` joined the channel.
    Join = i32::MIN + 1,
    /// Server → members: `uid` left (to the kicked user itself: you were removed).
    Leave = i32::MIN + 2,
    /// Server → client: answer to a KEEPALIVE with the same ackid.
    Ack = i32::MIN + 3,
    /// Server → members: the channel is closing.
    Shutdown = i32::MIN + 4,
    /// Server → an unproven address: the return-routability cookie and the server's
    /// session key-exchange key ([`crate::session::Challenge`]).
    Challenge = i32::MIN + 5,
    /// Client → server: echoes the cookie and offers the client's key-exchange key, which
    /// binds the address and starts a session ([`crate::session::Bind`]).
    Bind = i32::MIN + 6,
    /// Server → the removed member itself: you were kicked (or unregistered).
    Kick = i32::MIN + 7,
}

impl SystemOp {
    /// Maps a wire value to an operation.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v.wrapping_sub(i32::MIN) {
            0 => Self::KeepAlive,
            1 => Self::Join,
            2 => Self::Leave,
            3 => Self::Ack,
            4 => Self::Shutdown,
            5 => Self::Challenge,
            6 => Self::Bind,
            7 => Self::Kick,
            _ => return None,
        })
    }
}

/// Header of a system packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemPacket {
    /// What happened or is asked.
    pub op: SystemOp,
    /// The user it concerns.
    pub uid: u64,
    /// Non-zero asks the receiver for an ACK with the same value.
    pub ackid: u32,
}

/// Why a datagram was rejected. The relay counts these; it never answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Not exactly 512 bytes.
    #[error("datagram is {0} bytes, not 512")]
    WrongSize(usize),
    /// System packet whose CRC-32 does not match bytes 0..20.
    #[error("system packet checksum mismatch")]
    BadChecksum,
    /// System packet with an operation this version does not know.
    #[error("unknown system operation {0}")]
    UnknownOp(i32),
    /// Regular packet whose uid is 0 (never a user).
    #[error("regular packet with uid 0")]
    ZeroUid,
}

/// A parsed datagram, borrowing the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A system packet (checksum already verified).
    System(SystemPacket),
    /// A regular packet from `uid` with the client's 504 data bytes.
    Regular {
        /// Sender as written in the packet.
        uid: u64,
        /// The client's payload, unchecked.
        data: &'a [u8],
    },
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The uid a datagram starts with (for system packets this reads the magic and op), or
/// `None` when it is not 512 bytes. The relay's hot path uses this to find the sender
/// before anything else.
pub fn leading_u64(buf: &[u8]) -> Option<u64> {
    (buf.len() == PACKET_SIZE).then(|| be_u64(buf, 0))
}

/// True when `buf` has the system magic. Cheap check for the hot path.
pub fn is_system(buf: &[u8]) -> bool {
    buf.len() >= 4 && be_u32(buf, 0) == SYSTEM_MAGIC
}

/// Parses a datagram. Never panics, whatever `buf` holds.
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>, PacketError> {
    if buf.len() != PACKET_SIZE {
        return Err(PacketError::WrongSize(buf.len()));
    }
    if is_system(buf) {
        let crc = crc32fast::hash(&buf[..20]);
        if crc != be_u32(buf, 20) {
            return Err(PacketError::BadChecksum);
        }
        let raw_op = be_u32(buf, 4) as i32;
        let op = SystemOp::from_i32(raw_op).ok_or(PacketError::UnknownOp(raw_op))?;
        Ok(Datagram::System(SystemPacket {
            op,
            uid: be_u64(buf, 8),
            ackid: be_u32(buf, 16),
        }))
    } else {
        let uid = be_u64(buf, 0);
        if uid == 0 {
            return Err(PacketError::ZeroUid);
        }
        Ok(Datagram::Regular {
            uid,
            data: &buf[8..],
        })
    }
}

impl SystemPacket {
    /// Writes the header and checksum into `out` and zeroes the reserved bytes (an
    /// unsigned packet, as clients send).
    pub fn encode(&self, out: &mut [u8; PACKET_SIZE]) {
        out.fill(0);
        out[0..4].copy_from_slice(&SYSTEM_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&(self.op as i32).to_be_bytes());
        out[8..16].copy_from_slice(&self.uid.to_be_bytes());
        out[16..20].copy_from_slice(&self.ackid.to_be_bytes());
        let crc = crc32fast::hash(&out[..20]);
        out[20..24].copy_from_slice(&crc.to_be_bytes());
    }

    /// Writes a server packet: header, channel id, time, and the signature over them.
    pub fn encode_signed(
        &self,
        key: &SigningKey,
        chid: u64,
        unix_ms: u64,
        out: &mut [u8; PACKET_SIZE],
    ) {
        self.encode(out);
        out[CHID_AT..CHID_AT + 8].copy_from_slice(&chid.to_be_bytes());
        out[TIME_AT..TIME_AT + 8].copy_from_slice(&unix_ms.to_be_bytes());
        let sig = key.sign(&signed_message(out));
        out[SIG_AT..SIG_END].copy_from_slice(&sig.to_bytes());
    }
}

/// What a verified server packet says beyond its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedFields {
    /// Channel the server sent it for.
    pub chid: u64,
    /// Server's clock when it was sent, unix milliseconds.
    pub unix_ms: u64,
}

/// Checks the Ed25519 signature of a 512-byte system packet against the server's public
/// key. `None` means forged, corrupted or unsigned: the caller must ignore the packet.
pub fn verify_signed(buf: &[u8], key: &VerifyingKey) -> Option<SignedFields> {
    if buf.len() != PACKET_SIZE || !is_system(buf) {
        return None;
    }
    let sig = Signature::from_slice(&buf[SIG_AT..SIG_END]).ok()?;
    key.verify(&signed_message(buf), &sig).ok()?;
    Some(SignedFields {
        chid: be_u64(buf, CHID_AT),
        unix_ms: be_u64(buf, TIME_AT),
    })
}

/// Bytes covered by the signature: everything but the signature itself.
fn signed_message(buf: &[u8]) -> [u8; PACKET_SIZE - 64] {
    let mut msg = [0u8; PACKET_SIZE - 64];
    msg[..SIG_AT].copy_from_slice(&buf[..SIG_AT]);
    msg[SIG_AT..].copy_from_slice(&buf[SIG_END..PACKET_SIZE]);
    msg
}

/// Builds a regular packet: `uid` then `data` (at most 504 bytes), zero-padded to 512.
pub fn encode_regular(uid: u64, data: &[u8], out: &mut [u8; PACKET_SIZE]) {
    out.fill(0);
    out[..8].copy_from_slice(&uid.to_be_bytes());
    let n = data.len().min(DATA_SIZE);
    out[8..8 + n].copy_from_slice(&data[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn op_values_match_wire() {
        assert_eq!(SystemOp::KeepAlive as i32, -2_147_483_648);
        assert_eq!(SystemOp::Shutdown as i32, -2_147_483_648 + 4);
        assert_eq!(SystemOp::Kick as i32, -2_147_483_648 + 7);
        for op in [
            SystemOp::KeepAlive,
            SystemOp::Join,
            SystemOp::Leave,
            SystemOp::Ack,
            SystemOp::Shutdown,
            SystemOp::Challenge,
            SystemOp::Bind,
            SystemOp::Kick,
        ] {
            assert_eq!(SystemOp::from_i32(op as i32), Some(op));
        }
        assert_eq!(SystemOp::from_i32(0), None);
        assert_eq!(SystemOp::from_i32(i32::MAX), None);
    }

    #[test]
    fn checksum_is_zlib_crc32_of_first_20_bytes() {
        let mut buf = [0u8; PACKET_SIZE];
        SystemPacket {
            op: SystemOp::KeepAlive,
            uid: 42,
            ackid: 7,
        }
        .encode(&mut buf);
        // zlib.crc32(bytes.fromhex("ffffffff80000000000000000000002a00000007"))
        let expected = crc32fast::hash(&[
            0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0, 0, 0, 7,
        ]);
        assert_eq!(be_u32(&buf, 20), expected);
        buf[15] ^= 1;
        assert_eq!(parse(&buf), Err(PacketError::BadChecksum));
    }

    #[test]
    fn signature_verifies_and_detects_tampering() {
        let k = key();
        let mut buf = [0u8; PACKET_SIZE];
        let pkt = SystemPacket {
            op: SystemOp::Join,
            uid: 5,
            ackid: 0,
        };
        pkt.encode_signed(&k, 99, 1234, &mut buf);
        assert_eq!(parse(&buf), Ok(Datagram::System(pkt)));
        assert_eq!(
            verify_signed(&buf, &k.verifying_key()),
            Some(SignedFields {
                chid: 99,
                unix_ms: 1234
            })
        );
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert_eq!(verify_signed(&buf, &other), None);
        for at in [8, CHID_AT, TIME_AT + 7, 300] {
            let mut bad = buf;
            bad[at] ^= 0x10;
            assert_eq!(verify_signed(&bad, &k.verifying_key()), None, "byte {at}");
        }
        let mut unsigned = [0u8; PACKET_SIZE];
        pkt.encode(&mut unsigned);
        assert_eq!(verify_signed(&unsigned, &k.verifying_key()), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let _ = verify_signed(&bytes, &key().verifying_key());
        }

        #[test]
        fn parse_never_panics_on_system_shaped(mut bytes in proptest::collection::vec(any::<u8>(), PACKET_SIZE..=PACKET_SIZE)) {
            bytes[..4].copy_from_slice(&[0xff; 4]);
            let _ = parse(&bytes);
        }

        #[test]
        fn system_round_trip(op in 0i32..8, uid in any::<u64>(), ackid in any::<u32>()) {
            let op = SystemOp::from_i32(i32::MIN + op).unwrap();
            let pkt = SystemPacket { op, uid, ackid };
            let mut buf = [0u8; PACKET_SIZE];
            pkt.encode(&mut buf);
            prop_assert_eq!(parse(&buf), Ok(Datagram::System(pkt)));
        }

        #[test]
        fn regular_round_trip(uid in any::<u64>().prop_filter("valid", |&u| crate::is_valid_uid(u)),
                              data in proptest::collection::vec(any::<u8>(), 0..=DATA_SIZE)) {
            let mut buf = [0u8; PACKET_SIZE];
            encode_regular(uid, &data, &mut buf);
            match parse(&buf) {
                Ok(Datagram::Regular { uid: u, data: d }) => {
                    prop_assert_eq!(u, uid);
                    prop_assert_eq!(&d[..data.len()], &data[..]);
                    prop_assert!(d[data.len()..].iter().all(|&b| b == 0));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
