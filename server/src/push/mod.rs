//! The push connection (PROTOCOL.md §1, "The push connection") and the delivery service of
//! end-to-end encrypted channels.
//!
//! [`delivery`] is the protocol logic, sans-IO; [`Hub`] puts it behind one mutex together
//! with each connection's outgoing queue; [`session`] is the tokio glue of one connection.
//! Control requests (JOIN, LEAVE, UNREGISTER, BAN, DELETE) tell the hub about membership
//! changes of encrypted channels.
//!
//! Queues are bounded in bytes and frames: a connection whose reader does not keep up is
//! dropped (and leaves its groups), never buffered for without end.

pub mod delivery;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kv_proto::push::PushMsg;
use tokio::sync::mpsc;

pub use delivery::{ConnId, Delivery, DeliveryStats, Limits, Outbox};

/// Most bytes queued for one connection before it is dropped as a slow reader.
pub const MAX_QUEUE_BYTES: usize = 4 << 20;

/// Most frames queued for one connection.
pub const MAX_QUEUE_FRAMES: usize = 4096;

/// One connection's outgoing queue.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<Arc<[u8]>>,
    bytes: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Inner {
    ds: Delivery,
    queues: HashMap<ConnId, Queue>,
}

/// What a new connection's session needs: its id, its queue and the queue's byte count.
#[derive(Debug)]
pub struct Opened {
    /// The connection's id.
    pub conn: ConnId,
    /// Frames to write, in order.
    pub rx: mpsc::Receiver<Arc<[u8]>>,
    /// Bytes in `rx` (the writer subtracts what it wrote).
    pub bytes: Arc<AtomicUsize>,
}

/// The delivery service and the connections' queues.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                ds: Delivery::new(limits),
                queues: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a push connection of `uid` (identity key `key`), within the limits.
    pub fn open(&self, uid: u64, key: [u8; 32]) -> Option<Opened> {
        let mut inner = self.lock();
        let conn = inner.ds.open(uid, key, Instant::now())?;
        let (tx, rx) = mpsc::channel(MAX_QUEUE_FRAMES);
        let bytes = Arc::new(AtomicUsize::new(0));
        inner.queues.insert(
            conn,
            Queue {
                tx,
                bytes: bytes.clone(),
            },
        );
        Some(Opened { conn, rx, bytes })
    }

    /// The connection ended.
    pub fn close(&self, conn: ConnId) {
        let mut inner = self.lock();
        inner.queues.remove(&conn);
        let out = inner.ds.close(conn, Instant::now());
        deliver(&mut inner, out);
    }

    /// A frame arrived on `conn`; `Err`: close it.
    pub fn receive(&self, conn: ConnId, msg: PushMsg) -> Result<(), delivery::Unexpected> {
        let mut inner = self.lock();
        let out = inner.ds.receive(conn, msg, Instant::now())?;
        deliver(&mut inner, out);
        Ok(())
    }

    /// Does `uid` have a push connection?
    pub fn connected(&self, uid: u64) -> bool {
        self.lock().ds.connected(uid)
    }

    /// `uid` was admitted to the encrypted channel `chid` (false: no room).
    pub fn admit(&self, chid: u64, uid: u64) -> bool {
        self.lock().ds.admit(chid, uid)
    }

    /// `uid` left `chid`.
    pub fn leave(&self, chid: u64, uid: u64) {
        let mut inner = self.lock();
        let out = inner.ds.leave(chid, uid, Instant::now());
        deliver(&mut inner, out);
    }

    /// `uid` left every channel.
    pub fn remove_user(&self, uid: u64) {
        let mut inner = self.lock();
        let out = inner.ds.remove_user(uid, Instant::now());
        deliver(&mut inner, out);
    }

    /// `chid` was deleted.
    pub fn delete_channel(&self, chid: u64) {
        self.lock().ds.delete_channel(chid);
    }

    /// Timers (committers that did not answer).
    pub fn tick(&self) {
        let mut inner = self.lock();
        let out = inner.ds.tick(Instant::now());
        deliver(&mut inner, out);
    }

    /// The delivery service's counters.
    pub fn stats(&self) -> DeliveryStats {
        self.lock().ds.stats()
    }

    /// Push connections open.
    pub fn connections(&self) -> usize {
        self.lock().ds.connections()
    }
}

/// Queues every frame; a connection over its queue's bounds is dropped (its queue closed,
/// so its writer ends), which may make more frames (its groups lose a member).
fn deliver(inner: &mut Inner, mut out: Outbox) {
    loop {
        let mut dropped = Vec::new();
        for (conn, frame) in out.drain(..) {
            let Some(q) = inner.queues.get(&conn) else {
                continue;
            };
            let len = frame.len();
            // Counted before it is queued, so the writer never subtracts first.
            let queued = q.bytes.fetch_add(len, Ordering::AcqRel) + len;
            if queued > MAX_QUEUE_BYTES || q.tx.try_send(frame).is_err() {
                dropped.push(conn);
                inner.queues.remove(&conn);
            }
        }
        if dropped.is_empty() {
            return;
        }
        for conn in dropped {
            tracing::debug!(conn, "push connection dropped: its reader is too slow");
            let more = inner.ds.close(conn, Instant::now());
            out.extend(more);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_does_not_keep_up_is_dropped_not_buffered() {
        let hub = Hub::default();
        let mut slow = hub.open(1, [1; 32]).unwrap();
        let fast = hub.open(2, [2; 32]).unwrap();
        assert_eq!(hub.connections(), 2);
        // Every ping queues a pong for its sender; nobody reads `slow`'s queue.
        let mut refused_at = None;
        for i in 0..MAX_QUEUE_FRAMES + 10 {
            if hub.receive(slow.conn, PushMsg::Ping).is_err() {
                refused_at = Some(i);
                break;
            }
        }
        // Dropped once its queue was full: the hub forgot it, the other stays.
        assert_eq!(refused_at, Some(MAX_QUEUE_FRAMES + 1));
        assert_eq!(hub.connections(), 1);
        assert!(!hub.connected(1) && hub.connected(2));
        // Its writer drains what was queued, then sees the queue closed.
        let mut n = 0;
        while slow.rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUE_FRAMES);
        assert!(slow.rx.is_closed());
        assert!(hub.receive(fast.conn, PushMsg::Ping).is_ok());
    }
}
