//! Errors of the control client, worded for the person running `kv`.

use kv_proto::{CommandType, DecodeError, ErrorCode};
use thiserror::Error;

/// What a failed server error code was about, when the client could find out. PARAM only
/// says "something named does not exist"; a follow-up probe can say which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// Nothing more is known.
    Unknown,
    /// The channel id named in the request.
    Channel(u64),
    /// The user id named in the request.
    User(u64),
}

/// Why a control request failed.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The address did not resolve, or nothing accepted a TCP connection there.
    #[error("server {addr} unreachable: {source}")]
    Unreachable {
        /// Address as the user gave it.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server accepted the connection but did not answer in time.
    #[error("server {addr} did not answer within {secs:.1} s")]
    Timeout {
        /// Address as the user gave it.
        addr: String,
        /// The timeout that expired.
        secs: f64,
    },
    /// The server answered with a zero status and this error code.
    #[error("{}", describe(*command, *code, *subject))]
    Server {
        /// The command that failed.
        command: CommandType,
        /// The server's error code.
        code: ErrorCode,
        /// What the code refers to, when known.
        subject: Subject,
    },
    /// The server's bytes made no sense, or the connection broke mid-reply.
    #[error("protocol error talking to {addr}: {detail}")]
    Protocol {
        /// Address as the user gave it.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The request could not be encoded (a name longer than the wire allows).
    #[error("invalid request: {0}")]
    BadRequest(#[from] DecodeError),
    /// The server's key is not the one pinned for it on first use.
    #[error(
        "server {addr} presents key {offered}, but {pinned} is pinned for it in {}: refusing \
         (a man in the middle, or the server's key was replaced; if you trust the new key, \
         remove the server's line from that file)",
        file.display()
    )]
    KeyChanged {
        /// Address as the user gave it.
        addr: String,
        /// The pinned key (hex).
        pinned: String,
        /// The key the server sent (hex).
        offered: String,
        /// The known-servers file.
        file: std::path::PathBuf,
    },
    /// A server whose key is pinned no longer offers signed system packets.
    #[error(
        "server {addr} no longer offers signed packets, but its key is pinned in {}: refusing \
         (possible man in the middle)",
        file.display()
    )]
    Downgrade {
        /// Address as the user gave it.
        addr: String,
        /// The known-servers file.
        file: std::path::PathBuf,
    },
    /// The known-servers file could not be read or written.
    #[error("known servers {0}")]
    Trust(String),
}

impl ControlError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ControlError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when retrying later might succeed (network trouble rather than a refusal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::Unreachable { .. } | ControlError::Timeout { .. }
        )
    }
}

fn describe(command: CommandType, code: ErrorCode, subject: Subject) -> String {
    match (code, subject) {
        (ErrorCode::Access, _) => "access denied".into(),
        (ErrorCode::Param, Subject::Channel(c)) => format!("unknown channel {c}"),
        (ErrorCode::Param, Subject::User(u)) => format!("unknown user {u}"),
        (ErrorCode::Param, Subject::Unknown) => "unknown user or channel".into(),
        (ErrorCode::Inval, _) => "server rejected the request as malformed".into(),
        (ErrorCode::NoImpl, _) => format!("server does not implement {command:?}"),
        (ErrorCode::Serv, _) => "internal server error".into(),
        (ErrorCode::Success, _) => "server reported failure without a reason".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = |code, subject| ControlError::Server {
            command: CommandType::Join,
            code,
            subject,
        };
        assert_eq!(
            e(ErrorCode::Access, Subject::Unknown).to_string(),
            "access denied"
        );
        assert_eq!(
            e(ErrorCode::Param, Subject::Channel(7)).to_string(),
            "unknown channel 7"
        );
        assert_eq!(
            e(ErrorCode::Param, Subject::User(9)).to_string(),
            "unknown user 9"
        );
        assert_eq!(
            e(ErrorCode::NoImpl, Subject::Unknown).to_string(),
            "server does not implement Join"
        );
    }
}
