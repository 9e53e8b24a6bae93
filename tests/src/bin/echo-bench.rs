//! `echo-bench`: the figures of issue 13 (BENCHMARKS.md "Echo cancellation and gain
//! control"), for the client's chain (WebRTC AEC3 and AGC2 from the `aec3` crate,
//! `kv_client::audio::mic`) and for SpeexDSP's echo canceller and preprocessor (Debian's
//! libspeexdsp, through the few C calls below), on the echo rig of
//! `kv_client::audio::echo_rig`.
//!
//! For each room (seed) and far-end sample: far-end speech through the room at the
//! microphone, alone (ERLE and residual echo after 2 s) and with the near end
//! (`speech.wav`) from 7 s on (PESQ-WB of the near end during double talk, against the
//! clean near end through the same chain with nothing played; again with the echo 10 and
//! 20 dB quieter; and, with no canceller, the near end plus the true echo scaled down by
//! 20–40 dB: what the target asks of any canceller). Then the gain control on
//! speech at -45…-10 dBFS, the chain's delay, and its CPU time per stream. Prints a line per
//! room, then the table in Markdown.
//!
//! ```text
//! echo-bench [--seeds 7,11,23] [--keep DIR] [--near FILE] [--mic-noise DBFS]
//! ```
//!
//! `--near FILE` puts another near-end talker in the scenes (double talk, delay, CPU; the
//! default, `speech.wav`, is the same espeak voice as the first room's far end);
//! `--mic-noise DBFS` adds a microphone noise floor to them (the rig's microphone is
//! otherwise digitally silent but for the talkers, as no real one is). The far-end-only
//! figures (ERLE, residual) stay noiseless.
//!
//! Python: `KV_PYTHON` or `target/pyenv` (`make venv`), for PESQ (`bench/playout/score.py`).

use std::os::raw::{c_float, c_int, c_void};
use std::path::Path;
use std::process::ExitCode;

use kv_client::audio::echo_rig::{
    level_dbfs, speech_level_dbfs, white_noise, EchoScene, RoomResponse,
};
use kv_client::audio::mic::{echo_config, EchoCanceller3Config, MicConfig, MicProcessor, CHUNK};
use kv_client::audio::quality::find_lag;
use kv_client::audio::read_wav_mono_48k;
use kv_tests::kv::write_wav;
use kv_tests::playout::{repo_root, score};

#[link(name = "speexdsp")]
extern "C" {
    fn speex_echo_state_init(frame_size: c_int, filter_length: c_int) -> *mut c_void;
    fn speex_echo_state_destroy(st: *mut c_void);
    fn speex_echo_cancellation(st: *mut c_void, rec: *const i16, play: *const i16, out: *mut i16);
    fn speex_echo_ctl(st: *mut c_void, request: c_int, ptr: *mut c_void) -> c_int;
    fn speex_preprocess_state_init(frame_size: c_int, sampling_rate: c_int) -> *mut c_void;
    fn speex_preprocess_state_destroy(st: *mut c_void);
    fn speex_preprocess_run(st: *mut c_void, x: *mut i16) -> c_int;
    fn speex_preprocess_ctl(st: *mut c_void, request: c_int, ptr: *mut c_void) -> c_int;
}

// speex_echo.h / speex_preprocess.h
const SPEEX_ECHO_SET_SAMPLING_RATE: c_int = 24;
const SPEEX_PREPROCESS_SET_DENOISE: c_int = 0;
const SPEEX_PREPROCESS_SET_AGC: c_int = 2;
const SPEEX_PREPROCESS_SET_AGC_LEVEL: c_int = 6;
const SPEEX_PREPROCESS_SET_ECHO_STATE: c_int = 24;
const SPEEX_PREPROCESS_SET_AGC_MAX_GAIN: c_int = 30;

