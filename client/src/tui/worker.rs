//! The network worker: one thread that owns the control client and the voice session,
//! carries out [`Command`]s, refreshes channels and members periodically, and reconnects
//! with backoff when the server goes away (then the app rejoins its channel).
//!
//! Control requests are blocking, short, one TCP connection each; keeping them on this
//! thread keeps the drawing thread responsive.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kv_proto::ErrorCode;

use crate::control::{ControlClient, ControlError};
use crate::identity::{server_signs, Acting, IdentityStore};
use crate::tui::action::{Action, Command};
use crate::tui::model::{ChannelRow, DeviceKind};
use crate::tui::voice::{ActionSink, Devices, VoiceBackend, VoiceHandle};

/// How often channels and members are reloaded.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Most channels whose details are fetched per refresh, bounding the refresh's cost.
const MAX_DETAILED_CHANNELS: usize = 256;

/// Who we are on the server: a fixed user from the command line, or the identity store.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `--uid` (with its stored key, if any), `--identity FILE`, or the demo's user.
    Fixed(Box<Acting>),
    /// Stored per server; registered (with a new key) on first use.
    Stored(IdentityStore),
}

/// State of the worker thread.
pub struct Worker {
    control: ControlClient,
    identity: Identity,
    voice: Box<dyn VoiceBackend>,
    devices: Devices,
    out: ActionSink,
    uid: Option<u64>,
    session: Option<(u64, Box<dyn VoiceHandle>)>,
    attempt: u32,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("server", &self.control.addr())
            .field("uid", &self.uid)
            .field("chid", &self.session.as_ref().map(|s| s.0))
            .finish()
    }
}

/// Backoff before reconnect attempt `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(8);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

impl Worker {
    /// A worker for `control`'s server; results go to `out`.
    pub fn new(
        control: ControlClient,
        identity: Identity,
        voice: Box<dyn VoiceBackend>,
        devices: Devices,
        out: ActionSink,
    ) -> Self {
        Worker {
            control,
            identity,
            voice,
            devices,
            out,
            uid: None,
            session: None,
            attempt: 0,
        }
    }

    /// Runs until [`Command::Quit`] or until the event loop drops its sender.
    pub fn run(mut self, commands: Receiver<Command>) {
        let mut next_refresh = Instant::now();
        loop {
            if self.uid.is_none() {
                match self.connect() {
                    Ok(()) => {
                        self.attempt = 0;
                        next_refresh = Instant::now() + REFRESH_EVERY;
                    }
                    Err(reason) => {
                        self.attempt += 1;
                        let delay = backoff(self.attempt);
                        tracing::info!(attempt = self.attempt, ?delay, %reason, "reconnecting");
                        self.send(Action::Reconnecting {
                            attempt: self.attempt,
                            delay_ms: delay.as_millis() as u64,
                            reason,
                        });
                        // Wait out the backoff, but stay responsive to Quit.
                        let until = Instant::now() + delay;
                        while let Some(left) = until.checked_duration_since(Instant::now()) {
                            match commands.recv_timeout(left) {
                                Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => {
                                    return self.stop_session();
                                }
                                Ok(cmd) => tracing::debug!(?cmd, "dropped while disconnected"),
                                Err(RecvTimeoutError::Timeout) => break,
                            }
                        }
                        continue;
                    }
                }
            }
            let wait = next_refresh.saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => {
                    return self.stop_session();
                }
                Ok(cmd) => {
                    let refresh = self.execute(cmd);
                    if refresh {
                        next_refresh = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.refresh() {
                        self.fail(e);
                    }
                    next_refresh = Instant::now() + REFRESH_EVERY;
                }
            }
        }
    }

    fn send(&self, a: Action) {
        // The event loop is gone only while quitting; nothing to report then.
        self.out.send(a);
    }

    /// Finds who we are (signing up on first use), checks the server answers, and reports
    /// it. From here on the control client signs as us.
    fn connect(&mut self) -> Result<(), String> {
        let acting = match &self.identity {
            Identity::Fixed(acting) => (**acting).clone(),
            Identity::Stored(store) => store
                .identity_for(&self.control)
                .map_err(|e| e.to_string())?,
        };
        let uid = acting.uid;
        self.control = acting.client(&self.control);
        let (uid, (perms, name)) = match self.control.user_info(uid) {
            Ok(info) => (uid, info),
            // The server forgot us (its data was reset): sign up again and remember it.
            Err(e) if e.code() == Some(ErrorCode::Param) => match &self.identity {
                Identity::Stored(store) => {
                    let signs = server_signs(&self.control).map_err(|e| e.to_string())?;
                    let fresh = store
                        .sign_up(&self.control, signs)
                        .map_err(|e| e.to_string())?;
                    tracing::warn!(
                        old = uid,
                        new = fresh.uid,
                        "server did not know us; signed up again"
                    );
                    self.control = fresh.client(&self.control);
                    let info = self
                        .control
                        .user_info(fresh.uid)
                        .map_err(|e| e.to_string())?;
                    (fresh.uid, info)
                }
                Identity::Fixed(_) => return Err(format!("server does not know user {uid}")),
            },
            // A seed server has no USER_INFO: assume plain rights, no name.
            Err(e) if e.code() == Some(ErrorCode::NoImpl) => {
                (uid, (kv_proto::Perms::NONE, String::new()))
            }
            Err(e) => return Err(e.to_string()),
        };
        self.uid = Some(uid);
        tracing::info!(uid, server = self.control.addr(), "connected");
        self.send(Action::Connected {
            uid,
            name,
            perms: perms.bits(),
        });
        Ok(())
    }

