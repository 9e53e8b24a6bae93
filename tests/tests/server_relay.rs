//! The UDP relay against the real server: the binding handshake, fan-out, every drop
//! rule, ACK, peer timeout, and the session-authenticated JOIN/LEAVE/KICK/SHUTDOWN
//! packets (the CHALLENGE's key verified with the key from SERVER_INFO).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use kv_proto::{ControlReply as Rep, ControlRequest as Req, SystemOp, PACKET_SIZE};
use kv_tests::udp::keepalive_packet;
use kv_tests::{ServerProcess, UdpPeer};

const QUIET: Duration = Duration::from_millis(300);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A channel owned by the admin with `n` signed-up users joined (not yet bound).
fn channel(s: &ServerProcess, n: usize) -> (u64, Vec<UdpPeer>) {
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    (ch, s.joined_peers(ch, n))
}

/// A channel with `n` members, all bound, announcements drained.
fn bound_channel(s: &ServerProcess, key: &VerifyingKey, n: usize) -> (u64, Vec<UdpPeer>) {
    let (ch, peers) = channel(s, n);
    for p in &peers {
        p.bind(key);
    }
    for p in &peers {
        p.drain(Duration::from_millis(100));
    }
    (ch, peers)
}

#[test]
fn three_peers_learn_each_other_and_relay() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let (ch, peers) = channel(&s, 3);
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
    let before = unix_ms();

    // A binds: it is alone, so only its ACK comes back.
    a.handshake(&key, 11);
    let (ack, f) = a.expect_system();
    assert_eq!((ack.op, ack.uid, ack.ackid), (SystemOp::Ack, a.uid, 11));
    assert_eq!(f.chid, ch);
    assert!(f.unix_ms >= before.saturating_sub(1000) && f.unix_ms <= unix_ms() + 1000);

    // B binds: B learns about A, A learns about B.
    b.handshake(&key, 22);
    let (j, f) = b.expect_system();
    assert_eq!((j.op, j.uid, f.chid), (SystemOp::Join, a.uid, ch));
    let (ack, _) = b.expect_system();
    assert_eq!((ack.op, ack.ackid), (SystemOp::Ack, 22));
    let (j, _) = a.expect_system();
    assert_eq!((j.op, j.uid), (SystemOp::Join, b.uid));

    // C binds: it hears JOIN for A and B (join order); both hear JOIN(C).
    c.handshake(&key, 33);
    let mut seen = vec![];
    for _ in 0..3 {
        let (p, _) = c.expect_system();
        seen.push((p.op, p.uid));
    }
    assert_eq!(
        seen,
        [
            (SystemOp::Join, a.uid),
            (SystemOp::Join, b.uid),
            (SystemOp::Ack, c.uid)
        ]
    );
    for p in [a, b] {
        let (j, _) = p.expect_system();
        assert_eq!((j.op, j.uid), (SystemOp::Join, c.uid));
    }

    // Voice from each goes, byte for byte, to the two others and not back.
    for (i, sender) in peers.iter().enumerate() {
        let sent = sender.voice(&[i as u8 + 1; 504]);
        for (j, other) in peers.iter().enumerate() {
            if i != j {
                assert_eq!(other.expect_packet(), sent.to_vec());
            }
        }
        sender.expect_silence(QUIET);
    }
}

