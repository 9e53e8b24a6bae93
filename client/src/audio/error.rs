//! The one error type of the audio engine.

use thiserror::Error;

/// Why an audio operation failed.
#[derive(Debug, Error)]
pub enum AudioError {
    /// A configuration value is out of range (frame size, bitrate, …); the text says which.
    #[error("invalid audio configuration: {0}")]
    Config(String),
    /// libopus refused to create an encoder/decoder or to code a frame.
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    /// `process_frame` was given a buffer of the wrong length.
    #[error("expected {expected} samples per frame, got {got}")]
    FrameLength {
        /// Samples the pipeline needs ([`crate::audio::TxPipeline::frame_samples`]).
        expected: usize,
        /// Samples it was given.
        got: usize,
    },
    /// The voice payload could not be written (the current frame did not fit).
    #[error("voice payload: {0}")]
    Payload(#[from] kv_proto::voice::VoiceError),
    /// A WAV file could not be opened, read, created or written.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The file concerned.
        path: String,
        /// What hound reported.
        #[source]
        source: hound::Error,
    },
    /// A WAV file holds no samples or has a format we cannot convert.
    #[error("WAV file {path}: {reason}")]
    WavFormat {
        /// The file concerned.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The resampler could not be built or failed (rates out of range).
    #[error("resampler: {0}")]
    Resample(String),
    /// No audio device with that name (or no default device: e.g. a machine without sound card).
    #[error("no audio {kind} device named {name:?} (available: {available})")]
    NoDevice {
        /// "input" or "output".
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// Names that do exist, comma-separated, or "none".
        available: String,
    },
    /// The audio backend (ALSA, PulseAudio, …) reported an error opening or running a stream.
    #[error("audio device: {0}")]
    Device(String),
    /// The microphone's processing (high-pass, echo canceller, gain control) failed.
    #[error("microphone processing: {0}")]
    Mic(String),
}
