//! The playback-side pipeline: voice payloads of every sender in, one mixed 48 kHz mono
//! stream out. Per sender: an adaptive [`JitterBuffer`] and an Opus decoder; a missing frame
//! is recovered, in order, from a later packet's redundant copy, from Opus in-band FEC
//! (decoding the next frame with `fec = true`), and otherwise concealed (Opus PLC).
//! Sans-IO: the caller owns the clock and calls [`RxPipeline::pull`] as the output needs audio.

use std::collections::BTreeMap;

use kv_proto::voice;

use super::jitter::FrameOrigin;
use super::mixer::Mixer;
use super::stream::{SenderPlayout, StreamConfig};

/// Most senders mixed at once; packets from more are dropped (bounded state), unless one
/// of the known senders has been silent for [`FORGET_AFTER_MS`].
pub const MAX_PEERS: usize = 64;
/// A sender not heard for this long is forgotten (its decoder and buffers freed), so
/// members who left without their LEAVE reaching us do not fill the table.
pub const FORGET_AFTER_MS: u64 = 5_000;
/// Malformed payloads of one sender are logged at the 1st, 2nd, 4th, 8th, … only: a
/// hostile sender must not be able to fill the log.
fn log_worthy(count: u64) -> bool {
    count.is_power_of_two()
}

/// Playback settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxConfig {
    /// Extra delay held on top of what the arrival statistics ask, ms. Default `None` (0):
    /// the playout holds the 99.5th percentile of the delays frames required plus 1.5 ms
    /// ([`super::delay`]). `Some(ms)` adds a fixed margin, e.g. to measure the trade-off.
    pub min_delay_ms: Option<u32>,
    /// Largest jitter-buffer delay. Default 400 ms: beyond that a conversation breaks down
    /// anyway, so audio queued longer is dropped.
    pub max_delay_ms: u32,
    /// Use the earlier frames packets repeat. Default on; off only to measure what it buys.
    pub use_redundancy: bool,
    /// Use Opus in-band FEC for frames redundancy could not recover. Default on.
    pub use_fec: bool,
}

impl Default for RxConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: None,
            max_delay_ms: 400,
            use_redundancy: true,
            use_fec: true,
        }
    }
}

/// What the UI and the tests can see about one sender.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerStats {
    /// The sender's uid.
    pub uid: u64,
    /// Packets received (each once).
    pub received: u64,
    /// Frames whose own packet did not arrive in time (recovered or not).
    pub lost: u64,
    /// Lost frames played from a later packet's copy (as good as the original).
    pub recovered_redundancy: u64,
    /// Lost frames rebuilt with Opus FEC from the next frame.
    pub recovered_fec: u64,
    /// Lost frames concealed (Opus PLC).
    pub concealed: u64,
    /// Packets that arrived after their frame was played.
    pub late: u64,
    /// Packets that arrived more than once.
    pub duplicate: u64,
    /// Frames concealed while waiting for a late packet (the buffer grew).
    pub stretched: u64,
    /// Frames dropped because more than `max_delay_ms` was queued.
    pub dropped: u64,
    /// Voiced pitch periods removed to lower the delay.
    pub accelerated: u64,
    /// Pitch periods or quiet blocks added to raise the delay ahead of need.
    pub expanded: u64,
    /// Times the timeline jumped (the sender's clock jumped or restarted).
    pub resyncs: u64,
    /// Every change of the playout delay (stretches, accelerations, expansions, trims,
    /// resyncs, drops): the timing stability figure. Zero after the first talk spurt on a
    /// clean link.
    pub adjustments: u64,
    /// Audio trimmed from silences to bring the delay back down, ms.
    pub trimmed_ms: f32,
    /// Payloads that could not be parsed.
    pub malformed: u64,
    /// Measured network jitter, ms.
    pub jitter_ms: f32,
    /// Audio currently queued for this sender, ms.
    pub buffer_ms: f32,
    /// Jitter-buffer target delay, ms.
    pub target_ms: f32,
    /// A talk spurt from this sender is playing.
    pub talking: bool,
    /// Playback gain.
    pub gain: f32,
}

/// One sender: its playout, gain and the counters the playout does not keep.
struct Peer {
    playout: SenderPlayout,
    gain: f32,
    malformed: u64,
    /// When any packet (even a malformed one) last came from it.
    last_heard_ms: u64,
}

