//! KV end-to-end encryption, the core (placeholder docs, expanded below).
#![warn(missing_docs)]

pub mod credential;
pub mod frame;
pub mod member;
pub mod safety;

pub use credential::{CredentialError, Directory};
pub use frame::{DecryptedFrame, EncryptError, FrameKeys, FrameRejected, FrameStats};
pub use member::{CommitOut, E2eeError, Handled, HandshakeStats, Member};
pub use safety::SafetyCode;
