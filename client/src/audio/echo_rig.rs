//! The echo test rig: a synthetic room between the client's speaker and its microphone.
//!
//! [`RoomResponse::synthetic`] makes, from a seed, the impulse response of a small room:
//! the direct sound after 20–40 ms (speaker to microphone plus the device buffers of a
//! laptop), then a 150–300 ms tail of exponentially decaying noise (the reverberation,
//! 60 dB down at its end). [`RoomConvolver`] plays audio through it as it streams (FFT,
//! uniformly partitioned overlap-save), so the same room serves
//!
//! - the in-process tests and the benchmark: far-end speech through the room, added to
//!   near-end speech, is the microphone signal of the capture chain ([`EchoScene`]);
//! - `kv join --echo-test-seed`: the client's own playback, through the room, is added to
//!   its capture (the end-to-end test).
//!
//! The level: the direct sound at [`DIRECT_GAIN`] (−14 dB) puts far-end speech at the
//! microphone about as loud as the near-end talker (a laptop on its speakers, volume up).

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::SAMPLE_RATE;

/// Gain of the direct sound.
pub const DIRECT_GAIN: f32 = 0.2;
/// Peak gain of the tail relative to the direct sound (its start; it decays from there).
const TAIL_GAIN: f32 = 0.5;
/// Block of the streaming convolution: 10 ms.
pub const BLOCK: usize = 480;

/// A room's impulse response at 48 kHz.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomResponse {
    /// The taps; `taps[direct_delay]` is the direct sound.
    pub taps: Vec<f32>,
    /// Samples before the direct sound.
    pub direct_delay: usize,
    /// Samples of tail after it.
    pub tail: usize,
}

impl RoomResponse {
    /// The room for `seed`: direct sound after 20–40 ms, a 150–300 ms exponential tail.
    pub fn synthetic(seed: u64) -> Self {
        let ms = |m: u32| (SAMPLE_RATE / 1000 * m) as usize;
        let mut rng = StdRng::seed_from_u64(seed);
        let direct_delay = rng.random_range(ms(20)..=ms(40));
        let tail = rng.random_range(ms(150)..=ms(300));
        let mut taps = vec![0.0f32; direct_delay + tail];
        taps[direct_delay] = DIRECT_GAIN;
        // 60 dB of decay over the tail: amplitude e^(-t/tau) with tail/tau = ln(1000).
        let tau = tail as f32 / 1000f32.ln();
        for i in 1..tail {
            let noise: f32 = rng.random_range(-1.0..1.0);
            taps[direct_delay + i] = DIRECT_GAIN * TAIL_GAIN * noise * (-(i as f32) / tau).exp();
        }
        Self {
            taps,
            direct_delay,
            tail,
        }
    }

    /// `x` through the room (as long as `x`; what rings on past its end is cut).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut conv = RoomConvolver::new(&self.taps);
        let mut padded = x.to_vec();
        padded.resize(x.len().div_ceil(BLOCK) * BLOCK, 0.0);
        let mut y = vec![0.0; padded.len()];
        for (i, o) in padded.chunks_exact(BLOCK).zip(y.chunks_exact_mut(BLOCK)) {
            conv.process(i, o);
        }
        y.truncate(x.len());
        y
    }
}

/// Streaming convolution with a fixed response, [`BLOCK`] samples at a time
/// (uniformly partitioned overlap-save: one 960-point FFT per block, whatever the length).
pub struct RoomConvolver {
    fft: Arc<dyn RealToComplex<f32>>,
    ifft: Arc<dyn ComplexToReal<f32>>,
    /// Spectra of the response's partitions.
    parts: Vec<Vec<Complex<f32>>>,
    /// Spectra of the last inputs, newest at `head`.
    history: Vec<Vec<Complex<f32>>>,
    head: usize,
    /// The previous block and the current one (the FFT's input).
    window: Vec<f32>,
    scratch: Vec<f32>,
    acc: Vec<Complex<f32>>,
}

