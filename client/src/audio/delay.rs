//! The playout delay target of one sender, from arrival statistics (NetEQ's
//! `DelayManager`, simplified). Sans-IO.
//!
//! What is measured is, for every frame played, the delay it *required*: the time its first
//! copy arrived minus the sender-timeline position the playout stood at when it first
//! needed that frame. Both sides are in "receiver ms minus sender ms", so the unknown clock
//! offset between the two machines cancels, and the measure includes everything that
//! decides whether the frame was there in time: network queueing, the sender's scheduling,
//! the 5 ms output grid, and *loss*: a frame whose own packet was lost and which was played
//! from the next packet's redundant copy required one frame more (two in a burst of two).
//!
//! The target is a high percentile ([`PERCENTILE`], 99.5 %) of the required delays of the
//! last [`WINDOW_MS`], plus [`SAFETY_MS`], so it follows the measured loss and jitter on its
//! own: with 10 ms frames and 10 % random loss, 1 % of frames need two frames more (double
//! losses) and 0.1 % three, so the target holds two frames and the redundant copies are
//! used in time; with 20 % loss it holds three; with 1 % loss one, and rarer losses are
//! concealed instead of delaying everything. (Measured, PESQ-WB on the three speech samples,
//! virtual time: 98 % holds one frame less at 10 % loss and conceals the double losses,
//! 3.65 against 3.91.)
//!
//! Two rules keep it still and let it come down:
//! - *Hold.* The level reached is held for [`HOLD_MS`] after the window last asked for it
//!   (the level, held or not, is at most [`MAX_LEVEL_MS`]).
//!   A window's percentile flaps between two levels as rare double losses enter and leave
//!   it, and following it moves the timing twice per flap; a link whose character has not
//!   changed keeps one delay.
//! - *Calm.* A link calm for [`CALM_MS`] ([`CALM_PERCENTILE`] of the frames within
//!   [`CALM_SPREAD_MS`] of the period's fastest) forgets the hold and everything older:
//!   after an impairment stops, or after a lone spike on a clean link, the delay comes
//!   down within seconds.
//!
//! Frames concealed because they were late teach the statistics when their copy comes
//! ([`DelayManager::record_late`]): the last one always, a whole spike's once spikes
//! repeat.
//!
//! And one rule for the start, when nothing is known yet:
//! - *Prior.* A stream starts [`PRIOR_MS`] above its first frame's transit and holds it
//!   until the first pause after a calm start, or until the statistics have seen a whole
//!   window (then wherever the playout is; the playout takes the excess out in pauses
//!   only). Growing the delay costs a timing move inside a word, or concealment; shrinking
//!   it in a pause costs nothing. Measured on virtual time (PESQ-WB, mean of the three
//!   samples), starting at the statistics' own target against starting 60 ms above it:
//!   10 % loss 3.91 → 4.21, 20 % loss 3.86 → 4.05, bursts 3.26 → 3.67, clean 4.24 both.

