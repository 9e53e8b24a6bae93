//! Screen snapshots on ratatui's `TestBackend` (insta): what a person sees for each state.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::tui::action::{Event, Intent};
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
    app.update(Event::Connected {
        uid: 1,
        name: "ann".into(),
        perms: kv_proto::Perms::ADD_CHANNEL.bits(),
    });
    app.update(Event::ChannelsLoaded(vec![
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
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 1 });
    app.update(Event::MembersLoaded {
        chid: 1,
        members: vec![(1, "ann".into()), (2, "bob".into()), (3, "carol".into())],
    });
    app.update(Event::Talking {
        uid: 2,
        talking: true,
    });
    app.update(Event::Audio(AudioState::Ready {
        input: "default".into(),
        output: "default".into(),
    }));
    app.update(Event::Link {
        rtt_ms: Some(4),
        loss_pct: Some(0.5),
    });
    app.update(Event::MicLevel {
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
    app.update(Intent::ToggleHelp);
    insta::assert_snapshot!(render(&app, 80, 30));
}

#[test]
fn no_device_status() {
    let mut app = base();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 1 });
    app.update(Event::MembersLoaded {
        chid: 1,
        members: vec![(1, "ann".into()), (2, "bob".into())],
    });
    app.update(Event::Audio(AudioState::NoDevice(
        "no default input device".into(),
    )));
    insta::assert_snapshot!(render(&app, 80, 16));
}

#[test]
fn echo_cancellation_and_gain_control_off() {
    let mut app = in_lobby();
    app.update(Intent::ToggleAec);
    app.update(Intent::ToggleAgc);
    insta::assert_snapshot!(render(&app, 80, 16));
}

#[test]
fn link_quality_panel_and_push_to_talk_hold() {
    let mut app = in_lobby();
    app.mode = TransmitMode::PushToTalk;
    app.ptt_style = PttStyle::Hold;
    app.update(Event::PeerStats {
        uid: 2,
        stats: ReceiveQuality {
            received: 500,
            lost: 2,
            recovered: 40,
            loss_pct: 8.4,
            jitter_ms: 3.2,
            buffer_ms: 40.0,
        },
    });
    app.update(Intent::ToggleQuality);
    insta::assert_snapshot!(render(&app, 80, 18));
}

#[test]
fn name_prompt_and_reconnecting() {
    let mut app = base();
    app.update(Event::Reconnecting {
        attempt: 2,
        delay_ms: 1000,
        reason: "connection refused".into(),
    });
    app.update(Intent::SetName);
    app.update(Intent::Input('!'));
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
    app.update(Intent::OpenDevices);
    app.update(Event::DevicesListed {
        inputs: vec!["USB Microphone".into(), "pulse".into()],
        outputs: vec!["Headphones".into()],
    });
    app.update(Intent::Down);
    insta::assert_snapshot!(render(&app, 80, 16));
}

/// The whole path of a kick from a session that floods us with telemetry: the session's
/// events through [`crate::tui::session_events`] into the inbox while the event loop is
/// busy (not draining), then one turn of the loop and a redraw.
#[test]
fn a_kick_reaches_the_screen_with_the_inbox_saturated_by_telemetry() {
    use crate::audio::PeerStats;
    use crate::session::{SessionEvent, SessionStats};
    use crate::tui::inbox::{inbox, INBOX_CAPACITY};
    use crate::tui::session_events::events_for;

    let mut app = in_lobby();
    let (sink, rx) = inbox();
    let me = app.uid;
    let producer = std::thread::spawn(move || {
        let stats = SessionStats {
            peers: (2..=3)
                .map(|uid| PeerStats {
                    uid,
                    received: 100,
                    ..PeerStats::default()
                })
                .collect(),
            ..SessionStats::default()
        };
        // Far more telemetry than the inbox holds, and none of it is waited for.
        for i in 0..(INBOX_CAPACITY * 20) {
            let burst = [
                SessionEvent::Stats(Box::new(stats.clone())),
                SessionEvent::TalkingStarted { uid: 2 },
                SessionEvent::TalkingStopped { uid: 2 },
            ];
            for ev in burst {
                for e in events_for(ev, me) {
                    assert!(sink.send(e));
                }
            }
            sink.send(Event::MicLevel {
                dbfs: -(i as f32 % 60.0),
                vad: 0.5,
                sending: true,
            });
        }
        for e in events_for(SessionEvent::Kicked, me) {
            assert!(sink.send(e), "the kick is queued");
        }
        // The flood goes on after the kick.
        for _ in 0..INBOX_CAPACITY * 5 {
            sink.send(Event::MicLevel {
                dbfs: -1.0,
                vad: 1.0,
                sending: true,
            });
        }
    });
    // Telemetry never blocks a sender, so the producer finishes before the loop drains.
    producer.join().expect("producer");

    let keymap = KeyMap::default();
    let batch = rx
        .batch(std::time::Duration::ZERO)
        .expect("the inbox is open");
    assert!(
        batch.len() < 20,
        "telemetry coalesced (newest wins), not queued: {} messages",
        batch.len()
    );
    for msg in batch {
        let _commands = crate::tui::runner::handle(&mut app, &keymap, msg);
    }
    assert_eq!(app.joined, None, "the kick was applied");
    let screen = render(&app, 100, 24);
    assert!(
        screen.contains("you were removed from the channel"),
        "{screen}"
    );
    assert_eq!(app.mic_dbfs, -100.0, "no stale meter after leaving");
}

/// `in_lobby`, lobby encrypted (music plain, #3 not known yet), in epoch 4, with chat.
fn in_encrypted_lobby() -> App {
    let mut app = base();
    app.update(Event::ChannelModes(vec![(1, true), (2, false)]));
    let mut app = {
        let modes = app.modes.clone();
        let mut a = in_lobby();
        a.modes = modes;
        a
    };
    app.update(Event::Epoch {
        epoch: 4,
        safety_code: "04721 88310 59122 00417 63385".into(),
        members: 3,
    });
    for (seq, sender, text) in [
        (1, 2, "hello from bob"),
        (2, 1, "hi bob, ann here"),
        (
            3,
            3,
            "a longer message that has to wrap onto a second row of the chat pane",
        ),
    ] {
        app.update(Event::ChatMessage {
            seq,
            sender,
            text: text.into(),
        });
    }
    app.notice = None;
    app
}

#[test]
fn encrypted_channel_lock_safety_code_and_chat_pane() {
    insta::assert_snapshot!(render(&in_encrypted_lobby(), 100, 24));
}

#[test]
fn chat_input_line_and_key_changed_flag() {
    let mut app = in_encrypted_lobby();
    app.update(Event::KeyChanged(3));
    // Bob left: his lines keep his name.
    app.update(Event::PeerLeft(2));
    app.update(Intent::OpenChat);
    for c in "see you".chars() {
        app.update(Intent::Input(c));
    }
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn plain_channel_is_marked_plain() {
    let mut app = base();
    app.update(Event::ChannelModes(vec![(1, false), (2, true)]));
    let modes = app.modes.clone();
    let mut app = in_lobby();
    app.modes = modes;
    app.update(Intent::OpenChat);
    insta::assert_snapshot!(render(&app, 100, 20));
}
