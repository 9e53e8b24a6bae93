//! The load generator: one UDP socket per simulated user, a paced sender thread for the
//! speakers, and a few receiver threads that drain every user's socket with epoll and
//! recvmmsg, counting bench packets and their forwarding delay.
//!
//! It shares the machine with the relay it measures, so it is built to be cheap: no thread
//! per user, no allocation per packet, one lock per socket drain.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kv_proto::packet::{self, Datagram};
use kv_proto::session::{Bind, Challenge, ClientKex, Cookie};
use kv_proto::{SystemOp, SystemPacket, PACKET_SIZE};
use kv_server::epoll::{Epoll, Events};

use crate::histogram::Histogram;
use crate::payload::{self, Stamp};
use crate::sys::{self, RecvBatch};

/// Receive buffer of each simulated user's socket: deep, so the generator is not the one
/// dropping packets when its threads are briefly descheduled.
/// What a CHALLENGE gives a BIND: the cookie, the channel and the server's X25519 key.
type Offer = (Cookie, u64, [u8; 32]);

const USER_RECV_BUFFER: usize = 1 << 20;

/// One simulated user.
#[derive(Debug)]
pub struct User {
    /// Its uid (what it writes in the first 8 bytes of its packets).
    pub uid: u64,
    /// Index of its channel in [`Fleet::channels`].
    pub channel: usize,
    /// Its socket, connected to the channel's relay port.
    pub socket: UdpSocket,
}

/// One channel's people.
#[derive(Debug, Clone)]
pub struct ChannelPlan {
    /// Indices into [`Fleet::users`].
    pub members: Vec<usize>,
    /// The members who talk.
    pub speakers: Vec<usize>,
}

/// All users of a run and how they are grouped.
#[derive(Debug)]
pub struct Fleet {
    /// Users; shared with the receiver threads.
    pub users: Arc<Vec<User>>,
    /// Channels.
    pub channels: Vec<ChannelPlan>,
}

impl Fleet {
    /// Binds one socket per user and connects it to its channel's port on `ip`.
    /// `uids[c][m]` is member `m` of channel `c`; the first `speakers` members of each
    /// channel talk.
    pub fn bind(
        ip: std::net::Ipv4Addr,
        ports: &[u16],
        uids: &[Vec<u64>],
        speakers: usize,
    ) -> Result<Fleet> {
        let mut users = Vec::new();
        let mut channels = Vec::new();
        for (c, (port, members)) in ports.iter().zip(uids).enumerate() {
            let mut plan = ChannelPlan {
                members: Vec::new(),
                speakers: Vec::new(),
            };
            for (m, uid) in members.iter().enumerate() {
                let socket = UdpSocket::bind((ip, 0)).context("bind user socket")?;
                sys::set_recv_buffer(socket.as_raw_fd(), USER_RECV_BUFFER);
                socket.connect(SocketAddrV4::new(ip, *port))?;
                socket.set_write_timeout(Some(Duration::from_millis(100)))?;
                plan.members.push(users.len());
                if m < speakers {
                    plan.speakers.push(users.len());
                }
                users.push(User {
                    uid: *uid,
                    channel: c,
                    socket,
                });
            }
            channels.push(plan);
        }
        Ok(Fleet {
            users: Arc::new(users),
            channels,
        })
    }