impl Peer {
    fn new(cfg: &RxConfig) -> Result<Self, audiopus::Error> {
        Ok(Self {
            playout: SenderPlayout::new(StreamConfig {
                min_delay_ms: f64::from(cfg.min_delay_ms.unwrap_or(0)),
                max_delay_ms: f64::from(cfg.max_delay_ms.max(1)),
                use_fec: cfg.use_fec,
            })?,
            gain: 1.0,
            malformed: 0,
            last_heard_ms: 0,
        })
    }
}

/// The receive pipeline of one client: every sender's stream, mixed.
pub struct RxPipeline {
    cfg: RxConfig,
    peers: BTreeMap<u64, Peer>,
    mixer: Mixer,
    scratch: Vec<f32>,
    /// End-to-end encrypted channel: frames are checked and decrypted before the jitter
    /// buffer; a frame that fails is dropped (counted in the protector's statistics).
    protector: Option<super::protect::Protector>,
    plain: Vec<u8>,
    /// Senders removed lately, with when (see [`LEFT_QUIET_MS`]); a small ring.
    left: [(u64, u64); LEFT_KEPT],
    left_next: usize,
    /// The latest time seen by `push_packet` or `pull`, ms.
    now_ms: u64,
}

/// For this long after a sender was removed (it left), its packets are ignored: the last
/// ones of its stream are still in flight, and a reordered straggler would otherwise bring
/// it back as a new sender that conceals its way to silence.
pub const LEFT_QUIET_MS: u64 = 500;
/// Removed senders remembered at once.
const LEFT_KEPT: usize = 8;

