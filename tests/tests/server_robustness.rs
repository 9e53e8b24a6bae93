//! Garbage in, no harm done: random TCP requests and random datagrams, then the server
//! still answers and relays.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use kv_proto::{ControlReply as Rep, ControlRequest as Req, ErrorCode, PACKET_SIZE};
use kv_tests::{ServerProcess, UdpPeer};
use rand::{Rng, SeedableRng};

#[test]
fn thousand_random_tcp_requests_then_a_valid_one() {
    // A short request timeout: random bytes often stop mid-request without closing, and
    // those clients are answered INVAL only when it expires.
    let s = ServerProcess::start_with(&["--request-timeout", "0.2"]);
    let admin = s.admin_uid;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4B56);
    let mut replies = 0;
    for i in 0..1000 {
        let len = rng.random_range(0..120);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the time, a real command type so decoding goes past the first word; some
        // of those name the admin, so real (permission-checked) work happens.
        if i % 2 == 0 && len >= 4 {
            let ty: u32 = rng.random_range(0..25);
            bytes[..4].copy_from_slice(&ty.to_be_bytes());
            if i % 4 == 0 && len >= 12 {
                bytes[4..12].copy_from_slice(&admin.to_be_bytes());
            }
        }
        let mut c = TcpStream::connect(s.addr).expect("server accepts");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&bytes);
        if i % 3 != 0 {
            let _ = c.shutdown(Shutdown::Write);
        }
        if i % 5 == 0 {
            // Some clients hang up without reading.
            continue;
        }
        let mut reply = Vec::new();
        if c.read_to_end(&mut reply).is_ok() && !reply.is_empty() {
            replies += 1;
            assert!(reply.len() >= 8, "a reply is at least a status");
        }
    }
    assert!(replies > 0);
    // Still serving, correctly.
    let u = s.signup();
    assert!(kv_proto::is_valid_uid(u));
    assert!(matches!(
        s.request(&Req::UserInfo { uid: admin }),
        Rep::UserInfo { .. }
    ));
    assert_eq!(s.err(&Req::GetPort { chid: 7 }), ErrorCode::Param);
}

#[test]
fn ten_thousand_random_datagrams_then_valid_traffic() {
    let s = ServerProcess::start();
    let key = s.public_key();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let (a_uid, b_uid) = (s.signup(), s.signup());
    let port = s.ok(&Req::Join {
        uid: a_uid,
        juid: a_uid,
        chid: ch,
    });
    s.ok(&Req::Join {
        uid: b_uid,
        juid: b_uid,
        chid: ch,
    });
    let a = UdpPeer::new(s.udp_addr(port), a_uid);
    let b = UdpPeer::new(s.udp_addr(port), b_uid);
    a.bind(&key);
    b.bind(&key);
    a.drain(Duration::from_millis(100));

    let attacker = UdpPeer::new(s.udp_addr(port), 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4B57);
    let mut buf = [0u8; 1024];
    for i in 0..10_000 {
        let len = match i % 4 {
            0 => PACKET_SIZE,
            1 => rng.random_range(0..1024),
            _ => PACKET_SIZE,
        };
        rng.fill(&mut buf[..len]);
        match i % 8 {
            // System-shaped, so the checksum path runs.
            0 | 1 => buf[..4].copy_from_slice(&[0xFF; 4]),
            // A member's uid from the wrong address.
            2 => buf[..8].copy_from_slice(&a_uid.to_be_bytes()),
            _ => {}
        }
        attacker.send_raw(&buf[..len]);
        if i % 500 == 0 {
            // Let the server keep up instead of overflowing socket buffers.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The attacker never got anything back: no reflection.
    attacker.expect_silence(Duration::from_millis(300));
    // Members got nothing from the garbage either.
    a.expect_silence(Duration::from_millis(100));
    // Valid traffic still flows, and control still works.
    let sent = a.voice(b"after the storm");
    let mut got = b.expect_packet();
    while got[..4] == [0xFF; 4] {
        got = b.expect_packet(); // skip any late system packet
    }
    assert_eq!(got, sent.to_vec());
    assert_eq!(s.ok(&Req::GetPort { chid: ch }), port);
    assert!(kv_proto::is_valid_uid(s.signup()));
}

#[test]
fn many_concurrent_connections_are_served() {
    let s = ServerProcess::start_with(&["--max-connections", "4"]);
    let addr = s.addr;
    let handles: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                match kv_tests::request(addr, &Req::Register { auid: 0, perm: 0 }) {
                    Rep::Value(u) => u,
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut ids: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 32);
}
