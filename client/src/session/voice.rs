//! [`VoiceSession`]: join a channel and talk. The one type the TUI and `kv join` drive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use kv_proto::control::features;
use kv_proto::ErrorCode;

use crate::audio::{
    self, InputLevel, MicConfig, PeerStats, RxConfig, RxPipeline, TransmitMode, TxConfig,
    TxPipeline, WavSink,
};
use crate::control::{ControlClient, ControlError};
use crate::e2ee::{CryptoEvent, PushChannel};

use super::capture::{self, CaptureInput};
use super::error::SessionError;
use super::events::{EventSink, SessionEvent, SessionStats};
use super::handoff::{handoff, RxCommand};
use super::link::{self, Link};
use super::media::{InputSource, OutputSink};
use super::mic_path::{mic_path, MicPath, PlayedTap};
use super::playout::{self, PlayoutSink};
use super::shared::{lock, EndReason, Shared};

/// Samples of ring buffer between a device callback and its thread: 400 ms, more than the
/// playout ever queues (see `playout::DEVICE_QUEUE_MAX`), so a stalled thread costs
/// samples, not a crash.
const DEVICE_RING: usize = 19_200;

/// Everything needed to join a channel.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Control address, `host:port`.
    pub server: String,
    /// Our uid (see [`crate::identity`]).
    pub uid: u64,
    /// Channel to join.
    pub chid: u64,
    /// The microphone.
    pub input: InputSource,
    /// The speaker.
    pub output: OutputSink,
    /// Capture settings (frame size, bitrate, mode, denoise, redundancy).
    pub tx: TxConfig,
    /// Playback settings (jitter buffer, limiter).
    pub rx: RxConfig,
    /// Echo cancellation and gain control (see [`Self::mic_defaults`]); the high-pass
    /// filter runs ahead of them on a device input, or when either is on.
    pub mic: MicConfig,
    /// Test rig: feed our own playback back into our capture through the synthetic room
    /// of this seed ([`crate::audio::echo_rig`]); `None` in normal use.
    pub echo_test_seed: Option<u64>,
    /// Send voice here instead of the channel's port on the control host. For tests that
    /// put a lossy relay in between; `None` in normal use.
    pub voice_addr: Option<SocketAddr>,
    /// Timeout of each control request.
    pub control_timeout: Duration,
    /// The control client to use (it carries the user's key and the pinned server key);
    /// `None`: a plain one for `server` (key-less user, nothing pinned).
    pub control: Option<ControlClient>,
}

impl SessionConfig {
    /// Defaults for everything but where to connect: silence in, nothing out.
    pub fn new(server: impl Into<String>, uid: u64, chid: u64) -> Self {
        Self {
            server: server.into(),
            uid,
            chid,
            input: InputSource::Silence,
            output: OutputSink::Discard,
            tx: TxConfig::default(),
            rx: RxConfig::default(),
            mic: Self::mic_defaults(&InputSource::Silence, &OutputSink::Discard),
            echo_test_seed: None,
            voice_addr: None,
            control_timeout: crate::control::DEFAULT_TIMEOUT,
            control: None,
        }
    }
}

impl SessionConfig {
    /// The default clean-up for these media: echo cancellation when both are devices (a
    /// speaker can only echo into a microphone), gain control when the input is a
    /// device (a file is a recording at the level it was made; tests and benchmarks
    /// measure the chain on it unchanged).
    pub fn mic_defaults(input: &InputSource, output: &OutputSink) -> MicConfig {
        let mic = matches!(input, InputSource::Device(_));
        MicConfig {
            aec: mic && matches!(output, OutputSink::Device(_)),
            agc: mic,
        }
    }
}

/// A joined channel with audio flowing. Setters take effect from the next frame; they only
/// flip atomics or lock a pipeline briefly, so a UI can call them from its event loop.
/// Dropping the session stops it and leaves the channel.
#[derive(Debug)]
pub struct VoiceSession {
    shared: Arc<Shared>,
    control: ControlClient,
    port: u16,
    threads: Vec<JoinHandle<()>>,
    playout: Option<JoinHandle<Result<(), String>>>,
    left: bool,
    /// End-to-end encrypted channel: chat texts for the MLS owner thread.
    say: Option<SyncSender<String>>,
}

