//! The push connection's frames (PROTOCOL.md §1, "The push connection").
//!
//! After a SIGNED PUSH request (type 25) is answered with status 1, the same TCP connection
//! carries frames both ways until either side closes: `len: u32` (the body's length,
//! 1..=[`MAX_FRAME_LEN`]) then the body, whose first byte is the kind. A reader checks the
//! 4-byte header before it allocates or reads anything else (O(1) per header, and no
//! stranger can make it buffer more than one bounded frame); a bad header or body closes
//! the connection. Byte strings inside a body are `len: u32` + bytes, lists `count: u32` +
//! items, every count checked against what the body still holds before anything is
//! allocated.
//!
//! The server never reads MLS content: it sees, stores, orders and forwards opaque
//! `MLSMessage` bytes (key packages, commits, welcomes, application messages).

use crate::codec::{put_u32, put_u64, Reader};
use crate::error::DecodeError;

/// Longest frame body: enough for a Welcome with the ratchet tree of a large channel.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Length of a frame header.
pub const HEADER_LEN: usize = 4;

/// Longest chat message (its MLS application message), bytes.
pub const MAX_CHAT_LEN: usize = 4096;

/// Longest chat text a client puts into one message, bytes of UTF-8.
pub const MAX_CHAT_TEXT: usize = 2048;

/// Most uids or keys one frame lists (the channel member cap).
pub const MAX_LISTED: usize = 1024;

/// CHANNEL_MODE's answer for a plain channel.
pub const MODE_PLAIN: u64 = 1;

/// CHANNEL_MODE's answer for an end-to-end encrypted channel.
pub const MODE_ENCRYPTED: u64 = 2;

/// What a [`PushMsg::Rejected`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refused {
    /// A commit for an epoch that is not the group's (another commit won, or nobody asked).
    Commit = 1,
    /// A chat message for an epoch that is not the group's: encrypt again and resend.
    Chat = 2,
    /// A key package for a channel we are not admitted to, or not encrypted.
    KeyPackage = 3,
    /// Over a rate or size limit.
    Limit = 4,
}

impl Refused {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Commit,
            2 => Self::Chat,
            3 => Self::KeyPackage,
            4 => Self::Limit,
            _ => return None,
        })
    }
}

/// One frame. Kinds 1–15 go from client to server, 16 and up from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushMsg {
    /// 1, client: keeps the connection alive (the server closes it after 60 s of silence).
    Ping,
    /// 2, client: our key package for an encrypted channel we were admitted to (JOIN).
    KeyPackage {
        /// The channel.
        chid: u64,
        /// An `MLSMessage` holding a key package.
        key_package: Vec<u8>,
    },
    /// 3, client: a commit answering the server's request (adds or removes) for `epoch`.
    Commit {
        /// The channel.
        chid: u64,
        /// The epoch the commit was made in.
        epoch: u64,
        /// The commit (`MLSMessage`).
        commit: Vec<u8>,
        /// The Welcome for the members it adds (empty: none).
        welcome: Vec<u8>,
    },
    /// 4, client: a chat message (an MLS application message) made in `epoch`.
    Chat {
        /// The channel.
        chid: u64,
        /// The epoch it was encrypted in.
        epoch: u64,
        /// The `MLSMessage`.
        message: Vec<u8>,
    },
    /// 16, server: answer to a ping.
    Pong,
    /// 17, server: a membership change of an encrypted channel we are in.
    Member {
        /// The channel.
        chid: u64,
        /// Who.
        uid: u64,
        /// Joined (true) or left.
        joined: bool,
    },
    /// 18, server: the channel's group is empty: create it (epoch 0) with this id.
    CreateGroup {
        /// The channel.
        chid: u64,
        /// The MLS group id to use.
        group_id: Vec<u8>,
    },
    /// 19, server: commit adding `uid` (whose key the server vouches for) in `epoch`.
    AddRequest {
        /// The channel.
        chid: u64,
        /// The group's current epoch.
        epoch: u64,
        /// The joiner.
        uid: u64,
        /// The joiner's identity key, as the server knows it.
        key: [u8; 32],
        /// The joiner's key package.
        key_package: Vec<u8>,
    },
    /// 20, server: commit removing `uids` in `epoch`.
    RemoveRequest {
        /// The channel.
        chid: u64,
        /// The group's current epoch.
        epoch: u64,
        /// Who left.
        uids: Vec<u64>,
    },
    /// 21, server: the accepted commit of `epoch` (its author gets it too: acceptance).
    Committed {
        /// The channel.
        chid: u64,
        /// The epoch it was made in (the group is at `epoch + 1` after it).
        epoch: u64,
        /// Its author.
        sender: u64,
        /// The commit.
        commit: Vec<u8>,
        /// The identity keys of the members after it, as the server vouches for them.
        keys: Vec<(u64, [u8; 32])>,
    },
    /// 22, server: our Welcome into the channel's group at `epoch`.
    Welcome {
        /// The channel.
        chid: u64,
        /// The epoch it welcomes us into.
        epoch: u64,
        /// The Welcome.
        welcome: Vec<u8>,
        /// The members' identity keys, as the server vouches for them.
        keys: Vec<(u64, [u8; 32])>,
    },
    /// 23, server: a chat message, numbered in the channel's one order.
    Message {
        /// The channel.
        chid: u64,
        /// Its position in the channel's order (1, 2, ...; per group).
        seq: u64,
        /// Its author.
        sender: u64,
        /// The epoch it was encrypted in.
        epoch: u64,
        /// The `MLSMessage`.
        message: Vec<u8>,
    },
    /// 24, server: our frame of this kind for `epoch` was refused.
    Rejected {
        /// The channel.
        chid: u64,
        /// The epoch the refused frame named.
        epoch: u64,
        /// What was refused.
        what: Refused,
    },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn bytes(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.u32()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::Invalid("byte string longer than its frame"));
    }
    Ok(r.bytes(len)?.to_vec())
}