/// Share of frames that may arrive after they were needed.
pub const PERCENTILE: f64 = 0.995;
/// How far back the statistics look.
pub const WINDOW_MS: u64 = 3_000;
/// Margin on top of the percentile, for the playout clock's own scheduling noise.
pub const SAFETY_MS: f64 = 1.5;
/// Most samples kept: a 3 s window of 2.5 ms frames (1200); more frames than that in the
/// window (only a hostile sender sends them) push the oldest out early.
pub const MAX_SAMPLES: usize = 1200;
/// How long a higher percentile is held after it was last seen. With loss, the window's
/// percentile flaps between two levels of redundancy need (one frame more or two) as rare
/// double losses enter and leave the window; following it would move the timing twice per
/// flap. Holding the highest of the recent past keeps the delay still while the link's
/// character does not change.
pub const HOLD_MS: u64 = 10_000;
/// Highest level, held or not: a 150 ms delay spike on 30 ms of queueing jitter, with a
/// few ms to spare. More is a long stall of the network or of this machine (a listener whose
/// receive thread stalled for 600 ms on a loaded machine; spikes back to back), cheaper
/// concealed than followed: following one to 400 ms took 3 s of accelerated speech to come
/// back from (virtual time, the recovery row).
pub const MAX_LEVEL_MS: f64 = 220.0;
/// Most distinct levels the hold remembers (a step function of time; only a hostile or
/// pathological stream changes it this often, and then the oldest level is forgotten early).
const HOLD_LEVELS: usize = 32;
/// A link calm for this long (nearly every frame within [`CALM_SPREAD_MS`] of the fastest)
/// forgets the hold and everything older: after an impairment stops, the delay comes down in
/// seconds, not after the hold.
pub const CALM_MS: u64 = 2_000;
/// See [`CALM_MS`].
pub const CALM_SPREAD_MS: f64 = 3.0;
/// Share of the calm period's frames that must be within [`CALM_SPREAD_MS`]: loss of even
/// 2 % is not calm, a few frames late behind a stalled thread are.
pub const CALM_PERCENTILE: f64 = 0.98;
/// Frames the calm period must have (a pause is no evidence either way).
const CALM_MIN_SAMPLES: usize = 50;
/// Late copies further apart than this belong to different delay spikes
/// ([`DelayManager::record_late`]).
const SPIKE_GAP_MS: u64 = 50;
/// A link whose statistics already hold this much above the fastest frame (queueing
/// jitter, or loss that the redundancy covers in time) is rough: a delay spike there is
/// taken as the first of more, and all its frames count at once
/// ([`DelayManager::record_late`]). A clean link holds a few ms.
const ROUGH_LEVEL_MS: f64 = 15.0;
/// Samples needed before the percentile is trusted; until then the target is the largest
/// required delay seen, plus the margin.
pub const MIN_SAMPLES: usize = 10;

/// What the target holds above the fastest frame before the statistics know the link
/// (NetEQ starts at 80 ms for the same reason). Growing the delay costs a timing move in a
/// word (or concealment), shrinking it costs nothing in a pause, so a stream starts as if
/// the link were rough and comes down at its first pause when it was not
/// ([`DelayManager::end_prior`]).
pub const PRIOR_MS: f64 = 60.0;
/// Frames the first spurt must have for its calm to end the prior early.
const PRIOR_CALM_SAMPLES: usize = 20;

/// Required delays of the recent past and the target they give.
#[derive(Debug, Clone)]
pub struct DelayManager {
    /// Ring of `(when_ms, required_ms)`, oldest at `head`.
    samples: Box<[(u64, f64); MAX_SAMPLES]>,
    head: usize,
    len: usize,
    scratch: Box<[f64; MAX_SAMPLES]>,
    target_ms: Option<f64>,
    /// The percentile without the margin, ms.
    jitter_ms: f64,
    /// The smallest required delay of the window: the fastest path, ms.
    base_ms: Option<f64>,
    /// Recent levels of the percentile above the base, as `(last seen ms, level)`, levels
    /// strictly decreasing from the front: the front is the highest of the last [`HOLD_MS`].
    hold: [(u64, f64); HOLD_LEVELS],
    hold_len: usize,
    /// [`PRIOR_MS`] is still held; when the first frame was recorded.
    prior_held: bool,
    first_ms: Option<u64>,
    /// The statistics' level (the percentile or what is held, above the base), ms.
    level_ms: f64,
    /// When the last late copy of a frame given up on came, when the spike it belonged to
    /// started, and whether that spike repeated one ([`Self::record_late`]).
    last_late_ms: Option<u64>,
    spike_ms: Option<u64>,
    spikes_repeat: bool,
}

impl Default for DelayManager {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayManager {
    /// No statistics yet.
    pub fn new() -> Self {
        Self {
            samples: Box::new([(0, 0.0); MAX_SAMPLES]),
            head: 0,
            len: 0,
            scratch: Box::new([0.0; MAX_SAMPLES]),
            target_ms: None,
            jitter_ms: 0.0,
            base_ms: None,
            hold: [(0, 0.0); HOLD_LEVELS],
            hold_len: 0,
            prior_held: true,
            first_ms: None,
            level_ms: 0.0,
            last_late_ms: None,
            spike_ms: None,
            spikes_repeat: false,
        }
    }

    /// The delay to start a stream at, above its first frame's transit, ms.
    pub fn initial_ms(&self) -> f64 {
        self.prior_level() + SAFETY_MS
    }