/// Starts one of the session's threads. All three carry the call's timing, so each
/// raises its own scheduling priority first ([`super::priority`]).
fn spawn<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, SessionError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let priority = crate::audio::priority::raise_current_thread();
            tracing::debug!(thread = name, ?priority, "thread started");
            f()
        })
        .map_err(SessionError::Thread)
}

/// What the session needs to know of the server before joining.
#[derive(Debug, Clone, Copy)]
struct ServerTraits {
    /// The key its system packets are signed with; `None` for the seed's server.
    key: Option<VerifyingKey>,
    /// JOIN names the X25519 key our BIND will offer (JOIN_KEX), so nobody who merely
    /// knows our uid can take our place between JOIN and BIND.
    join_kex: bool,
}

/// The server's signing key, when it has one: the pinned one when `control` has a trust
/// store (a changed key or a downgrade after pinning is an error). Servers without
/// SERVER_INFO (the seed's), never pinned, get `None`, and their system packets are taken
/// on trust. A server that takes signed requests gets JOIN_KEX from a client that signs,
/// whatever its feature bits say (SERVER_INFO is unauthenticated: a man in the middle
/// clearing the bit must not turn the protection off); a key-less client uses it when the
/// server says it serves it.
fn server_traits(control: &ControlClient) -> Result<ServerTraits, SessionError> {
    match control.server_info() {
        Ok(info) if info.features & features::SIGNED_SYSTEM_PACKETS != 0 => {
            let key = VerifyingKey::from_bytes(&info.public_key).map_err(|_| {
                SessionError::Control(ControlError::Protocol {
                    addr: control.addr().into(),
                    detail: "server's public key is invalid".into(),
                })
            })?;
            let signs =
                control.signer_uid().is_some() && info.features & features::SIGNED_REQUESTS != 0;
            Ok(ServerTraits {
                key: Some(key),
                join_kex: signs || info.features & features::JOIN_KEX != 0,
            })
        }
        Ok(_) => Ok(ServerTraits {
            key: None,
            join_kex: false,
        }),
        Err(e) if e.code() == Some(ErrorCode::NoImpl) => Ok(ServerTraits {
            key: None,
            join_kex: false,
        }),
        Err(e) => Err(e.into()),
    }
}

fn open_socket(to: SocketAddr) -> Result<UdpSocket, SessionError> {
    let local: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((local, 0)).map_err(SessionError::Socket)?;
    s.connect(to).map_err(SessionError::Socket)?;
    Ok(s)
}

impl VoiceSession {
    /// Joins `cfg.chid` as `cfg.uid` and starts audio. Returns the session and its event
    /// stream (bounded; drain it, or events are dropped and counted).
    pub fn start(mut cfg: SessionConfig) -> Result<(Self, Receiver<SessionEvent>), SessionError> {
        let control = match cfg.control.take() {
            Some(c) => c,
            None => ControlClient::new(&cfg.server)?,
        }
        .with_timeout(cfg.control_timeout);
        // Everything that can fail locally is checked before joining, so a bad WAV path or
        // device never leaves a ghost member in the channel.
        let tx = TxPipeline::new(cfg.tx.clone()).map_err(|e| SessionError::Audio(e.to_string()))?;
        let rx = RxPipeline::new(cfg.rx);
        let device_input = matches!(cfg.input, InputSource::Device(_));
        let mic = mic_path(cfg.mic, device_input, cfg.echo_test_seed)
            .map_err(|e| SessionError::Audio(e.to_string()))?;
        let sink = match &cfg.output {
            OutputSink::Discard => PlayoutSink::Discard,
            OutputSink::Wav { path, format } => PlayoutSink::Wav(
                WavSink::create(path, *format).map_err(|e| SessionError::Audio(e.to_string()))?,
            ),
            OutputSink::Device(name) => {
                let (stream, ring) = audio::device::open_output(name, DEVICE_RING)
                    .map_err(|e| SessionError::Audio(e.to_string()))?;
                PlayoutSink::Device { stream, ring }
            }
        };
        let input = match std::mem::replace(&mut cfg.input, InputSource::Silence) {
            InputSource::Silence => CaptureInput::Silence,
            InputSource::Samples(s) => CaptureInput::Samples(s),
            InputSource::Device(name) => {
                let (stream, ring) = audio::device::open_input(&name, DEVICE_RING)
                    .map_err(|e| SessionError::Audio(e.to_string()))?;
                CaptureInput::Device(stream, ring)
            }
        };
        let server = server_traits(&control)?;
        let (uid, chid) = (cfg.uid, cfg.chid);
        let mut tx = tx;
        let mut rx = rx;
        // An encrypted channel: the push connection first (the server admits only members
        // that have one), and no frame in or out without the group's keys.
        let e2ee = if control.channel_encrypted(chid)? {
            let chan = PushChannel::open(&control, chid)
                .map_err(|e| SessionError::Audio(format!("encrypted channel: {e}")))?;
            tx.set_protector(crate::audio::protect::Protector::new());
            rx.set_protector(crate::audio::protect::Protector::new());
            Some(chan)
        } else {
            None
        };
        // This session's X25519 secret exists before the JOIN, which names its public half.
        let kex_secret: [u8; 32] = rand::random();
        let port = if server.join_kex {
            control.join_kex(uid, uid, chid, link::client_kex_public(kex_secret))?
        } else {
            control.join(uid, uid, chid)?
        };
        let mut e2ee = e2ee;
        if let Some(chan) = e2ee.as_mut() {
            if let Err(e) = chan.start() {
                let _ = control.leave(uid, uid, chid);
                return Err(SessionError::Audio(format!("encrypted channel: {e}")));
            }
        }
        let started = Self::start_joined(
            cfg,
            control.clone(),
            server.key,
            kex_secret,
            port,
            (tx, rx),
            mic,
            input,
            sink,
            e2ee,
        );
        if started.is_err() {
            // Do not stay a member of a channel we cannot talk in.
            let _ = control.leave(uid, uid, chid);
        }
        started
    }

