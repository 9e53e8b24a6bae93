//! Permission bits of the seed (WIRE.md §1), as a small flag set.

/// A set of permission bits. Values are the prototype's, so they interoperate with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(pub u64);

impl Perms {
    /// No permissions.
    pub const NONE: Perms = Perms(0);
    /// REGISTER with auid != 0 (create users with chosen perms).
    pub const REGISTER_USER: Perms = Perms(1 << 1);
    /// UNREGISTER of another user.
    pub const DELETE_USER: Perms = Perms(1 << 2);
    /// CREATE a channel.
    pub const ADD_CHANNEL: Perms = Perms(1 << 3);
    /// DELETE a channel one does not own.
    pub const RM_CHANNEL: Perms = Perms(1 << 4);
    /// JOIN another user to a channel.
    pub const ADD_USER: Perms = Perms(1 << 5);
    /// LEAVE (kick) another user from a channel.
    pub const KICK_USER: Perms = Perms(1 << 6);
    /// Everything: the seed's root user.
    pub const ADMIN: Perms = Perms(0x7FFF_FFFF);

    /// True when every bit of `other` is set in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits as sent on the wire.
    pub fn bits(self) -> u64 {
        self.0
    }
}

impl std::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        Perms(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_contains_every_seed_bit() {
        for p in [
            Perms::REGISTER_USER,
            Perms::DELETE_USER,
            Perms::ADD_CHANNEL,
            Perms::RM_CHANNEL,
            Perms::ADD_USER,
            Perms::KICK_USER,
        ] {
            assert!(Perms::ADMIN.contains(p));
            assert!(!Perms::NONE.contains(p));
        }
        assert!(!(Perms::ADD_CHANNEL | Perms::ADD_USER).contains(Perms::ADMIN));
    }
}
