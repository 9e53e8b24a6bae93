//! Relay counters: plain atomics each relay worker adds to after a batch (never a lock
//! per packet), read only when Prometheus scrapes.
//!
//! Every worker owns one [`WorkerCounters`] and is its only writer, so its cache line
//! stays with its thread between scrapes. [`RelayMetrics`] lists them (a mutex taken when
//! a worker starts and at scrape time, never by the workers' hot path) and encodes their
//! sums as Prometheus metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::channel::RelayStats;

/// Why the relay dropped a datagram, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not exactly 512 bytes.
    Size,
    /// From a uid that is not a member of the channel.
    UnknownUid,
    /// From a member's uid at another address than its bound one.
    Address,
    /// Over the member's packet rate.
    RateLimit,
    /// A system packet with a bad checksum or an operation clients may not send.
    Checksum,
    /// A BIND with a bad or stale cookie, a wrong key or a failed proof.
    Bind,
    /// Not sent: the destination's receive budget was spent.
    ReceiverBudget,
    /// Not sent: the kernel refused it (full socket buffer).
    SendBuffer,
}

impl DropReason {
    /// Every reason, in the order of [`WorkerCounters::drops`].
    pub const ALL: [DropReason; 8] = [
        DropReason::Size,
        DropReason::UnknownUid,
        DropReason::Address,
        DropReason::RateLimit,
        DropReason::Checksum,
        DropReason::Bind,
        DropReason::ReceiverBudget,
        DropReason::SendBuffer,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Size => "size",
            DropReason::UnknownUid => "unknown_uid",
            DropReason::Address => "address",
            DropReason::RateLimit => "rate_limit",
            DropReason::Checksum => "checksum",
            DropReason::Bind => "bind",
            DropReason::ReceiverBudget => "receiver_budget",
            DropReason::SendBuffer => "send_buffer",
        }
    }

    /// This reason's count in a relay's statistics (`SendBuffer` is the worker's, not a
    /// relay's: 0 here).
    fn of(self, s: &RelayStats) -> u64 {
        match self {
            DropReason::Size => s.wrong_size,
            DropReason::UnknownUid => s.not_member,
            DropReason::Address => s.wrong_address,
            DropReason::RateLimit => s.rate_limited,
            DropReason::Checksum => s.bad_system,
            DropReason::Bind => s.bad_cookie + s.wrong_kex + s.bad_proof + s.address_taken,
            DropReason::ReceiverBudget => s.rx_limited,
            DropReason::SendBuffer => 0,
        }
    }
}

/// One relay worker's counters. Written by that worker only, after each batch.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub packets_in: AtomicU64,
    /// Their bytes.
    pub bytes_in: AtomicU64,
    /// Datagrams handed to the kernel.
    pub packets_out: AtomicU64,
    /// Their bytes.
    pub bytes_out: AtomicU64,
    /// Nanoseconds spent working (not waiting in `epoll_wait`).
    pub busy_ns: AtomicU64,
    /// Drops by [`DropReason`] (indexed as [`DropReason::ALL`]).
    pub drops: [AtomicU64; DropReason::ALL.len()],
    /// Channels served.
    pub channels: AtomicI64,
    /// Members of those channels, bound or not yet.
    pub members: AtomicI64,
    /// Members with a proven address.
    pub bound: AtomicI64,
}

impl WorkerCounters {
    /// Adds what a relay's statistics gained since `before`.
    pub fn add_stats(&self, before: &RelayStats, now: &RelayStats) {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let d = reason.of(now).wrapping_sub(reason.of(before));
            if d != 0 {
                self.drops[i].fetch_add(d, Relaxed);
            }
        }
    }

    /// Counts `n` drops for `reason`.
    pub fn add_drops(&self, reason: DropReason, n: u64) {
        if n != 0 {
            let i = DropReason::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            self.drops[i].fetch_add(n, Relaxed);
        }
    }

    /// Moves a gauge by `delta` (a change in channels, members or bound members).
    pub fn shift(gauge: &AtomicI64, delta: i64) {
        if delta != 0 {
            gauge.fetch_add(delta, Relaxed);
        }
    }
}

/// The relay's side of the metrics: every worker's counters, and the server's signatures.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// One entry per started worker (added once, when it starts).
    workers: Mutex<Vec<Arc<WorkerCounters>>>,
    /// Ed25519 signatures the server made (its signed X25519 session key, once a start).
    pub signatures: AtomicU64,
}

impl RelayMetrics {
    /// Counters for a worker that is starting.
    pub fn add_worker(&self) -> Arc<WorkerCounters> {
        let c = Arc::new(WorkerCounters::default());
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        c
    }

    fn workers(&self) -> Vec<Arc<WorkerCounters>> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Collector for RelayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = self.workers();
        let sum = |f: &dyn Fn(&WorkerCounters) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();
        let gauge =
            |f: &dyn Fn(&WorkerCounters) -> i64| workers.iter().map(|w| f(w)).sum::<i64>().max(0);
        let counters: [(&str, &str, u64); 4] = [
            (
                "kv_relay_packets_received",
                "Datagrams received on channel sockets.",
                sum(&|w| w.packets_in.load(Relaxed)),
            ),
            (
                "kv_relay_received_bytes",
                "Bytes received on channel sockets.",
                sum(&|w| w.bytes_in.load(Relaxed)),
            ),
            (
                "kv_relay_packets_sent",
                "Datagrams sent from channel sockets.",
                sum(&|w| w.packets_out.load(Relaxed)),
            ),
            (
                "kv_relay_sent_bytes",
                "Bytes sent from channel sockets.",
                sum(&|w| w.bytes_out.load(Relaxed)),
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, i64); 3] = [
            (
                "kv_channels",
                "Channels open.",
                gauge(&|w| w.channels.load(Relaxed)),
            ),
            (
                "kv_members",
                "Channel members, bound or not yet.",
                gauge(&|w| w.members.load(Relaxed)),
            ),
            (
                "kv_bound_members",
                "Channel members with a proven voice address.",
                gauge(&|w| w.bound.load(Relaxed)),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }

        let mut drops = encoder.encode_descriptor(
            "kv_relay_dropped",
            "Datagrams dropped by the relay, by reason.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let v = sum(&|w| w.drops[i].load(Relaxed));
            let labels = [("reason", reason.label())];
            ConstCounter::new(v).encode(drops.encode_family(&labels)?)?;
        }

        let mut busy = encoder.encode_descriptor(
            "kv_relay_busy_seconds",
            "Time each relay worker spent working (not waiting for packets).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (i, w) in workers.iter().enumerate() {
            let secs = w.busy_ns.load(Relaxed) as f64 / 1e9;
            let worker = i.to_string();
            let labels = [("worker", worker.as_str())];
            ConstCounter::new(secs).encode(busy.encode_family(&labels)?)?;
        }

        let sig = ConstCounter::new(self.signatures.load(Relaxed));
        sig.encode(encoder.encode_descriptor(
            "kv_signatures",
            "Ed25519 signatures the server made.",
            None,
            sig.metric_type(),
        )?)?;
        Ok(())
    }
}
