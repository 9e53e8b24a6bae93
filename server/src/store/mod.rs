//! Persistent users and channels, behind a trait so control logic does not know SQL.
//!
//! Every mutating call returns only after the change is durable (the SQLite store commits
//! with `synchronous=FULL`), so a reply sent after it survives a crash of the server.

mod sqlite;

pub use sqlite::{SqliteStore, DB_FILE};

use thiserror::Error;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// User id (random, valid per `kv_proto::is_valid_uid`).
    pub id: u64,
    /// Permission bits.
    pub perms: u64,
    /// Display name ("" until set).
    pub name: String,
    /// Ed25519 public key that signs this user's requests; `None` for a key-less user
    /// (who can only act through unsigned requests, with `--allow-unsigned`).
    pub key: Option<[u8; 32]>,
}

/// A channel that exists (and is re-opened on restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Channel id (random, same validity rule as user ids).
    pub id: u64,
    /// The creator, who may delete and rename it.
    pub owner: u64,
    /// Channel name ("" until set).
    pub name: String,
    /// UDP port of its socket, re-used on restart when free.
    pub port: u16,
}

/// The database failed; the request gets SERV.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database holds something this version cannot read.
    #[error("corrupt database: {0}")]
    Corrupt(&'static str),
}

/// Result of every store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Users, channels and a few server facts (the admin's id).
///
/// `insert_*` return `false` when the id is taken, so callers can draw another random id;
/// `delete_*` and `set_*` return `false` when the id does not exist.
pub trait Store: Send {
    /// One user, if it exists.
    fn user(&self, id: u64) -> StoreResult<Option<UserRecord>>;
    /// Adds a user unless the id is taken.
    fn insert_user(&mut self, user: &UserRecord) -> StoreResult<bool>;
    /// Removes a user.
    fn delete_user(&mut self, id: u64) -> StoreResult<bool>;
    /// Renames a user.
    fn set_user_name(&mut self, id: u64, name: &str) -> StoreResult<bool>;
    /// Sets (or replaces) a user's public key.
    fn set_user_key(&mut self, id: u64, key: &[u8; 32]) -> StoreResult<bool>;
    /// Display names of the given users, in the same order ("" for unknown ones), with one
    /// prepared statement: CHANNEL_INFO lists up to 4096 members.
    fn user_names(&self, ids: &[u64]) -> StoreResult<Vec<String>>;
    /// The channels `owner` created, oldest first (for `--max-channels-per-user`, and to
    /// delete them with their owner).
    fn channels_owned(&self, owner: u64) -> StoreResult<Vec<u64>>;
    /// One channel, if it exists.
    fn channel(&self, id: u64) -> StoreResult<Option<ChannelRecord>>;
    /// Every channel, oldest first.
    fn channels(&self) -> StoreResult<Vec<ChannelRecord>>;
    /// Up to `limit` channels created after position `after` (0: from the first), in
    /// creation order, each with its position: a cursor that deletions do not shift.
    fn channels_after(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, ChannelRecord)>>;
    /// Adds a channel unless the id is taken.
    fn insert_channel(&mut self, channel: &ChannelRecord) -> StoreResult<bool>;
    /// Removes a channel.
    fn delete_channel(&mut self, id: u64) -> StoreResult<bool>;
    /// Renames a channel.
    fn set_channel_name(&mut self, id: u64, name: &str) -> StoreResult<bool>;
    /// Records a new port (the old one was taken when the channel was re-opened).
    fn set_channel_port(&mut self, id: u64, port: u16) -> StoreResult<bool>;
    /// Marks a channel end-to-end encrypted (for its lifetime).
    fn set_channel_encrypted(&mut self, id: u64) -> StoreResult<()>;
    /// Is the channel end-to-end encrypted? (false for unknown ids)
    fn channel_encrypted(&self, id: u64) -> StoreResult<bool>;
    /// The bootstrap admin's id, once one was made.
    fn admin_id(&self) -> StoreResult<Option<u64>>;
    /// Remembers the bootstrap admin's id.
    fn set_admin_id(&mut self, id: u64) -> StoreResult<()>;
    /// Sets a user's permission bits; false if there is no such user.
    fn set_user_perms(&mut self, id: u64, perms: u64) -> StoreResult<bool>;
    /// Up to `limit` users after `after` in LIST_USERS order (unsigned id order).
    fn users_after(&self, after: u64, limit: usize) -> StoreResult<Vec<UserRecord>>;
    /// Every ban, expired ones included, in id order.
    fn bans(&self) -> StoreResult<Vec<kv_proto::BanEntry>>;
    /// Records a ban (its `id` is ignored) and returns the id it got.
    fn insert_ban(&mut self, ban: &kv_proto::BanEntry) -> StoreResult<u64>;
    /// Deletes a ban; false if there was none with this id.
    fn delete_ban(&mut self, id: u64) -> StoreResult<bool>;
}
