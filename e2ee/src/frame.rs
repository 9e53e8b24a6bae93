//! Frame keys: per-sender SFrame keys of the current (and previous) epoch, and the protection
//! of single Opus frames with them.
//!
//! Sans-IO: the MLS side ([`crate::Member`]) hands in each epoch's exported base key and
//! roster; this module never touches MLS. Every operation on a frame is O(1): the key id
//! names the epoch (two slots) and the sender (an index into a table bounded by
//! [`MAX_LEAVES`]); the replay window is a fixed bitmap per sender.

use std::time::{Duration, Instant};

use sframe::frame::validation::{
    FrameValidation, ReplayAttackProtection, ReplayAttackProtectionError, Tolerance,
    UnvalidatedFrame,
};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::mls::{MlsKeyId, MlsKeyIdBitRange};
use sframe::CipherSuite;
use zeroize::Zeroizing;

/// SFrame cipher suite: AES-128-GCM with a full 16-byte tag and HKDF-SHA256, the same
/// primitives as the MLS ciphersuite (one AES and SHA-2 implementation in the binary).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// MLS exporter label of the epoch's SFrame base key (RFC 9605 §5.2).
pub const BASE_KEY_LABEL: &str = "SFrame 1.0 Base Key";
/// Low bits of the epoch in a key id (RFC 9605 §5.2's `E`). Only two epochs are ever live,
/// so 4 bits tell a frame of the current, the previous or some other epoch apart.
pub const EPOCH_BITS: u8 = 4;
/// Bits of the sender's leaf index in a key id (`S`): 4096 leaves, above the server's
/// per-channel member cap (1024), so no group can outgrow it.
pub const INDEX_BITS: u8 = 12;
/// Most leaves a sender table holds.
pub const MAX_LEAVES: usize = 1 << INDEX_BITS;
/// Frames per sender the replay window covers behind the newest one: 2.56 s of 20 ms frames,
/// beyond the 16 frames a payload repeats and any jitter buffer's wait.
pub const REPLAY_WINDOW: usize = 128;
/// How long the previous epoch's keys decrypt after a new epoch starts, for frames in flight
/// and senders that process the commit a little later.
pub const GRACE_PERIOD: Duration = Duration::from_secs(3);
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Most bytes protection adds to a frame: the SFrame header (1 config byte, up to 2 key-id
/// bytes, up to 8 counter bytes) and the tag. Typical: 19 to 21 (key id of one byte for up
/// to 16 leaves; counter of one byte for an epoch's first 256 frames, two up to 65 536,
/// three up to 2^24: at 100 frames/s, full-rate and low-rate repeats, 2.5 s, 11 minutes,
/// 46 hours).
pub const MAX_OVERHEAD: usize = 1 + 2 + 8 + TAG_LEN;

/// Why a received frame was dropped. Each has a counter in [`FrameStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameRejected {
    /// Not an SFrame frame (header truncated, or shorter than the tag).
    #[error("malformed frame")]
    Malformed,
    /// Its key id names an epoch we hold no keys for (before we joined, or not yet processed).
    #[error("frame of an unknown epoch")]
    UnknownEpoch,
    /// Its epoch is the previous one and the grace period is over.
    #[error("frame of an expired epoch")]
    ExpiredEpoch,
    /// No member sends with this key id in that epoch (a non-member, or ourselves reflected).
    #[error("frame from a non-member")]
    UnknownSender,
    /// Authentication failed: tampered, or forged without the key.
    #[error("frame failed authentication")]
    AuthFailed,
    /// This sender's counter was already accepted.
    #[error("replayed frame")]
    Replayed,
    /// The counter is more than [`REPLAY_WINDOW`] behind this sender's newest.
    #[error("frame too old for the replay window")]
    TooOld,
}

/// Why a frame could not be protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// No epoch keys (not in a group, or removed from it).
    #[error("no epoch keys to encrypt with")]
    NoEpoch,
    /// The sender's frame counter for this epoch is used up (2^64 frames).
    #[error("frame counter exhausted")]
    CounterExhausted,
    /// The SFrame library refused (cannot happen with [`CIPHER_SUITE`]).
    #[error("frame encryption failed")]
    Failed,
}

/// Why an epoch's keys could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// A leaf index does not fit [`INDEX_BITS`].
    #[error("leaf index {0} above the key id's range")]
    LeafIndex(u32),
    /// Key derivation failed (a base key of the wrong length).
    #[error("frame key derivation failed")]
    Derivation,
}

