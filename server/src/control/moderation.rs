//! Moderation (PROTOCOL.md "Moderation"): BAN, UNBAN, SET_PERMS, LIST_BANS, LIST_USERS,
//! for perm_admin holders, signed only; and the ban check JOIN, JOIN_KEX, REGISTER and
//! REGISTER_KEY go through.
//!
//! Bans are kept in the store (they survive restarts) and, for the checks, in memory
//! ([`BanList`]): a JOIN must not cost a database scan. Both are bounded ([`MAX_BANS`];
//! expired bans are dropped first, from memory and store). A user ban also removes the
//! user from every channel (KICK), like UNREGISTER does. Nobody can ban or demote a
//! perm_admin holder, so the admin cannot be locked out.

use std::net::IpAddr;

use kv_proto::control::{BAN_PAGE, USER_PAGE};
use kv_proto::{
    BanEntry, BanPage, BanTarget, ControlReply, ControlRequest, ErrorCode, Perms, UserEntry,
    UserPage,
};

use super::{allow, db, CmdResult, Control, Origin};
use crate::store::Store;

/// Most bans kept (in force or not yet pruned).
pub const MAX_BANS: usize = 4096;

/// The bans, in id order, as the checks read them.
#[derive(Debug, Default)]
pub struct BanList {
    bans: Vec<BanEntry>,
}

impl BanList {
    /// The list of `bans` (from the store).
    pub fn new(mut bans: Vec<BanEntry>) -> Self {
        bans.sort_by_key(|b| b.id);
        Self { bans }
    }

    fn in_force(b: &BanEntry, now_ms: u64) -> bool {
        b.expires_unix_ms == 0 || b.expires_unix_ms > now_ms
    }

    /// The ban in force on user `uid`, if any.
    pub fn user(&self, uid: u64, now_ms: u64) -> Option<&BanEntry> {
        self.bans
            .iter()
            .find(|b| b.target == BanTarget::User(uid) && Self::in_force(b, now_ms))
    }

    /// The ban in force on an address prefix covering `ip`, if any.
    pub fn address(&self, ip: IpAddr, now_ms: u64) -> Option<&BanEntry> {
        self.bans
            .iter()
            .find(|b| b.target.covers(ip) && Self::in_force(b, now_ms))
    }

    /// Ids of bans that expired by `now_ms`.
    fn expired(&self, now_ms: u64) -> Vec<u64> {
        self.bans
            .iter()
            .filter(|b| !Self::in_force(b, now_ms))
            .map(|b| b.id)
            .collect()
    }

    /// Adds a ban in id order (concurrent BANs may finish out of order; paging needs it).
    fn insert(&mut self, ban: BanEntry) {
        let at = self.bans.partition_point(|b| b.id < ban.id);
        self.bans.insert(at, ban);
    }

    fn remove(&mut self, id: u64) -> bool {
        let before = self.bans.len();
        self.bans.retain(|b| b.id != id);
        self.bans.len() != before
    }
}

impl<S: Store> Control<S> {
    /// Loads the bans from the store (at start).
    pub fn load_bans(&self) -> crate::store::StoreResult<()> {
        let bans = self.store().bans()?;
        *self.bans_mut() = BanList::new(bans);
        Ok(())
    }

    /// ACCESS for a JOIN / JOIN_KEX / REGISTER / REGISTER_KEY from a banned address, by a
    /// banned user, or joining one. Other requests pass.
    pub(super) fn check_bans(
        &self,
        req: &ControlRequest,
        origin: &Origin,
    ) -> Result<(), ErrorCode> {
        use ControlRequest as R;
        let users: &[u64] = match req {
            R::Join { uid, juid, .. } | R::JoinKex { uid, juid, .. } => &[*uid, *juid],
            R::Register { auid, .. } | R::RegisterKey { auid, .. } => &[*auid],
            _ => return Ok(()),
        };
        let bans = self.bans();
        if let Some(b) = bans.address(origin.ip, origin.unix_ms) {
            tracing::debug!(ip = %origin.ip, ban = b.id, "banned address");
            return Err(ErrorCode::Access);
        }
        for &uid in users.iter().filter(|&&u| u != 0) {
            if let Some(b) = bans.user(uid, origin.unix_ms) {
                tracing::debug!(ban = b.id, "banned user");
                return Err(ErrorCode::Access);
            }
        }
        Ok(())
    }

    /// PARAM unless `auid` exists, ACCESS unless it holds perm_admin.
    fn moderator(&self, auid: u64) -> Result<(), ErrorCode> {
        let who = self.existing_user(auid)?;
        allow(Perms(who.perms).contains(Perms::ADMIN))
    }

    /// Drops expired bans from memory and store.
    fn prune_bans(&self, now_ms: u64) -> Result<(), ErrorCode> {
        let expired = self.bans().expired(now_ms);
        for id in expired {
            db(self.store().delete_ban(id))?;
            self.bans_mut().remove(id);
        }
        Ok(())
    }

