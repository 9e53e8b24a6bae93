//! Whole-core tests with real openmls: groups of members agree on keys, protect each other's
//! frames, and refuse what they must (departed members, late joiners, forgeries, replays,
//! commits from outsiders), on virtual time.

mod common;

use std::time::{Duration, Instant};

use common::{identity, member, Dir, GROUP};
use kv_e2ee::frame::{FrameKeys, GRACE_PERIOD, MAX_OVERHEAD};
use kv_e2ee::{CredentialError, E2eeError, FrameRejected, Handled, Member};

/// `creator` adds `joiner`; everyone in `others` processes the commit.
fn add(
    creator: &mut Member,
    joiner: &mut Member,
    others: &mut [&mut Member],
    dir: &Dir,
    now: Instant,
) {
    let kp = joiner.key_package().unwrap();
    let out = creator.add_members(&[&kp], dir).unwrap();
    creator.confirm_commit(now).unwrap();
    for o in others.iter_mut() {
        assert!(matches!(
            o.handle(&out.commit, dir, now).unwrap(),
            Handled::Commit { .. }
        ));
    }
    joiner
        .join(out.welcome.as_deref().unwrap(), dir, now)
        .unwrap();
}

/// A, B, C in one group at epoch 2 (A created it, added B, then C).
fn three(now: Instant) -> (Member, Member, Member, Dir) {
    let mut dir = Dir::new();
    let mut a = member(1001, &mut dir);
    let mut b = member(1002, &mut dir);
    let mut c = member(1003, &mut dir);
    a.create_group(GROUP, now).unwrap();
    add(&mut a, &mut b, &mut [], &dir, now);
    add(&mut a, &mut c, &mut [&mut b], &dir, now);
    (a, b, c, dir)
}

/// The authenticated position every test frame carries (what the wiring binds: seq and
/// timestamp of the frame).
const AAD: &[u8] = b"seq+ts";

fn seal(m: &mut Member, opus: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    m.encrypt_frame(opus, AAD, &mut out).unwrap();
    out
}

fn open(m: &mut Member, now: Instant, wire: &[u8]) -> Result<(u64, Vec<u8>), FrameRejected> {
    let mut out = Vec::with_capacity(512);
    m.decrypt_frame(now, wire, AAD, &mut out)
        .map(|d| (d.uid, out))
}

#[test]
fn three_members_agree_on_keys_and_decrypt_each_other() {
    let now = Instant::now();
    let (mut a, mut b, mut c, _) = three(now);
    assert_eq!(
        (a.epoch(), b.epoch(), c.epoch()),
        (Some(2), Some(2), Some(2))
    );
    let sa = a.export_secret("kv test", b"ctx", 32).unwrap();
    assert_eq!(sa, b.export_secret("kv test", b"ctx", 32).unwrap());
    assert_eq!(sa, c.export_secret("kv test", b"ctx", 32).unwrap());
    assert_eq!(a.members().len(), 3);

    let opus: Vec<u8> = (0..120u8).collect();
    for _ in 0..10 {
        let fa = seal(&mut a, &opus);
        let fb = seal(&mut b, &opus);
        let fc = seal(&mut c, &opus);
        assert!(fa.len() - opus.len() <= MAX_OVERHEAD);
        assert_ne!(fa, fb, "per-sender keys differ");
        assert!(
            !fa.windows(16).any(|w| opus.windows(16).any(|o| o == w)),
            "no plaintext on the wire"
        );
        assert_eq!(open(&mut b, now, &fa), Ok((1001, opus.clone())));
        assert_eq!(open(&mut c, now, &fa), Ok((1001, opus.clone())));
        assert_eq!(open(&mut a, now, &fb), Ok((1002, opus.clone())));
        assert_eq!(open(&mut c, now, &fb), Ok((1002, opus.clone())));
        assert_eq!(open(&mut a, now, &fc), Ok((1003, opus.clone())));
        assert_eq!(open(&mut b, now, &fc), Ok((1003, opus.clone())));
    }
    for m in [&a, &b, &c] {
        assert_eq!(m.frame_stats().decrypted, 20);
        assert_eq!(m.frame_stats().rejected(), 0);
    }
}

