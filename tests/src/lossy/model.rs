//! The impairment models of one direction of the relay, without I/O: given the arrival
//! time of a datagram, [`Link::fate`] says whether it is lost and when it leaves (and when
//! its duplicate does). Seeded, so the same arrivals meet the same fates.
//!
//! Order of the models for one datagram: a recorded trace, when given, decides loss and
//! delay alone. Otherwise a delay spike may start; the loss process (independent or
//! Gilbert-Elliott) may drop it; the FIFO queue gives it `delay_ms` + a random queueing
//! delay but never lets it leave before the datagram ahead of it, nor before a running
//! spike ends; then the non-FIFO parts (independent jitter, reordering) add to that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::trace::{Trace, TraceStep};

/// What one direction of the relay does to traffic.
#[derive(Debug, Clone)]
pub struct Impairment {
    /// Loss rate: the probability that a datagram is dropped (long-run share).
    pub loss: f64,
    /// Mean loss-burst length in datagrams. `None`: losses are independent. `Some(l)`:
    /// Gilbert-Elliott bursts (a two-state chain, every datagram lost in the bad state,
    /// none in the good one) with loss rate `loss` and mean burst `l` (≥ 1).
    pub burst: Option<f64>,
    /// Probability that a datagram is held back by an extra `reorder_ms`, outside the FIFO
    /// queue (so later ones overtake it).
    pub reorder: f64,
    /// Extra delay of reordered datagrams, milliseconds.
    pub reorder_ms: u64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Base one-way delay, milliseconds.
    pub delay_ms: u64,
    /// Independent random extra delay, uniform 0..=jitter_ms, added after the queue: a
    /// datagram may overtake an earlier one (not what a router does; see `queue_ms`).
    pub jitter_ms: u64,
    /// Queueing jitter: a uniform 0..=queue_ms extra delay, FIFO like a router queue
    /// (departure = max(previous departure, arrival + delay + queueing delay)).
    pub queue_ms: f64,
    /// Probability per datagram that a delay spike starts: the queue holds everything
    /// until `spike_ms` after that datagram's arrival (plus `delay_ms`).
    pub spike_prob: f64,
    /// Length of a delay spike, milliseconds.
    pub spike_ms: u64,
    /// A recorded loss/delay trace replayed datagram by datagram (looping); replaces the
    /// loss and delay models above (duplication still applies).
    pub trace: Option<Arc<Trace>>,
    /// RNG seed.
    pub seed: u64,
}

impl Impairment {
    /// A clean pipe (for a loss-free baseline through the same path).
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_ms: 0,
            duplicate: 0.0,
            delay_ms: 0,
            jitter_ms: 0,
            queue_ms: 0.0,
            spike_prob: 0.0,
            spike_ms: 0,
            trace: None,
            seed: 1,
        }
    }

    /// Random loss `p` only (plus 1 % duplicates and 0–2 ms jitter, which a jitter buffer
    /// absorbs without adapting), so what is measured is what loss costs.
    pub fn loss_only(p: f64, seed: u64) -> Self {
        Self {
            loss: p,
            duplicate: 0.01,
            delay_ms: 1,
            jitter_ms: 2,
            seed,
            ..Self::none()
        }
    }

    /// Random loss `p` with some reordering (2 %), duplicates (3 %: enough that a short
    /// run has several whatever the seed) and 0–10 ms jitter.
    pub fn lossy(p: f64, seed: u64) -> Self {
        Self {
            loss: p,
            reorder: 0.02,
            reorder_ms: 15,
            duplicate: 0.03,
            delay_ms: 2,
            jitter_ms: 10,
            seed,
            ..Self::none()
        }
    }

    /// Independent random loss `p`, nothing else.
    pub fn random_loss(p: f64, seed: u64) -> Self {
        Self {
            loss: p,
            seed,
            ..Self::none()
        }
    }

    /// Gilbert-Elliott bursts: loss rate `p`, mean burst length `mean_burst` datagrams.
    pub fn bursts(p: f64, mean_burst: f64, seed: u64) -> Self {
        Self {
            loss: p,
            burst: Some(mean_burst),
            seed,
            ..Self::none()
        }
    }

    /// FIFO queueing jitter 0..=`queue_ms` plus delay spikes of `spike_ms` started by a
    /// share `spike_prob` of the datagrams.
    pub fn jitter_spikes(queue_ms: f64, spike_prob: f64, spike_ms: u64, seed: u64) -> Self {
        Self {
            queue_ms,
            spike_prob,
            spike_ms,
            seed,
            ..Self::none()
        }
    }

    /// Replays `trace`.
    pub fn replay(trace: Trace) -> Self {
        Self {
            trace: Some(Arc::new(trace)),
            ..Self::none()
        }
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// When it leaves; `None` if lost.
    pub at: Option<Instant>,
    /// When its duplicate leaves, if it is duplicated.
    pub duplicate_at: Option<Instant>,
    /// It was held back to be overtaken.
    pub reordered: bool,
    /// It started a delay spike.
    pub spike_started: bool,
}

