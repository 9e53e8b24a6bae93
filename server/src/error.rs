//! Errors that stop the server from starting or running (not per-request errors, which
//! become wire error codes).

use thiserror::Error;

use crate::store::StoreError;

/// Why the server could not start or had to stop.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory in question.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file exists but is not a 32-byte Ed25519 seed, or could not be written.
    #[error("key file {path}: {reason}")]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// Which operation failed.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No platform data directory is known and `--data-dir` was not given.
    #[error("no default data directory on this platform; pass --data-dir")]
    NoDataDir,
}
