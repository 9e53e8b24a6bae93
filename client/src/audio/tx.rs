//! The capture-side pipeline: 48 kHz mono frames in, 504-byte voice payloads out.
//!
//! denoise (nnnoiseless, 480-sample frames) → transmit gate (VAD with hangover, or
//! push-to-talk) → Opus encode (VOIP, in-band FEC) → voice payload carrying the current
//! frame plus as many earlier frames of the talk spurt as fit (redundancy).
//! Sans-IO: the caller owns the clock, the buffers and the socket.

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate, Signal};
use kv_proto::packet::DATA_SIZE;
use kv_proto::voice::{self, VoiceHeader, FLAG_SPURT_END, FLAG_SPURT_START, MAX_FRAME_LEN};
use nnnoiseless::DenoiseState;

use super::protect::MAX_OVERHEAD;
use super::vad::{GateDecision, TransmitMode, VadGate};
use super::{AudioError, SAMPLE_RATE};

/// Audio from just before the voice-activity gate opens that rides, as redundancy, in the
/// first packet of a talk spurt. VAD scores the first milliseconds of a word low, so the
/// gate opens a frame or two late; these frames cost nothing on the wire (the packet has
/// the room), and the receiver plays whatever part of them is still ahead of its playout
/// position, and decodes the rest so its decoder state runs into the onset.
pub const PREROLL_MS: u32 = 40;

/// A frame this much louder than the noise floor is a sound starting (see
/// [`VadGate::decide_with_onset`]).
pub const ONSET_ABOVE_FLOOR_DB: f32 = 20.0;
/// ... and at least this loud, dBFS.
pub const ONSET_MIN_DBFS: f32 = -50.0;

/// nnnoiseless works on 10 ms frames.
pub const DENOISE_FRAME: usize = DenoiseState::FRAME_SIZE;

/// Capture settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TxConfig {
    /// Frame duration: 10 (default) or 20 ms. One packet per frame, so 10 ms frames mean
    /// a packet every 10 ms: a lost packet costs 10 ms of waiting for the next one's
    /// redundant copy instead of 20, so the playout can hold enough delay for double and
    /// triple losses within the latency budget (measured, PESQ-WB on the three speech
    /// samples, virtual time, delay held still: 10 % loss 4.12 at 41 ms with 10 ms frames,
    /// 4.08 at 75 ms with 20 ms frames), and a clean link's mouth-to-ear is ~10 ms shorter.
    /// The cost is twice the packets (about 410 kb/s per talker instead of 205, every
    /// datagram being 512 bytes) and Opus coding 10 ms frames slightly less well (clean:
    /// 4.24 against 4.3). 20 ms halves the packet rate for links where bandwidth is short.
    pub frame_ms: u32,
    /// Opus bitrate in bit/s. Default 48 kb/s. Every datagram is 512 bytes whatever it
    /// carries, so bitrate costs no bandwidth here; it only trades against how many earlier
    /// frames fit for redundancy. Measured on the speech sample (mel log-spectral distance,
    /// 20 ms frames): 24 kb/s 3.7 dB, 32 kb/s 3.2 dB, 48 kb/s 2.5 dB, 64 kb/s 2.0 dB. At 48 kb/s
    /// a 20 ms frame is ~120 bytes, so three earlier frames still ride along (60 ms of burst
    /// loss covered), which is as far back as the jitter buffer waits under loss anyway.
    pub bitrate: i32,
    /// Run nnnoiseless on the signal that is sent. Default on: keyboard and fan noise is what
    /// makes calls sound bad; the VAD probability is computed either way.
    pub denoise: bool,
    /// When to transmit. Default [`TransmitMode::VoiceActivated`].
    pub mode: TransmitMode,
    /// VAD probability (0..1) above which a frame counts as speech. Default 0.5: speech scores
    /// well above 0.9 in nnnoiseless, steady noise well below 0.2.
    pub vad_threshold: f32,
    /// How long the gate stays open after the last speech frame. Default 300 ms: bridges the
    /// pauses between words and keeps soft word endings, which VAD scores low.
    pub vad_hangover_ms: u32,
    /// Repeat earlier frames of the talk spurt in the spare bytes of each packet. Default on:
    /// every datagram is 512 bytes whatever it carries, so this costs no bandwidth.
    pub redundancy: bool,
    /// Most earlier frames one packet repeats (space usually limits it first). Default 15,
    /// the most a payload can carry ([`voice::MAX_FRAMES`] - 1): 150 ms of 10 ms frames
    /// (300 ms of 20 ms ones), the loss bursts of Wi-Fi and mobile links.
    pub max_redundancy: u8,
    /// How many of the repeats are the full-rate frames themselves (default 4); older ones
    /// are the same audio from a second encoder at [`Self::redundancy_bitrate`], so many
    /// more fit. A burst of up to four packets (Gilbert-Elliott bursts of mean 3: most of
    /// them) costs nothing; a longer one is bridged at lower fidelity instead of concealed.
    /// A frame of the other encoder also jars the decoder's state, so each full-rate repeat
    /// is worth more than its bytes suggest: measured on virtual time (three samples, 10 %
    /// loss in bursts of mean 3), PESQ-WB 3.10 with 2, 3.26 with 4, 3.29 with 6; random
    /// loss of 10 and 20 % the same with each. With 4, 48 kb/s frames of 10 ms leave room
    /// for about 8 low-rate ones: 130 ms of burst covered.
    pub full_redundancy: u8,
    /// Bitrate of the older repeats, bit/s. Default 16 kb/s (~40 bytes per 20 ms frame,
    /// wideband speech).
    pub redundancy_bitrate: i32,
    /// Expected packet loss in percent, told to Opus so it spends bits on in-band FEC (LBRR).
    /// Default 0: the full-rate repeats already carry every frame at full quality, and LBRR
    /// takes its bits from the frame itself (measured, PESQ-WB on the three speech samples
    /// through the playout: 4.23–4.36 without, 3.77–4.01 with 10 %).
    pub loss_hint_percent: u8,
    /// Opus complexity 0..=10. Default 9: near-best quality; CPU is tiny for one voice.
    pub complexity: u8,
}