    #[allow(clippy::too_many_arguments)]
    fn start_joined(
        cfg: SessionConfig,
        control: ControlClient,
        key: Option<VerifyingKey>,
        kex_secret: [u8; 32],
        port: u16,
        (tx, rx): (TxPipeline, RxPipeline),
        (played, mic): (PlayedTap, MicPath),
        input: CaptureInput,
        sink: PlayoutSink,
        e2ee: Option<PushChannel>,
    ) -> Result<(Self, Receiver<SessionEvent>), SessionError> {
        let voice_addr = cfg
            .voice_addr
            .unwrap_or_else(|| SocketAddr::new(control.host(), port));
        let socket = open_socket(voice_addr)?;
        // Members already present; an older server without CHANNEL_INFO just has none.
        let members: Vec<u64> = control
            .channel_info(cfg.chid)
            .map(|i| {
                i.members
                    .into_iter()
                    .map(|(u, _)| u)
                    .filter(|&u| u != cfg.uid)
                    .collect()
            })
            .unwrap_or_default();
        let (events, receiver) = EventSink::new();
        events.emit(SessionEvent::Joined {
            uid: cfg.uid,
            chid: cfg.chid,
            voice_addr,
            members: members.clone(),
        });
        let (feed, drain, rx_control) = handoff();
        let mut shared = Shared::new(cfg.uid, cfg.chid, tx, rx_control, events);
        *shared.aec.get_mut() = cfg.mic.aec;
        *shared.agc.get_mut() = cfg.mic.agc;
        if let CaptureInput::Device(stream, _) = &input {
            shared.input_device = Some(stream.counters.clone());
        }
        if let PlayoutSink::Device { stream, .. } = &sink {
            shared.output_device = Some(stream.counters.clone());
        }
        let shared = Arc::new(shared);
        for m in members {
            shared.member_joined(m);
        }
        let link = Link::new(cfg.uid, cfg.chid, key, rand::random(), kex_secret);
        let mut session = VoiceSession {
            shared: shared.clone(),
            control,
            port,
            threads: Vec::new(),
            playout: None,
            left: false,
            say: None,
        };
        let mut epochs_rx = None;
        if let Some(chan) = e2ee {
            let (epochs, epochs_r) = sync_channel(16);
            let (say, says) = sync_channel(64);
            epochs_rx = Some(epochs_r);
            session.say = Some(say);
            let s = shared.clone();
            // Not a timing thread: plain spawn, no priority.
            let t = std::thread::Builder::new()
                .name("kv-e2ee".into())
                .spawn(move || run_e2ee(s, chan, epochs, says))
                .map_err(SessionError::Thread)?;
            session.threads.push(t);
        }
        let net_socket = socket.try_clone().map_err(SessionError::Socket)?;
        let s = shared.clone();
        session.threads.push(spawn("kv-net", move || {
            super::net::run(s, net_socket, link, feed)
        })?);
        let s = shared.clone();
        session.playout = Some(spawn("kv-playout", move || {
            playout::run(s, sink, rx, drain, played, epochs_rx)
        })?);
        let s = shared.clone();
        session.threads.push(spawn("kv-capture", move || {
            capture::run(s, socket, input, mic)
        })?);
        tracing::info!(uid = cfg.uid, chid = cfg.chid, %voice_addr, "voice session started");
        Ok((session, receiver))
    }

