//! A test-only network emulator: a UDP relay between clients and a channel's port on
//! 127.0.0.1 that drops, delays, queues, reorders and duplicates datagrams with a fixed seed,
//! or replays a recorded loss/delay trace.
//!
//! Clients send to [`LossyRelay::addr`] (`kv join --voice-addr`); each client gets its own
//! upstream socket, so the server still sees one address per client. The two directions
//! ([`Direction::Up`]: client to server, [`Direction::Down`]: server to client) have their
//! own [`Impairment`] and model state ([`model::Link`]), and either can be switched while the
//! relay runs ([`LossyRelay::set`]). One thread, seeded RNGs, a time-ordered queue: the same
//! traffic meets the same fate on every run (up to thread scheduling). The models are pure
//! (`model`, `trace`) and unit-tested on their own.

pub mod model;
pub mod trace;

pub use model::{Fate, Impairment, Link};
pub use trace::{Trace, TraceStep};

use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A direction through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up = 0,
    /// Server to client.
    Down = 1,
}

/// Counters of what one direction of the relay did (atomics, read while it runs).
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    spikes: AtomicU64,
}

/// What the relay did so far, in one direction or both.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back to be reordered.
    pub reordered: u64,
    /// Delay spikes started.
    pub spikes: u64,
}

impl Counters {
    fn snapshot(&self) -> RelayStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            received: l(&self.received),
            dropped: l(&self.dropped),
            duplicated: l(&self.duplicated),
            reordered: l(&self.reordered),
            spikes: l(&self.spikes),
        }
    }
}

