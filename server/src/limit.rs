//! Concurrent control connections per client network, so one host cannot take every slot
//! of the global cap (`max_connections`) and lock everyone else out. A network is an IPv4
//! address or an IPv6 /64 ([`network_of`]): one IPv6 host usually holds a whole /64, so
//! counting single IPv6 addresses would let it open unlimited connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The network `ip` is counted in: the address itself for IPv4 (and IPv4-mapped IPv6),
/// its /64 prefix for IPv6.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Counts open connections per network. The map holds only IPs with an open connection, so it
/// is bounded by the global connection cap.
#[derive(Debug)]
pub struct PerIpLimit {
    /// Most connections one IP may have open.
    max: usize,
    /// Open connections by IP. A std mutex: held for a map update, never across `.await`.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its IP's count; released when dropped.
#[derive(Debug)]
pub struct IpSlot {
    /// The limiter to give the slot back to.
    limit: Arc<PerIpLimit>,
    /// Whose slot it is.
    ip: IpAddr,
}

impl PerIpLimit {
    /// A limiter allowing `max` connections per IP (at least 1).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it already has `max` connections open.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = network_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limit: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.limit.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_ip_and_releases_on_drop() {
        let limit = PerIpLimit::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = limit.try_acquire(a).unwrap();
        let _s2 = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none());
        let _s3 = limit.try_acquire(b).expect("other IPs are not affected");
        drop(s1);
        assert!(limit.try_acquire(a).is_some());
        drop(_s3);
        assert!(
            !limit.counts.lock().unwrap().contains_key(&b),
            "empty entries removed"
        );
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limit = PerIpLimit::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = limit.try_acquire(ip("2001:db8::1")).unwrap();
        let _b = limit.try_acquire(ip("2001:db8::ffff:2")).unwrap();
        assert!(limit.try_acquire(ip("2001:db8:0:0:1::3")).is_none());
        assert!(limit.try_acquire(ip("2001:db8:0:1::1")).is_some());
        assert_eq!(network_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }
}
