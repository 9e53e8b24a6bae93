//! Issue 9, control plane: the attacks of §1 and §3–§5 replayed against the real server
//! binary on loopback with raw TCP bytes, and shown to fail.
//!
//! Attackers are other loopback addresses (127.0.0.x) where the source matters. Servers run
//! with the default flags (signatures required) unless a test says otherwise.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kv_proto::control::features;
use kv_proto::signed::SignedRequest;
use kv_proto::{ControlReply as Rep, ControlRequest as Req, ErrorCode as E, Perms};
use kv_tests::control::{self, decode_reply, encode};
use kv_tests::ServerProcess;
use rand::{Rng, SeedableRng};

/// A server with exactly these flags (no test-harness defaults).
fn server(args: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("data dir");
    let s = ServerProcess::start_exactly(dir.path(), args.iter().map(|a| a.to_string()).collect());
    (s, dir)
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// Sends `req` exactly as given (never signed on our behalf).
fn raw(s: &ServerProcess, req: &Req) -> Rep {
    control::request(s.addr, req)
}

/// `req` signed by `uid` with `key`.
fn as_user(s: &ServerProcess, req: Req, uid: u64, key: &SigningKey) -> Rep {
    raw(s, &s.sign(req, uid, key))
}

fn value(r: Rep) -> u64 {
    match r {
        Rep::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

/// A keyed sign-up: REGISTER_KEY signed by the new key.
fn keyed_user(s: &ServerProcess) -> (u64, SigningKey) {
    let key = new_key();
    let req = Req::RegisterKey {
        auid: 0,
        perm: 0,
        public_key: key.verifying_key().to_bytes(),
    };
    (value(as_user(s, req, 0, &key)), key)
}

/// A TCP connection to `to` from loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((from, 0)).into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// One exchange from `from`: the raw reply bytes.
fn exchange_from(from: Ipv4Addr, to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect_from(from, to).expect("connect");
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// `req` from loopback address `from`, decoded.
fn request_from(from: Ipv4Addr, to: SocketAddr, req: &Req) -> Rep {
    decode_reply(req, &exchange_from(from, to, &encode(req)))
}

fn error_bytes(code: E) -> Vec<u8> {
    let mut v = Vec::new();
    Rep::Error(code).encode(&mut v);
    v
}

/// Everything a victim could notice: names, channel, members, permissions.
#[derive(Debug, PartialEq)]
struct Snapshot {
    users: Vec<Rep>,
    channel: Rep,
    channels: Rep,
}

fn snapshot(s: &ServerProcess, uids: &[u64], chid: u64) -> Snapshot {
    Snapshot {
        users: uids
            .iter()
            .map(|&uid| raw(s, &Req::UserInfo { uid }))
            .collect(),
        channel: raw(s, &Req::ChannelInfo { chid }),
        channels: raw(s, &Req::GetChannels),
    }
}

/// The seven impersonations of issue 9 §1 (and the rest of the commands that act as a
/// user), each tried unsigned and signed by the attacker under the victim's uid, against
/// a server with and without `--allow-unsigned`. Every one is ACCESS, and neither the
/// server's state nor the victims' voice sockets show a trace.
#[test]
fn impersonations_fail_and_victims_notice_nothing() {
    for flags in [&[][..], &["--allow-unsigned"][..]] {
        let (s, _dir) = server(flags);
        let key = s.public_key();
        let (alice, ka) = keyed_user(&s);
        let (bob, kb) = keyed_user(&s);
        let (mallory, km) = keyed_user(&s);
        let admin = s.admin_uid;
        value(as_user(
            &s,
            Req::SetUserName {
                uid: alice,
                target: alice,
                name: "alice".into(),
            },
            alice,
            &ka,
        ));
        let chid = value(as_user(&s, Req::Create { uid: alice }, alice, &ka));
        value(as_user(
            &s,
            Req::SetChannelName {
                uid: alice,
                chid,
                name: "room".into(),
            },
            alice,
            &ka,
        ));
        let port = value(as_user(
            &s,
            Req::Join {
                uid: alice,
                juid: alice,
                chid,
            },
            alice,
            &ka,
        ));
        value(as_user(
            &s,
            Req::Join {
                uid: bob,
                juid: bob,
                chid,
            },
            bob,
            &kb,
        ));
        // The victims' voice sockets, bound, listening for anything the attack causes.
        let pa = kv_tests::UdpPeer::new(s.udp_addr(port), alice);
        pa.bind(&key);
        let pb = kv_tests::UdpPeer::new(s.udp_addr(port), bob);
        pb.bind(&key);
        pa.drain(Duration::from_millis(300));
        pb.drain(Duration::from_millis(300));
        let before = snapshot(&s, &[alice, bob, admin, mallory], chid);

        let attacks = [
            // 1. Rename a user.
            Req::SetUserName {
                uid: alice,
                target: alice,
                name: "pwned".into(),
            },
            // 2. Make a member LEAVE.
            Req::Leave {
                uid: bob,
                luid: bob,
                chid,
            },
            // 3. JOIN as the victim (then speak as her).
            Req::Join {
                uid: alice,
                juid: alice,
                chid,
            },
            // 4. DELETE a channel as its owner.
            Req::Delete { uid: alice, chid },
            // 5. UNREGISTER a user.
            Req::Unregister {
                auid: bob,
                uid: bob,
            },
            // 6. REGISTER an admin through the admin's uid (both commands).
            Req::Register {
                auid: admin,
                perm: Perms::ADMIN.bits(),
            },
            Req::RegisterKey {
                auid: admin,
                perm: Perms::ADMIN.bits(),
                public_key: km.verifying_key().to_bytes(),
            },
            // 7. The rest: kick as the admin, rename the channel, create as the victim,
            //    take over the victim's account by replacing her key, rename as the admin.
            Req::Leave {
                uid: admin,
                luid: alice,
                chid,
            },
            Req::SetChannelName {
                uid: alice,
                chid,
                name: "pwned".into(),
            },
            Req::Create { uid: alice },
            Req::SetKey {
                auid: alice,
                uid: alice,
                public_key: km.verifying_key().to_bytes(),
            },
            Req::SetKey {
                auid: admin,
                uid: alice,
                public_key: km.verifying_key().to_bytes(),
            },
            Req::SetUserName {
                uid: admin,
                target: bob,
                name: "pwned".into(),
            },
            Req::Unregister {
                auid: admin,
                uid: alice,
            },
            Req::Delete { uid: admin, chid },
        ];
        for attack in &attacks {
            let victim = attack.actor().expect("every attack acts as someone");
            assert_eq!(
                raw(&s, attack),
                Rep::Error(E::Access),
                "unsigned {attack:?} ({flags:?})"
            );
            // Padded like the prototype client: the same.
            assert_eq!(
                control::request_padded(s.addr, attack),
                Rep::Error(E::Access),
                "padded {attack:?}"
            );
            // Signed by the attacker's key, claiming the victim as signer.
            assert_eq!(
                as_user(&s, attack.clone(), victim, &km),
                Rep::Error(E::Access),
                "forged signature {attack:?}"
            );
            // Signed honestly by the attacker, acting as the victim.
            assert_eq!(
                as_user(&s, attack.clone(), mallory, &km),
                Rep::Error(E::Access),
                "signer is not the actor {attack:?}"
            );
        }
        // The attacker's own rights are the seed's: it cannot kick or register admins.
        assert_eq!(
            as_user(
                &s,
                Req::Leave {
                    uid: mallory,
                    luid: alice,
                    chid
                },
                mallory,
                &km
            ),
            Rep::Error(E::Access)
        );
        assert_eq!(
            as_user(
                &s,
                Req::Register {
                    auid: mallory,
                    perm: Perms::ADMIN.bits()
                },
                mallory,
                &km
            ),
            Rep::Error(E::Access)
        );

        assert_eq!(
            snapshot(&s, &[alice, bob, admin, mallory], chid),
            before,
            "state unchanged"
        );
        pa.expect_silence(Duration::from_millis(300));
        pb.expect_silence(Duration::from_millis(300));
        // And the real users still act normally.
        value(as_user(
            &s,
            Req::SetUserName {
                uid: alice,
                target: alice,
                name: "alice2".into(),
            },
            alice,
            &ka,
        ));
        assert_eq!(
            raw(&s, &Req::GetUserName { uid: alice }),
            Rep::Name("alice2".into())
        );
    }
}

#[test]
fn without_allow_unsigned_the_seed_commands_are_refused_but_reads_work() {
    let (s, _dir) = server(&[]);
    assert_eq!(
        raw(&s, &Req::Register { auid: 0, perm: 0 }),
        Rep::Error(E::Access)
    );
    assert!(matches!(raw(&s, &Req::GetChannels), Rep::Channels(_)));
    match raw(&s, &Req::ServerInfo) {
        Rep::ServerInfo(i) => assert_ne!(i.features & features::SIGNED_REQUESTS, 0),
        other => panic!("{other:?}"),
    }
    // With the flag, a key-less user works byte-exactly as in the seed.
    let (s, _dir) = server(&["--allow-unsigned"]);
    let u = value(control::request_padded(
        s.addr,
        &Req::Register { auid: 0, perm: 0 },
    ));
    let ch = value(control::request_padded(s.addr, &Req::Create { uid: u }));
    assert_eq!(
        value(control::request_padded(
            s.addr,
            &Req::Delete { uid: u, chid: ch }
        )),
        ch
    );
}

#[test]
fn replayed_and_misaddressed_signed_requests_are_refused() {
    let (a, _da) = server(&[]);
    let (b, _db) = server(&[]);
    let key = new_key();
    let pk = key.verifying_key().to_bytes();
    // The same key registered on both servers (two uids).
    let signup = |s: &ServerProcess| {
        let req = Req::RegisterKey {
            auid: 0,
            perm: 0,
            public_key: pk,
        };
        value(as_user(s, req, 0, &key))
    };
    let ua = signup(&a);
    let ub = signup(&b);

    // Replay: the captured bytes of a signed rename, sent again after a newer rename.
    let first = encode(&a.sign(
        Req::SetUserName {
            uid: ua,
            target: ua,
            name: "one".into(),
        },
        ua,
        &key,
    ));
    let rename = Req::SetUserName {
        uid: ua,
        target: ua,
        name: String::new(),
    };
    assert_eq!(
        decode_reply(&rename, &control::exchange(a.addr, &first)),
        Rep::Value(1)
    );
    value(as_user(
        &a,
        Req::SetUserName {
            uid: ua,
            target: ua,
            name: "two".into(),
        },
        ua,
        &key,
    ));
    assert_eq!(
        decode_reply(&rename, &control::exchange(a.addr, &first)),
        Rep::Error(E::Access),
        "replay refused"
    );
    assert_eq!(
        raw(&a, &Req::GetUserName { uid: ua }),
        Rep::Name("two".into())
    );

    // Signed for server A, sent to server B (where the same key is user `ub`).
    let for_a = SignedRequest::sign(
        Req::SetUserName {
            uid: ub,
            target: ub,
            name: "x".into(),
        },
        ub,
        &key,
        a.public_key().to_bytes(),
        kv_tests::unix_ms(),
        rand::random(),
    )
    .unwrap();
    assert_eq!(
        raw(&b, &Req::Signed(Box::new(for_a))),
        Rep::Error(E::Access)
    );
    assert_eq!(
        raw(&b, &Req::GetUserName { uid: ub }),
        Rep::Name(String::new())
    );
    // The same request addressed to B works.
    value(as_user(
        &b,
        Req::SetUserName {
            uid: ub,
            target: ub,
            name: "x".into(),
        },
        ub,
        &key,
    ));

    // Stale (or far future) timestamps.
    for skew in [
        -(kv_proto::signed::WINDOW_MS as i64) - 10_000,
        kv_proto::signed::WINDOW_MS as i64 + 10_000,
    ] {
        let t = (kv_tests::unix_ms() as i64 + skew) as u64;
        let old = SignedRequest::sign(
            Req::Create { uid: ua },
            ua,
            &key,
            a.public_key().to_bytes(),
            t,
            rand::random(),
        )
        .unwrap();
        assert_eq!(
            raw(&a, &Req::Signed(Box::new(old))),
            Rep::Error(E::Access),
            "skew {skew}"
        );
    }
}

/// A fake "server" answering SERVER_INFO with what a man in the middle chooses.
fn fake_server(answers: Vec<Rep>) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for a in answers {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4];
            let _ = c.read_exact(&mut buf);
            let mut out = Vec::new();
            a.encode(&mut out);
            let _ = c.write_all(&out);
        }
    });
    (addr, h)
}

