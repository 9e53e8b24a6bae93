//! Voice channels: the relay rules ([`relay`]), the worker threads that run them on their
//! sockets ([`worker`], with batched I/O from [`batch`]), and the [`Registry`] the control
//! plane uses to start, stop and talk to them.

pub mod batch;
pub mod cookie;
pub mod rate;
pub mod registry;
pub mod relay;
pub mod worker;

pub use registry::{OpenError, Pending, Registry, RelayError};
pub use relay::{Admission, ChannelRelay, JoinError, RelayConfig, RelayStats, Transmit, VoiceKeys};
