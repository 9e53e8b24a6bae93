//! The voice session: how a member proves its address before the relay sends it anything,
//! and how it then tells the server's system packets from forgeries and replays
//! (PROTOCOL.md §2, "Binding and sessions").
//!
//! 1. Client → KEEPALIVE (the seed's packet, byte for byte) from address A.
//! 2. Server → CHALLENGE to A, at most one per datagram and never larger than it: a
//!    stateless cookie (keyed MAC over A, uid, channel, coarse time) and the server's
//!    X25519 key, signed by the server's Ed25519 key once at start-up.
//! 3. Client → BIND from A: the cookie, a fresh X25519 key of its own (the session nonce)
//!    and a proof: a MAC over the BIND under the session key, which only the holder of that
//!    X25519 key's secret can compute.
//! 4. The server checks the cookie (so A really receives what is sent to it), derives the
//!    session key from X25519, checks the proof (so the sender holds the key), and binds A.
//!    When the member's JOIN named an X25519 key (JOIN_KEX), the BIND must offer that key:
//!    knowing the uid and owning an address is then not enough to take the member's place.
//!    Every system packet to this member from then on carries a MAC under the session key,
//!    its channel, its recipient and a sequence number.
//!
//! Why a MAC per session instead of an Ed25519 signature per packet: a signature costs tens
//! of microseconds and a membership event goes to every member, so a burst of binds in a
//! large channel used to cost K² signatures on a relay worker. A keyed BLAKE3 of 480 bytes
//! costs well under a microsecond, and only the server (who holds the X25519 secret) and
//! this session's client can compute it: a packet of another session, or of an earlier one,
//! does not verify. The expensive step, one X25519 per bind, is bounded by the relay.
//!
//! Everything here is bytes and keys: no I/O, no clock (the caller supplies times).

use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::packet::{self, be_u32, be_u64, Datagram, SystemOp, SystemPacket, PACKET_SIZE};

/// What the server's Ed25519 signature over its X25519 key starts with (domain separation:
/// it can never be mistaken for a signature over a system packet or a control request).
pub const KEX_CONTEXT: &[u8] = b"KV voice session key exchange v1";
/// BLAKE3 key-derivation context of session keys.
const KDF_CONTEXT: &str = "KV 2026-12-01 voice session key v1";
/// What a BIND's proof MAC starts with, so it can never be taken for a sealed packet's MAC
/// under the same key (those cover other bytes, but separation costs nothing).
const BIND_PROOF_CONTEXT: &[u8] = b"KV bind proof v1";

/// Bytes of the cookie's MAC.
pub const COOKIE_LEN: usize = 16;

// CHALLENGE and BIND: fields after the 24-byte header.
const CHID_AT: usize = 24;
const SLOT_AT: usize = 32;
const COOKIE_AT: usize = 40;
const KEX_AT: usize = COOKIE_AT + COOKIE_LEN;
const KEX_SIG_AT: usize = KEX_AT + 32;
const KEX_SIG_END: usize = KEX_SIG_AT + 64;
// BIND: the proof of possession follows the client's key (where CHALLENGE has its signature).
const PROOF_AT: usize = KEX_SIG_AT;
const PROOF_END: usize = PROOF_AT + 32;

// Session packets ("sealed"): fields after the 24-byte header.
const MAC_AT: usize = 24;
const MAC_END: usize = MAC_AT + 32;
const S_CHID_AT: usize = MAC_END;
const S_TO_AT: usize = S_CHID_AT + 8;
const S_SEQ_AT: usize = S_TO_AT + 8;
const S_TIME_AT: usize = S_SEQ_AT + 8;

/// A return-routability cookie: the server's coarse time slot and its MAC over the
/// address, uid, channel and that slot. Only the server can make or check one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// Server time slot it was made in.
    pub slot: u64,
    /// Keyed MAC, truncated.
    pub mac: [u8; COOKIE_LEN],
}

