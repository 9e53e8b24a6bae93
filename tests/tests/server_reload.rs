//! SIGHUP against the real binary: limits from the configuration file change during a
//! call, and the call goes on (no LEAVE, KICK or SHUTDOWN; voice keeps flowing); a file
//! that does not load changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use kv_proto::{ControlReply as Rep, ControlRequest as Req, ErrorCode as E, Perms, SystemOp};
use kv_tests::{ServerProcess, UdpPeer};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

/// Sends SIGHUP and waits until the server logged the `n`th reload attempt (done or refused).
fn hangup(s: &ServerProcess, n: usize) {
    s.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.stderr_log();
        let seen = log.matches("configuration reloaded").count()
            + log.matches("configuration not reloaded").count();
        if seen >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no reload logged:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every datagram `p` gets for `dur` is voice from `from` (no system packet ending the call).
fn only_voice_from(p: &UdpPeer, from: u64, dur: Duration) -> usize {
    let until = Instant::now() + dur;
    let mut voice = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Some(buf) = p.recv(left) else { break };
        if let Some((sys, _)) = p.open(&buf) {
            assert!(
                !matches!(
                    sys.op,
                    SystemOp::Leave | SystemOp::Kick | SystemOp::Shutdown
                ),
                "the call was disturbed: {:?}",
                sys.op
            );
            continue;
        }
        assert_eq!(
            u64::from_be_bytes(buf[..8].try_into().unwrap()),
            from,
            "voice from someone else"
        );
        voice += 1;
    }
    voice
}

#[test]
fn sighup_changes_limits_during_a_call_without_dropping_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    write(&file, "max_members = 2\nmax_member_pps = 1000\n");
    let s = ServerProcess::start_with(&["--config", file.to_str().unwrap()]);
    let key = s.public_key();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let join = |uid: u64| {
        s.request(&Req::Join {
            uid,
            juid: uid,
            chid: ch,
        })
    };
    let peers: Vec<UdpPeer> = (0..2)
        .map(|_| {
            let uid = s.signup();
            match join(uid) {
                Rep::Value(port) => UdpPeer::new(s.udp_addr(port), uid),
                other => panic!("JOIN -> {other:?}"),
            }
        })
        .collect();
    for p in &peers {
        p.bind(&key);
    }
    for p in &peers {
        p.drain(Duration::from_millis(100));
    }
    let (a, b) = (&peers[0], &peers[1]);
    let c = s.signup();
    assert_eq!(join(c), Rep::Error(E::Serv), "the file's max_members = 2");

    // Raise max_members during the call, while A talks to B.
    write(&file, "max_members = 3\nmax_member_pps = 1000\n");
    let talker = {
        let (sock, server, uid) = (a.socket.try_clone().unwrap(), a.server, a.uid);
        std::thread::spawn(move || {
            let a = UdpPeer::on(sock, server, uid);
            for i in 0..50 {
                a.voice(format!("during {i}").as_bytes());
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    hangup(&s, 1);
    talker.join().unwrap();
    assert!(
        only_voice_from(b, a.uid, Duration::from_millis(300)) >= 45,
        "voice kept flowing through the reload"
    );
    let c = match join(c) {
        Rep::Value(port) => UdpPeer::new(s.udp_addr(port), c),
        other => panic!("the new max_members = 3: JOIN -> {other:?}"),
    };
    c.bind(&key);
    b.drain(Duration::from_millis(100)); // its JOIN announcement

    // Lower the packet rate: the call's existing members are held to it at once.
    write(&file, "max_members = 3\nmax_member_pps = 20\n");
    hangup(&s, 2);
    for i in 0..200 {
        a.voice(format!("flood {i}").as_bytes());
    }
    let got = only_voice_from(b, a.uid, Duration::from_millis(500));
    // Burst at 20 pps: max(20 / 4, 20) = 20 packets, plus what refills meanwhile.
    assert!(
        (15..=40).contains(&got),
        "{got} of 200 passed at 20 packets/s"
    );

    // A file that does not load changes nothing and stops nothing.
    write(&file, "max_members = \"lots\"\n");
    hangup(&s, 3);
    assert!(
        s.stderr_log().contains("max_members"),
        "the bad key is named"
    );
    std::thread::sleep(Duration::from_millis(1100)); // refill A's bucket a little
    let sent = a.voice(b"still here");
    assert_eq!(b.expect_packet(), sent.to_vec());
    let d = s.signup();
    assert_eq!(
        join(d),
        Rep::Error(E::Serv),
        "still max_members = 3 (three bound)"
    );

    // Sign-up rules reload too: new users get the new default permissions.
    let perms = Perms::ADD_CHANNEL.bits() | Perms::KICK_USER.bits();
    write(
        &file,
        &format!("max_members = 3\ndefault_perms = {perms}\n"),
    );
    hangup(&s, 4);
    let e = s.signup();
    assert_eq!(
        s.request(&Req::UserInfo { uid: e }),
        Rep::UserInfo {
            perms,
            name: String::new()
        }
    );
    // A and B were never dropped: both still bound, A still heard.
    let sent = a.voice(b"the end");
    assert_eq!(b.expect_packet(), sent.to_vec());
    // A key that needs a restart is reported, not applied.
    write(&file, "max_members = 3\nmax_connections = 7\n");
    hangup(&s, 5);
    assert!(s.stderr_log().contains("restart to apply"));
}
