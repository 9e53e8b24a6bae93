//! The headless client's one-shot commands and error messages, against the real server.

use kv_tests::kv::kv;
use kv_tests::ServerProcess;

#[test]
fn register_create_list_delete() {
    let server = ServerProcess::start();
    let s = server.addr.to_string();
    let cfg = tempfile::tempdir().unwrap();
    let out = kv(&s, cfg.path(), &["register"]);
    assert!(out.status.success(), "{}", out.stderr);
    let uid: u64 = out.stdout.trim().parse().expect("uid alone on a line");
    // The first registration is remembered as this server's identity.
    let stored = std::fs::read_to_string(cfg.path().join("identities")).unwrap();
    assert!(stored.contains(&format!("{s} {uid}")), "{stored}");

    let out = kv(&s, cfg.path(), &["create", "--name", "lobby"]);
    assert!(out.status.success(), "{}", out.stderr);
    let chid: u64 = out
        .stdout
        .trim()
        .parse()
        .expect("channel id alone on a line");
    let out = kv(&s, cfg.path(), &["create"]);
    let chid2: u64 = out.stdout.trim().parse().unwrap();

    let out = kv(&s, cfg.path(), &["channels"]);
    let ids: Vec<u64> = out.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert!(ids.contains(&chid) && ids.contains(&chid2), "{ids:?}");
    let name = kv_client::control::ControlClient::new(&s)
        .unwrap()
        .channel_name(chid)
        .unwrap();
    assert_eq!(name, "lobby");

    let out = kv(&s, cfg.path(), &["delete", &chid.to_string()]);
    assert!(out.status.success(), "{}", out.stderr);
    let out = kv(&s, cfg.path(), &["channels"]);
    assert!(!out.stdout.contains(&chid.to_string()));
}

#[test]
fn identity_is_created_on_first_use() {
    let server = ServerProcess::start();
    let s = server.addr.to_string();
    let cfg = tempfile::tempdir().unwrap();
    // No register: create registers and stores an identity itself.
    let out = kv(&s, cfg.path(), &["create"]);
    assert!(out.status.success(), "{}", out.stderr);
    let stored = std::fs::read_to_string(cfg.path().join("identities")).unwrap();
    let again = kv(&s, cfg.path(), &["create"]);
    assert!(again.status.success());
    assert_eq!(
        stored,
        std::fs::read_to_string(cfg.path().join("identities")).unwrap()
    );
}

#[test]
fn errors_are_one_clear_line_with_nonzero_exit() {
    let server = ServerProcess::start();
    let s = server.addr.to_string();
    let cfg = tempfile::tempdir().unwrap();
    let check = |args: &[&str], server: &str, want: &str| {
        let out = kv(server, cfg.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("kv: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
    };
    // Nothing listens on a port we just closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    check(&["channels"], &dead, "unreachable");
    check(
        &["join", "424242", "--duration", "1"],
        &s,
        "unknown channel 424242",
    );
    check(&["delete", "424242"], &s, "unknown channel 424242");
    let owner = kv(&s, cfg.path(), &["create"]);
    let chid = owner.stdout.trim().to_string();
    // Someone else may not delete it.
    let other = tempfile::tempdir().unwrap();
    let out = kv(&s, other.path(), &["delete", &chid]);
    assert!(!out.status.success());
    assert_eq!(out.stderr.trim(), "kv: access denied");
    let missing = cfg.path().join("missing.wav");
    check(
        &[
            "join",
            &chid,
            "--input",
            missing.to_str().unwrap(),
            "--duration",
            "1",
        ],
        &s,
        "unreadable WAV",
    );
    let garbage = cfg.path().join("garbage.wav");
    std::fs::write(&garbage, b"not a wav file at all").unwrap();
    check(
        &[
            "join",
            &chid,
            "--input",
            garbage.to_str().unwrap(),
            "--duration",
            "1",
        ],
        &s,
        "unreadable WAV",
    );
}
