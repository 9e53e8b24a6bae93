//! The audio format inside KV, a leaf every part of the engine imports.

/// The one sample rate inside KV: Opus' and nnnoiseless' native rate, so nothing resamples
/// except at the edges (devices and WAV files at other rates).
pub const SAMPLE_RATE: u32 = 48_000;
