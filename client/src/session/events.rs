//! What a session tells its owner: a bounded channel of [`SessionEvent`]s, and [`pump`],
//! the one loop that drains it (for `kv join`, `kv-tui` and the demo bot).
//!
//! Telemetry ([`SessionEvent::is_telemetry`]: stats, talking) is dropped (and counted) when
//! the owner falls behind, so a stalled UI never blocks the audio threads for it. Lifecycle
//! events (joined, peers, link lost/restored, kicked, shutdown, failure) are never dropped
//! for a slow owner: their sender waits for room. Only an owner that stops draining
//! altogether for [`LIFECYCLE_WAIT`] loses one (counted, and logged), so a dead owner cannot
//! wedge a session thread forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::audio::PeerStats;

use super::link::LinkStats;

/// Events queued before telemetry is dropped and lifecycle events wait.
pub const EVENT_CAPACITY: usize = 1024;
/// Longest wait for room for a lifecycle event: far beyond any live owner's pause.
pub const LIFECYCLE_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting lifecycle sender retries.
const RETRY: Duration = Duration::from_millis(1);

/// Something the UI or the `kv --json` printer should know.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// The server accepted the JOIN; the voice socket is open.
    Joined {
        /// Our uid.
        uid: u64,
        /// The channel.
        chid: u64,
        /// Where voice goes.
        voice_addr: std::net::SocketAddr,
        /// Members already in the channel (from CHANNEL_INFO, when the server has it).
        members: Vec<u64>,
    },
    /// The first keepalive was acknowledged: our packets are being relayed.
    Admitted {
        /// Round-trip time of that keepalive, milliseconds.
        rtt_ms: f32,
    },
    /// Input sample 0 was captured at this wall-clock time.
    CaptureStarted {
        /// Unix milliseconds (fractional).
        unix_ms: f64,
    },
    /// Output sample 0 was played (written) at this wall-clock time; the output is
    /// continuous from then on.
    RecordingStarted {
        /// Unix milliseconds (fractional).
        unix_ms: f64,
    },
    /// A member joined (verified JOIN, or first voice from an unannounced member).
    PeerJoined {
        /// Who.
        uid: u64,
    },
    /// A member left (verified LEAVE).
    PeerLeft {
        /// Who.
        uid: u64,
    },
    /// `uid` (possibly ourselves) started talking.
    TalkingStarted {
        /// Who.
        uid: u64,
    },
    /// `uid` (possibly ourselves) stopped talking.
    TalkingStopped {
        /// Who.
        uid: u64,
    },
    /// Periodic statistics (about once a second).
    Stats(Box<SessionStats>),
    /// No ACK for several keepalive periods: the server or the path to it is gone. The
    /// session keeps trying; [`SessionEvent::LinkRestored`] follows if it comes back.
    LinkLost,
    /// ACKs arrive again after [`SessionEvent::LinkLost`].
    LinkRestored,
    /// The input file ran out; silence follows.
    InputEnded,
    /// We were removed from the channel; the session has stopped.
    Kicked,
    /// The server closed the channel; the session has stopped.
    Shutdown,
    /// A thread hit an error it cannot recover from; the session has stopped.
    Failed {
        /// What happened.
        reason: String,
    },
    /// End-to-end encrypted channel: a new MLS epoch (a member joined or left), with new
    /// frame keys and a new safety code for members to compare.
    Epoch {
        /// The MLS epoch.
        epoch: u64,
        /// Its safety code (five groups of five digits).
        safety_code: String,
        /// The group's members (ourselves included).
        members: Vec<u64>,
    },
    /// A chat message, in the channel's one order.
    Message {
        /// Its position in the channel's order.
        seq: u64,
        /// Its author.
        sender: u64,
        /// Its text.
        text: String,
    },
    /// The server vouches for a key of `uid` other than the one first seen: flagged, and
    /// that member's leaf is refused.
    KeyChanged {
        /// Whose.
        uid: u64,
    },
    /// The server refused one of our chat messages (over its size or rate limit); it
    /// was not delivered.
    ChatRefused {
        /// The text.
        text: String,
    },
}

impl SessionEvent {
    /// High-rate and replaceable: dropped, not waited for, when the owner is behind.
    pub fn is_telemetry(&self) -> bool {
        matches!(
            self,
            SessionEvent::Stats(_)
                | SessionEvent::TalkingStarted { .. }
                | SessionEvent::TalkingStopped { .. }
        )
    }
}

