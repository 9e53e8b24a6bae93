//! `e2ee-bench`: what end-to-end encryption costs (issue 11, BENCHMARKS.md "End-to-end
//! encryption"), through the release `kv-server` and `kv` next to this binary.
//!
//! 1. **Per frame**, in-process on the speech sample's real Opus frames (10 ms, 48 kb/s and
//!    the 16 kb/s repeats): CPU of protecting and of opening a frame, against encoding it;
//!    bytes added, over the first minute and after an hour of one sender's counter.
//! 2. **JOIN to first decrypted audio**: a `kv join` talks (continuous mode) into a channel;
//!    another `kv join` joins it again and again. From its `joined` event to its first
//!    `talking_started` of the talker (the first frame decrypted, decoded and played),
//!    for an encrypted and a plain channel.
//! 3. **Epoch change with 20 members**: members on push connections, each on its own thread
//!    (the library's `PushChannel`, no voice). The time from the 20th member's push
//!    connection to all 20 in the new epoch, and from a member's LEAVE to the 19 others in
//!    the next one.
//! 4. **A call, encrypted and plain**: one talker, one listener, PESQ-WB and mouth-to-ear
//!    (`bench/playout/score.py`), alternating the two channels.
//!
//! ```text
//! e2ee-bench [--joins 8] [--changes 5] [--calls 5]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use kv_client::audio::protect::position;
use kv_e2ee::FrameKeys;
use kv_tests::e2ee::{control, identity, identity_file, PushMember};
use kv_tests::kv::{speech_path, KvJoin, JOIN_GRACE};
use kv_tests::playout::{median, score};
use kv_tests::ServerProcess;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    let mut joins = 8usize;
    let mut changes = 5usize;
    let mut calls = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match a.as_str() {
            "--joins" => joins = num("--joins").max(1),
            "--changes" => changes = num("--changes").max(1),
            "--calls" => calls = num("--calls").max(1),
            other => {
                eprintln!("unknown argument {other:?}; usage: e2ee-bench [--joins N] [--changes N] [--calls N]");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = kv_tests::use_sibling_binaries() {
        eprintln!("e2ee-bench: {e}");
        return ExitCode::FAILURE;
    }
    let frame = frame_costs();
    println!("{frame}");
    // The 20 members' push connections all come from 127.0.0.1, standing in for 20 hosts:
    // the per-address cap (16 by default) would refuse the later ones.
    let server = ServerProcess::start_keyed(&["--max-connections-per-ip", "64"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = Pair::new(&server, dir.path());
    let join = join_to_audio(&server, &pair, joins);
    println!("{join}");
    let epoch = epoch_changes(&server, changes);
    println!("{epoch}");
    let call = calls_compared(&server, &pair, dir.path(), calls);
    println!("{call}");
    println!("\n| measure | figure |\n|---|---|");
    for line in [frame.table, join.table, epoch.table, call.table] {
        print!("{line}");
    }
    ExitCode::SUCCESS
}

/// Printed lines, and rows of the final table.
struct Report {
    lines: String,
    table: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.lines.trim_end())
    }
}

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// The speech's Opus frames at `bitrate`, 10 ms each, as the transmitter makes them.
fn opus_frames(speech: &[f32], bitrate: i32) -> (Vec<Vec<u8>>, Duration) {
    let mut enc =
        Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("Opus encoder");
    enc.set_bitrate(Bitrate::BitsPerSecond(bitrate))
        .expect("bitrate");
    let mut out = [0u8; 512];
    let t = Instant::now();
    let frames = speech
        .chunks_exact(480)
        .map(|c| {
            let n = enc.encode_float(c, &mut out).expect("encode");
            out[..n].to_vec()
        })
        .collect();
    (frames, t.elapsed())
}

fn frame_costs() -> Report {
    let speech = kv_tests::kv::speech();
    let (full, encode_time) = opus_frames(&speech, 48_000);
    let (low, _) = opus_frames(&speech, 16_000);
    let n = full.len();
    let now = Instant::now();
    // Two members of one epoch, as an MLS exporter would key them (the key schedule is
    // `kv_e2ee`'s; only the base key is made up here).
    let base = [0x5Au8; 16];
    let roster = [(0u32, 1u64), (1, 2)];
    let mut sender = FrameKeys::new();
    sender
        .install_epoch(1, &base, Some(0), roster, now)
        .expect("sender keys");
    let mut receiver = FrameKeys::new();
    receiver
        .install_epoch(1, &base, Some(1), roster, now)
        .expect("receiver keys");

    // A minute of one talker: the speech's frames over and over.
    let minute = 6_000;
    let at_of = |i: usize| position(i as u32 * 480, 480);
    // Ciphertext j is of frame j / 2 of the minute, its full-rate or its low-rate copy.
    let plain_of = |j: usize| [&full, &low][j % 2][(j / 2) % n].as_slice();
    // (Room for every ciphertext made before the clock starts: only protection is timed.)
    let mut sealed: Vec<Vec<u8>> = (0..2 * minute).map(|_| Vec::with_capacity(128)).collect();
    let t = Instant::now();
    for (j, out) in sealed.iter_mut().enumerate() {
        sender
            .encrypt(plain_of(j), &at_of(j / 2), out)
            .expect("encrypt");
    }
    let seal_time = t.elapsed();
    let added: Vec<usize> = sealed
        .iter()
        .enumerate()
        .map(|(j, s)| s.len() - plain_of(j).len())
        .collect();
    let mut plain = Vec::new();
    let t = Instant::now();
    for (i, s) in sealed.iter().step_by(2).enumerate() {
        receiver
            .decrypt(Instant::now(), s, &at_of(i), &mut plain)
            .expect("decrypt");
    }
    let open_time = t.elapsed();
    // After an hour of one sender (2 frames per 10 ms): the counter is 3 bytes long.
    let mut buf = Vec::new();
    let mut late = FrameKeys::new();
    late.install_epoch(1, &base, Some(0), roster, now)
        .expect("keys");
    for _ in 0..720_000 {
        buf.clear();
        late.encrypt(&full[0], b"p", &mut buf).expect("encrypt");
    }
    buf.clear();
    late.encrypt(&full[0], b"p", &mut buf).expect("encrypt");
    let added_hour = buf.len() - full[0].len();

    let seal_us = us(seal_time, 2 * minute);
    let open_us = us(open_time, minute);
    let enc_us = us(encode_time, n);
    // Per 10 ms a talker protects two frames (full rate and the low-rate repeat), a
    // listener opens about one (only frames it still needs).
    let per_stream_pct = (2.0 * seal_us + open_us) / 10_000.0 * 100.0;
    let mean_added = added.iter().sum::<usize>() as f64 / added.len() as f64;
    let max_added = added.iter().copied().max().unwrap_or(0);
    let mean_frame = full.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    Report {
        lines: format!(
            "per frame (a minute of 10 ms frames from {n} of speech, mean {mean_frame:.0} bytes at 48 kb/s): protect \
             {seal_us:.2} us, open {open_us:.2} us (Opus encode {enc_us:.1} us); a talker and \
             a listener {per_stream_pct:.3} % of a core; {mean_added:.1} bytes added (max \
             {max_added}) over the first minute, {added_hour} after an hour\n"
        ),
        table: format!(
            "| CPU per frame, protect / open | {seal_us:.2} / {open_us:.2} us (Opus encode: {enc_us:.1} us) |\n\
             | CPU per stream (2 protects + 1 open per 10 ms) | {per_stream_pct:.3} % of a core |\n\
             | bytes added per frame | {mean_added:.1} (first minute), {added_hour} (after an hour) |\n"
        ),
    }
}

/// Milliseconds from `since` to when `kv` printed each of `events` (name, and uid if
/// given), watched together (the output is polled every millisecond).
fn events_after(j: &KvJoin, since: Instant, events: &[(&str, Option<u64>)]) -> Vec<f64> {
    let deadline = Instant::now() + WAIT;
    let mut at: Vec<Option<f64>> = vec![None; events.len()];
    while at.iter().any(Option::is_none) {
        let printed = j.events();
        let now = since.elapsed().as_secs_f64() * 1000.0;
        for ((name, uid), t) in events.iter().zip(at.iter_mut()) {
            let hit = printed
                .iter()
                .any(|e| e["event"] == *name && uid.is_none_or(|u| e["uid"] == u));
            if hit && t.is_none() {
                *t = Some(now);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not all of {events:?} within {WAIT:?}: {printed:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    at.into_iter().flatten().collect()
}

/// A talker and a listener (identity files for `kv --identity`) and the two channels they
/// meet in, one encrypted and one plain, made by a third user.
struct Pair {
    talker: u64,
    talker_file: PathBuf,
    listener_file: PathBuf,
    encrypted: u64,
    plain: u64,
}

impl Pair {
    fn new(server: &ServerProcess, dir: &Path) -> Self {
        let (talker, talker_file) = identity_file(server, dir, "talker.key");
        let (_, listener_file) = identity_file(server, dir, "listener.key");
        let owner = control(server, identity(server));
        let owner_uid = owner.signer_uid().expect("signer");
        Self {
            talker,
            talker_file,
            listener_file,
            encrypted: owner.create_encrypted(owner_uid).expect("CREATE_ENCRYPTED"),
            plain: owner.create(owner_uid).expect("CREATE"),
        }
    }
}

fn join_to_audio(server: &ServerProcess, pair: &Pair, joins: usize) -> Report {
    let addr = server.addr.to_string();
    let Pair {
        talker,
        talker_file,
        listener_file,
        encrypted,
        plain,
    } = pair;
    let (talker, encrypted) = (*talker, *encrypted);
    let sp = speech_path();
    let mut lines = String::new();
    let mut table = String::new();
    for (name, chid) in [("encrypted", encrypted), ("plain", *plain)] {
        let t = KvJoin::spawn_identity(
            &addr,
            talker_file,
            chid,
            &[
                "--input",
                sp.to_str().expect("UTF-8 path"),
                "--mode",
                "continuous",
                "--duration",
                "120",
            ],
        );
        t.wait_for("admitted", WAIT);
        let (mut to_keys, mut to_audio, mut from_start) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..joins {
            let start = Instant::now();
            let l = KvJoin::spawn_identity(
                &addr,
                listener_file,
                chid,
                &["--output", "/dev/null", "--duration", "30"],
            );
            // (The pipe adds well under a millisecond to each.)
            let mut wanted = vec![("joined", None), ("talking_started", Some(talker))];
            if chid == encrypted {
                // A member's first epoch event is the one it joined in; `kv join` opens the
                // push connection first, so it can come before `joined`.
                wanted.push(("epoch", None));
            }
            let at = events_after(&l, start, &wanted);
            let (joined, audio) = (at[0], at[1]);
            if let Some(keys) = at.get(2) {
                to_keys.push(keys - joined);
            }
            to_audio.push(audio - joined);
            from_start.push(audio);
            l.terminate();
            l.finish(JOIN_GRACE).assert_ok();
            // The LEAVE starts an epoch too; let it settle before the next join.
            std::thread::sleep(Duration::from_millis(300));
        }
        t.terminate();
        t.finish(JOIN_GRACE).assert_ok();
        let m = median(to_audio.clone()).unwrap_or(f64::NAN);
        let max = to_audio.iter().copied().fold(0.0, f64::max);
        let whole = median(from_start).unwrap_or(f64::NAN);
        let keys = median(to_keys.clone());
        lines += &format!(
            "JOIN to first decrypted audio, {name} channel, {joins} joins: median {m:.0} ms, \
             max {max:.0} ms from the joined event{}; {whole:.0} ms from the process start\n",
            keys.map_or(String::new(), |k| format!(" (keys {k:+.0} ms from it)"))
        );
        table += &format!(
            "| JOIN to first audio played, {name} (median / max of {joins}; from process start) | \
             {m:.0} / {max:.0} ms; {whole:.0} ms |\n"
        );
    }
    Report { lines, table }
}

/// A member on its own thread, reporting each new epoch as (uid, epoch, when).
struct MemberThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<PushMember>,
}

impl MemberThread {
    fn start(mut m: PushMember, epochs: Sender<(u64, u64, Instant)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = m.epoch;
            while !flag.load(Ordering::Relaxed) {
                m.poll(Duration::from_millis(5));
                if m.epoch != seen {
                    seen = m.epoch;
                    if let Some(e) = seen {
                        let _ = epochs.send((m.uid, e, Instant::now()));
                    }
                }
            }
            m
        });
        Self { stop, handle }
    }

    fn stop(self) -> PushMember {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("member thread")
    }
}

/// Waits until all of `uids` have reported `epoch` or a later one; when the last of them
/// got there.
fn all_in(
    rx: &std::sync::mpsc::Receiver<(u64, u64, Instant)>,
    uids: &[u64],
    epoch: u64,
    seen: &mut HashMap<u64, (u64, Instant)>,
) -> Instant {
    let deadline = Instant::now() + WAIT;
    let there = |seen: &HashMap<u64, (u64, Instant)>, u: &u64| {
        seen.get(u).filter(|(e, _)| *e >= epoch).map(|(_, at)| *at)
    };
    loop {
        let times: Option<Vec<Instant>> = uids.iter().map(|u| there(seen, u)).collect();
        if let Some(t) = times {
            return t.into_iter().max().unwrap_or_else(Instant::now);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (uid, e, at) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("members not all in epoch {epoch}: {seen:?}"));
        // Keeps when it first reached an epoch: a later epoch moves the time on.
        seen.insert(uid, (e, at));
    }
}

/// The newest epoch anyone reported.
fn newest(seen: &HashMap<u64, (u64, Instant)>) -> u64 {
    seen.values().map(|(e, _)| *e).max().unwrap_or(0)
}

fn epoch_changes(server: &ServerProcess, changes: usize) -> Report {
    const MEMBERS: usize = 20;
    let owner = control(server, identity(server));
    let chid = owner
        .create_encrypted(owner.signer_uid().expect("signer"))
        .expect("CREATE_ENCRYPTED");
    let (tx, rx) = channel();
    let mut seen = HashMap::new();
    let mut members: Vec<(u64, MemberThread)> = Vec::new();
    let mut join_ms = Vec::new();
    let mut leave_ms = Vec::new();
    let join_one =
        |members: &mut Vec<(u64, MemberThread)>, seen: &mut HashMap<u64, (u64, Instant)>| -> f64 {
            // The first member makes the group (epoch 0); each later one is added by a commit.
            let target = if members.is_empty() {
                0
            } else {
                newest(seen) + 1
            };
            let t = Instant::now();
            let m = PushMember::join(server, chid);
            let uid = m.uid;
            members.push((uid, MemberThread::start(m, tx.clone())));
            let uids: Vec<u64> = members.iter().map(|(u, _)| *u).collect();
            all_in(&rx, &uids, target, seen)
                .duration_since(t)
                .as_secs_f64()
                * 1000.0
        };
    let mut growth = Vec::new();
    for _ in 0..MEMBERS {
        growth.push(join_one(&mut members, &mut seen));
    }
    join_ms.push(*growth.last().expect("members"));
    for _ in 0..changes {
        // The member who joined last leaves (LEAVE), then a new one joins as the 20th.
        let (uid, th) = members.pop().expect("member");
        let m = th.stop();
        let target = newest(&seen) + 1;
        let t = Instant::now();
        m.control.leave(uid, uid, chid).expect("LEAVE");
        drop(m);
        let uids: Vec<u64> = members.iter().map(|(u, _)| *u).collect();
        let done = all_in(&rx, &uids, target, &mut seen);
        leave_ms.push(done.duration_since(t).as_secs_f64() * 1000.0);
        join_ms.push(join_one(&mut members, &mut seen));
    }
    for (_, th) in members {
        th.stop();
    }
    let (jm, lm) = (
        median(join_ms.clone()).unwrap_or(f64::NAN),
        median(leave_ms.clone()).unwrap_or(f64::NAN),
    );
    let jmax = join_ms.iter().copied().fold(0.0, f64::max);
    let lmax = leave_ms.iter().copied().fold(0.0, f64::max);
    let g: Vec<String> = growth.iter().map(|v| format!("{v:.0}")).collect();
    Report {
        lines: format!(
            "epoch change with {MEMBERS} members: a join (push connection to all {MEMBERS} in the new epoch) \
             median {jm:.0} ms, max {jmax:.0} ms; a leave (LEAVE to the other {} in the new epoch) median \
             {lm:.0} ms, max {lmax:.0} ms\n  growing from 1 to {MEMBERS}, ms per join: {}\n",
            MEMBERS - 1,
            g.join(" ")
        ),
        table: format!(
            "| epoch change, 20 members: join / leave (median of {}) | {jm:.0} / {lm:.0} ms (max {jmax:.0} / {lmax:.0}) |\n",
            join_ms.len()
        ),
    }
}

fn calls_compared(server: &ServerProcess, pair: &Pair, dir: &Path, calls: usize) -> Report {
    let addr = server.addr.to_string();
    let sp = speech_path();
    let seconds = kv_tests::kv::speech().len() as f64 / 48_000.0 + 1.0;
    let mut pesq: [Vec<f64>; 2] = Default::default();
    let mut m2e: [Vec<f64>; 2] = Default::default();
    let channels = [pair.encrypted, pair.plain];
    for run in 0..calls {
        for (k, encrypted) in [(0, true), (1, false)] {
            let chid = channels[k];
            let out = dir.join(format!("call-{run}-{k}.wav"));
            let l = KvJoin::spawn_identity(
                &addr,
                &pair.listener_file,
                chid,
                &[
                    "--output",
                    out.to_str().expect("UTF-8 path"),
                    "--float-wav",
                    "--duration",
                    &format!("{:.0}", seconds + 30.0),
                ],
            );
            l.wait_for("admitted", WAIT);
            if encrypted {
                l.wait_for("epoch", WAIT);
            }
            let t = KvJoin::spawn_identity(
                &addr,
                &pair.talker_file,
                chid,
                &[
                    "--input",
                    sp.to_str().expect("UTF-8 path"),
                    "--duration",
                    &format!("{seconds:.2}"),
                ],
            );
            let tr = t.finish(JOIN_GRACE + Duration::from_secs_f64(seconds));
            tr.assert_ok();
            std::thread::sleep(Duration::from_millis(300));
            l.terminate();
            let lr = l.finish(JOIN_GRACE);
            lr.assert_ok();
            let s = score(
                &sp,
                &out,
                Some((
                    tr.time_base("capture_started"),
                    lr.time_base("recording_started"),
                )),
                None,
            );
            let _ = std::fs::remove_file(&out);
            pesq[k].push(s.pesq_wb.unwrap_or(f64::NAN));
            m2e[k].push(s.mouth_to_ear_ms.unwrap_or(f64::NAN));
            if encrypted {
                let e2ee: &Value = &lr.left()["e2ee"];
                assert!(
                    e2ee["decrypted"].as_u64().unwrap_or(0) > 100,
                    "the encrypted call decrypted nothing: {e2ee}"
                );
            }
        }
    }
    let med = |v: &[f64]| median(v.to_vec()).unwrap_or(f64::NAN);
    let (pe, pp, me, mp) = (med(&pesq[0]), med(&pesq[1]), med(&m2e[0]), med(&m2e[1]));
    Report {
        lines: format!(
            "a call, median of {calls}: encrypted PESQ-WB {pe:.2}, mouth-to-ear {me:.1} ms; plain \
             {pp:.2}, {mp:.1} ms (runs: encrypted {:?} / {:?}, plain {:?} / {:?})\n",
            pesq[0], m2e[0], pesq[1], m2e[1]
        ),
        table: format!(
            "| a call, encrypted / plain: PESQ-WB | {pe:.2} / {pp:.2} |\n\
             | a call, encrypted / plain: mouth-to-ear | {me:.1} / {mp:.1} ms ({:+.1} ms) |\n",
            me - mp
        ),
    }
}
