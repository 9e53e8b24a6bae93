//! The terminal client's state and the types the app, the actions and the widgets share.
//!
//! A leaf: it imports nothing else of the TUI. [`App`] is the state; its one transition
//! function, `update`, lives in [`crate::tui::app`], and drawing (`crate::tui::widgets`)
//! reads it and nothing else.

use std::collections::{BTreeMap, VecDeque};

pub use crate::audio::TransmitMode;
use kv_proto::Perms;

/// What a new voice session starts with, taken from [`App`] (their one owner) into
/// the join command.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceSetup {
    /// Input device (None: the system default).
    pub input: Option<String>,
    /// Output device (None: the system default).
    pub output: Option<String>,
    /// Transmit mode.
    pub mode: TransmitMode,
    /// Voice-activation threshold (the capture pipeline takes it at start).
    pub vad_threshold: f32,
    /// Noise suppression on.
    pub denoise: bool,
    /// Echo cancellation on (with sound devices).
    pub aec: bool,
    /// Automatic gain control on (with sound devices).
    pub agc: bool,
    /// Start muted.
    pub muted: bool,
    /// Start deafened.
    pub deafened: bool,
    /// Playback gain per peer (1.0 = unchanged).
    pub gains: Vec<(u64, f32)>,
}

/// How the push-to-talk key behaves; depends on whether the terminal reports key releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PttStyle {
    /// Talk while held (terminal reports releases: kitty keyboard protocol).
    Hold,
    /// Press once to talk, again to stop (terminal cannot report releases).
    Toggle,
}

/// One channel in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    /// Channel id.
    pub id: u64,
    /// Name ("" when never named).
    pub name: String,
    /// Joined member count.
    pub members: usize,
    /// Creator, to know whether we may rename or delete it.
    pub owner: u64,
}

/// Receive-side quality of one peer's audio, as the quality panel shows it: a digest of
/// [`crate::audio::PeerStats`] (the link itself, keepalives and RTT, is
/// [`crate::session::link::LinkStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReceiveQuality {
    /// Packets received.
    pub received: u64,
    /// Frames lost for good (concealed).
    pub lost: u64,
    /// Frames recovered from redundancy or FEC.
    pub recovered: u64,
    /// Loss before recovery, percent.
    pub loss_pct: f32,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f32,
    /// Jitter buffer depth, milliseconds.
    pub buffer_ms: f32,
}

/// A member of the joined channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// User id.
    pub uid: u64,
    /// Display name ("" when never set).
    pub name: String,
    /// Audio is arriving from them right now.
    pub talking: bool,
    /// Our playback gain for them, percent (100 = unchanged).
    pub volume: u16,
    /// Their link quality, once the session has measured it.
    pub stats: Option<ReceiveQuality>,
}

/// Our connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// First attempt in progress.
    Connecting,
    /// Control commands work.
    Connected,
    /// Lost; trying again.
    Reconnecting {
        /// Attempt number.
        attempt: u32,
        /// Why the link was lost.
        reason: String,
    },
}

/// Whether sound devices are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioState {
    /// Not tried yet (not in a channel).
    Idle,
    /// Devices are open.
    Ready {
        /// Input device name.
        input: String,
        /// Output device name.
        output: String,
    },
    /// No usable device: voice still connects, but nothing is captured or played.
    NoDevice(String),
}

/// Which list arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The channel list.
    Channels,
    /// The member list.
    Members,
}

/// Chat lines kept for the joined channel; older ones scroll away for good.
pub const MAX_CHAT_LINES: usize = 200;
/// Channels whose mode (plain or encrypted) is remembered.
pub const MAX_MODES: usize = 4096;
/// Members flagged for a changed key at most (a channel's member cap is 1024).
pub const MAX_KEY_CHANGED: usize = 1024;

/// One chat message of the joined channel, in the server's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// Its place in the channel's order (per MLS group).
    pub seq: u64,
    /// Its author's uid (named at draw time from the member list).
    pub sender: u64,
    /// The author's display name when the message arrived ("" when not known), so a line
    /// keeps a name after its author left.
    pub name: String,
    /// The text, as decrypted.
    pub text: String,
}

/// The current MLS epoch of the joined (encrypted) channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochInfo {
    /// The epoch number.
    pub epoch: u64,
    /// The epoch's safety code, for members to compare out of band.
    pub safety_code: String,
    /// Members of the group (ourselves included).
    pub members: usize,
}

