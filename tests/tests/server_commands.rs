//! Every control command against the real server, in raw bytes: success and error paths.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kv_proto::control::features;
use kv_proto::{ControlReply as Rep, ControlRequest as Req, ErrorCode as E, Perms};
use kv_tests::control::{encode, encode_padded, exchange, exchange_half_closed, request_padded};
use kv_tests::ServerProcess;

/// `status 0, error code` as bytes.
fn error_bytes(code: E) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    v.extend_from_slice(&(code as u32).to_be_bytes());
    v
}

#[test]
fn startup_lines_and_admin() {
    let s = ServerProcess::start();
    assert!(s.addr.ip().is_loopback());
    assert_ne!(s.addr.port(), 0);
    assert!(kv_proto::is_valid_uid(s.admin_uid));
    assert_eq!(
        s.request(&Req::UserInfo { uid: s.admin_uid }),
        Rep::UserInfo {
            perms: Perms::ADMIN.bits(),
            name: String::new()
        }
    );
}

#[test]
fn register_and_unregister() {
    let s = ServerProcess::start();
    // Sign-up (auid 0) ignores perm and gets perm_add_channel.
    let u = s.ok(&Req::Register {
        auid: 0,
        perm: Perms::ADMIN.bits(),
    });
    assert!(kv_proto::is_valid_uid(u));
    assert_eq!(
        s.request(&Req::UserInfo { uid: u }),
        Rep::UserInfo {
            perms: Perms::ADD_CHANNEL.bits(),
            name: String::new()
        }
    );
    // Ids are random and distinct.
    let v = s.signup();
    assert_ne!(u, v);
    // auid without perm_register_user: ACCESS; unknown auid: PARAM.
    assert_eq!(s.err(&Req::Register { auid: u, perm: 0 }), E::Access);
    assert_eq!(
        s.err(&Req::Register {
            auid: 424242,
            perm: 0
        }),
        E::Param
    );
    // Admin grants chosen perms.
    let reg = s.register_with((Perms::REGISTER_USER | Perms::ADD_USER).bits());
    // A registrar grants only bits it holds.
    let w = s.ok(&Req::Register {
        auid: reg,
        perm: Perms::ADD_USER.bits(),
    });
    assert_eq!(
        s.request(&Req::UserInfo { uid: w }),
        Rep::UserInfo {
            perms: Perms::ADD_USER.bits(),
            name: String::new()
        }
    );
    assert_eq!(
        s.err(&Req::Register {
            auid: reg,
            perm: Perms::DELETE_USER.bits()
        }),
        E::Access
    );
    assert_eq!(
        s.err(&Req::Register {
            auid: s.admin_uid,
            perm: 1 << 33
        }),
        E::Access
    );

    // UNREGISTER: another user needs perm_delete_user; oneself needs nothing.
    assert_eq!(s.err(&Req::Unregister { auid: u, uid: v }), E::Access);
    assert_eq!(s.ok(&Req::Unregister { auid: u, uid: u }), u);
    assert_eq!(s.err(&Req::UserInfo { uid: u }), E::Param);
    assert_eq!(s.err(&Req::Unregister { auid: v, uid: u }), E::Param);
    assert_eq!(s.err(&Req::Unregister { auid: u, uid: v }), E::Param);
    assert_eq!(
        s.ok(&Req::Unregister {
            auid: s.admin_uid,
            uid: v
        }),
        v
    );
}

