//! TCP control messages: one request, one reply per connection (WIRE.md §1, PROTOCOL.md).
//!
//! Requests are `type: u32` then fields. The seed's eight commands (types 0–7) carry only
//! `u64` fields; our extensions (types 8 and up) may add one length-prefixed string.
//! Replies are `status: u64` (non-zero success value, or zero then `error: u32`), except
//! GET_CHANNELS, whose reply is the bare list.

use crate::codec::{check_name, put_string, put_u32, put_u64, Reader};
use crate::error::{DecodeError, ErrorCode};

/// Bytes of `u64` fields the prototype client always sends; the server ignores padding up to
/// this length (WIRE.md §1).
pub const SEED_FIELDS_LEN: usize = 32;

/// Upper bound on an unsigned request's size: type, four `u64`s, an address and the longest
/// string (BAN, the longest request).
/// It is also the most a SIGNED envelope may carry inside.
pub const MAX_PLAIN_REQUEST_LEN: usize = 4 + 4 * 8 + 16 + 8 + crate::MAX_NAME_LEN;

/// Upper bound on any request's size: a SIGNED envelope around the longest plain request.
/// A server never needs to buffer more than this for one request.
pub const MAX_REQUEST_LEN: usize =
    crate::signed::HEADER_LEN + MAX_PLAIN_REQUEST_LEN + crate::signed::SIGNATURE_LEN;

/// Most channel ids a GET_CHANNELS reply may announce; bounds what a client allocates.
pub const MAX_LISTED_CHANNELS: u64 = 1 << 16;

/// Most members a CHANNEL_INFO reply may announce; bounds what a client allocates.
pub const MAX_LISTED_MEMBERS: u64 = 1 << 12;

/// Most channels one LIST_CHANNELS reply carries; a longer list is paged (`next`).
pub const LIST_PAGE: usize = 256;

/// Most users one LIST_USERS reply carries.
pub const USER_PAGE: usize = 256;

/// Most bans one LIST_BANS reply carries.
pub const BAN_PAGE: usize = 64;

/// Feature bits reported by SERVER_INFO, so clients can probe before using an extension.
pub mod features {
    /// SET/GET_USER_NAME, SET/GET_CHANNEL_NAME are served.
    pub const NAMES: u64 = 1 << 0;
    /// CHANNEL_INFO is served.
    pub const CHANNEL_INFO: u64 = 1 << 1;
    /// System packets from the server carry an Ed25519 signature (see `packet`).
    pub const SIGNED_SYSTEM_PACKETS: u64 = 1 << 2;
    /// USER_INFO is served.
    pub const USER_INFO: u64 = 1 << 3;
    /// REGISTER_KEY, SET_KEY and SIGNED are served: users have keys and the server checks
    /// signed requests (see `signed`).
    pub const SIGNED_REQUESTS: u64 = 1 << 4;
    /// JOIN_KEX is served: a JOIN naming the X25519 key the member's BIND must offer.
    pub const JOIN_KEX: u64 = 1 << 5;
    /// LIST_CHANNELS is served: channels with names, owners and member counts, paged.
    pub const LIST_CHANNELS: u64 = 1 << 6;
    /// Moderation is served: BAN, UNBAN, SET_PERMS, LIST_BANS, LIST_USERS.
    pub const MODERATION: u64 = 1 << 7;
    /// End-to-end encrypted channels are served: PUSH (the push connection and delivery
    /// service), CREATE_ENCRYPTED, CHANNEL_MODE. Never set with `--allow-unsigned`.
    pub const E2EE: u64 = 1 << 8;
}

/// Command type numbers: the seed's 0–7, then our extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CommandType {
    /// Create a channel.
    Create = 0,
    /// Delete a channel.
    Delete = 1,
    /// Join a user to a channel.
    Join = 2,
    /// Remove a user from a channel.
    Leave = 3,
    /// Register a user.
    Register = 4,
    /// Unregister a user.
    Unregister = 5,
    /// A channel's UDP port.
    GetPort = 6,
    /// All channel ids.
    GetChannels = 7,
    /// Extension: protocol version, features and the server's public key.
    ServerInfo = 8,
    /// Extension: set a user's display name.
    SetUserName = 9,
    /// Extension: get a user's display name.
    GetUserName = 10,
    /// Extension: set a channel's name.
    SetChannelName = 11,
    /// Extension: get a channel's name.
    GetChannelName = 12,
    /// Extension: a channel's name, owner, port and members.
    ChannelInfo = 13,
    /// Extension: a user's permissions and display name.
    UserInfo = 14,
    /// Extension: register a user together with its Ed25519 public key.
    RegisterKey = 15,
    /// Extension: set (or replace) a user's public key.
    SetKey = 16,
    /// Extension: an envelope carrying another request, signed by the acting user's key.
    Signed = 17,
    /// Extension: JOIN naming the X25519 key the member will bind its voice address with.
    JoinKex = 18,
    /// Extension: a page of channels with name, owner and bound-member count.
    ListChannels = 19,
    /// Extension: ban a user or an address prefix, with a reason and an expiry.
    Ban = 20,
    /// Extension: lift a ban.
    Unban = 21,
    /// Extension: set a user's permission bits.
    SetPerms = 22,
    /// Extension: a page of bans in force.
    ListBans = 23,
    /// Extension: a page of users with permissions and names.
    ListUsers = 24,
    /// Extension: opens the push connection (always SIGNED); see `crate::push`.
    Push = 25,
    /// Extension: CREATE of an end-to-end encrypted channel.
    CreateEncrypted = 26,
    /// Extension: is a channel plain (1) or end-to-end encrypted (2)?
    ChannelMode = 27,
}