#[test]
fn departed_member_cannot_decrypt_the_new_epoch() {
    let now = Instant::now();
    let (mut a, mut b, c, dir) = three(now);
    let c_kept = c; // the departed member's state, exactly as it was when it left
    let out = a.remove_members(&[1003]).unwrap();
    assert_eq!(a.confirm_commit(now).unwrap(), 3);
    assert_eq!(
        b.handle(&out.commit, &dir, now).unwrap(),
        Handled::Commit { epoch: 3 }
    );
    assert_ne!(
        a.export_secret("kv test", b"", 32).unwrap(),
        c_kept.export_secret("kv test", b"", 32).unwrap()
    );

    let mut c_kept = c_kept;
    let mut c_told = {
        // A second copy of the story: C also sees the commit that removes it.
        let (mut a2, mut b2, mut c2, dir2) = three(now);
        let out2 = a2.remove_members(&[1003]).unwrap();
        a2.confirm_commit(now).unwrap();
        b2.handle(&out2.commit, &dir2, now).unwrap();
        assert_eq!(
            c2.handle(&out2.commit, &dir2, now).unwrap(),
            Handled::Removed
        );
        assert_eq!(c2.epoch(), None);
        assert!(c2.encrypt_frame(b"x", AAD, &mut Vec::new()).is_err());
        let f = seal(&mut a2, b"new epoch speech");
        assert_eq!(
            open(&mut b2, now, &f).map(|x| x.1),
            Ok(b"new epoch speech".to_vec())
        );
        (c2, f)
    };
    let f = seal(&mut a, b"new epoch speech");
    assert_eq!(
        open(&mut b, now, &f).map(|x| x.1),
        Ok(b"new epoch speech".to_vec())
    );
    assert_eq!(open(&mut c_kept, now, &f), Err(FrameRejected::UnknownEpoch));
    assert_eq!(
        open(&mut c_told.0, now, &c_told.1),
        Err(FrameRejected::UnknownEpoch)
    );
    // Even later, with the old keys expired, nothing of the new epoch opens.
    let later = now + GRACE_PERIOD * 2;
    assert!(open(&mut c_kept, later, &f).is_err());
    assert_eq!(c_kept.frame_stats().decrypted, 0);
    c_told.0.handle_timeout(later);
    assert_eq!(c_told.0.frame_keys().previous_epoch(), None);
}

#[test]
fn a_member_leaves_by_proposal_and_the_epoch_changes() {
    let now = Instant::now();
    let (mut a, mut b, mut c, dir) = three(now);
    let code_before = a.safety_code().unwrap();
    let proposal = c.propose_leave().unwrap();
    assert_eq!(a.handle(&proposal, &dir, now).unwrap(), Handled::Proposal);
    assert_eq!(b.handle(&proposal, &dir, now).unwrap(), Handled::Proposal);
    let out = a.commit_pending_proposals().unwrap();
    a.confirm_commit(now).unwrap();
    assert_eq!(
        b.handle(&out.commit, &dir, now).unwrap(),
        Handled::Commit { epoch: 3 }
    );
    assert_eq!(c.handle(&out.commit, &dir, now).unwrap(), Handled::Removed);
    assert_eq!(a.members().len(), 2);
    assert_eq!(a.safety_code(), b.safety_code());
    assert_ne!(a.safety_code().unwrap(), code_before);
    let f = seal(&mut b, b"after the leave");
    assert!(open(&mut a, now, &f).is_ok());
    assert!(open(&mut c, now, &f).is_err());
}

