//! Objective speech quality of a received signal against what was sent.
//!
//! Measure: **log-spectral distance (LSD) over 20 ms frames after time alignment.**
//! - Alignment: the lag is found by cross-correlation (FFT), so network and buffer delay do not
//!   count as distortion; then each 0.5 s block is re-aligned within ±60 ms, because a jitter
//!   buffer legitimately changes its delay by whole frames during a call.
//! - Why not plain SNR: Opus is a perceptual codec; it changes phase and fine waveform detail
//!   that listeners do not hear, so even a perfect network gives a low, noisy SNR (it is
//!   reported as a secondary figure). LSD compares the spectral envelope per 20 ms frame, on a
//!   dB scale like loudness perception, in 32 mel bands over 100 Hz–8 kHz where speech
//!   intelligibility lives (bands, not DFT bins: the ear hears the envelope). A lost
//!   frame replaced by silence or a poor concealment shows up as a frame with a distance of
//!   tens of dB, so the mean tracks exactly what packet loss does to speech, while a correctly
//!   decoded frame stays at a few dB.
//! - Only *active* frames (reference within 40 dB of its loudest frame) are scored, so leading
//!   and trailing silence does not dilute the result.
//!
//! Lower is better; 0 dB means identical spectra.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Frame length: 20 ms at 48 kHz.
pub const FRAME: usize = 960;
/// Hop between frames (50 % overlap).
pub const HOP: usize = 480;
const BAND_LO_HZ: f32 = 100.0;
const BAND_HI_HZ: f32 = 8000.0;
/// Frames quieter than this below the loudest reference frame are not scored.
const ACTIVE_RANGE_DB: f32 = 40.0;
/// Spectral floor relative to each reference frame's strongest band, so bands far below what
/// is audible next to it do not dominate.
const FLOOR_DB: f32 = 50.0;
/// Mel bands the spectrum is summed into.
pub const BANDS: usize = 32;
/// Block length for piecewise alignment (0.5 s).
pub const BLOCK: usize = 24_000;
/// How far a block's lag may differ from the global lag (60 ms = three 20 ms frames).
pub const LOCAL_LAG: usize = 2880;

/// Result of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityReport {
    /// `degraded[i + lag] ≈ reference[i]`: the delay of the degraded signal in samples.
    pub lag_samples: i64,
    /// Normalized cross-correlation at that lag (1 = same waveform).
    pub correlation: f32,
    /// Mean log-spectral distance over active frames, dB (lower is better).
    pub lsd_db: f32,
    /// 95th percentile of the per-frame distance, dB (shows bad frames the mean hides).
    pub lsd_p95_db: f32,
    /// Aligned signal-to-noise ratio over the reference's length, dB (secondary).
    pub snr_db: f32,
    /// Frames scored.
    pub active_frames: usize,
}

/// Circular cross-correlation `xc[k] = Σ reference[i] · degraded[i + k]` (negative `k` at
/// `n + k`), computed with an FFT of size `n`, plus the product of the signals' norms.
fn cross_correlation(reference: &[f32], degraded: &[f32]) -> (Vec<f64>, f64) {
    let n = (reference.len() + degraded.len())
        .next_power_of_two()
        .max(2);
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| -> Vec<Complex<f64>> {
        let mut buf = fwd.make_input_vec();
        for (b, s) in buf.iter_mut().zip(x) {
            *b = f64::from(*s);
        }
        let mut out = fwd.make_output_vec();
        // Lengths come from the plan, so this cannot fail.
        let _ = fwd.process(&mut buf, &mut out);
        out
    };
    let r = spectrum(reference);
    let d = spectrum(degraded);
    let mut c: Vec<Complex<f64>> = r.iter().zip(&d).map(|(a, b)| a.conj() * b).collect();
    if let Some(first) = c.first_mut() {
        first.im = 0.0;
    }
    if let Some(last) = c.last_mut() {
        last.im = 0.0;
    }
    let mut xc = inv.make_output_vec();
    let _ = inv.process(&mut c, &mut xc);
    // realfft's inverse is unnormalized.
    for v in xc.iter_mut() {
        *v /= n as f64;
    }
    let er: f64 = reference.iter().map(|s| f64::from(*s).powi(2)).sum();
    let ed: f64 = degraded.iter().map(|s| f64::from(*s).powi(2)).sum();
    (xc, (er * ed).sqrt())
}

fn at_lag(xc: &[f64], lag: i64) -> f64 {
    let n = xc.len() as i64;
    xc[lag.rem_euclid(n) as usize]
}