fn count(r: &mut Reader<'_>, item: usize) -> Result<usize, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_LISTED || n * item > r.remaining() {
        return Err(DecodeError::Invalid("list longer than its frame"));
    }
    Ok(n)
}

fn key(r: &mut Reader<'_>) -> Result<[u8; 32], DecodeError> {
    let mut k = [0u8; 32];
    k.copy_from_slice(r.bytes(32)?);
    Ok(k)
}

fn keys(r: &mut Reader<'_>) -> Result<Vec<(u64, [u8; 32])>, DecodeError> {
    let n = count(r, 40)?;
    (0..n).map(|_| Ok((r.u64()?, key(r)?))).collect()
}

/// The body length a frame header announces, or why the connection must close.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(DecodeError::Invalid("push frame length out of range"));
    }
    Ok(len)
}

impl PushMsg {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Ping => 1,
            Self::KeyPackage { .. } => 2,
            Self::Commit { .. } => 3,
            Self::Chat { .. } => 4,
            Self::Pong => 16,
            Self::Member { .. } => 17,
            Self::CreateGroup { .. } => 18,
            Self::AddRequest { .. } => 19,
            Self::RemoveRequest { .. } => 20,
            Self::Committed { .. } => 21,
            Self::Welcome { .. } => 22,
            Self::Message { .. } => 23,
            Self::Rejected { .. } => 24,
        }
    }

    /// The channel it concerns (none for pings).
    pub fn chid(&self) -> Option<u64> {
        match self {
            Self::Ping | Self::Pong => None,
            Self::KeyPackage { chid, .. }
            | Self::Commit { chid, .. }
            | Self::Chat { chid, .. }
            | Self::Member { chid, .. }
            | Self::CreateGroup { chid, .. }
            | Self::AddRequest { chid, .. }
            | Self::RemoveRequest { chid, .. }
            | Self::Committed { chid, .. }
            | Self::Welcome { chid, .. }
            | Self::Message { chid, .. }
            | Self::Rejected { chid, .. } => Some(*chid),
        }
    }

    /// The whole frame: header and body. Fails when the body would exceed
    /// [`MAX_FRAME_LEN`] (the receiver would close the connection).
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = vec![0u8; HEADER_LEN];
        out.push(self.kind());
        match self {
            Self::Ping | Self::Pong => {}
            Self::KeyPackage { chid, key_package } => {
                put_u64(&mut out, *chid);
                put_bytes(&mut out, key_package);
            }
            Self::Commit {
                chid,
                epoch,
                commit,
                welcome,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                put_bytes(&mut out, commit);
                put_bytes(&mut out, welcome);
            }
            Self::Chat {
                chid,
                epoch,
                message,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                put_bytes(&mut out, message);
            }
            Self::Member { chid, uid, joined } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *uid);
                out.push(u8::from(*joined));
            }
            Self::CreateGroup { chid, group_id } => {
                put_u64(&mut out, *chid);
                put_bytes(&mut out, group_id);
            }
            Self::AddRequest {
                chid,
                epoch,
                uid,
                key,
                key_package,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *uid);
                out.extend_from_slice(key);
                put_bytes(&mut out, key_package);
            }
            Self::RemoveRequest { chid, epoch, uids } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                if uids.len() > MAX_LISTED {
                    return Err(DecodeError::Invalid("too many uids"));
                }
                put_u32(&mut out, uids.len() as u32);
                for u in uids {
                    put_u64(&mut out, *u);
                }
            }
            Self::Committed {
                chid,
                epoch,
                sender,
                commit,
                keys,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *sender);
                put_bytes(&mut out, commit);
                put_keys(&mut out, keys)?;
            }
            Self::Welcome {
                chid,
                epoch,
                welcome,
                keys,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                put_bytes(&mut out, welcome);
                put_keys(&mut out, keys)?;
            }
            Self::Message {
                chid,
                seq,
                sender,
                epoch,
                message,
            } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *seq);
                put_u64(&mut out, *sender);
                put_u64(&mut out, *epoch);
                put_bytes(&mut out, message);
            }
            Self::Rejected { chid, epoch, what } => {
                put_u64(&mut out, *chid);
                put_u64(&mut out, *epoch);
                out.push(*what as u8);
            }
        }
        let body = out.len() - HEADER_LEN;
        if body > MAX_FRAME_LEN {
            return Err(DecodeError::Invalid("push frame too long"));
        }
        out[..HEADER_LEN].copy_from_slice(&(body as u32).to_be_bytes());
        Ok(out)
    }

    /// Decodes one frame body (the bytes after the header), which it must use exactly.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let kind = r
            .bytes(1)
            .map_err(|_| DecodeError::Invalid("empty frame"))?[0];
        let msg = match kind {
            1 => Self::Ping,
            2 => Self::KeyPackage {
                chid: r.u64()?,
                key_package: bytes(&mut r)?,
            },
            3 => Self::Commit {
                chid: r.u64()?,
                epoch: r.u64()?,
                commit: bytes(&mut r)?,
                welcome: bytes(&mut r)?,
            },
            4 => Self::Chat {
                chid: r.u64()?,
                epoch: r.u64()?,
                message: bytes(&mut r)?,
            },
            16 => Self::Pong,
            17 => Self::Member {
                chid: r.u64()?,
                uid: r.u64()?,
                joined: match r.bytes(1)?[0] {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("bad flag")),
                },
            },
            18 => Self::CreateGroup {
                chid: r.u64()?,
                group_id: bytes(&mut r)?,
            },
            19 => Self::AddRequest {
                chid: r.u64()?,
                epoch: r.u64()?,
                uid: r.u64()?,
                key: key(&mut r)?,
                key_package: bytes(&mut r)?,
            },
            20 => {
                let chid = r.u64()?;
                let epoch = r.u64()?;
                let n = count(&mut r, 8)?;
                let uids = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
                Self::RemoveRequest { chid, epoch, uids }
            }
            21 => Self::Committed {
                chid: r.u64()?,
                epoch: r.u64()?,
                sender: r.u64()?,
                commit: bytes(&mut r)?,
                keys: keys(&mut r)?,
            },
            22 => Self::Welcome {
                chid: r.u64()?,
                epoch: r.u64()?,
                welcome: bytes(&mut r)?,
                keys: keys(&mut r)?,
            },
            23 => Self::Message {
                chid: r.u64()?,
                seq: r.u64()?,
                sender: r.u64()?,
                epoch: r.u64()?,
                message: bytes(&mut r)?,
            },
            24 => Self::Rejected {
                chid: r.u64()?,
                epoch: r.u64()?,
                what: Refused::from_u8(r.bytes(1)?[0])
                    .ok_or(DecodeError::Invalid("unknown refusal"))?,
            },
            _ => return Err(DecodeError::Invalid("unknown push frame kind")),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::Invalid("trailing bytes in push frame"));
        }
        Ok(msg)
    }
}

