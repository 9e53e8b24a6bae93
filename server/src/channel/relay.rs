//! `ChannelRelay`: one channel's relay logic, sans-IO.
//!
//! It owns the membership of one channel and decides, for each datagram, event or tick,
//! which 512-byte packets go to which addresses. It never touches a socket: the caller
//! passes `now`, the source address and the bytes, and gets the output through a
//! [`Transmit`] sink. That keeps the hot path (a regular packet fanned out to the other
//! members) free of allocation and locks, lets tests drive it with virtual time, and lets
//! the socket glue batch syscalls (recvmmsg/sendmmsg) without touching these rules.
//!
//! Rules (WIRE.md §2, PROTOCOL.md "Relay" and "Binding and sessions"):
//! - JOIN over TCP *admits* a uid. An address is *bound* to it only after return
//!   routability: a KEEPALIVE from an unbound address gets one CHALLENGE (same size, per-IP
//!   budget) carrying a stateless cookie; a BIND echoing a valid, fresh cookie from that same
//!   address, with a proof that its sender holds the X25519 key it offers, binds it and
//!   starts a session (X25519, [`kv_proto::session`]). When the member's JOIN_KEX named a
//!   key, only a BIND offering that key binds: the cookie proves an address, the key proves
//!   the user. Nothing else is ever sent to an address that has not proven it receives.
//! - At most one member per address. A bound member keeps its address until it leaves; a
//!   re-JOIN lets it move to a new address for a few seconds, again only with a cookie.
//! - Admitted members that never bind expire after [`BIND_WINDOW`] (or the peer timeout,
//!   if shorter) and do not count toward `max_members`.
//! - A regular packet from a bound member at its address goes, unchanged, to every other
//!   bound member, within each destination's byte budget. Everything else is dropped.
//! - KEEPALIVE with a non-zero ackid from the bound address is answered with ACK.
//! - Binding announces JOIN(uid) to the other bound members and sends the newcomer one
//!   JOIN per member already bound. That work is paid from a per-channel announcement
//!   budget, so a bind storm costs bounded work per worker turn.
//! - Every system packet to a member carries a MAC under its session key, its recipient
//!   and a per-session sequence number; a kick is KICK. No Ed25519 signature is made per
//!   packet: the one signature (over the server's X25519 key) is made at start-up.
//! - Members the control plane marks *legacy* (the seed's clients, which cannot echo a
//!   cookie) bind on the second datagram from the same address and get the seed's unsigned
//!   system packets. Only the control plane decides who may (PROTOCOL.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kv_proto::packet::{self, Datagram, SystemOp, SystemPacket, PACKET_SIZE};
use kv_proto::session::{Bind, Challenge, Sealed, ServerKex, SessionKey};

use super::cookie::{ChallengeBudget, CookieJar, COOKIE_SLOT};
use super::rate::TokenBucket;

/// Where the relay's output goes. The socket glue sends (or batches) each packet; tests
/// collect them.
pub trait Transmit {
    /// Sends one 512-byte datagram to `dst`. May drop it (a full socket buffer): voice is
    /// never queued without bound.
    fn send(&mut self, dst: SocketAddr, packet: &[u8]);
}

impl Transmit for Vec<(SocketAddr, Vec<u8>)> {
    fn send(&mut self, dst: SocketAddr, packet: &[u8]) {
        self.push((dst, packet.to_vec()));
    }
}

/// How long an admitted member may take to bind, and how long a re-JOIN lets a bound
/// member move to a new address. A client binds within a round trip or two.
pub const BIND_WINDOW: Duration = Duration::from_secs(5);
/// Announcement packets (JOIN/LEAVE to members) a channel may send per second on average.
const ANNOUNCE_RATE: f64 = 20_000.0;
/// Announcement packets a channel may send at once. A bind costs 2 × members + 1 and may
/// run on credit (see [`TokenBucket::take_on_credit`]), so one worker turn does at most
/// this plus one bind's worth of announcing: a few milliseconds.
const ANNOUNCE_BURST: f64 = 512.0;
/// A destination may receive this many members' full rate (`max_member_pps` each).
const RX_SENDERS: f64 = 16.0;

/// The server's secrets a relay uses.
#[derive(Debug, Clone)]
pub struct VoiceKeys {
    /// The server's X25519 key pair for session key exchange, with its signature.
    pub kex: ServerKex,
    /// Key of the return-routability cookies.
    pub cookie_secret: [u8; 32],
}

impl VoiceKeys {
    /// Keys with fresh random X25519 and cookie secrets (once per server start).
    pub fn random(signing: &SigningKey) -> Self {
        let kex = ServerKex::new(signing, rand::random());
        Self {
            kex,
            cookie_secret: rand::random(),
        }
    }
}

/// Limits and timers of one channel.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A member silent this long is removed.
    pub peer_timeout: Duration,
    /// Bound members at once (admitted-but-unbound ones have their own, equal, cap).
    pub max_members: usize,
    /// Average packets per second one member may send.
    pub max_member_pps: u32,
}

/// How the control plane admits a member (its TCP JOIN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// It may bind the seed's way, without a cookie (seed clients; see the module docs).
    pub legacy: bool,
    /// The X25519 key the member's client will offer in BIND, when its (signed) JOIN named
    /// one: then only that client can bind, not anyone who knows the uid and owns an
    /// address.
    pub client_kex: Option<[u8; 32]>,
}

/// Why a JOIN was refused by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The channel already has `max_members` bound members.
    #[error("channel is full")]
    Full,
}

/// Counters of what the relay did, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Regular packets forwarded (each counted once, however many receivers).
    pub forwarded: u64,
    /// Datagrams that were not exactly 512 bytes.
    pub wrong_size: u64,
    /// Datagrams from a uid that has not joined.
    pub not_member: u64,
    /// Datagrams from a member's uid at another address than its bound one (or before it
    /// bound), that could not start a bind.
    pub wrong_address: u64,
    /// System packets with a bad checksum or an operation clients may not send.
    pub bad_system: u64,
    /// Datagrams over the member's rate.
    pub rate_limited: u64,
    /// Keepalives accepted.
    pub keepalives: u64,
    /// CHALLENGEs sent.
    pub challenges: u64,
    /// CHALLENGEs not sent: the destination IP's budget was spent.
    pub challenge_limited: u64,
    /// BINDs with an invalid or stale cookie, or for another channel.
    pub bad_cookie: u64,
    /// Binds refused because another member holds the address.
    pub address_taken: u64,
    /// BINDs offering another X25519 key than the member's JOIN_KEX named.
    pub wrong_kex: u64,
    /// BINDs whose proof did not verify: the sender does not hold the key it offers.
    pub bad_proof: u64,
    /// Binds (or timeouts) deferred because the announcement budget was spent.
    pub announce_limited: u64,
    /// Addresses bound (sessions started, plus legacy binds).
    pub binds: u64,
    /// Admitted members removed because they never bound.
    pub expired_unbound: u64,
    /// Packets not sent because the destination's byte budget was spent.
    pub rx_limited: u64,
}

