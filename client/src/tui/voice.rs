//! What the terminal client needs from a voice engine, as two small traits, so the event
//! loop does not depend on how audio is captured or sent.
//!
//! [`ControlOnlyVoice`] joins and leaves through the control port without any audio (and
//! without binding a voice address), for tests where no voice engine is wanted; the real
//! engine is adapted in `session_voice`.

use crate::control::ControlClient;
use crate::tui::action::{Action, VoiceControl};
use crate::tui::app::AudioState;
pub use crate::tui::inbox::ActionSink;

/// Chosen devices (None: the system default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// Input device name.
    pub input: Option<String>,
    /// Output device name.
    pub output: Option<String>,
}

/// Why a session could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    /// For the status line.
    pub message: String,
    /// Network trouble: reconnect (and rejoin) rather than give up.
    pub transient: bool,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Starts voice sessions.
pub trait VoiceBackend: Send {
    /// Joins `uid` to `chid` and starts sending and receiving. Events are reported into
    /// `out` as actions (talking, peers, stats, audio device state, session end).
    fn start(
        &mut self,
        control: &ControlClient,
        uid: u64,
        chid: u64,
        devices: &Devices,
        out: ActionSink,
    ) -> Result<Box<dyn VoiceHandle>, StartError>;

    /// Input and output device names for the picker.
    fn list_devices(&self) -> (Vec<String>, Vec<String>);
}

/// A running voice session.
pub trait VoiceHandle: Send {
    /// Applies a control (mute, mode, gain…) to the running session.
    fn apply(&mut self, control: VoiceControl);
    /// Leaves the channel and stops every thread of the session.
    fn stop(self: Box<Self>);
}

/// A backend that only joins and leaves: nobody hears anything, and since it never binds a
/// voice address the server does not list it as a member (its admission expires within
/// seconds, PROTOCOL.md §2). For tests of the event loop alone.
#[derive(Debug, Default)]
pub struct ControlOnlyVoice;

struct ControlOnlySession {
    control: ControlClient,
    uid: u64,
    chid: u64,
}

impl VoiceBackend for ControlOnlyVoice {
    fn start(
        &mut self,
        control: &ControlClient,
        uid: u64,
        chid: u64,
        _devices: &Devices,
        out: ActionSink,
    ) -> Result<Box<dyn VoiceHandle>, StartError> {
        control.join(uid, uid, chid).map_err(|e| StartError {
            transient: e.is_transient(),
            message: e.to_string(),
        })?;
        let _ = out.try_send(Action::Audio(AudioState::NoDevice(
            "built without a voice engine".into(),
        )));
        Ok(Box::new(ControlOnlySession {
            control: control.clone(),
            uid,
            chid,
        }))
    }

    fn list_devices(&self) -> (Vec<String>, Vec<String>) {
        (vec![], vec![])
    }
}

impl VoiceHandle for ControlOnlySession {
    fn apply(&mut self, _control: VoiceControl) {}

    fn stop(self: Box<Self>) {
        if let Err(e) = self.control.leave(self.uid, self.uid, self.chid) {
            tracing::warn!(error = %e, chid = self.chid, "leave failed");
        }
    }
}
