//! The MLS owner of one encrypted channel: a [`Member`] driven by the delivery service's
//! frames. It creates the group when told, commits the adds and removes it is asked for,
//! joins from its Welcome, merges the commits the server accepted, and turns chat
//! messages into text. Every epoch change yields an [`EpochUpdate`] for the threads that
//! encrypt and decrypt voice frames, and the epoch's safety code.
//!
//! Keys: the server vouches for every member's identity key (the lists in ADD_REQUEST,
//! COMMITTED and WELCOME); the first key seen for a uid is pinned for this session, and a
//! different one later is flagged ([`CryptoEvent::KeyChanged`]) and not accepted.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ed25519_dalek::SigningKey;
use kv_e2ee::{E2eeError, EpochUpdate, Handled, Member, SafetyCode};
use kv_proto::push::{PushMsg, Refused, MAX_CHAT_TEXT};

/// Chat messages of ours waiting for the server's echo (beyond it, `say` refuses).
pub const MAX_UNACKED: usize = 64;

/// What happened, for the session's one event channel.
#[derive(Debug, Clone)]
pub enum CryptoEvent {
    /// A new epoch: new frame keys for capture and playout, a new safety code.
    Epoch {
        /// The MLS epoch.
        epoch: u64,
        /// Its safety code.
        safety: Option<SafetyCode>,
        /// Frame keys for the voice threads.
        update: EpochUpdate,
        /// The group's members (uids).
        members: Vec<u64>,
    },
    /// A chat message in the channel's order.
    Message {
        /// Its position (per group).
        seq: u64,
        /// Its author.
        sender: u64,
        /// Its text.
        text: String,
    },
    /// We were removed from the group (a kick, or the server saw us leave).
    Removed,
    /// The server vouches for a key of `uid` other than the one pinned: refused.
    KeyChanged {
        /// Whose.
        uid: u64,
    },
    /// The server refused one of our chat messages for good (over its size or rate
    /// limit): it will never be in the channel's order.
    ChatRefused {
        /// The text that was not delivered.
        text: String,
    },
    /// A message was refused (counted; not fatal).
    Refused(String),
}

/// Frames to send to the server.
pub type Outgoing = Vec<PushMsg>;

/// One channel's MLS state and what it waits for.
pub struct ChannelCrypto {
    chid: u64,
    member: Member,
    pins: HashMap<u64, [u8; 32]>,
    /// Our chat texts not yet echoed by the server, with the epoch they were sent in.
    unacked: VecDeque<(u64, String)>,
    /// Texts said before we were in the group.
    unsent: VecDeque<String>,
    /// Refusals, for statistics.
    pub refused: u64,
}