    /// Ends the prior when the statistics have looked at a whole window, or, `at_pause`
    /// (between talk spurts), when everything so far was calm. True when it ended.
    pub fn end_prior(&mut self, now_ms: u64, at_pause: bool) -> bool {
        let (true, Some(first)) = (self.prior_held, self.first_ms) else {
            return false;
        };
        let matured = now_ms.saturating_sub(first) >= WINDOW_MS;
        // (Every sample recorded so far.)
        let calm = at_pause && self.calm_over(now_ms, u64::MAX, PRIOR_CALM_SAMPLES);
        if matured || calm {
            self.prior_held = false;
            self.refresh();
            return true;
        }
        false
    }

    /// Forgets everything (a new stream from a restarted sender).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.target_ms = None;
        self.base_ms = None;
        self.hold_len = 0;
        self.prior_held = true;
        self.first_ms = None;
        self.last_late_ms = None;
        self.spike_ms = None;
        self.spikes_repeat = false;
    }

    /// Records that a frame played at `now_ms` required `required_ms` of delay, and updates
    /// the target. Bounded work: at most [`MAX_SAMPLES`] values are looked at.
    pub fn record(&mut self, now_ms: u64, required_ms: f64) {
        if !required_ms.is_finite() {
            return;
        }
        self.first_ms.get_or_insert(now_ms);
        self.forget_older_than(now_ms, WINDOW_MS);
        if self.len == MAX_SAMPLES {
            self.drop_oldest();
        }
        let at = (self.head + self.len) % MAX_SAMPLES;
        self.samples[at] = (now_ms, required_ms);
        self.len += 1;
        if self.is_calm(now_ms) {
            // The impairment is over: forget it now.
            self.hold_len = 0;
            // (The sample just recorded is younger than that, so one always stays.)
            self.forget_older_than(now_ms, CALM_MS);
        }
        self.update(now_ms);
    }

    fn drop_oldest(&mut self) {
        self.head = (self.head + 1) % MAX_SAMPLES;
        self.len -= 1;
    }

