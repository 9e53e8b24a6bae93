//! The output clock: every 5 ms it hands the packets the socket thread queued to the
//! [`RxPipeline`] (which this thread owns: no lock between network and playout), pulls one
//! mixed block and hands it to the sink, and it turns the pipeline's per-peer statistics
//! into talking and stats events and a published snapshot.
//!
//! For a file (or no sink) the clock is the system clock on an absolute schedule: block `k`
//! is produced at `recording_started + k * 5 ms`, so output sample `i` stands for the
//! wall-clock time `recording_started + i / 48 kHz`. Late ticks are caught up, never
//! skipped, so the file stays continuous. For a device the device's consumption drives it
//! (and the system clock while the device stalls, see [`DeviceQueue`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_e2ee::EpochUpdate;
use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;

use crate::audio::{device::OutputStream, RxPipeline, WavSink};

use super::clock::sleep_until;
use super::events::{SessionEvent, SessionStats};
use super::handoff::PacketDrain;
use super::mic_path::PlayedTap;
use super::shared::{lock, Shared};

/// Samples per block: 5 ms at 48 kHz. The block is the grain of the playout: a frame is
/// needed at the start of the block that plays its first sample, so a finer grain holds
/// less delay (on average half a block) for the same safety.
pub const BLOCK: usize = 240;
/// Talking indicators are refreshed every this many blocks (50 ms).
const TALK_EVERY: u64 = 10;
/// The statistics snapshot is published every this many blocks (100 ms).
const PUBLISH_EVERY: u64 = 20;
/// Stats events every this many blocks (1 s).
const STATS_EVERY: u64 = 200;
/// Least audio kept queued for a device: enough to ride over scheduling hiccups, small
/// enough not to add noticeable latency.
const DEVICE_QUEUE_MIN: usize = 960;
/// Most audio kept queued for a device, whatever its period (bounds the latency a device
/// with huge callbacks can add).
pub(crate) const DEVICE_QUEUE_MAX: usize = 14_400;

/// How much to keep queued for a playback device. A device takes audio in callbacks of
/// its own period (PulseAudio: ~100 ms); a queue shorter than one period is padded with
/// silence every callback. The period is not known up front, so it is learned: the largest
/// amount the device took at once, plus one block of margin.
///
/// It also decides when the device no longer sets the pace: a device that takes nothing
/// for several periods (suspended, or starved by a busy system) would otherwise stop the
/// playout, and the jitter buffer would fill with stale audio until it overflows. Then
/// the system clock paces the playout and blocks are dropped, so the jitter buffer keeps
/// playing out and the device resumes with current audio.
#[derive(Debug)]
struct DeviceQueue {
    /// Queue level after our last look.
    last: usize,
    /// Largest single drain seen, samples.
    period: usize,
    /// When we started waiting for the device to drain, if we are waiting.
    waiting_since: Option<Instant>,
    /// While the device stalls: when the system clock wants the next block.
    stall_tick: Option<Instant>,
}

/// What the playout does next for a device sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// The device still has enough queued: look again shortly.
    Wait,
    /// Produce a block and queue it.
    Push,
    /// The device stalls: produce a block on the system clock and drop it.
    Drop,
}

/// Least time the device may take nothing before it counts as stalled.
const STALL_MIN: Duration = Duration::from_millis(250);
/// One block of audio.
const BLOCK_TIME: Duration = Duration::from_millis(5);

impl DeviceQueue {
    fn new() -> Self {
        Self {
            last: 0,
            period: 0,
            waiting_since: None,
            stall_tick: None,
        }
    }

    /// How long the device may take nothing before the system clock takes over: three of
    /// its periods, so the normal gap between two callbacks never counts as a stall.
    fn stall_after(&self) -> Duration {
        let periods = 3 * self.period.max(BLOCK);
        Duration::from_secs_f64(periods as f64 / 48_000.0).max(STALL_MIN)
    }

