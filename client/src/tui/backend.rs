//! The one adapter between the app and the outside world: a thread that owns the control
//! client and the voice session, carries out [`Command`]s, and reports [`Event`]s.
//!
//! - Control requests are blocking, short, one TCP connection each; keeping them on this
//!   thread keeps the drawing thread responsive. When the server goes away it reconnects
//!   with backoff ([`Schedule`], sans-IO), and the app rejoins its channel.
//! - A voice session is a [`VoiceSession`] started with the app's [`VoiceSetup`]; voice
//!   controls call its setters directly (atomics, a brief lock). One helper thread per session
//!   pumps its events ([`crate::session::pump`]) into the app, samples the microphone level
//!   for the meter, and looks up the names of members who join.
//! - Membership is pushed: CHANNEL_INFO is asked when we join and after a gap (the voice link
//!   came back after being lost); joins and leaves in between come from the session. The
//!   channel list refreshes every 2 s at a bounded cost ([`ChannelList`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kv_proto::ErrorCode;

use crate::control::{ControlClient, ControlError};
use crate::identity::{server_signs, Acting, IdentityStore};
use crate::session::{
    pump, Flow, InputSource, OutputSink, SessionConfig, SessionError, SessionEvent, VoiceSession,
};
use crate::tui::action::{Command, Event, VoiceControl};
use crate::tui::channel_list::ChannelList;
use crate::tui::channel_modes::ChannelModes;
use crate::tui::channel_pages::ChannelPages;
use crate::tui::inbox::EventSink;
use crate::tui::model::{AudioState, ChannelRow, VoiceSetup};
use crate::tui::session_events::events_for;

/// Timeout of each control request: short, so a dead server is noticed quickly.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the channel list is reloaded.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How often the microphone meter is sampled.
const METER_EVERY: Duration = Duration::from_millis(50);
/// Member names remembered per session (bounded like every map).
const MAX_NAMES: usize = 1024;

/// Who we are on the server: a fixed user from the command line, or the identity store.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `--uid` (with its stored key, if any), `--identity FILE`, or the demo's user.
    Fixed(Box<Acting>),
    /// Stored per server; registered (with a new key) on first use.
    Stored(IdentityStore),
}

/// Backoff before reconnect attempt `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(8);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// What the backend should do next, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// (Re)connect to the server.
    Connect,
    /// Reload the channel list.
    Refresh,
    /// Nothing before this long has passed (commands are handled meanwhile).
    Wait(Duration),
}

/// When to connect, reconnect and refresh: sans-IO, on the caller's clock, so the
/// reconnect logic is tested on virtual time.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Failed connection attempts in a row.
    attempt: u32,
    /// When to try connecting; `None` while connected.
    connect_at: Option<Instant>,
    /// When the channel list is due while connected.
    refresh_at: Instant,
}

impl Schedule {
    /// Not connected yet: connect at once.
    pub fn new(now: Instant) -> Self {
        Schedule {
            attempt: 0,
            connect_at: Some(now),
            refresh_at: now,
        }
    }

    /// Whether the control connection works (commands are carried out only then).
    pub fn connected(&self) -> bool {
        self.connect_at.is_none()
    }

    /// What is due at `now`.
    pub fn due(&self, now: Instant) -> Due {
        let at = match self.connect_at {
            Some(at) if now >= at => return Due::Connect,
            Some(at) => at,
            None if now >= self.refresh_at => return Due::Refresh,
            None => self.refresh_at,
        };
        Due::Wait(at - now)
    }

    /// Connected: refreshes follow every [`REFRESH_EVERY`].
    pub fn connected_at(&mut self, now: Instant) {
        self.attempt = 0;
        self.connect_at = None;
        self.refresh_at = now + REFRESH_EVERY;
    }

    /// A connection attempt failed: the attempt number and the wait before the next one.
    pub fn connect_failed(&mut self, now: Instant) -> (u32, Duration) {
        self.attempt = self.attempt.saturating_add(1);
        let delay = backoff(self.attempt);
        self.connect_at = Some(now + delay);
        (self.attempt, delay)
    }

    /// The server went away while connected: try again at once (backoff from the next
    /// failure on).
    pub fn lost(&mut self, now: Instant) {
        self.connect_at = Some(now);
    }

    /// The list was reloaded (or should be, at once: `now` minus nothing).
    pub fn refreshed(&mut self, now: Instant) {
        self.refresh_at = now + REFRESH_EVERY;
    }