impl Default for TxConfig {
    fn default() -> Self {
        Self {
            frame_ms: 10,
            bitrate: 48_000,
            denoise: true,
            mode: TransmitMode::VoiceActivated,
            vad_threshold: 0.5,
            vad_hangover_ms: 300,
            redundancy: true,
            max_redundancy: 15,
            full_redundancy: 4,
            redundancy_bitrate: 16_000,
            loss_hint_percent: 0,
            complexity: 9,
        }
    }
}

impl TxConfig {
    /// The defaults with `frame_ms` frames (10 or 20).
    pub fn with_frame_ms(frame_ms: u32) -> Self {
        Self {
            frame_ms,
            ..Self::default()
        }
    }
}

/// What the capture path is doing right now, for level meters and "talking" indicators.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InputLevel {
    /// RMS of the last input frame in dB full scale (-100 for digital silence).
    pub rms_dbfs: f32,
    /// nnnoiseless' voice probability for the last frame (max over its 10 ms parts).
    pub vad_probability: f32,
    /// True when the last frame was sent.
    pub transmitting: bool,
}

/// The last encoded frames, newest first, each at full rate and at the redundancy rate.
#[derive(Debug)]
struct History {
    full: Vec<Vec<u8>>,
    low: Vec<Vec<u8>>,
    len: usize,
}

impl History {
    fn new(cap: usize) -> Self {
        let bufs = || {
            (0..cap)
                .map(|_| Vec::with_capacity(MAX_FRAME_LEN))
                .collect::<Vec<_>>()
        };
        Self {
            full: bufs(),
            low: bufs(),
            len: 0,
        }
    }

    /// Makes `(full, low)` the newest, dropping the oldest when full. Reuses buffers.
    fn push(&mut self, full: &[u8], low: &[u8]) {
        if self.full.is_empty() {
            return;
        }
        self.full.rotate_right(1);
        self.low.rotate_right(1);
        self.full[0].clear();
        self.full[0].extend_from_slice(full);
        self.low[0].clear();
        self.low[0].extend_from_slice(low);
        self.len = (self.len + 1).min(self.full.len());
    }
}

/// The input's noise floor: the quietest 10 ms of the last 2–4 s (speech always pauses
/// within that long), with hysteresis, so the suppressor works only where there is noise.
#[derive(Debug, Clone)]
struct NoiseFloor {
    window_min: f32,
    previous_min: f32,
    count: usize,
    noisy: bool,
}

impl NoiseFloor {
    /// Chunks per window: 2 s.
    const WINDOW: usize = 200;
    /// Floor above which the suppressor turns on, dBFS (a fan, traffic, a hiss).
    const ON_DBFS: f32 = -55.0;
    /// Floor below which it turns off again, dBFS (a quiet room, a good microphone).
    const OFF_DBFS: f32 = -62.0;

    fn new() -> Self {
        Self {
            window_min: f32::MAX,
            previous_min: f32::MAX,
            count: 0,
            // Start suppressing until the room has shown it is quiet.
            noisy: true,
        }
    }