/// The state of one direction: the models' memory (Gilbert-Elliott state, the queue's
/// last departure, a running spike, the trace position) and the RNG.
#[derive(Debug)]
pub struct Link {
    imp: Impairment,
    rng: StdRng,
    /// Gilbert-Elliott: in the bad (losing) state.
    bad: bool,
    /// Departure of the last datagram through the FIFO queue.
    last_departure: Option<Instant>,
    /// The queue is held until then by a spike.
    spike_until: Option<Instant>,
    trace_pos: usize,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

impl Link {
    /// A link in its initial state.
    pub fn new(imp: Impairment) -> Self {
        Self {
            rng: StdRng::seed_from_u64(imp.seed),
            imp,
            bad: false,
            last_departure: None,
            spike_until: None,
            trace_pos: 0,
        }
    }

    /// Switches to `imp` (with its seed), keeping the queue: datagrams already queued keep
    /// their departure, and later ones still cannot overtake them.
    pub fn reconfigure(&mut self, imp: Impairment) {
        let (last, spike) = (self.last_departure, self.spike_until);
        *self = Self::new(imp);
        self.last_departure = last;
        self.spike_until = spike;
    }

    /// The configuration in force.
    pub fn impairment(&self) -> &Impairment {
        &self.imp
    }

    /// Decides the fate of a datagram arriving at `now`.
    pub fn fate(&mut self, now: Instant) -> Fate {
        let mut fate = Fate {
            at: None,
            duplicate_at: None,
            reordered: false,
            spike_started: false,
        };
        let at = match self.imp.trace.clone() {
            Some(trace) => {
                let step = trace.step(self.trace_pos);
                self.trace_pos = self.trace_pos.wrapping_add(1);
                match step {
                    TraceStep::Lost => return fate,
                    TraceStep::DelayMs(d) => now + ms(d),
                }
            }
            None => {
                let base = now + Duration::from_millis(self.imp.delay_ms);
                if self.imp.spike_prob > 0.0 && self.rng.random_bool(self.imp.spike_prob.min(1.0)) {
                    let until = base + Duration::from_millis(self.imp.spike_ms);
                    self.spike_until = Some(self.spike_until.map_or(until, |u| u.max(until)));
                    fate.spike_started = true;
                }
                if self.lost() {
                    return fate;
                }
                let queued = if self.imp.queue_ms > 0.0 {
                    self.rng.random_range(0.0..=self.imp.queue_ms)
                } else {
                    0.0
                };
                let mut at = base + ms(queued);
                for earliest in [self.last_departure, self.spike_until]
                    .into_iter()
                    .flatten()
                {
                    at = at.max(earliest);
                }
                self.last_departure = Some(at);
                if self.imp.jitter_ms > 0 {
                    at += Duration::from_millis(self.rng.random_range(0..=self.imp.jitter_ms));
                }
                if self.imp.reorder > 0.0 && self.rng.random_bool(self.imp.reorder.min(1.0)) {
                    fate.reordered = true;
                    at += Duration::from_millis(self.imp.reorder_ms);
                }
                at
            }
        };
        fate.at = Some(at);
        if self.imp.duplicate > 0.0 && self.rng.random_bool(self.imp.duplicate.min(1.0)) {
            fate.duplicate_at = Some(at);
        }
        fate
    }

