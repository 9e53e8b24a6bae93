//! The receive hand-off between the socket thread and the playout thread. The playout
//! thread owns the [`RxPipeline`](crate::audio::RxPipeline) outright: voice payloads reach
//! it through a single-producer single-consumer ring (no lock per packet, nothing
//! allocated per packet: the ring's slots are made once), and the rare changes from
//! elsewhere (a member left, a member's volume) through a small bounded command queue.
//! What the pipeline knows is published back as a snapshot a few times a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use kv_proto::packet::DATA_SIZE;
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::audio::RxPipeline;

/// Packets the ring holds: the playout drains it every 5 ms, so this is ~1.3 s of 64
/// talkers at 50 packets/s each, far beyond what a healthy link queues.
pub const RING_PACKETS: usize = 4096;
/// Commands queued at most (they are a user's key presses and membership changes).
const COMMANDS: usize = 256;

/// One voice payload as the socket thread received it.
#[derive(Clone, Copy)]
pub(crate) struct RxPacket {
    uid: u64,
    at_ms: u64,
    data: [u8; DATA_SIZE],
}

/// Changes to the receive pipeline from outside the playout thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RxCommand {
    /// A member left: drop its stream.
    RemovePeer(u64),
    /// A member's playback gain.
    SetGain(u64, f32),
}

/// The socket thread's end of the ring.
pub(crate) struct PacketFeed {
    ring: HeapProd<RxPacket>,
}

/// The playout thread's end: the ring and the command queue.
pub(crate) struct PacketDrain {
    ring: HeapCons<RxPacket>,
    commands: Receiver<RxCommand>,
}

/// Anyone's handle for sending commands (kept in `Shared`).
#[derive(Debug)]
pub(crate) struct RxControl {
    commands: SyncSender<RxCommand>,
    /// Packets dropped because the ring was full, and commands because the queue was.
    pub overflows: AtomicU64,
}

/// Makes the three ends.
pub(crate) fn handoff() -> (PacketFeed, PacketDrain, RxControl) {
    let (ring_prod, ring_cons) = HeapRb::<RxPacket>::new(RING_PACKETS).split();
    let (tx, rx) = std::sync::mpsc::sync_channel(COMMANDS);
    (
        PacketFeed { ring: ring_prod },
        PacketDrain {
            ring: ring_cons,
            commands: rx,
        },
        RxControl {
            commands: tx,
            overflows: AtomicU64::new(0),
        },
    )
}

impl PacketFeed {
    /// Queues a payload (the 504 bytes after the uid) from `uid`, received at `at_ms`.
    /// False when the ring is full (the playout thread is stalled): the packet is dropped.
    pub fn push(&mut self, uid: u64, payload: &[u8], at_ms: u64) -> bool {
        let mut data = [0u8; DATA_SIZE];
        let n = payload.len().min(DATA_SIZE);
        data[..n].copy_from_slice(&payload[..n]);
        self.ring.try_push(RxPacket { uid, at_ms, data }).is_ok()
    }
}

impl PacketDrain {
    /// Applies queued commands and hands every queued packet to `rx`. Bounded by the
    /// ring's and the queue's sizes.
    pub fn drain_into(&mut self, rx: &mut RxPipeline) {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                RxCommand::RemovePeer(uid) => rx.remove_peer(uid),
                RxCommand::SetGain(uid, g) => rx.set_gain(uid, g),
            }
        }
        while let Some(p) = self.ring.try_pop() {
            rx.push_packet(p.uid, &p.data, p.at_ms);
        }
    }
}

impl RxControl {
    /// Sends a command; a full queue drops it and counts (the user can press again; a
    /// departed member's stream is forgotten on its own after a few seconds).
    pub fn send(&self, c: RxCommand) {
        match self.commands.try_send(c) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::RxConfig;

    #[test]
    fn packets_and_commands_reach_the_pipeline_in_order() {
        let (mut feed, mut drain, control) = handoff();
        let mut rx = RxPipeline::new(RxConfig::default());
        // A malformed payload creates the peer and is counted: it went through.
        assert!(feed.push(7, &[0xEE; DATA_SIZE], 0));
        control.send(RxCommand::SetGain(7, 9.0));
        drain.drain_into(&mut rx);
        let s = rx.peer_stats();
        assert_eq!((s[0].uid, s[0].malformed), (7, 1));
        control.send(RxCommand::SetGain(7, 2.0));
        control.send(RxCommand::RemovePeer(7));
        drain.drain_into(&mut rx);
        assert!(rx.peer_stats().is_empty());
        // A full ring refuses instead of blocking.
        for _ in 0..RING_PACKETS {
            assert!(feed.push(1, &[0; DATA_SIZE], 0));
        }
        assert!(!feed.push(1, &[0; DATA_SIZE], 0));
    }
}
