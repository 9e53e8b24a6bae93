//! CREATE, DELETE, JOIN, LEAVE, GET_PORT, GET_CHANNELS, SET/GET_CHANNEL_NAME, CHANNEL_INFO.
//!
//! Each takes the store lock for its database steps only and the registry lock for its
//! channel steps only (see the module doc of `control` for why and in which order).

use std::sync::Arc;

use kv_proto::control::LIST_PAGE;
use kv_proto::{ChannelInfo, ChannelPage, ChannelSummary, ControlReply, ErrorCode, Perms};

use super::{allow, db, CmdResult, Control, Origin};
use crate::channel::{Admission, RelayError};
use crate::ids::{random_id, MAX_ID_ATTEMPTS};
use crate::store::{ChannelRecord, Store};

/// A relay failure: a full channel or a stopping server are both "server" errors.
fn relay_err(e: RelayError) -> ErrorCode {
    tracing::warn!(error = %e, "relay refused");
    ErrorCode::Serv
}

impl<S: Store> Control<S> {
    /// May `uid` (with `perms`) own one more channel? perm_admin is exempt from the
    /// per-user quota (not from `--max-channels`).
    fn under_quota(&self, uid: u64, perms: Perms) -> Result<(), ErrorCode> {
        if perms.contains(Perms::ADMIN) {
            return Ok(());
        }
        let owned = db(self.store().channels_owned(uid))?.len();
        if owned >= self.policy().max_channels_per_user {
            tracing::debug!(uid, owned, "channel quota reached");
            return Err(ErrorCode::Serv);
        }
        Ok(())
    }

    /// CREATE: needs perm_add_channel, within the owner's quota and the descriptor budget.
    /// The socket is open before the reply, so the creator can join at once.
    pub(super) fn create(&self, uid: u64, encrypted: bool) -> CmdResult {
        let user = self.existing_user(uid)?;
        let perms = Perms(user.perms);
        allow(perms.contains(Perms::ADD_CHANNEL))?;
        self.under_quota(uid, perms)?;
        if !self.fds.can_open_channel() {
            tracing::warn!("file descriptors reserved for control connections; CREATE refused");
            return Err(ErrorCode::Serv);
        }
        let chid = (0..MAX_ID_ATTEMPTS)
            .map(|_| random_id())
            .find(|&id| {
                // Two statements: the store lock is released before the registry's is taken.
                let free = matches!(self.store().channel(id), Ok(None));
                free && self.registry().port(id).is_none()
            })
            .ok_or(ErrorCode::Serv)?;
        let port = self.registry_write().open(chid, None).map_err(|e| {
            tracing::warn!(error = %e, "cannot open channel");
            ErrorCode::Serv
        })?;
        let record = ChannelRecord {
            id: chid,
            owner: uid,
            name: String::new(),
            port,
        };
        // The owner may have been unregistered (or used up its quota) meanwhile: check
        // again under the same lock as the insert.
        let stored = {
            let mut store = self.store();
            let still_ok = matches!(store.user(uid), Ok(Some(_)))
                && (perms.contains(Perms::ADMIN)
                    || store
                        .channels_owned(uid)
                        .is_ok_and(|c| c.len() < self.policy().max_channels_per_user));
            still_ok
                && db(store.insert_channel(&record)).unwrap_or(false)
                && (!encrypted || db(store.set_channel_encrypted(chid)).is_ok() || {
                    // Never leave a channel meant to be encrypted behind as plain.
                    let _ = store.delete_channel(chid);
                    false
                })
        };
        if !stored {
            self.registry_write().close(chid);
            return Err(ErrorCode::Serv);
        }
        tracing::info!(chid, port, "channel created");
        Ok(ControlReply::Value(chid))
    }

    /// DELETE: the owner, or perm_rm_channel. Members get SHUTDOWN.
    pub(super) fn delete(&self, uid: u64, chid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        let ch = self.existing_channel(chid)?;
        allow(ch.owner == uid || Perms(user.perms).contains(Perms::RM_CHANNEL))?;
        if !db(self.store().delete_channel(chid))? {
            return Err(ErrorCode::Param);
        }
        self.registry_write().close(chid);
        self.push.delete_channel(chid);
        tracing::info!(chid, "channel deleted");
        Ok(ControlReply::Value(chid))
    }

    /// JOIN and JOIN_KEX: oneself, or anyone with perm_add_user. Replies with the channel's
    /// port. With JOIN_KEX (`client_kex`), only a BIND offering that X25519 key, with a
    /// proof that its sender holds the secret, binds the member: knowing the uid is not
    /// enough to race the member's own BIND. A plain JOIN of a key-less user on a server
    /// with `--allow-unsigned` (the seed's client) is admitted as *legacy*, bound the seed's
    /// way (PROTOCOL.md §2, "Seed clients"); any other plain JOIN binds with the cookie
    /// handshake and any key (PROTOCOL.md, "Residual risks").
    pub(super) fn join(
        &self,
        uid: u64,
        juid: u64,
        chid: u64,
        client_kex: Option<[u8; 32]>,
    ) -> CmdResult {
        let user = self.existing_user(uid)?;
        let joiner = self.existing_user(juid)?;
        self.existing_channel(chid)?;
        allow(uid == juid || Perms(user.perms).contains(Perms::ADD_USER))?;
        // An encrypted channel admits only clients that take part in its group: the
        // joiner must have a push connection (a seed client, or an older KV client, never
        // has one), so nobody sends plaintext into it.
        let encrypted = db(self.store().channel_encrypted(chid))?;
        allow(!encrypted || self.push.connected(juid))?;
        let admission = Admission {
            legacy: client_kex.is_none() && self.policy().allow_unsigned && joiner.key.is_none(),
            client_kex,
        };
        // The lock is released before the worker's answer is awaited (see `Registry::ask`).
        let (port, pending) = {
            let registry = self.registry();
            let port = registry.port(chid).ok_or(ErrorCode::Serv)?;
            (port, registry.join_with(chid, juid, admission))
        };
        pending.joined().map_err(relay_err)?;
        if encrypted && !self.push.admit(chid, juid) {
            return Err(ErrorCode::Serv);
        }
        Ok(ControlReply::Value(u64::from(port)))
    }