    /// Reload the list at once (after a change we made).
    pub fn refresh_now(&mut self, now: Instant) {
        self.refresh_at = now;
    }
}

/// Why a session could not start.
#[derive(Debug)]
struct StartError {
    message: String,
    /// Network trouble: reconnect (and rejoin) rather than give up.
    transient: bool,
}

impl From<SessionError> for StartError {
    fn from(e: SessionError) -> Self {
        let transient = matches!(&e, SessionError::Control(c) if c.is_transient());
        StartError {
            message: e.to_string(),
            transient,
        }
    }
}

/// A running voice session and the thread pumping its events.
struct Running {
    chid: u64,
    session: Arc<VoiceSession>,
    /// Stops the pump thread (which holds the other reference to `session`).
    stop: Arc<AtomicBool>,
    pump: JoinHandle<()>,
}

impl Running {
    fn apply(&self, c: VoiceControl) {
        let s = &self.session;
        match c {
            VoiceControl::Mute(on) => s.set_muted(on),
            VoiceControl::Deafen(on) => s.set_deafened(on),
            VoiceControl::Mode(m) => s.set_mode(m),
            VoiceControl::PushToTalk(on) => s.set_push_to_talk(on),
            VoiceControl::Denoise(on) => s.set_denoise(on),
            VoiceControl::Aec(on) => s.set_aec(on),
            VoiceControl::Agc(on) => s.set_agc(on),
            VoiceControl::PeerGain { uid, gain } => s.set_peer_gain(uid, gain),
        }
    }

    /// Leaves the channel and joins every thread of the session.
    fn stop(self) {
        tracing::info!(chid = self.chid, "leaving");
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.pump.join();
        match Arc::try_unwrap(self.session) {
            Ok(s) => {
                if let Err(e) = s.leave() {
                    tracing::warn!(error = %e, "leaving the channel failed");
                }
            }
            Err(_) => tracing::warn!("session still shared at stop; dropped instead"),
        }
    }
}

/// State of the backend thread.
pub struct Backend {
    control: ControlClient,
    identity: Identity,
    out: EventSink,
    uid: Option<u64>,
    session: Option<Running>,
    schedule: Schedule,
    /// The channel list between refreshes, from LIST_CHANNELS pages.
    pages: ChannelPages,
    /// False once the server answered LIST_CHANNELS with NOIMPL: then the list comes
    /// from GET_CHANNELS and CHANNEL_INFO ([`ChannelList`]).
    paged: bool,
    /// The channel list between refreshes, on a server without LIST_CHANNELS.
    channels: ChannelList,
    /// Which channels are encrypted (CHANNEL_MODE, asked once per channel).
    modes: ChannelModes,
    /// Open the sound devices (false: silence in, nothing out, for tests).
    devices: bool,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("server", &self.control.addr())
            .field("uid", &self.uid)
            .field("chid", &self.session.as_ref().map(|s| s.chid))
            .finish()
    }
}

impl Backend {
    /// A backend for `control`'s server; events go to `out`.
    pub fn new(control: ControlClient, identity: Identity, out: EventSink) -> Self {
        Backend {
            control,
            identity,
            out,
            uid: None,
            session: None,
            schedule: Schedule::new(Instant::now()),
            pages: ChannelPages::default(),
            paged: true,
            channels: ChannelList::default(),
            modes: ChannelModes::default(),
            devices: true,
        }
    }

    /// Sessions without sound devices: silence in, nothing out (tests, headless use).
    pub fn without_devices(mut self) -> Self {
        self.devices = false;
        self
    }

    /// Starts the backend thread: it runs until [`Command::Quit`] or until `commands`'
    /// sender is dropped, then sends `()` on `done`.
    pub fn spawn(
        self,
        commands: Receiver<Command>,
        done: SyncSender<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kv-tui-net".into())
            .spawn(move || {
                self.run(commands);
                let _ = done.send(());
            })
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            let now = Instant::now();
            match self.schedule.due(now) {
                Due::Connect => match self.connect() {
                    Ok(()) => self.schedule.connected_at(Instant::now()),
                    Err(reason) => {
                        let (attempt, delay) = self.schedule.connect_failed(Instant::now());
                        tracing::info!(attempt, ?delay, %reason, "reconnecting");
                        self.out.send(Event::Reconnecting {
                            attempt,
                            delay_ms: delay.as_millis() as u64,
                            reason,
                        });
                    }
                },
                Due::Refresh => {
                    if let Err(e) = self.refresh() {
                        self.fail(e);
                    }
                    self.schedule.refreshed(Instant::now());
                }
                Due::Wait(wait) => match commands.recv_timeout(wait) {
                    Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => {
                        return self.stop_session();
                    }
                    Ok(cmd) if !self.schedule.connected() => {
                        tracing::debug!(?cmd, "dropped while disconnected")
                    }
                    Ok(cmd) => self.execute(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                },
            }
        }
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
        self.out.send(Event::Connected {
            uid,
            name,
            perms: perms.bits(),
        });
        Ok(())
    }

