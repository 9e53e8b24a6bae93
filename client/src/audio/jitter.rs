//! Adaptive jitter buffer for one sender: frames in (any order, duplicated, late), one frame
//! per `pop` out, in sequence, with what to do about missing ones. Sans-IO: every call takes
//! `now_ms`, so tests run on virtual time.
//!
//! How the delay adapts:
//! - *Target.* Each primary frame's transit (`arrival - timestamp`) goes into a window of the
//!   last [`TRANSIT_WINDOW`] frames; the jitter is the 95th percentile minus the minimum. The
//!   target delay is that jitter plus [`SAFETY_MS`], plus one frame while packets are being
//!   lost (so the next packet, which carries the lost frame again, is there in time), clamped to
//!   the floor and `max_delay_ms`. Before anything is measured it is half a frame.
//! - *Floor.* By default the target never drops below half of the sender's frame (its duration
//!   is in every voice payload header), see [`JitterConfig::min_delay_ms`].
//! - *Start.* A talk spurt starts playing at its first frame's expected arrival plus the target.
//! - *Grow.* When the frame due has not arrived and no later one has either, `pop` says
//!   [`Playout::Stretch`] (conceal, keep waiting): the delay grows by one frame, exactly when the
//!   network needs it.
//! - *Shrink, slowly.* Over each [`SHRINK_WINDOW_MS`] the smallest margin (time a frame waited
//!   before it was played) is tracked; if even the tightest frame waited longer than needed,
//!   the excess (at most one frame per window) is requested as a *trim*: a silence gap in the
//!   buffer is shortened, or the player drops that many samples from a quiet decoded frame
//!   ([`JitterBuffer::shrink_request`] / [`JitterBuffer::consume_shrink`]). Trimming by samples
//!   rather than whole frames lets the delay settle within a few ms of what is needed, and
//!   trimming only silence keeps it inaudible.

/// Frames a buffer can hold; bounds memory and how far ahead a packet may be.
pub const CAPACITY: usize = 64;
/// Transit samples the jitter estimate looks at (about 2.5 s of 20 ms frames).
pub const TRANSIT_WINDOW: usize = 128;
/// Margin kept on top of the measured jitter, for scheduling noise of the playout clock.
pub const SAFETY_MS: f32 = 2.0;
/// Smallest trim worth doing (one Opus granule, 2.5 ms).
pub const MIN_TRIM_SAMPLES: usize = 120;
/// Length of one shrink decision window.
pub const SHRINK_WINDOW_MS: u64 = 1000;
/// For how long after a loss the target keeps one extra frame.
pub const LOSS_MEMORY_MS: u64 = 10_000;
/// With nothing arriving for this long (or twice the target delay plus a frame, if longer)
/// and no end-of-spurt flag seen, the stream is idle: concealment stops, and the next packet
/// starts a fresh stream (re-synchronising after a long stall).
pub const IDLE_AFTER_MS: u64 = 120;

/// Delay limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest target delay (on top of the fastest transit seen). `None` (the default): half
    /// of the sender's frame, as its packets say. The output pulls audio in blocks, so a frame
    /// can be asked for up to a block before its first sample plays; a tighter target makes
    /// the buffer stretch by a whole frame soon after the start, which costs more than it
    /// saved (`kv bench`, 20 ms frames: 60.3 ms mouth-to-ear with 2 stretches at no floor,
    /// 55.5 ms with none at half a frame; 10 ms frames: 35.4 ms either way). `Some(ms)`:
    /// exactly this floor, whatever the frame size (`Some(0)` to explore the trade-off).
    pub min_delay_ms: Option<u32>,
    /// Largest target delay; frames queued beyond it are dropped.
    pub max_delay_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: None,
            max_delay_ms: 400,
        }
    }
}

/// Where a frame in the buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// Its own packet.
    Primary,
    /// A repeat inside a later packet (its own packet was lost or is late).
    Redundant,
}

