//! Safety codes: a short number per group epoch that members compare out of band.
//!
//! The code is read off the MLS epoch authenticator (RFC 9420 §8.7), a secret of the epoch
//! that every member who holds the same group state derives, and nobody else can: two members
//! who see the same code share the epoch, so no one (the server included) sits between them
//! with a group of its own. It changes with every epoch.
//!
//! Format: [`GROUPS`] groups of five decimal digits, e.g. `04521 88310 19642 70035 62218`
//! (about 83 bits). Group `i` is bytes `5i..5i+5` of the authenticator as a big-endian
//! integer, modulo 100 000 (the bias of 2^40 mod 10^5 is below 10^-7).

use std::fmt;

/// Groups of digits in a code.
pub const GROUPS: usize = 5;
/// Authenticator bytes a code needs.
pub const AUTHENTICATOR_BYTES: usize = GROUPS * 5;

/// A safety code, compared by value and shown with [`fmt::Display`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SafetyCode([u32; GROUPS]);

impl SafetyCode {
    /// The code of an epoch authenticator; `None` when it is shorter than
    /// [`AUTHENTICATOR_BYTES`] (no MLS ciphersuite's is).
    pub fn from_authenticator(authenticator: &[u8]) -> Option<Self> {
        if authenticator.len() < AUTHENTICATOR_BYTES {
            return None;
        }
        let mut groups = [0u32; GROUPS];
        for (i, g) in groups.iter_mut().enumerate() {
            let v = authenticator[i * 5..i * 5 + 5]
                .iter()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            *g = (v % 100_000) as u32;
        }
        Some(Self(groups))
    }

    /// The groups, each 0..100 000.
    pub fn groups(&self) -> [u32; GROUPS] {
        self.0
    }
}

impl fmt::Display for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{g:05}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_groups_of_five_digits() {
        let code = SafetyCode::from_authenticator(&[0u8; 32]).unwrap();
        assert_eq!(code.to_string(), "00000 00000 00000 00000 00000");
        let mut a = [0u8; 32];
        a[4] = 1; // group 0 = 1
        a[9] = 0xff; // group 1 = 255
        let code = SafetyCode::from_authenticator(&a).unwrap();
        assert_eq!(code.to_string(), "00001 00255 00000 00000 00000");
        let code = SafetyCode::from_authenticator(&[0xff; 32]).unwrap();
        // 2^40 - 1 = 1099511627775
        assert_eq!(code.groups()[0], 27775);
        assert!(SafetyCode::from_authenticator(&[0u8; 24]).is_none());
    }
}
