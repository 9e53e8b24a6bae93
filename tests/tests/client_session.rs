//! The voice session's reactions to the server's system packets, through the real server:
//! forged packets are ignored and counted, a kick or a closing channel ends `kv join`
//! with a clear message and exit status 3.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use kv_client::control::ControlClient;
use kv_proto::packet::{SystemOp, SystemPacket};
use kv_tests::kv::{Joined, Room, JOIN_GRACE};
use kv_tests::lossy::{Impairment, LossyRelay};
use kv_tests::ServerProcess;

const ADMIT: Duration = Duration::from_secs(10);

fn system(op: SystemOp, uid: u64) -> SystemPacket {
    SystemPacket { op, uid, ackid: 0 }
}

#[test]
fn forged_system_packets_are_ignored_and_counted() {
    let server = ServerProcess::start();
    let room = Room::new(server.addr, 3);
    // The listener's voice goes through a clean relay, which can also inject packets
    // that look like they come from the server's channel socket.
    let relay =
        LossyRelay::start(server.udp_addr(u64::from(room.port())), Impairment::none()).unwrap();
    let via = relay.addr().to_string();
    let l = room.join(1, &["--duration", "4", "--voice-addr", &via]);
    l.wait_for("admitted", ADMIT);
    let me = room.uids[1];
    let mut buf = [0u8; 512];
    // 1. SHUTDOWN signed by someone else's key.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    system(SystemOp::Shutdown, 0).encode_signed(&stranger, room.chid, 0, &mut buf);
    relay.inject(&buf);
    // 2. A LEAVE for the listener itself, unsigned (as the seed's server would send it).
    system(SystemOp::Leave, me).encode(&mut buf);
    relay.inject(&buf);
    // 3. A JOIN with a signature of garbage.
    // (The checksum covers bytes 0..20 only, so the one `encode` wrote stays valid.)
    system(SystemOp::Join, 12345).encode(&mut buf);
    buf[24..88].fill(0xAB);
    relay.inject(&buf);
    std::thread::sleep(Duration::from_millis(300));
    // A real member joining still gets through: the server's own JOIN is signed.
    let real = room.join(2, &["--duration", "1"]);
    let r = l.finish(JOIN_GRACE);
    real.finish(JOIN_GRACE).assert_ok();
    r.assert_ok();
    assert_eq!(r.count("shutdown"), 0, "{:?}", r.events);
    assert_eq!(r.count("kicked"), 0, "{:?}", r.events);
    assert!(!r.saw("peer_joined", 12345), "forged JOIN accepted");
    assert!(
        r.saw("peer_joined", room.uids[2]),
        "real JOIN missed: {:?}",
        r.events
    );
    assert!(r.left()["forged"].as_u64().unwrap() >= 3, "{}", r.left());
}

/// Admits a listener (uid 1 of a two-member room), lets `end` make the server end its
/// session, and returns its output once it has exited with status 3 (ended by the server).
fn session_ended_by(end: impl FnOnce(&mut ServerProcess, &Room)) -> Joined {
    let mut server = ServerProcess::start();
    let room = Room::new(server.addr, 2);
    let l = room.join(1, &["--duration", "20"]);
    l.wait_for("admitted", ADMIT);
    end(&mut server, &room);
    let r = l.finish(Duration::from_secs(10));
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    r
}

#[test]
fn kicked_client_stops_with_a_message() {
    let r = session_ended_by(|server, room| {
        server
            .admin_client()
            .leave(server.admin_uid, room.uids[1], room.chid)
            .expect("admin kicks");
    });
    assert!(r.stderr.contains("removed from channel"), "{}", r.stderr);
    assert_eq!(r.count("kicked"), 1);
}

#[test]
fn closing_channel_ends_the_session() {
    let r = session_ended_by(|_, room| {
        ControlClient::new(&room.server)
            .unwrap()
            .delete(room.uids[0], room.chid)
            .expect("owner deletes");
    });
    assert!(r.stderr.contains("server closed channel"), "{}", r.stderr);
    assert_eq!(r.count("shutdown"), 1);
}

#[test]
fn server_shutdown_ends_the_session() {
    let r = session_ended_by(|server, _| assert!(server.terminate().success()));
    assert_eq!(r.count("shutdown"), 1);
}

#[test]
fn a_vanished_server_is_reported_as_link_lost() {
    let mut server = ServerProcess::start();
    let room = Room::new(server.addr, 2);
    let l = room.join(1, &["--duration", "30"]);
    l.wait_for("admitted", ADMIT);
    // No SHUTDOWN, no LEAVE: the server just disappears.
    server.sigkill();
    l.wait_for("link_lost", Duration::from_secs(15));
    l.terminate();
    let r = l.finish(Duration::from_secs(10));
    // The final statistics are printed; the LEAVE over TCP then fails (nobody listens) and
    // says so.
    assert!(r.first("left").is_some(), "{:?}", r.events);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("unreachable"), "{}", r.stderr);
}
