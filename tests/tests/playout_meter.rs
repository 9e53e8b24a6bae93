//! The playout meter (`bench/playout/score.py`: PESQ-WB through ITU's C code, delay and
//! timing stability) checked against references whose answer is known, made with sox and
//! opus-tools from the committed samples: an identical file, a delayed copy, a copy with
//! 20 ms of silence inserted mid-speech, Opus alone, and speech buried in noise.

use std::path::{Path, PathBuf};
use std::process::Command;

use kv_tests::playout::{committed_samples, score, Score};

fn sample() -> PathBuf {
    committed_samples()[0].path.clone()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (make deps installs sox and opus-tools)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sox(args: &[&str]) {
    run(Command::new("sox").args(args));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn show(name: &str, x: &Score) {
    eprintln!("{name}: {}", x.raw);
}

#[test]
fn identical_and_delayed_copies_score_the_maximum_with_the_right_delay() {
    let dir = tempfile::tempdir().unwrap();
    let reference = sample();
    let same = score(&reference, &reference, Some((1000.0, 1000.0)), None);
    show("identical", &same);
    let pesq = same.pesq_wb.unwrap();
    assert!((4.6..=4.65).contains(&pesq), "identical: {pesq}");
    assert_eq!(same.mouth_to_ear_ms, Some(0.0));
    assert_eq!(same.lag_spread_ms, Some(0.0));
    assert!(same.window_corr_mean.unwrap() > 0.999);

    // 123.4 ms of silence in front, and the recording started 10 ms after capture.
    let delayed = dir.path().join("delayed.wav");
    sox(&[s(&reference), s(&delayed), "pad", "0.1234", "0.5"]);
    let d = score(&reference, &delayed, Some((1000.0, 1010.0)), Some(5.0));
    show("delayed", &d);
    assert!(d.pesq_wb.unwrap() >= 4.6, "{:?}", d.pesq_wb);
    let m2e = d.mouth_to_ear_ms.unwrap();
    assert!((m2e - 133.4).abs() < 0.05, "mouth-to-ear {m2e}");
    assert_eq!(d.lag_spread_ms, Some(0.0));
    let tail = d.tail_mouth_to_ear_ms.unwrap();
    assert!((tail - 133.4).abs() < 0.1, "tail {tail}");

    // Time bases saying the speech was captured after the recording had it: the meter
    // searches only delays of 0-3 s, so it reports none below 0 (and a poor match).
    let wrong = score(&reference, &delayed, Some((1200.0, 1000.0)), None);
    show("impossible time bases", &wrong);
    let m2e = wrong.mouth_to_ear_ms.unwrap();
    assert!(m2e >= 0.0, "negative delay {m2e}");
    assert!(wrong.correlation().unwrap() < 0.5, "{:?}", wrong.raw);
}

#[test]
fn a_delay_change_inside_speech_shows_in_the_lag_spread() {
    let dir = tempfile::tempdir().unwrap();
    let reference = sample();
    let (a, b, gap, out) = (
        dir.path().join("a.wav"),
        dir.path().join("b.wav"),
        dir.path().join("gap.wav"),
        dir.path().join("out.wav"),
    );
    // What a jitter buffer that stretches by one 20 ms frame at 5.0 s would play.
    sox(&[s(&reference), s(&a), "trim", "0", "5.0"]);
    sox(&[s(&reference), s(&b), "trim", "5.0"]);
    sox(&[
        "-n",
        "-r",
        "48000",
        "-c",
        "1",
        "-b",
        "16",
        s(&gap),
        "trim",
        "0",
        "0.02",
    ]);
    sox(&[s(&a), s(&gap), s(&b), s(&out)]);
    let x = score(&reference, &out, Some((0.0, 0.0)), Some(6.0));
    show("20 ms inserted", &x);
    let spread = x.lag_spread_ms.unwrap();
    assert!((19.0..=21.0).contains(&spread), "lag spread {spread}");
    // The global lag follows the longer part; the tail sits 20 ms later than the head.
    let tail = x.tail_mouth_to_ear_ms.unwrap();
    assert!((19.0..=21.0).contains(&tail), "tail delay {tail}");
    assert!(x.pesq_wb.unwrap() < 4.6, "PESQ should see the inserted gap");
}

#[test]
fn opus_alone_scores_like_the_codec_and_noise_scores_low() {
    let dir = tempfile::tempdir().unwrap();
    let reference = sample();
    let (opus, decoded) = (dir.path().join("x.opus"), dir.path().join("x.wav"));
    run(Command::new("opusenc")
        .args([
            "--quiet",
            "--bitrate",
            "48",
            "--framesize",
            "20",
            "--hard-cbr",
        ])
        .arg(&reference)
        .arg(&opus));
    run(Command::new("opusdec")
        .args(["--quiet", "--rate", "48000"])
        .arg(&opus)
        .arg(&decoded));
    let o = score(&reference, &decoded, None, None);
    show("opus 48 kb/s", &o);
    let pesq = o.pesq_wb.unwrap();
    assert!((4.1..=4.5).contains(&pesq), "Opus alone: {pesq}");
    assert!(o.lag_spread_ms.unwrap() <= 1.0, "{:?}", o.lag_spread_ms);
    assert!(
        o.window_corr_mean.unwrap() >= 0.9,
        "{:?}",
        o.window_corr_mean
    );
    assert_eq!(o.windows_not_found, 0);

    // Speech mixed with white noise at about 0 dB SNR.
    let (noise, noisy) = (dir.path().join("n.wav"), dir.path().join("noisy.wav"));
    sox(&[
        "-n",
        "-r",
        "48000",
        "-c",
        "1",
        "-b",
        "16",
        s(&noise),
        "synth",
        "16",
        "whitenoise",
        "vol",
        "0.1",
    ]);
    sox(&["-m", s(&reference), s(&noise), s(&noisy), "trim", "0", "14"]);
    let n = score(&reference, &noisy, None, None);
    show("noisy", &n);
    assert!(n.pesq_wb.unwrap() < 2.0, "{:?}", n.pesq_wb);
    assert!(n.lsd_db.unwrap() > o.lsd_db.unwrap(), "LSD orders them too");
}
