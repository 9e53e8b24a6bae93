//! The playback-side pipeline: voice payloads of every sender in, one mixed 48 kHz mono
//! stream out. Per sender: an adaptive [`JitterBuffer`] and an Opus decoder; a missing frame
//! is recovered, in order, from a later packet's redundant copy, from Opus in-band FEC
//! (decoding the next frame with `fec = true`), and otherwise concealed (Opus PLC).
//! Sans-IO: the caller owns the clock and calls [`RxPipeline::pull`] as the output needs audio.

use std::collections::BTreeMap;

use audiopus::coder::{Decoder, GenericCtl};
use audiopus::packet::Packet;
use audiopus::{Channels, MutSignals, SampleRate};
use kv_proto::voice;

use super::jitter::{FrameOrigin, JitterBuffer, JitterConfig, Playout};
use super::mixer::Mixer;
use super::tx::rms_dbfs;

/// Most senders mixed at once; packets from more are dropped (bounded state).
pub const MAX_PEERS: usize = 64;
/// Frames below this level may be shortened to shrink the jitter-buffer delay.
const QUIET_DBFS: f32 = -40.0;
/// Longest Opus frame (120 ms at 48 kHz).
const MAX_FRAME: usize = 5760;

/// Playback settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxConfig {
    /// Smallest jitter-buffer delay on top of the fastest transit. Default `None`: half of
    /// each sender's frame (see [`JitterConfig::min_delay_ms`]); above that, on a quiet
    /// network the buffer sits at measured jitter + 2 ms, which keeps mouth-to-ear low.
    /// `Some(ms)` sets the floor for every sender, e.g. to measure the trade-off.
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

struct Peer {
    jb: JitterBuffer,
    decoder: Decoder,
    generation: u64,
    pcm: Box<[f32; MAX_FRAME]>,
    pcm_len: usize,
    pcm_pos: usize,
    gain: f32,
    recovered_fec: u64,
    concealed: u64,
    malformed: u64,
}

impl Peer {
    fn new(cfg: &RxConfig) -> Result<Self, audiopus::Error> {
        Ok(Self {
            jb: JitterBuffer::new(JitterConfig {
                min_delay_ms: cfg.min_delay_ms,
                max_delay_ms: cfg.max_delay_ms,
            }),
            decoder: Decoder::new(SampleRate::Hz48000, Channels::Mono)?,
            generation: 0,
            pcm: Box::new([0.0; MAX_FRAME]),
            pcm_len: 0,
            pcm_pos: 0,
            gain: 1.0,
            recovered_fec: 0,
            concealed: 0,
            malformed: 0,
        })
    }

    /// Decodes `packet` (or conceals when `None`) into `pcm[..samples]`; on a decoder error
    /// the frame is concealed, and failing that, silent.
    fn decode(&mut self, packet: Option<&[u8]>, samples: usize, fec: bool) {
        let samples = samples.min(MAX_FRAME);
        let pkt = packet.and_then(|p| Packet::try_from(p).ok());
        let decoded = MutSignals::try_from(&mut self.pcm[..samples])
            .ok()
            .and_then(|sig| self.decoder.decode_float(pkt, sig, fec).ok());
        if decoded.is_none() {
            let plc = MutSignals::try_from(&mut self.pcm[..samples])
                .ok()
                .and_then(|sig| self.decoder.decode_float(None, sig, false).ok());
            if plc.is_none() {
                self.pcm[..samples].fill(0.0);
            }
        }
        self.pcm_len = samples;
        self.pcm_pos = 0;
    }

