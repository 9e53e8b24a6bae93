//! `ChannelRelay`: one channel's relay logic, sans-IO.
//!
//! It owns the membership of one channel and decides, for each datagram, event or tick,
//! which 512-byte packets go to which addresses. It never touches a socket: the caller
//! passes `now`, the source address and the bytes, and gets the output through a
//! [`Transmit`] sink. That keeps the hot path (a regular packet fanned out to the other
//! members) free of allocation and locks, lets tests drive it with virtual time, and lets
//! the socket glue batch syscalls (recvmmsg/sendmmsg) without touching these rules.
//!
//! Rules (WIRE.md §2, PROTOCOL.md "Relay"):
//! - JOIN over TCP *admits* a uid. Its first valid datagram *binds* its address. Only a
//!   bound address has proven membership; nothing is ever sent anywhere else.
//! - A regular packet from an admitted uid at its bound address goes, unchanged, to every
//!   other bound member. Everything else is dropped: wrong size, unknown uid, wrong source
//!   address, bad checksum, an operation clients may not send, a member over its rate.
//! - KEEPALIVE with a non-zero ackid is answered with ACK (same ackid) to the bound address.
//! - Binding announces JOIN(uid) to the other bound members and sends the newcomer one
//!   JOIN per member already bound, so it learns who is there.
//! - A member silent for the peer timeout is removed; LEAVE goes to the others.
//! - Every system packet the relay sends is signed with the server's key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kv_proto::packet::{self, Datagram, SystemOp, SystemPacket, PACKET_SIZE};

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

/// Limits and timers of one channel.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A member silent this long is removed.
    pub peer_timeout: Duration,
    /// Members admitted at once.
    pub max_members: usize,
    /// Average packets per second one member may send.
    pub max_member_pps: u32,
}

/// Why a JOIN was refused by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The channel already has `max_members` members.
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
    /// Datagrams from a member's uid at another address than its bound one.
    pub wrong_address: u64,
    /// System packets with a bad checksum or an operation clients may not send.
    pub bad_system: u64,
    /// Datagrams over the member's rate.
    pub rate_limited: u64,
    /// Keepalives accepted.
    pub keepalives: u64,
}

/// One admitted user.
#[derive(Debug, Clone)]
struct Member {
    /// The user.
    uid: u64,
    /// Where it sends from, once its first datagram arrived.
    addr: Option<SocketAddr>,
    /// Last datagram (or the JOIN) time, for the peer timeout.
    last_seen: Instant,
    /// Rate cap.
    bucket: TokenBucket,
}

/// One channel's membership and forwarding rules. See the module docs.
#[derive(Debug)]
pub struct ChannelRelay {
    /// Channel id, written into every signed packet (no replay across channels).
    chid: u64,
    /// Signs system packets.
    key: SigningKey,
    /// Limits.
    config: RelayConfig,
    /// Members in join order; the fan-out loop walks this contiguous list.
    members: Vec<Member>,
    /// uid → index in `members`.
    index: HashMap<u64, usize>,
    /// A monotonic instant and the unix time it corresponds to, so signed timestamps
    /// follow `now` (virtual in tests) instead of reading the clock per packet.
    epoch: (Instant, u64),
    /// Token bucket size, derived from the rate.
    burst: f64,
    /// What happened so far.
    stats: RelayStats,
}

