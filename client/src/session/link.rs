//! The voice link's protocol state, sans-IO: the binding handshake, keepalives with
//! ackids, round-trip time, admission, and checking the server's system packets.
//!
//! The socket thread feeds every received datagram to [`Link::handle`] and asks
//! [`Link::poll_keepalive`] when to send; nothing here touches a socket or a clock, so the
//! tests drive it with made-up times and packets.
//!
//! With a server key (from SERVER_INFO, or the one pinned for this server) the link binds
//! its address the way PROTOCOL.md §2 "Binding and sessions" describes: KEEPALIVE, the
//! server's CHALLENGE (its X25519 key must carry the server key's signature), BIND with
//! the cookie and a fresh X25519 key of ours. From then on every system packet must carry
//! a valid MAC under the session key, name this channel and us, and have a sequence number
//! not seen before; anything else (unsigned, signed the old way, another session's, a
//! replay) is ignored and counted. There is no downgrade: with a key, nothing unsigned is
//! ever acted on. Without a key (the seed's server, which has no SERVER_INFO) the link
//! behaves as the seed's clients do.

use ed25519_dalek::VerifyingKey;
use kv_proto::packet::{self, Datagram, SystemOp, SystemPacket};
use kv_proto::session::{self, Bind, Challenge, ClientKex, Cookie, ReplayWindow, SessionKey};
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
/// BINDs sent with one cookie before starting over with a KEEPALIVE (the cookie may have
/// gone stale, or the server may have lost it).
const MAX_BINDS_PER_COOKIE: u32 = 4;

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
    /// A verified CHALLENGE: a BIND is due now ([`Link::poll_keepalive`] sends it).
    Challenged,
    /// Verified: a member joined.
    PeerJoined(u64),
    /// Verified: a member left.
    PeerLeft(u64),
    /// Verified: we were removed from the channel.
    Kicked,
    /// Verified: the channel is closing.
    Shutdown,
    /// Dropped: malformed, forged, for another channel or session, replayed, or our echo.
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
    /// Keepalives (and BINDs) sent.
    pub keepalives_sent: u64,
    /// ACKs matched to a keepalive.
    pub acks: u64,
    /// System packets that failed authentication: no or a wrong MAC or signature, another
    /// channel or recipient, or unsigned where a signature is required.
    pub forged: u64,
    /// Authentic system packets seen before (a replay, or a duplicate from the network).
    pub replayed: u64,
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
    /// Channel we joined: system packets must name it.
    chid: u64,
    /// Server key; `None` for a server without SERVER_INFO (the seed's), whose system
    /// packets are then taken on trust.
    key: Option<VerifyingKey>,
    /// Our X25519 key for this session (its public half is the session nonce).
    kex: ClientKex,
    /// The cookie of the last verified CHALLENGE, for BIND.
    cookie: Option<Cookie>,
    /// BINDs sent with `cookie` so far.
    binds_sent: u32,
    /// Session key, known once a CHALLENGE verified.
    session: Option<SessionKey>,
    /// The server X25519 key `session` was derived with.
    server_kex: [u8; 32],
    /// Sequence numbers of the session's packets seen so far.
    replay: ReplayWindow,
    /// When the next keepalive is due, microseconds.
    next_keepalive_us: u64,
    /// Keepalives awaiting an ACK: (ackid, sent at in microseconds).
    outstanding: Vec<(u32, u64)>,
    /// Next ackid; starts random so a stranger cannot guess it, never 0.
    next_ackid: u32,
    stats: LinkStats,
}

/// The X25519 public key of `kex_secret`: what a JOIN_KEX names for the [`Link`] that will
/// be made with that secret.
pub fn client_kex_public(kex_secret: [u8; 32]) -> [u8; 32] {
    ClientKex::new(kex_secret).public()
}

