//! `kv-tui` in an end-to-end encrypted channel, in a real terminal (tmux) against a real
//! `kv-server`, with a second member that is a `kv join` process: the lock and the safety
//! code on screen (the same code the other member computed for that epoch), a message of
//! the other member shown in the chat pane, and one typed in kv-tui received by the other.
//!
//! Ignored (with the reason) when tmux was not installed at build time (`tests/build.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_client::control::ControlClient;
use kv_proto::keyfile::Identity;
use kv_tests::kv::KvJoin;
use kv_tests::server::ServerProcess;
use kv_tests::tmux::{shell_quote, Tmux};

const WAIT: Duration = Duration::from_secs(15);

fn tui_bin() -> PathBuf {
    kv_tests::bin_path("kv-tui-e2e", "KV_TUI_BIN")
}

/// A keyed user and its identity file (0600, as the clients require).
fn identity_file(server: &ServerProcess, dir: &Path, name: &str) -> (Identity, PathBuf) {
    let uid = server.signup();
    let id = Identity {
        uid,
        key: server.key_of(uid).expect("keyed user"),
    };
    let path = dir.join(name);
    std::fs::write(&path, id.to_text()).expect("identity file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (id, path)
}

#[test]
#[cfg_attr(kv_no_tmux, ignore = "tmux is not installed (`make deps` installs it)")]
fn chat_between_kv_tui_and_kv_in_an_encrypted_channel() {
    assert!(
        Tmux::available(),
        "tmux is not installed (`make deps` installs it)"
    );
    let server = ServerProcess::start_keyed(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (ann, ann_file) = identity_file(&server, dir.path(), "ann.key");
    let (bob, bob_file) = identity_file(&server, dir.path(), "bob.key");
    let addr = server.addr.to_string();
    // Bob makes an encrypted channel "secret" and a plain one "open".
    let owner = ControlClient::new(&addr)
        .expect("control client")
        .with_signer(bob.clone());
    let chid = owner.create_encrypted(bob.uid).expect("CREATE_ENCRYPTED");
    owner
        .set_channel_name(bob.uid, chid, "secret")
        .expect("name");
    let plain = owner.create(bob.uid).expect("CREATE");
    owner
        .set_channel_name(bob.uid, plain, "open")
        .expect("name");
    owner.set_user_name(bob.uid, bob.uid, "bob").expect("name");

    let config = tempfile::tempdir().expect("config dir");
    let cmd = format!(
        "KV_CONFIG_DIR={dir} {bin} --server {addr} --identity {id}; echo KV_TUI_EXIT=$?; sleep 600",
        dir = shell_quote(&config.path().display().to_string()),
        bin = shell_quote(&tui_bin().display().to_string()),
        id = shell_quote(&ann_file.display().to_string()),
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_text("Your display name");
    tmux.keys(&["-l", "ann"]);
    tmux.keys(&["Enter"]);
    // The list marks each channel as CHANNEL_MODE says: a lock, or "plain".
    tmux.wait_for("the channel modes", |s| {
        s.contains("secret (0) 🔒")
            && s.contains("open (0) plain")
            && !s.contains("Your display name")
    });

    // Join "secret" (rows are sorted by id): the push connection opens, ann is alone in
    // the group.
    if plain < chid {
        tmux.keys(&["j"]);
    }
    tmux.keys(&["Enter"]);
    tmux.wait_for("ann in the encrypted channel", |s| {
        s.contains("🔒 E2E") && s.contains("Chat · epoch")
    });

    // Bob joins with `kv join` and says something once both are in the group.
    let bob_join = KvJoin::spawn_identity(
        &addr,
        &bob_file,
        chid,
        &[
            "--duration",
            "30",
            "--say",
            "hello from bob",
            "--say-when-members",
            "2",
        ],
    );
    // Bob's epoch with both members: its safety code is the one ann's screen must show.
    let end = Instant::now() + WAIT;
    let (epoch, code) = loop {
        let found = bob_join.events().into_iter().find_map(|e| {
            (e["event"] == "epoch" && e["members"].as_array().is_some_and(|m| m.len() == 2)).then(
                || {
                    (
                        e["epoch"].as_u64().expect("epoch"),
                        e["safety_code"].as_str().expect("code").to_string(),
                    )
                },
            )
        });
        if let Some(f) = found {
            break f;
        }
        assert!(Instant::now() < end, "bob never got a 2-member epoch");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code.len(), 29, "five groups of five digits: {code}");
    let want = format!("epoch {epoch} · safety {code}");
    let s = tmux.wait_for("bob's message and the shared safety code", |s| {
        s.contains("bob: hello from bob") && s.contains(&want)
    });
    assert!(s.contains("secret · 2 members"), "{s}");
    let short = code.split(' ').next().unwrap_or_default();
    assert!(s.contains(&format!("🔒 E2E {short}")), "status line:\n{s}");

    // Ann writes back: "/" opens the input line, Enter sends through the push connection.
    tmux.keys(&["/"]);
    tmux.wait_text("> █");
    tmux.keys(&["-l", "hi bob, ann here"]);
    tmux.wait_text("> hi bob, ann here█");
    tmux.keys(&["Enter"]);
    // Ann sees her own message in the server's order, after bob's.
    let s = tmux.wait_text("ann: hi bob, ann here");
    let bob_at = s.find("bob: hello from bob").expect("bob's line");
    let ann_at = s.find("ann: hi bob, ann here").expect("ann's line");
    assert!(bob_at < ann_at, "server order:\n{s}");
    // And bob receives it, decrypted, from ann.
    let end = Instant::now() + WAIT;
    loop {
        let got = bob_join.events().into_iter().any(|e| {
            e["event"] == "message" && e["text"] == "hi bob, ann here" && e["sender"] == ann.uid
        });
        if got {
            break;
        }
        assert!(
            Instant::now() < end,
            "bob never received ann's message: {:?}",
            bob_join.events()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A burst past the server's chat rate (20 at once, then 5 a second): the refused ones
    // are named on the status line, and nothing crashes or stalls.
    let burst: Vec<&str> = std::iter::repeat_n(["/", "z", "Enter"], 40)
        .flatten()
        .collect();
    tmux.keys(&burst);
    tmux.wait_text("not delivered: the server refused \"z\" (chat rate or size limit)");
    let zs = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter(|e| e["event"] == "message" && e["text"] == "z")
            .count()
    };
    let end = Instant::now() + WAIT;
    while zs(&bob_join.events()) == 0 {
        assert!(Instant::now() < end, "none of the burst reached bob");
        std::thread::sleep(Duration::from_millis(50));
    }
    bob_join.terminate();
    let got = zs(&bob_join.events());
    bob_join.finish(WAIT).assert_ok();
    assert!(
        got < 40,
        "the server refused part of the burst: {got} of 40 arrived"
    );

    tmux.keys(&["q"]);
    let s = tmux.wait_text("KV_TUI_EXIT=");
    assert!(s.contains("KV_TUI_EXIT=0"), "kv-tui exits 0:\n{s}");
}
