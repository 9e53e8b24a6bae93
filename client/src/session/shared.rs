//! State shared by a session's threads and its owner.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::audio::device::DeviceCounters;
use crate::audio::{PeerStats, TxPipeline};

use super::clock::SessionClock;
use super::events::{EventSink, SessionEvent};
use super::handoff::{RxCommand, RxControl};
use super::link::LinkStats;

/// How long voice from a member who left is ignored.
const DEPARTED_MEMORY: Duration = Duration::from_secs(2);
/// Departed members remembered at most (bounded like every list).
const MAX_DEPARTED: usize = 64;

/// Why a session stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The owner asked (leave or drop).
    Left,
    /// The server removed us.
    Kicked,
    /// The server closed the channel.
    Shutdown,
    /// A thread failed.
    Failed,
}

/// Everything the threads share. The pipelines sit behind std mutexes (not tokio's: no
/// `.await` anywhere): each is locked for one frame of work by its thread and briefly by
/// the owner's setters, never across a socket wait or a sleep.
#[derive(Debug)]
pub(crate) struct Shared {
    pub uid: u64,
    pub chid: u64,
    pub clock: SessionClock,
    /// Set once to stop every thread.
    pub stop: AtomicBool,
    /// Capture is replaced by silence (the pipeline keeps running so spurts end cleanly).
    pub muted: AtomicBool,
    /// Output is replaced by silence (the mixer keeps running so buffers stay fresh).
    pub deafened: AtomicBool,
    /// Echo cancellation on (read by the capture thread every frame).
    pub aec: AtomicBool,
    /// Gain control on (likewise).
    pub agc: AtomicBool,
    /// Samples queued for the playback device, published by the playout thread: the echo
    /// canceller's delay hint (0 for a file or no output).
    pub output_queued: AtomicUsize,
    pub tx: Mutex<TxPipeline>,
    /// Changes for the receive pipeline, which the playout thread owns.
    pub rx_control: RxControl,
    /// The receive pipeline's statistics, published by the playout thread every 100 ms.
    pub rx_stats: Mutex<Vec<PeerStats>>,
    pub link: Mutex<LinkStats>,
    /// Known members other than us.
    pub members: Mutex<BTreeSet<u64>>,
    /// Members who left recently, with when: a voice packet still in flight from them must
    /// not bring them back as a ghost member.
    pub departed: Mutex<Vec<(u64, Instant)>>,
    pub end: Mutex<Option<EndReason>>,
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    /// Voice from members who just left, ignored.
    pub packets_ignored: AtomicU64,
    pub late_blocks: AtomicU64,
    pub events: EventSink,
    /// The capture device's callback counters (overruns), when capturing from a device.
    pub input_device: Option<Arc<DeviceCounters>>,
    /// The playback device's callback counters (underruns), when playing to a device.
    pub output_device: Option<Arc<DeviceCounters>>,
    /// End-to-end encrypted channel: the receive side's frame counters, published by the
    /// playout thread with `rx_stats`.
    pub e2ee_rx: Mutex<Option<kv_e2ee::FrameStats>>,
}