/// Server → unproven address: "prove you receive at this address".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The uid of the KEEPALIVE it answers.
    pub uid: u64,
    /// The ackid of the KEEPALIVE it answers (so the client knows it is an answer).
    pub ackid: u32,
    /// The channel.
    pub chid: u64,
    /// To be echoed in BIND.
    pub cookie: Cookie,
    /// The server's X25519 public key.
    pub server_kex: [u8; 32],
    /// Ed25519 signature by the server's key over [`KEX_CONTEXT`] and `server_kex`.
    pub kex_sig: [u8; 64],
}

/// Client → server: the echoed cookie and the client's X25519 key for this session. On the
/// wire it also carries a proof (see [`Bind::encode`]), checked by [`SessionKey::proves_bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    /// The member.
    pub uid: u64,
    /// Non-zero asks for an ACK (which proves the session key on both sides).
    pub ackid: u32,
    /// The channel.
    pub chid: u64,
    /// As received in CHALLENGE.
    pub cookie: Cookie,
    /// The client's ephemeral X25519 public key: fresh per session, so it is also the
    /// session nonce every later system packet is bound to.
    pub client_kex: [u8; 32],
}

fn header(buf: &[u8], op: SystemOp) -> Option<SystemPacket> {
    match packet::parse(buf) {
        Ok(Datagram::System(p)) if p.op == op => Some(p),
        _ => None,
    }
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&buf[at..at + N]);
    a
}

fn write_cookie(out: &mut [u8; PACKET_SIZE], chid: u64, cookie: &Cookie) {
    out[CHID_AT..CHID_AT + 8].copy_from_slice(&chid.to_be_bytes());
    out[SLOT_AT..SLOT_AT + 8].copy_from_slice(&cookie.slot.to_be_bytes());
    out[COOKIE_AT..COOKIE_AT + COOKIE_LEN].copy_from_slice(&cookie.mac);
}

fn read_cookie(buf: &[u8]) -> Cookie {
    Cookie {
        slot: be_u64(buf, SLOT_AT),
        mac: array(buf, COOKIE_AT),
    }
}

impl Challenge {
    /// Writes the 512-byte packet.
    pub fn encode(&self, out: &mut [u8; PACKET_SIZE]) {
        SystemPacket {
            op: SystemOp::Challenge,
            uid: self.uid,
            ackid: self.ackid,
        }
        .encode(out);
        write_cookie(out, self.chid, &self.cookie);
        out[KEX_AT..KEX_SIG_AT].copy_from_slice(&self.server_kex);
        out[KEX_SIG_AT..KEX_SIG_END].copy_from_slice(&self.kex_sig);
    }

    /// Reads a CHALLENGE; `None` for anything else. Never panics.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let h = header(buf, SystemOp::Challenge)?;
        Some(Self {
            uid: h.uid,
            ackid: h.ackid,
            chid: be_u64(buf, CHID_AT),
            cookie: read_cookie(buf),
            server_kex: array(buf, KEX_AT),
            kex_sig: array(buf, KEX_SIG_AT),
        })
    }
}

impl Bind {
    /// Writes the 512-byte packet with its proof of possession: a MAC over the packet under
    /// `key`, the session key the client derived from the CHALLENGE with the secret of
    /// `client_kex`. The server accepts a BIND only with a proof that verifies.
    pub fn encode(&self, key: &SessionKey, out: &mut [u8; PACKET_SIZE]) {
        self.encode_unproven(out);
        let proof = key.bind_proof(out);
        out[PROOF_AT..PROOF_END].copy_from_slice(proof.as_bytes());
    }

    /// Writes the packet with an all-zero proof, which never verifies: for tests and tools
    /// that forge BINDs without a session key.
    pub fn encode_unproven(&self, out: &mut [u8; PACKET_SIZE]) {
        SystemPacket {
            op: SystemOp::Bind,
            uid: self.uid,
            ackid: self.ackid,
        }
        .encode(out);
        write_cookie(out, self.chid, &self.cookie);
        out[KEX_AT..KEX_SIG_AT].copy_from_slice(&self.client_kex);
        out[PROOF_AT..PROOF_END].fill(0);
    }

