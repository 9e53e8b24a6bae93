//! The delivery service of encrypted channels against the real server: three clients'
//! MLS groups over their push connections (joins, a leave, a late joiner, chat order), the
//! departed member's and the late joiner's keys, and what the server refuses (a seed-style
//! JOIN, CREATE_ENCRYPTED with `--allow-unsigned`, hostile push bytes, a non-member's
//! commit).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kv_client::control::ControlClient;
use kv_e2ee::FrameRejected;
use kv_proto::keyfile::Identity;
use kv_proto::push::PushMsg;
use kv_proto::{ControlReply, ControlRequest, ErrorCode};
use kv_tests::e2ee::{control, identity, same_epoch, settle, PushMember};
use kv_tests::server::ServerProcess;

const WAIT: Duration = Duration::from_secs(10);

fn encrypt(c: &mut PushMember, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    c.keys.encrypt(frame, b"pos", &mut out).expect("encrypt");
    out
}

#[test]
fn three_members_join_chat_leave_and_a_late_joiner() {
    let server = ServerProcess::start_keyed(&[]);
    let owner = control(&server, identity(&server));
    let chid = owner
        .create_encrypted(owner.signer_uid().unwrap())
        .expect("CREATE_ENCRYPTED");
    assert!(owner.channel_encrypted(chid).unwrap());
    let plain = owner.create(owner.signer_uid().unwrap()).unwrap();
    assert!(!owner.channel_encrypted(plain).unwrap());

    let t = Instant::now();
    let mut a = PushMember::join(&server, chid);
    settle(&mut [&mut a], |c| c.epoch == Some(0));
    let mut b = PushMember::join(&server, chid);
    same_epoch(&mut [&mut a, &mut b], 1);
    let mut c = PushMember::join(&server, chid);
    same_epoch(&mut [&mut a, &mut b, &mut c], 2);
    eprintln!("three members in one group after {:?}", t.elapsed());

    // Chat: every member gets every message, in one order.
    a.chan.say("hello from a").unwrap();
    b.chan.say("hello from b").unwrap();
    c.chan.say("hello from c").unwrap();
    a.chan.say("second from a").unwrap();
    settle(&mut [&mut a, &mut b, &mut c], |c| c.messages.len() == 4);
    assert_eq!(a.messages, b.messages);
    assert_eq!(b.messages, c.messages);
    let texts: Vec<&str> = a.messages.iter().map(|m| m.2.as_str()).collect();
    assert!(texts.contains(&"hello from b") && texts.contains(&"second from a"));
    assert_eq!(
        a.messages.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );

    // Voice keys: a frame of A's decrypts at B and C in this epoch.
    let frame = encrypt(&mut a, b"opus frame of epoch 2");
    let mut out = Vec::new();
    assert!(c
        .keys
        .decrypt(Instant::now(), &frame, b"pos", &mut out)
        .is_ok());

    // C leaves: A and B move to epoch 3, and C's kept state cannot decrypt it.
    c.control.leave(c.uid, c.uid, chid).expect("LEAVE");
    same_epoch(&mut [&mut a, &mut b], 3);
    let mut departed = c.keys;
    let frame3 = encrypt(&mut a, b"said after C left");
    assert!(b
        .keys
        .decrypt(Instant::now(), &frame3, b"pos", &mut out)
        .is_ok());
    assert_eq!(
        departed.decrypt(Instant::now(), &frame3, b"pos", &mut out),
        Err(FrameRejected::UnknownEpoch)
    );

    // D joins late: it cannot decrypt what was said before (epoch 3's frame).
    let t = Instant::now();
    let mut d = PushMember::join(&server, chid);
    same_epoch(&mut [&mut a, &mut b, &mut d], 4);
    // Push connection, JOIN, key package, commit by A, Welcome: D can decrypt from here.
    eprintln!(
        "late joiner: push + JOIN to frame keys in {:?}",
        t.elapsed()
    );
    assert!(d
        .keys
        .decrypt(Instant::now(), &frame3, b"pos", &mut out)
        .is_err());
    let frame4 = encrypt(&mut b, b"said to D");
    assert!(d
        .keys
        .decrypt(Instant::now(), &frame4, b"pos", &mut out)
        .is_ok());

    // A's push connection drops (a crash): B and D commit A's removal.
    a.chan.close();
    same_epoch(&mut [&mut b, &mut d], 5);
}

