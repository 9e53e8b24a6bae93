//! The socket thread: receives datagrams, hands voice to the playout thread's ring, sends
//! keepalives and acts on verified system packets. All protocol decisions are in [`super::link::Link`].

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kv_proto::PACKET_SIZE;

use super::events::SessionEvent;
use super::handoff::PacketFeed;
use super::link::{Incoming, Link};
use super::shared::{lock, EndReason, Shared};

/// Longest wait in `recv`, so stop requests are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(50);

pub(crate) fn run(shared: Arc<Shared>, socket: UdpSocket, mut link: Link, mut feed: PacketFeed) {
    // One byte more than a packet, so an oversized datagram is seen as such, not cut.
    let mut buf = [0u8; PACKET_SIZE + 1];
    let mut out = [0u8; PACKET_SIZE];
    let mut refused = 0u64;
    let mut lost = false;
    // The socket's current read timeout: set again only when it changes, not per packet.
    let mut read_timeout = None;
    while !shared.stopped() {
        *lock(&shared.link) = link.stats();
        let now_us = shared.clock.now_us();
        if link.is_lost(now_us) != lost {
            lost = !lost;
            tracing::warn!(lost, "voice link state changed");
            shared.events.emit(if lost {
                SessionEvent::LinkLost
            } else {
                SessionEvent::LinkRestored
            });
        }
        if link.poll_keepalive(now_us, &mut out) {
            if let Err(e) = socket.send(&out) {
                tracing::debug!(error = %e, "keepalive send failed");
            }
        }
        // Whole milliseconds (rounded down, so never past the next timeout): while packets
        // flow the wait stays at MAX_WAIT and the socket option is left alone.
        let wait = Duration::from_micros(link.next_timeout_us().saturating_sub(now_us))
            .clamp(Duration::from_millis(1), MAX_WAIT);
        let wait = Duration::from_millis(wait.as_millis() as u64);
        if read_timeout != Some(wait) {
            if let Err(e) = socket.set_read_timeout(Some(wait)) {
                shared.end(
                    EndReason::Failed,
                    Some(SessionEvent::Failed {
                        reason: format!("voice socket: {e}"),
                    }),
                );
                break;
            }
            read_timeout = Some(wait);
        }
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            // ICMP port unreachable from an earlier send: the channel is not (yet) there.
            // Keep trying; keepalives tell when it answers again.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused += 1;
                if refused == 1 {
                    tracing::warn!("voice port refused; the channel may be gone");
                }
                std::thread::sleep(MAX_WAIT);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "voice socket receive failed");
                std::thread::sleep(MAX_WAIT);
                continue;
            }
        };
        let now = std::time::Instant::now();
        let now_ms = shared.clock.ms(now);
        match link.handle(shared.clock.us(now), &buf[..n]) {
            Incoming::Voice { uid, data } => {
                shared.packets_received.fetch_add(1, Ordering::Relaxed);
                if shared.voice_from(uid) && !feed.push(uid, data, now_ms) {
                    shared.rx_control.overflows.fetch_add(1, Ordering::Relaxed);
                }
            }
            Incoming::Admitted { rtt_ms } => {
                tracing::info!(rtt_ms, "admitted to channel");
                shared.events.emit(SessionEvent::Admitted { rtt_ms });
            }
            // A CHALLENGE makes a BIND due: the next turn of the loop sends it.
            Incoming::Ack | Incoming::Challenged | Incoming::Ignored => {}
            Incoming::PeerJoined(uid) => shared.member_joined(uid),
            Incoming::PeerLeft(uid) => shared.member_left(uid),
            Incoming::Kicked => shared.end(EndReason::Kicked, Some(SessionEvent::Kicked)),
            Incoming::Shutdown => shared.end(EndReason::Shutdown, Some(SessionEvent::Shutdown)),
        }
    }
    *lock(&shared.link) = link.stats();
}
