//! Unit tests of [`App::update`]: state and commands, no terminal, no server.

use crate::tui::action::{Command, Event, Intent, VoiceControl};
use crate::tui::model::*;
use kv_proto::Perms;

/// The join command `app` gives for `chid` (with its current setup).
fn join(app: &App, chid: u64) -> Command {
    Command::Join {
        chid,
        setup: app.voice_setup(),
    }
}

fn row(id: u64, name: &str, members: usize, owner: u64) -> ChannelRow {
    ChannelRow {
        id,
        name: name.into(),
        members,
        owner,
    }
}

/// A connected app (uid 7, may create channels) with two channels.
fn connected() -> App {
    let mut app = App::new("127.0.0.1:8085");
    app.update(Event::Connected {
        uid: 7,
        name: "me".into(),
        perms: Perms::ADD_CHANNEL.bits(),
    });
    app.update(Event::ChannelsLoaded(vec![
        row(20, "music", 0, 9),
        row(10, "lobby", 2, 7),
    ]));
    app
}

#[test]
fn channels_are_sorted_and_selection_follows_the_channel() {
    let mut app = connected();
    assert_eq!(app.channels[0].name, "lobby");
    app.update(Intent::Down);
    assert_eq!(app.selected_channel().unwrap().id, 20);
    // A new channel sorting before the selection keeps the cursor on "music".
    app.update(Event::ChannelsLoaded(vec![
        row(20, "music", 0, 9),
        row(10, "lobby", 2, 7),
        row(5, "new", 0, 7),
    ]));
    assert_eq!(app.selected_channel().unwrap().id, 20);
    app.update(Intent::Down);
    assert_eq!(app.channel_sel, 2, "cursor stops at the end");
}

#[test]
fn join_then_leave_emits_commands_and_tracks_state() {
    let mut app = connected();
    assert_eq!(app.update(Intent::JoinSelected), vec![join(&app, 10)]);
    assert_eq!(app.joining, Some(10));
    assert_eq!(
        app.update(Intent::JoinSelected),
        vec![],
        "no second join in flight"
    );
    let cmds = app.update(Event::Joined { chid: 10 });
    assert_eq!(
        cmds,
        vec![Command::Refresh],
        "the join carried the controls"
    );
    assert_eq!(app.joined, Some(10));
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(7, "me".into()), (8, "bob".into())],
    });
    assert_eq!(app.members.len(), 2);
    assert_eq!(app.channels[0].members, 2);
    // Members of another channel are ignored.
    app.update(Event::MembersLoaded {
        chid: 20,
        members: vec![(9, "x".into())],
    });
    assert_eq!(app.members.len(), 2);
    assert_eq!(app.update(Intent::Leave), vec![Command::Leave]);
    app.update(Event::Left {
        reason: "left".into(),
        rejoin: false,
    });
    assert_eq!(app.joined, None);
    assert!(app.members.is_empty());
    assert_eq!(app.update(Intent::Leave), vec![], "nothing to leave");
}

#[test]
fn talking_and_stats_land_on_the_right_member() {
    let mut app = connected();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(7, "me".into()), (8, "bob".into())],
    });
    app.update(Event::Talking {
        uid: 8,
        talking: true,
    });
    let stats = ReceiveQuality {
        loss_pct: 3.0,
        ..ReceiveQuality::default()
    };
    app.update(Event::PeerStats { uid: 8, stats });
    // A member refresh keeps talking flags and stats.
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(7, "me".into()), (8, "bob".into()), (11, String::new())],
    });
    let bob = app.members.iter().find(|m| m.uid == 8).unwrap();
    assert!(bob.talking);
    assert_eq!(bob.stats.unwrap().loss_pct, 3.0);
    assert_eq!(member_label(&app.members[2]), "user 11");
}

#[test]
fn confusable_member_names_get_a_disambiguator() {
    let members: Vec<Member> = [
        (7, "me"),
        (1_000_042, "Ann"),
        // Cyrillic А: looks like "Ann".
        (55_512_345, "\u{410}nn"),
        (9, "bob"),
        (12, ""),
        (13, ""),
    ]
    .into_iter()
    .map(|(uid, name)| Member {
        uid,
        name: name.into(),
        talking: false,
        volume: 100,
        stats: None,
    })
    .collect();
    assert_eq!(
        member_labels(&members),
        [
            "me",
            "Ann#0042",
            "\u{410}nn#2345",
            "bob",
            "user 12",
            "user 13"
        ]
    );
}

