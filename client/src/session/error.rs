//! Why a voice session could not start or failed.

use thiserror::Error;

use crate::control::ControlError;

/// Errors of [`super::VoiceSession`].
#[derive(Debug, Error)]
pub enum SessionError {
    /// A control request (SERVER_INFO, JOIN, CHANNEL_INFO, LEAVE) failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The UDP socket could not be opened or connected.
    #[error("voice socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The audio engine refused the configuration or a device could not be opened.
    #[error("{0}")]
    Audio(String),
    /// A worker thread could not be started.
    #[error("could not start session thread: {0}")]
    Thread(#[source] std::io::Error),
}