/// SpeexDSP's echo canceller (MDF) with its preprocessor's residual echo suppressor, or
/// the preprocessor's AGC alone: the way Mumble uses them.
struct Speex {
    echo: *mut c_void,
    pre: *mut c_void,
    mic: [i16; CHUNK],
    far: [i16; CHUNK],
    out: [i16; CHUNK],
}

/// The echo tail Speex models: 340 ms (the rig's longest room, 40 + 300 ms).
const SPEEX_TAIL: c_int = 16_320;

impl Speex {
    fn new(aec: bool, agc: bool) -> Self {
        // SAFETY: plain constructors of the C library; the states are freed in Drop and
        // every ctl gets a pointer to a live value of the type the header documents.
        unsafe {
            let echo = if aec {
                let st = speex_echo_state_init(CHUNK as c_int, SPEEX_TAIL);
                let mut rate: c_int = 48_000;
                speex_echo_ctl(st, SPEEX_ECHO_SET_SAMPLING_RATE, ptr(&mut rate));
                st
            } else {
                std::ptr::null_mut()
            };
            let pre = speex_preprocess_state_init(CHUNK as c_int, 48_000);
            let mut off: c_int = 0;
            speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_DENOISE, ptr(&mut off));
            if aec {
                speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_ECHO_STATE, echo);
            }
            if agc {
                let mut on: c_int = 1;
                speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_AGC, ptr(&mut on));
                // Aimed at AGC2's level, speech at -22 dBFS. Speex's level is its own
                // loudness, not RMS, and its output hardly follows it: 8000 (the default)
                // gives -40 dBFS of speech here, 8000 x 5 (this) to x 8 about -18.
                let mut level: c_float = 8_000.0 * 10f32.powf(14.0 / 20.0);
                speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_AGC_LEVEL, ptr(&mut level));
                let mut max_gain: c_int = 40;
                speex_preprocess_ctl(pre, SPEEX_PREPROCESS_SET_AGC_MAX_GAIN, ptr(&mut max_gain));
            }
            Self {
                echo,
                pre,
                mic: [0; CHUNK],
                far: [0; CHUNK],
                out: [0; CHUNK],
            }
        }
    }

    fn process(&mut self, far: &[f32], mic: &mut [f32]) {
        let q = |x: f32| (x * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16;
        for (d, s) in self.mic.iter_mut().zip(mic.iter()) {
            *d = q(*s);
        }
        for (d, s) in self.far.iter_mut().zip(far) {
            *d = q(*s);
        }
        // SAFETY: the buffers are CHUNK samples, the frame size the states were made for.
        unsafe {
            if self.echo.is_null() {
                self.out = self.mic;
            } else {
                speex_echo_cancellation(
                    self.echo,
                    self.mic.as_ptr(),
                    self.far.as_ptr(),
                    self.out.as_mut_ptr(),
                );
            }
            speex_preprocess_run(self.pre, self.out.as_mut_ptr());
        }
        for (d, s) in mic.iter_mut().zip(&self.out) {
            *d = f32::from(*s) / 32_768.0;
        }
    }
}

impl Drop for Speex {
    fn drop(&mut self) {
        // SAFETY: made by the matching init calls, freed once.
        unsafe {
            speex_preprocess_state_destroy(self.pre);
            if !self.echo.is_null() {
                speex_echo_state_destroy(self.echo);
            }
        }
    }
}

fn ptr<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Engine {
    Aec3,
    Speex,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Aec3 => "aec3 (WebRTC AEC3 + AGC2)",
            Engine::Speex => "SpeexDSP 1.2.1",
        }
    }
}

/// CPU time this thread has used, s: the processing cost of a stream, which wall-clock
/// time on a machine shared with builds overstates.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `mic` through `engine`'s chain, `far` fed alongside; returns the output and the seconds
/// of processing (thread CPU) time.
fn run(engine: Engine, aec: bool, agc: bool, far: &[f32], mic: &[f32]) -> (Vec<f32>, f64) {
    run_with(engine, aec, agc, echo_config(), far, mic)
}

