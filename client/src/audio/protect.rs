//! SFrame protection of Opus frames for end-to-end encrypted channels (PROTOCOL.md,
//! "End-to-end encryption"): the hook the transmit and receive pipelines call, so each
//! frame is protected once, right after encoding (a redundant copy in a later packet is
//! the same ciphertext), and checked right before the jitter buffer.
//!
//! Authenticated with each frame, not sent: its timestamp (u32 BE) and duration in samples
//! (u16 BE), the position a receiver computes for every copy. Not the sequence number: the
//! transmitter numbers pre-roll frames only when the gate opens, after they were encoded
//! and protected. The packet header itself is not authenticated (the relay could change
//! it), but a frame moved to another position no longer authenticates.

use std::time::Instant;

use kv_e2ee::{EncryptError, EpochUpdate, FrameKeys, FrameRejected, FrameStats};
use kv_proto::voice::MAX_FRAME_LEN;

/// Bytes protection adds to a frame at most; the encoder is given that much less room.
pub const MAX_OVERHEAD: usize = kv_e2ee::frame::MAX_OVERHEAD;

/// The authenticated position of a frame.
pub fn position(timestamp: u32, frame_samples: u16) -> [u8; 6] {
    let mut p = [0u8; 6];
    p[..4].copy_from_slice(&timestamp.to_be_bytes());
    p[4..].copy_from_slice(&frame_samples.to_be_bytes());
    p
}

/// One direction's frame keys (the capture thread's, or the playout thread's).
#[derive(Debug, Default)]
pub struct Protector {
    keys: FrameKeys,
    scratch: Vec<u8>,
    /// Frames not sent because no epoch's keys were there yet (never sent in the clear).
    pub unprotected_dropped: u64,
    /// Frames whose decrypted sender is not the packet's sender.
    pub wrong_sender: u64,
}

impl Protector {
    /// No keys yet: nothing goes out, nothing comes in, until the first epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an epoch (the previous one decrypts for the grace period).
    pub fn apply(&mut self, update: &EpochUpdate, now: Instant) {
        if let Err(e) = self.keys.apply(update, now) {
            tracing::warn!(error = %e, "frame keys not installed");
        }
    }

    /// The current epoch, once there is one.
    pub fn epoch(&self) -> Option<u64> {
        self.keys.current_epoch()
    }

    /// Decryption counters.
    pub fn stats(&self) -> FrameStats {
        self.keys.stats()
    }

    /// Replaces the `n` bytes of plaintext in `frame` with their protected form; returns
    /// its length, or `None` (drop the frame) when there is no epoch yet.
    pub fn protect(
        &mut self,
        frame: &mut [u8; MAX_FRAME_LEN],
        n: usize,
        position: &[u8],
    ) -> Option<usize> {
        self.scratch.clear();
        match self.keys.encrypt(&frame[..n], position, &mut self.scratch) {
            Ok(len) if len <= MAX_FRAME_LEN => {
                frame[..len].copy_from_slice(&self.scratch[..len]);
                Some(len)
            }
            Ok(_) | Err(EncryptError::NoEpoch | EncryptError::CounterExhausted) => {
                self.unprotected_dropped += 1;
                None
            }
            Err(_) => {
                self.unprotected_dropped += 1;
                None
            }
        }
    }

    /// Checks and decrypts a protected frame from `sender` into `out`.
    pub fn open(
        &mut self,
        now: Instant,
        sender: u64,
        data: &[u8],
        position: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameRejected> {
        let f = self.keys.decrypt(now, data, position, out)?;
        if f.uid != sender {
            self.wrong_sender += 1;
            out.clear();
            return Err(FrameRejected::UnknownSender);
        }
        Ok(())
    }
}
