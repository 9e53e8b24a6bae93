//! `kv bench` (audio part): CPU time per frame of denoise, encode and decode, and the
//! pipeline's latency, both as algorithmic parts and measured end to end in-process.
//!
//! CPU time is the thread's own (`/proc/thread-self/schedstat`, nanoseconds), so other load
//! on the machine does not inflate it; where that file is missing, wall time is used.

use std::time::Instant;

use audiopus::coder::Decoder;
use audiopus::{Channels, MutSignals, SampleRate};
use nnnoiseless::DenoiseState;

use super::tx::{make_encoder, DENOISE_FRAME};
use super::{quality, AudioError, RxConfig, RxPipeline, TransmitMode, TxConfig, TxPipeline};

/// Measured figures for one configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioBench {
    /// Frame duration benchmarked, ms.
    pub frame_ms: u32,
    /// Opus bitrate, bit/s.
    pub bitrate: i32,
    /// Frames processed per stage.
    pub frames: usize,
    /// True when CPU time came from the thread's own clock (false: wall time).
    pub thread_cpu_time: bool,
    /// CPU time of nnnoiseless per frame, µs.
    pub denoise_us: f64,
    /// CPU time of Opus encode per frame, µs.
    pub encode_us: f64,
    /// CPU time of Opus decode per frame, µs.
    pub decode_us: f64,
    /// Opus encoder lookahead, ms (from the encoder's lookahead ctl).
    pub lookahead_ms: f32,
    /// Delay nnnoiseless adds, ms (measured by cross-correlation of its input and output).
    pub denoise_delay_ms: f32,
    /// Jitter-buffer target at the end of the in-process run (no network jitter), ms.
    pub jitter_target_ms: f32,
    /// Output granularity of the in-process run (one 5 ms pull, as the playout thread), ms.
    pub output_block_ms: f32,
    /// Measured input-to-output delay of Tx → Rx in-process (no network), ms.
    pub pipeline_ms: f32,
}

impl AudioBench {
    /// Share of one core that one stream's denoise + encode + decode takes, percent.
    pub fn cpu_percent(&self) -> f64 {
        (self.denoise_us + self.encode_us + self.decode_us) / (f64::from(self.frame_ms) * 1000.0)
            * 100.0
    }

    /// Sum of the algorithmic parts, ms.
    pub fn parts_ms(&self) -> f32 {
        self.frame_ms as f32
            + self.lookahead_ms
            + self.denoise_delay_ms
            + self.jitter_target_ms
            + self.output_block_ms
    }
}

/// The calling thread's CPU time in ns, if the kernel exposes it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Times `f`, preferring thread CPU time. Returns (seconds, was CPU time).
fn timed(mut f: impl FnMut() -> Result<(), AudioError>) -> Result<(f64, bool), AudioError> {
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    f()?;
    let wall = t0.elapsed().as_secs_f64();
    Ok(match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => ((b - a) as f64 / 1e9, true),
        _ => (wall, false),
    })
}

/// Benchmarks `cfg` on `speech` (48 kHz mono; looped as needed) for `frames` frames.
pub fn run(speech: &[f32], cfg: &TxConfig, frames: usize) -> Result<AudioBench, AudioError> {
    if speech.is_empty() || frames == 0 {
        return Err(AudioError::Config("bench needs a signal and frames".into()));
    }
    let n = (cfg.frame_ms * 48) as usize;
    let input: Vec<f32> = speech.iter().cycle().take(n * frames).copied().collect();

    // Denoise.
    let mut st = DenoiseState::new();
    let mut scaled = vec![0.0f32; DENOISE_FRAME];
    let mut den_out = vec![0.0f32; input.len()];
    let (denoise, cpu) = timed(|| {
        for (i, chunk) in input.chunks_exact(DENOISE_FRAME).enumerate() {
            for (d, s) in scaled.iter_mut().zip(chunk) {
                *d = s * 32768.0;
            }
            st.process_frame(
                &mut den_out[i * DENOISE_FRAME..(i + 1) * DENOISE_FRAME],
                &scaled,
            );
        }
        Ok(())
    })?;

    // Encode.
    let enc = make_encoder(cfg)?;
    let mut packets: Vec<Vec<u8>> = Vec::with_capacity(frames);
    let mut buf = [0u8; 1500];
    let (encode, _) = timed(|| {
        for frame in input.chunks_exact(n) {
            let len = enc.encode_float(frame, &mut buf)?;
            packets.push(buf[..len].to_vec());
        }
        Ok(())
    })?;

    // Decode.
    let mut dec = Decoder::new(SampleRate::Hz48000, Channels::Mono)?;
    let mut pcm = vec![0.0f32; n];
    let (decode, _) = timed(|| {
        for p in &packets {
            let pkt = audiopus::packet::Packet::try_from(&p[..])?;
            dec.decode_float(Some(pkt), MutSignals::try_from(&mut pcm[..])?, false)?;
        }
        Ok(())
    })?;

    let per = |secs: f64| secs * 1e6 / frames as f64;
    let den_scaled: Vec<f32> = den_out.iter().map(|s| s / 32768.0).collect();
    let probe = input.len().min(48_000 * 4);
    let (lag, _) = quality::find_lag(&input[..probe], &den_scaled[..probe], 4800);
    let (pipeline_ms, jitter_target_ms) = pipeline_latency(speech, cfg)?;
    Ok(AudioBench {
        frame_ms: cfg.frame_ms,
        bitrate: cfg.bitrate,
        frames,
        thread_cpu_time: cpu,
        denoise_us: per(denoise),
        encode_us: per(encode),
        decode_us: per(decode),
        lookahead_ms: enc.lookahead()? as f32 / 48.0,
        denoise_delay_ms: if cfg.denoise { lag as f32 / 48.0 } else { 0.0 },
        jitter_target_ms,
        output_block_ms: 5.0,
        pipeline_ms,
    })
}

