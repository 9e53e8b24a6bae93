//! The channels that are open: their sockets' ports and which relay worker serves each.
//!
//! The control plane calls this from blocking threads (`spawn_blocking`). Asking a relay
//! worker something is two steps: [`Registry`] queues the command (under the control
//! plane's registry lock, never waiting) and returns a [`Pending`] answer, which is waited
//! for after the lock is released. `Pending::wait` must not be called from async code.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::relay::{Admission, ChannelRelay, JoinError, RelayConfig, VoiceKeys};
use super::worker::{BoundCount, ChannelCommand, CommandSender, Queued, WorkerHandle};
use crate::metrics::RelayMetrics;
use crate::shutdown::Shutdown;

/// A running channel.
#[derive(Debug)]
struct ChannelHandle {
    /// Its UDP port.
    port: u16,
    /// Index of the worker serving it.
    worker: usize,
    /// Its bound members, as its worker last published.
    bound: BoundCount,
}

/// How often silent members are looked for: a tenth of the timeout, within [20 ms, 1 s].
pub(crate) fn sweep_interval(peer_timeout: Duration) -> Duration {
    (peer_timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `max_channels` are open already.
    #[error("too many channels")]
    TooMany,
    /// No port could be bound (range exhausted, or the OS refused).
    #[error("no UDP port available: {0}")]
    NoPort(std::io::Error),
    /// A relay worker thread could not be started, or has stopped.
    #[error("relay worker unavailable: {0}")]
    Worker(std::io::Error),
}

/// Why a channel did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No such channel is open.
    #[error("channel is not open")]
    NotOpen,
    /// The relay worker has stopped (server shutting down).
    #[error("channel worker is gone")]
    Gone,
    /// The relay refused the join.
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// A command queued for a relay worker ([`Registry`]'s `ask`), whose answer is still to come.
/// Wait for it with [`Pending::wait`] *after* releasing the registry lock.
#[derive(Debug)]
#[must_use = "the command's answer (or its deferred send) is in here"]
pub struct Pending<T>(Result<Queries<T>, RelayError>);

#[derive(Debug)]
struct Queries<T> {
    chid: u64,
    /// The command, when the worker's queue was full: sent by `wait`, which may block.
    deferred: Option<(ChannelCommand, CommandSender)>,
    reply: oneshot::Receiver<T>,
}

impl<T> Pending<T> {
    /// Sends the command if its worker's queue was full, then waits for the answer. Must
    /// not be called from async code, nor with the registry lock held.
    pub fn wait(self) -> Result<T, RelayError> {
        let q = self.0?;
        if let Some((cmd, sender)) = q.deferred {
            sender.send(q.chid, cmd).map_err(|_| RelayError::Gone)?;
        }
        q.reply.blocking_recv().map_err(|_| RelayError::Gone)
    }
}

impl Pending<Result<(), JoinError>> {
    /// [`Pending::wait`] for a JOIN: a refusal by the relay is an error too.
    pub fn joined(self) -> Result<(), RelayError> {
        Ok(self.wait()??)
    }
}

/// Open channels by id.
#[derive(Debug)]
pub struct Registry {
    /// Runtime for the small tasks that watch the stop signal and report each worker's end
    /// (the registry itself is used from blocking threads).
    runtime: Handle,
    /// IP channel sockets bind to (the control listener's).
    ip: IpAddr,
    /// Port range for channel sockets, if restricted.
    udp_ports: Option<RangeInclusive<u16>>,
    /// The voice secrets (X25519 key signed by the server's key, cookie key), made once per
    /// start; each relay gets a copy.
    keys: VoiceKeys,
    /// Limits for each relay.
    relay_config: RelayConfig,
    /// Most channels open at once.
    max_channels: usize,
    /// Stop signal handed to each worker.
    shutdown: Shutdown,
    /// The open channels.
    channels: HashMap<u64, ChannelHandle>,
    /// Relay workers (one per core), started with the first channel.
    workers: Vec<WorkerHandle>,
    /// Tasks that end with each worker, awaited on server shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// The workers' counters, for `/metrics`.
    metrics: Arc<RelayMetrics>,
    /// Told of members that timed out (the delivery service of encrypted channels).
    departures: Option<super::worker::Departures>,
}

impl Registry {
    /// An empty registry.
    pub fn new(
        runtime: Handle,
        ip: IpAddr,
        udp_ports: Option<RangeInclusive<u16>>,
        key: SigningKey,
        relay_config: RelayConfig,
        max_channels: usize,
        shutdown: Shutdown,
    ) -> Self {
        let metrics = Arc::new(RelayMetrics::default());
        let keys = VoiceKeys::random(&key);
        // The X25519 session key's signature.
        metrics
            .signatures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            runtime,
            ip,
            udp_ports,
            keys,
            relay_config,
            max_channels,
            shutdown,
            channels: HashMap::new(),
            workers: Vec::new(),
            tasks: Vec::new(),
            metrics,
            departures: Some(super::worker::Departures::default()),
        }
    }

    /// The relay's counters (for `/metrics`).
    pub fn metrics(&self) -> Arc<RelayMetrics> {
        self.metrics.clone()
    }

    /// Starts the workers if they are not running: one per core, at most one per channel
    /// the server may have.
    fn start_workers(&mut self) -> std::io::Result<()> {
        if !self.workers.is_empty() {
            return Ok(());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = cores.min(self.max_channels).max(1);
        let sweep = sweep_interval(self.relay_config.peer_timeout);
        for i in 0..count {
            let counters = self.metrics.add_worker();
            let (w, task) = WorkerHandle::spawn(
                i,
                sweep,
                self.shutdown.clone(),
                &self.runtime,
                counters,
                self.departures.clone(),
            )?;
            self.workers.push(w);
            self.tasks.push(task);
        }
        Ok(())
    }

    /// Who hears of members that time out (once; workers started before see it too).
    pub fn set_departures(&mut self, f: super::worker::DepartureFn) {
        if let Some(d) = &self.departures {
            if d.0.set(f).is_err() {
                tracing::warn!("departures already set");
            }
        }
    }

    /// Opens channel `chid` on `preferred` port if it is free (and in the range), else on
    /// another port, and hands it to the least loaded relay worker. Returns the port.
    pub fn open(&mut self, chid: u64, preferred: Option<u16>) -> Result<u16, OpenError> {
        if self.channels.len() >= self.max_channels {
            return Err(OpenError::TooMany);
        }
        self.start_workers().map_err(OpenError::Worker)?;
        let socket = self.bind(preferred).map_err(OpenError::NoPort)?;
        let port = socket.local_addr().map_err(OpenError::NoPort)?.port();
        socket.set_nonblocking(true).map_err(OpenError::NoPort)?;
        let relay = ChannelRelay::new(
            chid,
            self.keys.clone(),
            self.relay_config.clone(),
            Instant::now(),
        );
        // The least loaded worker: channels spread over every core.
        let (worker, w) = self
            .workers
            .iter_mut()
            .enumerate()
            .min_by_key(|(_, w)| w.channels)
            .ok_or_else(|| OpenError::Worker(std::io::Error::other("no relay worker")))?;
        let bound = BoundCount::default();
        w.open(chid, socket, relay, bound.clone())
            .map_err(|e| OpenError::Worker(std::io::Error::other(e)))?;
        w.channels += 1;
        self.channels.insert(
            chid,
            ChannelHandle {
                port,
                worker,
                bound,
            },
        );
        tracing::info!(chid, port, "channel open");
        Ok(port)
    }

    fn bind(&self, preferred: Option<u16>) -> std::io::Result<std::net::UdpSocket> {
        let try_port = |port: u16| std::net::UdpSocket::bind(SocketAddr::new(self.ip, port));
        let in_range = |p: u16| match &self.udp_ports {
            Some(r) => r.contains(&p),
            None => true,
        };
        if let Some(p) = preferred.filter(|&p| p != 0 && in_range(p)) {
            if let Ok(s) = try_port(p) {
                return Ok(s);
            }
        }
        let Some(range) = &self.udp_ports else {
            return try_port(0);
        };
        // Start at a random port of the range so channels spread out, then scan it once.
        let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
        let span = hi - lo + 1;
        let start = rand::random_range(0..span);
        let mut last = std::io::Error::new(std::io::ErrorKind::AddrInUse, "port range is full");
        for k in 0..span {
            let port = (lo + (start + k) % span) as u16;
            match try_port(port) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// New limits: for channels opened from now on, and a sender to each worker to hand
    /// them to its open channels (`CommandSender::configure`; the caller sends after
    /// releasing the registry lock, as the send may wait).
    pub fn set_limits(&mut self, relay: RelayConfig, max_channels: usize) -> Vec<CommandSender> {
        self.relay_config = relay;
        self.max_channels = max_channels;
        self.workers.iter().map(WorkerHandle::sender).collect()
    }

    /// Number of open channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True when no channel is open.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Port of an open channel.
    pub fn port(&self, chid: u64) -> Option<u16> {
        self.channels.get(&chid).map(|c| c.port)
    }

    /// Members of an open channel with a proven address, as its worker last published
    /// (after its latest turn: a bind shows within one turn, without asking the worker).
    pub fn bound_count(&self, chid: u64) -> Option<usize> {
        self.channels
            .get(&chid)
            .map(|c| c.bound.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Closes a channel: its members get SHUTDOWN and its worker drops it. False if not open.
    pub fn close(&mut self, chid: u64) -> bool {
        match self.channels.remove(&chid) {
            Some(c) => {
                if let Some(w) = self.workers.get_mut(c.worker) {
                    let _ = w.command(chid, ChannelCommand::Close);
                    w.channels = w.channels.saturating_sub(1);
                }
                true
            }
            None => false,
        }
    }

    /// Queues a command for `chid`'s worker and returns the answer to wait for. Called
    /// under the registry lock, it never waits: the command goes into the worker's queue
    /// (or, when that is full, is kept to be sent by [`Pending::wait`]), and the caller
    /// releases the lock before waiting. A busy worker then holds up only the requests for
    /// its own channels, never the registry (issue 9 §2).
    fn ask<T>(
        &self,
        chid: u64,
        make: impl FnOnce(oneshot::Sender<T>) -> ChannelCommand,
    ) -> Pending<T> {
        let queued = || {
            let c = self.channels.get(&chid).ok_or(RelayError::NotOpen)?;
            let w = self.workers.get(c.worker).ok_or(RelayError::Gone)?;
            let (tx, rx) = oneshot::channel();
            let deferred = match w.try_command(chid, make(tx)) {
                Ok(Queued::Sent) => None,
                Ok(Queued::Full(cmd, sender)) => Some((cmd, sender)),
                Err(_) => return Err(RelayError::Gone),
            };
            Ok(Queries {
                chid,
                deferred,
                reply: rx,
            })
        };
        Pending(queued())
    }

    /// Admits `uid` to `chid`; it binds its address with the cookie handshake.
    pub fn join(&self, chid: u64, uid: u64) -> Pending<Result<(), JoinError>> {
        self.join_with(chid, uid, Admission::default())
    }

    /// Admits `uid` to `chid` and also allows the seed's binding without a cookie (for the
    /// seed's clients, which cannot answer a CHALLENGE). Meant only for key-less users on a
    /// server whose operator opted in (PROTOCOL.md, "Seed clients").
    pub fn join_legacy(&self, chid: u64, uid: u64) -> Pending<Result<(), JoinError>> {
        self.join_with(
            chid,
            uid,
            Admission {
                legacy: true,
                client_kex: None,
            },
        )
    }

    /// Admits `uid` to `chid` as `admission` says: e.g. with the X25519 key its JOIN_KEX
    /// named, so that only that client can bind.
    pub fn join_with(
        &self,
        chid: u64,
        uid: u64,
        admission: Admission,
    ) -> Pending<Result<(), JoinError>> {
        self.ask(chid, |reply| ChannelCommand::Join {
            uid,
            admission,
            reply,
        })
    }

    /// Removes `uid` from `chid`; the answer is false when it was not a member.
    pub fn leave(&self, chid: u64, uid: u64, notify_leaver: bool) -> Pending<bool> {
        self.ask(chid, |reply| ChannelCommand::Leave {
            uid,
            notify_leaver,
            reply,
        })
    }

    /// Members of `chid` in join order, bound or not yet.
    pub fn members(&self, chid: u64) -> Pending<Vec<u64>> {
        self.ask(chid, |reply| ChannelCommand::Members {
            bound_only: false,
            reply,
        })
    }

    /// Members of `chid` with a proven address, in join order. What a listing shown to
    /// users should use: an admitted member that never binds expires silently (nobody is
    /// sent LEAVE for it), so listing it would leave a ghost in clients' member lists.
    pub fn bound_members(&self, chid: u64) -> Pending<Vec<u64>> {
        self.ask(chid, |reply| ChannelCommand::Members {
            bound_only: true,
            reply,
        })
    }

    /// Removes `uid` from every channel (it was unregistered), telling it with KICK. The
    /// answers are the caller's to wait for, after releasing the registry.
    pub fn remove_everywhere(&self, uid: u64) -> Vec<Pending<bool>> {
        self.channels
            .keys()
            .map(|&chid| self.leave(chid, uid, true))
            .collect()
    }

    /// Tests only: keeps `chid`'s worker busy for `d` (its queue waits meanwhile).
    #[cfg(test)]
    pub fn stall(&self, chid: u64, d: Duration) {
        let c = &self.channels[&chid];
        self.workers[c.worker]
            .command(chid, ChannelCommand::Stall(d))
            .expect("worker running");
    }

    /// Tests only: the worker serving `chid`.
    #[cfg(test)]
    pub fn worker_of(&self, chid: u64) -> Option<usize> {
        self.channels.get(&chid).map(|c| c.worker)
    }

    /// Hands over the tasks that end with the relay workers, for the server to await on
    /// shutdown (the workers stop at the shutdown signal, after sending SHUTDOWN to every
    /// channel's members). The registry is empty afterwards.
    pub fn take_tasks(&mut self) -> Vec<JoinHandle<()>> {
        self.channels.clear();
        std::mem::take(&mut self.tasks)
    }
}
