//! `kv bench` (audio part): CPU time per 20 ms frame of denoise, encode and decode, and the
//! algorithmic latency of the pipeline's parts.

use std::time::{Duration, Instant};

use audiopus::coder::Decoder;
use audiopus::{Channels, MutSignals, SampleRate};
use nnnoiseless::DenoiseState;

use super::tx::{make_encoder, DENOISE_FRAME};
use super::{AudioError, TxConfig};

/// Measured figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioBench {
    /// Frame duration benchmarked, ms.
    pub frame_ms: u32,
    /// Frames processed per stage.
    pub frames: usize,
    /// CPU time of nnnoiseless per frame, µs.
    pub denoise_us: f64,
    /// CPU time of Opus encode per frame, µs.
    pub encode_us: f64,
    /// CPU time of Opus decode per frame, µs.
    pub decode_us: f64,
    /// Opus encoder lookahead, ms.
    pub lookahead_ms: f32,
    /// Delay nnnoiseless adds, ms (measured by cross-correlation).
    pub denoise_delay_ms: f32,
}

impl AudioBench {
    /// Share of one core one stream's denoise + encode + decode takes, percent.
    pub fn cpu_percent(&self) -> f64 {
        (self.denoise_us + self.encode_us + self.decode_us) / (f64::from(self.frame_ms) * 1000.0)
            * 100.0
    }
}

/// Runs the benchmark on `speech` (48 kHz mono; looped as needed) for `frames` frames of
/// `cfg.frame_ms`.
pub fn run(speech: &[f32], cfg: &TxConfig, frames: usize) -> Result<AudioBench, AudioError> {
    if speech.is_empty() {
        return Err(AudioError::Config("bench needs a non-empty signal".into()));
    }
    let n = (cfg.frame_ms * 48) as usize;
    let input: Vec<f32> = speech.iter().cycle().take(n * frames).copied().collect();

    // Denoise.
    let mut st = DenoiseState::new();
    let mut scaled = vec![0.0f32; DENOISE_FRAME];
    let mut den_out = vec![0.0f32; input.len()];
    let t = Instant::now();
    for (i, chunk) in input.chunks_exact(DENOISE_FRAME).enumerate() {
        for (d, s) in scaled.iter_mut().zip(chunk) {
            *d = s * 32768.0;
        }
        st.process_frame(
            &mut den_out[i * DENOISE_FRAME..(i + 1) * DENOISE_FRAME],
            &scaled,
        );
    }
    let denoise = t.elapsed();

    // Encode.
    let enc = make_encoder(cfg)?;
    let mut packets: Vec<Vec<u8>> = Vec::with_capacity(frames);
    let mut buf = [0u8; 1500];
    let t = Instant::now();
    for frame in input.chunks_exact(n) {
        let len = enc.encode_float(frame, &mut buf)?;
        packets.push(buf[..len].to_vec());
    }
    let encode = t.elapsed();

    // Decode.
    let mut dec = Decoder::new(SampleRate::Hz48000, Channels::Mono)?;
    let mut pcm = vec![0.0f32; n];
    let t = Instant::now();
    for p in &packets {
        let pkt = audiopus::packet::Packet::try_from(&p[..])?;
        dec.decode_float(Some(pkt), MutSignals::try_from(&mut pcm[..])?, false)?;
    }
    let decode = t.elapsed();

    let per = |d: Duration| d.as_secs_f64() * 1e6 / frames as f64;
    let den_scaled: Vec<f32> = den_out.iter().map(|s| s / 32768.0).collect();
    let probe = input.len().min(48_000 * 4);
    let (lag, _) = super::quality::find_lag(&input[..probe], &den_scaled[..probe], 4800);
    Ok(AudioBench {
        frame_ms: cfg.frame_ms,
        frames,
        denoise_us: per(denoise),
        encode_us: per(encode),
        decode_us: per(decode),
        lookahead_ms: enc.lookahead()? as f32 / 48.0,
        denoise_delay_ms: lag as f32 / 48.0,
    })
}
