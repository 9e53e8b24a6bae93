//! Time-scale modification of decoded speech, so the playout delay can change without
//! cutting words or inserting concealment into them (NetEQ's accelerate and preemptive
//! expand, `time_stretch.cc`): in voiced speech one pitch period is removed or repeated,
//! cross-faded with its neighbour, which the ear does not notice; quiet audio is shortened
//! or lengthened by a block with a short cross-fade. Pure functions on caller buffers.

/// Shortest pitch period looked for: 2.5 ms (400 Hz).
const MIN_PERIOD: usize = 120;
/// Longest pitch period looked for: 12.5 ms (80 Hz).
const MAX_PERIOD: usize = 600;
/// Period search runs on every `DECIMATE`-th sample (12 kHz): a tenth of the work, and
/// speech has its pitch energy far below 6 kHz.
const DECIMATE: usize = 4;
/// Normalised correlation above which a segment counts as periodic (voiced).
pub const VOICED_CORRELATION: f32 = 0.75;
/// Level below which audio counts as quiet (pauses, breath, the tail of a word), dBFS.
pub const QUIET_DBFS: f32 = -45.0;
/// Cross-fade used when quiet audio is cut or lengthened, samples (1 ms).
const QUIET_FADE: usize = 48;

/// A periodic stretch found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// Length, samples.
    pub len: usize,
    /// Normalised correlation of the stretch with the one following it.
    pub correlation: f32,
}

/// The pitch period at the start of `x`: the lag `p` whose segment `x[p..2p]` best matches
/// `x[..p]` (normalised cross-correlation, on a decimated signal, then refined at full
/// rate). Needs `x.len() >= 2 * p`; `None` if `x` is too short for the shortest period.
pub fn find_period(x: &[f32]) -> Option<Period> {
    let max_p = MAX_PERIOD.min(x.len() / 2);
    if max_p < MIN_PERIOD {
        return None;
    }
    let corr = |p: usize, step: usize| -> f32 {
        let (mut xy, mut xx, mut yy) = (0.0f32, 0.0f32, 0.0f32);
        let mut i = 0;
        while i < p {
            let a = x[i];
            let b = x[i + p];
            xy += a * b;
            xx += a * a;
            yy += b * b;
            i += step;
        }
        if xx <= 1e-12 || yy <= 1e-12 {
            0.0
        } else {
            xy / (xx * yy).sqrt()
        }
    };
    // Coarse scan; multiples of the period correlate as well as the period itself, so the
    // shortest lag within a little of the best is taken.
    let mut coarse = [0.0f32; MAX_PERIOD / DECIMATE + 1];
    let mut top = f32::MIN;
    let mut p = MIN_PERIOD;
    while p <= max_p {
        let c = corr(p, DECIMATE);
        coarse[p / DECIMATE] = c;
        top = top.max(c);
        p += DECIMATE;
    }
    let mut best = (MIN_PERIOD, f32::MIN);
    let mut p = MIN_PERIOD;
    while p <= max_p {
        let c = coarse[p / DECIMATE];
        if c >= top - 0.05 {
            // Climb to the top of this peak.
            let mut q = p;
            while q + DECIMATE <= max_p && coarse[(q + DECIMATE) / DECIMATE] > coarse[q / DECIMATE]
            {
                q += DECIMATE;
            }
            best = (q, coarse[q / DECIMATE]);
            break;
        }
        p += DECIMATE;
    }
    let lo = best.0.saturating_sub(DECIMATE).max(MIN_PERIOD);
    let hi = (best.0 + DECIMATE).min(max_p);
    let mut fine = (best.0, f32::MIN);
    for p in lo..=hi {
        let c = corr(p, 1);
        if c > fine.1 {
            fine = (p, c);
        }
    }
    Some(Period {
        len: fine.0,
        correlation: fine.1,
    })
}

/// Cross-fades `from` into `to` (equal lengths) into `out`: raised-cosine weights, so the
/// sum of the two gains is one everywhere.
fn crossfade(from: &[f32], to: &[f32], out: &mut [f32]) {
    let n = out.len();
    for i in 0..n {
        let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / n as f32).cos();
        out[i] = from[i] * (1.0 - w) + to[i] * w;
    }
}

/// Removes one pitch period from voiced audio in `buf[..len]`: the first period is
/// cross-faded into the second. Returns the samples removed (0 if the audio is not periodic
/// enough to do it unnoticed).
pub fn accelerate(buf: &mut [f32], len: usize) -> usize {
    let Some(p) = find_period(&buf[..len]) else {
        return 0;
    };
    if p.correlation < VOICED_CORRELATION {
        return 0;
    }
    let n = p.len;
    let mut mixed = [0.0f32; MAX_PERIOD];
    crossfade(&buf[..n], &buf[n..2 * n], &mut mixed[..n]);
    buf[..n].copy_from_slice(&mixed[..n]);
    buf.copy_within(2 * n..len, n);
    n
}