#[test]
fn mute_deafen_and_modes() {
    let mut app = connected();
    assert_eq!(
        app.update(Intent::ToggleMute),
        vec![Command::Voice(VoiceControl::Mute(true))]
    );
    assert!(app.muted && !app.transmit_allowed());
    app.update(Intent::ToggleDeafen);
    assert!(app.deafened);
    // Unmuting while deaf undeafens: talking while unable to hear is a trap.
    let cmds = app.update(Intent::ToggleMute);
    assert_eq!(
        cmds,
        vec![
            Command::Voice(VoiceControl::Deafen(false)),
            Command::Voice(VoiceControl::Mute(false))
        ]
    );
    assert!(!app.muted && !app.deafened);
    let cmds = app.update(Intent::CycleMode);
    assert_eq!(app.mode, TransmitMode::PushToTalk);
    assert!(cmds.contains(&Command::SaveSettings));
    app.update(Intent::CycleMode);
    app.update(Intent::CycleMode);
    assert_eq!(app.mode, TransmitMode::VoiceActivated);
    assert_eq!(
        app.update(Intent::ToggleDenoise)[0],
        Command::Voice(VoiceControl::Denoise(false))
    );
    assert_eq!(
        app.update(Intent::ToggleAec),
        vec![
            Command::Voice(VoiceControl::Aec(false)),
            Command::SaveSettings
        ]
    );
    assert!(!app.aec);
    assert_eq!(
        app.update(Intent::ToggleAgc),
        vec![
            Command::Voice(VoiceControl::Agc(false)),
            Command::SaveSettings
        ]
    );
    assert!(!app.agc);
    app.update(Intent::ToggleAec);
    assert!(app.aec);
}

#[test]
fn push_to_talk_hold_and_toggle() {
    let mut app = connected();
    assert_eq!(
        app.update(Intent::PttPress),
        vec![],
        "ignored outside ptt mode"
    );
    app.mode = TransmitMode::PushToTalk;
    app.ptt_style = PttStyle::Hold;
    assert_eq!(
        app.update(Intent::PttPress),
        vec![Command::Voice(VoiceControl::PushToTalk(true))]
    );
    assert!(app.transmit_allowed());
    assert_eq!(app.update(Intent::PttPress), vec![], "held: no change");
    assert_eq!(
        app.update(Intent::PttRelease),
        vec![Command::Voice(VoiceControl::PushToTalk(false))]
    );
    app.ptt_style = PttStyle::Toggle;
    app.update(Intent::PttPress);
    assert!(app.ptt_active);
    assert_eq!(
        app.update(Intent::PttRelease),
        vec![],
        "toggle ignores releases"
    );
    app.update(Intent::PttPress);
    assert!(!app.ptt_active);
}

#[test]
fn volume_is_per_member_bounded_and_remembered() {
    let mut app = connected();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(8, "bob".into())],
    });
    app.update(Intent::FocusNext);
    assert_eq!(app.focus, Focus::Members);
    let cmds = app.update(Intent::VolumeUp);
    assert_eq!(
        cmds[0],
        Command::Voice(VoiceControl::PeerGain { uid: 8, gain: 1.1 })
    );
    for _ in 0..50 {
        app.update(Intent::VolumeUp);
    }
    assert_eq!(app.members[0].volume, 300);
    for _ in 0..50 {
        app.update(Intent::VolumeDown);
    }
    assert_eq!(app.members[0].volume, 0);
    assert_eq!(app.volumes.get(&8), Some(&0));
    // A later session starts with the remembered gain.
    assert!(app.voice_setup().gains.contains(&(8, 0.0)));
}