    /// Decides, at `now` with `level` samples queued, whether to produce a block.
    fn pace(&mut self, now: Instant, level: usize) -> Pace {
        self.observe(level);
        if self.last < self.target() {
            self.waiting_since = None;
            self.stall_tick = None;
            return Pace::Push;
        }
        if let Some(tick) = self.stall_tick {
            if now < tick {
                return Pace::Wait;
            }
            self.stall_tick = Some(tick + BLOCK_TIME);
            return Pace::Drop;
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.duration_since(since) < self.stall_after() {
            return Pace::Wait;
        }
        self.stall_tick = Some(now + BLOCK_TIME);
        Pace::Drop
    }

    /// Notes the queue level `now` (after the device may have taken some).
    fn observe(&mut self, now: usize) {
        if now < self.last {
            self.period = self.period.max(self.last - now);
        }
        self.last = now;
    }

    /// Notes that we pushed `n` samples.
    fn pushed(&mut self, n: usize) {
        self.last += n;
    }

    /// The level to keep the queue at.
    fn target(&self) -> usize {
        (self.period + BLOCK).clamp(DEVICE_QUEUE_MIN, DEVICE_QUEUE_MAX)
    }
}

/// Where mixed audio goes.
pub(crate) enum PlayoutSink {
    Discard,
    Wav(WavSink),
    /// The stream handle keeps the device open; the ring feeds its callback.
    Device {
        stream: OutputStream,
        ring: HeapProd<f32>,
    },
}

impl std::fmt::Debug for PlayoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Discard => "Discard",
            Self::Wav(_) => "Wav",
            Self::Device { .. } => "Device",
        })
    }
}

/// Builds a stats snapshot; also used by the session owner.
pub(crate) fn snapshot(shared: &Shared) -> SessionStats {
    SessionStats {
        elapsed_ms: shared.clock.now_ms(),
        link: *lock(&shared.link),
        packets_sent: shared.packets_sent.load(Ordering::Relaxed),
        packets_received: shared.packets_received.load(Ordering::Relaxed),
        packets_ignored: shared.packets_ignored.load(Ordering::Relaxed),
        events_dropped: shared.events.dropped(),
        late_blocks: shared.late_blocks.load(Ordering::Relaxed),
        input_overruns: shared
            .input_device
            .as_ref()
            .map_or(0, |c| c.overruns.load(Ordering::Relaxed)),
        output_underruns: shared
            .output_device
            .as_ref()
            .map_or(0, |c| c.underruns.load(Ordering::Relaxed)),
        peers: lock(&shared.rx_stats).clone(),
        e2ee: (*lock(&shared.e2ee_rx)).map(|mut s| {
            s.encrypted = lock(&shared.tx)
                .protector_mut()
                .map_or(0, |p| p.stats().encrypted);
            s
        }),
    }
}

/// Emits talking transitions of peers since the last call.
fn talking(shared: &Shared, rx: &RxPipeline, talking: &mut BTreeSet<u64>) {
    let now: BTreeSet<u64> = rx.talking().collect();
    for &uid in now.difference(talking) {
        shared.events.emit(SessionEvent::TalkingStarted { uid });
    }
    for &uid in talking.difference(&now) {
        shared.events.emit(SessionEvent::TalkingStopped { uid });
    }
    *talking = now;
}

