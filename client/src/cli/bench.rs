//! `kv bench`: the figures of BENCHMARKS.md "Client latency".
//!
//! 1. The audio engine's own figures ([`crate::audio::bench::report`]): CPU time per frame
//!    of denoise, encode and decode, and the algorithmic latency parts.
//! 2. Mouth-to-ear through a real server: an in-process `kv-server` on 127.0.0.1, a talker
//!    session streaming the speech sample and a listener session recording to a WAV file,
//!    both real [`VoiceSession`]s with real sockets, threads and clocks. The delay is
//!    `recording_started + lag / 48 kHz - capture_started`, where the lag comes from
//!    cross-correlating the recording with the input: the same computation anyone can do
//!    from the outside with `kv join --json`.
//! 3. The recording's quality: PESQ-WB (ITU-T P.862.2) and the spread of its delay over
//!    0.1 s windows, from the project's meter `bench/playout/score.py` when its Python is
//!    there (`KV_PYTHON`, else the repository's `target/pyenv` made by `make venv`); the
//!    aligned log-spectral distance of [`quality`] as a secondary figure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;

use crate::audio::{self, quality, TxConfig, WavFormat};
use crate::control::ControlClient;
use crate::embedded_server::EmbeddedServer;
use crate::session::{InputSource, OutputSink, SessionConfig, SessionEvent, VoiceSession};

/// Arguments of `kv bench`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// Speech to send (48 kHz mono WAV; default: the repository's assets/speech.wav).
    #[arg(long, value_name = "WAV")]
    input: Option<PathBuf>,
    /// Mouth-to-ear runs per preset (the median and the best are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Frames for the CPU measurement.
    #[arg(long, default_value_t = 1000)]
    frames: usize,
    /// (dev) The listener's least jitter-buffer delay, ms, to explore the trade-off.
    #[arg(long, hide = true)]
    min_delay_ms: Option<u32>,
}

/// One mouth-to-ear run.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Measured delay, ms.
    delay_ms: f64,
    /// Listener's jitter-buffer target while the talker spoke, ms.
    target_ms: f32,
    /// Listener's buffered audio for the talker, ms (last stats).
    buffer_ms: f32,
    /// Frames the listener's jitter buffer stretched (grew) for the talker.
    stretched: u64,
    /// Aligned log-spectral distance of the recording, dB.
    lsd_db: f32,
    /// PESQ-WB and lag spread (max − min over voiced 0.1 s windows, ms) from the meter.
    pesq: Option<(f64, f64)>,
    /// Round-trip time of the talker's keepalives, ms.
    rtt_ms: f32,
}

fn default_input() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/speech.wav"))
}

/// The PESQ meter: (python, score.py), when both exist.
fn meter() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let python = std::env::var_os("KV_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/pyenv/bin/python"));
    let script = root.join("bench/playout/score.py");
    (python.exists() && script.exists()).then_some((python, script))
}

/// PESQ-WB and lag spread of `heard` against `input` from the meter.
fn pesq(meter: &(PathBuf, PathBuf), input: &Path, heard: &Path) -> Result<(f64, f64)> {
    let out = std::process::Command::new(&meter.0)
        .arg(&meter.1)
        .arg(input)
        .arg(heard)
        .output()
        .with_context(|| format!("running {}", meter.0.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "score.py failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("score.py output")?;
    let pesq = v["pesq_wb"]
        .as_f64()
        .ok_or_else(|| anyhow!("no PESQ-WB: {v}"))?;
    Ok((pesq, v["lag_spread_ms"].as_f64().unwrap_or(f64::NAN)))
}

/// Waits for the first event `pick` accepts, keeping the peer statistics seen meanwhile.
fn wait_event<T>(
    rx: &Receiver<SessionEvent>,
    timeout: Duration,
    mut pick: impl FnMut(&SessionEvent) -> Option<T>,
) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ev = rx
            .recv_timeout(left)
            .map_err(|_| anyhow!("session event did not arrive within {timeout:?}"))?;
        if let Some(t) = pick(&ev) {
            return Ok(t);
        }
    }
}

