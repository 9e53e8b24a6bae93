//! Minimal KV control client: one request, one reply per TCP connection (WIRE.md §1).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kv_proto::{ControlReply, ControlRequest};

/// Sends `req` to the server at `addr` and returns its reply.
pub fn request(addr: SocketAddr, req: &ControlRequest) -> Result<ControlReply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    let mut out = Vec::with_capacity(64);
    req.encode(&mut out)?;
    s.write_all(&out)?;
    let mut buf = Vec::with_capacity(64);
    // The server closes after replying; cap what we accept.
    s.take(64 * 1024).read_to_end(&mut buf)?;
    let (reply, _) = ControlReply::decode(req.command_type(), &buf)
        .with_context(|| format!("decode reply to {:?}", req.command_type()))?;
    Ok(reply)
}

/// Sends `req` and expects a success value (id or port).
pub fn value(addr: SocketAddr, req: &ControlRequest) -> Result<u64> {
    match request(addr, req)? {
        ControlReply::Value(v) => Ok(v),
        other => bail!("{:?} failed: {other:?}", req.command_type()),
    }
}
