//! Mixes several voices into one output with per-voice gain and a limiter, so loud overlaps
//! get quieter instead of clipping (and never wrap around like an integer overflow would).

/// Level above which the limiter's gain starts to act (-1 dBFS).
pub const LIMIT_THRESHOLD: f32 = 0.89;
/// Gain recovery per sample after a peak (reaches ~1 again in about 100 ms at 48 kHz).
const RELEASE_PER_SAMPLE: f32 = 1.0 / 4800.0;

/// Sums sources into an accumulator, then limits.
#[derive(Debug, Clone)]
pub struct Mixer {
    /// Limiter gain (≤ 1), carried across calls so it releases smoothly.
    gain: f32,
}

impl Default for Mixer {
    fn default() -> Self {
        Self::new()
    }
}

impl Mixer {
    /// A mixer at unity gain.
    pub fn new() -> Self {
        Self { gain: 1.0 }
    }

    /// Adds `src * gain` into `acc` (the lengths should match; extra samples are ignored).
    pub fn add(acc: &mut [f32], src: &[f32], gain: f32) {
        for (a, s) in acc.iter_mut().zip(src) {
            *a += s * gain;
        }
    }

    /// Limits `buf` in place to -1..1: an instant-attack, slow-release gain brings peaks down
    /// to [`LIMIT_THRESHOLD`] (no distortion for ordinary overlaps), and a soft clipper
    /// catches what is left, so the output is always finite and within -1..1.
    pub fn limit(&mut self, buf: &mut [f32]) {
        for s in buf.iter_mut() {
            let x = if s.is_finite() { *s } else { 0.0 };
            let peak = x.abs();
            if peak * self.gain > LIMIT_THRESHOLD {
                self.gain = LIMIT_THRESHOLD / peak;
            } else {
                self.gain = (self.gain + RELEASE_PER_SAMPLE).min(1.0);
            }
            *s = soft_clip(x * self.gain);
        }
    }
}

/// Identity below the threshold, then a tanh knee that approaches (never exceeds) 1.
pub fn soft_clip(x: f32) -> f32 {
    let a = x.abs();
    if a <= LIMIT_THRESHOLD {
        return x;
    }
    let room = 1.0 - LIMIT_THRESHOLD;
    let y = LIMIT_THRESHOLD + room * ((a - LIMIT_THRESHOLD) / room).tanh();
    y.min(1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_quiet_sources_sum_exactly() {
        let a = [0.1f32, -0.2, 0.3];
        let b = [0.2f32, 0.1, -0.1];
        let mut acc = [0.0f32; 3];
        Mixer::add(&mut acc, &a, 1.0);
        Mixer::add(&mut acc, &b, 1.0);
        Mixer::new().limit(&mut acc);
        for (x, want) in acc.iter().zip([0.3f32, -0.1, 0.2]) {
            assert!((x - want).abs() < 1e-6, "{x} vs {want}");
        }
    }

    #[test]
    fn gain_scales_a_source() {
        let mut acc = [0.0f32; 2];
        Mixer::add(&mut acc, &[0.4, -0.4], 0.5);
        assert_eq!(acc, [0.2, -0.2]);
    }

    #[test]
    fn loud_overlap_never_wraps_or_exceeds_full_scale() {
        let mut m = Mixer::new();
        // Two full-scale sines in phase: sum reaches 2.0.
        let mut acc: Vec<f32> = (0..4800).map(|i| 2.0 * (i as f32 * 0.05).sin()).collect();
        let orig = acc.clone();
        m.limit(&mut acc);
        for (y, x) in acc.iter().zip(&orig) {
            assert!(y.abs() <= 1.0);
            // Same sign as the input: no wrap-around.
            assert!(y * x >= 0.0);
        }
        let peak = acc.iter().fold(0.0f32, |p, s| p.max(s.abs()));
        assert!(peak > 0.85, "limited, not muted: {peak}");
    }

    #[test]
    fn gain_recovers_after_a_peak_and_nan_is_silenced() {
        let mut m = Mixer::new();
        let mut buf = vec![0.0f32; 9600];
        buf[0] = 3.0;
        buf[1] = f32::NAN;
        buf[9599] = 0.5;
        m.limit(&mut buf);
        assert_eq!(buf[1], 0.0);
        assert!((buf[9599] - 0.5).abs() < 1e-3, "{}", buf[9599]);
    }
}