fn one_run(
    server: &str,
    input: &Path,
    meter: Option<&(PathBuf, PathBuf)>,
    speech: &[f32],
    tx: &TxConfig,
    min_delay_ms: Option<u32>,
    dir: &std::path::Path,
) -> Result<Run> {
    let control = ControlClient::new(server)?;
    let talker_id = crate::identity::keyed_user(&control)?;
    let listener_id = crate::identity::keyed_user(&control)?;
    let (talker, listener) = (talker_id.uid, listener_id.uid);
    let chid = talker_id.client(&control).create(talker)?;
    let out = dir.join(format!("bench-{chid}.wav"));

    let mut lcfg = SessionConfig::new(server, listener, chid);
    lcfg.control = Some(listener_id.client(&control));
    // The listener's jitter buffer waits at least half of the talker's frame (the preset's),
    // unless the dev flag sets another floor.
    lcfg.rx.min_delay_ms = min_delay_ms;
    lcfg.output = OutputSink::Wav {
        path: out.clone(),
        format: WavFormat::F32,
    };
    let (lsession, levents) = VoiceSession::start(lcfg)?;
    let mut recording = None;
    wait_event(&levents, Duration::from_secs(5), |e| match e {
        SessionEvent::RecordingStarted { unix_ms } => {
            recording = Some(*unix_ms);
            None
        }
        SessionEvent::Admitted { .. } => Some(()),
        _ => None,
    })?;

    let mut tcfg = SessionConfig::new(server, talker, chid);
    tcfg.control = Some(talker_id.client(&control));
    tcfg.tx = tx.clone();
    tcfg.input = InputSource::Samples(speech.to_vec());
    let (tsession, tevents) = VoiceSession::start(tcfg)?;
    let capture = wait_event(&tevents, Duration::from_secs(5), |e| match e {
        SessionEvent::CaptureStarted { unix_ms } => Some(*unix_ms),
        _ => None,
    })?;
    // Talk for the sample's length plus the tail the gate and buffers need.
    let talk = Duration::from_secs_f64(speech.len() as f64 / 48_000.0 + 0.5);
    let end = Instant::now() + talk;
    let (mut target_ms, mut buffer_ms, mut stretched) = (0.0f32, 0.0f32, 0u64);
    while Instant::now() < end {
        if let Ok(ev) = levents.recv_timeout(Duration::from_millis(50)) {
            match ev {
                SessionEvent::RecordingStarted { unix_ms } => recording = Some(unix_ms),
                SessionEvent::Stats(s) => {
                    if let Some(p) = s.peers.iter().find(|p| p.uid == talker && p.talking) {
                        target_ms = p.target_ms;
                        buffer_ms = p.buffer_ms;
                        stretched = p.stretched;
                    }
                }
                _ => {}
            }
        }
    }
    let rtt_ms = tsession.stats().link.srtt_ms.unwrap_or(0.0);
    tsession.leave()?;
    std::thread::sleep(Duration::from_millis(200));
    lsession.leave()?;
    while let Ok(ev) = levents.try_recv() {
        if let SessionEvent::RecordingStarted { unix_ms } = ev {
            recording = Some(unix_ms);
        }
    }
    let recording = recording.ok_or_else(|| anyhow!("listener never started recording"))?;
    let heard = audio::read_wav_mono_48k(&out)?;
    let pesq = meter.map(|m| pesq(m, input, &out)).transpose()?;
    let _ = std::fs::remove_file(&out);
    let q = quality::compare(speech, &heard, 96_000);
    let delay_ms = recording + q.lag_samples as f64 / 48.0 - capture;
    let _ = control.delete(talker, chid);
    Ok(Run {
        delay_ms,
        target_ms,
        buffer_ms,
        stretched,
        lsd_db: q.lsd_db,
        pesq,
        rtt_ms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn run(args: &BenchArgs) -> Result<ExitCode> {
    let input = args.input.clone().unwrap_or_else(default_input);
    let speech = audio::read_wav_mono_48k(&input)
        .with_context(|| format!("unreadable WAV {}", input.display()))?;
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");

    println!("== audio engine (no network) ==");
    print!("{}", audio::bench::report(&speech, args.frames.max(10))?);

    let meter = meter();
    let dir = std::env::temp_dir().join(format!("kv-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = EmbeddedServer::start(([127, 0, 0, 1], 0).into(), dir.join("server"))?;
    let addr = server.addr().to_string();
    println!();
    println!("== mouth-to-ear through a real server (in-process kv-server on {addr}) ==");
    let result = (|| -> Result<()> {
        for (name, tx) in [
            ("default", TxConfig::default()),
            ("20 ms frames", TxConfig::with_frame_ms(20)),
        ] {
            let parts = audio::bench::run(&speech, &tx, 50)?;
            let mut runs = Vec::with_capacity(args.runs);
            for _ in 0..args.runs {
                runs.push(one_run(
                    &addr,
                    &input,
                    meter.as_ref(),
                    &speech,
                    &tx,
                    args.min_delay_ms,
                    &dir,
                )?);
            }
            let delays: Vec<f64> = runs.iter().map(|r| r.delay_ms).collect();
            let med = median(delays.clone());
            let best = runs
                .iter()
                .min_by(|a, b| {
                    (a.delay_ms - med)
                        .abs()
                        .total_cmp(&(b.delay_ms - med).abs())
                })
                .copied()
                .ok_or_else(|| anyhow!("no runs"))?;
            let fixed = f64::from(tx.frame_ms)
                + f64::from(parts.lookahead_ms)
                + f64::from(parts.denoise_delay_ms);
            let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "{name} ({} ms frames): mouth-to-ear median {med:.1} ms, best {min:.1} ms, \
                 over {} runs {:?}",
                tx.frame_ms,
                runs.len(),
                delays
                    .iter()
                    .map(|d| (d * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
            println!(
                "  parts: frame {} + Opus lookahead {:.1} + denoise {:.1} + jitter buffer target {:.1} \
                 (held {:.1}) + network, scheduling and output-block phase {:.1} ms (RTT {:.2} ms)",
                tx.frame_ms,
                parts.lookahead_ms,
                parts.denoise_delay_ms,
                best.target_ms,
                best.buffer_ms,
                best.delay_ms - fixed - f64::from(best.target_ms),
                best.rtt_ms,
            );
            let pesqs: Vec<f64> = runs.iter().filter_map(|r| r.pesq.map(|p| p.0)).collect();
            if pesqs.is_empty() {
                println!(
                    "  received speech quality: LSD {:.2} dB (PESQ-WB not measured: no meter; \
                     `make venv` or KV_PYTHON)",
                    best.lsd_db
                );
            } else {
                println!(
                    "  received speech quality: PESQ-WB median {:.2} over {} runs (LSD {:.2} dB)",
                    median(pesqs.clone()),
                    pesqs.len(),
                    best.lsd_db
                );
            }
            for (i, r) in runs.iter().enumerate() {
                let pesq = r.pesq.map_or(String::new(), |(p, spread)| {
                    format!(", PESQ-WB {p:.2}, lag spread {spread:.1} ms")
                });
                println!(
                    "  run {i}: {:.1} ms, jitter buffer target {:.1} ms, held {:.1} ms, \
                     stretched {} frames, LSD {:.2} dB{pesq}",
                    r.delay_ms, r.target_ms, r.buffer_ms, r.stretched, r.lsd_db
                );
            }
        }
        Ok(())
    })();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(ExitCode::SUCCESS)
}