/// Counters of protected and dropped frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames encrypted.
    pub encrypted: u64,
    /// Frames decrypted and accepted.
    pub decrypted: u64,
    /// [`FrameRejected::Malformed`].
    pub malformed: u64,
    /// [`FrameRejected::UnknownEpoch`].
    pub unknown_epoch: u64,
    /// [`FrameRejected::ExpiredEpoch`].
    pub expired_epoch: u64,
    /// [`FrameRejected::UnknownSender`].
    pub unknown_sender: u64,
    /// [`FrameRejected::AuthFailed`].
    pub auth_failed: u64,
    /// [`FrameRejected::Replayed`].
    pub replayed: u64,
    /// [`FrameRejected::TooOld`].
    pub too_old: u64,
}

impl FrameStats {
    /// Every rejection, whatever its reason.
    pub fn rejected(&self) -> u64 {
        self.malformed
            + self.unknown_epoch
            + self.expired_epoch
            + self.unknown_sender
            + self.auth_failed
            + self.replayed
            + self.too_old
    }

    fn count(&mut self, why: FrameRejected) {
        let c = match why {
            FrameRejected::Malformed => &mut self.malformed,
            FrameRejected::UnknownEpoch => &mut self.unknown_epoch,
            FrameRejected::ExpiredEpoch => &mut self.expired_epoch,
            FrameRejected::UnknownSender => &mut self.unknown_sender,
            FrameRejected::AuthFailed => &mut self.auth_failed,
            FrameRejected::Replayed => &mut self.replayed,
            FrameRejected::TooOld => &mut self.too_old,
        };
        *c += 1;
    }
}

/// Who sent an accepted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptedFrame {
    /// The sender's uid, from its credential. The caller checks it against the packet's uid:
    /// a frame relayed under another member's uid is not that member's.
    pub uid: u64,
    /// The sender's MLS leaf index.
    pub leaf_index: u32,
    /// The MLS epoch whose keys decrypted it.
    pub epoch: u64,
    /// Its SFrame counter (per sender and epoch, authenticated).
    pub counter: u64,
    /// Bytes of Opus frame now in the output buffer.
    pub len: usize,
}

/// Everything [`FrameKeys`] needs to start an epoch, as the MLS owner hands it out
/// ([`crate::Member::epoch_update`]): so the threads that send (capture) and receive
/// (playout) can each keep a `FrameKeys` of their own, fed over a channel, with no lock on
/// the frame path. The base key is wiped when this is dropped.
#[derive(Clone)]
pub struct EpochUpdate {
    /// The MLS epoch.
    pub epoch: u64,
    /// `MLS-Exporter(BASE_KEY_LABEL, "", 16)` of that epoch.
    pub base_key: Zeroizing<Vec<u8>>,
    /// Our leaf index (`None`: receive only).
    pub own_index: Option<u32>,
    /// `(leaf index, uid)` of every member, ourselves included.
    pub roster: Vec<(u32, u64)>,
}

impl std::fmt::Debug for EpochUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the base key.
        f.debug_struct("EpochUpdate")
            .field("epoch", &self.epoch)
            .field("own_index", &self.own_index)
            .field("members", &self.roster.len())
            .finish_non_exhaustive()
    }
}

/// One member's view as a receiver of one sender.
struct SenderKey {
    uid: u64,
    key: DecryptionKey,
    replay: ReplayAttackProtection,
}

/// Our own sending key in an epoch.
struct OwnKey {
    key: EncryptionKey,
    counter: MonotonicCounter,
}

/// The keys of one epoch.
struct EpochKeys {
    epoch: u64,
    /// By leaf index; `None` for blank leaves and our own.
    senders: Vec<Option<SenderKey>>,
    own: Option<OwnKey>,
    /// When these keys stop decrypting (`None` while current).
    expires: Option<Instant>,
}

impl EpochKeys {
    fn lsb(&self) -> u64 {
        self.epoch & ((1 << EPOCH_BITS) - 1)
    }
}

fn bit_range() -> MlsKeyIdBitRange {
    MlsKeyIdBitRange::new(EPOCH_BITS, INDEX_BITS)
}

/// The SFrame key id of `leaf_index` in `epoch` (context 0, RFC 9605 §5.2).
pub fn key_id(epoch: u64, leaf_index: u32) -> Option<u64> {
    MlsKeyId::try_new(0u64, epoch, leaf_index, bit_range())
        .ok()
        .map(u64::from)
}

