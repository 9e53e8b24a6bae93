//! The channel list as the backend keeps it between refreshes, and which channels' details
//! (CHANNEL_INFO: name, owner, member count) a refresh asks for. Sans-IO.
//!
//! The seed protocol lists channel ids only, so each channel's details cost a request of
//! their own. A refresh asks for the channels it has never seen (and the ones we just
//! changed) first, then goes round the rest, [`DETAILS_PER_REFRESH`] at a time: a refresh
//! costs at most `1 + DETAILS_PER_REFRESH` requests however many channels there are, and
//! every row is at most `channels / DETAILS_PER_REFRESH` refreshes old. The joined
//! channel's member list does not depend on it (pushed by the voice session).

use std::collections::{BTreeMap, BTreeSet};

use crate::tui::model::ChannelRow;

/// CHANNEL_INFO requests per periodic refresh, at most.
pub const DETAILS_PER_REFRESH: usize = 8;
/// Channels whose details are asked on the first refresh, at most (so a fresh start names
/// every channel of a normal server at once).
pub const FIRST_DETAILS: usize = 256;
/// Rows kept at most (a list longer than this shows the rest as bare ids).
pub const MAX_ROWS: usize = 65_536;

/// Rows known so far and where the round robin stands.
#[derive(Debug, Default)]
pub struct ChannelList {
    /// Details by channel id, from the last CHANNEL_INFO of each.
    rows: BTreeMap<u64, ChannelRow>,
    /// Channels whose details must be asked again (we renamed one, say).
    stale: BTreeSet<u64>,
    /// The round robin continues after this id.
    cursor: u64,
    /// Whether a refresh has run.
    started: bool,
}

impl ChannelList {
    /// Ids (from GET_CHANNELS) whose details to ask for in this refresh: unknown and stale
    /// ones first, then the next ones round the list.
    pub fn plan(&mut self, ids: &[u64]) -> Vec<u64> {
        let listed: BTreeSet<u64> = ids.iter().copied().collect();
        self.rows.retain(|id, _| listed.contains(id));
        self.stale.retain(|id| listed.contains(id));
        let budget = if self.started {
            DETAILS_PER_REFRESH
        } else {
            FIRST_DETAILS
        };
        self.started = true;
        let mut ask: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !self.rows.contains_key(id) || self.stale.contains(id))
            .take(budget)
            .collect();
        // Round robin over the known rest, starting after the cursor.
        let known: Vec<u64> = listed
            .range(self.cursor.saturating_add(1)..)
            .chain(listed.range(..=self.cursor))
            .copied()
            .filter(|id| self.rows.contains_key(id) && !self.stale.contains(id))
            .collect();
        for id in known {
            if ask.len() >= budget {
                break;
            }
            ask.push(id);
            self.cursor = id;
        }
        ask
    }

    /// CHANNEL_INFO's answer for `row.id`.
    pub fn update(&mut self, row: ChannelRow) {
        self.stale.remove(&row.id);
        if self.rows.len() < MAX_ROWS || self.rows.contains_key(&row.id) {
            self.rows.insert(row.id, row);
        }
    }

    /// Ask for `id`'s details on the next refresh (it changed, or its answer was an error).
    pub fn forget(&mut self, id: u64) {
        self.stale.insert(id);
    }

    /// The rows for `ids`, in order; channels without details yet show as bare ids.
    pub fn rows(&self, ids: &[u64]) -> Vec<ChannelRow> {
        ids.iter()
            .map(|&id| {
                self.rows.get(&id).cloned().unwrap_or(ChannelRow {
                    id,
                    name: String::new(),
                    members: 0,
                    owner: 0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, members: usize) -> ChannelRow {
        ChannelRow {
            id,
            name: format!("c{id}"),
            members,
            owner: 1,
        }
    }

    fn answer(list: &mut ChannelList, ids: &[u64], members: usize) {
        for id in ids {
            list.update(row(*id, members));
        }
    }

    #[test]
    fn a_small_server_is_detailed_every_refresh() {
        let mut l = ChannelList::default();
        let ids = [1, 2, 3];
        assert_eq!(l.plan(&ids), vec![1, 2, 3]);
        answer(&mut l, &ids, 0);
        for _ in 0..3 {
            let mut p = l.plan(&ids);
            p.sort();
            assert_eq!(
                p,
                vec![1, 2, 3],
                "fewer channels than the budget: all of them"
            );
        }
    }

    #[test]
    fn a_large_server_costs_a_bounded_refresh_and_every_row_comes_round() {
        let mut l = ChannelList::default();
        let ids: Vec<u64> = (1..=100).collect();
        let first = l.plan(&ids);
        assert_eq!(first.len(), 100, "the first refresh names them all");
        answer(&mut l, &first, 0);
        let mut seen = BTreeSet::new();
        for _ in 0..(100 / DETAILS_PER_REFRESH + 1) {
            let p = l.plan(&ids);
            assert_eq!(p.len(), DETAILS_PER_REFRESH);
            answer(&mut l, &p, 5);
            seen.extend(p);
        }
        assert_eq!(seen.len(), 100, "the round robin reaches every channel");
        assert!(l.rows(&ids).iter().all(|r| r.members == 5));
    }

    #[test]
    fn new_and_changed_channels_go_first_and_deleted_ones_go() {
        let mut l = ChannelList::default();
        let ids: Vec<u64> = (1..=50).collect();
        let p = l.plan(&ids);
        answer(&mut l, &p, 0);
        l.forget(40);
        let mut ids2 = ids.clone();
        ids2.retain(|&i| i != 7);
        ids2.push(51);
        let p = l.plan(&ids2);
        assert_eq!(&p[..2], &[40, 51], "stale and new first");
        assert_eq!(p.len(), DETAILS_PER_REFRESH);
        assert!(l.rows(&ids2).iter().all(|r| r.id != 7));
        // Not answered yet: a bare id.
        assert_eq!(l.rows(&[51])[0].name, "");
    }
}
