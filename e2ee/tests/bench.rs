//! Cost of the core, printed (run in release for real figures):
//!
//! ```text
//! cargo test -p kv-e2ee --release --test bench -- --ignored --nocapture
//! ```
//!
//! CPU per frame (encrypt + decrypt of a 120-byte Opus frame, 48 kb/s at 20 ms), added bytes
//! per frame, the crypto part of a join (key package, commit + Welcome, join, first frame),
//! and an epoch change in a group of 20 (commit, then every member processing it and
//! deriving the new frame keys). The floors asserted are loose: they catch an accidental
//! O(n) per frame or a pathological epoch change, not a noisy machine.

mod common;

use std::time::{Duration, Instant};

use common::{add_all, member, Dir, Rng, GROUP};
use kv_e2ee::{Handled, Member};

const MEMBERS: usize = 20;

fn group_of(n: usize, now: Instant) -> (Vec<Member>, Dir) {
    let mut dir = Dir::new();
    let mut creator = member(1, &mut dir);
    creator.create_group(GROUP, now).unwrap();
    let mut joiners: Vec<Member> = (2..=n as u64).map(|u| member(u, &mut dir)).collect();
    add_all(&mut creator, &mut joiners, &mut [], &dir, now);
    let mut all = vec![creator];
    all.extend(joiners);
    (all, dir)
}

#[test]
#[ignore = "benchmark: prints figures; run with --release -- --ignored --nocapture"]
fn bench_frames_and_epoch_changes() {
    let now = Instant::now();
    let t = Instant::now();
    let (mut m, dir) = group_of(MEMBERS, now);
    let build = t.elapsed();

    // Frames: member 0 sends, member 1 receives.
    let mut rng = Rng(7);
    let opus = rng.bytes(120);
    let (mut wire, mut plain) = (Vec::with_capacity(512), Vec::with_capacity(512));
    let aad = [0u8; 8];
    const N: u32 = 20_000;
    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    let mut overhead = 0;
    for _ in 0..N {
        let t = Instant::now();
        let n = m[0].encrypt_frame(&opus, &aad, &mut wire).unwrap();
        enc += t.elapsed();
        overhead = overhead.max(n - opus.len());
        let t = Instant::now();
        m[1].decrypt_frame(now, &wire, &aad, &mut plain).unwrap();
        dec += t.elapsed();
    }
    assert_eq!(plain, opus);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(N);
    println!(
        "frame (120 B): encrypt {:.2} us, decrypt {:.2} us, together {:.2} us; overhead {} B \
         (max over {N} frames of one epoch)",
        per(enc),
        per(dec),
        per(enc + dec),
        overhead
    );

    // Epoch change, 20 members: member 0 removes member 19, then adds a new one.
    let t = Instant::now();
    let out = m[0].remove_members(&[MEMBERS as u64]).unwrap();
    m[0].confirm_commit(now).unwrap();
    let commit_time = t.elapsed();
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for r in m.iter_mut().take(MEMBERS - 1).skip(1) {
        let t = Instant::now();
        assert!(matches!(
            r.handle(&out.commit, &dir, now).unwrap(),
            Handled::Commit { .. }
        ));
        let e = t.elapsed();
        worst = worst.max(e);
        total += e;
    }
    println!(
        "epoch change (remove) with {MEMBERS} members: commit {:.2} ms; each member processes it \
         in {:.2} ms on average, {:.2} ms at most; all {} members {:.1} ms of CPU",
        commit_time.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / (MEMBERS - 2) as f64,
        worst.as_secs_f64() * 1e3,
        MEMBERS - 1,
        (commit_time + total).as_secs_f64() * 1e3
    );

    // A join: key package, add commit + Welcome, processing, first decrypted frame.
    let mut dir2 = dir.clone();
    let mut late = member(99, &mut dir2);
    let t = Instant::now();
    let kp = late.key_package().unwrap();
    let out = m[0].add_members(&[&kp], &dir2).unwrap();
    m[0].confirm_commit(now).unwrap();
    let add_time = t.elapsed();
    let t = Instant::now();
    late.join(out.welcome.as_deref().unwrap(), &dir2, now)
        .unwrap();
    let join_time = t.elapsed();
    let mut others = Duration::ZERO;
    for r in m.iter_mut().take(MEMBERS - 1).skip(1) {
        let t = Instant::now();
        r.handle(&out.commit, &dir2, now).unwrap();
        others += t.elapsed();
    }
    m[1].encrypt_frame(&opus, &aad, &mut wire).unwrap();
    late.decrypt_frame(now, &wire, &aad, &mut plain).unwrap();
    println!(
        "join into {} members: key package + commit + Welcome {:.2} ms, joiner processes the \
         Welcome {:.2} ms, the others process the commit {:.2} ms on average; first frame decrypts",
        MEMBERS - 1,
        add_time.as_secs_f64() * 1e3,
        join_time.as_secs_f64() * 1e3,
        others.as_secs_f64() * 1e3 / (MEMBERS - 2) as f64,
    );
    println!(
        "building the {MEMBERS}-member group (one commit adding {}): {:.1} ms",
        MEMBERS - 1,
        build.as_secs_f64() * 1e3
    );

    // Floors: per frame well under a 20 ms frame's budget share; epoch change interactive.
    assert!(per(enc + dec) < 50.0, "{:.1} us per frame", per(enc + dec));
    assert!(
        worst < Duration::from_secs(1),
        "{worst:?} for one member's epoch change"
    );
    assert!(overhead <= kv_e2ee::frame::MAX_OVERHEAD);
}