    /// Every speaker, interleaved across channels so load is spread evenly in time.
    pub fn speakers(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let most = self
            .channels
            .iter()
            .map(|c| c.speakers.len())
            .max()
            .unwrap_or(0);
        for k in 0..most {
            for c in &self.channels {
                if let Some(&s) = c.speakers.get(k) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Copies each packet from `speaker` should produce: the other members of its channel.
    pub fn fanout(&self, speaker: usize) -> u64 {
        let c = self.users[speaker].channel;
        self.channels[c].members.len().saturating_sub(1) as u64
    }

    /// Makes the relay learn every user's address. With `ack` (KV): the binding handshake
    /// (KEEPALIVE, CHALLENGE, BIND with the cookie) until each user's ACK comes back. KV
    /// budgets CHALLENGEs per IP (every user here is on one) and pays binds from a
    /// per-channel announcement budget, dropping BINDs that arrive while it is spent, so the
    /// users' attempts are spread evenly in time, round robin, as independent clients'
    /// retries would be, and a big channel binds over a few seconds. Without `ack` (the
    /// baselines, which learn an address from its first datagram): one KEEPALIVE each,
    /// paced, and a short wait.
    pub fn announce(&self, ack: bool) -> Result<()> {
        let mut buf = [0u8; PACKET_SIZE];
        if !ack {
            for (n, _) in self.users.iter().enumerate() {
                self.send_bind_step(n, false, None, &mut buf);
                if n % 16 == 15 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
        /// A cookie is used for this long (the relay accepts it for 5 to 10 s).
        const COOKIE_USE: Duration = Duration::from_secs(4);
        let mut pending: Vec<usize> = (0..self.users.len()).collect();
        let mut cookies: Vec<Option<(Offer, Instant)>> = vec![None; self.users.len()];
        let mut rx = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut turn, mut since_drain) = (0usize, 0u32);
        while !pending.is_empty() && Instant::now() < deadline {
            let i = pending[turn % pending.len()];
            turn += 1;
            if cookies[i].is_some_and(|(_, at)| at.elapsed() > COOKIE_USE) {
                cookies[i] = None;
            }
            self.send_bind_step(i, true, cookies[i].map(|(offer, _)| offer), &mut buf);
            std::thread::sleep(Duration::from_micros(250));
            // Every 16 sends (4 ms), read what came back.
            since_drain += 1;
            if since_drain < 16 {
                continue;
            }
            since_drain = 0;
            pending.retain(|&i| {
                let u = &self.users[i];
                while let Ok(n) = recv_now(&u.socket, &mut rx) {
                    if let Some(c) = Challenge::decode(&rx[..n]) {
                        if c.uid == u.uid {
                            let offer = (c.cookie, c.chid, c.server_kex);
                            cookies[i] = Some((offer, Instant::now()));
                            self.send_bind_step(i, true, Some(offer), &mut buf);
                        }
                    } else if let Ok(Datagram::System(p)) = packet::parse(&rx[..n]) {
                        if p.op == SystemOp::Ack && p.ackid == i as u32 + 1 {
                            return false;
                        }
                    }
                }
                true
            });
        }
        if pending.is_empty() {
            return Ok(());
        }
        bail!(
            "{} users never got an ACK to their KEEPALIVE/BIND",
            pending.len()
        )
    }

    /// Sends user `i` its next handshake packet: BIND when it has a cookie, else KEEPALIVE.
    fn send_bind_step(
        &self,
        i: usize,
        ack: bool,
        cookie: Option<Offer>,
        buf: &mut [u8; PACKET_SIZE],
    ) {
        let u = &self.users[i];
        let ackid = if ack { i as u32 + 1 } else { 0 };
        // The generator never reads the session's packets beyond their header, so any
        // fixed key of its own does; the BIND still proves it holds that key.
        let kex = ClientKex::new(kex_secret(u.uid));
        let session = cookie.and_then(|(_, chid, server_kex)| {
            kex.session_key(&server_kex, u.uid, chid).map(|k| (k, chid))
        });
        match (cookie, session) {
            (Some((cookie, _, _)), Some((key, chid))) => Bind {
                uid: u.uid,
                ackid,
                chid,
                cookie,
                client_kex: kex.public(),
            }
            .encode(&key, buf),
            _ => SystemPacket {
                op: SystemOp::KeepAlive,
                uid: u.uid,
                ackid,
            }
            .encode(buf),
        }
        let _ = u.socket.send(buf);
    }
}

/// A fixed X25519 secret per uid for the generator's sessions.
fn kex_secret(uid: u64) -> [u8; 32] {
    let mut k = [0x4Bu8; 32];
    k[..8].copy_from_slice(&uid.to_be_bytes());
    k
}

fn recv_now(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for writes of its length during the call.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Tags the receivers keep a count for (one per measured window or flood step).
pub const MAX_TAGS: usize = 4096;

/// Counters one receiver thread shares with the bench.
#[derive(Debug)]
struct RecvShared {
    /// Bench packets received, by tag: a late packet still counts for its own window, so
    /// loss means "never arrived" and lateness shows in the delay figures.
    per_tag: Vec<AtomicU64>,
    /// Bench packets of any tag: tells when a relay's backlog has drained.
    any: AtomicU64,
    /// Delays of packets tagged at least the current minimum.
    hist: Mutex<Histogram>,
}

impl RecvShared {
    fn new() -> Self {
        RecvShared {
            per_tag: (0..MAX_TAGS).map(|_| AtomicU64::new(0)).collect(),
            any: AtomicU64::new(0),
            hist: Mutex::new(Histogram::new()),
        }
    }
}

/// Receiver threads draining every user's socket.
#[derive(Debug)]
pub struct Receivers {
    shared: Vec<Arc<RecvShared>>,
    min_tag: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
}

impl Receivers {
    /// Starts `threads` receivers over `fleet`'s sockets.
    pub fn start(fleet: &Fleet, threads: usize, epoch: Instant) -> Result<Receivers> {
        let threads = threads.clamp(1, fleet.users.len().max(1));
        let min_tag = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut shared = Vec::new();
        let mut handles = Vec::new();
        for t in 0..threads {
            let sh = Arc::new(RecvShared::new());
            let poller = Epoll::new()?;
            for (i, u) in fleet.users.iter().enumerate() {
                if i % threads == t {
                    poller.add(u.socket.as_raw_fd(), i as u64)?;
                }
            }
            let users = fleet.users.clone();
            let (sh2, min2, stop2) = (sh.clone(), min_tag.clone(), stop.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("recv{t}"))
                    .spawn(move || receive_loop(poller, &users, &sh2, &min2, &stop2, epoch))?,
            );
            shared.push(sh);
        }
        Ok(Receivers {
            shared,
            min_tag,
            stop,
            handles,
        })
    }

    /// Records delays only of packets tagged `tag` or later (earlier ones are warm-up).
    pub fn set_min_tag(&self, tag: u32) {
        self.min_tag.store(tag, Ordering::Relaxed);
    }

    /// Packets tagged `tag` received so far.
    pub fn received(&self, tag: u32) -> u64 {
        self.shared
            .iter()
            .filter_map(|s| s.per_tag.get(tag as usize))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Bench packets of any tag received so far.
    pub fn any(&self) -> u64 {
        self.shared
            .iter()
            .map(|s| s.any.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits (at most `max`) until no bench packet has arrived for 100 ms, so a backlog
    /// left by an overloaded step does not count against the next one.
    pub fn wait_quiet(&self, max: Duration) {
        let until = Instant::now() + max;
        let mut last = self.any();
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.any();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }

    /// Takes the delay histogram collected since the last call.
    pub fn take_histogram(&self) -> Histogram {
        let mut all = Histogram::new();
        for s in &self.shared {
            let mut h = s.hist.lock().unwrap_or_else(|p| p.into_inner());
            all.merge(&h);
            *h = Histogram::new();
        }
        all
    }

    /// Stops and joins the threads.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        }
        Ok(())
    }
}

fn receive_loop(
    poller: Epoll,
    users: &[User],
    sh: &RecvShared,
    min_tag: &AtomicU32,
    stop: &AtomicBool,
    epoch: Instant,
) -> Result<()> {
    let mut events = Events::with_capacity(256);
    let mut batch = RecvBatch::new();
    while !stop.load(Ordering::Relaxed) {
        poller.wait(&mut events, Duration::from_millis(50))?;
        let min = min_tag.load(Ordering::Relaxed);
        let mut hist = sh.hist.lock().unwrap_or_else(|p| p.into_inner());
        // Packets of one wake-up nearly always share a tag: count locally, add once.
        let (mut tag, mut count, mut any) = (0u32, 0u64, 0u64);
        for t in events.tokens() {
            let Some(u) = users.get(t as usize) else {
                continue;
            };
            let fd = u.socket.as_raw_fd();
            loop {
                let n = batch.recv(fd)?;
                if n == 0 {
                    break;
                }
                let now = epoch.elapsed().as_nanos() as u64;
                for i in 0..n {
                    let Some(s) = payload::read(batch.data(i)) else {
                        continue;
                    };
                    any += 1;
                    if s.tag != tag {
                        if let Some(c) = sh.per_tag.get(tag as usize) {
                            c.fetch_add(count, Ordering::Relaxed);
                        }
                        (tag, count) = (s.tag, 0);
                    }
                    count += 1;
                    if s.tag >= min {
                        hist.record(now.saturating_sub(s.sent_ns));
                    }
                }
                if n < sys::RECV_BATCH {
                    break;
                }
            }
        }
        drop(hist);
        if let Some(c) = sh.per_tag.get(tag as usize) {
            c.fetch_add(count, Ordering::Relaxed);
        }
        sh.any.fetch_add(any, Ordering::Relaxed);
    }
    Ok(())
}

/// What one paced send produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Copies the relay should deliver for them (packets × other members).
    pub expected: u64,
}

/// Sends from `speakers`, `rate` packets per second in total, evenly spaced and round-robin
/// over the speakers, for `dur`, stamping each with `tag` and the time since `epoch`.
/// Stops early when `stop` is set.
pub fn send_paced(
    fleet: &Fleet,
    speakers: &[usize],
    rate: f64,
    dur: Duration,
    tag: u32,
    epoch: Instant,
    stop: &AtomicBool,
) -> Sent {
    let mut out = Sent::default();
    if speakers.is_empty() || rate <= 0.0 {
        return out;
    }
    let mut templates: Vec<[u8; PACKET_SIZE]> = speakers
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut p = [0u8; PACKET_SIZE];
            let stamp = Stamp {
                tag,
                sent_ns: 0,
                speaker: k as u32,
                seq: 0,
            };
            payload::build(fleet.users[s].uid, stamp, &mut p);
            p
        })
        .collect();
    let fanout: Vec<u64> = speakers.iter().map(|&s| fleet.fanout(s)).collect();
    let total = (rate * dur.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total && !stop.load(Ordering::Relaxed) {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while sent < due {
            let k = (sent % speakers.len() as u64) as usize;
            let pkt = &mut templates[k];
            payload::restamp(
                epoch.elapsed().as_nanos() as u64,
                (sent / speakers.len() as u64) as u32,
                pkt,
            );
            if fleet.users[speakers[k]].socket.send(&pkt[..]).is_ok() {
                out.packets += 1;
                out.expected += fanout[k];
            }
            sent += 1;
        }
        let next = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{self, floor::Floor, naive::Naive, Group, Relay};

    /// Runs `relay` on one channel socket in a thread; returns its port and a stopper.
    fn start<R: Relay>(relay: R) -> (u16, Arc<AtomicBool>, JoinHandle<Result<()>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            let g = Group {
                socket,
                peers: Vec::new(),
            };
            baseline::run_loop(vec![g], relay, &s2)
        });
        (port, stop, h)
    }

    fn every_copy_arrives<R: Relay>(relay: R) {
        let (port, stop, h) = start(relay);
        let fleet = Fleet::bind(
            std::net::Ipv4Addr::LOCALHOST,
            &[port],
            &[vec![1, 2, 3, 4]],
            2,
        )
        .unwrap();
        fleet.announce(false).unwrap();
        let epoch = Instant::now();
        let rx = Receivers::start(&fleet, 2, epoch).unwrap();
        rx.set_min_tag(5);
        let speakers = fleet.speakers();
        assert_eq!(speakers.len(), 2);
        let sent = send_paced(
            &fleet,
            &speakers,
            400.0,
            Duration::from_millis(250),
            5,
            epoch,
            &AtomicBool::new(false),
        );
        assert_eq!(sent.packets, 100);
        assert_eq!(sent.expected, 300, "each packet goes to the 3 others");
        rx.wait_quiet(Duration::from_secs(3));
        assert_eq!(rx.received(5), 300);
        assert_eq!(rx.received(4), 0);
        let hist = rx.take_histogram();
        assert_eq!(hist.count(), 300);
        assert!(hist.quantile_ms(0.5) < 100.0);
        rx.stop().unwrap();
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap().unwrap();
    }

    #[test]
    fn generator_counts_every_copy_through_the_floor() {
        every_copy_arrives(Floor::new());
    }

    #[test]
    fn generator_counts_every_copy_through_the_naive_relay() {
        every_copy_arrives(Naive::new());
    }
}