    /// The server went away: drop the session and reconnect (the app rejoins).
    fn lost(&mut self) {
        self.stop_session();
        self.uid = None;
        self.schedule.lost(Instant::now());
    }

    /// Handles a control failure: network trouble starts a reconnect, anything else is
    /// reported and forgotten.
    fn fail(&mut self, e: ControlError) {
        if e.is_transient() || matches!(e, ControlError::Protocol { .. }) {
            tracing::warn!(error = %e, "lost the server");
            self.lost();
        } else {
            self.out.send(Event::Error(e.to_string()));
        }
    }

    fn stop_session(&mut self) {
        if let Some(s) = self.session.take() {
            s.stop();
        }
    }

    /// Carries out one command.
    fn execute(&mut self, cmd: Command) {
        let Some(uid) = self.uid else {
            return;
        };
        let result: Result<bool, ControlError> = match cmd {
            Command::Join { chid, setup } => {
                // Member counts change in the channel we leave and the one we join.
                if let Some(old) = &self.session {
                    self.channels.forget(old.chid);
                }
                self.channels.forget(chid);
                self.stop_session();
                self.join(uid, chid, &setup);
                Ok(true)
            }
            Command::Leave => {
                if let Some(old) = &self.session {
                    self.channels.forget(old.chid);
                }
                let was_in = self.session.is_some();
                self.stop_session();
                if was_in {
                    self.out.send(Event::Left {
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
                self.out.send(Event::Info(format!("created {label}")));
                Ok(true)
            }),
            Command::Rename { chid, name } => {
                self.channels.forget(chid);
                self.control
                    .set_channel_name(uid, chid, &name)
                    .map(|()| true)
            }
            Command::Delete(chid) => self.control.delete(uid, chid).map(|()| {
                if self.session.as_ref().is_some_and(|s| s.chid == chid) {
                    self.stop_session();
                    self.out.send(Event::Left {
                        reason: "you deleted the channel".into(),
                        rejoin: false,
                    });
                }
                true
            }),
            Command::SetDisplayName(name) => {
                self.control.set_user_name(uid, uid, &name).map(|()| true)
            }
            Command::Refresh => Ok(true),
            Command::Voice(c) => {
                if let Some(s) = &self.session {
                    s.apply(c);
                }
                Ok(false)
            }
            Command::Say(text) => {
                // The session sends chat only on an encrypted channel (its MLS group),
                // never in the clear; the app offers it only there.
                let sent = match &self.session {
                    Some(s) => s.session.say(&text).map_err(|e| e.to_string()),
                    None => Err("not in a channel".into()),
                };
                if let Err(e) = sent {
                    self.out
                        .send(Event::Error(format!("chat message not sent: {e}")));
                }
                Ok(false)
            }
            Command::ListDevices => {
                let (inputs, outputs) = match crate::audio::device::list_devices() {
                    Ok(l) => (l.inputs, l.outputs),
                    Err(e) => {
                        tracing::warn!(error = %e, "listing devices failed");
                        (vec![], vec![])
                    }
                };
                self.out.send(Event::DevicesListed { inputs, outputs });
                Ok(false)
            }
            Command::SaveSettings | Command::Quit => Ok(false),
        };
        match result {
            Ok(true) => self.schedule.refresh_now(Instant::now()),
            Ok(false) => {}
            Err(e) => {
                self.fail(e);
                self.schedule.refresh_now(Instant::now());
            }
        }
    }

    fn join(&mut self, uid: u64, chid: u64, setup: &VoiceSetup) {
        match self.start_session(uid, chid, setup) {
            Ok(running) => self.session = Some(running),
            Err(e) if e.transient => {
                tracing::warn!(error = %e.message, "join failed; reconnecting");
                self.lost();
            }
            Err(e) => {
                self.out
                    .send(Event::Error(format!("join failed: {}", e.message)));
            }
        }
    }

    /// Joins `chid` with `setup`, reports it (audio state, joined, the members), and starts
    /// the session's pump thread. Without a usable device the session still joins
    /// (silence in, nothing out) and the app says "no audio device".
    fn start_session(
        &mut self,
        uid: u64,
        chid: u64,
        setup: &VoiceSetup,
    ) -> Result<Running, StartError> {
        let input = setup.input.clone().unwrap_or_else(|| "default".into());
        let output = setup.output.clone().unwrap_or_else(|| "default".into());
        let mut cfg = SessionConfig::new(self.control.addr(), uid, chid);
        cfg.control_timeout = CONTROL_TIMEOUT;
        // Our client: it signs as us and carries the pinned server key.
        cfg.control = Some(self.control.clone());
        cfg.tx.mode = setup.mode;
        cfg.tx.vad_threshold = setup.vad_threshold;
        cfg.tx.denoise = setup.denoise;
        if self.devices {
            cfg.input = InputSource::Device(input.clone());
            cfg.output = OutputSink::Device(output.clone());
            cfg.mic.aec = setup.aec;
            cfg.mic.agc = setup.agc;
        }
        let (session, events, audio) = match VoiceSession::start(cfg.clone()) {
            Ok((s, ev)) if self.devices => (s, ev, AudioState::Ready { input, output }),
            Ok((s, ev)) => (s, ev, AudioState::NoDevice("sound devices not used".into())),
            Err(SessionError::Audio(why)) => {
                // No sound card (or the chosen device is gone): join anyway, so the
                // channel and its members still work, and say why there is no sound.
                tracing::warn!(%why, "no audio device; joining without sound");
                cfg.input = InputSource::Silence;
                cfg.output = OutputSink::Discard;
                let (s, ev) = VoiceSession::start(cfg)?;
                (s, ev, AudioState::NoDevice(why))
            }
            Err(e) => return Err(e.into()),
        };
        session.set_muted(setup.muted);
        session.set_deafened(setup.deafened);
        for &(peer, gain) in &setup.gains {
            session.set_peer_gain(peer, gain);
        }
        // The session checked CHANNEL_MODE before joining (and opened the push connection
        // for an encrypted channel): the lock the app shows is what the session does.
        self.modes.learnt(chid, session.encrypted());
        self.out
            .send(Event::ChannelModes(vec![(chid, session.encrypted())]));
        // Joined first: everything the pump reports about this session comes after it.
        self.out.send(Event::Audio(audio));
        self.out.send(Event::Joined { chid });
        let names = members_loaded(&self.control, chid, &self.out);
        let session = Arc::new(session);
        let stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let forward = Forwarder {
                session: session.clone(),
                stop: stop.clone(),
                control: self.control.clone(),
                me: uid,
                chid,
                names,
                out: self.out.clone(),
            };
            std::thread::Builder::new()
                .name("kv-tui-session".into())
                .spawn(move || forward.run(events))
                .map_err(|e| StartError {
                    message: format!("could not start a thread: {e}"),
                    transient: false,
                })?
        };
        Ok(Running {
            chid,
            session,
            stop,
            pump,
        })
    }

    /// Reloads the channel list: one LIST_CHANNELS page ([`ChannelPages`]), or on a server
    /// without it GET_CHANNELS and CHANNEL_INFO for the few channels [`ChannelList::plan`]
    /// picks. Either way a bounded cost however many channels there are.
    fn refresh(&mut self) -> Result<(), ControlError> {
        if self.paged {
            let after = self.pages.cursor();
            match self.control.list_channels(after) {
                Ok(page) => {
                    self.pages.update(after, page);
                    let rows = self.pages.rows();
                    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
                    self.out.send(Event::ChannelsLoaded(rows));
                    return self.refresh_modes(&ids);
                }
                Err(e) if e.code() == Some(ErrorCode::NoImpl) => {
                    tracing::debug!("no LIST_CHANNELS; listing with CHANNEL_INFO");
                    self.paged = false;
                }
                Err(e) => return Err(e),
            }
        }
        let ids = self.control.channels()?;
        for id in self.channels.plan(&ids) {
            let mut row = ChannelRow {
                id,
                name: String::new(),
                members: 0,
                owner: 0,
            };
            match self.control.channel_info(id) {
                Ok(info) => {
                    row.name = info.name;
                    row.owner = info.owner;
                    row.members = info.members.len();
                }
                // Deleted between the two requests, or a seed server: show the id.
                Err(e) if e.code().is_some() => {}
                Err(e) => return Err(e),
            }
            self.channels.update(row);
        }
        self.out
            .send(Event::ChannelsLoaded(self.channels.rows(&ids)));
        self.refresh_modes(&ids)
    }

    /// Asks CHANNEL_MODE for a few listed channels whose mode is not known yet and
    /// reports the answers (a server without it, the seed's, has only plain channels).
    fn refresh_modes(&mut self, ids: &[u64]) -> Result<(), ControlError> {
        self.modes.retain_listed(ids);
        let mut learnt = Vec::new();
        for id in self.modes.plan(ids) {
            match self.control.channel_encrypted(id) {
                Ok(encrypted) => {
                    self.modes.learnt(id, encrypted);
                    learnt.push((id, encrypted));
                }
                // Deleted meanwhile: asked again if it is still listed next time.
                Err(e) if e.code().is_some() => {}
                Err(e) => return Err(e),
            }
        }
        if !learnt.is_empty() {
            self.out.send(Event::ChannelModes(learnt));
        }
        Ok(())
    }
}

/// Asks CHANNEL_INFO for `chid` and reports its members; returns their names. A server
/// without it (the seed's) just reports none: members then appear as they talk or join.
fn members_loaded(control: &ControlClient, chid: u64, out: &EventSink) -> BTreeMap<u64, String> {
    match control.channel_info(chid) {
        Ok(info) => {
            let names = info.members.iter().take(MAX_NAMES).cloned().collect();
            out.send(Event::MembersLoaded {
                chid,
                members: info.members,
            });
            names
        }
        Err(e) => {
            tracing::debug!(error = %e, chid, "no member list");
            BTreeMap::new()
        }
    }
}

/// The session's pump thread: session events become app events, the microphone level is
/// sampled for the meter, and joining members get their names.
struct Forwarder {
    session: Arc<VoiceSession>,
    stop: Arc<AtomicBool>,
    control: ControlClient,
    me: u64,
    chid: u64,
    /// Names known so far (from CHANNEL_INFO, then USER_INFO per newcomer).
    names: BTreeMap<u64, String>,
    out: EventSink,
}

impl Forwarder {
    fn run(mut self, events: Receiver<SessionEvent>) {
        let (session, stop, out) = (self.session.clone(), self.stop.clone(), self.out.clone());
        let mut metered = Instant::now() - METER_EVERY;
        pump(
            &events,
            METER_EVERY,
            || {
                if stop.load(Ordering::Relaxed) || session.is_stopped() {
                    return Flow::Stop;
                }
                if metered.elapsed() >= METER_EVERY {
                    metered = Instant::now();
                    let l = session.input_level();
                    out.send(Event::MicLevel {
                        dbfs: l.rms_dbfs,
                        vad: l.vad_probability,
                        sending: l.transmitting,
                    });
                }
                Flow::Continue
            },
            |ev| self.forward(ev),
        );
    }