    /// Records what a frame given up on (concealed) required, now that its first copy came:
    /// `latest` when it is the frame given up on last.
    ///
    /// The latest always counts: that is how the target learns that the network got
    /// slower, frame by frame. The others, the rest of a delay spike's frames (which
    /// required more, the first of them the most), count once spikes repeat, from the
    /// second spike within [`HOLD_MS`] (NetEQ's peak detector waits for two peaks too),
    /// or at once on a link that is rough already (its level at least
    /// [`ROUGH_LEVEL_MS`]: a queue that jitters is one that spikes). A lone spike on a
    /// clean link is over when it is known, and growing the delay for it would move the
    /// timing twice for nothing (learning from every first spike moved it 41 times after
    /// one on a clean link); one a second is covered. Measured, PESQ-WB on virtual time,
    /// mean of the three samples, 0-30 ms jitter + 1 % 150 ms spikes: 2.66 learning from
    /// the last frame of each spike, 3.48 from the second spike on, 3.84 from the first
    /// on the rough link.
    pub fn record_late(&mut self, now_ms: u64, required_ms: f64, latest: bool) {
        // A spike's frames come together when the queue drains; a later gap starts another.
        let new_spike = self
            .last_late_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > SPIKE_GAP_MS);
        if new_spike {
            self.spikes_repeat = self
                .spike_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= HOLD_MS);
            self.spike_ms = Some(now_ms);
        }
        self.last_late_ms = Some(now_ms);
        if latest || self.spikes_repeat || self.level_ms >= ROUGH_LEVEL_MS {
            self.record(now_ms, required_ms);
        }
    }

    /// Drops the samples recorded more than `ms` before `now_ms`.
    fn forget_older_than(&mut self, now_ms: u64, ms: u64) {
        while self.len > 0 && now_ms.saturating_sub(self.samples[self.head].0) > ms {
            self.drop_oldest();
        }
    }

    /// Whether something is held that the last [`CALM_MS`] no longer needs: enough frames,
    /// nearly all of them ([`CALM_PERCENTILE`]: a stalled thread's few late frames do not
    /// count) within [`CALM_SPREAD_MS`] of the period's fastest. Bounded work, as
    /// [`Self::update`].
    fn is_calm(&mut self, now_ms: u64) -> bool {
        if self.hold_len == 0 || self.hold[0].1 <= CALM_SPREAD_MS {
            return false;
        }
        self.calm_over(now_ms, CALM_MS, CALM_MIN_SAMPLES)
    }

    /// Whether at least `min_samples` frames were recorded in the last `ms` and
    /// [`CALM_PERCENTILE`] of them were within [`CALM_SPREAD_MS`] of the fastest of them.
    ///
    /// (The fastest of the period, not of the window: where a frame starts in the 5 ms
    /// output block moves what it requires by up to a block, and a pitch period taken out
    /// while the delay came down after a spike leaves every later frame at another place
    /// in its block than the window's fastest had. Measured against the window, a clean
    /// link then read as 3.8 ms slower than the fastest frame, never calm, and the spike's
    /// level stayed held for the whole [`HOLD_MS`]. A path that became slower and stays
    /// steady is calm too: the delay follows it down to what it needs.)
    fn calm_over(&mut self, now_ms: u64, ms: u64, min_samples: usize) -> bool {
        let mut m = 0;
        let mut fastest = f64::INFINITY;
        for i in 0..self.len {
            let (t, v) = self.samples[(self.head + i) % MAX_SAMPLES];
            if now_ms.saturating_sub(t) <= ms {
                self.scratch[m] = v;
                fastest = fastest.min(v);
                m += 1;
            }
        }
        m >= min_samples
            && percentile(&mut self.scratch[..m], CALM_PERCENTILE) <= fastest + CALM_SPREAD_MS
    }

    /// Notes the window's level, forgets levels older than the hold, and returns the highest
    /// level held.
    fn hold_level(&mut self, now_ms: u64, level: f64) -> f64 {
        while self.hold_len > 0 && self.hold[self.hold_len - 1].1 <= level {
            self.hold_len -= 1;
        }
        if self.hold_len == HOLD_LEVELS {
            self.hold.copy_within(1.., 0);
            self.hold_len -= 1;
        }
        self.hold[self.hold_len] = (now_ms, level);
        self.hold_len += 1;
        let expired = self.hold[..self.hold_len]
            .iter()
            .take_while(|(t, _)| now_ms.saturating_sub(*t) > HOLD_MS)
            .count();
        self.hold.copy_within(expired..self.hold_len, 0);
        self.hold_len -= expired;
        self.hold[0].1
    }

    fn update(&mut self, now_ms: u64) {
        let n = self.len;
        for i in 0..n {
            self.scratch[i] = self.samples[(self.head + i) % MAX_SAMPLES].1;
        }
        let w = &mut self.scratch[..n];
        let q = if n < MIN_SAMPLES {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        } else {
            percentile(w, PERCENTILE)
        };
        let min = w.iter().copied().fold(f64::INFINITY, f64::min);
        let raw = q - min;
        let level = self.hold_level(now_ms, raw.min(MAX_LEVEL_MS));
        self.level_ms = level;
        self.base_ms = Some(min);
        self.refresh();
    }

    /// What the prior holds above the base now, ms.
    fn prior_level(&self) -> f64 {
        if self.prior_held {
            PRIOR_MS
        } else {
            0.0
        }
    }

    /// The target from the statistics' level and the prior, if still held.
    fn refresh(&mut self) {
        let Some(base) = self.base_ms else {
            return;
        };
        self.jitter_ms = self.level_ms.max(self.prior_level());
        self.target_ms = Some(base + self.jitter_ms + SAFETY_MS);
    }

    /// The delay to hold ("receiver ms minus sender ms"), or `None` before anything was
    /// measured.
    pub fn target_ms(&self) -> Option<f64> {
        self.target_ms
    }

    /// The smallest required delay of the window (the fastest path, including the two
    /// machines' clock offset), or `None` before anything was measured. Limits on the
    /// delay are relative to it.
    pub fn base_ms(&self) -> Option<f64> {
        self.base_ms
    }

    /// Spread of the required delays (percentile minus minimum), ms: the jitter plus what
    /// loss recovery needs.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }
}

