//! The client's voice payload: the 504 data bytes of a regular packet, as bytes (sans-IO).
//!
//! The server never reads these bytes (WIRE.md §3); only clients do. Every datagram is 512
//! bytes whatever it carries, so the space an Opus frame does not use is filled with the
//! sender's *earlier* frames again (redundancy): when a packet is lost, the next one usually
//! carries its frame, at no extra bandwidth.
//!
//! Layout (all integers big-endian; PROTOCOL.md, "Voice payload (client data)"):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 1 | version, [`VOICE_VERSION`] (1) |
//! | 1 | 1 | flags: bit 0 [`FLAG_SPURT_START`], bit 1 [`FLAG_SPURT_END`], others 0 |
//! | 2 | 2 | frame duration in 48 kHz samples (120..=5760; 480 = 10 ms, 960 = 20 ms) |
//! | 4 | 4 | sequence number of the current frame (+1 per frame *sent*, wraps) |
//! | 8 | 4 | timestamp of the current frame's first sample, in 48 kHz samples (wraps) |
//! | 12 | 1 | frame count `n` (1..=[`MAX_FRAMES`]): the current frame and `n-1` earlier ones |
//! | 13 | … | `n` times: `len: u16` (1..=489) then `len` bytes of one Opus frame |
//! | … | … | zero padding to 504 |
//!
//! Frame `k` (0-based) has sequence `seq - k` and timestamp `timestamp - k * duration`:
//! a sender only repeats frames of the current talk spurt, which are contiguous.

use thiserror::Error;

use crate::packet::DATA_SIZE;

/// Version this module writes and reads. A receiver ignores payloads of other versions.
pub const VOICE_VERSION: u8 = 1;
/// First frame after silence: the receiver may restart its playout here.
pub const FLAG_SPURT_START: u8 = 0x01;
/// Last frame of a talk spurt: the receiver may stop playout after it without concealment.
pub const FLAG_SPURT_END: u8 = 0x02;
/// Bytes before the first frame.
pub const HEADER_SIZE: usize = 13;
/// Most frames one payload may carry. Bounds the decoder's work and state; 16 frames of
/// 20 ms reach back 300 ms, further than any jitter buffer waits.
pub const MAX_FRAMES: usize = 16;
/// Largest single Opus frame that fits (504 - header - one length field).
pub const MAX_FRAME_LEN: usize = DATA_SIZE - HEADER_SIZE - 2;
/// Shortest frame duration accepted (2.5 ms, Opus' shortest).
pub const MIN_FRAME_SAMPLES: u16 = 120;
/// Longest frame duration accepted (120 ms, Opus' longest).
pub const MAX_FRAME_SAMPLES: u16 = 5760;

/// Why a payload could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VoiceError {
    /// Payload shorter than the header or than a frame length says.
    #[error("voice payload truncated")]
    Truncated,
    /// Written by a version this client does not understand.
    #[error("unsupported voice payload version {0}")]
    UnsupportedVersion(u8),
    /// Frame count 0 or above [`MAX_FRAMES`].
    #[error("bad frame count {0}")]
    BadFrameCount(u8),
    /// A frame of length 0 (Opus frames are never empty).
    #[error("empty frame")]
    EmptyFrame,
    /// Frame duration outside 120..=5760 samples.
    #[error("bad frame duration {0} samples")]
    BadDuration(u16),
    /// The current frame alone does not fit in 504 bytes (encoding only).
    #[error("frame of {0} bytes does not fit in a payload")]
    FrameTooLarge(usize),
}

/// Fixed fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceHeader {
    /// [`FLAG_SPURT_START`] / [`FLAG_SPURT_END`]; unknown bits are kept but ignored.
    pub flags: u8,
    /// Frame duration in 48 kHz samples.
    pub frame_samples: u16,
    /// Sequence number of the current frame.
    pub seq: u32,
    /// Timestamp of the current frame in 48 kHz samples.
    pub timestamp: u32,
}

/// A parsed payload borrowing the packet buffer. All frame bounds were checked by
/// [`decode`], so reading frames cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct VoicePayload<'a> {
    /// Fixed fields.
    pub header: VoiceHeader,
    buf: &'a [u8],
    /// `(offset, len)` of each frame in `buf`, current first.
    spans: [(u16, u16); MAX_FRAMES],
    count: usize,
}

