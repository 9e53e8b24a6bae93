//! Playout quality, end to end: one talker `kv join --input SAMPLE` and one listener
//! `kv join --output OUT.wav` through the real server, the listener's voice traffic through
//! the impairment proxy ([`crate::lossy`]), impaired on the way *down* to the listener (the
//! talker's upstream and the listener's keepalives are clean), and the recording scored
//! against the sample by `bench/playout/score.py` (PESQ-WB, ITU-T P.862.2, plus
//! mouth-to-ear and timing stability). Shared by the tests (`tests/client_playout.rs`) and
//! the benchmark (`playout-bench`, BENCHMARKS.md "Playout quality").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::kv::{read_wav, write_wav, Joined, Room, JOIN_GRACE};
use crate::lossy::{Direction, Impairment, LossyRelay, RelayStats};
use crate::ServerProcess;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python that has `pesq`, `numpy` and `scipy`: `KV_PYTHON`, else the venv `make venv`
/// creates in `target/pyenv`. Panics with what to do when neither exists.
pub fn python() -> PathBuf {
    let path = std::env::var_os("KV_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/pyenv/bin/python"));
    assert!(
        path.exists(),
        "no Python for the PESQ meter at {}: run `make venv` (a venv in target/pyenv with \
         pesq, numpy and scipy) or point KV_PYTHON at a Python that has them",
        path.display()
    );
    path
}

/// The meter.
pub fn score_script() -> PathBuf {
    repo_root().join("bench/playout/score.py")
}

/// What `score.py` measured (see its doc string for the definitions).
#[derive(Debug, Clone)]
pub struct Score {
    /// PESQ-WB (MOS-LQO, 1.0–4.64); `None` when the C code found nothing to score.
    pub pesq_wb: Option<f64>,
    /// recording_started + lag / 48 kHz − capture_started, ms (when time bases were given).
    pub mouth_to_ear_ms: Option<f64>,
    /// Max − min of the local lag over the found active 0.1 s windows, ms.
    pub lag_spread_ms: Option<f64>,
    /// p95 − p5 of the same, ms.
    pub lag_spread_p90_ms: Option<f64>,
    /// Mean peak correlation of the active windows.
    pub window_corr_mean: Option<f64>,
    /// Active windows whose waveform was not found (peak correlation < 0.5).
    pub windows_not_found: u64,
    /// Log-spectral distance, dB (secondary).
    pub lsd_db: Option<f64>,
    /// Mouth-to-ear over the windows from `--tail-from` on, ms.
    pub tail_mouth_to_ear_ms: Option<f64>,
    /// Lag spread over those windows, ms.
    pub tail_lag_spread_ms: Option<f64>,
    /// Everything the script printed.
    pub raw: Value,
}

impl Score {
    /// Normalised peak of the global cross-correlation (1 = the same waveform).
    pub fn correlation(&self) -> Option<f64> {
        self.raw["correlation"].as_f64()
    }
}

/// Scores `degraded` against `reference`; `times` = (capture_started, recording_started)
/// unix_ms; `tail_from` in seconds of the reference.
pub fn score(
    reference: &Path,
    degraded: &Path,
    times: Option<(f64, f64)>,
    tail_from: Option<f64>,
) -> Score {
    let mut cmd = Command::new(python());
    cmd.arg(score_script()).arg(reference).arg(degraded);
    if let Some((capture, recording)) = times {
        cmd.args(["--capture-ms", &capture.to_string()]);
        cmd.args(["--recording-ms", &recording.to_string()]);
    }
    if let Some(t) = tail_from {
        cmd.args(["--tail-from", &t.to_string()]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "score.py {} {} failed ({}): {}",
        reference.display(),
        degraded.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "score.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let f = |k: &str| raw[k].as_f64();
    Score {
        pesq_wb: f("pesq_wb"),
        mouth_to_ear_ms: f("mouth_to_ear_ms"),
        lag_spread_ms: f("lag_spread_ms"),
        lag_spread_p90_ms: f("lag_spread_p90_ms"),
        window_corr_mean: f("window_corr_mean"),
        windows_not_found: raw["windows_not_found"].as_u64().unwrap_or(0),
        lsd_db: f("lsd_db"),
        tail_mouth_to_ear_ms: f("tail_mouth_to_ear_ms"),
        tail_lag_spread_ms: f("tail_lag_spread_ms"),
        raw,
    }
}

/// A speech sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Short name (file stem).
    pub name: String,
    /// The WAV file (48 kHz mono).
    pub path: PathBuf,
    /// Made at run time, never committed or tuned on.
    pub held_out: bool,
}

impl Sample {
    fn from_path(path: PathBuf, held_out: bool) -> Self {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            name,
            path,
            held_out,
        }
    }

    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        read_wav(&self.path).len() as f64 / 48_000.0
    }
}