    fn push(&mut self, level_dbfs: f32) {
        self.window_min = self.window_min.min(level_dbfs);
        self.count += 1;
        let floor = self.window_min.min(self.previous_min);
        if floor > Self::ON_DBFS && self.count >= 50 {
            self.noisy = true;
        } else if floor < Self::OFF_DBFS {
            self.noisy = false;
        }
        if self.count >= Self::WINDOW {
            self.previous_min = self.window_min;
            self.window_min = f32::MAX;
            self.count = 0;
        }
    }

    fn noisy(&self) -> bool {
        self.noisy
    }

    /// The floor now, dBFS (-100 before anything was heard).
    fn floor_dbfs(&self) -> f32 {
        let f = self.window_min.min(self.previous_min);
        if f == f32::MAX {
            -100.0
        } else {
            f
        }
    }
}

/// The capture pipeline of one client.
pub struct TxPipeline {
    cfg: TxConfig,
    frame_samples: usize,
    denoiser: Box<DenoiseState<'static>>,
    encoder: Encoder,
    /// Encodes the same frames at the redundancy rate (None without redundancy).
    low_encoder: Option<Encoder>,
    gate: VadGate,
    /// Sequence number of the next frame sent.
    seq: u32,
    /// Timestamp of the next frame, in samples since the pipeline started (wraps).
    timestamp: u32,
    /// The last encoded frames, sent or not, newest first.
    history: History,
    /// Most earlier frames one packet repeats.
    max_repeats: usize,
    /// Frames of pre-roll a spurt starts with (see [`PREROLL_MS`]).
    preroll_frames: usize,
    /// Frames encoded since the last one sent (candidates for pre-roll).
    unsent: usize,
    /// How many of the newest history frames belong to the current spurt (with its
    /// pre-roll), so may be repeated.
    repeatable: usize,
    /// Denoised (or passed-through) frame, 48 kHz, in i16 scale for nnnoiseless.
    work: Vec<f32>,
    chunk_in: [f32; DENOISE_FRAME],
    floor: NoiseFloor,
    chunk_out: [f32; DENOISE_FRAME],
    encoded: [u8; MAX_FRAME_LEN],
    encoded_low: [u8; MAX_FRAME_LEN],
    level: InputLevel,
    /// End-to-end encrypted channel: each frame is protected right after encoding.
    protector: Option<super::protect::Protector>,
}

impl std::fmt::Debug for TxPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPipeline")
            .field("cfg", &self.cfg)
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// Builds a VOIP-mode Opus encoder for `cfg`. Shared with the benchmark.
pub(crate) fn make_encoder(cfg: &TxConfig) -> Result<Encoder, AudioError> {
    let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(cfg.bitrate))?;
    enc.set_signal(Signal::Voice)?;
    enc.set_complexity(cfg.complexity)?;
    enc.set_inband_fec(cfg.loss_hint_percent > 0)?;
    enc.set_packet_loss_perc(cfg.loss_hint_percent.min(100))?;
    Ok(enc)
}

/// The second encoder, for the older, low-rate repeats.
fn make_redundancy_encoder(cfg: &TxConfig) -> Result<Encoder, AudioError> {
    let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(
        cfg.redundancy_bitrate.clamp(6_000, 64_000),
    ))?;
    enc.set_signal(Signal::Voice)?;
    enc.set_complexity(cfg.complexity.min(10))?;
    Ok(enc)
}

impl TxPipeline {
    /// Checks `cfg` and builds the denoiser and encoder.
    pub fn new(cfg: TxConfig) -> Result<Self, AudioError> {
        if cfg.frame_ms != 10 && cfg.frame_ms != 20 {
            return Err(AudioError::Config(format!(
                "frame_ms must be 10 or 20, not {}",
                cfg.frame_ms
            )));
        }
        if !(6_000..=256_000).contains(&cfg.bitrate) {
            return Err(AudioError::Config(format!(
                "bitrate must be 6000..=256000 bit/s, not {}",
                cfg.bitrate
            )));
        }
        if cfg.complexity > 10 {
            return Err(AudioError::Config(format!(
                "complexity must be 0..=10, not {}",
                cfg.complexity
            )));
        }
        let frame_samples = (SAMPLE_RATE / 1000 * cfg.frame_ms) as usize;
        let encoder = make_encoder(&cfg)?;
        let low_encoder = if cfg.redundancy && cfg.max_redundancy > cfg.full_redundancy {
            Some(make_redundancy_encoder(&cfg)?)
        } else {
            None
        };
        let max_repeats = if cfg.redundancy {
            usize::from(cfg.max_redundancy).min(voice::MAX_FRAMES - 1)
        } else {
            0
        };
        let preroll_frames = (PREROLL_MS / cfg.frame_ms) as usize;
        let history = History::new(max_repeats.max(preroll_frames));
        Ok(Self {
            gate: VadGate::new(cfg.mode, cfg.vad_threshold, cfg.vad_hangover_ms),
            frame_samples,
            denoiser: DenoiseState::new(),
            encoder,
            low_encoder,
            seq: 0,
            timestamp: 0,
            history,
            max_repeats,
            preroll_frames,
            unsent: 0,
            repeatable: 0,
            work: vec![0.0; frame_samples],
            chunk_in: [0.0; DENOISE_FRAME],
            floor: NoiseFloor::new(),
            chunk_out: [0.0; DENOISE_FRAME],
            encoded: [0; MAX_FRAME_LEN],
            encoded_low: [0; MAX_FRAME_LEN],
            level: InputLevel {
                rms_dbfs: -100.0,
                ..InputLevel::default()
            },
            protector: None,
            cfg,
        })
    }