#[test]
fn vad_threshold_steps_and_clamps() {
    let mut app = connected();
    for _ in 0..30 {
        app.update(Intent::VadUp);
    }
    assert_eq!(app.vad_threshold, 1.0);
    app.update(Intent::VadDown);
    assert!((app.vad_threshold - 0.95).abs() < 1e-6);
}

#[test]
fn create_rename_delete_go_through_prompts_and_permissions() {
    let mut app = connected();
    app.update(Intent::CreateChannel);
    for c in "chat".chars() {
        app.update(Intent::Input(c));
    }
    app.update(Intent::Backspace);
    assert_eq!(
        app.update(Intent::Submit),
        vec![Command::Create { name: "cha".into() }]
    );
    assert_eq!(app.overlay, Overlay::None);

    // lobby (id 10) is ours: rename prefilled with its name.
    app.update(Intent::RenameChannel);
    assert_eq!(
        app.overlay,
        Overlay::Prompt {
            kind: PromptKind::RenameChannel(10),
            input: "lobby".into()
        }
    );
    app.update(Intent::Input('2'));
    assert_eq!(
        app.update(Intent::Submit),
        vec![Command::Rename {
            chid: 10,
            name: "lobby2".into()
        }]
    );
    app.update(Intent::DeleteChannel);
    assert_eq!(app.overlay, Overlay::ConfirmDelete(10));
    assert_eq!(app.update(Intent::Input('n')), vec![]);
    app.update(Intent::DeleteChannel);
    assert_eq!(app.update(Intent::Input('y')), vec![Command::Delete(10)]);

    // music (id 20) belongs to uid 9: refused locally with a reason.
    app.update(Intent::Down);
    assert_eq!(app.update(Intent::DeleteChannel), vec![]);
    assert!(app.notice.as_deref().unwrap().contains("owner"));
    app.perms = Perms::NONE;
    assert_eq!(app.update(Intent::CreateChannel), vec![]);
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn prompt_swallows_keys_and_bounds_input() {
    let mut app = connected();
    app.update(Intent::CreateChannel);
    // Keys that mean something elsewhere do nothing while the prompt is open.
    assert_eq!(app.update(Intent::ToggleMute), vec![]);
    assert!(!app.muted);
    for _ in 0..100 {
        app.update(Intent::Input('é'));
    }
    let Overlay::Prompt { input, .. } = &app.overlay else {
        panic!("prompt closed")
    };
    assert!(input.len() <= kv_proto::MAX_NAME_LEN);
    assert_eq!(app.update(Intent::Cancel), vec![]);
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn first_run_asks_for_a_name_and_remembered_name_is_sent() {
    let mut app = App::new("s");
    app.update(Event::Connected {
        uid: 3,
        name: String::new(),
        perms: 0,
    });
    assert!(matches!(
        app.overlay,
        Overlay::Prompt {
            kind: PromptKind::DisplayName,
            ..
        }
    ));
    assert_eq!(
        app.update(Intent::Submit),
        vec![],
        "empty name is not accepted"
    );
    app.update(Intent::Input('z'));
    assert_eq!(
        app.update(Intent::Submit),
        vec![Command::SetDisplayName("z".into()), Command::SaveSettings]
    );

    let mut app = App::new("s");
    app.display_name = "zed".into();
    let cmds = app.update(Event::Connected {
        uid: 3,
        name: String::new(),
        perms: 0,
    });
    assert!(cmds.contains(&Command::SetDisplayName("zed".into())));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn reconnect_rejoins_the_channel() {
    let mut app = connected();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::Reconnecting {
        attempt: 1,
        delay_ms: 500,
        reason: "refused".into(),
    });
    assert_eq!(app.joined, None);
    assert_eq!(app.rejoin, Some(10));
    assert!(matches!(app.connection, Connection::Reconnecting { .. }));
    let cmds = app.update(Event::Connected {
        uid: 7,
        name: "me".into(),
        perms: 0,
    });
    assert!(cmds.contains(&join(&app, 10)));
    assert_eq!(app.joining, Some(10));
    assert_eq!(app.notice.as_deref(), Some("reconnected"));
}

#[test]
fn deleted_joined_channel_leaves() {
    let mut app = connected();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    let cmds = app.update(Event::ChannelsLoaded(vec![row(20, "music", 0, 9)]));
    assert_eq!(cmds, vec![Command::Leave]);
    assert_eq!(app.joined, None);
}

#[test]
fn help_overlay_opens_and_any_key_closes_but_quit_quits() {
    let mut app = connected();
    app.update(Intent::ToggleHelp);
    assert_eq!(app.overlay, Overlay::Help);
    app.update(Intent::ToggleMute);
    assert_eq!(app.overlay, Overlay::None);
    assert!(!app.muted, "the closing key does not act");
    app.update(Intent::ToggleHelp);
    assert_eq!(app.update(Intent::Quit), vec![Command::Quit]);
    assert!(app.should_quit);
}

#[test]
fn device_picker_lists_and_picks() {
    let mut app = connected();
    assert_eq!(app.update(Intent::OpenDevices), vec![Command::ListDevices]);
    app.update(Event::DevicesListed {
        inputs: vec!["mic A".into(), "default".into()],
        outputs: vec!["spk".into()],
    });
    let Overlay::Devices(p) = &app.overlay else {
        panic!("picker closed")
    };
    assert_eq!(p.inputs, vec!["default", "mic A"]);
    app.update(Intent::Down);
    // Not in a channel: the choice is remembered and saved.
    assert_eq!(app.update(Intent::Submit), vec![Command::SaveSettings]);
    assert_eq!(app.input_device.as_deref(), Some("mic A"));
    // In a channel: the session restarts on the new device.
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Intent::OpenDevices);
    app.update(Intent::PickerSwitch);
    app.output_device = Some("old".into());
    let cmds = app.update(Intent::Submit);
    assert_eq!(app.output_device, None, "\"default\" is the system's");
    assert_eq!(cmds, vec![join(&app, 10), Command::SaveSettings]);
    let Command::Join { setup, .. } = &cmds[0] else {
        unreachable!()
    };
    assert_eq!(setup.input.as_deref(), Some("mic A"));
    assert_eq!(setup.output, None);
}

#[test]
fn members_follow_pushed_joins_and_leaves_without_polling() {
    let mut app = connected();
    app.volumes.insert(9, 150);
    app.update(Intent::JoinSelected);
    // Before the join is confirmed nothing is listed.
    app.update(Event::PeerJoined {
        uid: 9,
        name: "eve".into(),
    });
    assert!(app.members.is_empty());
    app.update(Event::Joined { chid: 10 });
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(7, "me".into()), (8, "bob".into())],
    });
    assert_eq!(app.channels[0].members, 2);
    let cmds = app.update(Event::PeerJoined {
        uid: 9,
        name: "eve".into(),
    });
    assert!(cmds.is_empty(), "no refresh: the event is the news");
    assert_eq!(app.members.len(), 3);
    assert_eq!(app.members[2].volume, 150, "remembered volume");
    assert_eq!(app.channels[0].members, 3);
    // A second announcement of a listed member (the join's own list) adds nobody.
    app.update(Event::PeerJoined {
        uid: 8,
        name: String::new(),
    });
    assert_eq!(app.members.len(), 3);
    assert_eq!(
        app.members[1].name, "bob",
        "an empty name keeps the known one"
    );
    app.member_sel = 2;
    assert!(app.update(Event::PeerLeft(9)).is_empty());
    assert_eq!(app.members.len(), 2);
    assert_eq!(app.member_sel, 1);
    assert_eq!(app.channels[0].members, 2);
}