/// The committed samples of `assets/` (assets/README.md).
pub fn committed_samples() -> Vec<Sample> {
    ["speech-en-us-m", "speech-en-gb-f", "speech-de-m"]
        .iter()
        .map(|n| Sample::from_path(repo_root().join(format!("assets/{n}.wav")), false))
        .collect()
}

/// Makes the held-out sample into `dir` with `assets/make-speech.sh --held-out`.
pub fn held_out_sample(dir: &Path) -> Result<Sample, String> {
    let script = repo_root().join("assets/make-speech.sh");
    let out = Command::new(&script)
        .arg("--held-out")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --held-out failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = dir.join("held-out-en-sc-f.wav");
    if !path.exists() {
        return Err(format!("{} was not written", path.display()));
    }
    Ok(Sample::from_path(path, true))
}

/// One row of the Targets table: how the run is set up.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Short key (`--rows`).
    pub key: String,
    /// The row as the Targets table names it.
    pub label: String,
    /// The target, as text.
    pub target: &'static str,
    /// Impairment of the listener's downstream (its seed is replaced per run).
    pub down: Impairment,
    /// The downstream turns clean this many seconds after `capture_started`.
    pub clean_after_s: Option<f64>,
    /// Timing is also measured over the reference from this second on.
    pub tail_from_s: Option<f64>,
    /// White noise added to the talker's input at this SNR (dB); the score is against the
    /// clean sample.
    pub noise_snr_db: Option<f64>,
    /// Extra flags of the talker's `kv join` (the listener keeps the defaults: a sender's
    /// frame size and mode are its own choice, the receiver follows).
    pub args: &'static [&'static str],
}

/// The rows of the Targets table, plus continuous mode (voice activation must be
/// within 0.05 PESQ of it).
pub fn conditions() -> Vec<Condition> {
    let base = Condition {
        key: String::new(),
        label: String::new(),
        target: "",
        down: Impairment::none(),
        clean_after_s: None,
        tail_from_s: None,
        noise_snr_db: None,
        args: &[],
    };
    vec![
        Condition {
            key: "clean".into(),
            label: "clean".into(),
            target: ">= 4.15 / <= 45 ms",
            ..base.clone()
        },
        Condition {
            key: "continuous".into(),
            label: "clean, `--mode continuous`".into(),
            target: "VAD within 0.05 of this",
            args: &["--mode", "continuous"],
            ..base.clone()
        },
        Condition {
            key: "loss10".into(),
            label: "10 % random loss".into(),
            target: ">= 4.0 / <= 70 ms",
            down: Impairment::random_loss(0.10, 0),
            ..base.clone()
        },
        Condition {
            key: "loss20".into(),
            label: "20 % random loss".into(),
            target: ">= 3.8 / <= 75 ms",
            down: Impairment::random_loss(0.20, 0),
            ..base.clone()
        },
        Condition {
            key: "bursts".into(),
            label: "10 % loss, Gilbert-Elliott bursts of mean 3".into(),
            target: ">= 3.5 / <= 120 ms",
            down: Impairment::bursts(0.10, 3.0, 0),
            ..base.clone()
        },
        Condition {
            key: "jitter".into(),
            label: "0-30 ms jitter + 1 % 150 ms spikes".into(),
            target: ">= 3.6 / <= 100 ms",
            down: Impairment::jitter_spikes(30.0, 0.01, 150, 0),
            ..base.clone()
        },
        Condition {
            key: "frame10".into(),
            label: "clean, `--frame-ms 10`".into(),
            target: ">= 4.0 / <= 28 ms",
            args: &["--frame-ms", "10"],
            ..base.clone()
        },
        Condition {
            key: "noise".into(),
            label: "5 dB white noise, denoise on, against clean speech".into(),
            target: ">= 1.4 (no worse than before)",
            noise_snr_db: Some(5.0),
            ..base.clone()
        },
        Condition {
            key: "recovery".into(),
            label: "recovery: 10 % loss + 0-30 ms jitter + 2 % 150 ms spikes for 5 s, then clean"
                .into(),
            target: "delay within 5 ms of clean in <= 5 s",
            down: Impairment {
                loss: 0.10,
                ..Impairment::jitter_spikes(30.0, 0.02, 150, 0)
            },
            clean_after_s: Some(5.0),
            tail_from_s: Some(10.0),
            ..base
        },
    ]
}

