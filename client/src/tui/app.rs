//! The terminal client's one transition function, [`App::update`] (the state itself is
//! [`crate::tui::model::App`]).
//!
//! `update` does no I/O: it changes fields and returns the [`Command`]s the event loop must
//! carry out.

use kv_proto::Perms;

use crate::tui::action::{Action, Command, Event, Intent, VoiceControl};
use crate::tui::model::{
    channel_label, App, AudioState, ChatLine, Connection, DeviceKind, DevicePicker, EpochInfo,
    Focus, Member, Overlay, PromptKind, PttStyle, TransmitMode, VoiceSetup, MAX_CHAT_LINES,
    MAX_KEY_CHANGED, MAX_MODES,
};

/// Longest text a prompt accepts, in bytes (the wire's limit on names).
const MAX_INPUT: usize = kv_proto::MAX_NAME_LEN;
/// Longest chat text, in bytes: what the client puts in one MLS message, whose encrypted
/// form stays under the server's 4 KiB limit.
pub const MAX_CHAT_INPUT: usize = kv_proto::push::MAX_CHAT_TEXT;
/// Volume step of the volume keys, percent.
const VOLUME_STEP: u16 = 10;
/// Highest per-member volume, percent.
const MAX_VOLUME: u16 = 300;
/// VAD threshold step.
const VAD_STEP: f32 = 0.05;

impl App {
    /// Applies one action; returns the effects to carry out, in order.
    pub fn update(&mut self, action: impl Into<Action>) -> Vec<Command> {
        match action.into() {
            Action::Key(i) => self.on_intent(i),
            Action::Event(e) => self.on_event(e),
        }
    }