/// One frame of a payload with its place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceFrame<'a> {
    /// Its sequence number.
    pub seq: u32,
    /// Its timestamp in 48 kHz samples.
    pub timestamp: u32,
    /// 0 for the current frame, k for the frame sent k packets earlier.
    pub age: usize,
    /// The Opus frame.
    pub data: &'a [u8],
}

impl<'a> VoicePayload<'a> {
    /// Number of frames (current plus redundant).
    pub fn frame_count(&self) -> usize {
        self.count
    }

    /// Frame `age` (0 = current), or `None` past the end.
    pub fn frame(&self, age: usize) -> Option<VoiceFrame<'a>> {
        if age >= self.count {
            return None;
        }
        let (off, len) = self.spans[age];
        let h = &self.header;
        let back = age as u32;
        Some(VoiceFrame {
            seq: h.seq.wrapping_sub(back),
            timestamp: h
                .timestamp
                .wrapping_sub(back.wrapping_mul(u32::from(h.frame_samples))),
            age,
            data: &self.buf[off as usize..off as usize + len as usize],
        })
    }

    /// Frames, current first.
    pub fn frames(&self) -> impl Iterator<Item = VoiceFrame<'a>> + '_ {
        (0..self.count).filter_map(|k| self.frame(k))
    }
}

/// `samples` if it lies within Opus' frame durations (2.5..=120 ms); one rule for writing and
/// reading.
fn check_duration(samples: u16) -> Result<u16, VoiceError> {
    if (MIN_FRAME_SAMPLES..=MAX_FRAME_SAMPLES).contains(&samples) {
        Ok(samples)
    } else {
        Err(VoiceError::BadDuration(samples))
    }
}

/// Parses a payload. Never panics; trailing bytes after the last frame are ignored
/// (they are padding).
pub fn decode(buf: &[u8]) -> Result<VoicePayload<'_>, VoiceError> {
    if buf.len() < HEADER_SIZE {
        return Err(VoiceError::Truncated);
    }
    if buf[0] != VOICE_VERSION {
        return Err(VoiceError::UnsupportedVersion(buf[0]));
    }
    let frame_samples = check_duration(u16::from_be_bytes([buf[2], buf[3]]))?;
    let header = VoiceHeader {
        flags: buf[1],
        frame_samples,
        seq: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        timestamp: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    let n = buf[12];
    if n == 0 || n as usize > MAX_FRAMES {
        return Err(VoiceError::BadFrameCount(n));
    }
    // Only the first 504 bytes can belong to a payload.
    let buf = &buf[..buf.len().min(DATA_SIZE)];
    let mut spans = [(0u16, 0u16); MAX_FRAMES];
    let mut pos = HEADER_SIZE;
    for span in spans.iter_mut().take(n as usize) {
        if buf.len() < pos + 2 {
            return Err(VoiceError::Truncated);
        }
        let len = u16::from_be_bytes([buf[pos], buf[pos + 1]]) as usize;
        pos += 2;
        if len == 0 {
            return Err(VoiceError::EmptyFrame);
        }
        if buf.len() < pos + len {
            return Err(VoiceError::Truncated);
        }
        // pos + len <= 504, so both fit in u16.
        *span = (pos as u16, len as u16);
        pos += len;
    }
    Ok(VoicePayload {
        header,
        buf,
        spans,
        count: n as usize,
    })
}