/// What a text prompt is asking for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    /// A chat message for the joined (encrypted) channel; drawn as the chat pane's input
    /// line rather than a window.
    Chat,
    /// Our display name (also asked on first run).
    DisplayName,
    /// Name of a channel to create.
    NewChannel,
    /// New name of an existing channel.
    RenameChannel(u64),
}

/// Which device list the picker shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Microphones.
    Input,
    /// Speakers and headphones.
    Output,
}

/// The device picker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePicker {
    /// Input devices ("default" first).
    pub inputs: Vec<String>,
    /// Output devices ("default" first).
    pub outputs: Vec<String>,
    /// Which list is shown.
    pub kind: DeviceKind,
    /// Selected row of the shown list.
    pub selected: usize,
}

/// A window drawn over the main screen; it takes the keys while open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Nothing: keys go to the keymap.
    None,
    /// Key help.
    Help,
    /// Text input.
    Prompt {
        /// What is asked.
        kind: PromptKind,
        /// Typed so far.
        input: String,
    },
    /// "Delete channel X? y/n".
    ConfirmDelete(u64),
    /// Input/output device choice.
    Devices(DevicePicker),
}

/// Everything the terminal client shows and remembers.
#[derive(Debug, Clone)]
pub struct App {
    /// Server address as typed, for the status line.
    pub server: String,
    /// Our uid (0 until connected).
    pub uid: u64,
    /// Our display name.
    pub display_name: String,
    /// Our permission bits, to hide actions that would be refused.
    pub perms: Perms,
    /// Link to the server.
    pub connection: Connection,
    /// Channels, sorted by id.
    pub channels: Vec<ChannelRow>,
    /// Selected channel row.
    pub channel_sel: usize,
    /// Channel whose voice session runs.
    pub joined: Option<u64>,
    /// A join in flight, so a second Enter does not queue another.
    pub joining: Option<u64>,
    /// Channel to rejoin after a reconnect (the one we were in).
    pub rejoin: Option<u64>,
    /// Channel name to join once it is listed (from a `kv://host/name` URL).
    pub join_name: Option<String>,
    /// Members of the joined channel.
    pub members: Vec<Member>,
    /// Selected member row.
    pub member_sel: usize,
    /// Where arrow keys go.
    pub focus: Focus,
    /// Our mic level, dB full scale (-100 when silent or unknown).
    pub mic_dbfs: f32,
    /// Voice-activity probability of our mic, 0..1.
    pub mic_vad: f32,
    /// Whether we are sending right now.
    pub sending: bool,
    /// Voice-activation threshold: the voice probability above which we send.
    pub vad_threshold: f32,
    /// Transmit mode.
    pub mode: TransmitMode,
    /// Hold or toggle push-to-talk.
    pub ptt_style: PttStyle,
    /// Push-to-talk currently on.
    pub ptt_active: bool,
    /// Muted (not sending).
    pub muted: bool,
    /// Deafened (not hearing, not sending).
    pub deafened: bool,
    /// Noise suppression on.
    pub denoise: bool,
    /// Echo cancellation on.
    pub aec: bool,
    /// Automatic gain control on.
    pub agc: bool,
    /// Our keepalive round trip.
    pub rtt_ms: Option<u32>,
    /// Average receive loss.
    pub loss_pct: Option<f32>,
    /// Sound device state.
    pub audio: AudioState,
    /// Chosen input device (None: the system default).
    pub input_device: Option<String>,
    /// Chosen output device (None: the system default).
    pub output_device: Option<String>,
    /// Per-user volume remembered across sessions (uid → percent).
    pub volumes: BTreeMap<u64, u16>,
    /// Show the link-quality panel.
    pub show_quality: bool,
    /// Channel modes as the server states them (CHANNEL_MODE): true for end-to-end
    /// encrypted. A channel's mode is fixed for its lifetime; absent means not asked yet.
    pub modes: BTreeMap<u64, bool>,
    /// The joined channel's current epoch and safety code (encrypted channels only).
    pub epoch: Option<EpochInfo>,
    /// Members of the joined channel whose key changed (refused by the group; flagged).
    pub key_changed: Vec<u64>,
    /// The joined channel's chat, oldest first, at most [`MAX_CHAT_LINES`].
    pub chat: VecDeque<ChatLine>,
    /// Open overlay.
    pub overlay: Overlay,
    /// Last error or notice, for the status line.
    pub notice: Option<String>,
    /// Key help rows (key, what it does), from the keymap in force.
    pub help: Vec<(String, &'static str)>,
    /// Set by Quit; the event loop stops.
    pub should_quit: bool,
}

impl App {
    /// A fresh state for `server`; nothing is known until background work reports.
    pub fn new(server: impl Into<String>) -> Self {
        App {
            server: server.into(),
            uid: 0,
            display_name: String::new(),
            perms: Perms::NONE,
            connection: Connection::Connecting,
            channels: Vec::new(),
            channel_sel: 0,
            joined: None,
            joining: None,
            rejoin: None,
            join_name: None,
            members: Vec::new(),
            member_sel: 0,
            focus: Focus::Channels,
            mic_dbfs: -100.0,
            mic_vad: 0.0,
            sending: false,
            vad_threshold: 0.5,
            mode: TransmitMode::VoiceActivated,
            ptt_style: PttStyle::Toggle,
            ptt_active: false,
            muted: false,
            deafened: false,
            denoise: true,
            aec: true,
            agc: true,
            rtt_ms: None,
            loss_pct: None,
            audio: AudioState::Idle,
            input_device: None,
            output_device: None,
            volumes: BTreeMap::new(),
            show_quality: false,
            modes: BTreeMap::new(),
            epoch: None,
            key_changed: Vec::new(),
            chat: VecDeque::new(),
            overlay: Overlay::None,
            notice: None,
            help: Vec::new(),
            should_quit: false,
        }
    }