/// A bound member's session.
#[derive(Debug, Clone)]
struct Session {
    key: SessionKey,
    /// The client's X25519 key: a retransmitted BIND of this session only gets its ACK again.
    client_kex: [u8; 32],
    /// Sequence number of the last packet sealed for it.
    seq: u64,
}

/// One admitted user.
#[derive(Debug, Clone)]
struct Member {
    /// The user.
    uid: u64,
    /// Its proven address, once bound.
    addr: Option<SocketAddr>,
    /// Last valid datagram from its address (or the JOIN), for the peer timeout.
    last_seen: Instant,
    /// Last TCP JOIN, for the bind window.
    joined: Instant,
    /// Until when it may bind (a new) address: set by JOIN.
    may_bind_until: Option<Instant>,
    /// How its last JOIN admitted it.
    admission: Admission,
    /// Legacy binding: the unbound address its last datagram came from, and when.
    legacy_probe: Option<(SocketAddr, Instant)>,
    /// Its session, once bound with a cookie (`None` when bound the legacy way).
    session: Option<Session>,
    /// Send rate cap.
    bucket: TokenBucket,
    /// Receive byte budget (in packets: every datagram is 512 bytes).
    rx: TokenBucket,
}

/// One channel's membership and forwarding rules. See the module docs.
#[derive(Debug)]
pub struct ChannelRelay {
    /// Channel id, written into every system packet (no replay across channels).
    chid: u64,
    /// Server secrets.
    keys: VoiceKeys,
    /// Makes and checks return-routability cookies.
    cookies: CookieJar,
    /// Per-IP budget for CHALLENGEs.
    challenge_budget: ChallengeBudget,
    /// Limits.
    config: RelayConfig,
    /// Members in join order; the fan-out loop walks this contiguous list.
    members: Vec<Member>,
    /// uid → index in `members`.
    index: HashMap<u64, usize>,
    /// Bound address → index in `members` (at most one member per address).
    by_addr: HashMap<SocketAddr, usize>,
    /// A monotonic instant and the unix time it corresponds to, so timestamps follow
    /// `now` (virtual in tests) instead of reading the clock per packet.
    epoch: (Instant, u64),
    /// Token bucket size of a member's send rate.
    burst: f64,
    /// Receive budget per destination: rate and burst, packets.
    rx_rate: f64,
    rx_burst: f64,
    /// Announcement budget of the channel.
    announce: TokenBucket,
    /// What happened so far.
    stats: RelayStats,
    /// Members the last sweeps timed out, until the worker takes them (for the delivery
    /// service: a timeout starts a new epoch in an encrypted channel).
    timed_out: Vec<u64>,
}

