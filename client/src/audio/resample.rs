//! Sample-rate conversion to and from 48 kHz with rubato's FFT resampler (band-limited, so no
//! aliasing), for WAV files and devices that do not run at 48 kHz.

use rubato::{FftFixedIn, Resampler};

use super::AudioError;

/// Input frames per resampler call: 10 ms at the input rate keeps device latency small.
fn chunk_for(rate: u32) -> usize {
    (rate as usize / 100).max(16)
}

/// A streaming mono resampler: push any number of samples, get what is ready.
pub struct MonoResampler {
    inner: FftFixedIn<f32>,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
}

impl std::fmt::Debug for MonoResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonoResampler")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl MonoResampler {
    /// Converts from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        if from == 0 || to == 0 {
            return Err(AudioError::Resample(format!("bad rates {from} -> {to}")));
        }
        let inner = FftFixedIn::<f32>::new(from as usize, to as usize, chunk_for(from), 1, 1)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        let out = vec![vec![0.0; inner.output_frames_max()]];
        Ok(Self {
            pending: Vec::with_capacity(inner.input_frames_max()),
            inner,
            out,
        })
    }

    /// Output samples of delay the resampler adds.
    pub fn delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Resamples `input`, appending finished output to `output`.
    pub fn process(&mut self, mut input: &[f32], output: &mut Vec<f32>) -> Result<(), AudioError> {
        while !input.is_empty() {
            let need = self.inner.input_frames_next() - self.pending.len();
            let take = need.min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == self.inner.input_frames_next() {
                let (_, n) = self
                    .inner
                    .process_into_buffer(&[&self.pending[..]], &mut self.out, None)
                    .map_err(|e| AudioError::Resample(e.to_string()))?;
                output.extend_from_slice(&self.out[0][..n]);
                self.pending.clear();
            }
        }
        Ok(())
    }
}

/// Resamples a whole signal, compensating the resampler's delay so the output lines up with
/// the input sample for sample (tests compare them).
pub fn resample_all(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to {
        return Ok(input.to_vec());
    }
    let mut r = MonoResampler::new(from, to)?;
    let want = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let delay = r.delay();
    let mut out = Vec::with_capacity(want + delay + 4096);
    r.process(input, &mut out)?;
    // Flush: enough zeros to push the delayed tail out.
    let flush =
        vec![0.0; (delay as u64 * u64::from(from) / u64::from(to)) as usize + 2 * chunk_for(from)];
    r.process(&flush, &mut out)?;
    let out: Vec<f32> = out.into_iter().skip(delay).take(want).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampled_sine_keeps_frequency_and_alignment() {
        let sine = |rate: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin() * 0.5)
                .collect()
        };
        let input = sine(44_100, 44_100);
        let out = resample_all(&input, 44_100, 48_000).unwrap();
        assert_eq!(out.len(), 48_000);
        let want = sine(48_000, 48_000);
        // Compare the middle (edges have filter transients).
        let err: f32 = out[4800..43_200]
            .iter()
            .zip(&want[4800..43_200])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // Within half a sample of phase (a whole sample would be 0.029 at 440 Hz).
        assert!(err < 0.02, "max error {err}");
    }
}
