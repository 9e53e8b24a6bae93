//! The terminal client's one transition function, [`App::update`] (the state itself is
//! [`crate::tui::model::App`]).
//!
//! `update` does no I/O: it changes fields and returns the [`Command`]s the event loop must
//! carry out.

use kv_proto::Perms;

use crate::tui::action::{Action, Command, VoiceControl};
use crate::tui::model::{
    channel_label, App, AudioState, Connection, DeviceKind, DevicePicker, Focus, Member, Overlay,
    PromptKind, PttStyle, TransmitMode,
};

/// Longest text a prompt accepts, in bytes (the wire's limit on names).
const MAX_INPUT: usize = kv_proto::MAX_NAME_LEN;
/// Volume step of the volume keys, percent.
const VOLUME_STEP: u16 = 10;
/// Highest per-member volume, percent.
const MAX_VOLUME: u16 = 300;
/// VAD threshold step.
const VAD_STEP: f32 = 0.05;

impl App {
    /// Applies one action; returns the effects to carry out, in order.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        if !matches!(self.overlay, Overlay::None) && is_key_intent(&action) {
            return self.update_overlay(action);
        }
        match action {
            Action::Quit => {
                self.should_quit = true;
                vec![Command::Quit]
            }
            Action::Up => {
                self.move_selection(-1);
                vec![]
            }
            Action::Down => {
                self.move_selection(1);
                vec![]
            }
            Action::FocusNext => {
                self.focus = match self.focus {
                    Focus::Channels if !self.members.is_empty() => Focus::Members,
                    _ => Focus::Channels,
                };
                vec![]
            }
            Action::JoinSelected => {
                let Some(c) = self.selected_channel().cloned() else {
                    return vec![];
                };
                let id = c.id;
                if self.joined == Some(id) || self.joining == Some(id) {
                    return vec![];
                }
                self.joining = Some(id);
                self.notice = Some(format!("joining {}…", channel_label(&c)));
                vec![Command::Join(id)]
            }
            Action::Leave => {
                if self.joined.is_none() && self.joining.is_none() {
                    return vec![];
                }
                self.joining = None;
                self.rejoin = None;
                vec![Command::Leave]
            }
            Action::CreateChannel => {
                if !self.perms.contains(Perms::ADD_CHANNEL) {
                    self.notice = Some("you may not create channels on this server".into());
                    return vec![];
                }
                self.open_prompt(PromptKind::NewChannel, String::new());
                vec![]
            }
            Action::RenameChannel => {
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
            Action::DeleteChannel => {
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
            Action::SetName => {
                let name = self.display_name.clone();
                self.open_prompt(PromptKind::DisplayName, name);
                vec![]
            }
            Action::ToggleMute => {
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
            Action::ToggleDeafen => {
                self.deafened = !self.deafened;
                vec![Command::Voice(VoiceControl::Deafen(self.deafened))]
            }
            Action::CycleMode => {
                self.mode = self.mode.next();
                self.ptt_active = false;
                vec![
                    Command::Voice(VoiceControl::Mode(self.mode)),
                    Command::SaveSettings,
                ]
            }
            Action::ToggleDenoise => {
                self.denoise = !self.denoise;
                vec![
                    Command::Voice(VoiceControl::Denoise(self.denoise)),
                    Command::SaveSettings,
                ]
            }
            Action::PttPress => {
                if self.mode != TransmitMode::PushToTalk {
                    return vec![];
                }
                let on = match self.ptt_style {
                    PttStyle::Hold => true,
                    PttStyle::Toggle => !self.ptt_active,
                };
                self.set_ptt(on)
            }
            Action::PttRelease => {
                if self.mode != TransmitMode::PushToTalk || self.ptt_style != PttStyle::Hold {
                    return vec![];
                }
                self.set_ptt(false)
            }
            Action::VolumeUp | Action::VolumeDown => {
                let up = action == Action::VolumeUp;
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
            Action::VadUp | Action::VadDown => {
                let step = if action == Action::VadUp {
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
                vec![
                    Command::Voice(VoiceControl::VadThreshold(self.vad_threshold)),
                    Command::SaveSettings,
                ]
            }
            Action::ToggleHelp => {
                self.overlay = Overlay::Help;
                vec![]
            }
            Action::ToggleQuality => {
                self.show_quality = !self.show_quality;
                vec![]
            }
            Action::OpenDevices => {
                self.overlay = Overlay::Devices(DevicePicker {
                    inputs: vec!["default".into()],
                    outputs: vec!["default".into()],
                    kind: DeviceKind::Input,
                    selected: 0,
                });
                vec![Command::ListDevices]
            }
            // Editing keys with no overlay open mean nothing.
            Action::Input(_)
            | Action::Backspace
            | Action::Submit
            | Action::Cancel
            | Action::PickerSwitch => vec![],

            Action::Connected { uid, name, perms } => {
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
                    cmds.push(Command::Join(chid));
                }
                if self.display_name.is_empty() && matches!(self.overlay, Overlay::None) {
                    self.open_prompt(PromptKind::DisplayName, String::new());
                }
                cmds
            }
            Action::Reconnecting {
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
            Action::ChannelsLoaded(mut rows) => {
                rows.sort_by_key(|c| c.id);
                let keep = self.selected_channel().map(|c| c.id);
                self.channels = rows;
                self.channel_sel = keep
                    .and_then(|id| self.channels.iter().position(|c| c.id == id))
                    .unwrap_or(self.channel_sel)
                    .min(self.channels.len().saturating_sub(1));
                // A channel asked for by name on the command line.
                if let Some(name) = self.join_name.take() {
                    match self.channels.iter().position(|c| c.name == name) {
                        Some(i) if self.joined.is_none() && self.joining.is_none() => {
                            self.channel_sel = i;
                            let id = self.channels[i].id;
                            self.joining = Some(id);
                            return vec![Command::Join(id)];
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
                            return vec![Command::Join(chid)];
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
            Action::MembersLoaded { chid, members } => {
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
            Action::Joined { chid } => {
                self.joined = Some(chid);
                self.joining = None;
                self.rejoin = None;
                self.members.clear();
                self.member_sel = 0;
                let label = self
                    .channels
                    .iter()
                    .find(|c| c.id == chid)
                    .map(channel_label)
                    .unwrap_or_else(|| format!("#{chid}"));
                self.notice = Some(format!("joined {label}"));
                // Re-apply our controls: the new session starts from its defaults.
                let mut cmds = vec![
                    Command::Voice(VoiceControl::Mode(self.mode)),
                    Command::Voice(VoiceControl::Mute(self.muted)),
                    Command::Voice(VoiceControl::Deafen(self.deafened)),
                    Command::Voice(VoiceControl::Denoise(self.denoise)),
                    Command::Voice(VoiceControl::VadThreshold(self.vad_threshold)),
                ];
                for (&uid, &v) in &self.volumes {
                    cmds.push(Command::Voice(VoiceControl::PeerGain {
                        uid,
                        gain: f32::from(v) / 100.0,
                    }));
                }
                cmds.push(Command::Refresh);
                cmds
            }
            Action::Left { reason, rejoin } => {
                if rejoin {
                    self.rejoin = self.joined.or(self.joining);
                }
                self.joined = None;
                self.joining = None;
                self.members.clear();
                self.member_sel = 0;
                self.focus = Focus::Channels;
                self.sending = false;
                self.mic_dbfs = -100.0;
                self.mic_vad = 0.0;
                self.rtt_ms = None;
                self.loss_pct = None;
                self.notice = Some(reason);
                vec![Command::Refresh]
            }
            Action::Talking { uid, talking } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.uid == uid) {
                    m.talking = talking;
                }
                vec![]
            }
            Action::PeerJoined(_) | Action::PeerLeft(_) => vec![Command::Refresh],
            Action::PeerStats { uid, stats } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.uid == uid) {
                    m.stats = Some(stats);
                }
                vec![]
            }
            Action::Link { rtt_ms, loss_pct } => {
                self.rtt_ms = rtt_ms;
                self.loss_pct = loss_pct;
                vec![]
            }
            Action::MicLevel { dbfs, vad, sending } => {
                self.mic_dbfs = if dbfs.is_finite() { dbfs } else { -100.0 };
                self.mic_vad = if vad.is_finite() {
                    vad.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                self.sending = sending;
                vec![]
            }
            Action::Audio(state) => {
                if let AudioState::NoDevice(why) = &state {
                    self.notice = Some(format!("no audio device ({why}): channels still work"));
                }
                self.audio = state;
                vec![]
            }
            Action::DevicesListed { inputs, outputs } => {
                if let Overlay::Devices(p) = &mut self.overlay {
                    p.inputs = with_default(inputs);
                    p.outputs = with_default(outputs);
                    p.selected = 0;
                }
                vec![]
            }
            Action::Error(e) => {
                if let Some(chid) = self.joining.take() {
                    tracing::debug!(chid, "join failed");
                }
                self.notice = Some(format!("error: {e}"));
                vec![]
            }
            Action::Info(s) => {
                self.notice = Some(s);
                vec![]
            }
        }
    }

    fn set_ptt(&mut self, on: bool) -> Vec<Command> {
        if self.ptt_active == on {
            return vec![];
        }
        self.ptt_active = on;
        vec![Command::Voice(VoiceControl::PushToTalk(on))]
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
    fn update_overlay(&mut self, action: Action) -> Vec<Command> {
        let overlay = std::mem::replace(&mut self.overlay, Overlay::None);
        match overlay {
            Overlay::None => vec![],
            Overlay::Help => match action {
                // Quit still quits; every other key just closes the help.
                Action::Quit => self.update(Action::Quit),
                _ => vec![],
            },
            Overlay::ConfirmDelete(chid) => match action {
                Action::Input('y') | Action::Input('Y') | Action::Submit => {
                    vec![Command::Delete(chid)]
                }
                _ => vec![],
            },
            Overlay::Prompt { kind, mut input } => match action {
                Action::Input(c) => {
                    if input.len() + c.len_utf8() <= MAX_INPUT && !c.is_control() {
                        input.push(c);
                    }
                    self.overlay = Overlay::Prompt { kind, input };
                    vec![]
                }
                Action::Backspace => {
                    input.pop();
                    self.overlay = Overlay::Prompt { kind, input };
                    vec![]
                }
                Action::Submit => {
                    let name = input.trim().to_string();
                    match kind {
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
                Action::Cancel => vec![],
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
                match action {
                    Action::Up => p.selected = p.selected.saturating_sub(1),
                    Action::Down => p.selected = (p.selected + 1).min(len.saturating_sub(1)),
                    Action::PickerSwitch | Action::FocusNext => {
                        p.kind = match p.kind {
                            DeviceKind::Input => DeviceKind::Output,
                            DeviceKind::Output => DeviceKind::Input,
                        };
                        p.selected = 0;
                    }
                    Action::Submit | Action::JoinSelected => {
                        let pick = |list: &[String]| {
                            list.get(p.selected)
                                .filter(|n| n.as_str() != "default")
                                .cloned()
                        };
                        let list = match p.kind {
                            DeviceKind::Input => &p.inputs,
                            DeviceKind::Output => &p.outputs,
                        };
                        let cmd = Command::UseDevice {
                            kind: p.kind,
                            name: pick(list),
                        };
                        return vec![cmd, Command::SaveSettings];
                    }
                    Action::Cancel | Action::OpenDevices => return vec![],
                    Action::Quit => return self.update(Action::Quit),
                    _ => {}
                }
                self.overlay = Overlay::Devices(p);
                vec![]
            }
        }
    }
}

/// True for actions that come from keys (which an open overlay captures), false for
/// results of background work (which always apply).
fn is_key_intent(a: &Action) -> bool {
    !matches!(
        a,
        Action::Connected { .. }
            | Action::Reconnecting { .. }
            | Action::ChannelsLoaded(_)
            | Action::MembersLoaded { .. }
            | Action::Joined { .. }
            | Action::Left { .. }
            | Action::Talking { .. }
            | Action::PeerJoined(_)
            | Action::PeerLeft(_)
            | Action::PeerStats { .. }
            | Action::Link { .. }
            | Action::MicLevel { .. }
            | Action::Audio(_)
            | Action::DevicesListed { .. }
            | Action::Error(_)
            | Action::Info(_)
    ) && !matches!(a, Action::PttPress | Action::PttRelease)
}

fn with_default(mut list: Vec<String>) -> Vec<String> {
    list.retain(|n| n != "default");
    list.insert(0, "default".into());
    list
}