#[test]
fn late_joiner_cannot_decrypt_frames_from_before_it_joined() {
    let now = Instant::now();
    let mut dir = Dir::new();
    let mut a = member(1, &mut dir);
    let mut b = member(2, &mut dir);
    let mut c = member(3, &mut dir);
    a.create_group(GROUP, now).unwrap();
    add(&mut a, &mut b, &mut [], &dir, now);
    let before: Vec<Vec<u8>> = (0..5).map(|i| seal(&mut a, &[i; 50])).collect();
    let before_b: Vec<Vec<u8>> = (0..5).map(|i| seal(&mut b, &[i; 50])).collect();
    assert!(open(&mut b, now, &before[0]).is_ok());
    add(&mut a, &mut c, &mut [&mut b], &dir, now);
    for f in before.iter().chain(&before_b) {
        assert_eq!(open(&mut c, now, f), Err(FrameRejected::UnknownEpoch));
    }
    assert_eq!(c.frame_stats().unknown_epoch, 10);
    // ... while the members who were there still can (grace period).
    assert!(open(&mut b, now, &before[1]).is_ok());
    // And the joiner hears what is said now.
    let f = seal(&mut a, b"welcome");
    assert_eq!(open(&mut c, now, &f).map(|x| x.0), Ok(1));
}

#[test]
fn forged_replayed_and_foreign_frames_are_rejected_and_counted() {
    let now = Instant::now();
    let (mut a, mut b, _c, _) = three(now);
    let f = seal(&mut a, b"genuine frame");

    // Tampered ciphertext, tag, header.
    for i in 0..f.len() {
        let mut t = f.clone();
        t[i] ^= 0x40;
        assert!(
            open(&mut b, now, &t).is_err(),
            "byte {i} flipped still decrypts"
        );
    }
    let s = b.frame_stats();
    assert!(s.auth_failed > 0);
    assert_eq!(s.decrypted, 0);
    // Garbage and truncation.
    assert_eq!(open(&mut b, now, &[]), Err(FrameRejected::Malformed));
    assert!(open(&mut b, now, &f[..10]).is_err());

    // The genuine frame once, then its replay.
    assert!(open(&mut b, now, &f).is_ok());
    assert_eq!(open(&mut b, now, &f), Err(FrameRejected::Replayed));
    assert_eq!(b.frame_stats().replayed, 1);

    // A non-member: keys of its own for a leaf index nobody has.
    let mut outsider = FrameKeys::new();
    let epoch = b.epoch().unwrap();
    outsider
        .install_epoch(epoch, &[9u8; 16], Some(9), [(9, 666)], now)
        .unwrap();
    let mut forged = Vec::new();
    outsider.encrypt(b"let me in", AAD, &mut forged).unwrap();
    assert_eq!(
        open(&mut b, now, &forged),
        Err(FrameRejected::UnknownSender)
    );
    // ... or posing as member A (leaf 0) without A's key.
    let mut poser = FrameKeys::new();
    poser
        .install_epoch(epoch, &[9u8; 16], Some(0), [(0, 1001)], now)
        .unwrap();
    for _ in 0..5 {
        // Past A's counters, so the replay window lets it through to authentication.
        poser.encrypt(b"i am A", AAD, &mut forged).unwrap();
    }
    assert_eq!(open(&mut b, now, &forged), Err(FrameRejected::AuthFailed));
    // Our own frames reflected back to us.
    let mine = seal(&mut b, b"mine");
    assert_eq!(open(&mut b, now, &mine), Err(FrameRejected::UnknownSender));

    let s = b.frame_stats();
    assert_eq!(s.unknown_sender, 2);
    assert_eq!(s.decrypted, 1);
    assert_eq!(s.rejected(), f.len() as u64 + 2 + 1 + 3);
    // Nothing stalled: the next genuine frame goes through.
    let g = seal(&mut a, b"still talking");
    assert_eq!(
        open(&mut b, now, &g).map(|x| x.1),
        Ok(b"still talking".to_vec())
    );
}