/// Runs `speech` through Tx → Rx on virtual time with a zero-delay network, pulling 10 ms
/// blocks as an output device would, and measures the delay of the output by
/// cross-correlation. Returns (delay ms, final jitter-buffer target ms).
pub fn pipeline_latency(speech: &[f32], cfg: &TxConfig) -> Result<(f32, f32), AudioError> {
    let mut tx = TxPipeline::new(TxConfig {
        mode: TransmitMode::Continuous,
        ..cfg.clone()
    })?;
    let mut rx = RxPipeline::new(RxConfig::default());
    let n = tx.frame_samples();
    let frame_ms = (n / 48) as u64;
    // Twice the speech, the second pass measured: the first holds the playout's start-up
    // prior until its first pause.
    let pass = speech.len().div_ceil(n) * n;
    let mut input = speech.to_vec();
    input.resize(pass, 0.0);
    input.extend_from_slice(speech);
    input.resize(2 * pass + 24_000, 0.0);
    let mut out = vec![0.0f32; input.len()];
    let mut payload = [0u8; kv_proto::packet::DATA_SIZE];
    let mut frames = input.chunks_exact(n).enumerate();
    for (k, block) in out.chunks_exact_mut(240).enumerate() {
        let now = k as u64 * 5;
        // Every frame complete by `now` has been captured, encoded and (instantly) delivered.
        while let Some((i, f)) = frames.clone().next() {
            let done_at = (i as u64 + 1) * frame_ms;
            if done_at > now {
                break;
            }
            frames.next();
            if tx.process_frame(f, done_at, &mut payload)?.is_some() {
                rx.push_packet(1, &payload, done_at);
            }
        }
        rx.pull(now, block);
    }
    let (lag, _) = quality::find_lag(speech, &out[pass..], 9600);
    let target = rx.peer_stats().first().map_or(0.0, |s| s.target_ms);
    Ok((lag as f32 / 48.0, target))
}

/// Runs the default (10 ms frames) and 20 ms frames and formats the figures for `kv bench`.
pub fn report(speech: &[f32], frames: usize) -> Result<String, AudioError> {
    use std::fmt::Write;
    let mut s = String::new();
    for (name, cfg) in [
        ("default", TxConfig::default()),
        ("20 ms frames", TxConfig::with_frame_ms(20)),
    ] {
        let b = run(speech, &cfg, frames)?;
        let clock = if b.thread_cpu_time {
            "thread CPU time"
        } else {
            "wall time"
        };
        let _ = writeln!(
            s,
            "client audio, {name} ({} ms frames, {} kb/s), {} frames, {clock}:",
            b.frame_ms,
            b.bitrate / 1000,
            b.frames
        );
        let _ = writeln!(
            s,
            "  CPU per frame: denoise {:.1} us, encode {:.1} us, decode {:.1} us = {:.2} % of one core per stream",
            b.denoise_us,
            b.encode_us,
            b.decode_us,
            b.cpu_percent()
        );
        let _ = writeln!(
            s,
            "  latency parts: frame {:.1} + Opus lookahead {:.1} + denoise {:.1} + jitter buffer {:.1} + output block {:.1} = {:.1} ms",
            b.frame_ms as f32,
            b.lookahead_ms,
            b.denoise_delay_ms,
            b.jitter_target_ms,
            b.output_block_ms,
            b.parts_ms()
        );
        let _ = writeln!(
            s,
            "  measured in-process mouth-to-ear (no network): {:.1} ms",
            b.pipeline_ms
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_runs_and_parts_explain_the_measured_delay() {
        let speech = super::super::read_wav_mono_48k(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/speech.wav"
        ))
        .unwrap();
        let b = run(&speech, &TxConfig::default(), 50).unwrap();
        println!("{b:?}");
        assert!(b.denoise_us > 0.0 && b.encode_us > 0.0 && b.decode_us > 0.0);
        assert!((6.0..7.0).contains(&b.lookahead_ms), "{}", b.lookahead_ms);
        assert!(
            (b.denoise_delay_ms - 10.0).abs() < 0.5,
            "{}",
            b.denoise_delay_ms
        );
        // The parts are upper bounds: the output block adds 0–5 ms depending on phase, and
        // on clean speech (a quiet room) the suppressor is bypassed, without its delay.
        assert!(b.pipeline_ms <= b.parts_ms() + 1.0, "{b:?}");
        assert!(
            b.pipeline_ms >= b.parts_ms() - b.denoise_delay_ms - b.output_block_ms - 2.0,
            "{b:?}"
        );
    }

    /// The figures for BENCHMARKS.md:
    /// `cargo test -p kv-client --lib audio::bench::tests::print_report -- --ignored --nocapture`
    /// (denoise is a dependency built at opt-level 2 and Opus is the system's libopus, so the
    /// dev profile measures the same code as release).
    #[test]
    #[ignore]
    fn print_report() {
        let speech = super::super::read_wav_mono_48k(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/speech.wav"
        ))
        .unwrap();
        println!("{}", report(&speech, 1500).unwrap());
    }
}
