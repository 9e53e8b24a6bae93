//! Control client: every command of WIRE.md and the extensions of PROTOCOL.md, typed.

mod client;
mod error;
pub mod trust;

pub use client::{ControlClient, DEFAULT_TIMEOUT};
pub use error::{ControlError, Subject};
pub use trust::KnownServers;