    /// LEAVE: oneself, or anyone with perm_kick_user. A kicked user hears LEAVE too.
    /// PARAM when `luid` is not a member.
    pub(super) fn leave(&self, uid: u64, luid: u64, chid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        self.existing_user(luid)?;
        self.existing_channel(chid)?;
        allow(uid == luid || Perms(user.perms).contains(Perms::KICK_USER))?;
        // Sent under the registry lock, awaited after it is released.
        let pending = self.registry().leave(chid, luid, uid != luid);
        match pending.wait() {
            Ok(true) => {
                self.push.leave(chid, luid);
                Ok(ControlReply::Value(1))
            }
            Ok(false) => Err(ErrorCode::Param),
            Err(e) => Err(relay_err(e)),
        }
    }

    /// GET_PORT: anyone.
    pub(super) fn get_port(&self, chid: u64) -> CmdResult {
        self.existing_channel(chid)?;
        let port = self.registry().port(chid).ok_or(ErrorCode::Serv)?;
        Ok(ControlReply::Value(u64::from(port)))
    }

    /// GET_CHANNELS: every channel id, oldest first.
    pub(super) fn get_channels(&self) -> CmdResult {
        let ids = db(self.store().channels())?.iter().map(|c| c.id).collect();
        Ok(ControlReply::Channels(ids))
    }

    /// LIST_CHANNELS: a page of channels in creation order with names, owners and bound
    /// member counts; anyone. One store query and no relay worker asked (the counts are
    /// what the workers last published), so a refresh costs the same however busy the
    /// relay is. `after` and `next` are creation positions, so a deletion between two
    /// pages skips nothing.
    pub(super) fn list_channels(&self, after: u64) -> CmdResult {
        let mut rows = db(self.store().channels_after(after, LIST_PAGE + 1))?;
        let next = if rows.len() > LIST_PAGE {
            rows.truncate(LIST_PAGE);
            rows.last().map_or(0, |(seq, _)| *seq)
        } else {
            0
        };
        let registry = self.registry();
        let channels = rows
            .into_iter()
            .map(|(_, c)| ChannelSummary {
                id: c.id,
                owner: c.owner,
                members: registry.bound_count(c.id).unwrap_or(0) as u64,
                name: c.name,
            })
            .collect();
        Ok(ControlReply::ChannelPage(ChannelPage { channels, next }))
    }

    /// SET_CHANNEL_NAME: the owner, or perm_rm_channel.
    pub(super) fn set_channel_name(&self, uid: u64, chid: u64, name: &str) -> CmdResult {
        if !kv_proto::names::is_allowed_name(name) {
            return Err(ErrorCode::Inval);
        }
        let user = self.existing_user(uid)?;
        let ch = self.existing_channel(chid)?;
        allow(ch.owner == uid || Perms(user.perms).contains(Perms::RM_CHANNEL))?;
        if !db(self.store().set_channel_name(chid, name))? {
            return Err(ErrorCode::Param);
        }
        Ok(ControlReply::Value(1))
    }

    /// CHANNEL_INFO: name, owner, port and bound members with their names; anyone. Served from
    /// [`super::info_cache`] when a fresh answer is there.
    pub(super) fn channel_info(&self, chid: u64, origin: &Origin) -> CmdResult {
        let generation = self.generation();
        if let Some(info) = self.info_cache.get(chid, origin.now, generation) {
            return Ok(ControlReply::ChannelInfo((*info).clone()));
        }
        let ch = self.existing_channel(chid)?;
        // Only members with a proven address: one admitted by a JOIN that never binds
        // expires silently, so listing it would leave a ghost in clients' member lists.
        let (port, pending) = {
            let registry = self.registry();
            let port = registry.port(chid).ok_or(ErrorCode::Serv)?;
            (port, registry.bound_members(chid))
        };
        let uids = pending.wait().map_err(relay_err)?;
        let names = db(self.store().user_names(&uids))?;
        let info = ChannelInfo {
            name: ch.name,
            owner: ch.owner,
            port: u64::from(port),
            members: uids.into_iter().zip(names).collect(),
        };
        let info = Arc::new(info);
        self.info_cache
            .put(chid, origin.now, generation, info.clone());
        Ok(ControlReply::ChannelInfo(Arc::unwrap_or_clone(info)))
    }
}
