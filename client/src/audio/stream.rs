//! Playout of one sender (NetEQ's decision logic, simplified): frames from the
//! [`JitterBuffer`] are decoded onto a continuous timeline, and the delay between the
//! sender's clock and ours changes only when the arrival statistics ([`DelayManager`]) ask,
//! and then where it is not heard. Sans-IO: the caller owns the clock.
//!
//! The timeline. `next_ts` is the sender timestamp just after the audio decoded so far;
//! the sample about to be played stands at `play_pos = next_ts - (samples not yet played)`,
//! and the delay is `d = now - play_pos / 48` ("receiver ms minus sender ms"). Silence
//! between talk spurts advances `next_ts` like audio does, so `d` carries over from one
//! spurt to the next: a new spurt needs no re-synchronisation, and on a clean link nothing
//! moves after the first spurt.
//!
//! What changes `d`, and where:
//! - *A frame is not there when needed and nothing later is*, while `d` is short of the
//!   target: it is late. Concealment (Opus PLC) is played a step at a time while waiting
//!   (the delay grows exactly by the wait), and the frame is played when it comes. At or
//!   above the target the statistics say it should be here, so it is most likely lost: it
//!   is concealed in its own slot and `d` does not move (its copy, if it comes late, still
//!   teaches the statistics). If the sender has stopped (its end-of-spurt packet was lost),
//!   any waiting is undone when the stream goes idle.
//! - *A frame is missing and a later one is here*: it is lost (every packet that could have
//!   repeated it came without it); it is rebuilt with Opus FEC from the next frame, else
//!   concealed, in its own time slot: `d` does not change.
//! - *`d` above the target* (after a spike or a calmer network): silence between spurts is
//!   shortened and quiet audio loses blocks; voiced audio loses a pitch period (accelerate)
//!   only when the excess is large ([`ACCELERATE_ABOVE_MS`]).
//! - *`d` below the target* (loss began and redundancy needs a frame more): silence and
//!   quiet audio are lengthened; voiced audio gains a pitch period (preemptive expand) only
//!   when far short ([`EXPAND_BELOW_MS`]). Timing moves inside words cost more, to listeners
//!   and to PESQ, than a pause a few ms longer or shorter.
//! - Frames that start before `play_pos` (the pre-roll a voice-activated sender puts in the
//!   first packet of a spurt, see [`super::tx`]) are decoded, which primes the decoder,
//!   and only the part still ahead of `play_pos` is played: onsets come through without
//!   moving the timeline.
//!
//! - *The start.* A stream starts at the [`DelayManager`]'s prior, well above what a clean
//!   link needs, and comes down at its first long pause (or, when the link is rough, once
//!   the statistics know it, in pauses of the talk: never by accelerating a word).
//!
//! Every such change is counted in [`StreamStats::adjustments`]; one pause shortened over
//! several frames counts once. `d` is taken at the sample about to be written, which plays
//! as far into the device's block as the block is already filled.

use audiopus::coder::{Decoder, GenericCtl};
use audiopus::packet::Packet;
use audiopus::{Channels, MutSignals, SampleRate};

use super::delay::DelayManager;
use super::jitter::{FrameOrigin, Inserted, JitterBuffer};
use super::tsm;
use super::tx::rms_dbfs;