/// A row replaying the recorded loss/delay trace at `path` on the listener's downstream
/// (format: [`crate::lossy::trace`]).
pub fn trace_condition(path: &Path) -> Result<Condition, String> {
    let trace = crate::lossy::Trace::load(path)?;
    let name = path
        .file_stem()
        .map_or("trace".into(), |s| s.to_string_lossy().into_owned());
    Ok(Condition {
        key: format!("trace:{name}"),
        label: format!(
            "recorded trace `{}` ({} datagrams, looped)",
            path.display(),
            trace.len()
        ),
        target: "–",
        down: Impairment::replay(trace),
        clean_after_s: None,
        tail_from_s: None,
        noise_snr_db: None,
        args: &[],
    })
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The meter's figures.
    pub score: Score,
    /// Playout adjustments of the listener for the talker (see [`adjustments`]).
    pub adjustments: u64,
    /// Of these, the ones after the talker's first talk spurt ended (`None` if it never
    /// ended while the listener printed statistics).
    pub adjustments_after_first_spurt: Option<u64>,
    /// Frames that came after they were needed, after the first talk spurt ended (`None`
    /// like [`Self::adjustments_after_first_spurt`]).
    pub late_after_first_spurt: Option<u64>,
    /// The listener's last statistics for the talker.
    pub peer: Value,
    /// What the proxy did on the listener's downstream.
    pub relay_down: RelayStats,
    /// How well the machine kept time during the run ([`MachineProbe`]).
    pub machine: MachineTiming,
}

/// Wake-ups of a thread at the clients' priority that came late during a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTiming {
    /// Wake-ups more than [`STALL_MS`] late.
    pub stalls: u64,
    /// The latest wake-up, ms.
    pub worst_ms: f64,
}

/// A wake-up this much later than asked is a stall of the machine: a frame held that long
/// anywhere on loopback may come after it was needed, and no network did it.
pub const STALL_MS: f64 = 3.0;

/// Watches the machine during a run: a thread at the priority the clients' timing threads
/// get sleeps 1 ms at a time and notes how late it wakes. A run on a loopback link in which
/// the machine stalled measured the machine, not the playout, and tests may play it again.
#[derive(Debug)]
pub struct MachineProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<MachineTiming>>,
}

