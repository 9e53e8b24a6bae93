//! The voice link's protocol state, sans-IO: keepalives with ackids, round-trip time,
//! admission, and checking the server's signed system packets.
//!
//! The socket thread feeds every received datagram to [`Link::handle`] and asks
//! [`Link::poll_keepalive`] when to send; nothing here touches a socket or a clock, so the
//! tests drive it with made-up times and packets.

use ed25519_dalek::VerifyingKey;
use kv_proto::packet::{self, Datagram, SystemOp, SystemPacket};
use kv_proto::PACKET_SIZE;

/// Keepalive period once admitted: far inside the server's 60 s peer timeout, and often
/// enough that the round-trip time shown to the user stays fresh.
pub const KEEPALIVE_INTERVAL_US: u64 = 2_000_000;
/// Keepalive period until the first ACK, so admission survives a lost packet quickly.
pub const ADMISSION_RETRY_US: u64 = 250_000;
/// Without an ACK for this long (three keepalive periods) the link counts as lost.
pub const LINK_LOST_US: u64 = 3 * KEEPALIVE_INTERVAL_US + 500_000;
/// Outstanding keepalives remembered for RTT; older ACKs are ignored.
const MAX_OUTSTANDING: usize = 8;
/// Signed packets older than this (by the server's clock, against ours) are replays.
/// Generous because client and server clocks may disagree.
const MAX_SIGNED_AGE_MS: u64 = 120_000;

/// What a received datagram meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incoming<'a> {
    /// A voice packet from another member.
    Voice {
        /// Sender.
        uid: u64,
        /// The 504 data bytes.
        data: &'a [u8],
    },
    /// The first ACK: the server knows us and relays our voice.
    Admitted {
        /// Round trip of that keepalive, milliseconds.
        rtt_ms: f32,
    },
    /// A later ACK (RTT updated).
    Ack,
    /// Verified: a member joined.
    PeerJoined(u64),
    /// Verified: a member left.
    PeerLeft(u64),
    /// Verified: we were removed from the channel.
    Kicked,
    /// Verified: the channel is closing.
    Shutdown,
    /// Dropped: malformed, forged, for another channel, stale, or our own echo.
    Ignored,
}

/// Counters the UI and tests read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// True once an ACK has arrived.
    pub admitted: bool,
    /// Latest round-trip time, milliseconds.
    pub rtt_ms: Option<f32>,
    /// Smoothed round-trip time (RFC 6298 style, 1/8 gain), milliseconds.
    pub srtt_ms: Option<f32>,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// ACKs matched to a keepalive.
    pub acks: u64,
    /// System packets that failed the signature, channel or age check.
    pub forged: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Time of the last ACK, microseconds (caller's clock).
    pub last_ack_us: Option<u64>,
}

/// Protocol state of one voice link.
#[derive(Debug)]
pub struct Link {
    /// Our uid (voice packets carrying it are echoes and dropped).
    uid: u64,
    /// Channel we joined: signed packets must name it.
    chid: u64,
    /// Server key from SERVER_INFO; `None` for a server without signatures, whose system
    /// packets are then taken on trust (the seed's behaviour).
    key: Option<VerifyingKey>,
    /// When the next keepalive is due, microseconds.
    next_keepalive_us: u64,
    /// Keepalives awaiting an ACK: (ackid, sent at in microseconds).
    outstanding: Vec<(u32, u64)>,
    /// Next ackid; starts random so a stranger cannot guess it, never 0.
    next_ackid: u32,
    stats: LinkStats,
}