impl CommandType {
    /// Maps a wire value to a command type.
    pub fn from_u32(v: u32) -> Option<Self> {
        use CommandType::*;
        Some(match v {
            0 => Create,
            1 => Delete,
            2 => Join,
            3 => Leave,
            4 => Register,
            5 => Unregister,
            6 => GetPort,
            7 => GetChannels,
            8 => ServerInfo,
            9 => SetUserName,
            10 => GetUserName,
            11 => SetChannelName,
            12 => GetChannelName,
            13 => ChannelInfo,
            14 => UserInfo,
            15 => RegisterKey,
            16 => SetKey,
            17 => Signed,
            18 => JoinKex,
            19 => ListChannels,
            20 => Ban,
            21 => Unban,
            22 => SetPerms,
            23 => ListBans,
            24 => ListUsers,
            25 => Push,
            26 => CreateEncrypted,
            27 => ChannelMode,
            _ => return None,
        })
    }

    /// True for the seed's eight commands, whose requests may be padded to 32 bytes of fields.
    pub fn is_seed(self) -> bool {
        (self as u32) < 8
    }
}

/// A decoded control request. Field names follow the seed (`uid` is who asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// CREATE: `uid` creates a channel; needs perm_add_channel.
    Create {
        /// Requesting user.
        uid: u64,
    },
    /// DELETE: `uid` deletes `chid`; needs ownership or perm_rm_channel.
    Delete {
        /// Requesting user.
        uid: u64,
        /// Channel to delete.
        chid: u64,
    },
    /// JOIN: `uid` joins `juid` to `chid`; needs perm_add_user when they differ.
    Join {
        /// Requesting user.
        uid: u64,
        /// Joining user.
        juid: u64,
        /// Channel.
        chid: u64,
    },
    /// LEAVE: `uid` removes `luid` from `chid`; needs perm_kick_user when they differ.
    Leave {
        /// Requesting user.
        uid: u64,
        /// Leaving user.
        luid: u64,
        /// Channel.
        chid: u64,
    },
    /// REGISTER: sign-up when `auid` is 0, else an admin creates a user with `perm`.
    Register {
        /// Administrator, or 0 for a plain sign-up.
        auid: u64,
        /// Permissions of the new user (ignored when `auid` is 0).
        perm: u64,
    },
    /// UNREGISTER: `auid` removes `uid`; free for oneself, else needs perm_delete_user.
    Unregister {
        /// Requesting user.
        auid: u64,
        /// User to remove.
        uid: u64,
    },
    /// GET_PORT: the UDP port of `chid`; no permission needed.
    GetPort {
        /// Channel.
        chid: u64,
    },
    /// GET_CHANNELS: every channel id.
    GetChannels,
    /// SERVER_INFO (extension): version, features, public key.
    ServerInfo,
    /// SET_USER_NAME (extension): `uid` names `target`; oneself, or with perm_admin.
    SetUserName {
        /// Requesting user.
        uid: u64,
        /// User being named.
        target: u64,
        /// New display name (at most 64 bytes of UTF-8).
        name: String,
    },
    /// GET_USER_NAME (extension): display name of `uid`.
    GetUserName {
        /// User asked about.
        uid: u64,
    },
    /// SET_CHANNEL_NAME (extension): owner or perm_rm_channel renames `chid`.
    SetChannelName {
        /// Requesting user.
        uid: u64,
        /// Channel.
        chid: u64,
        /// New name (at most 64 bytes of UTF-8).
        name: String,
    },
    /// GET_CHANNEL_NAME (extension): name of `chid`.
    GetChannelName {
        /// Channel.
        chid: u64,
    },
    /// CHANNEL_INFO (extension): name, owner, port and members of `chid`.
    ChannelInfo {
        /// Channel.
        chid: u64,
    },
    /// USER_INFO (extension): permissions and display name of `uid`.
    UserInfo {
        /// User asked about.
        uid: u64,
    },
    /// REGISTER_KEY (extension): like REGISTER, and the new user gets `public_key`.
    RegisterKey {
        /// Administrator, or 0 for a plain sign-up (then signed by `public_key` itself).
        auid: u64,
        /// Permissions of the new user (ignored when `auid` is 0).
        perm: u64,
        /// The new user's Ed25519 public key.
        public_key: [u8; 32],
    },
    /// SET_KEY (extension): `auid` sets the key of `uid`; oneself, or with perm_admin.
    SetKey {
        /// Requesting user.
        auid: u64,
        /// User whose key is set.
        uid: u64,
        /// The new Ed25519 public key.
        public_key: [u8; 32],
    },
    /// SIGNED (extension): another request, signed by the acting user's key.
    Signed(Box<crate::signed::SignedRequest>),
    /// JOIN_KEX (extension): JOIN, and only a BIND offering `client_kex` (proving it holds
    /// its secret) binds `juid`'s voice address. Replies like JOIN (the port).
    JoinKex {
        /// Requesting user.
        uid: u64,
        /// Joining user.
        juid: u64,
        /// Channel.
        chid: u64,
        /// The X25519 public key the joining client will offer in BIND.
        client_kex: [u8; 32],
    },
    /// LIST_CHANNELS (extension): up to [`LIST_PAGE`] channels with ids above `after`, in
    /// id order; anyone. Start with `after` 0 and go on with the reply's `next`.
    ListChannels {
        /// Only channels with a greater id.
        after: u64,
    },
    /// BAN (extension): `auid` (perm_admin) bans `target` for `secs` seconds (0: until
    /// lifted). A banned user's (or address's) JOIN and REGISTER are ACCESS; a banned user
    /// is removed from its channels. Replies the ban's id.
    Ban {
        /// Requesting user.
        auid: u64,
        /// Who is banned.
        target: BanTarget,
        /// How long, in seconds; 0 = until UNBAN.
        secs: u64,
        /// Why (at most 64 bytes of UTF-8), shown by LIST_BANS.
        reason: String,
    },
    /// UNBAN (extension): `auid` (perm_admin) lifts ban `id`.
    Unban {
        /// Requesting user.
        auid: u64,
        /// The ban, as BAN or LIST_BANS gave it.
        id: u64,
    },
    /// SET_PERMS (extension): `auid` (perm_admin) sets `uid`'s permission bits.
    SetPerms {
        /// Requesting user.
        auid: u64,
        /// User whose permissions are set.
        uid: u64,
        /// The new bits.
        perms: u64,
    },
    /// LIST_BANS (extension): up to [`BAN_PAGE`] bans in force with ids above `after`.
    ListBans {
        /// Requesting user (perm_admin).
        auid: u64,
        /// Only bans with a greater id.
        after: u64,
    },
    /// LIST_USERS (extension): up to [`USER_PAGE`] users with ids above `after`, in id order.
    ListUsers {
        /// Requesting user (perm_admin).
        auid: u64,
        /// Only users with a greater id.
        after: u64,
    },
    /// PUSH: opens `uid`'s push connection; only inside a SIGNED envelope by `uid`. After
    /// the reply (status 1) the connection carries push frames both ways (`crate::push`).
    PushOpen {
        /// The user whose connection this is.
        uid: u64,
    },
    /// CREATE_ENCRYPTED: as CREATE, for a channel marked end-to-end encrypted.
    CreateEncrypted {
        /// The creator (owner).
        uid: u64,
    },
    /// CHANNEL_MODE: 1 plain, 2 end-to-end encrypted; anyone.
    ChannelMode {
        /// The channel.
        chid: u64,
    },
}