fn put_keys(out: &mut Vec<u8>, keys: &[(u64, [u8; 32])]) -> Result<(), DecodeError> {
    if keys.len() > MAX_LISTED {
        return Err(DecodeError::Invalid("too many keys"));
    }
    put_u32(out, keys.len() as u32);
    for (uid, k) in keys {
        put_u64(out, *uid);
        out.extend_from_slice(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<PushMsg> {
        vec![
            PushMsg::Ping,
            PushMsg::KeyPackage {
                chid: 7,
                key_package: vec![1, 2, 3],
            },
            PushMsg::Commit {
                chid: 7,
                epoch: 3,
                commit: vec![9; 40],
                welcome: vec![],
            },
            PushMsg::Chat {
                chid: 7,
                epoch: 3,
                message: vec![5; 10],
            },
            PushMsg::Pong,
            PushMsg::Member {
                chid: 7,
                uid: 11,
                joined: true,
            },
            PushMsg::CreateGroup {
                chid: 7,
                group_id: vec![0; 16],
            },
            PushMsg::AddRequest {
                chid: 7,
                epoch: 2,
                uid: 12,
                key: [4; 32],
                key_package: vec![8; 300],
            },
            PushMsg::RemoveRequest {
                chid: 7,
                epoch: 2,
                uids: vec![1, 2],
            },
            PushMsg::Committed {
                chid: 7,
                epoch: 2,
                sender: 11,
                commit: vec![1; 100],
                keys: vec![(11, [1; 32]), (12, [2; 32])],
            },
            PushMsg::Welcome {
                chid: 7,
                epoch: 3,
                welcome: vec![3; 500],
                keys: vec![(11, [1; 32])],
            },
            PushMsg::Message {
                chid: 7,
                seq: 1,
                sender: 11,
                epoch: 3,
                message: vec![6; 77],
            },
            PushMsg::Rejected {
                chid: 7,
                epoch: 3,
                what: Refused::Chat,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for m in all() {
            let frame = m.encode().unwrap();
            let len = body_len(frame[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, frame.len() - 4);
            assert_eq!(PushMsg::decode(&frame[4..]).unwrap(), m);
        }
    }

    #[test]
    fn headers_out_of_range_are_refused() {
        assert!(body_len([0; 4]).is_err());
        assert!(body_len(((MAX_FRAME_LEN + 1) as u32).to_be_bytes()).is_err());
        assert!(body_len(u32::MAX.to_be_bytes()).is_err());
        assert_eq!(
            body_len((MAX_FRAME_LEN as u32).to_be_bytes()).unwrap(),
            MAX_FRAME_LEN
        );
    }

    #[test]
    fn truncated_extended_and_mutated_bodies_never_panic() {
        for m in all() {
            let frame = m.encode().unwrap();
            let body = &frame[4..];
            for cut in 0..body.len() {
                assert!(PushMsg::decode(&body[..cut]).is_err());
            }
            let mut longer = body.to_vec();
            longer.push(0);
            assert!(PushMsg::decode(&longer).is_err());
            // Every byte flipped: decodes to something or errs, never panics.
            for i in 0..body.len().min(64) {
                let mut b = body.to_vec();
                b[i] ^= 0xFF;
                let _ = PushMsg::decode(&b);
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut body = vec![20];
        body.extend_from_slice(&7u64.to_be_bytes());
        body.extend_from_slice(&2u64.to_be_bytes());
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(PushMsg::decode(&body).is_err());
        let mut body = vec![2];
        body.extend_from_slice(&7u64.to_be_bytes());
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(PushMsg::decode(&body).is_err());
    }
}