/// What the player should do for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Nothing to play: no stream, or still waiting for the start delay.
    Idle,
    /// Decode and play this frame.
    Frame {
        /// The Opus frame.
        data: &'a [u8],
        /// Whether it came from its own packet or a later one's redundancy.
        origin: FrameOrigin,
        /// Its duration in samples.
        samples: usize,
    },
    /// The frame due is lost (a later one is here). Recover it with Opus FEC from `next` when
    /// present (the frame right after it), else conceal.
    Lost {
        /// The following frame, if it is in the buffer.
        next: Option<&'a [u8]>,
        /// Duration of the lost frame.
        samples: usize,
    },
    /// Nothing has arrived for the frame due: conceal one frame and keep waiting for it (the
    /// buffer delay grows by one frame).
    Stretch {
        /// Duration to conceal.
        samples: usize,
    },
    /// Silence between two talk spurts that are both in the buffer.
    Gap {
        /// Duration of silence to play.
        samples: usize,
    },
}

/// Counters since the buffer was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Primary packets accepted.
    pub received: u64,
    /// Packets that arrived twice.
    pub duplicates: u64,
    /// Packets that arrived after their frame was played or given up.
    pub late: u64,
    /// Frames played from a later packet's redundant copy.
    pub recovered_redundancy: u64,
    /// Frames reported [`Playout::Lost`].
    pub lost: u64,
    /// Frames concealed while waiting ([`Playout::Stretch`]).
    pub stretched: u64,
    /// Frames dropped to stay under `max_delay_ms`.
    pub dropped: u64,
    /// Samples trimmed (from silence gaps or quiet frames) to shrink the delay.
    pub trimmed_samples: u64,
    /// Times the stream restarted (sender restarted, sequence jumped).
    pub resets: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    /// Waiting until `start_ms` before the first pop plays.
    Buffering {
        start_ms: u64,
    },
    Playing,
}

#[derive(Debug, Clone)]
struct Slot {
    full: bool,
    seq: u32,
    ts: i64,
    arrival_ms: u64,
    origin: FrameOrigin,
    data: Vec<u8>,
}

