//! Screen snapshots on ratatui's `TestBackend` (insta): what a person sees for each state.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::tui::action::Action;
use crate::tui::keys::KeyMap;
use crate::tui::model::*;
use crate::tui::ui::draw;

fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| draw(app, f)).expect("draw");
    t.backend().to_string()
}

fn row(id: u64, name: &str, members: usize) -> ChannelRow {
    ChannelRow {
        id,
        name: name.into(),
        members,
        owner: 1,
    }
}

/// Connected as "ann" (uid 1) to a server with three channels, in none of them.
fn base() -> App {
    let mut app = App::new("127.0.0.1:8085");
    app.help = KeyMap::default().help();
    app.update(Action::Connected {
        uid: 1,
        name: "ann".into(),
        perms: kv_proto::Perms::ADD_CHANNEL.bits(),
    });
    app.update(Action::ChannelsLoaded(vec![
        row(1, "lobby", 3),
        row(2, "music", 0),
        row(3, "", 1),
    ]));
    app.notice = None;
    app
}

/// `base` joined to lobby with bob talking and carol silent.
fn in_lobby() -> App {
    let mut app = base();
    app.update(Action::JoinSelected);
    app.update(Action::Joined { chid: 1 });
    app.update(Action::MembersLoaded {
        chid: 1,
        members: vec![(1, "ann".into()), (2, "bob".into()), (3, "carol".into())],
    });
    app.update(Action::Talking {
        uid: 2,
        talking: true,
    });
    app.update(Action::Audio(AudioState::Ready {
        input: "default".into(),
        output: "default".into(),
    }));
    app.update(Action::Link {
        rtt_ms: Some(4),
        loss_pct: Some(0.5),
    });
    app.update(Action::MicLevel {
        dbfs: -18.0,
        vad: 0.8,
        sending: true,
    });
    app.notice = None;
    app
}

#[test]
fn channel_list() {
    insta::assert_snapshot!(render(&base(), 80, 16));
}

#[test]
fn members_with_talking_markers() {
    let mut app = in_lobby();
    app.members[2].volume = 70;
    insta::assert_snapshot!(render(&app, 80, 16));
}

#[test]
fn help_overlay() {
    let mut app = in_lobby();
    app.update(Action::ToggleHelp);
    insta::assert_snapshot!(render(&app, 80, 30));
}

#[test]
fn no_device_status() {
    let mut app = base();
    app.update(Action::JoinSelected);
    app.update(Action::Joined { chid: 1 });
    app.update(Action::MembersLoaded {
        chid: 1,
        members: vec![(1, "ann".into()), (2, "bob".into())],
    });
    app.update(Action::Audio(AudioState::NoDevice(
        "no default input device".into(),
    )));
    insta::assert_snapshot!(render(&app, 80, 16));
}

#[test]
fn link_quality_panel_and_push_to_talk_hold() {
    let mut app = in_lobby();
    app.mode = TransmitMode::PushToTalk;
    app.ptt_style = PttStyle::Hold;
    app.update(Action::PeerStats {
        uid: 2,
        stats: LinkStats {
            received: 500,
            lost: 2,
            recovered: 40,
            loss_pct: 8.4,
            jitter_ms: 3.2,
            buffer_ms: 40.0,
        },
    });
    app.update(Action::ToggleQuality);
    insta::assert_snapshot!(render(&app, 80, 18));
}

#[test]
fn name_prompt_and_reconnecting() {
    let mut app = base();
    app.update(Action::Reconnecting {
        attempt: 2,
        delay_ms: 1000,
        reason: "connection refused".into(),
    });
    app.update(Action::SetName);
    app.update(Action::Input('!'));
    insta::assert_snapshot!(render(&app, 80, 16));
}

#[test]
fn tiny_terminal_does_not_panic() {
    let app = in_lobby();
    for (w, h) in [(1, 1), (10, 3), (20, 8), (0, 0)] {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        t.draw(|f| draw(&app, f)).expect("draw");
    }
}

#[test]
fn device_picker() {
    let mut app = in_lobby();
    app.update(Action::OpenDevices);
    app.update(Action::DevicesListed {
        inputs: vec!["USB Microphone".into(), "pulse".into()],
        outputs: vec!["Headphones".into()],
    });
    app.update(Action::Down);
    insta::assert_snapshot!(render(&app, 80, 16));
}
