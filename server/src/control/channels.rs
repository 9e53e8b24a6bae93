//! CREATE, DELETE, JOIN, LEAVE, GET_PORT, GET_CHANNELS, SET/GET_CHANNEL_NAME, CHANNEL_INFO.

use kv_proto::{ChannelInfo, ControlReply, ErrorCode, Perms};

use super::{allow, db, CmdResult, Control};
use crate::channel::RelayError;
use crate::ids::{random_id, MAX_ID_ATTEMPTS};
use crate::store::{ChannelRecord, Store};

/// A relay failure: a full channel or a stopping server are both "server" errors.
fn relay_err(e: RelayError) -> ErrorCode {
    tracing::warn!(error = %e, "relay refused");
    ErrorCode::Serv
}

impl<S: Store> Control<S> {
    /// CREATE: needs perm_add_channel. The socket is open before the reply, so the
    /// creator can join at once.
    pub(super) fn create(&mut self, uid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        allow(Perms(user.perms).contains(Perms::ADD_CHANNEL))?;
        let chid = (0..MAX_ID_ATTEMPTS)
            .map(|_| random_id())
            .find(|&id| {
                matches!(self.store.channel(id), Ok(None)) && self.registry.port(id).is_none()
            })
            .ok_or(ErrorCode::Serv)?;
        let port = self.registry.open(chid, None).map_err(|e| {
            tracing::warn!(error = %e, "cannot open channel");
            ErrorCode::Serv
        })?;
        let record = ChannelRecord {
            id: chid,
            owner: uid,
            name: String::new(),
            port,
        };
        match db(self.store.insert_channel(&record)) {
            Ok(true) => {
                tracing::info!(chid, port, owner = uid, "channel created");
                Ok(ControlReply::Value(chid))
            }
            Ok(false) | Err(_) => {
                self.registry.close(chid);
                Err(ErrorCode::Serv)
            }
        }
    }

    /// DELETE: the owner, or perm_rm_channel. Members get SHUTDOWN.
    pub(super) fn delete(&mut self, uid: u64, chid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        let ch = self.existing_channel(chid)?;
        allow(ch.owner == uid || Perms(user.perms).contains(Perms::RM_CHANNEL))?;
        if !db(self.store.delete_channel(chid))? {
            return Err(ErrorCode::Param);
        }
        self.registry.close(chid);
        tracing::info!(chid, by = uid, "channel deleted");
        Ok(ControlReply::Value(chid))
    }

    /// JOIN: oneself, or anyone with perm_add_user. Replies with the channel's port.
    pub(super) fn join(&mut self, uid: u64, juid: u64, chid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        self.existing_user(juid)?;
        self.existing_channel(chid)?;
        allow(uid == juid || Perms(user.perms).contains(Perms::ADD_USER))?;
        let port = self.registry.port(chid).ok_or(ErrorCode::Serv)?;
        self.registry.join(chid, juid).map_err(relay_err)?;
        Ok(ControlReply::Value(u64::from(port)))
    }

    /// LEAVE: oneself, or anyone with perm_kick_user. A kicked user hears LEAVE too.
    /// PARAM when `luid` is not a member.
    pub(super) fn leave(&mut self, uid: u64, luid: u64, chid: u64) -> CmdResult {
        let user = self.existing_user(uid)?;
        self.existing_user(luid)?;
        self.existing_channel(chid)?;
        allow(uid == luid || Perms(user.perms).contains(Perms::KICK_USER))?;
        match self.registry.leave(chid, luid, uid != luid) {
            Ok(true) => Ok(ControlReply::Value(1)),
            Ok(false) => Err(ErrorCode::Param),
            Err(e) => Err(relay_err(e)),
        }
    }

    /// GET_PORT: anyone.
    pub(super) fn get_port(&self, chid: u64) -> CmdResult {
        self.existing_channel(chid)?;
        let port = self.registry.port(chid).ok_or(ErrorCode::Serv)?;
        Ok(ControlReply::Value(u64::from(port)))
    }

    /// GET_CHANNELS: every channel id, oldest first.
    pub(super) fn get_channels(&self) -> CmdResult {
        let ids = db(self.store.channels())?.iter().map(|c| c.id).collect();
        Ok(ControlReply::Channels(ids))
    }

    /// SET_CHANNEL_NAME: the owner, or perm_rm_channel.
    pub(super) fn set_channel_name(&mut self, uid: u64, chid: u64, name: &str) -> CmdResult {
        let user = self.existing_user(uid)?;
        let ch = self.existing_channel(chid)?;
        allow(ch.owner == uid || Perms(user.perms).contains(Perms::RM_CHANNEL))?;
        if !db(self.store.set_channel_name(chid, name))? {
            return Err(ErrorCode::Param);
        }
        Ok(ControlReply::Value(1))
    }

    /// CHANNEL_INFO: name, owner, port and members with their names; anyone.
    pub(super) fn channel_info(&self, chid: u64) -> CmdResult {
        let ch = self.existing_channel(chid)?;
        let port = self.registry.port(chid).ok_or(ErrorCode::Serv)?;
        let uids = self.registry.members(chid).map_err(relay_err)?;
        let mut members = Vec::with_capacity(uids.len());
        for uid in uids {
            let name = db(self.store.user(uid))?
                .map(|u| u.name)
                .unwrap_or_default();
            members.push((uid, name));
        }
        Ok(ControlReply::ChannelInfo(ChannelInfo {
            name: ch.name,
            owner: ch.owner,
            port: u64::from(port),
            members,
        }))
    }
}
