//! Voice session: the UDP link to a channel and the threads that move audio through it.
//!
//! - [`link`]: protocol state of the link (binding handshake, keepalives, RTT, authenticated
//!   system packets), sans-IO.
//! - [`voice`]: [`VoiceSession`], which joins a channel and runs three threads:
//!   `kv-capture` (input → TxPipeline → socket), `kv-net` (socket → link → [`handoff`] ring)
//!   and `kv-playout` (owns the RxPipeline: ring → RxPipeline → sink, talking and stats
//!   events).
//! - [`events`]: what the session reports, through a bounded channel (telemetry may drop,
//!   lifecycle events wait for room), and [`pump`], the one loop every owner drains it with.

mod capture;
pub mod clock;
mod error;
pub mod events;
pub(crate) mod handoff;
pub mod link;
mod media;
mod mic_path;
mod net;
mod playout;
mod shared;
mod voice;

pub use error::SessionError;
pub use events::{pump, Flow, SessionEvent, SessionStats};
pub use media::{InputSource, OutputSink};
pub use playout::BLOCK as OUTPUT_BLOCK;
pub use shared::EndReason;
pub use voice::{SessionConfig, VoiceSession};
