//! Relay workers: one OS thread per core, each running one epoll loop over its share of the
//! channels. A worker owns its channels' sockets and [`ChannelRelay`]s outright, so the
//! relay state needs no lock; the control plane reaches it through a bounded command queue
//! and an eventfd that wakes the loop.
//!
//! Why not a tokio task per channel: on loopback, a relay's cost per packet beyond the
//! kernel's is mostly wake-ups. A task per channel pays a reactor wake-up, a scheduler hop
//! and often a cross-thread unpark per datagram, and one `recv_from`/`send_to` per packet.
//! A worker sleeps in `epoll_wait` directly, drains each ready socket with `recvmmsg` and
//! answers with `sendmmsg` ([`super::batch`]), the same shape as the batched floor that
//! `kv-bench` measures against (see BENCHMARKS.md, "Relay").
//!
//! Order of work in one loop turn: control commands first (a user admitted by a TCP JOIN is
//! a member before its first datagram, which it sends only after the JOIN reply), then the
//! ready sockets, then the peer-timeout sweep when due.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::batch::{BatchSink, RecvBatch, SendQueue, RECV_BATCH};
use super::relay::{Admission, ChannelRelay, JoinError, RelayConfig, RelayStats};
use crate::epoll::{Epoll, Events};
use crate::metrics::{DropReason, WorkerCounters};
use crate::shutdown::Shutdown;

/// Requests from the control plane to one channel.
#[derive(Debug)]
pub enum ChannelCommand {
    /// Admit a user; answers whether the channel had room.
    Join {
        /// The user.
        uid: u64,
        /// How it is admitted (see [`ChannelRelay::join`]).
        admission: Admission,
        /// Result back to the TCP handler.
        reply: oneshot::Sender<Result<(), JoinError>>,
    },
    /// Remove a user; answers whether it was a member.
    Leave {
        /// The user.
        uid: u64,
        /// Send the user itself a KICK (it was kicked or unregistered).
        notify_leaver: bool,
        /// Result back to the TCP handler.
        reply: oneshot::Sender<bool>,
    },
    /// List the members in join order.
    Members {
        /// Only those with a proven address (not the admitted-but-unbound).
        bound_only: bool,
        /// Result back to the TCP handler.
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// The channel was deleted: SHUTDOWN to members, then stop.
    Close,
    /// Tests only: keep the worker busy this long, as a worker slow to answer would be.
    #[cfg(test)]
    Stall(Duration),
}

/// Capacity of a worker's command queue; control requests wait when it is full.
pub const COMMAND_QUEUE: usize = 256;

/// Receive buffer asked for each channel socket: room for bursts from many speakers while
/// the worker is busy with another channel (the kernel caps it at `rmem_max`).
const SOCKET_RECV_BUFFER: libc::c_int = 1 << 20;

/// `recvmmsg` calls on one socket per wake-up before the worker serves the others, so one
/// flooded channel cannot starve the rest (epoll is level-triggered: it comes back).
const BATCHES_PER_TURN: usize = 8;

/// Token of the eventfd in the epoll set; channel sockets use their slot index.
const WAKE_TOKEN: u64 = u64::MAX;

/// What a worker is asked to do.
#[derive(Debug)]
enum WorkerCommand {
    /// Serve a new channel.
    Open {
        chid: u64,
        socket: UdpSocket,
        relay: Box<ChannelRelay>,
        bound: BoundCount,
    },
    /// Pass a command to one of its channels.
    Channel { chid: u64, cmd: ChannelCommand },
    /// New limits for every channel, and the sweep period that goes with the timeout.
    Configure { relay: RelayConfig, sweep: Duration },
}

/// How a worker is woken from `epoll_wait`: an eventfd.
#[derive(Debug)]
struct Waker(OwnedFd);

impl Waker {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; on success we own the descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and nobody else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (never in practice) still
        // leaves the fd readable, which is all a wake needs.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when already reset is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// The control plane's end of a worker.
#[derive(Debug)]
pub struct WorkerHandle {
    commands: SyncSender<WorkerCommand>,
    waker: Arc<Waker>,
    /// Channels placed on this worker (kept by the registry, to spread new ones).
    pub channels: usize,
}

/// A clone of a worker's command queue: lets a command whose queue was full be sent later,
/// by a caller that no longer holds the registry (see [`WorkerHandle::try_command`]).
#[derive(Debug, Clone)]
pub struct CommandSender {
    commands: SyncSender<WorkerCommand>,
    waker: Arc<Waker>,
}

impl CommandSender {
    /// Gives every channel of the worker new limits (and the sweep period they imply),
    /// waiting while the queue is full.
    pub fn configure(&self, relay: RelayConfig) -> Result<(), WorkerGone> {
        let sweep = super::registry::sweep_interval(relay.peer_timeout);
        self.commands
            .send(WorkerCommand::Configure { relay, sweep })
            .map_err(|_| WorkerGone)?;
        self.waker.wake();
        Ok(())
    }