    fn forward(&mut self, ev: SessionEvent) -> Flow {
        let end = matches!(
            ev,
            SessionEvent::Kicked | SessionEvent::Shutdown | SessionEvent::Failed { .. }
        );
        // While the link was lost, system packets (joins, leaves) may have been lost too.
        let gap = matches!(ev, SessionEvent::LinkRestored);
        for e in events_for(ev, self.me) {
            let e = match e {
                Event::PeerJoined { uid, .. } => Event::PeerJoined {
                    uid,
                    name: self.name_of(uid),
                },
                e => e,
            };
            if !self.out.send(e) {
                return Flow::Stop;
            }
        }
        if gap {
            self.names = members_loaded(&self.control, self.chid, &self.out);
        }
        if end {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// A member's name: known, or one USER_INFO ("" on a server without it).
    fn name_of(&mut self, uid: u64) -> String {
        if let Some(n) = self.names.get(&uid) {
            return n.clone();
        }
        let name = self
            .control
            .user_info(uid)
            .map(|(_, n)| n)
            .unwrap_or_default();
        if self.names.len() >= MAX_NAMES {
            self.names.pop_first();
        }
        self.names.insert(uid, name.clone());
        name
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

    #[test]
    fn connects_first_then_refreshes_on_a_period() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(!s.connected());
        assert_eq!(s.due(t0), Due::Connect);
        s.connected_at(t0);
        assert!(s.connected());
        assert_eq!(s.due(t0), Due::Wait(REFRESH_EVERY));
        let t1 = t0 + REFRESH_EVERY;
        assert_eq!(s.due(t1), Due::Refresh);
        s.refreshed(t1);
        assert_eq!(
            s.due(t1 + Duration::from_millis(500)),
            Due::Wait(REFRESH_EVERY - Duration::from_millis(500))
        );
        s.refresh_now(t1 + Duration::from_millis(1));
        assert_eq!(s.due(t1 + Duration::from_millis(1)), Due::Refresh);
    }

    #[test]
    fn a_lost_server_is_retried_at_once_then_with_growing_backoff_until_it_answers() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.connected_at(t0);
        let lost_at = t0 + Duration::from_secs(10);
        s.lost(lost_at);
        assert!(!s.connected());
        assert_eq!(s.due(lost_at), Due::Connect, "first retry at once");
        // Each failure waits longer: 250 ms, 500 ms, 1 s, 2 s, 4 s, 4 s…
        let mut now = lost_at;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let (attempt, delay) = s.connect_failed(now);
            waits.push((attempt, delay.as_millis()));
            assert_eq!(s.due(now), Due::Wait(delay));
            assert_eq!(
                s.due(now + delay - Duration::from_millis(1)),
                Due::Wait(Duration::from_millis(1))
            );
            now += delay;
            assert_eq!(s.due(now), Due::Connect);
        }
        assert_eq!(
            waits,
            [
                (1, 250),
                (2, 500),
                (3, 1000),
                (4, 2000),
                (5, 4000),
                (6, 4000)
            ]
        );
        // Back: the count starts over, and the next loss is retried at once again.
        s.connected_at(now);
        assert!(s.connected());
        s.lost(now);
        let (attempt, delay) = s.connect_failed(now);
        assert_eq!((attempt, delay), (1, FIRST_BACKOFF));
    }

