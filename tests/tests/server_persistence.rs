//! Users, channels, names, the admin and the key survive a clean restart and a SIGKILL.

use kv_proto::{ControlReply as Rep, ControlRequest as Req, Perms, SystemOp};
use kv_tests::{ServerProcess, UdpPeer};

/// State made before the restart, checked after it.
struct Made {
    user: u64,
    perms_user: u64,
    chid: u64,
    port: u64,
    key: [u8; 32],
    admin: u64,
}

fn make(s: &ServerProcess) -> Made {
    let user = s.signup();
    s.ok(&Req::SetUserName {
        uid: user,
        target: user,
        name: "persisted".into(),
    });
    let perms_user = s.register_with((Perms::ADD_USER | Perms::KICK_USER).bits());
    let chid = s.ok(&Req::Create { uid: user });
    s.ok(&Req::SetChannelName {
        uid: user,
        chid,
        name: "room".into(),
    });
    let port = s.ok(&Req::GetPort { chid });
    Made {
        user,
        perms_user,
        chid,
        port,
        key: s.public_key().to_bytes(),
        admin: s.admin_uid,
    }
}

fn check(s: &ServerProcess, m: &Made) {
    assert_eq!(s.admin_uid, m.admin, "same admin after restart");
    assert_eq!(s.public_key().to_bytes(), m.key, "same key after restart");
    assert_eq!(
        s.request(&Req::UserInfo { uid: m.user }),
        Rep::UserInfo {
            perms: Perms::ADD_CHANNEL.bits(),
            name: "persisted".into()
        }
    );
    assert_eq!(
        s.request(&Req::UserInfo { uid: m.perms_user }),
        Rep::UserInfo {
            perms: (Perms::ADD_USER | Perms::KICK_USER).bits(),
            name: String::new()
        }
    );
    assert_eq!(s.request(&Req::GetChannels), Rep::Channels(vec![m.chid]));
    assert_eq!(
        s.ok(&Req::GetPort { chid: m.chid }),
        m.port,
        "same port when free"
    );
    match s.request(&Req::ChannelInfo { chid: m.chid }) {
        Rep::ChannelInfo(i) => {
            assert_eq!((i.name.as_str(), i.owner, i.port), ("room", m.user, m.port));
            assert!(i.members.is_empty(), "membership is not persisted");
        }
        other => panic!("{other:?}"),
    }
    // The re-opened channel relays: the owner joins and gets an ACK on the same port.
    let port = s.ok(&Req::Join {
        uid: m.user,
        juid: m.user,
        chid: m.chid,
    });
    assert_eq!(port, m.port);
    let peer = UdpPeer::new(s.udp_addr(port), m.user);
    peer.bind(&s.public_key());
    // The owner still owns it.
    assert_eq!(
        s.ok(&Req::Delete {
            uid: m.user,
            chid: m.chid
        }),
        m.chid
    );
    let (sd, _) = peer.expect_system();
    assert_eq!(sd.op, SystemOp::Shutdown);
}

#[test]
fn survives_clean_restart() {
    let mut s = ServerProcess::start();
    let m = make(&s);
    assert!(s.terminate().success());
    s.restart();
    check(&s, &m);
}

#[test]
fn survives_sigkill_right_after_reply() {
    let mut s = ServerProcess::start();
    let m = make(&s);
    // The last change was replied to just now; kill without any clean-up.
    s.sigkill();
    s.restart();
    check(&s, &m);
}

#[test]
fn every_reply_is_durable_under_sigkill() {
    let mut s = ServerProcess::start();
    let mut users = Vec::new();
    for _ in 0..20 {
        users.push(s.signup());
    }
    let ch = s.ok(&Req::Create { uid: users[0] });
    s.sigkill();
    s.restart();
    for u in users {
        assert!(matches!(
            s.request(&Req::UserInfo { uid: u }),
            Rep::UserInfo { .. }
        ));
    }
    assert_eq!(s.request(&Req::GetChannels), Rep::Channels(vec![ch]));
}

#[test]
fn deleted_things_stay_deleted() {
    let mut s = ServerProcess::start();
    let u = s.signup();
    let ch = s.ok(&Req::Create { uid: u });
    s.ok(&Req::Delete { uid: u, chid: ch });
    s.ok(&Req::Unregister { auid: u, uid: u });
    s.sigkill();
    s.restart();
    assert_eq!(s.request(&Req::GetChannels), Rep::Channels(vec![]));
    assert!(matches!(
        s.request(&Req::UserInfo { uid: u }),
        Rep::Error(kv_proto::ErrorCode::Param)
    ));
}

#[test]
fn channel_moves_when_its_port_is_taken() {
    let mut s = ServerProcess::start();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let port = s.ok(&Req::GetPort { chid: ch });
    assert!(s.terminate().success());
    // Someone else takes the port while the server is down.
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", port as u16)).unwrap();
    s.restart();
    let new_port = s.ok(&Req::GetPort { chid: ch });
    assert_ne!(new_port, port);
    drop(squatter);
    // The new port is remembered.
    s.restart();
    assert_eq!(s.ok(&Req::GetPort { chid: ch }), new_port);
}

#[test]
fn udp_port_range_is_respected() {
    // Find a free block of ports, then confine the server to it.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = probe.local_addr().unwrap().port().clamp(20000, 60000);
    drop(probe);
    // Room to spare: other tests' sockets may hold some of these ports.
    let range = format!("{}-{}", base, base + 31);
    let s = ServerProcess::start_with(&["--udp-ports", &range]);
    let mut ports = Vec::new();
    for _ in 0..3 {
        let ch = s.ok(&Req::Create { uid: s.admin_uid });
        ports.push(s.ok(&Req::GetPort { chid: ch }));
    }
    for p in &ports {
        assert!(
            (u64::from(base)..=u64::from(base) + 31).contains(p),
            "{p} in {range}"
        );
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3);
}
