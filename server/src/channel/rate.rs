//! A token bucket: how the relay caps one member's packet rate without allocating.

use std::time::Instant;

/// Allows `rate` packets per second on average and bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Packets that may be sent right now (fractional, refilled continuously).
    tokens: f64,
    /// When `tokens` was last refilled.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one. `rate` and `burst` are passed in (they are the
    /// channel's, the same for every member) so a bucket stays two words.
    pub fn try_take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        self.try_take_n(now, 1.0, rate, burst)
    }

    /// Takes `n` tokens at once if there are that many.
    pub fn try_take_n(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens whenever the bucket is not empty, going into debt for the rest: a
    /// piece of work bigger than the burst (announcing a bind to a thousand members) can
    /// still run, and the debt keeps the next one waiting until the average rate is met.
    /// So at most one such piece runs beyond the burst at a time.
    pub fn take_on_credit(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens > 0.0 {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Gives back `n` tokens taken for work that did not happen (up to `burst`).
    pub fn refund(&mut self, n: f64, burst: f64) {
        self.tokens = (self.tokens + n).min(burst);
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10.0);
        let taken = (0..20).filter(|_| b.try_take(t0, 100.0, 10.0)).count();
        assert_eq!(taken, 10, "a burst is capped");
        // 100 pps: 50 ms later, 5 more.
        let t1 = t0 + Duration::from_millis(50);
        let taken = (0..20).filter(|_| b.try_take(t1, 100.0, 10.0)).count();
        assert_eq!(taken, 5);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        let taken = (0..100).filter(|_| b.try_take(t2, 100.0, 10.0)).count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn credit_lets_one_big_piece_through_then_waits_for_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10.0);
        assert!(
            b.take_on_credit(t0, 50.0, 100.0, 10.0),
            "bigger than the burst"
        );
        assert!(!b.take_on_credit(t0, 1.0, 100.0, 10.0), "40 tokens of debt");
        let t1 = t0 + Duration::from_millis(399);
        assert!(!b.take_on_credit(t1, 1.0, 100.0, 10.0));
        let t2 = t0 + Duration::from_millis(401);
        assert!(b.take_on_credit(t2, 1.0, 100.0, 10.0));
    }
}