/// Longest Opus frame (120 ms at 48 kHz).
pub const MAX_FRAME: usize = 5760;
/// Granularity of concealment while waiting and of quiet cuts and stretches: 5 ms, the
/// playout's block.
pub const STEP: usize = 240;
/// Frames given up on whose late copies are still looked for: a 150 ms spike's worth of
/// 10 ms frames and more (a 2.5 ms-frame stream's spike learns from its last 80 ms).
const GIVEN_UP_KEPT: usize = 32;
/// Decoded audio kept: two of the longest frames plus room for an expansion.
const PCM_CAP: usize = 2 * MAX_FRAME + 1024;
/// Delay above the target before it is reduced, ms. Wider than the noise of the estimate,
/// so a clean link sees no adjustment, and more than one step, so a cut never undershoots.
const SHRINK_ABOVE_MS: f64 = 7.5;
/// Excess delay before voiced speech is accelerated (below it, only quiet audio and silence
/// are cut). Every pitch period removed moves the timing inside a word, which listeners and
/// PESQ notice far more than a pause a few ms shorter; so it is kept for real excess, the
/// aftermath of a spike.
const ACCELERATE_ABOVE_MS: f64 = 40.0;
/// A smaller excess than [`SHRINK_ABOVE_MS`], over one step and half a ms, is removed too:
/// in silence at once (nothing is heard), in quiet audio once it has lasted
/// [`SETTLE_AFTER_MS`] (never by accelerating a word). So after an impairment the delay
/// settles in the same step a clean start would have chosen, while the target's own wobble
/// inside a word moves nothing.
const SETTLE_ABOVE_MS: f64 = 5.5;
/// See [`SETTLE_ABOVE_MS`].
const SETTLE_AFTER_MS: u64 = 1500;
/// Excess removed in silence between spurts, ms: more than half a block plus the
/// estimate's noise. A cut there is not heard, so the delay comes down to the target
/// within a block's rounding, not [`SETTLE_ABOVE_MS`] (the target's own level can sit a
/// few ms above a clean link's from where frames fell against blocks, and the two added up
/// to 6 ms over the clean delay after an impairment).
const TRIM_SILENCE_ABOVE_MS: f64 = 3.0;
/// Shortfall before voiced speech is expanded (below it, the delay grows in quiet audio or
/// by waiting for a late frame).
const EXPAND_BELOW_MS: f64 = 15.0;
/// Delay below the target before it is increased ahead of need in silence or quiet audio,
/// ms (a late frame is waited for below the target at all).
const GROW_BELOW_MS: f64 = 0.5;
/// Quiet audio that makes a pause inside a spurt, samples (60 ms): where the prior's
/// excess may leave when no silence comes.
const PAUSE_SAMPLES: usize = 60 * 48;
/// Quiet audio long enough to be the end of a sentence, samples (200 ms): where a calm
/// first spurt may end the prior (PESQ, like a listener, hears a timing move inside a
/// phrase, not between phrases).
const LONG_PAUSE_SAMPLES: usize = 200 * 48;
/// Without packets for this long while waiting for a frame (or twice the delay, if longer),
/// the sender has stopped: the stream goes idle.
const GIVE_UP_MS: f64 = 120.0;

/// A frame concealed in its own slot because it had not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GivenUp {
    seq: u32,
    /// Where the playout stood when it was first needed.
    pos: i64,
    /// Its place in the timeline: the timestamp a copy of this frame carries.
    ts: i64,
}

/// Limits of the delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    /// Smallest delay to hold above what the statistics ask, ms (0 by default).
    pub min_delay_ms: f64,
    /// Largest delay: audio queued beyond it is dropped, ms.
    pub max_delay_ms: f64,
    /// Decode lost frames with Opus FEC from the next frame.
    pub use_fec: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 0.0,
            max_delay_ms: 400.0,
            use_fec: true,
        }
    }
}

/// Counters of one sender's playout.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamStats {
    /// Frames played from a later packet's redundant copy.
    pub recovered_redundancy: u64,
    /// Lost frames rebuilt with Opus FEC.
    pub recovered_fec: u64,
    /// Lost frames concealed (Opus PLC).
    pub concealed: u64,
    /// Frames waited for (concealment played while the delay grew).
    pub stretched: u64,
    /// Voiced pitch periods removed to lower the delay.
    pub accelerated: u64,
    /// Pitch periods or quiet blocks added to raise the delay ahead of need.
    pub expanded: u64,
    /// Silence or quiet audio removed to lower the delay, samples.
    pub trimmed_samples: u64,
    /// Cuts of silence or quiet audio.
    pub trims: u64,
    /// Times the timeline jumped (a sender's clock jumped, a frame far behind it).
    pub resyncs: u64,
    /// Frames skipped to stay under the largest delay.
    pub dropped: u64,
    /// Every change of the delay: stretches, accelerations, expansions, trims, resyncs and
    /// drops. Zero after the first spurt on a clean link.
    pub adjustments: u64,
}

