//! The tokio glue of one channel: owns its UDP socket and its [`ChannelRelay`], and feeds
//! the relay datagrams, membership commands and timer ticks, one at a time.
//!
//! Membership changes arrive through a bounded command queue, so the relay state needs no
//! lock. Commands are taken before datagrams (`biased` select), so a user admitted by a TCP
//! JOIN is a member before its first datagram, which it sends only after the JOIN reply.
//! Output is sent with `try_send_to`: a full socket buffer drops voice rather than queueing
//! it. Batching (recvmmsg/sendmmsg) would replace the receive call and the [`SocketSink`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kv_proto::PACKET_SIZE;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::relay::{ChannelRelay, JoinError, Transmit};
use crate::shutdown::Shutdown;

/// Requests from the control plane to a channel task.
#[derive(Debug)]
pub enum ChannelCommand {
    /// Admit a user; answers whether the channel had room.
    Join {
        /// The user.
        uid: u64,
        /// Result back to the TCP handler.
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    /// Remove a user; answers whether it was a member.
    Leave {
        /// The user.
        uid: u64,
        /// Send the user itself a LEAVE (it was kicked or unregistered).
        notify_leaver: bool,
        /// Result back to the TCP handler.
        reply: oneshot::Sender<bool>,
    },
    /// List the members in join order.
    Members {
        /// Result back to the TCP handler.
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// The channel was deleted: SHUTDOWN to members, then stop.
    Close,
}

/// Capacity of a channel's command queue; control requests wait when it is full.
pub const COMMAND_QUEUE: usize = 64;

/// Sends the relay's output on the channel's socket, counting what could not be sent.
#[derive(Debug)]
pub struct SocketSink<'a> {
    /// The channel's socket.
    socket: &'a UdpSocket,
    /// Datagrams dropped because the socket would block or failed.
    pub dropped: u64,
}

impl Transmit for SocketSink<'_> {
    fn send(&mut self, dst: SocketAddr, packet: &[u8]) {
        if self.socket.try_send_to(packet, dst).is_err() {
            self.dropped += 1;
        }
    }
}

/// How often silent members are looked for: a tenth of the timeout, within [20 ms, 1 s].
fn sweep_interval(peer_timeout: Duration) -> Duration {
    (peer_timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Runs one channel until it is deleted or the server stops.
pub async fn run(
    socket: UdpSocket,
    mut relay: ChannelRelay,
    peer_timeout: Duration,
    mut commands: mpsc::Receiver<ChannelCommand>,
    mut shutdown: Shutdown,
) {
    let chid = relay.chid();
    // One byte more than a packet, so an oversized datagram shows up as too long instead of
    // being silently truncated to a valid size.
    let mut buf = [0u8; PACKET_SIZE + 1];
    let mut sweep = tokio::time::interval(sweep_interval(peer_timeout));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sink = SocketSink {
        socket: &socket,
        dropped: 0,
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => {
                relay.shutdown(Instant::now(), &mut sink);
                break;
            }
            cmd = commands.recv() => match cmd {
                Some(ChannelCommand::Join { uid, reply }) => {
                    let _ = reply.send(relay.join(Instant::now(), uid));
                }
                Some(ChannelCommand::Leave { uid, notify_leaver, reply }) => {
                    let _ = reply.send(relay.leave(Instant::now(), uid, notify_leaver, &mut sink));
                }
                Some(ChannelCommand::Members { reply }) => {
                    let _ = reply.send(relay.members().collect());
                }
                Some(ChannelCommand::Close) | None => {
                    relay.shutdown(Instant::now(), &mut sink);
                    break;
                }
            },
            _ = sweep.tick() => relay.handle_timeout(Instant::now(), &mut sink),
            res = socket.recv_from(&mut buf) => match res {
                Ok((n, src)) => relay.handle_datagram(Instant::now(), src, &buf[..n], &mut sink),
                // ICMP errors and the like; the socket stays usable.
                Err(e) => tracing::trace!(chid, error = %e, "recv_from failed"),
            },
        }
    }
    tracing::debug!(chid, stats = ?relay.stats(), send_dropped = sink.dropped, "channel stopped");
}