    /// Passes `cmd` to channel `chid`, waiting while the queue is full.
    pub fn send(&self, chid: u64, cmd: ChannelCommand) -> Result<(), WorkerGone> {
        self.commands
            .send(WorkerCommand::Channel { chid, cmd })
            .map_err(|_| WorkerGone)?;
        self.waker.wake();
        Ok(())
    }
}

/// What [`WorkerHandle::try_command`] did.
#[derive(Debug)]
pub enum Queued {
    /// The command is in the worker's queue.
    Sent,
    /// The queue was full: here is the command back, and a sender to wait on.
    Full(ChannelCommand, CommandSender),
}

/// The worker is gone (server stopping, or it failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("relay worker is gone")]
pub struct WorkerGone;

impl WorkerHandle {
    /// Starts worker `index` on its own thread. `sweep` is how often silent members are
    /// looked for. Returns its handle and a task that completes when the thread ends (the
    /// server awaits it on shutdown).
    pub fn spawn(
        index: usize,
        sweep: Duration,
        shutdown: Shutdown,
        runtime: &Handle,
        counters: Arc<WorkerCounters>,
        departures: Option<Departures>,
    ) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
        let waker = Arc::new(Waker::new()?);
        let epoll = Epoll::new()?;
        epoll.add(waker.0.as_raw_fd(), WAKE_TOKEN)?;
        let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let worker = Worker {
            epoll,
            waker: waker.clone(),
            commands: rx,
            slots: Vec::new(),
            by_chid: HashMap::new(),
            recv: RecvBatch::new(),
            queue: SendQueue::new(),
            sweep,
            shutdown: shutdown.clone(),
            counters,
            departures,
        };
        std::thread::Builder::new()
            .name(format!("kv-relay-{index}"))
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })?;
        // Wake the loop as soon as the stop signal comes, instead of at its next timeout.
        let (w, mut sd) = (waker.clone(), shutdown);
        runtime.spawn(async move {
            sd.recv().await;
            w.wake();
        });
        let task = runtime.spawn(async move {
            let _ = done_rx.await;
        });
        Ok((
            WorkerHandle {
                commands: tx,
                waker,
                channels: 0,
            },
            task,
        ))
    }

    fn send(&self, cmd: WorkerCommand) -> Result<(), WorkerGone> {
        self.commands.send(cmd).map_err(|_| WorkerGone)?;
        self.waker.wake();
        Ok(())
    }

    /// Hands the worker a new channel (socket already bound).
    pub fn open(
        &self,
        chid: u64,
        socket: UdpSocket,
        relay: ChannelRelay,
        bound: BoundCount,
    ) -> Result<(), WorkerGone> {
        self.send(WorkerCommand::Open {
            chid,
            socket,
            relay: Box::new(relay),
            bound,
        })
    }

    /// A sender for commands that may wait (sent without the registry lock held).
    pub fn sender(&self) -> CommandSender {
        CommandSender {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Passes `cmd` to channel `chid` on this worker.
    pub fn command(&self, chid: u64, cmd: ChannelCommand) -> Result<(), WorkerGone> {
        self.send(WorkerCommand::Channel { chid, cmd })
    }

    /// Passes `cmd` to channel `chid` without ever waiting: when the queue is full, the
    /// command comes back with a sender the caller can wait on once it has let go of
    /// whatever lock it holds.
    pub fn try_command(&self, chid: u64, cmd: ChannelCommand) -> Result<Queued, WorkerGone> {
        match self.commands.try_send(WorkerCommand::Channel { chid, cmd }) {
            Ok(()) => {
                self.waker.wake();
                Ok(Queued::Sent)
            }
            Err(TrySendError::Full(WorkerCommand::Channel { cmd, .. })) => Ok(Queued::Full(
                cmd,
                CommandSender {
                    commands: self.commands.clone(),
                    waker: self.waker.clone(),
                },
            )),
            Err(_) => Err(WorkerGone),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // The sender goes away with us; wake the loop so it sees the queue closed and
        // stops (a dropped registry must not leave threads behind).
        self.waker.wake();
    }
}

/// One channel served by a worker.
#[derive(Debug)]
struct Chan {
    socket: UdpSocket,
    relay: Box<ChannelRelay>,
    /// The relay's bound-member count as the control plane reads it (LIST_CHANNELS).
    bound: BoundCount,
    /// Members as last added to the worker's gauge.
    members: usize,
    /// The relay's statistics as last added to the worker's counters.
    published: RelayStats,
}

impl Chan {
    /// Publishes the bound-member count, and what changed since the last time to the
    /// worker's metrics; called after each turn that may change them (a batch, a command,
    /// a sweep), never per packet.
    fn publish(&mut self, counters: &WorkerCounters) {
        let bound = self.relay.bound_count();
        let was = self.bound.swap(bound, Ordering::Relaxed);
        WorkerCounters::shift(&counters.bound, bound as i64 - was as i64);
        let members = self.relay.member_count();
        WorkerCounters::shift(&counters.members, members as i64 - self.members as i64);
        self.members = members;
        let stats = self.relay.stats();
        if *stats != self.published {
            counters.add_stats(&self.published, stats);
            self.published = stats.clone();
        }
    }

    /// Takes the channel out of the worker's gauges (it is closing).
    fn unpublish(&self, counters: &WorkerCounters) {
        let bound = self.bound.swap(0, Ordering::Relaxed);
        WorkerCounters::shift(&counters.bound, -(bound as i64));
        WorkerCounters::shift(&counters.members, -(self.members as i64));
        WorkerCounters::shift(&counters.channels, -1);
    }
}

/// A channel's bound-member count, written by its worker and read without asking it, so
/// listing every channel costs no worker a turn.
pub type BoundCount = Arc<AtomicUsize>;

/// Told, from a worker's thread, which bound members of a channel timed out (`chid`,
/// uids): the delivery service removes them from the channel's group.
/// Set once (the control plane is made after the stored channels are reopened), read by
/// every worker.
#[derive(Clone, Default)]
pub struct Departures(pub Arc<std::sync::OnceLock<DepartureFn>>);

/// What [`Departures`] calls.
pub type DepartureFn = Box<dyn Fn(u64, &[u64]) + Send + Sync>;

/// A worker's state; lives on its thread.
#[derive(Debug)]
struct Worker {
    epoll: Epoll,
    waker: Arc<Waker>,
    commands: Receiver<WorkerCommand>,
    /// Channels by epoll token; freed slots are reused.
    slots: Vec<Option<Chan>>,
    /// chid → slot.
    by_chid: HashMap<u64, usize>,
    /// Receive buffers shared by all the worker's channels.
    recv: RecvBatch,
    /// Send queue shared by all the worker's channels.
    queue: SendQueue,
    /// Peer-timeout sweep period.
    sweep: Duration,
    shutdown: Shutdown,
    /// This worker's metrics (it is their only writer).
    counters: Arc<WorkerCounters>,
    /// Who hears of timeouts.
    departures: Option<Departures>,
}

impl std::fmt::Debug for Departures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Departures")
    }
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut next_sweep = Instant::now() + self.sweep;
        loop {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            // Cannot fail on a valid epoll descriptor and buffer; a failed wait reports no
            // events and the loop goes on to its shutdown check and sweep.
            let _ = self.epoll.wait(&mut events, wait);
            let busy_since = Instant::now();
            for token in events.tokens() {
                if token == WAKE_TOKEN {
                    self.waker.reset();
                    if !self.take_commands() {
                        return self.stop();
                    }
                } else {
                    self.serve(token as usize);
                }
            }
            if self.shutdown.is_shutdown() {
                return self.stop();
            }
            let now = Instant::now();
            if now >= next_sweep {
                for chan in self.slots.iter_mut().flatten() {
                    let mut sink = BatchSink::new(&mut self.queue, chan.socket.as_raw_fd());
                    chan.relay.handle_timeout(now, &mut sink);
                    drop(sink);
                    let gone = chan.relay.take_timed_out();
                    if let (false, Some(tell)) = (gone.is_empty(), &self.departures) {
                        if let Some(f) = tell.0.get() {
                            f(chan.relay.chid(), &gone);
                        }
                    }
                    chan.publish(&self.counters);
                }
                next_sweep = now + self.sweep;
            }
            self.publish_turn(busy_since);
        }
    }

    /// Publishes the turn's sends and its working time (the worker is the counters' only
    /// writer, so totals are stored, not added).
    fn publish_turn(&self, busy_since: Instant) {
        let c = &self.counters;
        c.packets_out.store(self.queue.sent, Ordering::Relaxed);
        c.bytes_out.store(self.queue.sent_bytes, Ordering::Relaxed);
        let send_buffer = DropReason::ALL
            .iter()
            .position(|r| *r == DropReason::SendBuffer)
            .unwrap_or(0);
        c.drops[send_buffer].store(self.queue.dropped, Ordering::Relaxed);
        let busy = busy_since.elapsed().as_nanos() as u64;
        c.busy_ns.fetch_add(busy, Ordering::Relaxed);
    }

    /// The hot path: drains channel `slot`'s socket in batches and forwards.
    fn serve(&mut self, slot: usize) {
        let Some(Some(chan)) = self.slots.get_mut(slot) else {
            return; // closed earlier in this turn
        };
        let fd = chan.socket.as_raw_fd();
        for _ in 0..BATCHES_PER_TURN {
            let n = match self.recv.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors and the like; the socket stays usable.
                    tracing::trace!(chid = chan.relay.chid(), error = %e, "recvmmsg failed");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let now = Instant::now();
            let mut sink = BatchSink::new(&mut self.queue, fd);
            let mut bytes = 0u64;
            for i in 0..n {
                let (src, data) = self.recv.get(i);
                bytes += data.len() as u64;
                let Some(src) = src else { continue };
                sink.set_current(data);
                chan.relay.handle_datagram(now, src, data, &mut sink);
            }
            self.counters
                .packets_in
                .fetch_add(n as u64, Ordering::Relaxed);
            self.counters.bytes_in.fetch_add(bytes, Ordering::Relaxed);
            // Before the sink flushes, so whoever gets an ACK for a bind sees it counted.
            chan.publish(&self.counters);
            drop(sink);
            if n < RECV_BATCH {
                break;
            }
        }
    }

    /// Applies every queued command. False when the registry is gone (stop).
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(WorkerCommand::Open {
                    chid,
                    socket,
                    relay,
                    bound,
                }) => self.open(chid, socket, relay, bound),
                Ok(WorkerCommand::Channel { chid, cmd }) => self.command(chid, cmd),
                Ok(WorkerCommand::Configure { relay, sweep }) => {
                    self.sweep = sweep;
                    for chan in self.slots.iter_mut().flatten() {
                        chan.relay.set_config(relay.clone());
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn open(&mut self, chid: u64, socket: UdpSocket, relay: Box<ChannelRelay>, bound: BoundCount) {
        set_recv_buffer(&socket, SOCKET_RECV_BUFFER);
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Err(e) = self.epoll.add(socket.as_raw_fd(), slot as u64) {
            tracing::error!(chid, error = %e, "cannot watch channel socket");
            return;
        }
        let published = relay.stats().clone();
        self.slots[slot] = Some(Chan {
            socket,
            relay,
            bound,
            members: 0,
            published,
        });
        WorkerCounters::shift(&self.counters.channels, 1);
        self.by_chid.insert(chid, slot);
    }

    fn command(&mut self, chid: u64, cmd: ChannelCommand) {
        // An unknown chid drops the reply sender: the caller sees the channel as gone.
        let Some(&slot) = self.by_chid.get(&chid) else {
            return;
        };
        let Some(chan) = self.slots[slot].as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut sink = BatchSink::new(&mut self.queue, chan.socket.as_raw_fd());
        match cmd {
            ChannelCommand::Join {
                uid,
                admission,
                reply,
            } => {
                let joined = chan.relay.join(now, uid, admission);
                chan.publish(&self.counters);
                let _ = reply.send(joined);
            }
            ChannelCommand::Leave {
                uid,
                notify_leaver,
                reply,
            } => {
                let left = chan.relay.leave(now, uid, notify_leaver, &mut sink);
                // Before the reply, so a listing after the LEAVE no longer counts it.
                chan.publish(&self.counters);
                let _ = reply.send(left);
            }
            ChannelCommand::Members { bound_only, reply } => {
                let _ = reply.send(if bound_only {
                    chan.relay.bound_members().collect()
                } else {
                    chan.relay.members().collect()
                });
            }
            ChannelCommand::Close => {
                chan.relay.shutdown(now, &mut sink);
                drop(sink);
                self.close(slot);
            }
            #[cfg(test)]
            ChannelCommand::Stall(d) => std::thread::sleep(d),
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(chan) = self.slots[slot].take() {
            chan.unpublish(&self.counters);
            self.epoll.delete(chan.socket.as_raw_fd());
            self.by_chid.remove(&chan.relay.chid());
            tracing::debug!(chid = chan.relay.chid(), stats = ?chan.relay.stats(), "channel stopped");
        }
    }

    /// Server stop (or registry gone): SHUTDOWN to every channel's members, then exit.
    fn stop(mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if let Some(chan) = self.slots[slot].as_mut() {
                let mut sink = BatchSink::new(&mut self.queue, chan.socket.as_raw_fd());
                chan.relay.shutdown(now, &mut sink);
                drop(sink);
                self.close(slot);
            }
        }
        tracing::debug!(
            sent = self.queue.sent,
            send_dropped = self.queue.dropped,
            "relay worker stopped"
        );
    }
}

fn set_recv_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: passes a live c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot size channel socket buffer");
    }
}
