//! The event loop's one inbox: terminal events from the input thread and actions from
//! background work (network worker, voice session), through one bounded channel.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::tui::action::Action;

/// Messages queued before senders wait (input, worker) or drop (voice events).
pub const INBOX_CAPACITY: usize = 1024;

/// One message for the event loop.
#[derive(Debug)]
pub enum Inbox {
    /// A result of background work.
    Action(Action),
    /// A key press, resize or other terminal event.
    Term(crossterm::event::Event),
}

/// The sending side handed to background work.
#[derive(Debug, Clone)]
pub struct ActionSink(SyncSender<Inbox>);

/// A new inbox: the sink to clone into workers, and the receiver for the event loop.
pub fn inbox() -> (ActionSink, Receiver<Inbox>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(INBOX_CAPACITY);
    (ActionSink(tx), rx)
}

impl ActionSink {
    /// Queues an action, waiting while the inbox is full; false once the loop has ended.
    pub fn send(&self, a: Action) -> bool {
        self.0.send(Inbox::Action(a)).is_ok()
    }

    /// Queues an action unless the inbox is full (for frequent, replaceable updates such
    /// as levels and stats); false when dropped.
    pub fn try_send(&self, a: Action) -> bool {
        match self.0.try_send(Inbox::Action(a)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues a terminal event (input thread only).
    pub fn send_term(&self, ev: crossterm::event::Event) -> bool {
        self.0.send(Inbox::Term(ev)).is_ok()
    }
}