/// The playout of one sender.
pub struct SenderPlayout {
    cfg: StreamConfig,
    jb: JitterBuffer,
    delay: DelayManager,
    decoder: Decoder,
    generation: u64,
    /// Sender timestamp after the last decoded audio; `None` until the first frame.
    next_ts: Option<i64>,
    pcm: Box<[f32; PCM_CAP]>,
    pcm_len: usize,
    pcm_pos: usize,
    /// While the frame due is missing: where the playout stood when it was first needed,
    /// and the concealment played for it so far (samples).
    waiting: Option<(i64, usize)>,
    /// Where frames start within a block: the last played frame's timestamp modulo
    /// [`STEP`] (a sender's frames are whole multiples of it apart).
    frame_phase: Option<i64>,
    /// The frames last given up on (concealed), with where the playout stood when each
    /// was needed (a ring, `given_up_next` the oldest): a first copy arriving late still
    /// teaches the delay statistics ([`DelayManager::record_late`]).
    given_up: [Option<GivenUp>; GIVEN_UP_KEPT],
    given_up_next: usize,
    /// Since when the delay has been above the target by more than [`SETTLE_ABOVE_MS`].
    excess_since: Option<u64>,
    /// The last thing produced was a decoded frame (a spurt is playing).
    talking: bool,
    /// The last decoded frame ended its spurt.
    ended: bool,
    /// The prior has ended and its excess is still being removed: in silence and pauses
    /// only, never by accelerating a word or cutting at a word's quiet edge.
    gentle: bool,
    /// Quiet audio played since the last loud frame, samples.
    quiet_run: usize,
    /// The last frame was quiet and cut: a cut in this one continues the same move.
    cut_in_quiet: bool,
    /// Samples of the block being rendered already written.
    filled_in_block: usize,
    stats: StreamStats,
}