/// [`run`] with AEC3 configured as `echo` (ignored by Speex).
fn run_with(
    engine: Engine,
    aec: bool,
    agc: bool,
    echo: EchoCanceller3Config,
    far: &[f32],
    mic: &[f32],
) -> (Vec<f32>, f64) {
    let mut out = mic[..mic.len() / CHUNK * CHUNK].to_vec();
    let t = thread_cpu_s();
    match engine {
        Engine::Aec3 => {
            let mut p = MicProcessor::with_echo_config(MicConfig { aec, agc }, echo)
                .expect("mic processor");
            for (i, c) in out.chunks_exact_mut(CHUNK).enumerate() {
                p.render(&far[i * CHUNK..(i + 1) * CHUNK]).expect("render");
                p.process_chunk(c).expect("process");
            }
        }
        Engine::Speex => {
            let mut s = Speex::new(aec, agc);
            for (i, c) in out.chunks_exact_mut(CHUNK).enumerate() {
                s.process(&far[i * CHUNK..(i + 1) * CHUNK], c);
            }
        }
    }
    (out, thread_cpu_s() - t)
}

/// AEC3 with its suppressor made transparent (every masking threshold out of reach): what
/// the linear filter alone leaves of the echo, and of the near end.
fn linear_only() -> EchoCanceller3Config {
    let mut c = echo_config();
    for t in [
        &mut c.suppressor.normal_tuning,
        &mut c.suppressor.nearend_tuning,
    ] {
        for m in [&mut t.mask_lf, &mut t.mask_hf] {
            m.enr_transparent = 99.0;
            m.enr_suppress = 99.5;
            m.emr_transparent = 99.0;
        }
    }
    c.suppressor.high_bands_suppression.enr_threshold = 1e5;
    c
}

/// Energy of `room` in its direct sound, in its tail, and beyond what AEC3's linear filter
/// spans from the direct sound on (13 blocks of 4 ms: 52 ms), dB: (direct-to-reverberant
/// ratio, share past the filter).
fn room_energy(room: &RoomResponse) -> (f64, f64) {
    // A block is 64 samples of the 16 kHz band: 192 at 48 kHz.
    let span = echo_config().filter.main.length_blocks * 192;
    let e = |t: &[f32]| t.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
    let direct = e(&room.taps[room.direct_delay..=room.direct_delay]);
    let tail = e(&room.taps[room.direct_delay + 1..]);
    let late = e(&room.taps[(room.direct_delay + span).min(room.taps.len())..]);
    (
        10.0 * (direct / tail).log10(),
        10.0 * (late / (direct + tail)).log10(),
    )
}

