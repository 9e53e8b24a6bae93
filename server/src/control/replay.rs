//! Nonces of the signed requests accepted within the time window, so none runs twice.
//!
//! A request is accepted only when its timestamp is within `WINDOW_MS` of the server's
//! clock, so a nonce older than that can be forgotten: a replay of it would be refused
//! for its timestamp. Entries are kept in timestamp order to drop the expired ones first.
//! The cache is bounded; when it is full of live entries, new signed requests are refused
//! (SERV) rather than accepted unchecked.

use std::collections::{BTreeSet, HashSet};

use kv_proto::signed::{NONCE_LEN, WINDOW_MS};

/// Most nonces remembered: about 2 200 signed requests per second over the two-minute
/// window, far above what the control port serves; ~20 MB at worst.
pub const CAPACITY: usize = 1 << 18;

/// The cache is full of nonces that have not expired yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Seen nonces with their timestamps.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    by_time: BTreeSet<(u64, [u8; NONCE_LEN])>,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashSet::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Records `nonce` (signed at `timestamp_ms`) at `now_ms`: `Ok(true)` when it is new,
    /// `Ok(false)` when it was seen (a replay), `Err(Full)` when it cannot be remembered.
    pub fn insert(
        &mut self,
        nonce: [u8; NONCE_LEN],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Full> {
        self.expire(now_ms);
        if self.seen.contains(&nonce) {
            return Ok(false);
        }
        if self.seen.len() >= self.capacity {
            return Err(Full);
        }
        self.seen.insert(nonce);
        self.by_time.insert((timestamp_ms, nonce));
        Ok(true)
    }

    /// Forgets nonces whose timestamps are out of the window (they cannot be accepted).
    fn expire(&mut self, now_ms: u64) {
        let oldest_valid = now_ms.saturating_sub(WINDOW_MS);
        while let Some(&(ts, nonce)) = self.by_time.first() {
            if ts >= oldest_valid {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&nonce);
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_replays_forgets_expired_and_stays_bounded() {
        let mut c = ReplayCache::new(3);
        let t = 1_000_000;
        assert_eq!(c.insert([1; 16], t, t), Ok(true));
        assert_eq!(c.insert([1; 16], t, t + 5), Ok(false));
        assert_eq!(c.insert([2; 16], t + 1, t + 5), Ok(true));
        assert_eq!(c.insert([3; 16], t + 2, t + 5), Ok(true));
        assert_eq!(c.insert([4; 16], t + 3, t + 5), Err(Full));
        // Past the window the first nonces expire (and would be refused for their age).
        assert_eq!(c.insert([4; 16], t + 3, t + WINDOW_MS + 2), Ok(true));
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
    }
}
