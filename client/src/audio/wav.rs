//! WAV files as microphone and speaker: read any WAV as 48 kHz mono, write the mix.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};

use super::resample::resample_all;
use super::{AudioError, SAMPLE_RATE};

fn wav_err(path: &Path, source: hound::Error) -> AudioError {
    AudioError::Wav {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a WAV file of any rate, channel count and sample format as 48 kHz mono f32 in
/// -1..1: channels are averaged, other rates resampled with rubato.
pub fn read_wav_mono_48k(path: impl AsRef<Path>) -> Result<Vec<f32>, AudioError> {
    let path = path.as_ref();
    let mut reader = WavReader::open(path).map_err(|e| wav_err(path, e))?;
    let spec = reader.spec();
    let fmt_err = |reason: String| AudioError::WavFormat {
        path: path.display().to_string(),
        reason,
    };
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(fmt_err("zero channels or sample rate".into()));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| wav_err(path, e))?,
        SampleFormat::Int => {
            if spec.bits_per_sample == 0 || spec.bits_per_sample > 32 {
                return Err(fmt_err(format!("{} bits per sample", spec.bits_per_sample)));
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| wav_err(path, e))?
        }
    };
    let ch = usize::from(spec.channels);
    let mono: Vec<f32> = interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    if mono.is_empty() {
        return Err(fmt_err("no samples".into()));
    }
    resample_all(&mono, spec.sample_rate, SAMPLE_RATE)
}

/// Sample format a [`WavSink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit integer: half the size, what most tools expect. Default.
    #[default]
    I16,
    /// 32-bit float: bit-exact with the mix, for measurements.
    F32,
}

/// A 48 kHz mono WAV file written as audio arrives; the header is finalized by
/// [`WavSink::finish`] or, failing that, on drop. The header is also brought up to date every
/// second of audio, so even a killed client leaves a valid file up to its last second.
pub struct WavSink {
    writer: Option<WavWriter<BufWriter<File>>>,
    format: WavFormat,
    path: PathBuf,
    written: u64,
    /// Samples since the header was last updated.
    unflushed: u64,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("written", &self.written)
            .finish()
    }
}

impl WavSink {
    /// Creates (truncates) `path`.
    pub fn create(path: impl AsRef<Path>, format: WavFormat) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let spec = match format {
            WavFormat::I16 => WavSpec {
                channels: 1,
                sample_rate: SAMPLE_RATE,
                bits_per_sample: 16,
                sample_format: SampleFormat::Int,
            },
            WavFormat::F32 => WavSpec {
                channels: 1,
                sample_rate: SAMPLE_RATE,
                bits_per_sample: 32,
                sample_format: SampleFormat::Float,
            },
        };
        let writer = WavWriter::create(path, spec).map_err(|e| wav_err(path, e))?;
        Ok(Self {
            writer: Some(writer),
            format,
            path: path.to_path_buf(),
            written: 0,
            unflushed: 0,
        })
    }

    /// Appends samples (range -1..1; clamped for I16).
    pub fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        for &s in samples {
            let r = match self.format {
                WavFormat::I16 => w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16),
                WavFormat::F32 => w.write_sample(s),
            };
            r.map_err(|e| wav_err(&self.path, e))?;
        }
        self.written += samples.len() as u64;
        self.unflushed += samples.len() as u64;
        if self.unflushed >= u64::from(SAMPLE_RATE) {
            self.unflushed = 0;
            // hound's flush also rewrites the header's lengths.
            w.flush().map_err(|e| wav_err(&self.path, e))?;
        }
        Ok(())
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.written
    }

    /// Writes the final header and closes the file.
    pub fn finish(mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| wav_err(&self.path, e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finalize() {
                tracing::warn!(path = %self.path.display(), error = %e, "finalizing WAV failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let sig: Vec<f32> = (0..4800).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
        let mut s = WavSink::create(&p, WavFormat::F32).unwrap();
        s.write(&sig).unwrap();
        s.finish().unwrap();
        assert_eq!(read_wav_mono_48k(&p).unwrap(), sig);
    }

    #[test]
    fn file_is_readable_before_finish() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.wav");
        let mut s = WavSink::create(&p, WavFormat::I16).unwrap();
        s.write(&vec![0.25f32; 50_000]).unwrap();
        // Not finished (as if the process were killed now): the first second is there.
        let x = read_wav_mono_48k(&p).unwrap();
        assert_eq!(x.len(), 50_000);
        assert!((x[100] - 0.25).abs() < 1e-3);
        std::mem::forget(s);
    }

    #[test]
    fn stereo_16k_is_downmixed_and_resampled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.wav");
        let spec = WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let mut w = WavWriter::create(&p, spec).unwrap();
        for _ in 0..16_000 {
            w.write_sample(16_384i16).unwrap();
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let x = read_wav_mono_48k(&p).unwrap();
        assert_eq!(x.len(), 48_000);
        assert!((x[24_000] - 0.25).abs() < 0.01, "{}", x[24_000]);
    }

    #[test]
    fn unreadable_file_is_a_clear_error() {
        let e = read_wav_mono_48k("/nonexistent/x.wav").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.wav"), "{e}");
    }
}
