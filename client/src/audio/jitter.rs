//! The frame store of one sender: Opus frames by sequence number, from their own packet or
//! from a later packet's redundancy, each with the time its *first* copy arrived. Sans-IO
//! and O(1) per frame whatever the packet says: a slot is found by `seq % CAPACITY`, the
//! "is anything later here" question is answered from the highest sequence seen, and a
//! jump of the sequence or timestamp restarts the stream in one step (no loop that walks
//! the gap one frame at a time).
//!
//! What to play, and when, is decided by [`super::stream::SenderPlayout`]; this type only
//! stores and answers.

use kv_proto::voice::{FLAG_SPURT_END, MAX_FRAME_LEN};

/// Frames a buffer can hold; bounds memory and how far ahead a packet may be (64 frames of
/// 20 ms is 1.28 s, far beyond the largest delay the playout keeps).
pub const CAPACITY: usize = 64;

/// Where a frame in the buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// Its own packet.
    Primary,
    /// A repeat inside a later packet (its own packet was lost or is late).
    Redundant,
    /// Sent first inside the packet that starts a talk spurt: the audio just before a
    /// voice-activated sender's gate opened ([`super::tx`]), never in a packet of its own,
    /// so its arrival says nothing about the network.
    PreRoll,
}

/// What [`JitterBuffer::insert`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored: the first copy of this frame.
    New,
    /// Already stored (a duplicate packet, or a repeat of a frame we have).
    Known,
    /// Behind the playout position: too late to be played.
    Late,
    /// Its sequence number is too far from the stream's: the stream restarted here (a
    /// restarted sender, or a hostile jump). Everything stored was dropped.
    Restarted,
    /// Ignored (an empty frame, or a repeat that cannot start a stream).
    Ignored,
}

/// Counters since the buffer was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Primary packets accepted.
    pub received: u64,
    /// Packets that arrived twice.
    pub duplicates: u64,
    /// Packets that arrived after their frame was played or given up.
    pub late: u64,
    /// Times the stream restarted (sender restarted, sequence jumped).
    pub resets: u64,
}

/// One stored frame, a copy of its bytes in a fixed array: nothing allocates per packet.
#[derive(Clone)]
struct Slot {
    full: bool,
    seq: u32,
    /// Unwrapped timestamp, samples.
    ts: i64,
    arrival_ms: u64,
    origin: FrameOrigin,
    end: bool,
    len: u16,
    data: [u8; MAX_FRAME_LEN],
}

/// A frame ready to be decoded, copied out of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoredFrame {
    /// Its sequence number.
    pub seq: u32,
    /// Unwrapped timestamp of its first sample.
    pub ts: i64,
    /// When its first copy arrived.
    pub arrival_ms: u64,
    /// Own packet or a later one's redundancy.
    pub origin: FrameOrigin,
    /// The sender marked it as the last of a talk spurt.
    pub end: bool,
}