/// Finds the lag in `-max_lag..=max_lag` that best aligns `degraded` to `reference`
/// (`degraded[i + lag] ≈ reference[i]`), with its normalized correlation.
pub fn find_lag(reference: &[f32], degraded: &[f32], max_lag: usize) -> (i64, f32) {
    if reference.is_empty() || degraded.is_empty() {
        return (0, 0.0);
    }
    let (xc, norm) = cross_correlation(reference, degraded);
    let max_lag = max_lag.min(xc.len() / 2 - 1) as i64;
    let mut best = (0i64, f64::MIN);
    for lag in -max_lag..=max_lag {
        let v = at_lag(&xc, lag);
        if v > best.1 {
            best = (lag, v);
        }
    }
    let corr = if norm > 0.0 { best.1 / norm } else { 0.0 };
    (best.0, corr as f32)
}

/// Aligns and scores `degraded` against `reference`, searching lags up to `max_lag` samples.
pub fn compare(reference: &[f32], degraded: &[f32], max_lag: usize) -> QualityReport {
    let (lag, correlation) = find_lag(reference, degraded, max_lag);
    let aligned = align_blocks(reference, degraded, lag);
    let (lsd_db, lsd_p95_db, active_frames) = log_spectral_distance(reference, &aligned);
    let sig: f64 = reference.iter().map(|s| f64::from(*s).powi(2)).sum();
    let err: f64 = reference
        .iter()
        .zip(&aligned)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let snr_db = (10.0 * (sig.max(1e-12) / err.max(1e-12)).log10()) as f32;
    QualityReport {
        lag_samples: lag,
        correlation,
        lsd_db,
        lsd_p95_db,
        snr_db,
        active_frames,
    }
}

/// `degraded` shifted so it lines up with `reference`, block by block: each [`BLOCK`] of the
/// reference gets its own lag within [`LOCAL_LAG`] of the global one. A jitter buffer changes
/// its delay by whole frames during a call (inaudible in speech), and one global lag would
/// score everything after such a change as distorted.
pub fn align_blocks(reference: &[f32], degraded: &[f32], global_lag: i64) -> Vec<f32> {
    let get = |j: i64| -> f32 {
        if j >= 0 && (j as usize) < degraded.len() {
            degraded[j as usize]
        } else {
            0.0
        }
    };
    let mut aligned = Vec::with_capacity(reference.len());
    let mut start = 0usize;
    while start < reference.len() {
        let end = (start + BLOCK).min(reference.len());
        let block = &reference[start..end];
        let energy: f32 = block.iter().map(|s| s * s).sum();
        let mut lag = global_lag;
        if energy > 1e-6 {
            // The degraded window that covers every candidate lag.
            let w0 = start as i64 + global_lag - LOCAL_LAG as i64;
            let window: Vec<f32> = (0..(block.len() + 2 * LOCAL_LAG) as i64)
                .map(|k| get(w0 + k))
                .collect();
            // Lags are measured from the window start: LOCAL_LAG means "same as global".
            let (xc, _) = cross_correlation(block, &window);
            let at_global = at_lag(&xc, LOCAL_LAG as i64);
            let (best, v) = (0..=2 * LOCAL_LAG as i64)
                .map(|l| (l, at_lag(&xc, l)))
                .fold(
                    (LOCAL_LAG as i64, f64::MIN),
                    |b, x| if x.1 > b.1 { x } else { b },
                );
            // Move only for a clearly better match: voiced speech correlates almost as well
            // one pitch period off, and that ambiguity must not count as a delay change.
            if v > 1.2 * at_global.max(0.0) {
                lag = global_lag + best - LOCAL_LAG as i64;
            }
        }
        aligned.extend((start..end).map(|i| get(i as i64 + lag)));
        start = end;
    }
    aligned
}

