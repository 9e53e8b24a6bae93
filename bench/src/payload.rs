//! What the generator writes into the 504 data bytes of a regular packet, so receivers can
//! tell bench packets from anything else and measure forwarding delay.
//!
//! | data offset | len | field |
//! |---|---|---|
//! | 0 | 4 | magic `KVB1` |
//! | 4 | 4 | run tag (a new one per measurement step; stragglers are ignored) |
//! | 8 | 8 | send time, ns since the bench started (monotonic) |
//! | 16 | 4 | speaker index |
//! | 20 | 4 | sequence number |

use kv_proto::PACKET_SIZE;

const MAGIC: [u8; 4] = *b"KVB1";
/// Offset of the data bytes inside a datagram (after the uid).
const DATA: usize = 8;

/// A bench packet's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Measurement step it belongs to.
    pub tag: u32,
    /// Send time, ns since bench start.
    pub sent_ns: u64,
    /// Which speaker sent it.
    pub speaker: u32,
    /// Speaker's sequence number.
    pub seq: u32,
}

/// Builds a full 512-byte regular packet from `uid` carrying `stamp`.
pub fn build(uid: u64, stamp: Stamp, out: &mut [u8; PACKET_SIZE]) {
    let mut data = [0u8; 24];
    data[0..4].copy_from_slice(&MAGIC);
    data[4..8].copy_from_slice(&stamp.tag.to_be_bytes());
    data[8..16].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    data[16..20].copy_from_slice(&stamp.speaker.to_be_bytes());
    data[20..24].copy_from_slice(&stamp.seq.to_be_bytes());
    kv_proto::packet::encode_regular(uid, &data, out);
}

/// Rewrites only the time and sequence of a packet made by [`build`] (the sender's hot path).
pub fn restamp(sent_ns: u64, seq: u32, pkt: &mut [u8; PACKET_SIZE]) {
    pkt[DATA + 8..DATA + 16].copy_from_slice(&sent_ns.to_be_bytes());
    pkt[DATA + 20..DATA + 24].copy_from_slice(&seq.to_be_bytes());
}

/// Reads a bench packet; `None` for anything else (system packets, foreign data).
pub fn read(pkt: &[u8]) -> Option<Stamp> {
    if pkt.len() != PACKET_SIZE || pkt[DATA..DATA + 4] != MAGIC {
        return None;
    }
    let u32_at = |at: usize| u32::from_be_bytes([pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&pkt[DATA + 8..DATA + 16]);
    Some(Stamp {
        tag: u32_at(DATA + 4),
        sent_ns: u64::from_be_bytes(t),
        speaker: u32_at(DATA + 16),
        seq: u32_at(DATA + 20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_restamp() {
        let s = Stamp {
            tag: 3,
            sent_ns: 123_456_789,
            speaker: 7,
            seq: 1,
        };
        let mut p = [0u8; PACKET_SIZE];
        build(42, s, &mut p);
        assert_eq!(read(&p), Some(s));
        restamp(999, 2, &mut p);
        assert_eq!(
            read(&p),
            Some(Stamp {
                sent_ns: 999,
                seq: 2,
                ..s
            })
        );
        assert!(matches!(
            kv_proto::packet::parse(&p),
            Ok(kv_proto::Datagram::Regular { uid: 42, .. })
        ));
        assert_eq!(read(&p[..100]), None);
        let mut sys = [0u8; PACKET_SIZE];
        kv_proto::SystemPacket {
            op: kv_proto::SystemOp::KeepAlive,
            uid: 1,
            ackid: 0,
        }
        .encode(&mut sys);
        assert_eq!(read(&sys), None);
    }
}