#[test]
fn commits_from_non_members_and_stale_members_are_rejected_and_counted() {
    let now = Instant::now();
    let (mut a, mut b, mut c, mut dir) = three(now);
    let code = a.safety_code();

    // An outsider builds a group with the same id up to the same epoch and commits in it.
    let mut o = member(6666, &mut dir);
    let mut x = member(6667, &mut dir);
    let mut y = member(6668, &mut dir);
    let mut z = member(6669, &mut dir);
    o.create_group(GROUP, now).unwrap();
    add(&mut o, &mut x, &mut [], &dir, now);
    add(&mut o, &mut y, &mut [&mut x], &dir, now);
    assert_eq!(o.epoch(), a.epoch());
    let kp = z.key_package().unwrap();
    let forged = o.add_members(&[&kp], &dir).unwrap();
    let e = a.handle(&forged.commit, &dir, now).unwrap_err();
    assert!(matches!(e, E2eeError::Mls(_)), "{e:?}");
    assert_eq!(a.handshake_stats().invalid, 1);
    // A proposal from the outsider likewise.
    let forged_leave = x.propose_leave().unwrap();
    assert!(matches!(
        a.handle(&forged_leave, &dir, now),
        Err(E2eeError::Mls(_))
    ));
    assert_eq!(a.handshake_stats().invalid, 2);

    // A removed member's commit (its state is an epoch behind).
    let out = a.remove_members(&[1003]).unwrap();
    a.confirm_commit(now).unwrap();
    b.handle(&out.commit, &dir, now).unwrap();
    let kp = z.key_package().unwrap();
    let stale = c.add_members(&[&kp], &dir).unwrap();
    assert!(matches!(
        a.handle(&stale.commit, &dir, now),
        Err(E2eeError::WrongEpoch { got: 2, ours: 3 })
    ));
    assert_eq!(a.handshake_stats().wrong_epoch, 1);

    // Garbage, a truncated commit, a message for another group.
    assert_eq!(
        a.handle(b"\x00\x01garbage", &dir, now),
        Err(E2eeError::Malformed)
    );
    let next = b.remove_members(&[1001]).unwrap(); // never confirmed: only bytes
    assert_eq!(
        a.handle(&next.commit[..next.commit.len() - 1], &dir, now),
        Err(E2eeError::Malformed)
    );
    let mut other = member(7777, &mut dir);
    other.create_group(b"another channel", now).unwrap();
    let mut w = member(7778, &mut dir);
    let kp = w.key_package().unwrap();
    let foreign = other.add_members(&[&kp], &dir).unwrap();
    assert_eq!(
        a.handle(&foreign.commit, &dir, now),
        Err(E2eeError::WrongGroup)
    );
    let s = a.handshake_stats();
    assert_eq!((s.malformed, s.wrong_group), (2, 1));

    // None of it changed the group: A and B still agree and talk.
    assert_eq!(a.epoch(), Some(3));
    assert_ne!(a.safety_code(), code);
    assert_eq!(a.safety_code(), b.safety_code());
    let f = seal(&mut b, b"fine");
    assert!(open(&mut a, now, &f).is_ok());
    let _ = (&mut y, &mut w);
}

#[test]
fn credentials_must_match_what_the_server_vouches_for() {
    let now = Instant::now();
    let mut dir = Dir::new();
    let mut a = member(1, &mut dir);
    a.create_group(GROUP, now).unwrap();
    // Mallory presents a key package claiming uid 2, whose real key the directory knows.
    let mut real = Dir::new();
    let _bob = member(2, &mut real);
    dir.insert(2, real[&2]);
    let mut mallory = Member::new(2, &identity(9999));
    let kp = mallory.key_package().unwrap();
    assert_eq!(
        a.add_members(&[&kp], &dir),
        Err(E2eeError::Credential(CredentialError::NotVouched(2)))
    );
    // A joiner refuses a group with a member its directory does not vouch for.
    let mut b = member(3, &mut dir);
    let kp = b.key_package().unwrap();
    let out = a.add_members(&[&kp], &dir).unwrap();
    a.confirm_commit(now).unwrap();
    let mut wary = dir.clone();
    wary.insert(1, [0u8; 32]);
    assert!(matches!(
        b.join(out.welcome.as_deref().unwrap(), &wary, now),
        Err(E2eeError::Credential(CredentialError::NotVouched(1)))
    ));
    assert_eq!(b.handshake_stats().credential_refused, 1);
    assert_eq!(b.epoch(), None);
    // openmls consumed the key package while reading the Welcome: B is not in the group,
    // and the same Welcome cannot be taken back (B would publish a new key package).
    assert!(b.join(out.welcome.as_deref().unwrap(), &dir, now).is_err());
    assert_eq!(b.epoch(), None);
}

