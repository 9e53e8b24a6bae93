//! `kv join`: stream an input into a channel and record what is heard, until
//! `--duration` passes, Ctrl-C / SIGTERM arrives, or the server ends the session.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::audio::{self, TransmitMode, TxConfig, WavFormat};
use crate::session::{
    pump, EndReason, Flow, InputSource, OutputSink, SessionConfig, SessionEvent, VoiceSession,
};

use super::{json, Target};

/// How often the event pump checks the deadline and the signal flag.
const PUMP_TICK: Duration = Duration::from_millis(20);
/// Exit status when the server ended the session (kicked, channel closed).
const EXIT_ENDED_BY_SERVER: u8 = 3;

/// Arguments of `kv join`.
#[derive(Debug, Args)]
pub(super) struct JoinArgs {
    /// Channel id.
    chid: u64,
    /// WAV file streamed as the microphone (silence when absent and no device is given).
    #[arg(long, value_name = "WAV", conflicts_with = "input_device")]
    input: Option<PathBuf>,
    /// WAV file receiving everything heard, mixed, continuous from `recording_started`.
    #[arg(long, value_name = "WAV", conflicts_with = "output_device")]
    output: Option<PathBuf>,
    /// Leave after this many seconds (default: run until Ctrl-C or the server ends it).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Capture from this device (`default` for the system's own).
    #[arg(long, value_name = "NAME")]
    input_device: Option<String>,
    /// Play to this device (`default` for the system's own).
    #[arg(long, value_name = "NAME")]
    output_device: Option<String>,
    /// Switch noise suppression off.
    #[arg(long)]
    no_denoise: bool,
    /// Echo cancellation: `auto` (default) is on when both input and output are devices.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    aec: Switch,
    /// Automatic gain control: `auto` (default) is on when the input is a device.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    agc: Switch,
    /// (test) Feed our own playback back into our capture through the synthetic room of
    /// this seed (20-40 ms direct sound, 150-300 ms tail): the end-to-end echo test.
    #[arg(long, hide = true, value_name = "SEED")]
    echo_test_seed: Option<u64>,
    /// Print events as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Transmit mode.
    #[arg(long, value_enum, default_value = "vad")]
    mode: TransmitMode,
    /// Frame duration in ms: 10 (default) or 20 (half the packets, ~10 ms more delay).
    #[arg(long, default_value_t = 10, value_name = "MS")]
    frame_ms: u32,
    /// Opus bitrate, bit/s.
    #[arg(long, value_name = "BPS")]
    bitrate: Option<i32>,
    /// (dev) Do not repeat earlier frames in packets, to measure what redundancy buys.
    #[arg(long, hide = true)]
    no_redundancy: bool,
    /// (dev) Send voice to this address instead of the channel's port (a test relay).
    #[arg(long, hide = true, value_name = "ADDR")]
    voice_addr: Option<SocketAddr>,
    /// (dev) Write the output WAV as 32-bit float (bit-exact mix, for measurements).
    #[arg(long, hide = true)]
    float_wav: bool,
    /// Say this in the channel's chat (encrypted channels; repeatable, in order).
    #[arg(long, value_name = "TEXT")]
    say: Vec<String>,
    /// Say the `--say` texts once the channel's group has this many members (default 1:
    /// as soon as we are in it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    say_when_members: usize,
}

/// On, off, or decided by the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Switch {
    Auto,
    On,
    Off,
}

impl Switch {
    fn resolve(self, auto: bool) -> bool {
        match self {
            Switch::Auto => auto,
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

impl JoinArgs {
    fn tx_config(&self) -> TxConfig {
        let mut tx = TxConfig::with_frame_ms(self.frame_ms);
        tx.denoise = !self.no_denoise;
        tx.redundancy = !self.no_redundancy;
        tx.mode = self.mode;
        if let Some(b) = self.bitrate {
            tx.bitrate = b;
        }
        tx
    }
}

/// Sets a flag on Ctrl-C or SIGTERM, so the session leaves cleanly and the WAV is whole.
fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("kv-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    let Ok(mut term) = signal(SignalKind::terminate()) else {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
            });
            f.store(true, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no signal handling");
    }
    flag
}

pub(super) fn run(target: &Target, server: &str, args: JoinArgs) -> Result<ExitCode> {
    let input = match (&args.input, &args.input_device) {
        (Some(path), _) => {
            InputSource::Samples(audio::read_wav_mono_48k(path).context("unreadable WAV")?)
        }
        (None, Some(dev)) => InputSource::Device(dev.clone()),
        (None, None) => InputSource::Silence,
    };
    let output = match (&args.output, &args.output_device) {
        (Some(path), _) => OutputSink::Wav {
            path: path.clone(),
            format: if args.float_wav {
                WavFormat::F32
            } else {
                WavFormat::I16
            },
        },
        (None, Some(dev)) => OutputSink::Device(dev.clone()),
        (None, None) => OutputSink::Discard,
    };
    if let Some(d) = args.duration {
        anyhow::ensure!(
            d.is_finite() && d > 0.0,
            "--duration must be a positive number"
        );
    }
    let me = target.acting()?;
    let mut cfg = SessionConfig::new(server, me.uid, args.chid);
    cfg.control = Some(me.client(&target.control));
    cfg.tx = args.tx_config();
    let mic = SessionConfig::mic_defaults(&input, &output);
    cfg.mic.aec = args.aec.resolve(mic.aec);
    cfg.mic.agc = args.agc.resolve(mic.agc);
    cfg.echo_test_seed = args.echo_test_seed;
    cfg.input = input;
    cfg.output = output;
    cfg.voice_addr = args.voice_addr;
    let interrupted = watch_signals();
    let (mut session, events) = VoiceSession::start(cfg)?;
    let mut to_say = args.say.clone();
    anyhow::ensure!(
        to_say.is_empty() || session.encrypted(),
        "chat (--say) needs an end-to-end encrypted channel"
    );
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let print = |ev: &SessionEvent| {
        if args.json {
            println!("{}", json::event(ev));
        } else if let Some(line) = json::human(ev) {
            println!("{line}");
        }
    };
    // Until the deadline, a signal, or the session ending on its own; what is queued by then
    // (the reason, above all) is still printed.
    pump(
        &events,
        PUMP_TICK,
        || {
            let done = interrupted.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
                || session.is_stopped();
            if done {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
        |ev| {
            if let SessionEvent::Epoch { members, .. } = &ev {
                if members.len() >= args.say_when_members {
                    for text in to_say.drain(..) {
                        if let Err(e) = session.say(&text) {
                            eprintln!("kv: chat message not sent: {e}");
                        }
                    }
                }
            }
            print(&ev);
            Flow::Continue
        },
    );
    let reason = session.end_reason();
    let stats = session.stop()?;
    while let Ok(ev) = events.try_recv() {
        print(&ev);
    }
    if args.json {
        println!("{}", json::left(&stats));
    }
    // The statistics and the recording are complete; now tell the server.
    session.leave()?;
    match reason {
        Some(EndReason::Kicked) => {
            eprintln!("kv: removed from channel {}", args.chid);
            Ok(ExitCode::from(EXIT_ENDED_BY_SERVER))
        }
        Some(EndReason::Shutdown) => {
            eprintln!("kv: server closed channel {}", args.chid);
            Ok(ExitCode::from(EXIT_ENDED_BY_SERVER))
        }
        Some(EndReason::Failed) => anyhow::bail!("session failed"),
        _ => Ok(ExitCode::SUCCESS),
    }
}