#[test]
fn pinned_server_key_refuses_noimpl_downgrade_and_a_changed_key() {
    let info = |key: [u8; 32], features: u64| {
        Rep::ServerInfo(kv_proto::ServerInfo {
            version: 1,
            features,
            public_key: key,
        })
    };
    let all = features::SIGNED_SYSTEM_PACKETS | features::SIGNED_REQUESTS;
    let (addr, h) = fake_server(vec![
        info([7; 32], all),
        Rep::Error(E::NoImpl),
        info([7; 32], 0),
        info([8; 32], all),
        info([7; 32], all),
    ]);
    let config = tempfile::tempdir().unwrap();
    let c = kv_client::control::ControlClient::new(&addr)
        .unwrap()
        .with_trust(kv_client::control::KnownServers::at(config.path()));
    assert_eq!(
        c.server_info().unwrap().public_key,
        [7; 32],
        "first use pins"
    );
    let e = c.server_info().unwrap_err();
    assert!(
        matches!(e, kv_client::control::ControlError::Downgrade { .. }),
        "{e}"
    );
    let e = c.server_info().unwrap_err();
    assert!(
        matches!(e, kv_client::control::ControlError::Downgrade { .. }),
        "no signed packets: {e}"
    );
    let e = c.server_info().unwrap_err();
    assert!(
        matches!(e, kv_client::control::ControlError::KeyChanged { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("refusing"), "{e}");
    assert_eq!(c.server_info().unwrap().public_key, [7; 32]);
    h.join().unwrap();

    // The real server: `kv` pins it on first use and keeps working.
    let (s, _dir) = server(&[]);
    let out = kv_tests::kv::kv(&s.addr.to_string(), config.path(), &["create"]);
    assert!(out.status.success(), "{}", out.stderr);
    let pins = std::fs::read_to_string(config.path().join("known_servers")).unwrap();
    assert!(pins.contains(&s.addr.to_string()), "{pins}");
}

#[test]
fn channel_quota_holds_and_goes_with_its_user() {
    let (s, _dir) = server(&["--max-channels-per-user", "2"]);
    let (u, k) = keyed_user(&s);
    let c1 = value(as_user(&s, Req::Create { uid: u }, u, &k));
    value(as_user(&s, Req::Create { uid: u }, u, &k));
    assert_eq!(
        as_user(&s, Req::Create { uid: u }, u, &k),
        Rep::Error(E::Serv)
    );
    // Others (the admin included) are not affected.
    let (v, kv) = keyed_user(&s);
    value(as_user(&s, Req::Create { uid: v }, v, &kv));
    let admin_ch = s.ok(&Req::Create { uid: s.admin_uid });
    value(as_user(&s, Req::Delete { uid: u, chid: c1 }, u, &k));
    value(as_user(&s, Req::Create { uid: u }, u, &k));
    // Unregistering the user deletes its channels.
    value(as_user(&s, Req::Unregister { auid: u, uid: u }, u, &k));
    match raw(&s, &Req::GetChannels) {
        Rep::Channels(ids) => assert_eq!(ids.len(), 2, "v's and the admin's remain: {ids:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        raw(&s, &Req::GetPort { chid: admin_ch }),
        Rep::Value(_)
    ));
}

#[test]
fn sign_up_rate_is_per_address() {
    let (s, _dir) = server(&["--register-rate", "3"]);
    let signup_from = |from: Ipv4Addr| {
        let key = new_key();
        let req = s.sign(
            Req::RegisterKey {
                auid: 0,
                perm: 0,
                public_key: key.verifying_key().to_bytes(),
            },
            0,
            &key,
        );
        decode_reply(&req, &exchange_from(from, s.addr, &encode(&req)))
    };
    let a = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..3 {
        assert!(matches!(signup_from(a), Rep::Value(_)));
    }
    assert_eq!(
        signup_from(a),
        Rep::Error(E::Serv),
        "fourth sign-up within a minute"
    );
    assert!(
        matches!(signup_from(Ipv4Addr::new(127, 0, 0, 3)), Rep::Value(_)),
        "other address"
    );
    // The admin registering users is not a sign-up.
    s.register_with(0);
}

#[test]
fn connection_cap_is_per_address() {
    let (s, _dir) = server(&[
        "--max-connections-per-ip",
        "4",
        "--first-byte-timeout",
        "10",
    ]);
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let held: Vec<TcpStream> = (0..4).map(|_| connect_from(a, s.addr).unwrap()).collect();
    // Give the server a moment to count them.
    std::thread::sleep(Duration::from_millis(200));
    let over = exchange_from(a, s.addr, &encode(&Req::GetChannels));
    assert_eq!(
        over,
        error_bytes(E::Serv),
        "fifth connection from one address"
    );
    let other = exchange_from(
        Ipv4Addr::new(127, 0, 0, 3),
        s.addr,
        &encode(&Req::GetChannels),
    );
    assert_eq!(other, [0u8; 16], "another address is served (no channels)");
    drop(held);
}

/// Slowloris from 8 addresses: each opens far more idle connections than its cap and
/// keeps them open, opening new ones four times a second as the server closes them; a
/// legitimate request still gets its answer within a second, and the idle ones are
/// dropped after the first-byte timeout.
#[test]
fn slowloris_from_eight_addresses_leaves_a_legitimate_request_fast() {
    let (s, _dir) = server(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..8u8 {
        let (addr, stop) = (s.addr, stop.clone());
        attackers.push(std::thread::spawn(move || {
            let from = Ipv4Addr::new(127, 0, 0, 10 + i);
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                held.retain(|c: &TcpStream| {
                    let mut b = [0u8; 1];
                    let _ = c.set_nonblocking(true);
                    // Keep only connections the server has not closed.
                    (&*c).read(&mut b).is_err()
                });
                while held.len() < 64 {
                    match connect_from(from, addr) {
                        Ok(c) => held.push(c),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert!(matches!(raw(&s, &Req::GetChannels), Rep::Channels(_)));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("worst legitimate request under slowloris: {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    // An idle connection gets INVAL after the first-byte timeout (2 s), not 10 s.
    let mut idle = connect_from(Ipv4Addr::new(127, 0, 0, 99), s.addr).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = idle.read_to_end(&mut out);
    assert_eq!(out, error_bytes(E::Inval));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
}

/// With a small descriptor table, channels fill only their share; the control port keeps
/// answering every request (SERV for CREATE beyond the share), never timing out.
#[test]
fn a_full_descriptor_table_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start_limited(dir.path(), vec![], Some(256));
    let mut created = 0;
    loop {
        match s.request(&Req::Create { uid: s.admin_uid }) {
            Rep::Value(_) => created += 1,
            Rep::Error(E::Serv) => break,
            other => panic!("{other:?}"),
        }
        assert!(
            created < 256,
            "channels never stopped at the descriptor budget"
        );
    }
    assert!(created >= 8, "only {created} channels fit");
    // Many clients at once (from 4 addresses, within the per-address cap), all answered
    // quickly.
    let t = Instant::now();
    let clients: Vec<_> = (0..48u8)
        .map(|i| {
            let addr = s.addr;
            let from = Ipv4Addr::new(127, 0, 0, 20 + i % 4);
            std::thread::spawn(move || request_from(from, addr, &Req::GetChannels))
        })
        .collect();
    for c in clients {
        match c.join().unwrap() {
            Rep::Channels(ids) => assert_eq!(ids.len(), created),
            other => panic!("{other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(raw(&s, &Req::ServerInfo), Rep::ServerInfo(_)));
    // After a restart (same table) the stored channels are re-opened and it still answers.
    let mut s = s;
    s.restart();
    assert!(matches!(raw(&s, &Req::GetChannels), Rep::Channels(_)));
}

/// CHANNEL_INFO of a big channel from 16 connections at once: other requests keep a median
/// of a few ms (with 1024 members it was 154 ms). CHANNEL_INFO lists bound members only, so
/// the channel has 256 of them, bound: binding 1024 would take the announcement budget
/// almost a minute (every bind announces to every member), and the listing's cost per
/// request is the same shape.
#[test]
fn channel_info_flood_does_not_delay_other_requests() {
    const MEMBERS: usize = 256;
    let (s, _dir) = server(&["--allow-unsigned", "--register-rate", "0"]);
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let udp = s.udp_addr(s.ok(&Req::GetPort { chid: ch }));
    let users: Vec<u64> = (0..MEMBERS).map(|_| s.signup()).collect();
    // JOIN and bind them 64 at a time (8 addresses): an admitted member that does not bind
    // within the 5 s bind window expires. Key-less users of an --allow-unsigned server are
    // legacy members, bound by two datagrams from one address.
    let sockets: Vec<std::net::UdpSocket> = users
        .iter()
        .map(|_| {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            u.set_nonblocking(true).unwrap();
            u
        })
        .collect();
    let listed = || match raw(&s, &Req::ChannelInfo { chid: ch }) {
        Rep::ChannelInfo(i) => i.members.len(),
        other => panic!("{other:?}"),
    };
    let start = Instant::now();
    for (k, chunk) in users.chunks(64).enumerate() {
        std::thread::scope(|scope| {
            for (i, part) in chunk.chunks(8).enumerate() {
                let addr = s.addr;
                scope.spawn(move || {
                    let from = Ipv4Addr::new(127, 0, 0, 40 + i as u8);
                    for &u in part {
                        let join = Req::Join {
                            uid: u,
                            juid: u,
                            chid: ch,
                        };
                        assert!(matches!(request_from(from, addr, &join), Rep::Value(_)));
                    }
                });
            }
        });
        let want = (k + 1) * 64;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1024];
        while listed() < want {
            assert!(Instant::now() < deadline, "{} of {want} bound", listed());
            for (i, &u) in chunk.iter().enumerate() {
                let sock = &sockets[k * 64 + i];
                let _ = sock.send_to(&kv_tests::udp::keepalive_packet(u, 0), udp);
                let _ = sock.send_to(&kv_tests::udp::keepalive_packet(u, 0), udp);
            }
            std::thread::sleep(Duration::from_millis(100));
            for sock in &sockets {
                while sock.recv(&mut buf).is_ok() {}
            }
        }
    }
    eprintln!("{MEMBERS} members bound in {:?}", start.elapsed());
    let probe = |n: usize| {
        let mut lat: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                assert!(matches!(raw(&s, &Req::GetPort { chid: ch }), Rep::Value(_)));
                t.elapsed()
            })
            .collect();
        lat.sort();
        lat[n / 2]
    };
    let quiet = probe(50);
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..16u8)
        .map(|i| {
            let (addr, stop) = (s.addr, stop.clone());
            // Four addresses, four connections each: within the per-address cap.
            let from = Ipv4Addr::new(127, 0, 0, 30 + i % 4);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match request_from(from, addr, &Req::ChannelInfo { chid: ch }) {
                        Rep::ChannelInfo(i) => assert_eq!(i.members.len(), MEMBERS),
                        other => panic!("{other:?}"),
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = probe(100);
    stop.store(true, Ordering::Relaxed);
    let answered: u64 = flood.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("median GET_PORT: quiet {quiet:?}, during the flood {busy:?} ({answered} CHANNEL_INFO answered)");
    assert!(answered > 16, "the flood was served");
    assert!(
        busy < quiet + Duration::from_millis(30),
        "quiet {quiet:?}, busy {busy:?}"
    );
}

/// Random *signed-looking* requests: a valid envelope header (type 17, a real or random
/// signer, this server's key or another, a timestamp near now) around random inner bytes
/// and a random signature. None is accepted, nothing breaks, and valid requests that
/// follow each batch still succeed.
#[test]
fn random_signed_looking_requests_are_refused_and_harmless() {
    let (s, _dir) = server(&[]);
    let (u, k) = keyed_user(&s);
    let server_key = s.public_key().to_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0009);
    for batch in 0..20 {
        for _ in 0..25 {
            let mut b = 17u32.to_be_bytes().to_vec();
            let signer = match rng.random_range(0..4) {
                0 => 0,
                1 => u,
                2 => s.admin_uid,
                _ => rng.random(),
            };
            b.extend_from_slice(&signer.to_be_bytes());
            b.extend_from_slice(&if rng.random_bool(0.7) {
                server_key
            } else {
                rng.random()
            });
            let now = kv_tests::unix_ms() as i64 + rng.random_range(-90_000..90_000);
            b.extend_from_slice(&(now as u64).to_be_bytes());
            b.extend_from_slice(&rng.random::<[u8; 16]>());
            let len = rng.random_range(0..=kv_proto::control::MAX_PLAIN_REQUEST_LEN as u64 + 3);
            b.extend_from_slice(&len.to_be_bytes());
            // Inner: a real command type with random fields, or random bytes.
            let mut inner: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if inner.len() >= 4 && rng.random_bool(0.8) {
                inner[..4].copy_from_slice(&rng.random_range(0u32..25).to_be_bytes());
            }
            b.extend_from_slice(&inner);
            let sig_len = if rng.random_bool(0.9) {
                64
            } else {
                rng.random_range(0..64)
            };
            b.extend((0..sig_len).map(|_| rng.random::<u8>()));
            let reply = control::exchange_half_closed(s.addr, &b);
            assert_eq!(reply.len(), 12, "one error reply, got {reply:02x?}");
            assert_eq!(&reply[..8], &[0u8; 8], "never a success: {reply:02x?}");
        }
        // Valid requests still work, signed and unsigned reads alike.
        let name = format!("after batch {batch}");
        value(as_user(
            &s,
            Req::SetUserName {
                uid: u,
                target: u,
                name: name.clone(),
            },
            u,
            &k,
        ));
        assert_eq!(raw(&s, &Req::GetUserName { uid: u }), Rep::Name(name));
    }
    assert!(matches!(raw(&s, &Req::ServerInfo), Rep::ServerInfo(_)));
}

/// `kv` makes and uses keys on its own: first use signs up with a key (kept 0600 in a
/// 0700 config dir), an identity from before keys claims one where the server allows it,
/// and `--identity admin.key` acts as the admin.
#[test]
fn kv_makes_and_uses_keys_without_being_asked() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (s, dir) = server(&["--allow-unsigned"]);
    let addr = s.addr.to_string();
    let config = tempfile::tempdir().unwrap();
    let cfg = config.path().join("kv");
    let out = kv_tests::kv::kv(&addr, &cfg, &["create"]);
    assert!(out.status.success(), "{}", out.stderr);
    let chid: u64 = out.stdout.trim().parse().unwrap();
    let me = match raw(&s, &Req::ChannelInfo { chid }) {
        Rep::ChannelInfo(i) => i.owner,
        other => panic!("{other:?}"),
    };
    let key_file = cfg.join("keys").join(format!("{me}.key"));
    assert_eq!(mode(&cfg), 0o700);
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&cfg.join("identities")), 0o600);
    assert_eq!(mode(&cfg.join("known_servers")), 0o600);
    // The user is keyed: its uid alone does nothing, even with --allow-unsigned.
    assert_eq!(
        raw(&s, &Req::Delete { uid: me, chid }),
        Rep::Error(E::Access)
    );

    // An identity stored before keys (a key-less user): the next use claims a key.
    let old = s.signup();
    std::fs::write(cfg.join("identities"), format!("{addr} {old}\n")).unwrap();
    let out = kv_tests::kv::kv(&addr, &cfg, &["create"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(cfg.join("keys").join(format!("{old}.key")).exists());
    assert_eq!(
        raw(&s, &Req::Create { uid: old }),
        Rep::Error(E::Access),
        "now keyed"
    );

    // The admin's identity file.
    let admin_key = dir.path().join("admin.key");
    let out = kv_tests::kv::kv(
        &addr,
        &cfg,
        &["--identity", admin_key.to_str().unwrap(), "create"],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let chid: u64 = out.stdout.trim().parse().unwrap();
    match raw(&s, &Req::ChannelInfo { chid }) {
        Rep::ChannelInfo(i) => assert_eq!(i.owner, s.admin_uid),
        other => panic!("{other:?}"),
    }
}

/// The data directory and everything in it are the owner's only; INFO logs name no uid.
#[test]
fn server_files_are_private_and_info_logs_carry_no_uids() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(kv_tests::server::server_bin())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = lines.next().unwrap().unwrap()["listening on ".len()..]
        .parse()
        .unwrap();
    let admin: u64 = lines.next().unwrap().unwrap()["admin uid: ".len()..]
        .parse()
        .unwrap();
    // Some activity: a keyed sign-up, a channel, a rename.
    let key = new_key();
    let signup = Req::RegisterKey {
        auid: 0,
        perm: 0,
        public_key: key.verifying_key().to_bytes(),
    };
    let info = match control::request(addr, &Req::ServerInfo) {
        Rep::ServerInfo(i) => i,
        other => panic!("{other:?}"),
    };
    let sign = |req: Req, uid: u64| {
        Req::Signed(Box::new(
            SignedRequest::sign(
                req,
                uid,
                &key,
                info.public_key,
                kv_tests::unix_ms(),
                rand::random(),
            )
            .unwrap(),
        ))
    };
    let uid = value(control::request(addr, &sign(signup, 0)));
    let chid = value(control::request(addr, &sign(Req::Create { uid }, uid)));
    value(control::request(
        addr,
        &sign(
            Req::SetChannelName {
                uid,
                chid,
                name: "x".into(),
            },
            uid,
        ),
    ));

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in [
        "kv.sqlite3",
        "kv.sqlite3-wal",
        "kv.sqlite3-shm",
        "server.key",
        "admin.key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // SIGTERM, then read everything it logged.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(log.contains("listening"), "{log}");
    for id in [admin, uid] {
        assert!(
            !log.contains(&id.to_string()),
            "uid {id} in INFO log:\n{log}"
        );
    }
    let secret = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let secret = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret "))
        .unwrap();
    assert!(!log.contains(secret));
}

/// `kv --uid` of a user without a key, against a server that wants signatures: the error
/// says why instead of a bare "access denied".
#[test]
fn keyless_uid_on_a_signing_server_gets_a_clear_error() {
    let (s, _dir) = server(&[]);
    let keyless = s.register_with(Perms::ADD_CHANNEL.bits());
    let config = tempfile::tempdir().unwrap();
    let out = kv_tests::kv::kv(
        &s.addr.to_string(),
        config.path(),
        &["--uid", &keyless.to_string(), "create"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("access denied"), "{}", out.stderr);
    assert!(out.stderr.contains("has no key"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// The harness's keyed mode (for the voice-plane tests): its sign-ups are keyed users whose
/// requests it signs; the same requests unsigned are refused.
#[test]
fn keyed_harness_signs_for_its_users() {
    let s = ServerProcess::start_keyed(&[]);
    let u = s.signup();
    let v = s.register_with(Perms::ADD_CHANNEL.bits());
    let ch = s.ok(&Req::Create { uid: u });
    s.ok(&Req::Create { uid: v });
    assert_eq!(
        raw(&s, &Req::Delete { uid: u, chid: ch }),
        Rep::Error(E::Access)
    );
    assert_eq!(s.ok(&Req::Delete { uid: u, chid: ch }), ch);
}

/// The seed's prototype client keeps working with `--allow-unsigned`: a key-less user
/// speaks the seed's unsigned commands and binds its voice the seed's way (KEEPALIVEs, no
/// handshake), and its voice reaches a member who bound with the handshake. Without the
/// flag the same user's voice is refused.
#[test]
fn seed_client_works_only_with_allow_unsigned() {
    use std::net::UdpSocket;
    for allow in [true, false] {
        let flags: &[&str] = if allow { &["--allow-unsigned"] } else { &[] };
        let (s, _dir) = server(flags);
        let key = s.public_key();
        // The seed user: key-less (signed up unsigned, or made by the admin).
        let seed = if allow {
            value(raw(&s, &Req::Register { auid: 0, perm: 0 }))
        } else {
            s.register_with(Perms::ADD_CHANNEL.bits())
        };
        let (b, kb) = keyed_user(&s);
        let ch = s.ok(&Req::Create { uid: s.admin_uid });
        let join = |uid| Req::Join {
            uid,
            juid: uid,
            chid: ch,
        };
        let port = if allow {
            value(control::request_padded(s.addr, &join(seed)))
        } else {
            assert_eq!(raw(&s, &join(seed)), Rep::Error(E::Access));
            // The admin may add it; it is still not a legacy member.
            value(s.request(&Req::Join {
                uid: s.admin_uid,
                juid: seed,
                chid: ch,
            }))
        };
        value(as_user(&s, join(b), b, &kb));
        let listener = kv_tests::UdpPeer::new(s.udp_addr(port), b);
        listener.bind(&key);
        listener.drain(Duration::from_millis(200));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = s.udp_addr(port);
        for ackid in 1..=3 {
            sock.send_to(&kv_tests::udp::keepalive_packet(seed, ackid), udp)
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut pkt = [0u8; kv_proto::PACKET_SIZE];
        pkt[..8].copy_from_slice(&seed.to_be_bytes());
        pkt[8..13].copy_from_slice(b"hello");
        for _ in 0..5 {
            sock.send_to(&pkt, udp).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut heard = false;
        let until = Instant::now() + Duration::from_millis(800);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match listener.recv(left) {
                Some(p) if p[..8] == seed.to_be_bytes() && &p[8..13] == b"hello" => heard = true,
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(
            heard, allow,
            "seed client's voice relayed (allow-unsigned: {allow})"
        );
    }
}

#[test]
fn names_with_bidi_zero_width_or_control_characters_are_refused() {
    // Finding 6 against the real binary: a display name that reverses the text after it
    // (U+202E), hides characters (U+200B) or carries control characters is refused
    // with INVAL, and the user's name is left as it was; a plain name still works.
    let (s, _dir) = server(&[]);
    let (uid, key) = keyed_user(&s);
    let rename = |name: &str| {
        as_user(
            &s,
            Req::SetUserName {
                uid,
                target: uid,
                name: name.into(),
            },
            uid,
            &key,
        )
    };
    assert_eq!(rename("ann"), Rep::Value(1));
    for bad in [
        "ann\u{202E}nimda",
        "a\u{200B}nn",
        "ann\u{2066}",
        "ann\u{7}",
        "ann\nadmin",
    ] {
        assert_eq!(rename(bad), Rep::Error(E::Inval), "{bad:?}");
        match raw(&s, &Req::GetUserName { uid }) {
            Rep::Name(n) => assert_eq!(n, "ann", "after {bad:?}"),
            other => panic!("GET_USER_NAME -> {other:?}"),
        }
    }
}