    /// Reads a BIND; `None` for anything else. Never panics.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let h = header(buf, SystemOp::Bind)?;
        Some(Self {
            uid: h.uid,
            ackid: h.ackid,
            chid: be_u64(buf, CHID_AT),
            cookie: read_cookie(buf),
            client_kex: array(buf, KEX_AT),
        })
    }
}

fn kex_message(public: &[u8; 32]) -> Vec<u8> {
    [KEX_CONTEXT, public].concat()
}

/// True when `sig` is the server's (`key`) signature over its X25519 key `public`.
pub fn verify_server_kex(key: &VerifyingKey, public: &[u8; 32], sig: &[u8; 64]) -> bool {
    key.verify(&kex_message(public), &Signature::from_bytes(sig))
        .is_ok()
}

/// A 32-byte symmetric key shared by the server and one member for one session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Derives the session key; `None` when X25519 gave the all-zero secret (a low-order
/// point was offered: no shared secret exists).
fn derive(
    shared: [u8; 32],
    client: &[u8; 32],
    server: &[u8; 32],
    uid: u64,
    chid: u64,
) -> Option<SessionKey> {
    if shared == [0u8; 32] {
        return None;
    }
    let mut h = blake3::Hasher::new_derive_key(KDF_CONTEXT);
    h.update(&shared);
    h.update(client);
    h.update(server);
    h.update(&uid.to_be_bytes());
    h.update(&chid.to_be_bytes());
    Some(SessionKey(*h.finalize().as_bytes()))
}

/// The server's side of the key exchange: one X25519 key pair per server start, its
/// public half signed once by the server's Ed25519 key.
#[derive(Clone)]
pub struct ServerKex {
    secret: [u8; 32],
    public: [u8; 32],
    sig: [u8; 64],
}

impl std::fmt::Debug for ServerKex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKex")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ServerKex {
    /// A key pair from 32 random bytes, signed by `signing`.
    pub fn new(signing: &SigningKey, secret: [u8; 32]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        let sig = signing.sign(&kex_message(&public)).to_bytes();
        Self {
            secret,
            public,
            sig,
        }
    }

    /// The X25519 public key sent in CHALLENGE.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The Ed25519 signature over it.
    pub fn signature(&self) -> [u8; 64] {
        self.sig
    }

    /// The session key for a BIND by `uid` in `chid` offering `client_kex`.
    pub fn session_key(&self, client_kex: &[u8; 32], uid: u64, chid: u64) -> Option<SessionKey> {
        let shared = MontgomeryPoint(*client_kex)
            .mul_clamped(self.secret)
            .to_bytes();
        derive(shared, client_kex, &self.public, uid, chid)
    }
}

/// The client's side: a fresh X25519 key pair per session.
#[derive(Clone)]
pub struct ClientKex {
    secret: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for ClientKex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKex")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ClientKex {
    /// A key pair from 32 random bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            secret,
            public: MontgomeryPoint::mul_base_clamped(secret).to_bytes(),
        }
    }

    /// The public key sent in BIND.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The session key with the server whose X25519 key is `server_kex`.
    pub fn session_key(&self, server_kex: &[u8; 32], uid: u64, chid: u64) -> Option<SessionKey> {
        let shared = MontgomeryPoint(*server_kex)
            .mul_clamped(self.secret)
            .to_bytes();
        derive(shared, &self.public, server_kex, uid, chid)
    }
}

/// The fields a session packet carries besides its header, all covered by its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Channel it belongs to.
    pub chid: u64,
    /// The member it was sent to.
    pub recipient: u64,
    /// Per-session sequence number, from 1 (replays within a session are refused).
    pub seq: u64,
    /// Server time, unix milliseconds (informational).
    pub unix_ms: u64,
}

impl SessionKey {
    /// Writes `pkt` with `fields` and the MAC over everything but the MAC.
    pub fn seal(&self, pkt: &SystemPacket, fields: &Sealed, out: &mut [u8; PACKET_SIZE]) {
        pkt.encode(out);
        out[S_CHID_AT..S_CHID_AT + 8].copy_from_slice(&fields.chid.to_be_bytes());
        out[S_TO_AT..S_TO_AT + 8].copy_from_slice(&fields.recipient.to_be_bytes());
        out[S_SEQ_AT..S_SEQ_AT + 8].copy_from_slice(&fields.seq.to_be_bytes());
        out[S_TIME_AT..S_TIME_AT + 8].copy_from_slice(&fields.unix_ms.to_be_bytes());
        let mac = self.mac(out);
        out[MAC_AT..MAC_END].copy_from_slice(mac.as_bytes());
    }