#[test]
fn the_join_carries_every_control_of_the_app() {
    let mut app = connected();
    app.update(Intent::CycleMode);
    app.update(Intent::ToggleMute);
    app.update(Intent::VadUp);
    app.volumes.insert(8, 50);
    app.input_device = Some("usb".into());
    let cmds = app.update(Intent::JoinSelected);
    let [Command::Join { chid: 10, setup }] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        *setup,
        VoiceSetup {
            input: Some("usb".into()),
            output: None,
            mode: TransmitMode::PushToTalk,
            vad_threshold: 0.55,
            denoise: true,
            aec: true,
            agc: true,
            muted: true,
            deafened: false,
            gains: vec![(8, 0.5)],
        }
    );
}

#[test]
fn server_closing_the_channel_rejoins_once_it_is_listed_again() {
    let mut app = connected();
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::Left {
        reason: "the server closed the channel".into(),
        rejoin: true,
    });
    assert_eq!(app.joined, None);
    // Listed again: join it.
    let cmds = app.update(Event::ChannelsLoaded(vec![row(10, "lobby", 0, 7)]));
    assert_eq!(cmds, vec![join(&app, 10)]);
    // Kicked: no rejoin.
    app.update(Event::Joined { chid: 10 });
    app.update(Event::Left {
        reason: "kicked".into(),
        rejoin: false,
    });
    assert_eq!(
        app.update(Event::ChannelsLoaded(vec![row(10, "lobby", 0, 7)])),
        vec![]
    );
    // Closed and gone (deleted): nothing to rejoin, and it is forgotten.
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::Left {
        reason: "closed".into(),
        rejoin: true,
    });
    assert_eq!(app.update(Event::ChannelsLoaded(vec![])), vec![]);
    assert_eq!(app.rejoin, None);
}

