//! Sign-ups per client network: a token bucket of `N` per minute for each IPv4 address and
//! each IPv6 /64 (one customer's usual allocation, so rotating addresses inside it gains
//! nothing). Issue 9 §4: 19 240 anonymous REGISTERs in 10 s went unchecked.
//!
//! The map is bounded: buckets that are full again (their network has been quiet for a
//! minute) are dropped first; if every bucket is still in use, new networks are refused
//! until some refill, rather than the map growing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::limit::network_of;

/// Networks tracked at once.
const MAX_NETWORKS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Sign-up budget per network.
#[derive(Debug)]
pub struct RegisterRate {
    /// Sign-ups per minute (and the burst); 0 = unlimited. Atomic: SIGHUP changes it.
    per_minute: AtomicU32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RegisterRate {
    /// `per_minute` sign-ups per network per minute; 0 switches the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: AtomicU32::new(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the limit (configuration reload); buckets keep their tokens, up to the new cap.
    pub fn set_per_minute(&self, per_minute: u32) {
        self.per_minute.store(per_minute, Ordering::Relaxed);
    }

    /// Takes one sign-up from `ip`'s budget at `now`; false when it is used up.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let per_minute = self.per_minute.load(Ordering::Relaxed);
        if per_minute == 0 {
            return true;
        }
        let cap = f64::from(per_minute);
        let rate = cap / 60.0;
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let net = network_of(ip);
        if !buckets.contains_key(&net) && buckets.len() >= MAX_NETWORKS {
            buckets.retain(|_, b| refill(b) < cap);
            if buckets.len() >= MAX_NETWORKS {
                return false;
            }
        }
        let b = buckets.entry(net).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_each_network_and_refills() {
        let r = RegisterRate::new(3);
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(r.allow(a, t));
        }
        assert!(!r.allow(a, t));
        assert!(r.allow(b, t), "another address has its own budget");
        // One token per 20 s at 3/min.
        assert!(r.allow(a, t + Duration::from_secs(21)));
        assert!(!r.allow(a, t + Duration::from_secs(22)));
        // IPv6: the whole /64 shares one budget.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..3 {
            assert!(r.allow(v6(&format!("2001:db8:1:2::{i}")), t));
        }
        assert!(!r.allow(v6("2001:db8:1:2:ffff::9"), t));
        assert!(r.allow(v6("2001:db8:1:3::1"), t));
        assert!(RegisterRate::new(0).allow(a, t));
    }
}