    /// BAN: records the ban, then removes a banned user from every channel.
    pub(super) fn ban(
        &self,
        auid: u64,
        target: BanTarget,
        secs: u64,
        reason: &str,
        origin: &Origin,
    ) -> CmdResult {
        self.moderator(auid)?;
        if !kv_proto::names::is_allowed_name(reason) {
            return Err(ErrorCode::Inval);
        }
        if let BanTarget::User(uid) = target {
            let user = self.existing_user(uid)?;
            allow(!Perms(user.perms).contains(Perms::ADMIN))?;
        }
        if let BanTarget::Net { .. } = target {
            // The moderator's own address: refusing it keeps a typo from locking the admin out.
            allow(!target.covers(origin.ip))?;
        }
        self.prune_bans(origin.unix_ms)?;
        if self.bans().bans.len() >= MAX_BANS {
            return Err(ErrorCode::Serv);
        }
        let expires_unix_ms = match secs {
            0 => 0,
            s => origin.unix_ms.saturating_add(s.saturating_mul(1000)),
        };
        let mut entry = BanEntry {
            id: 0,
            target,
            expires_unix_ms,
            reason: reason.to_owned(),
        };
        entry.id = db(self.store().insert_ban(&entry))?;
        let id = entry.id;
        self.bans_mut().insert(entry);
        if let BanTarget::User(uid) = target {
            // Queued under the registry lock, awaited after it is released.
            let pending = self.registry().remove_everywhere(uid);
            self.push.remove_user(uid);
            for p in pending {
                let _ = p.wait();
            }
        }
        tracing::info!(ban = id, %target, secs, by = auid, "banned");
        Ok(ControlReply::Value(id))
    }

    /// UNBAN: lifts a ban (PARAM if there is none with this id).
    pub(super) fn unban(&self, auid: u64, id: u64) -> CmdResult {
        self.moderator(auid)?;
        if !db(self.store().delete_ban(id))? {
            return Err(ErrorCode::Param);
        }
        self.bans_mut().remove(id);
        tracing::info!(ban = id, by = auid, "ban lifted");
        Ok(ControlReply::Value(1))
    }

    /// SET_PERMS: sets a user's permission bits; a perm_admin holder's cannot be changed.
    pub(super) fn set_perms(&self, auid: u64, uid: u64, perms: u64) -> CmdResult {
        self.moderator(auid)?;
        let user = self.existing_user(uid)?;
        allow(!Perms(user.perms).contains(Perms::ADMIN))?;
        if !db(self.store().set_user_perms(uid, perms))? {
            return Err(ErrorCode::Param);
        }
        tracing::info!(by = auid, perms, "permissions set");
        Ok(ControlReply::Value(1))
    }

    /// LIST_BANS: a page of the bans in force.
    pub(super) fn list_bans(&self, auid: u64, after: u64, origin: &Origin) -> CmdResult {
        self.moderator(auid)?;
        let bans = self.bans();
        let mut page: Vec<BanEntry> = bans
            .bans
            .iter()
            .filter(|b| b.id > after && BanList::in_force(b, origin.unix_ms))
            .take(BAN_PAGE + 1)
            .cloned()
            .collect();
        let next = if page.len() > BAN_PAGE {
            page.truncate(BAN_PAGE);
            page.last().map_or(0, |b| b.id)
        } else {
            0
        };
        Ok(ControlReply::BanPage(BanPage { bans: page, next }))
    }

    /// LIST_USERS: a page of users in id order.
    pub(super) fn list_users(&self, auid: u64, after: u64) -> CmdResult {
        self.moderator(auid)?;
        let mut users = db(self.store().users_after(after, USER_PAGE + 1))?;
        let next = if users.len() > USER_PAGE {
            users.truncate(USER_PAGE);
            users.last().map_or(0, |u| u.id)
        } else {
            0
        };
        let users = users
            .into_iter()
            .map(|u| UserEntry {
                id: u.id,
                perms: u.perms,
                name: u.name,
            })
            .collect();
        Ok(ControlReply::UserPage(UserPage { users, next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_list_matches_users_prefixes_and_expiry() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let list = BanList::new(vec![
            BanEntry {
                id: 2,
                target: BanTarget::net(ip("10.1.0.0"), 16).unwrap(),
                expires_unix_ms: 0,
                reason: "spam".into(),
            },
            BanEntry {
                id: 1,
                target: BanTarget::User(42),
                expires_unix_ms: 5_000,
                reason: String::new(),
            },
        ]);
        assert_eq!(list.user(42, 4_999).map(|b| b.id), Some(1));
        assert!(list.user(42, 5_000).is_none(), "expired");
        assert!(list.user(43, 0).is_none());
        assert_eq!(
            list.address(ip("10.1.200.3"), u64::MAX).map(|b| b.id),
            Some(2)
        );
        assert!(list.address(ip("10.2.0.1"), 0).is_none());
        assert_eq!(list.expired(6_000), vec![1]);
        let mut list = list;
        for id in [7, 5, 6] {
            list.insert(BanEntry {
                id,
                target: BanTarget::User(id),
                expires_unix_ms: 0,
                reason: String::new(),
            });
        }
        let ids: Vec<u64> = list.bans.iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2, 5, 6, 7]);
    }
}
