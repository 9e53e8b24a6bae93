//! One control exchange on a TCP connection: read one request, reply, close.
//!
//! The request is read into a fixed buffer big enough for the longest request plus the
//! prototype's padding, so a client can never make the server buffer more. Decoding is
//! retried as bytes arrive; "incomplete" at end of stream or at the read timeout is a
//! malformed request (INVAL), an unknown type is NOIMPL. After the reply the write side is
//! shut and any padding still in flight is drained for a moment, so the kernel does not
//! answer it with a reset that could destroy the reply before the client reads it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_proto::control::{MAX_REQUEST_LEN, SEED_FIELDS_LEN};
use kv_proto::{ControlReply, ControlRequest, DecodeError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use super::Control;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Longest wait for trailing padding after the reply.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes drained after the reply; a client sending more gets a reset.
const DRAIN_LIMIT: usize = 256;

/// How a request read ended.
enum Read {
    /// A whole request.
    Request(ControlRequest),
    /// Answer this error without running anything.
    Reject(ErrorCode, &'static str),
    /// The server is stopping; close without a reply.
    Shutdown,
}

/// Serves one connection to the end. Errors are logged, never returned: a broken client
/// must not affect anything else.
pub async fn handle<S: Store + 'static>(
    mut stream: TcpStream,
    peer: SocketAddr,
    control: Arc<Mutex<Control<S>>>,
    request_timeout: Duration,
    mut shutdown: Shutdown,
) {
    let deadline = Instant::now() + request_timeout;
    let read = tokio::select! {
        r = read_request(&mut stream, deadline) => r,
        _ = shutdown.recv() => Read::Shutdown,
    };
    let reply = match read {
        Read::Request(req) => {
            let cmd = req.command_type();
            let reply = tokio::task::spawn_blocking(move || {
                // A poisoned lock means a handler panicked; the state is still consistent
                // (every change is one store call), so keep serving.
                let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
                c.apply(req)
            })
            .await
            .unwrap_or(ControlReply::Error(ErrorCode::Serv));
            tracing::debug!(%peer, ?cmd, reply = %summary(&reply), "handled");
            reply
        }
        Read::Reject(code, why) => {
            tracing::debug!(%peer, %code, why, "rejected");
            ControlReply::Error(code)
        }
        Read::Shutdown => return,
    };
    send_reply(stream, peer, &reply, request_timeout).await;
}

/// Answers `code` without reading a request (the connection is over a limit).
pub async fn refuse(stream: TcpStream, code: ErrorCode, write_timeout: Duration) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    send_reply(stream, peer, &ControlReply::Error(code), write_timeout).await;
}

/// Writes the reply, half-closes, and drains what the client still sends.
async fn send_reply(
    mut stream: TcpStream,
    peer: SocketAddr,
    reply: &ControlReply,
    request_timeout: Duration,
) {
    let mut out = Vec::with_capacity(64);
    reply.encode(&mut out);
    match timeout(request_timeout, stream.write_all(&out)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "write failed"),
        Err(_) => return tracing::debug!(%peer, "write timed out"),
    }
    let _ = stream.shutdown().await;
    drain(&mut stream).await;
}

/// Reads until one request decodes, the stream ends, or the deadline passes.
async fn read_request(stream: &mut TcpStream, deadline: Instant) -> Read {
    let mut buf = [0u8; MAX_REQUEST_LEN + SEED_FIELDS_LEN];
    let mut len = 0;
    loop {
        match ControlRequest::decode(&buf[..len]) {
            Ok((req, _used)) => return Read::Request(req),
            Err(DecodeError::Incomplete) => {}
            Err(DecodeError::UnknownCommand(_)) => {
                return Read::Reject(ErrorCode::NoImpl, "unknown command")
            }
            Err(DecodeError::Invalid(why)) => return Read::Reject(ErrorCode::Inval, why),
        }
        if len == buf.len() {
            // Unreachable while the buffer exceeds the longest request; kept as a bound.
            return Read::Reject(ErrorCode::Inval, "request too long");
        }
        match timeout_at(deadline, stream.read(&mut buf[len..])).await {
            Ok(Ok(0)) => return Read::Reject(ErrorCode::Inval, "request ended early"),
            Ok(Ok(n)) => len += n,
            Ok(Err(_)) => return Read::Reject(ErrorCode::Inval, "read failed"),
            Err(_) => return Read::Reject(ErrorCode::Inval, "request timed out"),
        }
    }
}

/// Reads and discards what the client still sends (padding), until it closes, a small
/// limit, or a short timeout.
async fn drain(stream: &mut TcpStream) {
    let mut sink = [0u8; 64];
    let mut total = 0;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while total < DRAIN_LIMIT {
        match timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// A short text for the debug log line.
fn summary(reply: &ControlReply) -> String {
    match reply {
        ControlReply::Value(v) => format!("ok {v}"),
        ControlReply::Error(code) => format!("error {code}"),
        ControlReply::Channels(ids) => format!("{} channels", ids.len()),
        _ => "ok".to_owned(),
    }
}
