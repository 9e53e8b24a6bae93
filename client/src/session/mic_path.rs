//! The microphone clean-up inside a session: what the playout thread played reaches the
//! capture thread's echo canceller through a lock-free SPSC ring ([`PlayedTap`] →
//! [`MicPath`]), so no lock is taken per block between the two threads; the capture
//! thread runs [`MicProcessor`] on each frame before the [`TxPipeline`](crate::audio::TxPipeline).
//!
//! The far end is handed over when the playout hands a block to the speaker (its device
//! ring, or the file), and the capture thread feeds everything that has arrived to the
//! echo canceller before each 10 ms of microphone: the reference always leads its echo
//! (by the device queue, which the playout publishes as a delay hint, plus the room), and
//! AEC3's delay estimator finds the rest.
//!
//! `kv join --echo-test-seed` adds a second ring: the same played blocks, through the
//! rig's synthetic room ([`crate::audio::echo_rig`]), are added to the microphone — the
//! end-to-end echo test, with no sound card.

use std::sync::atomic::Ordering;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::audio::echo_rig::{self, RoomConvolver, RoomResponse};
use crate::audio::mic::CHUNK;
use crate::audio::{AudioError, MicConfig, MicProcessor};

use super::shared::Shared;

/// Far-end samples the ring holds: 400 ms, more than the playout queues for a device
/// (`playout::DEVICE_QUEUE_MAX`); beyond it (a stalled capture thread) the newest are
/// dropped, and the capture thread resynchronises when it runs again.
const FAR_END_RING: usize = 19_200;
/// Played audio the echo room keeps queued ahead of the microphone, besides one frame:
/// enough for the 5 ms playout blocks and 10–20 ms capture frames to interleave.
const ROOM_SLACK: usize = 2 * CHUNK;

/// The playout thread's end: every block played goes in.
pub(crate) struct PlayedTap {
    far_end: HeapProd<f32>,
    room: Option<HeapProd<f32>>,
}

impl std::fmt::Debug for PlayedTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayedTap")
            .field("room", &self.room.is_some())
            .finish_non_exhaustive()
    }
}

impl PlayedTap {
    /// `block` was handed to the speaker. Never blocks; a full ring drops the block.
    pub fn played(&mut self, block: &[f32]) {
        self.far_end.push_slice(block);
        if let Some(r) = self.room.as_mut() {
            r.push_slice(block);
        }
    }
}

/// The synthetic room of the end-to-end echo test.
struct EchoRoom {
    conv: RoomConvolver,
    played: HeapCons<f32>,
    primed: bool,
    input: Vec<f32>,
    out: Vec<f32>,
}

impl EchoRoom {
    /// Adds what was played, through the room, to `pcm`.
    fn add_to(&mut self, pcm: &mut [f32]) {
        let frame = pcm.len();
        let level = self.played.occupied_len();
        if !self.primed {
            if level < frame + ROOM_SLACK {
                // Nothing played yet (or just started): the room is quiet.
                self.input.fill(0.0);
                self.convolve_into(pcm);
                return;
            }
            self.primed = true;
        }
        if level > frame + 2 * ROOM_SLACK {
            // The capture side fell behind (or started late): stay close to real time.
            self.played.skip(level - frame - ROOM_SLACK);
        }
        let n = self.played.pop_slice(&mut self.input[..frame]);
        self.input[n..frame].fill(0.0);
        if n < frame {
            self.primed = false;
        }
        self.convolve_into(pcm);
    }

    fn convolve_into(&mut self, pcm: &mut [f32]) {
        let blocks = pcm.len() / echo_rig::BLOCK;
        for b in 0..blocks {
            let r = b * echo_rig::BLOCK..(b + 1) * echo_rig::BLOCK;
            self.conv.process(&self.input[r.clone()], &mut self.out);
            for (p, e) in pcm[r].iter_mut().zip(&self.out) {
                *p += e;
            }
        }
    }
}

/// The capture thread's end, as handed to it (the processor is built there: the `aec3`
/// graph is not `Send`).
pub(crate) struct MicPath {
    cfg: MicConfig,
    /// The input is a device. A file (or silence) with echo cancellation and gain control
    /// off is sent exactly as recorded, without even the high-pass filter: the playout
    /// tests and benchmarks compare what arrives with the file itself.
    device_input: bool,
    far_end: HeapCons<f32>,
    room: Option<EchoRoom>,
}