/// The `p` quantile of `values` (not empty; reordered), the nearest rank above: O(n).
fn percentile(values: &mut [f64], p: f64) -> f64 {
    let n = values.len();
    let k = (((n - 1) as f64) * p).ceil() as usize;
    *values
        .select_nth_unstable_by(k.min(n - 1), f64::total_cmp)
        .1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of 10 ms from `from_ms` for `ms`, each requiring `need(i)`.
    fn feed(d: &mut DelayManager, from_ms: u64, ms: u64, need: impl Fn(u64) -> f64) {
        for i in 0..ms / 10 {
            d.record(from_ms + i * 10, need(i));
        }
    }

    /// A manager whose prior has ended (what the statistics alone give).
    fn without_prior() -> DelayManager {
        let mut d = DelayManager::new();
        d.prior_held = false;
        d
    }

    /// A 150 ms spike at `at_ms` on a clean link: 15 frames given up on, whose copies come
    /// together when the queue drains, the first of them having required the most.
    fn spike(d: &mut DelayManager, at_ms: u64) {
        for k in 0..15u64 {
            d.record_late(at_ms + 150 + k / 4, 160.0 - 10.0 * k as f64, k == 14);
        }
    }

    #[test]
    fn a_lone_spike_teaches_its_last_frame_and_a_repeated_one_every_frame() {
        let mut d = without_prior();
        feed(&mut d, 0, 2_000, |_| 10.0);
        spike(&mut d, 2_000);
        // Only the frame given up on last (20 ms late) counted.
        let lone = d.target_ms().unwrap() - d.base_ms().unwrap();
        assert!(lone < 25.0, "{lone}");
        feed(&mut d, 2_200, 1_000, |_| 10.0);
        spike(&mut d, 3_200);
        // The second spike within the hold: its first frame's 150 ms counts.
        let repeated = d.target_ms().unwrap() - d.base_ms().unwrap();
        assert!(repeated >= 150.0, "{repeated}");
        // A spike more than the hold after the last is lone again.
        let mut d = without_prior();
        feed(&mut d, 0, 2_000, |_| 10.0);
        spike(&mut d, 2_000);
        feed(&mut d, 2_200, 12_000, |_| 10.0);
        spike(&mut d, 14_200);
        let later = d.target_ms().unwrap() - d.base_ms().unwrap();
        assert!(later < 25.0, "{later}");
    }

    #[test]
    fn on_a_rough_link_the_first_spike_teaches_every_frame() {
        // 0-30 ms of queueing jitter: the level is 30 ms before any spike.
        let mut d = without_prior();
        feed(&mut d, 0, 2_000, |i| 10.0 + (i * 7 % 31) as f64);
        assert!(d.jitter_ms() >= ROUGH_LEVEL_MS, "{d:?}");
        spike(&mut d, 2_000);
        let level = d.target_ms().unwrap() - d.base_ms().unwrap();
        assert!(level >= 140.0, "{level}");
    }

    #[test]
    fn the_level_stops_at_its_ceiling() {
        // Back-to-back spikes asking for 400 ms are concealed beyond MAX_LEVEL_MS.
        let mut d = without_prior();
        feed(&mut d, 0, 2_000, |i| if i % 10 == 0 { 410.0 } else { 10.0 });
        let level = d.target_ms().unwrap() - d.base_ms().unwrap();
        assert!((level - MAX_LEVEL_MS - SAFETY_MS).abs() < 0.01, "{level}");
    }

    #[test]
    fn the_prior_holds_until_a_calm_pause_or_a_whole_window() {
        let mut d = DelayManager::new();
        assert_eq!(d.initial_ms(), PRIOR_MS + SAFETY_MS);
        // A calm first spurt: the prior holds inside it and ends at the first pause.
        feed(&mut d, 0, 1_000, |_| 40.0);
        assert_eq!(d.target_ms(), Some(40.0 + PRIOR_MS + SAFETY_MS));
        assert!(!d.end_prior(1_000, false));
        assert!(d.end_prior(1_000, true));
        assert_eq!(d.target_ms(), Some(40.0 + SAFETY_MS));
        // A rough first spurt: the prior holds through pauses until the statistics have
        // seen a whole window, wherever that falls.
        let mut d = DelayManager::new();
        feed(&mut d, 0, 1_000, |i| if i % 3 == 0 { 50.0 } else { 40.0 });
        assert!(!d.end_prior(1_000, true));
        feed(&mut d, 1_000, WINDOW_MS, |i| {
            if i % 3 == 0 {
                50.0
            } else {
                40.0
            }
        });
        assert!(d.end_prior(WINDOW_MS + 1_000, false));
        assert_eq!(d.target_ms(), Some(50.0 + SAFETY_MS));
        // A new stream starts from the prior again.
        d.clear();
        feed(&mut d, 10_000, 100, |_| 40.0);
        assert_eq!(d.target_ms(), Some(40.0 + PRIOR_MS + SAFETY_MS));
    }

    #[test]
    fn target_is_the_percentile_plus_margin() {
        let mut d = without_prior();
        assert_eq!(d.target_ms(), None);
        // 3 s of 10 ms frames needing 40 ms, 2 % of them a frame more (from redundancy).
        feed(&mut d, 0, 3_000, |i| if i % 50 == 7 { 50.0 } else { 40.0 });
        assert_eq!(d.target_ms(), Some(50.0 + SAFETY_MS));
        assert_eq!(d.base_ms(), Some(40.0));
        // One frame in 300 needing more does not move it.
        let mut d = without_prior();
        feed(&mut d, 0, 3_000, |i| if i == 7 { 50.0 } else { 40.0 });
        assert_eq!(d.target_ms(), Some(40.0 + SAFETY_MS));
    }

    #[test]
    fn a_level_is_held_while_the_link_stays_rough_then_forgotten() {
        let mut d = without_prior();
        // Loss: frames need one frame more often and two frames more in a short stretch.
        feed(&mut d, 0, 3_000, |i| match i % 20 {
            0 => 50.0,
            _ if (100..110).contains(&i) => 60.0,
            _ => 40.0,
        });
        assert_eq!(d.target_ms(), Some(60.0 + SAFETY_MS));
        // The double losses left the window long ago; the single ones go on: held.
        feed(&mut d, 3_000, HOLD_MS - 2_000, |i| {
            if i % 20 == 0 {
                50.0
            } else {
                40.0
            }
        });
        assert_eq!(d.target_ms(), Some(60.0 + SAFETY_MS));
        // ... until the hold runs out (the double losses left the window at 4.1 s).
        feed(&mut d, HOLD_MS + 4_200, 1_000, |i| {
            if i % 20 == 0 {
                50.0
            } else {
                40.0
            }
        });
        assert_eq!(d.target_ms(), Some(50.0 + SAFETY_MS));
    }

    #[test]
    fn a_calm_link_forgets_at_once() {
        let mut d = without_prior();
        // A spike of 150 ms.
        feed(&mut d, 0, 1_000, |_| 40.0);
        feed(&mut d, 1_000, 150, |i| 190.0 - i as f64 * 10.0);
        feed(&mut d, 1_150, CALM_MS - 100, |_| 40.0);
        assert!(d.target_ms().unwrap() > 100.0, "{d:?}");
        // Calm for CALM_MS: back to the clean target, long before the hold would end.
        feed(&mut d, 1_050 + CALM_MS, 200, |_| 40.0);
        assert_eq!(d.target_ms(), Some(40.0 + SAFETY_MS));
    }

    #[test]
    fn calm_is_judged_against_the_calm_periods_own_fastest_frame() {
        // After a spike the playout came down by accelerating, and every frame now starts
        // 3.8 ms later in its output block than the window's fastest did: a clean link
        // that reads 3.8 ms slower is calm all the same.
        let mut d = without_prior();
        feed(&mut d, 0, 1_000, |_| 10.0);
        feed(&mut d, 1_000, 150, |i| 160.0 - i as f64 * 10.0);
        feed(&mut d, 1_150, CALM_MS + 100, |_| 13.8);
        assert!(
            (d.target_ms().unwrap() - (13.8 + SAFETY_MS)).abs() < 0.01,
            "{d:?}"
        );
    }

    #[test]
    fn bounded_whatever_the_rate_and_ignores_nan() {
        let mut d = without_prior();
        for i in 0..10_000u64 {
            d.record(i / 100, 10.0);
        }
        d.record(200, f64::NAN);
        assert_eq!(d.target_ms(), Some(10.0 + SAFETY_MS));
    }
}