impl Link {
    /// A link for `uid` in `chid`, verifying with `key` when the server signs. `ackid_seed`
    /// and `kex_secret` must be random (the latter is this session's X25519 secret, whose
    /// public half a JOIN_KEX named: see [`client_kex_public`]).
    pub fn new(
        uid: u64,
        chid: u64,
        key: Option<VerifyingKey>,
        ackid_seed: u32,
        kex_secret: [u8; 32],
    ) -> Self {
        Self {
            uid,
            chid,
            key,
            kex: ClientKex::new(kex_secret),
            cookie: None,
            binds_sent: 0,
            session: None,
            server_kex: [0; 32],
            replay: ReplayWindow::default(),
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
    /// round trips are far below a millisecond). Before admission, with a cookie in hand,
    /// that is a BIND.
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
        if self.binds_sent >= MAX_BINDS_PER_COOKIE {
            self.cookie = None;
            self.binds_sent = 0;
        }
        match (self.cookie, &self.session) {
            // The session key (from the CHALLENGE that brought the cookie) proves we hold
            // the X25519 secret, which is what JOIN_KEX tied the member slot to.
            (Some(cookie), Some(key)) if !self.stats.admitted => {
                Bind {
                    uid: self.uid,
                    ackid,
                    chid: self.chid,
                    cookie,
                    client_kex: self.kex.public(),
                }
                .encode(key, out);
                self.binds_sent += 1;
            }
            _ => SystemPacket {
                op: SystemOp::KeepAlive,
                uid: self.uid,
                ackid,
            }
            .encode(out),
        }
        self.stats.keepalives_sent += 1;
        let period = if self.stats.admitted {
            KEEPALIVE_INTERVAL_US
        } else {
            ADMISSION_RETRY_US
        };
        self.next_keepalive_us = now_us + period;
        true
    }

    /// Interprets one received datagram at `now_us`.
    pub fn handle<'a>(&mut self, now_us: u64, buf: &'a [u8]) -> Incoming<'a> {
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
        match sys.op {
            SystemOp::KeepAlive | SystemOp::Bind => return Incoming::Ignored,
            SystemOp::Challenge => return self.on_challenge(buf),
            _ => {}
        }
        if self.key.is_none() {
            return self.trusted(now_us, sys);
        }
        let Some(fields) = self.session.as_ref().and_then(|k| k.open(buf)) else {
            return self.forged(sys);
        };
        if fields.chid != self.chid || fields.recipient != self.uid {
            return self.forged(sys);
        }
        if !self.replay.accept(fields.seq) {
            self.stats.replayed += 1;
            tracing::debug!(op = ?sys.op, seq = fields.seq, "ignoring replayed system packet");
            return Incoming::Ignored;
        }
        match sys.op {
            SystemOp::Ack => self.on_ack(now_us, sys.ackid),
            SystemOp::Join if sys.uid != self.uid => Incoming::PeerJoined(sys.uid),
            SystemOp::Leave if sys.uid != self.uid => Incoming::PeerLeft(sys.uid),
            SystemOp::Kick if sys.uid == self.uid => Incoming::Kicked,
            SystemOp::Shutdown => Incoming::Shutdown,
            _ => Incoming::Ignored,
        }
    }

    fn forged(&mut self, sys: SystemPacket) -> Incoming<'static> {
        self.stats.forged += 1;
        tracing::warn!(op = ?sys.op, uid = sys.uid, "ignoring unauthenticated system packet");
        Incoming::Ignored
    }

    /// The seed's server: no signatures exist, system packets are taken as they come.
    fn trusted(&mut self, now_us: u64, sys: SystemPacket) -> Incoming<'static> {
        match sys.op {
            SystemOp::Ack => self.on_ack(now_us, sys.ackid),
            SystemOp::Join if sys.uid != self.uid => Incoming::PeerJoined(sys.uid),
            SystemOp::Leave | SystemOp::Kick if sys.uid == self.uid => Incoming::Kicked,
            SystemOp::Leave => Incoming::PeerLeft(sys.uid),
            SystemOp::Shutdown => Incoming::Shutdown,
            _ => Incoming::Ignored,
        }
    }

    /// A CHALLENGE counts when it answers one of our keepalives, names us and this channel,
    /// and its X25519 key carries the server's signature (else a man in the middle could
    /// put its own key there and then forge session packets). It gives the session key.
    fn on_challenge(&mut self, buf: &[u8]) -> Incoming<'static> {
        let (Some(key), Some(c)) = (&self.key, Challenge::decode(buf)) else {
            return Incoming::Ignored;
        };
        let answers_us = c.uid == self.uid
            && c.chid == self.chid
            && self.outstanding.iter().any(|&(id, _)| id == c.ackid);
        if self.stats.admitted || !answers_us {
            return Incoming::Ignored;
        }
        if !session::verify_server_kex(key, &c.server_kex, &c.kex_sig) {
            self.stats.forged += 1;
            tracing::warn!("ignoring CHALLENGE whose key the server did not sign");
            return Incoming::Ignored;
        }
        if self.session.is_none() || self.server_kex != c.server_kex {
            let Some(k) = self.kex.session_key(&c.server_kex, self.uid, self.chid) else {
                self.stats.forged += 1;
                return Incoming::Ignored;
            };
            self.session = Some(k);
            self.server_kex = c.server_kex;
            self.replay = ReplayWindow::default();
        }
        self.cookie = Some(c.cookie);
        self.binds_sent = 0;
        self.next_keepalive_us = 0;
        Incoming::Challenged
    }

    /// An ACK counts only when it answers a keepalive we sent (and, with a server key,
    /// carries our session's MAC, checked before this).
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
            self.cookie = None;
            // Switch to the slow period from the next keepalive on.
            self.next_keepalive_us = now_us + KEEPALIVE_INTERVAL_US;
            Incoming::Admitted { rtt_ms: rtt }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kv_proto::session::{Sealed, ServerKex, COOKIE_LEN};

    const ME: u64 = 10;
    const CHID: u64 = 5;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    /// The server's half of the handshake, as the relay does it.
    struct FakeServer {
        kex: ServerKex,
        session: Option<SessionKey>,
        seq: u64,
    }

    impl FakeServer {
        fn new(signing: &SigningKey) -> Self {
            Self {
                kex: ServerKex::new(signing, [6u8; 32]),
                session: None,
                seq: 0,
            }
        }

        fn challenge(&self, ackid: u32) -> [u8; 512] {
            let mut b = [0u8; 512];
            Challenge {
                uid: ME,
                ackid,
                chid: CHID,
                cookie: Cookie {
                    slot: 1,
                    mac: [0xC0; COOKIE_LEN],
                },
                server_kex: self.kex.public(),
                kex_sig: self.kex.signature(),
            }
            .encode(&mut b);
            b
        }

        /// Takes the client's BIND; returns its ackid.
        fn bind(&mut self, buf: &[u8]) -> u32 {
            let b = Bind::decode(buf).expect("a BIND");
            assert_eq!(
                (b.uid, b.chid, b.cookie.mac),
                (ME, CHID, [0xC0; COOKIE_LEN])
            );
            self.session = self.kex.session_key(&b.client_kex, ME, CHID);
            assert!(
                self.session.as_ref().unwrap().proves_bind(buf),
                "the BIND proves the client holds its key"
            );
            b.ackid
        }

        fn sealed(&mut self, op: SystemOp, uid: u64, ackid: u32) -> [u8; 512] {
            self.seq += 1;
            self.sealed_as(op, uid, ackid, CHID, ME, self.seq)
        }

        fn sealed_as(
            &self,
            op: SystemOp,
            uid: u64,
            ackid: u32,
            chid: u64,
            recipient: u64,
            seq: u64,
        ) -> [u8; 512] {
            let mut b = [0u8; 512];
            self.session.as_ref().unwrap().seal(
                &SystemPacket { op, uid, ackid },
                &Sealed {
                    chid,
                    recipient,
                    seq,
                    unix_ms: 0,
                },
                &mut b,
            );
            b
        }
    }

    fn link() -> Link {
        Link::new(ME, CHID, Some(key().verifying_key()), 1000, [1u8; 32])
    }

    fn ackid(out: &[u8]) -> u32 {
        match packet::parse(out).unwrap() {
            Datagram::System(s) => s.ackid,
            _ => panic!(),
        }
    }

    fn op(out: &[u8]) -> SystemOp {
        match packet::parse(out).unwrap() {
            Datagram::System(s) => s.op,
            _ => panic!(),
        }
    }

    /// A link through the handshake at time 0..2000 µs, and its fake server.
    fn admitted() -> (Link, FakeServer) {
        let mut l = link();
        let mut srv = FakeServer::new(&key());
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(0, &mut out));
        assert_eq!(op(&out), SystemOp::KeepAlive);
        assert_eq!(
            l.handle(500, &srv.challenge(ackid(&out))),
            Incoming::Challenged
        );
        assert!(l.poll_keepalive(500, &mut out), "BIND at once");
        let id = srv.bind(&out);
        let ack = srv.sealed(SystemOp::Ack, ME, id);
        assert_eq!(l.handle(2000, &ack), Incoming::Admitted { rtt_ms: 1.5 });
        (l, srv)
    }

    #[test]
    fn handshake_admits_in_two_round_trips() {
        let (l, _) = admitted();
        assert!(l.stats().admitted);
        assert_eq!(l.stats().keepalives_sent, 2);
        assert_eq!(l.next_timeout_us(), 2000 + KEEPALIVE_INTERVAL_US);
    }

    #[test]
    fn retries_until_admitted_and_starts_over_when_binds_go_unanswered() {
        let mut l = link();
        let srv = FakeServer::new(&key());
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(0, &mut out));
        assert!(!l.poll_keepalive(100_000, &mut out));
        assert!(l.poll_keepalive(250_000, &mut out));
        assert_eq!(op(&out), SystemOp::KeepAlive);
        l.handle(260_000, &srv.challenge(ackid(&out)));
        let mut t = 260_000;
        for _ in 0..MAX_BINDS_PER_COOKIE {
            assert!(l.poll_keepalive(t, &mut out));
            assert_eq!(op(&out), SystemOp::Bind);
            t += ADMISSION_RETRY_US;
        }
        assert!(l.poll_keepalive(t, &mut out));
        assert_eq!(op(&out), SystemOp::KeepAlive, "a fresh cookie is asked for");
    }

    #[test]
    fn challenges_are_checked() {
        let mut l = link();
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(0, &mut out));
        let id = ackid(&out);
        // Its X25519 key signed by someone else: a man in the middle.
        let mitm = FakeServer::new(&SigningKey::from_bytes(&[9u8; 32]));
        assert_eq!(l.handle(1, &mitm.challenge(id)), Incoming::Ignored);
        assert_eq!(l.stats().forged, 1);
        // Not an answer to one of our keepalives.
        let srv = FakeServer::new(&key());
        assert_eq!(l.handle(1, &srv.challenge(id + 50)), Incoming::Ignored);
        assert!(
            !l.poll_keepalive(1, &mut out),
            "nothing due: no BIND was triggered"
        );
        assert_eq!(l.handle(1, &srv.challenge(id)), Incoming::Challenged);
    }

    #[test]
    fn acks_need_the_session_mac() {
        let mut l = link();
        let mut srv = FakeServer::new(&key());
        let mut out = [0u8; 512];
        l.poll_keepalive(0, &mut out);
        l.handle(1, &srv.challenge(ackid(&out)));
        l.poll_keepalive(1, &mut out);
        let id = srv.bind(&out);
        // The seed's unsigned ACK with the right ackid is not enough.
        let mut plain = [0u8; 512];
        SystemPacket {
            op: SystemOp::Ack,
            uid: ME,
            ackid: id,
        }
        .encode(&mut plain);
        assert_eq!(l.handle(2, &plain), Incoming::Ignored);
        assert!(!l.stats().admitted);
        assert_eq!(l.stats().forged, 1);
        assert!(matches!(
            l.handle(3, &srv.sealed(SystemOp::Ack, ME, id)),
            Incoming::Admitted { .. }
        ));
    }

    #[test]
    fn session_events_are_accepted_and_everything_else_counted() {
        let (mut l, mut srv) = admitted();
        let j = srv.sealed(SystemOp::Join, 11, 0);
        assert_eq!(l.handle(0, &j), Incoming::PeerJoined(11));
        let lv = srv.sealed(SystemOp::Leave, 11, 0);
        assert_eq!(l.handle(0, &lv), Incoming::PeerLeft(11));
        // Replays of authentic packets: ignored, counted apart.
        assert_eq!(l.handle(0, &lv), Incoming::Ignored);
        assert_eq!(l.handle(0, &j), Incoming::Ignored);
        assert_eq!(l.stats().replayed, 2);
        // LEAVE about ourselves is not a kick (KICK is): ignored.
        let me = srv.sealed(SystemOp::Leave, ME, 0);
        assert_eq!(l.handle(0, &me), Incoming::Ignored);

        let sd = |srv: &FakeServer, chid, to, seq| {
            srv.sealed_as(SystemOp::Shutdown, 0, 0, chid, to, seq)
        };
        let forged = [
            sd(&srv, CHID + 1, ME, 100), // other channel
            sd(&srv, CHID, ME + 1, 101), // another member's
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
            {
                let mut b = [0u8; 512];
                SystemPacket {
                    op: SystemOp::Shutdown,
                    uid: 0,
                    ackid: 0,
                }
                .encode_signed(&key(), CHID, 0, &mut b); // signed the old way
                b
            },
        ];
        for f in &forged {
            assert_eq!(l.handle(0, f), Incoming::Ignored);
        }
        assert_eq!(l.stats().forged, 4);
        // Another session's SHUTDOWN (same server, same uid and channel, earlier session).
        let (_, mut old) = admitted();
        old.session = old
            .kex
            .session_key(&ClientKex::new([2u8; 32]).public(), ME, CHID);
        assert_eq!(
            l.handle(0, &old.sealed(SystemOp::Shutdown, 0, 0)),
            Incoming::Ignored
        );
        assert_eq!(l.stats().forged, 5);

        let kick = srv.sealed(SystemOp::Kick, ME, 0);
        assert_eq!(l.handle(0, &kick), Incoming::Kicked);
        let sd = srv.sealed(SystemOp::Shutdown, 0, 0);
        assert_eq!(l.handle(0, &sd), Incoming::Shutdown);
    }

    #[test]
    fn link_is_lost_after_three_silent_periods() {
        let (mut l, mut srv) = admitted();
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(2_002_000, &mut out));
        l.handle(2_003_000, &srv.sealed(SystemOp::Ack, ME, ackid(&out)));
        assert!(!l.is_lost(2_003_000 + LINK_LOST_US));
        assert!(l.is_lost(2_003_001 + LINK_LOST_US));
        assert!(
            !link().is_lost(100_000_000),
            "never admitted: not lost, just not yet there"
        );
    }

    #[test]
    fn voice_echo_and_garbage() {
        let mut l = link();
        let mut b = [0u8; 512];
        packet::encode_regular(11, &[1, 2, 3], &mut b);
        assert!(matches!(l.handle(0, &b), Incoming::Voice { uid: 11, .. }));
        packet::encode_regular(ME, &[1, 2, 3], &mut b);
        assert_eq!(l.handle(0, &b), Incoming::Ignored);
        assert_eq!(l.handle(0, &b[..100]), Incoming::Ignored);
        assert_eq!(l.stats().malformed, 1);
    }

    #[test]
    fn seed_server_without_a_key_is_trusted() {
        let mut l = Link::new(ME, CHID, None, 1, [1u8; 32]);
        let mut out = [0u8; 512];
        assert!(l.poll_keepalive(0, &mut out));
        assert_eq!(op(&out), SystemOp::KeepAlive);
        let mut b = [0u8; 512];
        SystemPacket {
            op: SystemOp::Ack,
            uid: ME,
            ackid: ackid(&out),
        }
        .encode(&mut b);
        assert!(matches!(l.handle(1, &b), Incoming::Admitted { .. }));
        SystemPacket {
            op: SystemOp::Join,
            uid: 12,
            ackid: 0,
        }
        .encode(&mut b);
        assert_eq!(l.handle(0, &b), Incoming::PeerJoined(12));
        SystemPacket {
            op: SystemOp::Leave,
            uid: ME,
            ackid: 0,
        }
        .encode(&mut b);
        assert_eq!(l.handle(0, &b), Incoming::Kicked);
    }
}
