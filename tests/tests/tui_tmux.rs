//! `kv-tui` in a real terminal: tmux runs the built binary against a real `kv-server`,
//! keys are sent with `send-keys`, and the screen is read with `capture-pane`, asserting
//! what a person would see. Then the process must exit 0 with the terminal restored
//! (main screen back, cursor shown, cooked mode).
//!
//! Ignored (with the reason) when tmux was not installed at build time (`tests/build.rs`);
//! `make test` installs it, so CI runs them.

use std::path::{Path, PathBuf};

use kv_proto::{ChannelInfo, ControlReply, ControlRequest};
use kv_tests::tmux::{shell_quote, Tmux};
use kv_tests::ServerProcess;

fn tui_bin() -> PathBuf {
    kv_tests::bin_path("kv-tui-e2e", "KV_TUI_BIN")
}

fn channel_info(server: &ServerProcess, chid: u64) -> ChannelInfo {
    match server.request(&ControlRequest::ChannelInfo { chid }) {
        ControlReply::ChannelInfo(i) => i,
        other => panic!("CHANNEL_INFO -> {other:?}"),
    }
}

/// The uid kv-tui stored for `server` in its config dir.
fn stored_uid(dir: &Path, server: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join("identities")).expect("identity store written");
    text.lines()
        .find_map(|l| l.strip_prefix(server)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no uid for {server} in:\n{text}"))
}

#[test]
#[cfg_attr(kv_no_tmux, ignore = "tmux is not installed (`make deps` installs it)")]
fn join_mute_help_and_quit_in_a_real_terminal() {
    assert!(
        Tmux::available(),
        "tmux is not installed (`make deps` installs it)"
    );
    let server = ServerProcess::start();
    // Someone is already in a named channel.
    let alice = server.signup();
    let chid = server.ok(&ControlRequest::Create { uid: alice });
    server.ok(&ControlRequest::SetChannelName {
        uid: alice,
        chid,
        name: "lobby".into(),
    });
    server.ok(&ControlRequest::SetUserName {
        uid: alice,
        target: alice,
        name: "alice".into(),
    });
    let port = server.ok(&ControlRequest::Join {
        uid: alice,
        juid: alice,
        chid,
    });
    // Alice binds her voice address (members are listed once bound).
    let alice_voice = kv_tests::UdpPeer::new(server.udp_addr(port), alice);
    alice_voice.bind(&server.public_key());

    let config = tempfile::tempdir().expect("config dir");
    let addr = server.addr.to_string();
    // After kv-tui exits, the shell reports its exit status and whether the terminal is
    // back in cooked mode (`icanon` rather than raw mode's `-icanon`).
    let cmd = format!(
        "KV_CONFIG_DIR={dir} KV_TUI_PTT=toggle {bin} --server {addr}; \
         echo KV_TUI_EXIT=$?; echo STTY=$(stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'); \
         sleep 600",
        dir = shell_quote(&config.path().display().to_string()),
        bin = shell_quote(&tui_bin().display().to_string()),
    );
    let tmux = Tmux::start(&cmd);

    // First run: registered, and asked for a display name.
    tmux.wait_text("Your display name");
    tmux.keys(&["-l", "bob"]);
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the channel list", |s| {
        s.contains("Channels (1)") && s.contains("lobby (1)") && !s.contains("Your display name")
    });
    assert!(s.contains("not in a channel"), "{s}");
    assert!(
        s.contains("voice-activated"),
        "status shows the transmit mode:\n{s}"
    );
    let bob = stored_uid(config.path(), &addr);

    // Join the selected (only) channel: both members are listed, the server agrees.
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the members of lobby", |s| {
        s.contains("lobby · 2 members") && s.contains("alice") && s.contains("bob (you)")
    });
    assert!(s.contains("● lobby"), "joined channel is marked:\n{s}");
    // The server lists bob once his voice address is bound, a round trip after the
    // screen shows the join (and a CHANNEL_INFO answer may be cached for 250 ms).
    let listed = || -> Vec<u64> {
        channel_info(&server, chid)
            .members
            .iter()
            .map(|m| m.0)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut members = listed();
    while !members.contains(&bob) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        members = listed();
    }
    assert!(
        members.contains(&bob),
        "server lists bob as a member: {members:?}"
    );
    // The server knows the name typed at the prompt.
    match server.request(&ControlRequest::GetUserName { uid: bob }) {
        ControlReply::Name(n) => assert_eq!(n, "bob"),
        other => panic!("GET_USER_NAME -> {other:?}"),
    }

    // Mute: the status line and the member list say so.
    tmux.keys(&["m"]);
    let s = tmux.wait_text("MUTED");
    assert!(s.contains("bob (you) muted"), "{s}");

    // Help lists the keys, including the push-to-talk style in use.
    tmux.keys(&["?"]);
    let s = tmux.wait_text("Keys (any key closes)");
    assert!(
        s.contains("mute / unmute") && s.contains("push-to-talk"),
        "{s}"
    );
    assert!(
        s.contains("press, press again"),
        "toggle push-to-talk is said:\n{s}"
    );
    tmux.keys(&["Escape"]);
    tmux.wait_for("help closed", |s| !s.contains("Keys (any key closes)"));

    // Unmute again, then quit.
    tmux.keys(&["m"]);
    tmux.wait_for("unmuted", |s| !s.contains("MUTED"));
    tmux.keys(&["q"]);
    let s = tmux.wait_text("KV_TUI_EXIT=");
    assert!(s.contains("KV_TUI_EXIT=0"), "kv-tui exits 0:\n{s}");
    // Terminal restored: the TUI's screen is gone, main screen, cursor visible, cooked mode.
    let s = tmux.wait_text("STTY=");
    assert!(!s.contains("Channels ("), "alternate screen left:\n{s}");
    assert!(
        s.contains("STTY=icanon"),
        "terminal back in cooked mode:\n{s}"
    );
    assert_eq!(tmux.format("#{alternate_on}"), "0", "main screen");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "cursor visible");
    // Leaving on quit: the server no longer lists bob.
    let members: Vec<u64> = channel_info(&server, chid)
        .members
        .iter()
        .map(|m| m.0)
        .collect();
    assert!(!members.contains(&bob), "bob left on quit: {members:?}");
    // Logs went to the file, not the screen.
    let log = std::fs::read_to_string(config.path().join("kv-tui.log")).expect("log file");
    assert!(log.contains("kv-tui started"), "{log}");
}

