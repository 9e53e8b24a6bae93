//! Echo cancellation end to end: the real server on 127.0.0.1 and `kv join` processes.
//!
//! In each of two channels a far-end talker streams speech and records what comes back;
//! the near-end client plays it and, through `--echo-test-seed`, hears its own playback
//! again at its microphone through the rig's synthetic room (20–40 ms direct sound,
//! 150–300 ms tail), as a laptop on speakers would. It transmits continuously (no voice
//! gate to hide an echo), once with `--aec on` and once with `--aec off`, both at the same
//! time. What the far end hears back is the residual echo. And gain control: a quiet
//! talker sent with and without `--agc`.

use std::time::Duration;

use kv_client::audio::echo_rig::{level_dbfs, speech_level_dbfs};
use kv_tests::kv::{read_wav, write_wav, Room, JOIN_GRACE};
use kv_tests::ServerProcess;

const ADMIT: Duration = Duration::from_secs(10);

fn far_speech() -> String {
    format!(
        "{}/../assets/speech-en-us-m.wav",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn the_far_end_does_not_hear_itself_back_with_echo_cancellation() {
    let server = ServerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let far = far_speech();
    let mut runs = Vec::new();
    for aec in ["on", "off"] {
        let room = Room::new(server.addr, 2);
        let near = room.join(
            1,
            &[
                "--aec",
                aec,
                "--echo-test-seed",
                "7",
                "--mode",
                "continuous",
                "--duration",
                "12",
            ],
        );
        runs.push((aec, room, near));
    }
    for (_, _, near) in &runs {
        near.wait_for("admitted", ADMIT);
    }
    let mut talkers = Vec::new();
    for (aec, room, _) in &runs {
        let out = dir.path().join(format!("far-{aec}.wav"));
        let t = room.join(
            0,
            &[
                "--input",
                &far,
                "--output",
                out.to_str().unwrap(),
                "--float-wav",
                "--duration",
                "10",
            ],
        );
        talkers.push((out, t));
    }
    let mut levels = Vec::new();
    for ((out, t), (aec, _, near)) in talkers.into_iter().zip(runs) {
        t.finish(JOIN_GRACE).assert_ok();
        near.finish(JOIN_GRACE).assert_ok();
        let heard = read_wav(&out);
        // From 3 s (the canceller has had the far end's first sentence) to 9 s.
        let back = level_dbfs(&heard[3 * 48_000..(9 * 48_000).min(heard.len())]);
        eprintln!("--aec {aec}: the far end hears itself back at {back:.1} dBFS");
        levels.push(back);
    }
    let (on, off) = (levels[0], levels[1]);
    // Measured: -22 dBFS without AEC, -54 to -71 dBFS with it (in process, without the
    // threads' timing between playout and capture: -64 dBFS and below). The floor is the
    // target of issue 13.
    assert!(off > -40.0, "the rig fed back no echo ({off:.1} dBFS)");
    assert!(on < -45.0, "residual echo at {on:.1} dBFS");
    assert!(off - on > 20.0, "AEC removed only {:.1} dB", off - on);
}

#[test]
fn a_quiet_talker_reaches_the_listener_at_a_steady_level_with_gain_control() {
    // A talker whose speech is at -45 dBFS (a distant or quiet microphone), sent with and
    // without --agc (in two channels at once); each listener records what arrives.
    let server = ServerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let sample = read_wav(std::path::Path::new(&far_speech()));
    let g = 10f32.powf((-45.0 - speech_level_dbfs(&sample)) / 20.0);
    let quiet: Vec<f32> = sample.iter().map(|s| s * g).collect();
    let quiet_path = dir.path().join("quiet.wav");
    write_wav(&quiet_path, &quiet);
    let mut runs = Vec::new();
    for agc in ["on", "off"] {
        let room = Room::new(server.addr, 2);
        let out = dir.path().join(format!("heard-{agc}.wav"));
        let listener = room.join(
            1,
            &[
                "--output",
                out.to_str().unwrap(),
                "--float-wav",
                "--duration",
                "16",
            ],
        );
        runs.push((agc, room, listener, out));
    }
    for (_, _, l, _) in &runs {
        l.wait_for("admitted", ADMIT);
    }
    let talkers: Vec<_> = runs
        .iter()
        .map(|(agc, room, _, _)| {
            room.join(
                0,
                &[
                    "--input",
                    quiet_path.to_str().unwrap(),
                    "--agc",
                    agc,
                    "--mode",
                    "continuous",
                    "--duration",
                    "15",
                ],
            )
        })
        .collect();
    let mut levels = Vec::new();
    for (t, (agc, _, l, out)) in talkers.into_iter().zip(runs) {
        t.finish(JOIN_GRACE).assert_ok();
        l.finish(JOIN_GRACE).assert_ok();
        let heard = read_wav(&out);
        // The last 7 s of the speech (the gain rises at most 6 dB/s, on speech only).
        let end = heard.len().min(15 * 48_000);
        let level = speech_level_dbfs(&heard[end.saturating_sub(7 * 48_000)..end]);
        eprintln!("--agc {agc}: speech sent at -45 dBFS is heard at {level:.1} dBFS");
        levels.push(level);
    }
    // Measured: -23.8 to -25.5 dBFS with AGC (target -22), -46 without.
    assert!(levels[0] > -28.0, "with AGC: {:.1} dBFS", levels[0]);
    assert!(levels[1] < -38.0, "without AGC: {:.1} dBFS", levels[1]);
}
