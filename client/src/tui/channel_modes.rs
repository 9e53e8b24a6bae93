//! Which channels are end-to-end encrypted, as CHANNEL_MODE (27) says: a channel's mode is
//! fixed for its lifetime, so each is asked once, a few per refresh, and remembered.
//! Sans-IO: the backend asks for what [`ChannelModes::plan`] picks.

use std::collections::BTreeMap;

/// CHANNEL_MODE requests per refresh at most, so a long list costs a few requests each
/// time (like [`crate::tui::channel_list::ChannelList`]) and is complete after a few.
pub const MODES_PER_REFRESH: usize = 8;
/// Channels remembered at most (more than a server lists).
pub const MAX_KNOWN: usize = 4096;

/// Modes learnt so far.
#[derive(Debug, Default)]
pub struct ChannelModes {
    known: BTreeMap<u64, bool>,
}

impl ChannelModes {
    /// The channels of `listed` to ask about now: not known yet, at most
    /// [`MODES_PER_REFRESH`], in list order.
    pub fn plan(&self, listed: &[u64]) -> Vec<u64> {
        listed
            .iter()
            .copied()
            .filter(|id| !self.known.contains_key(id))
            .take(MODES_PER_REFRESH)
            .collect()
    }

    /// What CHANNEL_MODE answered for `chid`.
    pub fn learnt(&mut self, chid: u64, encrypted: bool) {
        if !self.known.contains_key(&chid) && self.known.len() >= MAX_KNOWN {
            self.known.pop_first();
        }
        self.known.insert(chid, encrypted);
    }

    /// Forgets channels no longer listed (deleted), so the map follows the server.
    pub fn retain_listed(&mut self, listed: &[u64]) {
        let listed: std::collections::BTreeSet<u64> = listed.iter().copied().collect();
        self.known.retain(|id, _| listed.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_each_channel_once_a_few_at_a_time() {
        let mut m = ChannelModes::default();
        let ids: Vec<u64> = (1..=20).collect();
        let first = m.plan(&ids);
        assert_eq!(first, (1..=8).collect::<Vec<_>>());
        for &id in &first {
            m.learnt(id, id % 2 == 0);
        }
        assert_eq!(m.plan(&ids), (9..=16).collect::<Vec<_>>());
        for id in 9..=20 {
            m.learnt(id, false);
        }
        assert!(m.plan(&ids).is_empty(), "all known: nothing asked again");
        m.retain_listed(&[2, 3]);
        assert_eq!(
            m.plan(&[2, 3, 4]),
            vec![4],
            "a deleted channel is forgotten"
        );
    }

    #[test]
    fn bounded() {
        let mut m = ChannelModes::default();
        for id in 0..(MAX_KNOWN as u64 + 10) {
            m.learnt(id, true);
        }
        assert_eq!(m.known.len(), MAX_KNOWN);
    }
}