    /// Handles a control failure: network trouble starts a reconnect, anything else is
    /// reported and forgotten.
    fn fail(&mut self, e: ControlError) {
        if e.is_transient() || matches!(e, ControlError::Protocol { .. }) {
            tracing::warn!(error = %e, "lost the server");
            self.stop_session();
            self.uid = None;
        } else {
            self.send(Action::Error(e.to_string()));
        }
    }

    fn stop_session(&mut self) {
        if let Some((chid, s)) = self.session.take() {
            tracing::info!(chid, "leaving");
            s.stop();
        }
    }

    /// Carries out one command; true when the lists should be reloaded right away.
    fn execute(&mut self, cmd: Command) -> bool {
        let Some(uid) = self.uid else {
            return false;
        };
        let result: Result<bool, ControlError> = match cmd {
            Command::Join(chid) => {
                self.stop_session();
                return self.start_session(uid, chid);
            }
            Command::Leave => {
                let was_in = self.session.is_some();
                self.stop_session();
                if was_in {
                    self.send(Action::Left {
                        reason: "left the channel".into(),
                        rejoin: false,
                    });
                }
                Ok(true)
            }
            Command::Create { name } => self.control.create(uid).and_then(|chid| {
                if !name.is_empty() {
                    self.control.set_channel_name(uid, chid, &name)?;
                }
                let label = if name.is_empty() {
                    format!("#{chid}")
                } else {
                    name
                };
                self.send(Action::Info(format!("created {label}")));
                Ok(true)
            }),
            Command::Rename { chid, name } => self
                .control
                .set_channel_name(uid, chid, &name)
                .map(|()| true),
            Command::Delete(chid) => self.control.delete(uid, chid).map(|()| {
                if self.session.as_ref().is_some_and(|s| s.0 == chid) {
                    self.stop_session();
                    self.send(Action::Left {
                        reason: "you deleted the channel".into(),
                        rejoin: false,
                    });
                }
                true
            }),
            Command::SetDisplayName(name) => {
                self.control.set_user_name(uid, uid, &name).map(|()| true)
            }
            Command::Refresh => self.refresh().map(|()| false),
            Command::Voice(c) => {
                if let Some((_, s)) = &mut self.session {
                    s.apply(c);
                }
                Ok(false)
            }
            Command::ListDevices => {
                let (inputs, outputs) = self.voice.list_devices();
                self.send(Action::DevicesListed { inputs, outputs });
                Ok(false)
            }
            Command::UseDevice { kind, name } => {
                match kind {
                    DeviceKind::Input => self.devices.input = name,
                    DeviceKind::Output => self.devices.output = name,
                }
                // Restart the session on the new devices.
                if let Some((chid, s)) = self.session.take() {
                    s.stop();
                    return self.start_session(uid, chid);
                }
                Ok(false)
            }
            Command::SaveSettings | Command::Quit => Ok(false),
        };
        match result {
            Ok(refresh) => refresh,
            Err(e) => {
                self.fail(e);
                true
            }
        }
    }

    fn start_session(&mut self, uid: u64, chid: u64) -> bool {
        match self
            .voice
            .start(&self.control, uid, chid, &self.devices, self.out.clone())
        {
            Ok(handle) => {
                self.session = Some((chid, handle));
                self.send(Action::Joined { chid });
            }
            Err(e) if e.transient => {
                // The server went away: reconnect, and the app rejoins.
                tracing::warn!(error = %e, "join failed; reconnecting");
                self.uid = None;
                return false;
            }
            Err(e) => self.send(Action::Error(format!("join failed: {e}"))),
        }
        true
    }

    /// Reloads channels (names, owners, member counts) and the joined channel's members.
    fn refresh(&mut self) -> Result<(), ControlError> {
        let ids = self.control.channels()?;
        let mut rows = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let mut row = ChannelRow {
                id,
                name: String::new(),
                members: 0,
                owner: 0,
            };
            if i < MAX_DETAILED_CHANNELS {
                match self.control.channel_info(id) {
                    Ok(info) => {
                        row.name = info.name;
                        row.owner = info.owner;
                        row.members = info.members.len();
                        if self.session.as_ref().is_some_and(|s| s.0 == id) {
                            self.send(Action::MembersLoaded {
                                chid: id,
                                members: info.members,
                            });
                        }
                    }
                    // Deleted between the two requests, or a seed server: show the id.
                    Err(e) if e.code().is_some() => {}
                    Err(e) => return Err(e),
                }
            }
            rows.push(row);
        }
        self.send(Action::ChannelsLoaded(rows));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