/// Runs until stopped; returns the sink so the owner can finish it (close the WAV file).
pub(crate) fn run(
    shared: Arc<Shared>,
    mut sink: PlayoutSink,
    mut rx: RxPipeline,
    mut drain: PacketDrain,
    mut played: PlayedTap,
    epochs: Option<Receiver<EpochUpdate>>,
) -> Result<(), String> {
    let mut block = [0.0f32; BLOCK];
    let mut talkers = BTreeSet::new();
    let start = Instant::now();
    let mut announced = false;
    let mut result = Ok(());
    let mut queue = DeviceQueue::new();
    for k in 0u64.. {
        let mut pace = Pace::Push;
        let due = match &mut sink {
            PlayoutSink::Device { ring: out, .. } => {
                // Let the device drain below the queue target before producing more.
                loop {
                    if shared.stopped() {
                        break;
                    }
                    pace = queue.pace(Instant::now(), out.occupied_len());
                    if pace != Pace::Wait {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                if shared.stopped() {
                    break;
                }
                Instant::now()
            }
            _ => {
                let due = start + Duration::from_micros(5_000 * k);
                if !sleep_until(due, &shared.stop) {
                    break;
                }
                if due.elapsed() > BLOCK_TIME {
                    shared.late_blocks.fetch_add(1, Ordering::Relaxed);
                }
                due
            }
        };
        if !announced {
            announced = true;
            // For a device, sample 0 plays once what is already queued has played.
            let queued = match &sink {
                PlayoutSink::Device { ring: out, .. } => out.occupied_len(),
                _ => 0,
            };
            let at = due + Duration::from_secs_f64(queued as f64 / 48_000.0);
            shared.events.emit(SessionEvent::RecordingStarted {
                unix_ms: shared.clock.unix_ms_f64(at),
            });
        }
        if let (Some(epochs), Some(p)) = (&epochs, rx.protector_mut()) {
            // New frame keys from the MLS owner (an epoch change): a few per call at most.
            while let Ok(u) = epochs.try_recv() {
                p.apply(&u, Instant::now());
            }
        }
        drain.drain_into(&mut rx);
        rx.pull(shared.clock.ms(due), &mut block);
        if shared.deafened.load(Ordering::Relaxed) {
            block.fill(0.0);
        }
        match &mut sink {
            PlayoutSink::Discard => played.played(&block),
            PlayoutSink::Wav(w) => {
                if let Err(e) = w.write(&block) {
                    result = Err(e.to_string());
                    break;
                }
                played.played(&block);
            }
            PlayoutSink::Device { .. } if pace == Pace::Drop => {
                shared.late_blocks.fetch_add(1, Ordering::Relaxed);
            }
            PlayoutSink::Device { ring: out, .. } => {
                // Never blocks: with the queue target kept above, there is room.
                let n = out.push_slice(&block);
                queue.pushed(n);
                // The echo canceller's reference: exactly what the device will play.
                played.played(&block[..n]);
                shared
                    .output_queued
                    .store(out.occupied_len(), Ordering::Relaxed);
                if n < block.len() {
                    shared.late_blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if k % TALK_EVERY == 0 {
            talking(&shared, &rx, &mut talkers);
        }
        if k % PUBLISH_EVERY == 0 {
            *lock(&shared.rx_stats) = rx.peer_stats();
            if let Some(p) = rx.protector_mut() {
                *lock(&shared.e2ee_rx) = Some(p.stats());
            }
        }
        if k % STATS_EVERY == STATS_EVERY - 1 {
            shared
                .events
                .emit(SessionEvent::Stats(Box::new(snapshot(&shared))));
        }
    }
    *lock(&shared.rx_stats) = rx.peer_stats();
    if let Some(p) = rx.protector_mut() {
        *lock(&shared.e2ee_rx) = Some(p.stats());
    }
    if let PlayoutSink::Wav(w) = sink {
        if let Err(e) = w.finish() {
            result = result.and(Err(e.to_string()));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_device_hands_the_pace_to_the_clock() {
        let mut q = DeviceQueue::new();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Learn a 100 ms period: fill to the target, then the device takes 4800 at once.
        assert_eq!(q.pace(ms(0), 0), Pace::Push);
        q.pushed(4800 + BLOCK);
        assert_eq!(q.pace(ms(1), 4800 + BLOCK), Pace::Wait);
        assert_eq!(q.pace(ms(2), BLOCK), Pace::Push);
        q.pushed(4800);
        // A normal callback gap (100 ms) is waited out, not treated as a stall.
        assert_eq!(q.pace(ms(3), 4800 + BLOCK), Pace::Wait);
        assert_eq!(q.pace(ms(103), 4800 + BLOCK), Pace::Wait);
        // Three periods with nothing taken: the clock paces, one dropped block per 10 ms.
        assert_eq!(q.stall_after(), Duration::from_millis(300));
        assert_eq!(q.pace(ms(303), 4800 + BLOCK), Pace::Drop);
        assert_eq!(q.pace(ms(305), 4800 + BLOCK), Pace::Wait);
        assert_eq!(q.pace(ms(313), 4800 + BLOCK), Pace::Drop);
        assert_eq!(q.pace(ms(323), 4800 + BLOCK), Pace::Drop);
        // The device takes audio again: back to its pace, the stall forgotten.
        assert_eq!(q.pace(ms(330), BLOCK), Pace::Push);
        q.pushed(4800);
        assert_eq!(q.pace(ms(340), 4800 + BLOCK), Pace::Wait);
        assert_eq!(q.pace(ms(500), 4800 + BLOCK), Pace::Wait);
    }

    #[test]
    fn device_queue_learns_the_period() {
        let mut q = DeviceQueue::new();
        assert_eq!(q.target(), DEVICE_QUEUE_MIN);
        // We fill to the target; a 100 ms callback takes 4800 samples at once.
        q.observe(0);
        q.pushed(960);
        q.observe(960);
        q.observe(0);
        assert_eq!(q.target(), 960 + BLOCK);
        q.pushed(1440);
        q.observe(1440);
        q.observe(0);
        assert_eq!(q.target(), 1440 + BLOCK);
        q.pushed(4800);
        q.observe(0);
        assert_eq!(q.target(), 4800 + BLOCK);
        // Never beyond the bound.
        q.pushed(100_000);
        q.observe(0);
        assert_eq!(q.target(), DEVICE_QUEUE_MAX);
    }
}
