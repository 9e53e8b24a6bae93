//! The real voice engine behind the TUI: [`crate::session::VoiceSession`] on cpal devices,
//! adapted to [`VoiceBackend`]. Session events become actions; a meter thread samples the
//! microphone level for the meter. Without a usable device the session still joins (silence
//! in, nothing out) and the status line says "no audio device".

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::audio::TransmitMode as AudioMode;
use crate::control::ControlClient;
use crate::session::{
    InputSource, OutputSink, SessionConfig, SessionError, SessionEvent, VoiceSession,
};
use crate::tui::action::{Action, VoiceControl};
use crate::tui::inbox::ActionSink;
use crate::tui::model::{AudioState, LinkStats, TransmitMode};
use crate::tui::runner::CONTROL_TIMEOUT;
use crate::tui::voice::{Devices, StartError, VoiceBackend, VoiceHandle};

/// How often the microphone meter is refreshed.
const METER_EVERY: Duration = Duration::from_millis(50);

/// Starts [`VoiceSession`]s on the chosen devices.
#[derive(Debug)]
pub struct SessionVoice {
    /// Voice threshold for the next session (the pipeline takes it at start).
    vad_threshold: Arc<AtomicU32>,
}

impl Default for SessionVoice {
    fn default() -> Self {
        SessionVoice {
            vad_threshold: Arc::new(AtomicU32::new(0.5f32.to_bits())),
        }
    }
}

/// Maps the TUI's mode to the audio engine's.
pub fn audio_mode(m: TransmitMode) -> AudioMode {
    match m {
        TransmitMode::VoiceActivated => AudioMode::VoiceActivated,
        TransmitMode::PushToTalk => AudioMode::PushToTalk,
        TransmitMode::Continuous => AudioMode::Continuous,
    }
}

/// Whether a failed start is worth a reconnect (network) rather than a message.
fn start_error(e: SessionError) -> StartError {
    let transient = matches!(&e, SessionError::Control(c) if c.is_transient());
    StartError {
        message: e.to_string(),
        transient,
    }
}

impl VoiceBackend for SessionVoice {
    fn start(
        &mut self,
        control: &ControlClient,
        uid: u64,
        chid: u64,
        devices: &Devices,
        out: ActionSink,
    ) -> Result<Box<dyn VoiceHandle>, StartError> {
        let input = devices.input.clone().unwrap_or_else(|| "default".into());
        let output = devices.output.clone().unwrap_or_else(|| "default".into());
        let mut cfg = SessionConfig::new(control.addr(), uid, chid);
        cfg.control_timeout = CONTROL_TIMEOUT;
        // The worker's client: it signs as us and carries the pinned server key.
        cfg.control = Some(control.clone());
        cfg.tx.vad_threshold = f32::from_bits(self.vad_threshold.load(Ordering::Relaxed));
        cfg.input = InputSource::Device(input.clone());
        cfg.output = OutputSink::Device(output.clone());
        let (session, events, audio) = match VoiceSession::start(cfg.clone()) {
            Ok((s, ev)) => (s, ev, AudioState::Ready { input, output }),
            Err(SessionError::Audio(why)) => {
                // No sound card (or the chosen device is gone): join anyway, so the
                // channel and its members still work, and say why there is no sound.
                tracing::warn!(%why, "no audio device; joining without sound");
                cfg.input = InputSource::Silence;
                cfg.output = OutputSink::Discard;
                let (s, ev) = VoiceSession::start(cfg).map_err(start_error)?;
                (s, ev, AudioState::NoDevice(why))
            }
            Err(e) => return Err(start_error(e)),
        };
        out.send(Action::Audio(audio));
        let session = Arc::new(session);
        let stop = Arc::new(AtomicBool::new(false));
        let forwarder = spawn_forwarder(events, uid, out.clone())?;
        let meter = spawn_meter(session.clone(), stop.clone(), out)?;
        Ok(Box::new(SessionHandle {
            session,
            stop,
            meter,
            forwarder,
            vad_threshold: self.vad_threshold.clone(),
        }))
    }

    fn list_devices(&self) -> (Vec<String>, Vec<String>) {
        match crate::audio::device::list_devices() {
            Ok(l) => (l.inputs, l.outputs),
            Err(e) => {
                tracing::warn!(error = %e, "listing devices failed");
                (vec![], vec![])
            }
        }
    }
}

/// A helper thread that would not start: not a network problem, so no reconnect.
fn thread_error(e: std::io::Error) -> StartError {
    StartError {
        message: format!("could not start a thread: {e}"),
        transient: false,
    }
}

fn spawn_forwarder(
    events: Receiver<SessionEvent>,
    me: u64,
    out: ActionSink,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("kv-tui-events".into())
        .spawn(move || {
            // Ends when the session's threads are gone (its senders dropped).
            for ev in events {
                for a in event_actions(ev, me) {
                    // Stats and talking are replaceable: never block on a full inbox.
                    out.try_send(a);
                }
            }
        })
        .map_err(thread_error)
}

fn spawn_meter(
    session: Arc<VoiceSession>,
    stop: Arc<AtomicBool>,
    out: ActionSink,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name("kv-tui-meter".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) && !session.is_stopped() {
                let l = session.input_level();
                out.try_send(Action::MicLevel {
                    dbfs: l.rms_dbfs,
                    vad: l.vad_probability,
                    sending: l.transmitting,
                });
                std::thread::sleep(METER_EVERY);
            }
        })
        .map_err(thread_error)
}

