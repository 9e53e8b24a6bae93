//! Permission and error rules of every command, on an in-memory store and real (local)
//! channel sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kv_proto::{ControlReply as Rep, ControlRequest as Req, ErrorCode as E, Perms};

use super::{Control, Origin, Policy};
use crate::channel::{Registry, RelayConfig};
use crate::shutdown;
use crate::store::SqliteStore;

struct Fixture {
    control: Control<SqliteStore>,
    admin: u64,
    // Keeps the relay workers' runtime alive; the test thread calls `apply` outside it,
    // as the server's blocking threads do.
    _rt: tokio::runtime::Runtime,
    _trigger: shutdown::ShutdownTrigger,
}

fn fixture() -> Fixture {
    // Key-less users acting through unsigned requests, as with `--allow-unsigned`: most
    // tests here are about the seed's permission rules (signatures: at the end).
    fixture_with(Policy::new(Perms::ADD_CHANNEL, true))
}

fn fixture_with(policy: Policy) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (trigger, sd) = shutdown::channel();
    let registry = Registry::new(
        rt.handle().clone(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
        SigningKey::from_bytes(&[1; 32]),
        RelayConfig {
            peer_timeout: Duration::from_secs(60),
            max_members: 2,
            max_member_pps: 100,
        },
        3,
        sd,
    );
    let control = Control::new(
        SqliteStore::open_in_memory().unwrap(),
        registry,
        [9; 32],
        policy,
    );
    let admin = control.create_user(Perms::ADMIN.bits(), None).unwrap();
    Fixture {
        control,
        admin,
        _rt: rt,
        _trigger: trigger,
    }
}