/// A snapshot of the whole session.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Milliseconds since the session started.
    pub elapsed_ms: u64,
    /// Keepalive, RTT and forged-packet counters.
    pub link: LinkStats,
    /// Voice packets sent.
    pub packets_sent: u64,
    /// Voice packets received (before the jitter buffer).
    pub packets_received: u64,
    /// Voice packets ignored because their sender had just left (stragglers).
    pub packets_ignored: u64,
    /// Events dropped because the owner fell behind.
    pub events_dropped: u64,
    /// Output blocks produced late (clock fell behind real time), or dropped because the
    /// playback device stalled (took no audio for several of its periods).
    pub late_blocks: u64,
    /// Capture device: samples lost because the capture thread did not keep up.
    pub input_overruns: u64,
    /// Playback device: samples of silence played because no audio was ready.
    pub output_underruns: u64,
    /// Per-sender statistics from the receive pipeline.
    pub peers: Vec<PeerStats>,
    /// End-to-end encrypted channel: frames encrypted (ours) and decrypted or dropped
    /// (theirs), by reason.
    pub e2ee: Option<kv_e2ee::FrameStats>,
}

/// Sending side of the event channel, shared by the session's threads.
#[derive(Debug)]
pub(crate) struct EventSink {
    tx: SyncSender<SessionEvent>,
    dropped: AtomicU64,
}

impl EventSink {
    pub(crate) fn new() -> (Self, Receiver<SessionEvent>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(EVENT_CAPACITY);
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues an event. Telemetry is dropped when the owner is behind; a lifecycle event
    /// waits for room (up to [`LIFECYCLE_WAIT`]). Nothing waits once the owner is gone.
    pub(crate) fn emit(&self, ev: SessionEvent) {
        let lifecycle = !ev.is_telemetry();
        let mut ev = ev;
        let mut deadline = None;
        loop {
            match self.tx.try_send(ev) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    let until = *deadline.get_or_insert_with(|| Instant::now() + LIFECYCLE_WAIT);
                    if !lifecycle || Instant::now() >= until {
                        if lifecycle {
                            tracing::warn!(event = ?back, "session owner stopped draining events");
                        }
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    ev = back;
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What a [`pump`] callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Deliver what is already queued, then return.
    Stop,
}

/// The one event loop over a session's events: hands each to `on_event` in order and calls
/// `on_tick` after every event and at least every `tick` (for deadlines, stop flags, level
/// meters). Returns once either callback says [`Flow::Stop`] (after `on_event` has seen
/// what was already queued, so a final Kicked or stats line is never lost) or once the
/// session's threads are gone and the queue is empty.
pub fn pump(
    events: &Receiver<SessionEvent>,
    tick: Duration,
    mut on_tick: impl FnMut() -> Flow,
    mut on_event: impl FnMut(SessionEvent) -> Flow,
) {
    loop {
        if on_tick() == Flow::Stop {
            break;
        }
        match events.recv_timeout(tick) {
            Ok(ev) => {
                if on_event(ev) == Flow::Stop {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    while let Ok(ev) = events.try_recv() {
        if on_event(ev) == Flow::Stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_drops_when_full_but_a_kick_waits_for_room() {
        let (sink, rx) = EventSink::new();
        for _ in 0..EVENT_CAPACITY {
            sink.emit(SessionEvent::Stats(Box::default()));
        }
        sink.emit(SessionEvent::TalkingStarted { uid: 2 });
        assert_eq!(sink.dropped(), 1, "telemetry is dropped when full");
        let sink = std::sync::Arc::new(sink);
        let s = sink.clone();
        let kicker = std::thread::spawn(move || s.emit(SessionEvent::Kicked));
        std::thread::sleep(Duration::from_millis(20));
        let mut last = None;
        pump(
            &rx,
            Duration::from_millis(5),
            || Flow::Continue,
            |ev| {
                let kicked = matches!(ev, SessionEvent::Kicked);
                last = Some(ev);
                if kicked {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        );
        kicker.join().unwrap();
        assert!(matches!(last, Some(SessionEvent::Kicked)));
        assert_eq!(sink.dropped(), 1, "the kick was not dropped");
    }

    #[test]
    fn pump_delivers_what_is_queued_after_a_stop() {
        let (sink, rx) = EventSink::new();
        sink.emit(SessionEvent::InputEnded);
        sink.emit(SessionEvent::Shutdown);
        let mut seen = Vec::new();
        pump(
            &rx,
            Duration::from_millis(5),
            || Flow::Stop,
            |ev| {
                seen.push(format!("{ev:?}"));
                Flow::Continue
            },
        );
        assert_eq!(seen, ["InputEnded", "Shutdown"]);
    }
}