#[test]
fn channel_named_on_the_command_line_is_joined_once_listed() {
    let mut app = App::new("s");
    app.join_name = Some("music".into());
    app.update(Event::Connected {
        uid: 7,
        name: "me".into(),
        perms: 0,
    });
    let cmds = app.update(Event::ChannelsLoaded(vec![
        row(10, "lobby", 0, 7),
        row(20, "music", 0, 9),
    ]));
    assert_eq!(cmds, vec![join(&app, 20)]);
    assert_eq!(app.selected_channel().unwrap().id, 20);
    let mut app = App::new("s");
    app.join_name = Some("nope".into());
    app.update(Event::ChannelsLoaded(vec![row(10, "lobby", 0, 7)]));
    assert!(app.notice.as_deref().unwrap().contains("nope"));
}

/// `connected` and joined to lobby (10, encrypted) with bob (8).
fn in_encrypted_lobby() -> App {
    let mut app = connected();
    app.update(Event::ChannelModes(vec![(10, true), (20, false)]));
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    app.update(Event::MembersLoaded {
        chid: 10,
        members: vec![(7, "me".into()), (8, "bob".into())],
    });
    app
}

#[test]
fn channel_modes_are_remembered_and_bounded() {
    let mut app = connected();
    assert_eq!(app.encrypted(10), None, "not known until CHANNEL_MODE says");
    app.update(Event::ChannelModes(vec![(10, true), (20, false)]));
    assert_eq!(app.encrypted(10), Some(true));
    assert_eq!(app.encrypted(20), Some(false));
    let many: Vec<(u64, bool)> = (1000..1000 + MAX_MODES as u64 + 5)
        .map(|id| (id, true))
        .collect();
    app.update(Event::ChannelModes(many));
    assert_eq!(app.modes.len(), MAX_MODES);
}

#[test]
fn chat_opens_only_in_an_encrypted_channel_and_enter_sends() {
    let mut app = connected();
    app.update(Intent::OpenChat);
    assert_eq!(app.overlay, Overlay::None);
    assert_eq!(app.notice.as_deref(), Some("join a channel to chat"));

    let mut app = in_encrypted_lobby();
    app.update(Intent::OpenChat);
    for c in "hi bob".chars() {
        app.update(Intent::Input(c));
    }
    assert_eq!(
        app.overlay,
        Overlay::Prompt {
            kind: PromptKind::Chat,
            input: "hi bob".into()
        }
    );
    // Keys that would do something else on the main screen are text here.
    app.update(Intent::Input('q'));
    assert!(!app.should_quit);
    app.update(Intent::Backspace);
    assert_eq!(
        app.update(Intent::Submit),
        vec![Command::Say("hi bob".into())]
    );
    assert_eq!(
        app.overlay,
        Overlay::None,
        "enter sends and closes the line"
    );
    // Esc cancels without sending; an empty line sends nothing.
    app.update(Intent::OpenChat);
    app.update(Intent::Input('x'));
    assert!(app.update(Intent::Cancel).is_empty());
    assert_eq!(app.overlay, Overlay::None);
    app.update(Intent::OpenChat);
    app.update(Intent::Input(' '));
    assert!(app.update(Intent::Submit).is_empty());
}

