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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use kv_e2ee::Member;

    /// A one-member group's epoch: its frame keys, for a sender and a receiver.
    fn epoch() -> (EpochUpdate, u64) {
        let mut m = Member::new(7, &SigningKey::from_bytes(&[3; 32]));
        m.create_group(b"protect test", Instant::now()).unwrap();
        (m.epoch_update().unwrap(), 7)
    }

    #[test]
    fn frames_round_trip_and_every_forgery_is_counted() {
        let (update, uid) = epoch();
        let now = Instant::now();
        let mut tx = Protector::new();
        let mut frame = [0u8; MAX_FRAME_LEN];
        frame[..5].copy_from_slice(b"opus!");
        // No keys yet: nothing goes out.
        assert_eq!(tx.protect(&mut frame, 5, &position(0, 960)), None);
        tx.apply(&update, now);
        let len = tx.protect(&mut frame, 5, &position(960, 960)).unwrap();
        assert!(len > 5 && &frame[..5] != b"opus!");
        let sent = frame[..len].to_vec();

        // A receiver with the same epoch (a second member would hold the same keys; our own
        // frames are "unknown sender" to us, so receive as a keyless observer of uid 7's
        // leaf: a fresh protector given the update without our own index).
        let mut rx = Protector::new();
        let mut recv_update = update.clone();
        recv_update.own_index = None;
        rx.apply(&recv_update, now);
        let mut out = Vec::new();
        rx.open(now, uid, &sent, &position(960, 960), &mut out)
            .unwrap();
        assert_eq!(out, b"opus!");
        // Replayed, moved, tampered, from another uid, garbage: all refused, all counted.
        assert_eq!(
            rx.open(now, uid, &sent, &position(960, 960), &mut out),
            Err(FrameRejected::Replayed)
        );
        let len2 = tx.protect(&mut frame, 5, &position(1920, 960)).unwrap();
        let second = frame[..len2].to_vec();
        assert_eq!(
            rx.open(now, uid, &second, &position(2880, 960), &mut out),
            Err(FrameRejected::AuthFailed)
        );
        let mut tampered = second.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            rx.open(now, uid, &tampered, &position(1920, 960), &mut out),
            Err(FrameRejected::AuthFailed)
        );
        assert!(rx
            .open(now, uid + 1, &second, &position(1920, 960), &mut out)
            .is_err());
        assert!(rx.open(now, uid, &[0xFF; 3], &[], &mut out).is_err());
        let s = rx.stats();
        assert_eq!(s.decrypted, 2, "{s:?}");
        assert_eq!(s.rejected(), 4, "{s:?}");
        assert_eq!(rx.wrong_sender, 1);
    }
}