impl std::fmt::Debug for SenderPlayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderPlayout")
            .field("next_ts", &self.next_ts)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SenderPlayout {
    /// A sender not heard yet.
    pub fn new(cfg: StreamConfig) -> Result<Self, audiopus::Error> {
        Ok(Self {
            cfg,
            jb: JitterBuffer::new(),
            delay: DelayManager::new(),
            decoder: Decoder::new(SampleRate::Hz48000, Channels::Mono)?,
            generation: 0,
            next_ts: None,
            pcm: Box::new([0.0; PCM_CAP]),
            pcm_len: 0,
            pcm_pos: 0,
            waiting: None,
            frame_phase: None,
            given_up: [None; GIVEN_UP_KEPT],
            given_up_next: 0,
            excess_since: None,
            talking: false,
            ended: false,
            gentle: false,
            quiet_run: 0,
            cut_in_quiet: false,
            filled_in_block: 0,
            stats: StreamStats::default(),
        })
    }

    /// The frame store (its counters: received, late, duplicates).
    pub fn jitter(&self) -> &JitterBuffer {
        &self.jb
    }

    /// Playout counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// A talk spurt of this sender is playing.
    pub fn is_talking(&self) -> bool {
        self.talking
    }

    /// Spread of the required delays (jitter plus what loss recovery needs), ms.
    pub fn jitter_ms(&self) -> f32 {
        self.delay.jitter_ms() as f32
    }

    /// Target delay, relative to the fastest frame of the window, ms.
    pub fn target_ms(&self) -> f32 {
        self.delay.jitter_ms() as f32 + super::delay::SAFETY_MS as f32
    }

    /// Audio queued ahead of the playout position, ms.
    pub fn buffered_ms(&self) -> f32 {
        (self.pcm_len - self.pcm_pos) as f32 / 48.0
    }

    /// Stores one frame of a packet (see [`JitterBuffer::insert`]).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        now_ms: u64,
        seq: u32,
        timestamp: u32,
        frame_samples: u16,
        flags: u8,
        data: &[u8],
        origin: FrameOrigin,
    ) {
        if self.starts_next_spurt(seq, timestamp, frame_samples) {
            self.resume_at(seq);
        }
        let r = self
            .jb
            .insert(now_ms, seq, timestamp, frame_samples, flags, data, origin);
        if r == Inserted::Late {
            self.late(now_ms, seq, timestamp, frame_samples, origin);
        }
        if r == Inserted::Restarted {
            // A restarted sender: new clock, new statistics; the timeline re-anchors on
            // its first frame.
            self.delay.clear();
            self.next_ts = None;
            self.waiting = None;
            // The frames given up on were the old stream's: a new stream's frame with the
            // same sequence number must not be taken for one of them.
            self.given_up = [None; GIVEN_UP_KEPT];
            self.given_up_next = 0;
        }
    }

    /// Where in the ring of frames given up on `seq` is, if it is there.
    fn given_up_at(&self, seq: u32) -> Option<(usize, GivenUp)> {
        self.given_up
            .iter()
            .enumerate()
            .find_map(|(i, g)| g.filter(|g| g.seq == seq).map(|g| (i, g)))
    }

    /// How far a copy stamped `timestamp` is after the frame given up on, samples.
    fn offset_from(&self, g: GivenUp, timestamp: u32) -> i64 {
        self.jb.unwrapped(timestamp) - g.ts
    }

    /// Whether a frame the sequence cursor has passed is the sender's next talk spurt:
    /// stamped after the frame given up on with its number (by half a frame or more).
    ///
    /// A spurt's end flag rides in its last packet, which nothing repeats; when that is
    /// lost, the playout conceals the frames it still expects and moves its cursor past
    /// their numbers. The sender numbers only what it sends, so the next spurt uses those
    /// numbers again: its frames are not late, and the pause before them is no delay of
    /// the network (before this, each lost end dropped up to 120 ms of the next onset and
    /// taught the statistics the pause: on 20 % loss the delay went to its 220 ms ceiling
    /// in a third of the runs).
    fn starts_next_spurt(&self, seq: u32, timestamp: u32, frame_samples: u16) -> bool {
        self.jb.is_behind(seq)
            && self.given_up_at(seq).is_some_and(|(_, g)| {
                self.offset_from(g, timestamp) >= i64::from(frame_samples / 2)
            })
    }

    /// Whether a frame with this number and timestamp would be stored: neither stored yet
    /// nor behind the cursor (unless it starts the next spurt). Lets the receive path skip
    /// work on copies that can only be duplicates or late.
    pub fn wants(&self, seq: u32, timestamp: u32, frame_samples: u16) -> bool {
        self.jb.get(seq).is_none()
            && (!self.jb.is_behind(seq) || self.starts_next_spurt(seq, timestamp, frame_samples))
    }

    /// The old spurt is over ([`Self::starts_next_spurt`]): its wait is given back, as when
    /// it goes idle, and the cursor goes back to `seq`. The frames given up on from `seq`
    /// on were the old spurt's; the next spurt's lower numbers (its pre-roll, which comes
    /// after its own frame in the packet) still find theirs.
    fn resume_at(&mut self, seq: u32) {
        for e in &mut self.given_up {
            if e.is_some_and(|e| e.seq.wrapping_sub(seq) as i32 >= 0) {
                *e = None;
            }
        }
        self.stop_waiting();
        self.talking = false;
        self.ended = true;
        self.jb.rewind_to(seq);
    }

    /// A late copy of a frame given up on: what it would have required still counts, or
    /// the target would never learn that the network got slower. Its own packet, late,
    /// says how late the network was for each frame of a spike; a repeat only that the
    /// frame was lost, so (as for frames lost in a burst and repeated in time) only the
    /// frame given up on last learns from it. Pre-roll is never on time, and a copy
    /// stamped elsewhere than the frame (a hostile or jumping clock) says nothing.
    fn late(
        &mut self,
        now_ms: u64,
        seq: u32,
        timestamp: u32,
        frame_samples: u16,
        origin: FrameOrigin,
    ) {
        let Some((i, g)) = self.given_up_at(seq) else {
            return;
        };
        let last = (self.given_up_next + GIVEN_UP_KEPT - 1) % GIVEN_UP_KEPT;
        let same = self.offset_from(g, timestamp).abs() < i64::from(frame_samples / 2);
        let teaches = match origin {
            FrameOrigin::Primary => true,
            FrameOrigin::Redundant => i == last,
            FrameOrigin::PreRoll => false,
        };
        if same && teaches {
            self.given_up[i] = None;
            let required = now_ms as f64 - g.pos as f64 / 48.0;
            self.delay.record_late(now_ms, required, i == last);
        }
    }

    /// Ends a wait for a frame that did not come: the concealment played meanwhile is
    /// given back, so the delay is what it was.
    fn stop_waiting(&mut self) {
        if let Some((_, stretched)) = self.waiting.take() {
            if let Some(t) = self.next_ts.as_mut() {
                *t += stretched as i64;
            }
        }
    }

    fn remaining(&self) -> usize {
        self.pcm_len - self.pcm_pos
    }

    fn play_pos(&self) -> Option<i64> {
        self.next_ts.map(|t| t - self.remaining() as i64)
    }

    /// The delay now ("receiver ms minus sender ms"): of the next sample to be written,
    /// which plays as far into the block being rendered as the block is filled.
    fn delay_now(&self, now_ms: u64) -> Option<f64> {
        let at = now_ms as f64 + self.filled_in_block as f64 / 48.0;
        self.play_pos().map(|p| at - p as f64 / 48.0)
    }

    fn target(&self) -> Option<f64> {
        self.delay
            .target_ms()
            .map(|t| t + self.cfg.min_delay_ms)
            .zip(self.delay.base_ms())
            .map(|(t, base)| t.min(base + self.cfg.max_delay_ms))
    }

    fn adjusted(&mut self) {
        self.stats.adjustments += 1;
    }

    /// Writes the next `out.len()` samples of this sender into `out` (silence when idle).
    pub fn render(&mut self, now_ms: u64, out: &mut [f32]) {
        let block_pos = self.play_pos();
        let mut filled = 0;
        // Each pass either copies audio or produces some; production is bounded (a frame,
        // a step of concealment or silence, or one skipped frame of at most CAPACITY).
        let mut guard = 0;
        while filled < out.len() {
            let left = self.remaining();
            if left > 0 {
                let n = left.min(out.len() - filled);
                out[filled..filled + n].copy_from_slice(&self.pcm[self.pcm_pos..self.pcm_pos + n]);
                self.pcm_pos += n;
                filled += n;
                continue;
            }
            guard += 1;
            if guard > 2 * super::jitter::CAPACITY {
                out[filled..].fill(0.0);
                self.filled_in_block = 0;
                return;
            }
            self.filled_in_block = filled;
            self.produce(now_ms, block_pos, out.len() - filled);
        }
        self.filled_in_block = 0;
    }

    /// Puts `n` samples of silence into the (empty) decoded buffer, advancing the timeline.
    fn silence(&mut self, n: usize) {
        let n = n.min(PCM_CAP);
        self.pcm[..n].fill(0.0);
        self.pcm_len = n;
        self.pcm_pos = 0;
        if let Some(t) = self.next_ts.as_mut() {
            *t += n as i64;
        }
    }

    /// Decodes `packet` (or conceals when `None`) into `pcm[..samples]`; on a decoder error
    /// the frame is concealed, and failing that, silent.
    fn decode(&mut self, seq: Option<u32>, samples: usize, fec: bool) -> usize {
        let samples = samples.min(MAX_FRAME);
        let data = seq.map(|s| self.jb.data(s)).unwrap_or(&[]);
        let pkt = Packet::try_from(data).ok();
        let decoded = MutSignals::try_from(&mut self.pcm[..samples])
            .ok()
            .and_then(|sig| self.decoder.decode_float(pkt, sig, fec).ok());
        let n = match decoded {
            Some(n) => n.min(samples),
            None => {
                let plc = MutSignals::try_from(&mut self.pcm[..samples])
                    .ok()
                    .and_then(|sig| self.decoder.decode_float(None, sig, false).ok());
                match plc {
                    Some(n) => n.min(samples),
                    None => {
                        self.pcm[..samples].fill(0.0);
                        samples
                    }
                }
            }
        };
        // A decoder that returned less than asked: pad, the timeline counts `samples`.
        self.pcm[n..samples].fill(0.0);
        self.pcm_len = samples;
        self.pcm_pos = 0;
        samples
    }

    /// Fills the (empty) decoded buffer with what comes next: called only when everything
    /// decoded so far has been played. `block_pos` is where the playout stood at the start
    /// of the block being rendered; `need` is what the block still needs.
    fn produce(&mut self, now_ms: u64, block_pos: Option<i64>, need: usize) {
        if self.jb.generation() != self.generation {
            // A new stream: the sender reset its encoder, so reset ours.
            self.generation = self.jb.generation();
            let _ = self.decoder.reset_state();
        }
        let seq = self.jb.next_seq();
        let frame = self.jb.get(seq).filter(|_| self.jb.started());
        let Some(next_ts) = self.next_ts else {
            // No timeline yet: anchor it on the first frame, a small margin after its own
            // transit (the statistics take over from there).
            match frame {
                Some(f) => {
                    // Whole steps of silence before the frame, so every frame starts on a
                    // block boundary: a frame is then needed exactly when its first sample
                    // plays, not up to a block before.
                    let transit = f.arrival_ms as f64 - f.ts as f64 / 48.0;
                    // (Both clocks are in the delay: it is "our ms minus the sender's", so
                    // only differences of it mean anything.)
                    let d = transit + self.delay.initial_ms() + self.cfg.min_delay_ms;
                    let lead = ((now_ms as f64 - d) * 48.0).round() as i64 - f.ts;
                    let steps = (-lead).max(0).div_euclid(STEP as i64)
                        + i64::from((-lead).max(0) % STEP as i64 != 0);
                    self.next_ts = Some(f.ts - steps * STEP as i64);
                    self.pcm_len = 0;
                    self.pcm_pos = 0;
                }
                None => self.silence(need),
            }
            return;
        };
        let frame_samples = self.jb.frame_samples();
        if self.drop_to_max(now_ms, seq, frame_samples) {
            return;
        }
        let Some(f) = frame else {
            return self.missing(now_ms, block_pos, need, seq, frame_samples);
        };
        let gap = f.ts - next_ts;
        let max_gap = (self.cfg.max_delay_ms * 48.0) as i64 + frame_samples as i64;
        if gap > max_gap || gap < -max_gap {
            // The sender's clock jumped (or a hostile one did): re-anchor on this frame.
            self.stats.resyncs += 1;
            self.adjusted();
            self.next_ts = Some(f.ts);
            return;
        }
        if gap > 0 {
            // Silence before the frame (a talk spurt starts).
            self.talking = false;
            if !self.adjust_silence(now_ms, block_pos, gap) {
                self.silence((gap as usize).min(need));
            }
            return;
        }
        if gap < 0 && f.origin == FrameOrigin::Primary && self.waiting.is_none() && !self.talking {
            // A spurt's own first packet starts before the playout position: the delay is
            // too small for this sender now. Start the spurt late rather than cut it.
            if -gap >= frame_samples as i64 {
                self.stats.resyncs += 1;
                self.adjusted();
                self.next_ts = Some(f.ts);
                return;
            }
        }
        self.play_frame(now_ms, block_pos, f, gap, frame_samples);
    }

    /// Beyond the largest delay (a long stall released a burst): skip whole frames back to
    /// the target in one step. True when frames were skipped.
    fn drop_to_max(&mut self, now_ms: u64, seq: u32, frame_samples: usize) -> bool {
        let (Some(d), Some(t), Some(base)) =
            (self.delay_now(now_ms), self.target(), self.delay.base_ms())
        else {
            return false;
        };
        if d - base <= self.cfg.max_delay_ms + frame_samples as f64 / 48.0 {
            return false;
        }
        let frames = (((d - t) * 48.0) as usize / frame_samples.max(1))
            .clamp(1, super::jitter::CAPACITY - 1);
        self.stats.dropped += frames as u64;
        self.adjusted();
        self.waiting = None;
        self.jb.advance_to(seq.wrapping_add(frames as u32));
        if let Some(t) = self.next_ts.as_mut() {
            *t += (frames * frame_samples) as i64;
        }
        true
    }

    fn play_frame(
        &mut self,
        now_ms: u64,
        block_pos: Option<i64>,
        f: super::jitter::StoredFrame,
        gap: i64,
        frame_samples: usize,
    ) {
        // What delay this frame required: its first copy's arrival against where the
        // playout stood when it was first needed.
        let need_pos = match self.waiting.take() {
            Some((pos, stretched)) => {
                if stretched > 0 {
                    self.stats.stretched += 1;
                    self.adjusted();
                }
                Some(pos)
            }
            // Needed when the block started, at the place in it where it plays: after a
            // cut earlier in the block, later than the block's own start (or a cut of
            // several frames into one block would count as those frames arriving late).
            None => block_pos.map(|p| p.max(f.ts - self.filled_in_block as i64)),
        };
        // Pre-roll (the audio before a spurt's first packet, sent inside it) was never
        // meant to be on time, nor were repeats from before the playout position (a late
        // restart's): they say nothing about the network.
        let measured = match f.origin {
            FrameOrigin::Primary => true,
            FrameOrigin::Redundant => gap >= 0,
            FrameOrigin::PreRoll => false,
        };
        if let Some(pos) = need_pos.filter(|_| measured) {
            // A frame stamped as arriving after `now` reached us while the playout was
            // catching up after a stall of this process: it was there when we looked, and the
            // stall is no property of the network.
            let arrival = f.arrival_ms.min(now_ms);
            self.delay
                .record(now_ms, arrival as f64 - pos.min(f.ts) as f64 / 48.0);
        }
        if f.origin == FrameOrigin::Redundant && gap >= 0 {
            self.stats.recovered_redundancy += 1;
        }
        let old_next = f.ts - gap;
        self.frame_phase = Some(f.ts.rem_euclid(STEP as i64));
        let n = self.decode(Some(f.seq), frame_samples, false);
        self.jb.advance_to(f.seq.wrapping_add(1));
        self.next_ts = Some(f.ts + n as i64);
        self.ended = f.end;
        if gap < 0 {
            // Starts before the playout position (pre-roll, or a late restart): play only
            // the part still ahead; the decoder has seen all of it. The playout position
            // does not move.
            let skip = ((-gap) as usize).min(n);
            self.pcm_pos = skip;
            if skip == n {
                self.next_ts = Some(old_next);
                return;
            }
        }
        self.talking = true;
        self.adjust_voiced(now_ms);
    }

    /// Whether the delay has been more than [`SETTLE_ABOVE_MS`] over the target for
    /// [`SETTLE_AFTER_MS`] (tracks it from `excess`, the delay now minus the target).
    fn excess_persists(&mut self, now_ms: u64, excess: f64) -> bool {
        if excess <= SETTLE_ABOVE_MS {
            self.excess_since = None;
            return false;
        }
        let since = *self.excess_since.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= SETTLE_AFTER_MS
    }

    /// Accelerate or expand the frame just decoded, if the delay is off target.
    fn adjust_voiced(&mut self, now_ms: u64) {
        let len = self.pcm_len - self.pcm_pos;
        let start = self.pcm_pos;
        let quiet = rms_dbfs(&self.pcm[start..self.pcm_len]) < tsm::QUIET_DBFS;
        // (How long the audio before this frame has been quiet: a pause in the talk.)
        let in_pause = quiet && self.quiet_run >= PAUSE_SAMPLES;
        let long_pause = quiet && self.quiet_run >= LONG_PAUSE_SAMPLES;
        self.quiet_run = if quiet { self.quiet_run + len } else { 0 };
        if self.delay.end_prior(now_ms, long_pause) {
            self.gentle = true;
        }
        let (Some(d), Some(t)) = (self.delay_now(now_ms), self.target()) else {
            return;
        };
        let excess = d - t;
        if excess <= SETTLE_ABOVE_MS {
            self.gentle = false;
        }
        // An excess no pause has removed for a while: take it out in quiet audio too,
        // whatever its size (voiced speech is still accelerated only above
        // ACCELERATE_ABOVE_MS).
        let persistent = self.excess_persists(now_ms, excess);
        if excess > SHRINK_ABOVE_MS || persistent {
            // (Gentle: only inside a pause, never at a word's quiet edge.)
            let removed = if quiet && (in_pause || !self.gentle) {
                // Half a frame at most: whole frames cut let one block play several, and
                // the later ones then read to the statistics as needed early.
                let k =
                    ((((excess - 0.5) * 48.0) as usize) / STEP * STEP).min(len / 2 / STEP * STEP);
                tsm::cut_quiet(&mut self.pcm[start..], len, k)
            } else if excess > ACCELERATE_ABOVE_MS && !self.gentle {
                let k = tsm::accelerate(&mut self.pcm[start..], len);
                if k > 0 {
                    self.stats.accelerated += 1;
                }
                k
            } else {
                0
            };
            // One quiet stretch shortened over several frames is one move of the delay.
            let same_cut = quiet && self.cut_in_quiet;
            self.cut_in_quiet = quiet && removed > 0;
            if removed > 0 {
                if quiet {
                    if !same_cut {
                        self.stats.trims += 1;
                    }
                    self.stats.trimmed_samples += removed as u64;
                }
                self.pcm_len -= removed;
                if !same_cut {
                    self.adjusted();
                }
            }
            return;
        } else if excess < -GROW_BELOW_MS {
            let added = if quiet {
                tsm::stretch_quiet(&mut self.pcm[start..], len, STEP)
            } else if excess < -EXPAND_BELOW_MS {
                tsm::expand(&mut self.pcm[start..], len)
            } else {
                0
            };
            if added > 0 {
                self.stats.expanded += 1;
                self.pcm_len += added;
                self.adjusted();
            }
        }
        self.cut_in_quiet = false;
    }

    /// Conceals the frame due (`seq`, first needed at `pos`) in its own slot, after
    /// `stretched` samples of waiting for it, and moves on. If a copy of it comes later,
    /// what it would have required is still recorded.
    fn give_up(&mut self, seq: u32, pos: i64, stretched: usize, frame_samples: usize) {
        self.waiting = None;
        let ts = self.next_ts.unwrap_or(pos);
        self.given_up[self.given_up_next] = Some(GivenUp { seq, pos, ts });
        self.given_up_next = (self.given_up_next + 1) % GIVEN_UP_KEPT;
        self.stats.concealed += 1;
        if stretched > frame_samples {
            // Waited longer than the frame lasts: the delay did grow.
            self.stats.stretched += 1;
            self.adjusted();
        }
        let rest = frame_samples.saturating_sub(stretched);
        if rest > 0 {
            self.decode(None, rest, false);
        }
        self.jb.advance_to(seq.wrapping_add(1));
        if let Some(t) = self.next_ts.as_mut() {
            *t += frame_samples as i64;
        }
    }

    /// The frame due (`seq`) is not in the store.
    fn missing(
        &mut self,
        now_ms: u64,
        block_pos: Option<i64>,
        need: usize,
        seq: u32,
        frame_samples: usize,
    ) {
        if self.jb.has_later(seq) {
            if !self.talking || self.ended {
                // Between spurts nothing is concealed: skip to what is there.
                self.jb.advance_to(seq.wrapping_add(1));
                return;
            }
            // Lost for good: every later packet that could have repeated it came without it.
            self.waiting = None;
            let next = seq.wrapping_add(1);
            if self.cfg.use_fec && self.jb.get(next).is_some() {
                self.stats.recovered_fec += 1;
                self.decode(Some(next), frame_samples, true);
            } else {
                self.stats.concealed += 1;
                self.decode(None, frame_samples, false);
            }
            self.jb.advance_to(next);
            if let Some(t) = self.next_ts.as_mut() {
                *t += frame_samples as i64;
            }
            return;
        }
        // (The target, not the delay now: the delay grows while waiting.)
        let give_up = GIVE_UP_MS.max(2.0 * self.target_ms() as f64);
        let silent_for = now_ms.saturating_sub(self.jb.last_arrival_ms()) as f64;
        if self.talking && !self.ended && silent_for < give_up {
            let (pos, stretched) = self.waiting.unwrap_or((block_pos.unwrap_or(0), 0));
            // Wait only while the delay is short of the target. At the target the
            // statistics say the frame should be here, so it is most likely lost (a loss
            // the redundancy could not cover in time, or a rare spike): it is concealed in
            // its own slot and the timeline does not move. Growing the delay for it and
            // shrinking it back later would move the timing twice.
            let short = self
                .target()
                .zip(self.delay_now(now_ms))
                .is_some_and(|(t, d)| d < t);
            if !short {
                self.give_up(seq, pos, stretched, frame_samples);
                return;
            }
            // Late while the delay is short of the target: conceal a step and wait; the
            // delay grows by the wait.
            self.decode(None, STEP.min(need.max(STEP)), false);
            self.waiting = Some((pos, stretched + self.pcm_len));
            return;
        }
        // Idle: the spurt ended (or the sender went quiet).
        self.stop_waiting();
        self.talking = false;
        if !self.adjust_silence(now_ms, block_pos, i64::MAX) {
            self.silence(need);
        }
    }

    /// In silence (between spurts, or before the next frame), the cheapest place to move
    /// the delay: nothing is heard. Lowers it by skipping up to `skippable` samples of the
    /// timeline, or raises it by playing silence that does not advance the timeline. True
    /// when it did either (and the decoded buffer holds what to play, if anything).
    ///
    /// The amount also puts frames back on block boundaries. A frame is needed when the
    /// block it starts in is rendered, so one starting `m` samples into a block needs `m`
    /// samples more delay; accelerating or expanding a word (a pitch period, any length)
    /// shifts the frames off the grid, and a cut in whole blocks would keep them there.
    fn adjust_silence(&mut self, now_ms: u64, block_pos: Option<i64>, skippable: i64) -> bool {
        if self.delay.end_prior(now_ms, true) {
            self.gentle = true;
        }
        let (Some(d), Some(t), Some(next_ts)) =
            (self.delay_now(now_ms), self.target(), self.next_ts)
        else {
            return false;
        };
        let step = STEP as i64;
        // How far after a block start frames begin.
        let misaligned = match (self.frame_phase, block_pos) {
            (Some(phase), Some(pos)) => (phase - pos).rem_euclid(step),
            _ => 0,
        };
        let excess = d - t;
        if excess < -GROW_BELOW_MS {
            // Silence played without advancing moves later blocks' starts back by its
            // length: `add` ≡ -misaligned (mod a block) aligns them.
            let want = ((-excess) * 48.0).ceil() as i64;
            let add = want + (-misaligned - want).rem_euclid(step);
            let add = (add.max(1) as usize).min(PCM_CAP);
            self.pcm[..add].fill(0.0);
            self.pcm_len = add;
            self.pcm_pos = 0;
            self.stats.expanded += 1;
            self.adjusted();
            return true;
        }
        // (No waiting for the excess to persist, as in a word: a cut of silence is not
        // heard, and the excess it removes would otherwise wait for the next long pause.)
        if excess > TRIM_SILENCE_ABOVE_MS {
            // A cut moves later blocks' starts forward by its length: `cut` ≡ misaligned.
            let want = ((excess - 0.5) * 48.0) as i64;
            let mut cut: i64 = want - (want - misaligned).rem_euclid(step);
            if cut > skippable {
                cut -= (cut - skippable + step - 1) / step * step;
            }
            if cut > 0 {
                self.next_ts = Some(next_ts + cut);
                self.stats.trims += 1;
                self.stats.trimmed_samples += cut as u64;
                self.adjusted();
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
