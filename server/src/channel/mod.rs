//! Voice channels: the relay rules ([`relay`]), the task that runs them on a socket
//! ([`task`]), and the [`Registry`] the control plane uses to start, stop and talk to them.

pub mod batch;
pub mod rate;
pub mod registry;
pub mod relay;
pub mod task;

pub use registry::{OpenError, Registry, RelayError};
pub use relay::{ChannelRelay, JoinError, RelayConfig, RelayStats, Transmit};
