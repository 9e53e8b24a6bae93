//! The device path for real, without a sound card: PulseAudio with null sinks stands in for
//! the hardware, and two `kv join` processes use real cpal devices (ALSA's `default`, which
//! the pulse plugin routes to PulseAudio), each pointed at its own sink or source with
//! `PULSE_SOURCE` / `PULSE_SINK`.
//!
//! Speech is played into A's microphone (the monitor of sink `mic_a` is A's source); B's
//! speaker is sink `spk_b`, whose monitor `parec` records. The recording must be the speech,
//! measured with the log-spectral distance of `kv_client::audio::quality` after alignment.
//!
//! Ignored (with the reason) when PulseAudio's tools were missing at build time (`make deps`
//! installs them: pulseaudio, pulseaudio-utils, libasound2-plugins).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_client::audio::quality;
use kv_proto::ControlRequest;
use kv_tests::pulse::{missing_tools, Pulse};
use kv_tests::tmux::{shell_quote, Tmux};
use kv_tests::ServerProcess;

/// Each test runs a PulseAudio daemon, a server and two real-time clients; on two cores,
/// running them side by side starves the audio threads and measures the machine, not KV.
/// Each test holds this for its whole run so they take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Takes this test's turn (a failed earlier test does not block the others).
fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `kv join --json` process; its JSON lines are collected as they arrive.
struct Kv {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Kv {
    fn spawn(pulse: &Pulse, env: (&str, &str), config: &Path, args: &[String]) -> Kv {
        let mut child = pulse
            .command(
                kv_tests::bin_path("kv-e2e", "KV_BIN")
                    .to_str()
                    .expect("utf-8 path"),
            )
            .env(env.0, env.1)
            .env("KV_CONFIG_DIR", config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kv");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().expect("lines").push(line);
            }
        });
        Kv { child, lines }
    }

    fn has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(needle))
    }

    fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has(needle) {
            assert!(
                Instant::now() < deadline,
                "kv never printed {needle}: {:?}",
                self.lines.lock().expect("lines")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("kv status") {
                assert!(status.success(), "kv exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "kv did not finish in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines.lock().expect("lines").clone();
        lines
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn speech_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/speech.wav")
}

/// Where B's audio goes in a scenario.
enum Listen {
    /// B plays to its speaker device (sink `spk_b`), recorded from the sink's monitor.
    Device,
    /// B writes what it hears to a WAV file (isolates the capture side).
    File,
}

/// A talks from its microphone device; B listens as `listen` says. Returns the recording
/// of what B played, scored against the speech sample, with both signals.
fn talk_through_devices(listen: Listen) -> (quality::QualityReport, Vec<f32>, Vec<f32>) {
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "{} not installed (`make deps` installs pulseaudio, pulseaudio-utils, \
         libasound2-plugins)",
        missing.join(", ")
    );
    let pulse = Pulse::start();
    pulse.null_sink("mic_a");
    pulse.null_sink("spk_b");

    let server = ServerProcess::start();
    let a = server.signup();
    let b = server.signup();
    let chid = server.ok(&ControlRequest::Create { uid: a });
    let addr = server.addr.to_string();
    let config = tempfile::tempdir().expect("config dir");
    let rec_dir = tempfile::tempdir().expect("recording dir");
    let rec = rec_dir.path().join("heard.wav");
    let join = |uid: u64, device: &[&str], secs: &str| -> Vec<String> {
        let mut v: Vec<String> = ["--server", &addr, "--uid", &uid.to_string(), "join"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(chid.to_string());
        v.extend(device.iter().map(|s| s.to_string()));
        v.extend(["--duration", secs, "--json"].iter().map(|s| s.to_string()));
        v
    };

    // B listens on its speaker (sink spk_b) or into a file; A talks from its microphone
    // (the monitor of mic_a, into which the speech is played).
    let rec_arg = rec.display().to_string();
    let b_out: Vec<&str> = match listen {
        Listen::Device => vec!["--output-device", "default"],
        Listen::File => vec!["--output", &rec_arg],
    };
    let listener = Kv::spawn(
        &pulse,
        ("PULSE_SINK", "spk_b"),
        config.path(),
        &join(b, &b_out, "14"),
    );
    listener.wait_for("\"admitted\"", Duration::from_secs(10));
    let talker = Kv::spawn(
        &pulse,
        ("PULSE_SOURCE", "mic_a.monitor"),
        config.path(),
        &join(a, &["--input-device", "default"], "11"),
    );
    talker.wait_for("\"admitted\"", Duration::from_secs(10));
    talker.wait_for("capture_started", Duration::from_secs(10));

    let mut parec = match listen {
        Listen::Device => Some(
            pulse
                .command("parec")
                .args([
                    "-d",
                    "spk_b.monitor",
                    "--rate=48000",
                    "--channels=1",
                    "--format=s16le",
                    "--file-format=wav",
                ])
                .arg(&rec)
                .spawn()
                .expect("start parec"),
        ),
        Listen::File => None,
    };
    std::thread::sleep(Duration::from_millis(500));
    let played = pulse
        .command("paplay")
        .args(["-d", "mic_a"])
        .arg(speech_path())
        .status()
        .expect("run paplay");
    assert!(played.success(), "paplay failed");
    std::thread::sleep(Duration::from_secs(2));
    if let Some(p) = parec.as_mut() {
        // SIGINT lets parec finish the WAV header.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(p.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = p.wait();
    }

    let talker_events = talker.finish(Duration::from_secs(20));
    let listener_events = listener.finish(Duration::from_secs(20));
    assert!(
        listener_events
            .iter()
            .any(|l| l.contains("talking_started") && l.contains(&a.to_string())),
        "B heard A talking: {listener_events:?}"
    );
    assert!(
        talker_events.iter().any(|l| l.contains("\"left\"")),
        "{talker_events:?}"
    );

    // B's counters (device underruns, late blocks; A's stretches and losses in its last
    // statistics while A was a member), to read a bad score by.
    for l in [
        listener_events
            .iter()
            .rfind(|l| l.contains("\"stretched\"")),
        listener_events.iter().find(|l| l.contains("\"left\"")),
    ]
    .into_iter()
    .flatten()
    {
        println!("listener: {l}");
    }

    let reference = kv_client::audio::read_wav_mono_48k(speech_path()).expect("speech");
    let heard = kv_client::audio::read_wav_mono_48k(&rec).expect("recording");
    let report = quality::compare(&reference, &heard, heard.len().max(reference.len()));
    println!(
        "lag {:.0} ms, correlation {:.2}, LSD {:.1} dB (p95 {:.1}), SNR {:.1} dB over {} \
         active frames",
        report.lag_samples as f64 / 48.0,
        report.correlation,
        report.lsd_db,
        report.lsd_p95_db,
        report.snr_db,
        report.active_frames
    );
    assert!(report.active_frames > 100, "{report:?}");
    (report, reference, heard)
}

/// Microphone device → Opus → server → B's file: the capture side of cpal for real.
#[test]
#[cfg_attr(
    kv_no_pulse,
    ignore = "PulseAudio is not installed (`make deps` installs it)"
)]
fn speech_from_a_real_capture_device_arrives_clean() {
    let _turn = take_turn();
    let (report, _, _) = talk_through_devices(Listen::File);
    // Measured 3.2 dB here (same scale as the loss-free WAV-to-WAV path).
    assert!(report.lsd_db < 5.0, "speech arrives clean: {report:?}");
}

/// Microphone device → server → B's speaker device, recorded from the sink's monitor: the
/// whole device path, both cpal directions.
#[test]
#[cfg_attr(
    kv_no_pulse,
    ignore = "PulseAudio is not installed (`make deps` installs it)"
)]
fn speech_crosses_real_capture_and_playback_devices() {
    let _turn = take_turn();
    let (report, reference, heard) = talk_through_devices(Listen::Device);
    // The speech's sound arrives through both devices: as much active (speech-loud) audio
    // as was spoken, at a similar loudness.
    let (ref_active, ref_peak) = activity(&reference);
    let (heard_active, heard_peak) = activity(&heard);
    println!(
        "active speech: sent {:.2} s at peak {ref_peak:.1} dBFS, heard {:.2} s at peak \
         {heard_peak:.1} dBFS",
        ref_active as f64 * 0.02,
        heard_active as f64 * 0.02
    );
    assert!(
        heard_active * 2 >= ref_active && heard_active <= ref_active * 2,
        "heard {heard_active} active frames for {ref_active} spoken"
    );
    assert!(
        (heard_peak - ref_peak).abs() < 12.0,
        "{heard_peak} vs {ref_peak} dBFS"
    );
    // The speech itself arrives, not just sound: held to the capture side's 5 dB. Measured
    // 3.1, 3.2 and 3.3 dB (p95 7.8, 10.0, 9.1) over three runs, since the playout keeps the
    // playback device's period queued (before that: 11–19 dB, periods padded with silence);
    // 2.5–3.8 dB in later runs, also with two runs at once or two busy CPU loops beside it.
    // Known failure: if B is descheduled for ~200 ms (reproduced with SIGSTOP; seen once,
    // 9.4 dB, while a parallel test suite loaded the machine), the device underruns and then
    // takes no audio for 2–3 s; the playout, clocked by the device, pulls nothing meanwhile
    // (no stats events), so the jitter buffer passes its 400 ms maximum and drops ~30 frames
    // (the "dropped" count printed above): 17–19 dB. The playout has no fallback clock for a
    // stalled device yet.
    assert!(
        report.lsd_db < 5.0,
        "speech crosses both devices clean: {report:?}"
    );
    assert!(report.active_frames > 100, "{report:?}");
}

