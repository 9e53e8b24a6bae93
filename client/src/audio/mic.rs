//! The microphone's clean-up, ahead of the [`TxPipeline`](super::TxPipeline): high-pass
//! filter → acoustic echo cancellation → automatic gain control (with its limiter).
//!
//! Echo cancellation and gain control are WebRTC's audio processing as the `aec3` crate
//! ports it to Rust (AEC3 and AGC2), chosen over SpeexDSP's echo canceller
//! and preprocessor by the figures in BENCHMARKS.md "Echo cancellation and gain control":
//! on the echo rig AEC3 removes 65 dB of echo after 2 s where Speex removes 17 dB.
//! No adaptive filter is written here.
//!
//! - The high-pass filter ([`HighPass`], a 2nd-order Butterworth at 80 Hz: −17 dB at
//!   30 Hz, DC removed) takes out DC and rumble (desk knocks, fans, handling noise) before
//!   anything measures levels. Not the `aec3` crate's own: that one filters only the
//!   lowest of its three frequency bands, and DC leaks around it (−25 dB only).
//! - The echo canceller is told exactly what the client played ([`MicProcessor::render`],
//!   the mixer's output as the playout handed it to the speaker), 10 ms at a time, and
//!   finds the delay from speaker to microphone itself (its delay estimator; the device
//!   queue the playout measures is given as a hint, [`MicProcessor::set_delay_hint_ms`]).
//! - The gain control (AGC2's adaptive digital controller) brings speech to a steady level
//!   and moves its gain only on speech (its own VAD), at most 6 dB/s, so pauses do not pump;
//!   its limiter keeps peaks under full scale. The analogue input-volume controller of
//!   AGC2 is off: the client does not turn the system's microphone volume.
//!
//! Sans-IO: 48 kHz mono f32 in and out, in place and synchronously: each 10 ms chunk
//! comes out of the call it goes into, nothing is queued. While echo cancellation is on
//! the signal is delayed by 430 samples (9.0 ms), all of it inside AEC3's algorithm, as in
//! WebRTC: 47 samples for the three-band split at 48 kHz, 4 ms because its 80-sample
//! sub-frames are cut into 64-sample blocks (the block framer), and 4 ms for the
//! suppressor's overlap-add synthesis (its 128-point FFT, half-overlapped). No setting
//! removes them; with echo cancellation off the chain adds no delay (measured in
//! `echo_tests` and the benchmark).

pub use aec3::api::config::EchoCanceller3Config;
use aec3::audio_processing::gain_controller2::GainController2Config;
use aec3::graph::NodeControlState;
use aec3::nodes::audio::AudioFormat;
use aec3::pipelines::linear::{self, LinearPipeline};

use super::AudioError;

/// The processing grain: 10 ms at 48 kHz (what WebRTC's audio processing works on).
pub const CHUNK: usize = 480;

/// Corner of the high-pass filter, Hz: below the lowest voice fundamentals (~85 Hz), above
/// mains hum's first harmonic and the rumble of desks and fans.
pub const HIGH_PASS_HZ: f64 = 80.0;

/// A 2nd-order Butterworth high-pass (the RBJ audio-EQ-cookbook biquad, Q = 1/√2), in
/// transposed direct form II with f64 state (so a 80 Hz corner at 48 kHz stays exact).
#[derive(Debug, Clone)]
pub struct HighPass {
    b: [f64; 3],
    a: [f64; 2],
    z: [f64; 2],
}

impl HighPass {
    /// A filter with its corner at `hz` (at 48 kHz).
    pub fn new(hz: f64) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * hz / 48_000.0;
        let alpha = w0.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let cos = w0.cos();
        let a0 = 1.0 + alpha;
        let b0 = (1.0 + cos) / 2.0 / a0;
        Self {
            b: [b0, -2.0 * b0, b0],
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            z: [0.0; 2],
        }
    }

    /// Filters `x` in place.
    pub fn process(&mut self, x: &mut [f32]) {
        for s in x.iter_mut() {
            let v = f64::from(*s);
            let y = self.b[0] * v + self.z[0];
            self.z[0] = self.b[1] * v - self.a[0] * y + self.z[1];
            self.z[1] = self.b[2] * v - self.a[1] * y;
            *s = y as f32;
        }
    }
}