    fn on_intent(&mut self, intent: Intent) -> Vec<Command> {
        // An open overlay takes every key but push-to-talk (talking while the help is open
        // is fine).
        let ptt = matches!(intent, Intent::PttPress | Intent::PttRelease);
        if !matches!(self.overlay, Overlay::None) && !ptt {
            return self.update_overlay(intent);
        }
        match intent {
            Intent::Quit => {
                self.should_quit = true;
                vec![Command::Quit]
            }
            Intent::Up => {
                self.move_selection(-1);
                vec![]
            }
            Intent::Down => {
                self.move_selection(1);
                vec![]
            }
            Intent::FocusNext => {
                self.focus = match self.focus {
                    Focus::Channels if !self.members.is_empty() => Focus::Members,
                    _ => Focus::Channels,
                };
                vec![]
            }
            Intent::JoinSelected => {
                let Some(c) = self.selected_channel().cloned() else {
                    return vec![];
                };
                let id = c.id;
                if self.joined == Some(id) || self.joining == Some(id) {
                    return vec![];
                }
                self.joining = Some(id);
                self.notice = Some(format!("joining {}…", channel_label(&c)));
                vec![self.join(id)]
            }
            Intent::Leave => {
                if self.joined.is_none() && self.joining.is_none() {
                    return vec![];
                }
                self.joining = None;
                self.rejoin = None;
                vec![Command::Leave]
            }
            Intent::CreateChannel => {
                if !self.perms.contains(Perms::ADD_CHANNEL) {
                    self.notice = Some("you may not create channels on this server".into());
                    return vec![];
                }
                self.open_prompt(PromptKind::NewChannel, String::new());
                vec![]
            }
            Intent::RenameChannel => {
                let Some(c) = self.selected_channel().cloned() else {
                    return vec![];
                };
                if !self.may_manage(&c) {
                    self.notice = Some(format!("only the owner may rename {}", channel_label(&c)));
                    return vec![];
                }
                self.open_prompt(PromptKind::RenameChannel(c.id), c.name);
                vec![]
            }
            Intent::DeleteChannel => {
                let Some(c) = self.selected_channel().cloned() else {
                    return vec![];
                };
                if !self.may_manage(&c) {
                    self.notice = Some(format!("only the owner may delete {}", channel_label(&c)));
                    return vec![];
                }
                self.overlay = Overlay::ConfirmDelete(c.id);
                vec![]
            }
            Intent::SetName => {
                let name = self.display_name.clone();
                self.open_prompt(PromptKind::DisplayName, name);
                vec![]
            }
            Intent::ToggleMute => {
                self.muted = !self.muted;
                // Unmuting while deafened undeafens too, as in Mumble: you cannot talk unheard.
                let mut cmds = vec![];
                if !self.muted && self.deafened {
                    self.deafened = false;
                    cmds.push(Command::Voice(VoiceControl::Deafen(false)));
                }
                cmds.push(Command::Voice(VoiceControl::Mute(self.muted)));
                cmds
            }
            Intent::ToggleDeafen => {
                self.deafened = !self.deafened;
                vec![Command::Voice(VoiceControl::Deafen(self.deafened))]
            }
            Intent::CycleMode => {
                self.mode = self.mode.next();
                self.ptt_active = false;
                vec![
                    Command::Voice(VoiceControl::Mode(self.mode)),
                    Command::SaveSettings,
                ]
            }
            Intent::ToggleDenoise => {
                self.denoise = !self.denoise;
                vec![
                    Command::Voice(VoiceControl::Denoise(self.denoise)),
                    Command::SaveSettings,
                ]
            }
            Intent::ToggleAec => {
                self.aec = !self.aec;
                vec![
                    Command::Voice(VoiceControl::Aec(self.aec)),
                    Command::SaveSettings,
                ]
            }
            Intent::ToggleAgc => {
                self.agc = !self.agc;
                vec![
                    Command::Voice(VoiceControl::Agc(self.agc)),
                    Command::SaveSettings,
                ]
            }
            Intent::PttPress => {
                if self.mode != TransmitMode::PushToTalk {
                    return vec![];
                }
                let on = match self.ptt_style {
                    PttStyle::Hold => true,
                    PttStyle::Toggle => !self.ptt_active,
                };
                self.set_ptt(on)
            }
            Intent::PttRelease => {
                if self.mode != TransmitMode::PushToTalk || self.ptt_style != PttStyle::Hold {
                    return vec![];
                }
                self.set_ptt(false)
            }
            Intent::VolumeUp | Intent::VolumeDown => {
                let up = intent == Intent::VolumeUp;
                let Some(m) = self.members.get_mut(self.member_sel) else {
                    return vec![];
                };
                m.volume = if up {
                    (m.volume + VOLUME_STEP).min(MAX_VOLUME)
                } else {
                    m.volume.saturating_sub(VOLUME_STEP)
                };
                let (uid, volume) = (m.uid, m.volume);
                self.volumes.insert(uid, volume);
                vec![
                    Command::Voice(VoiceControl::PeerGain {
                        uid,
                        gain: f32::from(volume) / 100.0,
                    }),
                    Command::SaveSettings,
                ]
            }
            Intent::VadUp | Intent::VadDown => {
                let step = if intent == Intent::VadUp {
                    VAD_STEP
                } else {
                    -VAD_STEP
                };
                // Round to the step so repeated presses land on clean values.
                let t = ((self.vad_threshold + step) / VAD_STEP).round() * VAD_STEP;
                self.vad_threshold = t.clamp(0.0, 1.0);
                // The capture pipeline takes its threshold when a session starts.
                self.notice = Some(if self.joined.is_some() {
                    format!(
                        "voice threshold {:.2}: applies from the next join",
                        self.vad_threshold
                    )
                } else {
                    format!("voice threshold {:.2}", self.vad_threshold)
                });
                vec![Command::SaveSettings]
            }
            Intent::ToggleHelp => {
                self.overlay = Overlay::Help;
                vec![]
            }
            Intent::ToggleQuality => {
                self.show_quality = !self.show_quality;
                vec![]
            }
            Intent::OpenDevices => {
                self.overlay = Overlay::Devices(DevicePicker {
                    inputs: vec!["default".into()],
                    outputs: vec!["default".into()],
                    kind: DeviceKind::Input,
                    selected: 0,
                });
                vec![Command::ListDevices]
            }
            Intent::OpenChat => {
                let Some(chid) = self.joined else {
                    self.notice = Some("join a channel to chat".into());
                    return vec![];
                };
                match self.encrypted(chid) {
                    Some(true) => self.open_prompt(PromptKind::Chat, String::new()),
                    // Chat is MLS application messages: a plain channel has no group, and
                    // nothing is ever sent in the clear.
                    Some(false) => {
                        self.notice = Some(
                            "chat needs an end-to-end encrypted channel (this one is plain)".into(),
                        )
                    }
                    None => self.notice = Some("channel mode not known yet".into()),
                }
                vec![]
            }
            // Editing keys with no overlay open mean nothing.
            Intent::Input(_)
            | Intent::Backspace
            | Intent::Submit
            | Intent::Cancel
            | Intent::PickerSwitch => vec![],
        }
    }

