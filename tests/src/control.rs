//! Raw TCP control exchanges: connect, send bytes, read the reply until the server closes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use kv_proto::control::SEED_FIELDS_LEN;
use kv_proto::{ControlReply, ControlRequest};

/// Longest a test waits for a reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `bytes` as one request and returns everything the server sent before closing.
/// Does not half-close first, like the prototype client.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to server");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.write_all(bytes).expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read reply until close");
    out
}

/// Like [`exchange`], but closes the write side after sending, as a client that sent a
/// short request would.
pub fn exchange_half_closed(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to server");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.write_all(bytes).expect("send request");
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read reply until close");
    out
}

/// The request's bytes, unpadded.
pub fn encode(req: &ControlRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    req.encode(&mut buf).expect("encodable request");
    buf
}

/// The request's bytes padded with zeros to 32 bytes of fields, as the prototype client
/// sends every seed command.
pub fn encode_padded(req: &ControlRequest) -> Vec<u8> {
    let mut buf = encode(req);
    buf.resize(buf.len().max(4 + SEED_FIELDS_LEN), 0);
    buf
}

/// Decodes a whole reply to `req`, asserting nothing follows it.
pub fn decode_reply(req: &ControlRequest, bytes: &[u8]) -> ControlReply {
    let (reply, used) = ControlReply::decode(req.reply_type(), bytes)
        .unwrap_or_else(|e| panic!("bad reply to {req:?}: {e} ({bytes:02x?})"));
    assert_eq!(used, bytes.len(), "trailing bytes after reply to {req:?}");
    reply
}

/// Sends a typed request and decodes the reply.
pub fn request(addr: SocketAddr, req: &ControlRequest) -> ControlReply {
    decode_reply(req, &exchange(addr, &encode(req)))
}

/// Sends a typed request padded to 32 bytes of fields and decodes the reply.
pub fn request_padded(addr: SocketAddr, req: &ControlRequest) -> ControlReply {
    decode_reply(req, &exchange(addr, &encode_padded(req)))
}

/// `req` sent from loopback address `from` (another "host" in 127.0.0.0/8) to `to`.
pub fn request_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    req: &ControlRequest,
) -> ControlReply {
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback address");
    sock.connect_timeout(&to.into(), std::time::Duration::from_secs(5))
        .expect("connect");
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&encode(req)).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    decode_reply(req, &out)
}