    /// True on an end-to-end encrypted channel.
    pub fn encrypted(&self) -> bool {
        self.say.is_some()
    }

    /// Says `text` in the channel's chat (an encrypted channel's MLS application message);
    /// it arrives back as [`SessionEvent::Message`] once the server ordered it.
    pub fn say(&self, text: &str) -> Result<(), SessionError> {
        let Some(say) = &self.say else {
            return Err(SessionError::Audio(
                "chat needs an end-to-end encrypted channel".into(),
            ));
        };
        say.try_send(text.to_owned())
            .map_err(|_| SessionError::Audio("chat queue full".into()))
    }

    /// Our uid.
    pub fn uid(&self) -> u64 {
        self.shared.uid
    }

    /// The channel.
    pub fn chid(&self) -> u64 {
        self.shared.chid
    }

    /// The channel's UDP port as the server announced it.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True once the session stopped on its own (kicked, shutdown, failure) or was left.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped()
    }

    /// Why the session stopped, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        *lock(&self.shared.end)
    }

    /// Mute: the microphone is replaced by silence.
    pub fn set_muted(&self, on: bool) {
        self.shared.muted.store(on, Ordering::Relaxed);
    }

    /// True when muted.
    pub fn muted(&self) -> bool {
        self.shared.muted.load(Ordering::Relaxed)
    }

    /// Deafen: nothing is played (the mixer keeps running, so statistics stay live).
    pub fn set_deafened(&self, on: bool) {
        self.shared.deafened.store(on, Ordering::Relaxed);
    }

    /// True when deafened.
    pub fn deafened(&self) -> bool {
        self.shared.deafened.load(Ordering::Relaxed)
    }

    /// Push-to-talk key state (effective in [`TransmitMode::PushToTalk`]).
    pub fn set_push_to_talk(&self, pressed: bool) {
        lock(&self.shared.tx).set_push_to_talk(pressed);
    }

    /// Continuous, voice-activated or push-to-talk.
    pub fn set_mode(&self, mode: TransmitMode) {
        lock(&self.shared.tx).set_mode(mode);
    }

    /// The transmit mode in effect.
    pub fn mode(&self) -> TransmitMode {
        lock(&self.shared.tx).config().mode
    }

    /// Noise suppression on or off.
    pub fn set_denoise(&self, on: bool) {
        lock(&self.shared.tx).set_denoise(on);
    }

    /// True when noise suppression is on.
    pub fn denoise(&self) -> bool {
        lock(&self.shared.tx).config().denoise
    }

    /// Echo cancellation on or off (from the next capture frame).
    pub fn set_aec(&self, on: bool) {
        self.shared.aec.store(on, Ordering::Relaxed);
    }

    /// True when echo cancellation is on.
    pub fn aec(&self) -> bool {
        self.shared.aec.load(Ordering::Relaxed)
    }

    /// Automatic gain control on or off (from the next capture frame).
    pub fn set_agc(&self, on: bool) {
        self.shared.agc.store(on, Ordering::Relaxed);
    }

    /// True when gain control is on.
    pub fn agc(&self) -> bool {
        self.shared.agc.load(Ordering::Relaxed)
    }

    /// Playback gain of one member (1.0 = unchanged, 0.0 = muted for us).
    pub fn set_peer_gain(&self, uid: u64, gain: f32) {
        self.shared.rx_control.send(RxCommand::SetGain(uid, gain));
    }

    /// Input level, VAD probability and whether we are transmitting (for a level meter).
    pub fn input_level(&self) -> InputLevel {
        lock(&self.shared.tx).level()
    }

    /// Per-member receive statistics (packets, loss, recovery, jitter, talking).
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        lock(&self.shared.rx_stats).clone()
    }

    /// Known members other than us.
    pub fn members(&self) -> Vec<u64> {
        lock(&self.shared.members).iter().copied().collect()
    }

    /// A full statistics snapshot (the same as the periodic [`SessionEvent::Stats`]).
    pub fn stats(&self) -> SessionStats {
        playout::snapshot(&self.shared)
    }

    /// Stops audio, finishes the output file and leaves the channel (unless the server
    /// already removed us). Returns the final statistics.
    pub fn leave(mut self) -> Result<SessionStats, SessionError> {
        let stats = self.stop()?;
        self.left = true;
        if matches!(
            self.end_reason(),
            None | Some(EndReason::Left) | Some(EndReason::Failed)
        ) {
            self.control
                .leave(self.shared.uid, self.shared.uid, self.shared.chid)?;
        }
        Ok(stats)
    }

    /// Stops audio and finishes the output file, but stays a member until [`Self::leave`]
    /// (or drop). Returns the final statistics, so they survive a LEAVE that fails because
    /// the server is gone. Calling it again returns fresh statistics.
    pub fn stop(&mut self) -> Result<SessionStats, SessionError> {
        self.stop_threads()?;
        Ok(playout::snapshot(&self.shared))
    }

    fn stop_threads(&mut self) -> Result<(), SessionError> {
        self.shared.end(EndReason::Left, None);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        match self.playout.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Err(SessionError::Audio(e)),
            Some(Err(_)) => Err(SessionError::Audio("playout thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for VoiceSession {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        let _ = self.stop_threads();
        if matches!(
            self.end_reason(),
            None | Some(EndReason::Left) | Some(EndReason::Failed)
        ) {
            let c = self.control.clone().with_timeout(Duration::from_secs(1));
            if let Err(e) = c.leave(self.shared.uid, self.shared.uid, self.shared.chid) {
                tracing::debug!(error = %e, "leave on drop failed");
            }
        }
    }
}

/// The MLS owner of an encrypted channel: handles the delivery service's frames, feeds each
/// new epoch's frame keys to the capture side (under the transmit pipeline's lock, which
/// the capture thread takes once per frame anyway) and to the playout thread (its own
/// channel, no lock), and reports epochs, safety codes and chat as session events.
fn run_e2ee(
    shared: Arc<Shared>,
    mut chan: PushChannel,
    epochs: SyncSender<kv_e2ee::EpochUpdate>,
    says: Receiver<String>,
) {
    while !shared.stopped() {
        while let Ok(text) = says.try_recv() {
            if let Err(e) = chan.say(&text) {
                tracing::warn!(error = %e, "chat message not sent");
            }
        }
        let events = match chan.poll(Duration::from_millis(50)) {
            Ok(ev) => ev,
            Err(e) => {
                if !shared.stopped() {
                    shared.end(
                        EndReason::Failed,
                        Some(SessionEvent::Failed {
                            reason: e.to_string(),
                        }),
                    );
                }
                break;
            }
        };
        for ev in events {
            match ev {
                CryptoEvent::Epoch {
                    epoch,
                    safety,
                    update,
                    members,
                } => {
                    if let Some(p) = lock(&shared.tx).protector_mut() {
                        p.apply(&update, std::time::Instant::now());
                    }
                    if epochs.try_send(update).is_err() {
                        tracing::warn!(epoch, "playout missed an epoch's keys");
                    }
                    shared.events.emit(SessionEvent::Epoch {
                        epoch,
                        safety_code: safety.map(|c| c.to_string()).unwrap_or_default(),
                        members,
                    });
                }
                CryptoEvent::Message { seq, sender, text } => shared
                    .events
                    .emit(SessionEvent::Message { seq, sender, text }),
                CryptoEvent::KeyChanged { uid } => {
                    shared.events.emit(SessionEvent::KeyChanged { uid })
                }
                CryptoEvent::ChatRefused { text } => {
                    shared.events.emit(SessionEvent::ChatRefused { text })
                }
                CryptoEvent::Removed => tracing::info!("removed from the channel's group"),
                CryptoEvent::Refused(why) => tracing::debug!(why, "e2ee message refused"),
            }
        }
    }
    chan.close();
}
