//! Naive baseline: one `recvfrom` per datagram and one `sendto` per listener, the way
//! Mumble's server does its UDP I/O. No batching, no protocol logic.

use std::io::ErrorKind;
use std::net::{SocketAddr, SocketAddrV4};

use super::{is_voice, Group, Relay};
use crate::sys::RawAddr;

/// The naive relay; keeps one receive buffer.
#[derive(Debug)]
pub struct Naive {
    buf: Box<[u8; 2048]>,
}

impl Naive {
    /// A relay with its buffer.
    pub fn new() -> Self {
        Naive {
            buf: Box::new([0; 2048]),
        }
    }
}

impl Default for Naive {
    fn default() -> Self {
        Self::new()
    }
}

impl Relay for Naive {
    fn on_readable(&mut self, g: &mut Group) {
        loop {
            let (n, from) = match g.socket.recv_from(&mut self.buf[..]) {
                Ok(r) => r,
                // A refused port is an ICMP error from an earlier send: read on.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let SocketAddr::V4(from) = from else { continue };
            let Some(me) = g.learn(RawAddr::from_std(from)) else {
                continue;
            };
            let data = &self.buf[..n];
            if !is_voice(data) {
                continue;
            }
            for (i, p) in g.peers.iter().enumerate() {
                if i != me {
                    let to: SocketAddrV4 = p.to_std();
                    let _ = g.socket.send_to(data, to);
                }
            }
        }
    }
}