    /// The backend's reconnect decisions and the app's rejoin, together on virtual time:
    /// the server is down from 10 s to 13.1 s; the app was in channel 10.
    #[test]
    fn a_server_restart_ends_in_one_rejoin_soon_after_it_is_back() {
        use crate::tui::action::Intent;
        use crate::tui::model::{App, Connection};

        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let up = |t: Instant| t < at(10_000) || t >= at(13_100);
        let mut app = App::new("x");
        let mut s = Schedule::new(t0);
        let mut joins = Vec::new();
        fn apply(app: &mut App, joins: &mut Vec<(u64, Instant)>, e: Event, now: Instant) {
            for c in app.update(e) {
                if let Command::Join { chid, .. } = c {
                    joins.push((chid, now));
                }
            }
        }
        // Connected and in channel 10.
        s.connected_at(t0);
        let connected = Event::Connected {
            uid: 1,
            name: "ann".into(),
            perms: 0,
        };
        apply(&mut app, &mut joins, connected.clone(), t0);
        apply(
            &mut app,
            &mut joins,
            Event::ChannelsLoaded(vec![ChannelRow {
                id: 10,
                name: "room".into(),
                members: 0,
                owner: 1,
            }]),
            t0,
        );
        app.update(Intent::JoinSelected);
        apply(&mut app, &mut joins, Event::Joined { chid: 10 }, t0);
        joins.clear();
        // Virtual time in 10 ms steps, doing what `Backend::run` does when something is due.
        let mut now = t0;
        while now < at(20_000) {
            match s.due(now) {
                Due::Connect if up(now) => {
                    s.connected_at(now);
                    apply(&mut app, &mut joins, connected.clone(), now);
                }
                Due::Connect => {
                    let (attempt, delay) = s.connect_failed(now);
                    apply(
                        &mut app,
                        &mut joins,
                        Event::Reconnecting {
                            attempt,
                            delay_ms: delay.as_millis() as u64,
                            reason: "down".into(),
                        },
                        now,
                    );
                }
                Due::Refresh if !up(now) => s.lost(now),
                Due::Refresh => s.refreshed(now),
                Due::Wait(_) => {}
            }
            if now == at(12_000) {
                assert!(
                    matches!(app.connection, Connection::Reconnecting { .. }),
                    "the loss is noticed within a refresh period"
                );
                assert_eq!(app.rejoin, Some(10), "and the channel remembered");
            }
            now += Duration::from_millis(10);
        }
        assert_eq!(app.connection, Connection::Connected);
        assert_eq!(joins.len(), 1, "one rejoin: {joins:?}");
        let (chid, when) = joins[0];
        assert_eq!(chid, 10, "back in the channel it was in");
        // Back at 13.1 s; attempts at 12 s + 2 s… or sooner: within one backoff step.
        assert!(
            when >= at(13_100) && when <= at(13_100) + MAX_BACKOFF,
            "{when:?}"
        );
    }
}
