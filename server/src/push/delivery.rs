//! The delivery service, sans-IO: which push connections exist, who is in each encrypted
//! channel's MLS group, and what to forward to whom. Every call takes `now` and returns
//! the frames to send ([`Outbox`]); the glue ([`super::Hub`]) queues them.
//!
//! Per encrypted channel it keeps the group's members (uid, their push connection, their
//! identity key) in join order, the epoch, a queue of membership changes to commit, and
//! the one change in flight. The server never holds group secrets and never parses MLS:
//! it orders opaque messages by the epoch their sender names.
//!
//! **Who commits.** A change (a joiner's key package, a leave) waits in the queue; one at a
//! time the server asks the earliest-joined member still connected (and not being removed)
//! to commit it (ADD_REQUEST / REMOVE_REQUEST). The first commit for the current epoch from
//! a member that was asked wins; it goes to every member (its author too: that is its
//! acceptance), with a Welcome to the joiner; everything else for that epoch is REJECTED.
//! A member asked who has not answered within [`COMMIT_TIMEOUT`] is passed over: the next
//! member is asked. The first member of an empty group is told to create it
//! (CREATE_GROUP, epoch 0, a fresh group id per generation).
//!
//! **Bounds.** Connections per user and in total; per channel, group members and queued
//! changes at the member cap; chat messages by size and a per-connection rate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_proto::push::{PushMsg, Refused, MAX_CHAT_LEN, MAX_LISTED};

/// A frame a client may not send (one of the server's kinds): its connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a client sent a server's push frame")]
pub struct Unexpected;

/// A push connection's id (never reused within a server run).
pub type ConnId = u64;

/// Frames to send: connection and encoded frame (one allocation per message, shared by
/// every recipient).
pub type Outbox = Vec<(ConnId, Arc<[u8]>)>;

/// How long an asked member has to commit before the next one is asked.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Chat messages per second per connection (a token bucket)...
pub const CHAT_PER_SEC: f64 = 5.0;
/// ... with this burst.
pub const CHAT_BURST: f64 = 20.0;

/// Limits of the delivery service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Push connections one user may hold at once.
    pub per_user: usize,
    /// Push connections in total.
    pub total: usize,
    /// Admitted users and group members per channel.
    pub per_channel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_user: 4,
            total: 512,
            per_channel: MAX_LISTED,
        }
    }
}

#[derive(Debug)]
struct Conn {
    uid: u64,
    key: [u8; 32],
    /// Channels whose group (or queue) holds this connection.
    chans: HashSet<u64>,
    chat_tokens: f64,
    chat_at: Instant,
}

#[derive(Debug, Clone)]
struct GroupMember {
    uid: u64,
    conn: ConnId,
    key: [u8; 32],
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        member: GroupMember,
        key_package: Vec<u8>,
    },
    Remove {
        uid: u64,
    },
}

#[derive(Debug)]
struct Inflight {
    op: Op,
    asked: Vec<u64>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Chan {
    admitted: HashSet<u64>,
    group: Vec<GroupMember>,
    generation: u64,
    epoch: u64,
    waiting: VecDeque<Op>,
    inflight: Option<Inflight>,
    chat_seq: u64,
}

/// Counters, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Commits accepted (epochs started).
    pub commits: u64,
    /// Commits refused (stale epoch, not asked, not a member).
    pub commits_refused: u64,
    /// Chat messages forwarded.
    pub messages: u64,
    /// Frames refused for other reasons (not a member, over a limit).
    pub refused: u64,
}

/// The delivery service's state.
#[derive(Debug, Default)]
pub struct Delivery {
    limits: Limits,
    conns: HashMap<ConnId, Conn>,
    per_user: HashMap<u64, usize>,
    chans: HashMap<u64, Chan>,
    next_conn: ConnId,
    stats: DeliveryStats,
}