impl std::fmt::Debug for RoomConvolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomConvolver")
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl RoomConvolver {
    /// A convolver with response `taps`.
    pub fn new(taps: &[f32]) -> Self {
        let n = 2 * BLOCK;
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(n);
        let ifft = planner.plan_fft_inverse(n);
        let bins = n / 2 + 1;
        let parts: Vec<Vec<Complex<f32>>> = taps
            .chunks(BLOCK)
            .map(|p| {
                let mut buf = vec![0.0f32; n];
                buf[..p.len()].copy_from_slice(p);
                let mut spec = vec![Complex::default(); bins];
                // Lengths are the plan's own: cannot fail.
                let _ = fft.process(&mut buf, &mut spec);
                spec
            })
            .collect();
        let history = vec![vec![Complex::default(); bins]; parts.len().max(1)];
        Self {
            fft,
            ifft,
            parts,
            history,
            head: 0,
            window: vec![0.0; n],
            scratch: vec![0.0; n],
            acc: vec![Complex::default(); bins],
        }
    }

    /// Convolves the next [`BLOCK`] input samples into `out` (same length).
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) {
        assert_eq!(
            input.len(),
            BLOCK,
            "RoomConvolver takes {BLOCK}-sample blocks"
        );
        assert_eq!(out.len(), BLOCK);
        if self.parts.is_empty() {
            out.fill(0.0);
            return;
        }
        self.window.copy_within(BLOCK.., 0);
        self.window[BLOCK..].copy_from_slice(input);
        self.scratch.copy_from_slice(&self.window);
        self.head = (self.head + self.history.len() - 1) % self.history.len();
        let _ = self
            .fft
            .process(&mut self.scratch, &mut self.history[self.head]);
        self.acc.fill(Complex::default());
        for (k, part) in self.parts.iter().enumerate() {
            let x = &self.history[(self.head + k) % self.history.len()];
            for ((a, h), x) in self.acc.iter_mut().zip(part).zip(x) {
                *a += h * x;
            }
        }
        // The real inverse needs real DC and Nyquist bins (they are, up to rounding).
        self.acc[0].im = 0.0;
        let last = self.acc.len() - 1;
        self.acc[last].im = 0.0;
        let _ = self.ifft.process(&mut self.acc, &mut self.scratch);
        let scale = 1.0 / (2 * BLOCK) as f32;
        for (o, y) in out.iter_mut().zip(&self.scratch[BLOCK..]) {
            *o = y * scale;
        }
    }
}

/// One echo test: what the far end says, what the near end says, and what the
/// microphone hears (the near end plus the far end through the room).
#[derive(Debug, Clone)]
pub struct EchoScene {
    /// The far end's speech as the client plays it (the echo canceller's reference).
    pub far: Vec<f32>,
    /// The near-end talker alone at the microphone.
    pub near: Vec<f32>,
    /// The echo alone at the microphone.
    pub echo: Vec<f32>,
    /// What the microphone picks up: `near + echo`.
    pub mic: Vec<f32>,
}

impl EchoScene {
    /// `far` through `room` at the microphone, with `near` starting `near_at` samples in
    /// (the scene is as long as `far`; `near` is cut to fit).
    pub fn new(far: &[f32], near: &[f32], near_at: usize, room: &RoomResponse) -> Self {
        let len = far.len() / BLOCK * BLOCK;
        let far = far[..len].to_vec();
        let echo = room.apply(&far);
        let mut near_track = vec![0.0f32; len];
        if near_at < len {
            let n = near.len().min(len - near_at);
            near_track[near_at..near_at + n].copy_from_slice(&near[..n]);
        }
        let mic = near_track.iter().zip(&echo).map(|(n, e)| n + e).collect();
        Self {
            far,
            near: near_track,
            echo,
            mic,
        }
    }

