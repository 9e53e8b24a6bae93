//! Moderation against the real binary (default flags: signatures required): BAN of a user
//! (kicked at once, JOIN and REGISTER refused, kept across a restart, lifted by UNBAN),
//! of an address prefix (127.0.0.x as other hosts), expiry, SET_PERMS, LIST_USERS paging,
//! and `kv admin …` with the admin's identity file.

use std::net::Ipv4Addr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kv_proto::control::USER_PAGE;
use kv_proto::{
    BanTarget, ControlReply as Rep, ControlRequest as Req, ErrorCode as E, Perms, SystemOp,
};
use kv_tests::control::request_from;
use kv_tests::{ServerProcess, UdpPeer};

fn ban(s: &ServerProcess, target: BanTarget, secs: u64, reason: &str) -> Rep {
    s.request(&Req::Ban {
        auid: s.admin_uid,
        target,
        secs,
        reason: reason.into(),
    })
}

fn bans(s: &ServerProcess) -> Vec<kv_proto::BanEntry> {
    match s.request(&Req::ListBans {
        auid: s.admin_uid,
        after: 0,
    }) {
        Rep::BanPage(p) => p.bans,
        other => panic!("LIST_BANS -> {other:?}"),
    }
}

fn join(s: &ServerProcess, uid: u64, chid: u64) -> Rep {
    s.request(&Req::Join {
        uid,
        juid: uid,
        chid,
    })
}

/// A keyed sign-up sent from loopback address `from`.
fn signup_from(s: &ServerProcess, from: Ipv4Addr) -> Rep {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let req = Req::RegisterKey {
        auid: 0,
        perm: 0,
        public_key: key.verifying_key().to_bytes(),
    };
    request_from(from, s.addr, &s.sign(req, 0, &key))
}

#[test]
fn a_user_ban_kicks_refuses_persists_and_lifts() {
    let mut s = ServerProcess::start_keyed(&[]);
    let key = s.public_key();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let u = s.signup();
    let port = s.ok(&Req::Join {
        uid: u,
        juid: u,
        chid: ch,
    });
    let peer = UdpPeer::new(s.udp_addr(port), u);
    peer.bind(&key);

    // Only a perm_admin holder bans, and only signed.
    let v = s.signup();
    assert_eq!(
        s.err(&Req::Ban {
            auid: v,
            target: BanTarget::User(u),
            secs: 0,
            reason: String::new()
        }),
        E::Access
    );
    let unsigned = Req::Ban {
        auid: s.admin_uid,
        target: BanTarget::User(u),
        secs: 0,
        reason: String::new(),
    };
    assert_eq!(
        kv_tests::request(s.addr, &unsigned),
        Rep::Error(E::Access),
        "moderation is signed"
    );
    // Nobody bans the admin; an unknown user is PARAM.
    assert_eq!(
        ban(&s, BanTarget::User(s.admin_uid), 0, ""),
        Rep::Error(E::Access)
    );
    assert_eq!(
        ban(&s, BanTarget::User(0x1234), 0, ""),
        Rep::Error(E::Param)
    );

    let id = match ban(&s, BanTarget::User(u), 0, "spam") {
        Rep::Value(id) => id,
        other => panic!("BAN -> {other:?}"),
    };
    // Kicked from the call at once.
    peer.expect_op(SystemOp::Kick, u);
    assert_eq!(join(&s, u, ch), Rep::Error(E::Access));
    // Its REGISTER (making users as auid) is refused too.
    assert_eq!(
        s.request(&Req::Register { auid: u, perm: 0 }),
        Rep::Error(E::Access)
    );
    let listed = bans(&s);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].target, listed[0].expires_unix_ms),
        (id, BanTarget::User(u), 0)
    );
    assert_eq!(listed[0].reason, "spam");
    // Others are not affected.
    assert!(matches!(join(&s, v, ch), Rep::Value(_)));

    // Bans persist across a restart.
    s.restart();
    assert_eq!(join(&s, u, ch), Rep::Error(E::Access));
    assert_eq!(bans(&s).len(), 1);

    assert_eq!(
        s.request(&Req::Unban {
            auid: s.admin_uid,
            id
        }),
        Rep::Value(1)
    );
    assert!(
        matches!(join(&s, u, ch), Rep::Value(_)),
        "the ban is lifted"
    );
    assert_eq!(
        s.request(&Req::Unban {
            auid: s.admin_uid,
            id
        }),
        Rep::Error(E::Param)
    );
    s.restart();
    assert!(bans(&s).is_empty(), "lifted for good");
}