fn origin() -> Origin {
    Origin::now(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

impl Fixture {
    fn apply(&self, req: Req) -> Rep {
        self.control.apply(req, &origin())
    }
    /// The members CHANNEL_INFO lists for `chid`, checking the rest of the answer.
    fn listed(&self, chid: u64, port: u64) -> Vec<u64> {
        match self.apply(Req::ChannelInfo { chid }) {
            Rep::ChannelInfo(info) => {
                assert_eq!(info.port, port);
                info.members.iter().map(|m| m.0).collect()
            }
            other => panic!("{other:?}"),
        }
    }
    fn ok(&mut self, req: Req) -> u64 {
        match self.apply(req.clone()) {
            Rep::Value(v) => v,
            other => panic!("{req:?} -> {other:?}"),
        }
    }
    fn err(&mut self, req: Req) -> E {
        match self.apply(req.clone()) {
            Rep::Error(e) => e,
            other => panic!("{req:?} should fail, got {other:?}"),
        }
    }
    fn signup(&mut self) -> u64 {
        self.ok(Req::Register { auid: 0, perm: 0 })
    }
}

#[test]
fn register_rules() {
    let mut f = fixture();
    let admin = f.admin;
    // Sign-up ignores perm and gets the default.
    let u = f.ok(Req::Register {
        auid: 0,
        perm: Perms::ADMIN.bits(),
    });
    assert!(kv_proto::is_valid_uid(u));
    assert_eq!(
        f.apply(Req::UserInfo { uid: u }),
        Rep::UserInfo {
            perms: Perms::ADD_CHANNEL.bits(),
            name: String::new()
        }
    );
    // Without perm_register_user: ACCESS. Unknown auid: PARAM.
    assert_eq!(f.err(Req::Register { auid: u, perm: 0 }), E::Access);
    assert_eq!(
        f.err(Req::Register {
            auid: 12345,
            perm: 0
        }),
        E::Param
    );
    // A registrar grants only bits it holds.
    let reg_bits = (Perms::REGISTER_USER | Perms::ADD_USER).bits();
    let r = f.ok(Req::Register {
        auid: admin,
        perm: reg_bits,
    });
    f.ok(Req::Register {
        auid: r,
        perm: Perms::ADD_USER.bits(),
    });
    assert_eq!(
        f.err(Req::Register {
            auid: r,
            perm: Perms::KICK_USER.bits()
        }),
        E::Access
    );
    // Admin holds 0x7FFFFFFF, not bits above it.
    assert_eq!(
        f.err(Req::Register {
            auid: admin,
            perm: 1 << 40
        }),
        E::Access
    );
}

#[test]
fn unregister_rules() {
    let mut f = fixture();
    let (a, b) = (f.signup(), f.signup());
    assert_eq!(f.err(Req::Unregister { auid: a, uid: b }), E::Access);
    assert_eq!(f.ok(Req::Unregister { auid: a, uid: a }), a);
    assert_eq!(f.err(Req::Unregister { auid: a, uid: a }), E::Param);
    assert_eq!(
        f.err(Req::Unregister {
            auid: f.admin,
            uid: a
        }),
        E::Param
    );
    let admin = f.admin;
    assert_eq!(
        f.ok(Req::Unregister {
            auid: admin,
            uid: b
        }),
        b
    );
}

#[test]
fn channel_lifecycle_and_rules() {
    let mut f = fixture();
    let (owner, other) = (f.signup(), f.signup());
    let nobody = f.ok(Req::Register {
        auid: f.admin,
        perm: 0,
    });
    assert_eq!(f.err(Req::Create { uid: nobody }), E::Access);
    assert_eq!(f.err(Req::Create { uid: 0 }), E::Param);
    let ch = f.ok(Req::Create { uid: owner });
    let port = f.ok(Req::GetPort { chid: ch });
    assert!(port > 0 && port < 65536);
    assert_eq!(f.apply(Req::GetChannels), Rep::Channels(vec![ch]));
    // JOIN: self is free; others need perm_add_user; unknown ids are PARAM.
    assert_eq!(
        f.ok(Req::Join {
            uid: owner,
            juid: owner,
            chid: ch
        }),
        port
    );
    assert_eq!(
        f.err(Req::Join {
            uid: owner,
            juid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        f.err(Req::Join {
            uid: owner,
            juid: owner,
            chid: 5
        }),
        E::Param
    );
    assert_eq!(
        f.err(Req::Join {
            uid: owner,
            juid: 5,
            chid: ch
        }),
        E::Param
    );
    let admin = f.admin;
    assert_eq!(
        f.ok(Req::Join {
            uid: admin,
            juid: other,
            chid: ch
        }),
        port
    );
    // The relay's member cap (2 here) answers SERV.
    assert_eq!(
        f.err(Req::Join {
            uid: nobody,
            juid: nobody,
            chid: ch
        }),
        E::Serv
    );
    // CHANNEL_INFO lists bound members only: none yet, both are merely admitted.
    assert_eq!(f.listed(ch, port), Vec::<u64>::new());
    // The owner binds (key-less with --allow-unsigned: the seed's way, two datagrams from
    // one address); the listing shows it, and still not the admitted-but-unbound other.
    let voice = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut hello = [0u8; kv_proto::PACKET_SIZE];
    for ackid in [1, 2] {
        kv_proto::SystemPacket {
            op: kv_proto::SystemOp::KeepAlive,
            uid: owner,
            ackid,
        }
        .encode(&mut hello);
        voice.send_to(&hello, ("127.0.0.1", port as u16)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = std::time::Instant::now();
    while f.listed(ch, port) != [owner] {
        // Binding is the relay's own doing: a cached answer may be up to its TTL old.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            f.listed(ch, port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // LEAVE: kicking needs perm_kick_user; not a member is PARAM.
    assert_eq!(
        f.err(Req::Leave {
            uid: owner,
            luid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        f.ok(Req::Leave {
            uid: admin,
            luid: other,
            chid: ch
        }),
        1
    );
    assert_eq!(
        f.err(Req::Leave {
            uid: other,
            luid: other,
            chid: ch
        }),
        E::Param
    );
    // Names: owner or perm_rm_channel.
    let name = |s: &str| s.to_owned();
    assert_eq!(
        f.err(Req::SetChannelName {
            uid: other,
            chid: ch,
            name: name("x")
        }),
        E::Access
    );
    assert_eq!(
        f.ok(Req::SetChannelName {
            uid: owner,
            chid: ch,
            name: name("lobby")
        }),
        1
    );
    assert_eq!(
        f.apply(Req::GetChannelName { chid: ch }),
        Rep::Name(name("lobby"))
    );
    // DELETE: not the owner without perm_rm_channel is ACCESS; the owner may.
    assert_eq!(
        f.err(Req::Delete {
            uid: other,
            chid: ch
        }),
        E::Access
    );
    assert_eq!(
        f.ok(Req::Delete {
            uid: owner,
            chid: ch
        }),
        ch
    );
    assert_eq!(f.err(Req::GetPort { chid: ch }), E::Param);
    assert_eq!(f.apply(Req::GetChannels), Rep::Channels(vec![]));
}

#[test]
fn list_channels_names_owners_and_counts_in_creation_order() {
    let f = fixture();
    let u = f
        .control
        .create_user(Perms::ADD_CHANNEL.bits(), None)
        .unwrap();
    let a = match f.apply(Req::Create { uid: u }) {
        Rep::Value(id) => id,
        other => panic!("{other:?}"),
    };
    let b = match f.apply(Req::Create { uid: f.admin }) {
        Rep::Value(id) => id,
        other => panic!("{other:?}"),
    };
    let named = Req::SetChannelName {
        uid: u,
        chid: a,
        name: "lobby".into(),
    };
    assert_eq!(f.apply(named), Rep::Value(1));
    // Admitted, never bound: not counted (CHANNEL_INFO does not list it either).
    assert!(matches!(
        f.apply(Req::Join {
            uid: u,
            juid: u,
            chid: a
        }),
        Rep::Value(_)
    ));
    let page = match f.apply(Req::ListChannels { after: 0 }) {
        Rep::ChannelPage(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(page.next, 0, "one page holds everything");
    let rows: Vec<(u64, u64, u64, &str)> = page
        .channels
        .iter()
        .map(|c| (c.id, c.owner, c.members, c.name.as_str()))
        .collect();
    assert_eq!(rows, [(a, u, 0, "lobby"), (b, f.admin, 0, "")]);
    // The same order as GET_CHANNELS; a cursor past the end lists nothing.
    assert_eq!(f.apply(Req::GetChannels), Rep::Channels(vec![a, b]));
    match f.apply(Req::ListChannels { after: u64::MAX }) {
        Rep::ChannelPage(p) => assert!(p.channels.is_empty() && p.next == 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn channel_count_is_bounded() {
    let mut f = fixture();
    let admin = f.admin;
    for _ in 0..3 {
        f.ok(Req::Create { uid: admin });
    }
    assert_eq!(f.err(Req::Create { uid: admin }), E::Serv);
}

#[test]
fn user_names() {
    let mut f = fixture();
    let (a, b) = (f.signup(), f.signup());
    let n = |s: &str| s.to_owned();
    assert_eq!(
        f.ok(Req::SetUserName {
            uid: a,
            target: a,
            name: n("ana")
        }),
        1
    );
    assert_eq!(
        f.err(Req::SetUserName {
            uid: a,
            target: b,
            name: n("x")
        }),
        E::Access
    );
    let admin = f.admin;
    assert_eq!(
        f.ok(Req::SetUserName {
            uid: admin,
            target: b,
            name: n("bo")
        }),
        1
    );
    assert_eq!(f.apply(Req::GetUserName { uid: b }), Rep::Name(n("bo")));
    assert_eq!(f.err(Req::GetUserName { uid: 77 }), E::Param);
    assert_eq!(
        f.err(Req::SetUserName {
            uid: a,
            target: 77,
            name: n("x")
        }),
        E::Param
    );
}

#[test]
fn server_info_has_key_and_features() {
    let f = fixture();
    match f.apply(Req::ServerInfo) {
        Rep::ServerInfo(i) => {
            assert_eq!(i.version, kv_proto::PROTOCOL_VERSION);
            assert_eq!(i.public_key, [9; 32]);
            assert_eq!(i.features, super::info::FEATURES);
        }
        other => panic!("{other:?}"),
    }
}

/// A signed request from `uid` with `key`, for server key `[9; 32]`, now.
fn signed(inner: Req, uid: u64, key: &SigningKey) -> Req {
    signed_at(inner, uid, key, [9; 32], origin().unix_ms, rand::random())
}

fn signed_at(
    inner: Req,
    uid: u64,
    key: &SigningKey,
    server: [u8; 32],
    unix_ms: u64,
    nonce: [u8; 16],
) -> Req {
    Req::Signed(Box::new(
        kv_proto::signed::SignedRequest::sign(inner, uid, key, server, unix_ms, nonce).unwrap(),
    ))
}

/// A keyed sign-up: REGISTER_KEY signed by the new key itself.
fn keyed_signup(f: &mut Fixture) -> (u64, SigningKey) {
    let key = crate::keys::new_key();
    let req = Req::RegisterKey {
        auid: 0,
        perm: 0,
        public_key: key.verifying_key().to_bytes(),
    };
    (f.ok(signed(req, 0, &key)), key)
}

#[test]
fn signed_requests_act_as_their_signer_only() {
    let mut f = fixture_with(Policy::new(Perms::ADD_CHANNEL, false));
    let (a, ka) = keyed_signup(&mut f);
    let (b, kb) = keyed_signup(&mut f);
    // Unsigned acts are refused without --allow-unsigned, reads are not.
    assert_eq!(f.err(Req::Create { uid: a }), E::Access);
    assert_eq!(f.err(Req::Register { auid: 0, perm: 0 }), E::Access);
    assert!(matches!(
        f.apply(Req::UserInfo { uid: a }),
        Rep::UserInfo { .. }
    ));
    // Signed by the actor: fine. Signed by someone else, or naming another actor: ACCESS.
    let ch = f.ok(signed(Req::Create { uid: a }, a, &ka));
    assert_eq!(
        f.err(signed(Req::Delete { uid: a, chid: ch }, b, &kb)),
        E::Access
    );
    assert_eq!(
        f.err(signed(Req::Delete { uid: a, chid: ch }, a, &kb)),
        E::Access
    );
    // Unknown signer: PARAM, like any unknown uid.
    assert_eq!(f.err(signed(Req::Create { uid: 5 }, 5, &ka)), E::Param);
    // A sign-up must be signed by the key it registers.
    let other = crate::keys::new_key();
    let req = Req::RegisterKey {
        auid: 0,
        perm: 0,
        public_key: other.verifying_key().to_bytes(),
    };
    assert_eq!(f.err(signed(req.clone(), 0, &ka)), E::Access);
    assert_eq!(f.err(req), E::Access);
    // Replay, another server's key, a stale or future timestamp: ACCESS.
    let once = signed(
        Req::Join {
            uid: a,
            juid: a,
            chid: ch,
        },
        a,
        &ka,
    );
    f.ok(once.clone());
    assert_eq!(f.err(once), E::Access);
    let now = origin().unix_ms;
    let join = || Req::Join {
        uid: a,
        juid: a,
        chid: ch,
    };
    assert_eq!(
        f.err(signed_at(join(), a, &ka, [8; 32], now, [1; 16])),
        E::Access
    );
    let w = kv_proto::signed::WINDOW_MS;
    assert_eq!(
        f.err(signed_at(join(), a, &ka, [9; 32], now - w - 5_000, [2; 16])),
        E::Access
    );
    assert_eq!(
        f.err(signed_at(join(), a, &ka, [9; 32], now + w + 5_000, [3; 16])),
        E::Access
    );
    f.ok(signed_at(join(), a, &ka, [9; 32], now - 1_000, [4; 16]));
}

#[test]
fn allow_unsigned_serves_keyless_users_only() {
    let mut f = fixture();
    let keyless = f.signup();
    f.ok(Req::Create { uid: keyless });
    let (keyed, key) = keyed_signup(&mut f);
    assert_eq!(f.err(Req::Create { uid: keyed }), E::Access);
    assert_eq!(
        f.err(Req::SetUserName {
            uid: keyed,
            target: keyed,
            name: "x".into()
        }),
        E::Access
    );
    f.ok(signed(Req::Create { uid: keyed }, keyed, &key));
    // A key-less user may claim a key once (unsigned); then it is keyed for good.
    let k2 = crate::keys::new_key();
    let claim = Req::SetKey {
        auid: keyless,
        uid: keyless,
        public_key: k2.verifying_key().to_bytes(),
    };
    f.ok(claim.clone());
    assert_eq!(f.err(claim), E::Access);
    assert_eq!(f.err(Req::Create { uid: keyless }), E::Access);
    f.ok(signed(Req::Create { uid: keyless }, keyless, &k2));
    // Weak or invalid keys are refused.
    let weak = Req::SetKey {
        auid: keyed,
        uid: keyed,
        public_key: [0; 32],
    };
    assert_eq!(f.err(signed(weak, keyed, &key)), E::Inval);
}

#[test]
fn channel_quota_and_unregister_takes_channels_along() {
    let mut policy = Policy::new(Perms::ADD_CHANNEL, true);
    policy.max_channels_per_user = 2;
    let mut f = fixture_with(policy);
    let u = f.signup();
    let c1 = f.ok(Req::Create { uid: u });
    f.ok(Req::Create { uid: u });
    assert_eq!(f.err(Req::Create { uid: u }), E::Serv);
    f.ok(Req::Delete { uid: u, chid: c1 });
    f.ok(Req::Create { uid: u });
    assert!(matches!(f.apply(Req::GetChannels), Rep::Channels(ids) if ids.len() == 2));
    f.ok(Req::Unregister { auid: u, uid: u });
    assert_eq!(f.apply(Req::GetChannels), Rep::Channels(vec![]));
}

#[test]
fn names_with_invisible_or_reordering_characters_are_inval() {
    let mut f = fixture();
    let u = f.signup();
    let ch = f.ok(Req::Create { uid: u });
    for bad in [
        "ann\u{202E}",
        "\u{2066}x",
        "a\u{200B}b",
        "\u{061C}",
        "tab\t",
    ] {
        assert_eq!(
            f.err(Req::SetUserName {
                uid: u,
                target: u,
                name: bad.into()
            }),
            E::Inval,
            "{bad:?}"
        );
        assert_eq!(
            f.err(Req::SetChannelName {
                uid: u,
                chid: ch,
                name: bad.into()
            }),
            E::Inval
        );
    }
    f.ok(Req::SetUserName {
        uid: u,
        target: u,
        name: "Zoë 🎧".into(),
    });
}

#[test]
fn join_kex_is_a_signed_join_of_oneself_or_by_perm_add_user() {
    let mut f = fixture_with(Policy::new(Perms::ADD_CHANNEL, false));
    let (a, ka) = keyed_signup(&mut f);
    let (b, kb) = keyed_signup(&mut f);
    let ch = f.ok(signed(Req::Create { uid: a }, a, &ka));
    let port = f.ok(Req::GetPort { chid: ch });
    let join_kex = |uid, juid, chid| Req::JoinKex {
        uid,
        juid,
        chid,
        client_kex: [7; 32],
    };
    // Unsigned (or signed by another user): ACCESS, like every act of a keyed user.
    assert_eq!(join_kex(a, a, ch).actor(), Some(a));
    assert_eq!(f.err(join_kex(a, a, ch)), E::Access);
    assert_eq!(f.err(signed(join_kex(a, a, ch), b, &kb)), E::Access);
    // Oneself: the channel's port. Another user needs perm_add_user; unknown ids: PARAM.
    assert_eq!(f.ok(signed(join_kex(a, a, ch), a, &ka)), port);
    assert_eq!(f.err(signed(join_kex(b, a, ch), b, &kb)), E::Access);
    assert_eq!(f.err(signed(join_kex(a, a, 5), a, &ka)), E::Param);
    assert_eq!(f.err(signed(join_kex(a, 5, ch), a, &ka)), E::Param);
    let admin_key = crate::keys::new_key();
    let admin = f
        .control
        .create_user(
            Perms::ADMIN.bits(),
            Some(admin_key.verifying_key().to_bytes()),
        )
        .unwrap();
    assert_eq!(
        f.ok(signed(join_kex(admin, b, ch), admin, &admin_key)),
        port
    );
    // Admitted, not bound: CHANNEL_INFO lists nobody yet.
    assert_eq!(f.listed(ch, port), Vec::<u64>::new());
}

/// Issue 9 §2: no lock is held while waiting on a relay worker. One channel's worker is
/// made slow to answer (stalled 600 ms) and a CHANNEL_INFO of that channel waits on it;
/// meanwhile a CREATE (the registry's write side), a GET_PORT and a JOIN of a channel on
/// the other worker are answered at once. With the registry lock held across the wait,
/// the CREATE took the whole stall and held back every reader queued behind it.
#[test]
fn a_worker_slow_to_answer_holds_up_no_other_request() {
    let mut f = fixture();
    let (a, b) = (f.signup(), f.signup());
    let slow = f.ok(Req::Create { uid: a });
    let fast = f.ok(Req::Create { uid: a });
    let port = f.ok(Req::GetPort { chid: slow });
    let stall = Duration::from_millis(600);
    let f = f;
    std::thread::scope(|scope| {
        f.control.registry().stall(slow, stall);
        let waiting = scope.spawn(|| {
            let t = std::time::Instant::now();
            f.listed(slow, port);
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        let timed = |req: Req| {
            let t = std::time::Instant::now();
            let reply = f.apply(req.clone());
            assert!(matches!(reply, Rep::Value(_)), "{req:?} -> {reply:?}");
            t.elapsed()
        };
        let create = timed(Req::Create { uid: b });
        let get_port = timed(Req::GetPort { chid: slow });
        let same_worker = {
            let r = f.control.registry();
            r.worker_of(slow) == r.worker_of(fast)
        };
        // One core, one worker: the other channel waits on the same worker, by design.
        let join = (!same_worker).then(|| {
            timed(Req::Join {
                uid: b,
                juid: b,
                chid: fast,
            })
        });
        let waited = waiting.join().unwrap();
        eprintln!(
            "worker stalled {stall:?}: CHANNEL_INFO of its channel {waited:?}; meanwhile \
             CREATE {create:?}, GET_PORT {get_port:?}, JOIN of another channel {join:?}"
        );
        assert!(
            waited >= stall - Duration::from_millis(100),
            "the stall was real"
        );
        assert!(create < Duration::from_millis(200), "CREATE {create:?}");
        assert!(
            get_port < Duration::from_millis(50),
            "GET_PORT {get_port:?}"
        );
        if let Some(join) = join {
            assert!(join < Duration::from_millis(50), "JOIN {join:?}");
        }
    });
}

/// Asking a worker never waits under the registry lock, even when the worker is stalled
/// and its command queue full: the commands that do not fit are sent by `Pending::wait`,
/// after the lock is released, and every answer still comes.
#[test]
fn asking_a_stalled_worker_with_a_full_queue_never_waits_under_the_lock() {
    use crate::channel::worker::COMMAND_QUEUE;
    let mut f = fixture();
    let a = f.signup();
    let ch = f.ok(Req::Create { uid: a });
    let stall = Duration::from_millis(300);
    let registry = f.control.registry();
    registry.stall(ch, stall);
    let t = std::time::Instant::now();
    let pending: Vec<_> = (0..COMMAND_QUEUE + 50)
        .map(|_| registry.bound_members(ch))
        .collect();
    let queued = t.elapsed();
    drop(registry);
    assert!(
        queued < Duration::from_millis(100),
        "queueing took {queued:?}"
    );
    for p in pending {
        assert_eq!(p.wait().unwrap(), Vec::<u64>::new());
    }
    assert!(
        t.elapsed() >= stall - Duration::from_millis(50),
        "the stall was real"
    );
}
