//! The audio engine: everything between a microphone (or WAV file) and a voice payload, and
//! between voice payloads and a speaker (or WAV file).
//!
//! - [`mic`]: the microphone's clean-up before [`tx`] (high-pass, echo cancellation, gain
//!   control); [`echo_rig`]: the synthetic room the echo tests and benchmark play through.
//! - [`tx`]: capture pipeline (denoise → transmit gate → Opus → payload with redundancy).
//! - [`vad`]: the transmit gate (continuous, voice-activated with hangover, push-to-talk).
//! - [`rx`]: receive pipeline (per-sender jitter buffer + decoder + recovery, mixed).
//! - [`jitter`]: the adaptive jitter buffer (sans-IO, virtual time).
//! - [`mixer`]: summing with per-user gain and a limiter.
//! - [`wav`]: WAV input/output; [`resample`]: rate conversion; [`device`]: cpal devices.
//! - [`priority`]: scheduling priority for the threads that carry a call's timing.
//! - [`quality`]: objective speech-quality measure used by tests; [`bench`]: `kv bench`.
//!
//! Everything except [`device`] and [`priority`] is sans-IO: callers pass `now_ms` and buffers, so the whole
//! chain runs in tests on virtual time.

pub mod bench;
pub mod delay;
pub mod device;
pub mod echo_rig;
pub mod error;
pub mod format;
pub mod jitter;
pub mod mic;
pub mod mixer;
pub mod priority;
pub mod protect;
pub mod quality;
pub mod resample;
pub mod rx;
pub mod stream;
pub mod tsm;
pub mod tx;
pub mod vad;
pub mod wav;

pub use error::AudioError;
pub use format::SAMPLE_RATE;
pub use mic::{MicConfig, MicProcessor};
pub use rx::{PeerStats, RxConfig, RxPipeline};
pub use tx::{InputLevel, TxConfig, TxPipeline};
pub use vad::TransmitMode;
pub use wav::{read_wav_mono_48k, WavFormat, WavSink};

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod echo_tests;