#[test]
fn an_address_ban_refuses_its_prefix_only_and_expires() {
    let s = ServerProcess::start_keyed(&[]);
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let here = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 3);
    assert!(matches!(signup_from(&s, here), Rep::Value(_)));
    // A prefix covering the admin's own address is refused (no lock-out by typo).
    let all = BanTarget::net("127.0.0.0".parse().unwrap(), 8).unwrap();
    assert_eq!(ban(&s, all, 0, "oops"), Rep::Error(E::Access));

    let target = BanTarget::net(here.into(), 32).unwrap();
    assert!(matches!(ban(&s, target, 2, "flood"), Rep::Value(_)));
    assert_eq!(signup_from(&s, here), Rep::Error(E::Access));
    assert!(
        matches!(signup_from(&s, other), Rep::Value(_)),
        "outside the prefix"
    );
    // A JOIN from the banned address, by an unbanned user, is refused as well.
    let u = s.signup();
    let req = s.sign(
        Req::Join {
            uid: u,
            juid: u,
            chid: ch,
        },
        u,
        &s.key_of(u).unwrap(),
    );
    assert_eq!(request_from(here, s.addr, &req), Rep::Error(E::Access));
    let listed = bans(&s);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target.to_string(), "127.0.0.2/32");
    assert!(listed[0].expires_unix_ms > kv_tests::unix_ms());

    // Two seconds later it has expired.
    std::thread::sleep(Duration::from_millis(2300));
    assert!(matches!(signup_from(&s, here), Rep::Value(_)));
    assert!(bans(&s).is_empty());
}

#[test]
fn set_perms_and_list_users() {
    let s = ServerProcess::start_keyed(&[]);
    let u = s.signup();
    let perms = Perms::ADD_CHANNEL.bits() | Perms::KICK_USER.bits();
    let set = |auid: u64, uid: u64, perms: u64| s.request(&Req::SetPerms { auid, uid, perms });
    assert_eq!(set(s.admin_uid, u, perms), Rep::Value(1));
    assert_eq!(
        s.request(&Req::UserInfo { uid: u }),
        Rep::UserInfo {
            perms,
            name: String::new()
        }
    );
    assert_eq!(
        set(u, u, Perms::ADMIN.bits()),
        Rep::Error(E::Access),
        "no self-promotion"
    );
    assert_eq!(
        set(s.admin_uid, s.admin_uid, 0),
        Rep::Error(E::Access),
        "no lock-out"
    );
    assert_eq!(set(s.admin_uid, 0x4242, 0), Rep::Error(E::Param));

    // More users than a page: every one is listed exactly once, in unsigned id order.
    let mut made: Vec<u64> = (0..USER_PAGE + 20).map(|_| s.signup()).collect();
    made.extend([u, s.admin_uid]);
    made.sort_unstable();
    let mut listed = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = match s.request(&Req::ListUsers {
            auid: s.admin_uid,
            after,
        }) {
            Rep::UserPage(p) => p,
            other => panic!("LIST_USERS -> {other:?}"),
        };
        pages += 1;
        assert!(page.users.len() <= USER_PAGE);
        listed.extend(page.users.iter().map(|e| e.id));
        if let Some(e) = page.users.iter().find(|e| e.id == u) {
            assert_eq!(e.perms, perms);
        }
        if page.next == 0 {
            break;
        }
        after = page.next;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 2);
    assert_eq!(listed, made);
    assert_eq!(
        s.request(&Req::ListUsers { auid: u, after: 0 }),
        Rep::Error(E::Access)
    );
}

#[test]
fn kv_admin_with_the_admin_identity() {
    let s = ServerProcess::start_keyed(&[]);
    let config = tempfile::tempdir().unwrap();
    let server = s.addr.to_string();
    let identity = s.data_dir.join("admin.key");
    let admin = |args: &[&str]| {
        let mut all = vec!["--identity", identity.to_str().unwrap(), "admin"];
        all.extend_from_slice(args);
        let out = kv_tests::kv::kv(&server, config.path(), &all);
        assert!(out.status.success(), "kv admin {args:?}: {}", out.stderr);
        out.stdout
    };
    let u = s.signup();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let id = admin(&["ban", "user", &u.to_string(), "--reason", "rude"]);
    let id: u64 = id.trim().parse().expect("ban id");
    assert_eq!(join(&s, u, ch), Rep::Error(E::Access));
    let listed = admin(&["bans"]);
    assert_eq!(listed.trim(), format!("{id} user:{u} never rude"));
    admin(&["ban", "net", "203.0.113.0/24", "--for", "60"]);
    assert!(admin(&["bans"]).contains("net:203.0.113.0/24"));
    admin(&["unban", &id.to_string()]);
    assert!(matches!(join(&s, u, ch), Rep::Value(_)));
    admin(&["kick", &u.to_string(), &ch.to_string()]);
    admin(&["perms", &u.to_string(), "0x48"]);
    let users = admin(&["users"]);
    assert!(users.lines().any(|l| l == format!("{u} 0x48 ")), "{users}");
    assert!(users
        .lines()
        .any(|l| l.starts_with(&format!("{} 0x7fffffff", s.admin_uid))));
    // A user without perm_admin is refused, with the error on stderr.
    let out = kv_tests::kv::kv(&server, config.path(), &["admin", "users"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("access denied"), "{}", out.stderr);
}
