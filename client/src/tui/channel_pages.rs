//! The channel list from LIST_CHANNELS pages (PROTOCOL.md): one request per refresh,
//! whatever the number of channels. Sans-IO.
//!
//! A page is the channels created after a cursor, at most `LIST_PAGE` of them, and the
//! cursor that continues it (0 at the end). A server with up to `LIST_PAGE` channels is
//! one page, so each refresh shows all of it. A longer list is read one page per
//! refresh, round the list; the rows of the other pages are from their last visit, so
//! each row is at most `channels / LIST_PAGE` refreshes old.

use std::collections::{BTreeMap, BTreeSet};

use kv_proto::ChannelPage;

use crate::tui::model::ChannelRow;

/// Pages kept at most: with `LIST_PAGE` rows each, more rows than a server may list.
pub const MAX_PAGES: usize = 256;

/// Pages by the cursor they were asked with, and the cursor to ask next.
#[derive(Debug, Default)]
pub struct ChannelPages {
    pages: BTreeMap<u64, Vec<ChannelRow>>,
    cursor: u64,
}

impl ChannelPages {
    /// The `after` of the next LIST_CHANNELS request.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The answer to LIST_CHANNELS with `after`. It replaces what it covers: a page kept
    /// from an earlier refresh that starts inside it is dropped (channels were deleted
    /// before it, so this page now reaches into it), and a last page drops every page
    /// after it.
    pub fn update(&mut self, after: u64, page: ChannelPage) {
        let start = after.saturating_add(1);
        if page.next == 0 {
            self.pages.split_off(&start);
        } else if page.next > start {
            let covered: Vec<u64> = self
                .pages
                .range(start..page.next)
                .map(|(&k, _)| k)
                .collect();
            for k in covered {
                self.pages.remove(&k);
            }
        }
        // A cursor that does not advance would read the same page for ever: start over.
        self.cursor = if page.next > after { page.next } else { 0 };
        if self.pages.len() >= MAX_PAGES && !self.pages.contains_key(&after) {
            return;
        }
        let rows = page
            .channels
            .into_iter()
            .map(|c| ChannelRow {
                id: c.id,
                name: c.name,
                members: usize::try_from(c.members).unwrap_or(usize::MAX),
                owner: c.owner,
            })
            .collect();
        self.pages.insert(after, rows);
    }

    /// Every row known, in the server's order, each channel once.
    pub fn rows(&self) -> Vec<ChannelRow> {
        let mut seen = BTreeSet::new();
        self.pages
            .values()
            .flatten()
            .filter(|r| seen.insert(r.id))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::ChannelSummary;

    /// A page of channels `ids` (member count = id % 5) continuing at `next`.
    fn page(ids: impl IntoIterator<Item = u64>, next: u64) -> ChannelPage {
        ChannelPage {
            channels: ids
                .into_iter()
                .map(|id| ChannelSummary {
                    id,
                    owner: 1,
                    members: id % 5,
                    name: format!("c{id}"),
                })
                .collect(),
            next,
        }
    }

    fn ids(p: &ChannelPages) -> Vec<u64> {
        p.rows().iter().map(|r| r.id).collect()
    }

    #[test]
    fn one_page_is_the_whole_list_every_refresh() {
        let mut p = ChannelPages::default();
        p.update(p.cursor(), page([5, 3, 9], 0));
        assert_eq!(ids(&p), [5, 3, 9]);
        assert_eq!(p.rows()[2].members, 4);
        assert_eq!(p.cursor(), 0, "the next refresh reads the list again");
        p.update(p.cursor(), page([3, 9, 11], 0));
        assert_eq!(
            ids(&p),
            [3, 9, 11],
            "a deleted channel goes, a new one comes"
        );
    }

    #[test]
    fn a_long_list_is_read_one_page_per_refresh_round_the_list() {
        let mut p = ChannelPages::default();
        p.update(p.cursor(), page(1..=4, 4));
        assert_eq!(p.cursor(), 4);
        p.update(p.cursor(), page(5..=8, 8));
        p.update(p.cursor(), page(9..=10, 0));
        assert_eq!(ids(&p), (1..=10).collect::<Vec<_>>());
        assert_eq!(p.cursor(), 0, "after the last page: from the top");
        // Channels 2 and 3 went: the first page now reaches into what was the second.
        p.update(0, page([1, 4, 5, 6], 6));
        assert_eq!(
            ids(&p),
            [1, 4, 5, 6, 9, 10],
            "the page it overlaps is dropped"
        );
        p.update(p.cursor(), page([7, 8, 9, 10], 10));
        assert_eq!(ids(&p), [1, 4, 5, 6, 7, 8, 9, 10]);
        // The list got shorter: a last page drops every page after it.
        p.update(p.cursor(), page([], 0));
        p.update(0, page([1, 4, 5], 0));
        assert_eq!(ids(&p), [1, 4, 5]);
    }

    #[test]
    fn a_hostile_server_cannot_grow_the_list_or_loop_the_cursor() {
        let mut p = ChannelPages::default();
        for k in 0..(MAX_PAGES as u64 * 4) {
            p.update(k * 10, page([k], k * 10 + 10));
        }
        assert!(p.rows().len() <= MAX_PAGES);
        // A `next` that goes backwards or stays put restarts from the top.
        p.update(50, page([1], 50));
        assert_eq!(p.cursor(), 0);
        p.update(50, page([1], 3));
        assert_eq!(p.cursor(), 0);
        // The same channel in two pages shows once.
        let mut q = ChannelPages::default();
        q.update(0, page([1, 2], 2));
        q.update(2, page([2, 3], 0));
        assert_eq!(ids(&q), [1, 2, 3]);
    }
}
