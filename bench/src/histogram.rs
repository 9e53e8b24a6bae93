//! Fixed-size latency histogram: 1 µs buckets up to 10 ms, 1 ms buckets up to 10 s. Bounded
//! memory whatever the traffic, exact enough for p99 targets near 1 ms.

const FINE: usize = 10_000; // µs
const COARSE: usize = 10_000; // ms, from 10 ms

/// Counts of delays.
#[derive(Clone)]
pub struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    count: u64,
    max_ns: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={})", self.count)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// Empty histogram.
    pub fn new() -> Self {
        Histogram {
            fine: vec![0; FINE],
            coarse: vec![0; COARSE],
            over: 0,
            count: 0,
            max_ns: 0,
        }
    }

    /// Adds one delay.
    pub fn record(&mut self, ns: u64) {
        let us = (ns / 1000) as usize;
        if us < FINE {
            self.fine[us] += 1;
        } else if us / 1000 < FINE / 1000 + COARSE {
            self.coarse[us / 1000 - FINE / 1000] += 1;
        } else {
            self.over += 1;
        }
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds all of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.fine.iter_mut().zip(&other.fine) {
            *a += b;
        }
        for (a, b) in self.coarse.iter_mut().zip(&other.coarse) {
            *a += b;
        }
        self.over += other.over;
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Delays recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest delay seen, ms.
    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }

    /// The `q` quantile (0..=1) in ms: the upper edge of the bucket holding it.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (us, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (us + 1) as f64 / 1000.0;
            }
        }
        for (ms, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (FINE / 1000 + ms + 1) as f64;
            }
        }
        self.max_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for i in 0..100u64 {
            h.record(i * 10_000); // 0..990 µs
        }
        h.record(50_000_000); // 50 ms
        assert_eq!(h.count(), 101);
        assert!((h.quantile_ms(0.5) - 0.501).abs() < 1e-9);
        assert!((h.quantile_ms(0.99) - 0.991).abs() < 1e-9);
        assert!((h.quantile_ms(1.0) - 51.0).abs() < 1e-9);
        let mut g = Histogram::new();
        g.merge(&h);
        assert_eq!(g.count(), 101);
        assert!((g.max_ms() - 50.0).abs() < 1e-9);
    }
}
