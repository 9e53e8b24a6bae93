//! The event loop's one inbox, in two lanes:
//!
//! - a bounded queue for everything that must arrive: terminal input and lifecycle events
//!   (connected, joined, left, kicked, shut down, errors…). Senders wait while it is full;
//!   nothing in it is ever dropped.
//! - a slot per kind of high-rate telemetry (mic level, link, per-peer stats and talking),
//!   where a new value replaces the one not yet shown: a slow screen skips values, never
//!   lifecycle events, and never blocks the voice session.
//!
//! [`InboxReceiver::batch`] hands the loop the queued messages, then the newest telemetry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::tui::action::Event;

/// Lossless messages queued before senders wait.
pub const INBOX_CAPACITY: usize = 1024;
/// Most lossless messages handed over per batch, so a burst still lets the screen redraw.
const MAX_BATCH: usize = 256;
/// Peers whose stats or talking state are kept at most (a channel's members are bounded
/// too; past this, the oldest peer's values give way).
const MAX_PEERS: usize = 256;

/// One lossless message for the event loop.
#[derive(Debug)]
pub enum Message {
    /// A result of background work.
    Event(Event),
    /// A key press, resize or other terminal event.
    Term(crossterm::event::Event),
}

/// What travels in the queue: a message, or a nudge that telemetry is waiting.
#[derive(Debug)]
enum Queued {
    Message(Message),
    Telemetry,
}

/// The newest value of each kind of telemetry, not yet taken by the loop.
#[derive(Debug, Default)]
struct Slots {
    mic: Option<Event>,
    link: Option<Event>,
    peer_stats: BTreeMap<u64, Event>,
    talking: BTreeMap<u64, Event>,
}

impl Slots {
    fn put(&mut self, e: Event) {
        fn bounded(map: &mut BTreeMap<u64, Event>, uid: u64, e: Event) {
            if !map.contains_key(&uid) && map.len() >= MAX_PEERS {
                map.pop_first();
            }
            map.insert(uid, e);
        }
        match e {
            Event::MicLevel { .. } => self.mic = Some(e),
            Event::Link { .. } => self.link = Some(e),
            Event::PeerStats { uid, .. } => bounded(&mut self.peer_stats, uid, e),
            Event::Talking { uid, .. } => bounded(&mut self.talking, uid, e),
            // Not telemetry: callers route these through the queue (see `is_telemetry`).
            _ => {}
        }
    }

    fn take(&mut self) -> Vec<Event> {
        let s = std::mem::take(self);
        s.talking
            .into_values()
            .chain(s.peer_stats.into_values())
            .chain(s.link)
            .chain(s.mic)
            .collect()
    }
}

/// Whether an event is replaceable telemetry (newest wins) rather than a lifecycle event.
pub fn is_telemetry(e: &Event) -> bool {
    matches!(
        e,
        Event::MicLevel { .. }
            | Event::Link { .. }
            | Event::PeerStats { .. }
            | Event::Talking { .. }
    )
}

#[derive(Debug, Default)]
struct Telemetry {
    slots: Mutex<Slots>,
    /// A nudge is queued (or being handled): at most one at a time.
    nudged: AtomicBool,
}

impl Telemetry {
    /// Poison-tolerant: a panicked sender must not stop the screen.
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side handed to background work and the input thread.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: SyncSender<Queued>,
    telemetry: Arc<Telemetry>,
}

/// The event loop's side.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: Receiver<Queued>,
    telemetry: Arc<Telemetry>,
}

/// A new inbox: the sink to clone into workers, and the receiver for the event loop.
pub fn inbox() -> (EventSink, InboxReceiver) {
    let (tx, rx) = std::sync::mpsc::sync_channel(INBOX_CAPACITY);
    let telemetry = Arc::new(Telemetry::default());
    (
        EventSink {
            tx,
            telemetry: telemetry.clone(),
        },
        InboxReceiver { rx, telemetry },
    )
}

