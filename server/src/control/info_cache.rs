//! Recent CHANNEL_INFO answers, so a flood of them costs one relay-worker question and one
//! name lookup per channel per [`TTL`] instead of one per request (issue 9 §4: 16
//! connections asking about a 1024-member channel slowed every other request).
//!
//! An answer is served only while it is younger than [`TTL`] *and* no change request has
//! completed since it was computed (the control plane's generation counter), so anything
//! done through the control port (JOIN, LEAVE, renames, …) shows at once; only what the
//! relay does on its own (a member timing out) can be up to [`TTL`] late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_proto::ChannelInfo;

/// How long an answer may be reused.
pub const TTL: Duration = Duration::from_millis(250);

/// Entries kept at most; beyond it the cache starts over (it only saves work).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
struct Entry {
    at: Instant,
    generation: u64,
    info: Arc<ChannelInfo>,
}

/// Answers by channel id.
#[derive(Debug, Default)]
pub struct InfoCache {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl InfoCache {
    /// A cached answer for `chid`, if still valid at `now` and `generation`.
    pub fn get(&self, chid: u64, now: Instant, generation: u64) -> Option<Arc<ChannelInfo>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(&chid)?;
        (e.generation == generation && now.saturating_duration_since(e.at) < TTL)
            .then(|| e.info.clone())
    }

    /// Remembers an answer computed at `at`, starting at `generation`.
    pub fn put(&self, chid: u64, at: Instant, generation: u64, info: Arc<ChannelInfo>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&chid) {
            entries.clear();
        }
        entries.insert(
            chid,
            Entry {
                at,
                generation,
                info,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_with_time_and_with_changes() {
        let c = InfoCache::default();
        let t = Instant::now();
        let info = Arc::new(ChannelInfo {
            name: "a".into(),
            owner: 1,
            port: 2,
            members: vec![],
        });
        c.put(5, t, 7, info.clone());
        assert_eq!(c.get(5, t + Duration::from_millis(10), 7), Some(info));
        assert_eq!(c.get(5, t + TTL, 7), None);
        assert_eq!(c.get(5, t, 8), None, "a change since invalidates");
        assert_eq!(c.get(6, t, 7), None);
    }
}