    /// Checks the MAC of a 512-byte system packet (constant time). `None`: forged,
    /// corrupted, unsigned, or sealed for another session.
    pub fn open(&self, buf: &[u8]) -> Option<Sealed> {
        if buf.len() != PACKET_SIZE || !packet::is_system(buf) {
            return None;
        }
        let got = blake3::Hash::from(array::<32>(buf, MAC_AT));
        // blake3::Hash compares in constant time.
        if got != self.mac(buf) {
            return None;
        }
        Some(Sealed {
            chid: be_u64(buf, S_CHID_AT),
            recipient: be_u64(buf, S_TO_AT),
            seq: be_u64(buf, S_SEQ_AT),
            unix_ms: be_u64(buf, S_TIME_AT),
        })
    }

    fn mac(&self, buf: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&buf[..MAC_AT]);
        h.update(&buf[MAC_END..PACKET_SIZE]);
        h.finalize()
    }

    /// True when the 512-byte BIND `buf` carries a valid proof under this key (constant
    /// time): its sender holds the secret of the X25519 key it offers.
    pub fn proves_bind(&self, buf: &[u8]) -> bool {
        if buf.len() != PACKET_SIZE {
            return false;
        }
        // blake3::Hash compares in constant time.
        blake3::Hash::from(array::<32>(buf, PROOF_AT)) == self.bind_proof(buf)
    }

    /// The proof MAC over a BIND: every byte but the proof itself.
    fn bind_proof(&self, buf: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(BIND_PROOF_CONTEXT);
        h.update(&buf[..PROOF_AT]);
        h.update(&buf[PROOF_END..PACKET_SIZE]);
        h.finalize()
    }
}

/// Anti-replay window over a session's sequence numbers (as IPsec's): the highest seen and
/// a bitmap of the 64 below it, so reordered packets pass and duplicates do not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// True (and remembered) the first time `seq` is seen within the window.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let back = self.highest - seq;
        if back >= 64 {
            return false;
        }
        let bit = 1u64 << back;
        let fresh = self.seen & bit == 0;
        self.seen |= bit;
        fresh
    }
}

