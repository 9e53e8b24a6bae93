//! [`UdpPeer`]: one channel member speaking raw 512-byte datagrams, including the binding
//! handshake (KEEPALIVE, CHALLENGE, BIND) and the session MAC of the server's packets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use kv_proto::packet::{self, encode_regular, Datagram};
use kv_proto::session::{self, Bind, Challenge, ClientKex, Sealed, SessionKey};
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
    /// This peer's X25519 key for its session.
    kex: ClientKex,
    /// The session key, once a CHALLENGE came.
    session: Mutex<Option<SessionKey>>,
}

impl UdpPeer {
    /// A new socket on 127.0.0.1 for `uid`, talking to `server`.
    pub fn new(server: SocketAddr, uid: u64) -> Self {
        Self::on(
            UdpSocket::bind("127.0.0.1:0").expect("bind UDP"),
            server,
            uid,
        )
    }

    /// A peer using `socket` (e.g. bound to another 127.0.0.x address).
    pub fn on(socket: UdpSocket, server: SocketAddr, uid: u64) -> Self {
        Self {
            socket,
            server,
            uid,
            kex: ClientKex::new(rand::random()),
            session: Mutex::new(None),
        }
    }

    /// The X25519 public key this peer's BIND offers (what a JOIN_KEX for it names).
    pub fn client_kex(&self) -> [u8; 32] {
        self.kex.public()
    }

    /// The session key, if the handshake got that far.
    pub fn session(&self) -> Option<SessionKey> {
        self.session.lock().ok().and_then(|s| s.clone())
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

    /// Binds this peer's address: KEEPALIVE, CHALLENGE (its key checked against `key`),
    /// BIND, until the session's ACK comes back, skipping other packets. Panics after
    /// [`RECV_TIMEOUT`].
    pub fn bind(&self, key: &VerifyingKey) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        let ackid = 0x5EED_0001;
        // Handshake until a BIND went out; after that, a KEEPALIVE asks for the ACK again
        // (the relay may defer a bind's ACK while a busy channel's announcements are paid
        // for, and a second handshake would swallow that ACK). A new CHALLENGE means the
        // BIND did not take: start over.
        let mut bind_sent = false;
        while Instant::now() < deadline {
            if !bind_sent {
                bind_sent = self.try_handshake(key, ackid, Duration::from_millis(200));
                if !bind_sent {
                    continue;
                }
            } else {
                self.keepalive(ackid);
            }
            let until = Instant::now() + Duration::from_millis(200);
            while let Some(p) = self.recv_until(until) {
                if let Some((sys, _)) = self.open(&p) {
                    if sys.op == SystemOp::Ack && sys.ackid == ackid {
                        return;
                    }
                } else if Challenge::decode(&p).is_some_and(|c| c.uid == self.uid) {
                    bind_sent = false;
                }
            }
        }
        panic!("uid {} got no ACK from {}", self.uid, self.server);
    }

    /// Sends a KEEPALIVE and, when its CHALLENGE arrives (within `wait`), the BIND with
    /// `ackid`, without waiting for what the BIND brings. False when no CHALLENGE came.
    pub fn try_handshake(&self, key: &VerifyingKey, ackid: u32, wait: Duration) -> bool {
        self.keepalive(ackid);
        let until = Instant::now() + wait;
        while let Some(p) = self.recv_until(until) {
            if let Some(c) = Challenge::decode(&p) {
                if c.uid == self.uid && c.ackid == ackid {
                    assert!(
                        session::verify_server_kex(key, &c.server_kex, &c.kex_sig),
                        "CHALLENGE key not signed by the server"
                    );
                    let k = self
                        .kex
                        .session_key(&c.server_kex, self.uid, c.chid)
                        .expect("session key");
                    let mut buf = [0u8; PACKET_SIZE];
                    Bind {
                        uid: self.uid,
                        ackid,
                        chid: c.chid,
                        cookie: c.cookie,
                        client_kex: self.kex.public(),
                    }
                    .encode(&k, &mut buf);
                    if let Ok(mut s) = self.session.lock() {
                        *s = Some(k);
                    }
                    self.send_raw(&buf);
                    return true;
                }
            }
        }
        false
    }

    /// The handshake up to the BIND, which must succeed within [`RECV_TIMEOUT`].
    pub fn handshake(&self, key: &VerifyingKey, ackid: u32) {
        assert!(
            self.try_handshake(key, ackid, RECV_TIMEOUT),
            "uid {}: no CHALLENGE",
            self.uid
        );
    }

    /// The packet as a system packet of this peer's session (MAC, recipient), or `None`.
    pub fn open(&self, buf: &[u8]) -> Option<(SystemPacket, Sealed)> {
        let fields = self.session()?.open(buf)?;
        if fields.recipient != self.uid {
            return None;
        }
        match packet::parse(buf) {
            Ok(Datagram::System(p)) => Some((p, fields)),
            _ => None,
        }
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

    /// The next regular (voice) packet sent by `uid`, skipping everything else; it must
    /// arrive within [`RECV_TIMEOUT`].
    pub fn expect_packet_from(&self, uid: u64) -> Vec<u8> {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while let Some(p) = self.recv_until(deadline) {
            if matches!(packet::parse(&p), Ok(Datagram::Regular { uid: u, .. }) if u == uid) {
                return p;
            }
        }
        panic!("uid {}: no voice packet from {uid}", self.uid);
    }

    /// The next datagram, which must be a system packet of this peer's session.
    pub fn expect_system(&self) -> (SystemPacket, Sealed) {
        let p = self.expect_packet();
        self.open(&p)
            .unwrap_or_else(|| panic!("uid {}: not a system packet of its session", self.uid))
    }

    /// Waits for a system packet of this peer's session with operation `op` about `uid`,
    /// skipping others.
    pub fn expect_op(&self, op: SystemOp, uid: u64) -> Sealed {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while let Some(p) = self.recv_until(deadline) {
            if let Some((sys, f)) = self.open(&p) {
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