#[test]
fn safety_codes_match_across_members_and_change_with_the_epoch() {
    let now = Instant::now();
    let (mut a, mut b, c, dir) = three(now);
    let code = a.safety_code().unwrap();
    assert_eq!(Some(code), b.safety_code());
    assert_eq!(Some(code), c.safety_code());
    let text = code.to_string();
    assert_eq!(text.len(), 29, "{text}");
    assert!(text
        .split(' ')
        .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit())));
    let out = a.remove_members(&[1003]).unwrap();
    a.confirm_commit(now).unwrap();
    b.handle(&out.commit, &dir, now).unwrap();
    assert_eq!(a.safety_code(), b.safety_code());
    assert_ne!(a.safety_code(), Some(code));
    assert_eq!(
        c.safety_code(),
        Some(code),
        "the departed member is left at the old epoch"
    );
}

#[test]
fn previous_epoch_frames_decrypt_within_the_grace_period_and_not_after() {
    let t0 = Instant::now();
    let (mut a, mut b, _c, dir) = three(t0);
    let out = a.remove_members(&[1003]).unwrap();
    a.confirm_commit(t0).unwrap();
    // B has not processed the commit yet: it still sends in epoch 2.
    let late: Vec<Vec<u8>> = (0..3).map(|i| seal(&mut b, &[i; 80])).collect();
    assert_eq!(a.frame_keys().previous_epoch(), Some(2));
    assert_eq!(a.poll_timeout(), Some(t0 + GRACE_PERIOD));
    assert!(open(&mut a, t0 + Duration::from_millis(500), &late[0]).is_ok());
    assert!(open(
        &mut a,
        t0 + GRACE_PERIOD - Duration::from_millis(1),
        &late[1]
    )
    .is_ok());
    assert_eq!(
        open(&mut a, t0 + GRACE_PERIOD, &late[2]),
        Err(FrameRejected::ExpiredEpoch)
    );
    assert_eq!(a.frame_stats().expired_epoch, 1);
    assert_eq!(a.poll_timeout(), None);
    // B catches up; the new epoch works both ways.
    b.handle(&out.commit, &dir, t0 + GRACE_PERIOD).unwrap();
    let f = seal(&mut b, b"caught up");
    assert!(open(&mut a, t0 + GRACE_PERIOD, &f).is_ok());
}

#[test]
fn losing_commit_is_discarded_when_the_winner_arrives() {
    let now = Instant::now();
    let (mut a, mut b, mut c, dir) = three(now);
    // A and B commit for the same epoch; the delivery service orders A's first.
    let win = a.remove_members(&[1003]).unwrap();
    let lose = b.remove_members(&[1003]).unwrap();
    // The service forwards the winner to everyone, its author included: that is A's
    // acceptance.
    assert_eq!(
        a.handle(&win.commit, &dir, now).unwrap(),
        Handled::Commit { epoch: 3 }
    );
    assert_eq!(
        b.handle(&win.commit, &dir, now).unwrap(),
        Handled::Commit { epoch: 3 }
    );
    assert_eq!(c.handle(&win.commit, &dir, now).unwrap(), Handled::Removed);
    assert_eq!(a.safety_code(), b.safety_code());
    assert_eq!(b.confirm_commit(now), Err(E2eeError::NoPendingCommit));
    // The loser's commit, if the service forwarded it anyway, is an epoch behind.
    assert!(matches!(
        a.handle(&lose.commit, &dir, now),
        Err(E2eeError::WrongEpoch { got: 2, ours: 3 })
    ));
    let f = seal(&mut b, b"after the race");
    assert!(open(&mut a, now, &f).is_ok());
}

