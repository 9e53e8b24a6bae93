//! One push connection, after its SIGNED PUSH was answered: a reader (frames in, to the
//! hub) and a writer (the connection's queue out), until either ends, the peer is silent
//! for [`IDLE_TIMEOUT`], a frame is bad, the peer sends faster than [`FRAMES_PER_SEC`], or
//! the server stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kv_proto::push::{body_len, PushMsg, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::{Hub, Opened};
use crate::shutdown::Shutdown;

/// A peer that sends nothing (not even a ping) this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time to read one frame's body once its header arrived, and to write one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames per second a peer may send (a token bucket)...
pub const FRAMES_PER_SEC: f64 = 50.0;
/// ... with this burst.
pub const FRAMES_BURST: f64 = 200.0;

/// Serves the connection to its end, then tells the hub.
pub async fn serve(stream: TcpStream, hub: Arc<Hub>, opened: Opened, mut shutdown: Shutdown) {
    let Opened {
        conn,
        mut rx,
        bytes,
    } = opened;
    // Frames go out as they are queued, often two in a row (a commit's COMMITTED and the
    // next request): with Nagle's algorithm the second would wait for the peer's delayed
    // ACK, 40 ms on Linux, and every epoch change would take that much longer.
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let writer = async {
        while let Some(frame) = rx.recv().await {
            match timeout(FRAME_TIMEOUT, write.write_all(&frame)).await {
                Ok(Ok(())) => {
                    bytes.fetch_sub(frame.len(), Ordering::AcqRel);
                }
                _ => break,
            }
        }
    };
    let reader = async {
        let mut tokens = FRAMES_BURST;
        let mut at = Instant::now();
        loop {
            let mut header = [0u8; HEADER_LEN];
            match timeout(IDLE_TIMEOUT, read.read_exact(&mut header)).await {
                Ok(Ok(_)) => {}
                _ => return "closed or idle",
            }
            let Ok(len) = body_len(header) else {
                return "bad frame length";
            };
            let mut body = vec![0u8; len];
            match timeout(FRAME_TIMEOUT, read.read_exact(&mut body)).await {
                Ok(Ok(_)) => {}
                _ => return "frame body timed out",
            }
            let now = Instant::now();
            tokens = (tokens + (now - at).as_secs_f64() * FRAMES_PER_SEC).min(FRAMES_BURST);
            at = now;
            if tokens < 1.0 {
                return "too many frames";
            }
            tokens -= 1.0;
            let Ok(msg) = PushMsg::decode(&body) else {
                return "malformed frame";
            };
            if hub.receive(conn, msg).is_err() {
                return "unexpected frame";
            }
        }
    };
    let why = tokio::select! {
        why = reader => why,
        _ = writer => "queue closed or write failed",
        _ = shutdown.recv() => "server stopping",
    };
    tracing::debug!(conn, why, "push connection ended");
    hub.close(conn);
}