/// Gain ahead of AGC2, dB. AGC2's adaptive digital gain only raises (0…50 dB): in WebRTC
/// the analogue input-volume controller brings a hot microphone down. The client turns no
/// system volume, so every talker is first lowered by 11 dB: a loud one (speech at
/// −10 dBFS) then arrives at AGC2's own target (about −22 dBFS) and a quiet one (−45)
/// within its reach, and all come out within ±3 dB of the target (measured in
/// BENCHMARKS.md). Digital and in f32, so nothing is lost on the way down.
pub const AGC_PRE_GAIN_DB: f32 = -11.0;

/// Loudest the AGC may make the room's noise, dBFS (AGC2's default is −50). A quiet
/// microphone in a quiet room (speech at −45 dBFS, noise at −70) needs 34 dB to reach the
/// target, which at −50 stops 3 dB short and leaves that talker quieter than the rest. Here
/// nnnoiseless follows in the capture pipeline and takes stationary noise out again, so
/// the gain may lift the noise to −46 dBFS; in a noisy room the cap still keeps a quiet
/// talker from being raised into a wall of hiss.
pub const AGC_MAX_NOISE_DBFS: f32 = -46.0;

/// Which stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicConfig {
    /// Acoustic echo cancellation.
    pub aec: bool,
    /// Automatic gain control and limiter.
    pub agc: bool,
}

impl Default for MicConfig {
    /// Both on (the session turns AEC off when input or output is not a device).
    fn default() -> Self {
        Self {
            aec: true,
            agc: true,
        }
    }
}

/// High-pass → AEC3 → AGC2 over 10 ms chunks.
pub struct MicProcessor {
    high_pass: HighPass,
    pipeline: LinearPipeline,
    cfg: MicConfig,
    /// The AEC was switched back on: its filter is stale (no far end was fed meanwhile).
    aec_stale: bool,
    delay_hint_ms: i32,
    out: Vec<f32>,
}

impl std::fmt::Debug for MicProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicProcessor")
            .field("cfg", &self.cfg)
            .field("delay_hint_ms", &self.delay_hint_ms)
            .finish_non_exhaustive()
    }
}

fn graph_error(e: impl std::fmt::Display) -> AudioError {
    AudioError::Mic(e.to_string())
}

/// AGC2 as the client uses it: adaptive digital gain and limiter, no input-volume control.
pub fn agc_config() -> GainController2Config {
    let mut c = GainController2Config::default();
    c.input_volume_controller.enabled = false;
    c.adaptive_digital.enabled = true;
    c.adaptive_digital.max_output_noise_level_dbfs = AGC_MAX_NOISE_DBFS;
    c
}

/// AEC3 as the client uses it: WebRTC's defaults, except that the delay estimator's
/// matched filters run on the band decimated by 8 instead of 4 (2 kHz, half the work;
/// the lag is still found to 0.5 ms and the linear filter has 2 ms of headroom), which
/// takes the whole chain from 1.3 to 1.0 % of a core. Its five filters still cover the
/// 0–500 ms a reference can lead its echo by (the playout queues at most 300 ms, see
/// `playout::DEVICE_QUEUE_MAX`, then the room and the capture device); four would stop
/// at 400 ms (measured in `echo_tests`). And the transparent mode's classifier is the
/// hidden Markov model one (upstream WebRTC's default, behind a switch in the port): on a
/// headset, where the far end has no echo, it lets the suppressor go transparent much
/// sooner; the near end while the far end plays goes from PESQ-WB 1.6 to 2.7 on the rig,
/// echo figures unchanged.
///
/// Tried on the echo rig and not kept (BENCHMARKS.md): longer linear filters (20–80
/// blocks converge slower and cancel less), higher ERLE limits, a milder reverb model,
/// other dominant-near-end thresholds, `linear_and_stable_echo_path`: double talk stays
/// at PESQ-WB 1.1 while the residual echo rises.
pub fn echo_config() -> EchoCanceller3Config {
    let mut c = EchoCanceller3Config::default();
    c.delay.down_sampling_factor = 8;
    c.transparent_mode.use_hmm = true;
    c
}

impl MicProcessor {
    /// Builds the chain with `cfg`'s stages on.
    pub fn new(cfg: MicConfig) -> Result<Self, AudioError> {
        Self::with_echo_config(cfg, echo_config())
    }