/// 20 ms frames of `x` louder than -45 dBFS, and the loudest frame's level in dBFS.
fn activity(x: &[f32]) -> (usize, f32) {
    let levels: Vec<f32> = x
        .chunks(960)
        .map(|c| {
            let ms = c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32;
            10.0 * ms.max(1e-12).log10()
        })
        .collect();
    let active = levels.iter().filter(|&&l| l > -45.0).count();
    let peak = levels.iter().copied().fold(-120.0, f32::max);
    (active, peak)
}

/// `kv-tui` itself on real devices: in tmux, with PulseAudio as its sound card. It opens
/// the devices (no "no audio device"), its meter and talking marker follow speech played
/// into its microphone, and a headless listener hears that speech.
#[test]
#[cfg_attr(
    kv_no_pulse,
    ignore = "PulseAudio is not installed (`make deps` installs it)"
)]
#[cfg_attr(kv_no_tmux, ignore = "tmux is not installed (`make deps` installs it)")]
fn kv_tui_talks_through_real_devices() {
    let _turn = take_turn();
    let missing = missing_tools();
    assert!(
        missing.is_empty() && Tmux::available(),
        "{} not installed (`make deps` installs tmux, pulseaudio, pulseaudio-utils, \
         libasound2-plugins)",
        if Tmux::available() {
            missing.join(", ")
        } else {
            "tmux".into()
        }
    );
    let pulse = Pulse::start();
    pulse.null_sink("mic_t");
    pulse.null_sink("spk_t");
    let server = ServerProcess::start();
    let alice = server.signup();
    let bob = server.signup();
    let chid = server.ok(&ControlRequest::Create { uid: alice });
    server.ok(&ControlRequest::SetChannelName {
        uid: alice,
        chid,
        name: "room".into(),
    });
    server.ok(&ControlRequest::SetUserName {
        uid: bob,
        target: bob,
        name: "bob".into(),
    });
    let addr = server.addr.to_string();
    let config = tempfile::tempdir().expect("config dir");
    let rec_dir = tempfile::tempdir().expect("recording dir");
    let rec = rec_dir.path().join("alice.wav");

    // Alice listens headless into a file.
    let mut args: Vec<String> = ["--server", &addr, "--uid", &alice.to_string(), "join"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        chid.to_string(),
        "--output".into(),
        rec.display().to_string(),
        "--duration".into(),
        "16".into(),
        "--json".into(),
    ]);
    let listener = Kv::spawn(&pulse, ("PULSE_SINK", "spk_t"), config.path(), &args);
    listener.wait_for("\"admitted\"", Duration::from_secs(10));

    // Bob is kv-tui on PulseAudio, joining "room" by name from the URL.
    let cmd = format!(
        "PULSE_SERVER={ps} PULSE_SOURCE=mic_t.monitor PULSE_SINK=spk_t KV_CONFIG_DIR={dir} \
         {bin} --uid {bob} kv://{addr}/room; echo KV_TUI_EXIT=$?; sleep 600",
        ps = shell_quote(pulse.server()),
        dir = shell_quote(&config.path().display().to_string()),
        bin = shell_quote(
            &kv_tests::bin_path("kv-tui-e2e", "KV_TUI_BIN")
                .display()
                .to_string()
        ),
    );
    let tmux = Tmux::start(&cmd);
    let s = tmux.wait_for("joined with devices", |s| {
        s.contains("room · 2 members") && s.contains("bob (you)") && s.contains("quiet")
    });
    assert!(!s.contains("no audio device"), "devices opened:\n{s}");

    // Speech into bob's microphone: the meter says sending, bob is marked talking.
    let player = std::thread::spawn({
        let mut c = pulse.command("paplay");
        c.args(["-d", "mic_t"]).arg(speech_path());
        move || c.status().expect("run paplay")
    });
    let s = tmux.wait_for("bob sending", |s| {
        s.contains("sending") && s.contains("bob (you) talking")
    });
    assert!(s.contains("dBFS"), "{s}");
    assert!(player.join().expect("paplay thread").success());
    std::thread::sleep(Duration::from_secs(1));
    tmux.keys(&["q"]);
    let s = tmux.wait_text("KV_TUI_EXIT=");
    assert!(s.contains("KV_TUI_EXIT=0"), "{s}");

    // Alice heard bob's speech, captured through kv-tui's real input device.
    let events = listener.finish(Duration::from_secs(25));
    assert!(
        events
            .iter()
            .any(|l| l.contains("talking_started") && l.contains(&bob.to_string())),
        "{events:?}"
    );
    let reference = kv_client::audio::read_wav_mono_48k(speech_path()).expect("speech");
    let heard = kv_client::audio::read_wav_mono_48k(&rec).expect("recording");
    let report = quality::compare(&reference, &heard, heard.len().max(reference.len()));
    println!(
        "kv-tui capture device -> kv: LSD {:.1} dB (p95 {:.1}), correlation {:.2}",
        report.lsd_db, report.lsd_p95_db, report.correlation
    );
    assert!(report.lsd_db < 5.0, "{report:?}");
}
