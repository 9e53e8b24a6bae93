//! Recorded loss/delay traces for the relay to replay.
//!
//! Format (text, one line per datagram, in order):
//!
//! ```text
//! # comments and blank lines are ignored
//! 12.5      <- this datagram arrives 12.5 ms after it was sent
//! lost      <- this one never arrives
//! ```
//!
//! A trace is replayed from its first line for the first datagram of a direction and
//! loops when it ends. Delays are one-way and taken as recorded, so a trace whose delay
//! falls faster than datagrams are spaced reorders them, as the recorded network did.

use std::path::Path;

/// Most datagrams one trace may describe (a bound like every other buffer: 1 M lines
/// are over five hours of 20 ms packets).
pub const MAX_STEPS: usize = 1 << 20;
/// Longest delay a trace may hold, ms.
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// One datagram's fate in a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceStep {
    /// Not delivered.
    Lost,
    /// Delivered after this one-way delay, milliseconds.
    DelayMs(f64),
}

/// A parsed trace (never empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    steps: Vec<TraceStep>,
}

impl Trace {
    /// Parses the text format; errors name the offending line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if steps.len() == MAX_STEPS {
                return Err(format!("more than {MAX_STEPS} datagrams"));
            }
            let step = if line.eq_ignore_ascii_case("lost") {
                TraceStep::Lost
            } else {
                match line.parse::<f64>() {
                    Ok(d) if (0.0..=MAX_DELAY_MS).contains(&d) => TraceStep::DelayMs(d),
                    _ => {
                        return Err(format!(
                            "line {}: {line:?} is neither `lost` nor a delay in ms \
                             (0..={MAX_DELAY_MS})",
                            i + 1
                        ))
                    }
                }
            };
            steps.push(step);
        }
        if steps.is_empty() {
            return Err("no datagrams in trace".into());
        }
        Ok(Self { steps })
    }

    /// Reads and parses a trace file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The text form (what [`Trace::parse`] reads).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for step in &self.steps {
            match step {
                TraceStep::Lost => s.push_str("lost\n"),
                TraceStep::DelayMs(d) => s.push_str(&format!("{d}\n")),
            }
        }
        s
    }

    /// The fate of datagram `i` (looping).
    pub fn step(&self, i: usize) -> TraceStep {
        self.steps[i % self.steps.len()]
    }

    /// Datagrams described before the trace loops.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Always false: a trace holds at least one datagram.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_round_trips_and_names_bad_lines() {
        let t = Trace::parse("# x\n\n 5 \nLOST\n0.25\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.step(1), TraceStep::Lost);
        assert_eq!(t.step(5), TraceStep::DelayMs(0.25));
        assert_eq!(Trace::parse(&t.to_text()).unwrap(), t);
        let e = Trace::parse("5\nfast\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(Trace::parse("-1").is_err());
        assert!(Trace::parse("1e9").is_err());
        assert!(Trace::parse("# only comments\n").is_err());
    }
}