/// Who a ban is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanTarget {
    /// A user id.
    User(u64),
    /// Every address in a prefix. IPv4 is written IPv4-mapped (`::ffff:a.b.c.d`, prefix
    /// 96 + the IPv4 prefix length), so one form covers both families.
    Net {
        /// The network's address (bits past the prefix are ignored).
        addr: std::net::Ipv6Addr,
        /// Prefix length, 1 to 128.
        prefix: u8,
    },
}

impl BanTarget {
    /// The address prefix `addr/prefix` of either family (IPv4 is mapped); `None` when
    /// the length does not fit the family or is 0 (which would ban everyone).
    pub fn net(addr: std::net::IpAddr, prefix: u8) -> Option<BanTarget> {
        let (addr, prefix) = match addr {
            std::net::IpAddr::V4(v4) if (1..=32).contains(&prefix) => {
                (v4.to_ipv6_mapped(), prefix + 96)
            }
            std::net::IpAddr::V6(v6) if (1..=128).contains(&prefix) => (v6, prefix),
            _ => return None,
        };
        Some(BanTarget::Net { addr, prefix })
    }

    /// True when this is an address ban covering `ip`.
    pub fn covers(&self, ip: std::net::IpAddr) -> bool {
        let BanTarget::Net { addr, prefix } = *self else {
            return false;
        };
        let ip = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        let mask = if prefix >= 128 {
            u128::MAX
        } else {
            !(u128::MAX >> prefix)
        };
        u128::from(ip) & mask == u128::from(addr) & mask
    }
}

impl std::fmt::Display for BanTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            BanTarget::User(uid) => write!(f, "user {uid}"),
            BanTarget::Net { addr, prefix } => match addr.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => write!(f, "{v4}/{}", prefix - 96),
                _ => write!(f, "{addr}/{prefix}"),
            },
        }
    }
}

/// Writes a ban target as BAN carries it: `uid`, `prefix`, 16 address bytes.
fn put_target(out: &mut Vec<u8>, t: &BanTarget) {
    match *t {
        BanTarget::User(uid) => {
            put_u64(out, uid);
            put_u64(out, 0);
            out.extend_from_slice(&[0u8; 16]);
        }
        BanTarget::Net { addr, prefix } => {
            put_u64(out, 0);
            put_u64(out, u64::from(prefix));
            out.extend_from_slice(&addr.octets());
        }
    }
}

/// Reads what [`put_target`] wrote: a uid (prefix 0) or a prefix of 1 to 128 (uid 0).
fn target(r: &mut Reader<'_>) -> Result<BanTarget, DecodeError> {
    let uid = r.u64()?;
    let prefix = r.u64()?;
    let mut octets = [0u8; 16];
    octets.copy_from_slice(r.bytes(16)?);
    match (uid, prefix) {
        (0, 1..=128) => Ok(BanTarget::Net {
            addr: std::net::Ipv6Addr::from(octets),
            prefix: prefix as u8,
        }),
        (uid, 0) if uid != 0 && octets == [0u8; 16] => Ok(BanTarget::User(uid)),
        _ => Err(DecodeError::Invalid(
            "a ban names a user or an address prefix",
        )),
    }
}