impl std::fmt::Debug for ChannelCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCrypto")
            .field("chid", &self.chid)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl ChannelCrypto {
    /// The state for `chid` as `uid` with its identity key, and the key package to send
    /// (after the JOIN that admits us).
    pub fn new(chid: u64, uid: u64, identity: &SigningKey) -> Result<(Self, PushMsg), E2eeError> {
        let mut member = Member::new(uid, identity);
        let key_package = member.key_package()?;
        let mut pins = HashMap::new();
        pins.insert(uid, identity.verifying_key().to_bytes());
        Ok((
            Self {
                chid,
                member,
                pins,
                unacked: VecDeque::new(),
                unsent: VecDeque::new(),
                refused: 0,
            },
            PushMsg::KeyPackage { chid, key_package },
        ))
    }

    /// The channel.
    pub fn chid(&self) -> u64 {
        self.chid
    }

    /// The current epoch, once in the group.
    pub fn epoch(&self) -> Option<u64> {
        self.member.epoch()
    }

    /// The MLS state (statistics, exporter; tests keep it to show what a departed member
    /// can no longer decrypt).
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Gives the MLS state away (tests).
    pub fn into_member(self) -> Member {
        self.member
    }

    /// Pins the keys the server vouches for; a changed one is flagged and refused.
    fn pin(&mut self, keys: &[(u64, [u8; 32])], events: &mut Vec<CryptoEvent>) {
        for (uid, key) in keys {
            match self.pins.get(uid) {
                Some(k) if k != key => events.push(CryptoEvent::KeyChanged { uid: *uid }),
                Some(_) => {}
                None => {
                    self.pins.insert(*uid, *key);
                }
            }
        }
    }

    fn epoch_event(&self, events: &mut Vec<CryptoEvent>) {
        if let (Some(epoch), Ok(update)) = (self.member.epoch(), self.member.epoch_update()) {
            events.push(CryptoEvent::Epoch {
                epoch,
                safety: self.member.safety_code(),
                update,
                members: self.member.members().iter().map(|(u, _)| *u).collect(),
            });
        }
    }

    fn refuse(&mut self, events: &mut Vec<CryptoEvent>, what: String) {
        self.refused += 1;
        tracing::debug!(chid = self.chid, what, "e2ee refused");
        events.push(CryptoEvent::Refused(what));
    }

    /// Says `text` in the channel (queued until we are in the group).
    pub fn say(&mut self, text: &str) -> Result<Outgoing, E2eeError> {
        if text.len() > MAX_CHAT_TEXT || self.unacked.len() + self.unsent.len() >= MAX_UNACKED {
            return Err(E2eeError::Malformed);
        }
        self.unsent.push_back(text.to_owned());
        Ok(self.flush())
    }

    /// Texts we owe the server, encrypted in the current epoch.
    fn flush(&mut self) -> Outgoing {
        let mut out = Vec::new();
        let Some(epoch) = self.member.epoch() else {
            return out;
        };
        while let Some(text) = self.unsent.front() {
            match self.member.encrypt_message(text.as_bytes()) {
                Ok(message) => {
                    out.push(PushMsg::Chat {
                        chid: self.chid,
                        epoch,
                        message,
                    });
                    if let Some(t) = self.unsent.pop_front() {
                        self.unacked.push_back((epoch, t));
                    }
                }
                // A pending commit: sent once it is settled.
                Err(_) => break,
            }
        }
        out
    }

    /// Chat messages of ours not yet in the channel's order.
    pub fn pending_chat(&self) -> usize {
        self.unacked.len() + self.unsent.len()
    }

    /// Handles one frame from the delivery service for this channel.
    pub fn handle(&mut self, msg: PushMsg, now: Instant) -> (Vec<CryptoEvent>, Outgoing) {
        let mut events = Vec::new();
        let mut out = Vec::new();
        let chid = self.chid;
        match msg {
            PushMsg::CreateGroup { group_id, .. } => {
                match self.member.create_group(&group_id, now) {
                    Ok(()) => self.epoch_event(&mut events),
                    Err(e) => self.refuse(&mut events, format!("create group: {e}")),
                }
            }
            PushMsg::AddRequest {
                epoch,
                uid,
                key,
                key_package,
                ..
            } => {
                self.pin(&[(uid, key)], &mut events);
                // The key package must be the named joiner's, with the key the server
                // vouches for and we pinned: nobody else's leaf comes in this way.
                let pinned = self.pins.get(&uid).copied();
                let pins = move |u: u64, k: &[u8; 32]| u == uid && pinned.as_ref() == Some(k);
                if self.member.epoch() != Some(epoch) {
                    // Not at that epoch (yet): the server asks someone else after a while.
                    self.refuse(&mut events, "add request for another epoch".into());
                } else {
                    match self.member.add_members(&[&key_package], &pins) {
                        Ok(c) => out.push(PushMsg::Commit {
                            chid,
                            epoch,
                            commit: c.commit,
                            welcome: c.welcome.unwrap_or_default(),
                        }),
                        Err(e) => self.refuse(&mut events, format!("add: {e}")),
                    }
                }
            }
            PushMsg::RemoveRequest { epoch, uids, .. } => {
                if self.member.epoch() != Some(epoch) {
                    self.refuse(&mut events, "remove request for another epoch".into());
                } else {
                    match self.member.remove_members(&uids) {
                        Ok(c) => out.push(PushMsg::Commit {
                            chid,
                            epoch,
                            commit: c.commit,
                            welcome: c.welcome.unwrap_or_default(),
                        }),
                        Err(e) => self.refuse(&mut events, format!("remove: {e}")),
                    }
                }
            }
            PushMsg::Committed { commit, keys, .. } => {
                self.pin(&keys, &mut events);
                let pins = self.pins.clone();
                match self.member.handle(&commit, &pins, now) {
                    Ok(Handled::Commit { .. }) => {
                        self.epoch_event(&mut events);
                        out.extend(self.resend_after_epoch());
                    }
                    Ok(Handled::Removed) => events.push(CryptoEvent::Removed),
                    Ok(_) => {}
                    Err(e) => self.refuse(&mut events, format!("commit: {e}")),
                }
            }
            PushMsg::Welcome { welcome, keys, .. } => {
                self.pin(&keys, &mut events);
                let pins = self.pins.clone();
                match self.member.join(&welcome, &pins, now) {
                    Ok(()) => {
                        self.epoch_event(&mut events);
                        out.extend(self.flush());
                    }
                    Err(e) => self.refuse(&mut events, format!("welcome: {e}")),
                }
            }
            PushMsg::Message {
                seq,
                sender,
                message,
                ..
            } => {
                if sender == self.member.uid() {
                    // Our own message in the order (MLS cannot decrypt its own sends).
                    if let Some((_, text)) = self.unacked.pop_front() {
                        events.push(CryptoEvent::Message { seq, sender, text });
                    }
                } else {
                    let pins = self.pins.clone();
                    match self.member.handle(&message, &pins, now) {
                        Ok(Handled::Application(bytes)) => match String::from_utf8(bytes) {
                            Ok(text) => events.push(CryptoEvent::Message { seq, sender, text }),
                            Err(_) => self.refuse(&mut events, "chat is not UTF-8".into()),
                        },
                        Ok(_) => self.refuse(&mut events, "not an application message".into()),
                        Err(e) => self.refuse(&mut events, format!("chat: {e}")),
                    }
                }
            }
            PushMsg::Rejected { what, epoch, .. } => match what {
                Refused::Commit => {
                    if self.member.has_pending_commit() {
                        let _ = self.member.discard_commit();
                    }
                    out.extend(self.flush());
                }
                Refused::Chat => {
                    // Made in an epoch that ended before the server got it: ours again,
                    // in the epoch we are in now.
                    if let Some(i) = self.unacked.iter().position(|(e, _)| *e == epoch) {
                        if let Some((_, text)) = self.unacked.remove(i) {
                            self.unsent.push_front(text);
                        }
                    }
                    out.extend(self.flush());
                }
                Refused::Limit => {
                    // Our oldest unacknowledged text of that epoch is the one refused (the
                    // server answers each CHAT in order); forgetting it keeps the queue in
                    // step with the server's order, so our next message is not mislabelled.
                    match self.unacked.iter().position(|(e, _)| *e == epoch) {
                        Some(i) => {
                            if let Some((_, text)) = self.unacked.remove(i) {
                                events.push(CryptoEvent::ChatRefused { text });
                            }
                        }
                        None => self.refuse(&mut events, "server refused: Limit".into()),
                    }
                }
                other => self.refuse(&mut events, format!("server refused: {other:?}")),
            },
            _ => {}
        }
        (events, out)
    }

    /// After our epoch changed, texts of an earlier epoch still unacknowledged will be
    /// refused by the server; the refusal brings them back. Texts said meanwhile go now.
    fn resend_after_epoch(&mut self) -> Outgoing {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    /// A lone member in epoch 0 of channel 5's group.
    fn alone() -> ChannelCrypto {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let (mut c, _kp) = ChannelCrypto::new(5, 1, &key).expect("crypto");
        let (ev, _) = c.handle(
            PushMsg::CreateGroup {
                chid: 5,
                group_id: b"test group".to_vec(),
            },
            Instant::now(),
        );
        assert!(matches!(ev[..], [CryptoEvent::Epoch { epoch: 0, .. }]));
        c
    }

    #[test]
    fn a_chat_refused_over_the_limit_is_reported_and_the_next_keeps_its_text() {
        let mut c = alone();
        assert_eq!(c.say("first").expect("say").len(), 1);
        assert_eq!(c.say("second").expect("say").len(), 1);
        // The server refuses the first (rate limit) and orders the second.
        let (ev, out) = c.handle(
            PushMsg::Rejected {
                chid: 5,
                epoch: 0,
                what: Refused::Limit,
            },
            Instant::now(),
        );
        assert!(out.is_empty(), "a refused message is not sent again");
        assert!(
            matches!(&ev[..], [CryptoEvent::ChatRefused { text }] if text == "first"),
            "{ev:?}"
        );
        let (ev, _) = c.handle(
            PushMsg::Message {
                chid: 5,
                seq: 1,
                sender: 1,
                epoch: 0,
                message: vec![0; 8],
            },
            Instant::now(),
        );
        assert!(
            matches!(&ev[..], [CryptoEvent::Message { seq: 1, text, .. }] if text == "second"),
            "our own message keeps its own text: {ev:?}"
        );
        assert_eq!(c.pending_chat(), 0);
    }
}