fn frame(msg: &PushMsg) -> Arc<[u8]> {
    // Every frame the server builds is within bounds (lists at the member cap, byte
    // strings bounded by the frames they came in); an impossible one is sent empty-bodied
    // rather than crash: the receiver closes the connection.
    Arc::from(msg.encode().unwrap_or_default())
}

fn group_id(chid: u64, generation: u64) -> Vec<u8> {
    let mut id = b"KV e2ee group v1".to_vec();
    id.extend_from_slice(&chid.to_be_bytes());
    id.extend_from_slice(&generation.to_be_bytes());
    id
}

impl Delivery {
    /// An empty service with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Counters.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }

    /// A new push connection of `uid` (whose identity key is `key`), if within limits.
    pub fn open(&mut self, uid: u64, key: [u8; 32], now: Instant) -> Option<ConnId> {
        let n = self.per_user.get(&uid).copied().unwrap_or(0);
        if n >= self.limits.per_user || self.conns.len() >= self.limits.total {
            return None;
        }
        self.next_conn += 1;
        let id = self.next_conn;
        self.conns.insert(
            id,
            Conn {
                uid,
                key,
                chans: HashSet::new(),
                chat_tokens: CHAT_BURST,
                chat_at: now,
            },
        );
        *self.per_user.entry(uid).or_default() += 1;
        Some(id)
    }

    /// Does `uid` have a push connection open?
    pub fn connected(&self, uid: u64) -> bool {
        self.per_user.get(&uid).is_some_and(|&n| n > 0)
    }

    /// Push connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The group members of `chid` (uids in join order), for tests.
    pub fn group(&self, chid: u64) -> Vec<u64> {
        self.chans
            .get(&chid)
            .map_or_else(Vec::new, |c| c.group.iter().map(|m| m.uid).collect())
    }

    /// The epoch of `chid`'s group as the server orders it.
    pub fn epoch(&self, chid: u64) -> Option<u64> {
        self.chans.get(&chid).map(|c| c.epoch)
    }