impl ControlRequest {
    /// The command type this request is sent as.
    pub fn command_type(&self) -> CommandType {
        use ControlRequest as R;
        match self {
            R::Create { .. } => CommandType::Create,
            R::Delete { .. } => CommandType::Delete,
            R::Join { .. } => CommandType::Join,
            R::Leave { .. } => CommandType::Leave,
            R::Register { .. } => CommandType::Register,
            R::Unregister { .. } => CommandType::Unregister,
            R::GetPort { .. } => CommandType::GetPort,
            R::GetChannels => CommandType::GetChannels,
            R::ServerInfo => CommandType::ServerInfo,
            R::SetUserName { .. } => CommandType::SetUserName,
            R::GetUserName { .. } => CommandType::GetUserName,
            R::SetChannelName { .. } => CommandType::SetChannelName,
            R::GetChannelName { .. } => CommandType::GetChannelName,
            R::ChannelInfo { .. } => CommandType::ChannelInfo,
            R::UserInfo { .. } => CommandType::UserInfo,
            R::RegisterKey { .. } => CommandType::RegisterKey,
            R::SetKey { .. } => CommandType::SetKey,
            R::Signed(_) => CommandType::Signed,
            R::JoinKex { .. } => CommandType::JoinKex,
            R::ListChannels { .. } => CommandType::ListChannels,
            R::Ban { .. } => CommandType::Ban,
            R::Unban { .. } => CommandType::Unban,
            R::SetPerms { .. } => CommandType::SetPerms,
            R::ListBans { .. } => CommandType::ListBans,
            R::ListUsers { .. } => CommandType::ListUsers,
            R::PushOpen { .. } => CommandType::Push,
            R::CreateEncrypted { .. } => CommandType::CreateEncrypted,
            R::ChannelMode { .. } => CommandType::ChannelMode,
        }
    }

    /// The command whose reply shape answers this request: the request's own type, or
    /// for SIGNED the type of the request inside.
    pub fn reply_type(&self) -> CommandType {
        match self {
            ControlRequest::Signed(s) => s.inner.command_type(),
            other => other.command_type(),
        }
    }

    /// The user this request acts as, whose key must sign it: `None` for read-only
    /// requests and sign-ups (REGISTER / REGISTER_KEY with `auid` 0), which act as nobody.
    /// For SIGNED, the actor of the request inside.
    pub fn actor(&self) -> Option<u64> {
        use ControlRequest as R;
        match self {
            R::Create { uid }
            | R::CreateEncrypted { uid }
            | R::PushOpen { uid }
            | R::Delete { uid, .. }
            | R::Join { uid, .. }
            | R::JoinKex { uid, .. }
            | R::Leave { uid, .. }
            | R::SetUserName { uid, .. }
            | R::SetChannelName { uid, .. } => Some(*uid),
            R::Register { auid, .. } | R::RegisterKey { auid, .. } => (*auid != 0).then_some(*auid),
            R::Unregister { auid, .. }
            | R::SetKey { auid, .. }
            | R::Ban { auid, .. }
            | R::Unban { auid, .. }
            | R::SetPerms { auid, .. }
            | R::ListBans { auid, .. }
            | R::ListUsers { auid, .. } => Some(*auid),
            R::GetPort { .. }
            | R::GetChannels
            | R::ServerInfo
            | R::GetUserName { .. }
            | R::GetChannelName { .. }
            | R::ChannelInfo { .. }
            | R::ListChannels { .. }
            | R::ChannelMode { .. }
            | R::UserInfo { .. } => None,
            R::Signed(s) => s.inner.actor(),
        }
    }

    /// True for requests that change something (everything but the read-only queries).
    pub fn is_change(&self) -> bool {
        use ControlRequest as R;
        match self {
            R::GetPort { .. }
            | R::GetChannels
            | R::ServerInfo
            | R::GetUserName { .. }
            | R::GetChannelName { .. }
            | R::ChannelInfo { .. }
            | R::ListChannels { .. }
            | R::ListBans { .. }
            | R::ListUsers { .. }
            | R::ChannelMode { .. }
            | R::PushOpen { .. }
            | R::UserInfo { .. } => false,
            R::Signed(s) => s.inner.is_change(),
            _ => true,
        }
    }

