//! Mouth-to-ear latency from the outside: where does the input reappear in the output?
//!
//! `kv join --json` prints the wall-clock time of input sample 0 (`capture_started`) and of
//! output sample 0 (`recording_started`). If output sample `j` carries input sample
//! `j - lag`, the delay is `(recording_started - capture_started) + lag / 48 kHz`. The lag
//! is found by cross-correlation: first on 1 ms energy envelopes (robust to what the codec
//! and the denoiser do to the waveform, and cheap over long lag ranges), then refined on
//! the samples themselves within ±2 ms of the coarse answer.

/// Samples per envelope bin (1 ms at 48 kHz).
const BIN: usize = 48;
/// Refinement half-width around the coarse lag, samples.
const REFINE: i64 = 96;

/// The result of aligning a recording against its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Output index minus input index of the same sound, in samples.
    pub lag_samples: i64,
    /// Normalised correlation of the envelopes at that lag (1.0 = identical shape).
    pub score: f32,
}

fn envelope(x: &[f32]) -> Vec<f32> {
    x.chunks(BIN)
        .map(|c| c.iter().map(|s| s.abs()).sum::<f32>() / c.len() as f32)
        .collect()
}

/// Normalised cross-correlation of `a` against `b` shifted by `lag` (b[i + lag] ~ a[i]).
fn ncc(a: &[f32], b: &[f32], lag: i64) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &x) in a.iter().enumerate() {
        let j = i as i64 + lag;
        if j < 0 || j as usize >= b.len() {
            continue;
        }
        let y = b[j as usize];
        ab += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    if aa <= 0.0 || bb <= 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// Finds where `input` reappears in `output`, searching lags `0..=max_lag` samples. `None`
/// when either signal is silent.
pub fn align(input: &[f32], output: &[f32], max_lag: usize) -> Option<Alignment> {
    let ei = envelope(input);
    let eo = envelope(output);
    // Remove the mean so a constant noise floor does not correlate with everything.
    let centre = |v: &[f32]| {
        let m = v.iter().sum::<f32>() / v.len().max(1) as f32;
        v.iter().map(|x| x - m).collect::<Vec<f32>>()
    };
    let (ei, eo) = (centre(&ei), centre(&eo));
    let mut best = (0i64, f32::MIN);
    for lag in 0..=(max_lag / BIN) as i64 {
        let s = ncc(&ei, &eo, lag);
        if s > best.1 {
            best = (lag, s);
        }
    }
    if best.1 <= 0.0 {
        return None;
    }
    let coarse = best.0 * BIN as i64;
    let mut fine = (coarse, f32::MIN);
    for lag in (coarse - REFINE).max(0)..=coarse + REFINE {
        let s = ncc(input, output, lag);
        if s > fine.1 {
            fine = (lag, s);
        }
    }
    // Denoise and Opus keep the waveform well enough for a clear peak; when they do not,
    // the envelope answer is the better one.
    let lag = if fine.1 > 0.3 { fine.0 } else { coarse };
    Some(Alignment {
        lag_samples: lag,
        score: best.1,
    })
}

/// Mouth-to-ear delay in milliseconds from the two time bases and an alignment.
pub fn mouth_to_ear_ms(capture_started_ms: f64, recording_started_ms: f64, a: &Alignment) -> f64 {
    recording_started_ms - capture_started_ms + a.lag_samples as f64 / 48.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chirps(n: usize) -> Vec<f32> {
        // Bursts of tone with gaps: speech-like on/off structure.
        (0..n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let on = ((t * 5.0) as usize % 3) != 2;
                if on {
                    0.4 * (t * 2.0 * std::f32::consts::PI * (300.0 + 200.0 * t)).sin()
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn finds_a_known_delay() {
        let x = chirps(96_000);
        let delay = 2_123;
        let mut y = vec![0.0; delay];
        y.extend(x.iter().map(|s| s * 0.5));
        let a = align(&x, &y, 24_000).unwrap();
        assert_eq!(a.lag_samples, delay as i64);
        assert!(a.score > 0.9);
        assert!((mouth_to_ear_ms(1000.0, 1010.0, &a) - (10.0 + 2123.0 / 48.0)).abs() < 1e-9);
    }

    #[test]
    fn silence_has_no_alignment() {
        assert_eq!(align(&[0.0; 4800], &[0.0; 4800], 1000), None);
    }
}
