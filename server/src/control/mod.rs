//! The control plane: one request per TCP connection ([`connection`]) applied to the
//! server's state ([`Control`]), with the seed's permission rules.
//!
//! Commands are grouped by what they act on: [`users`] (REGISTER, UNREGISTER, names,
//! USER_INFO), [`channels`] (CREATE, DELETE, JOIN, LEAVE, GET_PORT, GET_CHANNELS, names,
//! CHANNEL_INFO) and [`info`] (SERVER_INFO). Checks run in one order everywhere: every id
//! named must exist (else PARAM), then the requester must be allowed (else ACCESS).

pub mod channels;
pub mod connection;
pub mod info;
pub mod users;

use kv_proto::{ControlReply, ControlRequest, ErrorCode, Perms};

use crate::channel::Registry;
use crate::store::{ChannelRecord, Store, StoreResult, UserRecord};

/// What a command handler returns: the reply, or the error code to send.
pub type CmdResult = Result<ControlReply, ErrorCode>;

/// The server's state as the control plane sees it: the store and the open channels.
///
/// Requests are applied one at a time (the server keeps this behind a mutex and calls
/// [`Control::apply`] on a blocking thread), which makes each command atomic: no JOIN can
/// race a DELETE of the same channel.
#[derive(Debug)]
pub struct Control<S: Store> {
    /// Users and channels.
    store: S,
    /// Open channels and the relay workers that serve them.
    registry: Registry,
    /// Ed25519 public key, for SERVER_INFO.
    public_key: [u8; 32],
    /// Permissions given to self-registered users.
    default_perms: Perms,
}

impl<S: Store> Control<S> {
    /// Wraps the store and registry.
    pub fn new(store: S, registry: Registry, public_key: [u8; 32], default_perms: Perms) -> Self {
        Self {
            store,
            registry,
            public_key,
            default_perms,
        }
    }

    /// Applies one request and returns the reply to send. Only returns after every change
    /// the request made is durable.
    pub fn apply(&mut self, req: ControlRequest) -> ControlReply {
        use ControlRequest as R;
        let result = match req {
            R::Create { uid } => self.create(uid),
            R::Delete { uid, chid } => self.delete(uid, chid),
            R::Join { uid, juid, chid } => self.join(uid, juid, chid),
            R::Leave { uid, luid, chid } => self.leave(uid, luid, chid),
            R::Register { auid, perm } => self.register(auid, perm),
            R::Unregister { auid, uid } => self.unregister(auid, uid),
            R::GetPort { chid } => self.get_port(chid),
            R::GetChannels => self.get_channels(),
            R::ServerInfo => Ok(self.server_info()),
            R::SetUserName { uid, target, name } => self.set_user_name(uid, target, &name),
            // GET_USER_NAME, GET_CHANNEL_NAME and USER_INFO: anyone may ask.
            R::GetUserName { uid } => self.existing_user(uid).map(|u| ControlReply::Name(u.name)),
            R::SetChannelName { uid, chid, name } => self.set_channel_name(uid, chid, &name),
            R::GetChannelName { chid } => self
                .existing_channel(chid)
                .map(|c| ControlReply::Name(c.name)),
            R::ChannelInfo { chid } => self.channel_info(chid),
            R::UserInfo { uid } => self.existing_user(uid).map(|u| ControlReply::UserInfo {
                perms: u.perms,
                name: u.name,
            }),
        };
        result.unwrap_or_else(ControlReply::Error)
    }

    /// The open channels (the server re-opens stored channels into it at start, and stops
    /// them at shutdown).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The store, for start-up (admin bootstrap) and shutdown (close).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back, so it can be closed cleanly.
    pub fn into_store(self) -> S {
        self.store
    }

    /// A user who must exist (PARAM otherwise).
    fn existing_user(&self, uid: u64) -> Result<UserRecord, ErrorCode> {
        db(self.store.user(uid))?.ok_or(ErrorCode::Param)
    }

    /// A channel that must exist (PARAM otherwise).
    fn existing_channel(&self, chid: u64) -> Result<ChannelRecord, ErrorCode> {
        db(self.store.channel(chid))?.ok_or(ErrorCode::Param)
    }
}

/// Maps a store failure to SERV, logging it (the client only learns "server error").
fn db<T>(r: StoreResult<T>) -> Result<T, ErrorCode> {
    r.map_err(|e| {
        tracing::error!(error = %e, "database error");
        ErrorCode::Serv
    })
}

/// ACCESS unless `ok`.
fn allow(ok: bool) -> Result<(), ErrorCode> {
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::Access)
    }
}

#[cfg(test)]
mod tests;