    /// Writes the next `out.len()` samples of this sender into `out` (silence when idle).
    fn render(&mut self, now_ms: u64, out: &mut [f32], use_fec: bool) {
        let mut filled = 0;
        while filled < out.len() {
            if self.pcm_pos < self.pcm_len {
                let n = (self.pcm_len - self.pcm_pos).min(out.len() - filled);
                out[filled..filled + n].copy_from_slice(&self.pcm[self.pcm_pos..self.pcm_pos + n]);
                self.pcm_pos += n;
                filled += n;
                continue;
            }
            // Copy what the buffer says so the borrow of the jitter buffer ends here.
            let mut packet = [0u8; voice::MAX_FRAME_LEN];
            let (len, samples, action) = match self.jb.pop(now_ms) {
                Playout::Idle => {
                    out[filled..].fill(0.0);
                    return;
                }
                Playout::Frame { data, samples, .. } => {
                    let n = data.len().min(packet.len());
                    packet[..n].copy_from_slice(&data[..n]);
                    (n, samples, Action::Decode)
                }
                Playout::Lost {
                    next: Some(next),
                    samples,
                } if use_fec => {
                    let n = next.len().min(packet.len());
                    packet[..n].copy_from_slice(&next[..n]);
                    (n, samples, Action::Fec)
                }
                Playout::Lost { samples, .. } => (0, samples, Action::Conceal),
                Playout::Stretch { samples } => (0, samples, Action::Stretch),
                Playout::Gap { samples } => (0, samples, Action::Silence),
            };
            if self.jb.generation() != self.generation {
                // A new stream: the sender reset its encoder, so reset ours.
                self.generation = self.jb.generation();
                let _ = self.decoder.reset_state();
            }
            let decoded = matches!(action, Action::Decode | Action::Fec);
            match action {
                Action::Decode => self.decode(Some(&packet[..len]), samples, false),
                Action::Fec => {
                    self.recovered_fec += 1;
                    self.decode(Some(&packet[..len]), samples, true);
                }
                Action::Conceal => {
                    self.concealed += 1;
                    self.decode(None, samples, false);
                }
                Action::Stretch => self.decode(None, samples, false),
                Action::Silence => {
                    let samples = samples.min(MAX_FRAME);
                    self.pcm[..samples].fill(0.0);
                    self.pcm_len = samples;
                    self.pcm_pos = 0;
                }
            }
            // Shrink the delay where nobody hears it: drop samples from a quiet frame.
            let want = self.jb.shrink_request();
            if decoded && want > 0 && rms_dbfs(&self.pcm[..self.pcm_len]) < QUIET_DBFS {
                let k = want.min(self.pcm_len.saturating_sub(1));
                self.pcm_pos = k;
                self.jb.consume_shrink(k);
            }
        }
    }
}

enum Action {
    Decode,
    Fec,
    Conceal,
    Stretch,
    Silence,
}

/// The receive pipeline of one client: every sender's stream, mixed.
pub struct RxPipeline {
    cfg: RxConfig,
    peers: BTreeMap<u64, Peer>,
    mixer: Mixer,
    scratch: Vec<f32>,
}

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
        }
    }

    /// Hands over the 504 data bytes of a regular packet from `sender` (the bytes after the
    /// uid). Malformed payloads are counted and ignored.
    pub fn push_packet(&mut self, sender: u64, payload: &[u8], now_ms: u64) {
        if !self.peers.contains_key(&sender) {
            if self.peers.len() >= MAX_PEERS {
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
        let p = match voice::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                peer.malformed += 1;
                tracing::debug!(sender, error = %e, "malformed voice payload");
                return;
            }
        };
        let h = p.header;
        for f in p.frames() {
            let origin = if f.age == 0 {
                FrameOrigin::Primary
            } else if self.cfg.use_redundancy {
                FrameOrigin::Redundant
            } else {
                break;
            };
            let flags = if f.age == 0 { h.flags } else { 0 };
            peer.jb.insert(
                now_ms,
                f.seq,
                f.timestamp,
                h.frame_samples,
                flags,
                f.data,
                origin,
            );
        }
    }

    /// Fills `out` (any length, typically 480 = 10 ms) with the next mixed output samples.
    pub fn pull(&mut self, now_ms: u64, out: &mut [f32]) {
        out.fill(0.0);
        if self.scratch.len() < out.len() {
            self.scratch.resize(out.len(), 0.0);
        }
        let scratch = &mut self.scratch[..out.len()];
        for peer in self.peers.values_mut() {
            peer.render(now_ms, scratch, self.cfg.use_fec);
            Mixer::add(out, scratch, peer.gain);
        }
        self.mixer.limit(out);
    }

    /// Forgets a sender (it left the channel); its queued audio is dropped.
    pub fn remove_peer(&mut self, sender: u64) {
        self.peers.remove(&sender);
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
            .filter(|(_, p)| p.jb.is_playing())
            .map(|(&uid, _)| uid)
    }

    /// Statistics of every sender heard so far, by uid.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|(&uid, p)| {
                let j = p.jb.stats();
                PeerStats {
                    uid,
                    received: j.received,
                    lost: j.lost + j.recovered_redundancy,
                    recovered_redundancy: j.recovered_redundancy,
                    recovered_fec: p.recovered_fec,
                    concealed: p.concealed,
                    late: j.late,
                    duplicate: j.duplicates,
                    stretched: j.stretched,
                    dropped: j.dropped,
                    trimmed_ms: j.trimmed_samples as f32 / 48.0,
                    malformed: p.malformed,
                    jitter_ms: p.jb.jitter_ms(),
                    buffer_ms: p.jb.buffered_ms(),
                    target_ms: p.jb.target_ms(),
                    talking: p.jb.is_playing(),
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
            ..TxConfig::default()
        })
        .unwrap();
        let mut rx = RxPipeline::new(RxConfig::default());
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
    }
}