    /// Appends the request's bytes (unpadded) to `out`. Fails only for a name longer than
    /// the wire allows.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        use ControlRequest as R;
        if let R::Signed(s) = self {
            // The envelope keeps the exact bytes that were signed, type included.
            s.encode(out);
            return Ok(());
        }
        put_u32(out, self.command_type() as u32);
        match self {
            R::Create { uid } | R::CreateEncrypted { uid } | R::PushOpen { uid } => {
                put_u64(out, *uid)
            }
            R::ChannelMode { chid } => put_u64(out, *chid),
            R::Delete { uid, chid } => {
                put_u64(out, *uid);
                put_u64(out, *chid);
            }
            R::Join { uid, juid: a, chid } | R::Leave { uid, luid: a, chid } => {
                put_u64(out, *uid);
                put_u64(out, *a);
                put_u64(out, *chid);
            }
            R::Register { auid, perm } => {
                put_u64(out, *auid);
                put_u64(out, *perm);
            }
            R::Unregister { auid, uid } => {
                put_u64(out, *auid);
                put_u64(out, *uid);
            }
            R::GetPort { chid } | R::GetChannelName { chid } | R::ChannelInfo { chid } => {
                put_u64(out, *chid)
            }
            R::ListChannels { after } => put_u64(out, *after),
            R::GetChannels | R::ServerInfo => {}
            R::SetUserName { uid, target, name } => {
                check_name(name)?;
                put_u64(out, *uid);
                put_u64(out, *target);
                put_string(out, name);
            }
            R::GetUserName { uid } | R::UserInfo { uid } => put_u64(out, *uid),
            R::SetChannelName { uid, chid, name } => {
                check_name(name)?;
                put_u64(out, *uid);
                put_u64(out, *chid);
                put_string(out, name);
            }
            R::RegisterKey {
                auid,
                perm,
                public_key,
            } => {
                put_u64(out, *auid);
                put_u64(out, *perm);
                out.extend_from_slice(public_key);
            }
            R::SetKey {
                auid,
                uid,
                public_key,
            } => {
                put_u64(out, *auid);
                put_u64(out, *uid);
                out.extend_from_slice(public_key);
            }
            R::JoinKex {
                uid,
                juid,
                chid,
                client_kex,
            } => {
                put_u64(out, *uid);
                put_u64(out, *juid);
                put_u64(out, *chid);
                out.extend_from_slice(client_kex);
            }
            R::Ban {
                auid,
                target,
                secs,
                reason,
            } => {
                check_name(reason)?;
                put_u64(out, *auid);
                put_target(out, target);
                put_u64(out, *secs);
                put_string(out, reason);
            }
            R::Unban { auid, id: a }
            | R::ListBans { auid, after: a }
            | R::ListUsers { auid, after: a } => {
                put_u64(out, *auid);
                put_u64(out, *a);
            }
            R::SetPerms { auid, uid, perms } => {
                put_u64(out, *auid);
                put_u64(out, *uid);
                put_u64(out, *perms);
            }
            // Written whole above.
            R::Signed(_) => {}
        }
        Ok(())
    }

    /// Decodes one request from the start of `buf` and returns it with the bytes it used
    /// (padding not included). `Incomplete` means a stream should read more; a closed stream
    /// that is still incomplete is an INVAL request.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        use ControlRequest as R;
        let mut r = Reader::new(buf);
        let ty = r.u32()?;
        let cmd = CommandType::from_u32(ty).ok_or(DecodeError::UnknownCommand(ty))?;
        let req = match cmd {
            CommandType::Create => R::Create { uid: r.u64()? },
            CommandType::CreateEncrypted => R::CreateEncrypted { uid: r.u64()? },
            CommandType::Push => R::PushOpen { uid: r.u64()? },
            CommandType::ChannelMode => R::ChannelMode { chid: r.u64()? },
            CommandType::Delete => R::Delete {
                uid: r.u64()?,
                chid: r.u64()?,
            },
            CommandType::Join => R::Join {
                uid: r.u64()?,
                juid: r.u64()?,
                chid: r.u64()?,
            },
            CommandType::Leave => R::Leave {
                uid: r.u64()?,
                luid: r.u64()?,
                chid: r.u64()?,
            },
            CommandType::Register => R::Register {
                auid: r.u64()?,
                perm: r.u64()?,
            },
            CommandType::Unregister => R::Unregister {
                auid: r.u64()?,
                uid: r.u64()?,
            },
            CommandType::GetPort => R::GetPort { chid: r.u64()? },
            CommandType::GetChannels => R::GetChannels,
            CommandType::ServerInfo => R::ServerInfo,
            CommandType::SetUserName => R::SetUserName {
                uid: r.u64()?,
                target: r.u64()?,
                name: r.string()?,
            },
            CommandType::GetUserName => R::GetUserName { uid: r.u64()? },
            CommandType::SetChannelName => R::SetChannelName {
                uid: r.u64()?,
                chid: r.u64()?,
                name: r.string()?,
            },
            CommandType::GetChannelName => R::GetChannelName { chid: r.u64()? },
            CommandType::ChannelInfo => R::ChannelInfo { chid: r.u64()? },
            CommandType::UserInfo => R::UserInfo { uid: r.u64()? },
            CommandType::ListChannels => R::ListChannels { after: r.u64()? },
            CommandType::RegisterKey => R::RegisterKey {
                auid: r.u64()?,
                perm: r.u64()?,
                public_key: key(&mut r)?,
            },
            CommandType::SetKey => R::SetKey {
                auid: r.u64()?,
                uid: r.u64()?,
                public_key: key(&mut r)?,
            },
            CommandType::JoinKex => R::JoinKex {
                uid: r.u64()?,
                juid: r.u64()?,
                chid: r.u64()?,
                client_kex: key(&mut r)?,
            },
            CommandType::Ban => R::Ban {
                auid: r.u64()?,
                target: target(&mut r)?,
                secs: r.u64()?,
                reason: r.string()?,
            },
            CommandType::Unban => R::Unban {
                auid: r.u64()?,
                id: r.u64()?,
            },
            CommandType::SetPerms => R::SetPerms {
                auid: r.u64()?,
                uid: r.u64()?,
                perms: r.u64()?,
            },
            CommandType::ListBans => R::ListBans {
                auid: r.u64()?,
                after: r.u64()?,
            },
            CommandType::ListUsers => R::ListUsers {
                auid: r.u64()?,
                after: r.u64()?,
            },
            CommandType::Signed => {
                let (signed, used) = crate::signed::SignedRequest::decode(buf)?;
                return Ok((R::Signed(Box::new(signed)), used));
            }
        };
        Ok((req, r.position()))
    }
}

/// Reads a 32-byte public key (Ed25519 or X25519).
fn key(r: &mut Reader<'_>) -> Result<[u8; 32], DecodeError> {
    let mut k = [0u8; 32];
    k.copy_from_slice(r.bytes(32)?);
    Ok(k)
}

/// SERVER_INFO's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// [`crate::PROTOCOL_VERSION`] of the server; sent as the (non-zero) status.
    pub version: u64,
    /// Bits of [`features`].
    pub features: u64,
    /// Ed25519 public key that signs the server's system packets.
    pub public_key: [u8; 32],
}

/// CHANNEL_INFO's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel name ("" when never named).
    pub name: String,
    /// Creator's uid.
    pub owner: u64,
    /// UDP port of the channel's socket.
    pub port: u64,
    /// Joined members with their display names, in join order.
    pub members: Vec<(u64, String)>,
}

