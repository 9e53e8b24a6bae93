//! Error codes on the wire and errors of decoding.

use thiserror::Error;

/// The seed's `enum commd_error`: sent as a `u32` after a zero status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// Never sent after a zero status; kept so every code of the seed has a name.
    Success = 0,
    /// Internal server error (for example the database failed).
    Serv = 1,
    /// Parameters name something that does not exist (unknown uid or chid).
    Param = 2,
    /// Malformed request: too few bytes, a field out of range, a bad string.
    Inval = 3,
    /// Permission denied.
    Access = 4,
    /// Unknown or unimplemented command type.
    NoImpl = 5,
}

impl ErrorCode {
    /// Maps a wire value to a code; unknown values are `None` so clients can report them raw.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Success,
            1 => Self::Serv,
            2 => Self::Param,
            3 => Self::Inval,
            4 => Self::Access,
            5 => Self::NoImpl,
            _ => return None,
        })
    }

    /// The seed's short name, for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Serv => "SERV",
            Self::Param => "PARAM",
            Self::Inval => "INVAL",
            Self::Access => "ACCESS",
            Self::NoImpl => "NOIMPL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended early; on a stream, read more and try again.
    #[error("message is incomplete")]
    Incomplete,
    /// The input can never become valid (bad string, value out of range).
    #[error("malformed message: {0}")]
    Invalid(&'static str),
    /// The command type is not one this crate knows (the server answers NOIMPL).
    #[error("unknown command type {0}")]
    UnknownCommand(u32),
}