/// Mean and 95th-percentile log-spectral distance (dB) between two aligned signals over the
/// reference's active 20 ms frames, and how many frames were scored. Spectra are summed into
/// [`BANDS`] mel-spaced bands first: the ear resolves the spectral envelope, not single DFT
/// bins between harmonics, so codec noise in inaudible valleys does not dominate.
pub fn log_spectral_distance(reference: &[f32], aligned: &[f32]) -> (f32, f32, usize) {
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(FRAME);
    let window: Vec<f32> = (0..FRAME)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())
        .collect();
    let bin_hz = 48_000.0 / FRAME as f32;
    let mel = |hz: f32| 2595.0 * (1.0 + hz / 700.0).log10();
    let (m_lo, m_hi) = (mel(BAND_LO_HZ), mel(BAND_HI_HZ));
    // Band index of each bin in range (None outside 100 Hz–8 kHz).
    let band_of: Vec<Option<usize>> = (0..=FRAME / 2)
        .map(|k| {
            let hz = k as f32 * bin_hz;
            (BAND_LO_HZ..BAND_HI_HZ).contains(&hz).then(|| {
                (((mel(hz) - m_lo) / (m_hi - m_lo) * BANDS as f32) as usize).min(BANDS - 1)
            })
        })
        .collect();
    let mut input = fft.make_input_vec();
    let mut out = fft.make_output_vec();
    let mut bands = |x: &[f32]| -> [f32; BANDS] {
        for ((b, s), w) in input.iter_mut().zip(x).zip(&window) {
            *b = s * w;
        }
        let _ = fft.process(&mut input, &mut out);
        let mut e = [0.0f32; BANDS];
        for (c, band) in out.iter().zip(&band_of) {
            if let Some(b) = band {
                e[*b] += c.norm_sqr();
            }
        }
        e
    };
    let n = reference.len().min(aligned.len());
    let mut frames = Vec::new();
    let mut start = 0;
    while start + FRAME <= n {
        let pr = bands(&reference[start..start + FRAME]);
        let pd = bands(&aligned[start..start + FRAME]);
        let energy: f32 = reference[start..start + FRAME].iter().map(|s| s * s).sum();
        frames.push((energy, pr, pd));
        start += HOP;
    }
    let loudest = frames.iter().map(|f| f.0).fold(0.0f32, f32::max);
    if loudest <= 0.0 {
        return (0.0, 0.0, 0);
    }
    let gate = loudest * 10f32.powf(-ACTIVE_RANGE_DB / 10.0);
    let mut dists: Vec<f32> = frames
        .iter()
        .filter(|f| f.0 >= gate)
        .map(|(_, pr, pd)| {
            let peak = pr.iter().copied().fold(0.0f32, f32::max);
            let floor = (peak * 10f32.powf(-FLOOR_DB / 10.0)).max(1e-12);
            let sum: f32 = pr
                .iter()
                .zip(pd)
                .map(|(a, b)| {
                    let d = 10.0 * ((a + floor) / (b + floor)).log10();
                    d * d
                })
                .sum();
            (sum / BANDS as f32).sqrt()
        })
        .collect();
    if dists.is_empty() {
        return (0.0, 0.0, 0);
    }
    let mean = dists.iter().sum::<f32>() / dists.len() as f32;
    dists.sort_unstable_by(f32::total_cmp);
    let p95 = dists[(dists.len() - 1) * 95 / 100];
    (mean, p95, dists.len())
}

/// RMS level in dB full scale (re-exported for tests that check for silence).
pub use super::tx::rms_dbfs;

#[cfg(test)]
mod tests {
    use super::*;

    fn voiced(n: usize, seed: u32) -> Vec<f32> {
        // A few harmonics with a slow envelope, plus a little deterministic noise.
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / 48_000.0;
                let env = (t * 3.0 * std::f32::consts::PI).sin().abs();
                let h: f32 = (1..6)
                    .map(|k| (2.0 * std::f32::consts::PI * 140.0 * k as f32 * t).sin() / k as f32)
                    .sum();
                0.3 * env * h + 0.01 * ((x >> 9) as f32 / 4_194_304.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn identical_signals_score_zero_and_lag_is_found() {
        let r = voiced(48_000, 1);
        let mut d = vec![0.0f32; 1234];
        d.extend_from_slice(&r);
        let q = compare(&r, &d, 4800);
        assert_eq!(q.lag_samples, 1234);
        assert!(q.correlation > 0.99, "{q:?}");
        assert!(q.lsd_db < 0.01, "{q:?}");
        assert!(q.snr_db > 60.0, "{q:?}");
    }

    #[test]
    fn missing_frames_raise_the_distance() {
        let r = voiced(48_000, 2);
        let mut d = r.clone();
        // Silence 10 % of 20 ms frames.
        for f in (0..50).step_by(10) {
            d[f * 960..(f + 1) * 960].fill(0.0);
        }
        let clean = compare(&r, &r, 100);
        let holes = compare(&r, &d, 100);
        // 4 audible holes touch 12 of 99 half-overlapping frames: ~30 dB where fully silent,
        // ~6 dB where half silent.
        assert_eq!(clean.lsd_db, 0.0);
        assert!(holes.lsd_db > 1.5, "{holes:?}");
        assert!(holes.lsd_p95_db > 8.0, "{holes:?}");
    }

    #[test]
    fn silence_gives_no_active_frames() {
        let z = vec![0.0f32; 9600];
        assert_eq!(compare(&z, &z, 100).active_frames, 0);
        assert_eq!(rms_dbfs(&z), -100.0);
    }
}