/// The per-sender frame store.
pub struct JitterBuffer {
    slots: Vec<Slot>,
    /// Sequence number of the next frame the player wants; frames before it are late.
    next_seq: u32,
    /// Whether a stream is established (some primary frame was accepted).
    started: bool,
    /// Highest sequence number stored in the current stream.
    highest_seq: u32,
    /// Last (wrapped, unwrapped) primary timestamp, for unwrapping.
    ts_ref: Option<(u32, i64)>,
    frame_samples: usize,
    last_arrival_ms: u64,
    generation: u64,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("next_seq", &self.next_seq)
            .field("highest_seq", &self.highest_seq)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// `a - b` for wrapping sequence numbers, as a signed distance.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl JitterBuffer {
    /// An empty store.
    pub fn new() -> Self {
        let slot = Slot {
            full: false,
            seq: 0,
            ts: 0,
            arrival_ms: 0,
            origin: FrameOrigin::Primary,
            end: false,
            len: 0,
            data: [0; MAX_FRAME_LEN],
        };
        Self {
            slots: vec![slot; CAPACITY],
            next_seq: 0,
            started: false,
            highest_seq: 0,
            ts_ref: None,
            frame_samples: 960,
            last_arrival_ms: 0,
            generation: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Increments each time the stream restarts; the decoder resets when it changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The sender's frame duration, samples (from its latest packet).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// When the last packet of this sender arrived.
    pub fn last_arrival_ms(&self) -> u64 {
        self.last_arrival_ms
    }

    /// Whether a stream is established.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Sequence number of the frame the player wants next.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// `timestamp` unwrapped against the stream's latest primary frame (as `insert` would
    /// store it), without moving the reference.
    pub fn unwrapped(&self, timestamp: u32) -> i64 {
        match self.ts_ref {
            None => i64::from(timestamp),
            Some((r, rext)) => rext + i64::from(timestamp.wrapping_sub(r) as i32),
        }
    }

    fn unwrap_ts(&mut self, ts: u32, update: bool) -> i64 {
        let ext = self.unwrapped(ts);
        if update && self.ts_ref.is_none_or(|(_, rext)| ext > rext) {
            self.ts_ref = Some((ts, ext));
        }
        ext
    }

    fn clear(&mut self) {
        for s in &mut self.slots {
            s.full = false;
        }
    }

    /// Drops everything and starts a stream whose next frame is `seq`.
    fn restart(&mut self, seq: u32) {
        self.clear();
        self.next_seq = seq;
        self.highest_seq = seq;
        self.started = true;
        self.generation += 1;
    }

    /// Stores one frame. `end` is the spurt-end flag of the payload (only meaningful for
    /// the primary frame: pass `false` for redundant copies).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        now_ms: u64,
        seq: u32,
        timestamp: u32,
        frame_samples: u16,
        flags: u8,
        data: &[u8],
        origin: FrameOrigin,
    ) -> Inserted {
        if data.is_empty() || data.len() > MAX_FRAME_LEN {
            return Inserted::Ignored;
        }
        let primary = origin == FrameOrigin::Primary;
        let mut result = Inserted::New;
        if !self.started {
            if !primary {
                // A stream starts from its own packets; a repeat alone says little.
                return Inserted::Ignored;
            }
            self.ts_ref = None;
            self.restart(seq);
        } else {
            let d = seq_diff(seq, self.next_seq);
            if d.unsigned_abs() >= CAPACITY as u64 {
                if !primary {
                    return Inserted::Ignored;
                }
                // Too far either way to be this stream: a restarted sender (sequence from
                // 0 again) or a jump. One step, whatever the distance.
                self.stats.resets += 1;
                self.ts_ref = None;
                self.restart(seq);
                result = Inserted::Restarted;
            } else if d < 0 {
                if primary {
                    self.stats.late += 1;
                }
                return Inserted::Late;
            }
        }
        if primary {
            self.last_arrival_ms = now_ms;
            self.frame_samples = usize::from(frame_samples);
        }
        let ts = self.unwrap_ts(timestamp, primary);
        let slot = &mut self.slots[seq as usize % CAPACITY];
        if slot.full && slot.seq == seq {
            if primary {
                if slot.origin == FrameOrigin::Primary {
                    self.stats.duplicates += 1;
                } else {
                    // The repeat came first (possibly a low-rate one): the frame itself
                    // replaces it; the arrival of the first copy stays.
                    slot.origin = FrameOrigin::Primary;
                    slot.end = flags & FLAG_SPURT_END != 0;
                    slot.len = data.len() as u16;
                    slot.data[..data.len()].copy_from_slice(data);
                    self.stats.received += 1;
                }
            }
            return Inserted::Known;
        }
        slot.full = true;
        slot.seq = seq;
        slot.ts = ts;
        slot.arrival_ms = now_ms;
        slot.origin = origin;
        slot.end = primary && flags & FLAG_SPURT_END != 0;
        slot.len = data.len() as u16;
        slot.data[..data.len()].copy_from_slice(data);
        if seq_diff(seq, self.highest_seq) > 0 {
            self.highest_seq = seq;
        }
        if primary {
            self.stats.received += 1;
        }
        result
    }

    /// The frame `seq`, if stored.
    pub fn get(&self, seq: u32) -> Option<StoredFrame> {
        let s = &self.slots[seq as usize % CAPACITY];
        (s.full && s.seq == seq).then_some(StoredFrame {
            seq: s.seq,
            ts: s.ts,
            arrival_ms: s.arrival_ms,
            origin: s.origin,
            end: s.end,
        })
    }

    /// The bytes of frame `seq` (empty when not stored).
    pub fn data(&self, seq: u32) -> &[u8] {
        let s = &self.slots[seq as usize % CAPACITY];
        if s.full && s.seq == seq {
            &s.data[..usize::from(s.len)]
        } else {
            &[]
        }
    }

    /// True when a frame after `seq` is stored: then `seq` itself, if missing, is lost
    /// (every later packet that could have repeated it has come without it).
    pub fn has_later(&self, seq: u32) -> bool {
        self.started && seq_diff(self.highest_seq, seq) > 0
    }

    /// The player is done with every frame before `seq` (played, or given up): frees their
    /// slots and makes copies of them late. `seq` may only move forward by less than
    /// [`CAPACITY`] frames per call; farther moves are a restart ([`Self::reset_to`]).
    pub fn advance_to(&mut self, seq: u32) {
        let d = seq_diff(seq, self.next_seq);
        if d <= 0 {
            return;
        }
        if d >= CAPACITY as i64 {
            self.reset_to(seq);
            return;
        }
        for k in 0..d as u32 {
            let s = self.next_seq.wrapping_add(k);
            let slot = &mut self.slots[s as usize % CAPACITY];
            if slot.seq == s {
                slot.full = false;
            }
        }
        self.next_seq = seq;
        if seq_diff(self.highest_seq, seq) < 0 {
            self.highest_seq = seq;
        }
    }

    /// Whether `seq` is behind the cursor: a copy of it would be late.
    pub fn is_behind(&self, seq: u32) -> bool {
        self.started && seq_diff(seq, self.next_seq) < 0
    }

    /// Moves the cursor back to `seq`, a number the player gave up on that a later talk
    /// spurt uses again (its end was lost: [`super::stream::SenderPlayout::insert`]).
    /// Nothing is stored between `seq` and the cursor (frames behind it are refused), so
    /// nothing is dropped; O(1). Ignored unless `seq` is less than [`CAPACITY`] behind.
    pub fn rewind_to(&mut self, seq: u32) {
        if self.is_behind(seq) && seq_diff(seq, self.next_seq) > -(CAPACITY as i64) {
            self.next_seq = seq;
        }
    }

    /// Drops everything; the next frame wanted is `seq`.
    pub fn reset_to(&mut self, seq: u32) {
        self.clear();
        self.next_seq = seq;
        self.highest_seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut JitterBuffer, now: u64, seq: u32, origin: FrameOrigin) -> Inserted {
        b.insert(
            now,
            seq,
            seq.wrapping_mul(960),
            960,
            0,
            &[seq as u8],
            origin,
        )
    }

    #[test]
    fn stores_by_sequence_first_copy_wins_and_duplicates_are_counted() {
        let mut b = JitterBuffer::new();
        assert_eq!(put(&mut b, 0, 5, FrameOrigin::Redundant), Inserted::Ignored);
        assert_eq!(put(&mut b, 0, 5, FrameOrigin::Primary), Inserted::New);
        assert_eq!(put(&mut b, 1, 5, FrameOrigin::Primary), Inserted::Known);
        assert_eq!(b.stats().duplicates, 1);
        // A copy arriving first keeps its (earlier) arrival when the primary follows.
        assert_eq!(put(&mut b, 10, 7, FrameOrigin::Redundant), Inserted::New);
        assert_eq!(put(&mut b, 30, 7, FrameOrigin::Primary), Inserted::Known);
        let f = b.get(7).unwrap();
        assert_eq!((f.arrival_ms, f.origin), (10, FrameOrigin::Primary));
        assert!(b.has_later(6));
        assert!(!b.has_later(7));
        assert_eq!(b.data(7), &[7]);
        assert!(b.get(6).is_none());
        b.advance_to(8);
        assert!(b.get(7).is_none());
        assert_eq!(put(&mut b, 40, 7, FrameOrigin::Primary), Inserted::Late);
        assert_eq!(b.stats().late, 1);
    }

    #[test]
    fn the_cursor_winds_back_only_over_numbers_it_gave_up() {
        let mut b = JitterBuffer::new();
        assert_eq!(put(&mut b, 0, 10, FrameOrigin::Primary), Inserted::New);
        b.advance_to(14);
        assert!(b.is_behind(12) && !b.is_behind(14));
        b.rewind_to(12);
        assert_eq!(b.next_seq(), 12);
        assert_eq!(put(&mut b, 50, 12, FrameOrigin::Primary), Inserted::New);
        // Forward, or further back than the store reaches: ignored.
        b.rewind_to(20);
        b.rewind_to(12u32.wrapping_sub(CAPACITY as u32));
        assert_eq!(b.next_seq(), 12);
    }

    #[test]
    fn a_far_jump_either_way_restarts_in_one_step() {
        let mut b = JitterBuffer::new();
        put(&mut b, 0, 100, FrameOrigin::Primary);
        assert_eq!(
            put(&mut b, 1, 2_000_000_000, FrameOrigin::Primary),
            Inserted::Restarted
        );
        assert_eq!(b.next_seq(), 2_000_000_000);
        // A restarted sender (sequence from 0 again) is not "late".
        assert_eq!(put(&mut b, 2, 0, FrameOrigin::Primary), Inserted::Restarted);
        assert_eq!(b.stats().resets, 2);
        assert_eq!(b.generation(), 3);
        // Far redundant copies are ignored, never restart.
        assert_eq!(
            put(&mut b, 3, 9_999, FrameOrigin::Redundant),
            Inserted::Ignored
        );
        // Sequence numbers wrap.
        let mut b = JitterBuffer::new();
        put(&mut b, 0, u32::MAX, FrameOrigin::Primary);
        assert_eq!(put(&mut b, 1, 0, FrameOrigin::Primary), Inserted::New);
        assert!(b.has_later(u32::MAX));
        assert_eq!(b.get(0).unwrap().ts, 1i64 << 32);
    }
}