    /// Builds the chain with AEC3 configured as `echo` (the benchmark compares settings).
    pub fn with_echo_config(
        cfg: MicConfig,
        echo: EchoCanceller3Config,
    ) -> Result<Self, AudioError> {
        let format = AudioFormat::ten_ms(48_000, 1);
        let pipeline = linear::builder(format, format)
            .aec3_config(echo)
            .enable_high_pass_filter(false)
            // nnnoiseless in the TxPipeline suppresses noise; WebRTC's would be a second one.
            .enable_noise_suppression(false)
            .enable_gain_controller2(true)
            .gain_controller2_config(agc_config())
            .enable_post_filter(false)
            .build()
            .map_err(graph_error)?;
        let mut p = Self {
            high_pass: HighPass::new(HIGH_PASS_HZ),
            pipeline,
            cfg: MicConfig {
                aec: true,
                agc: true,
            },
            aec_stale: false,
            delay_hint_ms: 0,
            out: vec![0.0; CHUNK],
        };
        p.set_aec(cfg.aec)?;
        p.set_agc(cfg.agc)?;
        p.aec_stale = false;
        Ok(p)
    }

    /// The stages on now.
    pub fn config(&self) -> MicConfig {
        self.cfg
    }

    /// Switches echo cancellation on or off from the next chunk.
    pub fn set_aec(&mut self, on: bool) -> Result<(), AudioError> {
        if on == self.cfg.aec {
            return Ok(());
        }
        let id = self.pipeline.handles().aec3.node_id();
        let state = if on {
            NodeControlState::Active
        } else {
            NodeControlState::Bypassed
        };
        self.pipeline
            .set_node_state(id, state)
            .map_err(graph_error)?;
        self.cfg.aec = on;
        self.aec_stale = on;
        Ok(())
    }

    /// Switches gain control (and its limiter) on or off from the next chunk.
    pub fn set_agc(&mut self, on: bool) -> Result<(), AudioError> {
        if on == self.cfg.agc {
            return Ok(());
        }
        let Some(node) = self.pipeline.handles().gain_controller2 else {
            return Ok(());
        };
        let state = if on {
            NodeControlState::Active
        } else {
            NodeControlState::Bypassed
        };
        self.pipeline
            .set_node_state(node.node_id(), state)
            .map_err(graph_error)?;
        self.cfg.agc = on;
        Ok(())
    }

    /// The delay from handing audio to the speaker to it reaching the microphone, as far as
    /// the client knows it (its device queue), ms: a starting point for AEC3's own delay
    /// estimate. Cheap to call often; only changes of 5 ms or more are passed on.
    pub fn set_delay_hint_ms(&mut self, ms: i32) -> Result<(), AudioError> {
        if (ms - self.delay_hint_ms).abs() < 5 {
            return Ok(());
        }
        self.delay_hint_ms = ms;
        self.pipeline.set_delay_ms(ms).map_err(graph_error)
    }

    /// Hands the echo canceller [`CHUNK`] samples of what the speaker played (the far
    /// end). Ignored while echo cancellation is off.
    pub fn render(&mut self, far: &[f32]) -> Result<(), AudioError> {
        if !self.cfg.aec {
            return Ok(());
        }
        if far.len() != CHUNK {
            return Err(AudioError::FrameLength {
                expected: CHUNK,
                got: far.len(),
            });
        }
        self.refresh()?;
        self.pipeline.handle_render_frame(far).map_err(graph_error)
    }

    /// Processes microphone samples in place; `pcm.len()` must be a multiple of [`CHUNK`].
    /// Callers interleave [`Self::render`] and this per chunk (see [`Self::process_chunk`])
    /// when there is a far end.
    pub fn process(&mut self, pcm: &mut [f32]) -> Result<(), AudioError> {
        if !pcm.len().is_multiple_of(CHUNK) {
            return Err(AudioError::FrameLength {
                expected: CHUNK * pcm.len().div_ceil(CHUNK),
                got: pcm.len(),
            });
        }
        for chunk in pcm.chunks_exact_mut(CHUNK) {
            self.process_chunk(chunk)?;
        }
        Ok(())
    }