/// One channel of a LIST_CHANNELS page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Channel id.
    pub id: u64,
    /// Creator's uid.
    pub owner: u64,
    /// Members with a bound voice address (the ones CHANNEL_INFO lists).
    pub members: u64,
    /// Channel name ("" when never named).
    pub name: String,
}

/// LIST_CHANNELS's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPage {
    /// Channels in id order, at most [`LIST_PAGE`].
    pub channels: Vec<ChannelSummary>,
    /// The `after` for the next page, or 0 when this page ends the list.
    pub next: u64,
}

/// One ban of a LIST_BANS page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    /// The ban's id (for UNBAN).
    pub id: u64,
    /// Who is banned.
    pub target: BanTarget,
    /// Until when, unix milliseconds; 0 = until lifted.
    pub expires_unix_ms: u64,
    /// Why.
    pub reason: String,
}

/// LIST_BANS's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPage {
    /// Bans in id order, at most [`BAN_PAGE`].
    pub bans: Vec<BanEntry>,
    /// The `after` for the next page, or 0 when this page ends the list.
    pub next: u64,
}

/// One user of a LIST_USERS page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// User id.
    pub id: u64,
    /// Permission bits.
    pub perms: u64,
    /// Display name ("" when never named).
    pub name: String,
}

/// LIST_USERS's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// Users in id order, at most [`USER_PAGE`].
    pub users: Vec<UserEntry>,
    /// The `after` for the next page, or 0 when this page ends the list.
    pub next: u64,
}

/// A decoded control reply. Which shape a reply has depends on the request's type, so
/// decoding takes the [`CommandType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// A seed command succeeded with this non-zero value (id, port or 1).
    Value(u64),
    /// The command failed: zero status then this code.
    Error(ErrorCode),
    /// GET_CHANNELS: channel ids.
    Channels(Vec<u64>),
    /// SERVER_INFO.
    ServerInfo(ServerInfo),
    /// GET_USER_NAME / GET_CHANNEL_NAME.
    Name(String),
    /// CHANNEL_INFO.
    ChannelInfo(ChannelInfo),
    /// LIST_CHANNELS.
    ChannelPage(ChannelPage),
    /// LIST_BANS.
    BanPage(BanPage),
    /// LIST_USERS.
    UserPage(UserPage),
    /// USER_INFO: permission bits and display name.
    UserInfo {
        /// Permission bits.
        perms: u64,
        /// Display name ("" when never named).
        name: String,
    },
}

