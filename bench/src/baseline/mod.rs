//! Baseline relays the bench measures KV against. Neither speaks KV's protocol: each
//! channel is one UDP socket, a sender's address is learnt from the first datagram it sends,
//! system packets (`FF FF FF FF`...) only register the sender, and every other datagram is
//! forwarded to all other known addresses of that socket. They exist to show, in the same
//! run and with the same generator, what one-syscall-per-packet I/O costs ([`naive`]) and
//! what the kernel allows with batched I/O ([`floor`]).

pub mod floor;
pub mod naive;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kv_server::epoll::{Epoll, Events};

use crate::sys::{self, RawAddr};

/// Most peers a baseline channel remembers; later senders are ignored (bounded state).
pub const MAX_PEERS: usize = 1024;
/// Receive buffer asked for each channel socket: the same as kv-server asks for.
pub const RECV_BUFFER: usize = 1 << 20;

/// One channel: its socket and the peers learnt so far.
#[derive(Debug)]
pub struct Group {
    /// The channel's socket (non-blocking).
    pub socket: UdpSocket,
    /// Known peers, in the order they first sent.
    pub peers: Vec<RawAddr>,
}

impl Group {
    /// Remembers `from` if new and there is room. Returns its index when known.
    pub fn learn(&mut self, from: RawAddr) -> Option<usize> {
        let key = from.key();
        if let Some(i) = self.peers.iter().position(|p| p.key() == key) {
            return Some(i);
        }
        if self.peers.len() < MAX_PEERS {
            self.peers.push(from);
            return Some(self.peers.len() - 1);
        }
        None
    }
}

/// True for a datagram the baselines forward: 512 bytes and not a system packet.
pub fn is_voice(data: &[u8]) -> bool {
    data.len() == kv_proto::PACKET_SIZE && !kv_proto::packet::is_system(data)
}

/// How a baseline handles one readable channel socket.
pub trait Relay: Send + 'static {
    /// Drains `group`'s socket, forwarding what it reads.
    fn on_readable(&mut self, group: &mut Group);
}

/// Binds `channels` sockets on `listen` (port 0: ephemeral; else consecutive ports), prints
/// `ports=p1,p2,...` on stdout, and serves them with `threads` threads, each running its
/// own epoll loop over a share of the channels, until stdin closes or `stop` is set.
pub fn serve<R: Relay>(
    listen: SocketAddr,
    channels: usize,
    threads: usize,
    make: impl Fn() -> R,
) -> Result<()> {
    if channels == 0 || channels > 4096 {
        bail!("--channels must be 1..=4096");
    }
    let threads = threads.clamp(1, channels);
    let mut groups: Vec<Vec<Group>> = (0..threads).map(|_| Vec::new()).collect();
    let mut ports = Vec::with_capacity(channels);
    for i in 0..channels {
        let mut addr = listen;
        if listen.port() != 0 {
            addr.set_port(listen.port() + i as u16);
        }
        let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
        socket.set_nonblocking(true)?;
        sys::set_recv_buffer(socket.as_raw_fd(), RECV_BUFFER);
        ports.push(socket.local_addr()?.port());
        groups[i % threads].push(Group {
            socket,
            peers: Vec::new(),
        });
    }
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ports={}", list.join(","))?;
    out.flush()?;
    drop(out);

    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for share in groups {
        let stop = stop.clone();
        let relay = make();
        handles.push(std::thread::spawn(move || run_loop(share, relay, &stop)));
    }
    // The parent (the bench) ends us by closing our stdin, or by killing us.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("relay thread panicked"))??;
    }
    Ok(())
}

/// Serves `groups` with `relay` until `stop` is set: one epoll loop on this thread.
pub(crate) fn run_loop<R: Relay>(
    mut groups: Vec<Group>,
    mut relay: R,
    stop: &AtomicBool,
) -> Result<()> {
    let poller = Epoll::new()?;
    for (i, g) in groups.iter().enumerate() {
        poller.add(g.socket.as_raw_fd(), i as u64)?;
    }
    let mut events = Events::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        poller.wait(&mut events, Duration::from_millis(100))?;
        for t in events.tokens() {
            if let Some(g) = groups.get_mut(t as usize) {
                relay.on_readable(g);
            }
        }
    }
    Ok(())
}