fn asset(name: &str) -> Vec<f32> {
    let p = repo_root().join("assets").join(name);
    read_wav_mono_48k(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[derive(Debug, Default, Clone)]
struct EchoFigures {
    erle: Vec<f64>,
    residual: Vec<f64>,
    pesq_dt: Vec<f64>,
    pesq_none: Vec<f64>,
    /// Double talk with the echo at the microphone [`QUIETER_DB`] quieter than the rig's.
    pesq_dt_quieter: Vec<Vec<f64>>,
    cpu_pct: Vec<f64>,
}

/// How much quieter than the rig's (as loud as the near end: a laptop on its speakers,
/// volume up) the echo is in the double-talk sweep, dB: a speaker turned down, a
/// microphone further from it.
const QUIETER_DB: [f32; 2] = [10.0, 20.0];

/// Echo removed by an ideal canceller (the true echo scaled down uniformly: no artefact, no
/// near-end loss) in the sweep of what the double-talk target asks, dB.
const IDEAL_REMOVAL_DB: [f32; 5] = [20.0, 25.0, 30.0, 35.0, 40.0];

/// What limits double talk (AEC3 only), per room.
#[derive(Debug, Default, Clone)]
struct DoubleTalkCheck {
    /// The microphone minus the true echo against the reference: the measurement's ceiling.
    perfect: Vec<f64>,
    /// The near end alone at the microphone while the far end plays (no echo at all).
    no_echo: Vec<f64>,
    /// The suppressor transparent: PESQ-WB, residual echo (far end only), ERLE.
    linear_pesq: Vec<f64>,
    linear_residual: Vec<f64>,
    linear_erle: Vec<f64>,
    /// The near end plus the echo [`IDEAL_REMOVAL_DB`] down, against the near end: how much
    /// echo a canceller must remove during double talk for a given score.
    ideal: Vec<Vec<f64>>,
    /// Room: direct-to-reverberant ratio, share of the echo past 52 ms, dB.
    drr: Vec<f64>,
    late: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.1} ({lo:.1}…{hi:.1})", median(v))
}

fn pesq(dir: &Path, name: &str, reference: &[f32], degraded: &[f32]) -> f64 {
    let r = dir.join(format!("{name}-ref.wav"));
    let d = dir.join(format!("{name}-deg.wav"));
    write_wav(&r, reference);
    write_wav(&d, degraded);
    score(&r, &d, None, None).pesq_wb.unwrap_or(f64::NAN)
}

const USAGE: &str =
    "usage: echo-bench [--seeds 7,11,23] [--keep DIR] [--near FILE] [--mic-noise DBFS]";

fn main() -> ExitCode {
    let mut seeds = vec![7u64, 11, 23];
    let mut keep: Option<std::path::PathBuf> = None;
    let mut near_path: Option<std::path::PathBuf> = None;
    let mut mic_noise: Option<f32> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => {
                seeds = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect()
            }
            "--keep" => keep = args.next().map(Into::into),
            "--near" => near_path = args.next().map(Into::into),
            "--mic-noise" => match args.next().and_then(|v| v.parse().ok()) {
                Some(db) => mic_noise = Some(db),
                None => {
                    eprintln!("--mic-noise needs a level in dBFS, e.g. -55");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("output dir");
    let fars = [
        "speech-en-us-m.wav",
        "speech-en-gb-f.wav",
        "speech-de-m.wav",
    ];
    let near = match &near_path {
        Some(p) => match read_wav_mono_48k(p) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("echo-bench: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => asset("speech.wav"),
    };
    let near_at = 7 * 48_000;
    let from = 2 * 48_000;
    let engines = [Engine::Aec3, Engine::Speex];
    let mut figures = vec![EchoFigures::default(); engines.len()];
    let mut check = DoubleTalkCheck::default();
    for (k, &seed) in seeds.iter().enumerate() {
        let room = RoomResponse::synthetic(seed);
        let far = asset(fars[k % fars.len()]);
        let alone = EchoScene::new(&far, &[], 0, &room);
        let mut talk = EchoScene::new(&far, &near, near_at, &room);
        if let Some(db) = mic_noise {
            talk = talk.with_mic_noise(db, seed);
        }
        let seg = near_at..(near_at + near.len()).min(talk.mic.len());
        let secs = alone.mic.len() as f64 / 48_000.0;
        let echo_db = f64::from(level_dbfs(&alone.mic[from..]));
        let none = pesq(
            &dir,
            &format!("{seed}-none"),
            &talk.near[seg.clone()],
            &talk.mic[seg.clone()],
        );
        for (e, f) in engines.iter().zip(figures.iter_mut()) {
            let (out, t) = run(*e, true, false, &alone.far, &alone.mic);
            let residual = f64::from(level_dbfs(&out[from..]));
            let (dt, _) = run(*e, true, false, &talk.far, &talk.mic);
            let silent = vec![0.0; talk.far.len()];
            let (clean, _) = run(*e, true, false, &silent, &talk.near);
            let tag = format!("{seed}-{e:?}");
            let p = pesq(&dir, &tag, &clean[seg.clone()], &dt[seg.clone()]);
            println!(
                "room {seed} ({} ms direct, {} ms tail), far {}: {:<26} echo {echo_db:.1} dBFS, \
                 ERLE {:.1} dB, residual {residual:.1} dBFS, double-talk PESQ-WB {p:.2} \
                 (no AEC {none:.2}), CPU {:.2} %",
                room.direct_delay / 48,
                room.tail / 48,
                fars[k % fars.len()],
                e.name(),
                echo_db - residual,
                100.0 * t / secs
            );
            f.erle.push(echo_db - residual);
            f.residual.push(residual);
            f.pesq_dt.push(p);
            f.pesq_none.push(none);
            f.cpu_pct.push(100.0 * t / secs);
            let quieter: Vec<f64> = QUIETER_DB
                .iter()
                .map(|db| {
                    let g = 10f32.powf(-db / 20.0);
                    let mic: Vec<f32> = talk
                        .near
                        .iter()
                        .zip(&talk.echo)
                        .map(|(n, x)| n + g * x)
                        .collect();
                    let (out, _) = run(*e, true, false, &talk.far, &mic);
                    pesq(
                        &dir,
                        &format!("{tag}-quieter{db}"),
                        &clean[seg.clone()],
                        &out[seg.clone()],
                    )
                })
                .collect();
            println!(
                "room {seed}: {:<26} double-talk PESQ-WB with the echo {QUIETER_DB:?} dB quieter: \
                 {quieter:.2?}",
                e.name()
            );
            f.pesq_dt_quieter.push(quieter);
            if *e == Engine::Aec3 {
                let perfect: Vec<f32> = talk
                    .mic
                    .iter()
                    .zip(&talk.echo)
                    .map(|(m, x)| m - x)
                    .collect();
                let pp = pesq(
                    &dir,
                    &format!("{tag}-perfect"),
                    &clean[seg.clone()],
                    &perfect[seg.clone()],
                );
                let (quiet, _) = run(*e, true, false, &talk.far, &talk.near);
                let pq = pesq(
                    &dir,
                    &format!("{tag}-noecho"),
                    &clean[seg.clone()],
                    &quiet[seg.clone()],
                );
                let (lin_alone, _) =
                    run_with(*e, true, false, linear_only(), &alone.far, &alone.mic);
                let lin_res = f64::from(level_dbfs(&lin_alone[from..]));
                let (lin_dt, _) = run_with(*e, true, false, linear_only(), &talk.far, &talk.mic);
                let (lin_clean, _) = run_with(*e, true, false, linear_only(), &silent, &talk.near);
                let pl = pesq(
                    &dir,
                    &format!("{tag}-linear"),
                    &lin_clean[seg.clone()],
                    &lin_dt[seg.clone()],
                );
                let ideal: Vec<f64> = IDEAL_REMOVAL_DB
                    .iter()
                    .map(|db| {
                        let g = 10f32.powf(-db / 20.0);
                        let mic: Vec<f32> = talk
                            .near
                            .iter()
                            .zip(&talk.echo)
                            .map(|(n, x)| n + g * x)
                            .collect();
                        pesq(
                            &dir,
                            &format!("{seed}-ideal{db}"),
                            &talk.near[seg.clone()],
                            &mic[seg.clone()],
                        )
                    })
                    .collect();
                println!(
                    "room {seed}: near end plus the echo {IDEAL_REMOVAL_DB:?} dB down: PESQ-WB \
                     {ideal:.2?}"
                );
                check.ideal.push(ideal);
                let (drr, late) = room_energy(&room);
                println!(
                    "room {seed}: direct-to-reverberant {drr:.1} dB, echo past 52 ms {late:.1} dB; \
                     double-talk PESQ-WB: perfect canceller {pp:.2}, far end played without echo \
                     {pq:.2}, linear filter alone {pl:.2} (residual {lin_res:.1} dBFS, ERLE {:.1} dB)",
                    echo_db - lin_res
                );
                check.perfect.push(pp);
                check.no_echo.push(pq);
                check.linear_pesq.push(pl);
                check.linear_residual.push(lin_res);
                check.linear_erle.push(echo_db - lin_res);
                check.drr.push(drr);
                check.late.push(late);
            }
        }
    }

    // Gain control: three samples (44 s) at -45…-10 dBFS; level over the last 20 s.
    let mut talk = asset("speech-en-gb-f.wav");
    talk.extend(asset("speech-de-m.wav"));
    talk.extend(asset("speech-en-us-m.wav"));
    let native = speech_level_dbfs(&talk);
    let tail = talk.len() - 20 * 48_000;
    let silent = vec![0.0; talk.len()];
    let inputs = [-45.0f32, -35.0, -25.0, -15.0, -10.0];
    // Pauses: the 10 ms blocks of digital silence between sentences, where a room's noise
    // (white, -70 dBFS, added to every input) is all there is. An AGC that pumps raises it.
    let pauses: Vec<usize> = talk
        .chunks_exact(CHUNK)
        .enumerate()
        .filter(|(_, b)| level_dbfs(b) < -90.0)
        .map(|(i, _)| i)
        .filter(|&i| i * CHUNK >= tail)
        .collect();
    let noise = white_noise(talk.len(), -70.0, 0x2545_f491_4f6c_dd1d);
    let pause_level = |x: &[f32]| {
        let blocks: Vec<f32> = pauses
            .iter()
            .flat_map(|&i| x[i * CHUNK..(i + 1) * CHUNK].iter().copied())
            .collect();
        f64::from(level_dbfs(&blocks))
    };
    let mut pause_gain = vec![f64::NEG_INFINITY; engines.len()];
    let mut agc_levels: Vec<Vec<f64>> = vec![Vec::new(); engines.len()];
    let mut agc_peaks = vec![0.0f32; engines.len()];
    let mut full_cpu = vec![0.0f64; engines.len()];
    for (i, e) in engines.iter().enumerate() {
        for &level in &inputs {
            let g = 10f32.powf((level - native) / 20.0);
            let x: Vec<f32> = talk.iter().zip(&noise).map(|(s, n)| s * g + n).collect();
            let (out, _) = run(*e, false, true, &silent, &x);
            let l = f64::from(speech_level_dbfs(&out[tail..]));
            let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            // How much more the pauses get than the speech (0: no pumping).
            let gain_speech = l - f64::from(level);
            let pumping = (pause_level(&out) - pause_level(&x)) - gain_speech;
            pause_gain[i] = pause_gain[i].max(pumping);
            println!(
                "{:<26} AGC: speech at {level:.0} dBFS comes out at {l:.1} dBFS (peak {peak:.3}); \
                 pauses {pumping:+.1} dB more than the speech ({} pause blocks)",
                e.name(),
                pauses.len()
            );
            agc_levels[i].push(l);
            agc_peaks[i] = agc_peaks[i].max(peak);
        }
        // The whole chain (high-pass, AEC, AGC) on the first room, per stream.
        let room = RoomResponse::synthetic(seeds.first().copied().unwrap_or(7));
        let scene = EchoScene::new(&asset(fars[0]), &near, near_at, &room);
        let (_, t) = run(*e, true, true, &scene.far, &scene.mic);
        full_cpu[i] = 100.0 * t / (scene.mic.len() as f64 / 48_000.0);
    }
    // Delay: the near end alone through each chain (everything on), cross-correlated.
    let delays: Vec<f64> = engines
        .iter()
        .map(|e| {
            let silent = vec![0.0; near.len()];
            let (out, _) = run(*e, true, true, &silent, &near);
            let (lag, _) = find_lag(&near[..out.len()], &out, 4 * CHUNK);
            lag as f64 / 48.0
        })
        .collect();

    println!();
    println!(
        "Echo rig: {} rooms (seeds {seeds:?}), far-end samples {:?}; near end {} from 7 s{}.",
        seeds.len(),
        &fars[..seeds.len().min(3)],
        near_path
            .as_deref()
            .map_or("speech.wav".into(), |p| p.display().to_string()),
        mic_noise.map_or(String::new(), |db| format!(
            ", microphone noise floor {db} dBFS in the double-talk scenes"
        )),
    );
    println!("Figures are the median over the rooms (min…max).");
    println!();
    println!(
        "| measure | target | {} | {} |",
        engines[0].name(),
        engines[1].name()
    );
    println!("|---|---|---|---|");
    let row = |name: &str, target: &str, f: &dyn Fn(usize) -> String| {
        println!("| {name} | {target} | {} | {} |", f(0), f(1));
    };
    row(
        "echo return loss enhancement, far end only, after 2 s",
        "≥ 30 dB",
        &|i| format!("{} dB", range(&figures[i].erle)),
    );
    row("near-end PESQ-WB during double talk", "≥ 3.5", &|i| {
        range(&figures[i].pesq_dt)
    });
    for (j, db) in QUIETER_DB.iter().enumerate() {
        row(&format!("… with the echo {db:.0} dB quieter"), "", &|i| {
            let v: Vec<f64> = figures[i].pesq_dt_quieter.iter().map(|q| q[j]).collect();
            range(&v)
        });
    }
    row(
        "residual echo sent back, far end only",
        "≤ −45 dBFS",
        &|i| format!("{} dBFS", range(&figures[i].residual)),
    );
    row(
        "AGC output level for speech at −45…−10 dBFS (target −22 dBFS)",
        "within ±3 dB",
        &|i| {
            let l = &agc_levels[i];
            let lo = l.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{lo:.1}…{hi:.1} dBFS ({:+.1}/{:+.1} dB), peak {:.3}",
                lo + 22.0,
                hi + 22.0,
                agc_peaks[i]
            )
        },
    );
    row(
        "AGC: pause noise raised beyond the speech's gain (pumping), worst input",
        "none",
        &|i| format!("{:+.1} dB", pause_gain[i]),
    );
    row("added mouth-to-ear delay", "≤ 1 ms", &|i| {
        format!("{:.1} ms", delays[i])
    });
    row(
        "added CPU per stream (AEC only; whole chain)",
        "≤ 1.5 % of one core",
        &|i| format!("{:.2} %; {:.2} %", median(&figures[i].cpu_pct), full_cpu[i]),
    );
    let none = median(&figures[0].pesq_none);
    println!();
    println!("Double talk without any echo cancellation: PESQ-WB {none:.2}.");
    println!();
    println!("What limits double talk with AEC3 (median over the rooms, min…max):");
    println!();
    println!("| check | figure |");
    println!("|---|---|");
    println!(
        "| rooms: direct-to-reverberant ratio; echo energy past AEC3's 52 ms linear filter | {} dB; {} dB |",
        range(&check.drr),
        range(&check.late)
    );
    println!(
        "| PESQ-WB, perfect canceller (microphone − true echo) | {} |",
        range(&check.perfect)
    );
    println!(
        "| PESQ-WB, near end alone while the far end plays (no echo to remove) | {} |",
        range(&check.no_echo)
    );
    println!(
        "| linear filter alone (suppressor transparent): PESQ-WB; ERLE; residual | {}; {} dB; {} dBFS |",
        range(&check.linear_pesq),
        range(&check.linear_erle),
        range(&check.linear_residual)
    );
    println!();
    println!(
        "What the double-talk target asks: the near end plus the rig's echo, uniformly \
         attenuated (an ideal canceller), against the near end alone:"
    );
    println!();
    println!("| echo removed | PESQ-WB |");
    println!("|---|---|");
    for (j, db) in IDEAL_REMOVAL_DB.iter().enumerate() {
        let v: Vec<f64> = check.ideal.iter().map(|q| q[j]).collect();
        println!("| {db:.0} dB | {} |", range(&v));
    }
    if let Some(d) = keep {
        println!("WAV files kept in {}", d.display());
    }
    ExitCode::SUCCESS
}