    fn on_event(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Connected { uid, name, perms } => {
                self.uid = uid;
                self.perms = Perms(perms);
                // The server's name wins; a remembered one is sent to a server that has none.
                let mut cmds = vec![Command::Refresh];
                if !name.is_empty() {
                    self.display_name = name;
                } else if !self.display_name.is_empty() {
                    cmds.push(Command::SetDisplayName(self.display_name.clone()));
                }
                let was_reconnecting = matches!(self.connection, Connection::Reconnecting { .. });
                self.connection = Connection::Connected;
                if was_reconnecting {
                    self.notice = Some("reconnected".into());
                }
                if let Some(chid) = self.rejoin.take() {
                    self.joining = Some(chid);
                    cmds.push(self.join(chid));
                }
                if self.display_name.is_empty() && matches!(self.overlay, Overlay::None) {
                    self.open_prompt(PromptKind::DisplayName, String::new());
                }
                cmds
            }
            Event::Reconnecting {
                attempt,
                delay_ms,
                reason,
            } => {
                // Remember the channel so the reconnect lands us back in it.
                if let Some(chid) = self.joined.take().or(self.joining.take()) {
                    self.rejoin = Some(chid);
                }
                self.members.clear();
                self.member_sel = 0;
                self.clear_channel_secure();
                self.focus = Focus::Channels;
                self.rtt_ms = None;
                self.loss_pct = None;
                self.notice = Some(format!(
                    "connection lost ({reason}); retrying in {:.1} s",
                    delay_ms as f64 / 1000.0
                ));
                self.connection = Connection::Reconnecting { attempt, reason };
                vec![]
            }
            Event::ChannelsLoaded(mut rows) => {
                rows.sort_by_key(|c| c.id);
                let keep = self.selected_channel().map(|c| c.id);
                self.channels = rows;
                self.channel_sel = keep
                    .and_then(|id| self.channels.iter().position(|c| c.id == id))
                    .unwrap_or(self.channel_sel)
                    .min(self.channels.len().saturating_sub(1));
                // Our own channel's count follows its (pushed) member list, which is newer
                // than any refresh.
                if !self.members.is_empty() {
                    self.count_members();
                }
                // A channel asked for by name on the command line.
                if let Some(name) = self.join_name.take() {
                    match self.channels.iter().position(|c| c.name == name) {
                        Some(i) if self.joined.is_none() && self.joining.is_none() => {
                            self.channel_sel = i;
                            let id = self.channels[i].id;
                            self.joining = Some(id);
                            return vec![self.join(id)];
                        }
                        Some(_) => {}
                        None => self.notice = Some(format!("no channel named {name:?}")),
                    }
                }
                // Back in a channel the server closed under us, once it is listed again.
                if self.connection == Connection::Connected && self.joining.is_none() {
                    if let Some(chid) = self.rejoin.take() {
                        if self.channels.iter().any(|c| c.id == chid) {
                            self.joining = Some(chid);
                            return vec![self.join(chid)];
                        }
                    }
                }
                if let Some(id) = self.joined {
                    if !self.channels.iter().any(|c| c.id == id) {
                        self.joined = None;
                        self.members.clear();
                        self.notice = Some("the channel was deleted".into());
                        return vec![Command::Leave];
                    }
                }
                vec![]
            }
            Event::MembersLoaded { chid, members } => {
                if self.joined != Some(chid) {
                    return vec![];
                }
                let old = std::mem::take(&mut self.members);
                self.members = members
                    .into_iter()
                    .map(|(uid, name)| {
                        let prev = old.iter().find(|m| m.uid == uid);
                        Member {
                            uid,
                            name,
                            talking: prev.is_some_and(|m| m.talking),
                            volume: self.volumes.get(&uid).copied().unwrap_or(100),
                            stats: prev.and_then(|m| m.stats),
                        }
                    })
                    .collect();
                if let Some(c) = self.channels.iter_mut().find(|c| c.id == chid) {
                    c.members = self.members.len();
                }
                self.member_sel = self.member_sel.min(self.members.len().saturating_sub(1));
                vec![]
            }
            Event::Joined { chid } => {
                self.joined = Some(chid);
                self.joining = None;
                self.rejoin = None;
                self.members.clear();
                self.member_sel = 0;
                self.clear_channel_secure();
                let label = self
                    .channels
                    .iter()
                    .find(|c| c.id == chid)
                    .map(channel_label)
                    .unwrap_or_else(|| format!("#{chid}"));
                self.notice = Some(format!("joined {label}"));
                // The session started with our controls (the join carried them); the
                // channel list refreshes for the member counts.
                vec![Command::Refresh]
            }
            Event::Left { reason, rejoin } => {
                if rejoin {
                    self.rejoin = self.joined.or(self.joining);
                }
                self.joined = None;
                self.joining = None;
                self.members.clear();
                self.member_sel = 0;
                self.clear_channel_secure();
                self.focus = Focus::Channels;
                self.sending = false;
                self.mic_dbfs = -100.0;
                self.mic_vad = 0.0;
                self.rtt_ms = None;
                self.loss_pct = None;
                self.notice = Some(reason);
                vec![Command::Refresh]
            }
            Event::Talking { uid, talking } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.uid == uid) {
                    m.talking = talking;
                }
                vec![]
            }
            Event::PeerJoined { uid, name } => {
                if self.joined.is_none() {
                    return vec![];
                }
                match self.members.iter_mut().find(|m| m.uid == uid) {
                    // Already listed (by the join's CHANNEL_INFO): a name may have come since.
                    Some(m) => {
                        if !name.is_empty() {
                            m.name = name;
                        }
                    }
                    None => self.members.push(Member {
                        uid,
                        name,
                        talking: false,
                        volume: self.volumes.get(&uid).copied().unwrap_or(100),
                        stats: None,
                    }),
                }
                self.count_members();
                vec![]
            }
            Event::PeerLeft(uid) => {
                self.members.retain(|m| m.uid != uid);
                self.member_sel = self.member_sel.min(self.members.len().saturating_sub(1));
                if self.members.is_empty() {
                    self.focus = Focus::Channels;
                }
                self.count_members();
                vec![]
            }
            Event::PeerStats { uid, stats } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.uid == uid) {
                    m.stats = Some(stats);
                }
                vec![]
            }
            // Telemetry of a session that has ended (taken after its Left) is stale.
            Event::Link { .. } | Event::MicLevel { .. } if self.joined.is_none() => vec![],
            Event::Link { rtt_ms, loss_pct } => {
                self.rtt_ms = rtt_ms;
                self.loss_pct = loss_pct;
                vec![]
            }
            Event::MicLevel { dbfs, vad, sending } => {
                self.mic_dbfs = if dbfs.is_finite() { dbfs } else { -100.0 };
                self.mic_vad = if vad.is_finite() {
                    vad.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                self.sending = sending;
                vec![]
            }
            Event::Audio(state) => {
                if let AudioState::NoDevice(why) = &state {
                    self.notice = Some(format!("no audio device ({why}): channels still work"));
                }
                self.audio = state;
                vec![]
            }
            Event::DevicesListed { inputs, outputs } => {
                if let Overlay::Devices(p) = &mut self.overlay {
                    p.inputs = with_default(inputs);
                    p.outputs = with_default(outputs);
                    p.selected = 0;
                }
                vec![]
            }
            Event::ChannelModes(modes) => {
                for (chid, encrypted) in modes {
                    if !self.modes.contains_key(&chid) && self.modes.len() >= MAX_MODES {
                        self.modes.pop_first();
                    }
                    self.modes.insert(chid, encrypted);
                }
                vec![]
            }
            Event::Epoch {
                epoch,
                safety_code,
                members,
            } => {
                if self.joined.is_some() {
                    self.epoch = Some(EpochInfo {
                        epoch,
                        safety_code,
                        members,
                    });
                }
                vec![]
            }
            Event::ChatMessage { seq, sender, text } => {
                if self.joined.is_none() {
                    return vec![];
                }
                if self.chat.len() >= MAX_CHAT_LINES {
                    self.chat.pop_front();
                }
                let name = self
                    .members
                    .iter()
                    .find(|m| m.uid == sender)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                self.chat.push_back(ChatLine {
                    seq,
                    sender,
                    name,
                    text,
                });
                vec![]
            }
            Event::KeyChanged(uid) => {
                if self.joined.is_none() {
                    return vec![];
                }
                if !self.key_changed.contains(&uid) && self.key_changed.len() < MAX_KEY_CHANGED {
                    self.key_changed.push(uid);
                }
                let who = self
                    .members
                    .iter()
                    .find(|m| m.uid == uid)
                    .map(crate::tui::model::member_label)
                    .unwrap_or_else(|| format!("user {uid}"));
                self.notice = Some(format!(
                    "WARNING: the key of {who} changed; they are kept out of the group"
                ));
                vec![]
            }
            Event::ChatRefused(text) => {
                let mut shown: String = text.chars().take(24).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                self.notice = Some(format!(
                    "not delivered: the server refused {shown:?} (chat rate or size limit)"
                ));
                vec![]
            }
            Event::Error(e) => {
                if let Some(chid) = self.joining.take() {
                    tracing::debug!(chid, "join failed");
                }
                self.notice = Some(format!("error: {e}"));
                vec![]
            }
            Event::Info(s) => {
                self.notice = Some(s);
                vec![]
            }
        }
    }

    /// The command that joins `chid` with our devices and controls.
    fn join(&self, chid: u64) -> Command {
        Command::Join {
            chid,
            setup: self.voice_setup(),
        }
    }

    /// What a new voice session starts with: all of it from here.
    pub fn voice_setup(&self) -> VoiceSetup {
        VoiceSetup {
            input: self.input_device.clone(),
            output: self.output_device.clone(),
            mode: self.mode,
            vad_threshold: self.vad_threshold,
            denoise: self.denoise,
            aec: self.aec,
            agc: self.agc,
            muted: self.muted,
            deafened: self.deafened,
            gains: self
                .volumes
                .iter()
                .map(|(&uid, &v)| (uid, f32::from(v) / 100.0))
                .collect(),
        }
    }

    /// The joined channel's member count follows the member list.
    fn count_members(&mut self) {
        let n = self.members.len();
        if let Some(c) = self
            .joined
            .and_then(|id| self.channels.iter_mut().find(|c| c.id == id))
        {
            c.members = n;
        }
    }

    fn set_ptt(&mut self, on: bool) -> Vec<Command> {
        if self.ptt_active == on {
            return vec![];
        }
        self.ptt_active = on;
        vec![Command::Voice(VoiceControl::PushToTalk(on))]
    }

    /// Forgets the joined channel's epoch, chat and key flags (and a chat line being
    /// typed): they belong to one channel session.
    fn clear_channel_secure(&mut self) {
        self.epoch = None;
        self.key_changed.clear();
        self.chat.clear();
        if matches!(
            self.overlay,
            Overlay::Prompt {
                kind: PromptKind::Chat,
                ..
            }
        ) {
            self.overlay = Overlay::None;
        }
    }

    fn open_prompt(&mut self, kind: PromptKind, input: String) {
        self.overlay = Overlay::Prompt { kind, input };
    }

    fn move_selection(&mut self, delta: isize) {
        let (sel, len) = match self.focus {
            Focus::Channels => (&mut self.channel_sel, self.channels.len()),
            Focus::Members => (&mut self.member_sel, self.members.len()),
        };
        if len == 0 {
            *sel = 0;
            return;
        }
        *sel = (*sel as isize + delta).clamp(0, len as isize - 1) as usize;
    }

    /// Keys while an overlay is open: the overlay takes them all.
    fn update_overlay(&mut self, intent: Intent) -> Vec<Command> {
        let overlay = std::mem::replace(&mut self.overlay, Overlay::None);
        match overlay {
            Overlay::None => vec![],
            Overlay::Help => match intent {
                // Quit still quits; every other key just closes the help.
                Intent::Quit => self.on_intent(Intent::Quit),
                _ => vec![],
            },
            Overlay::ConfirmDelete(chid) => match intent {
                Intent::Input('y') | Intent::Input('Y') | Intent::Submit => {
                    vec![Command::Delete(chid)]
                }
                _ => vec![],
            },
            Overlay::Prompt { kind, mut input } => match intent {
                Intent::Input(c) => {
                    let max = if kind == PromptKind::Chat {
                        MAX_CHAT_INPUT
                    } else {
                        MAX_INPUT
                    };
                    if input.len() + c.len_utf8() <= max && !c.is_control() {
                        input.push(c);
                    } else if kind == PromptKind::Chat && !c.is_control() {
                        self.notice = Some(format!("a chat message is at most {max} bytes"));
                    }
                    self.overlay = Overlay::Prompt { kind, input };
                    vec![]
                }
                Intent::Backspace => {
                    input.pop();
                    self.overlay = Overlay::Prompt { kind, input };
                    vec![]
                }
                Intent::Submit => {
                    let name = input.trim().to_string();
                    match kind {
                        PromptKind::Chat if name.is_empty() => vec![],
                        PromptKind::Chat => match self.joined {
                            Some(chid) if self.encrypted(chid) == Some(true) => {
                                vec![Command::Say(name)]
                            }
                            _ => {
                                self.notice = Some(
                                    "chat needs an end-to-end encrypted channel: not sent".into(),
                                );
                                vec![]
                            }
                        },
                        PromptKind::DisplayName if name.is_empty() => {
                            self.overlay = Overlay::Prompt { kind, input };
                            vec![]
                        }
                        PromptKind::DisplayName => {
                            self.display_name = name.clone();
                            vec![Command::SetDisplayName(name), Command::SaveSettings]
                        }
                        PromptKind::NewChannel => vec![Command::Create { name }],
                        PromptKind::RenameChannel(chid) => vec![Command::Rename { chid, name }],
                    }
                }
                Intent::Cancel => vec![],
                _ => {
                    self.overlay = Overlay::Prompt { kind, input };
                    vec![]
                }
            },
            Overlay::Devices(mut p) => {
                let len = match p.kind {
                    DeviceKind::Input => p.inputs.len(),
                    DeviceKind::Output => p.outputs.len(),
                };
                match intent {
                    Intent::Up => p.selected = p.selected.saturating_sub(1),
                    Intent::Down => p.selected = (p.selected + 1).min(len.saturating_sub(1)),
                    Intent::PickerSwitch | Intent::FocusNext => {
                        p.kind = match p.kind {
                            DeviceKind::Input => DeviceKind::Output,
                            DeviceKind::Output => DeviceKind::Input,
                        };
                        p.selected = 0;
                    }
                    Intent::Submit | Intent::JoinSelected => {
                        let pick = |list: &[String]| {
                            list.get(p.selected)
                                .filter(|n| n.as_str() != "default")
                                .cloned()
                        };
                        let list = match p.kind {
                            DeviceKind::Input => &p.inputs,
                            DeviceKind::Output => &p.outputs,
                        };
                        let name = pick(list);
                        match p.kind {
                            DeviceKind::Input => self.input_device = name,
                            DeviceKind::Output => self.output_device = name,
                        }
                        // A running session restarts on the new device.
                        let mut cmds = Vec::new();
                        if let Some(chid) = self.joined {
                            self.joining = Some(chid);
                            cmds.push(self.join(chid));
                        }
                        cmds.push(Command::SaveSettings);
                        return cmds;
                    }
                    Intent::Cancel | Intent::OpenDevices => return vec![],
                    Intent::Quit => return self.on_intent(Intent::Quit),
                    _ => {}
                }
                self.overlay = Overlay::Devices(p);
                vec![]
            }
        }
    }
}

fn with_default(mut list: Vec<String>) -> Vec<String> {
    list.retain(|n| n != "default");
    list.insert(0, "default".into());
    list
}