#[test]
fn every_drop_rule() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let (ch, peers) = bound_channel(&s, &key, 2);
    let (a, b) = (&peers[0], &peers[1]);
    let port = a.server.port();

    // Wrong size from a bound member: too short, too long, empty.
    let mut pkt = [0u8; PACKET_SIZE + 1];
    pkt[..8].copy_from_slice(&a.uid.to_be_bytes());
    for len in [0, 1, 8, 511, 513] {
        a.send_raw(&pkt[..len]);
    }
    // Not joined: a registered user, and an unknown uid; uid 0.
    let outsider = UdpPeer::new(a.server, s.signup());
    outsider.voice(b"hello");
    outsider.keepalive(9);
    UdpPeer::new(a.server, 0x1234).voice(b"x");
    UdpPeer::new(a.server, 0).voice(b"x");
    // A member's uid from another address (spoofing A): voice and keepalive with ackid.
    // A is bound and did not JOIN again, so not even a CHALLENGE comes back.
    let spoof = UdpPeer::new(a.server, a.uid);
    spoof.voice(b"spoof");
    spoof.keepalive(77);
    // Bad checksum, from A's real address.
    let mut bad = keepalive_packet(a.uid, 5);
    bad[20] ^= 0xFF;
    a.send_raw(&bad);
    // Operations only the server may send, and an unknown operation.
    for op in [
        SystemOp::Join as i32,
        SystemOp::Leave as i32,
        SystemOp::Ack as i32,
        SystemOp::Shutdown as i32,
        i32::MIN + 99,
        5,
    ] {
        let mut p = keepalive_packet(a.uid, 5);
        p[4..8].copy_from_slice(&op.to_be_bytes());
        let crc = crc32_of(&p[..20]);
        p[20..24].copy_from_slice(&crc.to_be_bytes());
        a.send_raw(&p);
    }

    for p in [a, b, &outsider, &spoof] {
        p.expect_silence(QUIET);
    }
    // A member of another channel is not a member of this one.
    let (_, other) = bound_channel(&s, &key, 1);
    let stranger = UdpPeer::new(a.server, other[0].uid);
    stranger.voice(b"wrong channel");
    b.expect_silence(QUIET);

    // The channel still relays valid packets afterwards.
    let sent = a.voice(b"still fine");
    assert_eq!(b.expect_packet(), sent.to_vec());
    assert_eq!(s.ok(&Req::GetPort { chid: ch }), u64::from(port));
}

/// CRC-32 (IEEE), bitwise; small and independent of the crate under test.
fn crc32_of(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn independent_crc_matches_the_wire() {
    let p = keepalive_packet(42, 7);
    assert_eq!(
        crc32_of(&p[..20]),
        u32::from_be_bytes(p[20..24].try_into().unwrap())
    );
}

#[test]
fn keepalive_ack() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let (_, peers) = bound_channel(&s, &key, 1);
    let a = &peers[0];
    a.keepalive(0);
    a.expect_silence(QUIET);
    for ackid in [1, 0xDEAD_BEEF, u32::MAX] {
        a.keepalive(ackid);
        let (ack, _) = a.expect_system();
        assert_eq!((ack.op, ack.uid, ack.ackid), (SystemOp::Ack, a.uid, ackid));
    }
    // The ACK is sealed for A's session: another session's key does not open it.
    a.keepalive(3);
    let raw = a.expect_packet();
    assert!(a.open(&raw).is_some());
    let (_, others) = bound_channel(&s, &key, 1);
    assert!(others[0].session().unwrap().open(&raw).is_none());
}

#[test]
fn silent_peer_times_out() {
    let s = ServerProcess::start_with(&["--peer-timeout", "0.5"]);
    let key = s.public_key();
    let (ch, peers) = bound_channel(&s, &key, 2);
    let (a, b) = (&peers[0], &peers[1]);
    // B speaks once, then stays silent; A keeps talking.
    b.keepalive(0);
    let start = Instant::now();
    let mut left = None;
    while start.elapsed() < Duration::from_secs(5) {
        a.keepalive(0);
        if let Some(p) = a.recv(Duration::from_millis(100)) {
            let (sys, _) = a.open(&p).expect("sealed for A");
            assert_eq!((sys.op, sys.uid), (SystemOp::Leave, b.uid));
            left = Some(start.elapsed());
            break;
        }
    }
    let left = left.expect("B timed out");
    assert!(left >= Duration::from_millis(450), "too early: {left:?}");
    match s.request(&Req::ChannelInfo { chid: ch }) {
        Rep::ChannelInfo(i) => assert_eq!(i.members, vec![(a.uid, String::new())]),
        other => panic!("{other:?}"),
    }
    // B's packets are dropped now; it can join again and is announced again.
    b.voice(b"late");
    a.expect_silence(Duration::from_millis(200));
    s.ok(&Req::Join {
        uid: b.uid,
        juid: b.uid,
        chid: ch,
    });
    b.bind(&key);
    a.keepalive(0);
    a.expect_op(SystemOp::Join, b.uid);
}

