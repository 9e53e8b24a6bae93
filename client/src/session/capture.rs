//! The capture thread: takes frames from the input in real time, runs them through the
//! [`TxPipeline`](crate::audio::TxPipeline) and sends the resulting packets.
//!
//! A file or silence is paced by the clock: frame `n` (samples `n*F .. (n+1)*F`) is sent
//! when its last sample would have been spoken, `capture_started + (n+1)*F/48 kHz`, exactly
//! as a microphone delivers it. A device is paced by the device itself.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_proto::packet::{encode_regular, DATA_SIZE};
use kv_proto::PACKET_SIZE;
use ringbuf::traits::{Consumer, Observer};
use ringbuf::HeapCons;

use crate::audio::device::InputStream;

use super::clock::sleep_until;
use super::events::SessionEvent;
use super::mic_path::{MicPath, RunningMic};
use super::shared::{lock, Shared};

/// Where the capture thread reads samples.
pub(crate) enum CaptureInput {
    /// Samples played once, then silence.
    Samples(Vec<f32>),
    /// Silence forever.
    Silence,
    /// A device's ring buffer, filled by its callback (the stream handle keeps it open).
    Device(InputStream, HeapCons<f32>),
}

impl std::fmt::Debug for CaptureInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Samples(s) => write!(f, "Samples({})", s.len()),
            Self::Silence => f.write_str("Silence"),
            Self::Device(..) => f.write_str("Device"),
        }
    }
}

/// Per-thread sending state.
struct Sender {
    shared: Arc<Shared>,
    socket: UdpSocket,
    data: [u8; DATA_SIZE],
    packet: [u8; PACKET_SIZE],
    talking: bool,
    errors: u64,
    /// High-pass, echo cancellation and gain control, ahead of the pipeline.
    mic: RunningMic,
}

impl Sender {
    /// One frame through the pipeline, and out when the gate is open.
    fn frame(&mut self, pcm: &mut [f32], at: Instant) {
        // Also while muted: the echo canceller keeps following the room.
        self.mic.frame(&self.shared, pcm);
        if self.shared.muted.load(Ordering::Relaxed) {
            // Silence, not a gap: the gate closes the spurt properly and sequence
            // numbers stay contiguous.
            pcm.fill(0.0);
        }
        let now_ms = self.shared.clock.ms(at);
        let res = lock(&self.shared.tx).process_frame(pcm, now_ms, &mut self.data);
        let sending = match res {
            Ok(Some(len)) => {
                encode_regular(self.shared.uid, &self.data[..len], &mut self.packet);
                match self.socket.send(&self.packet) {
                    Ok(_) => {
                        self.shared.packets_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.errors += 1;
                        if self.errors.is_power_of_two() {
                            tracing::warn!(error = %e, count = self.errors, "voice send failed");
                        }
                    }
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.errors += 1;
                if self.errors.is_power_of_two() {
                    tracing::warn!(error = %e, count = self.errors, "capture pipeline failed");
                }
                false
            }
        };
        if sending != self.talking {
            self.talking = sending;
            let uid = self.shared.uid;
            self.shared.events.emit(if sending {
                SessionEvent::TalkingStarted { uid }
            } else {
                SessionEvent::TalkingStopped { uid }
            });
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, socket: UdpSocket, input: CaptureInput, mic: MicPath) {
    let frame = lock(&shared.tx).frame_samples();
    let mut sender = Sender {
        shared: shared.clone(),
        socket,
        data: [0; DATA_SIZE],
        packet: [0; PACKET_SIZE],
        talking: false,
        errors: 0,
        mic: mic.start(),
    };
    let mut pcm = vec![0.0f32; frame];
    match input {
        CaptureInput::Samples(samples) => paced(&shared, &mut sender, &mut pcm, &samples),
        CaptureInput::Silence => paced(&shared, &mut sender, &mut pcm, &[]),
        CaptureInput::Device(_stream, ring) => from_device(&shared, &mut sender, &mut pcm, ring),
    }
}

/// Longest a file's playback waits for the link to be admitted.
const ADMISSION_WAIT: Duration = Duration::from_secs(3);

/// Plays `samples` (then silence) in real time, one frame at a time. A file starts once the
/// server has admitted the link (or after [`ADMISSION_WAIT`]): until the binding handshake
/// is done the relay drops our voice, and a recording should not lose its first words to
/// it (a live microphone cannot wait, so devices do not).
fn paced(shared: &Shared, sender: &mut Sender, pcm: &mut [f32], samples: &[f32]) {
    let frame = pcm.len();
    if !samples.is_empty() {
        let deadline = Instant::now() + ADMISSION_WAIT;
        while !lock(&shared.link).admitted && Instant::now() < deadline {
            if shared.stopped() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let start = Instant::now();
    shared.events.emit(SessionEvent::CaptureStarted {
        unix_ms: shared.clock.unix_ms_f64(start),
    });
    let mut ended = samples.is_empty();
    for n in 0u64.. {
        let end_sample = (n + 1) * frame as u64;
        let due = start + Duration::from_secs_f64(end_sample as f64 / 48_000.0);
        if !sleep_until(due, &shared.stop) {
            return;
        }
        let from = (n as usize).saturating_mul(frame).min(samples.len());
        let to = (from + frame).min(samples.len());
        pcm[..to - from].copy_from_slice(&samples[from..to]);
        pcm[to - from..].fill(0.0);
        if !ended && to == samples.len() {
            ended = true;
            shared.events.emit(SessionEvent::InputEnded);
        }
        sender.frame(pcm, due);
    }
}

/// Takes frames from a capture device as they arrive.
fn from_device(shared: &Shared, sender: &mut Sender, pcm: &mut [f32], mut ring: HeapCons<f32>) {
    let mut started = false;
    while !shared.stopped() {
        if ring.occupied_len() < pcm.len() {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let now = Instant::now();
        if !started {
            started = true;
            // The samples waiting were captured before now: date sample 0 back by them.
            let waiting = Duration::from_secs_f64(ring.occupied_len() as f64 / 48_000.0);
            shared.events.emit(SessionEvent::CaptureStarted {
                unix_ms: shared
                    .clock
                    .unix_ms_f64(now.checked_sub(waiting).unwrap_or(now)),
            });
        }
        ring.pop_slice(pcm);
        sender.frame(pcm, now);
    }
}