impl ChannelRelay {
    /// An empty channel relay.
    pub fn new(chid: u64, keys: VoiceKeys, config: RelayConfig, now: Instant) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (burst, rx_rate, rx_burst) = Self::budgets(&config);
        Self {
            chid,
            cookies: CookieJar::new(keys.cookie_secret, chid, now),
            keys,
            challenge_budget: ChallengeBudget::new(),
            config,
            members: Vec::new(),
            index: HashMap::new(),
            by_addr: HashMap::new(),
            epoch: (now, unix_ms),
            burst,
            rx_rate,
            rx_burst,
            announce: TokenBucket::new(now, ANNOUNCE_BURST),
            stats: RelayStats::default(),
            timed_out: Vec::new(),
        }
    }

    /// Replaces the limits (configuration reload). Members stay, even above a lowered
    /// `max_members`; rate buckets keep their tokens and refill at the new rate.
    pub fn set_config(&mut self, config: RelayConfig) {
        let (burst, rx_rate, rx_burst) = Self::budgets(&config);
        self.burst = burst;
        self.rx_rate = rx_rate;
        self.rx_burst = rx_burst;
        self.config = config;
    }

    /// A member's send burst, and the receive rate and burst per destination.
    fn budgets(config: &RelayConfig) -> (f64, f64, f64) {
        // A quarter second of packets, at least 20: voice bursts after a stall fit.
        let burst = (f64::from(config.max_member_pps) / 4.0).max(20.0);
        let rx_rate = f64::from(config.max_member_pps) * RX_SENDERS;
        (burst, rx_rate, (rx_rate / 4.0).max(64.0))
    }

    /// The channel id.
    pub fn chid(&self) -> u64 {
        self.chid
    }

    /// Counters so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Admitted uids in join order (bound or not yet).
    pub fn members(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.iter().map(|m| m.uid)
    }

    /// Bound uids in join order.
    pub fn bound_members(&self) -> impl Iterator<Item = u64> + '_ {
        self.members
            .iter()
            .filter(|m| m.addr.is_some())
            .map(|m| m.uid)
    }

    /// True when `uid` is admitted.
    pub fn is_member(&self, uid: u64) -> bool {
        self.index.contains_key(&uid)
    }

    /// The address `uid` is bound to, if it has proven one.
    pub fn bound_addr(&self, uid: u64) -> Option<SocketAddr> {
        self.index.get(&uid).and_then(|&i| self.members[i].addr)
    }

    /// Members, bound or not yet.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Members with a proven address.
    pub fn bound_count(&self) -> usize {
        self.by_addr.len()
    }

    fn bind_window(&self) -> Duration {
        BIND_WINDOW.min(self.config.peer_timeout)
    }

    /// Admits `uid` (TCP JOIN), as `admission` says (the control plane decides; see the
    /// module docs). Joining again is allowed: a bound
    /// member keeps its address, and may move to a new one (with a cookie) for
    /// [`BIND_WINDOW`]. Admitted-but-unbound members do not count toward `max_members`;
    /// they have their own cap of the same size and expire within the bind window, so JOINs
    /// that never bind lock nobody out for more than a few seconds.
    pub fn join(&mut self, now: Instant, uid: u64, admission: Admission) -> Result<(), JoinError> {
        let until = Some(now + self.bind_window());
        if let Some(&i) = self.index.get(&uid) {
            let m = &mut self.members[i];
            m.joined = now;
            m.may_bind_until = until;
            m.admission = admission;
            if m.addr.is_none() {
                m.last_seen = now;
            }
            return Ok(());
        }
        if self.bound_count() >= self.config.max_members {
            return Err(JoinError::Full);
        }
        if self.members.len() - self.bound_count() >= self.config.max_members {
            // Pending joins have their own cap; expired ones make room first.
            self.expire_unbound(now);
            if self.members.len() - self.bound_count() >= self.config.max_members {
                return Err(JoinError::Full);
            }
        }
        self.index.insert(uid, self.members.len());
        self.members.push(Member {
            uid,
            addr: None,
            last_seen: now,
            joined: now,
            may_bind_until: until,
            admission,
            legacy_probe: None,
            session: None,
            bucket: TokenBucket::new(now, self.burst),
            rx: TokenBucket::new(now, self.rx_burst),
        });
        Ok(())
    }

    /// Removes `uid` (TCP LEAVE, UNREGISTER). Tells the other members with LEAVE if it was
    /// bound, and tells the user itself with KICK when `notify_leaver`. Returns false when
    /// `uid` was not a member.
    pub fn leave(
        &mut self,
        now: Instant,
        uid: u64,
        notify_leaver: bool,
        out: &mut impl Transmit,
    ) -> bool {
        let Some(&i) = self.index.get(&uid) else {
            return false;
        };
        if self.members[i].addr.is_some() {
            for j in 0..self.members.len() {
                if j != i {
                    self.send_system(now, j, SystemOp::Leave, uid, 0, out);
                }
            }
            if notify_leaver {
                self.send_system(now, i, SystemOp::Kick, uid, 0, out);
            }
        }
        self.remove_at(i);
        true
    }

    /// Removes members that never bound within the bind window (silently: nobody heard of
    /// them) and bound members silent for the peer timeout (LEAVE to the others, paid from
    /// the announcement budget: what it cannot pay now waits for a later sweep).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Transmit) {
        self.expire_unbound(now);
        let timeout = self.config.peer_timeout;
        while let Some(pos) = self
            .members
            .iter()
            .position(|m| now.saturating_duration_since(m.last_seen) >= timeout)
        {
            let cost = self.bound_count().saturating_sub(1) as f64;
            if !self.pay_announcements(now, cost) {
                return;
            }
            let uid = self.members[pos].uid;
            tracing::debug!(chid = self.chid, uid, "peer timed out");
            self.leave(now, uid, false, out);
            // Bounded: at most one entry per member, taken after every sweep.
            if self.timed_out.len() < self.members.len() + 64 {
                self.timed_out.push(uid);
            }
        }
    }

    /// The bound members timed out since the last call.
    pub fn take_timed_out(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.timed_out)
    }

    /// Removes, in one pass, the admitted members whose bind window has passed.
    fn expire_unbound(&mut self, now: Instant) {
        let window = self.bind_window();
        let before = self.members.len();
        self.members
            .retain(|m| m.addr.is_some() || now.saturating_duration_since(m.joined) < window);
        if self.members.len() != before {
            self.stats.expired_unbound += (before - self.members.len()) as u64;
            self.rebuild_index();
        }
    }

    /// The channel is closing (DELETE or server stop): SHUTDOWN to every bound member, then
    /// forget them all. The SHUTDOWN packet's uid is 0 ("everyone").
    pub fn shutdown(&mut self, now: Instant, out: &mut impl Transmit) {
        for j in 0..self.members.len() {
            self.send_system(now, j, SystemOp::Shutdown, 0, 0, out);
        }
        self.members.clear();
        self.index.clear();
        self.by_addr.clear();
    }

    /// Handles one received datagram from `src`. This is the hot path.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        out: &mut impl Transmit,
    ) {
        let Some(first) = packet::leading_u64(buf) else {
            self.stats.wrong_size += 1;
            return;
        };
        if packet::is_system(buf) {
            self.handle_system(now, src, buf, out);
            return;
        }
        // Regular packet: `first` is the sender's uid (0 is never admitted).
        let Some(&i) = self.index.get(&first) else {
            self.stats.not_member += 1;
            return;
        };
        if self.members[i].addr != Some(src) && !self.legacy_bind(now, i, src, out) {
            self.stats.wrong_address += 1;
            return;
        }
        if !self.take_rate(now, i) {
            return;
        }
        self.stats.forwarded += 1;
        let (rate, burst) = (self.rx_rate, self.rx_burst);
        for (j, m) in self.members.iter_mut().enumerate() {
            if let (true, Some(addr)) = (j != i, m.addr) {
                if m.rx.try_take(now, rate, burst) {
                    out.send(addr, buf);
                } else {
                    self.stats.rx_limited += 1;
                }
            }
        }
    }

    fn handle_system(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        out: &mut impl Transmit,
    ) {
        match packet::parse(buf) {
            Ok(Datagram::System(p)) if p.op == SystemOp::KeepAlive => {
                self.on_keepalive(now, src, p, out)
            }
            Ok(Datagram::System(p)) if p.op == SystemOp::Bind => self.on_bind(now, src, buf, out),
            // Bad checksum, unknown op, or an op only the server sends.
            _ => self.stats.bad_system += 1,
        }
    }

    fn on_keepalive(
        &mut self,
        now: Instant,
        src: SocketAddr,
        pkt: SystemPacket,
        out: &mut impl Transmit,
    ) {
        let Some(&i) = self.index.get(&pkt.uid) else {
            self.stats.not_member += 1;
            return;
        };
        if self.members[i].addr != Some(src) {
            if self.legacy_bind(now, i, src, out) {
                // Bound the seed's way; answered below like any bound member.
            } else {
                self.challenge(now, i, src, pkt.ackid, out);
                return;
            }
        }
        if !self.take_rate(now, i) {
            return;
        }
        self.stats.keepalives += 1;
        if pkt.ackid != 0 {
            self.send_system(now, i, SystemOp::Ack, pkt.uid, pkt.ackid, out);
        }
    }

    /// May member `i` bind (a new) address now?
    fn may_bind(&self, now: Instant, i: usize) -> bool {
        let m = &self.members[i];
        m.addr.is_none() || m.may_bind_until.is_some_and(|t| now < t)
    }

    /// True when `src` is free for member `i` (at most one member per address).
    fn address_free(&self, i: usize, src: SocketAddr) -> bool {
        !matches!(self.by_addr.get(&src), Some(&j) if j != i)
    }

    /// A KEEPALIVE from an address member `i` is not bound to: one CHALLENGE, if it may bind
    /// there and the IP's budget allows. The member's timers are not refreshed: forged
    /// datagrams must not keep an unbound member alive.
    fn challenge(
        &mut self,
        now: Instant,
        i: usize,
        src: SocketAddr,
        ackid: u32,
        out: &mut impl Transmit,
    ) {
        if !self.may_bind(now, i) {
            self.stats.wrong_address += 1;
            return;
        }
        if !self.address_free(i, src) {
            self.stats.address_taken += 1;
            return;
        }
        if !self.challenge_budget.try_take(now, src.ip()) {
            self.stats.challenge_limited += 1;
            return;
        }
        let uid = self.members[i].uid;
        let mut buf = [0u8; PACKET_SIZE];
        Challenge {
            uid,
            ackid,
            chid: self.chid,
            cookie: self.cookies.make(now, src, uid),
            server_kex: self.keys.kex.public(),
            kex_sig: self.keys.kex.signature(),
        }
        .encode(&mut buf);
        self.stats.challenges += 1;
        out.send(src, &buf);
    }

    fn on_bind(&mut self, now: Instant, src: SocketAddr, buf: &[u8], out: &mut impl Transmit) {
        let Some(b) = Bind::decode(buf) else {
            self.stats.bad_system += 1;
            return;
        };
        let Some(&i) = self.index.get(&b.uid) else {
            self.stats.not_member += 1;
            return;
        };
        let same_session = self.members[i].addr == Some(src)
            && self.members[i]
                .session
                .as_ref()
                .is_some_and(|s| s.client_kex == b.client_kex && s.key.proves_bind(buf));
        if same_session {
            // A retransmission (its ACK was lost): answer it again, nothing else.
            if self.take_rate(now, i) && b.ackid != 0 {
                self.send_system(now, i, SystemOp::Ack, b.uid, b.ackid, out);
            }
            return;
        }
        if !self.may_bind(now, i) {
            self.stats.wrong_address += 1;
            return;
        }
        if !self.address_free(i, src) {
            self.stats.address_taken += 1;
            return;
        }
        if b.chid != self.chid || !self.cookies.check(now, src, b.uid, &b.cookie) {
            self.stats.bad_cookie += 1;
            return;
        }
        if self.members[i]
            .admission
            .client_kex
            .is_some_and(|k| k != b.client_kex)
        {
            self.stats.wrong_kex += 1;
            return;
        }
        // The X25519 and the announcements are paid before any of it is done.
        let cost = self.bind_cost();
        if !self.pay_announcements(now, cost) {
            return;
        }
        let Some(key) = self.keys.kex.session_key(&b.client_kex, b.uid, self.chid) else {
            self.stats.bad_cookie += 1;
            return;
        };
        // Proof of possession: without it, anyone who saw the key a JOIN_KEX named (it is
        // public) could offer it from their own address and receive the channel's audio.
        if !key.proves_bind(buf) {
            self.stats.bad_proof += 1;
            // Only the X25519 was done: announcements not sent are given back, so forged
            // proofs cannot spend the budget legitimate binds need.
            self.announce.refund(cost - 1.0, ANNOUNCE_BURST);
            return;
        }
        self.set_addr(i, src);
        let m = &mut self.members[i];
        m.session = Some(Session {
            key,
            client_kex: b.client_kex,
            seq: 0,
        });
        m.may_bind_until = None;
        m.last_seen = now;
        self.stats.binds += 1;
        self.announce_bind(now, i, out);
        if b.ackid != 0 {
            self.send_system(now, i, SystemOp::Ack, b.uid, b.ackid, out);
        }
    }

    /// The seed's binding, for members the control plane marked legacy: the second datagram
    /// from the same unbound address within a cookie slot binds it (the first one got a
    /// CHALLENGE, so a client that can answer it never binds this way). True when `src` is
    /// now member `i`'s address.
    fn legacy_bind(
        &mut self,
        now: Instant,
        i: usize,
        src: SocketAddr,
        out: &mut impl Transmit,
    ) -> bool {
        if !self.members[i].admission.legacy || !self.may_bind(now, i) || !self.address_free(i, src)
        {
            return false;
        }
        let probe = self.members[i].legacy_probe;
        let seen_before =
            probe.is_some_and(|(a, t)| a == src && now.saturating_duration_since(t) < COOKIE_SLOT);
        if !seen_before {
            self.members[i].legacy_probe = Some((src, now));
            return false;
        }
        if !self.pay_announcements(now, self.bind_cost()) {
            return false;
        }
        self.set_addr(i, src);
        let m = &mut self.members[i];
        m.session = None;
        m.may_bind_until = None;
        m.legacy_probe = None;
        self.stats.binds += 1;
        self.announce_bind(now, i, out);
        true
    }

    /// What binding one more member costs the announcement budget: a JOIN to each bound
    /// member, one per bound member to the newcomer, and its ACK.
    fn bind_cost(&self) -> f64 {
        2.0 * self.bound_count() as f64 + 1.0
    }

    /// Takes `cost` announcements from the budget (on credit, see
    /// [`TokenBucket::take_on_credit`]); false, counted, when it is spent.
    fn pay_announcements(&mut self, now: Instant, cost: f64) -> bool {
        if self
            .announce
            .take_on_credit(now, cost, ANNOUNCE_RATE, ANNOUNCE_BURST)
        {
            return true;
        }
        self.stats.announce_limited += 1;
        false
    }

    /// Member `i` is now at `addr` (updates the address index and the bound count).
    fn set_addr(&mut self, i: usize, addr: SocketAddr) {
        if let Some(old) = self.members[i].addr {
            self.by_addr.remove(&old);
        }
        self.members[i].addr = Some(addr);
        self.by_addr.insert(addr, i);
    }

    /// Takes one packet from member `i`'s rate and refreshes its timer.
    fn take_rate(&mut self, now: Instant, i: usize) -> bool {
        let (rate, burst) = (f64::from(self.config.max_member_pps), self.burst);
        let m = &mut self.members[i];
        if !m.bucket.try_take(now, rate, burst) {
            self.stats.rate_limited += 1;
            return false;
        }
        m.last_seen = now;
        true
    }

    /// Member `i` just bound: JOIN(it) to the other bound members, and JOIN(each of them)
    /// to it.
    fn announce_bind(&mut self, now: Instant, i: usize, out: &mut impl Transmit) {
        let uid = self.members[i].uid;
        tracing::debug!(chid = self.chid, uid, addr = ?self.members[i].addr, "member bound");
        for j in 0..self.members.len() {
            if j != i && self.members[j].addr.is_some() {
                self.send_system(now, j, SystemOp::Join, uid, 0, out);
                let other = self.members[j].uid;
                self.send_system(now, i, SystemOp::Join, other, 0, out);
            }
        }
    }

    /// Sends a system packet to bound member `j`: sealed with its session key, or the
    /// seed's unsigned packet for a legacy member (KICK becomes the seed's LEAVE(itself)).
    /// Within the destination's budget.
    fn send_system(
        &mut self,
        now: Instant,
        j: usize,
        op: SystemOp,
        uid: u64,
        ackid: u32,
        out: &mut impl Transmit,
    ) {
        let unix_ms = self.unix_ms(now);
        let (chid, rate, burst) = (self.chid, self.rx_rate, self.rx_burst);
        let m = &mut self.members[j];
        let Some(addr) = m.addr else {
            return;
        };
        if !m.rx.try_take(now, rate, burst) {
            self.stats.rx_limited += 1;
            return;
        }
        let mut buf = [0u8; PACKET_SIZE];
        match &mut m.session {
            Some(s) => {
                s.seq += 1;
                let fields = Sealed {
                    chid,
                    recipient: m.uid,
                    seq: s.seq,
                    unix_ms,
                };
                s.key
                    .seal(&SystemPacket { op, uid, ackid }, &fields, &mut buf);
            }
            None => {
                let op = if op == SystemOp::Kick {
                    SystemOp::Leave
                } else {
                    op
                };
                SystemPacket { op, uid, ackid }.encode(&mut buf);
            }
        }
        out.send(addr, &buf);
    }

    fn remove_at(&mut self, i: usize) {
        let m = self.members.remove(i);
        self.index.remove(&m.uid);
        if let Some(a) = m.addr {
            self.by_addr.remove(&a);
        }
        for (k, later) in self.members.iter().enumerate().skip(i) {
            self.index.insert(later.uid, k);
            if let Some(a) = later.addr {
                self.by_addr.insert(a, k);
            }
        }
    }

    fn rebuild_index(&mut self) {
        self.index.clear();
        self.by_addr.clear();
        for (k, m) in self.members.iter().enumerate() {
            self.index.insert(m.uid, k);
            if let Some(a) = m.addr {
                self.by_addr.insert(a, k);
            }
        }
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::packet::encode_regular;
    use kv_proto::session::ClientKex;

    use crate::channel::cookie::{CHALLENGE_BURST, CHALLENGE_RATE};

    const CHID: u64 = 77;

    fn plain() -> Admission {
        Admission::default()
    }

    fn keys() -> VoiceKeys {
        let signing = SigningKey::from_bytes(&[3u8; 32]);
        VoiceKeys {
            kex: ServerKex::new(&signing, [4u8; 32]),
            cookie_secret: [5u8; 32],
        }
    }

    fn relay(now: Instant) -> ChannelRelay {
        ChannelRelay::new(
            CHID,
            keys(),
            RelayConfig {
                peer_timeout: Duration::from_secs(10),
                max_members: 4,
                max_member_pps: 100,
            },
            now,
        )
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn keepalive(uid: u64, ackid: u32) -> [u8; PACKET_SIZE] {
        let mut b = [0u8; PACKET_SIZE];
        SystemPacket {
            op: SystemOp::KeepAlive,
            uid,
            ackid,
        }
        .encode(&mut b);
        b
    }

    fn voice(uid: u64, fill: u8) -> [u8; PACKET_SIZE] {
        let mut b = [0u8; PACKET_SIZE];
        encode_regular(uid, &[fill; 504], &mut b);
        b
    }

    /// The client side of one member in these tests.
    struct Client {
        uid: u64,
        addr: SocketAddr,
        kex: ClientKex,
        key: Option<SessionKey>,
    }

    impl Client {
        fn new(uid: u64) -> Self {
            Self {
                uid,
                addr: addr(1000 + uid as u16),
                kex: ClientKex::new([uid as u8; 32]),
                key: None,
            }
        }

        /// HELLO, CHALLENGE, BIND; returns what the BIND produced.
        fn bind(
            &mut self,
            r: &mut ChannelRelay,
            now: Instant,
            ackid: u32,
        ) -> Vec<(SocketAddr, Vec<u8>)> {
            let mut out = Vec::new();
            r.handle_datagram(now, self.addr, &keepalive(self.uid, ackid), &mut out);
            assert_eq!(out.len(), 1, "one CHALLENGE");
            assert_eq!(out[0].0, self.addr);
            let c = Challenge::decode(&out[0].1).expect("a CHALLENGE");
            assert_eq!((c.uid, c.ackid, c.chid), (self.uid, ackid, CHID));
            self.key = self.kex.session_key(&c.server_kex, self.uid, CHID);
            let mut b = [0u8; PACKET_SIZE];
            Bind {
                uid: self.uid,
                ackid,
                chid: CHID,
                cookie: c.cookie,
                client_kex: self.kex.public(),
            }
            .encode(self.key.as_ref().expect("a session key"), &mut b);
            let mut out = Vec::new();
            r.handle_datagram(now, self.addr, &b, &mut out);
            out
        }

        /// A sealed packet for this client: (op, uid, ackid).
        fn open(&self, pkt: &[u8]) -> (SystemOp, u64, u32) {
            let f = self.key.as_ref().unwrap().open(pkt).expect("sealed for us");
            assert_eq!((f.chid, f.recipient), (CHID, self.uid));
            match packet::parse(pkt) {
                Ok(Datagram::System(p)) => (p.op, p.uid, p.ackid),
                other => panic!("not a system packet: {other:?}"),
            }
        }
    }

    /// A relay with members 1, 2, 3 bound at ports 1001..1003; output so far discarded.
    fn three(now: Instant) -> (ChannelRelay, Vec<Client>) {
        let mut r = relay(now);
        let mut clients: Vec<Client> = (1..=3).map(Client::new).collect();
        for c in &mut clients {
            r.join(now, c.uid, plain()).unwrap();
            c.bind(&mut r, now, 1);
        }
        (r, clients)
    }

    #[test]
    fn binding_takes_a_cookie_and_announces_both_ways() {
        let t = Instant::now();
        let mut r = relay(t);
        let (mut a, mut b) = (Client::new(1), Client::new(2));
        r.join(t, 1, plain()).unwrap();
        r.join(t, 2, plain()).unwrap();
        let out = a.bind(&mut r, t, 9);
        assert_eq!(out.len(), 1, "alone: only the ACK");
        assert_eq!(a.open(&out[0].1), (SystemOp::Ack, 1, 9));
        assert_eq!(r.bound_addr(1), Some(a.addr));
        let out = b.bind(&mut r, t, 0);
        let got: Vec<(SocketAddr, (SystemOp, u64, u32))> = out
            .iter()
            .map(|(to, p)| {
                let c = if *to == a.addr { &a } else { &b };
                (*to, c.open(p))
            })
            .collect();
        assert_eq!(
            got,
            [
                (a.addr, (SystemOp::Join, 2, 0)),
                (b.addr, (SystemOp::Join, 1, 0))
            ]
        );
        assert_eq!(r.stats().binds, 2);
    }

    #[test]
    fn forged_first_datagrams_bring_one_same_size_challenge_and_never_bind() {
        let t = Instant::now();
        let mut r = relay(t);
        r.join(t, 1, plain()).unwrap();
        let victim = SocketAddr::from(([127, 0, 0, 9], 4000));
        let mut out = Vec::new();
        let mut forged = 0usize;
        for k in 0..2000u32 {
            let now = t + Duration::from_millis(u64::from(k));
            r.handle_datagram(now, victim, &keepalive(1, k + 1), &mut out);
            r.handle_datagram(now, victim, &voice(1, 0), &mut out);
            forged += 2 * PACKET_SIZE;
        }
        let sent: usize = out.iter().map(|(_, p)| p.len()).sum();
        assert!(out
            .iter()
            .all(|(to, p)| *to == victim && p.len() == PACKET_SIZE));
        assert!(out.iter().all(|(_, p)| Challenge::decode(p).is_some()));
        // 2 s of forgery: the burst plus the per-IP rate, far below what was forged.
        let allowed = CHALLENGE_BURST + 2.0 * CHALLENGE_RATE + 1.0;
        assert!(out.len() as f64 <= allowed, "{} challenges", out.len());
        assert!(sent <= forged);
        assert_eq!(r.bound_addr(1), None);
        assert!(r.stats().challenge_limited > 0);
        // A BIND with a made-up or another address's cookie binds nothing.
        let c = Challenge::decode(&out[0].1).unwrap();
        let mut b = [0u8; PACKET_SIZE];
        Bind {
            uid: 1,
            ackid: 1,
            chid: CHID,
            cookie: c.cookie,
            client_kex: [7; 32],
        }
        .encode_unproven(&mut b);
        out.clear();
        r.handle_datagram(t, addr(5555), &b, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().bad_cookie, 1);
        assert_eq!(r.bound_addr(1), None);
    }

    #[test]
    fn cookies_go_stale() {
        let t = Instant::now();
        let mut r = relay(t);
        r.join(t, 1, plain()).unwrap();
        let mut c = Client::new(1);
        let mut out = Vec::new();
        r.handle_datagram(t, c.addr, &keepalive(1, 1), &mut out);
        let ch = Challenge::decode(&out[0].1).unwrap();
        c.key = c.kex.session_key(&ch.server_kex, 1, CHID);
        let mut b = [0u8; PACKET_SIZE];
        Bind {
            uid: 1,
            ackid: 2,
            chid: CHID,
            cookie: ch.cookie,
            client_kex: c.kex.public(),
        }
        .encode(c.key.as_ref().unwrap(), &mut b);
        out.clear();
        // Within the bind window but past two cookie slots: refused.
        r.join(t + 2 * COOKIE_SLOT, 1, plain()).unwrap();
        r.handle_datagram(t + 2 * COOKIE_SLOT, c.addr, &b, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().bad_cookie, 1);
        // In time it binds; a retransmitted BIND gets its ACK again and nothing else.
        r.handle_datagram(t + COOKIE_SLOT, c.addr, &b, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(c.open(&out[0].1), (SystemOp::Ack, 1, 2));
        out.clear();
        r.handle_datagram(t + COOKIE_SLOT, c.addr, &b, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(c.open(&out[0].1), (SystemOp::Ack, 1, 2));
        assert_eq!(r.stats().binds, 1);
    }

    #[test]
    fn regular_packets_go_unchanged_to_every_other_bound_member() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        r.join(t, 4, plain()).unwrap(); // admitted, never bound: receives nothing
        let mut out = Vec::new();
        let pkt = voice(2, 0xAB);
        r.handle_datagram(t, c[1].addr, &pkt, &mut out);
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(dsts, [c[0].addr, c[2].addr]);
        assert!(out.iter().all(|(_, p)| p[..] == pkt[..]));
        assert_eq!(r.stats().forwarded, 1);
    }

    #[test]
    fn drop_rules() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        let a = c[0].addr;
        let mut out = Vec::new();
        // Wrong sizes.
        r.handle_datagram(t, a, &voice(1, 0)[..511], &mut out);
        r.handle_datagram(t, a, &[0u8; 513], &mut out);
        r.handle_datagram(t, a, &[], &mut out);
        // Not joined, uid 0.
        r.handle_datagram(t, addr(1009), &voice(9, 0), &mut out);
        r.handle_datagram(t, a, &voice(0, 0), &mut out);
        // A bound member's uid from another address: no re-JOIN, so not even a CHALLENGE.
        r.handle_datagram(t, addr(2001), &voice(1, 0), &mut out);
        r.handle_datagram(t, addr(2001), &keepalive(1, 5), &mut out);
        // Bad checksum; server-only operations.
        let mut bad = keepalive(1, 5);
        bad[21] ^= 1;
        r.handle_datagram(t, a, &bad, &mut out);
        for op in [
            SystemOp::Join,
            SystemOp::Leave,
            SystemOp::Ack,
            SystemOp::Shutdown,
            SystemOp::Challenge,
            SystemOp::Kick,
        ] {
            let mut b = [0u8; PACKET_SIZE];
            SystemPacket {
                op,
                uid: 1,
                ackid: 1,
            }
            .encode(&mut b);
            r.handle_datagram(t, a, &b, &mut out);
        }
        assert!(out.is_empty(), "dropped packets produce nothing: {out:?}");
        let s = r.stats();
        assert_eq!(s.wrong_size, 3);
        assert_eq!(s.not_member, 2);
        assert_eq!(s.wrong_address, 2);
        assert_eq!(s.bad_system, 7);
        assert_eq!(s.forwarded, 0);
    }

    #[test]
    fn keepalive_with_ackid_gets_a_sealed_ack_to_the_bound_address_only() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        let mut out = Vec::new();
        r.handle_datagram(t, c[0].addr, &keepalive(1, 0), &mut out);
        assert!(out.is_empty(), "ackid 0 asks for nothing");
        r.handle_datagram(t, c[0].addr, &keepalive(1, 0xBEEF), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, c[0].addr);
        assert_eq!(c[0].open(&out[0].1), (SystemOp::Ack, 1, 0xBEEF));
        assert!(c[1].key.as_ref().unwrap().open(&out[0].1).is_none());
    }

    #[test]
    fn one_member_per_address() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        r.join(t, 4, plain()).unwrap();
        let mut thief = Client::new(4);
        thief.addr = c[0].addr; // member 1's address
        let mut out = Vec::new();
        r.handle_datagram(t, thief.addr, &keepalive(4, 1), &mut out);
        assert!(out.is_empty(), "no CHALLENGE for a taken address");
        assert_eq!(r.stats().address_taken, 1);
        assert_eq!(r.bound_addr(4), None);
    }

    #[test]
    fn rejoin_keeps_the_binding_until_a_new_address_proves_itself() {
        let t = Instant::now();
        let (mut r, mut c) = three(t);
        r.join(t, 1, plain()).unwrap();
        assert_eq!(r.bound_addr(1), Some(c[0].addr));
        // A forged KEEPALIVE from a victim's address gets one CHALLENGE, and moves nothing.
        let victim = addr(4444);
        let mut out = Vec::new();
        r.handle_datagram(t, victim, &keepalive(1, 3), &mut out);
        assert_eq!(out.len(), 1);
        assert!(Challenge::decode(&out[0].1).is_some());
        assert_eq!(r.bound_addr(1), Some(c[0].addr));
        out.clear();
        r.handle_datagram(t, c[1].addr, &voice(2, 1), &mut out);
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            dsts,
            [c[0].addr, c[2].addr],
            "audio still goes to the old address"
        );
        // The restarted client at a new address completes the handshake and moves there.
        c[0].addr = addr(3001);
        c[0].kex = ClientKex::new([99; 32]);
        c[0].bind(&mut r, t, 4);
        assert_eq!(r.bound_addr(1), Some(addr(3001)));
        out.clear();
        r.handle_datagram(t, addr(1001), &voice(1, 0), &mut out);
        assert!(out.is_empty(), "the old address is not the member any more");
        // Without a new JOIN, the window closes: no more moves.
        let later = t + BIND_WINDOW;
        r.handle_datagram(later, addr(3002), &keepalive(1, 5), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unbound_members_expire_and_do_not_fill_the_channel() {
        let t = Instant::now();
        let (mut r, _c) = three(t);
        // max_members is 4: three bound, and four pending joins on top (their own cap).
        for uid in 10..14 {
            r.join(t, uid, plain()).unwrap();
        }
        assert_eq!(r.join(t, 14, plain()), Err(JoinError::Full));
        assert_eq!(r.members().count(), 3 + 4);
        assert_eq!(r.bound_members().collect::<Vec<_>>(), [1, 2, 3]);
        let mut out = Vec::new();
        r.handle_timeout(t + BIND_WINDOW, &mut out);
        assert!(out.is_empty(), "nobody heard of them, nobody is told");
        assert_eq!(r.members().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(r.stats().expired_unbound, 4);
        // The fourth real member gets in and binds.
        r.join(t + BIND_WINDOW, 4, plain()).unwrap();
        let mut d = Client::new(4);
        let out = d.bind(&mut r, t + BIND_WINDOW, 1);
        assert_eq!(out.len(), 3 + 3 + 1);
        assert_eq!(r.join(t, 5, plain()), Err(JoinError::Full));
    }

    #[test]
    fn silent_members_time_out_and_others_hear_leave() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        let mut out = Vec::new();
        let t9 = t + Duration::from_secs(9);
        r.handle_datagram(t9, c[0].addr, &keepalive(1, 0), &mut out);
        r.handle_datagram(t9, c[1].addr, &voice(2, 1), &mut out);
        out.clear();
        r.handle_timeout(t + Duration::from_millis(9999), &mut out);
        assert!(out.is_empty());
        r.handle_timeout(t + Duration::from_secs(10), &mut out);
        assert!(!r.is_member(3));
        let mut got: Vec<(SocketAddr, (SystemOp, u64, u32))> = out
            .iter()
            .map(|(a, p)| (*a, c.iter().find(|c| c.addr == *a).unwrap().open(p)))
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            [
                (c[0].addr, (SystemOp::Leave, 3, 0)),
                (c[1].addr, (SystemOp::Leave, 3, 0))
            ]
        );
        out.clear();
        r.handle_datagram(t9, c[2].addr, &voice(3, 0), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn kicked_member_hears_kick_and_self_leave_does_not() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        let mut out = Vec::new();
        assert!(r.leave(t, 2, true, &mut out));
        let got: Vec<(SocketAddr, SystemOp)> = out
            .iter()
            .map(|(a, p)| (*a, c.iter().find(|c| c.addr == *a).unwrap().open(p).0))
            .collect();
        assert_eq!(
            got,
            [
                (c[0].addr, SystemOp::Leave),
                (c[2].addr, SystemOp::Leave),
                (c[1].addr, SystemOp::Kick)
            ]
        );
        out.clear();
        assert!(r.leave(t, 3, false, &mut out));
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(dsts, [c[0].addr]);
        assert!(!r.leave(t, 3, false, &mut out), "no longer a member");
        assert_eq!(r.members().collect::<Vec<_>>(), [1]);
        // Index stays consistent after removals in the middle.
        r.join(t, 9, plain()).unwrap();
        let mut n = Client::new(9);
        n.bind(&mut r, t, 0);
        out.clear();
        r.handle_datagram(t, n.addr, &voice(9, 1), &mut out);
        assert_eq!(out.iter().filter(|(a, _)| *a == c[0].addr).count(), 1);
    }

    #[test]
    fn sequence_numbers_rise_per_recipient() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        let mut out = Vec::new();
        r.shutdown(t, &mut out);
        assert_eq!(out.len(), 3);
        for (to, p) in &out {
            let cl = c.iter().find(|c| c.addr == *to).unwrap();
            assert_eq!(cl.open(p).0, SystemOp::Shutdown);
            // Member 1 got ACK + JOIN(2) + JOIN(3) before: its SHUTDOWN is its fourth.
            if cl.uid == 1 {
                assert_eq!(cl.key.as_ref().unwrap().open(p).unwrap().seq, 4);
            }
        }
        assert_eq!(r.members().count(), 0);
    }

    #[test]
    fn bind_storm_is_paid_from_the_announcement_budget() {
        let t = Instant::now();
        let mut r = ChannelRelay::new(
            CHID,
            keys(),
            RelayConfig {
                peer_timeout: Duration::from_secs(60),
                max_members: 1024,
                max_member_pps: 100,
            },
            t,
        );
        let mut sent = 0usize;
        let mut bound = 0usize;
        for uid in 1..=300u64 {
            r.join(t, uid, plain()).unwrap();
            let mut c = Client::new(uid);
            c.addr = SocketAddr::from(([127, 0, 1, (uid % 250) as u8], 2000 + uid as u16));
            let out = c.bind(&mut r, t, 0);
            sent += out.len();
            if r.bound_addr(uid).is_some() {
                bound += 1;
            }
        }
        // All at one instant: the burst pays for some binds (the last on credit), the rest
        // wait (clients retry).
        assert!(sent as f64 <= ANNOUNCE_BURST + 2.0 * bound as f64 + 1.0 + 300.0);
        assert!(bound > 10 && bound < 300, "{bound}");
        assert!(r.stats().announce_limited > 0);
    }

    #[test]
    fn legacy_members_bind_on_a_second_datagram_and_get_unsealed_packets() {
        let t = Instant::now();
        let (mut r, c) = three(t);
        r.join(
            t,
            4,
            Admission {
                legacy: true,
                client_kex: None,
            },
        )
        .unwrap();
        let seed = addr(1004);
        let mut out = Vec::new();
        r.handle_datagram(t, seed, &keepalive(4, 1), &mut out);
        assert!(Challenge::decode(&out[0].1).is_some(), "first: a CHALLENGE");
        out.clear();
        r.handle_datagram(t, seed, &keepalive(4, 2), &mut out);
        assert_eq!(r.bound_addr(4), Some(seed));
        let to_seed: Vec<SystemPacket> = out
            .iter()
            .filter(|(a, _)| *a == seed)
            .map(|(_, p)| match packet::parse(p) {
                Ok(Datagram::System(s)) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(to_seed.len(), 4, "three JOINs and the ACK");
        assert_eq!(to_seed[3].op, SystemOp::Ack);
        // The others still get sealed packets.
        let to_a = out.iter().find(|(a, _)| *a == c[0].addr).unwrap();
        assert_eq!(c[0].open(&to_a.1), (SystemOp::Join, 4, 0));
        // It counts as bound: the channel (4 members) is full now.
        assert_eq!(r.join(t, 5, plain()), Err(JoinError::Full));
    }

    #[test]
    fn a_join_naming_a_key_lets_only_that_client_bind() {
        let t = Instant::now();
        let mut r = relay(t);
        let owner = Client::new(1);
        r.join(
            t,
            1,
            Admission {
                legacy: false,
                client_kex: Some(owner.kex.public()),
            },
        )
        .unwrap();
        // Someone who knows the uid binds from its own (reachable) address: refused.
        let mut thief = Client::new(1);
        thief.addr = addr(6666);
        thief.kex = ClientKex::new([0x66; 32]);
        let out = thief.bind(&mut r, t, 1);
        assert!(out.is_empty());
        assert_eq!(r.stats().wrong_kex, 1);
        assert_eq!(r.bound_addr(1), None);
        // Offering the owner's key (it is public) without its secret: no proof, no bind.
        let mut out = Vec::new();
        r.handle_datagram(t, thief.addr, &keepalive(1, 3), &mut out);
        let c = Challenge::decode(&out[0].1).unwrap();
        let bind = Bind {
            uid: 1,
            ackid: 3,
            chid: CHID,
            cookie: c.cookie,
            client_kex: owner.kex.public(),
        };
        let thief_key = thief.kex.session_key(&c.server_kex, 1, CHID).unwrap();
        for forged in [0, 1] {
            let mut b = [0u8; PACKET_SIZE];
            if forged == 0 {
                bind.encode_unproven(&mut b);
            } else {
                bind.encode(&thief_key, &mut b);
            }
            out.clear();
            r.handle_datagram(t, thief.addr, &b, &mut out);
            assert!(out.is_empty());
        }
        assert_eq!(r.stats().bad_proof, 2);
        assert_eq!(r.bound_addr(1), None);
        let mut owner = owner;
        let out = owner.bind(&mut r, t, 2);
        assert_eq!(owner.open(&out[0].1), (SystemOp::Ack, 1, 2));
    }

    #[test]
    fn a_destination_receives_at_most_its_budget() {
        let t = Instant::now();
        // 1 packet/s per member: a send burst of 20, a receive budget of 16/s, burst 64.
        let mut r = ChannelRelay::new(
            CHID,
            keys(),
            RelayConfig {
                peer_timeout: Duration::from_secs(60),
                max_members: 16,
                max_member_pps: 1,
            },
            t,
        );
        let mut clients: Vec<Client> = (1..=11).map(Client::new).collect();
        for c in &mut clients {
            r.join(t, c.uid, plain()).unwrap();
            c.bind(&mut r, t, 0);
        }
        let listener = clients[0].addr;
        let mut out = Vec::new();
        for c in &clients[1..] {
            for k in 0..20 {
                r.handle_datagram(t, c.addr, &voice(c.uid, k), &mut out);
            }
        }
        // 200 packets for the listener at one instant; its budget had 64 (less what its
        // JOINs took).
        let to_listener = out.iter().filter(|(a, _)| *a == listener).count();
        assert!(to_listener <= 64, "{to_listener}");
        assert!(r.stats().rx_limited > 0);
        // A second later, 16 more.
        out.clear();
        let later = t + Duration::from_secs(1);
        for c in &clients[1..] {
            r.handle_datagram(later, c.addr, &voice(c.uid, 0), &mut out);
        }
        let to_listener = out.iter().filter(|(a, _)| *a == listener).count();
        assert!((1..=10).contains(&to_listener), "{to_listener}");
    }
}