impl ControlReply {
    /// Appends the reply's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ControlReply::Value(v) => put_u64(out, *v),
            ControlReply::Error(code) => {
                put_u64(out, 0);
                put_u32(out, *code as u32);
            }
            ControlReply::Channels(ids) => {
                put_u64(out, ids.len() as u64);
                for id in ids {
                    put_u64(out, *id);
                }
                put_u64(out, 0);
            }
            ControlReply::ServerInfo(info) => {
                put_u64(out, info.version);
                put_u64(out, info.features);
                out.extend_from_slice(&info.public_key);
            }
            ControlReply::Name(name) => {
                put_u64(out, 1);
                put_string(out, name);
            }
            ControlReply::ChannelInfo(info) => {
                put_u64(out, 1);
                put_string(out, &info.name);
                put_u64(out, info.owner);
                put_u64(out, info.port);
                put_u64(out, info.members.len() as u64);
                for (uid, name) in &info.members {
                    put_u64(out, *uid);
                    put_string(out, name);
                }
            }
            ControlReply::ChannelPage(page) => {
                put_u64(out, 1);
                put_u64(out, page.channels.len() as u64);
                for c in &page.channels {
                    put_u64(out, c.id);
                    put_u64(out, c.owner);
                    put_u64(out, c.members);
                    put_string(out, &c.name);
                }
                put_u64(out, page.next);
            }
            ControlReply::UserInfo { perms, name } => {
                put_u64(out, 1);
                put_u64(out, *perms);
                put_string(out, name);
            }
            ControlReply::BanPage(page) => {
                put_u64(out, 1);
                put_u64(out, page.bans.len() as u64);
                for b in &page.bans {
                    put_u64(out, b.id);
                    put_target(out, &b.target);
                    put_u64(out, b.expires_unix_ms);
                    put_string(out, &b.reason);
                }
                put_u64(out, page.next);
            }
            ControlReply::UserPage(page) => {
                put_u64(out, 1);
                put_u64(out, page.users.len() as u64);
                for u in &page.users {
                    put_u64(out, u.id);
                    put_u64(out, u.perms);
                    put_string(out, &u.name);
                }
                put_u64(out, page.next);
            }
        }
    }

    /// Decodes the reply to a request of type `cmd` from the start of `buf`, returning it
    /// and the bytes it used.
    pub fn decode(cmd: CommandType, buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        if cmd == CommandType::GetChannels {
            let count = r.u64()?;
            if count > MAX_LISTED_CHANNELS {
                return Err(DecodeError::Invalid("too many channels"));
            }
            let mut ids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                ids.push(r.u64()?);
            }
            if r.u64()? != 0 {
                return Err(DecodeError::Invalid("channel list not zero-terminated"));
            }
            return Ok((ControlReply::Channels(ids), r.position()));
        }
        let status = r.u64()?;
        if status == 0 {
            let code = r.u32()?;
            let code =
                ErrorCode::from_u32(code).ok_or(DecodeError::Invalid("unknown error code"))?;
            return Ok((ControlReply::Error(code), r.position()));
        }
        let reply = match cmd {
            CommandType::ServerInfo => {
                let features = r.u64()?;
                let mut public_key = [0u8; 32];
                public_key.copy_from_slice(r.bytes(32)?);
                ControlReply::ServerInfo(ServerInfo {
                    version: status,
                    features,
                    public_key,
                })
            }
            CommandType::GetUserName | CommandType::GetChannelName => {
                ControlReply::Name(r.string()?)
            }
            CommandType::ChannelInfo => {
                let name = r.string()?;
                let owner = r.u64()?;
                let port = r.u64()?;
                let count = r.u64()?;
                if count > MAX_LISTED_MEMBERS {
                    return Err(DecodeError::Invalid("too many members"));
                }
                let mut members = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let uid = r.u64()?;
                    members.push((uid, r.string()?));
                }
                ControlReply::ChannelInfo(ChannelInfo {
                    name,
                    owner,
                    port,
                    members,
                })
            }
            CommandType::ListChannels => {
                let count = r.u64()?;
                if count > LIST_PAGE as u64 {
                    return Err(DecodeError::Invalid("too many channels in a page"));
                }
                let mut channels = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    channels.push(ChannelSummary {
                        id: r.u64()?,
                        owner: r.u64()?,
                        members: r.u64()?,
                        name: r.string()?,
                    });
                }
                ControlReply::ChannelPage(ChannelPage {
                    channels,
                    next: r.u64()?,
                })
            }
            CommandType::ListBans => {
                let count = r.u64()?;
                if count > BAN_PAGE as u64 {
                    return Err(DecodeError::Invalid("too many bans in a page"));
                }
                let mut bans = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    bans.push(BanEntry {
                        id: r.u64()?,
                        target: target(&mut r)?,
                        expires_unix_ms: r.u64()?,
                        reason: r.string()?,
                    });
                }
                ControlReply::BanPage(BanPage {
                    bans,
                    next: r.u64()?,
                })
            }
            CommandType::ListUsers => {
                let count = r.u64()?;
                if count > USER_PAGE as u64 {
                    return Err(DecodeError::Invalid("too many users in a page"));
                }
                let mut users = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    users.push(UserEntry {
                        id: r.u64()?,
                        perms: r.u64()?,
                        name: r.string()?,
                    });
                }
                ControlReply::UserPage(UserPage {
                    users,
                    next: r.u64()?,
                })
            }
            CommandType::UserInfo => {
                let perms = r.u64()?;
                ControlReply::UserInfo {
                    perms,
                    name: r.string()?,
                }
            }
            _ => ControlReply::Value(status),
        };
        Ok((reply, r.position()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 äö🎧]{0,12}".prop_filter("fits", |s| s.len() <= crate::MAX_NAME_LEN)
    }

    fn request() -> impl Strategy<Value = ControlRequest> {
        use ControlRequest as R;
        let u = any::<u64>();
        prop_oneof![
            u.prop_map(|uid| R::Create { uid }),
            (u, u).prop_map(|(uid, chid)| R::Delete { uid, chid }),
            (u, u, u).prop_map(|(uid, juid, chid)| R::Join { uid, juid, chid }),
            (u, u, u).prop_map(|(uid, luid, chid)| R::Leave { uid, luid, chid }),
            (u, u).prop_map(|(auid, perm)| R::Register { auid, perm }),
            (u, u).prop_map(|(auid, uid)| R::Unregister { auid, uid }),
            u.prop_map(|chid| R::GetPort { chid }),
            Just(R::GetChannels),
            Just(R::ServerInfo),
            (u, u, name()).prop_map(|(uid, target, name)| R::SetUserName { uid, target, name }),
            u.prop_map(|uid| R::GetUserName { uid }),
            (u, u, name()).prop_map(|(uid, chid, name)| R::SetChannelName { uid, chid, name }),
            u.prop_map(|chid| R::GetChannelName { chid }),
            u.prop_map(|chid| R::ChannelInfo { chid }),
            u.prop_map(|uid| R::UserInfo { uid }),
            (u, u, any::<[u8; 32]>()).prop_map(|(auid, perm, public_key)| R::RegisterKey {
                auid,
                perm,
                public_key
            }),
            (u, u, any::<[u8; 32]>()).prop_map(|(auid, uid, public_key)| R::SetKey {
                auid,
                uid,
                public_key
            }),
            (u, u, u, any::<[u8; 32]>()).prop_map(|(uid, juid, chid, client_kex)| R::JoinKex {
                uid,
                juid,
                chid,
                client_kex
            }),
            u.prop_map(|after| R::ListChannels { after }),
            (u, ban_target(), u, name()).prop_map(|(auid, target, secs, reason)| R::Ban {
                auid,
                target,
                secs,
                reason
            }),
            (u, u).prop_map(|(auid, id)| R::Unban { auid, id }),
            (u, u, u).prop_map(|(auid, uid, perms)| R::SetPerms { auid, uid, perms }),
            (u, u).prop_map(|(auid, after)| R::ListBans { auid, after }),
            (u, u).prop_map(|(auid, after)| R::ListUsers { auid, after }),
        ]
    }

    fn ban_target() -> impl Strategy<Value = BanTarget> {
        prop_oneof![
            (1u64..).prop_map(BanTarget::User),
            (any::<[u8; 16]>(), 1u8..=128).prop_map(|(o, prefix)| BanTarget::Net {
                addr: o.into(),
                prefix
            }),
        ]
    }

    #[test]
    fn ban_prefixes_cover_their_networks() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = BanTarget::net(ip("10.1.2.0"), 24).unwrap();
        assert!(t.covers(ip("10.1.2.77")));
        assert!(!t.covers(ip("10.1.3.1")));
        assert!(!t.covers(ip("2001:db8::1")));
        assert_eq!(t.to_string(), "10.1.2.0/24");
        let t = BanTarget::net(ip("2001:db8::"), 64).unwrap();
        assert!(t.covers(ip("2001:db8::ffff:1")));
        assert!(!t.covers(ip("2001:db8:0:1::1")));
        assert!(
            BanTarget::net(ip("10.0.0.0"), 0).is_none(),
            "nobody bans everyone"
        );
        assert!(BanTarget::net(ip("10.0.0.0"), 33).is_none());
        assert!(!BanTarget::User(5).covers(ip("10.0.0.1")));
        assert!(BanTarget::net(ip("10.0.0.1"), 32)
            .unwrap()
            .covers(ip("10.0.0.1")));
    }

    proptest! {
        #[test]
        fn request_round_trips(req in request(), pad in 0usize..32) {
            let mut buf = Vec::new();
            req.encode(&mut buf).unwrap();
            let len = buf.len();
            prop_assert!(len <= MAX_REQUEST_LEN);
            buf.extend(std::iter::repeat_n(0u8, pad));
            let (back, used) = ControlRequest::decode(&buf).unwrap();
            prop_assert_eq!(back, req);
            prop_assert_eq!(used, len);
            // Every strict prefix is incomplete, never an error or a different request.
            for cut in 0..len {
                prop_assert_eq!(ControlRequest::decode(&buf[..cut]), Err(DecodeError::Incomplete));
            }
        }

        #[test]
        fn request_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ControlRequest::decode(&bytes);
        }

        #[test]
        fn reply_decode_never_panics(ty in 0u32..26, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(cmd) = CommandType::from_u32(ty) {
                let _ = ControlReply::decode(cmd, &bytes);
            }
        }

        #[test]
        fn value_and_error_replies_round_trip(v in 1u64.., code in 0u32..6) {
            let mut buf = Vec::new();
            ControlReply::Value(v).encode(&mut buf);
            prop_assert_eq!(ControlReply::decode(CommandType::Create, &buf).unwrap(), (ControlReply::Value(v), 8));
            let code = ErrorCode::from_u32(code).unwrap();
            let mut buf = Vec::new();
            ControlReply::Error(code).encode(&mut buf);
            prop_assert_eq!(ControlReply::decode(CommandType::Join, &buf).unwrap(), (ControlReply::Error(code), 12));
        }

        #[test]
        fn rich_replies_round_trip(ids in proptest::collection::vec(1u64.., 0..20),
                                   n in name(), owner in any::<u64>(), port in 1u64..65536,
                                   key in any::<[u8; 32]>(), perms in any::<u64>(),
                                   target in ban_target()) {
            let members: Vec<(u64, String)> = ids.iter().map(|&u| (u, n.clone())).collect();
            let page = ChannelPage {
                channels: ids.iter().map(|&id| ChannelSummary { id, owner, members: port, name: n.clone() }).collect(),
                next: owner,
            };
            let cases = [
                (CommandType::GetChannels, ControlReply::Channels(ids.clone())),
                (CommandType::ServerInfo, ControlReply::ServerInfo(ServerInfo { version: 1, features: 15, public_key: key })),
                (CommandType::GetUserName, ControlReply::Name(n.clone())),
                (CommandType::ChannelInfo, ControlReply::ChannelInfo(ChannelInfo { name: n.clone(), owner, port, members })),
                (CommandType::UserInfo, ControlReply::UserInfo { perms, name: n.clone() }),
                (CommandType::ListChannels, ControlReply::ChannelPage(page)),
                (CommandType::ListBans, ControlReply::BanPage(BanPage {
                    bans: ids.iter().take(BAN_PAGE).map(|&id| BanEntry { id, target, expires_unix_ms: perms, reason: n.clone() }).collect(),
                    next: owner,
                })),
                (CommandType::ListUsers, ControlReply::UserPage(UserPage {
                    users: ids.iter().map(|&id| UserEntry { id, perms, name: n.clone() }).collect(),
                    next: port,
                })),
            ];
            for (cmd, reply) in cases {
                let mut buf = Vec::new();
                reply.encode(&mut buf);
                prop_assert_eq!(ControlReply::decode(cmd, &buf).unwrap(), (reply, buf.len()));
            }
        }
    }

    #[test]
    fn seed_example_channel_list_bytes() {
        let mut buf = Vec::new();
        ControlReply::Channels(vec![69, 70, 71, 72, 42]).encode(&mut buf);
        let words: Vec<u64> = buf
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, [5, 69, 70, 71, 72, 42, 0]);
    }

    #[test]
    fn join_request_bytes_are_big_endian() {
        let mut buf = Vec::new();
        ControlRequest::Join {
            uid: 1,
            juid: 2,
            chid: 0x0102030405060708,
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 2]);
        assert_eq!(&buf[4..12], &1u64.to_be_bytes());
        assert_eq!(&buf[20..28], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn unknown_type_and_bad_strings() {
        assert_eq!(
            ControlRequest::decode(&[0, 0, 0, 99]),
            Err(DecodeError::UnknownCommand(99))
        );
        let mut buf = vec![0, 0, 0, 9];
        buf.extend_from_slice(&1u64.to_be_bytes());
        buf.extend_from_slice(&1u64.to_be_bytes());
        buf.extend_from_slice(&2u64.to_be_bytes());
        buf.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(
            ControlRequest::decode(&buf),
            Err(DecodeError::Invalid(_))
        ));
        let mut long = vec![0, 0, 0, 9];
        long.extend_from_slice(&[0; 16]);
        long.extend_from_slice(&65u64.to_be_bytes());
        assert!(matches!(
            ControlRequest::decode(&long),
            Err(DecodeError::Invalid(_))
        ));
    }
}
