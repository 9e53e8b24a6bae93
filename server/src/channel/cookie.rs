//! Return-routability cookies and the per-address budget for sending them.
//!
//! A cookie is a keyed BLAKE3 MAC over (address, uid, channel, time slot) under a secret
//! that never leaves the server, so the relay keeps no state per unproven address: a BIND
//! echoing a valid, fresh cookie from the same address proves that address receives what
//! the relay sends it. Cookies of the current and the previous slot are accepted, so one
//! lives [`COOKIE_SLOT`] to twice that.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kv_proto::session::{Cookie, COOKIE_LEN};

use super::rate::TokenBucket;

/// Length of one cookie time slot.
pub const COOKIE_SLOT: Duration = Duration::from_secs(5);

/// Makes and checks cookies for one channel.
#[derive(Clone)]
pub struct CookieJar {
    secret: [u8; 32],
    chid: u64,
    /// Slots count from here (the relay's creation).
    epoch: Instant,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("chid", &self.chid)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar for channel `chid` with a secret of 32 random bytes.
    pub fn new(secret: [u8; 32], chid: u64, epoch: Instant) -> Self {
        Self {
            secret,
            chid,
            epoch,
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / COOKIE_SLOT.as_secs()
    }

    fn mac(&self, addr: SocketAddr, uid: u64, slot: u64) -> [u8; COOKIE_LEN] {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"kv cookie v1");
        h.update(&ip);
        h.update(&addr.port().to_be_bytes());
        h.update(&uid.to_be_bytes());
        h.update(&self.chid.to_be_bytes());
        h.update(&slot.to_be_bytes());
        let mut mac = [0u8; COOKIE_LEN];
        mac.copy_from_slice(&h.finalize().as_bytes()[..COOKIE_LEN]);
        mac
    }

    /// A cookie for `uid` at `addr`, now.
    pub fn make(&self, now: Instant, addr: SocketAddr, uid: u64) -> Cookie {
        let slot = self.slot(now);
        Cookie {
            slot,
            mac: self.mac(addr, uid, slot),
        }
    }

    /// True when `cookie` was made for `uid` at `addr` in this slot or the previous one.
    pub fn check(&self, now: Instant, addr: SocketAddr, uid: u64, cookie: &Cookie) -> bool {
        let cur = self.slot(now);
        if cookie.slot != cur && cookie.slot.checked_add(1) != Some(cur) {
            return false;
        }
        let want = blake3::Hash::from(pad(self.mac(addr, uid, cookie.slot)));
        // Constant-time comparison (blake3::Hash's PartialEq).
        want == blake3::Hash::from(pad(cookie.mac))
    }
}

fn pad(mac: [u8; COOKIE_LEN]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[..COOKIE_LEN].copy_from_slice(&mac);
    a
}

/// Challenges one IP may receive in a burst (a household or office behind one NAT joining
/// at once; the load generator's hundreds of users on 127.0.0.1).
pub const CHALLENGE_BURST: f64 = 64.0;
/// Challenges per second one IP may receive on average: with 512-byte packets, 64 KiB/s.
/// Each answers a datagram of the same size, so this bounds what a forger can aim at one
/// host through the relay, not a ratio (which is at most 1 anyway).
pub const CHALLENGE_RATE: f64 = 128.0;
/// Slots of the budget table (fixed: memory is bounded whatever the traffic).
const BUDGET_SLOTS: usize = 1024;

/// A byte budget for unproven destinations, per IP (every port of a host shares it), in a
/// fixed-size table indexed by a keyed hash: O(1) per packet and bounded memory. A slot
/// taken over by another IP starts full; an attacker cannot aim at a victim's slot without
/// the hash key, and each challenge answers one datagram of the same size anyway.
#[derive(Debug)]
pub struct ChallengeBudget {
    hasher: RandomState,
    slots: Box<[Option<(IpAddr, TokenBucket)>]>,
}

impl Default for ChallengeBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl ChallengeBudget {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            slots: vec![None; BUDGET_SLOTS].into_boxed_slice(),
        }
    }

    /// Takes one challenge from `ip`'s budget; false when it is spent.
    pub fn try_take(&mut self, now: Instant, ip: IpAddr) -> bool {
        let i = (self.hasher.hash_one(ip) as usize) % BUDGET_SLOTS;
        let slot = &mut self.slots[i];
        match slot {
            Some((owner, bucket)) if *owner == ip => {
                bucket.try_take(now, CHALLENGE_RATE, CHALLENGE_BURST)
            }
            _ => {
                let mut bucket = TokenBucket::new(now, CHALLENGE_BURST);
                let ok = bucket.try_take(now, CHALLENGE_RATE, CHALLENGE_BURST);
                *slot = Some((ip, bucket));
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn cookies_bind_address_uid_channel_and_time() {
        let t = Instant::now();
        let jar = CookieJar::new([1; 32], 7, t);
        let c = jar.make(t, addr(1000), 42);
        assert!(jar.check(t, addr(1000), 42, &c));
        assert!(!jar.check(t, addr(1001), 42, &c), "other port");
        assert!(!jar.check(t, SocketAddr::from(([127, 0, 0, 2], 1000)), 42, &c));
        assert!(!jar.check(t, addr(1000), 43, &c), "other uid");
        assert!(!CookieJar::new([1; 32], 8, t).check(t, addr(1000), 42, &c));
        assert!(!CookieJar::new([2; 32], 7, t).check(t, addr(1000), 42, &c));
        let mut bad = c;
        bad.mac[0] ^= 1;
        assert!(!jar.check(t, addr(1000), 42, &bad));
        // Fresh for the rest of its slot and the next one, then stale.
        assert!(jar.check(t + COOKIE_SLOT, addr(1000), 42, &c));
        assert!(!jar.check(t + 2 * COOKIE_SLOT, addr(1000), 42, &c));
        // A slot from the future is not accepted either.
        let later = jar.make(t + COOKIE_SLOT, addr(1000), 42);
        assert!(!jar.check(t, addr(1000), 42, &later));
    }

    #[test]
    fn challenge_budget_is_per_ip() {
        let t = Instant::now();
        let mut b = ChallengeBudget::new();
        let victim: IpAddr = [127, 0, 0, 9].into();
        let n = (0..1000).filter(|_| b.try_take(t, victim)).count();
        assert_eq!(n, CHALLENGE_BURST as usize);
        assert!(
            b.try_take(t, [127, 0, 0, 10].into()),
            "another IP has its own"
        );
        let later = t + Duration::from_secs(1);
        let n = (0..1000).filter(|_| b.try_take(later, victim)).count();
        assert!(n <= CHALLENGE_RATE as usize + 1, "{n}");
    }
}
