//! Random user and channel ids.
//!
//! Ids are random so they cannot be guessed by counting, and follow the wire's rule for
//! user ids (non-zero, neither 32-bit half all ones: a voice packet must never look like a
//! system packet). Channel ids follow the same rule so one validity check fits both.

/// A fresh candidate id; the caller retries if the store already has it.
pub fn random_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if kv_proto::is_valid_uid(id) {
            return id;
        }
    }
}

/// How many times to draw a new id on collision before giving up (with 2^64 ids, more than
/// one retry means something else is wrong).
pub const MAX_ID_ATTEMPTS: usize = 16;

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_valid() {
        for _ in 0..10_000 {
            assert!(kv_proto::is_valid_uid(super::random_id()));
        }
    }
}