#[test]
fn stored_proposals_are_bounded() {
    let now = Instant::now();
    let (mut a, mut b, _c, dir) = three(now);
    let mut refused = 0;
    for _ in 0..kv_e2ee::member::MAX_PENDING_PROPOSALS + 6 {
        let p = b.propose_leave().unwrap();
        match a.handle(&p, &dir, now) {
            Ok(Handled::Proposal) => {}
            Err(E2eeError::TooManyProposals) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(a.pending_proposals() <= kv_e2ee::member::MAX_PENDING_PROPOSALS);
    assert_eq!(refused, 6, "the store holds {}", a.pending_proposals());
    assert_eq!(a.handshake_stats().other, refused);
    // Committing them still works (one removal of B, however often it was proposed).
    let out = a.commit_pending_proposals().unwrap();
    a.confirm_commit(now).unwrap();
    assert_eq!(b.handle(&out.commit, &dir, now).unwrap(), Handled::Removed);
    assert_eq!(a.members().len(), 2);
}

#[test]
fn key_packages_kept_are_bounded_oldest_forgotten() {
    let now = Instant::now();
    let mut dir = Dir::new();
    let mut a = member(1, &mut dir);
    let mut b = member(2, &mut dir);
    a.create_group(GROUP, now).unwrap();
    let kps: Vec<Vec<u8>> = (0..kv_e2ee::member::MAX_KEY_PACKAGES + 1)
        .map(|_| b.key_package().unwrap())
        .collect();
    // The oldest was forgotten: a Welcome for it cannot be read.
    let out = a.add_members(&[&kps[0]], &dir).unwrap();
    a.discard_commit().unwrap();
    assert!(matches!(
        b.join(out.welcome.as_deref().unwrap(), &dir, now),
        Err(E2eeError::Mls(_))
    ));
    // The newest works.
    let out = a.add_members(&[kps.last().unwrap()], &dir).unwrap();
    a.confirm_commit(now).unwrap();
    b.join(out.welcome.as_deref().unwrap(), &dir, now).unwrap();
    assert_eq!(a.safety_code(), b.safety_code());
}

#[test]
fn frame_keys_split_across_threads_follow_the_epochs() {
    // The wiring: the MLS owner keeps the Member; capture and playout each own FrameKeys,
    // fed with EpochUpdates. Everything moves between threads.
    fn assert_send<T: Send>() {}
    assert_send::<Member>();
    assert_send::<FrameKeys>();
    assert_send::<kv_e2ee::EpochUpdate>();

    let now = Instant::now();
    let (mut a, mut b, _c, dir) = three(now);
    let mut a_capture = FrameKeys::new();
    let mut b_playout = FrameKeys::new();
    a_capture.apply(&a.epoch_update().unwrap(), now).unwrap();
    b_playout.apply(&b.epoch_update().unwrap(), now).unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = Vec::new();
        a_capture
            .encrypt(b"from the capture thread", AAD, &mut w)
            .unwrap();
        (a_capture, w)
    });
    let (mut a_capture, w) = sender.join().unwrap();
    let mut out = Vec::new();
    assert_eq!(b_playout.decrypt(now, &w, AAD, &mut out).unwrap().uid, 1001);
    assert_eq!(out, b"from the capture thread");
    assert!(!format!("{:?}", a.epoch_update().unwrap()).contains("base_key"));

    // An epoch change reaches both halves.
    let out_c = a.remove_members(&[1003]).unwrap();
    a.confirm_commit(now).unwrap();
    b.handle(&out_c.commit, &dir, now).unwrap();
    a_capture.apply(&a.epoch_update().unwrap(), now).unwrap();
    b_playout.apply(&b.epoch_update().unwrap(), now).unwrap();
    a_capture.encrypt(b"epoch 3", AAD, &mut out).unwrap();
    let w = out.clone();
    assert_eq!(b_playout.decrypt(now, &w, AAD, &mut out).unwrap().epoch, 3);
    // And the Member's own keys agree with the split ones.
    assert!(b.decrypt_frame(now, &w, AAD, &mut out).is_ok());
}
