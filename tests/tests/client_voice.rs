//! Whole-system voice tests: the real server and two or three `kv join` processes on
//! 127.0.0.1, speaking `assets/speech.wav`.
//!
//! Quality is the audio engine's aligned log-spectral distance (`kv_client::audio::quality`):
//! Opus changes the waveform in ways nobody hears, so waveform SNR says little, while the
//! short-time spectral envelope is what intelligibility depends on and what loss destroys.
//! The thresholds sit well above the figures measured on a clean loopback (printed by each
//! test) and well below what a broken path gives (silence or garbage: tens of dB).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_client::audio::quality;
use kv_tests::kv::{read_wav, speech, speech_path, write_wav, Room, JOIN_GRACE};
use kv_tests::ServerProcess;

/// Largest delay searched when aligning, samples (2 s).
const MAX_LAG: usize = 96_000;
const ADMIT: Duration = Duration::from_secs(10);

fn dbfs(x: &[f32]) -> f32 {
    let ms = x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32;
    10.0 * ms.max(1e-12).log10()
}

fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_string()
}

#[test]
fn speech_reaches_two_listeners_with_good_quality() {
    let server = ServerProcess::start();
    let room = Room::new(server.addr, 3);
    let dir = tempfile::tempdir().unwrap();
    let (o1, o2) = (path(&dir, "l1.wav"), path(&dir, "l2.wav"));
    let l1 = room.join(1, &["--output", &o1, "--duration", "8", "--float-wav"]);
    let l2 = room.join(2, &["--output", &o2, "--duration", "8", "--float-wav"]);
    l1.wait_for("admitted", ADMIT);
    l2.wait_for("admitted", ADMIT);
    let sp = speech_path();
    let talker = room.join(0, &["--input", sp.to_str().unwrap(), "--duration", "6.5"]);
    let t = talker.finish(JOIN_GRACE);
    t.assert_ok();
    let r1 = l1.finish(JOIN_GRACE);
    let r2 = l2.finish(JOIN_GRACE);
    r1.assert_ok();
    r2.assert_ok();
    let input = speech();
    let sent = t.left()["sent"].as_u64().unwrap();
    assert!(sent > 100, "talker sent only {sent} packets");
    for (name, r, out) in [("l1", &r1, &o1), ("l2", &r2, &o2)] {
        let out = read_wav(std::path::Path::new(out));
        let q = quality::compare(&input, &out, MAX_LAG);
        let delay = r.time_base("recording_started") + q.lag_samples as f64 / 48.0
            - t.time_base("capture_started");
        eprintln!(
            "{name}: LSD {:.2} dB (p95 {:.2}), SNR {:.1} dB, corr {:.2}, mouth-to-ear {delay:.1} ms, \
             sent {sent}, received {}",
            q.lsd_db, q.lsd_p95_db, q.snr_db, q.correlation, r.left()["received"]
        );
        assert!(q.active_frames > 100, "{name}: too little speech scored");
        assert!(q.lsd_db < 5.0, "{name}: LSD {} dB", q.lsd_db);
        // Waveform correlation drops whenever the jitter buffer re-anchors a talk spurt;
        // the energy envelope is what must match.
        let env = kv_client::latency::align(&input, &out, MAX_LAG).map_or(0.0, |a| a.score);
        eprintln!("{name}: envelope correlation {env:.2}");
        assert!(env > 0.4, "{name}: envelope correlation {env}");
        assert!((0.0..250.0).contains(&delay), "{name}: delay {delay} ms");
        let talker_uid = room.uids[0];
        assert!(
            r.saw("talking_started", talker_uid),
            "{name}: no talking_started for the talker"
        );
        assert!(
            r.saw("peer_joined", talker_uid),
            "{name}: no peer_joined for the talker"
        );
        assert_eq!(
            r.left()["received"].as_u64().unwrap(),
            sent,
            "{name}: every packet arrives on a clean loopback"
        );
    }
}

