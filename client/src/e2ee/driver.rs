//! One encrypted channel over one push connection, for a thread that owns it: open the
//! push connection (before the JOIN, which an encrypted channel refuses without one), send
//! the key package (after it), then [`PushChannel::poll`] in a loop; every frame for the
//! channel goes through [`ChannelCrypto`], every answer it makes goes back to the server.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kv_e2ee::E2eeError;

use super::channel::{ChannelCrypto, CryptoEvent};
use super::push::{self, PushEvent, PushSender};
use crate::control::{ControlClient, ControlError};

/// Why the channel's crypto stopped.
#[derive(Debug, thiserror::Error)]
pub enum PushChannelError {
    /// The control side failed (opening the push connection).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// MLS refused something of ours.
    #[error("end-to-end encryption: {0}")]
    E2ee(#[from] E2eeError),
    /// The push connection ended.
    #[error("{0}")]
    Closed(String),
    /// We need an identity (a key) to take part.
    #[error("an encrypted channel needs an identity with a key")]
    NoIdentity,
}

/// An encrypted channel's MLS state and its push connection.
#[derive(Debug)]
pub struct PushChannel {
    push: PushSender,
    rx: Receiver<PushEvent>,
    crypto: ChannelCrypto,
    key_package: Option<kv_proto::push::PushMsg>,
}

impl PushChannel {
    /// Opens the push connection of `control`'s identity for `chid` (call before JOIN).
    pub fn open(control: &ControlClient, chid: u64) -> Result<Self, PushChannelError> {
        let identity = control.signer().ok_or(PushChannelError::NoIdentity)?;
        let (crypto, key_package) = ChannelCrypto::new(chid, identity.uid, &identity.key)?;
        let (push, rx) = push::open(control)?;
        Ok(Self {
            push,
            rx,
            crypto,
            key_package: Some(key_package),
        })
    }

    /// Sends our key package (call after the JOIN admitted us).
    pub fn start(&mut self) -> Result<(), PushChannelError> {
        if let Some(kp) = self.key_package.take() {
            self.send(&kp)?;
        }
        Ok(())
    }

    fn send(&self, msg: &kv_proto::push::PushMsg) -> Result<(), PushChannelError> {
        self.push
            .send(msg)
            .map_err(|e| PushChannelError::Closed(format!("push connection: {e}")))
    }

    /// The channel's MLS state.
    pub fn crypto(&self) -> &ChannelCrypto {
        &self.crypto
    }

    /// Gives the MLS state away (tests keep a departed member's).
    pub fn into_crypto(self) -> ChannelCrypto {
        self.push.close();
        self.crypto
    }

    /// Says `text` (sent once we are in the group).
    pub fn say(&mut self, text: &str) -> Result<(), PushChannelError> {
        for m in self.crypto.say(text)? {
            self.send(&m)?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for a frame and handles it and any others already queued.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<CryptoEvent>, PushChannelError> {
        let mut events = Vec::new();
        let first = match self.rx.recv_timeout(timeout) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => return Ok(events),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PushChannelError::Closed("push connection closed".into()))
            }
        };
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            match ev {
                PushEvent::Frame(msg) if msg.chid() == Some(self.crypto.chid()) => {
                    let (ev, out) = self.crypto.handle(msg, Instant::now());
                    events.extend(ev);
                    for m in out {
                        self.send(&m)?;
                    }
                }
                PushEvent::Frame(_) => {}
                PushEvent::Closed(why) => return Err(PushChannelError::Closed(why)),
            }
            next = self.rx.try_recv().ok();
        }
        Ok(events)
    }

    /// Polls until `done` says so for an event, or `timeout` passes; returns every event.
    pub fn poll_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&CryptoEvent) -> bool,
    ) -> Result<Vec<CryptoEvent>, PushChannelError> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(all);
            }
            let evs = self.poll(left.min(Duration::from_millis(100)))?;
            let hit = evs.iter().any(&mut done);
            all.extend(evs);
            if hit {
                return Ok(all);
            }
        }
    }

    /// Closes the push connection (the server removes us from the group).
    pub fn close(&self) {
        self.push.close();
    }
}
