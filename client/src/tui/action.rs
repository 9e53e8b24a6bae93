//! The vocabulary of the terminal client: what can happen ([`Action`]) and what the event loop
//! must then do in the outside world ([`Command`]).
//!
//! An action is either an [`Intent`] (from the keymap) or an [`Event`] (from background work),
//! so the compiler, not a list someone must keep up to date, decides what an open overlay
//! captures: intents only. [`crate::tui::model::App::update`] turns actions into state
//! changes plus commands, so every decision is testable without a terminal, a server or a
//! sound card.

use crate::tui::model::{AudioState, ChannelRow, ReceiveQuality, TransmitMode, VoiceSetup};

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The user pressed a key that means this.
    Key(Intent),
    /// Background work (network worker, voice session) reports this.
    Event(Event),
}

impl From<Intent> for Action {
    fn from(i: Intent) -> Self {
        Action::Key(i)
    }
}

impl From<Event> for Action {
    fn from(e: Event) -> Self {
        Action::Event(e)
    }
}

/// What a key press means. An open overlay takes these (push-to-talk excepted).
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    // ---- bindable keys ----
    /// Leave the program (leaves the channel first).
    Quit,
    /// Move the selection up in the focused list.
    Up,
    /// Move the selection down in the focused list.
    Down,
    /// Switch focus between the channel list and the member list.
    FocusNext,
    /// Join the selected channel.
    JoinSelected,
    /// Leave the joined channel.
    Leave,
    /// Ask for a name, then create a channel.
    CreateChannel,
    /// Ask for a new name for the selected channel.
    RenameChannel,
    /// Ask for confirmation, then delete the selected channel.
    DeleteChannel,
    /// Ask for a new display name.
    SetName,
    /// Stop sending our microphone.
    ToggleMute,
    /// Stop hearing others (and, like every voice client, stop sending too).
    ToggleDeafen,
    /// Voice-activated → push-to-talk → continuous → voice-activated.
    CycleMode,
    /// Noise suppression on/off.
    ToggleDenoise,
    /// Echo cancellation on/off.
    ToggleAec,
    /// Automatic gain control on/off.
    ToggleAgc,
    /// Push-to-talk key went down (hold style) or was pressed (toggle style).
    PttPress,
    /// Push-to-talk key went up (hold style only).
    PttRelease,
    /// Raise the selected member's volume.
    VolumeUp,
    /// Lower the selected member's volume.
    VolumeDown,
    /// Raise the voice-activation threshold.
    VadUp,
    /// Lower the voice-activation threshold.
    VadDown,
    /// Show or hide the key help.
    ToggleHelp,
    /// Show or hide per-member link quality.
    ToggleQuality,
    /// Open the input/output device picker.
    OpenDevices,
    /// Open the chat input line (encrypted channels).
    OpenChat,

    // ---- text prompt and picker editing (not bindable) ----
    /// A typed character in a prompt, or `y` in a confirmation.
    Input(char),
    /// Delete the last character of a prompt.
    Backspace,
    /// Accept the prompt, confirmation or picker choice.
    Submit,
    /// Close the overlay without doing anything.
    Cancel,
    /// Switch the device picker between input and output.
    PickerSwitch,
}

