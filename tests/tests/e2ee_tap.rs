//! Issue 11's tap test: a recording proxy between three `kv join` clients and the server
//! (every control byte, every voice datagram of each client) on an end-to-end encrypted
//! channel. One client speaks, two listen, all three chat. The capture holds no chat text
//! and no Opus frame that decodes to the speech (at any offset into each frame); the
//! listeners still hear the speech, and every client gets every message in one order.
//! One listener's tap also attacks it (tampered copies, frames under the talker's uid that
//! no member made): every one is refused and counted, and it hears as well as the other.

use std::path::Path;
use std::time::{Duration, Instant};

use audiopus::coder::Decoder;
use audiopus::{Channels, MutSignals, SampleRate};
use kv_client::audio::quality;
use kv_client::control::ControlClient;
use kv_proto::keyfile::Identity;
use kv_proto::packet::{parse, Datagram};
use kv_tests::e2ee::identity_file;
use kv_tests::kv::{read_wav, speech, speech_path, KvJoin, JOIN_GRACE};
use kv_tests::tap::{TcpTap, UdpTap};
use kv_tests::ServerProcess;
use serde_json::Value;

const MAX_LAG: usize = 96_000;
const ADMIT: Duration = Duration::from_secs(10);
/// Offsets tried into every captured frame: an SFrame header is at most 11 bytes, so any
/// Opus frame hidden behind one would start within these.
const OFFSETS: usize = 32;

/// Decodes, at `offset` into every frame, the primary frames of `uid`'s packets placed at
/// their timestamps: what a tap would hear if the frames were Opus.
fn decode_capture(datagrams: &[Vec<u8>], uid: u64, offset: usize) -> Vec<f32> {
    let mut dec = Decoder::new(SampleRate::Hz48000, Channels::Mono).unwrap();
    let mut out = vec![0.0f32; 0];
    let mut pcm = vec![0.0f32; 5760];
    let mut ts0 = None;
    for d in datagrams {
        let Ok(Datagram::Regular { uid: u, data }) = parse(d) else {
            continue;
        };
        if u != uid {
            continue;
        }
        let Ok(p) = kv_proto::voice::decode(data) else {
            continue;
        };
        let Some(f) = p.frames().next() else { continue };
        if f.data.len() <= offset {
            continue;
        }
        let ts0 = *ts0.get_or_insert(f.timestamp);
        let at = f.timestamp.wrapping_sub(ts0) as usize;
        if at > 48_000 * 30 {
            continue;
        }
        let Ok(pkt) = audiopus::packet::Packet::try_from(&f.data[offset..]) else {
            continue;
        };
        let Ok(sig) = MutSignals::try_from(&mut pcm[..]) else {
            continue;
        };
        let Ok(n) = dec.decode_float(Some(pkt), sig, false) else {
            continue;
        };
        if out.len() < at + n {
            out.resize(at + n, 0.0);
        }
        out[at..at + n].copy_from_slice(&pcm[..n]);
    }
    out
}

