//! What a session tells its owner: a bounded channel of [`SessionEvent`]s.
//!
//! Events are dropped (and counted) when the owner falls behind, so a stalled UI can never
//! block the audio threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::audio::PeerStats;

use super::link::LinkStats;

/// Events queued before new ones are dropped.
pub const EVENT_CAPACITY: usize = 1024;

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

    /// Queues an event, dropping it when the owner is behind or gone.
    pub(crate) fn emit(&self, ev: SessionEvent) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
