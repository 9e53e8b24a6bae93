//! A test-only lossy UDP relay: sits between clients and a channel's port on 127.0.0.1
//! and drops, delays, reorders and duplicates datagrams with a fixed seed.
//!
//! Clients send to [`LossyRelay::addr`] (`kv join --voice-addr`); each client gets its own
//! upstream socket, so the server still sees one address per client. Both directions go
//! through the same impairments. One thread, one seeded RNG, a time-ordered queue: the
//! same traffic meets the same fate on every run (up to thread scheduling).

use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the relay does to traffic.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is held back by an extra `reorder_ms` (so later ones
    /// overtake it).
    pub reorder: f64,
    /// Extra delay of reordered datagrams, milliseconds.
    pub reorder_ms: u64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Base one-way delay, milliseconds.
    pub delay_ms: u64,
    /// Uniform random extra delay 0..=jitter_ms, milliseconds.
    pub jitter_ms: u64,
    /// RNG seed.
    pub seed: u64,
}

impl Impairment {
    /// A clean pipe (for a loss-free baseline through the same path).
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            reorder: 0.0,
            reorder_ms: 0,
            duplicate: 0.0,
            delay_ms: 0,
            jitter_ms: 0,
            seed: 1,
        }
    }

    /// Random loss `p` only (plus 1 % duplicates and 0–2 ms jitter, which a jitter buffer
    /// absorbs without adapting), so what is measured is what loss costs.
    pub fn loss_only(p: f64, seed: u64) -> Self {
        Self {
            loss: p,
            reorder: 0.0,
            reorder_ms: 0,
            duplicate: 0.01,
            delay_ms: 1,
            jitter_ms: 2,
            seed,
        }
    }

    /// Random loss `p` with some reordering, duplicates and 0–10 ms jitter.
    pub fn lossy(p: f64, seed: u64) -> Self {
        Self {
            loss: p,
            reorder: 0.02,
            reorder_ms: 15,
            duplicate: 0.01,
            delay_ms: 2,
            jitter_ms: 10,
            seed,
        }
    }
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams held back to be reordered.
    pub reordered: AtomicU64,
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
    /// Datagrams to send to every known client, as if the server sent them (forgeries).
    inject: Arc<Mutex<Vec<Vec<u8>>>>,
    /// System packets the server sent toward clients (what an eavesdropper records).
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
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
    // Min-heap on (due, seq).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Most clients one relay serves and most datagrams it holds: bounded like everything else.
const MAX_CLIENTS: usize = 64;
const MAX_PENDING: usize = 4096;
/// Most system packets kept by the capture.
const MAX_CAPTURED: usize = 1024;

impl LossyRelay {
    /// Starts relaying to `upstream` (a channel's UDP port) with `imp`.
    pub fn start(upstream: SocketAddr, imp: Impairment) -> std::io::Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let inject = Arc::new(Mutex::new(Vec::new()));
        let captured = Arc::new(Mutex::new(Vec::new()));
        let (s, st, inj, cap) = (
            stop.clone(),
            stats.clone(),
            inject.clone(),
            captured.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("lossy-relay".into())
            .spawn(move || run(front, upstream, imp, &s, &st, &inj, &cap))?;
        Ok(Self {
            addr,
            stop,
            stats,
            inject,
            captured,
            thread: Some(thread),
        })
    }

    /// Where clients should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `datagram` to every client seen so far, from the relay's address (where
    /// clients expect the server's packets), bypassing the impairments.
    pub fn inject(&self, datagram: &[u8]) {
        self.inject
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(datagram.to_vec());
    }

    /// The system packets (first bytes `FF FF FF FF`) the server sent toward clients so far,
    /// oldest first (at most 1024): what an eavesdropper on the path records.
    pub fn captured_system(&self) -> Vec<Vec<u8>> {
        self.captured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    front: UdpSocket,
    upstream: SocketAddr,
    imp: Impairment,
    stop: &AtomicBool,
    stats: &RelayStats,
    inject: &Mutex<Vec<Vec<u8>>>,
    captured: &Mutex<Vec<Vec<u8>>>,
) {
    let mut rng = StdRng::seed_from_u64(imp.seed);
    // sockets[0] faces clients; sockets[i] (i >= 1) is client i's upstream socket.
    let mut sockets = vec![front];
    let mut clients: Vec<SocketAddr> = vec![];
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Receive everything that is waiting on every socket.
        for i in 0..sockets.len() {
            loop {
                let (n, from) = match sockets[i].recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                stats.received.fetch_add(1, Ordering::Relaxed);
                // Decide where it goes.
                let (via, to) = if i == 0 {
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
                    (idx, None)
                } else {
                    if buf[..n.min(4)] == [0xFF; 4] {
                        let mut c = captured.lock().unwrap_or_else(|p| p.into_inner());
                        if c.len() < MAX_CAPTURED {
                            c.push(buf[..n].to_vec());
                        }
                    }
                    (0, Some(clients[i - 1]))
                };
                if rng.random_bool(imp.loss) {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let copies = if rng.random_bool(imp.duplicate) {
                    stats.duplicated.fetch_add(1, Ordering::Relaxed);
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let mut delay = imp.delay_ms + rng.random_range(0..=imp.jitter_ms);
                    if rng.random_bool(imp.reorder) {
                        stats.reordered.fetch_add(1, Ordering::Relaxed);
                        delay += imp.reorder_ms;
                    }
                    if queue.len() < MAX_PENDING {
                        seq += 1;
                        queue.push(Pending {
                            due: now + Duration::from_millis(delay),
                            seq,
                            via,
                            to,
                            data: buf[..n].to_vec(),
                        });
                    }
                }
            }
        }
        for d in inject.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
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
        std::thread::sleep(Duration::from_micros(500));
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
            Impairment {
                loss: 0.2,
                ..Impairment::none()
            },
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
        let st = relay.stats();
        assert!(
            (0.13..0.27).contains(&share),
            "dropped {share}, relay saw {} dropped {}",
            st.received.load(Ordering::Relaxed),
            st.dropped.load(Ordering::Relaxed)
        );
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
}
