//! One clock per session: monotonic milliseconds for the pipelines, wall-clock
//! milliseconds for the time bases printed to the outside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic origin paired with the wall-clock time it was taken at, so any `Instant` of
/// the session maps to unix milliseconds without reading the (jumpy) system clock again.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    origin: Instant,
    origin_unix_us: u128,
}

impl SessionClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        let origin = Instant::now();
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Self {
            origin,
            origin_unix_us,
        }
    }

    /// Milliseconds since the session started, the time base of the audio pipelines.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Microseconds since the session started (for round-trip times).
    pub fn us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_micros() as u64
    }

    /// Microseconds since the session started, now.
    pub fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }

    /// Milliseconds since the session started, now.
    pub fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// Wall-clock unix time of `at`, milliseconds (fractional, for honest time bases).
    pub fn unix_ms_f64(&self, at: Instant) -> f64 {
        let us = self.origin_unix_us as f64
            + at.saturating_duration_since(self.origin).as_secs_f64() * 1e6;
        us / 1000.0
    }

    /// Wall-clock unix time of `at`, whole milliseconds.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        self.unix_ms_f64(at) as u64
    }
}

/// Sleeps until `deadline` or until `stop` is set; returns false when stopped. Sleeps in
/// short slices so a stop request is seen within a few milliseconds.
pub fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}
