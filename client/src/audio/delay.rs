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
//! The target is a high percentile ([`PERCENTILE`], 98 %) of the required delays of the
//! last [`WINDOW_MS`], plus [`SAFETY_MS`]. So the percentile follows the measured loss and
//! jitter on its own: with 10 % random loss, more than 2 % of frames need one frame more and
//! the target holds exactly that frame (the redundant copies are used in time), while the
//! 1 % of double losses do not hold a second frame for everyone; with 1 % loss the target
//! holds nothing extra, and those frames are concealed instead of delaying everything.
//! (Measured on the three speech samples: 95 % lets the target flap between one frame and
//! none at 10 % loss, 99.5 % holds 20 ms more for a few tenths of PESQ.) A spike leaves the window after [`WINDOW_MS`], so the target decays
//! quickly instead of ratcheting up.

/// Share of frames that may arrive after they were needed.
pub const PERCENTILE: f64 = 0.98;
/// How far back the statistics look.
pub const WINDOW_MS: u64 = 3_000;
/// Margin on top of the percentile, for the playout clock's own scheduling noise.
pub const SAFETY_MS: f64 = 1.5;
/// Most samples kept: a 3 s window of 2.5 ms frames (1200); more frames than that in the
/// window (only a hostile sender sends them) push the oldest out early.
pub const MAX_SAMPLES: usize = 1200;
/// Samples needed before the percentile is trusted; until then the target is the largest
/// required delay seen, plus the margin.
pub const MIN_SAMPLES: usize = 10;

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
        }
    }

    /// Forgets everything (a new stream from a restarted sender).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.target_ms = None;
        self.base_ms = None;
    }

    /// Records that a frame played at `now_ms` required `required_ms` of delay, and updates
    /// the target. Bounded work: at most [`MAX_SAMPLES`] values are looked at.
    pub fn record(&mut self, now_ms: u64, required_ms: f64) {
        if !required_ms.is_finite() {
            return;
        }
        while self.len > 0 && now_ms.saturating_sub(self.samples[self.head].0) > WINDOW_MS {
            self.head = (self.head + 1) % MAX_SAMPLES;
            self.len -= 1;
        }
        if self.len == MAX_SAMPLES {
            self.head = (self.head + 1) % MAX_SAMPLES;
            self.len -= 1;
        }
        let at = (self.head + self.len) % MAX_SAMPLES;
        self.samples[at] = (now_ms, required_ms);
        self.len += 1;
        self.update();
    }

    fn update(&mut self) {
        let n = self.len;
        for i in 0..n {
            self.scratch[i] = self.samples[(self.head + i) % MAX_SAMPLES].1;
        }
        let w = &mut self.scratch[..n];
        let q = if n < MIN_SAMPLES {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        } else {
            let k = (((n - 1) as f64) * PERCENTILE).ceil() as usize;
            *w.select_nth_unstable_by(k.min(n - 1), f64::total_cmp).1
        };
        let min = w.iter().copied().fold(f64::INFINITY, f64::min);
        self.jitter_ms = q - min;
        self.base_ms = Some(min);
        self.target_ms = Some(q + SAFETY_MS);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_the_percentile_plus_margin_and_forgets_after_the_window() {
        let mut d = DelayManager::new();
        assert_eq!(d.target_ms(), None);
        // 100 frames at 20 ms: 94 need 40 ms, 6 need 60 (a frame more, from redundancy).
        for i in 0..100u64 {
            d.record(i * 20, if i % 17 == 3 { 60.0 } else { 40.0 });
        }
        assert_eq!(d.target_ms(), Some(60.0 + SAFETY_MS));
        // 1 % needing more do not move it.
        let mut d = DelayManager::new();
        for i in 0..100u64 {
            d.record(i * 20, if i == 3 { 60.0 } else { 40.0 });
        }
        assert_eq!(d.target_ms(), Some(40.0 + SAFETY_MS));
        // A spike is forgotten once it leaves the window.
        d.record(2_000, 200.0);
        for i in 0..10u64 {
            d.record(2_020 + i * 20, 200.0 - i as f64 * 20.0);
        }
        assert!(d.target_ms().unwrap() > 100.0);
        for i in 0..200u64 {
            d.record(2_300 + i * 20, 40.0);
        }
        assert_eq!(d.target_ms(), Some(40.0 + SAFETY_MS));
    }

    #[test]
    fn bounded_whatever_the_rate_and_ignores_nan() {
        let mut d = DelayManager::new();
        for i in 0..10_000u64 {
            d.record(i / 100, 10.0);
        }
        d.record(200, f64::NAN);
        assert_eq!(d.target_ms(), Some(10.0 + SAFETY_MS));
    }
}