    /// The channel under the cursor.
    pub fn selected_channel(&self) -> Option<&ChannelRow> {
        self.channels.get(self.channel_sel)
    }

    /// The member under the cursor.
    pub fn selected_member(&self) -> Option<&Member> {
        self.members.get(self.member_sel)
    }

    /// The joined channel's row.
    pub fn joined_channel(&self) -> Option<&ChannelRow> {
        let id = self.joined?;
        self.channels.iter().find(|c| c.id == id)
    }

    /// Whether channel `chid` is end-to-end encrypted: `None` while not known.
    pub fn encrypted(&self, chid: u64) -> Option<bool> {
        self.modes.get(&chid).copied()
    }

    /// Whether we may rename or delete `c` (owner or perm_rm_channel), so the UI can refuse
    /// before the server does.
    pub fn may_manage(&self, c: &ChannelRow) -> bool {
        c.owner == self.uid || self.perms.contains(Perms::RM_CHANNEL)
    }

    /// Whether our microphone can reach the channel right now, as the session decides it.
    pub fn transmit_allowed(&self) -> bool {
        !self.muted && !self.deafened && (self.mode != TransmitMode::PushToTalk || self.ptt_active)
    }
}

/// How a channel is named on screen: its name, or `#id` when unnamed.
pub fn channel_label(c: &ChannelRow) -> String {
    if c.name.is_empty() {
        format!("#{}", c.id)
    } else {
        c.name.clone()
    }
}

/// How a member is named on screen: display name, or `user <uid>` when unnamed.
pub fn member_label(m: &Member) -> String {
    if m.name.is_empty() {
        format!("user {}", m.uid)
    } else {
        m.name.clone()
    }
}

/// Labels for a channel's members, in order: [`member_label`], except that a name that
/// looks like another member's (same [`kv_proto::names::skeleton`]: `Ann` and `Аnn` with
/// a Cyrillic А, `bob` and `B0B`, or simply the same name twice) gets the last four digits
/// of its uid, `Ann#0042`, so nobody can pass for someone else in the list.
pub fn member_labels(members: &[Member]) -> Vec<String> {
    let skeletons: Vec<Option<String>> = members
        .iter()
        .map(|m| (!m.name.is_empty()).then(|| kv_proto::names::skeleton(&m.name)))
        .collect();
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for s in skeletons.iter().flatten() {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    members
        .iter()
        .zip(&skeletons)
        .map(|(m, s)| match s {
            Some(s) if counts.get(s.as_str()).copied().unwrap_or(0) > 1 => {
                format!("{}#{:04}", m.name, m.uid % 10_000)
            }
            _ => member_label(m),
        })
        .collect()
}