impl MachineProbe {
    /// Starts watching.
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            kv_client::audio::priority::raise_current_thread();
            let mut t = MachineTiming::default();
            while !s.load(Ordering::Relaxed) {
                let asked = Duration::from_millis(1);
                let start = std::time::Instant::now();
                std::thread::sleep(asked);
                let late = start.elapsed().saturating_sub(asked).as_secs_f64() * 1000.0;
                t.worst_ms = t.worst_ms.max(late);
                if late > STALL_MS {
                    t.stalls += 1;
                }
            }
            t
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching and returns what was seen.
    pub fn finish(mut self) -> MachineTiming {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// Playout adjustments in a peer's statistics: `adjustments` when the engine reports it,
/// else stretched + dropped + concealed frames (today's engine's counters).
pub fn adjustments(peer: &Value) -> u64 {
    if let Some(a) = peer["adjustments"].as_u64() {
        return a;
    }
    ["stretched", "dropped", "concealed"]
        .iter()
        .map(|k| peer[k].as_u64().unwrap_or(0))
        .sum()
}

/// The peer `uid` in a `stats`/`left` event.
fn peer_in(event: &Value, uid: u64) -> Option<&Value> {
    event["peers"].as_array()?.iter().find(|p| p["uid"] == uid)
}

/// The listener's last statistics for `uid` (`left` if it still lists the peer, else the
/// last `stats` that does: the talker is forgotten once it has left).
pub fn last_peer_stats(listener: &Joined, uid: u64) -> Value {
    listener
        .events
        .iter()
        .rev()
        .filter(|e| e["event"] == "stats" || e["event"] == "left")
        .find_map(|e| peer_in(e, uid).cloned())
        .unwrap_or(Value::Null)
}

/// Adjustments counted after `uid`'s first talk spurt: the final count minus the count in
/// the first statistics printed after the listener saw the spurt end.
fn adjustments_after_first_spurt(listener: &Joined, uid: u64, total: u64) -> Option<u64> {
    let base = stats_after_first_spurt(listener, uid)?;
    Some(total.saturating_sub(adjustments(base)))
}

/// The listener's first statistics for `uid` after the talker's first talk spurt ended.
fn stats_after_first_spurt(listener: &Joined, uid: u64) -> Option<&Value> {
    let end = listener
        .events
        .iter()
        .position(|e| e["event"] == "talking_stopped" && e["uid"] == uid)?;
    listener.events[end..]
        .iter()
        .filter(|e| e["event"] == "stats")
        .find_map(|e| peer_in(e, uid))
}

/// Writes `sample` plus seeded white noise at `snr_db` below the speech's active level
/// (mean power of the 20 ms frames within 40 dB of the loudest) to `out`.
pub fn add_noise(sample: &Path, snr_db: f64, seed: u64, out: &Path) {
    let speech = read_wav(sample);
    let powers: Vec<f64> = speech
        .chunks(960)
        .map(|f| f.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / f.len() as f64)
        .collect();
    let loudest = powers.iter().copied().fold(0.0, f64::max);
    let active: Vec<f64> = powers
        .iter()
        .copied()
        .filter(|p| *p >= loudest * 1e-4)
        .collect();
    let level = active.iter().sum::<f64>() / active.len().max(1) as f64;
    // Uniform white noise on [-a, a] has power a² / 3.
    let a = (3.0 * level / 10f64.powf(snr_db / 10.0)).sqrt();
    let mut rng = StdRng::seed_from_u64(seed);
    let noisy: Vec<f32> = speech
        .iter()
        .map(|s| (f64::from(*s) + rng.random_range(-a..=a)).clamp(-1.0, 1.0) as f32)
        .collect();
    write_wav(out, &noisy);
}

fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs `cond` once on `sample` with proxy seed `seed`, in a fresh channel of `server`,
/// keeping files in `dir`.
pub fn run(
    server: &ServerProcess,
    cond: &Condition,
    sample: &Sample,
    seed: u64,
    dir: &Path,
) -> RunResult {
    let probe = MachineProbe::start();
    let room = Room::new(server.addr, 2);
    let down = Impairment {
        seed,
        ..cond.down.clone()
    };
    let relay = LossyRelay::start_split(
        server.udp_addr(u64::from(room.port())),
        Impairment::none(),
        down,
    )
    .expect("start the impairment proxy");
    let tag = format!("{}-{}-{seed}", cond.key, sample.name);
    let out = dir.join(format!("{tag}.wav"));
    let input = match cond.noise_snr_db {
        Some(snr) => {
            let noisy = dir.join(format!("{tag}-input.wav"));
            add_noise(&sample.path, snr, seed, &noisy);
            noisy
        }
        None => sample.path.clone(),
    };
    let via = relay.addr().to_string();
    let out_s = out.to_string_lossy().into_owned();
    let talk = sample.seconds() + 1.0;
    // The listener is stopped (SIGTERM) once the talker is done; the duration is only a
    // backstop, so a listener never outlives a killed bench or test by long.
    let backstop = format!("{:.0}", talk + 60.0);
    let listener = room.join(
        1,
        &[
            "--output",
            &out_s,
            "--float-wav",
            "--voice-addr",
            &via,
            "--duration",
            &backstop,
        ],
    );
    listener.wait_for("admitted", Duration::from_secs(10));

    let talk_s = format!("{talk:.2}");
    let input_s = input.to_string_lossy().into_owned();
    let mut targs = vec!["--input", &input_s, "--duration", &talk_s];
    targs.extend_from_slice(cond.args);
    let talker = room.join(0, &targs);
    let capture = talker.wait_for("capture_started", Duration::from_secs(10))["unix_ms"]
        .as_f64()
        .expect("capture_started unix_ms");
    if let Some(after) = cond.clean_after_s {
        let wait_ms = capture + after * 1000.0 - unix_ms_now();
        if wait_ms > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait_ms / 1000.0));
        }
        relay.set(Direction::Down, Impairment::none());
    }
    let t = talker.finish(JOIN_GRACE + Duration::from_secs_f64(talk));
    t.assert_ok();
    // The last frames are still in the listener's buffer.
    std::thread::sleep(Duration::from_millis(300));
    listener.terminate();
    let l = listener.finish(JOIN_GRACE);
    l.assert_ok();
    let recording = l.time_base("recording_started");
    let capture = t.time_base("capture_started");
    let score = score(
        &sample.path,
        &out,
        Some((capture, recording)),
        cond.tail_from_s,
    );
    let talker_uid = room.uids[0];
    let peer = last_peer_stats(&l, talker_uid);
    let adj = adjustments(&peer);
    let after = adjustments_after_first_spurt(&l, talker_uid, adj);
    let late = |v: &Value| v["late"].as_u64().unwrap_or(0);
    let late_after =
        stats_after_first_spurt(&l, talker_uid).map(|base| late(&peer).saturating_sub(late(base)));
    if std::env::var_os("KV_PLAYOUT_KEEP").is_none() {
        // (The bench runs many rows: the recordings go unless someone asked to keep them.)
        let _ = std::fs::remove_file(&out);
        if cond.noise_snr_db.is_some() {
            let _ = std::fs::remove_file(&input);
        }
    }
    RunResult {
        score,
        adjustments: adj,
        adjustments_after_first_spurt: after,
        late_after_first_spurt: late_after,
        peer,
        relay_down: relay.stats_of(Direction::Down),
        machine: probe.finish(),
    }
}

/// Opus alone on `sample` (opusenc/opusdec from opus-tools, 48 kb/s hard CBR, 20 ms
/// frames), scored like a run: the codec's own quality, what the playout path can at best
/// deliver.
pub fn opus_alone(sample: &Sample, dir: &Path) -> Result<Score, String> {
    let opus = dir.join(format!("{}.opus", sample.name));
    let wav = dir.join(format!("{}-opus.wav", sample.name));
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(Command::new("opusenc")
        .args([
            "--quiet",
            "--bitrate",
            "48",
            "--framesize",
            "20",
            "--hard-cbr",
        ])
        .arg(&sample.path)
        .arg(&opus))?;
    run(Command::new("opusdec")
        .args(["--quiet", "--rate", "48000"])
        .arg(&opus)
        .arg(&wav))?;
    let s = score(&sample.path, &wav, None, None);
    let _ = std::fs::remove_file(&opus);
    let _ = std::fs::remove_file(&wav);
    Ok(s)
}

/// Median of `v` (upper median for even lengths); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}