#[test]
#[cfg_attr(kv_no_tmux, ignore = "tmux is not installed (`make deps` installs it)")]
fn demo_starts_a_talking_bot_and_joins_you() {
    assert!(
        Tmux::available(),
        "tmux is not installed (`make deps` installs it)"
    );
    let config = tempfile::tempdir().expect("config dir");
    let cmd = format!(
        "KV_CONFIG_DIR={dir} {bin} --demo; echo KV_TUI_EXIT=$?; sleep 600",
        dir = shell_quote(&config.path().display().to_string()),
        bin = shell_quote(&tui_bin().display().to_string()),
    );
    let tmux = Tmux::start(&cmd);
    // Joined to the demo channel with the bot, no name prompt, and the bot is heard talking
    // (its voice packets arrive and are decoded: the marker comes from the receive path).
    let s = tmux.wait_for("the bot talking", |s| {
        s.contains("demo · 2 members") && s.contains("kv-bot talking")
    });
    assert!(s.contains("you (you)"), "{s}");
    assert!(!s.contains("Your display name"), "{s}");
    // Link quality of the bot on demand.
    tmux.keys(&["i"]);
    tmux.wait_text("Link quality");
    tmux.keys(&["q"]);
    let s = tmux.wait_text("KV_TUI_EXIT=");
    assert!(s.contains("KV_TUI_EXIT=0"), "kv-tui --demo exits 0:\n{s}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "main screen");
}