/// The per-sender adaptive jitter buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    state: State,
    /// Sequence number of the frame due.
    next_seq: u32,
    /// Timestamp (unwrapped, samples) where playout stands.
    cursor_ts: i64,
    frame_samples: usize,
    /// Last (wrapped, unwrapped) timestamp, for unwrapping.
    ts_ref: Option<(u32, i64)>,
    /// Highest unwrapped timestamp end received in the current stream.
    high_ts: i64,
    transits: [f64; TRANSIT_WINDOW],
    transit_len: usize,
    transit_pos: usize,
    jitter_ms: f32,
    target_ms: f32,
    last_loss_ms: Option<u64>,
    last_accept_ms: u64,
    end_seq: Option<u32>,
    window_start_ms: u64,
    window_min_margin: f32,
    /// Samples the delay should shrink by (0 = none).
    shrink_samples: usize,
    generation: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An idle buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        let slot = Slot {
            full: false,
            seq: 0,
            ts: 0,
            arrival_ms: 0,
            origin: FrameOrigin::Primary,
            data: Vec::new(),
        };
        Self {
            cfg,
            slots: vec![slot; CAPACITY],
            state: State::Idle,
            next_seq: 0,
            cursor_ts: 0,
            frame_samples: 960,
            ts_ref: None,
            high_ts: 0,
            transits: [0.0; TRANSIT_WINDOW],
            transit_len: 0,
            transit_pos: 0,
            jitter_ms: 0.0,
            target_ms: 10.0,
            last_loss_ms: None,
            last_accept_ms: 0,
            end_seq: None,
            window_start_ms: 0,
            window_min_margin: f32::INFINITY,
            shrink_samples: 0,
            generation: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Measured jitter (95th percentile transit minus minimum), ms.
    pub fn jitter_ms(&self) -> f32 {
        self.jitter_ms
    }

    /// Current target delay, ms.
    pub fn target_ms(&self) -> f32 {
        self.target_ms
    }

    /// Audio queued ahead of the playout position, ms (0 when idle).
    pub fn buffered_ms(&self) -> f32 {
        match self.state {
            State::Idle => 0.0,
            _ => ((self.high_ts - self.cursor_ts).max(0) as f32) / 48.0,
        }
    }

    /// True while a stream is being played (a talk spurt is on).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// Increments each time a new stream starts; the decoder resets when it changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn frame_ms(&self) -> f32 {
        self.frame_samples as f32 / 48.0
    }

    /// The smallest target: the configured floor, else half of the sender's frame (never
    /// above `max_delay_ms`).
    fn floor_ms(&self) -> f32 {
        let floor = match self.cfg.min_delay_ms {
            Some(ms) => ms as f32,
            None => self.frame_ms() / 2.0,
        };
        floor.min(self.cfg.max_delay_ms as f32)
    }

    /// `want` within the floor and `max_delay_ms`.
    fn clamp_target(&self, want: f32) -> f32 {
        want.clamp(self.floor_ms(), self.cfg.max_delay_ms as f32)
    }

    fn unwrap_ts(&mut self, ts: u32, update: bool) -> i64 {
        match self.ts_ref {
            None => {
                let ext = i64::from(ts);
                self.ts_ref = Some((ts, ext));
                ext
            }
            Some((r, rext)) => {
                let ext = rext + i64::from(ts.wrapping_sub(r) as i32);
                if update && ext > rext {
                    self.ts_ref = Some((ts, ext));
                }
                ext
            }
        }
    }

    fn slot(&self, seq: u32) -> Option<&Slot> {
        let s = &self.slots[seq as usize % CAPACITY];
        (s.full && s.seq == seq).then_some(s)
    }

    fn clear_slots(&mut self) {
        for s in &mut self.slots {
            s.full = false;
        }
    }

    /// Adds one frame. `flags` are the payload's flags (only the current frame's matter:
    /// pass 0 for redundant copies).
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
        if data.is_empty() {
            return;
        }
        let primary = origin == FrameOrigin::Primary;
        let ts = self.unwrap_ts(timestamp, primary);
        match self.state {
            State::Idle => {
                if !primary {
                    // A stream starts from its own packets; a repeat alone says little.
                    return;
                }
                self.start_stream(now_ms, seq, ts, frame_samples);
            }
            State::Buffering { .. } => {
                let d = seq.wrapping_sub(self.next_seq) as i32;
                if d < 0 {
                    // An earlier frame of the same spurt (reordered, or a repeat of a lost
                    // first packet) moves the start back; anything else is stale.
                    let contiguous = -d < CAPACITY as i32
                        && ts == self.cursor_ts + i64::from(d) * i64::from(frame_samples);
                    if !contiguous {
                        if primary {
                            self.stats.late += 1;
                        }
                        return;
                    }
                    self.next_seq = seq;
                    self.cursor_ts = ts;
                } else if d >= CAPACITY as i32 {
                    if primary {
                        self.stats.resets += 1;
                        self.start_stream(now_ms, seq, ts, frame_samples);
                    } else {
                        return;
                    }
                }
            }
            State::Playing => {
                let d = seq.wrapping_sub(self.next_seq) as i32;
                if d < 0 {
                    if primary {
                        self.stats.late += 1;
                    }
                    return;
                }
                if d >= CAPACITY as i32 {
                    if !primary {
                        return;
                    }
                    self.stats.resets += 1;
                    self.start_stream(now_ms, seq, ts, frame_samples);
                }
            }
        }
        let idx = seq as usize % CAPACITY;
        let slot = &mut self.slots[idx];
        if slot.full && slot.seq == seq {
            if primary {
                if slot.origin == FrameOrigin::Primary {
                    self.stats.duplicates += 1;
                    return;
                }
                // The repeat came first; the data is identical, just note the packet came.
                slot.origin = FrameOrigin::Primary;
                slot.arrival_ms = now_ms;
                self.accept_primary(now_ms, seq, ts, flags);
            }
            return;
        }
        slot.full = true;
        slot.seq = seq;
        slot.ts = ts;
        slot.arrival_ms = now_ms;
        slot.origin = origin;
        slot.data.clear();
        slot.data.extend_from_slice(data);
        self.frame_samples = usize::from(frame_samples);
        self.high_ts = self.high_ts.max(ts + i64::from(frame_samples));
        if primary {
            self.accept_primary(now_ms, seq, ts, flags);
        }
    }

    fn start_stream(&mut self, now_ms: u64, seq: u32, ts: i64, frame_samples: u16) {
        self.clear_slots();
        self.frame_samples = usize::from(frame_samples);
        self.next_seq = seq;
        self.cursor_ts = ts;
        self.high_ts = ts;
        self.end_seq = None;
        // Play when this frame would have arrived at the fastest transit seen, plus the
        // target; without history, one target after it actually arrived.
        let due = match self.min_transit() {
            Some(min) if (now_ms as f64 - ts as f64 / 48.0 - min).abs() < 5_000.0 => {
                ts as f64 / 48.0 + min
            }
            _ => {
                self.transit_len = 0;
                self.transit_pos = 0;
                now_ms as f64
            }
        };
        // The sender's frame size may have changed, and with it the floor.
        self.update_target(now_ms);
        let start = (due + f64::from(self.target_ms)).max(0.0) as u64;
        self.state = State::Buffering { start_ms: start };
        self.window_start_ms = now_ms;
        self.window_min_margin = f32::INFINITY;
        self.shrink_samples = 0;
        self.generation += 1;
    }

    fn min_transit(&self) -> Option<f64> {
        self.transits[..self.transit_len]
            .iter()
            .copied()
            .reduce(f64::min)
    }

    fn accept_primary(&mut self, now_ms: u64, seq: u32, ts: i64, flags: u8) {
        self.stats.received += 1;
        self.last_accept_ms = now_ms;
        if flags & kv_proto::voice::FLAG_SPURT_END != 0 {
            self.end_seq = Some(seq);
        }
        let transit = now_ms as f64 - ts as f64 / 48.0;
        self.transits[self.transit_pos] = transit;
        self.transit_pos = (self.transit_pos + 1) % TRANSIT_WINDOW;
        self.transit_len = (self.transit_len + 1).min(TRANSIT_WINDOW);
        self.update_target(now_ms);
    }

    fn update_target(&mut self, now_ms: u64) {
        let frame_ms = self.frame_ms();
        if self.transit_len < 4 {
            // Nothing measured yet: half a frame (or the configured floor, if higher). A late
            // frame only costs one stretch, after which the delay has grown to what the
            // network needs.
            self.target_ms = self.clamp_target(frame_ms / 2.0);
            return;
        }
        let mut w = [0.0f64; TRANSIT_WINDOW];
        let w = &mut w[..self.transit_len];
        w.copy_from_slice(&self.transits[..self.transit_len]);
        w.sort_unstable_by(f64::total_cmp);
        let p95 = w[(w.len() - 1) * 95 / 100];
        self.jitter_ms = (p95 - w[0]) as f32;
        let lossy = self
            .last_loss_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < LOSS_MEMORY_MS);
        let want = self.jitter_ms + SAFETY_MS + if lossy { frame_ms } else { 0.0 };
        self.target_ms = self.clamp_target(want);
    }

    fn note_loss(&mut self, now_ms: u64) {
        self.last_loss_ms = Some(now_ms);
        self.update_target(now_ms);
    }

    /// Takes the next frame's worth of playout. Call it each time the player needs the next
    /// frame (every `samples` of output while a stream plays).
    pub fn pop(&mut self, now_ms: u64) -> Playout<'_> {
        match self.state {
            State::Idle => return Playout::Idle,
            State::Buffering { start_ms } => {
                if now_ms < start_ms {
                    return Playout::Idle;
                }
                self.state = State::Playing;
                self.window_start_ms = now_ms;
            }
            State::Playing => {}
        }
        let n = self.frame_samples;
        self.check_window(now_ms);

        // Keep the queue under the maximum delay (e.g. after a long stall released a burst).
        while self.buffered_ms() > self.cfg.max_delay_ms as f32 + self.frame_ms() {
            if self.slot(self.next_seq).is_some() {
                self.stats.dropped += 1;
            }
            self.advance(n);
        }

        if let Some(slot) = self.slot(self.next_seq) {
            let mut gap = slot.ts - self.cursor_ts;
            if gap > 0 && self.shrink_samples > 0 {
                // Silence between spurts: the cheapest place to shrink the delay.
                let cut = gap.min(self.shrink_samples as i64);
                self.consume_shrink(cut as usize);
                self.cursor_ts += cut;
                gap -= cut;
            }
            if gap >= (n / 2) as i64 {
                let g = gap.min(n as i64);
                self.cursor_ts += g;
                return Playout::Gap {
                    samples: g as usize,
                };
            }
            return self.play_cursor(now_ms);
        }

        // The frame due is missing. Is anything later here?
        let later =
            (1..CAPACITY as u32).any(|j| self.slot(self.next_seq.wrapping_add(j)).is_some());
        if later {
            self.stats.lost += 1;
            self.note_loss(now_ms);
            self.advance(n);
            let next = self.slot(self.next_seq).map(|s| &s.data[..]);
            return Playout::Lost { next, samples: n };
        }
        let ended = self
            .end_seq
            .is_some_and(|e| self.next_seq.wrapping_sub(e.wrapping_add(1)) as i32 >= 0);
        let idle_after = IDLE_AFTER_MS.max((2.0 * self.target_ms + self.frame_ms()) as u64);
        if ended || now_ms.saturating_sub(self.last_accept_ms) >= idle_after {
            self.state = State::Idle;
            return Playout::Idle;
        }
        self.stats.stretched += 1;
        Playout::Stretch { samples: n }
    }

    /// Samples the delay should shrink by; the player drops up to this many from quiet
    /// decoded audio and reports them with [`Self::consume_shrink`].
    pub fn shrink_request(&self) -> usize {
        self.shrink_samples
    }

    /// Records that `samples` of the shrink request were dropped.
    pub fn consume_shrink(&mut self, samples: usize) {
        let k = samples.min(self.shrink_samples);
        self.shrink_samples -= k;
        self.stats.trimmed_samples += k as u64;
    }

    fn advance(&mut self, n: usize) {
        let idx = self.next_seq as usize % CAPACITY;
        if self.slots[idx].seq == self.next_seq {
            self.slots[idx].full = false;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        self.cursor_ts += n as i64;
    }

    /// Plays the frame at the cursor (which is present).
    fn play_cursor(&mut self, now_ms: u64) -> Playout<'_> {
        let idx = self.next_seq as usize % CAPACITY;
        let (ts, arrival, origin) = {
            let s = &self.slots[idx];
            (s.ts, s.arrival_ms, s.origin)
        };
        if origin == FrameOrigin::Redundant {
            self.stats.recovered_redundancy += 1;
            self.note_loss(now_ms);
        }
        let margin = now_ms.saturating_sub(arrival) as f32;
        self.window_min_margin = self.window_min_margin.min(margin);
        self.slots[idx].full = false;
        self.next_seq = self.next_seq.wrapping_add(1);
        let samples = self.frame_samples;
        self.cursor_ts = ts + samples as i64;
        let s = &self.slots[idx];
        Playout::Frame {
            data: &s.data,
            origin,
            samples,
        }
    }

    fn check_window(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) < SHRINK_WINDOW_MS {
            return;
        }
        // Slack needed beyond the jitter: the safety margin, plus a frame while lossy.
        let needed = (self.target_ms - self.jitter_ms).max(SAFETY_MS);
        if self.window_min_margin.is_finite() {
            let excess_ms = (self.window_min_margin - needed).min(self.frame_ms());
            let samples =
                (excess_ms.max(0.0) * 48.0) as usize / MIN_TRIM_SAMPLES * MIN_TRIM_SAMPLES;
            // A new request replaces an unfinished one: it was measured with it in effect.
            self.shrink_samples = samples;
        }
        self.window_start_ms = now_ms;
        self.window_min_margin = f32::INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_proto::voice::{FLAG_SPURT_END, FLAG_SPURT_START};

    const N: u16 = 960;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::default())
    }

    /// A buffer without the half-frame floor, to watch the target follow the jitter alone.
    fn jb_unfloored() -> JitterBuffer {
        JitterBuffer::new(JitterConfig {
            min_delay_ms: Some(0),
            ..JitterConfig::default()
        })
    }

    /// Inserts primary frame `seq` (timestamp seq * 960, payload [seq as u8]).
    fn put(b: &mut JitterBuffer, now: u64, seq: u32) {
        put_flags(b, now, seq, 0);
    }

    fn put_flags(b: &mut JitterBuffer, now: u64, seq: u32, flags: u8) {
        b.insert(
            now,
            seq,
            seq.wrapping_mul(u32::from(N)),
            N,
            flags,
            &[seq as u8],
            FrameOrigin::Primary,
        );
    }

    /// What a pop played, as a short string, for readable assertions.
    fn pop(b: &mut JitterBuffer, now: u64) -> String {
        match b.pop(now) {
            Playout::Idle => "idle".into(),
            Playout::Frame { data, origin, .. } => match origin {
                FrameOrigin::Primary => format!("{}", data[0]),
                FrameOrigin::Redundant => format!("r{}", data[0]),
            },
            Playout::Lost { next, .. } => match next {
                Some(d) => format!("lost>{}", d[0]),
                None => "lost".into(),
            },
            Playout::Stretch { .. } => "stretch".into(),
            Playout::Gap { samples } => format!("gap{samples}"),
        }
    }

    #[test]
    fn waits_half_a_frame_then_plays_in_order_despite_reordering() {
        let mut b = jb();
        put(&mut b, 0, 0);
        assert_eq!(
            pop(&mut b, 5),
            "idle",
            "starts half a frame after the first arrival"
        );
        put(&mut b, 21, 2);
        put(&mut b, 22, 1);
        assert_eq!(pop(&mut b, 10), "0");
        assert_eq!(pop(&mut b, 30), "1");
        assert_eq!(pop(&mut b, 50), "2");
        assert_eq!(b.stats().received, 3);
        assert_eq!(b.stats().lost, 0);
    }

    #[test]
    fn duplicates_and_late_packets_are_counted_not_played() {
        let mut b = jb();
        put(&mut b, 0, 0);
        put(&mut b, 1, 0);
        assert_eq!(b.stats().duplicates, 1);
        put(&mut b, 20, 1);
        assert_eq!(pop(&mut b, 20), "0");
        assert_eq!(pop(&mut b, 40), "1");
        put(&mut b, 41, 0); // played already
        assert_eq!(b.stats().late, 1);
        put(&mut b, 45, 2);
        assert_eq!(pop(&mut b, 60), "2");
    }

    #[test]
    fn loss_is_reported_with_the_next_frame_for_fec_then_redundancy_recovers() {
        let mut b = jb();
        put(&mut b, 0, 0);
        // 1 is lost; 2 arrives.
        put(&mut b, 40, 2);
        assert_eq!(pop(&mut b, 20), "0");
        assert_eq!(pop(&mut b, 40), "lost>2");
        assert_eq!(pop(&mut b, 60), "2");
        assert_eq!(b.stats().lost, 1);
        // 4 is lost but its copy rides in packet 5.
        put(&mut b, 60, 3);
        b.insert(61, 4, 4 * 960, N, 0, &[4], FrameOrigin::Redundant);
        put(&mut b, 61, 5);
        assert_eq!(pop(&mut b, 80), "3");
        assert_eq!(pop(&mut b, 100), "r4");
        assert_eq!(pop(&mut b, 120), "5");
        assert_eq!(b.stats().recovered_redundancy, 1);
        // A primary arriving after its copy was stored is not a duplicate.
        b.insert(121, 7, 7 * 960, N, 0, &[7], FrameOrigin::Redundant);
        put(&mut b, 122, 7);
        assert_eq!(b.stats().duplicates, 0);
    }

    #[test]
    fn underrun_stretches_then_spurt_end_goes_idle_without_concealment() {
        let mut b = jb();
        put_flags(&mut b, 0, 0, FLAG_SPURT_START);
        assert_eq!(pop(&mut b, 20), "0");
        // 1 is late: conceal and wait for it (delay grows).
        assert_eq!(pop(&mut b, 40), "stretch");
        put(&mut b, 45, 1);
        assert_eq!(pop(&mut b, 60), "1");
        assert_eq!(b.stats().stretched, 1);
        put_flags(&mut b, 60, 2, FLAG_SPURT_END);
        assert_eq!(pop(&mut b, 80), "2");
        assert!(b.is_playing());
        assert_eq!(pop(&mut b, 100), "idle");
        assert!(!b.is_playing());
        assert_eq!(b.stats().stretched, 1);
    }

    #[test]
    fn silence_inside_the_buffer_is_kept_and_stream_idles_without_packets() {
        let mut b = jb();
        put(&mut b, 0, 0);
        // Next spurt starts 2 frames of silence later (seq 1, timestamp 3 frames).
        b.insert(
            5,
            1,
            3 * 960,
            N,
            FLAG_SPURT_START,
            &[1],
            FrameOrigin::Primary,
        );
        assert_eq!(pop(&mut b, 20), "0");
        assert_eq!(pop(&mut b, 40), "gap960");
        assert_eq!(pop(&mut b, 60), "gap960");
        assert_eq!(pop(&mut b, 80), "1");
        // Nothing more: stretch until the idle timeout.
        assert_eq!(pop(&mut b, 100), "stretch");
        assert_eq!(pop(&mut b, 5 + IDLE_AFTER_MS), "idle");
        // A restarted sender (sequence from 0 again) is heard again.
        put(&mut b, 1000, 0);
        assert_eq!(pop(&mut b, 1100), "0");
    }

    /// Feeds `secs` of 20 ms frames whose network delay is `delay(seq)` ms and plays them like
    /// the receive pipeline does: 10 ms of output every 10 ms of virtual time, popping a frame
    /// whenever the decoded queue runs dry, and honouring trim requests (as if every frame were
    /// quiet). Returns the frames played.
    fn run(b: &mut JitterBuffer, first: u32, secs: u32, delay: impl Fn(u32) -> u64) -> u32 {
        let frames = secs * 50;
        let mut arrivals: Vec<(u64, u32)> = (first..first + frames)
            .map(|s| (u64::from(s) * 20 + delay(s), s))
            .collect();
        arrivals.sort();
        let mut next = 0;
        let mut played = 0;
        let start = u64::from(first) * 20;
        let mut now = start;
        let mut queued = 0usize;
        while now < start + u64::from(secs) * 1000 {
            while next < arrivals.len() && arrivals[next].0 <= now {
                put(b, arrivals[next].0, arrivals[next].1);
                next += 1;
            }
            let mut need = 480;
            while need > 0 {
                if queued == 0 {
                    queued = match b.pop(now) {
                        Playout::Idle => break,
                        Playout::Frame { samples, .. } => {
                            played += 1;
                            let k = b.shrink_request().min(samples - 1);
                            b.consume_shrink(k);
                            samples - k
                        }
                        Playout::Lost { samples, .. }
                        | Playout::Stretch { samples }
                        | Playout::Gap { samples } => samples,
                    };
                }
                let take = queued.min(need);
                queued -= take;
                need -= take;
            }
            now += 10;
        }
        played
    }

    #[test]
    fn adapts_up_to_jitter_and_back_down_when_it_calms() {
        let mut b = jb_unfloored();
        // Calm network: target stays near the 2 ms safety margin.
        run(&mut b, 0, 3, |_| 5);
        assert!(b.target_ms() < 5.0, "calm target {}", b.target_ms());
        // 0–60 ms of jitter (pseudo-random): target grows to cover it.
        let jit = |s: u32| 5 + u64::from(s.wrapping_mul(2_654_435_761) >> 26) % 61;
        run(&mut b, 150, 5, jit);
        let high = b.target_ms();
        assert!(high > 45.0, "jittery target {high}");
        let st = b.stats();
        // After the first second of adapting, nothing should need stretching.
        let before = st.stretched;
        run(&mut b, 400, 3, jit);
        assert!(
            b.stats().stretched - before <= 2,
            "stretched {} after adapting",
            b.stats().stretched - before
        );
        let buffered_high = b.buffered_ms();
        // Calm again: the window forgets the jitter, and the delay is trimmed back.
        let trimmed = b.stats().trimmed_samples;
        // (12 s: the extra frame for recovery is kept for 10 s after the last loss.)
        run(&mut b, 550, 12, |_| 5);
        assert!(b.target_ms() < 5.0, "calm again target {}", b.target_ms());
        assert!(b.stats().trimmed_samples > trimmed, "shrank by trimming");
        assert!(
            b.buffered_ms() < buffered_high.max(30.0),
            "buffer {} -> {}",
            buffered_high,
            b.buffered_ms()
        );
    }

    #[test]
    fn losses_add_one_frame_of_target_for_recovery() {
        let mut b = jb_unfloored();
        run(&mut b, 0, 2, |_| 5);
        let calm = b.target_ms();
        put(&mut b, 2000, 100);
        put(&mut b, 2040, 102);
        for t in 0..5 {
            let _ = b.pop(2100 + t * 20);
        }
        assert_eq!(b.stats().lost, 1);
        assert!(
            b.target_ms() >= calm + 19.0,
            "{} vs {}",
            b.target_ms(),
            calm
        );
    }

    #[test]
    fn far_ahead_sequence_restarts_the_stream_and_buffer_is_bounded() {
        let mut b = jb();
        put(&mut b, 0, 0);
        assert_eq!(pop(&mut b, 20), "0");
        put(&mut b, 20, 1_000_000);
        assert_eq!(b.stats().resets, 1);
        assert_eq!(pop(&mut b, 60), "64"); // 1_000_000 as u8
                                           // Sequence numbers wrap.
        let mut b = jb();
        put(&mut b, 0, u32::MAX);
        b.insert(20, 0, 0, N, 0, &[0], FrameOrigin::Primary);
        assert_eq!(pop(&mut b, 20), "255");
        assert_eq!(pop(&mut b, 40), "0");
    }

    #[test]
    fn burst_beyond_max_delay_is_dropped_down_to_the_limit() {
        let mut b = JitterBuffer::new(JitterConfig {
            min_delay_ms: None,
            max_delay_ms: 100,
        });
        put(&mut b, 0, 0);
        assert_eq!(pop(&mut b, 10), "0");
        // A stall releases 20 frames (400 ms) at once.
        for s in 1..=20 {
            put(&mut b, 400, s);
        }
        let _ = pop(&mut b, 400);
        assert!(b.buffered_ms() <= 120.0, "{}", b.buffered_ms());
        assert!(b.stats().dropped >= 14, "{:?}", b.stats());
    }

    /// Inserts primary frame `seq` of `n`-sample frames.
    fn put_sized(b: &mut JitterBuffer, now: u64, seq: u32, n: u16) {
        b.insert(
            now,
            seq,
            seq * u32::from(n),
            n,
            0,
            &[seq as u8],
            FrameOrigin::Primary,
        );
    }

    #[test]
    fn target_never_drops_below_half_the_senders_frame() {
        // Calm network, 20 ms frames: the jitter alone would allow ~2 ms.
        let mut b = jb();
        run(&mut b, 0, 3, |_| 5);
        assert_eq!(b.jitter_ms(), 0.0);
        assert_eq!(b.target_ms(), 10.0, "half of 20 ms");
        assert_eq!(b.stats().stretched, 0);

        // The floor follows the sender's frame size: 10 ms frames (480 samples), 5 ms.
        let mut b = jb();
        for seq in 0..100u32 {
            let now = u64::from(seq) * 10 + 5;
            put_sized(&mut b, now, seq, 480);
            let _ = b.pop(now);
        }
        assert_eq!(b.target_ms(), 5.0, "half of 10 ms");

        // A stream restarting with larger frames starts with the larger floor.
        put_sized(&mut b, 10_000, 1_000_000, 1920);
        assert_eq!(b.target_ms(), 20.0, "half of 40 ms");

        // An explicit floor replaces the half frame, even below it.
        let mut b = JitterBuffer::new(JitterConfig {
            min_delay_ms: Some(3),
            ..JitterConfig::default()
        });
        run(&mut b, 0, 3, |_| 5);
        assert_eq!(b.target_ms(), 3.0);
        // And the floor never exceeds the maximum delay.
        let mut b = JitterBuffer::new(JitterConfig {
            min_delay_ms: None,
            max_delay_ms: 4,
        });
        run(&mut b, 0, 1, |_| 5);
        assert_eq!(b.target_ms(), 4.0);
    }
}