/// Writes a payload: the header, `current`, then as many of `earlier` (most recent first,
/// i.e. `earlier[0]` is the frame with sequence `seq - 1`) as fit, stopping at the first that
/// does not fit so the repeated frames stay contiguous. The rest of `out` is zeroed.
///
/// Returns `(bytes used, frames written)`; frames written includes the current one.
pub fn encode(
    header: &VoiceHeader,
    current: &[u8],
    earlier: &[&[u8]],
    out: &mut [u8; DATA_SIZE],
) -> Result<(usize, usize), VoiceError> {
    check_duration(header.frame_samples)?;
    if current.is_empty() {
        return Err(VoiceError::EmptyFrame);
    }
    if current.len() > MAX_FRAME_LEN {
        return Err(VoiceError::FrameTooLarge(current.len()));
    }
    out.fill(0);
    out[0] = VOICE_VERSION;
    out[1] = header.flags;
    out[2..4].copy_from_slice(&header.frame_samples.to_be_bytes());
    out[4..8].copy_from_slice(&header.seq.to_be_bytes());
    out[8..12].copy_from_slice(&header.timestamp.to_be_bytes());
    let mut pos = HEADER_SIZE;
    let mut count = 0usize;
    for frame in std::iter::once(current).chain(earlier.iter().copied()) {
        if count == MAX_FRAMES || frame.is_empty() || pos + 2 + frame.len() > DATA_SIZE {
            break;
        }
        out[pos..pos + 2].copy_from_slice(&(frame.len() as u16).to_be_bytes());
        out[pos + 2..pos + 2 + frame.len()].copy_from_slice(frame);
        pos += 2 + frame.len();
        count += 1;
    }
    out[12] = count as u8;
    Ok((pos, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> VoiceHeader {
        VoiceHeader {
            flags: FLAG_SPURT_START,
            frame_samples: 960,
            seq: 7,
            timestamp: 9600,
        }
    }

    #[test]
    fn earlier_frames_get_earlier_seq_and_timestamp() {
        let mut out = [0u8; DATA_SIZE];
        let (len, n) = encode(&header(), &[1; 80], &[&[2; 70], &[3; 60]], &mut out).unwrap();
        assert_eq!(n, 3);
        assert_eq!(len, HEADER_SIZE + 3 * 2 + 80 + 70 + 60);
        let p = decode(&out).unwrap();
        let f: Vec<_> = p.frames().collect();
        assert_eq!((f[0].seq, f[0].timestamp, f[0].data[0]), (7, 9600, 1));
        assert_eq!((f[1].seq, f[1].timestamp, f[1].data.len()), (6, 8640, 70));
        assert_eq!((f[2].seq, f[2].timestamp, f[2].data[0]), (5, 7680, 3));
    }

    #[test]
    fn redundancy_stops_when_full_and_seq_wraps() {
        let h = VoiceHeader {
            seq: 1,
            timestamp: 0,
            ..header()
        };
        let old = [9u8; 100];
        let earlier = [&old[..]; 10];
        let mut out = [0u8; DATA_SIZE];
        let (len, n) = encode(&h, &[1; 100], &earlier, &mut out).unwrap();
        // 13 + 4 * 102 = 421; a fifth frame would need 523 bytes.
        assert_eq!((len, n), (421, 4));
        let p = decode(&out).unwrap();
        assert_eq!(p.frame(2).unwrap().seq, u32::MAX);
        assert_eq!(p.frame(1).unwrap().timestamp, u32::MAX - 959);
        assert!(p.frame(4).is_none());
    }

    #[test]
    fn rejects_bad_input() {
        let mut out = [0u8; DATA_SIZE];
        assert_eq!(
            encode(&header(), &[0; MAX_FRAME_LEN + 1], &[], &mut out),
            Err(VoiceError::FrameTooLarge(MAX_FRAME_LEN + 1))
        );
        encode(&header(), &[0; MAX_FRAME_LEN], &[], &mut out).unwrap();
        assert_eq!(decode(&out).unwrap().frame(0).unwrap().data.len(), 489);
        assert_eq!(decode(&out[..20]).unwrap_err(), VoiceError::Truncated);
        out[0] = 2;
        assert_eq!(decode(&out).unwrap_err(), VoiceError::UnsupportedVersion(2));
        assert_eq!(
            decode(&[0u8; DATA_SIZE]).unwrap_err(),
            VoiceError::UnsupportedVersion(0)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(p) = decode(&bytes) {
                for f in p.frames() {
                    prop_assert!(!f.data.is_empty());
                }
            }
        }

        #[test]
        fn decode_never_panics_on_v1(mut bytes in proptest::collection::vec(any::<u8>(), DATA_SIZE..=DATA_SIZE), n in 0u8..20) {
            bytes[0] = VOICE_VERSION;
            bytes[2..4].copy_from_slice(&960u16.to_be_bytes());
            bytes[12] = n;
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trip(
            flags in any::<u8>(), seq in any::<u32>(), ts in any::<u32>(),
            dur in MIN_FRAME_SAMPLES..=MAX_FRAME_SAMPLES,
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..20),
        ) {
            let h = VoiceHeader { flags, frame_samples: dur, seq, timestamp: ts };
            let earlier: Vec<&[u8]> = frames[1..].iter().map(|f| &f[..]).collect();
            let mut out = [0u8; DATA_SIZE];
            let (_, n) = encode(&h, &frames[0], &earlier, &mut out).unwrap();
            let p = decode(&out).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.frame_count(), n);
            for (k, f) in p.frames().enumerate() {
                prop_assert_eq!(f.data, &frames[k][..]);
                prop_assert_eq!(f.seq, seq.wrapping_sub(k as u32));
            }
        }
    }
}