    /// Protects every frame from now on (an encrypted channel); until the protector has
    /// an epoch's keys nothing is sent.
    pub fn set_protector(&mut self, p: super::protect::Protector) {
        self.protector = Some(p);
    }

    /// The protector, to feed it epochs.
    pub fn protector_mut(&mut self) -> Option<&mut super::protect::Protector> {
        self.protector.as_mut()
    }

    /// Samples per call of [`Self::process_frame`]: 480 (10 ms) or 960 (20 ms).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// The configuration in effect.
    pub fn config(&self) -> &TxConfig {
        &self.cfg
    }

    /// Opus' algorithmic lookahead in samples at 48 kHz (part of mouth-to-ear latency).
    pub fn lookahead_samples(&self) -> Result<u32, AudioError> {
        Ok(self.encoder.lookahead()?)
    }

    /// Feeds exactly [`Self::frame_samples`] mono f32 samples at 48 kHz (range -1..1); when a
    /// packet should be sent, writes the 504-byte client payload into `out` and returns its
    /// used length (the rest is zero padding; send all 504 bytes).
    ///
    /// `now_ms` is the caller's clock; the pipeline keeps its own sample clock for the
    /// timestamp, so the receiver sees real capture time even across silences.
    pub fn process_frame(
        &mut self,
        pcm: &[f32],
        _now_ms: u64,
        out: &mut [u8; DATA_SIZE],
    ) -> Result<Option<usize>, AudioError> {
        if pcm.len() != self.frame_samples {
            return Err(AudioError::FrameLength {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        self.level.rms_dbfs = rms_dbfs(pcm);
        let vad = self.denoise(pcm);
        self.level.vad_probability = vad;
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(self.frame_samples as u32);

        // Every frame is encoded, sent or not: the encoder's state stays continuous, and the
        // frames just before the gate opens are at hand as pre-roll.
        for s in self.work.iter_mut() {
            *s = (*s / 32768.0).clamp(-1.0, 1.0);
        }
        // Protected frames grow: the encoder gets that much less room.
        let room = MAX_FRAME_LEN - self.protector.as_ref().map_or(0, |_| MAX_OVERHEAD);
        let mut n = self
            .encoder
            .encode_float(&self.work, &mut self.encoded[..room])?;
        let mut n_low = match self.low_encoder.as_mut() {
            Some(e) => e.encode_float(&self.work, &mut self.encoded_low[..room])?,
            None => 0,
        };
        if let Some(p) = self.protector.as_mut() {
            let at = super::protect::position(timestamp, self.frame_samples as u16);
            let Some(len) = p.protect(&mut self.encoded, n, &at) else {
                // No keys yet: nothing leaves in the clear (and nothing enters history).
                self.level.transmitting = false;
                return Ok(None);
            };
            n = len;
            if n_low > 0 {
                n_low = p.protect(&mut self.encoded_low, n_low, &at).unwrap_or(0);
            }
        }
        let onset = self.level.rms_dbfs > ONSET_MIN_DBFS
            && self.level.rms_dbfs > self.floor.floor_dbfs() + ONSET_ABOVE_FLOOR_DB;
        let decision = self.gate.decide_with_onset(vad, onset, self.cfg.frame_ms);
        let flags = match decision {
            GateDecision::Closed => {
                self.level.transmitting = false;
                self.history
                    .push(&self.encoded[..n], &self.encoded_low[..n_low]);
                self.unsent = (self.unsent + 1).min(self.history.full.len());
                return Ok(None);
            }
            GateDecision::Open { start: true } => FLAG_SPURT_START,
            GateDecision::Open { start: false } => 0,
            GateDecision::Closing => FLAG_SPURT_END,
        };
        self.level.transmitting = true;
        // Frames a packet may repeat: those of this spurt, and at its start the pre-roll,
        // the frames encoded just before the gate opened (onsets VAD scores low). Pre-roll
        // frames get their sequence numbers now, so the receiver sees one contiguous run.
        if decision == (GateDecision::Open { start: true }) {
            let preroll = self.unsent.min(self.preroll_frames);
            self.seq = self.seq.wrapping_add(preroll as u32);
            self.repeatable = preroll;
        }
        self.unsent = 0;
        let header = VoiceHeader {
            flags,
            frame_samples: self.frame_samples as u16,
            seq: self.seq,
            timestamp,
        };
        let mut earlier: [&[u8]; voice::MAX_FRAMES] = [&[]; voice::MAX_FRAMES];
        let k = self.repeatable.min(self.history.len).min(self.max_repeats);
        let full = usize::from(self.cfg.full_redundancy);
        for (age, slot) in earlier.iter_mut().enumerate().take(k) {
            let low = &self.history.low[age];
            *slot = if age < full || low.is_empty() {
                &self.history.full[age]
            } else {
                low
            };
        }
        let (len, _) = voice::encode(&header, &self.encoded[..n], &earlier[..k], out)?;
        self.seq = self.seq.wrapping_add(1);
        self.history
            .push(&self.encoded[..n], &self.encoded_low[..n_low]);
        self.repeatable = if flags & FLAG_SPURT_END != 0 {
            0
        } else {
            self.repeatable + 1
        };
        Ok(Some(len))
    }

    /// Runs nnnoiseless over the frame into `self.work` (i16 scale) and returns the highest
    /// voice probability of its 10 ms parts. With denoise off, `work` is the input itself
    /// but the VAD still runs.
    fn denoise(&mut self, pcm: &[f32]) -> f32 {
        let mut vad = 0.0f32;
        for (i, chunk) in pcm.chunks_exact(DENOISE_FRAME).enumerate() {
            for (d, s) in self.chunk_in.iter_mut().zip(chunk) {
                *d = s * 32768.0;
            }
            let p = self
                .denoiser
                .process_frame(&mut self.chunk_out, &self.chunk_in);
            vad = vad.max(p);
            let was_noisy = self.floor.noisy();
            self.floor.push(rms_dbfs(chunk));
            let noisy = self.floor.noisy();
            let dst = &mut self.work[i * DENOISE_FRAME..(i + 1) * DENOISE_FRAME];
            if !self.cfg.denoise {
                dst.copy_from_slice(&self.chunk_in);
            } else {
                // In a quiet room the suppressor has nothing to remove, only colours the
                // voice and delays it by a chunk (10 ms): then the input plays through,
                // undelayed. A switch (the room got noisy or quiet) cross-fades over one
                // chunk, which moves the timing by 10 ms once.
                let n = DENOISE_FRAME as f32;
                for (k, d) in dst.iter_mut().enumerate() {
                    let w = match (was_noisy, noisy) {
                        (true, true) => 1.0,
                        (false, false) => 0.0,
                        (false, true) => (k as f32 + 0.5) / n,
                        (true, false) => 1.0 - (k as f32 + 0.5) / n,
                    };
                    *d = w * self.chunk_out[k] + (1.0 - w) * self.chunk_in[k];
                }
            }
        }
        vad
    }

    /// Push-to-talk key state (only used in [`TransmitMode::PushToTalk`]).
    pub fn set_push_to_talk(&mut self, pressed: bool) {
        self.gate.set_push_to_talk(pressed);
    }

    /// Switches noise suppression on or off from the next frame.
    pub fn set_denoise(&mut self, on: bool) {
        self.cfg.denoise = on;
    }

    /// Changes the transmit mode from the next frame.
    pub fn set_mode(&mut self, m: TransmitMode) {
        self.cfg.mode = m;
        self.gate.set_mode(m);
    }

    /// Level, VAD probability and transmit state of the last frame.
    pub fn level(&self) -> InputLevel {
        self.level
    }
}

/// RMS of `pcm` (range -1..1) in dB full scale, floored at -100 dB.
pub fn rms_dbfs(pcm: &[f32]) -> f32 {
    if pcm.is_empty() {
        return -100.0;
    }
    let ms = pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len() as f32;
    (10.0 * ms.max(1e-10).log10()).max(-100.0)
}