impl EventSink {
    /// Delivers an event: telemetry into its slot (replacing an older value, never
    /// waiting), anything else into the queue (waiting while it is full). False once the
    /// loop has ended.
    pub fn send(&self, e: Event) -> bool {
        if is_telemetry(&e) {
            self.telemetry.slots().put(e);
            if !self.telemetry.nudged.swap(true, Ordering::AcqRel) {
                // A full queue is being drained, and the loop takes the slots after every
                // batch anyway: a lost nudge loses nothing.
                let _ = self.tx.try_send(Queued::Telemetry);
            }
            return true;
        }
        self.tx.send(Queued::Message(Message::Event(e))).is_ok()
    }

    /// Queues a terminal event (input thread only).
    pub fn send_term(&self, ev: crossterm::event::Event) -> bool {
        self.tx.send(Queued::Message(Message::Term(ev))).is_ok()
    }
}

impl InboxReceiver {
    /// Waits up to `timeout` for something, then returns what is queued (in order, at most
    /// [`MAX_BATCH`]) followed by the newest telemetry as events. `None` once every sender
    /// is gone and nothing is left.
    pub fn batch(&self, timeout: Duration) -> Option<Vec<Message>> {
        let mut out = Vec::new();
        let mut next = match self.rx.recv_timeout(timeout) {
            Ok(q) => Some(q),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let left = self.take_telemetry();
                return (!left.is_empty()).then_some(left);
            }
        };
        let mut handled = 0;
        while let Some(q) = next.take() {
            if let Queued::Message(m) = q {
                out.push(m);
            }
            handled += 1;
            if handled < MAX_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        out.extend(self.take_telemetry());
        Some(out)
    }

    fn take_telemetry(&self) -> Vec<Message> {
        // Clear the flag first: a value put after this point sends a new nudge.
        self.telemetry.nudged.store(false, Ordering::Release);
        self.telemetry
            .slots()
            .take()
            .into_iter()
            .map(Message::Event)
            .collect()
    }

    /// Keeps receiving (and discarding) on a thread of its own, so background work still
    /// blocked on a full queue can finish while the program quits.
    pub fn drain_in_background(self) {
        std::thread::spawn(move || for _ in self.rx {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mic(dbfs: f32) -> Event {
        Event::MicLevel {
            dbfs,
            vad: 0.0,
            sending: false,
        }
    }

    fn events(b: Vec<Message>) -> Vec<Event> {
        b.into_iter()
            .filter_map(|m| match m {
                Message::Event(e) => Some(e),
                Message::Term(_) => None,
            })
            .collect()
    }

    #[test]
    fn telemetry_never_fills_the_queue_and_the_newest_wins() {
        let (sink, rx) = inbox();
        for i in 0..(INBOX_CAPACITY * 10) {
            assert!(sink.send(mic(-(i as f32))));
        }
        sink.send(Event::Info("after".into()));
        let got = events(rx.batch(Duration::ZERO).unwrap());
        assert_eq!(
            got,
            vec![
                Event::Info("after".into()),
                mic(-((INBOX_CAPACITY * 10 - 1) as f32))
            ]
        );
        assert!(events(rx.batch(Duration::ZERO).unwrap()).is_empty());
    }

    #[test]
    fn lifecycle_events_wait_for_room_instead_of_being_dropped() {
        let (sink, rx) = inbox();
        let n = INBOX_CAPACITY + 100;
        let t = std::thread::spawn(move || {
            for i in 0..n {
                assert!(sink.send(Event::Info(i.to_string())));
            }
        });
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(events(rx.batch(Duration::from_secs(5)).unwrap()));
        }
        t.join().unwrap();
        let want: Vec<Event> = (0..n).map(|i| Event::Info(i.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn per_peer_slots_are_bounded() {
        let (sink, rx) = inbox();
        for uid in 0..(MAX_PEERS as u64 + 10) {
            sink.send(Event::Talking { uid, talking: true });
        }
        assert_eq!(events(rx.batch(Duration::ZERO).unwrap()).len(), MAX_PEERS);
    }
}
