//! Batched floor: `recvmmsg` up to 32 datagrams, then `sendmmsg` carrying every copy to
//! every other peer, up to 256 messages per call (so one call unless the batch fans out
//! wider). No protocol logic, no allocation per packet: the least a relay can do on this
//! kernel, so KV's cost is reported as a ratio to it.

use std::os::fd::AsRawFd;

use super::{is_voice, Group, Relay};
use crate::sys::{RecvBatch, SendStorage};

/// The floor relay's reusable buffers.
#[derive(Debug, Default)]
pub struct Floor {
    recv: RecvBatch,
    send: SendStorage,
}

impl Floor {
    /// A relay with its buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Relay for Floor {
    fn on_readable(&mut self, g: &mut Group) {
        let fd = g.socket.as_raw_fd();
        loop {
            let n = match self.recv.recv(fd) {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => return,
            };
            // Learn first (it may grow the peer list), then borrow everything for the send.
            let mut senders = [usize::MAX; crate::sys::RECV_BATCH];
            for (i, s) in senders.iter_mut().enumerate().take(n) {
                *s = g.learn(self.recv.from(i)).unwrap_or(usize::MAX);
            }
            let mut batch = self.send.batch();
            for (i, &me) in senders.iter().enumerate().take(n) {
                let data = self.recv.data(i);
                if me == usize::MAX || !is_voice(data) {
                    continue;
                }
                for (j, p) in g.peers.iter().enumerate() {
                    if j != me {
                        let _ = batch.push(fd, data, *p);
                    }
                }
            }
            let _ = batch.flush(fd);
            if n < crate::sys::RECV_BATCH {
                return;
            }
        }
    }
}