#[test]
fn what_an_encrypted_channel_refuses() {
    let server = ServerProcess::start_keyed(&[]);
    let id = identity(&server);
    let uid = id.uid;
    let owner = control(&server, id);
    let chid = owner.create_encrypted(uid).unwrap();

    // Without a push connection (a seed client, an older KV client) JOIN is ACCESS.
    let other = identity(&server);
    let ouid = other.uid;
    let other = control(&server, other);
    let e = other.join(ouid, ouid, chid).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Access));
    let e = other.join_kex(ouid, ouid, chid, [1; 32]).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Access));

    // Hostile bytes on a push connection: the server closes that one, serves the rest.
    for garbage in [
        vec![0xFF, 0xFF, 0xFF, 0xFF, 1],
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 3, 99, 1, 2],
        vec![0, 0, 0, 1, 17],
    ] {
        let mut s = owner.open_push().expect("push");
        s.write_all(&garbage).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "{garbage:?}");
    }

    // Random bodies behind valid headers, any kind: each connection is closed or answered,
    // none takes the server down (checked below: the member still works).
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..40 {
        // A frame that decoded keeps its connection open until we drop it; the server may
        // not have seen the last close yet (4 connections per user): retry a moment later.
        let mut s = owner.open_push().unwrap_or_else(|_| {
            std::thread::sleep(Duration::from_millis(300));
            owner.open_push().expect("push")
        });
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let len = 1 + (next() % 300) as usize;
        let mut frame = (len as u32).to_be_bytes().to_vec();
        frame.push((next() % 30) as u8);
        frame.extend((1..len).map(|_| next() as u8));
        let _ = s.write_all(&frame);
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }

    // A member and a non-member: the non-member's commit is refused.
    let mut a = PushMember::join(&server, chid);
    settle(&mut [&mut a], |c| c.epoch == Some(0));
    let (outsider, orx) = kv_client::e2ee::push::open(&other).expect("push");
    outsider
        .send(&PushMsg::Commit {
            chid,
            epoch: 0,
            commit: vec![1; 64],
            welcome: vec![],
        })
        .unwrap();
    match orx.recv_timeout(WAIT).unwrap() {
        kv_client::e2ee::PushEvent::Frame(PushMsg::Rejected { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The member still works.
    a.chan.say("still here").unwrap();
    settle(&mut [&mut a], |c| c.messages.len() == 1);

    // A push connection must be signed: the seed's unsigned bytes get ACCESS.
    match kv_tests::control::request(server.addr, &ControlRequest::PushOpen { uid: ouid }) {
        ControlReply::Error(ErrorCode::Access) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn allow_unsigned_servers_have_only_plain_channels() {
    let server = ServerProcess::start();
    let key = SigningKey::from_bytes(&rand::random());
    let uid = server.signup();
    server.ok(&ControlRequest::SetKey {
        auid: uid,
        uid,
        public_key: key.verifying_key().to_bytes(),
    });
    let c = ControlClient::new(&server.addr.to_string())
        .unwrap()
        .with_signer(Identity { uid, key });
    let e = c.create_encrypted(uid).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoImpl));
    let chid = c.create(uid).unwrap();
    assert!(!c.channel_encrypted(chid).unwrap());
}

#[test]
fn a_member_whose_voice_times_out_leaves_the_group() {
    let server = ServerProcess::start_keyed(&["--peer-timeout", "1"]);
    let owner = control(&server, identity(&server));
    let chid = owner.create_encrypted(owner.signer_uid().unwrap()).unwrap();
    let port = owner.get_port(chid).unwrap();
    let mut a = PushMember::join(&server, chid);
    settle(&mut [&mut a], |c| c.epoch == Some(0));
    // B binds a voice address, then falls silent: the relay times it out after 1 s.
    let udp = server.udp_addr(u64::from(port));
    let make = move |uid| kv_tests::udp::UdpPeer::new(udp, uid);
    let mut b = PushMember::join_with(&server, chid, Some(&make));
    same_epoch(&mut [&mut a, &mut b], 1);
    let t = Instant::now();
    settle(&mut [&mut a], |c| c.epoch == Some(2));
    eprintln!("timed-out member removed after {:?}", t.elapsed());
}

#[test]
fn kv_say_reaches_a_kv_join_on_an_encrypted_channel() {
    let server = ServerProcess::start_keyed(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| kv_tests::e2ee::identity_file(&server, dir.path(), name);
    let (owner, owner_file) = file("owner.key");
    let (speaker, speaker_file) = file("speaker.key");
    let addr = server.addr.to_string();
    let config = tempfile::tempdir().unwrap();
    let out = kv_tests::kv::kv(
        &addr,
        config.path(),
        &[
            "--identity",
            owner_file.to_str().unwrap(),
            "create",
            "--encrypted",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let chid: u64 = out.stdout.trim().parse().unwrap();
    let listener =
        kv_tests::kv::KvJoin::spawn_identity(&addr, &owner_file, chid, &["--duration", "6"]);
    let first = listener.wait_for("epoch", WAIT);
    assert_eq!(first["members"], serde_json::json!([owner]));
    let said = kv_tests::kv::kv(
        &addr,
        config.path(),
        &[
            "--identity",
            speaker_file.to_str().unwrap(),
            "say",
            &chid.to_string(),
            "hello, encrypted world",
        ],
    );
    assert!(said.status.success(), "{}", said.stderr);
    assert_eq!(said.stdout.trim(), "1");
    let m = listener.wait_for("message", WAIT);
    assert_eq!(m["text"], "hello, encrypted world");
    assert_eq!(m["sender"], speaker);
    // `kv say` on a plain channel is a clear error.
    let plain = kv_tests::kv::kv(
        &addr,
        config.path(),
        &["--identity", owner_file.to_str().unwrap(), "create"],
    );
    let plain: u64 = plain.stdout.trim().parse().unwrap();
    let refused = kv_tests::kv::kv(
        &addr,
        config.path(),
        &[
            "--identity",
            owner_file.to_str().unwrap(),
            "say",
            &plain.to_string(),
            "x",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("not end-to-end encrypted"),
        "{}",
        refused.stderr
    );
    listener.terminate();
    listener.finish(kv_tests::kv::JOIN_GRACE).assert_ok();
}
