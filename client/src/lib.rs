//! KV client library (in progress).

pub mod audio;
pub mod cli;
pub mod control;
pub mod identity;
pub mod latency;
pub mod session;
pub mod tui;