fn messages(events: &[Value]) -> Vec<(u64, u64, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["sender"].as_u64().unwrap(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_tap_on_an_encrypted_call_hears_nothing_and_reads_nothing() {
    let server = ServerProcess::start_keyed(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (ta, fa) = identity_file(&server, dir.path(), "a.key");
    let (_tb, fb) = identity_file(&server, dir.path(), "b.key");
    let (_tc, fc) = identity_file(&server, dir.path(), "c.key");
    let owner = ControlClient::new(&server.addr.to_string())
        .unwrap()
        .with_signer(Identity {
            uid: ta,
            key: server.key_of(ta).unwrap(),
        });
    let chid = owner.create_encrypted(ta).unwrap();
    let port = owner.get_port(chid).unwrap();
    let tcp = TcpTap::start(server.addr);
    let udp = server.udp_addr(u64::from(port));
    // C's tap also attacks it: a tampered copy of every 5th voice packet goes first, and
    // a regular packet under the talker's uid with frames of a key nobody in the group has.
    let taps: Vec<UdpTap> = vec![
        UdpTap::start(udp),
        UdpTap::start(udp),
        UdpTap::start_with(udp, attack),
    ];
    let via = |i: usize| taps[i].addr.to_string();
    let ctl = tcp.addr.to_string();
    let texts = [
        "the eagle lands at midnight",
        "bring the blue folder",
        "ninety nine red balloons",
    ];
    let (ob, oc) = (dir.path().join("b.wav"), dir.path().join("c.wav"));
    let listener = |file: &Path, out: &Path, i: usize| {
        KvJoin::spawn_identity(
            &ctl,
            file,
            chid,
            &[
                "--output",
                out.to_str().unwrap(),
                "--float-wav",
                "--duration",
                "9",
                "--voice-addr",
                &via(i),
                "--say",
                texts[i],
                "--say-when-members",
                "3",
            ],
        )
    };
    let b = listener(&fb, &ob, 1);
    let c = listener(&fc, &oc, 2);
    b.wait_for("admitted", ADMIT);
    c.wait_for("admitted", ADMIT);
    let sp = speech_path();
    let t0 = Instant::now();
    let a = KvJoin::spawn_identity(
        &ctl,
        &fa,
        chid,
        &[
            "--input",
            sp.to_str().unwrap(),
            "--duration",
            "6.5",
            "--voice-addr",
            &via(0),
            "--say",
            texts[0],
            "--say-when-members",
            "3",
        ],
    );
    let first_epoch = a.wait_for("epoch", ADMIT);
    eprintln!(
        "talker: process start to its first epoch {:?} ({first_epoch})",
        t0.elapsed()
    );
    let ra = a.finish(JOIN_GRACE);
    let rb = b.finish(JOIN_GRACE);
    let rc = c.finish(JOIN_GRACE);
    for r in [&ra, &rb, &rc] {
        r.assert_ok();
    }

    // Everyone hears the speech.
    let input = speech();
    for (name, r, out) in [("b", &rb, &ob), ("c", &rc, &oc)] {
        let out = read_wav(out);
        let q = quality::compare(&input, &out, MAX_LAG);
        let delay = r.time_base("recording_started") + q.lag_samples as f64 / 48.0
            - ra.time_base("capture_started");
        let e2ee = &r.left()["e2ee"];
        eprintln!(
            "{name}: LSD {:.2} dB, mouth-to-ear {delay:.1} ms, e2ee {e2ee}",
            q.lsd_db
        );
        assert!(q.active_frames > 100, "{name}: too little speech scored");
        assert!(q.lsd_db < 5.0, "{name}: LSD {} dB", q.lsd_db);
        assert!((0.0..250.0).contains(&delay), "{name}: delay {delay} ms");
        assert!(e2ee["decrypted"].as_u64().unwrap() > 100, "{name}: {e2ee}");
        let refused = e2ee["auth_failed"].as_u64().unwrap()
            + e2ee["unknown_sender"].as_u64().unwrap()
            + e2ee["unknown_epoch"].as_u64().unwrap()
            + e2ee["malformed"].as_u64().unwrap();
        if name == "b" {
            assert_eq!(refused, 0, "{name}: {e2ee}");
        } else {
            // Every forged frame refused and counted; the call goes on (LSD above).
            assert!(refused > 20, "{name}: {e2ee}");
        }
    }
    // PESQ-WB of the untouched listener against the same call on a plain channel (same
    // users, same proxies, right after): encryption changes no Opus byte, so only the
    // network's run-to-run spread may differ. The table target is 0.05; this
    // floor catches a real regression on a noisy machine.
    let plain_chid = owner.create(ta).unwrap();
    let plain_port = owner.get_port(plain_chid).unwrap();
    let plain_udp = server.udp_addr(u64::from(plain_port));
    let ptaps: Vec<UdpTap> = (0..2).map(|_| UdpTap::start(plain_udp)).collect();
    let pb = dir.path().join("plain-b.wav");
    let pl = KvJoin::spawn_identity(
        &ctl,
        &fb,
        plain_chid,
        &[
            "--output",
            pb.to_str().unwrap(),
            "--float-wav",
            "--duration",
            "8",
            "--voice-addr",
            &ptaps[1].addr.to_string(),
        ],
    );
    pl.wait_for("admitted", ADMIT);
    let pt = KvJoin::spawn_identity(
        &ctl,
        &fa,
        plain_chid,
        &[
            "--input",
            sp.to_str().unwrap(),
            "--duration",
            "6.5",
            "--voice-addr",
            &ptaps[0].addr.to_string(),
        ],
    );
    let rpt = pt.finish(JOIN_GRACE);
    let rpl = pl.finish(JOIN_GRACE);
    rpt.assert_ok();
    rpl.assert_ok();
    let times = |talker: &kv_tests::kv::Joined, listener: &kv_tests::kv::Joined| {
        Some((
            talker.time_base("capture_started"),
            listener.time_base("recording_started"),
        ))
    };
    let enc = kv_tests::playout::score(&sp, &ob, times(&ra, &rb), None);
    let plain = kv_tests::playout::score(&sp, &pb, times(&rpt, &rpl), None);
    let (pe, pp) = (enc.pesq_wb.unwrap_or(0.0), plain.pesq_wb.unwrap_or(0.0));
    eprintln!(
        "PESQ-WB encrypted {pe:.2} (mouth-to-ear {:?} ms), plain {pp:.2} (mouth-to-ear {:?} ms)",
        enc.mouth_to_ear_ms, plain.mouth_to_ear_ms
    );
    assert!(pe > pp - 0.5, "encrypted PESQ {pe} against plain {pp}");

    // Every message, in one order, at every member; the safety codes agree per epoch.
    let (ma, mb, mc) = (
        messages(&ra.events),
        messages(&rb.events),
        messages(&rc.events),
    );
    assert_eq!(ma.len(), 3, "{:?}", ra.events);
    assert_eq!(ma, mb);
    assert_eq!(mb, mc);
    let codes = |r: &kv_tests::kv::Joined| -> Vec<(u64, String)> {
        r.events
            .iter()
            .filter(|e| e["event"] == "epoch")
            .map(|e| {
                (
                    e["epoch"].as_u64().unwrap(),
                    e["safety_code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (ca, cb) = (codes(&ra), codes(&rb));
    for (epoch, code) in &ca {
        if let Some((_, other)) = cb.iter().find(|(e, _)| e == epoch) {
            assert_eq!(code, other, "epoch {epoch}");
        }
    }

    // The tap: no chat text in any byte it saw.
    let control = tcp.bytes();
    assert!(
        control.len() > 1000,
        "the control tap saw {} bytes",
        control.len()
    );
    let mut voice: Vec<Vec<u8>> = Vec::new();
    for t in &taps {
        let (up, down) = t.datagrams();
        voice.extend(up);
        voice.extend(down);
    }
    assert!(
        voice.len() > 300,
        "the voice taps saw {} datagrams",
        voice.len()
    );
    for text in texts {
        let needle = text.as_bytes();
        let found = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(!found(&control), "{text:?} in the control capture");
        assert!(!voice.iter().any(|d| found(d)), "{text:?} in a datagram");
    }
    // No captured frame decodes to the speech, at any offset; the same check finds the
    // speech in plain Opus frames of it (so it would see a leak).
    let (up_a, _) = taps[0].datagrams();
    let mut best = f32::MAX;
    for offset in 0..OFFSETS {
        let heard = decode_capture(&up_a, ta, offset);
        if heard.len() < 48_000 {
            continue;
        }
        let q = quality::compare(&input, &heard, MAX_LAG);
        if q.active_frames > 20 {
            best = best.min(q.lsd_db);
        }
    }
    let plain = plain_opus_capture(&input, ta);
    let q = quality::compare(&input, &decode_capture(&plain, ta, 0), MAX_LAG);
    eprintln!(
        "tap: best LSD of the capture at any offset {best:.1} dB; plain Opus {:.1} dB",
        q.lsd_db
    );
    assert!(q.lsd_db < 5.0, "the check must find plain speech");
    assert!(
        best > 10.0,
        "a captured frame decodes to speech: LSD {best}"
    );
}

/// C's tap: before every 5th regular packet, a copy with its first frame's last byte
/// flipped (tampered ciphertext); every 7th, one more packet under the same uid whose
/// frames are random bytes in SFrame framing (a non-member's, or garbage).
fn attack(n: usize, d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(Datagram::Regular { uid, data }) = parse(d) {
        if n.is_multiple_of(5) {
            if let Ok(p) = kv_proto::voice::decode(data) {
                if let Some(f) = p.frames().next() {
                    // Frame 0's bytes start at payload offset 15 (13-byte header + len).
                    let mut t = d.to_vec();
                    t[8 + 15 + f.data.len() - 1] ^= 0x55;
                    out.push(t);
                }
            }
        }
        if n.is_multiple_of(7) {
            if let Ok(p) = kv_proto::voice::decode(data) {
                let junk: Vec<u8> = (0..60u8).map(|k| k.wrapping_mul(37) ^ n as u8).collect();
                let mut payload = [0u8; kv_proto::packet::DATA_SIZE];
                let h = kv_proto::voice::VoiceHeader {
                    seq: p.header.seq.wrapping_add(2),
                    timestamp: p.header.timestamp.wrapping_add(2 * 960),
                    ..p.header
                };
                if let Ok((len, _)) = kv_proto::voice::encode(&h, &junk, &[], &mut payload) {
                    let mut pkt = [0u8; kv_proto::PACKET_SIZE];
                    kv_proto::packet::encode_regular(uid, &payload[..len], &mut pkt);
                    out.push(pkt.to_vec());
                }
            }
        }
    }
    out.push(d.to_vec());
    out
}

/// The speech as plain voice packets (Opus frames, no protection), as a seed client sends.
fn plain_opus_capture(input: &[f32], uid: u64) -> Vec<Vec<u8>> {
    let cfg = kv_client::audio::TxConfig {
        mode: kv_client::audio::TransmitMode::Continuous,
        ..Default::default()
    };
    let mut tx = kv_client::audio::TxPipeline::new(cfg).unwrap();
    let n = tx.frame_samples();
    let mut data = [0u8; kv_proto::packet::DATA_SIZE];
    let mut out = Vec::new();
    for chunk in input.chunks_exact(n) {
        if let Ok(Some(len)) = tx.process_frame(chunk, 0, &mut data) {
            let mut pkt = [0u8; kv_proto::PACKET_SIZE];
            kv_proto::packet::encode_regular(uid, &data[..len], &mut pkt);
            out.push(pkt.to_vec());
        }
    }
    out
}