impl std::fmt::Debug for RxPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxPipeline")
            .field("cfg", &self.cfg)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RxPipeline {
    /// An empty mix.
    pub fn new(cfg: RxConfig) -> Self {
        Self {
            cfg,
            peers: BTreeMap::new(),
            mixer: Mixer::new(),
            scratch: Vec::new(),
            protector: None,
            plain: Vec::with_capacity(voice::MAX_FRAME_LEN),
            left: [(0, 0); LEFT_KEPT],
            left_next: 0,
            now_ms: 0,
        }
    }

    /// Decrypts every frame from now on (an encrypted channel); until the protector has
    /// an epoch's keys nothing is played.
    pub fn set_protector(&mut self, p: super::protect::Protector) {
        self.protector = Some(p);
    }

    /// The protector, to feed it epochs and read its counters.
    pub fn protector_mut(&mut self) -> Option<&mut super::protect::Protector> {
        self.protector.as_mut()
    }

    /// Hands over the 504 data bytes of a regular packet from `sender` (the bytes after the
    /// uid). Malformed payloads are counted and ignored. Bounded work whatever the payload
    /// says: at most [`voice::MAX_FRAMES`] frames, each stored in O(1).
    pub fn push_packet(&mut self, sender: u64, payload: &[u8], now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if !self.peers.contains_key(&sender) {
            let just_left = self.left.iter().any(|&(uid, at)| {
                uid == sender && at != 0 && now_ms.saturating_sub(at) < LEFT_QUIET_MS
            });
            if just_left {
                return;
            }
            if self.peers.len() >= MAX_PEERS && !self.forget_stalest(now_ms) {
                return;
            }
            match Peer::new(&self.cfg) {
                Ok(p) => {
                    self.peers.insert(sender, p);
                }
                Err(e) => {
                    tracing::warn!(sender, error = %e, "cannot create opus decoder");
                    return;
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&sender) else {
            return;
        };
        peer.last_heard_ms = now_ms;
        let p = match voice::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                peer.malformed += 1;
                if log_worthy(peer.malformed) {
                    tracing::debug!(sender, error = %e, count = peer.malformed, "malformed voice payload");
                }
                return;
            }
        };
        let h = p.header;
        for f in p.frames() {
            let origin = if f.age == 0 {
                FrameOrigin::Primary
            } else if !self.cfg.use_redundancy {
                break;
            } else if h.flags & voice::FLAG_SPURT_START != 0 {
                FrameOrigin::PreRoll
            } else {
                FrameOrigin::Redundant
            };
            let flags = if f.age == 0 { h.flags } else { 0 };
            let mut data = f.data;
            if let Some(p) = self.protector.as_mut() {
                // Only frames still needed are decrypted: a copy of one stored or played
                // already would only count as a replay.
                if !peer.playout.wants(f.seq, f.timestamp, h.frame_samples) {
                    continue;
                }
                let at = super::protect::position(f.timestamp, h.frame_samples);
                if p.open(
                    std::time::Instant::now(),
                    sender,
                    f.data,
                    &at,
                    &mut self.plain,
                )
                .is_err()
                {
                    continue;
                }
                data = &self.plain;
            }
            peer.playout.insert(
                now_ms,
                f.seq,
                f.timestamp,
                h.frame_samples,
                flags,
                data,
                origin,
            );
        }
    }

    /// With the table full: forgets the sender heard least recently, if it has been silent
    /// for [`FORGET_AFTER_MS`]. True when a place was freed.
    fn forget_stalest(&mut self, now_ms: u64) -> bool {
        let stalest = self
            .peers
            .iter()
            .min_by_key(|(_, p)| p.last_heard_ms)
            .map(|(&uid, p)| (uid, p.last_heard_ms));
        match stalest {
            Some((uid, last)) if now_ms.saturating_sub(last) >= FORGET_AFTER_MS => {
                self.peers.remove(&uid);
                true
            }
            _ => false,
        }
    }

    /// Fills `out` (any length, typically 240 = 5 ms) with the next mixed output samples.
    pub fn pull(&mut self, now_ms: u64, out: &mut [f32]) {
        self.now_ms = self.now_ms.max(now_ms);
        out.fill(0.0);
        if self.scratch.len() < out.len() {
            self.scratch.resize(out.len(), 0.0);
        }
        let scratch = &mut self.scratch[..out.len()];
        for peer in self.peers.values_mut() {
            peer.playout.render(now_ms, scratch);
            Mixer::add(out, scratch, peer.gain);
        }
        self.mixer.limit(out);
        // Senders gone quiet for long are forgotten (bounded state, no ghosts).
        self.peers.retain(|_, p| {
            p.playout.is_talking() || now_ms.saturating_sub(p.last_heard_ms) < FORGET_AFTER_MS
        });
    }

    /// Forgets a sender (it left the channel); its queued audio is dropped.
    pub fn remove_peer(&mut self, sender: u64) {
        if self.peers.remove(&sender).is_some() {
            self.left[self.left_next] = (sender, self.now_ms.max(1));
            self.left_next = (self.left_next + 1) % LEFT_KEPT;
        }
    }

    /// Playback gain for a sender (1.0 = as sent; 0 mutes). Clamped to 0..=4.
    pub fn set_gain(&mut self, sender: u64, gain: f32) {
        if let Some(p) = self.peers.get_mut(&sender) {
            p.gain = if gain.is_finite() {
                gain.clamp(0.0, 4.0)
            } else {
                1.0
            };
        }
    }

    /// Senders whose stream is playing now: what the talking markers need, polled every
    /// few blocks by the playout thread without building the full [`Self::peer_stats`].
    pub fn talking(&self) -> impl Iterator<Item = u64> + '_ {
        self.peers
            .iter()
            .filter(|(_, p)| p.playout.is_talking())
            .map(|(&uid, _)| uid)
    }

    /// Statistics of every sender heard so far, by uid.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|(&uid, p)| {
                let j = p.playout.jitter().stats();
                let s = p.playout.stats();
                PeerStats {
                    uid,
                    received: j.received,
                    lost: s.recovered_redundancy + s.recovered_fec + s.concealed,
                    recovered_redundancy: s.recovered_redundancy,
                    recovered_fec: s.recovered_fec,
                    concealed: s.concealed,
                    late: j.late,
                    duplicate: j.duplicates,
                    stretched: s.stretched,
                    dropped: s.dropped,
                    accelerated: s.accelerated,
                    expanded: s.expanded,
                    resyncs: s.resyncs + j.resets,
                    adjustments: s.adjustments,
                    trimmed_ms: s.trimmed_samples as f32 / 48.0,
                    malformed: p.malformed,
                    jitter_ms: p.playout.jitter_ms(),
                    buffer_ms: p.playout.buffered_ms(),
                    target_ms: p.playout.target_ms(),
                    talking: p.playout.is_talking(),
                    gain: p.gain,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{TransmitMode, TxConfig, TxPipeline};
    use rand::{Rng, SeedableRng};

    #[test]
    fn garbage_payloads_are_counted_never_played() {
        let mut rx = RxPipeline::new(RxConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut buf = [0u8; 504];
        for i in 0..2000u64 {
            rng.fill(&mut buf[..]);
            if i % 2 == 0 {
                // Valid-looking header, random frames: exercises the decoder on junk.
                buf[0] = voice::VOICE_VERSION;
                buf[2..4].copy_from_slice(&960u16.to_be_bytes());
                buf[12] = 1 + (i % 4) as u8;
            }
            rx.push_packet(9, &buf, i * 20);
            let mut out = [0.0f32; 480];
            rx.pull(i * 20, &mut out);
            assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
        }
        let s = rx.peer_stats()[0];
        assert!(s.malformed > 0, "{s:?}");
    }

    #[test]
    fn talking_follows_spurts_and_gain_is_clamped() {
        let mut tx = TxPipeline::new(TxConfig {
            mode: TransmitMode::PushToTalk,
            ..TxConfig::with_frame_ms(20)
        })
        .unwrap();
        let mut rx = RxPipeline::new(RxConfig::default());
        // (20 ms frames, one per step of 20 ms.)
        let tone: Vec<f32> = (0..960).map(|i| 0.2 * (i as f32 * 0.06).sin()).collect();
        let mut payload = [0u8; 504];
        let mut out = [0.0f32; 960];
        let mut talking = Vec::new();
        for i in 0..60u64 {
            tx.set_push_to_talk((10..30).contains(&i));
            let now = (i + 1) * 20;
            if tx
                .process_frame(&tone, now, &mut payload)
                .unwrap()
                .is_some()
            {
                rx.push_packet(5, &payload, now);
            }
            rx.pull(now, &mut out);
            talking.push(rx.peer_stats().first().is_some_and(|s| s.talking));
        }
        // Talking while the key is held (after the start delay), and not after the spurt's
        // end flag was played.
        assert!(talking[15..30].iter().all(|t| *t), "{talking:?}");
        assert!(talking[35..].iter().all(|t| !t), "{talking:?}");
        rx.set_gain(5, 100.0);
        assert_eq!(rx.peer_stats()[0].gain, 4.0);
        rx.set_gain(5, f32::NAN);
        assert_eq!(rx.peer_stats()[0].gain, 1.0);
        rx.remove_peer(5);
        assert!(rx.peer_stats().is_empty());
        // A straggler of its stream does not bring it back; a packet after the quiet does.
        rx.push_packet(5, &payload, 60 * 20 + 100);
        assert!(rx.peer_stats().is_empty());
        rx.push_packet(5, &payload, 60 * 20 + LEFT_QUIET_MS);
        assert_eq!(rx.peer_stats().len(), 1);
    }

    #[test]
    fn a_receive_pipeline_drops_what_does_not_authenticate() {
        let uid = 7;
        let mut m = kv_e2ee::Member::new(uid, &ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        m.create_group(b"rx test", std::time::Instant::now())
            .unwrap();
        let update = m.epoch_update().unwrap();
        let mut rx = RxPipeline::new(RxConfig::default());
        let mut p = super::super::protect::Protector::new();
        let mut u = update.clone();
        u.own_index = None;
        p.apply(&u, std::time::Instant::now());
        rx.set_protector(p);
        // Plain Opus-looking payloads and random bytes in valid voice framing: none plays,
        // none panics.
        let mut payload = [0u8; kv_proto::packet::DATA_SIZE];
        let header = kv_proto::voice::VoiceHeader {
            flags: kv_proto::voice::FLAG_SPURT_START,
            frame_samples: 960,
            seq: 1,
            timestamp: 960,
        };
        for i in 0..50u32 {
            let junk: Vec<u8> = (0..120).map(|k| (k as u32 * 31 + i) as u8).collect();
            let h = kv_proto::voice::VoiceHeader {
                seq: header.seq + i,
                timestamp: header.timestamp + 960 * i,
                ..header
            };
            let (len, _) = kv_proto::voice::encode(&h, &junk, &[], &mut payload).unwrap();
            rx.push_packet(uid, &payload[..len], u64::from(i) * 20);
        }
        let s = rx.protector_mut().unwrap().stats();
        assert_eq!(s.decrypted, 0);
        assert_eq!(s.rejected(), 50, "{s:?}");
        let mut out = [0.0f32; 240];
        rx.pull(1000, &mut out);
        assert!(out.iter().all(|x| *x == 0.0));
    }
}