#[test]
fn channels_create_join_leave_delete() {
    let s = ServerProcess::start();
    let (owner, other) = (s.signup(), s.signup());
    let none = s.register_with(0);
    assert_eq!(s.err(&Req::Create { uid: none }), E::Access);
    assert_eq!(s.err(&Req::Create { uid: 0 }), E::Param);
    assert_eq!(s.err(&Req::Create { uid: 99 }), E::Param);

    let ch = s.ok(&Req::Create { uid: owner });
    assert!(kv_proto::is_valid_uid(ch));
    let ch2 = s.ok(&Req::Create { uid: s.admin_uid });
    assert_eq!(s.request(&Req::GetChannels), Rep::Channels(vec![ch, ch2]));
    let port = s.ok(&Req::GetPort { chid: ch });
    assert!((1..65536).contains(&port));
    assert_ne!(port, s.ok(&Req::GetPort { chid: ch2 }));
    assert_eq!(s.err(&Req::GetPort { chid: 12 }), E::Param);

    // JOIN returns the port; someone else needs perm_add_user.
    assert_eq!(
        s.ok(&Req::Join {
            uid: owner,
            juid: owner,
            chid: ch
        }),
        port
    );
    assert_eq!(
        s.err(&Req::Join {
            uid: owner,
            juid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        s.err(&Req::Join {
            uid: owner,
            juid: owner,
            chid: 12
        }),
        E::Param
    );
    assert_eq!(
        s.err(&Req::Join {
            uid: owner,
            juid: 12,
            chid: ch
        }),
        E::Param
    );
    assert_eq!(
        s.ok(&Req::Join {
            uid: s.admin_uid,
            juid: other,
            chid: ch
        }),
        port
    );

    // LEAVE: kicking needs perm_kick_user; self-leave is free and returns 1.
    assert_eq!(
        s.err(&Req::Leave {
            uid: owner,
            luid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        s.ok(&Req::Leave {
            uid: other,
            luid: other,
            chid: ch
        }),
        1
    );
    assert_eq!(
        s.err(&Req::Leave {
            uid: other,
            luid: other,
            chid: ch
        }),
        E::Param,
        "not a member any more"
    );
    assert_eq!(
        s.ok(&Req::Leave {
            uid: s.admin_uid,
            luid: owner,
            chid: ch
        }),
        1
    );

    // DELETE: neither owner nor perm_rm_channel -> ACCESS; the owner may; admin may.
    assert_eq!(
        s.err(&Req::Delete {
            uid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        s.ok(&Req::Delete {
            uid: owner,
            chid: ch
        }),
        ch
    );
    assert_eq!(
        s.err(&Req::Delete {
            uid: owner,
            chid: ch
        }),
        E::Param
    );
    assert_eq!(
        s.ok(&Req::Delete {
            uid: s.admin_uid,
            chid: ch2
        }),
        ch2
    );
    assert_eq!(s.request(&Req::GetChannels), Rep::Channels(vec![]));
    // The empty list is exactly `0, 0`.
    assert_eq!(s.raw(&encode(&Req::GetChannels)), vec![0u8; 16]);
}

#[test]
fn extensions_names_and_info() {
    let s = ServerProcess::start();
    match s.request(&Req::ServerInfo) {
        Rep::ServerInfo(i) => {
            assert_eq!(i.version, kv_proto::PROTOCOL_VERSION);
            for f in [
                features::NAMES,
                features::CHANNEL_INFO,
                features::SIGNED_SYSTEM_PACKETS,
                features::USER_INFO,
            ] {
                assert_ne!(i.features & f, 0);
            }
        }
        other => panic!("{other:?}"),
    }
    let (a, b) = (s.signup(), s.signup());
    let n = |x: &str| x.to_owned();
    assert_eq!(
        s.ok(&Req::SetUserName {
            uid: a,
            target: a,
            name: n("Ana 🎧")
        }),
        1
    );
    assert_eq!(
        s.request(&Req::GetUserName { uid: a }),
        Rep::Name(n("Ana 🎧"))
    );
    assert_eq!(
        s.err(&Req::SetUserName {
            uid: b,
            target: a,
            name: n("x")
        }),
        E::Access
    );
    assert_eq!(
        s.ok(&Req::SetUserName {
            uid: s.admin_uid,
            target: b,
            name: n("Bo")
        }),
        1
    );
    assert_eq!(s.err(&Req::GetUserName { uid: 5 }), E::Param);
    assert_eq!(
        s.err(&Req::SetUserName {
            uid: a,
            target: 5,
            name: n("x")
        }),
        E::Param
    );

    let ch = s.ok(&Req::Create { uid: a });
    assert_eq!(
        s.request(&Req::GetChannelName { chid: ch }),
        Rep::Name(n(""))
    );
    assert_eq!(
        s.err(&Req::SetChannelName {
            uid: b,
            chid: ch,
            name: n("x")
        }),
        E::Access
    );
    assert_eq!(
        s.ok(&Req::SetChannelName {
            uid: a,
            chid: ch,
            name: n("lobby")
        }),
        1
    );
    assert_eq!(
        s.ok(&Req::SetChannelName {
            uid: s.admin_uid,
            chid: ch,
            name: n("Lobby")
        }),
        1
    );
    assert_eq!(
        s.request(&Req::GetChannelName { chid: ch }),
        Rep::Name(n("Lobby"))
    );
    assert_eq!(s.err(&Req::GetChannelName { chid: 3 }), E::Param);
    assert_eq!(s.err(&Req::ChannelInfo { chid: 3 }), E::Param);
    assert_eq!(s.err(&Req::UserInfo { uid: 3 }), E::Param);

    let port = s.ok(&Req::Join {
        uid: b,
        juid: b,
        chid: ch,
    });
    s.ok(&Req::Join {
        uid: a,
        juid: a,
        chid: ch,
    });
    let info = || match s.request(&Req::ChannelInfo { chid: ch }) {
        Rep::ChannelInfo(info) => {
            assert_eq!(info.name, "Lobby");
            assert_eq!(info.owner, a);
            assert_eq!(info.port, port);
            info.members
        }
        other => panic!("{other:?}"),
    };
    // Members are listed once bound (their address proven), in join order.
    assert_eq!(info(), vec![]);
    let key = s.public_key();
    let (pb, pa) = (
        kv_tests::UdpPeer::new(s.udp_addr(port), b),
        kv_tests::UdpPeer::new(s.udp_addr(port), a),
    );
    pa.bind(&key);
    pb.bind(&key);
    let start = Instant::now();
    // The relay binds on its own: a cached answer may be up to 250 ms old.
    while info().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", info());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(info(), vec![(b, n("Bo")), (a, n("Ana 🎧"))]);
}

#[test]
fn bad_strings_are_inval() {
    let s = ServerProcess::start();
    let a = s.signup();
    let mut req = encode(&Req::SetUserName {
        uid: a,
        target: a,
        name: String::new(),
    });
    // Replace the empty string by 2 bytes of invalid UTF-8.
    req.truncate(req.len() - 8);
    req.extend_from_slice(&2u64.to_be_bytes());
    req.extend_from_slice(&[0xC3, 0x28]);
    assert_eq!(s.raw(&req), error_bytes(E::Inval));
    // 65 bytes is over the limit, even if they follow.
    let mut long = encode(&Req::SetUserName {
        uid: a,
        target: a,
        name: String::new(),
    });
    long.truncate(long.len() - 8);
    long.extend_from_slice(&65u64.to_be_bytes());
    long.extend_from_slice(&[b'x'; 65]);
    assert_eq!(s.raw(&long), error_bytes(E::Inval));
    // A huge length never makes the server wait for (or buffer) that many bytes.
    let mut huge = encode(&Req::SetUserName {
        uid: a,
        target: a,
        name: String::new(),
    });
    huge.truncate(huge.len() - 8);
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(s.raw(&huge), error_bytes(E::Inval));
    // 64 bytes is fine.
    let name = "n".repeat(64);
    assert_eq!(
        s.ok(&Req::SetUserName {
            uid: a,
            target: a,
            name: name.clone()
        }),
        1
    );
    assert_eq!(s.request(&Req::GetUserName { uid: a }), Rep::Name(name));
}

#[test]
fn padded_requests_work_for_every_seed_command() {
    let s = ServerProcess::start();
    // The admin has a key, so its unsigned requests are refused; a key-less registrar
    // (made by the admin) speaks the seed's padded REGISTER and UNREGISTER instead.
    let admin =
        s.register_with((Perms::REGISTER_USER | Perms::DELETE_USER | Perms::ADD_CHANNEL).bits());
    let u = match request_padded(s.addr, &Req::Register { auid: 0, perm: 0 }) {
        Rep::Value(v) => v,
        other => panic!("{other:?}"),
    };
    let ok = |req: Req| match request_padded(s.addr, &req) {
        Rep::Value(v) => v,
        other => panic!("{req:?} -> {other:?}"),
    };
    let ch = ok(Req::Create { uid: u });
    let port = ok(Req::GetPort { chid: ch });
    assert_eq!(
        ok(Req::Join {
            uid: u,
            juid: u,
            chid: ch
        }),
        port
    );
    assert_eq!(
        ok(Req::Leave {
            uid: u,
            luid: u,
            chid: ch
        }),
        1
    );
    assert_eq!(
        request_padded(s.addr, &Req::GetChannels),
        Rep::Channels(vec![ch])
    );
    assert_eq!(ok(Req::Delete { uid: u, chid: ch }), ch);
    let v = ok(Req::Register {
        auid: admin,
        perm: 8,
    });
    assert_eq!(
        ok(Req::Unregister {
            auid: admin,
            uid: v
        }),
        v
    );
    // The padded request is exactly 36 bytes, like the prototype's.
    assert_eq!(encode_padded(&Req::GetChannels).len(), 36);
    // Padding larger than 32 bytes of fields is not ours to accept silently, but the reply
    // still arrives (the server reads one request and drains a bounded amount).
    let mut extra = encode_padded(&Req::GetPort { chid: ch });
    extra.extend_from_slice(&[0u8; 40]);
    assert_eq!(exchange(s.addr, &extra), error_bytes(E::Param));
}

#[test]
fn short_and_unknown_requests() {
    let s = ServerProcess::start();
    // Unknown command types: NOIMPL, whatever follows.
    // 28 is the first type after the end-to-end encryption commands (25-27).
    for ty in [28u32, 99, 0x8000_0000, u32::MAX] {
        let mut req = ty.to_be_bytes().to_vec();
        req.extend_from_slice(&[0u8; 32]);
        assert_eq!(s.raw(&req), error_bytes(E::NoImpl), "type {ty}");
        assert_eq!(
            exchange_half_closed(s.addr, &ty.to_be_bytes()),
            error_bytes(E::NoImpl)
        );
    }
    // Short requests (the client closes its side): INVAL.
    let join = encode(&Req::Join {
        uid: 1,
        juid: 1,
        chid: 1,
    });
    for cut in [0, 1, 3, 4, 11, 12, join.len() - 1] {
        assert_eq!(
            exchange_half_closed(s.addr, &join[..cut]),
            error_bytes(E::Inval),
            "cut at {cut}"
        );
    }
    // The server is still fine.
    s.signup();
}

#[test]
fn silent_client_cannot_hold_a_slot() {
    let s = ServerProcess::start_with(&["--max-connections", "1", "--request-timeout", "0.5"]);
    // Two clients connect and send nothing; the only slot times out and is freed.
    let mut silent = TcpStream::connect(s.addr).unwrap();
    let mut silent2 = TcpStream::connect(s.addr).unwrap();
    let t = Instant::now();
    let u = s.signup();
    assert!(kv_proto::is_valid_uid(u));
    assert!(t.elapsed() < Duration::from_secs(5));
    // The silent ones got INVAL after their timeout.
    for c in [&mut silent, &mut silent2] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, error_bytes(E::Inval));
    }
}

#[test]
fn sigterm_and_sigint_exit_cleanly() {
    let mut s = ServerProcess::start();
    s.signup();
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    // The database was closed cleanly: SQLite checkpoints and removes its WAL on close.
    assert!(s.data_dir.join("kv.sqlite3").exists());
    assert!(
        !s.data_dir.join("kv.sqlite3-wal").exists(),
        "WAL left behind"
    );
    s.restart();
    s.signal(libc::SIGINT);
    let status = s.wait();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn one_ip_cannot_take_every_slot() {
    let s = ServerProcess::start_with(&["--max-connections-per-ip", "1", "--request-timeout", "5"]);
    let silent = TcpStream::connect(s.addr).unwrap();
    // Give the server time to accept it, so it holds this IP's only slot.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.err(&Req::GetPort { chid: 1 }), E::Serv);
    drop(silent);
    // Once it is gone, requests are served normally again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.request(&Req::GetPort { chid: 1 }) {
            Rep::Error(E::Param) => break,
            Rep::Error(E::Serv) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn request_dribbled_byte_by_byte() {
    use std::io::Write;
    let s = ServerProcess::start();
    let u = s.signup();
    let ch = s.ok(&Req::Create { uid: u });
    let req = encode_padded(&Req::Join {
        uid: u,
        juid: u,
        chid: ch,
    });
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_nodelay(true).unwrap();
    for b in &req[..28] {
        c.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    // The reply comes once the fields are in; the padding may follow later.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut status = [0u8; 8];
    c.read_exact(&mut status).unwrap();
    let port = s.ok(&Req::GetPort { chid: ch });
    assert_eq!(u64::from_be_bytes(status), port);
    let _ = c.write_all(&req[28..]);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// LIST_CHANNELS against the real binary: 300 channels come in pages of at most
/// [`LIST_PAGE`], in GET_CHANNELS order, a deletion between two pages skips nothing, and
/// a member shows in the count once its address is bound.
#[test]
fn list_channels_pages_every_channel_with_bound_member_counts() {
    use kv_proto::control::LIST_PAGE;
    use kv_proto::ChannelPage;

    let s = ServerProcess::start_with(&["--max-channels", "400"]);
    let page = |after: u64| match s.request(&Req::ListChannels { after }) {
        Rep::ChannelPage(p) => p,
        other => panic!("LIST_CHANNELS after {after} -> {other:?}"),
    };
    let created: Vec<u64> = (0..300)
        .map(|_| s.ok(&Req::Create { uid: s.admin_uid }))
        .collect();
    let Rep::Channels(listed) = s.request(&Req::GetChannels) else {
        panic!("GET_CHANNELS");
    };
    assert_eq!(listed, created);

    let first: ChannelPage = page(0);
    assert_eq!(first.channels.len(), LIST_PAGE);
    assert_ne!(first.next, 0, "300 channels need a second page");
    // The next page's first channel goes while the client is between pages.
    let gone = created[LIST_PAGE];
    s.ok(&Req::Delete {
        uid: s.admin_uid,
        chid: gone,
    });
    let second = page(first.next);
    assert_eq!(second.next, 0, "the second page ends the list");
    let ids: Vec<u64> = first
        .channels
        .iter()
        .chain(&second.channels)
        .map(|c| c.id)
        .collect();
    let expected: Vec<u64> = created.iter().copied().filter(|&c| c != gone).collect();
    assert_eq!(ids, expected);
    assert!(first
        .channels
        .iter()
        .all(|c| c.owner == s.admin_uid && c.members == 0 && c.name.is_empty()));

    // Two members bound in the first channel: counted (without asking its worker).
    let ch = created[0];
    let key = s.public_key();
    let peers = s.joined_peers(ch, 2);
    for p in &peers {
        p.bind(&key);
    }
    let members = |p: &ChannelPage| p.channels.iter().find(|c| c.id == ch).map(|c| c.members);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = members(&page(0));
        if got == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "count after two binds: {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A LEAVE is counted before its reply.
    let u = peers[0].uid;
    s.ok(&Req::Leave {
        uid: u,
        luid: u,
        chid: ch,
    });
    assert_eq!(members(&page(0)), Some(1));
}
