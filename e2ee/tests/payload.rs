//! Protected frames inside real voice payloads (`kv_proto::voice`): each Opus frame is
//! encrypted once, before redundancy packing, so every redundant copy is the same ciphertext
//! and the 504-byte payload keeps its layout; a lost packet's frame is recovered from the
//! next one. Plus "never panics" on arbitrary bytes.

mod common;

use std::time::Instant;

use common::{add_all, member, Dir, Rng, GROUP};
use kv_e2ee::frame::MAX_OVERHEAD;
use kv_e2ee::{FrameRejected, Member};
use kv_proto::packet::DATA_SIZE;
use kv_proto::voice::{self, VoiceHeader};

/// What the wiring authenticates with each frame: its own sequence number and timestamp.
fn position(seq: u32, timestamp: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p[4..].copy_from_slice(&timestamp.to_be_bytes());
    p
}

fn pair(now: Instant) -> (Member, Member, Dir) {
    let mut dir = Dir::new();
    let mut a = member(11, &mut dir);
    let b = member(12, &mut dir);
    a.create_group(GROUP, now).unwrap();
    let mut joiners = [b];
    add_all(&mut a, &mut joiners, &mut [], &dir, now);
    let [b] = joiners;
    (a, b, dir)
}

#[test]
fn redundant_copies_are_the_same_ciphertext_and_recover_lost_packets() {
    let now = Instant::now();
    let (mut a, mut b, _) = pair(now);
    let mut rng = Rng(0x1234_5678_9abc_def0);
    let opus: Vec<Vec<u8>> = (0..12).map(|_| rng.bytes(120)).collect();

    // Sender: encrypt each frame once, keep the ciphertexts, pack current + earlier.
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    let mut packets: Vec<[u8; DATA_SIZE]> = Vec::new();
    let mut repeats = 0;
    for (i, frame) in opus.iter().enumerate() {
        let (seq, ts) = (i as u32, i as u32 * 960);
        let mut c = Vec::with_capacity(frame.len() + MAX_OVERHEAD);
        a.encrypt_frame(frame, &position(seq, ts), &mut c).unwrap();
        sealed.push(c);
        let earlier: Vec<&[u8]> = sealed[..i].iter().rev().map(Vec::as_slice).collect();
        let header = VoiceHeader {
            flags: 0,
            frame_samples: 960,
            seq,
            timestamp: ts,
        };
        let mut out = [0u8; DATA_SIZE];
        let (_, n) = voice::encode(&header, &sealed[i], &earlier, &mut out).unwrap();
        repeats = repeats.max(n - 1);
        packets.push(out);
    }
    // 120-byte frames: 140 bytes protected, so three fit in a payload (four in plain).
    assert_eq!(repeats, 2);

    // The network loses packets 4 and 5; packet 6 carries both frames as redundancy.
    let mut got: Vec<Option<Vec<u8>>> = vec![None; opus.len()];
    let mut out = Vec::with_capacity(512);
    for (i, p) in packets.iter().enumerate() {
        if i == 4 || i == 5 {
            continue;
        }
        let payload = voice::decode(p).unwrap();
        for f in payload.frames() {
            // The copy is byte-for-byte what was sealed for that frame.
            assert_eq!(f.data, sealed[f.seq as usize].as_slice());
            if got[f.seq as usize].is_some() {
                // The receiver decrypts only frames it still needs; a second decryption of
                // the same frame is what a replay looks like.
                if f.age > 0 {
                    assert_eq!(
                        b.decrypt_frame(now, f.data, &position(f.seq, f.timestamp), &mut out),
                        Err(FrameRejected::Replayed)
                    );
                }
                continue;
            }
            let d = b
                .decrypt_frame(now, f.data, &position(f.seq, f.timestamp), &mut out)
                .unwrap();
            assert_eq!(d.uid, 11);
            got[f.seq as usize] = Some(out.clone());
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.as_deref(), Some(opus[i].as_slice()), "frame {i}");
    }

    // A relay that relabels a frame (another sequence number) breaks its authentication,
    // and the failed attempt leaves the frame decryptable under its real position.
    let mut c = Vec::new();
    a.encrypt_frame(&opus[0], &position(12, 12 * 960), &mut c)
        .unwrap();
    assert_eq!(
        b.decrypt_frame(now, &c, &position(13, 12 * 960), &mut out),
        Err(FrameRejected::AuthFailed)
    );
    assert!(b
        .decrypt_frame(now, &c, &position(12, 12 * 960), &mut out)
        .is_ok());
}

#[test]
fn arbitrary_bytes_never_panic_and_are_counted() {
    let now = Instant::now();
    let (mut a, mut b, dir) = pair(now);
    let mut rng = Rng(42);
    let mut out = Vec::new();
    let genuine = {
        let mut c = Vec::new();
        a.encrypt_frame(&[7u8; 100], b"", &mut c).unwrap();
        c
    };
    let mut tries = 0u64;
    for round in 0..3000u32 {
        let mut bytes = if round.is_multiple_of(2) {
            let n = (rng.next() % 300) as usize;
            rng.bytes(n)
        } else {
            genuine.clone()
        };
        // Flip a few bytes, or cut it short.
        for _ in 0..1 + rng.next() % 3 {
            if !bytes.is_empty() {
                let i = (rng.next() as usize) % bytes.len();
                bytes[i] ^= 1 + (rng.next() as u8 % 255);
            }
        }
        if rng.next().is_multiple_of(4) {
            let cut = (rng.next() as usize) % (bytes.len() + 1);
            bytes.truncate(cut);
        }
        tries += 1;
        assert!(b.decrypt_frame(now, &bytes, b"", &mut out).is_err());
        assert!(b.handle(&bytes, &dir, now).is_err());
        assert!(Member::new(77, &common::identity(77))
            .join(&bytes, &dir, now)
            .is_err());
    }
    assert_eq!(b.frame_stats().rejected(), tries);
    let h = b.handshake_stats();
    assert_eq!(
        h.malformed + h.wrong_group + h.wrong_epoch + h.invalid + h.other,
        tries
    );
    // Mutated handshake messages: a real commit with bytes flipped.
    let kp = member(13, &mut Dir::new()).key_package().unwrap();
    let mut dir2 = dir.clone();
    dir2.insert(13, common::identity(13).verifying_key().to_bytes());
    let out_commit = a.add_members(&[&kp], &dir2).unwrap().commit;
    for i in 0..out_commit.len() {
        let mut m = out_commit.clone();
        m[i] ^= 0x20;
        let _ = b.handle(&m, &dir2, now); // must not panic; may or may not parse
    }
    // The group is intact: the real commit still applies.
    assert!(b.handle(&out_commit, &dir2, now).is_ok());
    a.confirm_commit(now).unwrap();
    assert_eq!(a.safety_code(), b.safety_code());
}