impl Link {
    /// A link for `uid` in `chid`, verifying with `key` when the server signs. `ackid_seed`
    /// should be random.
    pub fn new(uid: u64, chid: u64, key: Option<VerifyingKey>, ackid_seed: u32) -> Self {
        Self {
            uid,
            chid,
            key,
            next_keepalive_us: 0,
            outstanding: Vec::with_capacity(MAX_OUTSTANDING),
            next_ackid: ackid_seed.max(1),
            stats: LinkStats::default(),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// True when admitted but no ACK came for `LINK_LOST_US` up to `now_us`: the server
    /// (or the path to it) is gone, whatever the socket says.
    pub fn is_lost(&self, now_us: u64) -> bool {
        self.stats
            .last_ack_us
            .is_some_and(|t| now_us.saturating_sub(t) > LINK_LOST_US)
    }

    /// When the caller should next call [`Link::poll_keepalive`], microseconds.
    pub fn next_timeout_us(&self) -> u64 {
        self.next_keepalive_us
    }

    /// Writes a keepalive into `out` when one is due at `now_us` (microseconds: loopback
    /// round trips are far below a millisecond).
    pub fn poll_keepalive(&mut self, now_us: u64, out: &mut [u8; PACKET_SIZE]) -> bool {
        if now_us < self.next_keepalive_us {
            return false;
        }
        let ackid = self.next_ackid;
        self.next_ackid = self.next_ackid.wrapping_add(1).max(1);
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.remove(0);
        }
        self.outstanding.push((ackid, now_us));
        SystemPacket {
            op: SystemOp::KeepAlive,
            uid: self.uid,
            ackid,
        }
        .encode(out);
        self.stats.keepalives_sent += 1;
        let period = if self.stats.admitted {
            KEEPALIVE_INTERVAL_US
        } else {
            ADMISSION_RETRY_US
        };
        self.next_keepalive_us = now_us + period;
        true
    }

    /// Interprets one received datagram at `now_us`; `now_unix_ms` is the wall clock used
    /// for the replay check of signed packets.
    pub fn handle<'a>(&mut self, now_us: u64, now_unix_ms: u64, buf: &'a [u8]) -> Incoming<'a> {
        let dg = match packet::parse(buf) {
            Ok(d) => d,
            Err(_) => {
                self.stats.malformed += 1;
                return Incoming::Ignored;
            }
        };
        let sys = match dg {
            Datagram::Regular { uid, data } if uid != self.uid => {
                return Incoming::Voice { uid, data };
            }
            Datagram::Regular { .. } => return Incoming::Ignored,
            Datagram::System(s) => s,
        };
        if sys.op == SystemOp::Ack {
            return self.on_ack(now_us, sys.ackid);
        }
        if sys.op == SystemOp::KeepAlive {
            return Incoming::Ignored;
        }
        if !self.authentic(buf, now_unix_ms) {
            self.stats.forged += 1;
            tracing::warn!(op = ?sys.op, uid = sys.uid, "ignoring unauthenticated system packet");
            return Incoming::Ignored;
        }
        match sys.op {
            SystemOp::Join if sys.uid != self.uid => Incoming::PeerJoined(sys.uid),
            SystemOp::Leave if sys.uid == self.uid => Incoming::Kicked,
            SystemOp::Leave => Incoming::PeerLeft(sys.uid),
            SystemOp::Shutdown => Incoming::Shutdown,
            _ => Incoming::Ignored,
        }
    }

    /// An ACK counts only when it answers a keepalive we sent: the ackid is the proof,
    /// so ACKs need no signature check.
    fn on_ack(&mut self, now_us: u64, ackid: u32) -> Incoming<'static> {
        let Some(pos) = self.outstanding.iter().position(|&(id, _)| id == ackid) else {
            return Incoming::Ignored;
        };
        let (_, sent) = self.outstanding[pos];
        // Older keepalives than the one answered will never be answered usefully.
        self.outstanding.drain(..=pos);
        let rtt = now_us.saturating_sub(sent) as f32 / 1000.0;
        self.stats.rtt_ms = Some(rtt);
        self.stats.srtt_ms = Some(match self.stats.srtt_ms {
            Some(s) => s + (rtt - s) / 8.0,
            None => rtt,
        });
        self.stats.acks += 1;
        self.stats.last_ack_us = Some(now_us);
        if self.stats.admitted {
            Incoming::Ack
        } else {
            self.stats.admitted = true;
            // Switch to the slow period from the next keepalive on.
            self.next_keepalive_us = now_us + KEEPALIVE_INTERVAL_US;
            Incoming::Admitted { rtt_ms: rtt }
        }
    }

    fn authentic(&self, buf: &[u8], now_unix_ms: u64) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        match packet::verify_signed(buf, key) {
            Some(f) => f.chid == self.chid && f.unix_ms + MAX_SIGNED_AGE_MS >= now_unix_ms,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW_UNIX: u64 = 1_800_000_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn link() -> Link {
        Link::new(10, 5, Some(key().verifying_key()), 1000)
    }

    fn signed(op: SystemOp, uid: u64, chid: u64, unix_ms: u64, k: &SigningKey) -> [u8; 512] {
        let mut b = [0u8; 512];
        SystemPacket { op, uid, ackid: 0 }.encode_signed(k, chid, unix_ms, &mut b);
        b
    }

    fn ack(ackid: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        SystemPacket {
            op: SystemOp::Ack,
            uid: 10,
            ackid,
        }
        .encode(&mut b);
        b
    }

    #[test]
    fn admission_and_rtt_from_acks() {
        let mut l = link();
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(0, &mut out));
        let first = match packet::parse(&out).unwrap() {
            Datagram::System(s) => s.ackid,
            _ => panic!(),
        };
        // Retries fast until admitted.
        assert!(!l.poll_keepalive(100_000, &mut out));
        assert!(l.poll_keepalive(250_000, &mut out));
        // A made-up ackid proves nothing.
        assert_eq!(
            l.handle(260_000, NOW_UNIX, &ack(first + 77)),
            Incoming::Ignored
        );
        assert_eq!(
            l.handle(262_000, NOW_UNIX, &ack(first)),
            Incoming::Admitted { rtt_ms: 262.0 }
        );
        assert!(l.stats().admitted);
        assert_eq!(l.next_timeout_us(), 262_000 + KEEPALIVE_INTERVAL_US);
        // A later keepalive gets its own ACK and RTT, with sub-millisecond resolution.
        assert!(l.poll_keepalive(2_262_000, &mut out));
        let id = match packet::parse(&out).unwrap() {
            Datagram::System(s) => s.ackid,
            _ => panic!(),
        };
        assert_eq!(l.handle(2_262_250, NOW_UNIX, &ack(id)), Incoming::Ack);
        assert_eq!(l.stats().rtt_ms, Some(0.25));
    }

    #[test]
    fn link_is_lost_after_three_silent_periods() {
        let mut l = link();
        let mut out = [0u8; 512];
        assert!(
            !l.is_lost(100_000_000),
            "never admitted: not lost, just not yet there"
        );
        assert!(l.poll_keepalive(0, &mut out));
        let id = match packet::parse(&out).unwrap() {
            Datagram::System(s) => s.ackid,
            _ => panic!(),
        };
        l.handle(1_000, NOW_UNIX, &ack(id));
        assert!(!l.is_lost(1_000 + LINK_LOST_US));
        assert!(l.is_lost(1_001 + LINK_LOST_US));
    }

    #[test]
    fn signed_events_are_accepted_and_forgeries_counted() {
        let mut l = link();
        let k = key();
        let j = signed(SystemOp::Join, 11, 5, NOW_UNIX, &k);
        assert_eq!(l.handle(0, NOW_UNIX, &j), Incoming::PeerJoined(11));
        let lv = signed(SystemOp::Leave, 11, 5, NOW_UNIX, &k);
        assert_eq!(l.handle(0, NOW_UNIX, &lv), Incoming::PeerLeft(11));
        let me = signed(SystemOp::Leave, 10, 5, NOW_UNIX, &k);
        assert_eq!(l.handle(0, NOW_UNIX, &me), Incoming::Kicked);
        let sd = signed(SystemOp::Shutdown, 0, 5, NOW_UNIX, &k);
        assert_eq!(l.handle(0, NOW_UNIX, &sd), Incoming::Shutdown);

        let wrong_key = SigningKey::from_bytes(&[4u8; 32]);
        let forged = [
            signed(SystemOp::Shutdown, 0, 5, NOW_UNIX, &wrong_key),
            signed(SystemOp::Shutdown, 0, 6, NOW_UNIX, &k), // other channel
            signed(SystemOp::Shutdown, 0, 5, NOW_UNIX - 3_600_000, &k), // replay
            {
                let mut b = [0u8; 512];
                SystemPacket {
                    op: SystemOp::Shutdown,
                    uid: 0,
                    ackid: 0,
                }
                .encode(&mut b); // unsigned
                b
            },
        ];
        for f in &forged {
            assert_eq!(l.handle(0, NOW_UNIX, f), Incoming::Ignored);
        }
        assert_eq!(l.stats().forged, 4);
    }

    #[test]
    fn voice_echo_and_garbage() {
        let mut l = link();
        let mut b = [0u8; 512];
        packet::encode_regular(11, &[1, 2, 3], &mut b);
        assert!(matches!(
            l.handle(0, NOW_UNIX, &b),
            Incoming::Voice { uid: 11, .. }
        ));
        packet::encode_regular(10, &[1, 2, 3], &mut b);
        assert_eq!(l.handle(0, NOW_UNIX, &b), Incoming::Ignored);
        assert_eq!(l.handle(0, NOW_UNIX, &b[..100]), Incoming::Ignored);
        assert_eq!(l.stats().malformed, 1);
    }

    #[test]
    fn unsigned_server_is_trusted_without_a_key() {
        let mut l = Link::new(10, 5, None, 1);
        let mut b = [0u8; 512];
        SystemPacket {
            op: SystemOp::Join,
            uid: 12,
            ackid: 0,
        }
        .encode(&mut b);
        assert_eq!(l.handle(0, NOW_UNIX, &b), Incoming::PeerJoined(12));
    }
}