    /// A connection closed (or was dropped as a slow reader): its uid leaves every group it
    /// was in through this connection.
    pub fn close(&mut self, conn: ConnId, now: Instant) -> Outbox {
        let mut out = Outbox::new();
        let Some(c) = self.conns.remove(&conn) else {
            return out;
        };
        if let Some(n) = self.per_user.get_mut(&c.uid) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&c.uid);
            }
        }
        for chid in c.chans {
            let Some(ch) = self.chans.get_mut(&chid) else {
                continue;
            };
            ch.waiting.retain(|op| match op {
                Op::Add { member, .. } => member.conn != conn,
                Op::Remove { .. } => true,
            });
            if ch.group.iter().any(|m| m.conn == conn) {
                ch.waiting.push_back(Op::Remove { uid: c.uid });
            }
            // The member asked to commit may be the one gone: ask the next at once.
            let asked_gone = ch
                .inflight
                .as_ref()
                .is_some_and(|f| f.asked.last() == Some(&c.uid));
            if asked_gone {
                self.reassign(chid, now, &mut out);
            }
            self.pump(chid, now, &mut out);
        }
        out
    }

    /// A control JOIN admitted `uid` to the encrypted channel `chid`: its key package may
    /// come. False when the channel has no room.
    pub fn admit(&mut self, chid: u64, uid: u64) -> bool {
        let cap = self.limits.per_channel;
        let ch = self.chans.entry(chid).or_default();
        if ch.admitted.len() >= cap && !ch.admitted.contains(&uid) {
            return false;
        }
        ch.admitted.insert(uid);
        true
    }

    /// `uid` left `chid` (LEAVE, a kick): it is removed from the group (a new epoch).
    pub fn leave(&mut self, chid: u64, uid: u64, now: Instant) -> Outbox {
        let mut out = Outbox::new();
        let Some(ch) = self.chans.get_mut(&chid) else {
            return out;
        };
        ch.admitted.remove(&uid);
        ch.waiting.retain(|op| match op {
            Op::Add { member, .. } => member.uid != uid,
            Op::Remove { .. } => true,
        });
        if ch.group.iter().any(|m| m.uid == uid) {
            ch.waiting.push_back(Op::Remove { uid });
        }
        self.pump(chid, now, &mut out);
        self.forget_if_empty(chid);
        out
    }

    /// `uid` is gone from every channel (UNREGISTER, a ban).
    pub fn remove_user(&mut self, uid: u64, now: Instant) -> Outbox {
        let chids: Vec<u64> = self
            .chans
            .iter()
            .filter(|(_, c)| c.admitted.contains(&uid) || c.group.iter().any(|m| m.uid == uid))
            .map(|(&id, _)| id)
            .collect();
        let mut out = Outbox::new();
        for chid in chids {
            out.extend(self.leave(chid, uid, now));
        }
        out
    }

    /// The channel was deleted: its group is forgotten.
    pub fn delete_channel(&mut self, chid: u64) {
        if let Some(ch) = self.chans.remove(&chid) {
            for m in ch.group {
                if let Some(c) = self.conns.get_mut(&m.conn) {
                    c.chans.remove(&chid);
                }
            }
        }
    }

    fn forget_if_empty(&mut self, chid: u64) {
        if self.chans.get(&chid).is_some_and(|c| {
            c.admitted.is_empty()
                && c.group.is_empty()
                && c.waiting.is_empty()
                && c.inflight.is_none()
        }) {
            self.chans.remove(&chid);
        }
    }

    /// A frame from connection `conn`. `Err` closes the connection (a frame only the
    /// server sends).
    pub fn receive(
        &mut self,
        conn: ConnId,
        msg: PushMsg,
        now: Instant,
    ) -> Result<Outbox, Unexpected> {
        let mut out = Outbox::new();
        let Some(c) = self.conns.get(&conn) else {
            return Err(Unexpected);
        };
        let (uid, key) = (c.uid, c.key);
        match msg {
            PushMsg::Ping => out.push((conn, frame(&PushMsg::Pong))),
            PushMsg::KeyPackage { chid, key_package } => {
                self.key_package(conn, uid, key, chid, key_package, now, &mut out)
            }
            PushMsg::Commit {
                chid,
                epoch,
                commit,
                welcome,
            } => self.commit(conn, uid, chid, epoch, commit, welcome, now, &mut out),
            PushMsg::Chat {
                chid,
                epoch,
                message,
            } => self.chat(conn, uid, chid, epoch, message, now, &mut out),
            _ => return Err(Unexpected),
        }
        Ok(out)
    }

    /// Time-outs: a member asked to commit that did not answer is passed over.
    pub fn tick(&mut self, now: Instant) -> Outbox {
        let mut out = Outbox::new();
        let late: Vec<u64> = self
            .chans
            .iter()
            .filter(|(_, c)| c.inflight.as_ref().is_some_and(|f| f.deadline <= now))
            .map(|(&id, _)| id)
            .collect();
        for chid in late {
            self.reassign(chid, now, &mut out);
            self.pump(chid, now, &mut out);
        }
        out
    }

    /// When [`Self::tick`] has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.chans
            .values()
            .filter_map(|c| c.inflight.as_ref().map(|f| f.deadline))
            .min()
    }

    #[allow(clippy::too_many_arguments)]
    fn key_package(
        &mut self,
        conn: ConnId,
        uid: u64,
        key: [u8; 32],
        chid: u64,
        key_package: Vec<u8>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let cap = self.limits.per_channel;
        let ok = self.chans.get(&chid).is_some_and(|ch| {
            ch.admitted.contains(&uid)
                && ch.waiting.len() < 2 * cap
                && !ch.group.iter().any(|m| m.uid == uid)
                && !key_package.is_empty()
        });
        if !ok {
            self.stats.refused += 1;
            out.push((
                conn,
                frame(&PushMsg::Rejected {
                    chid,
                    epoch: 0,
                    what: Refused::KeyPackage,
                }),
            ));
            return;
        }
        let Some(ch) = self.chans.get_mut(&chid) else {
            return;
        };
        // A second key package of the same user replaces its first.
        ch.waiting.retain(|op| match op {
            Op::Add { member, .. } => member.uid != uid,
            Op::Remove { .. } => true,
        });
        ch.waiting.push_back(Op::Add {
            member: GroupMember { uid, conn, key },
            key_package,
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.chans.insert(chid);
        }
        self.pump(chid, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        conn: ConnId,
        uid: u64,
        chid: u64,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Vec<u8>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let refuse = |out: &mut Outbox| {
            out.push((
                conn,
                frame(&PushMsg::Rejected {
                    chid,
                    epoch,
                    what: Refused::Commit,
                }),
            ))
        };
        let Some(ch) = self.chans.get_mut(&chid) else {
            self.stats.commits_refused += 1;
            return refuse(out);
        };
        let member = ch.group.iter().any(|m| m.uid == uid && m.conn == conn);
        let asked = ch.inflight.as_ref().is_some_and(|f| f.asked.contains(&uid));
        let adds = matches!(
            ch.inflight,
            Some(Inflight {
                op: Op::Add { .. },
                ..
            })
        );
        if !member || !asked || epoch != ch.epoch || commit.is_empty() || adds == welcome.is_empty()
        {
            self.stats.commits_refused += 1;
            return refuse(out);
        }
        let Some(done) = ch.inflight.take() else {
            return;
        };
        // Everyone in the group before the change hears it (a removed member learns it is
        // out; the author learns its commit won).
        let before: Vec<ConnId> = ch.group.iter().map(|m| m.conn).collect();
        let mut joined = None;
        let change = match done.op {
            Op::Add { member, .. } => {
                joined = Some(member.clone());
                let uid = member.uid;
                ch.group.push(member);
                (uid, true)
            }
            Op::Remove { uid: gone } => {
                ch.group.retain(|m| m.uid != gone);
                (gone, false)
            }
        };
        let keys: Vec<(u64, [u8; 32])> = ch.group.iter().map(|m| (m.uid, m.key)).collect();
        let f = frame(&PushMsg::Committed {
            chid,
            epoch,
            sender: uid,
            commit,
            keys: keys.clone(),
        });
        out.extend(before.iter().map(|&c| (c, f.clone())));
        ch.epoch += 1;
        if let Some(m) = joined {
            out.push((
                m.conn,
                frame(&PushMsg::Welcome {
                    chid,
                    epoch: ch.epoch,
                    welcome,
                    keys,
                }),
            ));
        }
        // The membership change itself, for clients' member lists (after the commit, so a
        // member hears of it in the epoch that has it).
        let f = frame(&PushMsg::Member {
            chid,
            uid: change.0,
            joined: change.1,
        });
        out.extend(ch.group.iter().map(|m| (m.conn, f.clone())));
        self.stats.commits += 1;
        self.pump(chid, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn chat(
        &mut self,
        conn: ConnId,
        uid: u64,
        chid: u64,
        epoch: u64,
        message: Vec<u8>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let reject = |what| frame(&PushMsg::Rejected { chid, epoch, what });
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let dt = now.saturating_duration_since(c.chat_at).as_secs_f64();
        c.chat_at = now;
        c.chat_tokens = (c.chat_tokens + dt * CHAT_PER_SEC).min(CHAT_BURST);
        let member = self
            .chans
            .get(&chid)
            .is_some_and(|ch| ch.group.iter().any(|m| m.uid == uid && m.conn == conn));
        if !member || message.is_empty() || message.len() > MAX_CHAT_LEN || c.chat_tokens < 1.0 {
            self.stats.refused += 1;
            return out.push((conn, reject(Refused::Limit)));
        }
        let Some(ch) = self.chans.get_mut(&chid) else {
            return;
        };
        if epoch != ch.epoch {
            return out.push((conn, reject(Refused::Chat)));
        }
        c.chat_tokens -= 1.0;
        ch.chat_seq += 1;
        let f = frame(&PushMsg::Message {
            chid,
            seq: ch.chat_seq,
            sender: uid,
            epoch,
            message,
        });
        out.extend(ch.group.iter().map(|m| (m.conn, f.clone())));
        self.stats.messages += 1;
    }

    /// The member to ask next for `op`: the earliest-joined one not asked yet, not the
    /// one being removed.
    fn committer(
        ch: &Chan,
        op: &Op,
        asked: &[u64],
        live: &HashMap<ConnId, Conn>,
    ) -> Option<GroupMember> {
        let removing = match op {
            Op::Remove { uid } => Some(*uid),
            Op::Add { .. } => None,
        };
        ch.group
            .iter()
            .find(|m| {
                Some(m.uid) != removing && !asked.contains(&m.uid) && live.contains_key(&m.conn)
            })
            .cloned()
    }

    fn request(chid: u64, epoch: u64, op: &Op) -> PushMsg {
        match op {
            Op::Add {
                member,
                key_package,
            } => PushMsg::AddRequest {
                chid,
                epoch,
                uid: member.uid,
                key: member.key,
                key_package: key_package.clone(),
            },
            Op::Remove { uid } => PushMsg::RemoveRequest {
                chid,
                epoch,
                uids: vec![*uid],
            },
        }
    }

    /// The asked member did not answer (or is gone): ask the next one; when every member
    /// was asked, start over (a remove must happen), or drop an add.
    fn reassign(&mut self, chid: u64, now: Instant, out: &mut Outbox) {
        let Some(ch) = self.chans.get_mut(&chid) else {
            return;
        };
        let Some(mut f) = ch.inflight.take() else {
            return;
        };
        let next = Self::committer(ch, &f.op, &f.asked, &self.conns).or_else(|| match f.op {
            Op::Remove { .. } => {
                f.asked.clear();
                Self::committer(ch, &f.op, &[], &self.conns)
            }
            Op::Add { .. } => None,
        });
        match next {
            Some(m) => {
                f.asked.push(m.uid);
                f.deadline = now + COMMIT_TIMEOUT;
                out.push((m.conn, frame(&Self::request(chid, ch.epoch, &f.op))));
                ch.inflight = Some(f);
            }
            None => {
                if let Op::Add { member, .. } = &f.op {
                    out.push((
                        member.conn,
                        frame(&PushMsg::Rejected {
                            chid,
                            epoch: ch.epoch,
                            what: Refused::KeyPackage,
                        }),
                    ));
                }
            }
        }
    }

    /// Starts the next queued change when none is in flight.
    fn pump(&mut self, chid: u64, now: Instant, out: &mut Outbox) {
        let Some(ch) = self.chans.get_mut(&chid) else {
            return;
        };
        while ch.inflight.is_none() {
            let Some(op) = ch.waiting.pop_front() else {
                break;
            };
            match &op {
                Op::Add { member, .. } => {
                    if !ch.admitted.contains(&member.uid)
                        || ch.group.iter().any(|m| m.uid == member.uid)
                        || ch.group.len() >= self.limits.per_channel
                    {
                        continue;
                    }
                    if ch.group.is_empty() {
                        ch.generation += 1;
                        ch.epoch = 0;
                        ch.chat_seq = 0;
                        ch.group.push(member.clone());
                        out.push((
                            member.conn,
                            frame(&PushMsg::CreateGroup {
                                chid,
                                group_id: group_id(chid, ch.generation),
                            }),
                        ));
                        continue;
                    }
                }
                Op::Remove { uid } => {
                    if !ch.group.iter().any(|m| m.uid == *uid) {
                        continue;
                    }
                    if ch.group.len() == 1 {
                        // The last member left: the group ends; the next joiner starts a
                        // new one (a new group id).
                        ch.group.clear();
                        continue;
                    }
                }
            }
            if let Some(m) = Self::committer(ch, &op, &[], &self.conns) {
                out.push((m.conn, frame(&Self::request(chid, ch.epoch, &op))));
                ch.inflight = Some(Inflight {
                    op,
                    asked: vec![m.uid],
                    deadline: now + COMMIT_TIMEOUT,
                });
            } else {
                // Nobody connected (but the leaver) can commit: the group ends, and a
                // waiting joiner starts a new one.
                ch.group.clear();
                if let Op::Add { .. } = op {
                    ch.waiting.push_front(op);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(f: &Arc<[u8]>) -> PushMsg {
        PushMsg::decode(&f[4..]).unwrap()
    }

    fn to(out: &Outbox, conn: ConnId) -> Vec<PushMsg> {
        out.iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, f)| decode(f))
            .collect()
    }

    fn kp(d: &mut Delivery, conn: ConnId, chid: u64, now: Instant) -> Outbox {
        d.receive(
            conn,
            PushMsg::KeyPackage {
                chid,
                key_package: vec![1, 2, 3],
            },
            now,
        )
        .unwrap()
    }

    fn commit(d: &mut Delivery, conn: ConnId, epoch: u64, welcome: bool, now: Instant) -> Outbox {
        d.receive(
            conn,
            PushMsg::Commit {
                chid: 9,
                epoch,
                commit: vec![7; 10],
                welcome: if welcome { vec![8; 10] } else { vec![] },
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn join_commit_welcome_leave_in_order() {
        let now = Instant::now();
        let mut d = Delivery::new(Limits::default());
        let a = d.open(1, [1; 32], now).unwrap();
        let b = d.open(2, [2; 32], now).unwrap();
        assert!(d.admit(9, 1) && d.admit(9, 2));
        let out = kp(&mut d, a, 9, now);
        assert!(matches!(
            to(&out, a)[..],
            [PushMsg::CreateGroup { chid: 9, .. }]
        ));
        let out = kp(&mut d, b, 9, now);
        assert!(matches!(
            to(&out, a)[..],
            [PushMsg::AddRequest {
                epoch: 0,
                uid: 2,
                ..
            }]
        ));
        // Not asked: refused. A stale epoch: refused.
        assert!(matches!(
            to(&commit(&mut d, b, 0, true, now), b)[..],
            [PushMsg::Rejected {
                what: Refused::Commit,
                ..
            }]
        ));
        assert!(matches!(
            to(&commit(&mut d, a, 5, true, now), a)[..],
            [PushMsg::Rejected {
                what: Refused::Commit,
                ..
            }]
        ));
        let out = commit(&mut d, a, 0, true, now);
        assert!(matches!(
            to(&out, a)[..],
            [
                PushMsg::Committed {
                    epoch: 0,
                    sender: 1,
                    ..
                },
                PushMsg::Member {
                    uid: 2,
                    joined: true,
                    ..
                }
            ]
        ));
        match &to(&out, b)[..] {
            [PushMsg::Welcome { epoch: 1, keys, .. }, PushMsg::Member { .. }] => {
                assert_eq!(keys, &[(1, [1; 32]), (2, [2; 32])])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.group(9), [1, 2]);
        // Chat is sequenced to both; a stale epoch is refused.
        let chat = |d: &mut Delivery, epoch| {
            d.receive(
                b,
                PushMsg::Chat {
                    chid: 9,
                    epoch,
                    message: vec![3; 5],
                },
                now,
            )
            .unwrap()
        };
        let out = chat(&mut d, 1);
        assert!(matches!(
            to(&out, a)[..],
            [PushMsg::Message {
                seq: 1,
                sender: 2,
                ..
            }]
        ));
        assert!(matches!(to(&out, b)[..], [PushMsg::Message { seq: 1, .. }]));
        assert!(matches!(
            to(&chat(&mut d, 0), b)[..],
            [PushMsg::Rejected {
                what: Refused::Chat,
                ..
            }]
        ));
        // A leaves (its connection closes): B is asked to remove it.
        let out = d.close(a, now);
        assert!(matches!(
            &to(&out, b)[..],
            [PushMsg::RemoveRequest { epoch: 1, uids, .. }] if uids == &[1]
        ));
        let out = commit(&mut d, b, 1, false, now);
        assert!(matches!(
            to(&out, b)[..],
            [
                PushMsg::Committed { epoch: 1, .. },
                PushMsg::Member {
                    uid: 1,
                    joined: false,
                    ..
                }
            ]
        ));
        assert_eq!(d.group(9), [2]);
        assert_eq!(d.epoch(9), Some(2));
    }

    #[test]
    fn a_silent_committer_is_passed_over() {
        let now = Instant::now();
        let mut d = Delivery::new(Limits::default());
        let conns: Vec<ConnId> = (1..=3)
            .map(|u| d.open(u, [u as u8; 32], now).unwrap())
            .collect();
        for u in 1..=3 {
            d.admit(9, u);
        }
        kp(&mut d, conns[0], 9, now);
        kp(&mut d, conns[1], 9, now);
        commit(&mut d, conns[0], 0, true, now);
        kp(&mut d, conns[2], 9, now);
        // Member 1 was asked and stays silent; after the timeout member 2 is asked.
        assert!(d.tick(now + Duration::from_secs(1)).is_empty());
        let out = d.tick(now + COMMIT_TIMEOUT);
        assert!(matches!(
            to(&out, conns[1])[..],
            [PushMsg::AddRequest { uid: 3, .. }]
        ));
        let out = commit(&mut d, conns[1], 1, true, now + COMMIT_TIMEOUT);
        assert!(matches!(
            to(&out, conns[2])[..],
            [PushMsg::Welcome { epoch: 2, .. }, ..]
        ));
        // The late answer of member 1 loses.
        let out = commit(&mut d, conns[0], 1, true, now + COMMIT_TIMEOUT);
        assert!(matches!(to(&out, conns[0])[..], [PushMsg::Rejected { .. }]));
    }

    #[test]
    fn limits_hold() {
        let now = Instant::now();
        let mut d = Delivery::new(Limits {
            per_user: 2,
            total: 3,
            per_channel: 2,
        });
        assert!(d.open(1, [0; 32], now).is_some());
        assert!(d.open(1, [0; 32], now).is_some());
        assert!(d.open(1, [0; 32], now).is_none());
        let c = d.open(2, [0; 32], now).unwrap();
        assert!(d.open(3, [0; 32], now).is_none());
        assert!(d.admit(5, 1) && d.admit(5, 2) && !d.admit(5, 3));
        // A key package for a channel one is not admitted to is refused.
        let out = kp(&mut d, c, 6, now);
        assert!(matches!(
            to(&out, c)[..],
            [PushMsg::Rejected {
                what: Refused::KeyPackage,
                ..
            }]
        ));
        // Frames only the server sends close the connection.
        assert!(d.receive(c, PushMsg::Pong, now).is_err());
        // Chat beyond the burst is refused.
        kp(&mut d, c, 5, now);
        let mut refused = 0;
        for _ in 0..30 {
            let out = d
                .receive(
                    c,
                    PushMsg::Chat {
                        chid: 5,
                        epoch: 0,
                        message: vec![1],
                    },
                    now,
                )
                .unwrap();
            refused += to(&out, c)
                .iter()
                .filter(|m| {
                    matches!(
                        m,
                        PushMsg::Rejected {
                            what: Refused::Limit,
                            ..
                        }
                    )
                })
                .count();
        }
        assert_eq!(refused, 10);
        d.close(c, now);
        assert!(!d.connected(2));
        assert_eq!(d.group(5), Vec::<u64>::new());
    }
}