impl std::fmt::Debug for MicPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicPath")
            .field("cfg", &self.cfg)
            .field("room", &self.room.is_some())
            .finish_non_exhaustive()
    }
}

/// The microphone clean-up running on the capture thread.
pub(crate) struct RunningMic {
    /// `None` if it could not be built (then the microphone passes unprocessed).
    processor: Option<MicProcessor>,
    path: MicPath,
    far: Vec<f32>,
    started: bool,
    errors: u64,
}

impl std::fmt::Debug for RunningMic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMic")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MicPath {
    /// Builds the processor; call on the capture thread.
    pub fn start(self) -> RunningMic {
        let processor = MicProcessor::new(self.cfg)
            .inspect_err(|e| tracing::warn!(error = %e, "microphone processing unavailable"))
            .ok();
        RunningMic {
            processor,
            path: self,
            far: vec![0.0; CHUNK],
            started: false,
            errors: 0,
        }
    }
}

/// The two ends, for a session with `cfg` (and the echo test room of `echo_test_seed`).
pub(crate) fn mic_path(
    cfg: MicConfig,
    device_input: bool,
    echo_test_seed: Option<u64>,
) -> Result<(PlayedTap, MicPath), AudioError> {
    let (far_prod, far_cons) = HeapRb::<f32>::new(FAR_END_RING).split();
    let (room_prod, room) = match echo_test_seed {
        Some(seed) => {
            let (p, c) = HeapRb::<f32>::new(FAR_END_RING).split();
            let response = RoomResponse::synthetic(seed);
            tracing::info!(
                seed,
                direct_ms = response.direct_delay as f64 / 48.0,
                tail_ms = response.tail as f64 / 48.0,
                "echo test: playback is fed back into the capture through a synthetic room"
            );
            let room = EchoRoom {
                conv: RoomConvolver::new(&response.taps),
                played: c,
                primed: false,
                input: vec![0.0; 2 * 960],
                out: vec![0.0; echo_rig::BLOCK],
            };
            (Some(p), Some(room))
        }
        None => (None, None),
    };
    // Built once here so a failure shows before joining; the capture thread builds its own.
    MicProcessor::new(cfg)?;
    Ok((
        PlayedTap {
            far_end: far_prod,
            room: room_prod,
        },
        MicPath {
            cfg,
            device_input,
            far_end: far_cons,
            room,
        },
    ))
}

impl RunningMic {
    /// Cleans up one capture frame in place (a multiple of 10 ms).
    pub fn frame(&mut self, shared: &Shared, pcm: &mut [f32]) {
        if !self.started {
            // What was played before the capture started has no echo in this frame.
            self.started = true;
            let stale = self.path.far_end.occupied_len();
            self.path.far_end.skip(stale);
        }
        if let Some(room) = self.path.room.as_mut() {
            room.add_to(pcm);
        }
        if let Err(e) = self.run(shared, pcm) {
            self.errors += 1;
            if self.errors.is_power_of_two() {
                tracing::warn!(error = %e, count = self.errors, "microphone processing failed");
            }
        }
    }

    fn run(&mut self, shared: &Shared, pcm: &mut [f32]) -> Result<(), AudioError> {
        let far_end = &mut self.path.far_end;
        let (aec, agc) = (
            shared.aec.load(Ordering::Relaxed),
            shared.agc.load(Ordering::Relaxed),
        );
        let Some(processor) = self
            .processor
            .as_mut()
            .filter(|_| self.path.device_input || aec || agc)
        else {
            // Nothing to do: keep the ring fresh for later.
            let n = far_end.occupied_len();
            far_end.skip(n);
            return Ok(());
        };
        processor.set_aec(aec)?;
        processor.set_agc(agc)?;
        let aec = processor.config().aec;
        if aec {
            let queued = shared.output_queued.load(Ordering::Relaxed);
            processor.set_delay_hint_ms((queued / 48) as i32)?;
        }
        for chunk in pcm.chunks_exact_mut(CHUNK) {
            // Everything played so far, oldest first (bounded by the ring).
            while far_end.occupied_len() >= CHUNK {
                far_end.pop_slice(&mut self.far);
                if aec {
                    processor.render(&self.far)?;
                }
            }
            processor.process_chunk(chunk)?;
        }
        Ok(())
    }
}
