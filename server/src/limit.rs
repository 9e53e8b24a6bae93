//! Concurrent control connections per client IP, so one host cannot take every slot of
//! the global cap (`max_connections`) and lock everyone else out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections per IP. The map holds only IPs with an open connection, so it
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
}