/// Locks a mutex, taking over the data of a poisoned one: a panicked thread must not take
/// the rest of the session (and the UI) down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(
        uid: u64,
        chid: u64,
        tx: TxPipeline,
        rx_control: RxControl,
        events: EventSink,
    ) -> Self {
        Self {
            uid,
            chid,
            clock: SessionClock::start(),
            stop: AtomicBool::new(false),
            muted: AtomicBool::new(false),
            deafened: AtomicBool::new(false),
            aec: AtomicBool::new(false),
            agc: AtomicBool::new(false),
            output_queued: AtomicUsize::new(0),
            tx: Mutex::new(tx),
            rx_control,
            rx_stats: Mutex::new(Vec::new()),
            link: Mutex::new(LinkStats::default()),
            members: Mutex::new(BTreeSet::new()),
            departed: Mutex::new(Vec::new()),
            end: Mutex::new(None),
            packets_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            packets_ignored: AtomicU64::new(0),
            late_blocks: AtomicU64::new(0),
            events,
            input_device: None,
            output_device: None,
            e2ee_rx: Mutex::new(None),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the session for `reason` (the first reason wins) and tells the owner.
    pub fn end(&self, reason: EndReason, event: Option<SessionEvent>) {
        let mut end = lock(&self.end);
        if end.is_none() {
            *end = Some(reason);
            if let Some(ev) = event {
                self.events.emit(ev);
            }
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Adds `uid` to the members, announcing it when new (a verified JOIN).
    pub fn member_joined(&self, uid: u64) {
        lock(&self.departed).retain(|&(u, _)| u != uid);
        if uid != self.uid && lock(&self.members).insert(uid) {
            self.events.emit(SessionEvent::PeerJoined { uid });
        }
    }

    /// A voice packet from `uid` arrived: true when it should be played. An unknown sender
    /// becomes a member (we may have joined after it, or missed its JOIN), unless it just
    /// left.
    pub fn voice_from(&self, uid: u64) -> bool {
        if lock(&self.members).contains(&uid) {
            return true;
        }
        let mut departed = lock(&self.departed);
        departed.retain(|&(_, at)| at.elapsed() < DEPARTED_MEMORY);
        if departed.iter().any(|&(u, _)| u == uid) {
            self.packets_ignored.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        drop(departed);
        self.member_joined(uid);
        true
    }

    /// Removes `uid` from the members and the mixer, announcing it when known.
    pub fn member_left(&self, uid: u64) {
        {
            let mut departed = lock(&self.departed);
            if departed.len() >= MAX_DEPARTED {
                departed.remove(0);
            }
            departed.push((uid, Instant::now()));
        }
        let known = lock(&self.members).remove(&uid);
        self.rx_control.send(RxCommand::RemovePeer(uid));
        if known {
            self.events.emit(SessionEvent::PeerLeft { uid });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::TxConfig;

    fn shared() -> (Shared, std::sync::mpsc::Receiver<SessionEvent>) {
        let (events, rx) = EventSink::new();
        let tx = TxPipeline::new(TxConfig::default()).unwrap();
        (
            Shared::new(1, 9, tx, super::super::handoff::handoff().2, events),
            rx,
        )
    }

    #[test]
    fn unknown_voice_joins_but_a_departed_member_stays_gone() {
        let (s, ev) = shared();
        assert!(s.voice_from(5));
        assert!(matches!(
            ev.try_recv(),
            Ok(SessionEvent::PeerJoined { uid: 5 })
        ));
        assert!(s.voice_from(5));
        assert!(ev.try_recv().is_err(), "announced once");
        s.member_left(5);
        assert!(matches!(
            ev.try_recv(),
            Ok(SessionEvent::PeerLeft { uid: 5 })
        ));
        // A straggling packet does not resurrect it…
        assert!(!s.voice_from(5));
        assert!(ev.try_recv().is_err());
        assert_eq!(s.packets_ignored.load(Ordering::Relaxed), 1);
        // …but a verified JOIN does.
        s.member_joined(5);
        assert!(s.voice_from(5));
        assert!(matches!(
            ev.try_recv(),
            Ok(SessionEvent::PeerJoined { uid: 5 })
        ));
    }

    #[test]
    fn first_end_reason_wins_and_stops() {
        let (s, ev) = shared();
        s.end(EndReason::Kicked, Some(SessionEvent::Kicked));
        s.end(EndReason::Shutdown, Some(SessionEvent::Shutdown));
        assert!(s.stopped());
        assert_eq!(*lock(&s.end), Some(EndReason::Kicked));
        assert!(matches!(ev.try_recv(), Ok(SessionEvent::Kicked)));
        assert!(ev.try_recv().is_err());
    }

    #[test]
    fn own_uid_is_never_a_member() {
        let (s, ev) = shared();
        s.member_joined(1);
        assert!(lock(&s.members).is_empty());
        assert!(ev.try_recv().is_err());
    }
}