/// A result of background work; always applies, whatever overlay is open.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The control connection works; our identity on this server.
    Connected {
        /// Our user id.
        uid: u64,
        /// Our display name ("" when never set).
        name: String,
        /// Our permission bits.
        perms: u64,
    },
    /// The server went away; a reconnect is scheduled.
    Reconnecting {
        /// Attempt number, from 1.
        attempt: u32,
        /// Delay before this attempt, milliseconds.
        delay_ms: u64,
        /// Why the link was lost.
        reason: String,
    },
    /// Fresh channel list with names and member counts.
    ChannelsLoaded(Vec<ChannelRow>),
    /// The whole member list of a channel (uid, display name): on join, and after a gap
    /// (the voice link was lost and came back) in which joins and leaves may have been missed.
    MembersLoaded {
        /// Channel the list belongs to.
        chid: u64,
        /// Members in join order.
        members: Vec<(u64, String)>,
    },
    /// Our voice session in `chid` is up.
    Joined {
        /// Joined channel.
        chid: u64,
    },
    /// Our voice session ended (left, channel deleted, server shut it down).
    Left {
        /// Why, for the status line.
        reason: String,
        /// Join again once the channel is listed (the server restarted it).
        rejoin: bool,
    },
    /// A peer's audio arrived or stopped.
    Talking {
        /// The peer.
        uid: u64,
        /// Whether they are talking now.
        talking: bool,
    },
    /// A peer joined our channel (pushed by the voice session, not polled).
    PeerJoined {
        /// Who.
        uid: u64,
        /// Their display name ("" when unknown or never set).
        name: String,
    },
    /// A peer left our channel (pushed by the voice session).
    PeerLeft(u64),
    /// Per-peer receive statistics.
    PeerStats {
        /// The peer.
        uid: u64,
        /// Their link as we receive it.
        stats: ReceiveQuality,
    },
    /// Our own link to the server.
    Link {
        /// Round-trip time of keepalives, milliseconds.
        rtt_ms: Option<u32>,
        /// Average loss over all peers, percent.
        loss_pct: Option<f32>,
    },
    /// Our microphone, from the capture path's last frame.
    MicLevel {
        /// RMS level, dB full scale.
        dbfs: f32,
        /// Voice-activity probability 0..1 (what the threshold applies to).
        vad: f32,
        /// True while voice is being sent.
        sending: bool,
    },
    /// Audio devices opened, or why not.
    Audio(AudioState),
    /// Devices available for the picker.
    DevicesListed {
        /// Input device names.
        inputs: Vec<String>,
        /// Output device names.
        outputs: Vec<String>,
    },
    /// Channel modes from CHANNEL_MODE (true: end-to-end encrypted); fixed per channel.
    ChannelModes(Vec<(u64, bool)>),
    /// The joined encrypted channel entered a new MLS epoch (a member joined or left).
    Epoch {
        /// The epoch.
        epoch: u64,
        /// Its safety code.
        safety_code: String,
        /// Members of the group, ourselves included.
        members: usize,
    },
    /// A chat message of the joined channel, in the server's order.
    ChatMessage {
        /// Its place in the order.
        seq: u64,
        /// Its author.
        sender: u64,
        /// Its text.
        text: String,
    },
    /// The server vouches for a key of this member other than the one first seen.
    KeyChanged(u64),
    /// The server refused one of our chat messages (size or rate limit).
    ChatRefused(String),
    /// A command failed; shown on the status line.
    Error(String),
    /// A command succeeded with something worth saying.
    Info(String),
}

/// An effect the event loop carries out. Results come back as [`Event`]s. Every command
/// carries the values it needs: the app is their one owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Leave any current channel, then join `chid` and start voice with `setup`.
    Join {
        /// Channel to join.
        chid: u64,
        /// Devices and controls the new session starts with.
        setup: VoiceSetup,
    },
    /// Leave the current channel and stop voice.
    Leave,
    /// Create a channel and name it (empty: no name).
    Create {
        /// Name for the new channel.
        name: String,
    },
    /// Rename a channel.
    Rename {
        /// Channel.
        chid: u64,
        /// New name.
        name: String,
    },
    /// Delete a channel.
    Delete(u64),
    /// Set our display name on the server.
    SetDisplayName(String),
    /// Reload the channel list now.
    Refresh,
    /// A control of the running voice session.
    Voice(VoiceControl),
    /// Say this in the joined channel's chat (only sent on an encrypted channel).
    Say(String),
    /// Enumerate audio devices for the picker.
    ListDevices,
    /// Write settings (devices, mode, thresholds, volumes, name) to the config file.
    SaveSettings,
    /// Leave and stop the program.
    Quit,
}

/// A change to the running voice session; mirrors the session's own setters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VoiceControl {
    /// Stop or resume sending.
    Mute(bool),
    /// Stop or resume hearing.
    Deafen(bool),
    /// How sending is triggered.
    Mode(TransmitMode),
    /// Push-to-talk key state.
    PushToTalk(bool),
    /// Noise suppression on/off.
    Denoise(bool),
    /// Echo cancellation on/off.
    Aec(bool),
    /// Automatic gain control on/off.
    Agc(bool),
    /// Playback gain of one peer (1.0 = unchanged).
    PeerGain {
        /// The peer.
        uid: u64,
        /// Linear gain.
        gain: f32,
    },
}
