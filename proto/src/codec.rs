//! Big-endian cursor over a byte slice, shared by every decoder.
//!
//! Every read checks the remaining length first and reports [`DecodeError::Incomplete`]
//! instead of panicking, so "need more bytes" is distinguishable from "malformed".

use crate::error::DecodeError;
use crate::MAX_NAME_LEN;

/// Reads big-endian integers and length-prefixed strings from a borrowed buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole input; never modified.
    buf: &'a [u8],
    /// Offset of the next unread byte.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far, so callers can tell how much of a stream a message used.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Incomplete);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a `u64` byte length then that many bytes of UTF-8 (at most [`MAX_NAME_LEN`]).
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u64()?;
        if len > MAX_NAME_LEN as u64 {
            return Err(DecodeError::Invalid("string too long"));
        }
        let b = self.bytes(len as usize)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }
}

/// Appends a big-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a length-prefixed string. Callers validate the length first (see
/// [`check_name`]); this writes whatever it is given.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Checks that a name fits the wire's bound, so encoders never build a request the server
/// must reject.
pub fn check_name(s: &str) -> Result<(), DecodeError> {
    if s.len() > MAX_NAME_LEN {
        Err(DecodeError::Invalid("string too long"))
    } else {
        Ok(())
    }
}