/// Repeats one pitch period of voiced audio in `buf[..len]`; `buf` must have room for
/// [`MAX_PERIOD`] more samples. Returns the samples added (0 if not periodic enough).
pub fn expand(buf: &mut [f32], len: usize) -> usize {
    let Some(p) = find_period(&buf[..len]) else {
        return 0;
    };
    if p.correlation < VOICED_CORRELATION || buf.len() < len + p.len {
        return 0;
    }
    let n = p.len;
    // Output: x[..n], then x[n..2n] fading into x[..n], then x[n..]: one period more.
    let mut mixed = [0.0f32; MAX_PERIOD];
    crossfade(&buf[n..2 * n], &buf[..n], &mut mixed[..n]);
    buf.copy_within(n..len, 2 * n);
    buf[n..2 * n].copy_from_slice(&mixed[..n]);
    n
}

/// Removes `k` samples from quiet audio `buf[..len]` near its start, with a short
/// cross-fade at the joint. Returns the samples removed (0 if `len` is too short).
pub fn cut_quiet(buf: &mut [f32], len: usize, k: usize) -> usize {
    if k == 0 || len < k + 2 * QUIET_FADE {
        return 0;
    }
    let mut mixed = [0.0f32; QUIET_FADE];
    crossfade(&buf[..QUIET_FADE], &buf[k..k + QUIET_FADE], &mut mixed[..]);
    buf[..QUIET_FADE].copy_from_slice(&mixed);
    buf.copy_within(k + QUIET_FADE..len, QUIET_FADE);
    k
}

/// Lengthens quiet audio `buf[..len]` by `k` samples (a copy of its start, cross-faded back
/// into the original). `buf` must have room. Returns the samples added.
pub fn stretch_quiet(buf: &mut [f32], len: usize, k: usize) -> usize {
    if k == 0 || len < k + QUIET_FADE || buf.len() < len + k {
        return 0;
    }
    // Output: x[..k], then x[..len] again: the first k samples play twice. At the joint the
    // natural continuation x[k..] fades into the repeated start x[0..].
    buf.copy_within(0..len, k);
    let mut mixed = [0.0f32; QUIET_FADE];
    crossfade(
        &buf[2 * k..2 * k + QUIET_FADE],
        &buf[k..k + QUIET_FADE],
        &mut mixed,
    );
    buf[k..k + QUIET_FADE].copy_from_slice(&mixed);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    #[test]
    fn finds_the_pitch_of_a_voiced_signal() {
        // 150 Hz: 320 samples.
        let x = tone(150.0, 960);
        let p = find_period(&x).unwrap();
        assert!((p.len as i64 - 320).abs() <= 1, "{p:?}");
        assert!(p.correlation > 0.99);
        assert!(find_period(&x[..200]).is_none());
    }

    #[test]
    fn accelerate_and_expand_change_length_by_one_period_without_a_step() {
        let x = tone(200.0, 960);
        let mut buf = x.clone();
        buf.resize(960 + MAX_PERIOD, 0.0);
        let removed = accelerate(&mut buf, 960);
        assert!((removed as i64 - 240).abs() <= 1, "{removed}");
        // The result is still a clean tone: no sample jumps more than a tone's slope allows.
        let max_step = 0.3 * 2.0 * std::f32::consts::PI * 200.0 / 48_000.0 * 1.05;
        let out = &buf[..960 - removed];
        assert!(out.windows(2).all(|w| (w[1] - w[0]).abs() <= max_step));

        let mut buf = x.clone();
        buf.resize(960 + MAX_PERIOD, 0.0);
        let added = expand(&mut buf, 960);
        assert!((added as i64 - 240).abs() <= 1, "{added}");
        let out = &buf[..960 + added];
        assert!(out.windows(2).all(|w| (w[1] - w[0]).abs() <= max_step));
    }

    #[test]
    fn noise_is_not_periodic_and_is_left_alone() {
        let mut s = 1u32;
        let mut noise: Vec<f32> = (0..960)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        noise.resize(960 + MAX_PERIOD, 0.0);
        assert_eq!(accelerate(&mut noise, 960), 0);
        assert_eq!(expand(&mut noise, 960), 0);
    }

    #[test]
    fn quiet_cuts_and_stretches_by_exactly_the_request() {
        let mut buf = vec![0.001f32; 960 + 240];
        assert_eq!(cut_quiet(&mut buf, 960, 240), 240);
        assert_eq!(stretch_quiet(&mut buf, 720, 240), 240);
        assert_eq!(cut_quiet(&mut buf, 100, 240), 0);
    }
}
