//! Helpers the integration tests share: members with deterministic identity keys, and a
//! directory that vouches for them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use kv_e2ee::{Handled, Member};

/// A directory as the server would vouch for it: uid -> identity key.
pub type Dir = HashMap<u64, [u8; 32]>;

pub const GROUP: &[u8] = b"kv test channel 7";

pub fn identity(uid: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&uid.to_be_bytes());
    seed[31] = 0x5a;
    SigningKey::from_bytes(&seed)
}

/// A member for `uid`, registered in `dir`.
pub fn member(uid: u64, dir: &mut Dir) -> Member {
    let key = identity(uid);
    dir.insert(uid, key.verifying_key().to_bytes());
    Member::new(uid, &key)
}

/// `creator` adds `joiners` in one commit; everyone in `others` processes it.
pub fn add_all(
    creator: &mut Member,
    joiners: &mut [Member],
    others: &mut [Member],
    dir: &Dir,
    now: Instant,
) {
    let kps: Vec<Vec<u8>> = joiners
        .iter_mut()
        .map(|j| j.key_package().unwrap())
        .collect();
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let out = creator.add_members(&refs, dir).unwrap();
    creator.confirm_commit(now).unwrap();
    for o in others.iter_mut() {
        assert!(matches!(
            o.handle(&out.commit, dir, now).unwrap(),
            Handled::Commit { .. }
        ));
    }
    for j in joiners.iter_mut() {
        j.join(out.welcome.as_deref().unwrap(), dir, now).unwrap();
    }
}

/// A small xorshift generator: reproducible bytes without another dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
