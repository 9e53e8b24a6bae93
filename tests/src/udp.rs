//! [`UdpPeer`]: one channel member speaking raw 512-byte datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use kv_proto::packet::{self, encode_regular, verify_signed, Datagram, SignedFields};
use kv_proto::{SystemOp, SystemPacket, PACKET_SIZE};

/// How long a test waits for a datagram that should arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A user's UDP socket on 127.0.0.1, talking to one channel socket.
#[derive(Debug)]
pub struct UdpPeer {
    /// The peer's own socket.
    pub socket: UdpSocket,
    /// The channel socket it talks to.
    pub server: SocketAddr,
    /// The uid it sends as.
    pub uid: u64,
}

impl UdpPeer {
    /// A new socket on 127.0.0.1 for `uid`, talking to `server`.
    pub fn new(server: SocketAddr, uid: u64) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        Self {
            socket,
            server,
            uid,
        }
    }

    /// This peer's address as the server sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Sends raw bytes to the channel.
    pub fn send_raw(&self, buf: &[u8]) {
        self.socket
            .send_to(buf, self.server)
            .expect("send datagram");
    }

    /// Sends a KEEPALIVE (ackid 0 asks for no ACK).
    pub fn keepalive(&self, ackid: u32) {
        self.send_raw(&keepalive_packet(self.uid, ackid));
    }

    /// Sends a regular packet with `data` and returns the 512 bytes sent.
    pub fn voice(&self, data: &[u8]) -> [u8; PACKET_SIZE] {
        let mut buf = [0u8; PACKET_SIZE];
        encode_regular(self.uid, data, &mut buf);
        self.send_raw(&buf);
        buf
    }

    /// Sends KEEPALIVEs with an ackid until the ACK comes back (binding the address),
    /// skipping other packets. Panics after [`RECV_TIMEOUT`].
    pub fn bind(&self, key: &VerifyingKey) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        let ackid = 0x5EED_0001;
        while Instant::now() < deadline {
            self.keepalive(ackid);
            let until = Instant::now() + Duration::from_millis(200);
            while let Some(p) = self.recv_until(until) {
                if let Some((sys, _)) = system(&p, key) {
                    if sys.op == SystemOp::Ack && sys.ackid == ackid {
                        return;
                    }
                }
            }
        }
        panic!("uid {} got no ACK from {}", self.uid, self.server);
    }

    /// The next datagram, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.recv_until(Instant::now() + timeout)
    }

    fn recv_until(&self, deadline: Instant) -> Option<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).ok()?;
        let mut buf = [0u8; 2048];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, self.server, "datagram from an unexpected address");
                Some(buf[..n].to_vec())
            }
            Err(_) => None,
        }
    }

    /// The next datagram, which must arrive within [`RECV_TIMEOUT`].
    pub fn expect_packet(&self) -> Vec<u8> {
        self.recv(RECV_TIMEOUT)
            .unwrap_or_else(|| panic!("uid {}: expected a datagram", self.uid))
    }

    /// The next datagram, which must be a system packet signed by `key`.
    pub fn expect_system(&self, key: &VerifyingKey) -> (SystemPacket, SignedFields) {
        let p = self.expect_packet();
        system(&p, key).unwrap_or_else(|| panic!("uid {}: not a signed system packet", self.uid))
    }

    /// Waits for a signed system packet with operation `op` about `uid`, skipping others.
    pub fn expect_op(&self, key: &VerifyingKey, op: SystemOp, uid: u64) -> SignedFields {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while let Some(p) = self.recv_until(deadline) {
            if let Some((sys, f)) = system(&p, key) {
                if sys.op == op && sys.uid == uid {
                    return f;
                }
            }
        }
        panic!("uid {}: no {op:?} about {uid}", self.uid);
    }

    /// Asserts nothing arrives for `dur`.
    pub fn expect_silence(&self, dur: Duration) {
        if let Some(p) = self.recv(dur) {
            panic!(
                "uid {}: expected silence, got {} bytes starting {:02x?}",
                self.uid,
                p.len(),
                &p[..p.len().min(24)]
            );
        }
    }

    /// Drops whatever is queued (waits `dur` for stragglers).
    pub fn drain(&self, dur: Duration) {
        while self.recv(dur).is_some() {}
    }
}

/// A KEEPALIVE packet as clients send it (unsigned).
pub fn keepalive_packet(uid: u64, ackid: u32) -> [u8; PACKET_SIZE] {
    let mut buf = [0u8; PACKET_SIZE];
    SystemPacket {
        op: SystemOp::KeepAlive,
        uid,
        ackid,
    }
    .encode(&mut buf);
    buf
}

/// The packet as a system packet whose signature verifies with `key`, or `None`.
pub fn system(buf: &[u8], key: &VerifyingKey) -> Option<(SystemPacket, SignedFields)> {
    let fields = verify_signed(buf, key)?;
    match packet::parse(buf) {
        Ok(Datagram::System(p)) => Some((p, fields)),
        _ => None,
    }
}
