//! Where a session's audio comes from and goes to.

use std::path::PathBuf;

use crate::audio::WavFormat;

/// The "microphone" of a session.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// Nothing: the session listens only (still sends nothing in VAD mode).
    Silence,
    /// 48 kHz mono samples (a WAV file read beforehand), played once in real time, then
    /// silence.
    Samples(Vec<f32>),
    /// A capture device by name (`default` for the system's own).
    Device(String),
}

/// The "speaker" of a session.
#[derive(Debug, Clone)]
pub enum OutputSink {
    /// Mix and discard (keeps statistics and talking indicators alive).
    Discard,
    /// A 48 kHz mono WAV file, continuous from the first block on.
    Wav {
        /// File to create (truncated if it exists).
        path: PathBuf,
        /// 16-bit integer (default) or 32-bit float samples.
        format: WavFormat,
    },
    /// A playback device by name (`default` for the system's own).
    Device(String),
}