/// State shared between the relay's handle and its thread.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    counters: [Counters; 2],
    /// Datagrams to send to every known client, as if the server sent them (forgeries).
    inject: Mutex<Vec<Vec<u8>>>,
    /// System packets the server sent toward clients (what an eavesdropper records).
    captured: Mutex<Vec<Vec<u8>>>,
    /// New impairments, taken by the thread at its next turn (set while it runs).
    reconfigure: Mutex<[Option<Impairment>; 2]>,
    /// Whether `reconfigure` holds something: checked every turn without the lock.
    reconfigured: AtomicBool,
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Pending {
    due: Instant,
    seq: u64,
    /// Index into the socket table: 0 is the client-facing socket.
    via: usize,
    to: Option<SocketAddr>,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Min-heap on (due, seq): datagrams due at the same time leave in arrival order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Most clients one relay serves and most datagrams it holds: bounded like everything else.
const MAX_CLIENTS: usize = 64;
const MAX_PENDING: usize = 4096;
/// Most system packets kept by the capture.
const MAX_CAPTURED: usize = 1024;
/// Longest the relay thread sleeps between turns.
const TURN: Duration = Duration::from_micros(250);

/// The seed of the down direction when one impairment serves both ways, so the two
/// directions lose different datagrams.
const DOWN_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

impl LossyRelay {
    /// Starts relaying to `upstream` (a channel's UDP port) with `imp` in both directions
    /// (independent draws: the down direction's seed is derived from `imp.seed`).
    pub fn start(upstream: SocketAddr, imp: Impairment) -> std::io::Result<Self> {
        let mut down = imp.clone();
        down.seed ^= DOWN_SEED_SALT;
        Self::start_split(upstream, imp, down)
    }

    /// Starts relaying to `upstream` with `up` on the client-to-server direction and
    /// `down` on the server-to-client one.
    pub fn start_split(
        upstream: SocketAddr,
        up: Impairment,
        down: Impairment,
    ) -> std::io::Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lossy-relay".into())
            .spawn(move || {
                // The emulated network must not be late because the machine is busy: it
                // runs at the priority the client's own timing threads get.
                kv_client::audio::priority::raise_current_thread();
                run(front, upstream, [Link::new(up), Link::new(down)], &sh)
            })?;
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// Where clients should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches `dir` to `imp` from its next datagram on. Datagrams already queued keep
    /// their departure time and order (see [`Link::reconfigure`]).
    pub fn set(&self, dir: Direction, imp: Impairment) {
        self.shared
            .reconfigure
            .lock()
            .unwrap_or_else(|p| p.into_inner())[dir as usize] = Some(imp);
        self.shared.reconfigured.store(true, Ordering::Release);
    }

    /// Sends `datagram` to every client seen so far, from the relay's address (where
    /// clients expect the server's packets), bypassing the impairments.
    pub fn inject(&self, datagram: &[u8]) {
        self.shared
            .inject
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(datagram.to_vec());
    }

    /// The system packets (first bytes `FF FF FF FF`) the server sent toward clients so far,
    /// oldest first (at most 1024), before any impairment: what an eavesdropper on the path
    /// records.
    pub fn captured_system(&self) -> Vec<Vec<u8>> {
        self.shared
            .captured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the relay did so far, both directions together.
    pub fn stats(&self) -> RelayStats {
        let (u, d) = (self.stats_of(Direction::Up), self.stats_of(Direction::Down));
        RelayStats {
            received: u.received + d.received,
            dropped: u.dropped + d.dropped,
            duplicated: u.duplicated + d.duplicated,
            reordered: u.reordered + d.reordered,
            spikes: u.spikes + d.spikes,
        }
    }

    /// What the relay did so far in one direction.
    pub fn stats_of(&self, dir: Direction) -> RelayStats {
        self.shared.counters[dir as usize].snapshot()
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(front: UdpSocket, upstream: SocketAddr, mut links: [Link; 2], shared: &Shared) {
    // sockets[0] faces clients; sockets[i] (i >= 1) is client i's upstream socket.
    let mut sockets = vec![front];
    let mut clients: Vec<SocketAddr> = vec![];
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = [0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.reconfigured.swap(false, Ordering::Acquire) {
            let mut new = shared.reconfigure.lock().unwrap_or_else(|p| p.into_inner());
            for (link, imp) in links.iter_mut().zip(new.iter_mut()) {
                if let Some(imp) = imp.take() {
                    link.reconfigure(imp);
                }
            }
        }
        // Receive everything that is waiting on every socket.
        for i in 0..sockets.len() {
            loop {
                let (n, from) = match sockets[i].recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let now = Instant::now();
                // Decide where it goes.
                let (dir, via, to) = if i == 0 {
                    let idx = match by_client.get(&from) {
                        Some(&k) => k,
                        None if clients.len() < MAX_CLIENTS => {
                            let up = match UdpSocket::bind("127.0.0.1:0")
                                .and_then(|s| s.connect(upstream).map(|_| s))
                                .and_then(|s| s.set_nonblocking(true).map(|_| s))
                            {
                                Ok(s) => s,
                                Err(_) => continue,
                            };
                            sockets.push(up);
                            clients.push(from);
                            by_client.insert(from, sockets.len() - 1);
                            sockets.len() - 1
                        }
                        None => continue,
                    };
                    (Direction::Up, idx, None)
                } else {
                    if buf[..n.min(4)] == [0xFF; 4] {
                        let mut c = shared.captured.lock().unwrap_or_else(|p| p.into_inner());
                        if c.len() < MAX_CAPTURED {
                            c.push(buf[..n].to_vec());
                        }
                    }
                    (Direction::Down, 0, Some(clients[i - 1]))
                };
                let counters = &shared.counters[dir as usize];
                counters.received.fetch_add(1, Ordering::Relaxed);
                let fate = links[dir as usize].fate(now);
                if fate.spike_started {
                    counters.spikes.fetch_add(1, Ordering::Relaxed);
                }
                let Some(at) = fate.at else {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if fate.reordered {
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                }
                for due in std::iter::once(at).chain(fate.duplicate_at) {
                    if queue.len() < MAX_PENDING {
                        seq += 1;
                        queue.push(Pending {
                            due,
                            seq,
                            via,
                            to,
                            data: buf[..n].to_vec(),
                        });
                    }
                }
                if fate.duplicate_at.is_some() {
                    counters.duplicated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for d in shared
            .inject
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            for c in &clients {
                let _ = sockets[0].send_to(&d, c);
            }
        }
        // Send what is due.
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.due <= now) {
            let Some(p) = queue.pop() else { break };
            let _ = match p.to {
                Some(to) => sockets[p.via].send_to(&p.data, to),
                None => sockets[p.via].send(&p.data),
            };
        }
        let next = queue
            .peek()
            .map_or(TURN, |p| p.due.saturating_duration_since(Instant::now()));
        std::thread::sleep(next.min(TURN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways_and_drops_about_the_configured_share() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let relay = LossyRelay::start(
            server.local_addr().unwrap(),
            Impairment::random_loss(0.2, 1),
        )
        .unwrap();
        // The "server" reads concurrently, as a real one does, so its buffer never fills.
        let reader = std::thread::spawn(move || {
            let mut got = 0;
            let mut buf = [0u8; 16];
            let mut from = None;
            while let Ok((_, f)) = server.recv_from(&mut buf) {
                got += 1;
                from = Some(f);
            }
            (got, from, server)
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(relay.addr()).unwrap();
        let n = 500;
        for i in 0..n as u32 {
            client.send(&i.to_be_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let (got, back_to, server) = reader.join().unwrap();
        let mut buf = [0u8; 16];
        let share = 1.0 - got as f64 / n as f64;
        let st = relay.stats_of(Direction::Up);
        assert!((0.13..0.27).contains(&share), "dropped {share}, {st:?}");
        // Replies find their way back to the client.
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut back = 0;
        for _ in 0..50 {
            server.send_to(b"hi", back_to.unwrap()).unwrap();
        }
        while client.recv(&mut buf).is_ok() {
            back += 1;
        }
        assert!((25..=50).contains(&back), "{back}");
    }

    #[test]
    fn directions_are_independent_ordered_and_switchable() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // Up clean; down loses everything until switched to FIFO queueing jitter.
        let relay = LossyRelay::start_split(
            server.local_addr().unwrap(),
            Impairment::none(),
            Impairment::random_loss(1.0, 2),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(relay.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 16];
        client.send(b"up").unwrap();
        let (_, back_to) = server.recv_from(&mut buf).unwrap();
        for _ in 0..20 {
            server.send_to(b"x", back_to).unwrap();
        }
        assert!(
            client.recv(&mut buf).is_err(),
            "down direction should lose all"
        );
        relay.set(
            Direction::Down,
            Impairment::jitter_spikes(20.0, 0.05, 60, 3),
        );
        // Let the relay take the new setting before sending.
        std::thread::sleep(Duration::from_millis(20));
        let n = 200u32;
        for i in 0..n {
            server.send_to(&i.to_be_bytes(), back_to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut got = vec![];
        while let Ok(k) = client.recv(&mut buf) {
            assert_eq!(k, 4);
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "FIFO: all, in order");
        let (up, down) = (
            relay.stats_of(Direction::Up),
            relay.stats_of(Direction::Down),
        );
        assert_eq!((up.received, up.dropped), (1, 0), "{up:?}");
        assert_eq!(down.received, 20 + u64::from(n), "{down:?}");
        assert_eq!(down.dropped, 20, "{down:?}");
    }
}