    /// The scene with white noise at `dbfs` (mean power) added at the microphone, in
    /// [`near`](Self::near) as well as in [`mic`](Self::mic): a real microphone's noise
    /// floor, part of what the chain must pass through. Seeded, so runs compare.
    pub fn with_mic_noise(mut self, dbfs: f32, seed: u64) -> Self {
        let noise = white_noise(self.mic.len(), dbfs, seed);
        for ((n, m), v) in self.near.iter_mut().zip(self.mic.iter_mut()).zip(noise) {
            *n += v;
            *m += v;
        }
        self
    }
}

/// `len` samples of seeded white noise at `dbfs` (mean power): a room's or a
/// microphone's noise floor.
pub fn white_noise(len: usize, dbfs: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Uniform on [-a, a] has mean power a²/3.
    let a = 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
    (0..len)
        .map(|_| a * rng.random_range(-1.0f32..1.0))
        .collect()
}

/// Mean power of `x` in dB full scale (−120 for silence): levels over whole passages.
pub fn level_dbfs(x: &[f32]) -> f32 {
    if x.is_empty() {
        return -120.0;
    }
    let p = x.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / x.len() as f64;
    (10.0 * p.max(1e-12).log10()) as f32
}

/// Level of the active speech in `x`: the mean power of its 10 ms blocks within 30 dB of
/// the loudest one, dBFS (pauses do not pull it down).
pub fn speech_level_dbfs(x: &[f32]) -> f32 {
    let blocks: Vec<f32> = x.chunks_exact(BLOCK).map(level_dbfs).collect();
    let top = blocks.iter().copied().fold(-120.0f32, f32::max);
    let active: Vec<f32> = blocks
        .iter()
        .copied()
        .filter(|&l| l > top - 30.0 && l > -100.0)
        .map(|l| 10f32.powf(l / 10.0))
        .collect();
    if active.is_empty() {
        return -120.0;
    }
    10.0 * (active.iter().sum::<f32>() / active.len() as f32).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_within_the_spec_and_reproducible() {
        for seed in 0..20 {
            let r = RoomResponse::synthetic(seed);
            assert_eq!(r, RoomResponse::synthetic(seed));
            assert!((960..=1920).contains(&r.direct_delay), "{}", r.direct_delay);
            assert!((7200..=14_400).contains(&r.tail), "{}", r.tail);
            assert!(r.taps[..r.direct_delay].iter().all(|&t| t == 0.0));
            // The tail decays: its last 10 % is at least 40 dB below its first 10 %.
            let t = &r.taps[r.direct_delay + 1..];
            let tenth = t.len() / 10;
            let head = level_dbfs(&t[..tenth]);
            let end = level_dbfs(&t[t.len() - tenth..]);
            assert!(head - end > 40.0, "decay {head} -> {end}");
        }
        assert_ne!(RoomResponse::synthetic(1), RoomResponse::synthetic(2));
    }

    #[test]
    fn mic_noise_is_at_its_level_in_both_tracks() {
        let far = vec![0.0f32; 48_000];
        let scene =
            EchoScene::new(&far, &[], 0, &RoomResponse::synthetic(7)).with_mic_noise(-55.0, 1);
        assert!(
            (level_dbfs(&scene.near) + 55.0).abs() < 0.2,
            "{}",
            level_dbfs(&scene.near)
        );
        assert_eq!(scene.near, scene.mic);
    }

    #[test]
    fn streaming_convolution_matches_the_direct_sum() {
        let r = RoomResponse::synthetic(3);
        let mut rng = StdRng::seed_from_u64(9);
        let x: Vec<f32> = (0..BLOCK * 40)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        let y = r.apply(&x);
        for &i in &[
            0usize,
            500,
            r.direct_delay,
            r.direct_delay + 3000,
            x.len() - 1,
        ] {
            let direct: f32 = (0..=i.min(r.taps.len() - 1))
                .map(|k| r.taps[k] * x[i - k])
                .sum();
            assert!(
                (y[i] - direct).abs() < 1e-4,
                "sample {i}: {} vs {direct}",
                y[i]
            );
        }
    }
}