#[test]
fn a_plain_channel_says_chat_needs_encryption_and_never_sends() {
    let mut app = connected();
    app.update(Event::ChannelModes(vec![(10, false)]));
    app.update(Intent::JoinSelected);
    app.update(Event::Joined { chid: 10 });
    assert!(app.update(Intent::OpenChat).is_empty());
    assert_eq!(app.overlay, Overlay::None);
    assert!(app
        .notice
        .as_deref()
        .unwrap()
        .contains("chat needs an end-to-end encrypted channel"));
}

#[test]
fn chat_input_is_bounded_by_the_message_limit() {
    let mut app = in_encrypted_lobby();
    app.update(Intent::OpenChat);
    for _ in 0..(crate::tui::app::MAX_CHAT_INPUT + 10) {
        app.update(Intent::Input('a'));
    }
    let Overlay::Prompt { input, .. } = &app.overlay else {
        panic!("chat line closed");
    };
    assert_eq!(input.len(), kv_proto::push::MAX_CHAT_TEXT);
    assert_eq!(
        app.notice.as_deref(),
        Some("a chat message is at most 2048 bytes")
    );
    // A multi-byte character that would cross the limit is refused whole.
    app.update(Intent::Backspace);
    app.update(Intent::Input('é'));
    let Overlay::Prompt { input, .. } = &app.overlay else {
        panic!("chat line closed");
    };
    assert_eq!(input.len(), kv_proto::push::MAX_CHAT_TEXT - 1);
}

#[test]
fn messages_keep_server_order_and_a_bounded_history() {
    let mut app = in_encrypted_lobby();
    for seq in 1..=(MAX_CHAT_LINES as u64 + 50) {
        app.update(Event::ChatMessage {
            seq,
            sender: 8,
            text: format!("m{seq}"),
        });
    }
    assert_eq!(app.chat.len(), MAX_CHAT_LINES);
    let seqs: Vec<u64> = app.chat.iter().map(|l| l.seq).collect();
    let want: Vec<u64> = (51..=MAX_CHAT_LINES as u64 + 50).collect();
    assert_eq!(seqs, want, "oldest dropped, order kept");
    assert_eq!(
        app.chat[0].name, "bob",
        "the author's name is kept with the line"
    );
    // Leaving forgets the channel's chat, epoch and flags.
    app.update(Event::Epoch {
        epoch: 2,
        safety_code: "1 2 3 4 5".into(),
        members: 2,
    });
    app.update(Event::KeyChanged(8));
    app.update(Event::Left {
        reason: "left".into(),
        rejoin: false,
    });
    assert!(app.chat.is_empty() && app.epoch.is_none() && app.key_changed.is_empty());
    // And a message arriving after that (a stale one) is not shown.
    app.update(Event::ChatMessage {
        seq: 1,
        sender: 8,
        text: "late".into(),
    });
    assert!(app.chat.is_empty());
}

#[test]
fn epochs_key_changes_and_refusals_are_shown() {
    let mut app = in_encrypted_lobby();
    app.update(Event::Epoch {
        epoch: 3,
        safety_code: "12345 67890 11111 22222 33333".into(),
        members: 2,
    });
    assert_eq!(app.epoch.as_ref().unwrap().epoch, 3);
    app.update(Event::KeyChanged(8));
    app.update(Event::KeyChanged(8));
    assert_eq!(app.key_changed, vec![8], "flagged once");
    assert!(app
        .notice
        .as_deref()
        .unwrap()
        .contains("key of bob changed"));
    app.update(Event::ChatRefused("too fast".into()));
    let n = app.notice.clone().unwrap();
    assert!(
        n.contains("\"too fast\"") && n.contains("rate or size limit"),
        "{n}"
    );
    // A chat line being typed closes when the session ends.
    app.update(Intent::OpenChat);
    app.update(Event::Left {
        reason: "kicked".into(),
        rejoin: false,
    });
    assert_eq!(app.overlay, Overlay::None);
}