/// Translates one session event into what the app needs to know.
pub fn event_actions(ev: SessionEvent, me: u64) -> Vec<Action> {
    match ev {
        SessionEvent::Admitted { rtt_ms } => vec![Action::Link {
            rtt_ms: Some(rtt_ms.round() as u32),
            loss_pct: None,
        }],
        SessionEvent::PeerJoined { uid } => vec![Action::PeerJoined(uid)],
        SessionEvent::PeerLeft { uid } => vec![Action::PeerLeft(uid)],
        SessionEvent::TalkingStarted { uid } if uid != me => {
            vec![Action::Talking { uid, talking: true }]
        }
        SessionEvent::TalkingStopped { uid } if uid != me => vec![Action::Talking {
            uid,
            talking: false,
        }],
        SessionEvent::Stats(s) => {
            let mut out = Vec::with_capacity(s.peers.len() + 1);
            let (mut lost, mut expected) = (0u64, 0u64);
            for p in &s.peers {
                let recovered = p.recovered_redundancy + p.recovered_fec;
                let exp = p.received + p.lost;
                lost += p.lost;
                expected += exp;
                out.push(Action::PeerStats {
                    uid: p.uid,
                    stats: LinkStats {
                        received: p.received,
                        lost: p.concealed,
                        recovered,
                        loss_pct: percent(p.lost, exp),
                        jitter_ms: p.jitter_ms,
                        buffer_ms: p.buffer_ms,
                    },
                });
            }
            out.push(Action::Link {
                rtt_ms: s.link.srtt_ms.or(s.link.rtt_ms).map(|r| r.round() as u32),
                loss_pct: (expected > 0).then(|| percent(lost, expected)),
            });
            out
        }
        SessionEvent::Kicked => vec![Action::Left {
            reason: "you were removed from the channel".into(),
            rejoin: false,
        }],
        SessionEvent::Shutdown => vec![Action::Left {
            reason: "the server closed the channel".into(),
            rejoin: true,
        }],
        SessionEvent::Failed { reason } => vec![Action::Left {
            reason: format!("voice stopped: {reason}"),
            rejoin: false,
        }],
        _ => vec![],
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64) as f32
    }
}

/// A running session and its helper threads.
struct SessionHandle {
    session: Arc<VoiceSession>,
    /// Stops the meter thread (it holds the other reference to `session`).
    stop: Arc<AtomicBool>,
    meter: JoinHandle<()>,
    /// Ends by itself once the session's event senders are dropped.
    forwarder: JoinHandle<()>,
    vad_threshold: Arc<AtomicU32>,
}

impl VoiceHandle for SessionHandle {
    fn apply(&mut self, c: VoiceControl) {
        let s = &self.session;
        match c {
            VoiceControl::Mute(on) => s.set_muted(on),
            VoiceControl::Deafen(on) => s.set_deafened(on),
            VoiceControl::Mode(m) => s.set_mode(audio_mode(m)),
            VoiceControl::PushToTalk(on) => s.set_push_to_talk(on),
            VoiceControl::Denoise(on) => s.set_denoise(on),
            // The capture pipeline takes its threshold at start: remembered for the next.
            VoiceControl::VadThreshold(t) => {
                self.vad_threshold.store(t.to_bits(), Ordering::Relaxed)
            }
            VoiceControl::PeerGain { uid, gain } => s.set_peer_gain(uid, gain),
        }
    }

    fn stop(self: Box<Self>) {
        let SessionHandle {
            session,
            stop,
            meter,
            forwarder,
            ..
        } = *self;
        stop.store(true, Ordering::Relaxed);
        // The meter thread holds the other reference; join it first.
        let _ = meter.join();
        match Arc::try_unwrap(session) {
            Ok(s) => {
                if let Err(e) = s.leave() {
                    tracing::warn!(error = %e, "leaving the channel failed");
                }
            }
            Err(_) => tracing::warn!("session still shared at stop; dropped instead"),
        }
        let _ = forwarder.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::PeerStats;
    use crate::session::SessionStats;

    #[test]
    fn talking_of_others_only_and_session_ends() {
        let me = 1;
        assert_eq!(
            event_actions(SessionEvent::TalkingStarted { uid: 2 }, me),
            vec![Action::Talking {
                uid: 2,
                talking: true
            }]
        );
        // Our own talking shows through the meter, not the member list.
        assert!(event_actions(SessionEvent::TalkingStarted { uid: me }, me).is_empty());
        assert_eq!(
            event_actions(SessionEvent::Shutdown, me),
            vec![Action::Left {
                reason: "the server closed the channel".into(),
                rejoin: true
            }]
        );
        assert!(matches!(
            event_actions(SessionEvent::Kicked, me)[0],
            Action::Left { rejoin: false, .. }
        ));
    }

    #[test]
    fn stats_become_per_peer_quality_and_overall_loss() {
        let mut s = SessionStats::default();
        s.link.srtt_ms = Some(3.4);
        s.peers = vec![
            PeerStats {
                uid: 2,
                received: 90,
                lost: 10,
                recovered_redundancy: 6,
                recovered_fec: 2,
                concealed: 2,
                jitter_ms: 4.0,
                buffer_ms: 40.0,
                ..PeerStats::default()
            },
            PeerStats {
                uid: 3,
                received: 100,
                ..PeerStats::default()
            },
        ];
        let a = event_actions(SessionEvent::Stats(Box::new(s)), 1);
        assert_eq!(
            a[0],
            Action::PeerStats {
                uid: 2,
                stats: LinkStats {
                    received: 90,
                    lost: 2,
                    recovered: 8,
                    loss_pct: 10.0,
                    jitter_ms: 4.0,
                    buffer_ms: 40.0,
                }
            }
        );
        assert_eq!(
            a[2],
            Action::Link {
                rtt_ms: Some(3),
                loss_pct: Some(5.0)
            }
        );
    }
}