    /// One step of the loss process.
    fn lost(&mut self) -> bool {
        let p = self.imp.loss.clamp(0.0, 1.0);
        match self.imp.burst {
            None => p > 0.0 && self.rng.random_bool(p),
            Some(mean) => {
                // Two-state chain: leave the bad state with r = 1/mean (so bursts are
                // geometric with that mean); enter it with q such that the stationary
                // share of the bad state, q / (q + r), is the loss rate.
                let r = 1.0 / mean.max(1.0);
                let q = if p >= 1.0 {
                    1.0
                } else {
                    (p * r / (1.0 - p)).min(1.0)
                };
                let flip = if self.bad { r } else { q };
                if flip > 0.0 && self.rng.random_bool(flip) {
                    self.bad = !self.bad;
                }
                self.bad
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` datagrams 20 ms apart; returns (arrival, fate) pairs.
    fn run(imp: Impairment, n: usize) -> Vec<(Instant, Fate)> {
        let t0 = Instant::now();
        let mut link = Link::new(imp);
        (0..n)
            .map(|i| {
                let now = t0 + Duration::from_millis(20 * i as u64);
                (now, link.fate(now))
            })
            .collect()
    }

    fn loss_share(f: &[(Instant, Fate)]) -> f64 {
        f.iter().filter(|(_, x)| x.at.is_none()).count() as f64 / f.len() as f64
    }

    /// Lengths of the runs of consecutive losses.
    fn bursts(f: &[(Instant, Fate)]) -> Vec<usize> {
        let mut out = vec![];
        let mut run = 0;
        for (_, x) in f {
            if x.at.is_none() {
                run += 1;
            } else if run > 0 {
                out.push(run);
                run = 0;
            }
        }
        out
    }

    #[test]
    fn independent_loss_has_the_configured_rate_and_short_bursts() {
        let f = run(Impairment::random_loss(0.10, 5), 100_000);
        let share = loss_share(&f);
        assert!((0.095..0.105).contains(&share), "{share}");
        let b = bursts(&f);
        let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
        // Geometric with p = 0.1: mean run 1 / 0.9.
        assert!((1.08..1.14).contains(&mean), "{mean}");
    }

    #[test]
    fn gilbert_elliott_has_the_configured_rate_and_mean_burst() {
        for (p, l) in [(0.10, 3.0), (0.05, 8.0), (0.20, 2.0)] {
            let f = run(Impairment::bursts(p, l, 9), 200_000);
            let share = loss_share(&f);
            assert!((p * 0.9..p * 1.1).contains(&share), "p {p} l {l}: {share}");
            let b = bursts(&f);
            let mean = b.iter().sum::<usize>() as f64 / b.len() as f64;
            assert!((l * 0.93..l * 1.07).contains(&mean), "p {p} l {l}: {mean}");
        }
    }

    #[test]
    fn queue_is_fifo_and_spikes_hold_it() {
        let f = run(Impairment::jitter_spikes(30.0, 0.01, 150, 3), 20_000);
        let mut last = None;
        let mut delays = vec![];
        for (arrival, x) in &f {
            let at = x.at.expect("no loss configured");
            assert!(
                last.is_none_or(|l| at >= l),
                "a datagram overtook an earlier one"
            );
            last = Some(at);
            delays.push((at - *arrival).as_secs_f64() * 1000.0);
        }
        let spikes = f.iter().filter(|(_, x)| x.spike_started).count();
        assert!((150..250).contains(&spikes), "{spikes} spikes in 20000");
        // A spike's first datagram waits the whole spike; nothing waits much longer.
        let max = delays.iter().copied().fold(0.0, f64::max);
        assert!((150.0..=215.0).contains(&max), "max delay {max}");
        // Without the spikes, the queue adds 0..30 ms, a little more for FIFO waits.
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((15.0..30.0).contains(&mean), "mean delay {mean}");
        let long = delays.iter().filter(|d| **d >= 60.0).count() as f64 / delays.len() as f64;
        // Each spike holds the next ~7 datagrams (150 ms / 20 ms) past 60 ms at most.
        assert!(
            (0.01..0.08).contains(&long),
            "share delayed >= 60 ms: {long}"
        );
    }

    #[test]
    fn queue_without_spikes_stays_within_its_range() {
        let f = run(Impairment::jitter_spikes(30.0, 0.0, 0, 4), 10_000);
        for (arrival, x) in &f {
            let d = x.at.map(|at| at - *arrival).expect("no loss");
            // 20 ms spacing, 30 ms range: a datagram waits at most for the one before it.
            assert!(d <= Duration::from_millis(31), "{d:?}");
        }
    }

    #[test]
    fn reordering_and_duplication_have_their_rates() {
        let imp = Impairment {
            reorder: 0.05,
            reorder_ms: 45,
            duplicate: 0.02,
            seed: 8,
            ..Impairment::none()
        };
        let f = run(imp, 50_000);
        let reordered = f.iter().filter(|(_, x)| x.reordered).count() as f64 / 50_000.0;
        let dup = f.iter().filter(|(_, x)| x.duplicate_at.is_some()).count() as f64 / 50_000.0;
        assert!((0.045..0.055).contains(&reordered), "{reordered}");
        assert!((0.017..0.023).contains(&dup), "{dup}");
        // A held-back datagram (45 ms) is overtaken by the next two (20 ms apart).
        let overtaken = f.windows(2).filter(|w| w[0].1.at > w[1].1.at).count() as f64 / 50_000.0;
        assert!(overtaken > 0.04, "{overtaken}");
    }

    #[test]
    fn same_seed_same_fates() {
        let imp = Impairment {
            queue_ms: 10.0,
            spike_prob: 0.02,
            spike_ms: 100,
            ..Impairment::bursts(0.1, 3.0, 77)
        };
        let t0 = Instant::now();
        let (mut a, mut b) = (Link::new(imp.clone()), Link::new(imp));
        for i in 0..5000u64 {
            let now = t0 + Duration::from_millis(20 * i);
            assert_eq!(a.fate(now), b.fate(now));
        }
    }

    #[test]
    fn trace_replays_loss_and_delay_and_loops() {
        let trace = Trace::parse("# recorded\n12\nlost\n\n30.5\nlost\n").unwrap();
        let f = run(Impairment::replay(trace), 8);
        let d: Vec<Option<f64>> = f
            .iter()
            .map(|(t, x)| {
                x.at.map(|at| ((at - *t).as_secs_f64() * 1000.0 * 10.0).round() / 10.0)
            })
            .collect();
        assert_eq!(
            d,
            [
                Some(12.0),
                None,
                Some(30.5),
                None,
                Some(12.0),
                None,
                Some(30.5),
                None
            ]
        );
    }

    #[test]
    fn reconfigure_keeps_the_queue_in_order() {
        let t0 = Instant::now();
        let mut link = Link::new(Impairment::jitter_spikes(0.0, 1.0, 200, 1));
        let held = link.fate(t0).at.unwrap();
        link.reconfigure(Impairment::none());
        let next = link.fate(t0 + Duration::from_millis(20)).at.unwrap();
        assert!(
            next >= held,
            "a clean datagram overtook one held by the old spike"
        );
        let later = link.fate(t0 + Duration::from_millis(400)).at.unwrap();
        assert_eq!(
            later,
            t0 + Duration::from_millis(400),
            "clean once the queue drained"
        );
    }
}