    /// One [`CHUNK`] of microphone samples, in place.
    pub fn process_chunk(&mut self, chunk: &mut [f32]) -> Result<(), AudioError> {
        if chunk.len() != CHUNK {
            return Err(AudioError::FrameLength {
                expected: CHUNK,
                got: chunk.len(),
            });
        }
        self.refresh()?;
        for s in chunk.iter_mut() {
            if !s.is_finite() {
                *s = 0.0;
            }
        }
        self.high_pass.process(chunk);
        if !self.cfg.aec && !self.cfg.agc {
            // Nothing else to do: the graph's bypassed nodes would only copy.
            return Ok(());
        }
        if self.cfg.agc {
            let g = 10f32.powf(AGC_PRE_GAIN_DB / 20.0);
            for s in chunk.iter_mut() {
                *s *= g;
            }
        }
        // Nothing produced (the graph's first call) is silence in `out`.
        self.pipeline
            .process_capture_frame(chunk, &mut self.out)
            .map_err(graph_error)?;
        chunk.copy_from_slice(&self.out);
        Ok(())
    }

    /// Restarts a stale echo canceller (switched back on after a pause in the far end).
    fn refresh(&mut self) -> Result<(), AudioError> {
        if self.aec_stale {
            self.aec_stale = false;
            self.pipeline.reset_aec3().map_err(graph_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tx::rms_dbfs;

    fn sine(hz: f32, amp: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    /// Level of `hz` after the high-pass filter alone, relative to the input, dB.
    fn through_high_pass(hz: f32) -> f32 {
        let mut p = MicProcessor::new(MicConfig {
            aec: false,
            agc: false,
        })
        .unwrap();
        let mut x = sine(hz, 0.3, 48_000);
        let input = rms_dbfs(&x[24_000..]);
        p.process(&mut x).unwrap();
        rms_dbfs(&x[24_000..]) - input
    }

    #[test]
    fn high_pass_removes_dc_and_rumble_and_keeps_speech() {
        let mut p = MicProcessor::new(MicConfig {
            aec: false,
            agc: false,
        })
        .unwrap();
        let mut dc = vec![0.25f32; 48_000];
        p.process(&mut dc).unwrap();
        let dc_left = rms_dbfs(&dc[24_000..]);
        assert!(dc_left < -60.0, "DC left: {dc_left:.1} dBFS");
        let at_30 = through_high_pass(30.0);
        let at_80 = through_high_pass(80.0);
        let at_300 = through_high_pass(300.0);
        let at_1k = through_high_pass(1000.0);
        assert!(at_30 < -15.0, "30 Hz only {at_30:.1} dB down");
        assert!(
            (at_80 + 3.0).abs() < 0.5,
            "80 Hz {at_80:.1} dB, not the -3 dB corner"
        );
        assert!(at_300.abs() < 1.0, "300 Hz changed by {at_300:.1} dB");
        assert!(at_1k.abs() < 1.0, "1 kHz changed by {at_1k:.1} dB");
    }

    #[test]
    fn bad_lengths_are_errors_and_non_finite_input_is_silenced() {
        let mut p = MicProcessor::new(MicConfig::default()).unwrap();
        assert!(p.process(&mut [0.0; 100]).is_err());
        assert!(p.render(&[0.0; 100]).is_err());
        let mut x = vec![f32::NAN; CHUNK];
        x[7] = f32::INFINITY;
        p.process(&mut x).unwrap();
        assert!(x.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    }

    #[test]
    fn switches_take_effect() {
        let mut p = MicProcessor::new(MicConfig::default()).unwrap();
        p.set_aec(false).unwrap();
        p.set_agc(false).unwrap();
        assert_eq!(
            p.config(),
            MicConfig {
                aec: false,
                agc: false
            }
        );
        // With everything off but the high-pass, a 1 kHz tone keeps its level.
        let mut x = sine(1000.0, 0.1, 9600);
        let before = rms_dbfs(&x[4800..]);
        p.process(&mut x).unwrap();
        let change = rms_dbfs(&x[4800..]) - before;
        assert!(
            change.abs() < 0.5,
            "off path changed the level by {change:.2} dB"
        );
        p.set_aec(true).unwrap();
        p.render(&[0.0; CHUNK]).unwrap();
        p.process(&mut x[..CHUNK]).unwrap();
    }
}