impl ChannelRelay {
    /// An empty channel relay.
    pub fn new(chid: u64, key: SigningKey, config: RelayConfig, now: Instant) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // A quarter second of packets, at least 20: voice bursts after a stall fit.
        let burst = (f64::from(config.max_member_pps) / 4.0).max(20.0);
        Self {
            chid,
            key,
            config,
            members: Vec::new(),
            index: HashMap::new(),
            epoch: (now, unix_ms),
            burst,
            stats: RelayStats::default(),
        }
    }

    /// The channel id.
    pub fn chid(&self) -> u64 {
        self.chid
    }

    /// Counters so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Admitted uids in join order.
    pub fn members(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.iter().map(|m| m.uid)
    }

    /// True when `uid` is admitted.
    pub fn is_member(&self, uid: u64) -> bool {
        self.index.contains_key(&uid)
    }

    /// The address `uid` is bound to, if it has sent a valid datagram.
    pub fn bound_addr(&self, uid: u64) -> Option<SocketAddr> {
        self.index.get(&uid).and_then(|&i| self.members[i].addr)
    }

    /// Admits `uid` (TCP JOIN). Joining again is allowed and unbinds the address, so a
    /// restarted client can bind its new socket; it is re-announced when it binds.
    pub fn join(&mut self, now: Instant, uid: u64) -> Result<(), JoinError> {
        if let Some(&i) = self.index.get(&uid) {
            let m = &mut self.members[i];
            m.addr = None;
            m.last_seen = now;
            return Ok(());
        }
        if self.members.len() >= self.config.max_members {
            return Err(JoinError::Full);
        }
        self.index.insert(uid, self.members.len());
        self.members.push(Member {
            uid,
            addr: None,
            last_seen: now,
            bucket: TokenBucket::new(now, self.burst),
        });
        Ok(())
    }

    /// Removes `uid` (TCP LEAVE, UNREGISTER). Tells the other members with LEAVE if it was
    /// bound, and tells the user itself when `notify_leaver` (it was kicked). Returns false
    /// when `uid` was not a member.
    pub fn leave(
        &mut self,
        now: Instant,
        uid: u64,
        notify_leaver: bool,
        out: &mut impl Transmit,
    ) -> bool {
        let Some(m) = self.remove(uid) else {
            return false;
        };
        if let Some(addr) = m.addr {
            let pkt = self.signed(now, SystemOp::Leave, uid, 0);
            self.send_to_bound(&pkt, out);
            if notify_leaver {
                out.send(addr, &pkt);
            }
        }
        true
    }

    /// Removes members silent for the peer timeout and tells the others.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Transmit) {
        let timeout = self.config.peer_timeout;
        while let Some(pos) = self
            .members
            .iter()
            .position(|m| now.saturating_duration_since(m.last_seen) >= timeout)
        {
            let uid = self.members[pos].uid;
            tracing::debug!(chid = self.chid, uid, "peer timed out");
            self.leave(now, uid, false, out);
        }
    }

    /// The channel is closing (DELETE or server stop): SHUTDOWN to every bound member, then
    /// forget them all. The SHUTDOWN packet's uid is 0 ("everyone").
    pub fn shutdown(&mut self, now: Instant, out: &mut impl Transmit) {
        let pkt = self.signed(now, SystemOp::Shutdown, 0, 0);
        self.send_to_bound(&pkt, out);
        self.members.clear();
        self.index.clear();
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
        let Some(i) = self.admit_source(now, first, src, out) else {
            return;
        };
        self.stats.forwarded += 1;
        self.send_to_others(i, buf, out);
    }

    fn handle_system(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        out: &mut impl Transmit,
    ) {
        let pkt = match packet::parse(buf) {
            Ok(Datagram::System(p)) if p.op == SystemOp::KeepAlive => p,
            _ => {
                // Bad checksum, unknown op, or an op only the server sends.
                self.stats.bad_system += 1;
                return;
            }
        };
        if self.admit_source(now, pkt.uid, src, out).is_none() {
            return;
        }
        self.stats.keepalives += 1;
        if pkt.ackid != 0 {
            let ack = self.signed(now, SystemOp::Ack, pkt.uid, pkt.ackid);
            out.send(src, &ack);
        }
    }

    /// Checks that `uid` is a member sending from its address (binding it on its first
    /// datagram) and within its rate; refreshes its timer. Returns its index, or `None`
    /// when the datagram must be dropped.
    fn admit_source(
        &mut self,
        now: Instant,
        uid: u64,
        src: SocketAddr,
        out: &mut impl Transmit,
    ) -> Option<usize> {
        let Some(&i) = self.index.get(&uid) else {
            self.stats.not_member += 1;
            return None;
        };
        let (rate, burst) = (f64::from(self.config.max_member_pps), self.burst);
        let m = &mut self.members[i];
        match m.addr {
            Some(addr) if addr != src => {
                self.stats.wrong_address += 1;
                return None;
            }
            Some(_) => {}
            None => {
                m.addr = Some(src);
                self.announce_bind(now, i, out);
            }
        }
        let m = &mut self.members[i];
        if !m.bucket.try_take(now, rate, burst) {
            self.stats.rate_limited += 1;
            return None;
        }
        m.last_seen = now;
        Some(i)
    }

    /// Member `i` just bound: JOIN(it) to the other bound members, and JOIN(each of them)
    /// to it.
    fn announce_bind(&mut self, now: Instant, i: usize, out: &mut impl Transmit) {
        let (uid, Some(addr)) = (self.members[i].uid, self.members[i].addr) else {
            return;
        };
        tracing::debug!(chid = self.chid, uid, %addr, "member bound");
        let pkt = self.signed(now, SystemOp::Join, uid, 0);
        self.send_to_others(i, &pkt, out);
        for (j, m) in self.members.iter().enumerate() {
            if j != i && m.addr.is_some() {
                let pkt = self.signed(now, SystemOp::Join, m.uid, 0);
                out.send(addr, &pkt);
            }
        }
    }

    /// Sends `pkt` to every bound member but member `i` (the sender, or the newcomer).
    fn send_to_others(&self, i: usize, pkt: &[u8], out: &mut impl Transmit) {
        for (j, m) in self.members.iter().enumerate() {
            if let (true, Some(addr)) = (j != i, m.addr) {
                out.send(addr, pkt);
            }
        }
    }

    /// Sends `pkt` to every bound member.
    fn send_to_bound(&self, pkt: &[u8], out: &mut impl Transmit) {
        for m in &self.members {
            if let Some(addr) = m.addr {
                out.send(addr, pkt);
            }
        }
    }

    fn remove(&mut self, uid: u64) -> Option<Member> {
        let i = self.index.remove(&uid)?;
        let m = self.members.remove(i);
        for later in &self.members[i..] {
            if let Some(slot) = self.index.get_mut(&later.uid) {
                *slot -= 1;
            }
        }
        Some(m)
    }

    /// A signed system packet from this channel, on the stack.
    fn signed(&self, now: Instant, op: SystemOp, uid: u64, ackid: u32) -> [u8; PACKET_SIZE] {
        let unix_ms = self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        let mut buf = [0u8; PACKET_SIZE];
        SystemPacket { op, uid, ackid }.encode_signed(&self.key, self.chid, unix_ms, &mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::packet::{encode_regular, verify_signed};

    const CHID: u64 = 77;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3u8; 32])
    }

    fn relay(now: Instant) -> ChannelRelay {
        ChannelRelay::new(
            CHID,
            key(),
            RelayConfig {
                peer_timeout: Duration::from_secs(5),
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

    /// Decodes a sent system packet, checking its signature and channel.
    fn sys(pkt: &[u8]) -> SystemPacket {
        let fields = verify_signed(pkt, &key().verifying_key()).expect("signed by server");
        assert_eq!(fields.chid, CHID);
        match packet::parse(pkt) {
            Ok(Datagram::System(p)) => p,
            other => panic!("not a system packet: {other:?}"),
        }
    }

    /// A relay with members 1, 2, 3 bound at ports 1001..1003; output so far discarded.
    fn three(now: Instant) -> ChannelRelay {
        let mut r = relay(now);
        let mut out = Vec::new();
        for uid in 1..=3u64 {
            r.join(now, uid).unwrap();
            r.handle_datagram(now, addr(1000 + uid as u16), &keepalive(uid, 0), &mut out);
        }
        r
    }

    #[test]
    fn binding_announces_both_ways() {
        let t = Instant::now();
        let mut r = relay(t);
        let mut out = Vec::new();
        r.join(t, 1).unwrap();
        r.join(t, 2).unwrap();
        r.handle_datagram(t, addr(1001), &keepalive(1, 0), &mut out);
        assert!(out.is_empty(), "no one else is bound yet");
        r.handle_datagram(t, addr(1002), &keepalive(2, 0), &mut out);
        let got: Vec<(SocketAddr, SystemOp, u64)> = out
            .iter()
            .map(|(a, p)| {
                let s = sys(p);
                (*a, s.op, s.uid)
            })
            .collect();
        assert_eq!(
            got,
            [
                (addr(1001), SystemOp::Join, 2),
                (addr(1002), SystemOp::Join, 1)
            ]
        );
    }

    #[test]
    fn regular_packets_go_unchanged_to_every_other_bound_member() {
        let t = Instant::now();
        let mut r = three(t);
        r.join(t, 4).unwrap(); // admitted, never bound: receives nothing
        let mut out = Vec::new();
        let pkt = voice(2, 0xAB);
        r.handle_datagram(t, addr(1002), &pkt, &mut out);
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(dsts, [addr(1001), addr(1003)]);
        assert!(out.iter().all(|(_, p)| p[..] == pkt[..]));
        assert_eq!(r.stats().forwarded, 1);
    }

    #[test]
    fn drop_rules() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        // Wrong sizes.
        r.handle_datagram(t, addr(1001), &voice(1, 0)[..511], &mut out);
        r.handle_datagram(t, addr(1001), &[0u8; 513], &mut out);
        r.handle_datagram(t, addr(1001), &[], &mut out);
        // Not joined, uid 0.
        r.handle_datagram(t, addr(1009), &voice(9, 0), &mut out);
        r.handle_datagram(t, addr(1001), &voice(0, 0), &mut out);
        // Member's uid from another address.
        r.handle_datagram(t, addr(2001), &voice(1, 0), &mut out);
        r.handle_datagram(t, addr(2001), &keepalive(1, 5), &mut out);
        // Bad checksum; server-only operations.
        let mut bad = keepalive(1, 5);
        bad[21] ^= 1;
        r.handle_datagram(t, addr(1001), &bad, &mut out);
        for op in [
            SystemOp::Join,
            SystemOp::Leave,
            SystemOp::Ack,
            SystemOp::Shutdown,
        ] {
            let mut b = [0u8; PACKET_SIZE];
            SystemPacket {
                op,
                uid: 1,
                ackid: 1,
            }
            .encode(&mut b);
            r.handle_datagram(t, addr(1001), &b, &mut out);
        }
        assert!(out.is_empty(), "dropped packets produce nothing: {out:?}");
        let s = r.stats();
        assert_eq!(s.wrong_size, 3);
        assert_eq!(s.not_member, 2);
        assert_eq!(s.wrong_address, 2);
        assert_eq!(s.bad_system, 5);
        assert_eq!(s.forwarded, 0);
    }

    #[test]
    fn keepalive_with_ackid_gets_signed_ack_to_bound_address_only() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        r.handle_datagram(t, addr(1001), &keepalive(1, 0), &mut out);
        assert!(out.is_empty(), "ackid 0 asks for nothing");
        r.handle_datagram(t, addr(1001), &keepalive(1, 0xBEEF), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr(1001));
        let ack = sys(&out[0].1);
        assert_eq!((ack.op, ack.uid, ack.ackid), (SystemOp::Ack, 1, 0xBEEF));
    }

    #[test]
    fn silent_members_time_out_and_others_hear_leave() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        // 1 and 2 keep talking; 3 goes silent.
        let t4 = t + Duration::from_secs(4);
        r.handle_datagram(t4, addr(1001), &keepalive(1, 0), &mut out);
        r.handle_datagram(t4, addr(1002), &voice(2, 1), &mut out);
        out.clear();
        r.handle_timeout(t + Duration::from_millis(4999), &mut out);
        assert!(out.is_empty());
        r.handle_timeout(t + Duration::from_secs(5), &mut out);
        assert!(!r.is_member(3));
        let mut got: Vec<(SocketAddr, SystemOp, u64)> = out
            .iter()
            .map(|(a, p)| {
                let s = sys(p);
                (*a, s.op, s.uid)
            })
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            [
                (addr(1001), SystemOp::Leave, 3),
                (addr(1002), SystemOp::Leave, 3)
            ]
        );
        // Its packets are now dropped.
        out.clear();
        r.handle_datagram(t4, addr(1003), &voice(3, 0), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn kicked_member_hears_leave_and_self_leave_does_not() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        assert!(r.leave(t, 2, true, &mut out));
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(dsts, [addr(1001), addr(1003), addr(1002)]);
        out.clear();
        assert!(r.leave(t, 3, false, &mut out));
        let dsts: Vec<SocketAddr> = out.iter().map(|(a, _)| *a).collect();
        assert_eq!(dsts, [addr(1001)]);
        assert!(!r.leave(t, 3, false, &mut out), "no longer a member");
        assert_eq!(r.members().collect::<Vec<_>>(), [1]);
        // Index stays consistent after removals in the middle.
        r.join(t, 9).unwrap();
        out.clear();
        r.handle_datagram(t, addr(1009), &voice(9, 1), &mut out);
        assert_eq!(out.iter().filter(|(a, _)| *a == addr(1001)).count(), 2);
    }

    #[test]
    fn shutdown_reaches_every_bound_member() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        r.shutdown(t, &mut out);
        assert_eq!(out.len(), 3);
        for (_, p) in &out {
            assert_eq!(sys(p).op, SystemOp::Shutdown);
        }
        assert_eq!(r.members().count(), 0);
    }

    #[test]
    fn membership_is_bounded_and_rejoin_rebinds() {
        let t = Instant::now();
        let mut r = three(t);
        r.join(t, 4).unwrap();
        assert_eq!(r.join(t, 5), Err(JoinError::Full));
        // Rejoin of 1 lets it bind a new address; the old one is ignored afterwards.
        r.join(t, 1).unwrap();
        let mut out = Vec::new();
        r.handle_datagram(t, addr(3001), &keepalive(1, 0), &mut out);
        assert_eq!(r.bound_addr(1), Some(addr(3001)));
        out.clear();
        r.handle_datagram(t, addr(1001), &voice(1, 0), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn abusive_member_is_rate_limited() {
        let t = Instant::now();
        let mut r = three(t);
        let mut out = Vec::new();
        // Burst is max(100/4, 20) = 25 packets, minus the keepalive that bound it.
        for _ in 0..100 {
            r.handle_datagram(t, addr(1001), &voice(1, 0), &mut out);
        }
        assert_eq!(r.stats().forwarded, 24);
        assert_eq!(r.stats().rate_limited, 76);
        // A second later it may send again.
        out.clear();
        r.handle_datagram(
            t + Duration::from_secs(1),
            addr(1001),
            &voice(1, 0),
            &mut out,
        );
        assert_eq!(out.len(), 2);
    }
}