#[test]
fn kick_leave_and_unregister_are_announced() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let (ch, peers) = bound_channel(&s, &key, 3);
    let (a, b, c) = (&peers[0], &peers[1], &peers[2]);

    // Admin kicks B: everyone left hears LEAVE(B), B itself KICK.
    s.ok(&Req::Leave {
        uid: s.admin_uid,
        luid: b.uid,
        chid: ch,
    });
    for p in [a, c] {
        let (l, f) = p.expect_system();
        assert_eq!((l.op, l.uid, f.chid), (SystemOp::Leave, b.uid, ch));
    }
    let (k, f) = b.expect_system();
    assert_eq!((k.op, k.uid, f.chid), (SystemOp::Kick, b.uid, ch));
    b.voice(b"kicked");
    a.expect_silence(QUIET);

    // C leaves by itself: A hears it, C does not.
    s.ok(&Req::Leave {
        uid: c.uid,
        luid: c.uid,
        chid: ch,
    });
    let (l, _) = a.expect_system();
    assert_eq!((l.op, l.uid), (SystemOp::Leave, c.uid));
    c.expect_silence(QUIET);

    // Unregistering a member removes it from the channel: LEAVE to it and the others.
    let d_uid = s.signup();
    s.ok(&Req::Join {
        uid: d_uid,
        juid: d_uid,
        chid: ch,
    });
    let d = UdpPeer::new(a.server, d_uid);
    d.bind(&key);
    a.expect_op(SystemOp::Join, d_uid);
    s.ok(&Req::Unregister {
        auid: d_uid,
        uid: d_uid,
    });
    a.expect_op(SystemOp::Leave, d_uid);
    d.expect_op(SystemOp::Kick, d_uid);
    d.voice(b"gone");
    a.expect_silence(QUIET);
}

#[test]
fn delete_sends_shutdown() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let (ch, peers) = bound_channel(&s, &key, 2);
    s.ok(&Req::Delete {
        uid: s.admin_uid,
        chid: ch,
    });
    for p in &peers {
        let (sd, f) = p.expect_system();
        assert_eq!((sd.op, f.chid), (SystemOp::Shutdown, ch));
    }
    // The socket is closed: nothing comes back any more.
    peers[0].keepalive(1);
    peers[0].expect_silence(QUIET);
}

#[test]
fn server_stop_sends_shutdown_to_every_channel() {
    let mut s = ServerProcess::start();
    let key = s.public_key();
    let (ch1, p1) = bound_channel(&s, &key, 2);
    let (ch2, p2) = bound_channel(&s, &key, 1);
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    for (ch, peers) in [(ch1, &p1), (ch2, &p2)] {
        for p in peers.iter() {
            let (sd, f) = p.expect_system();
            assert_eq!((sd.op, f.chid), (SystemOp::Shutdown, ch));
        }
    }
}

#[test]
fn abusive_sender_is_rate_limited() {
    let s = ServerProcess::start_with(&["--max-member-pps", "50"]);
    let key = s.public_key();
    let (_, peers) = bound_channel(&s, &key, 2);
    let (a, b) = (&peers[0], &peers[1]);
    let start = Instant::now();
    for i in 0..500u32 {
        a.voice(&i.to_be_bytes());
    }
    let mut got = 0;
    let mut last = start.elapsed();
    while b.recv(Duration::from_millis(300)).is_some() {
        got += 1;
        last = start.elapsed();
    }
    // Burst of 20 plus 50 per second for as long as the server was receiving them (it
    // refills by its own clock, so count until the last forwarded packet); far below 500.
    let allowed = 20.0 + 50.0 * last.as_secs_f64() + 5.0;
    assert!(got > 0, "some packets pass");
    assert!(f64::from(got) <= allowed, "got {got}, allowed {allowed}");
    // After a pause the member may speak again.
    std::thread::sleep(Duration::from_millis(200));
    let sent = a.voice(b"ok");
    assert_eq!(b.expect_packet(), sent.to_vec());
}