/// The ackid of a system packet without parsing the rest (0 when too short).
pub fn ackid_of(buf: &[u8]) -> u32 {
    if buf.len() < 20 {
        0
    } else {
        be_u32(buf, 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signing() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn both_sides_derive_the_same_key_and_only_they_can_seal() {
        let server = ServerKex::new(&signing(), [1u8; 32]);
        assert!(verify_server_kex(
            &signing().verifying_key(),
            &server.public(),
            &server.signature()
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(!verify_server_kex(
            &other,
            &server.public(),
            &server.signature()
        ));
        let client = ClientKex::new([2u8; 32]);
        let kc = client.session_key(&server.public(), 10, 5).unwrap();
        let ks = server.session_key(&client.public(), 10, 5).unwrap();
        assert_eq!(kc, ks);
        // Another uid, channel or client key gives another session key.
        assert_ne!(server.session_key(&client.public(), 11, 5).unwrap(), kc);
        assert_ne!(server.session_key(&client.public(), 10, 6).unwrap(), kc);
        let next = ClientKex::new([3u8; 32]);
        assert_ne!(server.session_key(&next.public(), 10, 5).unwrap(), kc);
        // The low-order point 0 gives no key.
        assert_eq!(server.session_key(&[0u8; 32], 10, 5), None);

        let fields = Sealed {
            chid: 5,
            recipient: 10,
            seq: 1,
            unix_ms: 99,
        };
        let pkt = SystemPacket {
            op: SystemOp::Shutdown,
            uid: 0,
            ackid: 0,
        };
        let mut buf = [0u8; PACKET_SIZE];
        ks.seal(&pkt, &fields, &mut buf);
        assert_eq!(packet::parse(&buf), Ok(Datagram::System(pkt)));
        assert_eq!(kc.open(&buf), Some(fields));
        let stale = server.session_key(&next.public(), 10, 5).unwrap();
        assert_eq!(stale.open(&buf), None, "another session's key");
        for at in [4, 8, 30, S_CHID_AT, S_TO_AT + 7, S_SEQ_AT, 400] {
            let mut bad = buf;
            bad[at] ^= 1;
            assert_eq!(kc.open(&bad), None, "byte {at}");
        }
    }

    #[test]
    fn challenge_and_bind_round_trip() {
        let c = Challenge {
            uid: 42,
            ackid: 7,
            chid: 9,
            cookie: Cookie {
                slot: 3,
                mac: [5; COOKIE_LEN],
            },
            server_kex: [6; 32],
            kex_sig: [8; 64],
        };
        let mut buf = [0u8; PACKET_SIZE];
        c.encode(&mut buf);
        assert_eq!(Challenge::decode(&buf), Some(c));
        assert_eq!(Bind::decode(&buf), None);
        let b = Bind {
            uid: 42,
            ackid: 8,
            chid: 9,
            cookie: c.cookie,
            client_kex: [1; 32],
        };
        b.encode_unproven(&mut buf);
        assert_eq!(Bind::decode(&buf), Some(b));
        assert_eq!(ackid_of(&buf), 8);
        assert!(buf[KEX_SIG_AT..].iter().all(|&x| x == 0));
    }

    #[test]
    fn only_the_holder_of_the_client_key_can_prove_a_bind() {
        let server = ServerKex::new(&signing(), [1u8; 32]);
        let client = ClientKex::new([2u8; 32]);
        let kc = client.session_key(&server.public(), 42, 9).unwrap();
        let b = Bind {
            uid: 42,
            ackid: 8,
            chid: 9,
            cookie: Cookie {
                slot: 3,
                mac: [5; COOKIE_LEN],
            },
            client_kex: client.public(),
        };
        let mut buf = [0u8; PACKET_SIZE];
        b.encode(&kc, &mut buf);
        assert_eq!(Bind::decode(&buf), Some(b));
        // The server derives the same key from the offered public key and accepts it.
        let ks = server.session_key(&b.client_kex, 42, 9).unwrap();
        assert!(ks.proves_bind(&buf));
        // Without the proof, with another client's key or with any byte changed: refused.
        let mut unproven = [0u8; PACKET_SIZE];
        b.encode_unproven(&mut unproven);
        assert!(!ks.proves_bind(&unproven));
        let thief = ClientKex::new([3u8; 32])
            .session_key(&server.public(), 42, 9)
            .unwrap();
        let mut stolen = [0u8; PACKET_SIZE];
        b.encode(&thief, &mut stolen);
        assert!(
            !ks.proves_bind(&stolen),
            "someone else's public key, own secret"
        );
        for at in [
            4,
            20,
            CHID_AT,
            SLOT_AT,
            COOKIE_AT,
            KEX_AT + 31,
            PROOF_AT,
            500,
        ] {
            let mut bad = buf;
            bad[at] ^= 1;
            assert!(!ks.proves_bind(&bad), "byte {at}");
        }
        assert!(!ks.proves_bind(&buf[..511]));
        // A proof is not a sealed packet's MAC.
        assert_eq!(ks.open(&buf), None);
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(3));
        assert!(w.accept(2), "reordered, still inside the window");
        assert!(!w.accept(2));
        assert!(w.accept(100));
        assert!(w.accept(40));
        assert!(!w.accept(36), "too old");
        assert!(w.accept(1000));
        assert!(!w.accept(100));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Challenge::decode(&bytes);
            let _ = Bind::decode(&bytes);
            let k = ClientKex::new([2u8; 32]).session_key(&[9u8; 32], 1, 1);
            if let Some(k) = k {
                prop_assert!(k.open(&bytes).is_none() || bytes.len() == PACKET_SIZE);
            }
        }
    }
}