/// Frame keys of one member in one channel: the current epoch's, the previous epoch's for
/// [`GRACE_PERIOD`], and the counters.
pub struct FrameKeys {
    current: Option<EpochKeys>,
    previous: Option<EpochKeys>,
    /// Epoch whose grace period ran out, so its late frames count as expired, not unknown.
    expired_epoch: Option<u64>,
    stats: FrameStats,
}

impl std::fmt::Debug for FrameKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("FrameKeys")
            .field("current_epoch", &self.current.as_ref().map(|k| k.epoch))
            .field("previous_epoch", &self.previous.as_ref().map(|k| k.epoch))
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for FrameKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameKeys {
    /// No keys yet: everything received is [`FrameRejected::UnknownEpoch`].
    pub fn new() -> Self {
        Self {
            current: None,
            previous: None,
            expired_epoch: None,
            stats: FrameStats::default(),
        }
    }

    /// Makes `epoch` current: derives every sender's key from `base_key` (the epoch's
    /// [`BASE_KEY_LABEL`] export) for the `(leaf_index, uid)` pairs of `roster`, ours
    /// (`own_index`) for sending. The current epoch becomes the previous one until
    /// `now + GRACE_PERIOD`. Cost: one HKDF and AES key schedule per member.
    pub fn install_epoch(
        &mut self,
        epoch: u64,
        base_key: &[u8],
        own_index: Option<u32>,
        roster: impl IntoIterator<Item = (u32, u64)>,
        now: Instant,
    ) -> Result<(), InstallError> {
        let mut senders: Vec<Option<SenderKey>> = Vec::new();
        for (index, uid) in roster {
            if Some(index) == own_index {
                continue;
            }
            let kid = key_id(epoch, index).ok_or(InstallError::LeafIndex(index))?;
            let key = DecryptionKey::derive_from(CIPHER_SUITE, kid, base_key)
                .map_err(|_| InstallError::Derivation)?;
            let slot = index as usize;
            if senders.len() <= slot {
                senders.resize_with(slot + 1, || None);
            }
            senders[slot] = Some(SenderKey {
                uid,
                key,
                replay: ReplayAttackProtection::new(kid, Tolerance::new(REPLAY_WINDOW)),
            });
        }
        let own = match own_index {
            Some(index) => {
                let kid = key_id(epoch, index).ok_or(InstallError::LeafIndex(index))?;
                Some(OwnKey {
                    key: EncryptionKey::derive_from(CIPHER_SUITE, kid, base_key)
                        .map_err(|_| InstallError::Derivation)?,
                    counter: MonotonicCounter::default(),
                })
            }
            None => None,
        };
        self.retire(now);
        self.current = Some(EpochKeys {
            epoch,
            senders,
            own,
            expires: None,
        });
        Ok(())
    }

    /// [`Self::install_epoch`] from an [`EpochUpdate`].
    pub fn apply(&mut self, update: &EpochUpdate, now: Instant) -> Result<(), InstallError> {
        self.install_epoch(
            update.epoch,
            &update.base_key,
            update.own_index,
            update.roster.iter().copied(),
            now,
        )
    }

    /// Stops sending: the current epoch becomes the previous one (decrypting for the grace
    /// period). For a member removed from the group, or leaving it.
    pub fn retire(&mut self, now: Instant) {
        if let Some(prev) = &self.previous {
            // Two epoch changes within the grace period: the older epoch ends now.
            self.expired_epoch = Some(prev.epoch);
        }
        if let Some(mut cur) = self.current.take() {
            cur.expires = Some(now + GRACE_PERIOD);
            cur.own = None;
            self.previous = Some(cur);
        }
    }

    /// The epoch frames are sent in.
    pub fn current_epoch(&self) -> Option<u64> {
        self.current.as_ref().map(|k| k.epoch)
    }

    /// The previous epoch, while its grace period lasts.
    pub fn previous_epoch(&self) -> Option<u64> {
        self.previous.as_ref().map(|k| k.epoch)
    }

    /// When [`Self::handle_timeout`] has something to drop (quinn-style).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous.as_ref().and_then(|k| k.expires)
    }

    /// Drops the previous epoch's keys once their grace period is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(prev) = &self.previous {
            if prev.expires.is_some_and(|t| now >= t) {
                self.expired_epoch = Some(prev.epoch);
                self.previous = None;
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Protects one Opus frame with our current key. `aad` is authenticated, not sent: the
    /// receiver must pass the same bytes (the wiring passes the frame's own sequence number
    /// and timestamp, which a redundant copy keeps, so a relay cannot relabel frames). `out`
    /// receives exactly the protected frame (`frame.len()` plus at most [`MAX_OVERHEAD`]
    /// bytes; no allocation once its capacity suffices). Returns its length.
    pub fn encrypt(
        &mut self,
        frame: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, EncryptError> {
        let own = self
            .current
            .as_mut()
            .and_then(|k| k.own.as_mut())
            .ok_or(EncryptError::NoEpoch)?;
        if own.counter.is_exhausted() {
            return Err(EncryptError::CounterExhausted);
        }
        let media = MediaFrameView::try_with_meta_data(&mut own.counter, frame, aad)
            .map_err(|_| EncryptError::CounterExhausted)?;
        media
            .encrypt_into(&own.key, out)
            .map_err(|_| EncryptError::Failed)?;
        // The library writes `aad` in front of the frame; it is not sent.
        drop_prefix(out, aad.len());
        self.stats.encrypted += 1;
        Ok(out.len())
    }

    /// Checks and decrypts one protected frame into `out` (which then holds exactly the Opus
    /// frame), `aad` as the sender passed it. A rejected frame is counted and changes nothing
    /// else: the replay window only records frames that authenticated.
    pub fn decrypt(
        &mut self,
        now: Instant,
        data: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<DecryptedFrame, FrameRejected> {
        let r = self.decrypt_uncounted(now, data, aad, out);
        match r {
            Ok(_) => self.stats.decrypted += 1,
            Err(why) => {
                out.clear();
                self.stats.count(why);
            }
        }
        r
    }

    fn decrypt_uncounted(
        &mut self,
        now: Instant,
        data: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<DecryptedFrame, FrameRejected> {
        self.handle_timeout(now);
        let frame = EncryptedFrameView::try_with_meta_data(data, aad)
            .map_err(|_| FrameRejected::Malformed)?;
        let kid = MlsKeyId::from_key_id(frame.header().key_id(), bit_range());
        if kid.context_id() != 0 {
            // We assign only context 0 to senders.
            return Err(FrameRejected::UnknownSender);
        }
        let lsb = kid.epoch_lsb();
        let keys = match (&mut self.current, &mut self.previous) {
            (Some(cur), _) if cur.lsb() == lsb => cur,
            (_, Some(prev)) if prev.lsb() == lsb => prev,
            _ => {
                let expired = self
                    .expired_epoch
                    .is_some_and(|e| e & ((1 << EPOCH_BITS) - 1) == lsb);
                return Err(if expired {
                    FrameRejected::ExpiredEpoch
                } else {
                    FrameRejected::UnknownEpoch
                });
            }
        };
        let epoch = keys.epoch;
        let leaf_index = kid.member_index() as usize;
        let sender = keys
            .senders
            .get_mut(leaf_index)
            .and_then(Option::as_mut)
            .ok_or(FrameRejected::UnknownSender)?;
        let token = sender
            .replay
            .screen(UnvalidatedFrame::from(&frame))
            .map_err(|e| match e {
                ReplayAttackProtectionError::DuplicatedFrame { .. } => FrameRejected::Replayed,
                ReplayAttackProtectionError::CounterTooOld { .. } => FrameRejected::TooOld,
                _ => FrameRejected::UnknownSender,
            })?;
        let len = frame
            .decrypt_into(&sender.key, out)
            .map_err(|e| match e {
                sframe::error::SframeError::InvalidBuffer(_) => FrameRejected::Malformed,
                _ => FrameRejected::AuthFailed,
            })?
            .payload()
            .len();
        sender.replay.record(token);
        // The library leaves `aad` in front of the payload.
        drop_prefix(out, out.len() - len);
        Ok(DecryptedFrame {
            uid: sender.uid,
            leaf_index: leaf_index as u32,
            epoch,
            counter: frame.header().counter(),
            len,
        })
    }
}

/// Removes the first `n` bytes of `buf` in place (no allocation).
fn drop_prefix(buf: &mut Vec<u8>, n: usize) {
    if n > 0 {
        let n = n.min(buf.len());
        buf.copy_within(n.., 0);
        buf.truncate(buf.len() - n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(epoch: u64, base: &[u8]) -> (FrameKeys, FrameKeys, Instant) {
        let now = Instant::now();
        let roster = [(0u32, 100u64), (1, 101)];
        let mut a = FrameKeys::new();
        let mut b = FrameKeys::new();
        a.install_epoch(epoch, base, Some(0), roster, now).unwrap();
        b.install_epoch(epoch, base, Some(1), roster, now).unwrap();
        (a, b, now)
    }

    #[test]
    fn round_trip_overhead_and_sender() {
        let (mut a, mut b, now) = pair(5, &[1u8; 16]);
        let opus = [0x55u8; 120];
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        for i in 0..300u64 {
            let aad = (i as u32).to_be_bytes();
            let n = a.encrypt(&opus, &aad, &mut wire).unwrap();
            assert!(n - opus.len() <= MAX_OVERHEAD);
            if i == 0 {
                // Key id 5 (leaf 0, epoch 5) and counter 0 both fit in the config byte.
                assert_eq!(n - opus.len(), 1 + TAG_LEN);
            }
            if i == 8 {
                // Counter 8 takes a byte of its own.
                assert_eq!(n - opus.len(), 1 + 1 + TAG_LEN);
            }
            let d = b.decrypt(now, &wire, &aad, &mut plain).unwrap();
            assert_eq!(plain, opus);
            assert_eq!((d.uid, d.leaf_index, d.epoch, d.counter), (100, 0, 5, i));
        }
        assert_eq!(b.stats().decrypted, 300);
    }

    #[test]
    fn replay_window_is_bounded_and_accepts_reordering() {
        let (mut a, mut b, now) = pair(1, &[2u8; 16]);
        let frames: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                let mut w = Vec::new();
                a.encrypt(&[1, 2, 3], b"", &mut w).unwrap();
                w
            })
            .collect();
        let mut out = Vec::new();
        // Out of order within the window: fine.
        b.decrypt(now, &frames[150], b"", &mut out).unwrap();
        b.decrypt(now, &frames[149], b"", &mut out).unwrap();
        assert_eq!(
            b.decrypt(now, &frames[150], b"", &mut out),
            Err(FrameRejected::Replayed)
        );
        // More than REPLAY_WINDOW behind the newest.
        assert_eq!(
            b.decrypt(now, &frames[10], b"", &mut out),
            Err(FrameRejected::TooOld)
        );
        assert_eq!((b.stats().replayed, b.stats().too_old), (1, 1));
    }

    #[test]
    fn rejections_leave_no_trace() {
        let (mut a, mut b, now) = pair(1, &[3u8; 16]);
        let mut wire = Vec::new();
        a.encrypt(b"opus frame", b"pos", &mut wire).unwrap();
        let mut out = Vec::new();
        for cut in 0..wire.len() {
            assert!(b.decrypt(now, &wire[..cut], b"pos", &mut out).is_err());
        }
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            b.decrypt(now, &bad, b"pos", &mut out),
            Err(FrameRejected::AuthFailed)
        );
        // Another position (aad) for the same bytes.
        assert_eq!(
            b.decrypt(now, &wire, b"pot", &mut out),
            Err(FrameRejected::AuthFailed)
        );
        // The genuine frame still decrypts: the forgery recorded nothing.
        b.decrypt(now, &wire, b"pos", &mut out).unwrap();
        assert_eq!(out, b"opus frame");
    }

    #[test]
    fn only_one_previous_epoch_is_kept() {
        let (mut a, mut b, now) = pair(1, &[4u8; 16]);
        let roster = [(0u32, 100u64), (1, 101)];
        let mut e1 = Vec::new();
        a.encrypt(b"epoch 1", b"", &mut e1).unwrap();
        a.install_epoch(2, &[5u8; 16], Some(0), roster, now)
            .unwrap();
        b.install_epoch(2, &[5u8; 16], Some(1), roster, now)
            .unwrap();
        let mut e2 = Vec::new();
        a.encrypt(b"epoch 2", b"", &mut e2).unwrap();
        b.install_epoch(3, &[6u8; 16], Some(1), roster, now)
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            b.decrypt(now, &e1, b"", &mut out),
            Err(FrameRejected::ExpiredEpoch)
        );
        assert_eq!(b.decrypt(now, &e2, b"", &mut out).map(|d| d.epoch), Ok(2));
        assert_eq!((b.current_epoch(), b.previous_epoch()), (Some(3), Some(2)));
    }

    #[test]
    fn key_id_layout() {
        assert_eq!(key_id(0x13, 2), Some(2 << EPOCH_BITS | 3));
        assert_eq!(key_id(0, MAX_LEAVES as u32), None);
    }
}
