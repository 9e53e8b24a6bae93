//! The output clock: every 10 ms it pulls one mixed block from the
//! [`RxPipeline`](crate::audio::RxPipeline) and hands it to the sink, and it turns the
//! mixer's per-peer statistics into talking and stats events.
//!
//! For a file (or no sink) the clock is the system clock on an absolute schedule: block `k`
//! is produced at `recording_started + k * 10 ms`, so output sample `i` stands for the
//! wall-clock time `recording_started + i / 48 kHz`. Late ticks are caught up, never
//! skipped, so the file stays continuous. For a device the device's consumption drives it.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;

use crate::audio::{device::OutputStream, WavSink};

use super::clock::sleep_until;
use super::events::{SessionEvent, SessionStats};
use super::shared::{lock, Shared};

/// Samples per block: 10 ms at 48 kHz.
pub const BLOCK: usize = 480;
/// Talking indicators are refreshed every this many blocks (50 ms).
const TALK_EVERY: u64 = 5;
/// Stats events every this many blocks (1 s).
const STATS_EVERY: u64 = 100;
/// Audio kept queued for a device beyond the block being played: enough to ride over
/// scheduling hiccups, small enough not to add noticeable latency.
const DEVICE_QUEUE: usize = 2 * BLOCK;

/// Where mixed audio goes.
pub(crate) enum PlayoutSink {
    Discard,
    Wav(WavSink),
    /// The stream handle keeps the device open; the ring feeds its callback.
    Device {
        _stream: OutputStream,
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
        peers: lock(&shared.rx).peer_stats(),
    }
}

/// Emits talking transitions of peers since the last call.
fn talking(shared: &Shared, talking: &mut BTreeSet<u64>) {
    let now: BTreeSet<u64> = lock(&shared.rx)
        .peer_stats()
        .iter()
        .filter(|p| p.talking)
        .map(|p| p.uid)
        .collect();
    for &uid in now.difference(talking) {
        shared.events.emit(SessionEvent::TalkingStarted { uid });
    }
    for &uid in talking.difference(&now) {
        shared.events.emit(SessionEvent::TalkingStopped { uid });
    }
    *talking = now;
}

/// Runs until stopped; returns the sink so the owner can finish it (close the WAV file).
pub(crate) fn run(shared: Arc<Shared>, mut sink: PlayoutSink) -> Result<(), String> {
    let mut block = [0.0f32; BLOCK];
    let mut talkers = BTreeSet::new();
    let start = Instant::now();
    let mut announced = false;
    let mut result = Ok(());
    for k in 0u64.. {
        let due = match &mut sink {
            PlayoutSink::Device { ring: out, .. } => {
                // Let the device drain to the queue target before producing more.
                while out.occupied_len() >= DEVICE_QUEUE && !shared.stopped() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if shared.stopped() {
                    break;
                }
                Instant::now()
            }
            _ => {
                let due = start + Duration::from_millis(10 * k);
                if !sleep_until(due, &shared.stop) {
                    break;
                }
                if due.elapsed() > Duration::from_millis(10) {
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
        lock(&shared.rx).pull(shared.clock.ms(due), &mut block);
        if shared.deafened.load(Ordering::Relaxed) {
            block.fill(0.0);
        }
        match &mut sink {
            PlayoutSink::Discard => {}
            PlayoutSink::Wav(w) => {
                if let Err(e) = w.write(&block) {
                    result = Err(e.to_string());
                    break;
                }
            }
            PlayoutSink::Device { ring: out, .. } => {
                // Never blocks: with the queue target kept above, there is room.
                let n = out.push_slice(&block);
                if n < block.len() {
                    shared.late_blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if k % TALK_EVERY == 0 {
            talking(&shared, &mut talkers);
        }
        if k % STATS_EVERY == STATS_EVERY - 1 {
            shared
                .events
                .emit(SessionEvent::Stats(Box::new(snapshot(&shared))));
        }
    }
    if let PlayoutSink::Wav(w) = sink {
        if let Err(e) = w.finish() {
            result = result.and(Err(e.to_string()));
        }
    }
    result
}
