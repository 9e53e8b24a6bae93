//! One control exchange on a TCP connection: read one request, reply, close.
//!
//! The first byte must arrive within a short `first_byte_timeout` (1 s by default) and the
//! whole request within `request_timeout`, so idle connections (a slowloris) give their
//! slot back quickly.
//!
//! The request is read into a fixed buffer big enough for the longest request plus the
//! prototype's padding, so a client can never make the server buffer more. Decoding is
//! retried as bytes arrive; "incomplete" at end of stream or at the read timeout is a
//! malformed request (INVAL), an unknown type is NOIMPL. After the reply the write side is
//! shut and any padding still in flight is drained for a moment, so the kernel does not
//! answer it with a reset that could destroy the reply before the client reads it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kv_proto::control::{MAX_REQUEST_LEN, SEED_FIELDS_LEN};
use kv_proto::{ControlReply, ControlRequest, DecodeError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};

use super::{Control, Origin};
use crate::metrics::command_label;
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

/// CHANNEL_INFO answers computed at once: each may list 4096 members, so a flood of them
/// waits here (asynchronously) instead of taking every blocking thread and the store.
const CHANNEL_INFO_AT_ONCE: usize = 2;

/// Limits and timeouts of one connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time for the first byte of the request.
    pub first_byte_timeout: Duration,
    /// Time for the whole request (and for writing the reply).
    pub request_timeout: Duration,
    /// Bounds the CHANNEL_INFO answers being computed at once.
    pub channel_info: Arc<Semaphore>,
}

impl Limits {
    /// Limits with the given timeouts.
    pub fn new(first_byte_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            first_byte_timeout: first_byte_timeout.min(request_timeout),
            request_timeout,
            channel_info: Arc::new(Semaphore::new(CHANNEL_INFO_AT_ONCE)),
        }
    }
}

/// Serves one connection to the end. Errors are logged, never returned: a broken client
/// must not affect anything else.
pub async fn handle<S: Store + 'static>(
    mut stream: TcpStream,
    peer: SocketAddr,
    control: Arc<Control<S>>,
    limits: Limits,
    mut shutdown: Shutdown,
) {
    let request_timeout = limits.request_timeout;
    let start = Instant::now();
    let read = tokio::select! {
        r = read_request(&mut stream, start + limits.first_byte_timeout, start + request_timeout) => r,
        _ = shutdown.recv() => Read::Shutdown,
    };
    let reply = match read {
        Read::Request(req) if req.reply_type() == kv_proto::CommandType::Push => {
            let origin = Origin::now(peer.ip());
            let c = control.clone();
            let (reply, opened) = tokio::task::spawn_blocking(move || c.open_push(req, &origin))
                .await
                .unwrap_or((ControlReply::Error(ErrorCode::Serv), None));
            control
                .metrics()
                .record("push", &reply, std::time::Duration::ZERO);
            let Some(opened) = opened else {
                return send_reply(stream, peer, &reply, request_timeout).await;
            };
            // The connection stays open: status 1, then push frames both ways.
            let mut out = Vec::with_capacity(8);
            reply.encode(&mut out);
            if !matches!(
                timeout(request_timeout, stream.write_all(&out)).await,
                Ok(Ok(()))
            ) {
                control.push().close(opened.conn);
                return;
            }
            let hub = control.push().clone();
            return crate::push::session::serve(stream, hub, opened, shutdown).await;
        }
        Read::Request(req) => {
            let cmd = req.reply_type();
            let arrived = std::time::Instant::now();
            let _permit = if cmd == kv_proto::CommandType::ChannelInfo {
                limits.channel_info.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let origin = Origin::now(peer.ip());
            let metrics = control.metrics().clone();
            let reply = tokio::task::spawn_blocking(move || control.apply(req, &origin))
                .await
                .unwrap_or(ControlReply::Error(ErrorCode::Serv));
            metrics.record(command_label(cmd), &reply, arrived.elapsed());
            tracing::debug!(%peer, ?cmd, reply = %summary(&reply), "handled");
            reply
        }
        Read::Reject(code, why) => {
            tracing::debug!(%peer, %code, why, "rejected");
            let reply = ControlReply::Error(code);
            let command = if code == ErrorCode::NoImpl {
                "unknown"
            } else {
                "invalid"
            };
            control
                .metrics()
                .record(command, &reply, std::time::Duration::ZERO);
            reply
        }
        Read::Shutdown => return,
    };
    send_reply(stream, peer, &reply, request_timeout).await;
}

/// Answers `code` without reading a request (the connection is over a limit). Quick: a
/// refused client gets no long drain, so refusals cannot hold resources for long.
pub async fn refuse(stream: TcpStream, code: ErrorCode) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    send(
        stream,
        peer,
        &ControlReply::Error(code),
        REFUSE_TIMEOUT,
        REFUSE_TIMEOUT,
    )
    .await;
}

/// Time a refused connection gets to take its SERV, and to send its padding after it.
const REFUSE_TIMEOUT: Duration = Duration::from_millis(200);

/// Writes the reply, half-closes, and drains what the client still sends.
async fn send_reply(
    stream: TcpStream,
    peer: SocketAddr,
    reply: &ControlReply,
    request_timeout: Duration,
) {
    send(stream, peer, reply, request_timeout, DRAIN_TIMEOUT).await;
}

async fn send(
    mut stream: TcpStream,
    peer: SocketAddr,
    reply: &ControlReply,
    write_timeout: Duration,
    drain_timeout: Duration,
) {
    let mut out = Vec::with_capacity(64);
    reply.encode(&mut out);
    match timeout(write_timeout, stream.write_all(&out)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "write failed"),
        Err(_) => return tracing::debug!(%peer, "write timed out"),
    }
    let _ = stream.shutdown().await;
    drain(&mut stream, drain_timeout).await;
}

/// Reads until one request decodes, the stream ends, or a deadline passes: `first_byte`
/// for the first byte, `deadline` for the whole request.
async fn read_request(stream: &mut TcpStream, first_byte: Instant, deadline: Instant) -> Read {
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
        let until = if len == 0 { first_byte } else { deadline };
        match timeout_at(until, stream.read(&mut buf[len..])).await {
            Ok(Ok(0)) => return Read::Reject(ErrorCode::Inval, "request ended early"),
            Ok(Ok(n)) => len += n,
            Ok(Err(_)) => return Read::Reject(ErrorCode::Inval, "read failed"),
            Err(_) => return Read::Reject(ErrorCode::Inval, "request timed out"),
        }
    }
}

/// Reads and discards what the client still sends (padding), until it closes, a small
/// limit, or a short timeout.
async fn drain(stream: &mut TcpStream, drain_timeout: Duration) {
    let mut sink = [0u8; 64];
    let mut total = 0;
    let deadline = Instant::now() + drain_timeout;
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