#[test]
fn two_simultaneous_speakers_are_mixed() {
    let server = ServerProcess::start();
    let room = Room::new(server.addr, 3);
    let dir = tempfile::tempdir().unwrap();
    let a = speech();
    // A second, different talker: the same voice played backwards (same spectrum, other
    // waveform and timing, so each is found in the mix on its own).
    let b: Vec<f32> = a.iter().rev().copied().collect();
    let b_path = path(&dir, "b.wav");
    write_wav(std::path::Path::new(&b_path), &b);
    let out = path(&dir, "mix.wav");
    let l = room.join(2, &["--output", &out, "--duration", "8", "--float-wav"]);
    l.wait_for("admitted", ADMIT);
    let sp = speech_path();
    // Continuous mode: the test is about mixing, so keep each talker's timing steady (no
    // talk-spurt re-anchoring in the listener's jitter buffers).
    let cont = ["--mode", "continuous", "--duration", "6.5"];
    let ta = room.join(0, &[&["--input", sp.to_str().unwrap()][..], &cont].concat());
    let tb = room.join(1, &[&["--input", b_path.as_str()][..], &cont].concat());
    ta.finish(JOIN_GRACE).assert_ok();
    tb.finish(JOIN_GRACE).assert_ok();
    let r = l.finish(JOIN_GRACE);
    r.assert_ok();
    let mix = read_wav(std::path::Path::new(&out));
    // Energy-envelope correlation (1 ms bins): robust to what the codec does to the
    // waveform and to a jitter buffer shifting part of a stream by a frame, which makes a
    // single waveform lag unreliable for a mix.
    let score = |x: &[f32]| kv_client::latency::align(x, &mix, MAX_LAG).map_or(0.0, |a| a.score);
    let (ca, cb) = (score(&a), score(&b));
    // An unrelated signal of the same kind, for scale: the speech rotated by half its length.
    let mut c = a[a.len() / 2..].to_vec();
    c.extend_from_slice(&a[..a.len() / 2]);
    let cc = score(&c);
    eprintln!("mix envelope correlation: A {ca:.2}, B {cb:.2}, unrelated {cc:.2}");
    assert!(ca > 0.3 && cb > 0.3, "both talkers present: A {ca}, B {cb}");
    assert!(ca > 1.8 * cc && cb > 1.8 * cc, "unrelated scores {cc}");
    assert!(
        mix.iter().all(|s| s.abs() <= 1.0),
        "limiter keeps the mix in range"
    );
    for uid in [room.uids[0], room.uids[1]] {
        assert!(
            r.saw("talking_started", uid),
            "no talking_started for {uid}"
        );
    }
}

#[test]
fn voice_activation_sends_nothing_on_silence() {
    let server = ServerProcess::start();
    let room = Room::new(server.addr, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = path(&dir, "l.wav");
    let l = room.join(1, &["--output", &out, "--duration", "3.5", "--float-wav"]);
    l.wait_for("admitted", ADMIT);
    // No --input: the microphone is silence; the default mode is voice-activated.
    let quiet = room.join(0, &["--duration", "3"]).finish(JOIN_GRACE);
    quiet.assert_ok();
    let r = l.finish(JOIN_GRACE);
    r.assert_ok();
    assert_eq!(quiet.left()["sent"], 0, "silence must not be sent");
    assert!(quiet.left()["keepalives"].as_u64().unwrap() >= 1);
    assert_eq!(r.left()["received"], 0);
    assert_eq!(r.count("talking_started"), 0);
    let heard = read_wav(std::path::Path::new(&out));
    assert!(
        heard.len() >= 48_000 * 3,
        "output is continuous: {}",
        heard.len()
    );
    assert!(dbfs(&heard) < -90.0, "heard {} dBFS", dbfs(&heard));
}

#[test]
fn a_client_that_leaves_stops_being_heard() {
    let server = ServerProcess::start();
    let room = Room::new(server.addr, 2);
    let dir = tempfile::tempdir().unwrap();
    // Speech for longer than the talker stays.
    let mut long = speech();
    long.extend(speech());
    let long_path = path(&dir, "long.wav");
    write_wav(std::path::Path::new(&long_path), &long);
    let out = path(&dir, "l.wav");
    let l = room.join(1, &["--output", &out, "--duration", "6", "--float-wav"]);
    l.wait_for("admitted", ADMIT);
    let talker = room.join(0, &["--input", &long_path, "--duration", "2.5"]);
    let t = talker.finish(JOIN_GRACE);
    let left_at = unix_ms_now();
    t.assert_ok();
    let r = l.finish(JOIN_GRACE);
    r.assert_ok();
    assert!(
        r.saw("peer_left", room.uids[0]),
        "no peer_left: {:?}",
        r.events
    );
    let heard = read_wav(std::path::Path::new(&out));
    let rec = r.time_base("recording_started");
    let cap = t.time_base("capture_started");
    let at = |unix_ms: f64| (((unix_ms - rec) * 48.0).max(0.0) as usize).min(heard.len());
    // While talking (from 0.5 s after capture start until it left) speech is heard…
    let talking = &heard[at(cap + 500.0)..at(left_at - 300.0)];
    // …and from shortly after the process ended, nothing.
    let after = &heard[at(left_at + 100.0)..];
    eprintln!(
        "while talking {:.1} dBFS over {} samples, after leaving {:.1} dBFS over {}",
        dbfs(talking),
        talking.len(),
        dbfs(after),
        after.len()
    );
    assert!(talking.len() > 48_000 && dbfs(talking) > -45.0);
    assert!(after.len() > 48_000 && dbfs(after) < -90.0);
}
