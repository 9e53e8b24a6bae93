//! KV wire types, sans-IO.
//!
//! This crate turns bytes into typed requests, replies and packets and back, following
//! `WIRE.md` (the seed's bytes) and `PROTOCOL.md` (our extensions). It contains no sockets,
//! no timers and no threads, so the server, the clients, the benchmarks and the fuzzers all
//! share one definition of the protocol, and every decoder can be tested on arbitrary input.
//!
//! Layout:
//! - [`codec`]: the big-endian reader/writer every decoder is built on.
//! - [`error`]: the seed's error codes ([`ErrorCode`]) and this crate's [`DecodeError`].
//! - [`perm`]: permission bits ([`Perms`]).
//! - [`control`]: TCP control requests ([`ControlRequest`]) and replies ([`ControlReply`]).
//! - [`packet`]: 512-byte UDP datagrams: regular voice packets and system packets.
//! - [`session`]: the voice handshake (cookie, key exchange) and session-authenticated
//!   system packets.
//! - [`signed`]: the SIGNED envelope: a request signed by the acting user's Ed25519 key.
//! - [`names`]: which names are allowed, and when two look alike.
//! - [`keyfile`]: the text format of identity files (a uid and its secret key).
//! - [`voice`]: the client's voice payload inside a regular packet (Opus frames + redundancy).
//! - [`push`]: frames of the push connection (membership, MLS handshake, chat).
#![warn(missing_docs)]

pub mod codec;
pub mod control;
pub mod error;
pub mod keyfile;
pub mod names;
pub mod packet;
pub mod perm;
pub mod push;
pub mod session;
pub mod signed;
pub mod voice;

pub use control::{
    BanEntry, BanPage, BanTarget, ChannelInfo, ChannelPage, ChannelSummary, CommandType,
    ControlReply, ControlRequest, ServerInfo, UserEntry, UserPage,
};
pub use error::{DecodeError, ErrorCode};
pub use packet::{Datagram, SystemOp, SystemPacket, PACKET_SIZE};
pub use perm::Perms;

/// Default TCP control port of a KV server (seed and WIRE.md §1).
pub const DEFAULT_CONTROL_PORT: u16 = 8085;

/// Protocol version reported by SERVER_INFO. Version 1 is WIRE.md plus the extensions of
/// PROTOCOL.md; it only changes when an existing message changes meaning.
pub const PROTOCOL_VERSION: u64 = 1;

/// Longest string (display name, channel name) in bytes, so every request and reply has a
/// small, fixed upper bound on its size.
pub const MAX_NAME_LEN: usize = 64;

/// True when `id` may be used as a user id: non-zero and neither 32-bit half all ones, so a
/// regular packet (which starts with the sender's uid) can never look like a system packet.
pub fn is_valid_uid(id: u64) -> bool {
    id != 0 && (id >> 32) as u32 != u32::MAX && id as u32 != u32::MAX
}
